//! The credential cache in front of the chain: refresh ahead of expiry, one
//! refresher at a time, and "static stability" when a source goes down.
//!
//! Credentials with an expiry are refreshed a few minutes before it (jittered,
//! so a fleet does not call IMDS in lockstep). While one thread refreshes, the
//! others keep using the current credentials if they are still valid. When the
//! refresh fails after expiry, the last credentials stay in use for a bounded
//! grace period, as the AWS SDKs do, and the source is retried at most every
//! few seconds. The time comes from a [`Clock`] parameter, so the tests step
//! across expiries instead of sleeping.

use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, SystemTime};

use crate::identity::{Credentials, CredentialsError, ProvideCredentials};
use secrets_manager_agent_core::clock::{Clock, SystemClock};
use secrets_manager_agent_core::env;
use secrets_manager_agent_core::metrics;
use secrets_manager_agent_core::sync::lock;

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long expired credentials stay in use while the source is down.
    pub grace: Duration,
    /// How often a failing source is asked again.
    pub retry_every: Duration,
}

impl Timing {
    /// Defaults, overridable by `SMA_CREDENTIALS_GRACE_SECS` (0 to 1 day) and
    /// `SMA_CREDENTIALS_RETRY_SECS` (1 s to 1 hour).
    pub fn from_env() -> Result<Timing, env::InvalidVar> {
        let secs = |name, default, range| {
            env::number_in(env::var, name, default, range, "seconds").map(Duration::from_secs)
        };
        Ok(Timing {
            grace: secs("SMA_CREDENTIALS_GRACE_SECS", 900, 0..=86_400)?,
            retry_every: secs("SMA_CREDENTIALS_RETRY_SECS", 10, 1..=3_600)?,
        })
    }
}

pub struct Refreshing<P, C: Clock = SystemClock> {
    source: P,
    clock: C,
    timing: Timing,
    state: Mutex<State>,
    /// Held by the one thread that is asking the source.
    refreshing: Mutex<()>,
}

#[derive(Default)]
struct State {
    current: Option<Arc<Credentials>>,
    /// When to ask the source again; `None` for credentials that never expire.
    refresh_at: Option<SystemTime>,
    /// End of the static-stability grace, once the current ones have expired.
    grace_until: Option<SystemTime>,
    last_failure: Option<(SystemTime, CredentialsError)>,
}

impl<P: ProvideCredentials> Refreshing<P> {
    pub fn new(source: P, timing: Timing) -> Refreshing<P> {
        Refreshing::with_clock(source, timing, SystemClock)
    }
}

impl<P: ProvideCredentials, C: Clock> Refreshing<P, C> {
    pub fn with_clock(source: P, timing: Timing, clock: C) -> Refreshing<P, C> {
        Refreshing {
            source,
            clock,
            timing,
            state: Mutex::new(State::default()),
            refreshing: Mutex::new(()),
        }
    }

    /// What the state answers without asking the source: `None` means ask.
    fn cached(&self, now: SystemTime) -> Option<Result<Arc<Credentials>, CredentialsError>> {
        let mut state = lock(&self.state);
        if let Some(current) = &state.current {
            if state.refresh_at.is_none_or(|t| now < t) {
                return Some(Ok(current.clone()));
            }
        }
        match &state.last_failure {
            Some((at, e)) if now < *at + self.timing.retry_every => {
                let e = e.clone();
                Some(self.fall_back(&mut state, now, e))
            }
            _ => None,
        }
    }

    /// After a failed refresh: the current credentials while they (or the
    /// grace after them) last, else the error.
    fn fall_back(
        &self,
        state: &mut State,
        now: SystemTime,
        error: CredentialsError,
    ) -> Result<Arc<Credentials>, CredentialsError> {
        let Some(current) = state.current.clone() else {
            return Err(error);
        };
        match current.expiry {
            Some(expiry) if now >= expiry => {
                let grace_until = *state.grace_until.get_or_insert_with(|| {
                    log::warn!(
                        "static stability: credentials from {} expired at {} and cannot be refreshed ({error}); using them for up to {} s more",
                        current.source,
                        secrets_manager_agent_core::iso8601::format(expiry),
                        self.timing.grace.as_secs()
                    );
                    now + self.timing.grace
                });
                if now < grace_until {
                    Ok(current)
                } else {
                    Err(error)
                }
            }
            _ => Ok(current),
        }
    }
}

impl<P: ProvideCredentials, C: Clock> ProvideCredentials for Refreshing<P, C> {
    /// Asks the source again unless it failed within `retry_every`; what it
    /// answers replaces the held set as a scheduled refresh would.
    fn refresh(&self) -> Result<Arc<Credentials>, CredentialsError> {
        {
            let mut state = lock(&self.state);
            if state.current.is_some() {
                state.refresh_at = Some(SystemTime::UNIX_EPOCH);
            }
        }
        self.credentials()
    }

    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        if let Some(answer) = self.cached(self.clock.wall()) {
            return answer;
        }
        let _refreshing = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                // Someone else is asking the source: use what we have if it is
                // still valid, else wait for their answer.
                {
                    let state = lock(&self.state);
                    if let Some(current) = &state.current {
                        if current.expiry.is_none_or(|e| self.clock.wall() < e) {
                            return Ok(current.clone());
                        }
                    }
                }
                let guard = lock(&self.refreshing);
                if let Some(answer) = self.cached(self.clock.wall()) {
                    return answer;
                }
                guard
            }
        };
        let fetched = self.source.credentials();
        match &fetched {
            Ok(creds) => metrics::credentials(&creds.source, true),
            // The source that ended the chain (the last one tried).
            Err(e) => metrics::credentials(e.tried.last().map_or("none", |(s, _)| s), false),
        }
        let now = self.clock.wall();
        let mut state = lock(&self.state);
        match fetched {
            Ok(creds) => {
                if let Some(expiry) = creds.expiry {
                    log::info!(
                        "credentials from {} (key {}), valid until {}",
                        creds.source,
                        creds.access_key_id,
                        secrets_manager_agent_core::iso8601::format(expiry)
                    );
                } else if state.current.is_none() {
                    log::info!(
                        "credentials from {} (key {})",
                        creds.source,
                        creds.access_key_id
                    );
                }
                state.refresh_at = creds.expiry.map(|e| match e > now {
                    true => refresh_time(now, e),
                    // Already expired when handed out (IMDS does this during
                    // outages): ask again, but not on every request.
                    false => now + self.timing.retry_every,
                });
                state.current = Some(creds.clone());
                state.grace_until = None;
                state.last_failure = None;
                Ok(creds)
            }
            Err(error) => {
                if state.current.is_some() {
                    log::warn!("refreshing credentials failed: {error}");
                }
                state.last_failure = Some((now, error.clone()));
                self.fall_back(&mut state, now, error)
            }
        }
    }
}

/// Ahead of `expiry` by 5 to 10 minutes (jittered), or by half the time left
/// for short-lived credentials.
fn refresh_time(now: SystemTime, expiry: SystemTime) -> SystemTime {
    let left = expiry.duration_since(now).unwrap_or_default();
    let ahead = Duration::from_secs(300).mul_f64(1.0 + secrets_manager_agent_core::random::unit());
    expiry - ahead.min(left / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrets_manager_agent_core::clock::TestClock;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Hands out credentials valid for `lifetime` from the shared clock's now.
    struct Source {
        clock: Arc<TestClock>,
        calls: AtomicUsize,
        down: AtomicBool,
        lifetime: Duration,
    }

    impl ProvideCredentials for Source {
        fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(CredentialsError::new("test", "down"));
            }
            Ok(Arc::new(Credentials {
                access_key_id: format!("AKID{n}"),
                secret_access_key: "S".into(),
                session_token: None,
                expiry: Some(self.clock.wall() + self.lifetime),
                source: "test".into(),
            }))
        }
    }

    const MIN: Duration = Duration::from_secs(60);
    const MS: Duration = Duration::from_millis(1);

    fn refreshing(lifetime: Duration, timing: Timing) -> Refreshing<Source, Arc<TestClock>> {
        let clock = Arc::new(TestClock::default());
        let source = Source {
            clock: clock.clone(),
            calls: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            lifetime,
        };
        Refreshing::with_clock(source, timing, clock)
    }

    fn timing(grace: Duration, retry_every: Duration) -> Timing {
        Timing { grace, retry_every }
    }

    impl Refreshing<Source, Arc<TestClock>> {
        fn key(&self) -> Result<String, CredentialsError> {
            self.credentials().map(|c| c.access_key_id.clone())
        }
        fn calls(&self) -> usize {
            self.source.calls.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn caches_until_half_the_lifetime() {
        // Ten minutes: refreshing 5 to 10 minutes ahead is capped at half.
        let r = refreshing(10 * MIN, timing(Duration::ZERO, Duration::ZERO));
        assert_eq!(r.key().unwrap(), "AKID0");
        r.clock.advance(5 * MIN - MS);
        assert_eq!(r.key().unwrap(), "AKID0");
        assert_eq!(r.calls(), 1);
        r.clock.advance(MS);
        assert_eq!(r.key().unwrap(), "AKID1");
        assert_eq!(r.key().unwrap(), "AKID1");
        assert_eq!(r.calls(), 2);
    }

    #[test]
    fn refresh_asks_the_source_before_the_held_set_is_due() {
        let r = refreshing(60 * MIN, timing(Duration::ZERO, MIN));
        assert_eq!(r.key().unwrap(), "AKID0");
        assert_eq!(r.refresh().unwrap().access_key_id, "AKID1");
        assert_eq!(r.key().unwrap(), "AKID1", "the new set is held");
        assert_eq!(r.calls(), 2);
        // After a failure, not again within retry_every: the held set.
        r.source.down.store(true, Ordering::SeqCst);
        assert_eq!(r.refresh().unwrap().access_key_id, "AKID1");
        assert_eq!(r.refresh().unwrap().access_key_id, "AKID1");
        assert_eq!(r.calls(), 3);
    }

    #[test]
    fn static_stability_then_failure() {
        let r = refreshing(10 * MIN, timing(15 * MIN, Duration::ZERO));
        r.key().unwrap();
        r.source.down.store(true, Ordering::SeqCst);
        // Due for a refresh but not expired: the source is asked, the old ones
        // are still good.
        r.clock.advance(6 * MIN);
        assert_eq!(r.key().unwrap(), "AKID0");
        assert_eq!(r.calls(), 2);
        // Expired (at 10 min): the grace starts with the first failure after
        // expiry, at 11 min, and lasts until 26 min.
        r.clock.advance(5 * MIN);
        assert_eq!(r.key().unwrap(), "AKID0");
        r.clock.advance(15 * MIN - MS);
        assert_eq!(r.key().unwrap(), "AKID0");
        r.clock.advance(MS);
        assert!(r.key().is_err());
        // The source comes back.
        r.source.down.store(false, Ordering::SeqCst);
        assert_eq!(r.key().unwrap(), "AKID5");
    }

    #[test]
    fn failing_source_is_not_asked_on_every_call() {
        let r = refreshing(10 * MIN, timing(Duration::ZERO, MIN));
        r.source.down.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            assert!(r.key().is_err());
        }
        assert_eq!(r.calls(), 1);
        r.clock.advance(MIN - MS);
        assert!(r.key().is_err());
        assert_eq!(r.calls(), 1);
        r.clock.advance(MS);
        assert!(r.key().is_err());
        assert_eq!(r.calls(), 2, "asked again after retry_every");
    }

    #[test]
    fn expired_on_arrival_is_asked_again_after_retry_every() {
        let r = refreshing(Duration::ZERO, timing(Duration::ZERO, MIN));
        assert_eq!(r.key().unwrap(), "AKID0");
        r.clock.advance(MIN - MS);
        assert_eq!(r.key().unwrap(), "AKID0");
        assert_eq!(r.calls(), 1);
        r.clock.advance(MS);
        assert_eq!(r.key().unwrap(), "AKID1");
    }

    #[test]
    fn refresh_time_is_ahead_of_expiry() {
        let now = SystemTime::now();
        let hour = now + Duration::from_secs(3600);
        let at = refresh_time(now, hour);
        let ahead = hour.duration_since(at).unwrap();
        assert!(ahead >= Duration::from_secs(300) && ahead <= Duration::from_secs(600));
        let short = now + Duration::from_secs(60);
        assert_eq!(
            short.duration_since(refresh_time(now, short)).unwrap(),
            Duration::from_secs(30)
        );
    }
}
