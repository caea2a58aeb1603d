//! One signed AWS call with retries: credentials, SigV4, transport. Every
//! service module (Secrets Manager, STS) goes through here.

use std::sync::Arc;

use super::error::UpstreamError;
use super::retry::{Attempt, Retry};
use super::sign::sign_request;
use super::transport::Transport;
use crate::credentials::ProvideCredentials;

pub struct Client {
    transport: Transport,
    retry: Retry,
    region: String,
    credentials: Arc<dyn ProvideCredentials>,
}

impl Client {
    pub fn new(
        transport: Transport,
        region: String,
        credentials: Arc<dyn ProvideCredentials>,
    ) -> Client {
        Client {
            transport,
            retry: Retry::default(),
            region,
            credentials,
        }
    }

    /// POSTs `body` to `url`, signed for `service`, retrying transient
    /// failures. `headers` are sent and signed; returns the 2xx body.
    pub fn post(
        &self,
        service: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<u8>, UpstreamError> {
        self.retry.run(|_| {
            let creds = match self.credentials.credentials() {
                Ok(creds) => creds,
                Err(e) => return failed(UpstreamError::Credentials(e.to_string())),
            };
            let signed = match sign_request(&creds, &self.region, service, url, headers, body) {
                Ok(signed) => signed,
                Err(why) => return failed(UpstreamError::Internal(why)),
            };
            let all: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(signed)
                .collect();
            let outcome = self.transport.post(url, &all, body);
            Attempt {
                result: outcome.result.map(|reply| reply.body),
                retry_after: outcome.retry_after,
            }
        })
    }
}

fn failed<T>(error: UpstreamError) -> Attempt<T> {
    Attempt {
        result: Err(error),
        retry_after: None,
    }
}
