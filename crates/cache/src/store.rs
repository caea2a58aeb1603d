//! The table: the cache's shared state, its entries (each with its TTL and
//! refresh point, the least recently used evicted when the table is full),
//! and every write to them. A flight's call ends here: an expired entry is
//! revalidated (kept if its version is still current, else fetched again;
//! a read call passed through has no version to check and is made again),
//! a missing one fetched and stored. Values fetched outside a request
//! (prefetching, a batch refresh) come in here too, under rules that never
//! let them replace a newer value. The lock is taken after an upstream call
//! returns, never across it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::flight::Flight;
use crate::key::Key;
use crate::lookup::Cache;
use crate::upstream::{Body, Served, Upstream};
use secrets_manager_agent_aws::passthrough::Service;
use secrets_manager_agent_aws::SecretValue;
use secrets_manager_agent_core::clock::Clock;
use secrets_manager_agent_core::metrics::{self, CacheEvent};
use secrets_manager_agent_core::random;
use secrets_manager_agent_core::sync::lock;

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a secret (and the answer of a Secrets Manager call passed
    /// through) is served from memory; zero: not cached.
    pub ttl: Duration,
    /// The same for parameters (and Parameter Store calls passed through).
    pub parameter_ttl: Duration,
    pub capacity: usize,
    pub ignore_transient_errors: bool,
    /// The most entries one background refresh takes at once (1: each alone).
    pub refresh_batch: usize,
}

impl Settings {
    /// The TTL of `key`'s kind: a call passed through has its service's.
    pub fn ttl_of(&self, key: &Key) -> Duration {
        match key {
            Key::Secret { .. } => self.ttl,
            Key::Parameter { .. } => self.parameter_ttl,
            Key::Call { call, .. } => match call.service() {
                Service::SecretsManager => self.ttl,
                Service::Ssm => self.parameter_ttl,
            },
        }
    }
}

/// The state the request threads and the refreshers share.
pub(crate) struct Shared<U, C> {
    pub(crate) upstream: U,
    pub(crate) clock: C,
    pub(crate) settings: Settings,
    /// Keys and entries boxed: the table keeps about twice as many slots as
    /// entries, and a slot of two pointers instead of ~240 bytes cut the
    /// memory of 1,000 cached secrets by a third.
    pub(crate) entries: Mutex<HashMap<Box<Key>, Box<Entry>>>,
    pub(crate) flights: Mutex<HashMap<Key, Arc<Flight>>>,
    /// Roles whose entries refresh one by one (`refresh::batch`): the batch
    /// call was refused (no end), or throttled (until the instant given).
    pub(crate) batch_paused: Mutex<Vec<(Option<String>, Option<Instant>)>>,
}

impl<U, C> Shared<U, C> {
    pub(crate) fn new(upstream: U, settings: Settings, clock: C) -> Shared<U, C> {
        Shared {
            upstream,
            clock,
            settings,
            entries: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            batch_paused: Mutex::new(Vec::new()),
        }
    }
}

pub(crate) struct Entry {
    pub(crate) body: Body,
    pub(crate) version_id: String,
    pub(crate) fresh_until: Instant,
    /// Reads from here on queue a background refresh (jittered per entry, so a
    /// fleet of agents does not call AWS in lockstep).
    pub(crate) refresh_after: Instant,
    pub(crate) refresh_queued: bool,
    pub(crate) last_used: Instant,
}

impl Entry {
    pub(crate) fn new(body: Body, version_id: String, ttl: Duration, now: Instant) -> Entry {
        let mut entry = Entry {
            body,
            version_id,
            fresh_until: now,
            refresh_after: now,
            refresh_queued: false,
            last_used: now,
        };
        entry.restart(ttl, now);
        entry
    }

    /// A new TTL from `now`; the refresh point falls in its last 10 to 20 %.
    pub(crate) fn restart(&mut self, ttl: Duration, now: Instant) {
        self.fresh_until = now + ttl;
        self.refresh_after = self.fresh_until - ttl.mul_f64(0.1 + 0.1 * random::unit());
        self.refresh_queued = false;
    }
}

impl<U: Upstream, C: Clock> Shared<U, C> {
    /// An expired entry: keep it if the upstream says the cached version
    /// still answers the request, else fetch the value again.
    pub(crate) fn revalidate(&self, key: &Key, stale: Body, version_id: &str) -> Served {
        let ignore = self.settings.ignore_transient_errors;
        let fetched = match self.upstream.still_current(key, version_id) {
            Ok(true) => {
                self.restart_ttl(key, version_id);
                return Ok(stale);
            }
            // Not current any more, or the metadata call is not allowed
            // (policies often grant GetSecretValue alone): the value decides.
            Ok(false) => self.fetch_and_store(key),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                log::debug!("checking {key} failed ({e}); fetching the value");
                self.fetch_and_store(key)
            }
        };
        match fetched {
            Err(e) if ignore && e.is_transient() => {
                log::warn!("serving cached {key} after a transient error: {e}");
                Ok(stale)
            }
            other => other,
        }
    }

    pub(crate) fn fetch_and_store(&self, key: &Key) -> Served {
        let value = self.upstream.fetch(key)?;
        let body: Body = Arc::new(value.body);
        let now = self.clock.now();
        let mut entries = lock(&self.entries);
        if !entries.contains_key(key) && entries.len() >= self.settings.capacity {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
                metrics::cache(CacheEvent::Eviction);
            }
        }
        entries.insert(
            Box::new(key.clone()),
            Box::new(Entry::new(
                body.clone(),
                value.version_id,
                self.settings.ttl_of(key),
                now,
            )),
        );
        Ok(body)
    }

    pub(crate) fn restart_ttl(&self, key: &Key, version_id: &str) {
        let now = self.clock.now();
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(key) {
            if entry.version_id == version_id {
                entry.restart(self.settings.ttl_of(key), now);
            }
        }
    }

    /// A value read for an entry outside a request (a batch refresh): it
    /// replaces the entry, with a new TTL, if the entry still holds
    /// `version` (a request may have stored a newer one meanwhile). True if
    /// replaced.
    pub(crate) fn replace(&self, key: &Key, version: &str, value: SecretValue) -> bool {
        let now = self.clock.now();
        let mut entries = lock(&self.entries);
        match entries.get_mut(key) {
            Some(entry) if entry.version_id == version => {
                entry.body = Arc::new(value.body);
                entry.version_id = value.version_id;
                entry.restart(self.settings.ttl_of(key), now);
                true
            }
            _ => false,
        }
    }
}

impl<U: Upstream + 'static, C: Clock + 'static> Cache<U, C> {
    /// Keeps a value fetched outside a request (prefetching) as an ordinary
    /// entry: same TTL and refresh-ahead as if a request had fetched it.
    /// Never replaces an entry (one stored by a request meanwhile is at least
    /// as fresh) and never evicts: with the cache full, or caching off
    /// (TTL 0), the value is dropped. True if stored.
    pub fn store(&self, key: &Key, value: SecretValue) -> bool {
        let shared = &*self.shared;
        if shared.settings.ttl_of(key).is_zero() {
            return false;
        }
        let now = shared.clock.now();
        let mut entries = lock(&shared.entries);
        if entries.contains_key(key) || entries.len() >= shared.settings.capacity {
            return false;
        }
        entries.insert(
            Box::new(key.clone()),
            Box::new(Entry::new(
                Arc::new(value.body),
                value.version_id,
                shared.settings.ttl_of(key),
                now,
            )),
        );
        true
    }

    /// Overwrites every cached secret that no response is using right now and
    /// empties the cache (at exit).
    pub fn wipe(&self) {
        let mut entries = lock(&self.shared.entries);
        for entry in entries.values_mut() {
            if let Some(body) = Arc::get_mut(&mut entry.body) {
                body.wipe();
            }
        }
        entries.clear();
    }

    /// How many entries the cache may hold.
    pub fn capacity(&self) -> usize {
        self.shared.settings.capacity
    }

    /// Entries cached now (`/metrics`).
    pub fn entries(&self) -> usize {
        lock(&self.shared.entries).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use secrets_manager_agent_aws::{ReadCall, UpstreamError};
    use secrets_manager_agent_core::secret::SecretBytes;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[test]
    fn expired_entries_revalidate_with_describe() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        cache.get(&key("a"), false).unwrap();
        // Expired from the TTL's last instant on.
        cache.advance(TTL);
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        assert_eq!((cache.gets(), cache.describes()), (1, 1));
        // Still current: the TTL restarted from the revalidation.
        cache.advance(TTL / 2);
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        assert_eq!((cache.gets(), cache.describes()), (1, 1));

        cache.shared.upstream.set("v2", "two");
        cache.advance(TTL);
        assert_eq!(text(cache.get(&key("a"), false)), "two");
        assert_eq!((cache.gets(), cache.describes()), (2, 2));
    }

    #[test]
    fn calls_keep_their_services_ttl_and_are_read_again_after_it() {
        let settings = Settings {
            parameter_ttl: TTL * 2,
            ..settings(TTL)
        };
        let cache = test_cache(Fake::new("", "one"), settings);
        let describe = call_key(ReadCall::DescribeSecret, r#"{"SecretId":"a"}"#);
        let by_path = call_key(ReadCall::GetParametersByPath, r#"{"Path":"/app"}"#);
        assert_eq!(text(cache.get(&describe, false)), "one");
        assert_eq!(text(cache.get(&by_path, false)), "one");
        assert_eq!((cache.gets(), cache.describes()), (2, 0));
        cache.shared.upstream.set("", "two");
        // A Secrets Manager call lives for `ttl`, then is made again, with
        // no revalidation first.
        cache.advance(TTL);
        assert_eq!(text(cache.get(&describe, false)), "two");
        assert_eq!((cache.gets(), cache.describes()), (3, 0));
        // A Parameter Store call lives for `parameter_ttl`.
        assert_eq!(text(cache.get(&by_path, false)), "one");
        assert_eq!(cache.gets(), 3);
        cache.advance(TTL);
        assert_eq!(text(cache.get(&by_path, false)), "two");
        assert_eq!((cache.gets(), cache.describes()), (4, 0));
    }

    #[test]
    fn a_calls_input_and_role_are_part_of_its_key() {
        let settings = Settings {
            capacity: 10,
            ..settings(TTL)
        };
        let cache = test_cache(Fake::new("", "one"), settings);
        let a = call_key(ReadCall::DescribeSecret, r#"{"SecretId":"a"}"#);
        let b = call_key(ReadCall::DescribeSecret, r#"{"SecretId":"b"}"#);
        let role = "arn:aws:iam::123456789012:role/r";
        let a_as_role = Key::Call {
            call: ReadCall::DescribeSecret,
            input: r#"{"SecretId":"a"}"#.into(),
            role: Some(role.into()),
        };
        for key in [&a, &b, &a_as_role, &a, &b] {
            cache.get(key, false).unwrap();
        }
        assert_eq!(cache.gets(), 3, "one call each");
        assert_eq!(
            lock(&cache.shared.upstream.roles).clone(),
            [None, None, Some(role.to_string())]
        );
    }

    #[test]
    fn denied_describe_falls_back_to_the_value() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        cache.get(&key("a"), false).unwrap();
        cache.shared.upstream.denied.store(true, Ordering::SeqCst);
        cache.shared.upstream.set("v2", "two");
        cache.advance(TTL);
        assert_eq!(text(cache.get(&key("a"), false)), "two");
        assert_eq!((cache.gets(), cache.describes()), (2, 1));
    }

    #[test]
    fn transient_errors_serve_stale_only_when_allowed() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        cache.get(&key("a"), false).unwrap();
        cache.shared.upstream.down.store(true, Ordering::SeqCst);
        cache.advance(TTL);
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        // A transient error is not an answer: the value is not fetched.
        assert_eq!((cache.gets(), cache.describes()), (1, 1));
        // Nor does it restart the TTL: the next read asks again.
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        assert_eq!(cache.describes(), 2);

        let strict = Settings {
            ignore_transient_errors: false,
            ..settings(TTL)
        };
        let cache = test_cache(Fake::new("v1", "one"), strict);
        cache.get(&key("a"), false).unwrap();
        cache.shared.upstream.down.store(true, Ordering::SeqCst);
        cache.advance(TTL);
        assert_eq!(
            cache.get(&key("a"), false).err(),
            Some(UpstreamError::Timeout)
        );
        // The entry stays: once the upstream is back it revalidates, no fetch.
        cache.shared.upstream.down.store(false, Ordering::SeqCst);
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        assert_eq!((cache.gets(), cache.describes()), (1, 2));
    }

    #[test]
    fn capacity_evicts_the_least_recently_used() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        // "a" is read again after "b" arrived: "b" is the least recently
        // used (the oldest by insertion is "a").
        for id in ["a", "b", "a", "c"] {
            cache.advance(Duration::from_millis(1));
            cache.get(&key(id), false).unwrap();
        }
        assert_eq!(cache.entries(), 2);
        assert_eq!(cache.gets(), 3);
        cache.get(&key("a"), false).unwrap();
        cache.get(&key("c"), false).unwrap();
        assert_eq!(cache.gets(), 3, "a and c stayed");
        cache.get(&key("b"), false).unwrap();
        assert_eq!(cache.gets(), 4, "b was evicted");
    }

    #[test]
    fn stored_values_are_ordinary_entries() {
        let cache = test_cache(Fake::new("v1", "fetched"), settings(TTL));
        assert!(cache.store(&key("a"), value("v0", "stored")));
        assert_eq!(text(cache.get(&key("a"), false)), "stored");
        assert_eq!((cache.gets(), cache.describes()), (0, 0));
        // Same TTL and revalidation as a fetched entry: expired, the cached
        // version is not current any more, so the value is fetched.
        cache.advance(TTL);
        assert_eq!(text(cache.get(&key("a"), false)), "fetched");
        assert_eq!((cache.gets(), cache.describes()), (1, 1));
    }

    #[test]
    fn store_never_replaces_an_entry() {
        let cache = test_cache(Fake::new("v2", "fetched"), settings(TTL));
        cache.get(&key("a"), false).unwrap();
        assert!(!cache.store(&key("a"), value("v1", "older")));
        assert_eq!(text(cache.get(&key("a"), false)), "fetched");
        // Another role's entry is another key.
        let other = role_key("a", "arn:aws:iam::123456789012:role/r");
        assert!(cache.store(&other, value("v1", "as role")));
        assert_eq!(text(cache.get(&other, false)), "as role");
    }

    #[test]
    fn store_respects_capacity_and_ttl_zero() {
        let cache = test_cache(Fake::new("v1", "fetched"), settings(TTL));
        assert!(cache.store(&key("a"), value("v1", "a")));
        assert!(cache.store(&key("b"), value("v1", "b")));
        assert!(
            !cache.store(&key("c"), value("v1", "c")),
            "full: nothing evicted"
        );
        assert_eq!(cache.entries(), 2);
        assert_eq!(text(cache.get(&key("a"), false)), "a");
        assert_eq!(text(cache.get(&key("b"), false)), "b");

        let off = test_cache(Fake::new("v1", "fetched"), settings(Duration::ZERO));
        assert!(!off.store(&key("a"), value("v1", "a")));
        assert_eq!(off.entries(), 0);
    }

    #[test]
    fn wipe_empties_the_cache() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        let in_use = cache.get(&key("a"), false).unwrap();
        cache.get(&key("b"), false).unwrap();
        cache.wipe();
        assert_eq!(cache.entries(), 0);
        // A body a response is still writing is left alone.
        assert_eq!(&**in_use, b"one");
        cache.get(&key("a"), false).unwrap();
        assert_eq!(cache.gets(), 3, "fetched again after the wipe");
    }

    #[test]
    fn a_batch_answer_never_replaces_a_newer_value() {
        let cache = batch_cache(20);
        let a = key("a");
        cache.read(std::slice::from_ref(&a));
        let v2 = |v: &str| SecretValue {
            body: SecretBytes::new(b"two".to_vec()),
            version_id: v.into(),
        };
        // A refreshNow stored v2 while a batch that chose the entry at v1
        // was out: the batch's answer does not go in.
        cache.shared.upstream.set("v2", "two");
        cache.get(&a, true).unwrap();
        assert!(!cache.shared.replace(&a, "v1", v2("v1-late")));
        assert_eq!(text(cache.get(&a, false)), "two");
        assert!(cache.shared.replace(&a, "v2", v2("v3")));
        assert_eq!(lock(&cache.shared.entries)[&a].version_id, "v3");
        assert!(!cache.shared.replace(&key("gone"), "v1", v2("v1")));
        assert_eq!(cache.entries(), 1, "nothing inserted");
    }
}
