//! A worker pool that grows on demand up to a fixed bound and shrinks when idle.
//!
//! Requests that wait on AWS hold a worker, so the pool must be able to grow to
//! `max_conn` plus some headroom; otherwise a hanging upstream would starve
//! cache hits. Idle connections never hold a worker (the poller parks them).
//! Past a soft bound the pool grows only for jobs that have waited
//! [`STARVED`] while every running job has run [`STUCK`]: cache hits take
//! microseconds, so more threads than that only cost memory (and on a busy
//! CPU add to the queue for it), while workers stuck on AWS must not hold up
//! the hits.
//! Each worker keeps its own state `S` across jobs (the caller's buffers).
//! A worker idle for a moment gives back the memory a burst left behind: its
//! state, replaced by a fresh `S::default()`, and the stack pages a deep call
//! (an upstream fetch) touched.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::sync::lock;

const IDLE_EXIT: Duration = Duration::from_secs(30);
/// A worker idle this long frees its state and unused stack. Short
/// enough that memory settles soon after a burst; long enough that a busy
/// worker never pays for it.
const TRIM_AFTER: Duration = Duration::from_millis(250);
/// Past the soft bound, a job that waited this long while no worker took any
/// job gets a new worker. Measured with 32 busy keep-alive clients on 2 CPUs
/// (wrk on the same CPUs): at 1 ms, run-queue delays alone passed it and the
/// pool grew to ~30 threads for no gain; at 2-5 ms it stayed at 8 workers,
/// with more requests/s.
pub const STARVED: Duration = Duration::from_millis(5);
/// ... and only if every running job has run this long: workers stuck (on
/// AWS, on a lock) rather than runnable workers waiting for a CPU. With two
/// busy processes beside it on 2 CPUs, run-queue delays alone kept the queue
/// quiet past [`STARVED`] and grew the pool to its bound; a job that ran this
/// long without finishing is not a cache hit. It is also about the most a
/// cache hit waits when every worker is stuck on AWS.
pub const STUCK: Duration = Duration::from_millis(25);

type Work<T, S> = dyn Fn(T, &mut S, &QueueView) + Send + Sync;

/// Runs jobs `T` on workers that each keep a state `S` between jobs.
pub struct Pool<T, S> {
    shared: Arc<Shared<T, S>>,
}

struct Shared<T, S> {
    state: Mutex<State<T>>,
    ready: Condvar,
    min: usize,
    soft: usize,
    max: usize,
    /// Mirrors `jobs.len()`, for workers deciding whether to linger.
    queued: QueueView,
    stack_size: usize,
    work: Box<Work<T, S>>,
}

struct State<T> {
    jobs: VecDeque<(Instant, T)>,
    idle: usize,
    threads: usize,
    /// When a worker last took a job: a queue that moves is not starved.
    /// Every running job started at or before it, so it also tells how long
    /// the youngest of them has run.
    last_taken: Instant,
}

/// Lets a job see whether other jobs are waiting for a worker.
pub struct QueueView(AtomicUsize);

impl QueueView {
    /// Whether jobs are waiting: then a worker should not linger on its own
    /// job.
    pub fn others_waiting(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }

    fn set(&self, queued: usize) {
        self.0.store(queued, Ordering::Relaxed);
    }

    /// A view of a queue with `queued` jobs waiting, for tests of the jobs.
    #[cfg(test)]
    pub fn fixed(queued: usize) -> QueueView {
        QueueView(AtomicUsize::new(queued))
    }
}

impl<T: Send + 'static, S: Default + 'static> Pool<T, S> {
    /// Up to `soft` workers start as soon as a job finds none idle; beyond
    /// that, up to `max`, only for jobs that waited [`STARVED`] behind
    /// workers stuck for [`STUCK`] (see [`Pool::grow_if_starved`]).
    pub fn new(
        min: usize,
        soft: usize,
        max: usize,
        stack_size: usize,
        work: impl Fn(T, &mut S, &QueueView) + Send + Sync + 'static,
    ) -> Pool<T, S> {
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    idle: 0,
                    threads: 0,
                    last_taken: Instant::now(),
                }),
                ready: Condvar::new(),
                min,
                soft: soft.clamp(1, max.max(1)),
                max: max.max(min).max(1),
                queued: QueueView(AtomicUsize::new(0)),
                stack_size,
                work: Box::new(work),
            }),
        }
    }

    pub fn submit(&self, job: T) {
        let mut state = lock(&self.shared.state);
        state.jobs.push_back((Instant::now(), job));
        self.shared.queued.set(state.jobs.len());
        if state.jobs.len() > state.idle && state.threads < self.shared.soft {
            state.threads += 1;
            drop(state);
            self.spawn();
        } else {
            drop(state);
            self.shared.ready.notify_one();
        }
    }

    /// Hands `job` to a worker only if one is idle; otherwise gives it back.
    pub fn try_submit_idle(&self, job: T) -> Result<(), T> {
        let mut state = lock(&self.shared.state);
        if state.idle <= state.jobs.len() {
            return Err(job);
        }
        state.jobs.push_back((Instant::now(), job));
        self.shared.queued.set(state.jobs.len());
        drop(state);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Starts workers when a job has waited [`STARVED`], no worker took one
    /// for as long, and every running job has run [`STUCK`]: every worker is
    /// stuck (most likely on AWS). A queue that moves, only slower than it
    /// could on a busy CPU, is left alone. Returns when to call again: `None`
    /// while nothing is queued.
    pub fn grow_if_starved(&self) -> Option<Duration> {
        self.grow_if_starved_at(Instant::now())
    }

    fn grow_if_starved_at(&self, now: Instant) -> Option<Duration> {
        let mut state = lock(&self.shared.state);
        let waited = now.saturating_duration_since(state.jobs.front()?.0);
        if waited < STARVED {
            return Some(STARVED - waited);
        }
        // No job taken for STUCK: every running job (all started no later)
        // has run at least that long.
        let quiet = now.saturating_duration_since(state.last_taken);
        if quiet < STUCK {
            return Some(STUCK - quiet);
        }
        let unserved = state.jobs.len().saturating_sub(state.idle);
        let start = unserved.min(self.shared.max.saturating_sub(state.threads));
        state.threads += start;
        drop(state);
        for _ in 0..start {
            self.spawn();
        }
        Some(STARVED)
    }

    fn spawn(&self) {
        let shared = self.shared.clone();
        let spawned = thread::Builder::new()
            .name("worker".into())
            .stack_size(self.shared.stack_size)
            .spawn(move || worker(&shared));
        if let Err(e) = spawned {
            log::error!("cannot start a worker thread: {e}");
            let mut state = lock(&self.shared.state);
            state.threads -= 1;
        }
    }
}

fn worker<T, S: Default>(shared: &Shared<T, S>) {
    let mut own = S::default();
    let mut trimmed = true;
    let mut state = lock(&shared.state);
    loop {
        if let Some((_, job)) = state.jobs.pop_front() {
            shared.queued.set(state.jobs.len());
            state.last_taken = Instant::now();
            drop(state);
            // A panic in one job must not take a worker slot with it, nor
            // leave its state half-updated for the next.
            let run = std::panic::AssertUnwindSafe(|| (shared.work)(job, &mut own, &shared.queued));
            if std::panic::catch_unwind(run).is_err() {
                log::error!("a request handler panicked; the connection was dropped");
                own = S::default();
            }
            trimmed = false;
            state = lock(&shared.state);
            continue;
        }
        state.idle += 1;
        let wait = if trimmed { IDLE_EXIT } else { TRIM_AFTER };
        let (next, timeout) = shared
            .ready
            .wait_timeout(state, wait)
            .unwrap_or_else(PoisonError::into_inner);
        state = next;
        state.idle -= 1;
        if !timeout.timed_out() || !state.jobs.is_empty() {
            continue;
        }
        if !trimmed {
            drop(state);
            own = S::default();
            crate::os::stack::release_unused();
            trimmed = true;
            state = lock(&shared.state);
            continue;
        }
        if state.threads > shared.min {
            state.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn grows_to_the_bound_and_runs_everything() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = mpsc::channel();
        let done_tx = Mutex::new(done_tx);
        let (r, p) = (running.clone(), peak.clone());
        let pool = Pool::new(1, 4, 4, 64 * 1024, move |n: u32, _: &mut (), _| {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(50));
            r.fetch_sub(1, Ordering::SeqCst);
            let _ = done_tx.lock().unwrap().send(n);
        });
        for n in 0..12 {
            pool.submit(n);
        }
        let mut seen: Vec<u32> = (0..12)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        seen.sort();
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn past_the_soft_bound_grows_only_when_starved() {
        let (done_tx, done_rx) = mpsc::channel();
        let done_tx = Mutex::new(done_tx);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        // Job 0 blocks (a worker stuck on AWS); the others finish at once.
        let pool = Pool::new(1, 1, 4, 64 * 1024, move |n: u32, _: &mut (), _| {
            if n == 0 {
                let _ = release_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(10));
            }
            let _ = done_tx.lock().unwrap().send(n);
        });
        pool.submit(0);
        thread::sleep(Duration::from_millis(20));
        pool.submit(1);
        // At the soft bound: job 1 waits for a worker instead of starting one.
        assert!(done_rx.recv_timeout(Duration::from_millis(50)).is_err());
        assert_eq!(lock(&pool.shared.state).threads, 1);
        // Still within STARVED of queueing: not yet.
        let next = pool.grow_if_starved().expect("a job is queued");
        assert!(next <= STARVED);
        thread::sleep(STARVED);
        pool.grow_if_starved();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        assert_eq!(lock(&pool.shared.state).threads, 2);
        assert_eq!(pool.grow_if_starved(), None);
        release_tx.send(()).unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(0));
    }

    #[test]
    fn a_moving_queue_is_not_starved() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let pool = Pool::new(1, 1, 4, 64 * 1024, move |_: u32, _: &mut (), _| {
            let _ = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
        });
        pool.submit(0);
        wait_for(|| lock(&pool.shared.state).jobs.is_empty());
        let started = lock(&pool.shared.state).last_taken;
        pool.submit(1);
        // Job 1 has waited three times STARVED, but a worker took a job just
        // before: the queue moves, nothing is added.
        let later = lock(&pool.shared.state).jobs[0].0 + STARVED * 3;
        lock(&pool.shared.state).last_taken = later - STARVED / 2;
        assert!(pool.grow_if_starved_at(later).is_some());
        assert_eq!(lock(&pool.shared.state).threads, 1);
        // Quiet for longer than STARVED, but the running job is young: a
        // worker waiting for a CPU, not one stuck. Nothing is added.
        {
            let mut state = lock(&pool.shared.state);
            state.jobs[0].0 = started;
            state.last_taken = started;
        }
        assert_eq!(
            pool.grow_if_starved_at(started + STUCK / 2),
            Some(STUCK / 2)
        );
        assert_eq!(lock(&pool.shared.state).threads, 1);
        // The running job is old, the queue quiet: stuck. Now it grows.
        assert!(pool.grow_if_starved_at(started + STUCK).is_some());
        assert_eq!(lock(&pool.shared.state).threads, 2);
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
    }

    #[test]
    fn worker_state_lives_across_jobs_until_a_panic_or_a_trim() {
        let (seen_tx, seen_rx) = mpsc::channel();
        let seen_tx = Mutex::new(seen_tx);
        // One worker; each job counts itself in the worker's state.
        let pool = Pool::new(1, 1, 1, 64 * 1024, move |panic: bool, jobs: &mut u32, _| {
            *jobs += 1;
            assert!(!panic, "job asked to panic");
            let _ = seen_tx.lock().unwrap().send(*jobs);
        });
        let next = |panic| {
            pool.submit(panic);
            seen_rx.recv_timeout(Duration::from_secs(5))
        };
        assert_eq!(next(false), Ok(1));
        assert_eq!(next(false), Ok(2));
        pool.submit(true);
        assert_eq!(next(false), Ok(1), "fresh state after a panic");
        assert_eq!(next(false), Ok(2));
        thread::sleep(TRIM_AFTER * 4);
        assert_eq!(next(false), Ok(1), "fresh state after idling");
    }

    fn wait_for(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            thread::sleep(Duration::from_millis(1));
        }
    }
}
