//! The cache's state and its one-key operations: the entry table, lookups,
//! single flight (one upstream call for all concurrent callers of a key),
//! revalidation of an expired entry, and storing what a call brought. No lock
//! is held while the upstream is called.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::key::Key;
use super::upstream::{Body, Served, Upstream};
use secrets_manager_agent_aws::{SecretValue, UpstreamError};
use secrets_manager_agent_core::clock::Clock;
use secrets_manager_agent_core::metrics::{self, CacheEvent};
use secrets_manager_agent_core::random;
use secrets_manager_agent_core::sync::lock;

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a secret is served from memory; zero: not cached.
    pub ttl: Duration,
    /// The same for parameters.
    pub parameter_ttl: Duration,
    pub capacity: usize,
    pub ignore_transient_errors: bool,
    /// The most entries one background refresh takes at once (1: each alone).
    pub refresh_batch: usize,
}

impl Settings {
    /// The TTL of `key`'s kind.
    pub fn ttl_of(&self, key: &Key) -> Duration {
        match key {
            Key::Secret { .. } => self.ttl,
            Key::Parameter { .. } => self.parameter_ttl,
        }
    }
}

/// The state the request threads and the refreshers share.
pub(super) struct Shared<U, C> {
    pub(super) upstream: U,
    pub(super) clock: C,
    pub(super) settings: Settings,
    /// Keys and entries boxed: the table keeps about twice as many slots as
    /// entries, and a slot of two pointers instead of ~240 bytes cut the
    /// memory of 1,000 cached secrets by a third.
    pub(super) entries: Mutex<HashMap<Box<Key>, Box<Entry>>>,
    pub(super) flights: Mutex<HashMap<Key, Arc<Flight>>>,
    /// Roles whose entries refresh one by one (`refresh`): the batch call was
    /// refused (no end), or throttled (until the instant given).
    pub(super) batch_paused: Mutex<Vec<(Option<String>, Option<Instant>)>>,
}

pub(super) struct Entry {
    pub(super) body: Body,
    pub(super) version_id: String,
    pub(super) fresh_until: Instant,
    /// Reads from here on queue a background refresh (jittered per entry, so a
    /// fleet of agents does not call AWS in lockstep).
    pub(super) refresh_after: Instant,
    pub(super) refresh_queued: bool,
    pub(super) last_used: Instant,
}

impl Entry {
    pub(super) fn new(body: Body, version_id: String, ttl: Duration, now: Instant) -> Entry {
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
    pub(super) fn restart(&mut self, ttl: Duration, now: Instant) {
        self.fresh_until = now + ttl;
        self.refresh_after = self.fresh_until - ttl.mul_f64(0.1 + 0.1 * random::unit());
        self.refresh_queued = false;
    }
}

/// One upstream call in progress; followers wait on it for the leader's
/// result: a thread on the condition variable, or a parked request through
/// a [`Wake`] (which holds no thread while it waits).
#[derive(Default)]
pub(super) struct Flight {
    landing: Mutex<Landing>,
    done: Condvar,
}

#[derive(Default)]
struct Landing {
    result: Option<Served>,
    wakes: Vec<Wake>,
}

/// Called once, when a flight's result is there.
pub type Wake = Box<dyn FnOnce() + Send>;

impl Flight {
    /// Hands `result` to every follower. Threads blocked in [`Flight::wait`]
    /// are let go first and may return before the wakes have run; the
    /// caller (the leader) returns only after every wake has.
    pub(super) fn publish(&self, result: Served) {
        let wakes = {
            let mut landing = lock(&self.landing);
            landing.result = Some(result);
            std::mem::take(&mut landing.wakes)
        };
        self.done.notify_all();
        // Outside the lock: a wake arms a connection, which takes the
        // server's locks.
        for wake in wakes {
            wake();
        }
    }

    /// The result, once there (the calling thread waits for it).
    pub(super) fn wait(&self) -> Served {
        let mut landing = lock(&self.landing);
        loop {
            if let Some(served) = landing.result.as_ref() {
                return served.clone();
            }
            landing = self
                .done
                .wait(landing)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Calls `wake` once the result is there: now, if it is.
    pub(super) fn when_done(&self, wake: Wake) {
        let mut landing = lock(&self.landing);
        if landing.result.is_none() {
            landing.wakes.push(wake);
            return;
        }
        drop(landing);
        wake();
    }
}

/// What a lookup found.
pub(super) enum Lookup {
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

impl<U: Upstream, C: Clock> Shared<U, C> {
    pub(super) fn lookup(&self, key: &Key) -> Lookup {
        let now = self.clock.now();
        let mut entries = lock(&self.entries);
        match entries.get_mut(key) {
            // While a refresh-ahead is queued or running, the entry keeps
            // answering for up to one more TTL: readers do not wait for it.
            Some(entry)
                if now < entry.fresh_until
                    || (entry.refresh_queued
                        && now < entry.fresh_until + self.settings.ttl_of(key)) =>
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
                recent: now < entry.fresh_until + self.settings.ttl_of(key),
            },
            None => Lookup::Missing,
        }
    }

    /// Joins the flight for `key`, or starts one. A caller that finds one
    /// under way gets `stale` at once if there is one, else the flight to
    /// wait on; the first caller leads, and must land the result
    /// ([`Shared::lead`]).
    pub(super) fn join(&self, key: &Key, stale: Option<Body>) -> Joined {
        let mut flights = lock(&self.flights);
        if let Some(flight) = flights.get(key) {
            return match stale {
                Some(stale) => {
                    metrics::cache(CacheEvent::Stale);
                    Joined::Stale(stale)
                }
                None => Joined::Follow(flight.clone()),
            };
        }
        let flight = Arc::new(Flight::default());
        flights.insert(key.clone(), flight.clone());
        Joined::Lead(flight)
    }

    /// Runs a flight's `work` and hands its result to the followers, even
    /// if `work` panics, so that they never wait forever. `listed`: the
    /// flight is in the table under `key` (a request's own call, such as
    /// `refreshNow`, is not), and leaves it as it lands.
    pub(super) fn lead(
        &self,
        key: &Key,
        listed: bool,
        flight: &Flight,
        work: impl FnOnce(&Self, &Key) -> Served,
    ) -> Served {
        let mut publish = Publish {
            cache: self,
            key: listed.then_some(key),
            flight,
            result: Err(UpstreamError::Internal("secret fetch panicked".into())),
        };
        publish.result = work(self, key);
        publish.result.clone()
    }

    /// Runs `work` once for all concurrent callers with the same key, on
    /// the first caller's thread. A caller that finds the work already
    /// running gets `stale` at once if there is one (and `true` with it),
    /// else the flight to wait on.
    pub(super) fn single_flight(
        &self,
        key: &Key,
        stale: Option<Body>,
        work: impl FnOnce(&Self, &Key) -> Served,
    ) -> Result<(Served, bool), Arc<Flight>> {
        match self.join(key, stale) {
            Joined::Stale(stale) => Ok((Ok(stale), true)),
            Joined::Follow(flight) => Err(flight),
            Joined::Lead(flight) => Ok((self.lead(key, true, &flight, work), false)),
        }
    }

    /// An expired entry: keep it if the upstream says the cached version
    /// still answers the request, else fetch the value again.
    pub(super) fn revalidate(&self, key: &Key, stale: Body, version_id: &str) -> Served {
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

    pub(super) fn fetch_and_store(&self, key: &Key) -> Served {
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

    /// A value read for an entry outside a request (a batch refresh): it
    /// replaces the entry, with a new TTL, if the entry still holds
    /// `version` (a request may have stored a newer one meanwhile). True if
    /// replaced.
    pub(super) fn replace(&self, key: &Key, version: &str, value: SecretValue) -> bool {
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

    pub(super) fn restart_ttl(&self, key: &Key, version_id: &str) {
        let now = self.clock.now();
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(key) {
            if entry.version_id == version_id {
                entry.restart(self.settings.ttl_of(key), now);
            }
        }
    }
}

/// Keys held by [`Cache::hold`]; released on drop.
pub struct Held<'a, U: Upstream, C: Clock> {
    pub(super) shared: &'a Shared<U, C>,
    pub(super) flights: Vec<(Key, Arc<Flight>)>,
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
            flight.publish(result);
        }
    }
}

/// What a caller found with [`Shared::join`].
pub(super) enum Joined {
    /// A flight is under way, and the expired answer may be given meanwhile.
    Stale(Body),
    /// A flight is under way: the one to wait on.
    Follow(Arc<Flight>),
    /// None was: the caller's, now in the table, to lead.
    Lead(Arc<Flight>),
}

struct Publish<'a, U: Upstream, C: Clock> {
    cache: &'a Shared<U, C>,
    /// The flight's key in the table, if it is there.
    key: Option<&'a Key>,
    flight: &'a Flight,
    result: Served,
}

impl<U: Upstream, C: Clock> Drop for Publish<'_, U, C> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            lock(&self.cache.flights).remove(key);
        }
        self.flight.publish(self.result.clone());
    }
}
