//! One AWS call with retries: credentials, SigV4, transport. Every service
//! module (Secrets Manager, SSM, STS, the read calls passed through) goes
//! through here, so there is one retry path and one retry budget per client.

use std::sync::Arc;
use std::time::Instant;

use super::error::UpstreamError;
use super::identity::ProvideCredentials;
use super::retry::Retry;
use super::sign::sign_request;
use super::transport::Transport;
use secrets_manager_agent_core::metrics::{self, Outcome};

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
    /// signed; returns the 2xx body. `operation` names the call in the
    /// metrics.
    pub fn post(
        &self,
        operation: &str,
        service: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<u8>, UpstreamError> {
        self.send(OnThrottle::Retry, operation, service, url, headers, body)
    }

    fn send(
        &self,
        on_throttle: OnThrottle,
        operation: &str,
        service: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<u8>, UpstreamError> {
        // A credentials failure ends the call without a retry here: the
        // source has its own retries and back-off (a role's AssumeRole is a
        // signed call through another client). Its error, transient or not,
        // is kept aside and returned as the call's error.
        let mut no_credentials = None;
        let attempt = |_| {
            let signed = match &self.credentials {
                Some(provider) => {
                    let creds = match provider.credentials() {
                        Ok(creds) => creds,
                        Err(e) => {
                            no_credentials = Some(e.into_upstream());
                            return Err(UpstreamError::Credentials(String::new()));
                        }
                    };
                    sign_request(&creds, &self.region, service, url, headers, body)
                        .map_err(|e| UpstreamError::Internal(e.to_string()))?
                }
                None => Vec::new(),
            };
            let all: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(signed)
                .collect();
            let started = Instant::now();
            let answer = self.transport.post(url, &all, body);
            metrics::upstream(operation, outcome(&answer), started.elapsed());
            answer
        };
        let result = match on_throttle {
            OnThrottle::Retry => self.retry.run(attempt),
            OnThrottle::Return => self.retry.run_unless_throttled(attempt),
        };
        result.map_err(|e| no_credentials.unwrap_or(e))
    }

    /// One call of a JSON 1.1 service (Secrets Manager, SSM): `input` as the
    /// body, `target` (`secretsmanager.GetSecretValue`) in `X-Amz-Target`.
    /// `what` names the object of the call in the debug log line.
    pub fn json_call(
        &self,
        on_throttle: OnThrottle,
        service: &str,
        endpoint: &str,
        target: &str,
        what: &str,
        input: &impl serde::Serialize,
    ) -> Result<Vec<u8>, UpstreamError> {
        let body = serde_json::to_vec(input)
            .map_err(|e| UpstreamError::Internal(format!("cannot encode {target}: {e}")))?;
        self.json_call_raw(on_throttle, service, endpoint, target, what, &body)
    }

    /// [`Client::json_call`] with the input already encoded: `body` is sent
    /// as it is (a read call passed through, whose input is the SDK's own
    /// JSON).
    pub fn json_call_raw(
        &self,
        on_throttle: OnThrottle,
        service: &str,
        endpoint: &str,
        target: &str,
        what: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, UpstreamError> {
        let url = format!("{endpoint}/");
        log::debug!("{target} for {what}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ];
        let operation = target.rsplit('.').next().unwrap_or(target);
        self.send(on_throttle, operation, service, &url, &headers, body)
    }
}

/// How an attempt ended, for the metrics.
fn outcome<T>(answer: &Result<T, UpstreamError>) -> Outcome {
    match answer {
        Ok(_) => Outcome::Ok,
        Err(e) if e.is_throttling() => Outcome::Throttled,
        Err(UpstreamError::Service { status, .. }) if *status >= 500 => Outcome::ServerError,
        Err(UpstreamError::Service { .. }) => Outcome::ClientError,
        Err(UpstreamError::Timeout) => Outcome::Timeout,
        Err(UpstreamError::Connection(_) | UpstreamError::Tls(_)) => Outcome::ConnectionError,
        Err(_) => Outcome::Other,
    }
}

/// Whether a throttled call is tried again, as the SDKs do, or its error
/// handed back at once (see `Retry::run_unless_throttled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnThrottle {
    Retry,
    Return,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Credentials, CredentialsError};
    use crate::transport::Timeouts;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Fails every time, with `answer` as AWS's refusal if there is one.
    struct Refused {
        answer: Option<UpstreamError>,
        asked: AtomicUsize,
    }

    impl ProvideCredentials for Refused {
        fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Err(CredentialsError {
                answer: self.answer.clone(),
                ..CredentialsError::failed("AssumeRole r", "refused")
            })
        }
    }

    fn post_with(answer: Option<UpstreamError>) -> (UpstreamError, usize) {
        let provider = Arc::new(Refused {
            answer,
            asked: AtomicUsize::new(0),
        });
        let timeouts = Timeouts {
            connect: Duration::from_millis(1),
            call: Duration::from_millis(1),
        };
        let transport = Transport::without_proxy(timeouts);
        let client = Client::new(transport, "us-east-1".into(), provider.clone());
        // Never reached: the call ends at the credentials.
        let e = client
            .post(
                "GetSecretValue",
                "secretsmanager",
                "http://127.0.0.1:9/",
                &[],
                b"{}",
            )
            .unwrap_err();
        (e, provider.asked.load(Ordering::SeqCst))
    }

    #[test]
    fn a_refusal_of_credentials_is_the_calls_error_and_is_not_retried() {
        let denied = UpstreamError::service(403, "AccessDenied", "not allowed");
        assert_eq!(post_with(Some(denied.clone())), (denied, 1));
        // A transient one stays transient (stale answers may be served), but
        // this client does not retry it: the source retried its own call.
        let throttled = UpstreamError::service(400, "Throttling", "slow down");
        assert_eq!(post_with(Some(throttled.clone())), (throttled, 1));
        let (e, asked) = post_with(None);
        assert_eq!(asked, 1);
        assert_eq!(
            e,
            UpstreamError::Credentials("no AWS credentials found: AssumeRole r: refused".into())
        );
    }
}
