//! The credential cache in front of the chain: refresh ahead of expiry, one
//! refresher at a time, and "static stability" when a source goes down.
//!
//! Credentials with an expiry are refreshed a few minutes before it (jittered,
//! so a fleet does not call IMDS in lockstep). While one thread refreshes, the
//! others keep using the current credentials if they are still valid. When the
//! refresh fails after expiry, the last credentials stay in use for a bounded
//! grace period, as the AWS SDKs do, and the source is retried at most every
//! few seconds.

use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, SystemTime};

use super::{Credentials, CredentialsError, ProvideCredentials};
use crate::aws::retry::random_unit;
use crate::sync::lock;

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
    pub fn from_env() -> Result<Timing, String> {
        let secs =
            |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| match super::env_var(
                name,
            ) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if range.contains(&n) => Ok(Duration::from_secs(n)),
                    _ => Err(format!(
                        "{name}={v} is not valid: expected seconds from {} to {}",
                        range.start(),
                        range.end()
                    )),
                },
            };
        Ok(Timing {
            grace: secs("SMA_CREDENTIALS_GRACE_SECS", 900, 0..=86_400)?,
            retry_every: secs("SMA_CREDENTIALS_RETRY_SECS", 10, 1..=3_600)?,
        })
    }
}

pub struct Refreshing<P> {
    source: P,
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
        Refreshing {
            source,
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
                        crate::iso8601::format(expiry),
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

impl<P: ProvideCredentials> ProvideCredentials for Refreshing<P> {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        if let Some(answer) = self.cached(SystemTime::now()) {
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
                        if current.expiry.is_none_or(|e| SystemTime::now() < e) {
                            return Ok(current.clone());
                        }
                    }
                }
                let guard = lock(&self.refreshing);
                if let Some(answer) = self.cached(SystemTime::now()) {
                    return answer;
                }
                guard
            }
        };
        let fetched = self.source.credentials();
        let now = SystemTime::now();
        let mut state = lock(&self.state);
        match fetched {
            Ok(creds) => {
                if let Some(expiry) = creds.expiry {
                    log::info!(
                        "credentials from {} (key {}), valid until {}",
                        creds.source,
                        creds.access_key_id,
                        crate::iso8601::format(expiry)
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
    let ahead = Duration::from_secs(300).mul_f64(1.0 + random_unit());
    expiry - ahead.min(left / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Source {
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
                expiry: Some(SystemTime::now() + self.lifetime),
                source: "test".into(),
            }))
        }
    }

    fn source(lifetime_ms: u64) -> Source {
        Source {
            calls: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            lifetime: Duration::from_millis(lifetime_ms),
        }
    }

    fn timing(grace_ms: u64, retry_ms: u64) -> Timing {
        Timing {
            grace: Duration::from_millis(grace_ms),
            retry_every: Duration::from_millis(retry_ms),
        }
    }

    #[test]
    fn caches_until_half_the_lifetime() {
        let r = Refreshing::new(source(400), timing(0, 0));
        assert_eq!(r.credentials().unwrap().access_key_id, "AKID0");
        assert_eq!(r.credentials().unwrap().access_key_id, "AKID0");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(r.credentials().unwrap().access_key_id, "AKID1");
        assert_eq!(r.source.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn static_stability_then_failure() {
        let r = Refreshing::new(source(100), timing(300, 0));
        r.credentials().unwrap();
        r.source.down.store(true, Ordering::SeqCst);
        // Before expiry, within the refresh window: still the old ones.
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.credentials().unwrap().access_key_id, "AKID0");
        // After expiry, within the grace.
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.credentials().unwrap().access_key_id, "AKID0");
        // After the grace.
        std::thread::sleep(Duration::from_millis(350));
        assert!(r.credentials().is_err());
        // The source comes back.
        r.source.down.store(false, Ordering::SeqCst);
        assert!(r.credentials().is_ok());
    }

    #[test]
    fn failing_source_is_not_asked_on_every_call() {
        let r = Refreshing::new(source(100), timing(0, 60_000));
        r.source.down.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            assert!(r.credentials().is_err());
        }
        assert_eq!(r.source.calls.load(Ordering::SeqCst), 1);
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
