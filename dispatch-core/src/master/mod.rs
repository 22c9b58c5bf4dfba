//! The master: starts the Library, then the workers, supervises them (restarts with backoff,
//! crash-loop limit, ready deadlines, rolling reload), routes their messages, answers operators,
//! and stops everything in order. It runs no application code.
//!
//! Shaped as an actor (as watchexec's supervisor): a cheap handle ([`ClusterHandle`]) queues
//! [`Command`]s; one task owns the [`state`] and reacts in its [`event_loop`] to child events,
//! signals, commands and timers.
//!
//! - `state`: what the master knows; `event_loop`: what it reacts to.
//! - `lifecycle`: start, ready, exit, restart; `stop`; `reload`.
//! - `routing`: the messenger's routes and mailboxes; `stats`: status requests.
//! - `child`: the handle on one child process (its queues bounded in bytes); `guard`: a child
//!   that writes garbage or does not read is killed; `liveness`: the watchdog (heartbeats,
//!   the runtime dir and the Library's socket); `signals`; `backoff`: crash memory.
//! - `command`: the handle and its commands; `admin_socket`: `dispatchctl`'s way in;
//!   `prometheus`: the metrics endpoint.
//! - `schedules`: the schedules' clock, their dispatch to children and their records.

mod admin_socket;
mod backoff;
mod child;
mod command;
mod event_loop;
mod guard;
mod lifecycle;
mod liveness;
mod prometheus;
mod reload;
mod routing;
mod schedules;
mod signals;
mod state;
mod stats;
mod stop;

pub use command::ClusterHandle;
pub(crate) use command::Command;

use crate::cluster_error::ClusterError;
use crate::process::listeners::SharedListeners;
use crate::process::runtime_dir::{self, RuntimeDir};
use crate::settings::Settings;
use crate::topic::Members;
use crate::wire::ChildInit;
use state::Master;
use tokio::sync::mpsc;

/// The master's whole life.
pub(crate) async fn run(
    settings: Settings,
    commands: Option<mpsc::UnboundedReceiver<Command>>,
    admin: mpsc::UnboundedSender<Command>,
) -> Result<(), ClusterError> {
    let dir = RuntimeDir::create()?;
    if let Some(addr) = &settings.metrics_addr {
        prometheus::start(addr, admin.clone())?;
    }
    admin_socket::start(dir.path(), &settings.name(), admin.clone())?;
    if let Some(dir) = &settings.log_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            ClusterError::io(format!("cannot create the log dir {}", dir.display()), e)
        })?;
    }
    let listeners = SharedListeners::bind(&settings.listen)?;
    let init = ChildInit {
        token: runtime_dir::random_hex(16)?,
        library_socket: dir.path().join("library.sock"),
        settings: settings.clone(),
        published: 0,
        members: Members::default(),
    };
    let mut master = Master::new(settings, init, dir, listeners, commands, admin)?;
    let result = master.supervise().await;
    match &result {
        Ok(()) => tracing::info!("cluster stopped"),
        // The final message; the caller gets the same error back.
        Err(e) => tracing::error!("cluster failed: {e}"),
    }
    result
}
