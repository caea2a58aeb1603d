//! Where AWS credentials come from: the provider seam and its sources.
//!
//! The signer asks a [`ProvideCredentials`] for credentials on every call, so a
//! source that refreshes (IMDS, container, web identity) slots in here without
//! touching the client.

pub mod file;
mod ini;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// A set of AWS credentials. `Debug` never prints the secret parts.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub expiry: Option<SystemTime>,
    /// Which source produced them, for log lines.
    pub source: &'static str,
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
    pub tried: Vec<(&'static str, String)>,
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

/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optional `AWS_SESSION_TOKEN`,
/// read once at start-up (a process's environment does not change under it).
pub struct Environment {
    found: Result<Arc<Credentials>, String>,
}

impl Environment {
    pub fn from_env() -> Environment {
        Environment::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Environment {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let found = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Arc::new(Credentials {
                access_key_id,
                secret_access_key,
                session_token: get("AWS_SESSION_TOKEN"),
                expiry: None,
                source: "environment",
            })),
            (Some(_), None) => {
                Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into())
            }
            (None, Some(_)) => {
                Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into())
            }
            (None, None) => Err("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set".into()),
        };
        Environment { found }
    }
}

impl ProvideCredentials for Environment {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        self.found.clone().map_err(|why| CredentialsError {
            tried: vec![("environment", why)],
        })
    }
}

/// Tries each source in order; the first that yields credentials wins.
pub struct Chain {
    sources: Vec<Box<dyn ProvideCredentials>>,
}

impl Chain {
    /// The default chain. Only the environment for now; profiles, web identity,
    /// container and IMDS sources join it here.
    pub fn default_chain() -> Chain {
        Chain {
            sources: vec![Box::new(Environment::from_env())],
        }
    }
}

impl ProvideCredentials for Chain {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        let mut tried = Vec::new();
        for source in &self.sources {
            match source.credentials() {
                Ok(creds) => return Ok(creds),
                Err(e) => tried.extend(e.tried),
            }
        }
        Err(CredentialsError { tried })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_needs_both_keys_and_blank_is_unset() {
        let env = Environment::from_lookup(|n| match n {
            "AWS_ACCESS_KEY_ID" => Some("AKID".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("SECRET".into()),
            "AWS_SESSION_TOKEN" => Some(" ".into()),
            _ => None,
        });
        let c = env.credentials().unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.session_token, None);

        let env = Environment::from_lookup(|n| (n == "AWS_ACCESS_KEY_ID").then(|| "AKID".into()));
        let e = env.credentials().unwrap_err().to_string();
        assert!(
            e.contains("environment: AWS_ACCESS_KEY_ID is set but"),
            "{e}"
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("tok-secret".into()),
            expiry: None,
            source: "test",
        };
        let s = format!("{c:?}");
        assert!(
            !s.contains("very-secret") && !s.contains("tok-secret"),
            "{s}"
        );
    }
}
