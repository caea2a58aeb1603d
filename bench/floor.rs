//! The floor of `bench/bench.py`'s keep-alive rows: a server that does
//! nothing but wait for a connection, read its request and write the
//! answer, run in the same rounds as the agents, so that each run shows what
//! loopback TCP, waking the client and the client itself cost on that
//! machine before an agent adds anything of its own.
//!
//! It answers every request head with the same bytes (our agent's answer to
//! the benchmark's secret, read from a file) and parses nothing but where a
//! head ends: an `epoll_wait`, a `read` and a `write` a request, as our agent
//! does, one thread per CPU, each with an epoll set of its own, to which the
//! accepting thread hands connections in turn. It is a reference, not a
//! bound: a server could still schedule its threads differently (take
//! several events a wait, yield, run as `SCHED_BATCH`) and serve a few
//! percent more. In the run of docs/benchmarks.md (`wrk -t2 -c32` on 2 CPUs, five
//! interleaved rounds): 115,798 requests/s at 8.18 µs of CPU a request,
//! against 110,743 and 8.84 µs for our agent and 91,368 and 11.14 µs for AWS's
//! 2.1.0 (docs/benchmarks.md, "The floor").
//!
//! Nothing else: a client that does not read its answers (a write that would
//! block) is disconnected, and one that half-closes in the same segment as
//! its last request is never closed (wrk does neither).
//!
//! ```text
//! bench_floor PORT ANSWER_FILE
//! ```

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;
use std::{env, fs, process, thread};

use secrets_manager_agent_os::epoll::{Epoll, Interest, Mode};

const HEAD_END: &[u8] = b"\r\n\r\n";
const USAGE: &str = "bench_floor PORT ANSWER_FILE (the bytes to answer every request with)";
/// How long accepting rests after an error other than a refused
/// connection (out of descriptors, most likely), instead of spinning
/// beside the benchmark.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

fn main() {
    let args: Vec<OsString> = env::args_os().collect();
    let (port, answer) = match args.as_slice() {
        [_, port, file] => match (
            port.to_str().and_then(|p| p.parse::<u16>().ok()),
            fs::read(file),
        ) {
            (Some(port), Ok(answer)) => (port, answer),
            (None, _) => die(&format!(
                "not a port: {}; usage: {USAGE}",
                port.to_string_lossy()
            )),
            (_, Err(e)) => die(&format!(
                "cannot read the answer from {}: {e}",
                file.to_string_lossy()
            )),
        },
        _ => die(&format!("usage: {USAGE}")),
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap_or_else(|e| {
        die(&format!(
            "cannot listen on 127.0.0.1:{port}: {e}; choose a free port"
        ))
    });
    let answer: Arc<[u8]> = answer.into();
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let mut workers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let epoll = Arc::new(
            Epoll::new().unwrap_or_else(|e| die(&format!("cannot make an epoll set: {e}"))),
        );
        let (handed, taken) = channel();
        let (own, answer) = (epoll.clone(), answer.clone());
        let started = thread::Builder::new().spawn(move || serve(&own, &taken, &answer));
        if let Err(e) = started {
            die(&format!("cannot start a thread: {e}"));
        }
        workers.push((epoll, handed));
    }
    // Round robin: each worker gets as many connections as the next.
    for (stream, (epoll, handed)) in listener.incoming().zip(workers.iter().cycle()) {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                eprintln!("bench_floor: accept: {e}");
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if stream.set_nonblocking(true).is_err() || stream.set_nodelay(true).is_err() {
            continue;
        }
        let fd = stream.as_raw_fd();
        // Handed over before it is registered, so that its first event finds
        // it; the worker cannot close it before that event.
        if handed.send(stream).is_err() {
            die("a worker thread ended; its error is above");
        }
        if let Err(e) = epoll.add(&fd, Interest::Read, Mode::Edges, fd as u64) {
            die(&format!("cannot wait for a connection: {e}"));
        }
    }
}

fn die(message: &str) -> ! {
    eprintln!("bench_floor: {message}");
    process::exit(2)
}

/// One worker: answers every head its connections send.
fn serve(epoll: &Epoll, taken: &Receiver<TcpStream>, answer: &[u8]) {
    // A connection's stream and how much of HEAD_END its last read ended in.
    let mut conns: HashMap<RawFd, (TcpStream, usize)> = HashMap::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let fd = match epoll.wait_one(Duration::from_secs(3600)) {
            Ok(Some(token)) => token as RawFd,
            Ok(None) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => die(&format!("waiting for connections failed: {e}")),
        };
        if !conns.contains_key(&fd) {
            conns.extend(taken.try_iter().map(|s| (s.as_raw_fd(), (s, 0))));
        }
        let Some((stream, matched)) = conns.get_mut(&fd) else {
            continue;
        };
        if !answer_heads(stream, matched, &mut buf, answer) {
            // Dropping the stream closes it, which also takes it out of the
            // epoll set.
            conns.remove(&fd);
        }
    }
}

/// Reads what the connection sent (edge-triggered: until a short read) and
/// writes one answer per head that ended in it. False when it is done for.
fn answer_heads(
    stream: &mut TcpStream,
    matched: &mut usize,
    buf: &mut [u8],
    answer: &[u8],
) -> bool {
    loop {
        let n = match stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        for _ in 0..heads_ended(matched, &buf[..n]) {
            // A would-block write: the client does not read; see the
            // module's header.
            if stream.write_all(answer).is_err() {
                return false;
            }
        }
        if n < buf.len() {
            return true;
        }
    }
}

/// How many heads end in `bytes`, `matched` being how much of HEAD_END the
/// bytes before them ended in (and then these).
fn heads_ended(matched: &mut usize, bytes: &[u8]) -> usize {
    let mut ended = 0;
    for &byte in bytes {
        *matched = if byte == HEAD_END[*matched] {
            *matched + 1
        } else if byte == HEAD_END[0] {
            1
        } else {
            0
        };
        if *matched == HEAD_END.len() {
            *matched = 0;
            ended += 1;
        }
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_heads_across_reads_and_pipelined() {
        let mut matched = 0;
        assert_eq!(heads_ended(&mut matched, b"GET / HTTP/1.1\r\nHost: x\r"), 0);
        assert_eq!(heads_ended(&mut matched, b"\n\r"), 0);
        assert_eq!(heads_ended(&mut matched, b"\nGET / HTTP/1.1\r\n\r\nGET"), 2);
        assert_eq!(heads_ended(&mut matched, b" / HTTP/1.1\r\n\r\n"), 1);
        assert_eq!(matched, 0);
    }

    #[test]
    fn a_stray_carriage_return_starts_the_match_again() {
        let mut matched = 0;
        assert_eq!(heads_ended(&mut matched, b"a\r\n\r\r\n\r\n"), 1);
        assert_eq!(heads_ended(&mut matched, b"\r\n\n\r\n"), 0);
        assert_eq!(matched, 2);
    }
}
