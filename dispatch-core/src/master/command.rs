//! Requests to the running master from inside its process: a [`ClusterHandle`] queues
//! [`Command`]s, and so does the admin socket for `dispatchctl`.

use crate::admin::{ClusterStatus, Scale, ScaleError};
use tokio::sync::{mpsc, oneshot};

/// A request to the running master, from a [`ClusterHandle`] or the admin socket.
#[derive(Debug)]
pub(crate) enum Command {
    /// Rolling reload of every worker. For [`ClusterHandle::reload`] and `dispatchctl reload`.
    Reload,
    /// Library handover: a new Library replaces the running one without failing a call. For
    /// [`ClusterHandle::reload_library`] and `dispatchctl reload --library`; `reply` is answered
    /// once the new Library is ready, or with why there is no handover.
    ReloadLibrary {
        reply: Option<oneshot::Sender<Result<String, String>>>,
    },
    /// Graceful shutdown. For [`ClusterHandle::stop`] and `dispatchctl stop`.
    Stop,
    /// Binary upgrade: a new master from the build on disk takes over. For
    /// [`ClusterHandle::upgrade`] and `dispatchctl upgrade`; `reply` gets the new master's pid
    /// or why the upgrade failed.
    Upgrade {
        reply: Option<oneshot::Sender<Result<u32, String>>>,
    },
    /// The cluster's status, with per-method metrics if `methods`. For `dispatchctl status`.
    Status {
        methods: bool,
        reply: oneshot::Sender<ClusterStatus>,
    },
    /// A new number of workers. For [`ClusterHandle::scale`] and `dispatchctl scale`.
    Scale {
        change: Scale,
        reply: Option<oneshot::Sender<Result<String, ScaleError>>>,
    },
}

/// Controls a running cluster from the master process (another thread of it, for example):
/// the same as sending the master SIGHUP or SIGTERM, or `dispatchctl scale`. Obtained from
/// [`Cluster::handle`](crate::Cluster::handle) before [`Cluster::run`](crate::Cluster::run); in
/// the Library and in workers it does nothing.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl ClusterHandle {
    /// A handle that queues commands on `commands`.
    pub(crate) fn new(commands: mpsc::UnboundedSender<Command>) -> Self {
        ClusterHandle { commands }
    }

    /// Starts a rolling reload: each worker in turn is replaced by a new process, and stopped
    /// once its replacement is ready. Returns `false` if the cluster is no longer running.
    pub fn reload(&self) -> bool {
        self.commands.send(Command::Reload).is_ok()
    }

    /// Starts a binary upgrade, as SIGUSR2 does: the executable at the path the cluster was
    /// started from, as it is on disk now, is started as a new master with the listening
    /// sockets; once its Library and workers are ready, this master's processes stop gracefully
    /// and this master exits (its [`Cluster::run`](crate::Cluster::run) returns `Ok`). If the
    /// new build fails to become ready, this cluster serves on (the reason is logged).
    /// Returns `false` if the cluster is no longer running.
    pub fn upgrade(&self) -> bool {
        self.commands.send(Command::Upgrade { reply: None }).is_ok()
    }

    /// Replaces the Library without failing a call (a Library handover): a new Library starts
    /// beside the running one; once it is ready, new calls go to it while the calls in flight
    /// finish on the old one, services with [`Handover`](crate::Handover) hooks carry their
    /// state across, and the old Library runs its close hooks and exits. If the new Library
    /// cannot start, the old one keeps serving. Returns `false` if the cluster is no longer
    /// running.
    pub fn reload_library(&self) -> bool {
        self.commands
            .send(Command::ReloadLibrary { reply: None })
            .is_ok()
    }

    /// Changes the number of workers (PM2's `scale`, gunicorn's TTIN/TTOU), as
    /// `dispatchctl scale N|+K|-K` does: new workers are started; removed ones (the highest
    /// ids) are asked to stop, drain through [`Worker::shutdown`](crate::Worker::shutdown) and
    /// exit, without being restarted. A later reload keeps the new count. During a rolling
    /// reload or a recycle, the change is applied once it completes. Resolves with what was
    /// done.
    ///
    /// # Errors
    /// [`ScaleError`]: no worker left, more than
    /// [`Cluster::max_workers`](crate::Cluster::max_workers), or the cluster is starting or
    /// stopped.
    ///
    /// ```no_run
    /// # async fn f(handle: dispatch::ClusterHandle) -> Result<(), dispatch::admin::ScaleError> {
    /// use dispatch::admin::Scale;
    /// let done = handle.scale(Scale::Up(2)).await?;
    /// println!("{done}");
    /// # Ok(()) }
    /// ```
    pub async fn scale(&self, change: Scale) -> Result<String, ScaleError> {
        let stopped = || ScaleError::NotRunning {
            why: "the cluster is no longer running".into(),
        };
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Scale {
                change,
                reply: Some(reply),
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Stops the cluster gracefully. Returns `false` if it is no longer running.
    pub fn stop(&self) -> bool {
        self.commands.send(Command::Stop).is_ok()
    }
}
