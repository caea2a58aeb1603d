//! The secret cache: fresh entries served from memory, expired ones revalidated
//! with DescribeSecret, and concurrent misses for one key coalesced into a
//! single upstream call.
//!
//! No lock is held while talking to AWS, so a slow call for one secret never
//! delays a hit on another.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::aws::secrets_manager::Description;
use crate::aws::{SecretQuery, SecretValue, SecretsManager, UpstreamError};
use crate::sync::lock;

/// The stage a request without `versionId`/`versionStage` asks for.
const CURRENT: &str = "AWSCURRENT";

/// A rendered response body, shared by the cache and every writer of it.
pub type Body = Arc<[u8]>;
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
    upstream: U,
    settings: Settings,
    entries: Mutex<HashMap<SecretQuery, Entry>>,
    flights: Mutex<HashMap<SecretQuery, Arc<Flight>>>,
}

struct Entry {
    body: Body,
    version_id: String,
    fresh_until: Instant,
    last_used: Instant,
}

/// One upstream call in progress; followers wait on it for the leader's result.
#[derive(Default)]
struct Flight {
    result: Mutex<Option<Served>>,
    done: Condvar,
}

/// What a lookup found.
enum Lookup {
    Fresh(Body),
    Expired { body: Body, version_id: String },
    Missing,
}

impl<U: Upstream> Cache<U> {
    pub fn new(upstream: U, settings: Settings) -> Cache<U> {
        Cache {
            upstream,
            settings,
            entries: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// Answers a client's request: from memory when fresh, else from AWS.
    /// `refresh_now` always asks GetSecretValue and leaves the cache as it was
    /// on failure.
    pub fn get(&self, query: &SecretQuery, refresh_now: bool) -> Served {
        if self.settings.ttl.is_zero() {
            return self.upstream.get_secret_value(query).map(|v| v.body.into());
        }
        if refresh_now {
            return self.fetch_and_store(query);
        }
        match self.lookup(query) {
            Lookup::Fresh(body) => Ok(body),
            Lookup::Missing => self.single_flight(query, || self.fetch_and_store(query)),
            Lookup::Expired { body, version_id } => {
                self.single_flight(query, || self.revalidate(query, body, &version_id))
            }
        }
    }

    fn lookup(&self, query: &SecretQuery) -> Lookup {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        match entries.get_mut(query) {
            Some(entry) if now < entry.fresh_until => {
                entry.last_used = now;
                Lookup::Fresh(entry.body.clone())
            }
            Some(entry) => Lookup::Expired {
                body: entry.body.clone(),
                version_id: entry.version_id.clone(),
            },
            None => Lookup::Missing,
        }
    }

    /// Runs `work` once for all concurrent callers with the same key.
    fn single_flight(&self, query: &SecretQuery, work: impl FnOnce() -> Served) -> Served {
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

    fn fetch_and_store(&self, query: &SecretQuery) -> Served {
        let value = self.upstream.get_secret_value(query)?;
        let body: Body = value.body.into();
        let now = Instant::now();
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
            query.clone(),
            Entry {
                body: body.clone(),
                version_id: value.version_id,
                fresh_until: now + self.settings.ttl,
                last_used: now,
            },
        );
        Ok(body)
    }

    fn restart_ttl(&self, query: &SecretQuery, version_id: &str) {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(query) {
            if entry.version_id == version_id {
                entry.fresh_until = Instant::now() + self.settings.ttl;
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.entries).len()
    }
}

struct Publish<'a, U: Upstream> {
    cache: &'a Cache<U>,
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
                body: value.into_bytes(),
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
        assert_eq!(cache.upstream.gets.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn expired_entries_revalidate_with_describe() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(20));
        cache.get(&query("a"), false).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(text(cache.get(&query("a"), false)), "one");
        assert_eq!(cache.upstream.gets.load(Ordering::SeqCst), 1);
        assert_eq!(cache.upstream.describes.load(Ordering::SeqCst), 1);

        cache.upstream.set("v2", "two");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(text(cache.get(&query("a"), false)), "two");
        assert_eq!(cache.upstream.gets.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn transient_errors_serve_stale_only_when_allowed() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(10));
        cache.get(&query("a"), false).unwrap();
        cache.upstream.down.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(text(cache.get(&query("a"), false)), "one");

        let strict = Settings {
            ignore_transient_errors: false,
            ..settings(10)
        };
        let cache = Cache::new(Fake::new("v1", "one"), strict);
        cache.get(&query("a"), false).unwrap();
        cache.upstream.down.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(cache.get(&query("a"), false), Err(UpstreamError::Timeout));
    }

    #[test]
    fn refresh_now_failure_keeps_the_cache() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(60_000));
        cache.get(&query("a"), false).unwrap();
        cache.upstream.down.store(true, Ordering::SeqCst);
        assert!(cache.get(&query("a"), true).is_err());
        cache.upstream.down.store(false, Ordering::SeqCst);
        assert_eq!(text(cache.get(&query("a"), false)), "one");
        cache.upstream.set("v2", "two");
        assert_eq!(text(cache.get(&query("a"), true)), "two");
        assert_eq!(text(cache.get(&query("a"), false)), "two");
    }

    #[test]
    fn ttl_zero_keeps_nothing_and_capacity_bounds() {
        let cache = Cache::new(Fake::new("v1", "one"), settings(0));
        cache.get(&query("a"), false).unwrap();
        cache.get(&query("a"), false).unwrap();
        assert_eq!(cache.upstream.gets.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 0);

        let cache = Cache::new(Fake::new("v1", "one"), settings(60_000));
        for id in ["a", "b", "c", "a"] {
            cache.get(&query(id), false).unwrap();
        }
        assert_eq!(cache.len(), 2);
        // "a" was the least recently used when "c" arrived, so it was fetched again.
        assert_eq!(cache.upstream.gets.load(Ordering::SeqCst), 4);
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
        assert_eq!(cache.upstream.gets.load(Ordering::SeqCst), 1);
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
