//! One client connection: read a request head (bounded in size), hand it to the
//! handler, write the answer, and decide whether the connection stays open.
//! Only the I/O is here: what the bytes mean (limits, keep-alive, bodies) is
//! decided by `http::parse_head`, and the answer's bytes by `http::render`.
//!
//! A worker reads at most once per wake-up: the poller only dispatches a
//! connection when it is readable, so that read never blocks, and a client that
//! trickles its head is parked again instead of holding a thread.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::os::io::{read_appending, readable_within};
use crate::server::http::{
    parse_head, render, Head, Parsed, Request, Response, ResponseBody, MAX_HEAD, MAX_HEADERS,
};
use crate::server::pool::QueueView;

const READ_CHUNK: usize = 4 * 1024;
/// After refusing a request, how much of the rest we swallow so the client can
/// read our answer instead of a reset.
const DRAIN_BYTES: usize = 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_millis(500);
/// How long a worker waits for the next request on a keep-alive connection
/// before parking it with the poller.
const KEEP_ALIVE_WAIT: Duration = Duration::from_millis(2);

pub struct Conn {
    pub stream: TcpStream,
    /// Bytes of a request head not yet complete (or a pipelined next request).
    pending: Vec<u8>,
    /// When the current wait began: the first byte of a partial head, or the
    /// moment the connection went idle. The poller closes it `timeout` later.
    pub since: Instant,
    /// Just accepted and handed straight to a worker: not known to be readable.
    fresh: bool,
}

pub enum Next {
    Park(Conn),
    Close,
}

impl Conn {
    /// Bytes held for an incomplete head.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            pending: Vec::new(),
            since: Instant::now(),
            fresh: true,
        }
    }
}

/// A worker's buffers, reused across requests so that a request allocates
/// little. The pool replaces them with empty ones when the worker goes idle,
/// giving back what a burst grew.
#[derive(Default)]
pub struct Scratch {
    /// The bytes read: a head, or several pipelined ones.
    input: Vec<u8>,
    /// The answer being written.
    output: Vec<u8>,
}

/// Serves what the connection has sent; returns whether to keep it. `queue`
/// tells whether other connections wait for a worker.
pub fn serve(
    mut conn: Conn,
    handle: &dyn Fn(&Request) -> Response,
    scratch: &mut Scratch,
    queue: &QueueView,
) -> Next {
    if std::mem::replace(&mut conn.fresh, false) && !readable_within(&conn.stream, KEEP_ALIVE_WAIT)
    {
        // A client that connects and waits: the poller watches it from here.
        conn.since = Instant::now();
        return Next::Park(conn);
    }
    let Scratch {
        input: buf,
        output: out,
    } = scratch;
    buf.clear();
    buf.append(&mut conn.pending);
    let was_partial = !buf.is_empty();
    let mut read = false;
    loop {
        // Filled only when there is something to parse.
        let mut headers;
        let head = if buf.is_empty() {
            Head::Partial
        } else {
            headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            parse_head(buf, &mut headers)
        };
        match head {
            Head::Complete(parsed) => {
                render(out, &handle(&parsed.request), parsed.stays_open());
                let Parsed {
                    len,
                    keep_alive,
                    has_body,
                    ..
                } = parsed;
                if conn.stream.write_all(&*out).is_err() {
                    return Next::Close;
                }
                if has_body {
                    // A body we did not read would be taken for the next
                    // request, so the connection ends here.
                    linger_close(&mut conn.stream);
                    return Next::Close;
                }
                if !keep_alive {
                    let _ = conn.stream.shutdown(Shutdown::Write);
                    return Next::Close;
                }
                buf.drain(..len);
                if buf.is_empty() {
                    // A busy keep-alive client sends its next request right
                    // after reading this answer: waiting a moment for it here
                    // saves two thread hand-offs through the poller. Not
                    // while other connections wait for a worker, though.
                    if !queue.others_waiting() && readable_within(&conn.stream, KEEP_ALIVE_WAIT) {
                        read = false;
                        continue;
                    }
                    conn.since = Instant::now();
                    return Next::Park(conn);
                }
            }
            Head::Partial if read => {
                if !was_partial {
                    conn.since = Instant::now();
                }
                conn.pending.extend_from_slice(buf);
                return Next::Park(conn);
            }
            Head::Partial => {
                read = true;
                let room = (MAX_HEAD + 1 - buf.len()).min(READ_CHUNK);
                match read_appending(&conn.stream, buf, room) {
                    Ok(0) => return Next::Close,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Next::Close,
                }
            }
            Head::TooLarge => {
                refuse(
                    &mut conn.stream,
                    out,
                    431,
                    "Request header fields too large",
                );
                return Next::Close;
            }
            Head::Invalid => {
                refuse(&mut conn.stream, out, 400, "Bad request");
                return Next::Close;
            }
        }
    }
}

/// Answers a request we will not serve, then closes gently: the client gets the
/// answer rather than a reset from unread bytes.
fn refuse(stream: &mut TcpStream, out: &mut Vec<u8>, status: u16, message: &'static str) {
    let response = Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: ResponseBody::Static(message),
    };
    render(out, &response, false);
    if stream.write_all(out).is_ok() {
        linger_close(stream);
    }
}

/// Ends our side, then swallows what the client is still sending (bounded in
/// bytes and time): closing with unread input would send a reset that can
/// destroy the answer before the client reads it.
fn linger_close(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + DRAIN_TIME;
    let _ = stream.set_read_timeout(Some(DRAIN_TIME));
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    while drained < DRAIN_BYTES && Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}
