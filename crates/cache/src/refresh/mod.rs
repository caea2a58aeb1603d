//! Refresh-ahead: entries read near the end of their TTL are revalidated by
//! background threads, so a steady reader never waits for AWS. A hit only
//! queues the key (a bounded queue, so a burst of due entries never blocks
//! a reader); a few refresher threads take it from there, through the same
//! single flight as requests, and entries due together with it go in one
//! batch call (`batch`).

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::key::Key;
use crate::lookup::Cache;
use crate::store::Shared;
use crate::upstream::Upstream;
use secrets_manager_agent_core::clock::Clock;
use secrets_manager_agent_core::metrics::{self, CacheEvent};
use secrets_manager_agent_core::sync::lock;

mod batch;

/// Background refreshes running at once; more wait in a short queue.
const REFRESHERS: usize = 2;
/// Refreshes waiting for a refresher; beyond this, a refresh is skipped and
/// the entry revalidates on its next read after expiry.
const REFRESH_QUEUE: usize = 64;

impl<U: Upstream + 'static, C: Clock + 'static> Cache<U, C> {
    /// Queues a refresh of `key`, whose lookup marked it queued; starts the
    /// refreshers first if this is the first refresh.
    pub(crate) fn queue_refresh(&self, key: &Key) {
        let refresh = self.refresh.get_or_init(|| start(&self.shared));
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
}

/// Starts the refresher threads; they end when the cache (and so the sender)
/// is dropped. `None` if none could start.
fn start<U: Upstream + 'static, C: Clock + 'static>(
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
        // Counted once done, calls to AWS and the cache's update included:
        // a reader of `/metrics` (a test, too) knows the refresh is over.
        metrics::cache(CacheEvent::Refresh);
        secrets_manager_agent_os::stack::release_unused();
    }
}

impl<U: Upstream, C: Clock> Shared<U, C> {
    /// A refresh of `key`, queued by a read near the end of its TTL, with the
    /// entries due together with it.
    fn refresh_ahead(&self, key: &Key) {
        let batch = self.due_with(key);
        if batch.len() < 2 {
            return self.refresh_one(key);
        }
        for alone in self.refresh_batch(&batch) {
            self.refresh_one(&alone);
        }
    }

    /// The usual revalidation of one entry (metadata call, then the value if
    /// it changed), without anyone waiting for it.
    fn refresh_one(&self, key: &Key) {
        let current = lock(&self.entries)
            .get(key)
            .map(|e| (e.body.clone(), e.version_id.clone()));
        let Some((body, version_id)) = current else {
            return;
        };
        log::debug!("refreshing {key} ahead of expiry");
        let served = match self.single_flight(key, None, |shared, key| {
            shared.revalidate(key, body, &version_id)
        }) {
            Ok((served, _)) => served,
            Err(flight) => flight.wait(),
        };
        if let Err(e) = served {
            log::warn!("background refresh of {key} failed: {e}");
        }
        self.refresh_done(key);
    }

    /// A refresh-ahead ended (or was dropped): if it did not restart the TTL,
    /// the entry expires normally and the next read revalidates it.
    pub(crate) fn refresh_done(&self, key: &Key) {
        if let Some(entry) = lock(&self.entries).get_mut(key) {
            entry.refresh_queued = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use secrets_manager_agent_aws::ReadCall;

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
    fn calls_passed_through_are_made_again_ahead_of_expiry() {
        let cache = test_cache(Fake::new("", "one"), settings(TTL));
        let describe = call_key(ReadCall::DescribeSecret, r#"{"SecretId":"a"}"#);
        cache.get(&describe, false).unwrap();
        cache.shared.upstream.set("", "two");
        cache.advance(TTL.mul_f64(0.95));
        assert_eq!(text(cache.get(&describe, false)), "one", "no wait");
        assert!(eventually(|| !cache.refreshing(&describe)));
        // Made again behind the reader, no revalidation first.
        assert_eq!((cache.gets(), cache.describes()), (2, 0));
        cache.advance(TTL.mul_f64(0.5));
        assert_eq!(text(cache.get(&describe, false)), "two");
        assert_eq!(cache.gets(), 2, "the TTL restarted");
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
}
