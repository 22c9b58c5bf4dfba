//! What the application's worker function is given: the [`Worker`] handle.

use super::agent::Agent;
use crate::cluster_error::ClusterError;
use crate::messenger::Messenger;
use crate::process::StopCause;
use crate::wire::{ControlWriter, ToMaster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// What the application's worker function is given: who this worker is, its Agent, its shared
/// listeners, and the signals for when the cluster is ready and when to stop.
#[derive(Debug, Clone)]
pub struct Worker {
    pub(super) id: u32,
    pub(super) agent: &'static Agent,
    pub(super) stop: watch::Receiver<Option<StopCause>>,
    pub(super) cluster_ready: watch::Receiver<bool>,
    pub(super) listeners: Arc<Vec<std::net::TcpListener>>,
    /// Unix stream listeners passed to the master by systemd (socket activation).
    pub(super) unix_listeners: Arc<Vec<std::os::unix::net::UnixListener>>,
    pub(super) ready: Arc<ReadySignal>,
}

/// Reports this worker ready to the master, once.
#[derive(Debug)]
pub(super) struct ReadySignal {
    pub(super) sent: AtomicBool,
    pub(super) outbox: ControlWriter,
}

impl ReadySignal {
    pub(super) fn send(&self) {
        if !self.sent.swap(true, Ordering::SeqCst) {
            // Only a closed socket refuses it, and then the master is gone anyway.
            let _ = self.outbox.send(&ToMaster::Ready {
                services: String::new(),
            });
            tracing::info!("worker ready");
        }
    }
}

impl Worker {
    /// This worker's id, from 0 to the number of workers − 1. A restarted or reloaded worker
    /// keeps the id of the one it replaces.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// This process's pid.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// This process's messenger (the same as [`Messenger::get`]).
    pub fn messenger(&self) -> &'static Messenger {
        Messenger::get()
    }

    /// The Agent, connected to the Library (the same as [`Agent::get`]).
    pub fn agent(&self) -> &'static Agent {
        self.agent
    }

    /// The first shared listener set with [`Cluster::listen`](crate::Cluster::listen), as a
    /// tokio listener. Each call returns a new handle on the same socket.
    ///
    /// # Errors
    /// When the cluster has no listener, or the descriptor cannot be duplicated.
    pub fn listener(&self) -> Result<tokio::net::TcpListener, ClusterError> {
        self.listeners()?
            .into_iter()
            .next()
            .ok_or_else(|| ClusterError::Protocol {
                message: "this cluster has no listener: call Cluster::listen(addr)".into(),
            })
    }

    /// The shared Unix stream listeners: those systemd passed to the master (socket
    /// activation, `ListenStream=/path`), in the order it passed them. Empty otherwise.
    ///
    /// # Errors
    /// When a descriptor cannot be duplicated or registered with tokio.
    pub fn unix_listeners(&self) -> Result<Vec<tokio::net::UnixListener>, ClusterError> {
        self.unix_listeners
            .iter()
            .map(|l| {
                let copy = l
                    .try_clone()
                    .map_err(|e| ClusterError::io("cannot duplicate a shared listener", e))?;
                tokio::net::UnixListener::from_std(copy)
                    .map_err(|e| ClusterError::io("cannot register a shared listener", e))
            })
            .collect()
    }

    /// Every shared listener, in the order of the `Cluster::listen` calls.
    ///
    /// # Errors
    /// When a descriptor cannot be duplicated or registered with tokio.
    pub fn listeners(&self) -> Result<Vec<tokio::net::TcpListener>, ClusterError> {
        self.listeners
            .iter()
            .map(|l| {
                let copy = l
                    .try_clone()
                    .map_err(|e| ClusterError::io("cannot duplicate a shared listener", e))?;
                tokio::net::TcpListener::from_std(copy)
                    .map_err(|e| ClusterError::io("cannot register a shared listener", e))
            })
            .collect()
    }

    /// Reports this worker ready. Needed only with
    /// [`Cluster::explicit_ready`](crate::Cluster::explicit_ready); otherwise the worker was
    /// reported ready when its Agent connected, and this does nothing.
    pub fn ready(&self) {
        self.ready.send();
    }

    /// Resolves when the master asks this worker to stop (graceful shutdown, a rolling reload
    /// or a recycle replacing it, or a scale-down removing it): finish what is in flight and return from the worker function.
    /// Workers still running after the grace period are killed.
    pub async fn shutdown(&self) {
        // An error means the sender is gone: the control socket closed, so stop waiting.
        let _ = self.stop.clone().wait_for(Option::is_some).await;
    }

    /// Counts one request this worker served, for
    /// [`Recycle::max_requests`](crate::Recycle::max_requests) (gunicorn's `max_requests`).
    /// `dispatch::http::serve` counts its requests itself; an application with its own server
    /// calls this once per request it answers. Cheap: one relaxed atomic add.
    pub fn count_request(&self) {
        crate::process::link::count_request();
    }

    /// Whether the master has asked this worker to stop.
    pub fn is_stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// Resolves when every process of the cluster is ready (Egg's `egg-ready`).
    pub async fn cluster_ready(&self) {
        // An error means the sender is gone: the control socket closed, so stop waiting.
        let _ = self.cluster_ready.clone().wait_for(|v| *v).await;
    }
}
