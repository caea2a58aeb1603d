//! What the cache's unit tests share: a scripted upstream ([`Fake`]) that
//! counts its calls, can fail or hold them, and answers batch calls; a cache
//! on a test clock with accessors for its state; and small helpers. Each
//! module's tests sit beside its code and draw on these.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{Cache, Key, Served, Settings, Upstream};
use secrets_manager_agent_aws::{ReadCall, SecretQuery, SecretValue, UpstreamError};
use secrets_manager_agent_core::clock::{Clock, TestClock};
use secrets_manager_agent_core::secret::SecretBytes;
use secrets_manager_agent_core::sync::lock;

/// A scripted upstream: the current version and value, call counters,
/// switches that make calls fail, and a gate that holds GetSecretValue
/// "in flight" for as long as a test needs. A read call passed through
/// (`Key::Call`) is a GetSecretValue to it, and it is never revalidated, as
/// with `Clients`.
#[derive(Default)]
pub(crate) struct Fake {
    pub(crate) version: Mutex<(String, String)>,
    pub(crate) gets: AtomicUsize,
    pub(crate) describes: AtomicUsize,
    /// Every call fails transiently.
    pub(crate) down: AtomicBool,
    /// The metadata call is not allowed (a non-transient error).
    pub(crate) denied: AtomicBool,
    pub(crate) held: Mutex<bool>,
    pub(crate) released: Condvar,
    /// The role of every GetSecretValue key, in order.
    pub(crate) roles: Mutex<Vec<Option<String>>>,
    /// Keys a batch call takes (0: no batch call).
    pub(crate) batch: usize,
    /// The secret IDs of each batch call, in order.
    pub(crate) batches: Mutex<Vec<Vec<String>>>,
    /// The batch call itself is not allowed.
    pub(crate) batch_denied: AtomicBool,
    /// The batch call is throttled.
    pub(crate) batch_throttled: AtomicBool,
    /// Secret IDs a batch answer leaves out.
    pub(crate) batch_skips: Mutex<Vec<String>>,
}

impl Fake {
    pub(crate) fn new(version: &str, value: &str) -> Fake {
        let fake = Fake::default();
        fake.set(version, value);
        fake
    }
    pub(crate) fn set(&self, version: &str, value: &str) {
        *lock(&self.version) = (version.into(), value.into());
    }
    pub(crate) fn hold(&self) {
        *lock(&self.held) = true;
    }
    pub(crate) fn release(&self) {
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
    fn still_current(&self, key: &Key, cached_version: &str) -> Result<bool, UpstreamError> {
        // As `Clients` answers for a call passed through: no metadata call,
        // read it again.
        if let Key::Call { .. } = key {
            return Ok(false);
        }
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
        Key::Call { input, .. } => input,
    }
}

pub(crate) fn key(id: &str) -> Key {
    Key::secret(SecretQuery {
        secret_id: id.into(),
        version_id: None,
        version_stage: None,
    })
}

pub(crate) fn role_key(id: &str, role: &str) -> Key {
    Key::Secret {
        query: SecretQuery {
            secret_id: id.into(),
            version_id: None,
            version_stage: None,
        },
        role: Some(role.into()),
    }
}

/// A read call passed through, with the agent's own credentials.
pub(crate) fn call_key(call: ReadCall, input: &str) -> Key {
    Key::Call {
        call,
        input: input.into(),
        role: None,
    }
}

pub(crate) const TTL: Duration = Duration::from_secs(300);

pub(crate) fn settings(ttl: Duration) -> Settings {
    Settings {
        ttl,
        capacity: 2,
        ignore_transient_errors: true,
        refresh_batch: 1,
        parameter_ttl: ttl,
    }
}

pub(crate) fn test_cache(fake: Fake, settings: Settings) -> Cache<Fake, TestClock> {
    Cache::with_clock(fake, settings, TestClock::default())
}

impl Cache<Fake, TestClock> {
    pub(crate) fn advance(&self, by: Duration) {
        self.shared.clock.advance(by);
    }
    pub(crate) fn gets(&self) -> usize {
        self.shared.upstream.gets.load(Ordering::SeqCst)
    }
    pub(crate) fn describes(&self) -> usize {
        self.shared.upstream.describes.load(Ordering::SeqCst)
    }
    pub(crate) fn refreshers_started(&self) -> bool {
        self.refresh.get().is_some()
    }
    /// Whether a refresh-ahead of `key` is queued or running.
    pub(crate) fn refreshing(&self, key: &Key) -> bool {
        lock(&self.shared.entries)
            .get(key)
            .is_some_and(|e| e.refresh_queued)
    }
    /// Callers sharing the upstream call for `key` (0 if none runs).
    pub(crate) fn in_flight(&self, key: &Key) -> usize {
        // The table holds one reference; each caller, and the thread
        // calling AWS or the holder, one more.
        lock(&self.shared.flights)
            .get(key)
            .map_or(0, |f| Arc::strong_count(f) - 1)
    }
}

/// Waits for a background thread to make `done` true; false if it does
/// not within a generous bound (a failure, not a timing assumption).
pub(crate) fn eventually(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

pub(crate) fn text(served: Served) -> String {
    String::from_utf8(served.unwrap().to_vec()).unwrap()
}

pub(crate) fn value(version: &str, body: &str) -> SecretValue {
    SecretValue {
        body: SecretBytes::new(body.as_bytes().to_vec()),
        version_id: version.into(),
    }
}

pub(crate) fn batch_cache(refresh_batch: usize) -> Cache<Fake, TestClock> {
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
    pub(crate) fn read(&self, keys: &[Key]) {
        for key in keys {
            self.get(key, false).unwrap();
        }
    }
    /// The secret IDs of each batch call so far, sorted within a call.
    pub(crate) fn batches(&self) -> Vec<Vec<String>> {
        let mut batches = lock(&self.shared.upstream.batches).clone();
        for batch in &mut batches {
            batch.sort();
        }
        batches
    }
    /// No refresh queued or running.
    pub(crate) fn idle(&self) -> bool {
        lock(&self.shared.entries)
            .values()
            .all(|e| !e.refresh_queued)
    }
    /// The keys still fresh now.
    pub(crate) fn fresh(&self) -> usize {
        let now = self.shared.clock.now();
        lock(&self.shared.entries)
            .values()
            .filter(|e| now < e.fresh_until)
            .count()
    }
}

pub(crate) fn keys(ids: &[&str]) -> Vec<Key> {
    ids.iter().map(|id| key(id)).collect()
}
