//! The transitions of `machine`, one by one, without sockets: each test
//! plays the driver, feeding what the socket "did" back as events, with a
//! clock that moves only when told.

use super::*;
use std::cell::Cell;

const GET: &[u8] = b"GET /small HTTP/1.1\r\n\r\n";

/// A handler that counts its calls; `/mid` answers 64 KiB, `/later` defers,
/// `/echo` answers the request's body.
struct Handler {
    calls: Cell<usize>,
}

impl Handler {
    fn new() -> Handler {
        Handler {
            calls: Cell::new(0),
        }
    }

    fn handle(&self, request: &Request) -> Reply {
        self.calls.set(self.calls.get() + 1);
        let body = match request.target {
            "/mid" => ResponseBody::Owned("m".repeat(64 << 10)),
            "/echo" => ResponseBody::Owned(String::from_utf8_lossy(request.body).into_owned()),
            "/later" => {
                return Reply::Later(Later {
                    ready: Box::new(|wake| wake()),
                    answer: Box::new(|| {
                        Response::new(200, "text/plain", ResponseBody::Static("late"))
                    }),
                })
            }
            _ => ResponseBody::Static("small"),
        };
        Reply::Now(Response::new(200, "text/plain", body))
    }
}

/// The driver's side of a turn, with a clock at `now`.
struct Driver {
    scratch: Scratch,
    handler: Handler,
    load: Load,
    now: Cell<Instant>,
    /// When the clock started.
    t0: Instant,
}

impl Driver {
    fn new(idle_workers: usize) -> Driver {
        let t0 = Instant::now();
        Driver {
            scratch: Scratch::default(),
            handler: Handler::new(),
            load: Load::fixed(idle_workers),
            now: Cell::new(t0),
            t0,
        }
    }

    fn tick(&self, by: Duration) -> Instant {
        self.now.set(self.now.get() + by);
        self.now.get()
    }

    fn next(&mut self, turn: &mut Turn, event: Event) -> Action {
        let handler = &self.handler;
        let handle = |request: &Request| handler.handle(request);
        let now = || self.now.get();
        turn.next(event, &mut self.scratch, &handle, &self.load, &now)
    }

    /// A read that brings `bytes`, of a read of `room`.
    fn read(&mut self, turn: &mut Turn, room: usize, bytes: &[u8]) -> Action {
        assert!(bytes.len() <= room);
        self.scratch.input.extend_from_slice(bytes);
        self.next(
            turn,
            Event::Read {
                got: bytes.len(),
                room,
            },
        )
    }

    /// The bytes a write is for.
    fn unwritten(&self, turn: &Turn) -> Vec<u8> {
        turn.unwritten(&self.scratch.output).to_vec()
    }
}

fn begin(parked: Parked, scratch: &mut Scratch) -> Turn {
    match Turn::begin(parked, &mut scratch.input) {
        Ok(turn) => turn,
        Err(_) => panic!("given back without a turn"),
    }
}

fn parked(action: Action) -> Parked {
    match action {
        Action::Park(parked) => parked,
        other => panic!("not parked: {}", name(&other)),
    }
}

fn name(action: &Action) -> String {
    match action {
        Action::Read { room } => format!("Read {room}"),
        Action::Write => "Write".into(),
        Action::Discard => "Discard".into(),
        Action::Park(p) => format!("Park {:?}", p.wait()),
        Action::Defer(..) => "Defer".into(),
        Action::Finish(p) => format!("Finish {:?}", p.as_ref().map(Parked::wait)),
        Action::Close => "Close".into(),
    }
}

fn is_read(action: &Action, want: usize) -> bool {
    matches!(action, Action::Read { room } if *room == want)
}

#[test]
fn a_keep_alive_request_is_one_read_and_one_write_then_idle() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    let action = d.next(&mut turn, Event::Start);
    assert!(is_read(&action, READ_CHUNK), "{}", name(&action));
    // A short read took all there was: parse, answer, write.
    let action = d.read(&mut turn, READ_CHUNK, GET);
    assert!(matches!(action, Action::Write), "{}", name(&action));
    assert_eq!(d.handler.calls.get(), 1);
    let answer = d.unwritten(&turn);
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(answer.ends_with(b"\r\n\r\nsmall"));
    // All written, nothing left, input all read: idle since now, holding
    // nothing, without another read.
    let at = d.tick(Duration::from_millis(3));
    let idle = parked(d.next(&mut turn, Event::Wrote(answer.len())));
    assert_eq!(idle.wait(), Wait::Read);
    assert_eq!(idle.since, at);
    assert_eq!(idle.pending_len(), 0);
    assert!(matches!(&idle.state, State::Reading { partial } if partial.capacity() == 0));
}

#[test]
fn a_full_read_reads_again_before_parking() {
    // Edges: a connection parked with input unread would get no event.
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    assert!(is_read(&d.next(&mut turn, Event::Start), READ_CHUNK));
    // A read that filled its room: whole requests, then part of one.
    let bytes = &GET.repeat(READ_CHUNK / GET.len() + 1)[..READ_CHUNK];
    let action = d.read(&mut turn, READ_CHUNK, bytes);
    assert!(matches!(action, Action::Write));
    let answer = d.unwritten(&turn).len();
    // Each complete request is answered in turn, without reading.
    let complete = READ_CHUNK / GET.len();
    for _ in 1..complete {
        assert!(matches!(
            d.next(&mut turn, Event::Wrote(answer)),
            Action::Write
        ));
    }
    assert_eq!(d.handler.calls.get(), complete);
    // The last head is partial and the read was full: read again.
    let left = READ_CHUNK - complete * GET.len();
    let action = d.next(&mut turn, Event::Wrote(answer));
    assert!(is_read(&action, READ_CHUNK), "{}", name(&action));
    // Nothing more there: parked with the partial head, since the moment
    // it was begun in this turn after a served request.
    let at = d.tick(Duration::from_millis(1));
    let waiting = parked(d.next(&mut turn, Event::Empty));
    assert_eq!(waiting.wait(), Wait::Read);
    assert_eq!(waiting.since, at);
    assert!(matches!(&waiting.state, State::Reading { partial } if partial.len() == left));
}

#[test]
fn a_partial_head_carried_over_keeps_its_start() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let at = d.tick(Duration::from_secs(1));
    let first = parked(d.read(&mut turn, READ_CHUNK, b"GET /small HT"));
    assert_eq!(first.since, at, "begun in this turn: a full timeout");
    // The next bytes are still not a head: the start stays.
    d.tick(Duration::from_secs(1));
    let mut turn = begin(first, &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let second = parked(d.read(&mut turn, READ_CHUNK, b"TP/1.1\r\n"));
    assert_eq!(second.since, at);
    assert_eq!(
        second.expires_at(Duration::from_secs(5)),
        at + Duration::from_secs(5)
    );
    // The rest completes it.
    let mut turn = begin(second, &mut d.scratch);
    d.next(&mut turn, Event::Start);
    assert!(matches!(
        d.read(&mut turn, READ_CHUNK, b"\r\n"),
        Action::Write
    ));
    assert_eq!(d.handler.calls.get(), 1);
}

#[test]
fn a_read_never_takes_a_head_past_the_limit() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let mut head = b"GET /small HTTP/1.1\r\nX: ".to_vec();
    head.resize(MAX_HEAD - 100, b'a');
    d.scratch.input.extend_from_slice(&head);
    let action = d.next(
        &mut turn,
        Event::Read {
            got: READ_CHUNK,
            room: READ_CHUNK,
        },
    );
    assert!(is_read(&action, 101), "{}", name(&action));
}

#[test]
fn refusals_are_written_then_drained() {
    let too_large = format!(
        "POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY + 1
    );
    for (bytes, status) in [
        (&b"\x00\x01garbage\r\n\r\n"[..], "400"),
        // Refused from the head: none of the body is waited for.
        (too_large.as_bytes(), "413 Payload Too Large"),
        (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            "411 Length Required",
        ),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 5x\r\n\r\nhello",
            "400",
        ),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            "400",
        ),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "400",
        ),
    ] {
        let mut d = Driver::new(1);
        let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
        d.next(&mut turn, Event::Start);
        assert!(matches!(
            d.read(&mut turn, READ_CHUNK, bytes),
            Action::Write
        ));
        let answer = d.unwritten(&turn);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        assert!(text.contains("Connection: close"), "{text}");
        assert_eq!(d.handler.calls.get(), 0, "{text}");
        assert!(d.scratch.input.is_empty(), "nothing is kept to serve");
        let at = d.tick(Duration::from_millis(2));
        let Action::Finish(Some(draining)) = d.next(&mut turn, Event::Wrote(answer.len())) else {
            panic!("not finished to drain");
        };
        assert_eq!(draining.wait(), Wait::Drain);
        assert_eq!(draining.since, at);
        assert_eq!(
            draining.expires_at(Duration::from_secs(60)),
            at + DRAIN_TIME
        );
    }
}

#[test]
fn connection_close_finishes_without_draining() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let close = b"GET /small HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert!(matches!(
        d.read(&mut turn, READ_CHUNK, close),
        Action::Write
    ));
    let n = d.unwritten(&turn).len();
    assert!(matches!(
        d.next(&mut turn, Event::Wrote(n)),
        Action::Finish(None)
    ));
}

#[test]
fn a_hang_up_or_a_failure_closes() {
    for event in [Event::Eof, Event::Failed] {
        let mut d = Driver::new(1);
        let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
        d.next(&mut turn, Event::Start);
        assert!(matches!(d.next(&mut turn, event), Action::Close));
    }
    // Mid-answer too.
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    d.read(&mut turn, READ_CHUNK, GET);
    assert!(matches!(d.next(&mut turn, Event::Failed), Action::Close));
}

#[test]
fn an_interrupted_read_reads_again() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let action = d.next(&mut turn, Event::Interrupted);
    assert!(is_read(&action, READ_CHUNK), "{}", name(&action));
}

#[test]
fn an_answer_the_socket_does_not_take_waits_with_the_requests_behind_it() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let two = [&b"GET /mid HTTP/1.1\r\n\r\n"[..], GET].concat();
    assert!(matches!(d.read(&mut turn, READ_CHUNK, &two), Action::Write));
    let answer = d.unwritten(&turn);
    let at = d.tick(Duration::from_millis(1));
    let writing = parked(d.next(&mut turn, Event::Wrote(1000)));
    assert_eq!(writing.wait(), Wait::Write);
    assert_eq!(writing.since, at);
    assert_eq!(d.handler.calls.get(), 1, "the pipelined request waits");
    let State::Writing { unsent, after, .. } = &writing.state else {
        panic!("not writing");
    };
    assert_eq!(&unsent.bytes[..], &answer[1000..]);
    assert!(matches!(after, After::KeepAlive { pipelined } if pipelined == GET));
    assert!(writing.pending_len() >= answer.len() - 1000 + GET.len());

    // Room again: more is written, under the same deadline.
    d.tick(Duration::from_millis(1));
    let mut turn = begin(writing, &mut d.scratch);
    assert!(matches!(d.next(&mut turn, Event::Start), Action::Write));
    assert_eq!(d.unwritten(&turn), &answer[1000..]);
    let still = parked(d.next(&mut turn, Event::Wrote(10)));
    assert_eq!(still.since, at, "one deadline for the whole answer");

    // The rest goes: the pipelined request is served next, without a read.
    let mut turn = begin(still, &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let rest = d.unwritten(&turn).len();
    assert_eq!(rest, answer.len() - 1010);
    let action = d.next(&mut turn, Event::Wrote(rest));
    assert!(matches!(action, Action::Write), "{}", name(&action));
    assert_eq!(d.handler.calls.get(), 2);
    assert!(d.unwritten(&turn).ends_with(b"small"));
    // Its input was never seen empty: read before parking.
    let n = d.unwritten(&turn).len();
    assert!(is_read(&d.next(&mut turn, Event::Wrote(n)), READ_CHUNK));
    assert_eq!(parked(d.next(&mut turn, Event::Empty)).wait(), Wait::Read);
}

#[test]
fn an_unsent_answer_that_closes_keeps_no_requests() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let bytes = [&b"GET /mid HTTP/1.1\r\nConnection: close\r\n\r\n"[..], GET].concat();
    d.read(&mut turn, READ_CHUNK, &bytes);
    let writing = parked(d.next(&mut turn, Event::Wrote(0)));
    assert!(matches!(
        &writing.state,
        State::Writing {
            after: After::Close,
            ..
        }
    ));
    let mut turn = begin(writing, &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let n = d.unwritten(&turn).len();
    assert!(matches!(
        d.next(&mut turn, Event::Wrote(n)),
        Action::Finish(None)
    ));
    assert_eq!(d.handler.calls.get(), 1);
}

/// Serves `/mid` requests pipelined in one read until the turn ends;
/// returns how many were answered and how it ended.
fn long_pipeline(idle_workers: usize) -> (usize, Parked) {
    let mut d = Driver::new(idle_workers);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let pipeline = b"GET /mid HTTP/1.1\r\n\r\n".repeat(40);
    d.scratch.input.extend_from_slice(&pipeline);
    let mut action = d.next(
        &mut turn,
        Event::Read {
            got: 1,
            room: READ_CHUNK,
        },
    );
    loop {
        match action {
            Action::Write => {
                let n = d.unwritten(&turn).len();
                action = d.next(&mut turn, Event::Wrote(n));
            }
            Action::Read { .. } => action = d.next(&mut turn, Event::Empty),
            Action::Park(parked) => return (d.handler.calls.get(), parked),
            other => panic!("{}", name(&other)),
        }
    }
}

#[test]
fn a_long_turn_gives_its_worker_up_only_while_others_wait() {
    // Nobody waits: the whole pipeline in one turn.
    let (served, idle) = long_pipeline(1);
    assert_eq!(served, 40);
    assert_eq!(idle.wait(), Wait::Read);
    // Others wait: the turn ends once TURN_BYTES are rendered, with the
    // rest of the pipeline kept, ready to serve.
    let (served, ready) = long_pipeline(0);
    let per_turn = TURN_BYTES.div_ceil(64 << 10);
    assert!((per_turn..=per_turn + 1).contains(&served), "{served}");
    assert_eq!(ready.wait(), Wait::Ready);
    let State::Ready { pipelined } = &ready.state else {
        panic!("not ready");
    };
    assert_eq!(pipelined.len(), (40 - served) * 21);
    // The next turn starts counting again, from the kept requests.
    let mut d = Driver::new(0);
    let mut turn = begin(ready, &mut d.scratch);
    assert!(matches!(d.next(&mut turn, Event::Start), Action::Write));
    assert_eq!(d.handler.calls.get(), 1);
}

#[test]
fn a_deferred_request_waits_until_woken_then_answers_first() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let bytes = [&b"GET /later HTTP/1.1\r\n\r\n"[..], GET].concat();
    let at = d.tick(Duration::from_millis(1));
    let Action::Defer(mut waiting, ready) = d.read(&mut turn, READ_CHUNK, &bytes) else {
        panic!("not deferred");
    };
    assert_eq!(d.handler.calls.get(), 1, "the pipelined request waits");
    assert_eq!(waiting.wait(), Wait::Later);
    assert_eq!(waiting.since, at);
    assert_eq!(waiting.expires_at(Duration::ZERO), at + LATER_LIMIT);
    assert_eq!(waiting.pending_len(), GET.len());
    // Its client sends more before the wake-up: given back as it is.
    let Err(back) = Turn::begin(waiting, &mut d.scratch.input) else {
        panic!("served before its answer");
    };
    waiting = back;
    // A wake-up before the call ended is someone else's: nothing changes.
    assert!(!waiting.wake(|| d.tick(Duration::ZERO)));
    assert_eq!(waiting.wait(), Wait::Later);
    // The call ends: the flag is set, then the wake-up comes.
    let woke = Cell::new(false);
    ready(Box::new(|| ()));
    let at = d.tick(Duration::from_millis(5));
    assert!(waiting.wake(|| {
        woke.set(true);
        at
    }));
    assert!(woke.get());
    assert_eq!(waiting.wait(), Wait::Write);
    assert_eq!(waiting.since, at);
    assert!(!waiting.wake(|| at), "woken once");
    // Its turn: the deferred answer first, then the pipelined request.
    let mut turn = begin(waiting, &mut d.scratch);
    assert!(matches!(d.next(&mut turn, Event::Start), Action::Write));
    let late = d.unwritten(&turn);
    assert!(late.ends_with(b"\r\n\r\nlate"));
    assert!(matches!(
        d.next(&mut turn, Event::Wrote(late.len())),
        Action::Write
    ));
    assert_eq!(d.handler.calls.get(), 2);
    assert!(d.unwritten(&turn).ends_with(b"small"));
}

#[test]
fn a_deferred_request_whose_flag_is_set_is_served_before_its_wake_up() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let Action::Defer(waiting, ready) =
        d.read(&mut turn, READ_CHUNK, b"GET /later HTTP/1.1\r\n\r\n")
    else {
        panic!("not deferred");
    };
    ready(Box::new(|| ()));
    // An event for its client comes first: the answer is there, so it is
    // written now; the wake-up that follows finds nothing to wake.
    let mut turn = begin(waiting, &mut d.scratch);
    assert!(matches!(d.next(&mut turn, Event::Start), Action::Write));
    let n = d.unwritten(&turn).len();
    assert!(is_read(&d.next(&mut turn, Event::Wrote(n)), READ_CHUNK));
    let mut idle = parked(d.next(&mut turn, Event::Empty));
    assert!(!idle.wake(|| d.t0), "a late wake-up changes nothing");
    assert_eq!(idle.wait(), Wait::Read);
}

#[test]
fn draining_swallows_a_few_reads_per_event_within_its_budget() {
    let mut d = Driver::new(1);
    let since = d.t0;
    let draining = Parked {
        state: State::Draining { drained: 0 },
        since,
    };
    let mut scratch = Scratch::default();
    scratch.input.extend_from_slice(b"untouched");
    let mut turn = begin(draining, &mut scratch);
    assert!(matches!(d.next(&mut turn, Event::Start), Action::Discard));
    let full = Event::Read {
        got: 8192,
        room: 8192,
    };
    for _ in 1..DRAIN_READS_PER_WAKE {
        assert!(matches!(d.next(&mut turn, full), Action::Discard));
    }
    // The last read of this event: parked, still under its first deadline.
    let again = parked(d.next(&mut turn, full));
    assert_eq!(again.since, since);
    assert!(matches!(again.state, State::Draining { drained } if drained == 8 * 8192));
    assert_eq!(
        scratch.input, b"untouched",
        "a drain keeps out of the buffers"
    );
    // Nothing more for now: parked.
    let mut turn = begin(again, &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let again = parked(d.next(&mut turn, Event::Empty));
    // The budget spent, or a hang-up: closed.
    let mut turn = begin(again, &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let last = Event::Read {
        got: DRAIN_BYTES,
        room: 8192,
    };
    assert!(matches!(d.next(&mut turn, last), Action::Close));
    let mut turn = begin(
        Parked {
            state: State::Draining { drained: 0 },
            since,
        },
        &mut d.scratch,
    );
    d.next(&mut turn, Event::Start);
    assert!(matches!(d.next(&mut turn, Event::Eof), Action::Close));
}

#[test]
fn expiry_follows_the_wait() {
    let t0 = Instant::now();
    let timeout = Duration::from_secs(7);
    let at = |state| Parked { state, since: t0 }.expires_at(timeout);
    assert_eq!(
        at(State::Reading {
            partial: Vec::new()
        }),
        t0 + timeout
    );
    assert_eq!(
        at(State::Ready {
            pipelined: Vec::new()
        }),
        t0 + timeout
    );
    assert_eq!(at(State::Draining { drained: 0 }), t0 + DRAIN_TIME);
    let unsent = Unsent {
        bytes: SecretBytes::new(vec![1; 10]),
        written: 4,
    };
    let writing = Parked {
        state: State::Writing {
            unsent,
            after: After::Drain,
            turn: 0,
        },
        since: t0,
    };
    assert_eq!(writing.expires_at(timeout), t0 + timeout);
    assert_eq!(writing.pending_len(), 6);
}

/// A POST to `/echo` with `body`.
fn post(body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

#[test]
fn a_body_read_in_one_go_is_answered_and_the_connection_stays_open() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let action = d.read(&mut turn, READ_CHUNK, &post(b"{\"SecretId\":\"a\"}"));
    assert!(matches!(action, Action::Write), "{}", name(&action));
    let answer = d.unwritten(&turn);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n{\"SecretId\":\"a\"}"), "{text}");
    assert!(!text.contains("Connection: close"), "{text}");
    let idle = parked(d.next(&mut turn, Event::Wrote(answer.len())));
    assert_eq!(idle.wait(), Wait::Read);
    assert_eq!(idle.pending_len(), 0);
}

#[test]
fn a_body_split_over_reads_is_parked_between_them_under_one_timeout() {
    let request = post(b"0123456789");
    let (head, body) = request.split_at(request.len() - 10);
    let timeout = Duration::from_secs(5);
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    // The head alone: complete, but not its body. Parked with it, since its
    // first byte came.
    let at = d.tick(Duration::from_secs(1));
    let first = parked(d.read(&mut turn, READ_CHUNK, head));
    assert_eq!(first.wait(), Wait::Read);
    assert_eq!(first.since, at);
    assert!(matches!(&first.state, State::Reading { partial } if partial == head));
    assert_eq!(d.handler.calls.get(), 0);
    // Part of the body: still parked, the deadline still from the first
    // byte.
    d.tick(Duration::from_secs(2));
    let mut turn = begin(first, &mut d.scratch);
    assert!(is_read(&d.next(&mut turn, Event::Start), READ_CHUNK));
    let second = parked(d.read(&mut turn, READ_CHUNK, &body[..4]));
    assert_eq!(second.since, at);
    assert_eq!(second.expires_at(timeout), at + timeout);
    assert_eq!(second.pending_len(), head.len() + 4);
    assert_eq!(d.handler.calls.get(), 0);
    // The rest: answered, and idle again from now.
    d.tick(Duration::from_secs(1));
    let mut turn = begin(second, &mut d.scratch);
    d.next(&mut turn, Event::Start);
    assert!(matches!(
        d.read(&mut turn, READ_CHUNK, &body[4..]),
        Action::Write
    ));
    assert_eq!(d.handler.calls.get(), 1);
    let answer = d.unwritten(&turn);
    assert!(answer.ends_with(b"\r\n\r\n0123456789"));
    let done = d.tick(Duration::from_millis(1));
    let idle = parked(d.next(&mut turn, Event::Wrote(answer.len())));
    assert_eq!(idle.since, done);
    assert_eq!(idle.pending_len(), 0);
}

#[test]
fn a_request_after_a_body_is_served_next() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    // The body looks like a request head: it must not be taken for one.
    let bytes = [post(GET), post(b"two"), GET.to_vec()].concat();
    let mut answers = Vec::new();
    let mut action = d.read(&mut turn, READ_CHUNK, &bytes);
    while let Action::Write = action {
        let answer = d.unwritten(&turn);
        action = d.next(&mut turn, Event::Wrote(answer.len()));
        answers.push(answer);
    }
    assert!(matches!(action, Action::Park(_)), "{}", name(&action));
    assert_eq!(d.handler.calls.get(), 3);
    assert_eq!(answers.len(), 3);
    assert!(answers[0].ends_with(GET));
    assert!(answers[1].ends_with(b"\r\n\r\ntwo"));
    assert!(answers[2].ends_with(b"\r\n\r\nsmall"));
}

#[test]
fn a_deferred_request_takes_its_body_off_the_input() {
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let later = b"POST /later HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
    let bytes = [&later[..], GET].concat();
    let Action::Defer(waiting, _) = d.read(&mut turn, READ_CHUNK, &bytes) else {
        panic!("not deferred");
    };
    assert!(matches!(
        &waiting.state,
        State::Waiting { after: After::KeepAlive { pipelined }, .. } if pipelined == GET
    ));
}

/// Feeds `stream` in reads as large as each asks for while the turn reads,
/// checking that the input never holds more than the largest request;
/// returns the action after the last read and the bytes fed.
fn feed(d: &mut Driver, turn: &mut Turn, stream: &[u8]) -> (Action, usize) {
    let mut fed = 0;
    let mut action = d.next(turn, Event::Start);
    while let Action::Read { room } = action {
        assert!(room > 0);
        let got = room.min(stream.len() - fed);
        action = d.read(turn, room, &stream[fed..fed + got]);
        fed += got;
        assert!(d.scratch.input.len() <= MAX_HEAD + MAX_BODY);
    }
    (action, fed)
}

#[test]
fn a_body_of_max_body_is_read_and_one_byte_more_is_refused() {
    let body: Vec<u8> = (0..MAX_BODY).map(|i| b'a' + (i % 26) as u8).collect();
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    let request = post(&body);
    let (action, fed) = feed(&mut d, &mut turn, &request);
    assert!(matches!(action, Action::Write), "{}", name(&action));
    assert_eq!(fed, request.len());
    assert_eq!(d.handler.calls.get(), 1);
    assert!(d.unwritten(&turn).ends_with(&body));

    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    let over = [post(&body), b"a".to_vec()].concat();
    let over = String::from_utf8_lossy(&over).replacen(
        &format!(": {MAX_BODY}\r\n"),
        &format!(": {}\r\n", MAX_BODY + 1),
        1,
    );
    // The first read, head and the start of the body: refused at once.
    let action = d.read(&mut turn, READ_CHUNK, &over.as_bytes()[..READ_CHUNK]);
    assert!(matches!(action, Action::Write), "{}", name(&action));
    assert!(d.unwritten(&turn).starts_with(b"HTTP/1.1 413 "));
    assert_eq!(d.handler.calls.get(), 0);
}

#[test]
fn a_read_never_takes_a_request_past_the_limit() {
    // The longest head and body there may be, then the next request, all
    // there to be read: the reads stop at the limit, and the next request
    // is read after.
    let mut head = format!("POST /echo HTTP/1.1\r\nContent-Length: {MAX_BODY}\r\nX: ").into_bytes();
    head.resize(MAX_HEAD - 4, b'h');
    head.extend_from_slice(b"\r\n\r\n");
    let request = [head, vec![b'b'; MAX_BODY], GET.to_vec()].concat();
    let mut d = Driver::new(1);
    let mut turn = begin(Parked::new(d.t0), &mut d.scratch);
    d.next(&mut turn, Event::Start);
    // Part of the head carried over, so that full reads end off the limit.
    let first = parked(d.read(&mut turn, READ_CHUNK, &request[..100]));
    let mut turn = begin(first, &mut d.scratch);
    let (action, fed) = feed(&mut d, &mut turn, &request[100..]);
    assert!(matches!(action, Action::Write), "{}", name(&action));
    assert_eq!(100 + fed, MAX_HEAD + MAX_BODY);
    assert_eq!(d.handler.calls.get(), 1);
    // The read that completed the body was a full one: read again for
    // the rest.
    let n = d.unwritten(&turn).len();
    let action = d.next(&mut turn, Event::Wrote(n));
    assert!(is_read(&action, READ_CHUNK), "{}", name(&action));
    assert!(matches!(d.read(&mut turn, READ_CHUNK, GET), Action::Write));
    assert_eq!(d.handler.calls.get(), 2);
}
