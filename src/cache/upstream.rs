//! Where the cache fills from, and what it serves: a trait, so the cache's
//! policy does not depend on the upstream and tests can script and count
//! calls; Secrets Manager is its one implementation today.

use std::sync::Arc;

use super::key::Key;
use crate::aws::secrets_manager::BATCH;
use crate::aws::{SecretValue, SecretsManager, UpstreamError};
use crate::secret::SecretBytes;

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

/// One Secrets Manager client answers as one identity: the key's role is
/// chosen before it (`roles::Roles` picks the client for it).
impl Upstream for SecretsManager {
    fn fetch(&self, key: &Key) -> Result<SecretValue, UpstreamError> {
        match key {
            Key::Secret { query, .. } => self.get_secret_value(query),
        }
    }
    fn still_current(&self, key: &Key, cached_version: &str) -> Result<bool, UpstreamError> {
        match key {
            Key::Secret { query, .. } => Ok(self
                .describe_secret(&query.secret_id)?
                .still_answers(query, cached_version)),
        }
    }
    fn batch_limit(&self) -> usize {
        BATCH
    }
    fn fetch_batch(&self, keys: &[Key]) -> Result<Vec<(usize, SecretValue)>, UpstreamError> {
        let ids: Vec<&str> = keys
            .iter()
            .map(|key| match key {
                Key::Secret { query, .. } => query.secret_id.as_str(),
            })
            .collect();
        self.batch_get_current(&ids)
    }
}
