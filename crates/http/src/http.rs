//! HTTP/1.1 messages: the request the surface sees, the response it returns,
//! the pure head parser and the renderer.
//!
//! No sockets here: [`parse_head`] takes the bytes read so far and says what
//! they are, [`render`] turns a response into the bytes to write. That way
//! the head rules (size limits, keep-alive, which bodies are read and which
//! refused) are tested on byte strings, and the fuzz target drives the same
//! code as the server. Reading, writing and closing are `conn`'s.
//!
//! A body is read only when one `Content-Length` announces it, up to
//! [`MAX_BODY`]: the request reaches the handler once head and body are both
//! there, and the connection then stays open like any other's. Chunked
//! bodies, larger ones and contradicting lengths are refused before any of
//! the body is buffered.

use std::sync::Arc;

use zeroize::Zeroize;

use secrets_manager_agent_core::secret::SecretBytes;

/// Largest request head accepted; larger ones get 431 without being buffered.
pub const MAX_HEAD: usize = 64 * 1024;
/// Headers per request; more get 431.
pub const MAX_HEADERS: usize = 64;
/// Largest request body read; a larger `Content-Length` gets 413 without
/// the body being buffered. The largest input the agent serves, a JSON 1.1
/// BatchGetSecretValue naming 20 secret IDs of 2,048 characters each, is
/// about 42 KiB (more if the IDs are escaped); a parked connection holds at
/// most `MAX_HEAD + MAX_BODY` of a request.
pub const MAX_BODY: usize = 64 * 1024;

pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, as sent.
    pub target: &'a str,
    pub headers: &'a [httparse::Header<'a>],
    /// The body, whole (at most [`MAX_BODY`] bytes); empty when none.
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The value of the first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// More header lines, written after `Content-Type` and `Content-Length`
    /// as `Name: value` (an empty `Vec` allocates nothing). Neither may hold
    /// CR or LF, which would end the line early and let a value forge
    /// headers: [`render`] leaves such a header out (and debug builds
    /// panic).
    pub headers: Vec<(&'static str, String)>,
    pub body: ResponseBody,
}

impl Response {
    /// An answer with no headers but `Content-Type` and `Content-Length`.
    pub fn new(status: u16, content_type: &'static str, body: ResponseBody) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    /// The answer with one more header line (see [`Response::headers`]).
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// What a handler gives for a request.
pub enum Reply {
    Now(Response),
    /// The answer waits on something else (another request's call to AWS).
    /// The server parks the connection, holding no thread, and calls
    /// `ready` with a wake-up; once woken it calls `answer`, which then
    /// does not wait.
    Later(Later),
}

pub struct Later {
    pub ready: Ready,
    pub answer: Box<dyn FnOnce() -> Response + Send>,
}

/// Arms a parked connection again; called once.
pub type Wake = Box<dyn FnOnce() + Send>;
/// Takes the wake-up to call once the answer is there (at once if it is).
pub type Ready = Box<dyn FnOnce(Wake) + Send>;

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply::Now(response)
    }
}

pub enum ResponseBody {
    Static(&'static str),
    Owned(String),
    /// A cached secret: shared with the cache, not copied per request.
    Shared(Arc<SecretBytes>),
}

impl ResponseBody {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ResponseBody::Static(s) => s.as_bytes(),
            ResponseBody::Owned(s) => s.as_bytes(),
            ResponseBody::Shared(b) => b,
        }
    }
}

/// What [`parse_head`] made of the bytes so far.
pub enum Head<'a> {
    /// A whole request: its head, and its body if it announces one.
    Complete(Parsed<'a>),
    /// More bytes of the head are needed.
    Partial,
    /// The head is complete but not the body it announces: more bytes are
    /// needed, `len` in all for the whole request (at most
    /// `MAX_HEAD + MAX_BODY`).
    PartialBody { len: usize },
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers: answer 431.
    TooLarge,
    /// A `Content-Length` over [`MAX_BODY`]: answer 413.
    BodyTooLarge,
    /// A body of unannounced length (`Transfer-Encoding` without
    /// `Content-Length`): answer 411.
    LengthRequired,
    /// Not an HTTP/1.x request head, or the length of its body is not one
    /// number (not digits, different values, or `Content-Length` with
    /// `Transfer-Encoding`): answer 400.
    Invalid,
}

/// A complete request.
pub struct Parsed<'a> {
    /// Borrows the parsed bytes and the caller's header array.
    pub request: Request<'a>,
    /// Bytes the request took, head and body; what follows is the next
    /// request (pipelining).
    pub len: usize,
    /// The client asked to keep the connection open (HTTP/1.1 default):
    /// whether it stays open after the answer; if not, the answer says
    /// `Connection: close`.
    pub keep_alive: bool,
}

/// Parses one request from the start of `buf`: its head, and the body the
/// head announces once all of it is there. `headers` is room for its header
/// lines (the caller's, so that the request can borrow it).
pub fn parse_head<'b: 'h, 'h>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>; MAX_HEADERS],
) -> Head<'h> {
    let mut req = httparse::Request::new(headers);
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
    let version = req.version;
    let headers: &'h [httparse::Header<'b>] = req.headers;
    let header = |name: &'static str| header_values(headers, name);
    let connection_has = |token: &str| {
        header("connection").any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let keep_alive = match version {
        Some(1) => !connection_has("close"),
        _ => connection_has("keep-alive"),
    };
    let body_len = match body_len(headers) {
        Ok(n) => n,
        Err(refusal) => return refusal,
    };
    // Both bounded: no overflow.
    let end = len + body_len;
    let Some(body) = buf.get(len..end) else {
        return Head::PartialBody { len: end };
    };
    Head::Complete(Parsed {
        request: Request {
            method,
            target,
            headers,
            body,
        },
        len: end,
        keep_alive,
    })
}

/// The length of the body `headers` announce (0 for none), or the refusal.
///
/// Only `Content-Length` is read. A chunked body (`Transfer-Encoding`) gets
/// 411: no client the agent serves sends one (the AWS SDKs send their JSON
/// with a length), and decoding chunks would be code for nobody. A request
/// with both, or with lengths that differ, is refused with 400 rather than
/// guessed at: a proxy in front that read it the other way would take our
/// idea of its body for a request of its own (request smuggling).
fn body_len(headers: &[httparse::Header<'_>]) -> Result<usize, Head<'static>> {
    let chunked = headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    // The digits of the length, without leading zeros.
    let mut length: Option<&[u8]> = None;
    let lengths = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    for header in lengths {
        // A list of equal values is one length (RFC 9110, 8.6).
        for value in header.value.split(|&b| b == b',') {
            let digits = value.trim_ascii();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(Head::Invalid);
            }
            let first = digits
                .iter()
                .position(|&d| d != b'0')
                .unwrap_or(digits.len() - 1);
            let digits = &digits[first..];
            match length {
                Some(seen) if seen != digits => return Err(Head::Invalid),
                _ => length = Some(digits),
            }
        }
    }
    match (length, chunked) {
        (Some(_), true) => Err(Head::Invalid),
        (None, true) => Err(Head::LengthRequired),
        (None, false) => Ok(0),
        (Some(digits), false) => {
            // Too many digits for a usize is too large, too.
            let n = digits.iter().try_fold(0usize, |n, &d| {
                n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
            });
            match n {
                Some(n) if n <= MAX_BODY => Ok(n),
                _ => Err(Head::BodyTooLarge),
            }
        }
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
pub fn render(out: &mut Vec<u8>, response: &Response, keep_alive: bool) {
    let body = response.body.as_bytes();
    // Room for the longest head this writes, so the buffer grows at most
    // here: a buffer that held a secret is overwritten before it is given
    // back, never freed by a reallocation with the secret still in it. 128
    // holds the status line, the fixed names, the length's digits and
    // `Connection: close`; each extra header takes its own `\r\n: `.
    let extra: usize = response
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum();
    let needed = body.len() + response.content_type.len() + extra + 128;
    if out.capacity() < needed {
        out.zeroize();
        *out = Vec::with_capacity(needed);
    }
    let capacity = out.capacity();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, usize::from(response.status));
    out.push(b' ');
    out.extend_from_slice(reason(response.status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(response.content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(out, body.len());
    for (name, value) in &response.headers {
        if !fits_a_line(name) || !fits_a_line(value) {
            debug_assert!(false, "header {name:?} holds CR or LF");
            continue;
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    if !keep_alive {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    debug_assert_eq!(out.capacity(), capacity, "render reallocated");
}

/// Whether `text` stays on one header line.
fn fits_a_line(text: &str) -> bool {
    !text.bytes().any(|b| b == b'\r' || b == b'\n')
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

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
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

    /// What `parse_head` decided, without the borrows.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Complete {
            len: usize,
            keep_alive: bool,
            body: Vec<u8>,
        },
        Partial,
        PartialBody {
            len: usize,
        },
        TooLarge,
        BodyTooLarge,
        LengthRequired,
        Invalid,
    }

    fn outcome(buf: &[u8]) -> Outcome {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse_head(buf, &mut headers) {
            Head::Complete(p) => Outcome::Complete {
                len: p.len,
                keep_alive: p.keep_alive,
                body: p.request.body.to_vec(),
            },
            Head::Partial => Outcome::Partial,
            Head::PartialBody { len } => Outcome::PartialBody { len },
            Head::TooLarge => Outcome::TooLarge,
            Head::BodyTooLarge => Outcome::BodyTooLarge,
            Head::LengthRequired => Outcome::LengthRequired,
            Head::Invalid => Outcome::Invalid,
        }
    }

    /// `keep_alive` of a complete request without a body.
    fn keeps_alive(head: &str) -> bool {
        match outcome(head.as_bytes()) {
            Outcome::Complete {
                keep_alive, body, ..
            } if body.is_empty() => keep_alive,
            other => panic!("{head:?}: {other:?}"),
        }
    }

    fn get(version: &str, headers: &[&str]) -> String {
        let mut head = format!("GET /ping HTTP/{version}\r\n");
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head
    }

    #[test]
    fn partial_head_asks_for_more() {
        assert_eq!(
            outcome(b"GET /ping HTTP/1.1\r\nHost: a\r\n"),
            Outcome::Partial
        );
        assert_eq!(outcome(b"GE"), Outcome::Partial);
    }

    #[test]
    fn complete_head_borrows_the_request_and_leaves_pipelined_bytes() {
        let first = "GET /v1/a?versionStage=X HTTP/1.1\r\nX-Vault-Token: tok\r\n\r\n";
        let buf = format!("{first}GET /ping HTTP/1.1\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let Head::Complete(p) = parse_head(buf.as_bytes(), &mut headers) else {
            panic!("complete");
        };
        assert_eq!(p.len, first.len());
        assert_eq!(p.request.method, "GET");
        assert_eq!(p.request.target, "/v1/a?versionStage=X");
        assert_eq!(p.request.headers.len(), 1);
        assert_eq!(p.request.headers[0].name, "X-Vault-Token");
        assert_eq!(p.request.headers[0].value, b"tok");
        assert!(p.request.body.is_empty());
        assert!(p.keep_alive);
    }

    #[test]
    fn http_1_1_keeps_alive_by_default() {
        assert!(keeps_alive(&get("1.1", &["Host: a"])));
    }

    #[test]
    fn connection_close_closes() {
        assert!(!keeps_alive(&get("1.1", &["Connection: close"])));
        assert!(!keeps_alive(&get("1.1", &["connection: CLOSE"])));
    }

    #[test]
    fn connection_close_in_a_list_closes() {
        assert!(!keeps_alive(&get("1.1", &["Connection: foo, Close"])));
        assert!(keeps_alive(&get("1.1", &["Connection: foo, bar"])));
    }

    #[test]
    fn any_of_several_connection_headers_counts() {
        let two = get("1.1", &["Connection: keep-alive", "Connection: close"]);
        assert!(!keeps_alive(&two));
    }

    #[test]
    fn http_1_0_closes_by_default() {
        assert!(!keeps_alive(&get("1.0", &["Host: a"])));
    }

    #[test]
    fn http_1_0_keeps_alive_when_asked() {
        assert!(keeps_alive(&get("1.0", &["Connection: Keep-Alive"])));
        assert!(keeps_alive(&get("1.0", &["Connection: x, keep-alive"])));
    }

    /// A POST head announcing `length` with `headers` before it.
    fn post(headers: &[&str], length: &str) -> String {
        let mut lines = headers.to_vec();
        let length = format!("Content-Length: {length}");
        lines.push(&length);
        get("1.1", &lines).replacen("GET", "POST", 1)
    }

    #[test]
    fn a_body_is_complete_once_all_there() {
        let head = post(&[], "5");
        let at = |bytes: &str| outcome(format!("{head}{bytes}").as_bytes());
        let whole = head.len() + 5;
        assert_eq!(at(""), Outcome::PartialBody { len: whole });
        assert_eq!(at("hell"), Outcome::PartialBody { len: whole });
        let complete = Outcome::Complete {
            len: whole,
            keep_alive: true,
            body: b"hello".to_vec(),
        };
        assert_eq!(at("hello"), complete);
        // What follows is the next request, not the body's.
        assert_eq!(at("helloGET /ping HTTP/1.1\r\n"), complete);
        // A body does not keep a connection open that asked to close.
        let close = post(&["Connection: close"], "2");
        assert_eq!(
            outcome(format!("{close}{{}}").as_bytes()),
            Outcome::Complete {
                len: close.len() + 2,
                keep_alive: false,
                body: b"{}".to_vec(),
            }
        );
    }

    #[test]
    fn content_length_zero_or_none_means_no_body() {
        assert!(keeps_alive(&get("1.1", &["Content-Length: 0"])));
        assert!(keeps_alive(&get("1.1", &["Content-Length:  0 "])));
        assert!(keeps_alive(&get("1.1", &["Content-Length: 000"])));
        assert!(keeps_alive(&post(&[], "0")));
        assert!(keeps_alive(&get("1.1", &[]).replacen("GET", "POST", 1)));
    }

    #[test]
    fn the_body_may_be_max_body_long_and_no_longer() {
        let head = post(&[], &MAX_BODY.to_string());
        let mut buf = head.clone().into_bytes();
        buf.resize(head.len() + MAX_BODY, b'x');
        let Outcome::Complete { len, body, .. } = outcome(&buf) else {
            panic!("not complete");
        };
        assert_eq!((len, body.len()), (buf.len(), MAX_BODY));
        // Refused from the head alone.
        let over = post(&[], &(MAX_BODY + 1).to_string());
        assert_eq!(outcome(over.as_bytes()), Outcome::BodyTooLarge);
        for huge in ["99999999999999999999999999", "18446744073709551616"] {
            assert_eq!(outcome(post(&[], huge).as_bytes()), Outcome::BodyTooLarge);
        }
    }

    #[test]
    fn lengths_that_are_not_one_number_are_invalid() {
        for bad in ["", "abc", "-1", "+5", "5 5", "0x10", "5,", "5, 6", "1.0"] {
            assert_eq!(
                outcome(post(&[], bad).as_bytes()),
                Outcome::Invalid,
                "{bad:?}"
            );
        }
        let two = post(&["Content-Length: 5"], "6");
        assert_eq!(outcome(two.as_bytes()), Outcome::Invalid);
        let zero_and_five = post(&["Content-Length: 0"], "5");
        assert_eq!(outcome(zero_and_five.as_bytes()), Outcome::Invalid);
    }

    #[test]
    fn equal_lengths_are_one() {
        for same in [
            post(&["Content-Length: 2"], "2"),
            post(&[], "2, 2"),
            post(&[], "02"),
        ] {
            assert_eq!(
                outcome(format!("{same}{{}}").as_bytes()),
                Outcome::Complete {
                    len: same.len() + 2,
                    keep_alive: true,
                    body: b"{}".to_vec(),
                },
                "{same:?}"
            );
        }
    }

    #[test]
    fn transfer_encoding_needs_a_length_and_contradicts_one() {
        let chunked = get("1.1", &["Transfer-Encoding: chunked"]);
        assert_eq!(outcome(chunked.as_bytes()), Outcome::LengthRequired);
        let identity = get("1.1", &["transfer-encoding: identity"]);
        assert_eq!(outcome(identity.as_bytes()), Outcome::LengthRequired);
        for length in ["5", "0"] {
            let both = post(&["Transfer-Encoding: chunked"], length);
            assert_eq!(outcome(both.as_bytes()), Outcome::Invalid, "{length}");
        }
    }

    #[test]
    fn header_count_limit() {
        let lines: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("H{i}: v")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert!(keeps_alive(&get("1.1", &lines[..MAX_HEADERS])));
        assert_eq!(outcome(get("1.1", &lines).as_bytes()), Outcome::TooLarge);
    }

    #[test]
    fn partial_head_over_the_limit_is_too_large() {
        let mut buf = b"GET /ping HTTP/1.1\r\nX: ".to_vec();
        buf.resize(MAX_HEAD, b'a');
        assert_eq!(outcome(&buf), Outcome::Partial);
        buf.push(b'a');
        assert_eq!(outcome(&buf), Outcome::TooLarge);
    }

    #[test]
    fn complete_head_over_the_limit_is_too_large() {
        let fill = "a".repeat(MAX_HEAD);
        assert_eq!(
            outcome(get("1.1", &[&format!("X: {fill}")]).as_bytes()),
            Outcome::TooLarge
        );
        // Exactly at the limit is accepted.
        let head = get("1.1", &["X: "]);
        let at_limit = get("1.1", &[&format!("X: {}", &fill[head.len()..])]);
        assert_eq!(at_limit.len(), MAX_HEAD);
        assert!(keeps_alive(&at_limit));
    }

    #[test]
    fn malformed_heads_are_invalid() {
        for bad in [
            &b"\x00\x01garbage\r\n\r\n"[..],
            b"GET\x7f /ping HTTP/1.1\r\n\r\n",
            b"G(T /ping HTTP/1.1\r\n\r\n",
            b"GET /ping HTTP/2.0\r\n\r\n",
            b"GET /ping FTP/1.1\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nNo colon\r\n\r\n",
        ] {
            assert_eq!(
                outcome(bad),
                Outcome::Invalid,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn non_utf8_header_value_still_parses() {
        let head = b"GET /ping HTTP/1.1\r\nX-Vault-Token: \xff\xfe\r\nConnection: close\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let Head::Complete(p) = parse_head(head, &mut headers) else {
            panic!("complete");
        };
        assert_eq!(p.request.headers[0].value, b"\xff\xfe");
        assert!(!p.keep_alive);
    }

    #[test]
    fn renders_head_and_body() {
        let mut out = Vec::new();
        let response = Response::new(
            404,
            "text/plain; charset=utf-8",
            ResponseBody::Static("Not found"),
        );
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

    #[test]
    fn renders_extra_headers_after_the_length() {
        let response = Response::new(
            200,
            "application/x-amz-json-1.1",
            ResponseBody::Static("{}"),
        )
        .with_header("x-amzn-RequestId", "r-1")
        .with_header("X-Other", String::new());
        let mut out = Vec::new();
        render(&mut out, &response, false);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\nx-amzn-RequestId: r-1\r\nX-Other: \r\nConnection: close\r\n\r\n{}"
        );
    }

    #[test]
    fn extra_headers_are_sized_before_rendering() {
        // Long headers, the longest reason and length, and a close: the
        // buffer is sized once (`render` asserts it never reallocates), and
        // a buffer already large enough is kept.
        let long = "v".repeat(10_000);
        let response = Response::new(431, "text/plain", ResponseBody::Owned("b".repeat(99_999)))
            .with_header("X-Long", long.clone())
            .with_header("X-Long-Too", long);
        let mut out = Vec::new();
        render(&mut out, &response, false);
        assert!(out.len() <= out.capacity());
        let capacity = out.capacity();
        render(&mut out, &response, true);
        assert_eq!(out.capacity(), capacity);
        assert!(
            Response::new(200, "t", ResponseBody::Static(""))
                .headers
                .capacity()
                == 0
        );
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "CR or LF"))]
    fn a_header_that_would_break_its_line_is_left_out() {
        let response = Response::new(200, "text/plain", ResponseBody::Static("ok"))
            .with_header("X-Forged", "a\r\nSet-Cookie: b");
        let mut out = Vec::new();
        render(&mut out, &response, true);
        // Release builds: left out.
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
        );
    }
}
