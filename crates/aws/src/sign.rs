//! SigV4 request signing with `aws-sigv4`, so no AWS SDK is needed.

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use super::identity::Credentials;

/// Returns the headers to add (`authorization`, `x-amz-date`, and
/// `x-amz-security-token` for session credentials). `headers` are the ones the
/// request will carry and that should be covered by the signature; `host` is
/// taken from `url`, and the HTTP client must send the same.
pub fn sign_request(
    creds: &Credentials,
    region: &str,
    service: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let identity = aws_credential_types::Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        creds.expiry,
        "secrets-manager-agent",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot build signing parameters: {e}"))?
        .into();
    let request = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign request to {url}: {e}"))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| format!("cannot sign request to {url}: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_auth_date_and_session_token() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("session".into()),
            expiry: None,
            source: "test".into(),
        };
        let headers = sign_request(
            &creds,
            "us-east-1",
            "secretsmanager",
            "https://secretsmanager.us-east-1.amazonaws.com/",
            &[("x-amz-target", "secretsmanager.GetSecretValue")],
            b"{}",
        )
        .unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(
            auth.contains("/us-east-1/secretsmanager/aws4_request"),
            "{auth}"
        );
        assert!(auth.contains("x-amz-target"), "{auth}");
        assert!(get("x-amz-date").is_some());
        assert_eq!(get("x-amz-security-token"), Some("session"));
    }
}
