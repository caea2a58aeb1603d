//! The workers: threads that each wait for the next event themselves (on
//! the server's one epoll set) and serve it, so that a request passes through
//! no queue and wakes no other thread. The pool only decides how many there
//! are: it grows on demand up to a fixed bound and shrinks when idle.
//!
//! Work never waits for anything slow: requests that wait on AWS are
//! parked by the server, and the calls run on threads of their own; idle
//! connections wait in epoll. So one worker per CPU (at least `min`) is
//! enough, and up to that soft bound a worker starts as soon as none is
//! left waiting. Past it, workers start only when events wait while no
//! worker took one for [`STUCK`], up to a hard bound (`max_conn` plus some
//! headroom): a safety net for work that blocks after all (a call to AWS
//! made on a worker because no thread of its own could start), so that it
//! never starves the cache hits. More threads than CPUs would only cost
//! memory, and on a busy CPU add to the queue for it.
//! Each worker keeps its own state `S` across events (the caller's buffers).
//! A worker idle for a moment gives back the memory a burst left behind: its
//! state, replaced by a fresh `S::default()`, and the stack pages a deep call
//! (an upstream fetch) touched.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const IDLE_EXIT: Duration = Duration::from_secs(30);
/// A worker idle this long frees its state and unused stack. Short
/// enough that memory settles soon after a burst; long enough that a busy
/// worker never pays for it.
const TRIM_AFTER: Duration = Duration::from_millis(250);
/// How often the keeper looks again while every worker is busy.
pub const STARVED: Duration = Duration::from_millis(5);
/// A worker that has served events this long without once waiting for one
/// gives its CPU up (`sched_yield`) to whatever else is runnable there:
/// the clients it answers, most of all. Without it, a worker with events
/// queued runs its whole scheduler slice while a client's thread, woken by
/// our answers, waits for the CPU: measured with `wrk -t2 -c32` on 2 CPUs,
/// p99 was 4.2-4.4 ms in every run, one 250 Hz tick. With 4 workers, every
/// 100 µs gave p99 0.5 ms but 12 % fewer requests/s (a yield costs a
/// context switch), every 500-2000 µs p99 2-4 ms; every 300 µs with one
/// worker per CPU, medians of 0.4-0.6 ms over interleaved runs, single runs
/// spreading from 0.4 to 4 ms, and requests/s no lower than without
/// (docs/benchmarks.md, "Tail latency").
const YIELD_AFTER: Duration = Duration::from_micros(300);
/// An event wait that lasted this long slept: the worker gave its CPU up.
const SLEPT: Duration = Duration::from_micros(30);
/// Past the soft bound, events that wait while no worker took one for this
/// long get new workers: the workers are stuck (on a call to AWS made on a
/// worker after all, or on a lock) rather than runnable and waiting for a
/// CPU. With two busy processes beside it
/// on 2 CPUs, run-queue delays alone kept workers from taking events for
/// several milliseconds; an event that ran this long without finishing is
/// not a cache hit. It is also about the most a cache hit waits when every
/// worker is stuck.
pub const STUCK: Duration = Duration::from_millis(25);

type Next<E> = dyn Fn(Duration) -> Option<E> + Send + Sync;
type Work<E, S> = dyn Fn(E, &mut S, &Load) + Send + Sync;

/// Runs workers that take events `E` from `next` and serve them with
/// `work`, each keeping a state `S` between events.
pub struct Pool<E, S> {
    shared: Arc<Shared<E, S>>,
}

struct Shared<E, S> {
    min: usize,
    soft: usize,
    max: usize,
    threads: AtomicUsize,
    load: Load,
    /// When a worker last took an event, in nanoseconds since `epoch`:
    /// every busy worker took its event at or before it.
    last_taken: AtomicU64,
    epoch: Instant,
    stack_size: usize,
    next: Box<Next<E>>,
    work: Box<Work<E, S>>,
}

/// Lets an event's work see whether any worker is left waiting.
pub struct Load {
    idle: AtomicUsize,
}

impl Load {
    /// Whether no worker waits for an event: then one that has served a
    /// long turn gives its connection back, so that others get one.
    pub fn others_waiting(&self) -> bool {
        self.idle.load(Ordering::Relaxed) == 0
    }

    /// A view with `idle` waiting workers, for tests of the work.
    #[cfg(test)]
    pub fn fixed(idle: usize) -> Load {
        Load {
            idle: AtomicUsize::new(idle),
        }
    }
}

impl<E: 'static, S: Default + 'static> Pool<E, S> {
    /// Keeps `min` workers once started; up to `soft` start as soon as no worker waits,
    /// and up to `max` when the busy ones are stuck (see
    /// [`Pool::grow_if_stuck`]). `next(wait)` blocks up to `wait` for an
    /// event.
    pub fn new(
        min: usize,
        soft: usize,
        max: usize,
        stack_size: usize,
        next: impl Fn(Duration) -> Option<E> + Send + Sync + 'static,
        work: impl Fn(E, &mut S, &Load) + Send + Sync + 'static,
    ) -> Pool<E, S> {
        let max = max.max(min).max(1);
        let pool = Pool {
            shared: Arc::new(Shared {
                min,
                soft: soft.clamp(min.max(1), max),
                max,
                threads: AtomicUsize::new(0),
                load: Load {
                    idle: AtomicUsize::new(0),
                },
                last_taken: AtomicU64::new(0),
                epoch: Instant::now(),
                stack_size,
                next: Box::new(next),
                work: Box::new(work),
            }),
        };
        // One to wait for the first event; the rest start on demand.
        start(&pool.shared, 1);
        pool
    }

    /// Workers running now.
    pub fn threads(&self) -> usize {
        self.shared.threads.load(Ordering::Relaxed)
    }

    /// Starts workers when none waits, no worker took an event for
    /// [`STUCK`], and `work_waits()` says events are ready: every worker is
    /// stuck (most likely on AWS). Workers that are only slow, on a busy
    /// CPU, keep taking events and are left alone. Returns when to look
    /// again: `None` while a worker waits.
    pub fn grow_if_stuck(&self, work_waits: impl FnOnce() -> bool) -> Option<Duration> {
        self.grow_if_stuck_at(Instant::now(), work_waits)
    }

    fn grow_if_stuck_at(
        &self,
        now: Instant,
        work_waits: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        let shared = &*self.shared;
        if !shared.load.others_waiting() {
            return None;
        }
        let last = Duration::from_nanos(shared.last_taken.load(Ordering::Relaxed));
        let quiet = now
            .saturating_duration_since(shared.epoch)
            .saturating_sub(last);
        if quiet < STUCK {
            return Some((STUCK - quiet).max(STARVED));
        }
        if work_waits() {
            // Half as many again: a hundred requests stuck behind a slow
            // upstream get their workers in a few rounds, not a hundred.
            start(&self.shared, (self.threads() / 2).max(1));
        }
        Some(STARVED)
    }
}

/// Starts up to `n` workers, within `max`.
fn start<E: 'static, S: Default + 'static>(shared: &Arc<Shared<E, S>>, n: usize) {
    for _ in 0..n {
        let reserved = shared
            .threads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                (t < shared.max).then_some(t + 1)
            });
        if reserved.is_err() {
            return;
        }
        spawn(shared);
    }
}

fn spawn<E: 'static, S: Default + 'static>(shared: &Arc<Shared<E, S>>) {
    let own = shared.clone();
    let spawned = thread::Builder::new()
        .name("worker".into())
        .stack_size(shared.stack_size)
        .spawn(move || worker(&own));
    if let Err(e) = spawned {
        log::error!("cannot start a worker thread: {e}");
        shared.threads.fetch_sub(1, Ordering::SeqCst);
    }
}

fn worker<E: 'static, S: Default + 'static>(shared: &Arc<Shared<E, S>>) {
    let mut own = S::default();
    let mut trimmed = true;
    // Since when this worker has run without giving its CPU up.
    let mut running_since = Instant::now();
    loop {
        shared.load.idle.fetch_add(1, Ordering::SeqCst);
        let wait = if trimmed { IDLE_EXIT } else { TRIM_AFTER };
        let before = Instant::now();
        let event = (shared.next)(wait);
        let now = Instant::now();
        if now - before >= SLEPT {
            running_since = now;
        } else if now - running_since >= YIELD_AFTER {
            thread::yield_now();
            running_since = Instant::now();
        }
        let idle = shared.load.idle.fetch_sub(1, Ordering::SeqCst) - 1;
        let Some(event) = event else {
            if !trimmed {
                own = S::default();
                secrets_manager_agent_os::stack::release_unused();
                trimmed = true;
                continue;
            }
            let left = shared
                .threads
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                    (t > shared.min).then(|| t - 1)
                });
            if left.is_ok() {
                return;
            }
            continue;
        };
        let taken = now.saturating_duration_since(shared.epoch).as_nanos();
        shared
            .last_taken
            .store(taken.min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
        if idle == 0 && shared.threads.load(Ordering::Relaxed) < shared.soft {
            // The last waiting worker took this one: start another so that
            // the next event finds a worker while this one serves.
            start(shared, 1);
        }
        // A panic in one event's work must not take a worker with it, nor
        // leave its state half-updated for the next.
        let run = std::panic::AssertUnwindSafe(|| (shared.work)(event, &mut own, &shared.load));
        if std::panic::catch_unwind(run).is_err() {
            log::error!("a request handler panicked; the connection was dropped");
            own = S::default();
        }
        trimmed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Mutex;

    /// A pool fed from a channel, as the server's is from epoll.
    fn fed<S: Default + 'static>(
        min: usize,
        soft: usize,
        max: usize,
        work: impl Fn(u32, &mut S, &Load) + Send + Sync + 'static,
    ) -> (mpsc::Sender<u32>, Pool<u32, S>) {
        let (tx, rx) = mpsc::channel::<u32>();
        let rx = Mutex::new(rx);
        let next = move |wait| rx.lock().unwrap().recv_timeout(wait).ok();
        (tx, Pool::new(min, soft, max, 64 * 1024, next, work))
    }

    #[test]
    fn grows_to_the_soft_bound_at_once_and_runs_everything() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = mpsc::channel();
        let done_tx = Mutex::new(done_tx);
        let (r, p) = (running.clone(), peak.clone());
        let (tx, pool) = fed(1, 4, 8, move |n: u32, _: &mut (), _| {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(50));
            r.fetch_sub(1, Ordering::SeqCst);
            let _ = done_tx.lock().unwrap().send(n);
        });
        for n in 0..12 {
            tx.send(n).unwrap();
        }
        let mut seen: Vec<u32> = (0..12)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        seen.sort();
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 4, "the soft bound, not max");
        assert_eq!(pool.threads(), 4);
    }

    #[test]
    fn past_the_soft_bound_grows_only_when_stuck() {
        let (done_tx, done_rx) = mpsc::channel();
        let done_tx = Mutex::new(done_tx);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        // Event 0 blocks (a worker stuck on AWS); the others finish at once.
        let (tx, pool) = fed(1, 1, 4, move |n: u32, _: &mut (), _| {
            if n == 0 {
                let _ = release_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(10));
            }
            let _ = done_tx.lock().unwrap().send(n);
        });
        tx.send(0).unwrap();
        let busy = || pool.shared.load.others_waiting();
        wait_for(busy);
        tx.send(1).unwrap();
        // At the soft bound: event 1 waits for a worker instead of starting one.
        assert!(done_rx.recv_timeout(Duration::from_millis(50)).is_err());
        assert_eq!(pool.threads(), 1);
        // Nothing waits: nothing starts, however long the worker has been busy.
        let later = Instant::now() + STUCK * 4;
        assert_eq!(pool.grow_if_stuck_at(later, || false), Some(STARVED));
        assert_eq!(pool.threads(), 1);
        // Taken an instant ago: a slow worker, not a stuck one.
        let taken = pool.shared.epoch
            + Duration::from_nanos(pool.shared.last_taken.load(Ordering::Relaxed));
        assert_eq!(
            pool.grow_if_stuck_at(taken + STUCK / 2, || true),
            Some(STUCK / 2)
        );
        assert_eq!(pool.threads(), 1);
        // Stuck for STUCK with work waiting: now it grows.
        assert_eq!(pool.grow_if_stuck_at(taken + STUCK, || true), Some(STARVED));
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        assert_eq!(pool.threads(), 2);
        // A worker waits again: nothing to watch.
        wait_for(|| !busy());
        assert_eq!(pool.grow_if_stuck(|| true), None);
        release_tx.send(()).unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(0));
    }

    #[test]
    fn worker_state_lives_across_events_until_a_panic_or_a_trim() {
        let (seen_tx, seen_rx) = mpsc::channel();
        let seen_tx = Mutex::new(seen_tx);
        // One worker; each event counts itself in the worker's state.
        let (tx, _pool) = fed(1, 1, 1, move |panic: u32, jobs: &mut u32, _| {
            *jobs += 1;
            assert!(panic == 0, "event asked to panic");
            let _ = seen_tx.lock().unwrap().send(*jobs);
        });
        let next = |panic| {
            tx.send(panic).unwrap();
            seen_rx.recv_timeout(Duration::from_secs(5))
        };
        assert_eq!(next(0), Ok(1));
        assert_eq!(next(0), Ok(2));
        tx.send(1).unwrap();
        assert_eq!(next(0), Ok(1), "fresh state after a panic");
        assert_eq!(next(0), Ok(2));
        thread::sleep(TRIM_AFTER * 4);
        assert_eq!(next(0), Ok(1), "fresh state after idling");
    }

    fn wait_for(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            thread::sleep(Duration::from_millis(1));
        }
    }
}
