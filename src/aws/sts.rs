//! STS over its query protocol: GetCallerIdentity (the start-up check behind
//! `validate_credentials`), AssumeRole (profiles with `role_arn`) and
//! AssumeRoleWithWebIdentity (EKS IRSA, sent unsigned).

use std::sync::Arc;

use super::client::Client;
use super::error::{xml_element, UpstreamError};
use super::retry::{Attempt, Retry};
use super::transport::Transport;
use crate::credentials::{from_sts_xml, Credentials};
use crate::query::form_encode;

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
const VERSION: &str = "2011-06-15";

pub struct Sts {
    client: Arc<Client>,
    endpoint: String,
}

impl Sts {
    pub fn new(client: Arc<Client>, endpoint: String) -> Sts {
        Sts { client, endpoint }
    }

    /// Returns the caller's ARN.
    pub fn get_caller_identity(&self) -> Result<String, UpstreamError> {
        let body = form_encode(&[("Action", "GetCallerIdentity"), ("Version", VERSION)]);
        let reply = self.post(&body)?;
        let text = String::from_utf8_lossy(&reply);
        xml_element(&text, "Arn")
            .ok_or_else(|| UpstreamError::Response("GetCallerIdentity answer has no <Arn>".into()))
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
        let reply = self.post(&form_encode(&pairs))?;
        from_sts_xml(&reply, "assumed role").map_err(UpstreamError::Response)
    }

    fn post(&self, body: &str) -> Result<Vec<u8>, UpstreamError> {
        let url = format!("{}/", self.endpoint);
        self.client
            .post("sts", &url, &[("content-type", FORM)], body.as_bytes())
    }
}

/// AssumeRoleWithWebIdentity: the web identity token is the proof, so the call
/// is not signed.
pub fn assume_role_with_web_identity(
    transport: &Transport,
    retry: &Retry,
    endpoint: &str,
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
    let url = format!("{endpoint}/");
    let headers = [("content-type".to_string(), FORM.to_string())];
    let reply = retry.run(|_| {
        let outcome = transport.post(&url, &headers, body.as_bytes());
        Attempt {
            result: outcome.result.map(|r| r.body),
            retry_after: outcome.retry_after,
        }
    })?;
    from_sts_xml(&reply, "web identity").map_err(UpstreamError::Response)
}

/// `RoleSessionName` when none is configured.
pub fn default_session_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("secrets-manager-agent-{secs}")
}
