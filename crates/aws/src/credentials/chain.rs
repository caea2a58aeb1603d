//! The SDKs' default chain of sources: the first that yields credentials
//! wins, and the first that is configured but fails ends the search (falling
//! through would silently switch identity, e.g. from a pod's IRSA role to the
//! node's instance role).

use std::sync::Arc;

use super::{container, environment, imds, profile, refresh, web_identity, Context};
use crate::identity::{Credentials, CredentialsError, ProvideCredentials};

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
                            answer: e.answer,
                        });
                    }
                }
            }
        }
        Err(CredentialsError {
            tried,
            configured: false,
            answer: None,
        })
    }
}

/// The SDKs' default chain: environment, profile, web identity, container,
/// instance metadata; cached and refreshed ahead of expiry.
pub fn default_chain(ctx: &Arc<Context>, timing: refresh::Timing) -> refresh::Refreshing<Chain> {
    let chain = Chain::new(vec![
        Box::new(environment::Environment::from_env()),
        Box::new(profile::ProfileProvider::new(ctx.clone())),
        Box::new(web_identity::WebIdentity::from_env(ctx.clone())),
        Box::new(container::Container::from_env()),
        Box::new(imds::ImdsProvider::new(ctx.imds.clone())),
    ]);
    refresh::Refreshing::new(chain, timing)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let fallback = crate::identity::Static(Arc::new(Credentials {
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
