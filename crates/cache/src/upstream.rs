//! Where the cache fills from, and what it serves: a trait, so the cache's
//! policy does not depend on the upstream and tests can script and count
//! calls. [`Clients`], one identity's Secrets Manager and Parameter Store
//! clients, implements it: each key variant goes to its service.

use std::sync::Arc;

use super::key::Key;
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
        }
    }
    /// Parameter Store has no metadata call cheaper than GetParameter: an
    /// expired parameter is read again.
    fn still_current(&self, key: &Key, cached_version: &str) -> Result<bool, UpstreamError> {
        match key {
            Key::Secret { query, .. } => Ok(self
                .secrets_manager
                .describe_secret(&query.secret_id)?
                .still_answers(query, cached_version)),
            Key::Parameter { .. } => Ok(false),
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
                Key::Parameter { .. } => {
                    return Err(UpstreamError::Internal(
                        "a parameter in a secrets batch".into(),
                    ))
                }
            }
        }
        self.secrets_manager.batch_get_current(&ids)
    }
}
