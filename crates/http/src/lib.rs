//! The listeners (TCP on loopback by default, and a unix socket if asked),
//! one epoll set that holds them and every open connection, the workers that
//! wait on it, and a keeper thread that closes connections which time out.
//!
//! tiny_http was the first choice; it spawns a thread per connection and reads
//! heads without a size or time limit (docs/design.md, "Why not tiny_http"). This small
//! std::net + httparse server keeps idle connections in epoll instead, so a
//! thousand idle clients cost a thousand file descriptors, not a thousand
//! threads. Connections whose answers the client does not read yet (waiting
//! for room to write) and refused ones being drained wait there too, so a
//! worker only ever runs requests.
//!
//! Each worker takes the next ready event itself and serves it. Connections
//! are registered for edges, so nothing needs arming after a request: a
//! keep-alive request costs `epoll_wait`, `read` and `write` on one thread.
//! Arming each connection again (one-shot) cost an `epoll_ctl` a request,
//! about a fourth of the syscalls. The first design had a poller
//! thread hand ready connections to workers through a queue and take idle
//! ones back through a channel and a wake-up byte; measured with
//! `wrk -t2 -c32` on 2 CPUs, 88 % of the agent's CPU was then in the kernel,
//! most of it threads sleeping and waking each other (docs/benchmarks.md).
//!
//! `http` is the protocol without I/O (messages, head parser, renderer),
//! `socket` the TCP and unix sockets, `conn` one connection (its states and
//! their transitions without I/O in `conn::machine`, and the I/O they ask for),
//! `registry` the open connections by epoll token, `pool` the workers. One
//! epoll set serves every listener (`bind_address`'s TCP socket and
//! `unix_socket_path`'s) with one pool. The request handler is a closure, so
//! the server knows nothing of the API.

#![forbid(unsafe_code)]

mod conn;
// Public: the API speaks in these messages, and the fuzz target drives the
// real head parser.
pub mod http;
mod pool;
mod registry;
pub mod socket;

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conn::{Conn, Next, Scratch, Wait};
use http::{Ready, Reply, Request};
use pool::{Load, Pool};
use registry::{Parked, Registry, Token};
use secrets_manager_agent_core::sync::lock;
use secrets_manager_agent_os::epoll::{Epoll, Interest, Mode};
use secrets_manager_agent_os::io::{is_resource_exhaustion, readable_within};
use socket::Listener;

/// Open connections of the API's listeners beyond this are closed on
/// accept; bounds memory and fds.
pub const MAX_CONNECTIONS: usize = 8192;
/// Bytes held for parked connections: incomplete requests (up to 64 KiB of
/// head and 64 KiB of body each), pipelined requests, and answers their
/// clients have not read. Without this bound, thousands of clients trickling
/// requests or not reading could hold hundreds of MB.
const MAX_PENDING_BYTES: usize = 16 << 20;
/// Workers kept even when idle, and started at once when none waits: one
/// per CPU, at least this many. A cache hit is CPU work, and no worker ever
/// waits for AWS, so more workers than CPUs only take turns on them:
/// measured with `wrk -t2 -c32` on 2 CPUs, 2 workers served as many
/// requests/s as 4 with p99 0.53-0.58 ms against 1.0-1.7 ms, and with the
/// agent on one CPU, 1 worker served 9 % more requests/s than 2, at 7 %
/// less CPU a request (docs/benchmarks.md).
const MIN_WORKERS: usize = 1;
/// Workers beyond `max_conn`, so that a saturated agent can still read a
/// request and answer it with 429 or serve `/ping`.
const EXTRA_WORKERS: usize = 8;
const STACK_SIZE: usize = if cfg!(debug_assertions) {
    4 << 20
} else {
    1 << 20
};
/// Connections one worker accepts before it arms the listener again and
/// lets another take over: a flood of connects does not keep one worker
/// from requests.
const ACCEPT_BATCH: usize = 64;
/// The longest the keeper sleeps: a connection parked while it sleeps is
/// closed at most this late.
const KEEPER_TICK: Duration = Duration::from_millis(250);

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

/// Serves forever on `listeners`; the calling thread becomes the keeper.
pub fn run<H>(listeners: Vec<Listener>, settings: Settings, handler: H) -> io::Result<()>
where
    H: Fn(&Request) -> Reply + Send + Sync + 'static,
{
    let epoll = Epoll::new()?;
    for (at, listener) in listeners.iter().enumerate() {
        listener.set_nonblocking()?;
        epoll.add(listener, Interest::Read, Mode::Once, at as Token)?;
    }
    let server = Arc::new(Server {
        epoll,
        registry: Registry::default(),
        listeners,
        handler,
        ttl_one: settings.ttl_one,
        max_open: settings.max_open,
        accept_paused_until: Mutex::new(None),
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (waiting, working) = (server.clone(), server.clone());
    let workers = cpus.max(MIN_WORKERS);
    let pool = Pool::new(
        workers,
        workers,
        settings.max_conn + EXTRA_WORKERS,
        STACK_SIZE,
        move |wait| loop {
            match waiting.epoll.wait_one(wait) {
                Ok(token) => return token,
                // A stop and continue of the process: wait again (not taken
                // for an idle worker).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("waiting for connections failed: {e}");
                    std::thread::sleep(wait.min(Duration::from_millis(100)));
                    return None;
                }
            }
        },
        move |token, scratch: &mut Scratch, load: &Load| working.serve(token, scratch, load),
    );
    server.keep(&pool, settings.client_timeout)
}

struct Server<H> {
    epoll: Epoll,
    registry: Registry<Conn>,
    listeners: Vec<Listener>,
    handler: H,
    ttl_one: bool,
    max_open: usize,
    /// Set when accepting ran out of descriptors or memory: the listener
    /// that failed stays disarmed until then, or until the keeper's next
    /// look (at most [`KEEPER_TICK`] later), which arms the listeners again.
    accept_paused_until: Mutex<Option<Instant>>,
}

impl<H> Server<H>
where
    H: Fn(&Request) -> Reply + Send + Sync + 'static,
{
    /// A worker's turn: one event, for a listener or a connection.
    fn serve(self: &Arc<Self>, token: Token, scratch: &mut Scratch, load: &Load) {
        if let Some(at) = self.listener_at(token) {
            if self.accept(at) {
                self.arm_listener(at);
            }
            return;
        }
        let Some(mut conn) = self.registry.take(token) else {
            // Closed by the keeper while this event was on its way, or
            // being served by another worker, which then serves it again.
            return;
        };
        // Frees the slot however this turn ends, a panic included (the pool
        // catches it): a slot left taken would count against `max_open`
        // for good.
        let taken = Taken {
            registry: &self.registry,
            token,
        };
        loop {
            let next = conn::serve(conn, &self.handler, scratch, load);
            let (parking, ready) = match next {
                Next::Park(conn) => (conn, None),
                // Parked without arming first, so that a wake-up that comes
                // at once finds it.
                Next::Later(conn, ready) => (conn, Some(ready)),
                // The connection is closed; the guard frees its slot.
                Next::Close => return,
            };
            match self
                .registry
                .park(token, parking, |conn| self.arm(conn, token))
            {
                Parked::Yes => {
                    // The slot is the parked connection's again.
                    std::mem::forget(taken);
                    if let Some(ready) = ready {
                        self.wake_when(ready, token);
                    }
                    return;
                }
                Parked::Again(again) => {
                    // An event came meanwhile: served again at once. A
                    // request that waits on AWS gets its wake-up first; the
                    // next turn finds it waiting, or woken.
                    if let Some(ready) = ready {
                        self.wake_when(ready, token);
                    }
                    conn = again;
                }
                Parked::No(conn) => {
                    std::mem::forget(taken);
                    log::debug!("cannot wait for a connection again; closing it");
                    drop(conn);
                    return;
                }
            }
        }
    }

    fn wake_when(self: &Arc<Self>, ready: Ready, token: Token) {
        let server = self.clone();
        ready(Box::new(move || server.wake(token)));
    }

    /// Registers a parked connection again where its next event would not
    /// come from an edge of its own: input left unread, an answer to finish
    /// writing, a turn given up. An idle connection needs nothing, unless
    /// it was registered for room to write: a unix socket reports room each
    /// time its client reads, so that would cost an event a request.
    fn arm(&self, conn: &mut Conn, token: Token) -> io::Result<()> {
        match interest(conn.wait()) {
            Some(interest) => self.register(conn, interest, token),
            None if conn.wait() == Wait::Read && conn.watches_writes => {
                self.register(conn, Interest::Read, token)
            }
            None => Ok(()),
        }
    }

    fn register(&self, conn: &mut Conn, interest: Interest, token: Token) -> io::Result<()> {
        conn.watches_writes = interest != Interest::Read;
        self.epoll
            .modify(&conn.stream, interest, Mode::Edges, token)
    }

    /// Registers a connection whose answer is there again: its socket has
    /// room (all before it was written), so the event comes at once. If it
    /// has not (a client that pipelined and stopped reading), it waits like
    /// any answer the client does not read, one client timeout from now.
    fn wake(&self, token: Token) {
        let failed = self.registry.notify(token, |conn| {
            // A late wake-up for an answer already given must not register
            // a connection that waits for another: it would get events for
            // room to write, one after another, and nothing to write.
            if !conn.wake() {
                return Ok(());
            }
            self.register(conn, Interest::Any, token)
        });
        if failed.is_some() {
            log::debug!("cannot wake a waiting connection; closing it");
        }
    }

    fn listener_at(&self, token: Token) -> Option<usize> {
        usize::try_from(token)
            .ok()
            .filter(|&at| at < self.listeners.len())
    }

    fn arm_listener(&self, at: usize) {
        if let Err(e) =
            self.epoll
                .modify(&self.listeners[at], Interest::Read, Mode::Once, at as Token)
        {
            log::error!("cannot wait for new connections: {e}");
        }
    }

    /// Accepts what the listener has, up to a batch; returns whether to arm
    /// it again (not while accepting is paused).
    fn accept(&self, at: usize) -> bool {
        for _ in 0..ACCEPT_BATCH {
            match self.listeners[at].accept(self.ttl_one) {
                Ok(stream) => {
                    if self.registry.len() >= self.max_open {
                        log::warn!("{} connections open; refusing a new one", self.max_open);
                        continue;
                    }
                    let conn = Conn::new(stream);
                    let hint = std::os::fd::AsRawFd::as_raw_fd(&conn.stream) as usize;
                    let added = self.registry.insert(conn, hint, |conn, token| {
                        self.epoll
                            .add(&conn.stream, Interest::Read, Mode::Edges, token)
                    });
                    if let Err(e) = added {
                        log::warn!("cannot wait for a new connection: {e}; closing it");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_resource_exhaustion(&e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    log::warn!("accept failed: {e}; pausing new connections for 100 ms");
                    *lock(&self.accept_paused_until) =
                        Some(Instant::now() + Duration::from_millis(100));
                    return false;
                }
                // A connection that died before we took it (ECONNABORTED, ...).
                Err(e) => log::debug!("accept: {e}"),
            }
        }
        true
    }

    /// The keeper: closes connections that timed out, sheds pending bytes
    /// beyond [`MAX_PENDING_BYTES`], resumes paused listeners and grows the
    /// pool when every worker is stuck. Never returns.
    fn keep(&self, pool: &Pool<Token, Scratch>, timeout: Duration) -> io::Result<()> {
        let mut scan_at = Instant::now();
        loop {
            let now = Instant::now();
            if now >= scan_at {
                scan_at = now + self.scan(now, timeout);
            }
            // While every worker is busy, the pool is looked at more often
            // than the connections.
            // An epoll set is readable while it holds ready events.
            let work_waits = || readable_within(&self.epoll, Duration::ZERO);
            let mut sleep = scan_at.saturating_duration_since(now);
            if let Some(again) = pool.grow_if_stuck(work_waits) {
                sleep = sleep.min(again);
            }
            std::thread::sleep(sleep.max(Duration::from_micros(100)));
        }
    }

    /// One look at every parked connection: closes those that timed out and
    /// sheds pending bytes, resumes paused listeners. Returns when to look
    /// again.
    fn scan(&self, now: Instant, timeout: Duration) -> Duration {
        let mut next = KEEPER_TICK;
        let mut pending = 0;
        let expired = self.registry.evict(|_, conn| {
            let at = conn.expires_at(timeout);
            if now >= at {
                return true;
            }
            next = next.min(at - now);
            pending += conn.pending_len();
            false
        });
        // Closed here, outside the registry's locks.
        drop(expired);
        if pending > MAX_PENDING_BYTES {
            self.shed(pending);
        }
        let resume = {
            let mut paused = lock(&self.accept_paused_until);
            let resume = paused.is_some_and(|until| now >= until);
            if resume {
                *paused = None;
            }
            resume
        };
        if resume {
            (0..self.listeners.len()).for_each(|at| self.arm_listener(at));
        } else if let Some(until) = *lock(&self.accept_paused_until) {
            next = next.min(until.saturating_duration_since(now));
        }
        next
    }

    /// Closes the connections holding the most bytes until `total` is back
    /// under [`MAX_PENDING_BYTES`].
    fn shed(&self, mut total: usize) {
        let mut holding = Vec::new();
        self.registry.evict(|token, conn| {
            holding.push((conn.pending_len(), token));
            false
        });
        holding.sort_unstable_by(|a, b| b.cmp(a));
        let mut chosen = std::collections::HashSet::new();
        for (len, token) in holding {
            if total <= MAX_PENDING_BYTES {
                break;
            }
            total = total.saturating_sub(len);
            chosen.insert(token);
        }
        let shed = self.registry.evict(|token, _| chosen.contains(&token));
        log::warn!(
            "closing {} connections holding the most unwritten answers or incomplete requests",
            shed.len()
        );
    }
}

/// A connection taken out of the registry for a worker's turn.
struct Taken<'a> {
    registry: &'a Registry<Conn>,
    token: Token,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.registry.remove(self.token);
    }
}

/// What a parked connection is registered again for, in epoll's terms;
/// `None` when the edges it is registered for already bring its next event.
fn interest(wait: Wait) -> Option<Interest> {
    match wait {
        // Its input was read to the end: the next bytes or a hang-up are
        // an edge.
        Wait::Read => None,
        // Reads stopped after a few: what is unread gives an event at once.
        Wait::Drain => Some(Interest::Read),
        // A refused write set the socket to report room, but room may have
        // come before this registration: it then reports it at once.
        Wait::Write => Some(Interest::Any),
        // Pipelined requests are ready: a socket that can take an answer
        // gives an event at once.
        Wait::Ready => Some(Interest::Any),
        // Armed by its wake-up.
        Wait::Later => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Response, ResponseBody};
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Starts a server whose handler panics on `/panic`; returns its port.
    fn panicky_server(max_open: usize) -> u16 {
        let listener = bind(IpAddr::from([127, 0, 0, 1]), 0).unwrap();
        let port = listener.local_addr().unwrap().port();
        let settings = Settings {
            client_timeout: Duration::from_secs(5),
            max_conn: 4,
            ttl_one: false,
            max_open,
        };
        std::thread::spawn(move || {
            run(
                vec![Listener::Tcp(listener)],
                settings,
                |request: &Request| {
                    assert!(request.target != "/panic", "asked to panic");
                    Reply::Now(Response::new(200, "text/plain", ResponseBody::Static("ok")))
                },
            )
        });
        port
    }

    fn get(port: u16, target: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn a_panicking_request_closes_its_connection_and_frees_its_slot() {
        let port = panicky_server(2);
        assert!(get(port, "/ok").starts_with("HTTP/1.1 200"));
        // More panics than open connections are allowed: each one's slot
        // must come back, or new connections would be refused.
        for _ in 0..5 {
            assert_eq!(get(port, "/panic"), "", "closed without an answer");
        }
        assert!(get(port, "/ok").starts_with("HTTP/1.1 200"));
    }
}
