//! The call loop's promises kept from tarpc's server, on a real socket pair with raw tarpc
//! frames: a waiting call is cut at its deadline or by the client's `Cancel` (unanswered), a
//! call already past its deadline never runs, a reused id is ignored, and at most
//! `max_in_flight` calls run while the rest wait unread.

use super::calls::serve_calls;
use super::hosted::Services;
use crate::service::{CallFuture, ErasedService, MethodInfo, ServiceRegistration};
use crate::wire::{self, CallRequest};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixStream;

/// How often each key's `wait` started, and how often its future was dropped unfinished.
static STARTED: Mutex<BTreeMap<Vec<u8>, u64>> = Mutex::new(BTreeMap::new());
static DROPPED: Mutex<BTreeMap<Vec<u8>, u64>> = Mutex::new(BTreeMap::new());

fn bump(map: &Mutex<BTreeMap<Vec<u8>, u64>>, key: &[u8]) {
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *map.entry(key.to_vec()).or_insert(0) += 1;
}

fn count(map: &Mutex<BTreeMap<Vec<u8>, u64>>, key: &[u8]) -> u64 {
    let map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.get(key).copied().unwrap_or(0)
}

/// Counts its drop.
struct DropGuard(Vec<u8>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        bump(&DROPPED, &self.0);
    }
}

/// `wait(key)` never finishes (counted when started and when dropped); `now(key)` finishes in
/// its first poll (counted when started).
struct Waiter;

impl ErasedService for Waiter {
    fn call(self: Arc<Self>, method: &str, args: &[u8]) -> CallFuture {
        let args = args.to_vec();
        match method {
            "wait" => Box::pin(async move {
                bump(&STARTED, &args);
                let _guard = DropGuard(args);
                std::future::pending::<()>().await;
                Ok(Vec::new())
            }),
            "now" => Box::pin(async move {
                bump(&STARTED, &args);
                Ok(args)
            }),
            // Decoding happens in `call`, before the future: a user's `Deserialize` that
            // panics panics here.
            "bad_args" => panic!("a Deserialize impl panicked"),
            _ => crate::__private::unknown_method("waiter", method),
        }
    }
}

inventory::submit! {
    ServiceRegistration {
        name: "waiter",
        type_name: "Waiter",
        methods: &[
            MethodInfo { name: "wait", signature: "fn wait(&self, key: Vec<u8>)" },
            MethodInfo { name: "now", signature: "fn now(&self, key: Vec<u8>) -> Vec<u8>" },
            MethodInfo { name: "bad_args", signature: "fn bad_args(&self, key: Vec<u8>)" },
        ],
        init: || Box::pin(async { Ok(Arc::new(Waiter) as Arc<dyn ErasedService>) }),
    }
}

/// The client's side of a connection served by `serve_calls` (in this process).
async fn served(max_in_flight: usize) -> wire::Framing {
    let (client, server) = UnixStream::pair().expect("a socket pair");
    let services = Arc::new(Services::start(1 << 16).await.expect("services"));
    let framed = wire::framed(server, 1 << 17);
    tokio::spawn(serve_calls(framed, services, max_in_flight, "test".into()));
    wire::framed(client, 1 << 17)
}

/// A tarpc request frame for `waiter.<method>(key)`, due `deadline` from now.
fn request(id: u64, method: &str, key: &[u8], deadline: Duration) -> Bytes {
    // tarpc's layout: variant 0, the context (deadline relative to now, trace context), the
    // id, the message.
    let message = (
        0_u32,
        (deadline.as_secs(), deadline.subsec_nanos()),
        ([0_u8; 16], 0_u64, 1_u32),
        id,
        CallRequest {
            service: "waiter".into(),
            method: method.into(),
            args: serde_bytes::ByteBuf::from(key.to_vec()),
            trace: None,
        },
    );
    Bytes::from(wire::codec::encode(&message).expect("encode"))
}

/// tarpc's `Cancel` frame for request `id`.
fn cancel(id: u64) -> Bytes {
    let message = (1_u32, ([0_u8; 16], 0_u64, 1_u32), id);
    Bytes::from(wire::codec::encode(&message).expect("encode"))
}

/// The next response (a success or not), or `None` if none comes within `within`.
async fn next_response(
    framed: &mut wire::Framing,
    within: Duration,
) -> Option<tarpc::Response<wire::CallResponse>> {
    let frame = tokio::time::timeout(within, framed.next()).await.ok()?;
    let frame = frame.expect("the connection stays open").expect("a frame");
    Some(wire::codec::decode(&frame).expect("a tarpc response"))
}

/// The next reply's request id and reply bytes, or `None` if none comes within `within`.
async fn next_reply(framed: &mut wire::Framing, within: Duration) -> Option<(u64, Vec<u8>)> {
    let reply = next_response(framed, within).await?;
    let bytes = reply
        .message
        .expect("no server error")
        .expect("the call succeeded");
    Some((reply.request_id, bytes.into_vec()))
}

/// Waits until `check` holds (a correctness bound, wide for a busy machine).
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_waiting_call_is_cut_at_its_deadline_unanswered_and_the_rest_is_served() {
    let mut framed = served(8).await;
    let key = b"deadline-cut";
    framed
        .send(request(1, "wait", key, Duration::from_millis(200)))
        .await
        .expect("send");
    framed
        .send(request(
            2,
            "now",
            b"deadline-other",
            Duration::from_secs(10),
        ))
        .await
        .expect("send");
    let reply = next_reply(&mut framed, Duration::from_secs(10)).await;
    assert_eq!(reply, Some((2, b"deadline-other".to_vec())));
    eventually("the waiting call is dropped at its deadline", || {
        count(&DROPPED, key) == 1
    })
    .await;
    assert_eq!(count(&STARTED, key), 1);
    // Unanswered, as tarpc's server leaves it; the connection serves on.
    framed
        .send(request(
            3,
            "now",
            b"deadline-after",
            Duration::from_secs(10),
        ))
        .await
        .expect("send");
    let reply = next_reply(&mut framed, Duration::from_secs(10)).await;
    assert_eq!(reply, Some((3, b"deadline-after".to_vec())));
}

#[tokio::test]
async fn a_cancel_drops_a_waiting_call_and_a_late_call_never_runs() {
    let mut framed = served(8).await;
    let key = b"cancelled";
    framed
        .send(request(1, "wait", key, Duration::from_secs(60)))
        .await
        .expect("send");
    eventually("the call started", || count(&STARTED, key) == 1).await;
    framed.send(cancel(1)).await.expect("send");
    eventually("the cancelled call is dropped", || {
        count(&DROPPED, key) == 1
    })
    .await;

    // Already past its deadline when it arrives: never run.
    let late = b"late";
    framed
        .send(request(2, "now", late, Duration::ZERO))
        .await
        .expect("send");
    framed
        .send(request(3, "now", b"late-marker", Duration::from_secs(10)))
        .await
        .expect("send");
    let reply = next_reply(&mut framed, Duration::from_secs(10)).await;
    assert_eq!(reply, Some((3, b"late-marker".to_vec())));
    assert_eq!(count(&STARTED, late), 0);
    assert_eq!(
        next_reply(&mut framed, Duration::from_millis(100)).await,
        None
    );
}

#[tokio::test]
async fn at_most_max_in_flight_calls_run_and_a_reused_id_is_ignored() {
    let mut framed = served(4).await;
    let key = b"in-flight";
    for id in 1..=3 {
        framed
            .send(request(id, "wait", key, Duration::from_secs(60)))
            .await
            .expect("send");
    }
    // The same id again while it runs: ignored (tarpc's server does the same).
    let reused = b"reused";
    framed
        .send(request(3, "now", reused, Duration::from_secs(60)))
        .await
        .expect("send");
    // The fourth place, taken for 2 s; then a call past the cap: not read meanwhile (a
    // `Cancel` behind it would not be read either: the cap bounds what a connection holds).
    let short = b"in-flight-short";
    framed
        .send(request(4, "wait", short, Duration::from_secs(2)))
        .await
        .expect("send");
    framed
        .send(request(10, "now", b"queued", Duration::from_secs(60)))
        .await
        .expect("send");
    eventually("four calls run", || {
        count(&STARTED, key) == 3 && count(&STARTED, short) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued_ran = count(&STARTED, b"queued");
    if count(&DROPPED, short) == 0 {
        assert_eq!(queued_ran, 0, "a call past the cap ran");
    }
    let reply = next_reply(&mut framed, Duration::from_secs(10)).await;
    assert_eq!(reply, Some((10, b"queued".to_vec())));
    assert_eq!(count(&DROPPED, short), 1);
    assert_eq!(count(&STARTED, reused), 0);
    framed.send(cancel(1)).await.expect("send");
    eventually("a cancelled call is dropped", || count(&DROPPED, key) == 1).await;
}

/// A panic while a call's arguments are decoded (before its future exists) is that call's
/// `Panicked` reply, naming the method; the connection goes on serving.
#[tokio::test]
async fn a_panic_decoding_the_arguments_fails_that_call_only() {
    let mut framed = served(8).await;
    framed
        .send(request(
            1,
            "bad_args",
            b"panic-decode",
            Duration::from_secs(30),
        ))
        .await
        .expect("send");
    framed
        .send(request(2, "now", b"after-panic", Duration::from_secs(30)))
        .await
        .expect("send");
    let mut replies = BTreeMap::new();
    for _ in 0..2 {
        let reply = next_response(&mut framed, Duration::from_secs(10))
            .await
            .expect("a reply within the bound");
        replies.insert(reply.request_id, reply.message.expect("no server error"));
    }
    match &replies[&1] {
        Err(crate::error::RemoteError::Panicked { method, message }) => {
            assert_eq!(method, "waiter.bad_args");
            assert!(message.contains("a Deserialize impl panicked"), "{message}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(
        replies[&2].as_ref().map(|b| b.to_vec()).ok(),
        Some(b"after-panic".to_vec())
    );
}
