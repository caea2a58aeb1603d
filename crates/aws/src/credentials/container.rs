//! The container credential endpoint: ECS and Fargate task roles
//! (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`) and EKS Pod Identity
//! (`AWS_CONTAINER_CREDENTIALS_FULL_URI` plus an authorization token file).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::identity::{Credentials, CredentialsError, ProvideCredentials};
use crate::transport::{Timeouts, Transport};
use crate::UpstreamError;

const SOURCE: &str = "container";
const ECS_HOST: &str = "http://169.254.170.2";
const ATTEMPTS: u32 = 3;

pub struct Container {
    /// The endpoint, or why there is none.
    uri: Result<String, String>,
    /// Neither URI variable is set: not a container, the chain moves on.
    not_configured: bool,
    token_file: Option<PathBuf>,
    token: Option<String>,
    transport: Transport,
}

impl Container {
    pub fn from_env() -> Container {
        Container::from_lookup(secrets_manager_agent_core::env::var)
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Container {
        let relative = get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
        let full = get("AWS_CONTAINER_CREDENTIALS_FULL_URI");
        let not_configured = relative.is_none() && full.is_none();
        let uri = match (relative, full) {
            (Some(relative), _) => Ok(format!("{ECS_HOST}/{}", relative.trim_start_matches('/'))),
            (None, Some(full)) => check_full_uri(&full).map(|()| full),
            (None, None) => Err(
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI are not set"
                    .into(),
            ),
        };
        Container {
            uri,
            not_configured,
            token_file: get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").map(PathBuf::from),
            token: get("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            transport: Transport::without_proxy(Timeouts {
                connect: Duration::from_secs(2),
                call: Duration::from_secs(5),
            }),
        }
    }

    /// The Authorization value: the token file is re-read on every call
    /// (EKS rotates it), else the variable.
    fn authorization(&self) -> Result<Option<String>, String> {
        let token = match &self.token_file {
            Some(path) => Some(
                secrets_manager_agent_core::env::read_token_file(path)
                    .map_err(|e| e.to_string())?,
            ),
            None => self.token.clone(),
        };
        if token.as_ref().is_some_and(|t| t.contains(['\r', '\n'])) {
            return Err("the authorization token contains a line break".into());
        }
        Ok(token)
    }

    fn fetch(&self) -> Result<Credentials, String> {
        let uri = self.uri.as_ref().map_err(Clone::clone)?;
        let headers: Vec<(String, String)> = self
            .authorization()?
            .map(|t| vec![("authorization".to_string(), t)])
            .unwrap_or_default();
        // Not the AWS client's retry (budget, exponential backoff up to
        // seconds): the endpoint is local and answers in milliseconds, so a
        // few quick tries, and none after a timeout, fit it better.
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            match self.transport.send("GET", uri, &headers, b"") {
                Ok(body) => {
                    return super::json::from_json(&body, SOURCE).map_err(|e| format!("{uri}: {e}"))
                }
                Err(
                    e @ UpstreamError::Service {
                        status: 500..=599, ..
                    },
                )
                | Err(e @ UpstreamError::Connection(_)) => last = format!("{uri}: {e}"),
                // A timeout is not retried: three of them would hold the
                // request for 15 s.
                Err(e) => return Err(format!("{uri}: {e}")),
            }
        }
        Err(last)
    }
}

/// A full URI may name only hosts that cannot be somebody else's server.
fn check_full_uri(full: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = full
        .parse()
        .map_err(|_| format!("AWS_CONTAINER_CREDENTIALS_FULL_URI `{full}` is not a URL"))?;
    if uri.scheme_str() == Some("https") {
        return Ok(());
    }
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI `{full}` must be http or https"
        ));
    }
    let host = uri.host().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let allowed = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| {
            ip.is_loopback()
                || ["169.254.170.2", "169.254.170.23", "fd00:ec2::23"]
                    .iter()
                    .any(|a| a.parse::<IpAddr>().is_ok_and(|a| a == ip))
        });
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI host `{host}` is not allowed over http: use https, a loopback address, 169.254.170.2, 169.254.170.23 or [fd00:ec2::23]"
        ))
    }
}

impl ProvideCredentials for Container {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        if let Err(why) = &self.uri {
            if self.not_configured {
                return Err(CredentialsError::new(SOURCE, why.clone()));
            }
        }
        self.fetch()
            .map(Arc::new)
            .map_err(|why| CredentialsError::failed(SOURCE, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri_host_rule() {
        for ok in [
            "https://example.com/creds",
            "http://127.0.0.1:8080/creds",
            "http://127.1.2.3/creds",
            "http://localhost/creds",
            "http://[::1]:9/creds",
            "http://169.254.170.2/v2/credentials",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
        ] {
            assert!(check_full_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://192.0.2.1/creds",
            "http://example.com/",
            "ftp://127.0.0.1/",
        ] {
            assert!(check_full_uri(bad).is_err(), "{bad}");
        }
        assert!(check_full_uri("http://192.0.2.1/x")
            .unwrap_err()
            .contains("192.0.2.1"));
    }

    #[test]
    fn an_empty_token_file_is_an_error_before_any_request() {
        let dir = std::env::temp_dir().join(format!("sma-container-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "\n").unwrap();
        let path = file.display().to_string();
        let c = Container::from_lookup(|n| match n {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI" => Some("http://127.0.0.1:9/creds".into()),
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" => Some(path.clone()),
            _ => None,
        });
        let e = c.authorization().unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        std::fs::write(&file, "tok\n").unwrap();
        assert_eq!(c.authorization().unwrap().as_deref(), Some("tok"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_uri_wins_and_goes_to_the_ecs_host() {
        let c = Container::from_lookup(|n| match n {
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" => Some("/v2/credentials/abc".into()),
            "AWS_CONTAINER_CREDENTIALS_FULL_URI" => Some("http://192.0.2.1/".into()),
            _ => None,
        });
        assert_eq!(c.uri.unwrap(), "http://169.254.170.2/v2/credentials/abc");
    }
}
