//! The secret cache: fresh entries served from memory, expired ones revalidated
//! with DescribeSecret, and concurrent misses for one key coalesced into a
//! single upstream call.
//!
//! No lock is held while talking to AWS, so a slow call for one secret never
//! delays a hit on another. An entry that is read shortly before its TTL ends
//! is refreshed in the background ("refresh-ahead"), so a steady reader never
//! waits for Secrets Manager; entries nobody reads simply expire.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::aws::retry::random_unit;
use crate::aws::secrets_manager::Description;
use crate::aws::{SecretQuery, SecretValue, SecretsManager, UpstreamError};
use crate::secret::SecretBytes;
use crate::sync::lock;

/// The stage a request without `versionId`/`versionStage` asks for.
const CURRENT: &str = "AWSCURRENT";

/// A rendered response body, shared by the cache and every writer of it;
/// zeroed when the last of them lets go.
pub type Body = Arc<SecretBytes>;

/// Background refreshes running at once; more wait in a short queue.
const REFRESHERS: usize = 2;
/// Refreshes waiting for a refresher; beyond this, a refresh is skipped and
/// the entry revalidates on its next read after expiry.
const REFRESH_QUEUE: usize = 64;
pub type Served = Result<Body, UpstreamError>;

/// The upstream the cache fills from; a trait so tests can count calls.
pub trait Upstream: Send + Sync {
    fn get_secret_value(&self, query: &SecretQuery) -> Result<SecretValue, UpstreamError>;
    fn describe_secret(&self, secret_id: &str) -> Result<Description, UpstreamError>;
}

impl Upstream for SecretsManager {
    fn get_secret_value(&self, query: &SecretQuery) -> Result<SecretValue, UpstreamError> {
        SecretsManager::get_secret_value(self, query)
    }
    fn describe_secret(&self, secret_id: &str) -> Result<Description, UpstreamError> {
        SecretsManager::describe_secret(self, secret_id)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub ttl: Duration,
    pub capacity: usize,
    pub ignore_transient_errors: bool,
}

pub struct Cache<U> {
    shared: Arc<Shared<U>>,
    /// Keys to refresh ahead of expiry. The refreshers start with the first
    /// refresh (an agent whose secrets are read once never needs them);
    /// `None` if they could not start.
    refresh: OnceLock<Option<SyncSender<SecretQuery>>>,
}

/// The state the request threads and the refreshers share.
struct Shared<U> {
    upstream: U,
    settings: Settings,
    /// Keys and entries boxed: the table keeps about twice as many slots as
    /// entries, and a slot of two pointers instead of ~240 bytes cut the
    /// memory of 1,000 cached secrets by a third.
    entries: Mutex<HashMap<Box<SecretQuery>, Box<Entry>>>,
    flights: Mutex<HashMap<SecretQuery, Arc<Flight>>>,
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
    fn new(body: Body, version_id: String, ttl: Duration) -> Entry {
        let now = Instant::now();
        let mut entry = Entry {
            body,
            version_id,
            fresh_until: now,
            refresh_after: now,
            refresh_queued: false,
            last_used: now,
        };
        entry.restart(ttl);
        entry
    }

    /// A new TTL from now; the refresh point falls in its last 10 to 20 %.
    fn restart(&mut self, ttl: Duration) {
        let now = Instant::now();
        self.fresh_until = now + ttl;
        self.refresh_after = self.fresh_until - ttl.mul_f64(0.1 + 0.1 * random_unit());
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
        let shared = Arc::new(Shared {
            upstream,
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
    pub fn get(&self, query: &SecretQuery, refresh_now: bool) -> Served {
        let shared = &*self.shared;
        if shared.settings.ttl.is_zero() {
            return shared
                .upstream
                .get_secret_value(query)
                .map(|v| Arc::new(v.body));
        }
        if refresh_now {
            return shared.fetch_and_store(query);
        }
        match shared.lookup(query) {
            Lookup::Fresh { body, refresh } => {
                if refresh {
                    self.queue_refresh(query);
                }
                Ok(body)
            }
            Lookup::Missing => shared.single_flight(query, None, || shared.fetch_and_store(query)),
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
                shared.single_flight(query, stale, || shared.revalidate(query, body, &version_id))
            }
        }
    }

    fn queue_refresh(&self, query: &SecretQuery) {
        let refresh = self.refresh.get_or_init(|| start_refreshers(&self.shared));
        let Some(refresh) = refresh else { return };
        match refresh.try_send(query.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                log::debug!(
                    "refresh queue full; {} will revalidate when it expires",
                    query.secret_id
                );
                self.shared.refresh_done(query);
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

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.shared.entries).len()
    }
}

/// The refresher threads; they end when the cache (and so the sender) is dropped.
fn start_refreshers<U: Upstream + 'static>(
    shared: &Arc<Shared<U>>,
) -> Option<SyncSender<SecretQuery>> {
    let (tx, rx) = mpsc::sync_channel::<SecretQuery>(REFRESH_QUEUE);
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

fn refresher<U: Upstream>(shared: &Shared<U>, rx: &Mutex<Receiver<SecretQuery>>) {
    loop {
        let next = lock(rx).recv();
        let Ok(query) = next else { return };
        shared.refresh_ahead(&query);
        crate::os::stack::release_unused();
    }
}

impl<U: Upstream> Shared<U> {
    fn lookup(&self, query: &SecretQuery) -> Lookup {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        match entries.get_mut(query) {
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
        query: &SecretQuery,
        stale: Option<Body>,
        work: impl FnOnce() -> Served,
    ) -> Served {
        let (flight, leader) = {
            let mut flights = lock(&self.flights);
            match flights.get(query) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let flight = Arc::new(Flight::default());
                    flights.insert(query.clone(), flight.clone());
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
            query,
            flight: &flight,
            result: Err(UpstreamError::Internal("secret fetch panicked".into())),
        };
        publish.result = work();
        publish.result.clone()
    }

    /// An expired entry: keep it if DescribeSecret says the cached version still
    /// answers the request, else fetch the value again.
    fn revalidate(&self, query: &SecretQuery, stale: Body, version_id: &str) -> Served {
        let ignore = self.settings.ignore_transient_errors;
        let fetched = match self.upstream.describe_secret(&query.secret_id) {
            Ok(description) if still_answers(&description, query, version_id) => {
                self.restart_ttl(query, version_id);
                return Ok(stale);
            }
            // Not current any more, or DescribeSecret is not allowed (policies
            // often grant GetSecretValue alone): the value itself decides.
            Ok(_) => self.fetch_and_store(query),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                log::debug!(
                    "DescribeSecret for {} failed ({e}); fetching the value",
                    query.secret_id
                );
                self.fetch_and_store(query)
            }
        };
        match fetched {
            Err(e) if ignore && e.is_transient() => {
                log::warn!(
                    "serving cached {} after a transient error: {e}",
                    query.secret_id
                );
                Ok(stale)
            }
            other => other,
        }
    }

    /// A background refresh of an entry read near the end of its TTL: the
    /// same revalidation an expired entry gets, but nobody waits for it.
    fn refresh_ahead(&self, query: &SecretQuery) {
        let current = lock(&self.entries)
            .get(query)
            .map(|e| (e.body.clone(), e.version_id.clone()));
        let Some((body, version_id)) = current else {
            return;
        };
        log::debug!("refreshing {} ahead of expiry", query.secret_id);
        if let Err(e) =
            self.single_flight(query, None, || self.revalidate(query, body, &version_id))
        {
            log::warn!("background refresh of {} failed: {e}", query.secret_id);
        }
        self.refresh_done(query);
    }

    /// A refresh-ahead ended (or was dropped): if it did not restart the TTL,
    /// the entry expires normally and the next read revalidates it.
    fn refresh_done(&self, query: &SecretQuery) {
        if let Some(entry) = lock(&self.entries).get_mut(query) {
            entry.refresh_queued = false;
        }
    }

    fn fetch_and_store(&self, query: &SecretQuery) -> Served {
        let value = self.upstream.get_secret_value(query)?;
        let body: Body = Arc::new(value.body);
        let mut entries = lock(&self.entries);
        if !entries.contains_key(query) && entries.len() >= self.settings.capacity {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            Box::new(query.clone()),
            Box::new(Entry::new(
                body.clone(),
                value.version_id,
                self.settings.ttl,
            )),
        );
        Ok(body)
    }

    fn restart_ttl(&self, query: &SecretQuery, version_id: &str) {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(query) {
            if entry.version_id == version_id {
                entry.restart(self.settings.ttl);
            }
        }
    }
}

struct Publish<'a, U: Upstream> {
    cache: &'a Shared<U>,
    query: &'a SecretQuery,
    flight: &'a Flight,
    result: Served,
}

impl<U: Upstream> Drop for Publish<'_, U> {
    fn drop(&mut self) {
        lock(&self.cache.flights).remove(self.query);
        *lock(&self.flight.result) = Some(self.result.clone());
        self.flight.done.notify_all();
    }
}

/// Whether the version cached for `query` is still what GetSecretValue would return.
fn still_answers(description: &Description, query: &SecretQuery, cached_version: &str) -> bool {
    let Some(versions) = &description.version_ids_to_stages else {
        return false;
    };
    let has_stage = |version: &str, stage: &str| {
        versions
            .get(version)
            .is_some_and(|stages| stages.iter().any(|s| s == stage))
    };
    match (&query.version_id, &query.version_stage) {
        (Some(id), None) => versions.contains_key(id),
        (Some(id), Some(stage)) => has_stage(id, stage),
        (None, stage) => has_stage(cached_version, stage.as_deref().unwrap_or(CURRENT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scripted upstream: the current version and value, call counters, and a
    /// switch that makes every call fail transiently.
    #[derive(Default)]
    struct Fake {
        version: Mutex<(String, String)>,
        gets: AtomicUsize,
        describes: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
        delay: Duration,
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
        fn fail_if_down(&self) -> Result<(), UpstreamError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(UpstreamError::Timeout);
            }
            Ok(())
        }
    }

    impl Upstream for Fake {
        fn get_secret_value(&self, _: &SecretQuery) -> Result<SecretValue, UpstreamError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            self.fail_if_down()?;
            let (version, value) = lock(&self.version).clone();
            Ok(SecretValue {
                body: SecretBytes::new(value.into_bytes()),
                version_id: version,
            })
        }
        fn describe_secret(&self, _: &str) -> Result<Description, UpstreamError> {
            self.describes.fetch_add(1, Ordering::SeqCst);
            self.fail_if_down()?;
            let (version, _) = lock(&self.version).clone();
            Ok(Description {
                version_ids_to_stages: Some(HashMap::from([(version, vec![CURRENT.into()])])),
            })
        }
    }

    fn query(id: &str) -> SecretQuery {
        SecretQuery {
            secret_id: id.into(),
            version_id: None,
            version_stage: None,
        }
    }

    fn settings(ttl_ms: u64) -> Settings {
        Settings {
            ttl: Duration::from_millis(ttl_ms),
            capacity: 2,
            ignore_transient_errors: true,
        }
    }

    fn text(served: Served) -> String {
        String::from_utf8(served.unwrap().to_vec()).unwrap()
    }

    #[test]
    fn fresh_hits_do_not_call_upstream() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(60_000));
        assert_eq!(text(cache.get(&query("a"), false)), "one");
        assert_eq!(text(cache.get(&query("a"), false)), "one");
        assert_eq!(cache.shared.upstream.gets.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn expired_entries_revalidate_with_describe() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(20));
        cache.get(&query("a"), false).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(text(cache.get(&query("a"), false)), "one");
        assert_eq!(cache.shared.upstream.gets.load(Ordering::SeqCst), 1);
        assert_eq!(cache.shared.upstream.describes.load(Ordering::SeqCst), 1);

        cache.shared.upstream.set("v2", "two");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(text(cache.get(&query("a"), false)), "two");
        assert_eq!(cache.shared.upstream.gets.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn transient_errors_serve_stale_only_when_allowed() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(10));
        cache.get(&query("a"), false).unwrap();
        cache.shared.upstream.down.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(text(cache.get(&query("a"), false)), "one");

        let strict = Settings {
            ignore_transient_errors: false,
            ..settings(10)
        };
        let cache = Cache::new(Fake::new("v1", "one"), strict);
        cache.get(&query("a"), false).unwrap();
        cache.shared.upstream.down.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            cache.get(&query("a"), false).err(),
            Some(UpstreamError::Timeout)
        );
    }

    #[test]
    fn refresh_now_failure_keeps_the_cache() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(60_000));
        cache.get(&query("a"), false).unwrap();
        cache.shared.upstream.down.store(true, Ordering::SeqCst);
        assert!(cache.get(&query("a"), true).is_err());
        cache.shared.upstream.down.store(false, Ordering::SeqCst);
        assert_eq!(text(cache.get(&query("a"), false)), "one");
        cache.shared.upstream.set("v2", "two");
        assert_eq!(text(cache.get(&query("a"), true)), "two");
        assert_eq!(text(cache.get(&query("a"), false)), "two");
    }

    #[test]
    fn ttl_zero_keeps_nothing_and_capacity_bounds() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(0));
        cache.get(&query("a"), false).unwrap();
        cache.get(&query("a"), false).unwrap();
        assert_eq!(cache.shared.upstream.gets.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 0);

        let cache = Cache::new(Fake::new("v1", "one"), settings(60_000));
        for id in ["a", "b", "c", "a"] {
            cache.get(&query(id), false).unwrap();
        }
        assert_eq!(cache.len(), 2);
        // "a" was the least recently used when "c" arrived, so it was fetched again.
        assert_eq!(cache.shared.upstream.gets.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn concurrent_misses_make_one_call() {
        let fake = Fake {
            delay: Duration::from_millis(200),
            ..Fake::new("v1", "one")
        };
        let cache = Arc::new(Cache::new(fake, settings(60_000)));
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || text(cache.get(&query("a"), false)))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), "one");
        }
        assert_eq!(cache.shared.upstream.gets.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn reads_near_expiry_refresh_in_the_background() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(400));
        cache.get(&query("a"), false).unwrap();
        // Inside the last 10-20 % of the TTL: served at once, refreshed behind.
        std::thread::sleep(Duration::from_millis(370));
        assert_eq!(text(cache.get(&query("a"), false)), "one");
        let describes = || cache.shared.upstream.describes.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while describes() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(describes(), 1);
        // The TTL restarted: past the first expiry it is still a plain hit.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(text(cache.get(&query("a"), false)), "one");
        assert_eq!(cache.shared.upstream.gets.load(Ordering::SeqCst), 1);
        assert_eq!(describes(), 1);
    }

    #[test]
    fn readers_during_a_revalidation_get_the_expired_value() {
        let fake = Fake {
            delay: Duration::from_millis(300),
            ..Fake::new("v1", "one")
        };
        let cache = Arc::new(Cache::new(fake, settings(100)));
        assert_eq!(text(cache.get(&query("a"), false)), "one");
        std::thread::sleep(Duration::from_millis(120));
        cache.shared.upstream.set("v2", "two");
        let leader = {
            let cache = cache.clone();
            std::thread::spawn(move || text(cache.get(&query("a"), false)))
        };
        // Wait until the leader is inside GetSecretValue.
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.shared.upstream.gets.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            text(cache.get(&query("a"), false)),
            "one",
            "follower: no wait"
        );
        assert_eq!(
            leader.join().unwrap(),
            "two",
            "the leader waits for the new value"
        );
        assert_eq!(text(cache.get(&query("a"), false)), "two");
    }

    #[test]
    fn unread_entries_are_not_refreshed() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(100));
        cache.get(&query("a"), false).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(cache.shared.upstream.describes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn wipe_empties_the_cache() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(60_000));
        cache.get(&query("a"), false).unwrap();
        cache.wipe();
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn version_requests_check_existence_and_stage() {
        let versions = HashMap::from([
            ("v1".to_string(), vec!["AWSPREVIOUS".to_string()]),
            ("v2".to_string(), vec![CURRENT.to_string()]),
        ]);
        let d = Description {
            version_ids_to_stages: Some(versions),
        };
        let q = |id: Option<&str>, stage: Option<&str>| SecretQuery {
            secret_id: "s".into(),
            version_id: id.map(Into::into),
            version_stage: stage.map(Into::into),
        };
        assert!(still_answers(&d, &q(Some("v1"), None), "v1"));
        assert!(!still_answers(&d, &q(Some("v3"), None), "v3"));
        assert!(still_answers(&d, &q(None, Some("AWSPREVIOUS")), "v1"));
        assert!(!still_answers(&d, &q(None, None), "v1"));
        assert!(still_answers(&d, &q(None, None), "v2"));
        assert!(!still_answers(&d, &q(Some("v1"), Some(CURRENT)), "v1"));
    }
}
