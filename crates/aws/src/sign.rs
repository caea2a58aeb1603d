//! SigV4 request signing with `aws-sigv4`, so no AWS SDK is needed.

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use super::identity::Credentials;

/// Why a request could not be signed: `aws-sigv4` refused the parameters
/// (an empty region or service name) or the request (a URL it cannot parse).
/// Both are the agent's own mistakes, never the caller's.
#[derive(Debug)]
pub enum SignError {
    Parameters(String),
    Request { url: String, reason: String },
}

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignError::Parameters(why) => write!(f, "cannot build signing parameters: {why}"),
            SignError::Request { url, reason } => {
                write!(f, "cannot sign request to {url}: {reason}")
            }
        }
    }
}

impl std::error::Error for SignError {}

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
) -> Result<Vec<(String, String)>, SignError> {
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
        .map_err(|e| SignError::Parameters(e.to_string()))?
        .into();
    let request = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| refused(url, e))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| refused(url, e))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn refused(url: &str, reason: impl std::fmt::Display) -> SignError {
    SignError::Request {
        url: url.to_string(),
        reason: reason.to_string(),
    }
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
