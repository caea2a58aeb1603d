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

use std::collections::HashMap;
use std::fmt;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::aws::{SecretQuery, SecretValue, SecretsManager, UpstreamError};
use crate::clock::{Clock, SystemClock};
use crate::random;
use crate::secret::SecretBytes;
use crate::sync::lock;

/// A rendered response body, shared by the cache and every writer of it;
/// zeroed when the last of them lets go.
pub type Body = Arc<SecretBytes>;

/// Background refreshes running at once; more wait in a short queue.
const REFRESHERS: usize = 2;
/// Refreshes waiting for a refresher; beyond this, a refresh is skipped and
/// the entry revalidates on its next read after expiry.
const REFRESH_QUEUE: usize = 64;
pub type Served = Result<Body, UpstreamError>;

/// What an answer is cached under. A new upstream adds a variant (Parameter
/// Store). The role is part of the key: an answer fetched as one role never
/// answers a request for another role or for the agent's own identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Secret {
        query: SecretQuery,
        /// The request's `roleArn` (already checked); `None`: the agent's own
        /// credentials.
        role: Option<String>,
    },
}

impl Key {
    /// A secret read with the agent's own credentials.
    pub fn secret(query: SecretQuery) -> Key {
        Key::Secret { query, role: None }
    }

    /// The role to call AWS as; `None` for the agent's own identity.
    pub fn role(&self) -> Option<&str> {
        match self {
            Key::Secret { role, .. } => role.as_deref(),
        }
    }
}

/// For log lines: what was asked for, never a value. A secret shows as its
/// ID alone, as the agent's log lines always named it, followed by the role
/// it was read as, if any.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Secret { query, role: None } => f.write_str(&query.secret_id),
            Key::Secret {
                query,
                role: Some(role),
            } => write!(f, "{} (as {role})", query.secret_id),
        }
    }
}

/// Where the cache fills from; a trait so tests can script and count calls.
/// An implementation serves the key's role (`Key::role`), or refuses.
pub trait Upstream: Send + Sync {
    /// The value and its version, rendered as the body the agent serves.
    fn fetch(&self, key: &Key) -> Result<SecretValue, UpstreamError>;
    /// Whether the version cached for `key` is still what `fetch` would
    /// return (a cheap metadata call).
    fn still_current(&self, key: &Key, cached_version: &str) -> Result<bool, UpstreamError>;
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
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub ttl: Duration,
    pub capacity: usize,
    pub ignore_transient_errors: bool,
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

/// The state the request threads and the refreshers share.
struct Shared<U, C> {
    upstream: U,
    clock: C,
    settings: Settings,
    /// Keys and entries boxed: the table keeps about twice as many slots as
    /// entries, and a slot of two pointers instead of ~240 bytes cut the
    /// memory of 1,000 cached secrets by a third.
    entries: Mutex<HashMap<Box<Key>, Box<Entry>>>,
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
}

struct Entry {
    body: Body,
    version_id: String,
    fresh_until: Instant,
    /// Reads from here on queue a background refresh (jittered per entry, so a
    /// fleet of agents does not call AWS in lockstep).
    refresh_after: Instant,
    refresh_queued: bool,
    last_used: Instant,
}

impl Entry {
    fn new(body: Body, version_id: String, ttl: Duration, now: Instant) -> Entry {
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
    fn restart(&mut self, ttl: Duration, now: Instant) {
        self.fresh_until = now + ttl;
        self.refresh_after = self.fresh_until - ttl.mul_f64(0.1 + 0.1 * random::unit());
        self.refresh_queued = false;
    }
}

/// One upstream call in progress; followers wait on it for the leader's result.
#[derive(Default)]
struct Flight {
    result: Mutex<Option<Served>>,
    done: Condvar,
}

/// What a lookup found.
enum Lookup {
    Fresh {
        body: Body,
        refresh: bool,
    },
    Expired {
        body: Body,
        version_id: String,
        /// Expired less than one TTL ago.
        recent: bool,
    },
    Missing,
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
        let shared = &*self.shared;
        if shared.settings.ttl.is_zero() {
            return shared.upstream.fetch(key).map(|v| Arc::new(v.body));
        }
        if refresh_now {
            return shared.fetch_and_store(key);
        }
        match shared.lookup(key) {
            Lookup::Fresh { body, refresh } => {
                if refresh {
                    self.queue_refresh(key);
                }
                Ok(body)
            }
            Lookup::Missing => shared.single_flight(key, None, || shared.fetch_and_store(key)),
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
                shared.single_flight(key, stale, || shared.revalidate(key, body, &version_id))
            }
        }
    }

    fn queue_refresh(&self, key: &Key) {
        let refresh = self.refresh.get_or_init(|| start_refreshers(&self.shared));
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
        if shared.settings.ttl.is_zero() {
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
                shared.settings.ttl,
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
        if shared.settings.ttl.is_zero() {
            return held;
        }
        let missing: Vec<&Key> = {
            let entries = lock(&shared.entries);
            keys.iter().filter(|k| !entries.contains_key(*k)).collect()
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

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.shared.entries).len()
    }
}

/// The refresher threads; they end when the cache (and so the sender) is dropped.
fn start_refreshers<U: Upstream + 'static, C: Clock + 'static>(
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
    fn lookup(&self, key: &Key) -> Lookup {
        let now = self.clock.now();
        let mut entries = lock(&self.entries);
        match entries.get_mut(key) {
            // While a refresh-ahead is queued or running, the entry keeps
            // answering for up to one more TTL: readers do not wait for it.
            Some(entry)
                if now < entry.fresh_until
                    || (entry.refresh_queued && now < entry.fresh_until + self.settings.ttl) =>
            {
                entry.last_used = now;
                let refresh = now >= entry.refresh_after && !entry.refresh_queued;
                if refresh {
                    entry.refresh_queued = true;
                }
                Lookup::Fresh {
                    body: entry.body.clone(),
                    refresh,
                }
            }
            Some(entry) => Lookup::Expired {
                body: entry.body.clone(),
                version_id: entry.version_id.clone(),
                recent: now < entry.fresh_until + self.settings.ttl,
            },
            None => Lookup::Missing,
        }
    }

    /// Runs `work` once for all concurrent callers with the same key. A
    /// caller that finds the work already running gets `stale` at once if
    /// there is one, else waits for the result.
    fn single_flight(
        &self,
        key: &Key,
        stale: Option<Body>,
        work: impl FnOnce() -> Served,
    ) -> Served {
        let (flight, leader) = {
            let mut flights = lock(&self.flights);
            match flights.get(key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let flight = Arc::new(Flight::default());
                    flights.insert(key.clone(), flight.clone());
                    (flight, true)
                }
            }
        };
        if !leader {
            if let Some(stale) = stale {
                return Ok(stale);
            }
            let mut result = lock(&flight.result);
            loop {
                if let Some(served) = result.as_ref() {
                    return served.clone();
                }
                result = flight
                    .done
                    .wait(result)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        // Publishes even if `work` panics, so followers never wait forever.
        let mut publish = Publish {
            cache: self,
            key,
            flight: &flight,
            result: Err(UpstreamError::Internal("secret fetch panicked".into())),
        };
        publish.result = work();
        publish.result.clone()
    }

    /// An expired entry: keep it if the upstream says the cached version
    /// still answers the request, else fetch the value again.
    fn revalidate(&self, key: &Key, stale: Body, version_id: &str) -> Served {
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

    /// A background refresh of an entry read near the end of its TTL: the
    /// same revalidation an expired entry gets, but nobody waits for it.
    fn refresh_ahead(&self, key: &Key) {
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
    fn refresh_done(&self, key: &Key) {
        if let Some(entry) = lock(&self.entries).get_mut(key) {
            entry.refresh_queued = false;
        }
    }

    fn fetch_and_store(&self, key: &Key) -> Served {
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
            }
        }
        entries.insert(
            Box::new(key.clone()),
            Box::new(Entry::new(
                body.clone(),
                value.version_id,
                self.settings.ttl,
                now,
            )),
        );
        Ok(body)
    }

    fn restart_ttl(&self, key: &Key, version_id: &str) {
        let now = self.clock.now();
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(key) {
            if entry.version_id == version_id {
                entry.restart(self.settings.ttl, now);
            }
        }
    }
}

/// Keys held by [`Cache::hold`]; released on drop.
pub struct Held<'a, U: Upstream, C: Clock> {
    shared: &'a Shared<U, C>,
    flights: Vec<(Key, Arc<Flight>)>,
}

impl<U: Upstream, C: Clock> Drop for Held<'_, U, C> {
    fn drop(&mut self) {
        for (key, flight) in self.flights.drain(..) {
            lock(&self.shared.flights).remove(&key);
            // Out of the table no request joins it any more; one that did
            // holds a reference.
            if Arc::strong_count(&flight) == 1 {
                continue;
            }
            let cached = lock(&self.shared.entries).get(&key).map(|e| e.body.clone());
            let result = match cached {
                Some(body) => Ok(body),
                None => self.shared.fetch_and_store(&key),
            };
            *lock(&flight.result) = Some(result);
            flight.done.notify_all();
        }
    }
}

struct Publish<'a, U: Upstream, C: Clock> {
    cache: &'a Shared<U, C>,
    key: &'a Key,
    flight: &'a Flight,
    result: Served,
}

impl<U: Upstream, C: Clock> Drop for Publish<'_, U, C> {
    fn drop(&mut self) {
        lock(&self.cache.flights).remove(self.key);
        *lock(&self.flight.result) = Some(self.result.clone());
        self.flight.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TestClock;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    }

    fn key(id: &str) -> Key {
        Key::secret(SecretQuery {
            secret_id: id.into(),
            version_id: None,
            version_stage: None,
        })
    }

    fn role_key(id: &str, role: &str) -> Key {
        let Key::Secret { query, .. } = key(id);
        Key::Secret {
            query,
            role: Some(role.into()),
        }
    }

    const TTL: Duration = Duration::from_secs(300);

    fn settings(ttl: Duration) -> Settings {
        Settings {
            ttl,
            capacity: 2,
            ignore_transient_errors: true,
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
            // The table holds one reference, each caller one more.
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
        assert_eq!(cache.len(), 2, "same secret ID, two roles: two entries");
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
        assert_eq!(cache.len(), 0);
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
        assert_eq!(cache.len(), 2);
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
        // Every caller joined the one call before it returns.
        let joined = eventually(|| cache.in_flight(&key("a")) == 20);
        cache.shared.upstream.release();
        assert!(joined, "{} callers in flight", cache.in_flight(&key("a")));
        for t in threads {
            assert_eq!(t.join().unwrap(), "one");
        }
        assert_eq!(cache.gets(), 1);
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
        assert_eq!(cache.len(), 2);
        assert_eq!(text(cache.get(&key("a"), false)), "a");
        assert_eq!(text(cache.get(&key("b"), false)), "b");

        let off = test_cache(Fake::new("v1", "fetched"), settings(Duration::ZERO));
        assert!(!off.store(&key("a"), value("v1", "a")));
        assert_eq!(off.len(), 0);
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
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn wipe_empties_the_cache() {
        let cache = test_cache(Fake::new("v1", "one"), settings(TTL));
        let in_use = cache.get(&key("a"), false).unwrap();
        cache.get(&key("b"), false).unwrap();
        cache.wipe();
        assert_eq!(cache.len(), 0);
        // A body a response is still writing is left alone.
        assert_eq!(&**in_use, b"one");
        cache.get(&key("a"), false).unwrap();
        assert_eq!(cache.gets(), 3, "fetched again after the wipe");
    }
}
