//! The listeners (TCP on loopback by default, and a unix socket if asked),
//! one poller thread that accepts connections and parks idle ones, and a
//! bounded pool of workers that serve requests.
//!
//! tiny_http was the first choice; it spawns a thread per connection and reads
//! heads without a size or time limit (README, "Design notes"). This small
//! std::net + httparse server keeps idle connections in `poll(2)` instead, so a
//! thousand idle clients cost a thousand file descriptors, not a thousand threads.
//! The poller also holds the connections whose answers the client does not
//! read yet (waiting for room to write) and drains refused ones, so a worker
//! only ever runs requests.
//!
//! `http` is the protocol without I/O (messages, head parser, renderer),
//! `socket` the TCP and unix sockets, `conn` the I/O of one connection,
//! `pool` the workers that run `conn`. One poller serves every listener
//! (`bind_address`'s TCP socket and `unix_socket_path`'s) with one pool.
//! The request handler is a closure, so the server knows nothing of the API.

mod conn;
// Public: the API speaks in these messages, and the fuzz target drives the
// real head parser.
pub mod http;
mod pool;
pub mod socket;

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::os;
use crate::os::io::{is_ready, poll_in, poll_out, PollFd};
use conn::{Conn, Next, Scratch, Wait};
use http::{Request, Response};
use pool::{Pool, QueueView};
use socket::Listener;

/// Open connections of the API's listeners beyond this are closed on
/// accept; bounds memory and fds.
pub const MAX_CONNECTIONS: usize = 8192;
/// Bytes held for parked connections: incomplete request heads (up to 64 KiB
/// each), pipelined requests, and answers their clients have not read.
/// Without this bound, thousands of clients trickling heads or not reading
/// could hold hundreds of MB.
const MAX_PENDING_BYTES: usize = 16 << 20;
/// Workers kept even when idle.
const MIN_WORKERS: usize = 4;
/// Workers started at once when a request finds none idle, per CPU. Beyond
/// that the pool grows only for requests that waited (see `pool`); a cache
/// hit is CPU work, and each extra thread costs ~13 KiB while it lives.
const SOFT_WORKERS_PER_CPU: usize = 4;
/// Workers beyond `max_conn`, so that a saturated agent can still read a
/// request and answer it with 429 or serve `/ping`.
const EXTRA_WORKERS: usize = 8;
const STACK_SIZE: usize = if cfg!(debug_assertions) {
    4 << 20
} else {
    1 << 20
};

pub struct Settings {
    /// Idle or stalled connections are closed after this long.
    pub client_timeout: Duration,
    pub max_conn: usize,
    /// Accepted sockets get IP TTL 1, so that no packet of theirs crosses a
    /// router: on for the API's loopback listener; off for the metrics
    /// listener, which scrapers elsewhere reach.
    pub ttl_one: bool,
    /// Open connections beyond this are closed on accept.
    pub max_open: usize,
}

/// Binds `address:port` (the config allows loopback addresses unless told
/// otherwise: the agent must not be reachable from the network).
pub fn bind(address: IpAddr, port: u16) -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((address, port)))
}

/// Serves forever on `listeners`.
pub fn run<H>(listeners: Vec<Listener>, settings: Settings, handler: H) -> io::Result<()>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    for listener in &listeners {
        listener.set_nonblocking()?;
    }
    let (wake_rx, wake_tx) = UnixStream::pair()?;
    wake_rx.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    let (park_tx, park_rx) = mpsc::channel();
    let returns = Returns {
        park: park_tx,
        wake: wake_tx,
    };
    let handler = Arc::new(handler);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = Pool::new(
        MIN_WORKERS,
        (cpus * SOFT_WORKERS_PER_CPU).max(MIN_WORKERS * 2),
        settings.max_conn + EXTRA_WORKERS,
        STACK_SIZE,
        move |conn: Conn, scratch: &mut Scratch, queue: &QueueView| {
            if let Next::Park(conn) = conn::serve(conn, &*handler, scratch, queue) {
                returns.park(conn);
            }
        },
    );
    Poller {
        listeners,
        wake: wake_rx,
        parked_rx: park_rx,
        parked: Vec::new(),
        pool,
        timeout: settings.client_timeout,
        ttl_one: settings.ttl_one,
        max_open: settings.max_open,
        accept_paused_until: None,
    }
    .run()
}

/// How workers hand a connection back to the poller.
struct Returns {
    park: Sender<Conn>,
    wake: UnixStream,
}

impl Returns {
    fn park(&self, conn: Conn) {
        if self.park.send(conn).is_ok() {
            // A full wake buffer means a wake-up is already pending.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

struct Poller {
    listeners: Vec<Listener>,
    wake: UnixStream,
    parked_rx: Receiver<Conn>,
    parked: Vec<Conn>,
    pool: Pool<Conn, Scratch>,
    timeout: Duration,
    ttl_one: bool,
    max_open: usize,
    accept_paused_until: Option<Instant>,
}

impl Poller {
    fn run(mut self) -> io::Result<()> {
        let mut fds: Vec<PollFd> = Vec::new();
        loop {
            for conn in self.parked_rx.try_iter() {
                if conn.wait == Wait::Ready {
                    self.pool.submit(conn);
                } else {
                    self.parked.push(conn);
                }
            }
            self.shed_pending();
            let now = Instant::now();
            let timeout = self.timeout;
            self.parked.retain(|c| now < c.expires_at(timeout));
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
            }

            fds.clear();
            fds.push(poll_in(self.wake.as_raw_fd()));
            let paused = self.accept_paused_until.is_some();
            for listener in &self.listeners {
                // poll ignores negative fds
                fds.push(poll_in(if paused { -1 } else { listener.as_raw_fd() }));
            }
            let first_conn = fds.len();
            fds.extend(self.parked.iter().map(|c| match c.wait {
                Wait::Read | Wait::Drain | Wait::Ready => poll_in(c.stream.as_raw_fd()),
                Wait::Write => poll_out(c.stream.as_raw_fd()),
            }));

            let next_expiry = self
                .parked
                .iter()
                .map(|c| c.expires_at(timeout).saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_secs(1));
            // Queued requests that wait too long get new workers.
            let starved_check = self.pool.grow_if_starved().unwrap_or(Duration::MAX);
            let wait = next_expiry
                .min(Duration::from_secs(1))
                .min(starved_check)
                .max(Duration::from_micros(100));
            match os::io::poll(&mut fds, wait) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if is_ready(&fds[0]) {
                let mut sink = [0u8; 256];
                while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
            }
            // Dispatch before accepting: `fds` indexes the parked list as it was.
            let mut still_draining = Vec::new();
            for i in (0..self.parked.len()).rev() {
                if is_ready(&fds[i + first_conn]) {
                    let mut conn = self.parked.swap_remove(i);
                    if conn.wait != Wait::Drain {
                        self.pool.submit(conn);
                    } else if conn::drain(&mut conn) {
                        // Draining is a few non-blocking reads: done here,
                        // without a round through a worker.
                        still_draining.push(conn);
                    }
                }
            }
            self.parked.append(&mut still_draining);
            for at in 0..self.listeners.len() {
                if is_ready(&fds[1 + at]) {
                    self.accept(at);
                }
            }
        }
    }

    /// Closes the connections holding the largest incomplete heads until the
    /// total is back under [`MAX_PENDING_BYTES`].
    fn shed_pending(&mut self) {
        let mut total: usize = self.parked.iter().map(Conn::pending_len).sum();
        if total <= MAX_PENDING_BYTES {
            return;
        }
        self.parked
            .sort_by_key(|c| std::cmp::Reverse(c.pending_len()));
        let mut shed = 0;
        while total > MAX_PENDING_BYTES && shed < self.parked.len() {
            total -= self.parked[shed].pending_len();
            shed += 1;
        }
        log::warn!("closing {shed} connections holding the most unwritten answers or incomplete request heads");
        self.parked.drain(..shed);
    }

    fn accept(&mut self, at: usize) {
        loop {
            match self.listeners[at].accept(self.ttl_one) {
                Ok(stream) => {
                    if self.parked.len() >= self.max_open {
                        log::warn!("{} connections open; refusing a new one", self.max_open);
                        continue;
                    }
                    // Most clients send their request right after
                    // connecting: an idle worker takes it at once, saving a
                    // round through poll(2). Never grows the pool.
                    if let Err(conn) = self.pool.try_submit_idle(Conn::new(stream)) {
                        self.parked.push(conn);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_resource_exhaustion(&e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    log::warn!("accept failed: {e}; pausing new connections for 100 ms");
                    self.accept_paused_until = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
                // A connection that died before we took it (ECONNABORTED, ...).
                Err(e) => log::debug!("accept: {e}"),
            }
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
