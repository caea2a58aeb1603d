//! Where AWS credentials come from: the provider seam, the default chain of
//! sources, and the cache that refreshes them ahead of expiry.
//!
//! The signer asks a [`ProvideCredentials`] for credentials before every call;
//! each source is one module here, and [`refresh::Refreshing`] in front of the
//! chain decides when a source is asked again.

pub mod container;
pub mod env;
pub mod file;
pub mod imds;
mod ini;
pub mod process;
pub mod profile;
pub mod refresh;
pub mod web_identity;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;

use crate::aws::transport::Transport;

/// A set of AWS credentials. `Debug` never prints the secret parts.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub expiry: Option<SystemTime>,
    /// Which source produced them, for log lines.
    pub source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiry", &self.expiry)
            .field("source", &self.source)
            .finish()
    }
}

/// Why no credentials could be had: every source tried, and why each failed.
#[derive(Debug, Clone)]
pub struct CredentialsError {
    pub tried: Vec<(String, String)>,
    /// A source that is configured but failed ends the chain, as in the SDKs:
    /// falling through would silently switch to another identity (e.g. from a
    /// pod's IRSA role to the node's instance role).
    pub configured: bool,
}

impl CredentialsError {
    /// The source is not set up here; the chain moves on.
    pub fn new(source: impl Into<String>, why: impl Into<String>) -> CredentialsError {
        CredentialsError {
            tried: vec![(source.into(), why.into())],
            configured: false,
        }
    }

    /// The source is set up but failed; the chain stops here.
    pub fn failed(source: impl Into<String>, why: impl Into<String>) -> CredentialsError {
        CredentialsError {
            configured: true,
            ..CredentialsError::new(source, why)
        }
    }
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no AWS credentials found")?;
        for (i, (source, why)) in self.tried.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{source}: {why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CredentialsError {}

pub trait ProvideCredentials: Send + Sync {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError>;
}

/// Fixed credentials, e.g. a source profile's keys used to sign AssumeRole.
pub struct Static(pub Arc<Credentials>);

impl ProvideCredentials for Static {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        Ok(self.0.clone())
    }
}

/// Tries each source in order; the first that yields credentials wins, and
/// the first that is configured but fails ends the search.
pub struct Chain {
    sources: Vec<Box<dyn ProvideCredentials>>,
}

impl Chain {
    pub fn new(sources: Vec<Box<dyn ProvideCredentials>>) -> Chain {
        Chain { sources }
    }
}

impl ProvideCredentials for Chain {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        let mut tried = Vec::new();
        for source in &self.sources {
            match source.credentials() {
                Ok(creds) => return Ok(creds),
                Err(e) => {
                    tried.extend(e.tried);
                    if e.configured {
                        return Err(CredentialsError {
                            tried,
                            configured: true,
                        });
                    }
                }
            }
        }
        Err(CredentialsError {
            tried,
            configured: false,
        })
    }
}

/// What the sources need from start-up: where STS is, how to reach AWS, the
/// metadata client and the profile files.
pub struct Context {
    pub sts_endpoint: String,
    pub region: String,
    pub transport: Transport,
    pub imds: Arc<imds::Imds>,
    pub profiles: Arc<profile::Profiles>,
    pub profile_name: String,
    /// Retry budget for unsigned STS calls (signed ones use their client's).
    pub retry: crate::aws::retry::Retry,
}

/// The SDKs' default chain: environment, profile, web identity, container,
/// instance metadata; cached and refreshed ahead of expiry.
pub fn default_chain(ctx: &Arc<Context>, timing: refresh::Timing) -> refresh::Refreshing<Chain> {
    let chain = Chain::new(vec![
        Box::new(env::Environment::from_env()),
        Box::new(profile::ProfileProvider::new(ctx.clone())),
        Box::new(web_identity::WebIdentity::from_env(ctx.clone())),
        Box::new(container::Container::from_env()),
        Box::new(imds::ImdsProvider::new(ctx.imds.clone())),
    ]);
    refresh::Refreshing::new(chain, timing)
}

/// The JSON shape shared by the container endpoint, IMDS and
/// `credential_process` (which says `SessionToken` where the others say `Token`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonCredentials {
    code: Option<String>,
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    #[serde(alias = "SessionToken")]
    token: Option<String>,
    expiration: Option<String>,
}

pub(crate) fn from_json(body: &[u8], source: &str) -> Result<Credentials, String> {
    let parsed: JsonCredentials = serde_json::from_slice(body).map_err(|e| {
        format!(
            "answer is not credentials JSON: {}",
            crate::aws::error::json_error(&e)
        )
    })?;
    if let Some(code) = parsed.code.filter(|c| c != "Success") {
        let message = parsed.message.unwrap_or_default();
        return Err(format!("answered {code}: {message}"));
    }
    let non_empty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let (Some(access_key_id), Some(secret_access_key)) = (
        non_empty(parsed.access_key_id),
        non_empty(parsed.secret_access_key),
    ) else {
        return Err("answer lacks AccessKeyId or SecretAccessKey".into());
    };
    let expiry = match parsed.expiration {
        None => None,
        Some(text) => Some(
            crate::iso8601::parse(&text)
                .ok_or_else(|| format!("Expiration `{text}` is not an ISO-8601 time"))?,
        ),
    };
    Ok(Credentials {
        access_key_id,
        secret_access_key,
        session_token: non_empty(parsed.token),
        expiry,
        source: source.to_string(),
    })
}

/// The `<Credentials>` element of an STS AssumeRole* answer.
pub(crate) fn from_sts_xml(body: &[u8], source: &str) -> Result<Credentials, String> {
    use crate::aws::error::xml_element;
    let text = String::from_utf8_lossy(body);
    let creds = xml_element(&text, "Credentials").ok_or("STS answer has no <Credentials>")?;
    let get = |name| xml_element(&creds, name).filter(|v| !v.is_empty());
    let (Some(access_key_id), Some(secret_access_key)) =
        (get("AccessKeyId"), get("SecretAccessKey"))
    else {
        return Err("STS answer lacks AccessKeyId or SecretAccessKey".into());
    };
    Ok(Credentials {
        access_key_id,
        secret_access_key,
        session_token: get("SessionToken"),
        expiry: get("Expiration").and_then(|e| crate::iso8601::parse(&e)),
        source: source.to_string(),
    })
}

/// Reads an environment variable; blank counts as unset.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub(crate) fn env_flag(name: &str) -> bool {
    env_var(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("tok-secret".into()),
            expiry: None,
            source: "test".into(),
        };
        let s = format!("{c:?}");
        assert!(
            !s.contains("very-secret") && !s.contains("tok-secret"),
            "{s}"
        );
    }

    #[test]
    fn json_shapes() {
        let c = from_json(
            br#"{"Code":"Success","AccessKeyId":"A","SecretAccessKey":"S","Token":"T","Expiration":"2026-11-28T21:08:17Z"}"#,
            "imds",
        )
        .unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("A", Some("T"))
        );
        assert!(c.expiry.is_some());
        let c = from_json(
            br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"X"}"#,
            "p",
        )
        .unwrap();
        assert_eq!(c.session_token.as_deref(), Some("X"));
        assert!(from_json(br#"{"Code":"Failure","Message":"no"}"#, "imds")
            .unwrap_err()
            .contains("Failure"));
        assert!(from_json(br#"{"AccessKeyId":"A"}"#, "x").is_err());
        assert!(from_json(
            br#"{"AccessKeyId":"A","SecretAccessKey":"S","Expiration":"soon"}"#,
            "x"
        )
        .is_err());
    }

    #[test]
    fn sts_xml() {
        let body = b"<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIA</AccessKeyId>\
            <SecretAccessKey>S</SecretAccessKey><SessionToken>T</SessionToken>\
            <Expiration>2026-11-28T21:08:17Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>";
        let c = from_sts_xml(body, "sts").unwrap();
        assert_eq!(c.access_key_id, "ASIA");
        assert!(c.expiry.is_some());
        assert!(from_sts_xml(b"<x/>", "sts").is_err());
    }

    #[test]
    fn chain_collects_every_reason() {
        struct Fails(&'static str);
        impl ProvideCredentials for Fails {
            fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
                Err(CredentialsError::new(self.0, "nope"))
            }
        }
        let chain = Chain::new(vec![Box::new(Fails("a")), Box::new(Fails("b"))]);
        assert_eq!(
            chain.credentials().unwrap_err().to_string(),
            "no AWS credentials found: a: nope; b: nope"
        );
    }

    #[test]
    fn a_configured_source_that_fails_ends_the_chain() {
        struct Broken;
        impl ProvideCredentials for Broken {
            fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
                Err(CredentialsError::failed("web identity", "STS timed out"))
            }
        }
        let fallback = Static(Arc::new(Credentials {
            access_key_id: "NODE".into(),
            secret_access_key: "S".into(),
            session_token: None,
            expiry: None,
            source: "IMDS".into(),
        }));
        let chain = Chain::new(vec![Box::new(Broken), Box::new(fallback)]);
        let e = chain.credentials().unwrap_err();
        assert!(e.configured);
        assert_eq!(
            e.to_string(),
            "no AWS credentials found: web identity: STS timed out"
        );
    }
}
