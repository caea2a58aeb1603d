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
//! unchanged): 1,384 upstream calls an hour one by one (a DescribeSecret
//! each per refresh), 80 batched.
//!
//! A key the answer does not cover (not found, denied for that secret, or
//! ambiguous) is revalidated alone, as before; an answer for an entry that a
//! request refreshed meanwhile is dropped. If the batch call fails, the
//! role's batches pause: for good when the call itself is refused (a policy
//! without `secretsmanager:BatchGetSecretValue`, an endpoint without it),
//! else for one TTL. The keys of a refused, throttled or otherwise failed
//! call are revalidated one by one at once (BatchGetSecretValue's quota is
//! its own, 100 a second per account and region against DescribeSecret's
//! 40,000, so a throttled batch is not retried), except after a timeout or a
//! 5xx: per-entry calls then would only add to an upstream's trouble, and
//! the entries revalidate when read after expiry.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use super::key::Key;
use super::table::Shared;
use super::upstream::Upstream;
use secrets_manager_agent_aws::UpstreamError;
use secrets_manager_agent_core::clock::Clock;
use secrets_manager_agent_core::metrics::{self, CacheEvent};
use secrets_manager_agent_core::sync::lock;

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
        // Counted once done, calls to AWS and the cache's update included:
        // a reader of `/metrics` (a test, too) knows the refresh is over.
        metrics::cache(CacheEvent::Refresh);
        secrets_manager_agent_os::stack::release_unused();
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

    /// `key` and the entries that may join its refresh, each with the version
    /// it holds now and marked as queued so no read queues it again; just
    /// `key` if it cannot be batched.
    fn due_with(&self, key: &Key) -> Vec<(Key, String)> {
        let limit = self.settings.refresh_batch.min(self.upstream.batch_limit());
        if limit < 2 || !key.is_current() || self.batch_paused_for(key.role()) {
            return Vec::new();
        }
        let now = self.clock.now();
        let ttl = self.settings.ttl_of(key);
        let window = ttl / 5;
        let mut entries = lock(&self.entries);
        let Some(first) = entries.get(key) else {
            return Vec::new();
        };
        let mut batch = vec![(key.clone(), first.version_id.clone())];
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
                batch.push(((**other).clone(), entry.version_id.clone()));
            }
        }
        batch
    }

    /// One batch call for `batch` (keys of one role, all queued, with the
    /// versions they held when chosen); stores what it brings and returns
    /// the keys left to revalidate alone.
    fn refresh_batch(&self, batch: &[(Key, String)]) -> Vec<Key> {
        let keys: Vec<Key> = batch.iter().map(|(key, _)| key.clone()).collect();
        log::debug!(
            "refreshing {} secrets ahead of expiry in one call",
            keys.len()
        );
        let values = match self.upstream.fetch_batch(&keys) {
            Ok(values) => values,
            Err(e) => {
                if self.batch_failed(&keys[0], &e) {
                    return keys;
                }
                for key in &keys {
                    self.refresh_done(key);
                }
                return Vec::new();
            }
        };
        let mut answered = vec![false; keys.len()];
        for (at, value) in values {
            let Some((key, version)) = batch.get(at) else {
                continue;
            };
            answered[at] = true;
            // Stored meanwhile by a request (`refreshNow`) is at least as
            // fresh as this answer.
            if !self.replace(key, version, value) {
                self.refresh_done(key);
            }
        }
        keys.into_iter()
            .zip(answered)
            .filter(|(_, answered)| !answered)
            .map(|(key, _)| key)
            .collect()
    }

    /// Pauses the batches of `first`'s role after a failed call: for good if
    /// the call itself is refused, else for one TTL. Returns whether the
    /// batch's keys are to be revalidated one by one now.
    fn batch_failed(&self, first: &Key, e: &UpstreamError) -> bool {
        let role = first.role().map(String::from);
        let refused = matches!(e, UpstreamError::Service { status, code, .. }
            if REFUSED_CODES.contains(&code.as_str()) || REFUSED_STATUSES.contains(status));
        // A throttled batch's quota is its own, far below the per-secret
        // calls'; after other transient failures, per-secret calls now would
        // only add to an upstream's trouble.
        let alone = refused || e.is_throttling() || !e.is_transient();
        let until = (!refused).then(|| self.clock.now() + self.settings.ttl_of(first));
        {
            let mut paused = lock(&self.batch_paused);
            if paused.iter().any(|(r, _)| *r == role) {
                return alone; // another refresher saw it too, and said so
            }
            paused.push((role.clone(), until));
        }
        let as_role = role.map(|r| format!(" as {r}")).unwrap_or_default();
        let then = match (refused, alone) {
            (true, _) => {
                "refreshing one secret at a time. Grant \
                          secretsmanager:BatchGetSecretValue, or set SMA_REFRESH_BATCH=1 to \
                          stop trying"
            }
            (false, true) => "one secret at a time for one TTL",
            (false, false) => {
                "its secrets revalidate when read after expiry; batches pause \
                               for one TTL"
            }
        };
        log::warn!("batch refresh failed{as_role}: {e}; {then}");
        alone
    }

    /// Whether batches of `role` are paused: refused for good, or failed
    /// less than a TTL ago.
    pub(super) fn batch_paused_for(&self, role: Option<&str>) -> bool {
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
        let served = match self.single_flight(key, None, |shared, key| {
            shared.revalidate(key, body, &version_id)
        }) {
            Ok((served, _)) => served,
            Err(flight) => flight.wait(),
        };
        if let Err(e) = served {
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

/// Codes and statuses by which an endpoint refuses the batch call itself
/// (the policy lacks it, or the endpoint does not know it): worth no retry
/// while the agent runs. Other failures pause batching for one TTL.
const REFUSED_CODES: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnknownOperationException",
];
const REFUSED_STATUSES: &[u16] = &[404, 405, 501];
