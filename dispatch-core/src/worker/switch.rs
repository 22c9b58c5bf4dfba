//! A Library handover, on the worker's side: the master says a new Library is ready at a new
//! socket ([`ToChild::LibraryMoved`]); the Agent opens a link to it and sends every new call
//! there, the calls in flight finish on the old link, which then closes; the worker tells the
//! master ([`ToMaster::LibrarySwitched`]).
//!
//! The link task ([`keep_connected`](super::link::keep_connected)) does the move, so that a
//! move and a reconnection never race; this module holds the request and its two halves.

use super::agent::{Agent, AgentConfig};
use super::call_client::Dispatch;
use super::link::{open_link, Link, LinkError};
use crate::wire::{ControlWriter, ToChild, ToMaster};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// A request to move the Agent's link to another socket; `done` fires once the old link's
/// calls finished.
#[derive(Debug)]
pub(super) struct Move {
    pub(super) path: PathBuf,
    pub(super) done: oneshot::Sender<()>,
}

/// Follows the master's handover orders for the worker's life.
pub(super) async fn follow(
    mut orders: mpsc::UnboundedReceiver<ToChild>,
    agent: &'static Agent,
    outbox: ControlWriter,
) {
    while let Some(order) = orders.recv().await {
        let ToChild::LibraryMoved { path, generation } = order else {
            continue;
        };
        let started = Instant::now();
        let done = agent.move_to(path);
        let outbox = outbox.clone();
        tokio::spawn(async move {
            if done.await.is_ok() {
                tracing::info!(
                    "handover {generation}: calls on the old library finished {:?} after the \
                     move",
                    started.elapsed()
                );
                let _ = outbox.send(&ToMaster::LibrarySwitched { generation });
            }
        });
    }
}

/// Moves the link (inside the link task): opens the new link, makes it the one new calls take,
/// and returns it; the old link's dispatch keeps running in a task of its own until its calls
/// finished (tarpc ends a dispatch once its clients are gone and nothing is in flight), then
/// `done` fires. `None` (with `done` answered or dropped) when there was nothing to move, or
/// the new Library cannot be reached; `config` then points at the new socket anyway, so the
/// next reconnection goes there.
pub(super) async fn move_link(
    config: &mut AgentConfig,
    request: Move,
    link: &watch::Sender<Option<Arc<Link>>>,
    old: &mut Dispatch,
) -> bool {
    let Move { path, done } = request;
    if config.socket == path {
        let _ = done.send(());
        return false;
    }
    let mut next = config.clone();
    next.socket = path;
    let give_up = Instant::now() + next.settings.handshake_timeout.max(Duration::from_secs(1));
    let mut wait = Duration::from_millis(5);
    let opened = loop {
        match open_link(&next).await {
            Ok((client, dispatch, _)) => break Some((client, dispatch)),
            Err(LinkError::Transient(e)) if Instant::now() < give_up => {
                tracing::debug!("cannot reach the new library yet: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(100));
            }
            Err(LinkError::Transient(e) | LinkError::Fatal(e)) => {
                tracing::error!(
                    "handover: cannot connect to the new library at {}: {e}; calls stay on \
                     the old one",
                    next.socket.display()
                );
                break None;
            }
        }
    };
    *config = next;
    let Some((client, dispatch)) = opened else {
        return false;
    };
    link.send_replace(Some(Arc::new(Link { client })));
    let draining = std::mem::replace(old, dispatch);
    tracing::info!(
        "handover: new calls go to the new library at {}",
        config.socket.display()
    );
    tokio::spawn(async move {
        draining.await;
        let _ = done.send(());
    });
    true
}
