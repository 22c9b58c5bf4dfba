//! One authenticated connection's life: the handshake (hello in, welcome with the manifest
//! out), then its calls, served concurrently up to the in-flight cap.

use super::accept::ServeConfig;
use super::gate::{Admission, Gate, HandshakeSlot, Peer, PidField, Refusal};
use super::hosted::Services;
use crate::call_trace;
use crate::error::Error;
use crate::service::Manifest;
use crate::stream::frames::STREAM_CONNECTION;
use crate::wire::{self, CallRequest, Framing, Hello, Welcome};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use tarpc::server::{self, Channel};
use tokio::net::UnixStream;
use tokio::time::Instant;
use tracing::Instrument;

/// One connection's life: handshake (bounded by the deadline and by eviction), then its calls.
pub(super) async fn serve_connection(
    stream: UnixStream,
    peer: Peer,
    slot: HandshakeSlot,
    services: Arc<Services>,
    config: Arc<ServeConfig>,
    gate: Arc<Gate>,
) {
    connection(stream, peer, slot, services, config, &gate).await;
    gate.finished.fetch_add(1, Ordering::Relaxed);
}

/// The body of [`serve_connection`]: every way out of it is a normal end.
pub(super) async fn connection(
    stream: UnixStream,
    peer: Peer,
    mut slot: HandshakeSlot,
    services: Arc<Services>,
    config: Arc<ServeConfig>,
    gate: &Gate,
) {
    let mut framed = wire::handshake_framed(stream, &gate.frames);
    let deadline = Instant::now() + config.settings.handshake_timeout;
    let outcome = tokio::select! {
        outcome = tokio::time::timeout_at(
            deadline,
            handshake(&mut framed, services.manifest(), &config, gate, peer),
        ) => outcome.unwrap_or(Err(Refusal::Timeout(config.settings.handshake_timeout))),
        () = slot.evicted() => Err(Refusal::Evicted { waiting: gate.max_handshakes }),
    };
    drop(slot);
    let (worker_id, streams, permit) = match outcome {
        Ok(accepted) => accepted,
        Err(refusal) => {
            gate.refuse(peer, &refusal);
            return;
        }
    };
    gate.authenticated.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(peer_pid = %PidField(peer.pid), worker_id, "agent connected");
    let result = if streams {
        super::streams::serve_streams(framed, services).await
    } else {
        let caller = format!("worker {worker_id} (pid {})", PidField(peer.pid));
        serve_calls(framed, services, config.max_in_flight(), caller)
            .await
            // Boxed whole, not as text: the log names the cause at the end of the chain (a
            // budget spent, a frame too large).
            .map_err(io::Error::other)
    };
    drop(permit);
    match result {
        Ok(()) => tracing::debug!(peer_pid = %PidField(peer.pid), worker_id, "agent disconnected"),
        Err(e) => gate.drop_connection(peer, worker_id, &e),
    }
}

/// Reads the [`Hello`], checks protocol and token, takes a place under the per-process cap and
/// a connection permit, and answers with the manifest. Returns the worker id, whether this is a
/// stream connection (see `stream::frames`), and the place, or why the peer was refused (after
/// telling it, when it got as far as a hello).
pub(super) async fn handshake(
    framed: &mut Framing,
    manifest: &Manifest,
    config: &ServeConfig,
    gate: &Gate,
    peer: Peer,
) -> Result<(u32, bool, Admission), Refusal> {
    let frame = match framed.next().await {
        None => return Err(Refusal::Closed),
        Some(Err(e)) => return Err(Refusal::BadFrame(e)),
        Some(Ok(frame)) => frame,
    };
    let hello: Hello = wire::codec::decode(&frame).map_err(Refusal::Undecodable)?;
    // From here on the frames are the welcome and, once accepted, calls.
    wire::raise_frame_limit(framed, config.settings.max_frame);
    let accepted =
        check_hello(&hello, &config.token).and_then(|()| gate.admit(peer, hello.worker_id));
    let welcome = match &accepted {
        Ok(_) => Welcome::Accepted(manifest.clone()),
        // Worth retrying: a slot frees when a connection closes (the process's own old one,
        // for a worker that reconnects).
        Err(refusal @ (Refusal::Full { .. } | Refusal::PerProcess { .. })) => {
            Welcome::Busy(refusal.to_string())
        }
        Err(refusal) => Welcome::Refused(refusal.to_string()),
    };
    let bytes = wire::codec::encode(&welcome)
        .map_err(|e| Refusal::Welcome(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let sent = framed.send(Bytes::from(bytes)).await;
    let permit = accepted?;
    sent.map_err(Refusal::Welcome)?;
    let streams = hello.protocol & STREAM_CONNECTION != 0;
    Ok((hello.worker_id, streams, permit))
}

/// Whether a hello may join: the same protocol version and the cluster token.
pub(super) fn check_hello(hello: &Hello, token: &str) -> Result<(), Refusal> {
    if hello.protocol & !STREAM_CONNECTION != wire::PROTOCOL_VERSION {
        return Err(Refusal::Protocol {
            theirs: hello.protocol,
            ours: wire::PROTOCOL_VERSION,
        });
    }
    if !same_secret(hello.token.as_bytes(), token.as_bytes()) {
        return Err(Refusal::WrongToken);
    }
    Ok(())
}

/// Compares two secrets in time independent of where they differ.
pub(super) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the calls of one authenticated connection until it closes (`Ok`) or sends something
/// that is not a call (`Err`: the connection is closed). At most `max_in_flight` calls run at
/// once; past that the connection is not read (backpressure), so a flood from one worker cannot
/// exhaust the Library.
///
/// A one-way call (`#[oneway]`) is acknowledged as soon as it holds one of the connection's
/// `max_in_flight` places, then runs detached, keeping its place until it ends; a unary call
/// holds one while it runs: one-way and unary calls share the budget, and a worker sending one-way calls faster than they run meets
/// backpressure (its acknowledgements wait, then its connection is not read) rather than an
/// unbounded pile of detached tasks. Its failure is logged here with `caller` (never returned:
/// there is no reply) and counted in the method's metrics. A one-way call still running when the
/// Library stops is cut.
pub(super) async fn serve_calls(
    framed: Framing,
    services: Arc<Services>,
    max_in_flight: usize,
    caller: String,
) -> Result<(), tarpc::ChannelError<io::Error>> {
    let places = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let caller: Arc<str> = caller.into();
    let transport = wire::server_transport(framed);
    // Room for every in-flight call's response, so a finished call never waits for the writer
    // while holding its permit.
    let server_config = server::Config {
        pending_response_buffer: max_in_flight,
    };
    let requests = server::BaseChannel::new(server_config, transport).requests();
    let serve = server::serve(move |_ctx, request: CallRequest| {
        let services = Arc::clone(&services);
        // The call's span, joined to the worker's (tarpc's own context keeps only the trace id
        // of the caller: the ids come with the request). Nothing when no subscriber wants it.
        let span = call_trace::enabled()
            .then(|| call_trace::serve_span(&request.service, &request.method, request.trace));
        let oneway = services
            .is_oneway(&request.service, &request.method)
            .then(|| Arc::clone(&caller));
        let places = Arc::clone(&places);
        async move {
            if let Some(caller) = oneway {
                return Ok(run_oneway(services, request, span, places, caller).await);
            }
            // A unary call holds a place too, so one-way calls running detached count
            // against the same budget (uncontended: one atomic operation).
            let _place = places.acquire().await;
            let Some(span) = span else {
                return Ok(services.call(request).await);
            };
            let reply = services.call(request).instrument(span.clone()).await;
            let error: Option<Error> = reply.as_ref().err().map(|e| e.clone().into());
            call_trace::finished(&span, error.as_ref().map(|e| e as _));
            Ok(reply)
        }
    });
    // On the default current-thread runtime the calls run inside this task (no spawn per call:
    // measured 22 % less Library CPU per call under load; a spawned task would share the one
    // thread anyway). On a multi-thread runtime each call is its own task, so a method that
    // blocks or spins holds up only the thread it runs on, not this connection's other calls
    // (nor, through this task, other connections). Either way at most `max_in_flight` run at a
    // time: past that the connection is not read (backpressure). Every request available is
    // read first and every ready call run before yielding, so the replies of one poll go out
    // in one write. A call past its deadline is dropped by tarpc's channel (at its next await
    // point: a poll cannot be interrupted).
    let requests = std::pin::pin!(requests);
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        let spawn = |request: server::InFlightRequest<_, _>| {
            tokio::spawn(request.execute(serve.clone())).map(|_| ())
        };
        run_calls(requests, max_in_flight, spawn).await
    } else {
        let inline = |request: server::InFlightRequest<_, _>| request.execute(serve.clone());
        run_calls(requests, max_in_flight, inline).await
    }
}

/// Starts a one-way call: waits for one of the connection's places, spawns the method with
/// it, and returns the acknowledgement (the encoding of `()`, empty) for the worker.
async fn run_oneway(
    services: Arc<Services>,
    request: CallRequest,
    span: Option<tracing::Span>,
    places: Arc<tokio::sync::Semaphore>,
    caller: Arc<str>,
) -> wire::CallResponse {
    // Closed never: the semaphore lives as long as the connection's calls.
    let place = places.acquire_owned().await;
    let in_span = span.clone().unwrap_or_else(tracing::Span::none);
    tokio::spawn(
        async move {
            let _place = place;
            let (service, method) = (request.service.clone(), request.method.clone());
            let reply = services.call(request).await;
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

/// Runs the calls read from `requests`, each started by `start` (inline, or spawned), at most
/// `max_in_flight` at a time. Returns once the connection ends and every call has finished.
async fn run_calls<T, F>(
    mut requests: std::pin::Pin<&mut impl Stream<Item = Result<T, tarpc::ChannelError<io::Error>>>>,
    max_in_flight: usize,
    mut start: impl FnMut(T) -> F,
) -> Result<(), tarpc::ChannelError<io::Error>>
where
    F: std::future::Future<Output = ()>,
{
    let mut running = FuturesUnordered::new();
    let mut failed = None;
    futures::future::poll_fn(|cx| loop {
        while running.len() < max_in_flight {
            match requests.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(request))) => {
                    running.push(start(request));
                }
                Poll::Ready(Some(Err(e))) => {
                    failed = Some(e);
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        let mut finished = false;
        while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {
            finished = true;
        }
        if !finished {
            return Poll::Pending;
        }
    })
    .await;
    // The peer is gone or broke the protocol: let the calls it started finish (their replies
    // go nowhere, but their effects are complete, never cut in the middle).
    while running.next().await.is_some() {}
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
