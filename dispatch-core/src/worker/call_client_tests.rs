//! The call client's promises, against a server played by hand on the other end of a real
//! socket pair with raw tarpc frames: replies reach their own callers whatever their order, the
//! requests carry what was asked, a call is cut at its deadline, a dropped call sends tarpc's
//! `Cancel`, a broken connection fails every waiting call (and every later one), the dispatch
//! ends once no client is left and nothing waits, and a server that reads nothing makes calls
//! wait to be sent (bounded) rather than buffer without limit.

use super::call_client::{CallClient, CallError, Due, OUT_HIGH};
use crate::wire::{self, CallRequest, TraceParent};
use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tarpc::ClientMessage;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// The bound every step is given (a correctness bound, wide for a busy machine).
const BOUND: Duration = Duration::from_secs(10);

/// The frame limit of both ends.
const MAX_FRAME: usize = 1 << 17;

/// A client over one end of a socket pair with its dispatch spawned, and the other end, framed.
fn connected() -> (CallClient, JoinHandle<()>, wire::Framing) {
    let (client, server) = UnixStream::pair().expect("a socket pair");
    let (client, dispatch) = CallClient::new(wire::framed(client, MAX_FRAME));
    let dispatch = tokio::spawn(dispatch);
    (client, dispatch, wire::framed(server, MAX_FRAME))
}

/// The next message the client sent, with the request's deadline as sent (relative), or `None`
/// when none comes within `within`.
async fn next_message(
    server: &mut wire::Framing,
    within: Duration,
) -> Option<(ClientMessage<CallRequest>, Option<Duration>)> {
    let frame = tokio::time::timeout(within, server.next()).await.ok()?;
    let frame = frame
        .expect("the client keeps the connection open")
        .expect("a frame from the client");
    Some(wire::decode_request(&frame).expect("a tarpc client message"))
}

/// A request the client sent: its id, body and relative deadline.
struct Sent {
    /// The request's id.
    id: u64,
    /// What it asks for.
    request: CallRequest,
    /// Its deadline, relative to when it was encoded.
    deadline: Duration,
}

/// The next request the client sent (a `Cancel` fails the test), within [`BOUND`].
async fn next_request(server: &mut wire::Framing) -> Sent {
    let (message, deadline) = next_message(server, BOUND)
        .await
        .expect("a request within the bound");
    match message {
        ClientMessage::Request(request) => Sent {
            id: request.id,
            request: request.message,
            deadline: deadline.expect("a request carries its deadline"),
        },
        other => panic!("expected a request, got {other:?}"),
    }
}

/// Answers request `id` with `payload`.
async fn reply(server: &mut wire::Framing, id: u64, payload: &[u8]) {
    let response: tarpc::Response<wire::CallResponse> = tarpc::Response {
        request_id: id,
        message: Ok(Ok(serde_bytes::ByteBuf::from(payload.to_vec()))),
    };
    let frame = wire::codec::encode(&response).expect("encode a response");
    server
        .send(Bytes::from(frame))
        .await
        .expect("send a response");
}

/// The payload of a successful call's result.
fn payload(outcome: Result<super::call_client::Reply, CallError>) -> Vec<u8> {
    outcome
        .expect("the call got a reply")
        .expect("the reply is a success")
        .to_vec()
}

/// The bytes a fresh socket pair takes before a writer would block (nobody reading).
fn socket_capacity() -> usize {
    let (writer, _reader) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    writer.set_nonblocking(true).expect("non-blocking");
    let chunk = vec![0_u8; 1 << 16];
    let mut total = 0;
    loop {
        match std::io::Write::write(&mut &writer, &chunk) {
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("writing to a socket pair: {e}"),
        }
    }
}

/// Three calls in flight, answered in reverse order with distinct payloads: each gets its own.
/// The requests carry the service, method, args, trace and deadline asked for.
#[tokio::test]
async fn replies_out_of_order_reach_their_own_callers() {
    let (client, _dispatch, mut server) = connected();
    let trace = TraceParent {
        trace_id: 0x1234_5678_9abc_def0_1122_3344_5566_7788,
        span_id: 42,
        sampled: true,
    };
    let ask = Duration::from_secs(5);
    let deadline = Instant::now() + ask;
    let calls = futures::future::join3(
        client.call("svc-a", "first", b"args-a", None, deadline),
        client.call("svc-b", "second", b"args-b", Some(trace), deadline),
        client.call("svc-c", "third", b"args-c", None, deadline),
    );
    let server_side = async {
        let mut sent = Vec::new();
        for _ in 0..3 {
            sent.push(next_request(&mut server).await);
        }
        let mut ids: Vec<u64> = sent.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3, "every request has its own id");
        // Answer the latest first; each answer names the args it answers.
        let mut by_id: Vec<&Sent> = sent.iter().collect();
        by_id.sort_by_key(|s| std::cmp::Reverse(s.id));
        for s in by_id {
            let mut answer = b"reply-to-".to_vec();
            answer.extend_from_slice(&s.request.args);
            reply(&mut server, s.id, &answer).await;
        }
        sent
    };
    let ((a, b, c), sent) = both(
        calls,
        server_side,
        "the calls are answered within the bound",
    )
    .await;
    assert_eq!(payload(a), b"reply-to-args-a");
    assert_eq!(payload(b), b"reply-to-args-b");
    assert_eq!(payload(c), b"reply-to-args-c");

    let by_args: HashMap<Vec<u8>, &Sent> =
        sent.iter().map(|s| (s.request.args.to_vec(), s)).collect();
    for (args, service, method, traced) in [
        (&b"args-a"[..], "svc-a", "first", None),
        (&b"args-b"[..], "svc-b", "second", Some(trace)),
        (&b"args-c"[..], "svc-c", "third", None),
    ] {
        let s = by_args.get(args).expect("a request for each call");
        assert_eq!(s.request.service, service);
        assert_eq!(s.request.method, method);
        assert_eq!(s.request.trace, traced);
        assert!(
            s.deadline <= ask && s.deadline > ask - Duration::from_secs(3),
            "the deadline as sent ({:?}) is about the one asked ({ask:?})",
            s.deadline
        );
    }
}

/// A call unanswered past its deadline fails with `DeadlineExceeded` (not before it); a late
/// reply to it is ignored, and a later call on the same client still succeeds.
#[tokio::test]
async fn a_call_past_its_deadline_fails_and_the_client_goes_on() {
    let (client, _dispatch, mut server) = connected();
    let deadline = Instant::now() + Duration::from_millis(200);
    let call = client.call("svc", "slow", b"slow", None, deadline);
    let server_side = async {
        let sent = next_request(&mut server).await;
        assert_eq!(sent.request.args.as_ref(), b"slow");
        sent.id
    };
    let (outcome, slow_id) = both(call, server_side, "the call ends within the bound").await;
    assert_eq!(outcome, Err(CallError::DeadlineExceeded));
    assert!(
        Instant::now() >= deadline,
        "the call failed before its deadline"
    );

    // A reply after the deadline goes nowhere; the next call is answered.
    reply(&mut server, slow_id, b"too late").await;
    let call = client.call(
        "svc",
        "fast",
        b"fast",
        None,
        Instant::now() + Duration::from_secs(10),
    );
    let server_side = async {
        let sent = loop {
            let (message, _) = next_message(&mut server, BOUND)
                .await
                .expect("a message within the bound");
            match message {
                ClientMessage::Request(request) => break request,
                ClientMessage::Cancel { request_id, .. } => {
                    assert_eq!(request_id, slow_id, "only the late call may be cancelled");
                }
                other => panic!("unexpected message {other:?}"),
            }
        };
        assert_eq!(sent.message.args.as_ref(), b"fast");
        assert_ne!(sent.id, slow_id, "a new id for the new call");
        reply(&mut server, sent.id, b"on time").await;
    };
    let (outcome, ()) = both(call, server_side, "the second call ends within the bound").await;
    assert_eq!(payload(outcome), b"on time");
}

/// Dropping a call before its reply sends tarpc's `Cancel` for its id; the client still works.
#[tokio::test]
async fn dropping_a_call_sends_cancel() {
    let (client, _dispatch, mut server) = connected();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut call = client.call("svc", "wait", b"dropped", None, deadline);
    assert!(
        futures::poll!(&mut call).is_pending(),
        "the call waits for its reply"
    );
    let sent = next_request(&mut server).await;
    assert_eq!(sent.request.args.as_ref(), b"dropped");
    drop(call);
    let (message, deadline_sent) = next_message(&mut server, BOUND)
        .await
        .expect("a cancel within the bound");
    match message {
        ClientMessage::Cancel { request_id, .. } => assert_eq!(request_id, sent.id),
        other => panic!("expected a cancel, got {other:?}"),
    }
    assert_eq!(deadline_sent, None, "a cancel has no deadline");

    // The connection is still good.
    let call = client.call("svc", "now", b"after", None, deadline);
    let server_side = async {
        let sent = next_request(&mut server).await;
        assert_eq!(sent.request.args.as_ref(), b"after");
        reply(&mut server, sent.id, b"fine").await;
    };
    let (outcome, ()) = both(call, server_side, "the call ends within the bound").await;
    assert_eq!(payload(outcome), b"fine");
}

/// A call dropped together with the last client: its `Cancel` still leaves before the dispatch
/// ends and closes the connection.
#[tokio::test]
async fn the_cancel_of_a_call_dropped_with_the_last_client_still_leaves() {
    let (client, dispatch, mut server) = connected();
    let mut call = client.call(
        "svc",
        "wait",
        b"last",
        None,
        Instant::now() + Duration::from_secs(30),
    );
    assert!(futures::poll!(&mut call).is_pending());
    let sent = next_request(&mut server).await;
    drop(call);
    drop(client);
    let (message, _) = next_message(&mut server, BOUND)
        .await
        .expect("a cancel within the bound");
    match message {
        ClientMessage::Cancel { request_id, .. } => assert_eq!(request_id, sent.id),
        other => panic!("expected a cancel, got {other:?}"),
    }
    dispatch_ends(dispatch).await;
    connection_closes(&mut server, "nothing more after the cancel").await;
}

/// When the server's end closes, every waiting call fails with `Broken`, the dispatch ends,
/// and a call made afterwards fails with `Broken` in its first poll.
#[tokio::test]
async fn a_closed_connection_fails_every_waiting_call_and_every_later_one() {
    let (client, dispatch, mut server) = connected();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first = client.call("svc", "wait", b"one", None, deadline);
    let mut second = client.call("svc", "wait", b"two", None, deadline);
    assert!(futures::poll!(&mut first).is_pending());
    assert!(futures::poll!(&mut second).is_pending());
    next_request(&mut server).await;
    next_request(&mut server).await;
    drop(server);
    let (first, second) = both(first, second, "the calls end within the bound").await;
    assert_eq!(first, Err(CallError::Broken));
    assert_eq!(second, Err(CallError::Broken));
    dispatch_ends(dispatch).await;
    let later = client
        .call("svc", "now", b"later", None, deadline)
        .now_or_never();
    assert_eq!(later, Some(Err(CallError::Broken)));
}

/// With every client dropped and no call waiting, the dispatch ends and closes the connection.
#[tokio::test]
async fn the_dispatch_ends_once_every_client_is_gone() {
    let (client, dispatch, mut server) = connected();
    let other = client.clone();
    drop(client);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!dispatch.is_finished(), "a client is left");
    drop(other);
    dispatch_ends(dispatch).await;
    connection_closes(&mut server, "the connection is closed, with nothing sent").await;
}

/// While a call waits on a clone, dropping the original client leaves the dispatch running and
/// the reply reaches the call; dropping the clone then ends the dispatch.
#[tokio::test]
async fn a_waiting_call_keeps_the_dispatch_running() {
    let (client, dispatch, mut server) = connected();
    let clone = client.clone();
    let mut call = clone.call(
        "svc",
        "wait",
        b"kept",
        None,
        Instant::now() + Duration::from_secs(30),
    );
    assert!(futures::poll!(&mut call).is_pending());
    drop(client);
    let sent = next_request(&mut server).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!dispatch.is_finished(), "a call waits and a client is left");
    reply(&mut server, sent.id, b"kept-reply").await;
    let outcome = tokio::time::timeout(BOUND, call)
        .await
        .expect("the reply comes within the bound");
    assert_eq!(payload(outcome), b"kept-reply");
    drop(clone);
    dispatch_ends(dispatch).await;
}

/// Runs a call and the server's side of it together, within the bound (`what` names them).
async fn both<A: std::future::Future, B: std::future::Future>(
    call: A,
    server: B,
    what: &str,
) -> (A::Output, B::Output) {
    tokio::time::timeout(BOUND, futures::future::join(call, server))
        .await
        .expect(what)
}

/// Waits for the dispatch task to end (within the bound, without a panic).
async fn dispatch_ends(dispatch: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(BOUND, dispatch)
        .await
        .expect("the dispatch ends within the bound")
        .expect("the dispatch does not panic");
}

/// Waits for the client to close the connection, with nothing more sent (`what` says why).
async fn connection_closes(server: &mut wire::Framing, what: &str) {
    let end = tokio::time::timeout(BOUND, server.next())
        .await
        .expect("the connection closes within the bound");
    assert!(end.is_none(), "{what}");
}

/// The size of each large call's args.
const LARGE: usize = 64 << 10;

/// The args of `n` large calls, each starting with its index.
fn large_args(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut args = vec![0_u8; LARGE];
            args[..8].copy_from_slice(&(i as u64).to_be_bytes());
            args
        })
        .collect()
}

/// A server that reads nothing: large calls fill what may wait for the socket, then wait to be
/// sent and fail with `DeadlineExceeded` at their deadline (never sent), instead of buffering
/// without limit or hanging.
#[tokio::test]
async fn a_server_that_reads_nothing_makes_calls_wait_to_be_sent() {
    /// How many calls are made.
    const CALLS: usize = 128;
    let (client, _dispatch, mut server) = connected();
    let args = large_args(CALLS);
    let deadline = Instant::now() + Duration::from_secs(1);
    let calls = futures::future::join_all(
        args.iter()
            .map(|args| client.call("svc", "large", args, None, deadline)),
    );
    let outcomes = tokio::time::timeout(BOUND, calls)
        .await
        .expect("every call ends within the bound");
    assert!(
        Instant::now() >= deadline,
        "no call failed before its deadline"
    );
    for outcome in &outcomes {
        assert_eq!(*outcome, Err(CallError::DeadlineExceeded));
    }

    // What reached the socket: the calls that were sent, and no others.
    let mut received = 0_usize;
    let mut bytes = 0_usize;
    while let Some(frame) = tokio::time::timeout(Duration::from_millis(500), server.next())
        .await
        .ok()
        .flatten()
    {
        let frame = frame.expect("a frame from the client");
        bytes += frame.len() + 4;
        match wire::decode_request(&frame)
            .expect("a tarpc client message")
            .0
        {
            ClientMessage::Request(request) => {
                assert_eq!(request.message.args.len(), LARGE);
                received += 1;
            }
            ClientMessage::Cancel { .. } => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
    assert!(
        received >= OUT_HIGH / LARGE,
        "at least OUT_HIGH's worth of calls was sent (got {received})"
    );
    assert!(
        received < CALLS,
        "the calls past the bound were never sent (all {CALLS} were)"
    );
    // The client keeps at most OUT_HIGH (and a frame) in its own buffer and as much in the
    // connection's write buffer: 2 x OUT_HIGH waiting for the socket in all, as documented.
    let capacity = socket_capacity();
    let frame = LARGE + 1024;
    assert!(
        bytes <= capacity + 2 * OUT_HIGH + 2 * frame,
        "{bytes} bytes were buffered, past the socket's {capacity} and the client's bound"
    );
}

/// Calls made to wait by a server that reads nothing are sent once it reads, and answered.
#[tokio::test]
async fn calls_waiting_to_be_sent_go_once_the_server_reads() {
    /// How many calls are made.
    const CALLS: usize = 64;
    let (client, _dispatch, mut server) = connected();
    let args = large_args(CALLS);
    let deadline = Instant::now() + Duration::from_secs(30);
    let calls = futures::future::join_all(
        args.iter()
            .map(|args| client.call("svc", "large", args, None, deadline)),
    );
    let server_side = async {
        // Read nothing for a while, so the calls pile up past the bound.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..CALLS {
            let sent = next_request(&mut server).await;
            let answer = sent.request.args[..8].to_vec();
            reply(&mut server, sent.id, &answer).await;
        }
    };
    let (outcomes, ()) = both(
        calls,
        server_side,
        "every call is answered within the bound",
    )
    .await;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        assert_eq!(payload(outcome), (i as u64).to_be_bytes());
    }
}

/// A call waiting to be sent fails with `Broken` when the connection closes.
#[tokio::test]
async fn a_call_waiting_to_be_sent_fails_when_the_connection_closes() {
    /// How many calls are made.
    const CALLS: usize = 64;
    let (client, dispatch, server) = connected();
    let args = vec![0_u8; LARGE];
    let deadline = Instant::now() + Duration::from_secs(30);
    let calls = futures::future::join_all(
        (0..CALLS).map(|_| client.call("svc", "large", &args, None, deadline)),
    );
    let closing = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(server);
    };
    let (outcomes, ()) = both(calls, closing, "every call ends within the bound").await;
    for outcome in outcomes {
        assert_eq!(outcome, Err(CallError::Broken));
    }
    dispatch_ends(dispatch).await;
}

/// A server error reply (tarpc's `ServerError`) fails the call with `CallError::Server`.
#[tokio::test]
async fn a_server_error_fails_the_call() {
    let (client, _dispatch, mut server) = connected();
    let call = client.call(
        "svc",
        "refused",
        b"x",
        None,
        Instant::now() + Duration::from_secs(30),
    );
    let server_side = async {
        let sent = next_request(&mut server).await;
        let response: tarpc::Response<wire::CallResponse> = tarpc::Response {
            request_id: sent.id,
            message: Err(tarpc::ServerError::new(
                std::io::ErrorKind::Other,
                "overloaded".into(),
            )),
        };
        let frame = wire::codec::encode(&response).expect("encode a response");
        server
            .send(Bytes::from(frame))
            .await
            .expect("send a response");
    };
    let (outcome, ()) = both(call, server_side, "the call ends within the bound").await;
    match outcome {
        Err(CallError::Server(detail)) => assert!(detail.contains("overloaded"), "{detail}"),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// A waker that counts its live clones (the `Arc`'s strong count).
struct Counted;

impl futures::task::ArcWake for Counted {
    fn wake_by_ref(_: &std::sync::Arc<Self>) {}
}

/// A call waiting to be sent, polled again and again (as in a `select!` loop), keeps a bounded
/// number of its waker's clones, not one more per poll.
#[tokio::test]
async fn polling_a_call_waiting_to_be_sent_does_not_pile_up_wakers() {
    let (client, _dispatch, _server) = connected();
    let args = vec![0_u8; LARGE];
    let deadline = Instant::now() + Duration::from_secs(30);
    // Without yielding, the dispatch does not run: OUT_HIGH's worth of calls fills the buffer.
    let first = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&first);
    let mut queued = Vec::new();
    while queued.len() <= OUT_HIGH / LARGE {
        let mut call = client.call("svc", "large", &args, None, deadline);
        assert!(call.poll_unpin(&mut cx).is_pending());
        queued.push(call);
    }
    let counted = std::sync::Arc::new(Counted);
    let waker = futures::task::waker(std::sync::Arc::clone(&counted));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut blocked = client.call("svc", "large", &args, None, deadline);
    for _ in 0..1000 {
        assert!(blocked.poll_unpin(&mut cx).is_pending());
    }
    let clones = std::sync::Arc::strong_count(&counted) - 2;
    assert!(
        clones <= 2,
        "a call waiting to be sent holds {clones} clones of its waker after 1000 polls"
    );
}

/// A server that reads nothing until the socket suddenly has room for everything waiting (its
/// send buffer grows, as when the Library drains the socket while the dispatch writes), then
/// waits for every request before answering: the requests left in the client's buffer and the
/// calls waiting to be sent must still go, without a reply to wake the dispatch.
#[tokio::test]
async fn requests_left_after_a_full_write_are_still_sent() {
    /// How many calls are made.
    const CALLS: usize = 64;
    let (client_end, server_end) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    // The same socket, to grow its send buffer later.
    let handle = client_end
        .try_clone()
        .expect("a second handle on the socket");
    client_end.set_nonblocking(true).expect("non-blocking");
    server_end.set_nonblocking(true).expect("non-blocking");
    let client_end = UnixStream::from_std(client_end).expect("a tokio socket");
    let mut server = wire::framed(
        UnixStream::from_std(server_end).expect("a tokio socket"),
        MAX_FRAME,
    );
    let (client, dispatch) = CallClient::new(wire::framed(client_end, MAX_FRAME));
    let _dispatch = tokio::spawn(dispatch);

    let args = large_args(CALLS);
    let deadline = Instant::now() + Duration::from_secs(30);
    let calls = futures::future::join_all(
        args.iter()
            .map(|args| client.call("svc", "large", args, None, deadline)),
    );
    let server_side = async {
        // Nothing read: the socket, the write buffer and the calls' buffer fill.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Room for all that waits at once (the kernel wakes the writer).
        nix::sys::socket::setsockopt(&handle, nix::sys::socket::sockopt::SndBuf, &(4 << 20))
            .expect("grow the send buffer");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut sent = Vec::new();
        while sent.len() < CALLS {
            let Some((message, _)) = next_message(&mut server, BOUND).await else {
                panic!(
                    "only {} of {CALLS} requests were sent within the bound",
                    sent.len()
                );
            };
            match message {
                ClientMessage::Request(request) => sent.push(request),
                other => panic!("expected a request, got {other:?}"),
            }
        }
        for request in sent {
            let answer = request.message.args[..8].to_vec();
            reply(&mut server, request.id, &answer).await;
        }
    };
    let (outcomes, ()) = tokio::time::timeout(2 * BOUND, futures::future::join(calls, server_side))
        .await
        .expect("every call is answered within the bound");
    for (i, outcome) in outcomes.into_iter().enumerate() {
        assert_eq!(payload(outcome), (i as u64).to_be_bytes());
    }
}

/// A call due after a duration (the Agent's way: no clock read of its own) is stamped by the
/// connection's task and fails at its deadline all the same, sending that duration as its
/// relative deadline.
#[tokio::test]
async fn a_call_due_after_a_duration_fails_at_its_deadline() {
    let (client, _dispatch, mut server) = connected();
    let started = Instant::now();
    let within = Duration::from_millis(200);
    let call = client.call("svc", "slow", b"due", None, Due::after(within));
    let server_side = async {
        let (message, left) = next_message(&mut server, BOUND)
            .await
            .expect("a message within the bound");
        assert!(matches!(message, ClientMessage::Request(_)), "{message:?}");
        assert_eq!(left, Some(within), "the duration goes on the wire as given");
    };
    let (outcome, ()) = both(call, server_side, "the call ends within the bound").await;
    assert_eq!(outcome, Err(CallError::DeadlineExceeded));
    assert!(
        started.elapsed() >= within,
        "the call failed before its deadline ({:?})",
        started.elapsed()
    );
}

/// Replies on both sides of the size from which a payload stays in its frame (64 KiB, 1 KiB,
/// just under it, empty) all come back whole, each to its own call, sent back to back so they
/// share the connection's read buffer.
#[tokio::test]
async fn large_and_small_replies_in_one_read_reach_their_callers_whole() {
    let (client, _dispatch, mut server) = connected();
    let deadline = Instant::now() + Duration::from_secs(30);
    let sizes = [64 * 1024, 1024, 1023, 0];
    let calls =
        futures::future::join_all(sizes.map(|_| client.call("svc", "sized", &[], None, deadline)));
    let server_side = async {
        let mut ids = Vec::new();
        for _ in sizes {
            ids.push(next_request(&mut server).await.id);
        }
        for (id, n) in ids.into_iter().zip(sizes) {
            // Ids are given in call order: call k gets sizes[k].
            let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let response: tarpc::Response<wire::CallResponse> = tarpc::Response {
                request_id: id,
                message: Ok(Ok(serde_bytes::ByteBuf::from(body))),
            };
            let frame = wire::codec::encode(&response).expect("encode a response");
            server
                .feed(Bytes::from(frame))
                .await
                .expect("queue a response");
        }
        SinkExt::<Bytes>::flush(&mut server)
            .await
            .expect("send the responses");
    };
    let (outcomes, ()) = both(
        calls,
        server_side,
        "the calls are answered within the bound",
    )
    .await;
    for (outcome, n) in outcomes.into_iter().zip(sizes) {
        let body = payload(outcome);
        assert_eq!(body.len(), n);
        assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }
}
