//! The calls of one authenticated connection, served by one loop that speaks tarpc's wire
//! messages itself: `ClientMessage::Request`/`Cancel` in, `Response` out, bincode in
//! length-delimited frames, so an Agent's tarpc client needs nothing special.
//!
//! tarpc's server side (`BaseChannel`, `InFlightRequest::execute`) costs more per call than
//! the call itself in a Library under load (issue 18's profile: a span and an OpenTelemetry
//! context per request, a timer entry and an abort handle per request, a 1 KiB future moved
//! into a task, a channel hop per response). This loop keeps its behaviour, not its costs:
//!
//! - a call is started as soon as its frame is decoded and polled once at once; most methods
//!   finish in that poll, and their reply is encoded straight into the connection's write
//!   buffer: no task, no timer, no abort handle;
//! - a call that waits becomes a tracked call: boxed into the set of running calls with an
//!   abort handle, cancelled by the client's `Cancel` or at its deadline (no reply then, as
//!   tarpc's server does); deadlines are watched by one timer per connection, armed at the
//!   earliest;
//! - the replies of one wake-up leave in one write; the clock is read only for calls that
//!   wait (once per wake-up: a call that finishes in its first poll needs no deadline instant);
//! - at most `max_in_flight` calls run at once, and the write buffer holds at most
//!   [`WRITE_HIGH`] bytes (plus one reply) before the loop stops reading and running until it
//!   drained: past either, the connection is not read (backpressure).
//!
//! A one-way call (`#[oneway]`) is acknowledged as soon as it holds one of the connection's
//! `max_in_flight` places, then runs detached, keeping its place until it ends; a unary call
//! holds one while it runs: one-way and unary calls share the budget, and a worker sending
//! one-way calls faster than they run meets backpressure (its acknowledgements wait, then its
//! connection is not read) rather than an unbounded pile of detached tasks. Its failure is
//! logged with the caller (never returned: there is no reply) and counted in the method's
//! metrics. A one-way call still running when the Library stops is cut.

use super::hosted::{Reply, Services, Started};
use crate::call_trace;
use crate::error::{Error, RemoteError};
use crate::fast_hash::{self, FastMap};
use crate::wire::{self, CallResponse, Framing, RequestRef, ToLibrary};
use futures::future::{AbortHandle, Abortable, Aborted};
use futures::stream::FuturesUnordered;
use futures::{Sink, Stream, StreamExt};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tarpc::Response;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

/// Bytes of encoded replies the write buffer may hold before the loop stops reading and
/// running calls until the peer has taken them (one reply may take it past this once).
pub(super) const WRITE_HIGH: usize = 256 * 1024;

/// Serves the calls of one authenticated connection until it closes (`Ok`) or sends something
/// that is not a call (`Err`: the connection is closed). See the module's documentation.
pub(super) async fn serve_calls(
    framed: Framing,
    services: Arc<Services>,
    max_in_flight: usize,
    caller: String,
) -> io::Result<()> {
    let mut calls = Calls {
        framed,
        starter: Starter {
            services,
            places: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
            caller: caller.into(),
            // On the default current-thread runtime the calls run inside this task (no spawn
            // per call: measured 22 % less Library CPU per call under load; a spawned task
            // would share the one thread anyway). On a multi-thread runtime each call is its
            // own task, so a method that blocks or spins holds up only the thread it runs on,
            // not this connection's other calls (nor, through this task, other connections).
            spawn: tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::MultiThread,
        },
        max_in_flight,
        running: FuturesUnordered::new(),
        tracked: fast_hash::map(),
        timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        armed: None,
        closed: false,
        unflushed: false,
    };
    let result = futures::future::poll_fn(|cx| calls.poll_serve(cx)).await;
    // The peer is gone or broke the protocol: let the calls it started finish (their replies
    // go nowhere, but their effects are complete, never cut in the middle).
    while calls.running.next().await.is_some() {}
    result
}

/// What starts a call: the services, the connection's places, who calls.
struct Starter {
    services: Arc<Services>,
    places: Arc<tokio::sync::Semaphore>,
    caller: Arc<str>,
    spawn: bool,
}

impl Starter {
    /// The future of one call: a one-way call's acknowledgement, or a unary call's reply.
    fn start(&self, request: &RequestRef<'_>) -> Reply {
        // The call's span, joined to the worker's (tarpc's own context keeps only the trace id
        // of the caller: the ids come with the request). Nothing when no subscriber wants it.
        let span = call_trace::enabled()
            .then(|| call_trace::serve_span(request.service, request.method, request.trace));
        let places = Arc::clone(&self.places);
        let Started { reply, oneway } = self.services.begin(request);
        if oneway {
            let caller = Arc::clone(&self.caller);
            let names = (request.service.to_owned(), request.method.to_owned());
            return Box::pin(run_oneway(reply, names, span, places, caller));
        }
        let call = async move {
            // A unary call holds a place too, so one-way calls running detached count
            // against the same budget (uncontended: one atomic operation).
            let _place = places.acquire().await;
            let Some(span) = span else {
                return reply.await;
            };
            let reply = reply.instrument(span.clone()).await;
            let error: Option<Error> = reply.as_ref().err().map(|e| e.clone().into());
            call_trace::finished(&span, error.as_ref().map(|e| e as _));
            reply
        };
        if self.spawn {
            Box::pin(Spawned(tokio::spawn(call)))
        } else {
            Box::pin(call)
        }
    }
}

/// A call running as its own task: its reply, and the task aborted if the call is (cancelled,
/// past its deadline, or its connection gone).
struct Spawned(tokio::task::JoinHandle<CallResponse>);

impl Future for Spawned {
    type Output = CallResponse;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CallResponse> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            // The method's panics are caught inside the call; a task ends otherwise only when
            // aborted, and then nobody reads this.
            joined.unwrap_or_else(|e| {
                Err(RemoteError::Panicked {
                    method: "the call's task".into(),
                    message: e.to_string(),
                })
            })
        })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A call that did not finish in its first poll.
struct Tracked {
    id: u64,
    call: Abortable<Reply>,
}

impl Future for Tracked {
    type Output = (u64, Result<CallResponse, Aborted>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.id;
        Pin::new(&mut self.call).poll(cx).map(|reply| (id, reply))
    }
}

/// How to stop a tracked call, and when it must stop.
struct Watch {
    abort: AbortHandle,
    deadline: Instant,
}

struct Calls {
    framed: Framing,
    starter: Starter,
    max_in_flight: usize,
    /// The tracked calls running.
    running: FuturesUnordered<Tracked>,
    /// Each tracked call's abort handle and deadline, by request id.
    tracked: FastMap<u64, Watch>,
    /// Fires at the earliest deadline of a tracked call (`armed`), or later: one timer per
    /// connection, reset only when a call with an earlier deadline is tracked.
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    /// The peer closed its side: no more requests.
    closed: bool,
    /// Replies were encoded since the last flush.
    unflushed: bool,
}

impl Calls {
    /// One wake-up: write what waits, read and start every request there is room for, collect
    /// what finished, expire what is past its deadline; then flush once.
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut now = None;
        loop {
            let mut progressed = false;
            if self.write_full() {
                match Sink::<bytes::Bytes>::poll_flush(Pin::new(&mut self.framed), cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            while !self.closed && self.running.len() < self.max_in_flight && !self.write_full() {
                match Pin::new(&mut self.framed).poll_next(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        self.on_frame(&frame, &mut now, cx)?;
                        progressed = true;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                    Poll::Ready(None) => self.closed = true,
                    Poll::Pending => break,
                }
            }
            while !self.running.is_empty() && !self.write_full() {
                match self.running.poll_next_unpin(cx) {
                    Poll::Ready(Some((id, reply))) => {
                        self.tracked.remove(&id);
                        if let Ok(reply) = reply {
                            self.reply(id, reply)?;
                        }
                        progressed = true;
                    }
                    _ => break,
                }
            }
            if self.armed.is_some() && self.timer.as_mut().poll(cx).is_ready() {
                self.expire();
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        if self.unflushed {
            match Sink::<bytes::Bytes>::poll_flush(Pin::new(&mut self.framed), cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                // Replies that cannot be written once the peer closed go nowhere: its calls
                // still finish.
                Poll::Ready(Err(e)) if !self.closed => return Poll::Ready(Err(e)),
                Poll::Ready(Err(_)) => self.unflushed = false,
                Poll::Pending => {}
            }
        }
        if self.closed && self.running.is_empty() {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    /// Whether the write buffer holds as much as it may before the peer takes some.
    fn write_full(&self) -> bool {
        self.framed.write_buffer().len() >= WRITE_HIGH
    }

    /// A request (started, and polled once) or a cancellation.
    fn on_frame(
        &mut self,
        frame: &[u8],
        now: &mut Option<Instant>,
        cx: &mut Context<'_>,
    ) -> io::Result<()> {
        match wire::decode_to_library(frame)? {
            ToLibrary::Request {
                context,
                id,
                message,
            } => {
                if context.deadline.is_zero() {
                    // tarpc's server drops such a request unanswered; the caller's own deadline
                    // has passed too.
                    tracing::debug!(request_id = id, "a call arrived past its deadline: dropped");
                    return Ok(());
                }
                if self.tracked.contains_key(&id) {
                    tracing::warn!(
                        request_id = id,
                        "a request reuses the id of a call still running: ignored"
                    );
                    return Ok(());
                }
                let mut call = self.starter.start(&message);
                match call.as_mut().poll(cx) {
                    Poll::Ready(reply) => self.reply(id, reply),
                    Poll::Pending => {
                        // Only a call that waits needs its deadline as an instant: from the
                        // wake-up's clock (read once, at its first such call).
                        let now = *now.get_or_insert_with(Instant::now);
                        let deadline = now + context.deadline;
                        let (abort, registration) = AbortHandle::new_pair();
                        self.running.push(Tracked {
                            id,
                            call: Abortable::new(call, registration),
                        });
                        self.tracked.insert(id, Watch { abort, deadline });
                        if self.armed.is_none_or(|armed| deadline < armed) {
                            self.arm(deadline);
                        }
                        Ok(())
                    }
                }
            }
            ToLibrary::Cancel { request_id, .. } => {
                if let Some(watch) = self.tracked.remove(&request_id) {
                    watch.abort.abort();
                }
                Ok(())
            }
        }
    }

    /// Encodes the reply to request `id` into the write buffer: its 4-byte length, then the
    /// bincode of tarpc's `Response`, written in place (no copy of the payload on the way).
    fn reply(&mut self, id: u64, reply: CallResponse) -> io::Result<()> {
        let response: Response<CallResponse> = Response {
            request_id: id,
            message: Ok(reply),
        };
        wire::put_frame(self.framed.write_buffer_mut(), &response)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.unflushed = true;
        Ok(())
    }

    /// Arms the deadline timer for `at`.
    fn arm(&mut self, at: Instant) {
        self.timer.as_mut().reset(at);
        self.armed = Some(at);
    }

    /// Aborts every tracked call past its deadline (unanswered, as tarpc's server does), and
    /// re-arms the timer for the earliest left.
    fn expire(&mut self) {
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        self.tracked.retain(|id, watch| {
            if watch.deadline <= now {
                tracing::debug!(request_id = id, "a call ran past its deadline: cut");
                watch.abort.abort();
                return false;
            }
            earliest = Some(earliest.map_or(watch.deadline, |e| e.min(watch.deadline)));
            true
        });
        self.armed = None;
        if let Some(at) = earliest {
            self.arm(at);
        }
    }
}

/// Starts a one-way call: waits for one of the connection's places, spawns the method with
/// it, and returns the acknowledgement (the encoding of `()`, empty) for the worker.
async fn run_oneway(
    reply: Reply,
    (service, method): (String, String),
    span: Option<tracing::Span>,
    places: Arc<tokio::sync::Semaphore>,
    caller: Arc<str>,
) -> CallResponse {
    // Closed never: the semaphore lives as long as the connection's calls.
    let place = places.acquire_owned().await;
    let in_span = span.clone().unwrap_or_else(tracing::Span::none);
    tokio::spawn(
        async move {
            let _place = place;
            let reply = reply.await;
            if let Err(e) = &reply {
                super::local::log_oneway_failure(&service, &method, &caller, e);
            }
            if let Some(span) = span {
                let error: Option<Error> = reply.as_ref().err().map(|e| e.clone().into());
                call_trace::finished(&span, error.as_ref().map(|e| e as _));
            }
        }
        .instrument(in_span),
    );
    Ok(serde_bytes::ByteBuf::new())
}
