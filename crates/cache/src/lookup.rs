//! A request's way in: [`Cache`], and the decision each request gets. A
//! fresh entry is a hit, served from memory under one short lock (and, near
//! the end of its TTL, queues a refresh-ahead); a missing or expired one
//! goes to single flight (`flight`): one upstream call for the key, which
//! the request waits on without holding a thread, while later readers of an
//! expired entry get its value at once. `refreshNow`, and a kind whose TTL
//! is 0, make a call of the request's own. Kept apart from the rest so the
//! hit path, the one every steady reader takes, reads in one place.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};

use crate::flight::{Flight, Joined, Waiting};
use crate::key::Key;
use crate::store::{Settings, Shared};
use crate::upstream::{Body, Served, Upstream};
use secrets_manager_agent_core::clock::{Clock, SystemClock};
use secrets_manager_agent_core::metrics::{self, CacheEvent};
use secrets_manager_agent_core::sync::lock;

/// What [`Cache::answer_or_wait`] has for a request.
pub enum Answer {
    /// The answer, and whether it came from memory.
    Now(Served, bool),
    /// Another caller is fetching the key: the answer comes when it ends.
    Later(Waiting),
}

/// The clock is a type parameter, not a trait object, so a hit with the
/// system clock costs no indirect call.
pub struct Cache<U, C: Clock = SystemClock> {
    pub(crate) shared: Arc<Shared<U, C>>,
    /// Keys to refresh ahead of expiry. The refreshers start with the first
    /// refresh (an agent whose secrets are read once never needs them);
    /// `None` if they could not start.
    pub(crate) refresh: OnceLock<Option<SyncSender<Key>>>,
}

impl<U: Upstream + 'static> Cache<U> {
    pub fn new(upstream: U, settings: Settings) -> Cache<U> {
        Cache::with_clock(upstream, settings, SystemClock)
    }
}

impl<U: Upstream + 'static, C: Clock + 'static> Cache<U, C> {
    pub fn with_clock(upstream: U, settings: Settings, clock: C) -> Cache<U, C> {
        Cache {
            shared: Arc::new(Shared::new(upstream, settings, clock)),
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

    /// The upstream the cache fills from (prefetching calls it directly).
    pub fn upstream(&self) -> &U {
        &self.shared.upstream
    }
}

/// What a lookup found.
pub(crate) enum Lookup {
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
    pub(crate) fn lookup(&self, key: &Key) -> Lookup {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;
    use std::time::Duration;

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
}
