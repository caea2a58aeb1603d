//! The time the caches run on, as a parameter: the system clocks in the
//! agent, a clock moved by hand in tests.
//!
//! The secret cache and the credential cache decide everything by comparing
//! the time with TTLs and expiries. Reading it through `Clock` lets their tests
//! step exactly to either side of a deadline instead of sleeping against it
//! (slow, and flaky on a loaded machine). The caches take the clock as a
//! generic parameter, so the real one is a plain call to `Instant::now`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub trait Clock: Send + Sync {
    /// Monotonic time, for durations (TTLs, retry intervals).
    fn now(&self) -> Instant;
    /// Wall-clock time, for comparing with expiries that AWS hands out.
    fn wall(&self) -> SystemTime;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
    #[inline]
    fn wall(&self) -> SystemTime {
        SystemTime::now()
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
