//! One client connection: read a request head (bounded in size), hand it to the
//! API, write the answer, and decide whether the connection stays open.
//!
//! A worker reads at most once per wake-up: the poller only dispatches a
//! connection when it is readable, so that read never blocks, and a client that
//! trickles its head is parked again instead of holding a thread.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::api::{Request, Response};
use crate::os::io::{read_appending, readable_within};
use crate::server::pool::Scratch;

/// Largest request head accepted; larger ones get 431 without being buffered.
pub const MAX_HEAD: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 64;
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

/// What [`parse`] made of the bytes so far.
pub enum Head {
    Complete {
        len: usize,
        keep_alive: bool,
        has_body: bool,
    },
    Partial,
    TooLarge,
    Invalid,
}

/// Serves what the connection has sent; returns whether to keep it.
pub fn serve(mut conn: Conn, handle: &dyn Fn(&Request) -> Response, scratch: &mut Scratch) -> Next {
    if std::mem::replace(&mut conn.fresh, false) && !readable_within(&conn.stream, KEEP_ALIVE_WAIT)
    {
        // A client that connects and waits: the poller watches it from here.
        conn.since = Instant::now();
        return Next::Park(conn);
    }
    let Scratch {
        input: buf,
        output: out,
        queue,
    } = scratch;
    buf.clear();
    buf.append(&mut conn.pending);
    let was_partial = !buf.is_empty();
    let mut read = false;
    loop {
        let head = if buf.is_empty() {
            Head::Partial
        } else {
            parse(buf, handle, out)
        };
        match head {
            Head::Complete {
                len,
                keep_alive,
                has_body,
            } => {
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

/// Parses one head from `buf`; when complete, runs the API and renders the
/// answer into `out`.
pub fn parse(buf: &[u8], handle: &dyn Fn(&Request) -> Response, out: &mut Vec<u8>) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Head::TooLarge,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => return Head::TooLarge,
        Err(_) => return Head::Invalid,
    };
    if len > MAX_HEAD {
        return Head::TooLarge;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Head::Invalid;
    };
    let header = |name: &'static str| header_values(req.headers, name);
    let connection_has = |token: &str| {
        header("connection").any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let keep_alive = match req.version {
        Some(1) => !connection_has("close"),
        _ => connection_has("keep-alive"),
    };
    let has_body = header("transfer-encoding").next().is_some()
        || header("content-length").any(|v| v.trim() != "0");
    let response = handle(&Request {
        method,
        target,
        headers: req.headers,
    });
    render(out, &response, keep_alive && !has_body);
    Head::Complete {
        len,
        keep_alive,
        has_body,
    }
}

fn header_values<'h>(
    headers: &'h [httparse::Header<'h>],
    name: &'static str,
) -> impl Iterator<Item = std::borrow::Cow<'h, str>> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| String::from_utf8_lossy(h.value))
}

/// Head and body in one buffer, so the answer leaves in one `write`. Built
/// by hand: `write!` formatting was a measurable share of a cache hit.
fn render(out: &mut Vec<u8>, response: &Response, keep_alive: bool) {
    let body = response.body.as_bytes();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, usize::from(response.status));
    out.push(b' ');
    out.extend_from_slice(reason(response.status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(response.content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(out, body.len());
    if !keep_alive {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Answers a request we will not serve, then closes gently: the client gets the
/// answer rather than a reset from unread bytes.
fn refuse(stream: &mut TcpStream, out: &mut Vec<u8>, status: u16, message: &'static str) {
    let response = Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: crate::api::ResponseBody::Static(message),
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

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ResponseBody;

    #[test]
    fn renders_head_and_body() {
        let mut out = Vec::new();
        let response = Response {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: ResponseBody::Static("Not found"),
        };
        render(&mut out, &response, true);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\n\r\nNot found"
        );
        render(&mut out, &response, false);
        assert!(out.ends_with(b"Content-Length: 9\r\nConnection: close\r\n\r\nNot found"));
        for n in [0usize, 7, 10, 65_536, usize::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
        }
    }
}
