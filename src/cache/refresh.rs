//! Refresh-ahead: entries read near the end of their TTL are revalidated by
//! background threads, so a steady reader never waits for AWS.
//!
//! Entries that fall due together are refreshed together. When a refresh
//! starts, the other entries of the same role that are in their refresh
//! window (the last fifth of their TTL) and were read since their TTL began
//! join it, up to `Settings::refresh_batch`, and one batch call
//! (BatchGetSecretValue) brings all their current values. Refreshed together,
//! they fall due together again, so a host's hot secrets settle into a few
//! batches per TTL. Measured with `make bench` (100 hot secrets, TTL 300 s,
//! unchanged): about 1,400 upstream calls an hour one by one (a DescribeSecret
//! each per refresh), about 90 batched.
//!
//! A key a batch does not answer (not found, or denied for that secret) is
//! revalidated alone, as before. If the batch call itself is refused (a
//! policy without `secretsmanager:BatchGetSecretValue`, an upstream without
//! it), that role refreshes one by one from then on. BatchGetSecretValue has
//! a request quota of its own, far below DescribeSecret's (100 a second per
//! account and region against 40,000): when it is throttled, its keys are
//! revalidated one by one at once and the role's batches pause for one TTL.
//! Any other transient failure (timeout, 5xx) is not retried per entry, which
//! would multiply calls to an upstream that is already struggling: the
//! entries expire and revalidate on their next read, as after any failed
//! refresh.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use super::key::Key;
use super::table::Shared;
use super::upstream::Upstream;
use crate::aws::UpstreamError;
use crate::clock::Clock;
use crate::sync::lock;

/// Background refreshes running at once; more wait in a short queue.
const REFRESHERS: usize = 2;
/// Refreshes waiting for a refresher; beyond this, a refresh is skipped and
/// the entry revalidates on its next read after expiry.
const REFRESH_QUEUE: usize = 64;

/// Starts the refresher threads; they end when the cache (and so the sender)
/// is dropped. `None` if none could start.
pub(super) fn start<U: Upstream + 'static, C: Clock + 'static>(
    shared: &Arc<Shared<U, C>>,
) -> Option<SyncSender<Key>> {
    let (tx, rx) = mpsc::sync_channel::<Key>(REFRESH_QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let mut started = 0;
    for _ in 0..REFRESHERS {
        let (shared, rx) = (shared.clone(), rx.clone());
        let spawned = std::thread::Builder::new()
            .name("refresh".into())
            .spawn(move || refresher(&shared, &rx));
        match spawned {
            Ok(_) => started += 1,
            Err(e) => log::warn!("cannot start a refresh thread: {e}"),
        }
    }
    (started > 0).then_some(tx)
}

fn refresher<U: Upstream, C: Clock>(shared: &Shared<U, C>, rx: &Mutex<Receiver<Key>>) {
    loop {
        let next = lock(rx).recv();
        let Ok(key) = next else { return };
        shared.refresh_ahead(&key);
        crate::os::stack::release_unused();
    }
}

impl<U: Upstream, C: Clock> Shared<U, C> {
    /// A refresh of `key`, queued by a read near the end of its TTL, with the
    /// entries due together with it.
    pub(super) fn refresh_ahead(&self, key: &Key) {
        let batch = self.due_with(key);
        if batch.len() < 2 {
            return self.refresh_one(key);
        }
        for alone in self.refresh_batch(&batch) {
            self.refresh_one(&alone);
        }
    }

    /// `key` and the entries that may join its refresh, each marked as
    /// queued so no read queues it again; just `key` if it cannot be batched.
    fn due_with(&self, key: &Key) -> Vec<Key> {
        let limit = self.settings.refresh_batch.min(self.upstream.batch_limit());
        if limit < 2 || !key.is_current() || self.batch_paused_for(key.role()) {
            return vec![key.clone()];
        }
        let now = self.clock.now();
        let ttl = self.settings.ttl;
        let window = ttl / 5;
        let mut batch = vec![key.clone()];
        let mut entries = lock(&self.entries);
        for (other, entry) in entries.iter_mut() {
            if batch.len() >= limit {
                break;
            }
            let joins = !entry.refresh_queued
                && now < entry.fresh_until
                && now + window >= entry.fresh_until
                // Read again since it was fetched or last refreshed: an
                // entry nobody reads is left to expire.
                && entry.last_used + ttl > entry.fresh_until
                && other.role() == key.role()
                && other.is_current()
                && **other != *key;
            if joins {
                entry.refresh_queued = true;
                batch.push((**other).clone());
            }
        }
        batch
    }

    /// One batch call for `keys` (all of one role, all queued); stores what
    /// it brings and returns the keys left to revalidate alone.
    fn refresh_batch(&self, keys: &[Key]) -> Vec<Key> {
        let role = keys[0].role().map(String::from);
        log::debug!(
            "refreshing {} secrets ahead of expiry in one call",
            keys.len()
        );
        let values = match self.upstream.fetch_batch(keys) {
            Ok(values) => values,
            // The batch call's quota is its own and far lower than the
            // metadata call's: those still go through.
            Err(e) if e.is_throttling() => {
                log::info!(
                    "batch refresh throttled{} ({e}); one secret at a time for one TTL",
                    as_role(role.as_deref())
                );
                let until = self.clock.now() + self.settings.ttl;
                lock(&self.batch_paused).push((role, Some(until)));
                return keys.to_vec();
            }
            Err(e) if e.is_transient() => {
                log::warn!(
                    "background refresh of {} secrets ({} and others) failed: {e}",
                    keys.len(),
                    keys[0]
                );
                for key in keys {
                    self.refresh_done(key);
                }
                return Vec::new();
            }
            // A refusal of the call itself is not going to change while the
            // agent runs; other failures might.
            Err(e @ UpstreamError::Service { .. }) => {
                log::info!(
                    "batch refresh not possible{}: {e}; refreshing one secret at a time",
                    as_role(role.as_deref())
                );
                lock(&self.batch_paused).push((role, None));
                return keys.to_vec();
            }
            Err(e) => {
                log::debug!("batch refresh failed ({e}); refreshing one secret at a time");
                return keys.to_vec();
            }
        };
        let mut answered = vec![false; keys.len()];
        for (at, value) in values {
            if let Some(key) = keys.get(at) {
                answered[at] = true;
                self.replace(key, value);
            }
        }
        keys.iter()
            .zip(answered)
            .filter(|(_, answered)| !answered)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Whether batches of `role` are paused: refused for good, or throttled
    /// less than a TTL ago.
    fn batch_paused_for(&self, role: Option<&str>) -> bool {
        let now = self.clock.now();
        let mut paused = lock(&self.batch_paused);
        paused.retain(|(_, until)| until.is_none_or(|until| now < until));
        paused.iter().any(|(r, _)| r.as_deref() == role)
    }

    /// The usual revalidation of one entry (metadata call, then the value if
    /// it changed), without anyone waiting for it.
    fn refresh_one(&self, key: &Key) {
        let current = lock(&self.entries)
            .get(key)
            .map(|e| (e.body.clone(), e.version_id.clone()));
        let Some((body, version_id)) = current else {
            return;
        };
        log::debug!("refreshing {key} ahead of expiry");
        if let Err(e) = self.single_flight(key, None, || self.revalidate(key, body, &version_id)) {
            log::warn!("background refresh of {key} failed: {e}");
        }
        self.refresh_done(key);
    }

    /// A refresh-ahead ended (or was dropped): if it did not restart the TTL,
    /// the entry expires normally and the next read revalidates it.
    pub(super) fn refresh_done(&self, key: &Key) {
        if let Some(entry) = lock(&self.entries).get_mut(key) {
            entry.refresh_queued = false;
        }
    }
}

fn as_role(role: Option<&str>) -> String {
    role.map(|r| format!(" as {r}")).unwrap_or_default()
}
