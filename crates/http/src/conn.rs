//! One client connection: read a request head (bounded in size), hand it to the
//! handler, write the answer, and decide whether the connection stays open.
//! Only the I/O is here: what the bytes mean (limits, keep-alive, bodies) is
//! decided by `http::parse_head`, and the answer's bytes by `http::render`.
//!
//! No worker ever waits for a client. Sockets are non-blocking: a worker
//! reads what has arrived (a client that trickles its head is parked again),
//! and writes what the socket takes of an answer; the rest waits in epoll
//! for room, under one deadline for the whole answer, and the
//! requests pipelined behind it wait unprocessed. A client that sends
//! hundreds of requests and never reads so holds memory bounded by the
//! keeper, not a thread; one that keeps reading gets a bounded turn at a time
//! while others wait. Measured with 850 such clients (200 pipelined reads of
//! a 64 KiB secret each) and the default `max_conn`: 10 threads, 20.7 MB RSS
//! and `/ping` in 1 ms, where blocking writes took 810 threads, 68.6 MB and
//! 14.9 s.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroize;

use crate::http::{
    parse_head, render, Head, Parsed, Ready, Reply, Request, Response, ResponseBody, Wake,
    MAX_HEAD, MAX_HEADERS,
};
use crate::pool::Load;
use crate::socket::Stream;
use secrets_manager_agent_core::metrics;
use secrets_manager_agent_core::secret::SecretBytes;
use secrets_manager_agent_os::io::read_appending;

const READ_CHUNK: usize = 4 * 1024;
/// After refusing a request, how much of the rest we swallow so the client can
/// read our answer instead of a reset.
const DRAIN_BYTES: usize = 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_millis(500);
/// Reads of 8 KiB per readiness: 64 KiB at most per event.
const DRAIN_READS_PER_WAKE: usize = 8;
/// The longest a request waits behind another's call to AWS before the
/// keeper closes it. That call always ends (its own timeouts and retries
/// bound it well below this): this is a last resort, not a policy.
const LATER_LIMIT: Duration = Duration::from_secs(300);
/// Answer bytes one connection may have rendered in one turn on a worker
/// while other connections wait for one: a client that pipelines hundreds of
/// requests for a large secret (and whose socket takes megabytes) otherwise
/// keeps a worker for as long as it likes, and the pool grows for the
/// others.
const TURN_BYTES: usize = 256 * 1024;

pub struct Conn {
    /// Non-blocking: no read or write here ever waits for the client.
    pub stream: Stream,
    /// Bytes of a request head not yet complete, or pipelined requests that
    /// wait until the answer before them is written.
    pending: Vec<u8>,
    /// An answer the socket has not taken whole yet.
    unsent: Option<Unsent>,
    /// A request whose answer waits on another's call to AWS.
    later: Option<Deferred>,
    /// What epoll waits for on this connection.
    pub wait: Wait,
    /// When the current wait began: the first byte of a partial head, the
    /// moment the connection went idle, the answer that did not fit the
    /// socket, the refusal being drained, or the request deferred (then,
    /// once woken, its answer being there). The keeper closes the
    /// connection when [`Conn::expires_at`] passes.
    pub since: Instant,
    /// Bytes swallowed while draining.
    drained: usize,
    /// Answer bytes rendered since the connection last ran out of requests
    /// or gave its worker up (see [`TURN_BYTES`]).
    turn: usize,
    /// Registered for room to write as well as for input (the server's
    /// business: see `server::Server::arm`).
    pub watches_writes: bool,
}

/// What a parked connection waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The next request, or the rest of a head.
    Read,
    /// Room in the socket for the rest of an answer. A client that does not
    /// read gets one client timeout for the whole answer, and holds no worker.
    Write,
    /// Swallowing what a refused client still sends before closing (a few
    /// reads per event: bounded, and no worker waits for it).
    Drain,
    /// Nothing: pipelined requests are ready to serve, and the connection
    /// only gave its worker up so others get a turn.
    Ready,
    /// The answer to its request: events for the connection (its client
    /// sent more, or hung up) leave it waiting until the call to AWS it
    /// waits on ends and wakes it.
    Later,
}

/// What the next turn of the serving loop has: a head (or not yet one), or
/// the answer of a request that waited.
enum Step<'a> {
    Head(Head<'a>),
    Answered(Then),
}

/// The answer still to come for a request, and how its connection goes on.
struct Deferred {
    answer: Box<dyn FnOnce() -> Response + Send>,
    stays_open: bool,
    then: Then,
    /// Set by the wake-up, before it arms the connection: events that come
    /// for the connection before (its client sent more, or hung up) find it
    /// still waiting. What the client sent is read after the answer.
    woken: Arc<AtomicBool>,
}

/// The rest of an answer, and what happens once it is written.
struct Unsent {
    /// May hold a secret: zeroed when dropped.
    bytes: SecretBytes,
    written: usize,
    then: Then,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Serve the next request (pipelined ones first).
    KeepAlive,
    /// The client asked to close.
    Close,
    /// The request had a body we do not read, or was refused: close after
    /// swallowing what the client still sends.
    Drain,
}

pub enum Next {
    Park(Conn),
    /// Parked ([`Wait::Later`]) until `ready` calls the wake-up it is
    /// given.
    Later(Conn, Ready),
    Close,
}

impl Conn {
    /// Bytes held for this connection: an incomplete head, pipelined
    /// requests (as allocated, which is what memory pays), and the part of an
    /// answer not yet written.
    pub fn pending_len(&self) -> usize {
        self.pending.capacity()
            + self
                .unsent
                .as_ref()
                .map_or(0, |u| u.bytes.len() - u.written)
    }

    pub fn new(stream: Stream) -> Conn {
        metrics::connection_opened();
        Conn {
            stream,
            pending: Vec::new(),
            unsent: None,
            later: None,
            wait: Wait::Read,
            since: Instant::now(),
            drained: 0,
            turn: 0,
            watches_writes: false,
        }
    }

    /// Takes a wake-up: whether the connection waits for it. If it does, it
    /// now waits for room to write the answer, one client timeout from now.
    /// A wake-up may come late: the connection may have been served after
    /// its flag was set and before this call, and wait for another call to
    /// AWS by now, or for nothing.
    pub fn wake(&mut self) -> bool {
        if self.wait != Wait::Later || !self.woken() {
            return false;
        }
        self.wait = Wait::Write;
        self.since = Instant::now();
        true
    }

    /// Whether the answer its deferred request waits for is there.
    fn woken(&self) -> bool {
        self.later
            .as_ref()
            .is_some_and(|later| later.woken.load(Ordering::Acquire))
    }

    /// When the keeper gives up on this connection: an idle or trickling
    /// client and an answer the client does not read get `timeout`, a drain
    /// a fixed half second, a request waiting on another's call to AWS
    /// [`LATER_LIMIT`] (the call ends long before).
    pub fn expires_at(&self, timeout: Duration) -> Instant {
        match self.wait {
            Wait::Read | Wait::Write | Wait::Ready => self.since + timeout,
            Wait::Drain => self.since + DRAIN_TIME,
            Wait::Later => self.since + LATER_LIMIT,
        }
    }

    fn park(mut self, wait: Wait) -> Next {
        self.wait = wait;
        Next::Park(self)
    }

    /// Back to epoll, behind the connections whose events are already
    /// waiting.
    fn give_up_turn(mut self) -> Next {
        self.turn = 0;
        self.since = Instant::now();
        self.park(Wait::Ready)
    }
}

/// A worker's buffers, reused across requests so that a request allocates
/// little. The pool replaces them with empty ones when the worker goes idle,
/// giving back what a burst grew.
#[derive(Default)]
pub struct Scratch {
    /// The bytes read: a head, or several pipelined ones (with the token).
    input: Vec<u8>,
    /// The answer being written (with the secret).
    output: Vec<u8>,
}

/// However a connection ends (closed, refused, timed out, shed), the
/// open-connections gauge goes down with it.
impl Drop for Conn {
    fn drop(&mut self) {
        metrics::connection_closed();
    }
}

/// The pool drops a worker's buffers when it goes idle or after a panic:
/// what they held is overwritten first.
impl Drop for Scratch {
    fn drop(&mut self) {
        self.input.zeroize();
        self.output.zeroize();
    }
}

/// Serves what the connection has sent; returns whether to keep it. `load`
/// tells whether other connections may wait for a worker. Never waits for
/// the client: reads and writes take what the socket has, and epoll watches
/// for the rest.
pub fn serve(
    mut conn: Conn,
    handle: &dyn Fn(&Request) -> Reply,
    scratch: &mut Scratch,
    load: &Load,
) -> Next {
    if conn.later.is_some() && !conn.woken() {
        return conn.park(Wait::Later);
    }
    if conn.unsent.is_some() {
        match flush(&mut conn) {
            Ok(Some(Then::KeepAlive)) => {
                conn.since = Instant::now();
                if conn.turn >= TURN_BYTES && !conn.pending.is_empty() && load.others_waiting() {
                    return conn.give_up_turn();
                }
            }
            Ok(Some(then)) => return finish(conn, then),
            Ok(None) => return conn.park(Wait::Write),
            Err(_) => return Next::Close,
        }
    }
    let Scratch {
        input: buf,
        output: out,
    } = scratch;
    buf.clear();
    // Taken, not drained into: an idle connection keeps no buffer that a
    // long head once grew.
    buf.append(&mut std::mem::take(&mut conn.pending));
    let was_partial = !buf.is_empty();
    let mut served = false;
    // Whether the socket had nothing more when last read: connections are
    // registered for edges (`os::epoll`), so one is parked only once its
    // input is all read, or no event would come for what is left.
    let mut drained = false;
    loop {
        // Filled only when there is something to parse.
        let mut headers;
        let step = if let Some(later) = conn.later.take() {
            // Woken: the answer is there, and the request was taken off
            // the input when it was parked.
            render(out, &(later.answer)(), later.stays_open);
            conn.turn += out.len();
            Step::Answered(later.then)
        } else if buf.is_empty() {
            Step::Head(Head::Partial)
        } else {
            headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            Step::Head(parse_head(buf, &mut headers))
        };
        let (len, then) = match step {
            Step::Answered(then) => (0, then),
            Step::Head(Head::Complete(parsed)) => {
                let stays_open = parsed.stays_open();
                let reply = handle(&parsed.request);
                let Parsed {
                    len,
                    keep_alive,
                    has_body,
                    ..
                } = parsed;
                // A body we did not read would be taken for the next
                // request, so the connection ends after the answer.
                let then = match (has_body, keep_alive) {
                    (true, _) => Then::Drain,
                    (false, false) => Then::Close,
                    (false, true) => Then::KeepAlive,
                };
                match reply {
                    Reply::Now(response) => {
                        render(out, &response, stays_open);
                        conn.turn += out.len();
                        (len, then)
                    }
                    Reply::Later(later) => {
                        buf.drain(..len);
                        if then == Then::KeepAlive {
                            conn.pending.extend_from_slice(buf);
                        }
                        let woken = Arc::new(AtomicBool::new(false));
                        conn.later = Some(Deferred {
                            answer: later.answer,
                            stays_open,
                            then,
                            woken: woken.clone(),
                        });
                        conn.since = Instant::now();
                        conn.wait = Wait::Later;
                        let ready = later.ready;
                        let ready: Ready = Box::new(move |wake: Wake| {
                            ready(Box::new(move || {
                                woken.store(true, Ordering::Release);
                                wake();
                            }))
                        });
                        return Next::Later(conn, ready);
                    }
                }
            }
            Step::Head(Head::Partial) if drained => {
                // A head begun in this turn (after a served request, too)
                // gets a full timeout; one carried over keeps its start.
                if !was_partial || served {
                    conn.since = Instant::now();
                }
                conn.pending.extend_from_slice(buf);
                conn.turn = 0;
                return conn.park(Wait::Read);
            }
            Step::Head(Head::Partial) => {
                let room = (MAX_HEAD + 1 - buf.len()).min(READ_CHUNK);
                match read_appending(&conn.stream, buf, room) {
                    Ok(0) => return Next::Close,
                    // A short read took all there was. (Not quite: TCP
                    // stops a read at urgent data, which HTTP clients do not
                    // send; such a client waits for its next bytes or its
                    // timeout.)
                    Ok(n) => drained = n < room,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Next::Close,
                }
                continue;
            }
            Step::Head(Head::TooLarge) => {
                refusal(out, 431, "Request header fields too large");
                (buf.len(), Then::Drain)
            }
            Step::Head(Head::Invalid) => {
                refusal(out, 400, "Bad request");
                (buf.len(), Then::Drain)
            }
        };
        buf.drain(..len);
        match write_some(&conn.stream, out) {
            Ok(n) if n == out.len() => {}
            Ok(n) => {
                // The client is not reading (fast enough): keep the rest of
                // this answer, and the requests behind it unprocessed, until
                // the socket has room.
                conn.unsent = Some(Unsent {
                    bytes: SecretBytes::new(out[n..].to_vec()),
                    written: 0,
                    then,
                });
                if then == Then::KeepAlive {
                    conn.pending.extend_from_slice(buf);
                }
                conn.since = Instant::now();
                return conn.park(Wait::Write);
            }
            Err(_) => return Next::Close,
        }
        if then != Then::KeepAlive {
            return finish(conn, then);
        }
        served = true;
        // Requests ready, or input left to read: either way the connection
        // has more for this worker, which others may be waiting for.
        let more = !buf.is_empty() || !drained;
        if conn.turn >= TURN_BYTES && more && load.others_waiting() {
            conn.pending.extend_from_slice(buf);
            return conn.give_up_turn();
        }
        if buf.is_empty() && drained {
            // The next request wakes whichever worker waits, and an idle
            // client holds none.
            conn.since = Instant::now();
            conn.turn = 0;
            return conn.park(Wait::Read);
        }
    }
}

/// Writes what the socket takes of `bytes` now; returns how much.
fn write_some(mut stream: &Stream, bytes: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match stream.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes more of the unsent answer; `Some(then)` once it is all written.
fn flush(conn: &mut Conn) -> io::Result<Option<Then>> {
    let Some(unsent) = conn.unsent.as_mut() else {
        return Ok(Some(Then::KeepAlive));
    };
    unsent.written += write_some(&conn.stream, &unsent.bytes[unsent.written..])?;
    if unsent.written < unsent.bytes.len() {
        return Ok(None);
    }
    let then = unsent.then;
    conn.unsent = None;
    Ok(Some(then))
}

/// Ends a connection whose last answer is written.
fn finish(mut conn: Conn, then: Then) -> Next {
    let _ = conn.stream.shutdown_write();
    if then != Then::Drain {
        return Next::Close;
    }
    conn.pending = Vec::new();
    conn.drained = 0;
    conn.since = Instant::now();
    conn.park(Wait::Drain)
}

/// Swallows what a refused client still sends, without waiting: closing
/// with unread input would send a reset that can destroy our answer before
/// the client reads it. Returns whether to keep draining (bounded in bytes
/// here, in time by [`Conn::expires_at`]).
pub fn drain(conn: &mut Conn) -> bool {
    let mut sink = [0u8; 8192];
    // A sender that keeps the socket full gets a few reads per event, not
    // the whole budget: the worker has other connections to serve.
    for _ in 0..DRAIN_READS_PER_WAKE {
        match (&conn.stream).read(&mut sink) {
            Ok(0) => return false,
            Ok(n) => {
                conn.drained += n;
                if conn.drained >= DRAIN_BYTES {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// The plain-text answer to a request we will not serve.
fn refusal(out: &mut Vec<u8>, status: u16, message: &'static str) {
    let response = Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: ResponseBody::Static(message),
    };
    render(out, &response, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A connected pair: the client's end, and the server's as the listener
    /// prepares it (non-blocking).
    fn pair() -> (TcpStream, Conn) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, Conn::new(Stream::Tcp(server)))
    }

    /// More than a socket pair's buffers hold while the client does not read.
    const BIG: usize = 16 << 20;
    /// An answer of the size of a large secret.
    const MID: usize = 64 << 10;

    fn handler(calls: &AtomicUsize) -> impl Fn(&Request) -> Reply + '_ {
        move |request: &Request| {
            calls.fetch_add(1, Ordering::SeqCst);
            let body = match request.target {
                "/big" => ResponseBody::Owned("b".repeat(BIG)),
                "/mid" => ResponseBody::Owned("m".repeat(MID)),
                _ => ResponseBody::Static("small"),
            };
            Reply::Now(Response {
                status: 200,
                content_type: "text/plain",
                body,
            })
        }
    }

    fn parked(next: Next) -> Conn {
        match next {
            Next::Park(conn) => conn,
            Next::Close => panic!("the connection was closed"),
            Next::Later(..) => panic!("the request was deferred"),
        }
    }

    #[test]
    fn a_deferred_answer_comes_first_and_pipelined_requests_wait_for_it() {
        let (mut client, conn) = pair();
        let calls = AtomicUsize::new(0);
        let plain = handler(&calls);
        let woken = std::sync::Arc::new(AtomicUsize::new(0));
        let handle = |request: &Request| {
            if request.target != "/later" {
                return plain(request);
            }
            let woken = woken.clone();
            Reply::Later(crate::http::Later {
                ready: Box::new(move |wake| {
                    woken.fetch_add(1, Ordering::SeqCst);
                    wake();
                }),
                answer: Box::new(|| Response {
                    status: 200,
                    content_type: "text/plain",
                    body: ResponseBody::Static("late"),
                }),
            })
        };
        let (mut scratch, idle) = (Scratch::default(), Load::fixed(1));
        client
            .write_all(b"GET /later HTTP/1.1\r\n\r\nGET /small HTTP/1.1\r\n\r\n")
            .unwrap();
        let Next::Later(conn, ready) = serve(conn, &handle, &mut scratch, &idle) else {
            panic!("not deferred");
        };
        assert_eq!(conn.wait, Wait::Later);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "the pipelined request waits"
        );
        // Nothing is answered until the connection is served again.
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(client.read(&mut [0u8; 64]).is_err());
        assert_eq!(conn.expires_at(Duration::ZERO), conn.since + LATER_LIMIT);
        // A wake-up before its flag is set is a late one, for another
        // answer: it changes nothing.
        let mut conn = conn;
        assert!(!conn.wake());
        assert_eq!(conn.wait, Wait::Later);
        // An event before the wake-up (the client sent more) finds it still
        // waiting; what was sent is read after the answer.
        client.write_all(b"GET /small HTTP/1.1\r\n\r\n").unwrap();
        let mut conn = parked(serve(conn, &handle, &mut scratch, &idle));
        assert_eq!(conn.wait, Wait::Later);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(client.read(&mut [0u8; 64]).is_err());
        let fired = std::sync::Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        ready(Box::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        // Its own wake-up: the answer waits for room, under the client
        // timeout.
        assert!(conn.wake());
        assert_eq!(conn.wait, Wait::Write);

        let mut conn = parked(serve(conn, &handle, &mut scratch, &idle));
        assert_eq!(conn.wait, Wait::Read);
        assert!(!conn.wake(), "answered: a late wake-up changes nothing");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let text = read_until_count(&mut client, "small", 2);
        let (late, small) = (text.find("late").unwrap(), text.find("small").unwrap());
        assert!(late < small, "{text}");
        assert_eq!(woken.load(Ordering::SeqCst), 1);
    }

    /// Reads until `needle` was seen `count` times; returns all read.
    fn read_until_count(client: &mut TcpStream, needle: &str, count: usize) -> String {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while String::from_utf8_lossy(&got).matches(needle).count() < count {
            let n = client.read(&mut chunk).unwrap();
            assert!(n > 0, "closed");
            got.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    #[test]
    fn input_longer_than_a_read_is_read_to_the_end_before_parking() {
        // Connections are registered for edges: one parked with input left
        // unread would get no event for it, and its client would hang.
        let calls = AtomicUsize::new(0);
        let handle = handler(&calls);
        let (mut scratch, idle) = (Scratch::default(), Load::fixed(1));

        // Pipelined requests filling several reads.
        let (mut client, conn) = pair();
        let pipeline = b"GET /small HTTP/1.1\r\n\r\n".repeat(400);
        assert!(pipeline.len() > 2 * READ_CHUNK);
        client.write_all(&pipeline).unwrap();
        let conn = parked(serve(conn, &handle, &mut scratch, &idle));
        assert_eq!(conn.wait, Wait::Read);
        assert_eq!(calls.swap(0, Ordering::SeqCst), 400);
        read_until_count(&mut client, "small", 400);

        // One head longer than a read.
        let (mut client, conn) = pair();
        let long = format!(
            "GET /small HTTP/1.1\r\nX-Long: {}\r\n\r\n",
            "l".repeat(3 * READ_CHUNK)
        );
        client.write_all(long.as_bytes()).unwrap();
        let conn = parked(serve(conn, &handle, &mut scratch, &idle));
        assert_eq!(conn.wait, Wait::Read);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        read_until_count(&mut client, "small", 1);
    }

    #[test]
    fn an_unread_answer_waits_in_epoll_and_holds_back_pipelined_requests() {
        let (mut client, conn) = pair();
        let calls = AtomicUsize::new(0);
        let handle = handler(&calls);
        let (mut scratch, idle) = (Scratch::default(), Load::fixed(1));
        client
            .write_all(b"GET /big HTTP/1.1\r\n\r\nGET /small HTTP/1.1\r\n\r\n")
            .unwrap();
        let conn = parked(serve(conn, &handle, &mut scratch, &idle));
        assert_eq!(conn.wait, Wait::Write, "the answer did not fit the socket");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the pipelined request waits"
        );
        assert!(conn.pending_len() > BIG / 2, "{}", conn.pending_len());

        // The client reads; each writable wake-up writes more, and once the
        // big answer is out the pipelined request is served.
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            while !got.ends_with(b"small") {
                match client.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            // Still open: a client that hung up would (rightly) be closed.
            (got, client)
        });
        let mut conn = conn;
        for _ in 0..10_000 {
            if conn.wait != Wait::Write {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            conn = parked(serve(conn, &handle, &mut scratch, &idle));
        }
        assert_eq!(conn.wait, Wait::Read);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let (got, _client) = reader.join().unwrap();
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(got.ends_with(b"\r\n\r\nsmall"));
        // Both answers, whole and in order: the big body, then the small answer.
        let second = got
            .windows(17)
            .rposition(|w| w == b"HTTP/1.1 200 OK\r\n")
            .unwrap();
        assert!(
            second > BIG,
            "the small answer came before the big one ended"
        );
        assert!(got[second - BIG..second].iter().all(|&b| b == b'b'));
    }

    #[test]
    fn a_long_pipeline_gives_its_worker_up_while_others_wait() {
        let calls = AtomicUsize::new(0);
        let handle = handler(&calls);
        let mut scratch = Scratch::default();
        let pipeline = b"GET /mid HTTP/1.1\r\n\r\n".repeat(40);

        // A reading client, so that answers are never held back by the socket.
        let mut serve_pipeline = |load: &Load| {
            let (mut client, conn) = pair();
            client.write_all(&pipeline).unwrap();
            let reader = std::thread::spawn(move || {
                let mut sink = vec![0u8; 1 << 16];
                client
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
            });
            let mut conn = parked(serve(conn, &handle, &mut scratch, load));
            for _ in 0..1_000 {
                if conn.wait != Wait::Write {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
                conn = parked(serve(conn, &handle, &mut scratch, load));
            }
            let served = calls.swap(0, Ordering::SeqCst);
            drop(conn);
            reader.join().unwrap();
            served
        };
        // Nobody waits: the whole pipeline is served in one go.
        assert_eq!(serve_pipeline(&Load::fixed(1)), 40);
        // Others wait: the turn ends once TURN_BYTES of answers are out,
        // counted across waits for the socket, long before the pipeline's end.
        let served = serve_pipeline(&Load::fixed(0));
        let per_turn = TURN_BYTES.div_ceil(MID);
        assert!((per_turn..=per_turn + 1).contains(&served), "{served}");
    }
}
