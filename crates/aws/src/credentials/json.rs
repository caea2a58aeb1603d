//! The credentials JSON that the container endpoint, IMDS and
//! `credential_process` answer with.

use serde::Deserialize;

use crate::identity::Credentials;

/// The JSON shape shared by the container endpoint, IMDS and
/// `credential_process` (which says `SessionToken` where the others say `Token`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonCredentials {
    code: Option<String>,
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    #[serde(alias = "SessionToken")]
    token: Option<String>,
    expiration: Option<String>,
}

pub fn from_json(body: &[u8], source: &str) -> Result<Credentials, String> {
    let parsed: JsonCredentials = serde_json::from_slice(body).map_err(|e| {
        format!(
            "answer is not credentials JSON: {}",
            crate::error::json_error(&e)
        )
    })?;
    if let Some(code) = parsed.code.filter(|c| c != "Success") {
        let message = parsed.message.unwrap_or_default();
        return Err(format!("answered {code}: {message}"));
    }
    let non_empty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let (Some(access_key_id), Some(secret_access_key)) = (
        non_empty(parsed.access_key_id),
        non_empty(parsed.secret_access_key),
    ) else {
        return Err("answer lacks AccessKeyId or SecretAccessKey".into());
    };
    let expiry = secrets_manager_agent_core::iso8601::parse_field(
        "Expiration",
        parsed.expiration.as_deref(),
    )?;
    Ok(Credentials {
        access_key_id,
        secret_access_key,
        session_token: non_empty(parsed.token),
        expiry,
        source: source.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let c = from_json(
            br#"{"Code":"Success","AccessKeyId":"A","SecretAccessKey":"S","Token":"T","Expiration":"2026-11-28T21:08:17Z"}"#,
            "imds",
        )
        .unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("A", Some("T"))
        );
        assert!(c.expiry.is_some());
        let c = from_json(
            br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"X"}"#,
            "p",
        )
        .unwrap();
        assert_eq!(c.session_token.as_deref(), Some("X"));
        assert!(from_json(br#"{"Code":"Failure","Message":"no"}"#, "imds")
            .unwrap_err()
            .contains("Failure"));
        assert!(from_json(br#"{"AccessKeyId":"A"}"#, "x").is_err());
        assert!(from_json(
            br#"{"AccessKeyId":"A","SecretAccessKey":"S","Expiration":"soon"}"#,
            "x"
        )
        .is_err());
    }
}
