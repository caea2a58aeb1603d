//! Who may call the agent through the SDK's protocol (`caller_auth`), and
//! the check of one request against that: the signature `verify` checks,
//! with the secret of the key the caller names.
//!
//! - [`Callers::Agent`]: the caller signs with the credentials the agent
//!   itself resolved (one instance profile, task role, Lambda environment or
//!   static keys serves both). Credentials rotate, and the application's SDK
//!   may pick up the new set before the agent does: the agent accepts its
//!   current set and the one before, and when a caller names a key it does
//!   not know it asks its source again, at most once per [`RERESOLVE_EVERY`]
//!   so that unknown keys cannot make it hammer IMDS or STS.
//! - [`Callers::Key`]: one key pair given to the agent, for hosts whose
//!   processes do not share credentials.
//! - [`Callers::Anyone`]: no check (the config allows it on loopback only).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::identity::{Credentials, ProvideCredentials};
use super::verify::{Claim, Refusal, Request};

/// The least time between two re-resolutions asked for by unknown keys:
/// a rotation is seen within it, and a caller sending random keys costs the
/// credential source one call per this interval at most.
pub const RERESOLVE_EVERY: Duration = Duration::from_secs(10);

pub enum Callers {
    Agent(AgentKeys),
    Key {
        access_key_id: String,
        secret: Zeroizing<String>,
    },
    Anyone,
}

impl Callers {
    /// Whether `request` is signed by an accepted key, for `service`, within
    /// the window around `now`.
    pub fn check(
        &self,
        request: &Request<'_>,
        service: &str,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        match self {
            Callers::Anyone => Ok(()),
            Callers::Key {
                access_key_id,
                secret,
            } => {
                let claim = Claim::parse(request)?;
                if !bool::from(
                    claim
                        .access_key_id
                        .as_bytes()
                        .ct_eq(access_key_id.as_bytes()),
                ) {
                    return Err(Refusal::UnknownKey);
                }
                // A key pair has no session token; one sent is not checked,
                // as AWS ignores it for long-term keys.
                claim.check(request, service, secret, now)
            }
            Callers::Agent(keys) => {
                let claim = Claim::parse(request)?;
                let creds = keys.find(claim.access_key_id).ok_or(Refusal::UnknownKey)?;
                let sent = request.header("x-amz-security-token").next();
                let token_matches = match (&creds.session_token, sent) {
                    (Some(expected), Some(sent)) => bool::from(expected.as_bytes().ct_eq(sent)),
                    (None, None) => true,
                    _ => false,
                };
                if !token_matches {
                    return Err(Refusal::UnknownKey);
                }
                claim.check(request, service, &creds.secret_access_key, now)
            }
        }
    }
}

/// The agent's own credentials as callers may sign with them: the current
/// set from its source, and the set before it.
pub struct AgentKeys {
    source: Arc<dyn ProvideCredentials>,
    /// Read by every request, written when the sets change: a read lock,
    /// so that the workers checking signatures never wait for each other.
    seen: RwLock<Seen>,
    /// When the source was last asked for its current set, in milliseconds
    /// since `started`.
    asked_at: AtomicU64,
    started: Instant,
}

/// How often a request asks the source for its current set even though the
/// key it names is known, so that a rotation moves the sets along (the set
/// two rotations back stops being accepted) within this time. Asking is a
/// lock and a clock read in the credential cache; once a second keeps it
/// off the path of every request (it was a third of a check under load).
const ASK_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Seen {
    current: Option<Arc<Credentials>>,
    previous: Option<Arc<Credentials>>,
    reresolved_at: Option<Instant>,
}

impl AgentKeys {
    pub fn new(source: Arc<dyn ProvideCredentials>) -> AgentKeys {
        AgentKeys {
            source,
            seen: RwLock::new(Seen::default()),
            asked_at: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// The credentials whose access key ID is `access_key_id`, if the agent
    /// has them now or had them last and they have not expired. An unknown
    /// key makes the agent ask its credential cache for its current set,
    /// then, if that is not it either, its source for newer ones, at most
    /// once per [`RERESOLVE_EVERY`] whatever the source answered; that call
    /// runs on the worker that serves the request, which is bounded by the
    /// same interval.
    fn find(&self, access_key_id: &str) -> Option<Arc<Credentials>> {
        let now = SystemTime::now();
        let usable = |c: &&Arc<Credentials>| {
            bool::from(c.access_key_id.as_bytes().ct_eq(access_key_id.as_bytes()))
                && c.expiry.is_none_or(|expiry| expiry > now)
        };
        let found = |seen: &Seen| {
            seen.current
                .iter()
                .chain(&seen.previous)
                .find(usable)
                .cloned()
        };
        if !self.ask_due() {
            if let Some(known) = found(&self.read()) {
                return Some(known);
            }
        }
        // Asked outside the lock: the source may call IMDS or STS.
        if let Ok(current) = self.source.credentials() {
            self.write().note(current);
        }
        {
            let mut seen = self.write();
            if let Some(known) = found(&seen) {
                return Some(known);
            }
            let due = seen
                .reresolved_at
                .is_none_or(|at| at.elapsed() >= RERESOLVE_EVERY);
            if !due {
                return None;
            }
            seen.reresolved_at = Some(Instant::now());
        }
        let fresh = self.source.refresh().ok()?;
        let mut seen = self.write();
        seen.note(fresh);
        found(&seen)
    }

    /// Whether this request is the one that asks the source this second.
    fn ask_due(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.asked_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= ASK_EVERY.as_millis() as u64;
        // One request wins the turn; the others go on with the known sets.
        due && self
            .asked_at
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Seen> {
        self.seen.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Seen> {
        self.seen.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Seen {
    /// Takes the source's current set: a new one pushes the last to
    /// `previous`.
    fn note(&mut self, current: Arc<Credentials>) {
        let same = self.current.as_ref().is_some_and(|c| {
            c.access_key_id == current.access_key_id && c.session_token == current.session_token
        });
        if !same {
            self.previous = self.current.replace(current);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::CredentialsError;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    /// Hands out the keys it is told, counting refreshes.
    struct Rotating {
        current: Mutex<Arc<Credentials>>,
        next: Mutex<Option<Arc<Credentials>>>,
        refreshes: AtomicUsize,
    }

    impl ProvideCredentials for Rotating {
        fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
            Ok(self.current.lock().unwrap().clone())
        }
        fn refresh(&self) -> Result<Arc<Credentials>, CredentialsError> {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            if let Some(next) = self.next.lock().unwrap().take() {
                *self.current.lock().unwrap() = next;
            }
            self.credentials()
        }
    }

    fn creds(id: &str) -> Arc<Credentials> {
        Arc::new(Credentials {
            access_key_id: id.into(),
            secret_access_key: format!("{id}-secret"),
            session_token: None,
            expiry: None,
            source: "test".into(),
        })
    }

    #[test]
    fn current_previous_and_one_reresolve_for_an_unknown_key() {
        let source = Arc::new(Rotating {
            current: Mutex::new(creds("A")),
            next: Mutex::new(None),
            refreshes: AtomicUsize::new(0),
        });
        let keys = AgentKeys::new(source.clone());
        assert_eq!(keys.find("A").unwrap().access_key_id, "A");
        // The source rotated on its own: both sets are accepted.
        *source.current.lock().unwrap() = creds("B");
        assert_eq!(keys.find("B").unwrap().access_key_id, "B");
        assert_eq!(keys.find("A").unwrap().access_key_id, "A");
        assert_eq!(source.refreshes.load(Ordering::SeqCst), 0);
        // A caller already has the next set: one re-resolution finds it.
        *source.next.lock().unwrap() = Some(creds("C"));
        assert_eq!(keys.find("C").unwrap().access_key_id, "C");
        assert_eq!(source.refreshes.load(Ordering::SeqCst), 1);
        assert_eq!(keys.find("B").unwrap().access_key_id, "B", "previous");
        assert!(keys.find("A").is_none(), "two sets ago");
        // Unknown keys right after: no second call to the source.
        assert!(keys.find("Z").is_none());
        assert!(keys.find("Y").is_none());
        assert_eq!(source.refreshes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_expired_set_is_not_accepted() {
        let mut expired = (*creds("OLD")).clone();
        expired.expiry = Some(SystemTime::now() - Duration::from_secs(1));
        let source = Arc::new(Rotating {
            current: Mutex::new(Arc::new(expired)),
            next: Mutex::new(None),
            refreshes: AtomicUsize::new(0),
        });
        let keys = AgentKeys::new(source.clone());
        assert!(keys.find("OLD").is_none());
        *source.current.lock().unwrap() = creds("NEW");
        assert!(keys.find("NEW").is_some());
        assert!(keys.find("OLD").is_none(), "the previous set, expired");
    }

    #[test]
    fn a_key_pair_and_anyone() {
        let headers: [(&str, &[u8]); 0] = [];
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        let now = SystemTime::now();
        assert_eq!(Callers::Anyone.check(&request, "ssm", now), Ok(()));
        let key = Callers::Key {
            access_key_id: "CXEKAAAAAAAAAAAAAAAA".into(),
            secret: Zeroizing::new("s".into()),
        };
        assert_eq!(key.check(&request, "ssm", now), Err(Refusal::Missing));
    }
}
