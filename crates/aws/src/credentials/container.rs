//! The container credential endpoint: ECS and Fargate task roles
//! (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`) and EKS Pod Identity
//! (`AWS_CONTAINER_CREDENTIALS_FULL_URI` plus an authorization token file).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::json::JsonCredentialsError;
use crate::identity::{Credentials, CredentialsError, ProvideCredentials};
use crate::transport::{Timeouts, Transport};
use crate::UpstreamError;
use secrets_manager_agent_core::env::TokenFileError;

const SOURCE: &str = "container";
const ECS_HOST: &str = "http://169.254.170.2";
const ATTEMPTS: u32 = 3;

/// Why the container endpoint gave no credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerError {
    NotSet,
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` does not parse as a URL.
    NotAUrl(String),
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` is neither http nor https.
    Scheme(String),
    /// This host may not be reached over plain http.
    HostNotAllowed(String),
    TokenFile(TokenFileError),
    TokenLineBreak,
    Endpoint {
        uri: String,
        error: UpstreamError,
    },
    Credentials {
        uri: String,
        error: JsonCredentialsError,
    },
}

impl fmt::Display for ContainerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FULL: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
        match self {
            ContainerError::NotSet => write!(
                f,
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and {FULL} are not set"
            ),
            ContainerError::NotAUrl(uri) => write!(f, "{FULL} `{uri}` is not a URL"),
            ContainerError::Scheme(uri) => write!(f, "{FULL} `{uri}` must be http or https"),
            ContainerError::HostNotAllowed(host) => write!(
                f,
                "{FULL} host `{host}` is not allowed over http: use https, a loopback address, 169.254.170.2, 169.254.170.23 or [fd00:ec2::23]"
            ),
            ContainerError::TokenFile(e) => e.fmt(f),
            ContainerError::TokenLineBreak => f.write_str(
                "the authorization token contains a line break (it must be a single line)",
            ),
            ContainerError::Endpoint { uri, error } => write!(f, "{uri}: {error}"),
            ContainerError::Credentials { uri, error } => write!(f, "{uri}: {error}"),
        }
    }
}

impl std::error::Error for ContainerError {}

pub struct Container {
    /// The endpoint, or why there is none.
    uri: Result<String, ContainerError>,
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
            (None, None) => Err(ContainerError::NotSet),
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
    fn authorization(&self) -> Result<Option<String>, ContainerError> {
        let token = match &self.token_file {
            Some(path) => Some(
                secrets_manager_agent_core::env::read_token_file(path)
                    .map_err(ContainerError::TokenFile)?,
            ),
            None => self.token.clone(),
        };
        if token.as_ref().is_some_and(|t| t.contains(['\r', '\n'])) {
            return Err(ContainerError::TokenLineBreak);
        }
        Ok(token)
    }

    fn fetch(&self) -> Result<Credentials, ContainerError> {
        let uri = self.uri.as_ref().map_err(Clone::clone)?;
        let headers: Vec<(String, String)> = self
            .authorization()?
            .map(|t| vec![("authorization".to_string(), t)])
            .unwrap_or_default();
        // Not the AWS client's retry (budget, exponential backoff up to
        // seconds): the endpoint is local and answers in milliseconds, so a
        // few quick tries, and none after a timeout, fit it better.
        let mut attempt = 1;
        loop {
            let error = match self.transport.send("GET", uri, &headers, b"") {
                Ok(body) => {
                    return super::json::from_json(&body, SOURCE).map_err(|error| {
                        ContainerError::Credentials {
                            uri: uri.clone(),
                            error,
                        }
                    })
                }
                Err(error) => error,
            };
            // A timeout is not retried: three of them would hold the request
            // for 15 s.
            let retry = matches!(
                error,
                UpstreamError::Service {
                    status: 500..=599,
                    ..
                } | UpstreamError::Connection(_)
            );
            if !retry || attempt == ATTEMPTS {
                return Err(ContainerError::Endpoint {
                    uri: uri.clone(),
                    error,
                });
            }
            std::thread::sleep(Duration::from_millis(100 << attempt));
            attempt += 1;
        }
    }
}

/// A full URI may name only hosts that cannot be somebody else's server.
fn check_full_uri(full: &str) -> Result<(), ContainerError> {
    let uri: ureq::http::Uri = full
        .parse()
        .map_err(|_| ContainerError::NotAUrl(full.to_string()))?;
    if uri.scheme_str() == Some("https") {
        return Ok(());
    }
    if uri.scheme_str() != Some("http") {
        return Err(ContainerError::Scheme(full.to_string()));
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
        Err(ContainerError::HostNotAllowed(host.to_string()))
    }
}

impl ProvideCredentials for Container {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        if let Err(why) = &self.uri {
            if self.not_configured {
                return Err(CredentialsError::new(SOURCE, why.to_string()));
            }
        }
        self.fetch()
            .map(Arc::new)
            .map_err(|why| CredentialsError::failed(SOURCE, why.to_string()))
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
        assert_eq!(
            check_full_uri("http://192.0.2.1/x"),
            Err(ContainerError::HostNotAllowed("192.0.2.1".into()))
        );
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
        let e = c.authorization().unwrap_err().to_string();
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
