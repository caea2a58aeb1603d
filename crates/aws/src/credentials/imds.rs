//! EC2 instance metadata (IMDSv2): the session token, the instance role's
//! credentials, and the instance's region.
//!
//! IMDSv1 (no token) is used only when the token request is refused with
//! 403/404/405 and `AWS_EC2_METADATA_V1_DISABLED` is not set; a token request
//! that times out usually means a container one network hop too far (the
//! instance's hop limit), and falling back would only hide that.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::json::JsonCredentialsError;
use crate::identity::{Credentials, CredentialsError, ProvideCredentials};
use crate::transport::{Timeouts, Transport};
use crate::UpstreamError;
use secrets_manager_agent_core::env;
use secrets_manager_agent_core::sync::lock;

const SOURCE: &str = "IMDS";
const TOKEN_TTL_SECS: u64 = 21_600;
const TIMEOUT: Duration = Duration::from_secs(1);
const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";

pub struct Imds {
    transport: Transport,
    endpoint: String,
    /// IMDS is not to be used at all (`AWS_EC2_METADATA_DISABLED`).
    disabled: bool,
    v1_disabled: bool,
    token: Mutex<Token>,
}

/// Why IMDS gave no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ImdsError {
    Disabled,
    TokenRefusedTwice {
        path: String,
    },
    EmptyToken,
    /// The token request was refused with this status and IMDSv1 is forbidden.
    V1Disabled(u16),
    TokenTimeout {
        endpoint: String,
    },
    Timeout {
        path: String,
    },
    Unreachable {
        endpoint: String,
        why: String,
    },
    NoRole,
    Upstream {
        path: String,
        error: UpstreamError,
    },
    EmptyRegion,
    Credentials {
        role: String,
        error: JsonCredentialsError,
    },
}

impl fmt::Display for ImdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = TIMEOUT.as_secs();
        match self {
            ImdsError::Disabled => f.write_str("disabled by AWS_EC2_METADATA_DISABLED"),
            ImdsError::TokenRefusedTwice { path } => {
                write!(f, "GET {path}: the token was refused twice")
            }
            ImdsError::EmptyToken => {
                f.write_str("the IMDSv2 token request answered an empty token")
            }
            ImdsError::V1Disabled(status) => write!(
                f,
                "the IMDSv2 token request was refused ({status}) and AWS_EC2_METADATA_V1_DISABLED forbids IMDSv1"
            ),
            ImdsError::TokenTimeout { endpoint } => write!(
                f,
                "token request to {endpoint} timed out after {secs} s (inside a container? the instance's metadata hop limit may be 1)"
            ),
            ImdsError::Timeout { path } => write!(f, "GET {path} timed out after {secs} s"),
            ImdsError::Unreachable { endpoint, why } => {
                write!(f, "cannot reach {endpoint} ({why}; not on EC2?)")
            }
            ImdsError::NoRole => f.write_str("no IAM role is attached to this instance"),
            ImdsError::Upstream { path, error } => write!(f, "GET {path}: {error}"),
            ImdsError::EmptyRegion => f.write_str("IMDS answered an empty region"),
            ImdsError::Credentials { role, error } => write!(f, "role {role}: {error}"),
        }
    }
}

impl std::error::Error for ImdsError {}

enum Token {
    Unknown,
    Session {
        value: String,
        renew_at: Instant,
    },
    /// The token request was refused: plain IMDSv1 GETs.
    V1,
}

impl Imds {
    pub fn from_env() -> Imds {
        let endpoint = match env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => match env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") {
                Some(mode) if mode.eq_ignore_ascii_case("ipv6") => "http://[fd00:ec2::254]".into(),
                _ => "http://169.254.169.254".into(),
            },
        };
        let disabled = env::flag("AWS_EC2_METADATA_DISABLED");
        Imds {
            transport: Transport::without_proxy(Timeouts {
                connect: TIMEOUT,
                call: TIMEOUT,
            }),
            endpoint,
            disabled,
            v1_disabled: env::flag("AWS_EC2_METADATA_V1_DISABLED"),
            token: Mutex::new(Token::Unknown),
        }
    }

    /// GETs a metadata path (IMDSv2 token attached), renewing the token once
    /// if IMDS says it is no longer valid.
    pub fn get(&self, path: &str) -> Result<String, ImdsError> {
        if self.disabled {
            return Err(ImdsError::Disabled);
        }
        for attempt in 0..2 {
            let token = self.token()?;
            let headers: Vec<(String, String)> = token
                .map(|t| vec![("x-aws-ec2-metadata-token".to_string(), t)])
                .unwrap_or_default();
            let url = format!("{}{path}", self.endpoint);
            match self.transport.send("GET", &url, &headers, b"") {
                Ok(body) => return Ok(String::from_utf8_lossy(&body).into_owned()),
                Err(UpstreamError::Service { status: 401, .. }) if attempt == 0 => {
                    *lock(&self.token) = Token::Unknown;
                }
                Err(e) => return Err(self.explain(path, e)),
            }
        }
        Err(ImdsError::TokenRefusedTwice {
            path: path.to_string(),
        })
    }

    /// The session token, or `None` for IMDSv1.
    fn token(&self) -> Result<Option<String>, ImdsError> {
        let mut token = lock(&self.token);
        match &*token {
            Token::Session { value, renew_at } if Instant::now() < *renew_at => {
                return Ok(Some(value.clone()))
            }
            Token::V1 => return Ok(None),
            _ => {}
        }
        let url = format!("{}/latest/api/token", self.endpoint);
        let headers = [(
            "x-aws-ec2-metadata-token-ttl-seconds".to_string(),
            TOKEN_TTL_SECS.to_string(),
        )];
        match self.transport.send("PUT", &url, &headers, b"") {
            Ok(body) => {
                let value = String::from_utf8_lossy(&body).trim().to_string();
                if value.is_empty() {
                    return Err(ImdsError::EmptyToken);
                }
                *token = Token::Session {
                    value: value.clone(),
                    // Renew well before the TTL so a token never expires mid-call.
                    renew_at: Instant::now() + Duration::from_secs(TOKEN_TTL_SECS - 600),
                };
                Ok(Some(value))
            }
            Err(UpstreamError::Service { status, .. })
                if (403..=405).contains(&status) && !self.v1_disabled =>
            {
                log::warn!(
                    "IMDS refused the IMDSv2 token request ({status}); falling back to IMDSv1 (set AWS_EC2_METADATA_V1_DISABLED=true to forbid)"
                );
                *token = Token::V1;
                Ok(None)
            }
            Err(UpstreamError::Service { status, .. }) if (403..=405).contains(&status) => {
                Err(ImdsError::V1Disabled(status))
            }
            Err(e) => Err(self.explain("/latest/api/token", e)),
        }
    }

    fn explain(&self, path: &str, e: UpstreamError) -> ImdsError {
        let path = path.to_string();
        match e {
            UpstreamError::Timeout if path.ends_with("/api/token") => ImdsError::TokenTimeout {
                endpoint: self.endpoint.clone(),
            },
            UpstreamError::Timeout => ImdsError::Timeout { path },
            UpstreamError::Connection(why) => ImdsError::Unreachable {
                endpoint: self.endpoint.clone(),
                why,
            },
            UpstreamError::Service { status: 404, .. } if path == CREDENTIALS_PATH => {
                ImdsError::NoRole
            }
            error => ImdsError::Upstream { path, error },
        }
    }

    /// The instance's region, from `placement/region`.
    pub fn region(&self) -> Result<String, ImdsError> {
        let region = self.get("/latest/meta-data/placement/region")?;
        let region = region.trim();
        if region.is_empty() {
            return Err(ImdsError::EmptyRegion);
        }
        Ok(region.to_string())
    }
}

pub struct ImdsProvider {
    imds: Arc<Imds>,
}

impl ImdsProvider {
    pub fn new(imds: Arc<Imds>) -> ImdsProvider {
        ImdsProvider { imds }
    }

    fn fetch(&self) -> Result<Credentials, ImdsError> {
        let roles = self.imds.get(CREDENTIALS_PATH)?;
        let role = roles
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or(ImdsError::NoRole)?;
        let body = self.imds.get(&format!("{CREDENTIALS_PATH}{role}"))?;
        super::json::from_json(body.as_bytes(), SOURCE).map_err(|error| ImdsError::Credentials {
            role: role.to_string(),
            error,
        })
    }
}

impl ProvideCredentials for ImdsProvider {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        self.fetch()
            .map(Arc::new)
            .map_err(|why| CredentialsError::new(SOURCE, why.to_string()))
    }
}
