//! The time the caches run on, as a parameter: the system clocks in the
//! agent, a clock moved by hand in tests.
//!
//! The secret cache and the credential cache decide everything by comparing
//! the time with TTLs and expiries. Reading it through `Clock` lets their tests
//! step exactly to either side of a deadline instead of sleeping against it
//! (slow, and flaky on a loaded machine). The caches take the clock as a
//! generic parameter, so the real one is a plain call to `Instant::now`.
//!
//! The integration tests run the whole agent, so they cannot hand it a
//! clock: in debug builds (the binary they test) [`SystemClock`] reads the
//! system's clocks plus a skew that only grows, and [`advance`] moves it on
//! (the agent's API does so when started with `SMA_TEST_CLOCK=true`). A test then
//! steps past a TTL or a credential's expiry at once instead of sleeping.
//! Release builds have no skew: the clock is the system's. What the skew
//! moves is policy time only (TTLs, refresh windows, expiries); I/O timeouts
//! and request signing read the system's clocks directly.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub trait Clock: Send + Sync {
    /// Monotonic time, for durations (TTLs, retry intervals).
    fn now(&self) -> Instant;
    /// Wall-clock time, for comparing with expiries that AWS hands out.
    fn wall(&self) -> SystemTime;
}

/// The operating system's clocks (in debug builds, plus the skew that
/// [`advance`] sets).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now() + skew::get()
    }
    #[inline]
    fn wall(&self) -> SystemTime {
        SystemTime::now() + skew::get()
    }
}

/// Moves [`SystemClock`] forward by `by` for the whole process, and returns
/// how far it is ahead of the system's clocks now. Only debug builds have it.
#[cfg(debug_assertions)]
pub fn advance(by: std::time::Duration) -> std::time::Duration {
    skew::add(by)
}

#[cfg(debug_assertions)]
mod skew {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Nanoseconds ahead of the system's clocks.
    static SKEW_NANOS: AtomicU64 = AtomicU64::new(0);
    /// The most the skew grows to, 100 years: far past any TTL or expiry,
    /// and far from where `Instant + skew` would overflow.
    const MAX_NANOS: u64 = 100 * 366 * 86_400 * 1_000_000_000;

    pub fn get() -> Duration {
        Duration::from_nanos(SKEW_NANOS.load(Ordering::Acquire))
    }

    pub fn add(by: Duration) -> Duration {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let grow = |skew: u64| Some(skew.saturating_add(by).min(MAX_NANOS));
        let before = SKEW_NANOS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, grow)
            .unwrap_or_default();
        Duration::from_nanos(before.saturating_add(by).min(MAX_NANOS))
    }
}

#[cfg(not(debug_assertions))]
mod skew {
    use std::time::Duration;

    #[inline(always)]
    pub fn get() -> Duration {
        Duration::ZERO
    }
}

/// A clock shared with whoever else needs the same time (in tests, a fake
/// credential source that stamps expiries).
impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn wall(&self) -> SystemTime {
        (**self).wall()
    }
}

pub use test_clock::TestClock;

/// Public for the tests of the crates above, which run their caches on it.
mod test_clock {
    use std::sync::Mutex;
    use std::time::{Duration, Instant, SystemTime};

    use super::Clock;
    use crate::sync::lock;

    /// Stands still until a test moves it forward; both readings move together.
    pub struct TestClock {
        start: Instant,
        wall_start: SystemTime,
        elapsed: Mutex<Duration>,
    }

    impl Default for TestClock {
        fn default() -> TestClock {
            TestClock {
                start: Instant::now(),
                wall_start: SystemTime::now(),
                elapsed: Mutex::new(Duration::ZERO),
            }
        }
    }

    impl TestClock {
        pub fn advance(&self, by: Duration) {
            *lock(&self.elapsed) += by;
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> Instant {
            self.start + *lock(&self.elapsed)
        }
        fn wall(&self) -> SystemTime {
            self.wall_start + *lock(&self.elapsed)
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    fn the_system_clock_moves_with_the_skew() {
        use crate::clock::SystemClock;
        let clock = SystemClock;
        let (t0, w0) = (clock.now(), clock.wall());
        let ahead = super::advance(Duration::from_secs(3600));
        assert!(ahead >= Duration::from_secs(3600), "{ahead:?}");
        assert!(clock.now() - t0 >= Duration::from_secs(3600));
        assert!(clock.wall().duration_since(w0).unwrap() >= Duration::from_secs(3600));
        // Nothing else reads the skew: the system's own clocks stay put.
        assert!(Instant::now() - t0 < Duration::from_secs(3600));
    }

    #[test]
    fn moves_only_when_advanced() {
        let clock = TestClock::default();
        let (t0, w0) = (clock.now(), clock.wall());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!((clock.now(), clock.wall()), (t0, w0));
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now() - t0, Duration::from_secs(90));
        assert_eq!(
            clock.wall().duration_since(w0).ok(),
            Some(Duration::from_secs(90))
        );
    }
}
