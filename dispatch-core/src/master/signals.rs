//! The signals the master acts on: SIGTERM, SIGINT and SIGQUIT stop the cluster gracefully (a
//! second one while stopping kills at once); SIGHUP starts a rolling reload; SIGUSR2 a binary
//! upgrade.
//!
//! A master run by `dispatch::testing` installs none: the handlers would outlive its test (tokio
//! never uninstalls them) and keep Ctrl-C from ending the test binary.

use crate::cluster_error::ClusterError;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks the master to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MasterSignal {
    /// Stop the cluster; the signal's name.
    Stop(&'static str),
    /// Replace every worker, one at a time.
    Reload,
    /// Replace every process, the master included, by the build on disk (SIGUSR2).
    Upgrade,
}

/// The master's signal handlers, if it installed them.
#[derive(Debug)]
pub(crate) struct MasterSignals {
    handlers: Option<Handlers>,
}

#[derive(Debug)]
struct Handlers {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    usr2: Signal,
}

impl MasterSignals {
    /// Installs the handlers, or (`enabled` false) none: then [`recv`](Self::recv) never returns.
    pub(crate) fn install(enabled: bool) -> Result<Self, ClusterError> {
        if !enabled {
            return Ok(MasterSignals { handlers: None });
        }
        let install = |kind: SignalKind| {
            signal(kind).map_err(|e| ClusterError::io("cannot install a signal handler", e))
        };
        Ok(MasterSignals {
            handlers: Some(Handlers {
                term: install(SignalKind::terminate())?,
                int: install(SignalKind::interrupt())?,
                quit: install(SignalKind::quit())?,
                hup: install(SignalKind::hangup())?,
                usr2: install(SignalKind::user_defined2())?,
            }),
        })
    }

    /// The next signal.
    pub(crate) async fn recv(&mut self) -> MasterSignal {
        let Some(h) = &mut self.handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = h.term.recv() => MasterSignal::Stop("SIGTERM"),
            _ = h.int.recv() => MasterSignal::Stop("SIGINT"),
            _ = h.quit.recv() => MasterSignal::Stop("SIGQUIT"),
            _ = h.hup.recv() => MasterSignal::Reload,
            _ = h.usr2.recv() => MasterSignal::Upgrade,
        }
    }
}
