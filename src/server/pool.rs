//! A worker pool that grows on demand up to a fixed bound and shrinks when idle.
//!
//! Requests that wait on AWS hold a worker, so the pool must be able to grow to
//! `max_conn` plus some headroom; otherwise a hanging upstream would starve
//! cache hits. Idle connections never hold a worker (the poller parks them).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::sync::lock;
use std::thread;
use std::time::Duration;

const IDLE_EXIT: Duration = Duration::from_secs(30);

type Work<T> = dyn Fn(T, &mut Scratch) + Send + Sync;

pub struct Pool<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    min: usize,
    max: usize,
    stack_size: usize,
    work: Box<Work<T>>,
}

struct State<T> {
    jobs: VecDeque<T>,
    idle: usize,
    threads: usize,
}

/// Per-worker buffers reused across requests, so a request allocates little.
#[derive(Default)]
pub struct Scratch {
    pub input: Vec<u8>,
    pub output: Vec<u8>,
    /// What one `read` fills; zeroed once per worker, not per request.
    pub chunk: Vec<u8>,
}

impl<T: Send + 'static> Pool<T> {
    pub fn new(
        min: usize,
        max: usize,
        stack_size: usize,
        work: impl Fn(T, &mut Scratch) + Send + Sync + 'static,
    ) -> Pool<T> {
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    idle: 0,
                    threads: 0,
                }),
                ready: Condvar::new(),
                min,
                max: max.max(min).max(1),
                stack_size,
                work: Box::new(work),
            }),
        }
    }

    pub fn submit(&self, job: T) {
        let mut state = lock(&self.shared.state);
        state.jobs.push_back(job);
        if state.jobs.len() > state.idle && state.threads < self.shared.max {
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
        state.jobs.push_back(job);
        drop(state);
        self.shared.ready.notify_one();
        Ok(())
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

fn worker<T>(shared: &Shared<T>) {
    let mut scratch = Scratch::default();
    let mut state = lock(&shared.state);
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            // A panic in one request must not take a worker slot with it.
            let run = std::panic::AssertUnwindSafe(|| (shared.work)(job, &mut scratch));
            if std::panic::catch_unwind(run).is_err() {
                log::error!("a request handler panicked; the connection was dropped");
                scratch = Scratch::default();
            }
            state = lock(&shared.state);
            continue;
        }
        state.idle += 1;
        let (next, timeout) = shared
            .ready
            .wait_timeout(state, IDLE_EXIT)
            .unwrap_or_else(PoisonError::into_inner);
        state = next;
        state.idle -= 1;
        if timeout.timed_out() && state.jobs.is_empty() && state.threads > shared.min {
            state.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn grows_to_the_bound_and_runs_everything() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = mpsc::channel();
        let done_tx = Mutex::new(done_tx);
        let (r, p) = (running.clone(), peak.clone());
        let pool = Pool::new(1, 4, 64 * 1024, move |n: u32, _: &mut Scratch| {
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
}
