//! The SDKs' "standard" retry mode: at most three attempts, exponential backoff
//! with full jitter, and a shared retry budget so an outage does not turn every
//! request into three.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::error::UpstreamError;

const MAX_ATTEMPTS: u32 = 3;
const BUDGET: u32 = 500;
const RETRY_COST: u32 = 5;
const TIMEOUT_RETRY_COST: u32 = 10;
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// One per client; shared by all threads.
pub struct Retry {
    budget: AtomicU32,
    /// How a backoff is waited out; tests swap in one that does not sleep.
    sleep: fn(Duration),
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            budget: AtomicU32::new(BUDGET),
            sleep: std::thread::sleep,
        }
    }
}

impl Retry {
    /// Runs `attempt` until it succeeds, fails for good, runs out of attempts
    /// or the budget is empty. A server's `x-amz-retry-after` hint (carried by
    /// the error) replaces the jittered backoff, but never waits longer than
    /// the backoff could (1 s, then 2 s): a hint of minutes would otherwise
    /// hold the client's request far past its documented deadline.
    pub fn run<T>(
        &self,
        attempt: impl FnMut(u32) -> Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        self.run_while(UpstreamError::is_transient, attempt)
    }

    /// As `run`, but a throttled attempt is the last: for callers with a way
    /// round a throttled operation (a batch refresh falls back to calls with
    /// quotas of their own), where waiting and retrying would only spend
    /// more of the throttled quota.
    pub fn run_unless_throttled<T>(
        &self,
        attempt: impl FnMut(u32) -> Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        self.run_while(|e| e.is_transient() && !e.is_throttling(), attempt)
    }

    fn run_while<T>(
        &self,
        retryable: fn(&UpstreamError) -> bool,
        mut attempt: impl FnMut(u32) -> Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        let mut spent = 0;
        for n in 1.. {
            let err = match attempt(n) {
                Ok(value) => {
                    self.refund(if spent == 0 { 1 } else { spent });
                    return Ok(value);
                }
                Err(err) => err,
            };
            if n >= MAX_ATTEMPTS || !retryable(&err) {
                return Err(err);
            }
            let cost = if err == UpstreamError::Timeout {
                TIMEOUT_RETRY_COST
            } else {
                RETRY_COST
            };
            if !self.withdraw(cost) {
                log::warn!("retry budget exhausted; not retrying: {err}");
                return Err(err);
            }
            spent = cost;
            let delay = err
                .retry_after()
                .map_or_else(|| backoff(n), |hint| hint.min(backoff_cap(n)));
            log::debug!("attempt {n} failed ({err}); retrying in {delay:?}");
            (self.sleep)(delay);
        }
        unreachable!("the attempt loop only ends by returning")
    }

    fn withdraw(&self, cost: u32) -> bool {
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_sub(cost)
            })
            .is_ok()
    }

    fn refund(&self, amount: u32) {
        let _ = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b < BUDGET).then(|| (b + amount).min(BUDGET))
            });
    }
}

/// `random[0,1) * backoff_cap(attempt)`.
fn backoff(attempt: u32) -> Duration {
    backoff_cap(attempt).mul_f64(secrets_manager_agent_core::random::unit())
}

/// The longest wait after attempt `attempt`: `min(2^(attempt-1) s, 20 s)`.
fn backoff_cap(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << (attempt.saturating_sub(1)).min(5)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> UpstreamError {
        UpstreamError::service(status, code, "")
    }

    /// Retries without waiting out the backoff.
    fn retry() -> Retry {
        Retry {
            sleep: |_| {},
            ..Retry::default()
        }
    }

    #[test]
    fn retries_transient_then_succeeds() {
        let retry = retry();
        let mut calls = 0;
        let r = retry.run(|_| {
            calls += 1;
            if calls < 3 {
                Err(service(503, "ServiceUnavailable"))
            } else {
                Ok(7)
            }
        });
        assert_eq!(r, Ok(7));
        assert_eq!(calls, 3);
    }

    #[test]
    fn stops_after_three_attempts_and_on_final_errors() {
        let retry = retry();
        let mut calls = 0;
        let r: Result<(), _> = retry.run(|_| {
            calls += 1;
            Err(service(400, "ThrottlingException"))
        });
        assert!(r.is_err());
        assert_eq!(calls, 3);

        let mut calls = 0;
        let r: Result<(), _> = retry.run(|_| {
            calls += 1;
            Err(service(400, "ResourceNotFoundException"))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn empty_budget_means_no_retry() {
        let retry = retry();
        let mut calls = 0;
        for _ in 0..60 {
            let _: Result<(), _> = retry.run(|_| {
                calls += 1;
                Err(UpstreamError::Timeout)
            });
        }
        // 500 / 10 = 50 timeout retries are affordable, then every call is one attempt.
        assert_eq!(calls, 25 * 3 + 35);
    }

    #[test]
    fn server_hints_never_wait_longer_than_the_backoff() {
        thread_local! {
            static SLEPT: std::cell::RefCell<Vec<Duration>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let retry = Retry {
            sleep: |d| SLEPT.with(|s| s.borrow_mut().push(d)),
            ..Retry::default()
        };
        let hinted = |ms| UpstreamError::Service {
            status: 503,
            code: "ServiceUnavailable".into(),
            message: String::new(),
            retry_after: Some(Duration::from_millis(ms)),
        };
        let mut calls = 0;
        let _: Result<(), _> = retry.run(|_| {
            calls += 1;
            Err(hinted(if calls == 1 { 300 } else { 30_000 }))
        });
        let slept = SLEPT.with(|s| std::mem::take(&mut *s.borrow_mut()));
        // A short hint is honoured; a long one waits what the backoff could.
        assert_eq!(
            slept,
            vec![Duration::from_millis(300), Duration::from_secs(2)]
        );
        let _: Result<(), _> = retry.run(|_| Err(hinted(30_000)));
        let slept = SLEPT.with(|s| std::mem::take(&mut *s.borrow_mut()));
        assert_eq!(slept, vec![Duration::from_secs(1), Duration::from_secs(2)]);
    }

    #[test]
    fn backoff_is_capped() {
        for attempt in 1..10 {
            let d = backoff(attempt);
            assert!(d < Duration::from_secs(1u64 << (attempt - 1)).min(MAX_BACKOFF));
        }
    }
}
