//! The credentials JSON that the container endpoint, IMDS and
//! `credential_process` answer with.

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::identity::Credentials;

/// The JSON shape shared by the container endpoint, IMDS and
/// `credential_process` (which says `SessionToken` where the others say `Token`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct JsonCredentials {
    /// `credential_process`'s format version, kept as written (only the JSON
    /// number `1` is valid) so that any value reads: the other sources send
    /// none, and a stray one must not break their answers.
    pub(crate) version: Option<Box<RawValue>>,
    code: Option<String>,
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    #[serde(alias = "SessionToken")]
    token: Option<String>,
    expiration: Option<String>,
}

/// Why an answer gave no credentials. Never quotes the answer's secret parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonCredentialsError {
    /// Not the JSON shape: where it went wrong ([`crate::error::json_error`]).
    NotJson(String),
    /// The source answered an error code (`Code` other than `Success`).
    Refused {
        code: String,
        message: String,
    },
    MissingKeys,
    /// The `Expiration` that cannot be read, and why.
    Expiration(secrets_manager_agent_core::iso8601::BadTimestamp),
}

impl fmt::Display for JsonCredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonCredentialsError::NotJson(why) => {
                write!(f, "answer is not credentials JSON: {why}")
            }
            JsonCredentialsError::Refused { code, message } => {
                write!(f, "answered {code}: {message}")
            }
            JsonCredentialsError::MissingKeys => {
                f.write_str("answer lacks AccessKeyId or SecretAccessKey")
            }
            JsonCredentialsError::Expiration(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for JsonCredentialsError {}

pub fn from_json(body: &[u8], source: &str) -> Result<Credentials, JsonCredentialsError> {
    parse(body)?.into_credentials(source)
}

/// The answer's members, before any check of their values.
pub(crate) fn parse(body: &[u8]) -> Result<JsonCredentials, JsonCredentialsError> {
    serde_json::from_slice(body)
        .map_err(|e| JsonCredentialsError::NotJson(crate::error::json_error(&e)))
}

impl JsonCredentials {
    pub(crate) fn into_credentials(
        self,
        source: &str,
    ) -> Result<Credentials, JsonCredentialsError> {
        if let Some(code) = self.code.filter(|c| c != "Success") {
            let message = self.message.unwrap_or_default();
            return Err(JsonCredentialsError::Refused { code, message });
        }
        let non_empty = |v: Option<String>| v.filter(|v| !v.is_empty());
        let (Some(access_key_id), Some(secret_access_key)) = (
            non_empty(self.access_key_id),
            non_empty(self.secret_access_key),
        ) else {
            return Err(JsonCredentialsError::MissingKeys);
        };
        let expiry = secrets_manager_agent_core::iso8601::parse_field(
            "Expiration",
            self.expiration.as_deref(),
        )
        .map_err(JsonCredentialsError::Expiration)?;
        Ok(Credentials {
            access_key_id,
            secret_access_key,
            session_token: non_empty(self.token),
            expiry,
            source: source.to_string(),
        })
    }
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
        assert_eq!(
            from_json(br#"{"Code":"Failure","Message":"no"}"#, "imds")
                .unwrap_err()
                .to_string(),
            "answered Failure: no"
        );
        assert_eq!(
            from_json(br#"{"AccessKeyId":"A"}"#, "x").unwrap_err(),
            JsonCredentialsError::MissingKeys
        );
        assert!(from_json(
            br#"{"AccessKeyId":"A","SecretAccessKey":"S","Expiration":"soon"}"#,
            "x"
        )
        .is_err());
    }
}
