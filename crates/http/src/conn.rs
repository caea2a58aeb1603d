//! One client connection: read a request (head and body, each bounded in
//! size), hand it to the handler, write the answer, and decide whether the
//! connection stays open.
//! Only the I/O is here, as a thin driver: what to do next and what the
//! connection keeps while it waits are decided by `machine`'s typed states
//! and pure transitions, what the bytes mean (limits, keep-alive, bodies) by
//! `http::parse_head`, and the answer's bytes by `http::render`.
//!
//! No worker ever waits for a client. Sockets are non-blocking: a worker
//! reads what has arrived (a client that trickles its head or body is parked
//! again),
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
use std::time::{Duration, Instant};

use crate::http::{Ready, Reply, Request};
use crate::pool::Load;
use crate::socket::Stream;
use machine::{Action, Event, Parked, Turn};
use secrets_manager_agent_core::metrics;
use secrets_manager_agent_os::io::read_appending;

mod machine;

pub use machine::{Scratch, Wait};

pub struct Conn {
    /// Non-blocking: no read or write here ever waits for the client.
    pub stream: Stream,
    /// What the connection waits for, with what it holds meanwhile.
    parked: Parked,
    /// Registered for room to write as well as for input (the server's
    /// business: see `Server::arm`).
    pub watches_writes: bool,
}

pub enum Next {
    Park(Conn),
    /// Parked ([`Wait::Later`]) until `ready` calls the wake-up it is
    /// given.
    Later(Conn, Ready),
    Close,
}

impl Conn {
    pub fn new(stream: Stream) -> Conn {
        metrics::connection_opened();
        Conn {
            stream,
            parked: Parked::new(Instant::now()),
            watches_writes: false,
        }
    }

    /// What epoll waits for on this connection.
    pub fn wait(&self) -> Wait {
        self.parked.wait()
    }

    /// When the current wait began.
    #[cfg(test)]
    fn since(&self) -> Instant {
        self.parked.since
    }

    /// When the keeper closes this connection (see [`Parked::expires_at`]).
    pub fn expires_at(&self, timeout: Duration) -> Instant {
        self.parked.expires_at(timeout)
    }

    /// Bytes held for this connection (see [`Parked::pending_len`]).
    pub fn pending_len(&self) -> usize {
        self.parked.pending_len()
    }

    /// Takes a wake-up: whether the connection waits for it. If it does, it
    /// now waits for room to write the answer, one client timeout from now
    /// (see [`Parked::wake`]).
    pub fn wake(&mut self) -> bool {
        self.parked.wake(Instant::now)
    }

    fn park(mut self, parked: Parked) -> Next {
        self.parked = parked;
        Next::Park(self)
    }
}

/// However a connection ends (closed, refused, timed out, shed), the
/// open-connections gauge goes down with it.
impl Drop for Conn {
    fn drop(&mut self) {
        metrics::connection_closed();
    }
}

/// Serves what the connection has for a worker: the turn's [`Turn`] says
/// what to read and write, this does it and tells it what the socket did.
/// `load` tells whether other connections may wait for a worker. Never
/// waits for the client: reads and writes take what the socket has, and
/// epoll watches for the rest.
pub fn serve(
    mut conn: Conn,
    handle: &dyn Fn(&Request) -> Reply,
    scratch: &mut Scratch,
    load: &Load,
) -> Next {
    let mut turn = match Turn::begin(conn.parked.take(), &mut scratch.input) {
        Ok(turn) => turn,
        Err(parked) => return conn.park(parked),
    };
    let mut event = Event::Start;
    loop {
        event = match turn.next(event, scratch, handle, load, &Instant::now) {
            Action::Read { room } => {
                read_event(read_appending(&conn.stream, &mut scratch.input, room), room)
            }
            Action::Write => match write_some(&conn.stream, turn.unwritten(&scratch.output)) {
                Ok(n) => Event::Wrote(n),
                Err(_) => Event::Failed,
            },
            Action::Discard => discard(&conn.stream),
            Action::Park(parked) => return conn.park(parked),
            Action::Defer(parked, ready) => {
                conn.parked = parked;
                return Next::Later(conn, ready);
            }
            Action::Finish(drain) => {
                let _ = conn.stream.shutdown_write();
                return match drain {
                    Some(parked) => conn.park(parked),
                    None => Next::Close,
                };
            }
            Action::Close => return Next::Close,
        };
    }
}

/// What a read of at most `room` bytes did, for the turn.
fn read_event(read: io::Result<usize>, room: usize) -> Event {
    match read {
        Ok(0) => Event::Eof,
        Ok(got) => Event::Read { got, room },
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Event::Empty,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Event::Interrupted,
        Err(_) => Event::Failed,
    }
}

/// Swallows one read of what a refused client still sends: closing with
/// unread input would send a reset that can destroy our answer before the
/// client reads it. Apart from `serve`, so that its buffer is on the stack
/// only while draining.
#[inline(never)]
fn discard(mut stream: &Stream) -> Event {
    let mut sink = [0u8; 8192];
    read_event(stream.read(&mut sink), sink.len())
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

#[cfg(test)]
mod tests {
    use super::machine::{LATER_LIMIT, READ_CHUNK, TURN_BYTES};
    use super::*;
    use crate::http::{Response, ResponseBody};
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
                "/echo" => ResponseBody::Owned(String::from_utf8_lossy(request.body).into_owned()),
                _ => ResponseBody::Static("small"),
            };
            Reply::Now(Response::new(200, "text/plain", body))
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
                answer: Box::new(|| Response::new(200, "text/plain", ResponseBody::Static("late"))),
            })
        };
        let (mut scratch, idle) = (Scratch::default(), Load::fixed(1));
        client
            .write_all(b"GET /later HTTP/1.1\r\n\r\nGET /small HTTP/1.1\r\n\r\n")
            .unwrap();
        let Next::Later(conn, ready) = serve(conn, &handle, &mut scratch, &idle) else {
            panic!("not deferred");
        };
        assert_eq!(conn.wait(), Wait::Later);
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
        assert_eq!(conn.expires_at(Duration::ZERO), conn.since() + LATER_LIMIT);
        // A wake-up before its flag is set is a late one, for another
        // answer: it changes nothing.
        let mut conn = conn;
        assert!(!conn.wake());
        assert_eq!(conn.wait(), Wait::Later);
        // An event before the wake-up (the client sent more) finds it still
        // waiting; what was sent is read after the answer.
        client.write_all(b"GET /small HTTP/1.1\r\n\r\n").unwrap();
        let mut conn = parked(serve(conn, &handle, &mut scratch, &idle));
        assert_eq!(conn.wait(), Wait::Later);
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
        assert_eq!(conn.wait(), Wait::Write);

        let mut conn = parked(serve(conn, &handle, &mut scratch, &idle));
        assert_eq!(conn.wait(), Wait::Read);
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
    fn a_body_sent_in_two_writes_is_read_whole_and_the_connection_kept() {
        let (mut client, conn) = pair();
        let calls = AtomicUsize::new(0);
        let handle = handler(&calls);
        let (mut scratch, idle) = (Scratch::default(), Load::fixed(1));
        let body = r#"{"SecretIdList":["a","b"]}"#;
        // The head and the start of the body: nothing to answer yet.
        let head = format!(
            "POST /echo HTTP/1.1\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        client
            .write_all(format!("{head}{}", &body[..10]).as_bytes())
            .unwrap();
        let conn = parked(serve(conn, &handle, &mut scratch, &idle));
        assert_eq!(conn.wait(), Wait::Read);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(conn.pending_len(), head.len() + 10);
        // The rest, and a request after it on the same connection.
        client
            .write_all(format!("{}GET /small HTTP/1.1\r\n\r\n", &body[10..]).as_bytes())
            .unwrap();
        let conn = parked(serve(conn, &handle, &mut scratch, &idle));
        assert_eq!(conn.wait(), Wait::Read, "kept open");
        assert_eq!(conn.pending_len(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let text = read_until_count(&mut client, "small", 1);
        let echo = format!(
            "Content-Length: {}\r\n\r\n{body}HTTP/1.1 200 OK\r\n",
            body.len()
        );
        assert!(text.contains(&echo), "{text}");
        assert!(!text.contains("Connection: close"), "{text}");
        // And the next one.
        client.write_all(&post_echo("again")).unwrap();
        let _conn = parked(serve(conn, &handle, &mut scratch, &idle));
        assert!(read_until_count(&mut client, "again", 1).ends_with("\r\n\r\nagain"));
    }

    fn post_echo(body: &str) -> Vec<u8> {
        format!(
            "POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
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
        assert_eq!(conn.wait(), Wait::Read);
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
        assert_eq!(conn.wait(), Wait::Read);
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
        assert_eq!(
            conn.wait(),
            Wait::Write,
            "the answer did not fit the socket"
        );
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
            if conn.wait() != Wait::Write {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            conn = parked(serve(conn, &handle, &mut scratch, &idle));
        }
        assert_eq!(conn.wait(), Wait::Read);
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
                if conn.wait() != Wait::Write {
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
