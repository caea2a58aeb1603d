//! A connection's protocol as typed states and pure transitions, apart from
//! its socket: `conn` is the driver that does the reads and writes asked for
//! here and reports what the socket did. Every rule about when to read, when
//! a connection may be parked, what it keeps while it waits and when it
//! gives its worker up is here, and tested without sockets.
//!
//! Between two turns on a worker a connection is [`Parked`] in one [`State`]
//! whose variant carries exactly what that wait needs: part of a request
//! (its head, or its head and part of the body it announces), the
//! requests left when it gave its worker up, the answer still to come from
//! another's call to AWS, the rest of an answer the socket did not take, or
//! the count of a refusal's bytes swallowed. Nothing else can be held:
//! pipelined requests only behind an answer that keeps the connection open,
//! unsent bytes only while waiting for room, and so on.
//!
//! A worker's turn is a [`Turn`]: [`Turn::next`] takes what the last I/O did
//! ([`Event`]) and says what to do now ([`Action`]): read, write, swallow
//! input, or end the turn parked, deferred, finished or closed. Parsing, the
//! handler and rendering run inside `next`, on the worker's own buffers
//! ([`Scratch`]): a keep-alive request costs one `read` and one `write`, and
//! allocates nothing of its own.
//!
//! A request's body (up to [`MAX_BODY`], announced by `Content-Length`) is
//! read like the rest of its head: the request is incomplete until the body
//! is all there, and is parked with the bytes so far meanwhile, under one
//! client timeout from its first byte. Once answered, the connection stays
//! open as after any request. A body refused (too large, chunked, or of no
//! clear length) is never buffered: the refusal is answered at once and the
//! rest drained.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroize;

use crate::http::{
    parse_head, render, Head, Later, Parsed, Ready, Reply, Request, Response, ResponseBody, Wake,
    MAX_BODY, MAX_HEAD, MAX_HEADERS,
};
use crate::pool::Load;
use secrets_manager_agent_core::secret::SecretBytes;

/// Bytes asked of one read: a cache hit's request head fits in one.
pub const READ_CHUNK: usize = 4 * 1024;
/// After refusing a request, how much of the rest we swallow so the client can
/// read our answer instead of a reset.
const DRAIN_BYTES: usize = 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_millis(500);
/// Reads of 8 KiB per readiness: 64 KiB at most per event.
const DRAIN_READS_PER_WAKE: usize = 8;
/// The longest a request waits behind another's call to AWS before the
/// keeper closes it. That call always ends (its own timeouts and retries
/// bound it well below this): this is a last resort, not a policy.
pub const LATER_LIMIT: Duration = Duration::from_secs(300);
/// Answer bytes one connection may have rendered in one turn on a worker
/// while other connections wait for one: a client that pipelines hundreds of
/// requests for a large secret (and whose socket takes megabytes) otherwise
/// keeps a worker for as long as it likes, and the pool grows for the
/// others.
pub const TURN_BYTES: usize = 256 * 1024;

/// What a parked connection waits for, as the server arms epoll for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The next request, or the rest of one (of its head or its body).
    Read,
    /// Room in the socket for the rest of an answer (or for a woken one).
    /// A client that does not read gets one client timeout for the whole
    /// answer, and holds no worker.
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

/// Where a connection stands between two turns, with what it holds.
pub enum State {
    /// Idle, or part of a request read (`partial`: part of a head, or a
    /// head and part of its body); the socket's input was read to the end,
    /// so the next bytes or a hang-up are an edge.
    Reading { partial: Vec<u8> },
    /// Gave its worker up after a turn's worth of answers, with requests
    /// read (`pipelined`) or input still in the socket.
    Ready { pipelined: Vec<u8> },
    /// Its request's answer waits on another's call to AWS.
    Waiting {
        deferred: Deferred,
        after: After,
        turn: usize,
    },
    /// That call ended and woke it: the answer is there, to be written once
    /// the socket has room.
    Woken {
        deferred: Deferred,
        after: After,
        turn: usize,
    },
    /// The socket did not take a whole answer: the rest waits for room.
    Writing {
        unsent: Unsent,
        after: After,
        turn: usize,
    },
    /// Refused: what the client still sends is swallowed before closing,
    /// `drained` bytes so far.
    Draining { drained: usize },
}

/// How a connection goes on once an answer is written.
pub enum After {
    /// Serve the next request: those already read (`pipelined`) first.
    KeepAlive { pipelined: Vec<u8> },
    /// The client asked to close.
    Close,
    /// The request was refused: close after swallowing what the client
    /// still sends (the rest of a body we would not read, say).
    Drain,
}

/// [`After`] without the bytes, while the worker's buffer holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    KeepAlive,
    Close,
    Drain,
}

impl After {
    /// `then`, keeping `rest` (the requests read after this one's head) if
    /// the connection stays open to serve them.
    fn keeping(then: Then, rest: &[u8]) -> After {
        match then {
            Then::KeepAlive => After::KeepAlive {
                pipelined: rest.to_vec(),
            },
            Then::Close => After::Close,
            Then::Drain => After::Drain,
        }
    }

    fn held(&self) -> usize {
        match self {
            After::KeepAlive { pipelined } => pipelined.capacity(),
            After::Close | After::Drain => 0,
        }
    }
}

/// The answer still to come for a request.
pub struct Deferred {
    answer: Box<dyn FnOnce() -> Response + Send>,
    stays_open: bool,
    /// Set by the wake-up, before it arms the connection: events that come
    /// for the connection before (its client sent more, or hung up) find it
    /// still waiting. What the client sent is read after the answer.
    woken: Arc<AtomicBool>,
}

impl Deferred {
    fn is_woken(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }
}

/// The rest of an answer.
pub struct Unsent {
    /// May hold a secret: zeroed when dropped.
    bytes: SecretBytes,
    written: usize,
}

/// A connection between two turns: its state, and when the current wait
/// began (the first byte of a partial request, the moment it went idle or gave
/// its worker up, the answer that did not fit the socket, the refusal being
/// drained, the request deferred, or, once woken, its answer being there).
/// The keeper closes the connection when [`Parked::expires_at`] passes.
pub struct Parked {
    pub state: State,
    pub since: Instant,
}

impl Parked {
    /// A new connection: idle since `now`.
    pub fn new(now: Instant) -> Parked {
        Parked {
            state: State::Reading {
                partial: Vec::new(),
            },
            since: now,
        }
    }

    pub fn wait(&self) -> Wait {
        match self.state {
            State::Reading { .. } => Wait::Read,
            State::Ready { .. } => Wait::Ready,
            State::Waiting { .. } => Wait::Later,
            State::Woken { .. } | State::Writing { .. } => Wait::Write,
            State::Draining { .. } => Wait::Drain,
        }
    }

    /// When the keeper gives up on this connection: an idle or trickling
    /// client and an answer the client does not read get `timeout`, a drain
    /// a fixed half second, a request waiting on another's call to AWS
    /// [`LATER_LIMIT`] (the call ends long before).
    pub fn expires_at(&self, timeout: Duration) -> Instant {
        match self.wait() {
            Wait::Read | Wait::Write | Wait::Ready => self.since + timeout,
            Wait::Drain => self.since + DRAIN_TIME,
            Wait::Later => self.since + LATER_LIMIT,
        }
    }

    /// Bytes held: an incomplete request (head and body: at most
    /// `MAX_HEAD + MAX_BODY`), pipelined requests (as allocated, which is
    /// what memory pays), and the part of an answer not yet written.
    pub fn pending_len(&self) -> usize {
        match &self.state {
            State::Reading { partial: held } | State::Ready { pipelined: held } => held.capacity(),
            State::Waiting { after, .. } | State::Woken { after, .. } => after.held(),
            State::Writing { unsent, after, .. } => {
                after.held() + unsent.bytes.len() - unsent.written
            }
            State::Draining { .. } => 0,
        }
    }

    /// Takes a wake-up: whether the connection waits for it. If it does, it
    /// is now [`State::Woken`], since `now()`. A wake-up may come late: the
    /// connection may have been served after its flag was set and before
    /// this call, and wait for another call to AWS by now, or for nothing.
    pub fn wake(&mut self, now: impl FnOnce() -> Instant) -> bool {
        if !matches!(&self.state, State::Waiting { deferred, .. } if deferred.is_woken()) {
            return false;
        }
        let idle = State::Reading {
            partial: Vec::new(),
        };
        if let State::Waiting {
            deferred,
            after,
            turn,
        } = std::mem::replace(&mut self.state, idle)
        {
            self.state = State::Woken {
                deferred,
                after,
                turn,
            };
        }
        self.since = now();
        true
    }

    /// Moves the state out for a turn, leaving an idle one.
    pub fn take(&mut self) -> Parked {
        std::mem::replace(self, Parked::new(self.since))
    }
}

/// A worker's buffers, reused across requests so that a request allocates
/// little. The pool replaces them with empty ones when the worker goes idle,
/// giving back what a burst grew.
#[derive(Default)]
pub struct Scratch {
    /// The bytes read: a request, or several pipelined ones (with the
    /// token, and bodies).
    pub input: Vec<u8>,
    /// The answer being written (with the secret).
    pub output: Vec<u8>,
}

/// The pool drops a worker's buffers when it goes idle or after a panic:
/// what they held is overwritten first.
impl Drop for Scratch {
    fn drop(&mut self) {
        self.input.zeroize();
        self.output.zeroize();
    }
}

/// What the socket did with the last [`Action`] (read and swallow errors
/// other than these, and failed writes, are [`Event::Failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The turn begins.
    Start,
    /// A read of at most `room` bytes got `got` (more than none).
    Read { got: usize, room: usize },
    /// A read found nothing (it would block): the input is all read.
    Empty,
    /// A read was interrupted by a signal before it got anything.
    Interrupted,
    /// The client hung up.
    Eof,
    /// The socket took `0..=len` bytes of what was to be written; fewer
    /// than all when it is full.
    Wrote(usize),
    /// The socket failed.
    Failed,
}

/// What the driver does next.
pub enum Action {
    /// Read at most `room` bytes onto the end of `Scratch::input`.
    Read {
        room: usize,
    },
    /// Write [`Turn::unwritten`], as much as the socket takes now.
    Write,
    /// Read and throw away one buffer's worth.
    Discard,
    /// The turn is over: back to epoll.
    Park(Parked),
    /// Parked until `Ready` calls the wake-up it is given.
    Defer(Parked, Ready),
    /// The last answer is written: shut the socket's write side, then park
    /// it to drain, or close it.
    Finish(Option<Parked>),
    Close,
}

/// Where a turn is: the connection taken out of its [`State`].
enum Step {
    /// Writing more of an answer the socket did not take before.
    Flush { unsent: Unsent, after: After },
    /// Woken: the deferred answer is to be rendered.
    Answer { deferred: Deferred, then: Then },
    /// Parsing `Scratch::input`, or reading more of it.
    Parse,
    /// Writing the answer in `Scratch::output`.
    Send { then: Then },
    /// Swallowing a refused client's input: `reads` so far in this turn.
    Drain { drained: usize, reads: usize },
    /// The turn ended; the last action said how.
    Done,
}

/// A connection on a worker, from [`Turn::begin`] to an action that ends
/// the turn.
pub struct Turn {
    step: Step,
    since: Instant,
    /// Answer bytes rendered since the connection last ran out of requests
    /// or gave its worker up (see [`TURN_BYTES`]).
    turn: usize,
    /// The input began this turn with bytes carried over.
    was_partial: bool,
    /// A request was answered in this turn.
    served: bool,
    /// The socket had nothing more when last read: connections are
    /// registered for edges (`os::epoll`), so one is parked only once its
    /// input is all read, or no event would come for what is left.
    drained: bool,
}

impl Turn {
    /// Takes a parked connection for a turn, moving what it holds of its
    /// input into `input`. A connection whose answer is not there yet
    /// (woken by its client, not by the call it waits on) has nothing to do
    /// and is given back.
    pub fn begin(parked: Parked, input: &mut Vec<u8>) -> Result<Turn, Parked> {
        let Parked { state, since } = parked;
        let mut turn = Turn {
            step: Step::Done,
            since,
            turn: 0,
            was_partial: false,
            served: false,
            drained: false,
        };
        turn.step = match state {
            State::Waiting {
                deferred,
                after,
                turn: rendered,
            } if deferred.is_woken() => turn.answering(deferred, after, rendered, input),
            State::Woken {
                deferred,
                after,
                turn: rendered,
            } => turn.answering(deferred, after, rendered, input),
            waiting @ State::Waiting { .. } => {
                return Err(Parked {
                    state: waiting,
                    since,
                })
            }
            State::Writing {
                unsent,
                after,
                turn: rendered,
            } => {
                turn.turn = rendered;
                Step::Flush { unsent, after }
            }
            State::Reading { partial: held } | State::Ready { pipelined: held } => {
                turn.take_input(held, input);
                Step::Parse
            }
            State::Draining { drained } => Step::Drain { drained, reads: 0 },
        };
        Ok(turn)
    }

    fn answering(
        &mut self,
        deferred: Deferred,
        after: After,
        rendered: usize,
        input: &mut Vec<u8>,
    ) -> Step {
        self.turn = rendered;
        let (then, pipelined) = match after {
            After::KeepAlive { pipelined } => (Then::KeepAlive, pipelined),
            After::Close => (Then::Close, Vec::new()),
            After::Drain => (Then::Drain, Vec::new()),
        };
        // The request was taken off the input when it was deferred: what is
        // there is the requests after it.
        self.take_input(pipelined, input);
        Step::Answer { deferred, then }
    }

    /// Puts the bytes the connection held into the worker's buffer: taken,
    /// not copied, so an idle connection keeps no buffer a long head grew.
    fn take_input(&mut self, mut held: Vec<u8>, input: &mut Vec<u8>) {
        input.clear();
        input.append(&mut held);
        self.was_partial = !input.is_empty();
    }

    /// The bytes an [`Action::Write`] is for: the rest of an unsent answer,
    /// or the answer rendered into `output`.
    pub fn unwritten<'a>(&'a self, output: &'a [u8]) -> &'a [u8] {
        match &self.step {
            Step::Flush { unsent, .. } => &unsent.bytes[unsent.written..],
            _ => output,
        }
    }

    /// Takes what the last action did and returns the next: `handle` answers
    /// requests, `load` tells whether other connections wait for a worker,
    /// `now` is read only where a wait begins.
    pub fn next<H, C>(
        &mut self,
        event: Event,
        scratch: &mut Scratch,
        handle: &H,
        load: &Load,
        now: &C,
    ) -> Action
    where
        H: Fn(&Request) -> Reply + ?Sized,
        C: Fn() -> Instant,
    {
        if let Some(action) = self.take(event, scratch, load, now) {
            return action;
        }
        self.run(scratch, handle, now)
    }

    /// Applies an event; an action when it ends the turn or asks for more
    /// I/O at once.
    fn take(
        &mut self,
        event: Event,
        scratch: &mut Scratch,
        load: &Load,
        now: &impl Fn() -> Instant,
    ) -> Option<Action> {
        match (&mut self.step, event) {
            (_, Event::Start) => None,
            (_, Event::Eof | Event::Failed) => Some(self.close()),
            (Step::Parse, Event::Read { got, room }) => {
                // A short read took all there was. (Not quite: TCP stops a
                // read at urgent data, which HTTP clients do not send; such
                // a client waits for its next bytes or its timeout.)
                self.drained = got < room;
                None
            }
            (Step::Parse, Event::Empty) => {
                self.drained = true;
                None
            }
            (Step::Parse, Event::Interrupted) => None,
            (
                Step::Drain { drained, reads },
                Event::Read { .. } | Event::Empty | Event::Interrupted,
            ) => {
                if let Event::Read { got, .. } = event {
                    *drained += got;
                    if *drained >= DRAIN_BYTES {
                        return Some(self.close());
                    }
                }
                *reads += 1;
                // A sender that keeps the socket full gets a few reads per
                // event, not the whole budget: the worker has other
                // connections to serve.
                if event == Event::Empty || *reads >= DRAIN_READS_PER_WAKE {
                    let drained = *drained;
                    return Some(self.park(State::Draining { drained }));
                }
                Some(Action::Discard)
            }
            (Step::Send { then }, Event::Wrote(n)) => {
                let then = *then;
                self.sent(then, n, scratch, load, now)
            }
            (Step::Flush { .. }, Event::Wrote(n)) => self.flushed(n, scratch, load, now),
            (_, event) => {
                debug_assert!(false, "{event:?} does not answer the last action");
                Some(self.close())
            }
        }
    }

    /// The socket took `n` bytes of the answer in `output`.
    fn sent(
        &mut self,
        then: Then,
        n: usize,
        scratch: &mut Scratch,
        load: &Load,
        now: &impl Fn() -> Instant,
    ) -> Option<Action> {
        let Scratch { input, output } = scratch;
        if n < output.len() {
            // The client is not reading (fast enough): keep the rest of
            // this answer, and the requests behind it unprocessed, until
            // the socket has room.
            let unsent = Unsent {
                bytes: SecretBytes::new(output[n..].to_vec()),
                written: 0,
            };
            self.since = now();
            let after = After::keeping(then, input);
            let turn = self.turn;
            return Some(self.park(State::Writing {
                unsent,
                after,
                turn,
            }));
        }
        match then {
            Then::KeepAlive => {}
            Then::Close => return Some(self.finish(None)),
            Then::Drain => return Some(self.finish(Some(now()))),
        }
        self.served = true;
        // Requests ready, or input left to read: either way the connection
        // has more for this worker, which others may be waiting for.
        let more = !input.is_empty() || !self.drained;
        if self.turn >= TURN_BYTES && more && load.others_waiting() {
            let pipelined = input.to_vec();
            return Some(self.give_up_turn(pipelined, now));
        }
        if input.is_empty() && self.drained {
            // The next request wakes whichever worker waits, and an idle
            // client holds none.
            self.since = now();
            return Some(self.park(State::Reading {
                partial: Vec::new(),
            }));
        }
        self.step = Step::Parse;
        None
    }

    /// The socket took `n` more bytes of an answer that waited for room.
    fn flushed(
        &mut self,
        n: usize,
        scratch: &mut Scratch,
        load: &Load,
        now: &impl Fn() -> Instant,
    ) -> Option<Action> {
        let Step::Flush { mut unsent, after } = std::mem::replace(&mut self.step, Step::Done)
        else {
            return Some(self.close());
        };
        unsent.written += n;
        if unsent.written < unsent.bytes.len() {
            // One deadline for the whole answer: `since` stays.
            let turn = self.turn;
            return Some(self.park(State::Writing {
                unsent,
                after,
                turn,
            }));
        }
        drop(unsent);
        let pipelined = match after {
            After::KeepAlive { pipelined } => pipelined,
            After::Close => return Some(self.finish(None)),
            After::Drain => return Some(self.finish(Some(now()))),
        };
        self.since = now();
        if self.turn >= TURN_BYTES && !pipelined.is_empty() && load.others_waiting() {
            return Some(self.give_up_turn(pipelined, now));
        }
        self.take_input(pipelined, &mut scratch.input);
        self.step = Step::Parse;
        None
    }

    /// Work that needs no I/O, up to the next action.
    fn run<H, C>(&mut self, scratch: &mut Scratch, handle: &H, now: &C) -> Action
    where
        H: Fn(&Request) -> Reply + ?Sized,
        C: Fn() -> Instant,
    {
        match std::mem::replace(&mut self.step, Step::Done) {
            step @ (Step::Flush { .. } | Step::Send { .. }) => {
                self.step = step;
                Action::Write
            }
            step @ Step::Drain { .. } => {
                self.step = step;
                Action::Discard
            }
            Step::Answer { deferred, then } => {
                render(
                    &mut scratch.output,
                    &(deferred.answer)(),
                    deferred.stays_open,
                );
                self.turn += scratch.output.len();
                self.step = Step::Send { then };
                Action::Write
            }
            Step::Parse => self.parse(scratch, handle, now),
            Step::Done => {
                debug_assert!(false, "a turn went on after it ended");
                Action::Close
            }
        }
    }

    /// Answers the next request in the input, or asks for more of it.
    fn parse<H, C>(&mut self, scratch: &mut Scratch, handle: &H, now: &C) -> Action
    where
        H: Fn(&Request) -> Reply + ?Sized,
        C: Fn() -> Instant,
    {
        let Scratch { input, output } = scratch;
        // Filled only when there is something to parse.
        let mut headers;
        let head = if input.is_empty() {
            Head::Partial
        } else {
            headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            parse_head(input, &mut headers)
        };
        let (len, then) = match head {
            Head::Complete(parsed) => {
                let reply = handle(&parsed.request);
                // Head and body: what follows is the next request.
                let Parsed {
                    len, keep_alive, ..
                } = parsed;
                let then = if keep_alive {
                    Then::KeepAlive
                } else {
                    Then::Close
                };
                match reply {
                    Reply::Now(response) => {
                        render(output, &response, keep_alive);
                        self.turn += output.len();
                        (len, then)
                    }
                    Reply::Later(later) => {
                        input.drain(..len);
                        return self.defer(later, keep_alive, then, input, now);
                    }
                }
            }
            Head::Partial | Head::PartialBody { .. } if self.drained => {
                // A request begun in this turn (after a served request, too)
                // gets a full timeout; one carried over keeps its start,
                // however many turns its head and body take.
                if !self.was_partial || self.served {
                    self.since = now();
                }
                let partial = input.to_vec();
                return self.park(State::Reading { partial });
            }
            Head::Partial => {
                let room = (MAX_HEAD + 1 - input.len()).min(READ_CHUNK);
                self.step = Step::Parse;
                return Action::Read { room };
            }
            Head::PartialBody { len } => {
                // Never more than a whole request of the largest size held:
                // what a read brings past this one's body is the next
                // request's. (Not exactly to the body's end: a read that
                // gets less than it asked for tells the input is all read.)
                debug_assert!(input.len() < len && len <= MAX_HEAD + MAX_BODY);
                let room = (MAX_HEAD + MAX_BODY)
                    .saturating_sub(input.len())
                    .min(READ_CHUNK);
                self.step = Step::Parse;
                return Action::Read { room };
            }
            Head::TooLarge => {
                refusal(output, 431, "Request header fields too large");
                (input.len(), Then::Drain)
            }
            Head::BodyTooLarge => {
                refusal(output, 413, "Payload too large");
                (input.len(), Then::Drain)
            }
            Head::LengthRequired => {
                refusal(output, 411, "Length required");
                (input.len(), Then::Drain)
            }
            Head::Invalid => {
                refusal(output, 400, "Bad request");
                (input.len(), Then::Drain)
            }
        };
        input.drain(..len);
        self.step = Step::Send { then };
        Action::Write
    }

    /// Parks the connection until the call its answer waits on ends; the
    /// requests after it (`rest`) wait unprocessed.
    fn defer(
        &mut self,
        later: Later,
        stays_open: bool,
        then: Then,
        rest: &[u8],
        now: &impl Fn() -> Instant,
    ) -> Action {
        let woken = Arc::new(AtomicBool::new(false));
        let deferred = Deferred {
            answer: later.answer,
            stays_open,
            woken: woken.clone(),
        };
        let ready = later.ready;
        let ready: Ready = Box::new(move |wake: Wake| {
            ready(Box::new(move || {
                woken.store(true, Ordering::Release);
                wake();
            }))
        });
        self.step = Step::Done;
        let parked = Parked {
            state: State::Waiting {
                deferred,
                after: After::keeping(then, rest),
                turn: self.turn,
            },
            since: now(),
        };
        Action::Defer(parked, ready)
    }

    /// Back to epoll, behind the connections whose events are already
    /// waiting, with the turn's count started again.
    fn give_up_turn(&mut self, pipelined: Vec<u8>, now: &impl Fn() -> Instant) -> Action {
        self.since = now();
        self.park(State::Ready { pipelined })
    }

    fn park(&mut self, state: State) -> Action {
        self.step = Step::Done;
        Action::Park(Parked {
            state,
            since: self.since,
        })
    }

    /// Ends a connection whose last answer is written: closed, or drained
    /// from `drain_from` on.
    fn finish(&mut self, drain_from: Option<Instant>) -> Action {
        self.step = Step::Done;
        Action::Finish(drain_from.map(|since| Parked {
            state: State::Draining { drained: 0 },
            since,
        }))
    }

    fn close(&mut self) -> Action {
        self.step = Step::Done;
        Action::Close
    }
}

/// The plain-text answer to a request we will not serve.
fn refusal(out: &mut Vec<u8>, status: u16, message: &'static str) {
    let response = Response::new(
        status,
        "text/plain; charset=utf-8",
        ResponseBody::Static(message),
    );
    render(out, &response, false);
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
