//! STS over its query protocol: GetCallerIdentity (the start-up check behind
//! `validate_credentials`), AssumeRole (profiles with `role_arn`) and
//! AssumeRoleWithWebIdentity (EKS IRSA, sent unsigned), and the credentials
//! in their answers.

use std::fmt;
use std::sync::Arc;

use super::client::Client;
use super::error::{xml_element, UpstreamError};
use super::identity::Credentials;
use secrets_manager_agent_core::query::form_encode;

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
const VERSION: &str = "2011-06-15";

pub struct Sts {
    client: Arc<Client>,
    endpoint: String,
}

impl Sts {
    /// Calls are signed with `client`'s credentials; an anonymous client
    /// (`Client::anonymous`) suits only AssumeRoleWithWebIdentity.
    pub fn new(client: Arc<Client>, endpoint: String) -> Sts {
        Sts { client, endpoint }
    }

    /// Returns the caller's ARN.
    pub fn get_caller_identity(&self) -> Result<String, UpstreamError> {
        let body = form_encode(&[("Action", "GetCallerIdentity"), ("Version", VERSION)]);
        let reply = self.post("GetCallerIdentity", &body)?;
        caller_arn(&reply)
    }

    /// Temporary credentials for `role_arn`, signed with this client's credentials.
    pub fn assume_role(
        &self,
        role_arn: &str,
        session_name: &str,
        external_id: Option<&str>,
    ) -> Result<Credentials, UpstreamError> {
        let mut pairs = vec![
            ("Action", "AssumeRole"),
            ("Version", VERSION),
            ("RoleArn", role_arn),
            ("RoleSessionName", session_name),
        ];
        if let Some(id) = external_id {
            pairs.push(("ExternalId", id));
        }
        let reply = self.post("AssumeRole", &form_encode(&pairs))?;
        from_xml(&reply, "assumed role").map_err(|e| UpstreamError::Response(e.to_string()))
    }

    /// AssumeRoleWithWebIdentity: the web identity token is the proof, so the
    /// call needs no signature (and an anonymous client sends none).
    pub fn assume_role_with_web_identity(
        &self,
        role_arn: &str,
        session_name: &str,
        token: &str,
    ) -> Result<Credentials, UpstreamError> {
        let body = form_encode(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", VERSION),
            ("RoleArn", role_arn),
            ("RoleSessionName", session_name),
            ("WebIdentityToken", token),
        ]);
        let reply = self.post("AssumeRoleWithWebIdentity", &body)?;
        from_xml(&reply, "web identity").map_err(|e| UpstreamError::Response(e.to_string()))
    }

    fn post(&self, operation: &str, body: &str) -> Result<Vec<u8>, UpstreamError> {
        let url = format!("{}/", self.endpoint);
        self.client.post(
            operation,
            "sts",
            &url,
            &[("content-type", FORM)],
            body.as_bytes(),
        )
    }
}

/// `RoleSessionName` when none is configured.
pub fn default_session_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("secrets-manager-agent-{secs}")
}

/// The `<Arn>` of a GetCallerIdentity answer (public for the fuzz targets).
pub fn caller_arn(reply: &[u8]) -> Result<String, UpstreamError> {
    let text = String::from_utf8_lossy(reply);
    xml_element(&text, "Arn")
        .ok_or_else(|| UpstreamError::Response("GetCallerIdentity answer has no <Arn>".into()))
}

/// Why an STS answer gave no credentials. Never quotes the answer's secret parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StsCredentialsError {
    NoCredentials,
    /// A value holds markup: the answer is mangled.
    Markup,
    MissingKeys,
    /// The `Expiration` that cannot be read, and why.
    Expiration(secrets_manager_agent_core::iso8601::BadTimestamp),
}

impl fmt::Display for StsCredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StsCredentialsError::NoCredentials => f.write_str("STS answer has no <Credentials>"),
            StsCredentialsError::Markup => {
                f.write_str("STS answer's credentials hold markup in a value")
            }
            StsCredentialsError::MissingKeys => {
                f.write_str("STS answer lacks AccessKeyId or SecretAccessKey")
            }
            StsCredentialsError::Expiration(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for StsCredentialsError {}

/// The `<Credentials>` element of an STS AssumeRole* answer (public for the
/// fuzz targets).
pub fn from_xml(body: &[u8], source: &str) -> Result<Credentials, StsCredentialsError> {
    let text = String::from_utf8_lossy(body);
    let creds = xml_element(&text, "Credentials").ok_or(StsCredentialsError::NoCredentials)?;
    // Markup inside a value means a tag matched a closing tag past other
    // elements (a mangled answer): such a value may hold the secret parts, so
    // it is refused unquoted instead of reaching an error message or the log.
    let fields = [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ];
    if fields
        .iter()
        .any(|name| xml_element(&creds, name).is_some_and(|v| v.contains('<')))
    {
        return Err(StsCredentialsError::Markup);
    }
    let get = |name| xml_element(&creds, name).filter(|v| !v.is_empty());
    let (Some(access_key_id), Some(secret_access_key)) =
        (get("AccessKeyId"), get("SecretAccessKey"))
    else {
        return Err(StsCredentialsError::MissingKeys);
    };
    // An expiry that cannot be read (an empty one included) must not turn
    // into "never expires".
    let expiry = secrets_manager_agent_core::iso8601::parse_field(
        "STS Expiration",
        xml_element(&creds, "Expiration").as_deref(),
    )
    .map_err(StsCredentialsError::Expiration)?;
    Ok(Credentials {
        access_key_id,
        secret_access_key,
        session_token: get("SessionToken"),
        expiry,
        source: source.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_xml() {
        let body = b"<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIA</AccessKeyId>\
            <SecretAccessKey>S</SecretAccessKey><SessionToken>T</SessionToken>\
            <Expiration>2026-11-28T21:08:17Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>";
        let c = from_xml(body, "sts").unwrap();
        assert_eq!(c.access_key_id, "ASIA");
        assert_eq!(c.session_token.as_deref(), Some("T"));
        assert!(c.expiry.is_some());
        assert!(from_xml(b"<x/>", "sts").is_err());
        let bad_expiry =
            b"<Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>\
            <Expiration>2026-02-30T00:00:00Z</Expiration></Credentials>";
        assert!(from_xml(bad_expiry, "sts")
            .unwrap_err()
            .to_string()
            .contains("Expiration"));
        let empty_expiry =
            b"<Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>\
            <Expiration></Expiration></Credentials>";
        assert!(from_xml(empty_expiry, "sts")
            .unwrap_err()
            .to_string()
            .contains("Expiration"));
        // An element running on past others must not carry a secret into
        // the error (or, as the access key ID, into the log).
        for mangled in [
            &b"<Credentials><AccessKeyId>A</AccessKeyId><Expiration>2026\
            <SessionToken>T0KEN</SessionToken><Expiration>2026-11-28T21:08:17Z</Expiration>\
            <SecretAccessKey>S</SecretAccessKey></Credentials>"[..],
            b"<Credentials><AccessKeyId><SecretAccessKey>SECRET</SecretAccessKey>\
            </AccessKeyId></Credentials>",
        ] {
            assert_eq!(
                from_xml(mangled, "sts").unwrap_err(),
                StsCredentialsError::Markup
            );
        }
        let no_secret = b"<Credentials><AccessKeyId>ASIA</AccessKeyId></Credentials>";
        assert_eq!(
            from_xml(no_secret, "sts").unwrap_err(),
            StsCredentialsError::MissingKeys
        );
    }
}
