//! The signals the master acts on: SIGTERM, SIGINT and SIGQUIT stop the cluster gracefully (a
//! second one while stopping kills at once); SIGHUP starts a rolling reload.

use crate::cluster_error::ClusterError;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks the master to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MasterSignal {
    /// Stop the cluster; the signal's name.
    Stop(&'static str),
    /// Replace every worker, one at a time.
    Reload,
}

/// The master's signal handlers.
#[derive(Debug)]
pub(crate) struct MasterSignals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
}

impl MasterSignals {
    pub(crate) fn install() -> Result<Self, ClusterError> {
        let install = |kind: SignalKind| {
            signal(kind).map_err(|e| ClusterError::io("cannot install a signal handler", e))
        };
        Ok(MasterSignals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            quit: install(SignalKind::quit())?,
            hup: install(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    pub(crate) async fn recv(&mut self) -> MasterSignal {
        tokio::select! {
            _ = self.term.recv() => MasterSignal::Stop("SIGTERM"),
            _ = self.int.recv() => MasterSignal::Stop("SIGINT"),
            _ = self.quit.recv() => MasterSignal::Stop("SIGQUIT"),
            _ = self.hup.recv() => MasterSignal::Reload,
        }
    }
}
