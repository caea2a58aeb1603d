//! The floor of `bench/bench.py`'s keep-alive rows: a server that spends as
//! little as any server could on a cache hit, so that each run shows how many
//! requests/s there were to win on that machine at all.
//!
//! It answers every request head with the same bytes (our agent's answer to
//! the benchmark's secret, read from a file) and parses nothing but where a
//! head ends: a `read` and a `write` a request, one thread per CPU, each with
//! an epoll set of its own, to which the accepting thread hands connections
//! in turn. What it spends is what loopback TCP and waking the client cost,
//! which an agent can only add to; the client (wrk) spends about as much
//! again on its side.
//! Measured with `wrk -t2 -c32` on 2 CPUs, three interleaved rounds each:
//! 132,000 requests/s at 7.3 µs of CPU a request, against 125,000 and
//! 6.6 µs for a C server that takes 64 events a wait (one listener per
//! thread), 124,000 and 8.0 µs for our agent, 99,000 and 10.2 µs for AWS's
//! 2.1.0 (README, "Benchmarks").
//!
//! Nothing else: a client that does not read its answers (a write that would
//! block) is disconnected.
//!
//! ```text
//! bench_floor PORT ANSWER_FILE
//! ```

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;
use std::{env, fs, process, thread};

use secrets_manager_agent::os::epoll::{Epoll, Interest, Mode};

const HEAD_END: &[u8] = b"\r\n\r\n";

fn main() {
    let args: Vec<String> = env::args().collect();
    let (port, answer) = match args.as_slice() {
        [_, port, file] => match (port.parse::<u16>(), fs::read(file)) {
            (Ok(port), Ok(answer)) => (port, answer),
            (Err(e), _) => die(&format!("not a port: {port}: {e}")),
            (_, Err(e)) => die(&format!("cannot read {file}: {e}")),
        },
        _ => die("usage: bench_floor PORT ANSWER_FILE"),
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|e| die(&format!("cannot listen on 127.0.0.1:{port}: {e}")));
    let answer: Arc<[u8]> = answer.into();
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let mut workers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let epoll = Arc::new(Epoll::new().unwrap_or_else(|e| die(&format!("epoll: {e}"))));
        let (handed, taken) = channel();
        let (own, answer) = (epoll.clone(), answer.clone());
        thread::spawn(move || serve(&own, &taken, &answer));
        workers.push((epoll, handed));
    }
    // Round robin: each worker gets as many connections as the next.
    for (stream, (epoll, handed)) in listener.incoming().zip(workers.iter().cycle()) {
        let Ok(stream) = stream else { continue };
        if stream.set_nonblocking(true).is_err() || stream.set_nodelay(true).is_err() {
            continue;
        }
        let fd = stream.as_raw_fd();
        // Handed over before it is registered, so that its first event finds
        // it; the worker cannot close it before that event.
        if handed.send(stream).is_err() {
            die("a worker stopped");
        }
        if let Err(e) = epoll.add(&fd, Interest::Read, Mode::Edges, fd as u64) {
            die(&format!("epoll: {e}"));
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
            Err(e) => die(&format!("epoll: {e}")),
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
