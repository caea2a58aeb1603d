//! Single flight: one upstream call for all concurrent callers of a key. The
//! first caller leads (a request's call runs on a thread of its own, so a
//! server's worker never waits for AWS); the others follow, waiting for the
//! leader's result on a condition variable or, holding no thread, through a
//! [`Wake`].
//! The flight lands even if the call panics, so no follower waits forever.
//! Prefetching holds flights for keys it is about to fetch in a batch
//! ([`Held`]), so a request for one of them waits for the batch instead of
//! calling AWS itself.
//!
//! A flight lives in the table of flights only while its call runs; no lock
//! is held during the call.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::key::Key;
use crate::lookup::Cache;
use crate::store::Shared;
use crate::upstream::{Body, Served, Upstream};
use secrets_manager_agent_aws::UpstreamError;
use secrets_manager_agent_core::clock::Clock;
use secrets_manager_agent_core::metrics::{self, CacheEvent};
use secrets_manager_agent_core::sync::lock;

impl<U: Upstream + 'static, C: Clock + 'static> Cache<U, C> {
    /// Joins the flight for `key` ([`Shared::join`]); one this caller
    /// leads runs `work` on a thread of its own.
    pub(crate) fn join_aside(
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
    pub(crate) fn lead_aside(
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
}

/// What a caller found with [`Shared::join`].
pub(crate) enum Joined {
    /// A flight is under way, and the expired answer may be given meanwhile.
    Stale(Body),
    /// A flight is under way: the one to wait on.
    Follow(Arc<Flight>),
    /// None was: the caller's, now in the table, to lead.
    Lead(Arc<Flight>),
}

impl<U: Upstream, C: Clock> Shared<U, C> {
    /// Joins the flight for `key`, or starts one. A caller that finds one
    /// under way gets `stale` at once if there is one, else the flight to
    /// wait on; the first caller leads, and must land the result
    /// ([`Shared::lead`]).
    pub(crate) fn join(&self, key: &Key, stale: Option<Body>) -> Joined {
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
    pub(crate) fn lead(
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
    pub(crate) fn single_flight(
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
}

/// Lands a flight when [`Shared::lead`] ends, by return or by panic.
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

/// One upstream call in progress; followers wait on it for the leader's
/// result: a thread on the condition variable, or a parked request through
/// a [`Wake`] (which holds no thread while it waits).
#[derive(Default)]
pub(crate) struct Flight {
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
    pub(crate) fn publish(&self, result: Served) {
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
    pub(crate) fn wait(&self) -> Served {
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
    pub(crate) fn when_done(&self, wake: Wake) {
        let mut landing = lock(&self.landing);
        if landing.result.is_none() {
            landing.wakes.push(wake);
            return;
        }
        drop(landing);
        wake();
    }
}

/// A request's place behind another caller's upstream call for its key.
#[derive(Clone)]
pub struct Waiting(pub(crate) Arc<Flight>);

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

impl<U: Upstream + 'static, C: Clock + 'static> Cache<U, C> {
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
            flight.publish(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use crate::Answer;
    use secrets_manager_agent_aws::ReadCall;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

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
    fn concurrent_calls_passed_through_make_one_call() {
        let fake = Fake::new("", "answer");
        fake.hold();
        let cache = Arc::new(test_cache(fake, settings(TTL)));
        let call = || {
            call_key(
                ReadCall::GetParametersByPath,
                r#"{"Path":"/app","Recursive":true}"#,
            )
        };
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || text(cache.get(&call(), false)))
            })
            .collect();
        let joined = eventually(|| cache.in_flight(&call()) == 11);
        cache.shared.upstream.release();
        assert!(joined, "{} callers in flight", cache.in_flight(&call()));
        for t in threads {
            assert_eq!(t.join().unwrap(), "answer");
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
}
