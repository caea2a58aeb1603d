//! STS GetCallerIdentity: the start-up check behind `validate_credentials`.

use std::sync::Arc;

use super::client::Client;
use super::error::{xml_element, UpstreamError};

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
        let url = format!("{}/", self.endpoint);
        let headers = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let body = b"Action=GetCallerIdentity&Version=2011-06-15";
        let reply = self.client.post("sts", &url, &headers, body)?;
        let text = String::from_utf8_lossy(&reply);
        xml_element(&text, "Arn")
            .ok_or_else(|| UpstreamError::Response("GetCallerIdentity answer has no <Arn>".into()))
    }
}
