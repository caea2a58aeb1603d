//! Who signs a request: a set of AWS credentials, the trait every credential
//! source implements, and why none could be had.
//!
//! This vocabulary sits below both the signer (`aws::client`, `aws::sign`)
//! and the sources (`credentials/`): the signer asks the trait and never
//! knows which source answers; the sources (some of which call STS through
//! the client) are chosen at start-up.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use super::error::UpstreamError;

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
    /// AWS's own answer when it refused them (STS AssumeRole for a
    /// per-request role: AccessDenied, throttling, ...): the signer returns
    /// it as the call's error, so the client sees STS's status and code, and
    /// a transient one stays transient.
    pub answer: Option<UpstreamError>,
}

impl CredentialsError {
    /// The source is not set up here; the chain moves on.
    pub fn new(source: impl Into<String>, why: impl Into<String>) -> CredentialsError {
        CredentialsError {
            tried: vec![(source.into(), why.into())],
            configured: false,
            answer: None,
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

impl CredentialsError {
    /// What a signed call fails with when no credentials could be had.
    pub fn into_upstream(self) -> UpstreamError {
        match self.answer {
            Some(answer) => answer,
            None => UpstreamError::Credentials(self.to_string()),
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
    /// New credentials from the source now, even if the ones held are still
    /// valid: a caller of the agent already signs with a newer set
    /// (`callers`). Sources that hold nothing just answer again.
    fn refresh(&self) -> Result<Arc<Credentials>, CredentialsError> {
        self.credentials()
    }
}

/// Fixed credentials, e.g. a source profile's keys used to sign AssumeRole.
pub struct Static(pub Arc<Credentials>);

impl ProvideCredentials for Static {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        Ok(self.0.clone())
    }
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
}
