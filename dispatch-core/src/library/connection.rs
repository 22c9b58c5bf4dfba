//! One authenticated connection's life: the handshake (hello in, welcome with the manifest
//! out), then its calls (`calls`) or its streams (`streams`).

use super::accept::ServeConfig;
use super::gate::{Admission, Gate, HandshakeSlot, Peer, PidField, Refusal};
use super::hosted::Services;
use crate::service::Manifest;
use crate::stream::frames::STREAM_CONNECTION;
use crate::wire::{self, Framing, Hello, Welcome};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::UnixStream;
use tokio::time::Instant;

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
        // The error whole, not as text: the log names the cause at the end of the chain (a
        // budget spent, a frame too large).
        super::calls::serve_calls(framed, services, config.max_in_flight(), caller).await
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
