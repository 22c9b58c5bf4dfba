//! Operating a running cluster from outside, the operator's side: the requests, the replies,
//! and how to find a running cluster. The master serves the requests (status, reload, scale, stop) on
//! `admin.sock` in its private runtime dir, to processes of the same user only. The
//! `dispatchctl` tool is a client of this module.
//!
//! ```no_run
//! # async fn f() -> Result<(), dispatch::admin::AdminError> {
//! use dispatch::admin::{discover, Request, Response};
//! let cluster = discover()?.select(None)?;
//! if let Response::Status(status) = cluster.request(Request::Status { methods: false }).await? {
//!     println!("{} runs {} processes", status.name, status.processes.len());
//! }
//! # Ok(()) }
//! ```

mod discover;
mod scale;
mod status;

pub use discover::{discover, Discovered, Found};
pub use scale::{Scale, ScaleError};
pub use status::{ClusterStatus, LastRun, ProcessStatus, ScheduleStatus, SingletonStatus};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The socket's file name in the runtime dir.
pub(crate) const SOCKET: &str = "admin.sock";
/// The largest admin message (a status with many methods fits easily).
pub(crate) const MAX_ADMIN_FRAME: usize = 4 << 20;
/// The file holding the cluster's name, next to the socket.
pub(crate) const NAME_FILE: &str = "name";
/// Present in the runtime dir of a master started by an upgrade until it has taken over.
pub(crate) const UPGRADING_FILE: &str = "upgrading";
/// Present in the runtime dir of a master that handed over to a new one and is stopping.
pub(crate) const RETIRING_FILE: &str = "retiring";

/// A request to a master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Every process's state; with `methods`, the Library's per-method metrics too.
    Status {
        /// Include per-method metrics.
        methods: bool,
    },
    /// Start a rolling reload.
    Reload,
    /// Replace the Library without failing a call (a Library handover). Answered once the new
    /// Library is ready ([`Response::Done`]), or with why there is no handover
    /// ([`Response::Refused`]: the new Library failed its init, one is already running...).
    ReloadLibrary,
    /// Stop the cluster gracefully.
    Stop,
    /// Replace every process, the master included, by the build now on disk at the path the
    /// cluster was started from; answered when the new master has taken over
    /// ([`Response::Done`], naming its pid) or the upgrade failed and the old cluster serves
    /// on ([`Response::Refused`], with why).
    Upgrade,
    /// Change the number of workers (`dispatchctl scale N|+K|-K`): new workers are started,
    /// removed ones (the highest ids) stop gracefully. During a rolling reload it is applied
    /// when the reload completes.
    Scale(Scale),
}

/// A master's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The cluster's status.
    Status(ClusterStatus),
    /// Done, with what was done.
    Done(String),
    /// Refused, with why.
    Refused(String),
}

/// Why a request to a cluster failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No cluster of this user is running.
    #[error("no cluster is running for this user (looked in {looked_in})")]
    NoCluster {
        /// The directories searched.
        looked_in: String,
    },
    /// None of the running clusters has this name or master pid.
    #[error("no cluster named or with master pid `{wanted}`; running: {running}")]
    NotFound {
        /// What was asked for.
        wanted: String,
        /// The clusters found.
        running: String,
    },
    /// Several clusters run and none was chosen.
    #[error("{count} clusters are running ({running}): choose one with --cluster NAME|PID")]
    Ambiguous {
        /// How many.
        count: usize,
        /// Their names and pids.
        running: String,
    },
    /// Several clusters of this user have the name asked for: acting on one of them could hit
    /// the wrong one.
    #[error(
        "{count} clusters are named `{name}` ({running}): choose one by its master pid with \
         --cluster PID"
    )]
    AmbiguousName {
        /// The name asked for.
        name: String,
        /// How many clusters have it.
        count: usize,
        /// Their names and pids.
        running: String,
    },
    /// The cluster belongs to another user.
    #[error("permission denied: the cluster in {dir} belongs to uid {owner}, you are uid {you}")]
    PermissionDenied {
        /// Its runtime dir.
        dir: String,
        /// The owner's uid.
        owner: u32,
        /// This process's uid.
        you: u32,
    },
    /// The master did not answer properly.
    #[error("the master (pid {pid}) {problem}")]
    Master {
        /// The master's pid.
        pid: u32,
        /// What went wrong.
        problem: String,
    },
}
