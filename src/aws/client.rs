//! One AWS call with retries: credentials, SigV4, transport. Every service
//! module (Secrets Manager, STS) goes through here, so there is one retry
//! path and one retry budget per client.

use std::sync::Arc;

use super::error::UpstreamError;
use super::identity::ProvideCredentials;
use super::retry::Retry;
use super::sign::sign_request;
use super::transport::Transport;

pub struct Client {
    transport: Transport,
    retry: Retry,
    region: String,
    /// `None`: an anonymous client, whose calls are sent unsigned.
    credentials: Option<Arc<dyn ProvideCredentials>>,
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
            credentials: Some(credentials),
        }
    }

    /// A client that signs nothing: for calls whose proof is in the body
    /// (STS AssumeRoleWithWebIdentity).
    pub fn anonymous(transport: Transport, region: String) -> Client {
        Client {
            transport,
            retry: Retry::default(),
            region,
            credentials: None,
        }
    }

    /// POSTs `body` to `url`, signed for `service` (unless the client is
    /// anonymous), retrying transient failures. `headers` are sent and
    /// signed; returns the 2xx body.
    pub fn post(
        &self,
        service: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<u8>, UpstreamError> {
        self.retry.run(|_| {
            let signed = match &self.credentials {
                Some(provider) => {
                    let creds = provider
                        .credentials()
                        .map_err(|e| UpstreamError::Credentials(e.to_string()))?;
                    sign_request(&creds, &self.region, service, url, headers, body)
                        .map_err(UpstreamError::Internal)?
                }
                None => Vec::new(),
            };
            let all: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(signed)
                .collect();
            self.transport.post(url, &all, body)
        })
    }
}
