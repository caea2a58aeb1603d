//! Where the cache fills from, and what it serves: a trait, so the cache's
//! policy does not depend on the upstream and tests can script and count
//! calls. [`Clients`], one identity's Secrets Manager and Parameter Store
//! clients, implements it: each key variant goes to its service, a read
//! call passed through (`Key::Call`) to its operation's service, with its
//! answer served as AWS sent it.

use std::sync::Arc;

use super::key::Key;
use secrets_manager_agent_aws::passthrough::Service;
use secrets_manager_agent_aws::secrets_manager::BATCH;
use secrets_manager_agent_aws::ssm::Ssm;
use secrets_manager_agent_aws::{SecretValue, SecretsManager, UpstreamError};
use secrets_manager_agent_core::secret::SecretBytes;

/// A rendered response body, shared by the cache and every writer of it;
/// zeroed when the last of them lets go.
pub type Body = Arc<SecretBytes>;

pub type Served = Result<Body, UpstreamError>;

/// Where the cache fills from; a trait so tests can script and count calls.
/// An implementation serves the key's role (`Key::role`), or refuses.
pub trait Upstream: Send + Sync {
    /// The value and its version, rendered as the body the agent serves.
    fn fetch(&self, key: &Key) -> Result<SecretValue, UpstreamError>;
    /// Whether the version cached for `key` is still what `fetch` would
    /// return (a cheap metadata call).
    fn still_current(&self, key: &Key, cached_version: &str) -> Result<bool, UpstreamError>;
    /// How many keys one `fetch_batch` call takes; 0: the upstream has no
    /// batch call.
    fn batch_limit(&self) -> usize {
        0
    }
    /// The current values of several keys of one role (all `is_current`, at
    /// most `batch_limit`) in one call, each with its index in `keys`. A key
    /// missing from the answer was not read; the cache revalidates it alone.
    fn fetch_batch(&self, keys: &[Key]) -> Result<Vec<(usize, SecretValue)>, UpstreamError> {
        let _ = keys;
        Err(UpstreamError::Internal("no batch call".into()))
    }
}

/// One identity's clients; `roles::Roles` picks the one for a key's role.
pub struct Clients {
    pub secrets_manager: SecretsManager,
    pub ssm: Ssm,
}

impl Upstream for Clients {
    fn fetch(&self, key: &Key) -> Result<SecretValue, UpstreamError> {
        match key {
            Key::Secret { query, .. } => self.secrets_manager.get_secret_value(query),
            Key::Parameter { query, .. } => self.ssm.get_parameter(query),
            Key::Call { call, input, .. } => match call.service() {
                Service::SecretsManager => self.secrets_manager.read(*call, input),
                Service::Ssm => self.ssm.read(*call, input),
            },
        }
    }
    /// Parameter Store has no metadata call cheaper than GetParameter: an
    /// expired parameter is read again. Nor has a call passed through (a
    /// DescribeSecret answer is itself the metadata): it is made again.
    fn still_current(&self, key: &Key, cached_version: &str) -> Result<bool, UpstreamError> {
        match key {
            Key::Secret { query, .. } => Ok(self
                .secrets_manager
                .describe_secret(&query.secret_id)?
                .still_answers(query, cached_version)),
            Key::Parameter { .. } | Key::Call { .. } => Ok(false),
        }
    }
    fn batch_limit(&self) -> usize {
        BATCH
    }
    fn fetch_batch(&self, keys: &[Key]) -> Result<Vec<(usize, SecretValue)>, UpstreamError> {
        let mut ids = Vec::with_capacity(keys.len());
        for key in keys {
            match key {
                Key::Secret { query, .. } => ids.push(query.secret_id.as_str()),
                Key::Parameter { .. } | Key::Call { .. } => {
                    return Err(UpstreamError::Internal(format!(
                        "{key} in a batch of secrets"
                    )))
                }
            }
        }
        self.secrets_manager.batch_get_current(&ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrets_manager_agent_aws::client::Client;
    use secrets_manager_agent_aws::identity::{Credentials, Static};
    use secrets_manager_agent_aws::transport::{Timeouts, Transport};
    use secrets_manager_agent_aws::ReadCall;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc::{self, Receiver};
    use std::time::Duration;

    /// A request as the server got it: its headers (names lower-cased) and
    /// body.
    struct Seen {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> &str {
            header(&self.headers, name)
        }
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// A loopback server, standing in for one service's endpoint: answers
    /// every request with `answer` and reports what it got.
    fn endpoint(answer: &'static [u8]) -> (String, Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream);
                let mut headers = Vec::new();
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    if let Some((name, value)) = line.split_once(':') {
                        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
                    }
                    line.clear();
                }
                let length = header(&headers, "content-length").parse().unwrap_or(0);
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    answer.len()
                );
                let _ = stream.write_all(answer);
                if tx.send(Seen { headers, body }).is_err() {
                    return;
                }
            }
        });
        (url, rx)
    }

    fn clients(secrets_manager: &str, ssm: &str) -> Clients {
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            call: Duration::from_secs(10),
        };
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "example".into(),
            session_token: None,
            expiry: None,
            source: "test".into(),
        };
        let client = Arc::new(Client::new(
            Transport::without_proxy(timeouts),
            "us-east-1".into(),
            Arc::new(Static(Arc::new(credentials))),
        ));
        Clients {
            secrets_manager: SecretsManager::new(client.clone(), secrets_manager.into()),
            ssm: Ssm::new(client, ssm.into()),
        }
    }

    fn call(call: ReadCall, input: &str) -> Key {
        Key::Call {
            call,
            input: input.into(),
            role: None,
        }
    }

    #[test]
    fn calls_go_to_their_service_and_come_back_as_sent() {
        const SECRETS: &[u8] =
            br#"{"SecretValues":[{"Name":"a","SecretString":"s3cr\"t","CreatedDate":1.7E9}], "Errors":[]}"#;
        const PARAMETERS: &[u8] =
            br#"{"Parameters":[{"Name":"/app/a","Type":"SecureString","Value":"v","Version":1}]}"#;
        let (sm_url, sm) = endpoint(SECRETS);
        let (ssm_url, ssm) = endpoint(PARAMETERS);
        let clients = clients(&sm_url, &ssm_url);
        let wait = |rx: &Receiver<Seen>| rx.recv_timeout(Duration::from_secs(10)).unwrap();

        let calls = [
            (
                call(
                    ReadCall::BatchGetSecretValue,
                    r#"{"Filters":[{"Key":"tag-key","Values":["team"]}]}"#,
                ),
                &sm,
                SECRETS,
                "secretsmanager",
            ),
            (
                call(ReadCall::DescribeSecret, r#"{"SecretId":"a"}"#),
                &sm,
                SECRETS,
                "secretsmanager",
            ),
            (
                call(
                    ReadCall::GetParametersByPath,
                    r#"{"Path":"/app","WithDecryption":true}"#,
                ),
                &ssm,
                PARAMETERS,
                "ssm",
            ),
        ];
        for (key, seen_by, answer, service) in calls {
            let Key::Call { call, input, .. } = &key else {
                unreachable!()
            };
            let value = clients.fetch(&key).unwrap();
            assert_eq!(&*value.body, answer, "{key}: the answer as sent");
            assert_eq!(value.version_id, "");
            let seen = wait(seen_by);
            assert_eq!(seen.body, input.as_bytes(), "{key}: the input as the body");
            assert_eq!(seen.header("x-amz-target"), call.target());
            assert_eq!(seen.header("content-type"), "application/x-amz-json-1.1");
            let scope = format!("/us-east-1/{service}/aws4_request");
            assert!(seen.header("authorization").contains(&scope), "{key}");
            // Never revalidated: no call at all.
            assert_eq!(clients.still_current(&key, ""), Ok(false));
        }
        // A call given to the other service's client is refused unsent.
        assert!(matches!(
            clients.ssm.read(ReadCall::DescribeSecret, "{}"),
            Err(UpstreamError::Internal(_))
        ));
        assert!(matches!(
            clients
                .secrets_manager
                .read(ReadCall::GetParametersByPath, "{}"),
            Err(UpstreamError::Internal(_))
        ));
        assert!(sm.try_recv().is_err() && ssm.try_recv().is_err());
    }
}
