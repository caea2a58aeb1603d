//! The answer cache: fresh entries served from memory, expired ones
//! revalidated with a cheap metadata call, and concurrent misses for one key
//! coalesced into a single upstream call.
//!
//! No lock is held while talking to AWS, so a slow call for one secret never
//! delays a hit on another. An entry that is read shortly before its TTL ends
//! is refreshed in the background ("refresh-ahead"), so a steady reader never
//! waits for AWS; entries nobody reads simply expire.
//!
//! The policy (TTL, revalidation, single flight, refresh-ahead, eviction)
//! does not depend on the upstream: answers are cached under a typed [`Key`]
//! and filled through [`Upstream`], so another upstream adds a key variant and
//! an arm in the `Upstream` impl instead of a copy of the cache. A request's
//! role is a field of the key (`roles::Roles` picks the client for it), so
//! every policy applies per (role, secret). Time comes
//! from a [`Clock`] parameter so the tests can step past TTLs without sleeping.
//!
//! This file is the cache's face ([`Cache`]: what requests and prefetching
//! call). Below it: `refresh` (the background refreshes, batched), `table`
//! (the state and the one-key operations), and the types `key` and
//! `upstream`.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use secrets_manager_agent_aws::SecretValue;
use secrets_manager_agent_core::clock::{Clock, SystemClock};
use secrets_manager_agent_core::metrics::{self, CacheEvent};
use secrets_manager_agent_core::sync::lock;

mod key;
mod refresh;
pub mod roles;
mod table;
mod upstream;

pub use key::Key;
pub use table::{Held, Settings, Wake};
pub use upstream::{Body, Clients, Served, Upstream};

use table::{Entry, Flight, Joined, Lookup, Shared};

/// What [`Cache::answer_or_wait`] has for a request.
pub enum Answer {
    /// The answer, and whether it came from memory.
    Now(Served, bool),
    /// Another caller is fetching the key: the answer comes when it ends.
    Later(Waiting),
}

/// A request's place behind another caller's upstream call for its key.
#[derive(Clone)]
pub struct Waiting(Arc<Flight>);

impl Waiting {
    /// Calls `wake` once the answer is there (now, if it is).
    pub fn when_done(&self, wake: Wake) {
        self.0.when_done(wake);
    }

    /// The answer; the calling thread waits for it if it is not there yet.
    pub fn result(&self) -> Served {
        self.0.wait()
    }
}

/// The clock is a type parameter, not a trait object, so a hit with the
/// system clock costs no indirect call.
pub struct Cache<U, C: Clock = SystemClock> {
    shared: Arc<Shared<U, C>>,
    /// Keys to refresh ahead of expiry. The refreshers start with the first
    /// refresh (an agent whose secrets are read once never needs them);
    /// `None` if they could not start.
    refresh: OnceLock<Option<SyncSender<Key>>>,
}

impl<U: Upstream + 'static> Cache<U> {
    pub fn new(upstream: U, settings: Settings) -> Cache<U> {
        Cache::with_clock(upstream, settings, SystemClock)
    }
}

impl<U: Upstream + 'static, C: Clock + 'static> Cache<U, C> {
    pub fn with_clock(upstream: U, settings: Settings, clock: C) -> Cache<U, C> {
        let shared = Arc::new(Shared {
            upstream,
            clock,
            settings,
            entries: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            batch_paused: Mutex::new(Vec::new()),
        });
        Cache {
            shared,
            refresh: OnceLock::new(),
        }
    }

    /// Answers a client's request: from memory when fresh, else from AWS.
    /// `refresh_now` always asks GetSecretValue and leaves the cache as it was
    /// on failure.
    pub fn get(&self, key: &Key, refresh_now: bool) -> Served {
        self.answer(key, refresh_now).0
    }

    /// `get`, and whether the answer came from memory (fresh, or expired
    /// while another caller revalidates) rather than after an upstream call.
    /// Waits (this thread) when another caller is fetching the key.
    pub fn answer(&self, key: &Key, refresh_now: bool) -> (Served, bool) {
        match self.answer_or_wait(key, refresh_now) {
            Answer::Now(served, from_memory) => (served, from_memory),
            Answer::Later(waiting) => (waiting.result(), false),
        }
    }

    /// `answer`, except that it never waits for AWS: when the key must be
    /// fetched (by this caller, on a thread of its own, or by another
    /// caller already) this returns at once with the flight to wait on. A
    /// server parks the request and holds no thread for it: a hundred
    /// requests for a secret nobody has yet cost one thread, the one
    /// calling AWS, and the server's workers only ever serve what is in
    /// memory.
    pub fn answer_or_wait(&self, key: &Key, refresh_now: bool) -> Answer {
        let shared = &*self.shared;
        let cached = !shared.settings.ttl_of(key).is_zero();
        if !cached || refresh_now {
            metrics::cache(CacheEvent::Miss);
            // The request's own call: no other caller joins it.
            let flight = Arc::new(Flight::default());
            let waiting = Waiting(flight.clone());
            self.lead_aside(key, false, flight, move |shared, key| {
                if cached {
                    shared.fetch_and_store(key)
                } else {
                    shared.upstream.fetch(key).map(|v| Arc::new(v.body))
                }
            });
            return Answer::Later(waiting);
        }
        let joined = match shared.lookup(key) {
            Lookup::Fresh { body, refresh } => {
                metrics::cache(CacheEvent::Hit);
                if refresh {
                    self.queue_refresh(key);
                }
                return Answer::Now(Ok(body), true);
            }
            Lookup::Missing => {
                self.join_aside(key, None, |shared, key| shared.fetch_and_store(key))
            }
            Lookup::Expired {
                body,
                version_id,
                recent,
            } => {
                // Only the first reader waits for the revalidation; readers
                // arriving while it runs get the just-expired value, as long
                // as stale answers are allowed at all.
                let stale =
                    (recent && shared.settings.ignore_transient_errors).then(|| body.clone());
                self.join_aside(key, stale, move |shared, key| {
                    shared.revalidate(key, body, &version_id)
                })
            }
        };
        match joined {
            Joined::Stale(stale) => Answer::Now(Ok(stale), true),
            Joined::Follow(flight) | Joined::Lead(flight) => {
                metrics::cache(CacheEvent::Miss);
                Answer::Later(Waiting(flight))
            }
        }
    }

    /// Joins the flight for `key` ([`Shared::join`]); one this caller
    /// leads runs `work` on a thread of its own.
    fn join_aside(
        &self,
        key: &Key,
        stale: Option<Body>,
        work: impl FnOnce(&Shared<U, C>, &Key) -> Served + Send + 'static,
    ) -> Joined {
        let joined = self.shared.join(key, stale);
        if let Joined::Lead(flight) = &joined {
            self.lead_aside(key, true, flight.clone(), work);
        }
        joined
    }

    /// Leads `flight` on a thread of its own, so that the caller (a server's
    /// worker) never waits for AWS. If no thread can start, on the
    /// caller's: slower for the other requests, but answered.
    fn lead_aside(
        &self,
        key: &Key,
        listed: bool,
        flight: Arc<Flight>,
        work: impl FnOnce(&Shared<U, C>, &Key) -> Served + Send + 'static,
    ) {
        let (shared, key) = (self.shared.clone(), key.clone());
        let run = move || {
            // The request gets the result from the flight, as followers do.
            let _ = shared.lead(&key, listed, &flight, work);
            secrets_manager_agent_os::stack::release_unused();
        };
        // Taken by whichever runs it: the thread, or this caller if the
        // thread did not start.
        let pending = Arc::new(Mutex::new(Some(run)));
        let theirs = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("fetch".into())
            .spawn(move || {
                let run = lock(&theirs).take();
                if let Some(run) = run {
                    run();
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot start a thread to call AWS ({e}); calling from the worker");
            let run = lock(&pending).take();
            if let Some(run) = run {
                run();
            }
        }
    }

    fn queue_refresh(&self, key: &Key) {
        let refresh = self.refresh.get_or_init(|| refresh::start(&self.shared));
        let Some(refresh) = refresh else { return };
        match refresh.try_send(key.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                log::debug!("refresh queue full; {key} will revalidate when it expires");
                self.shared.refresh_done(key);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
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

    /// Marks `keys` (those not cached and not being fetched) as being fetched
    /// by the caller (prefetching, before a batch call): a request for one of
    /// them waits for the caller instead of calling upstream itself. When the
    /// returned guard is dropped, each waiting request gets what the caller
    /// stored meanwhile (`store`), or, if it stored nothing for that key, the
    /// answer of a GetSecretValue made for it then, as its own would have been.
    pub fn hold(&self, keys: &[Key]) -> Held<'_, U, C> {
        let shared = &*self.shared;
        let mut held = Held {
            shared,
            flights: Vec::new(),
        };
        let missing: Vec<&Key> = {
            let entries = lock(&shared.entries);
            keys.iter()
                .filter(|k| !shared.settings.ttl_of(k).is_zero() && !entries.contains_key(*k))
                .collect()
        };
        let mut flights = lock(&shared.flights);
        for key in missing {
            if !flights.contains_key(key) {
                let flight = Arc::new(Flight::default());
                flights.insert(key.clone(), flight.clone());
                held.flights.push((key.clone(), flight));
            }
        }
        held
    }

    /// The upstream the cache fills from (prefetching calls it directly).
    pub fn upstream(&self) -> &U {
        &self.shared.upstream
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
    use secrets_manager_agent_aws::{SecretQuery, UpstreamError};
    use secrets_manager_agent_core::clock::TestClock;
    use secrets_manager_agent_core::secret::SecretBytes;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::sync::{Condvar, PoisonError};
    use std::time::{Duration, Instant};

    /// A scripted upstream: the current version and value, call counters,
    /// switches that make calls fail, and a gate that holds GetSecretValue
    /// "in flight" for as long as a test needs.
    #[derive(Default)]
    struct Fake {
        version: Mutex<(String, String)>,
        gets: AtomicUsize,
        describes: AtomicUsize,
        /// Every call fails transiently.
        down: AtomicBool,
        /// The metadata call is not allowed (a non-transient error).
        denied: AtomicBool,
        held: Mutex<bool>,
        released: Condvar,
        /// The role of every GetSecretValue key, in order.
        roles: Mutex<Vec<Option<String>>>,
        /// Keys a batch call takes (0: no batch call).
        batch: usize,
        /// The secret IDs of each batch call, in order.
        batches: Mutex<Vec<Vec<String>>>,
        /// The batch call itself is not allowed.
        batch_denied: AtomicBool,
        /// The batch call is throttled.
        batch_throttled: AtomicBool,
        /// Secret IDs a batch answer leaves out.
        batch_skips: Mutex<Vec<String>>,
    }

    impl Fake {
        fn new(version: &str, value: &str) -> Fake {
            let fake = Fake::default();
            fake.set(version, value);
            fake
        }
        fn set(&self, version: &str, value: &str) {
            *lock(&self.version) = (version.into(), value.into());
        }
        fn hold(&self) {
            *lock(&self.held) = true;
        }
        fn release(&self) {
            *lock(&self.held) = false;
            self.released.notify_all();
        }
        fn fail_if_down(&self) -> Result<(), UpstreamError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(UpstreamError::Timeout);
            }
            Ok(())
        }
    }

    impl Upstream for Fake {
        fn fetch(&self, key: &Key) -> Result<SecretValue, UpstreamError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            lock(&self.roles).push(key.role().map(String::from));
            let mut held = lock(&self.held);
            while *held {
                held = self
                    .released
                    .wait(held)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            drop(held);
            self.fail_if_down()?;
            let (version, value) = lock(&self.version).clone();
            Ok(SecretValue {
                body: SecretBytes::new(value.into_bytes()),
                version_id: version,
            })
        }
        fn still_current(&self, _: &Key, cached_version: &str) -> Result<bool, UpstreamError> {
            self.describes.fetch_add(1, Ordering::SeqCst);
            self.fail_if_down()?;
            if self.denied.load(Ordering::SeqCst) {
                return Err(UpstreamError::service(
                    400,
                    "AccessDeniedException",
                    "not allowed",
                ));
            }
            Ok(lock(&self.version).0 == cached_version)
        }
        fn batch_limit(&self) -> usize {
            self.batch
        }
        fn fetch_batch(&self, keys: &[Key]) -> Result<Vec<(usize, SecretValue)>, UpstreamError> {
            let ids: Vec<String> = keys.iter().map(|k| id_of(k).to_string()).collect();
            lock(&self.batches).push(ids.clone());
            self.fail_if_down()?;
            if self.batch_denied.load(Ordering::SeqCst) {
                return Err(UpstreamError::service(
                    400,
                    "AccessDeniedException",
                    "not allowed",
                ));
            }
            if self.batch_throttled.load(Ordering::SeqCst) {
                return Err(UpstreamError::service(
                    400,
                    "ThrottlingException",
                    "Rate exceeded",
                ));
            }
            let (version, value) = lock(&self.version).clone();
            let skips = lock(&self.batch_skips);
            Ok((0..ids.len())
                .filter(|&i| !skips.contains(&ids[i]))
                .map(|i| {
                    let body = SecretBytes::new(value.clone().into_bytes());
                    let version_id = version.clone();
                    (i, SecretValue { body, version_id })
                })
                .collect())
        }
    }

    fn id_of(key: &Key) -> &str {
        match key {
            Key::Secret { query, .. } => &query.secret_id,
            Key::Parameter { query, .. } => &query.name,
        }
    }

    fn key(id: &str) -> Key {
        Key::secret(SecretQuery {
            secret_id: id.into(),
            version_id: None,
            version_stage: None,
        })
    }

    fn role_key(id: &str, role: &str) -> Key {
        Key::Secret {
            query: SecretQuery {
                secret_id: id.into(),
                version_id: None,
                version_stage: None,
            },
            role: Some(role.into()),
        }
    }

    const TTL: Duration = Duration::from_secs(300);

    fn settings(ttl: Duration) -> Settings {
        Settings {
            ttl,
            capacity: 2,
            ignore_transient_errors: true,
            refresh_batch: 1,
            parameter_ttl: ttl,
        }
    }

    fn test_cache(fake: Fake, settings: Settings) -> Cache<Fake, TestClock> {
        Cache::with_clock(fake, settings, TestClock::default())
    }

    impl Cache<Fake, TestClock> {
        fn advance(&self, by: Duration) {
            self.shared.clock.advance(by);
        }
        fn gets(&self) -> usize {
            self.shared.upstream.gets.load(Ordering::SeqCst)
        }
        fn describes(&self) -> usize {
            self.shared.upstream.describes.load(Ordering::SeqCst)
        }
        fn refreshers_started(&self) -> bool {
            self.refresh.get().is_some()
        }
        /// Whether a refresh-ahead of `key` is queued or running.
        fn refreshing(&self, key: &Key) -> bool {
            lock(&self.shared.entries)
                .get(key)
                .is_some_and(|e| e.refresh_queued)
        }
        /// Callers sharing the upstream call for `key` (0 if none runs).
        fn in_flight(&self, key: &Key) -> usize {
            // The table holds one reference; each caller, and the thread
            // calling AWS or the holder, one more.
            lock(&self.shared.flights)
                .get(key)
                .map_or(0, |f| Arc::strong_count(f) - 1)
        }
    }

    /// Waits for a background thread to make `done` true; false if it does
    /// not within a generous bound (a failure, not a timing assumption).
    fn eventually(done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    fn text(served: Served) -> String {
        String::from_utf8(served.unwrap().to_vec()).unwrap()
    }

    #[test]
    fn keys_log_the_id_only() {
        let key = Key::secret(SecretQuery {
            secret_id: "prod/db".into(),
            version_id: Some("v1".into()),
            version_stage: Some("AWSPREVIOUS".into()),
        });
        assert_eq!(key.to_string(), "prod/db");
        let role = "arn:aws:iam::123456789012:role/r";
        assert_eq!(
            role_key("prod/db", role).to_string(),
            format!("prod/db (as {role})")
        );
    }

    #[test]
    fn each_role_has_its_own_entries() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        let (a, b) = (
            role_key("s", "arn:aws:iam::123456789012:role/a"),
            role_key("s", "arn:aws:iam::123456789012:role/b"),
        );
        assert_ne!(a, b);
        assert_ne!(a, key("s"));
        cache.get(&a, false).unwrap();
        cache.get(&b, false).unwrap();
        assert_eq!(cache.entries(), 2, "same secret ID, two roles: two entries");
        assert_eq!(cache.gets(), 2);
        assert_eq!(
            lock(&cache.shared.upstream.roles).clone(),
            [a.role().map(String::from), b.role().map(String::from)]
        );
        // Each is a hit for its own role only.
        cache.get(&a, false).unwrap();
        cache.get(&b, false).unwrap();
        assert_eq!(cache.gets(), 2);
    }

    #[test]
    fn fresh_hits_do_not_call_upstream() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        // Up to the earliest refresh point (80 % of the TTL), a read is a
        // plain hit: no upstream call, in the foreground or behind.
        cache.advance(TTL.mul_f64(0.8) - Duration::from_millis(1));
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        assert_eq!((cache.gets(), cache.describes()), (1, 0));
        assert!(!cache.refreshers_started());
    }

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
    fn refresh_now_failure_keeps_the_cache() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        cache.get(&key("a"), false).unwrap();
        cache.shared.upstream.down.store(true, Ordering::SeqCst);
        assert!(cache.get(&key("a"), true).is_err());
        cache.shared.upstream.down.store(false, Ordering::SeqCst);
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        cache.shared.upstream.set("v2", "two");
        assert_eq!(text(cache.get(&key("a"), true)), "two");
        assert_eq!(text(cache.get(&key("a"), false)), "two");
        assert_eq!((cache.gets(), cache.describes()), (3, 0));
    }

    #[test]
    fn ttl_zero_keeps_nothing() {
        let cache = test_cache(Fake::new("v1", "one"), settings(Duration::ZERO));
        cache.get(&key("a"), false).unwrap();
        cache.get(&key("a"), false).unwrap();
        assert_eq!((cache.gets(), cache.describes()), (2, 0));
        assert_eq!(cache.entries(), 0);
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
    fn concurrent_misses_make_one_call() {
        let fake = Fake::new("v1", "one");
        fake.hold();
        let cache = Arc::new(test_cache(fake, settings(TTL)));
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || text(cache.get(&key("a"), false)))
            })
            .collect();
        // Every caller joined the one call (and its thread) before it
        // returns.
        let joined = eventually(|| cache.in_flight(&key("a")) == 21);
        cache.shared.upstream.release();
        assert!(joined, "{} callers in flight", cache.in_flight(&key("a")));
        for t in threads {
            assert_eq!(t.join().unwrap(), "one");
        }
        assert_eq!(cache.gets(), 1);
    }

    #[test]
    fn no_caller_waits_for_aws() {
        // A miss, a refreshNow and an uncached read: each comes back at once
        // with the flight to wait on, while the upstream call is held.
        let fake = Fake::new("v1", "one");
        fake.hold();
        let cached = Arc::new(test_cache(fake, settings(TTL)));
        let fake = Fake::new("v1", "one");
        fake.hold();
        let uncached = Arc::new(test_cache(fake, settings(Duration::ZERO)));
        let (tx, rx) = std::sync::mpsc::channel();
        for (cache, refresh_now) in [(&cached, false), (&cached, true), (&uncached, false)] {
            let (cache, tx) = (cache.clone(), tx.clone());
            std::thread::spawn(move || {
                let answer = cache.answer_or_wait(&key("a"), refresh_now);
                let _ = tx.send(answer);
            });
        }
        let mut waiting = Vec::new();
        for _ in 0..3 {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Answer::Later(w)) => waiting.push(w),
                Ok(Answer::Now(..)) => panic!("answered before the call ended"),
                Err(_) => panic!("a caller waited for the upstream call"),
            }
        }
        cached.shared.upstream.release();
        uncached.shared.upstream.release();
        for w in waiting {
            assert_eq!(text(w.result()), "one");
        }
        assert_eq!(cached.gets(), 2, "the miss and the refreshNow");
        assert_eq!(uncached.gets(), 1);
    }

    #[test]
    fn followers_of_a_miss_can_wait_without_a_thread() {
        let fake = Fake::new("v1", "one");
        fake.hold();
        let cache = Arc::new(test_cache(fake, settings(TTL)));
        let leader = {
            let cache = cache.clone();
            std::thread::spawn(move || text(cache.get(&key("a"), false)))
        };
        // The first caller, and the thread it started to call AWS.
        assert!(eventually(|| cache.in_flight(&key("a")) == 2));
        // Followers get their place at once instead of blocking.
        let woken = Arc::new(AtomicUsize::new(0));
        let waiting: Vec<Waiting> = (0..3)
            .map(|_| match cache.answer_or_wait(&key("a"), false) {
                Answer::Later(waiting) => waiting,
                Answer::Now(..) => panic!("answered before the call ended"),
            })
            .collect();
        for w in &waiting {
            let woken = woken.clone();
            w.when_done(Box::new(move || {
                woken.fetch_add(1, Ordering::SeqCst);
            }));
        }
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        cache.shared.upstream.release();
        assert_eq!(leader.join().unwrap(), "one");
        // Woken once each, with the leader's answer; a late subscriber is
        // woken at once. The first caller waits on the flight like any
        // follower, so it may return before the thread calling AWS has run
        // the wakes: wait for them.
        assert!(eventually(|| woken.load(Ordering::SeqCst) >= 3));
        assert_eq!(woken.load(Ordering::SeqCst), 3);
        for w in &waiting {
            assert_eq!(text(w.result()), "one");
        }
        waiting[0].when_done(Box::new({
            let woken = woken.clone();
            move || {
                woken.fetch_add(1, Ordering::SeqCst);
            }
        }));
        assert_eq!(woken.load(Ordering::SeqCst), 4);
        assert_eq!(cache.gets(), 1);
        // Once cached, no waiting at all.
        assert!(matches!(
            cache.answer_or_wait(&key("a"), false),
            Answer::Now(Ok(_), true)
        ));
    }

    #[test]
    fn reads_near_expiry_refresh_in_the_background() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        cache.get(&key("a"), false).unwrap();
        // Past the latest refresh point (90 % of the TTL), before expiry:
        // served at once, refreshed behind.
        cache.advance(TTL.mul_f64(0.95));
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        assert!(cache.refreshers_started());
        assert!(eventually(|| !cache.refreshing(&key("a"))));
        assert_eq!((cache.gets(), cache.describes()), (1, 1));
        // The TTL restarted: past the first expiry it is still a plain hit.
        cache.advance(TTL.mul_f64(0.5));
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        assert_eq!((cache.gets(), cache.describes()), (1, 1));
    }

    #[test]
    fn a_background_refresh_picks_up_a_new_version() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        cache.get(&key("a"), false).unwrap();
        cache.shared.upstream.set("v2", "two");
        cache.advance(TTL.mul_f64(0.95));
        assert_eq!(text(cache.get(&key("a"), false)), "one", "no wait");
        assert!(eventually(|| !cache.refreshing(&key("a"))));
        assert_eq!((cache.gets(), cache.describes()), (2, 1));
        assert_eq!(text(cache.get(&key("a"), false)), "two");
        assert_eq!(cache.gets(), 2);
    }

    #[test]
    fn readers_during_a_revalidation_get_the_expired_value() {
        let cache = Arc::new(test_cache(Fake::new("v1", "one"), settings(TTL)));
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        cache.advance(TTL.mul_f64(1.2));
        cache.shared.upstream.set("v2", "two");
        cache.shared.upstream.hold();
        let leader = {
            let cache = cache.clone();
            std::thread::spawn(move || text(cache.get(&key("a"), false)))
        };
        // The leader is inside GetSecretValue, and stays there until released.
        let inside = eventually(|| cache.gets() == 2);
        let (tx, rx) = mpsc::channel();
        {
            let cache = cache.clone();
            std::thread::spawn(move || tx.send(text(cache.get(&key("a"), false))));
        }
        let follower = rx.recv_timeout(Duration::from_secs(10));
        cache.shared.upstream.release();
        assert!(inside, "the leader never fetched");
        assert_eq!(follower.as_deref(), Ok("one"), "the follower does not wait");
        assert_eq!(
            leader.join().unwrap(),
            "two",
            "the leader waits for the new value"
        );
        assert_eq!(text(cache.get(&key("a"), false)), "two");
        assert_eq!((cache.gets(), cache.describes()), (2, 1));
    }

    #[test]
    fn unread_entries_are_not_refreshed() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        // Read often, but only before the refresh window opens.
        for _ in 0..5 {
            cache.get(&key("a"), false).unwrap();
            cache.advance(TTL / 8);
        }
        assert!(cache.shared.clock.now() < lock(&cache.shared.entries)[&key("a")].refresh_after);
        // Then nobody reads it until long after it expired.
        cache.advance(TTL * 3);
        assert_eq!((cache.gets(), cache.describes()), (1, 0));
        assert!(!cache.refreshers_started(), "no refresh was ever queued");
        // The next read revalidates: the counters above could have moved.
        assert_eq!(text(cache.get(&key("a"), false)), "one");
        assert_eq!((cache.gets(), cache.describes()), (1, 1));
        assert!(!cache.refreshers_started());
    }

    fn value(version: &str, body: &str) -> SecretValue {
        SecretValue {
            body: SecretBytes::new(body.as_bytes().to_vec()),
            version_id: version.into(),
        }
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
    fn requests_for_held_keys_wait_for_the_holder() {
        let cache = Arc::new(test_cache(Fake::new("v1", "fetched"), settings(TTL)));
        let held = cache.hold(&[key("a"), key("b")]);
        let reader = |id: &'static str| {
            let cache = cache.clone();
            std::thread::spawn(move || text(cache.get(&key(id), false)))
        };
        let (a, b) = (reader("a"), reader("b"));
        let joined =
            eventually(|| cache.in_flight(&key("a")) == 2 && cache.in_flight(&key("b")) == 2);
        // "a" arrives from the holder's batch, "b" does not.
        assert!(cache.store(&key("a"), value("v1", "stored")));
        drop(held);
        assert!(joined, "both requests waited");
        assert_eq!(a.join().unwrap(), "stored");
        assert_eq!(
            b.join().unwrap(),
            "fetched",
            "fetched for the waiting request"
        );
        assert_eq!(cache.gets(), 1, "only b was fetched, once");
        assert_eq!(text(cache.get(&key("b"), false)), "fetched");
        assert_eq!(cache.gets(), 1);
    }

    #[test]
    fn held_keys_nobody_asked_for_cost_nothing() {
        let cache = test_cache(Fake::new("v1", "fetched"), settings(TTL));
        cache.get(&key("cached"), false).unwrap();
        let held = cache.hold(&[key("cached"), key("a")]);
        assert_eq!(held.flights.len(), 1, "a cached key is not held");
        drop(held);
        assert_eq!(cache.in_flight(&key("a")), 0);
        assert_eq!(cache.gets(), 1);
        assert_eq!(cache.entries(), 1);
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

    // ---- refreshing entries due together in one call (refresh.rs)

    fn batch_cache(refresh_batch: usize) -> Cache<Fake, TestClock> {
        let fake = Fake {
            batch: 20,
            ..Fake::default()
        };
        fake.set("v1", "one");
        let settings = Settings {
            capacity: 50,
            refresh_batch,
            ..settings(TTL)
        };
        test_cache(fake, settings)
    }

    impl Cache<Fake, TestClock> {
        /// Reads each key once (fetching it if needed).
        fn read(&self, keys: &[Key]) {
            for key in keys {
                self.get(key, false).unwrap();
            }
        }
        /// The secret IDs of each batch call so far, sorted within a call.
        fn batches(&self) -> Vec<Vec<String>> {
            let mut batches = lock(&self.shared.upstream.batches).clone();
            for batch in &mut batches {
                batch.sort();
            }
            batches
        }
        /// No refresh queued or running.
        fn idle(&self) -> bool {
            lock(&self.shared.entries)
                .values()
                .all(|e| !e.refresh_queued)
        }
        /// The keys still fresh now.
        fn fresh(&self) -> usize {
            let now = self.shared.clock.now();
            lock(&self.shared.entries)
                .values()
                .filter(|e| now < e.fresh_until)
                .count()
        }
    }

    fn keys(ids: &[&str]) -> Vec<Key> {
        ids.iter().map(|id| key(id)).collect()
    }

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

    #[test]
    fn refresh_batch_one_refreshes_each_alone() {
        let cache = batch_cache(1);
        let all = keys(&["a", "b"]);
        fall_due_together(&cache, &all);
        assert!(cache.batches().is_empty());
        assert_eq!(cache.describes(), 1);
    }
}
