//! The master: starts the Library, then the workers, supervises them (restarts with backoff,
//! crash-loop limit, ready deadlines, rolling reload), routes their messages, answers operators,
//! and stops everything in order. It runs no application code.
//!
//! Shaped as an actor (as watchexec's supervisor): a cheap handle ([`ClusterHandle`]) queues
//! [`Command`]s; one task owns the [`state`] and reacts in its [`event_loop`] to child events,
//! signals, commands and timers.
//!
//! - `handover`: the Library replaced without failing a call.
//! - `state`: what the master knows; `event_loop`: what it reacts to.
//! - `lifecycle`: start, ready, exit, restart; `stop`; `reload`; `scale` (workers added or
//!   removed at run time); `recycle` (a worker past a limit replaced, through `reload`).
//! - `routing`: the messenger's routes and mailboxes; `stats`: status requests.
//! - `child`: the handle on one child process (its queues bounded in bytes); `guard`: a child
//!   that writes garbage or does not read is killed; `liveness`: the watchdog (heartbeats,
//!   the runtime dir and the Library's socket); `signals`; `backoff`: crash memory.
//! - `command`: the handle and its commands; `admin_socket`: `dispatchctl`'s way in;
//!   `prometheus`: the metrics endpoint.
//! - `upgrade`: binary upgrade (a new master from the build on disk takes over).
//! - `schedules`: the schedules' clock, their dispatch to children and their records.

mod admin_socket;
mod backoff;
mod child;
mod command;
mod event_loop;
mod guard;
mod handover;
mod lifecycle;
mod liveness;
mod prometheus;
mod recycle;
mod reload;
mod routing;
mod scale;
mod schedules;
mod signals;
mod state;
mod stats;
mod stop;
mod upgrade;

pub use command::ClusterHandle;
pub(crate) use command::Command;

use crate::cluster_error::ClusterError;
use crate::process::listeners::{self, SharedListeners};
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
    let mut settings = settings;
    // The path this master was started from, read before anything can replace the binary
    // there: an upgrade starts what is at this path then.
    let exe = std::env::current_exe().ok().map(|p| {
        let s = p.to_string_lossy();
        match s.strip_suffix(" (deleted)") {
            Some(path) => std::path::PathBuf::from(path),
            None => p.clone(),
        }
    });
    // A test's master shares its process with other tests: it takes nothing from the
    // environment (and changes nothing in it).
    let alone = settings.test_child_args.is_none();
    let upgrade_link = if alone {
        listeners::upgrade_link_from_env()?
    } else {
        None
    };
    let passed = if alone {
        listeners::passed_to_master()?
    } else {
        Vec::new()
    };
    let mut link = match upgrade_link {
        Some((fd, workers)) => {
            if let Some(n) = workers {
                settings.workers = n.max(1);
            }
            Some(upgrade::NewMasterLink::connect(fd).await?)
        }
        None => None,
    };
    let result = start(settings, commands, admin, exe, passed, &mut link).await;
    if let (Err(e), Some(link)) = (&result, link.as_mut()) {
        link.failed(&e.to_string()).await;
    }
    result
}

async fn start(
    settings: Settings,
    commands: Option<mpsc::UnboundedReceiver<Command>>,
    admin: mpsc::UnboundedSender<Command>,
    exe: Option<std::path::PathBuf>,
    passed: Vec<listeners::Passed>,
    link: &mut Option<upgrade::NewMasterLink>,
) -> Result<(), ClusterError> {
    let dir = RuntimeDir::create()?;
    if let Some(addr) = &settings.metrics_addr {
        prometheus::start(addr, admin.clone())?;
    }
    if link.is_some() {
        // Until it has taken over, `dispatchctl` picks the old master of this name.
        std::fs::write(dir.path().join(crate::admin::UPGRADING_FILE), "")
            .map_err(|e| ClusterError::io("cannot mark the runtime dir as upgrading", e))?;
    }
    admin_socket::start(dir.path(), &settings.name(), admin.clone())?;
    if let Some(dir) = &settings.log_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            ClusterError::io(format!("cannot create the log dir {}", dir.display()), e)
        })?;
    }
    let listeners = SharedListeners::bind(&settings.listen, passed)?;
    let init = ChildInit {
        protocol: crate::wire::CONTROL_PROTOCOL,
        token: runtime_dir::random_hex(16)?,
        library_socket: dir.path().join("library.sock"),
        settings: settings.clone(),
        published: 0,
        members: Members::default(),
        // A new master of an upgrade: its Library holds the calls to services with handover
        // hooks until the old Library's state arrives (see `upgrade`).
        handover: link.is_some(),
    };
    let mut master = Master::new(settings, init, dir, listeners, commands, admin)?;
    master.exe = exe;
    master.new_link = link.take();
    master.taking_over = master.new_link.is_some();
    let result = master.supervise().await;
    // Not taken over yet: the caller tells the old master why.
    *link = master.new_link.take();
    match &result {
        Ok(()) => tracing::info!("cluster stopped"),
        // The final message; the caller gets the same error back.
        Err(e) => tracing::error!("cluster failed: {e}"),
    }
    result
}
