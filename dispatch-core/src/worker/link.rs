//! An Agent's link to the Library: one connection attempt (connect, handshake, manifest check),
//! and the task that keeps the connection up across Library restarts.

use super::agent::AgentConfig;
use super::call_client::{CallClient, Dispatch};
use super::switch::{move_link, Move};
use crate::cluster_error::ClusterError;
use crate::process::exit;
use crate::service::Manifest;
use crate::wire::{self, Hello, Welcome};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// One live connection to the Library.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) client: CallClient,
}

/// Why a connection attempt failed.
pub(super) enum LinkError {
    /// Worth retrying: the Library is not (yet) there.
    Transient(ClusterError),
    /// Retrying cannot help: refused, or a different set of services.
    Fatal(ClusterError),
}

/// Runs the connection; when it breaks, marks the Agent disconnected and reconnects (at once
/// when the master says the Library is back, else with a short backoff), for the worker's life.
/// A handover's move ([`Move`]) switches it to the new Library's socket meanwhile.
pub(super) async fn keep_connected(
    mut config: AgentConfig,
    mut dispatch: Dispatch,
    link: watch::Sender<Option<Arc<Link>>>,
    reconnect: Arc<Notify>,
    mut moves: mpsc::UnboundedReceiver<Move>,
) {
    loop {
        loop {
            tokio::select! {
                () = &mut dispatch => break,
                Some(request) = moves.recv() => {
                    move_link(&mut config, request, &link, &mut dispatch).await;
                }
            }
        }
        link.send_replace(None);
        let lost = Instant::now();
        tracing::warn!("lost the connection to the library; reconnecting");
        let mut wait = Duration::from_millis(5);
        dispatch = loop {
            match open_link(&config).await {
                Ok((client, next, _)) => {
                    link.send_replace(Some(Arc::new(Link { client })));
                    tracing::info!("reconnected to the library after {:?}", lost.elapsed());
                    break next;
                }
                Err(LinkError::Fatal(e)) => {
                    // A Library with other services cannot serve this worker's code: exit, and
                    // let the master start a fresh worker.
                    tracing::error!("cannot reconnect to the library: {e}; exiting");
                    exit::exit(exit::WORKER_START_FAILED);
                }
                Err(LinkError::Transient(e)) => {
                    tracing::debug!("reconnect failed: {e}");
                    tokio::select! {
                        () = reconnect.notified() => {}
                        () = tokio::time::sleep(wait) => {}
                        Some(Move { path, done }) = moves.recv() => {
                            // Not connected: nothing in flight to finish; go there at once.
                            config.socket = path;
                            let _ = done.send(());
                        }
                    }
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
            }
        };
    }
}

/// One connection attempt: connect, handshake, manifest check.
pub(super) async fn open_link(
    config: &AgentConfig,
) -> Result<(CallClient, Dispatch, Manifest), LinkError> {
    let transient = LinkError::Transient;
    let stream = tokio::net::UnixStream::connect(&config.socket)
        .await
        .map_err(|e| {
            transient(ClusterError::io(
                format!(
                    "cannot connect to the library at {}",
                    config.socket.display()
                ),
                e,
            ))
        })?;
    let mut framed = wire::framed(stream, config.settings.max_frame);
    let hello = Hello {
        protocol: wire::PROTOCOL_VERSION,
        token: config.token.clone(),
        worker_id: config.worker_id,
    };
    let hello = wire::codec::encode(&hello).map_err(|e| {
        LinkError::Fatal(ClusterError::Protocol {
            message: format!("cannot encode the hello: {e}"),
        })
    })?;
    let exchange = async {
        framed.send(Bytes::from(hello)).await?;
        framed.next().await.transpose()
    };
    let frame = match tokio::time::timeout(config.settings.handshake_timeout, exchange).await {
        Err(_) => {
            return Err(transient(ClusterError::Handshake {
                message: format!(
                    "the library did not answer within {:?}",
                    config.settings.handshake_timeout
                ),
            }))
        }
        Ok(Err(e)) => return Err(transient(ClusterError::io("handshake with the library", e))),
        Ok(Ok(None)) => {
            return Err(transient(ClusterError::Handshake {
                message: "the library closed the connection during the handshake".into(),
            }))
        }
        Ok(Ok(Some(frame))) => frame,
    };
    let welcome: Welcome = wire::codec::decode(&frame).map_err(|e| {
        LinkError::Fatal(ClusterError::Handshake {
            message: format!("undecodable answer: {e}"),
        })
    })?;
    let manifest = match welcome {
        Welcome::Accepted(m) => m,
        Welcome::Refused(reason) => {
            return Err(LinkError::Fatal(ClusterError::Handshake {
                message: reason,
            }))
        }
        // The Library is at its connection cap: a slot may free up, so try again.
        Welcome::Busy(reason) => {
            return Err(transient(ClusterError::Handshake { message: reason }))
        }
    };
    let local = Manifest::local();
    if manifest.fingerprint() != local.fingerprint() {
        // The Library may host more than this worker knows of; what this worker calls must be
        // there with the same signature.
        manifest.check_serves(&local).map_err(|e| {
            LinkError::Fatal(ClusterError::Handshake {
                message: e.to_string(),
            })
        })?;
    }
    let (client, dispatch) = CallClient::new(framed);
    Ok((client, dispatch, manifest))
}
