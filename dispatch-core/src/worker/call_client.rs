//! The Agent's side of the call protocol: tarpc's wire messages (`ClientMessage::Request` and
//! `Cancel` out, `Response` in, bincode in length-delimited frames), multiplexed over one
//! connection by a client and the task that drives the connection (its "dispatch").
//!
//! tarpc's own client costs a worker more per call than its calls need (issue 18's profile: a
//! channel hop to its dispatch task and a oneshot per call, a timer entry per request, a span
//! and an OpenTelemetry context per request, the request's names copied into owned strings).
//! This client keeps tarpc's messages and behaviour, not those costs:
//!
//! - a call encodes its request (`wire::envelope`: tarpc's bytes, its deadline sent as the
//!   relative time the caller gave, no clock read) straight into the connection's outgoing buffer and waits in a
//!   slot of the in-flight table, under one lock (uncontended on the default current-thread
//!   runtime); the dispatch takes the whole buffer at once and writes it, so the requests of
//!   one wake-up leave in one write, and it completes every reply read in that wake-up under
//!   one lock;
//! - deadlines are watched by one timer per connection, armed at the earliest: a call past its
//!   deadline fails with [`CallError::DeadlineExceeded`] (the Library cuts it there too); a
//!   call's deadline is stamped from the clock the connection's task reads once per wake-up
//!   ([`Due`]), so no call reads the clock;
//! - a call dropped before its reply sends tarpc's `Cancel`;
//! - bounded: at most 2 × [`OUT_HIGH`] bytes of requests (plus a frame) wait for the socket
//!   (half in the calls' buffer, half in the connection's write buffer) and at most
//!   [`MAX_IN_FLIGHT`] calls for replies; past either, a call waits to be sent
//!   (backpressure) until its deadline;
//! - when the connection breaks, every call waiting fails with [`CallError::Broken`]; the
//!   dispatch ends then, or once every client is gone and no call waits (so a handover's old
//!   link drains its calls and closes).

use crate::error::RemoteError;
use crate::fast_hash::{self, FastMap};
use crate::wire::{self, Framing, TraceParent};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use futures::{Sink, Stream};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Bytes of encoded requests the calls' buffer may hold (and the connection's write buffer
/// as much again); past it, calls wait to be sent.
pub(crate) const OUT_HIGH: usize = 1 << 20;
/// Calls that may wait for their replies on one connection; past it, calls wait to be sent.
pub(crate) const MAX_IN_FLIGHT: usize = 100_000;
/// A reply payload this large is handed to its call as a slice of the frame it came in (no
/// copy); a smaller one is copied out, so a small reply never keeps a large read buffer alive
/// while its caller has not run yet.
const SHARE_FROM: usize = 1024;

/// What the Library answered a call: the encoded return value, or its error. A value of
/// [`SHARE_FROM`] bytes or more is a slice of the connection's read buffer, which it keeps
/// alive: decode or copy it at once, never keep it (every caller in the crate does).
pub(crate) type Reply = Result<Bytes, RemoteError>;

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// Its deadline passed first.
    DeadlineExceeded,
    /// The connection broke (or was closed) before the reply came: the call may have run.
    Broken,
    /// The request could not be encoded.
    Encode(String),
    /// The server answered with a tarpc `ServerError` (not this project's Library: it never
    /// does).
    Server(String),
}

/// When a call is due: how long from its start (sent on the wire as is: tarpc's deadline is
/// relative), and the instant, if the caller has read the clock already. Without one, the
/// connection's task stamps the call when it takes the call's request to write it, with the
/// clock it reads once for all the requests of that wake-up: the deadline then runs from a few
/// microseconds after the call's start, and no call reads the clock of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Due {
    at: Option<Instant>,
    within: Duration,
}

impl Due {
    /// Due `within` from now.
    pub(crate) fn after(within: Duration) -> Due {
        Due { at: None, within }
    }
}

impl From<Instant> for Due {
    fn from(at: Instant) -> Due {
        Due {
            at: Some(at),
            within: at.saturating_duration_since(Instant::now()),
        }
    }
}

/// The clients' side of one connection: calls go through it. Cloning it is cheap; the
/// connection's dispatch ends once every clone is dropped and no call waits.
pub(crate) struct CallClient {
    shared: Arc<Shared>,
}

/// The task that writes the requests of one connection and reads its replies; it ends when
/// the connection breaks, or when every client is gone and nothing waits.
pub(crate) type Dispatch = BoxFuture<'static, ()>;

struct Shared {
    state: Mutex<State>,
    /// The dispatch task, woken when requests wait to be written, a deadline earlier than its
    /// timer's comes, or the last client goes.
    dispatch: AtomicWaker,
}

struct State {
    next_id: u64,
    /// Encoded request (and cancel) frames waiting for the dispatch.
    out: BytesMut,
    /// The calls waiting for replies, by request id.
    waiting: FastMap<u64, Slot>,
    /// Calls waiting to be sent (the buffer or the table is full).
    /// Calls waiting to be sent, by ticket: one waker each, however often it is polled.
    blocked: FastMap<u64, Waker>,
    next_ticket: u64,
    /// A deadline earlier than the one the dispatch's timer is armed at.
    earlier: Option<Instant>,
    /// Calls sent without a deadline instant, with theirs relative: the dispatch stamps them.
    unstamped: Vec<(u64, Duration)>,
    /// When the dispatch's timer fires.
    armed: Option<Instant>,
    clients: usize,
    /// The connection is gone: no call is sent any more.
    closed: bool,
}

struct Slot {
    waker: Waker,
    /// `None` until the connection's task stamps it (see [`Due`]).
    deadline: Option<Instant>,
    outcome: Option<Result<Reply, CallError>>,
}

impl State {
    /// Notes `deadline` for the dispatch's timer: whether it is sooner than what the timer is
    /// armed (or asked to be armed) at, and the dispatch must hear of it.
    fn sooner(&mut self, deadline: Instant) -> bool {
        let sooner = self.armed.is_none_or(|armed| deadline < armed)
            && self.earlier.is_none_or(|e| deadline < e);
        if sooner {
            self.earlier = Some(deadline);
        }
        sooner
    }

    /// Gives the calls sent since the last wake-up their deadlines, from `now`.
    fn stamp(&mut self, now: Instant) {
        let mut unstamped = std::mem::take(&mut self.unstamped);
        for (id, within) in unstamped.drain(..) {
            let deadline = now + within;
            if let Some(slot) = self.waiting.get_mut(&id) {
                if slot.deadline.is_none() {
                    slot.deadline = Some(deadline);
                    self.sooner(deadline);
                }
            }
        }
        // The vector keeps its capacity for the next wake-up.
        self.unstamped = unstamped;
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CallClient {
    /// A client over an authenticated connection, and the dispatch to run (spawn it, or poll
    /// it: calls make no progress without it).
    pub(crate) fn new(framed: Framing) -> (CallClient, Dispatch) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_id: 0,
                out: BytesMut::new(),
                waiting: fast_hash::map(),
                blocked: fast_hash::map(),
                next_ticket: 0,
                earlier: None,
                unstamped: Vec::new(),
                armed: None,
                clients: 1,
                closed: false,
            }),
            dispatch: AtomicWaker::new(),
        });
        let mut driver = Driver {
            shared: Arc::clone(&shared),
            framed,
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed: None,
            replies: Vec::new(),
        };
        let dispatch = Box::pin(futures::future::poll_fn(move |cx| driver.poll(cx)));
        (CallClient { shared }, dispatch)
    }

    /// Calls `service.method(args)` with `deadline`: the reply's bytes, or why none came.
    /// The request is queued on the connection in the future's first poll (so calls of one
    /// task leave in the order made); dropping the future before the reply cancels the call.
    pub(crate) fn call<'a>(
        &'a self,
        service: &'a str,
        method: &'a str,
        args: &'a [u8],
        trace: Option<TraceParent>,
        due: impl Into<Due>,
    ) -> Call<'a> {
        let due = due.into();
        Call {
            shared: &self.shared,
            request: Some((service, method, args, trace)),
            at: due.at,
            within: due.within,
            id: None,
            ticket: None,
        }
    }
}

impl Clone for CallClient {
    fn clone(&self) -> Self {
        lock(&self.shared.state).clients += 1;
        CallClient {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for CallClient {
    fn drop(&mut self) {
        let last = {
            let mut state = lock(&self.shared.state);
            state.clients -= 1;
            state.clients == 0
        };
        if last {
            self.shared.dispatch.wake();
        }
    }
}

impl std::fmt::Debug for CallClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallClient").finish_non_exhaustive()
    }
}

/// One call under way (see [`CallClient::call`]).
pub(crate) struct Call<'a> {
    shared: &'a Arc<Shared>,
    /// What to send, until it is sent.
    request: Option<(&'a str, &'a str, &'a [u8], Option<TraceParent>)>,
    /// The deadline, once known (see [`Due`]).
    at: Option<Instant>,
    /// The deadline, relative, as sent.
    within: Duration,
    /// The request's id, once sent.
    id: Option<u64>,
    /// Its place among the calls waiting to be sent, once it waited.
    ticket: Option<u64>,
}

impl Future for Call<'_> {
    type Output = Result<Reply, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = lock(&this.shared.state);
        if let Some(id) = this.id {
            let Some(slot) = state.waiting.get_mut(&id) else {
                // Taken already: never polled again after `Ready`.
                return Poll::Ready(Err(CallError::Broken));
            };
            if slot.outcome.is_none() {
                if !slot.waker.will_wake(cx.waker()) {
                    slot.waker.clone_from(cx.waker());
                }
                return Poll::Pending;
            }
            let outcome = state
                .waiting
                .remove(&id)
                .and_then(|slot| slot.outcome)
                .unwrap_or(Err(CallError::Broken));
            this.id = None;
            return Poll::Ready(outcome);
        }
        if state.closed {
            return Poll::Ready(Err(CallError::Broken));
        }
        if state.out.len() >= OUT_HIGH || state.waiting.len() >= MAX_IN_FLIGHT {
            // Woken when the dispatch has written the buffer, when the connection breaks, or
            // at this call's deadline (the dispatch's timer wakes every blocked call).
            let now = Instant::now();
            let deadline = *this.at.get_or_insert(now + this.within);
            if now >= deadline {
                return Poll::Ready(Err(CallError::DeadlineExceeded));
            }
            let ticket = *this.ticket.get_or_insert_with(|| {
                state.next_ticket += 1;
                state.next_ticket
            });
            state.blocked.insert(ticket, cx.waker().clone());
            let earlier = state.sooner(deadline);
            drop(state);
            if earlier {
                this.shared.dispatch.wake();
            }
            return Poll::Pending;
        }
        let Some((service, method, args, trace)) = this.request.take() else {
            return Poll::Ready(Err(CallError::Broken));
        };
        let id = state.next_id;
        state.next_id += 1;
        let was_empty = state.out.is_empty();
        if let Err(e) = wire::put_request(
            &mut state.out,
            id,
            this.within,
            (service, method, args, trace),
        ) {
            return Poll::Ready(Err(CallError::Encode(e)));
        }
        state.waiting.insert(
            id,
            Slot {
                waker: cx.waker().clone(),
                deadline: this.at,
                outcome: None,
            },
        );
        let earlier = match this.at {
            Some(at) => state.sooner(at),
            None => {
                state.unstamped.push((id, this.within));
                false
            }
        };
        drop(state);
        this.id = Some(id);
        if was_empty || earlier {
            this.shared.dispatch.wake();
        }
        Poll::Pending
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.id.is_none() && self.ticket.is_none() {
            return;
        }
        let mut state = lock(&self.shared.state);
        if let Some(ticket) = self.ticket {
            state.blocked.remove(&ticket);
        }
        let Some(id) = self.id else {
            return;
        };
        let Some(slot) = state.waiting.remove(&id) else {
            return;
        };
        if slot.outcome.is_some() || state.closed {
            return;
        }
        // Dropped before its reply: tell the Library, as tarpc's client does.
        let was_empty = state.out.is_empty();
        if wire::put_cancel(&mut state.out, id).is_ok() && was_empty {
            drop(state);
            self.shared.dispatch.wake();
        }
    }
}

/// The request id and outcome of one reply frame. A large payload stays where it was read
/// (a slice of the frame), a small one is copied out (see [`SHARE_FROM`]).
fn read_reply(frame: BytesMut) -> std::io::Result<(u64, Result<Reply, CallError>)> {
    let reply = wire::decode_reply(&frame)?;
    let id = reply.request_id;
    let outcome = match reply.message {
        Ok(Ok(payload)) if payload.len() >= SHARE_FROM => {
            // The payload lies inside the frame (decoded borrowed): its place there.
            let start = payload.as_ptr() as usize - frame.as_ptr() as usize;
            let range = start..start + payload.len();
            return Ok((id, Ok(Ok(frame.freeze().slice(range)))));
        }
        Ok(Ok(payload)) => Ok(Ok(Bytes::copy_from_slice(payload))),
        Ok(Err(remote)) => Ok(Err(remote)),
        Err(server) => Err(CallError::Server(server.to_string())),
    };
    Ok((id, outcome))
}

/// The dispatch's state.
struct Driver {
    shared: Arc<Shared>,
    framed: Framing,
    /// Fires at the earliest deadline of a waiting call (`armed`), or later.
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
    /// Replies read in this wake-up (request id, outcome), completed under one lock.
    replies: Vec<(u64, Result<Reply, CallError>)>,
}

impl Driver {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.dispatch.register(cx.waker());
        match self.drive(cx) {
            Ok(false) => Poll::Pending,
            Ok(true) => {
                self.close(None);
                Poll::Ready(())
            }
            Err(reason) => {
                self.close(Some(&reason));
                Poll::Ready(())
            }
        }
    }

    /// One wake-up: reads every reply there is, writes every request waiting, expires what is
    /// past its deadline. `Ok(true)` when the dispatch is done (nobody can call any more and
    /// nothing waits), `Err` when the connection broke.
    fn drive(&mut self, cx: &mut Context<'_>) -> Result<bool, String> {
        loop {
            let mut progressed = false;
            // Replies.
            loop {
                match Pin::new(&mut self.framed).poll_next(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let reply = read_reply(frame)
                            .map_err(|e| format!("an undecodable reply from the library: {e}"))?;
                        self.replies.push(reply);
                    }
                    Poll::Ready(Some(Err(e))) => return Err(format!("reading replies: {e}")),
                    Poll::Ready(None) => return Err("the library closed the connection".into()),
                    Poll::Pending => break,
                }
            }
            // Requests, replies' completions and the timer, under one lock.
            let (wake, earlier, done, left_behind) = {
                let mut state = lock(&self.shared.state);
                if !state.unstamped.is_empty() {
                    state.stamp(Instant::now());
                }
                for (id, outcome) in self.replies.drain(..) {
                    if let Some(slot) = state.waiting.get_mut(&id) {
                        if slot.outcome.is_none() {
                            slot.outcome = Some(outcome);
                            slot.waker.wake_by_ref();
                        }
                    }
                }
                // The requests go to the write buffer whole (swapped, no copy) when it is empty,
                // or appended while both fit in OUT_HIGH; else they wait for the next flush.
                // Together the two hold at most 2 × OUT_HIGH plus a frame each.
                let buffer = self.framed.write_buffer_mut();
                if !state.out.is_empty() {
                    if buffer.is_empty() {
                        std::mem::swap(buffer, &mut state.out);
                    } else if buffer.len() + state.out.len() <= OUT_HIGH {
                        buffer.extend_from_slice(&state.out);
                        state.out.clear();
                    }
                }
                let wake = if state.out.len() < OUT_HIGH {
                    std::mem::take(&mut state.blocked)
                } else {
                    fast_hash::map()
                };
                let done = state.clients == 0 && state.waiting.is_empty() && state.out.is_empty();
                (wake, state.earlier.take(), done, !state.out.is_empty())
            };
            for waker in wake.into_values() {
                waker.wake();
            }
            if let Some(at) = earlier {
                if self.armed.is_none_or(|armed| at < armed) {
                    self.arm(at);
                }
            }
            match Sink::<bytes::Bytes>::poll_flush(Pin::new(&mut self.framed), cx) {
                // Requests left behind for a full buffer go now that it is empty.
                Poll::Ready(Ok(())) => progressed |= left_behind,
                Poll::Ready(Err(e)) => return Err(format!("writing requests: {e}")),
                Poll::Pending => {}
            }
            if self.armed.is_some() && self.timer.as_mut().poll(cx).is_ready() {
                self.expire();
                progressed = true;
            }
            if done && self.framed.write_buffer().is_empty() {
                return Ok(true);
            }
            // Requests queued while this ran wake the task again (the waker is registered).
            if !progressed {
                return Ok(false);
            }
        }
    }

    fn arm(&mut self, at: Instant) {
        self.timer
            .as_mut()
            .reset(tokio::time::Instant::from_std(at));
        self.armed = Some(at);
        lock(&self.shared.state).armed = Some(at);
    }

    /// Fails every call past its deadline, and re-arms the timer for the earliest left.
    fn expire(&mut self) {
        let now = Instant::now();
        let earliest = {
            let mut state = lock(&self.shared.state);
            let mut earliest: Option<Instant> = None;
            for slot in state.waiting.values_mut() {
                if slot.outcome.is_some() {
                    continue;
                }
                // Not stamped yet: it will be at the next wake-up, before any expiry.
                let Some(deadline) = slot.deadline else {
                    continue;
                };
                if deadline <= now {
                    slot.outcome = Some(Err(CallError::DeadlineExceeded));
                    slot.waker.wake_by_ref();
                } else {
                    earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                }
            }
            state.armed = None;
            // Blocked calls look at their deadlines again (the earliest of theirs armed this
            // timer, or they are woken with the buffer's next write).
            (earliest, std::mem::take(&mut state.blocked))
        };
        let (earliest, blocked) = earliest;
        for waker in blocked.into_values() {
            waker.wake();
        }
        self.armed = None;
        if let Some(at) = earliest {
            self.arm(at);
        }
    }

    /// The connection is over: every call waiting fails with [`CallError::Broken`], and no
    /// call is sent any more.
    fn close(&mut self, reason: Option<&str>) {
        if let Some(reason) = reason {
            tracing::debug!("the library connection ended: {reason}");
        }
        let blocked = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            state.out.clear();
            for slot in state.waiting.values_mut() {
                if slot.outcome.is_none() {
                    slot.outcome = Some(Err(CallError::Broken));
                    slot.waker.wake_by_ref();
                }
            }
            std::mem::take(&mut state.blocked)
        };
        for waker in blocked.into_values() {
            waker.wake();
        }
    }
}
