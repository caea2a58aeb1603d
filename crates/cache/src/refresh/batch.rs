//! Batch refresh: entries that fall due together are refreshed together.
//! When a refresh starts, the other entries of the same role that are in
//! their refresh window (the last fifth of their TTL) and were read since
//! their TTL began join it, up to `Settings::refresh_batch`, and one batch
//! call (BatchGetSecretValue) brings all their current values. Refreshed
//! together, they fall due together again, so a host's hot secrets settle
//! into a few batches per TTL. Measured with `make bench` (100 hot secrets,
//! TTL 300 s, unchanged): 1,384 upstream calls an hour one by one (a
//! DescribeSecret each per refresh), 80 batched.
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

use crate::key::Key;
use crate::store::Shared;
use crate::upstream::Upstream;
use secrets_manager_agent_aws::UpstreamError;
use secrets_manager_agent_core::clock::Clock;
use secrets_manager_agent_core::sync::lock;

impl<U: Upstream, C: Clock> Shared<U, C> {
    /// `key` and the entries that may join its refresh, each with the version
    /// it holds now and marked as queued so no read queues it again; just
    /// `key` if it cannot be batched.
    pub(super) fn due_with(&self, key: &Key) -> Vec<(Key, String)> {
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
    pub(super) fn refresh_batch(&self, batch: &[(Key, String)]) -> Vec<Key> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use crate::Cache;
    use secrets_manager_agent_aws::SecretQuery;
    use secrets_manager_agent_core::clock::TestClock;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Fetched at once, then one round: the first key's refresh starts, and
    /// the others may join it.
    fn fall_due_together(cache: &Cache<Fake, TestClock>, keys: &[Key]) {
        cache.read(keys);
        next_round(cache, keys, &keys[..1]);
    }

    /// Half a TTL on, `keys` are read again; at 95 % of the TTL, `trigger`
    /// is read: its refreshes start, and this waits for them to end.
    fn next_round(cache: &Cache<Fake, TestClock>, keys: &[Key], trigger: &[Key]) {
        cache.advance(TTL / 2);
        cache.read(keys);
        cache.advance(TTL.mul_f64(0.45));
        cache.read(trigger);
        assert!(eventually(|| cache.idle()), "the refresh never ended");
    }

    #[test]
    fn entries_due_together_refresh_in_one_call() {
        let cache = batch_cache(20);
        let ids: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
        let all: Vec<Key> = ids.iter().map(|id| key(id)).collect();
        fall_due_together(&cache, &all);
        let batches = cache.batches();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].len(), 20, "at most refresh_batch keys");
        assert!(
            batches[0].contains(&"k00".to_string()),
            "the key read first"
        );
        assert_eq!((cache.gets(), cache.describes()), (25, 0));
        // The batch restarted 20 TTLs; the other 5 expire as they were.
        cache.advance(TTL / 2);
        assert_eq!(cache.fresh(), 20);
        cache.read(&all);
        assert_eq!(cache.describes(), 5, "the other 5 revalidate on read");
        assert_eq!(cache.gets(), 25);
    }

    #[test]
    fn a_batch_refresh_brings_new_versions() {
        let cache = batch_cache(20);
        let all = keys(&["a", "b"]);
        cache.read(&all);
        cache.shared.upstream.set("v2", "two");
        next_round(&cache, &all, &[]);
        assert_eq!(text(cache.get(&all[0], false)), "one", "no wait");
        assert!(eventually(|| cache.idle()));
        assert_eq!(text(cache.get(&all[1], false)), "two");
        assert_eq!(text(cache.get(&all[0], false)), "two");
        assert_eq!((cache.gets(), cache.describes()), (2, 0));
    }

    #[test]
    fn entries_not_read_again_or_not_due_stay_out() {
        let cache = batch_cache(20);
        let all = keys(&["a", "b", "unread", "late"]);
        cache.read(&all[..3]);
        cache.advance(TTL / 2);
        cache.read(&all[..2]);
        // Fetched later: its refresh window has not opened.
        cache.read(&all[3..]);
        cache.advance(TTL.mul_f64(0.45));
        cache.read(&all[..1]);
        assert!(eventually(|| cache.idle()));
        assert_eq!(cache.batches(), vec![vec!["a".to_string(), "b".into()]]);
        assert_eq!(cache.describes(), 0);
    }

    #[test]
    fn pinned_versions_and_other_roles_are_not_batched() {
        let cache = batch_cache(20);
        let pinned = Key::secret(SecretQuery {
            secret_id: "b".into(),
            version_id: None,
            version_stage: Some("AWSPREVIOUS".into()),
        });
        let current_stage = Key::secret(SecretQuery {
            secret_id: "c".into(),
            version_id: None,
            version_stage: Some("AWSCURRENT".into()),
        });
        let all = vec![
            key("a"),
            pinned,
            role_key("a", "arn:aws:iam::123456789012:role/r"),
            current_stage,
        ];
        fall_due_together(&cache, &all);
        assert_eq!(cache.batches(), vec![vec!["a".to_string(), "c".into()]]);
        assert!(!all[1].is_current() && all[3].is_current());
    }

    #[test]
    fn a_key_the_batch_leaves_out_is_revalidated_alone() {
        let cache = batch_cache(20);
        lock(&cache.shared.upstream.batch_skips).push("gone".into());
        let all = keys(&["a", "gone", "c"]);
        fall_due_together(&cache, &all);
        assert_eq!(cache.batches().len(), 1);
        assert_eq!(cache.describes(), 1, "only the key left out");
        cache.advance(TTL / 4);
        assert_eq!(cache.fresh(), 3);
    }

    /// Two keys fall due together while `switch` makes the batch call fail:
    /// one batch call, then each key revalidated alone, right away.
    fn failed_batch(switch: fn(&Fake) -> &AtomicBool) -> (Cache<Fake, TestClock>, Vec<Key>) {
        let cache = batch_cache(20);
        switch(&cache.shared.upstream).store(true, Ordering::SeqCst);
        let all = keys(&["a", "b"]);
        fall_due_together(&cache, &all);
        assert_eq!(cache.batches().len(), 1);
        assert_eq!(cache.describes(), 2, "each revalidated alone");
        assert_eq!(cache.fresh(), 2);
        (cache, all)
    }

    #[test]
    fn a_refused_batch_call_falls_back_and_is_not_asked_again() {
        let (cache, all) = failed_batch(|fake| &fake.batch_denied);
        cache
            .shared
            .upstream
            .batch_denied
            .store(false, Ordering::SeqCst);
        next_round(&cache, &all, &all[..1]);
        assert_eq!((cache.batches().len(), cache.describes()), (1, 3));
    }

    #[test]
    fn a_throttled_batch_call_falls_back_and_pauses_for_a_ttl() {
        let (cache, all) = failed_batch(|fake| &fake.batch_throttled);
        cache
            .shared
            .upstream
            .batch_throttled
            .store(false, Ordering::SeqCst);
        // Less than a TTL after the throttling: still one by one.
        next_round(&cache, &all, &all);
        assert_eq!((cache.batches().len(), cache.describes()), (1, 4));
        // Then batches again.
        next_round(&cache, &all, &all[..1]);
        assert_eq!((cache.batches().len(), cache.describes()), (2, 4));
    }

    #[test]
    fn a_transient_batch_failure_is_not_repeated_per_entry() {
        let cache = batch_cache(20);
        let all = keys(&["a", "b"]);
        cache.read(&all);
        cache.shared.upstream.down.store(true, Ordering::SeqCst);
        next_round(&cache, &all, &all[..1]);
        assert_eq!(cache.batches().len(), 1);
        assert_eq!((cache.gets(), cache.describes()), (2, 0));
        // Nothing restarted: both expire and revalidate when read.
        cache.advance(TTL / 10);
        assert_eq!(cache.fresh(), 0);
        // Batches pause for one TTL from the failure.
        assert!(cache.shared.batch_paused_for(None));
        cache.advance(TTL.mul_f64(0.85));
        assert!(cache.shared.batch_paused_for(None));
        cache.advance(TTL / 10);
        assert!(!cache.shared.batch_paused_for(None));
    }

    #[test]
    fn refresh_batch_one_refreshes_each_alone() {
        let cache = batch_cache(1);
        let all = keys(&["a", "b"]);
        fall_due_together(&cache, &all);
        assert!(cache.batches().is_empty());
        assert_eq!(cache.describes(), 1);
    }
}
