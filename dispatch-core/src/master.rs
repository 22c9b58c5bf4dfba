//! The master: starts the Library, then the workers, supervises them, and stops everything in
//! order. It runs no application code.

use crate::child::{describe, ChildEvent, ChildHandle};
use crate::cluster::ClusterConfig;
use crate::cluster_error::ClusterError;
use crate::control::{ChildInit, ToChild, ToMaster};
use crate::runtime_dir::{self, RuntimeDir};
use crate::spawn::{spawn_child, ChildKind};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The master's whole life.
pub(crate) async fn run(config: ClusterConfig) -> Result<(), ClusterError> {
    let dir = RuntimeDir::create()?;
    let init = ChildInit {
        token: runtime_dir::random_hex(16)?,
        library_socket: dir.path().join("library.sock"),
        max_frame: config.max_frame as u64,
        call_timeout_ms: millis(config.call_timeout),
        handshake_timeout_ms: millis(config.handshake_timeout),
        max_in_flight: config.max_in_flight,
    };
    let mut master = Master::new(config, init, dir)?;
    let result = master.supervise().await;
    if let Err(e) = &result {
        tracing::error!("cluster failed: {e}");
    }
    result
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The signals that stop the cluster.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, ClusterError> {
        let install = |kind: SignalKind| {
            signal(kind).map_err(|e| ClusterError::io("cannot install a signal handler", e))
        };
        Ok(StopSignals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            quit: install(SignalKind::quit())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.quit.recv() => "SIGQUIT",
        }
    }
}

/// Where the supervisor's wait for a set of children ended.
enum Outcome {
    /// The awaited condition holds.
    Done,
    /// A stop signal arrived.
    Signal(&'static str),
}

struct Master {
    config: ClusterConfig,
    init: ChildInit,
    dir: RuntimeDir,
    children: BTreeMap<u32, ChildHandle>,
    /// Workers that exited 0.
    finished: usize,
    events_tx: mpsc::UnboundedSender<ChildEvent>,
    events: mpsc::UnboundedReceiver<ChildEvent>,
    signals: StopSignals,
}

impl Master {
    fn new(config: ClusterConfig, init: ChildInit, dir: RuntimeDir) -> Result<Self, ClusterError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        Ok(Master {
            config,
            init,
            dir,
            children: BTreeMap::new(),
            finished: 0,
            events_tx,
            events,
            signals: StopSignals::install()?,
        })
    }

    async fn supervise(&mut self) -> Result<(), ClusterError> {
        tracing::info!(
            runtime_dir = %self.dir.path().display(),
            "master starting a library and {} workers",
            self.config.workers
        );
        let started = Instant::now();
        if let Err(e) = self.start().await {
            self.stop_all().await;
            return Err(e);
        }
        for child in self.children.values() {
            child.send(ToChild::ClusterReady);
        }
        tracing::info!(
            "cluster ready in {:?}: library and {} workers",
            started.elapsed(),
            self.config.workers
        );
        let result = self.run_until_done().await;
        self.stop_all().await;
        if result.is_ok() {
            tracing::info!("cluster stopped");
        }
        result
    }

    /// The start order: the Library, ready; then every worker, ready.
    async fn start(&mut self) -> Result<(), ClusterError> {
        let library = self.spawn(ChildKind::Library)?;
        let deadline = Instant::now() + self.config.library_ready_timeout;
        if let Outcome::Signal(sig) = self.await_ready(&[library], deadline).await? {
            return Err(stopped_during_start(sig));
        }
        let mut workers = Vec::with_capacity(self.config.workers);
        for id in 0..self.config.workers {
            workers.push(self.spawn(ChildKind::Worker(id as u32))?);
        }
        let deadline = Instant::now() + self.config.worker_ready_timeout;
        if let Outcome::Signal(sig) = self.await_ready(&workers, deadline).await? {
            return Err(stopped_during_start(sig));
        }
        Ok(())
    }

    fn spawn(&mut self, kind: ChildKind) -> Result<u32, ClusterError> {
        let spawned = spawn_child(kind, self.dir.path())?;
        let handle = ChildHandle::watch(kind, spawned, self.events_tx.clone());
        let pid = handle.pid;
        tracing::info!(pid, "started the {}", kind.label());
        handle.send(ToChild::Init(self.init.clone()));
        self.children.insert(pid, handle);
        Ok(pid)
    }

    /// Waits until every child of `pids` has reported ready. A child that fails, exits or misses
    /// the deadline aborts the start.
    async fn await_ready(
        &mut self,
        pids: &[u32],
        deadline: Instant,
    ) -> Result<Outcome, ClusterError> {
        let mut waiting: Vec<u32> = pids.to_vec();
        while !waiting.is_empty() {
            let event = tokio::select! {
                event = self.events.recv() => event,
                sig = self.signals.recv() => return Ok(Outcome::Signal(sig)),
                () = tokio::time::sleep_until(deadline) => {
                    let pid = waiting[0];
                    let kind = self.children.get(&pid).map_or(ChildKind::Library, |c| c.kind);
                    return Err(not_ready(kind, pid, self.ready_timeout(kind)));
                }
            };
            let Some(event) = event else {
                return Err(ClusterError::Protocol {
                    message: "the child event channel closed".into(),
                });
            };
            match event {
                ChildEvent::Message {
                    kind,
                    pid,
                    msg: ToMaster::Ready { services },
                } => {
                    if kind == ChildKind::Library {
                        tracing::info!(pid, "library ready, hosting {services}");
                    } else {
                        tracing::info!(pid, "{} ready", kind.label());
                    }
                    if let Some(child) = self.children.get_mut(&pid) {
                        child.ready = true;
                    }
                    waiting.retain(|p| *p != pid);
                }
                ChildEvent::Message {
                    kind,
                    pid,
                    msg: ToMaster::Failed { reason },
                } => return Err(start_failed(kind, pid, reason)),
                ChildEvent::Exited { kind, pid, status } => self.on_exit(kind, pid, status)?,
            }
        }
        Ok(Outcome::Done)
    }

    fn ready_timeout(&self, kind: ChildKind) -> Duration {
        match kind {
            ChildKind::Library => self.config.library_ready_timeout,
            ChildKind::Worker(_) => self.config.worker_ready_timeout,
        }
    }

    /// Supervises the running cluster until every worker has finished (Ok), one failed (Err), or
    /// a stop signal arrived (Ok).
    async fn run_until_done(&mut self) -> Result<(), ClusterError> {
        loop {
            if self.finished == self.config.workers {
                tracing::info!("every worker finished");
                return Ok(());
            }
            let event = tokio::select! {
                event = self.events.recv() => event,
                sig = self.signals.recv() => {
                    tracing::info!("received {sig}: stopping the cluster");
                    return Ok(());
                }
            };
            let Some(event) = event else {
                return Ok(());
            };
            match event {
                ChildEvent::Message { kind, pid, msg } => {
                    tracing::debug!(pid, "{} says {msg:?}", kind.label());
                }
                ChildEvent::Exited { kind, pid, status } => self.on_exit(kind, pid, status)?,
            }
        }
    }

    /// Accounts for a child's exit: a ready worker that exited 0 has finished its work; any
    /// other exit is a failure of the cluster.
    fn on_exit(
        &mut self,
        kind: ChildKind,
        pid: u32,
        status: ExitStatus,
    ) -> Result<(), ClusterError> {
        let was_ready = self.children.remove(&pid).is_some_and(|c| c.ready);
        let how = describe(status);
        match kind {
            ChildKind::Worker(id) if status.success() && was_ready => {
                tracing::info!(pid, "worker {id} finished");
                self.finished += 1;
                Ok(())
            }
            ChildKind::Worker(worker_id) => {
                let status = if was_ready {
                    how
                } else {
                    format!("{how} before it was ready")
                };
                tracing::error!(pid, "worker {worker_id} {status}");
                Err(ClusterError::WorkerFailed {
                    worker_id,
                    pid,
                    status,
                })
            }
            ChildKind::Library => {
                tracing::error!(pid, "library {how}");
                Err(ClusterError::LibraryExited { pid, status: how })
            }
        }
    }

    /// Stops every child: workers first (told to stop, killed after the grace period), then the
    /// Library (workers may call it while draining). A second stop signal kills at once.
    async fn stop_all(&mut self) {
        let workers: Vec<u32> = self
            .children
            .values()
            .filter(|c| c.kind != ChildKind::Library)
            .map(|c| c.pid)
            .collect();
        self.stop(&workers).await;
        let rest: Vec<u32> = self.children.keys().copied().collect();
        self.stop(&rest).await;
    }

    /// Asks `pids` to stop, waits up to the grace period, kills what is left and reaps it.
    async fn stop(&mut self, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            if let Some(child) = self.children.get(pid) {
                child.send(ToChild::Shutdown);
            }
        }
        let grace = Instant::now() + self.config.grace_period;
        if let Outcome::Signal(sig) = self.await_exits(pids, Some(grace)).await {
            tracing::warn!("received {sig} while stopping: killing at once");
        }
        let left: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| self.children.contains_key(p))
            .collect();
        for pid in &left {
            if let Some(child) = self.children.get(pid) {
                tracing::warn!(
                    pid,
                    "the {} did not stop in time: killing it",
                    child.kind.label()
                );
                child.signal(Signal::SIGKILL);
            }
        }
        // SIGKILL cannot be ignored: the exits follow at once.
        let _ = self.await_exits(&left, None).await;
    }

    /// Consumes events until none of `pids` is alive, a stop signal arrives (only while a
    /// deadline is set), or the deadline passes.
    async fn await_exits(&mut self, pids: &[u32], deadline: Option<Instant>) -> Outcome {
        loop {
            if !pids.iter().any(|p| self.children.contains_key(p)) {
                return Outcome::Done;
            }
            let sleep = tokio::time::sleep_until(
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            let event = tokio::select! {
                event = self.events.recv() => event,
                sig = self.signals.recv(), if deadline.is_some() => return Outcome::Signal(sig),
                () = sleep => return Outcome::Done,
            };
            match event {
                Some(ChildEvent::Exited { kind, pid, status }) => {
                    self.children.remove(&pid);
                    if status.success() {
                        tracing::info!(pid, "{} stopped", kind.label());
                    } else {
                        tracing::info!(pid, "{} stopped: {}", kind.label(), describe(status));
                    }
                }
                Some(ChildEvent::Message { .. }) => {}
                None => return Outcome::Done,
            }
        }
    }
}

fn stopped_during_start(sig: &str) -> ClusterError {
    ClusterError::Protocol {
        message: format!("received {sig} while starting: start aborted"),
    }
}

fn not_ready(kind: ChildKind, pid: u32, timeout: Duration) -> ClusterError {
    match kind {
        ChildKind::Library => ClusterError::LibraryNotReady { timeout },
        ChildKind::Worker(worker_id) => ClusterError::WorkerNotReady {
            worker_id,
            pid,
            timeout,
        },
    }
}

fn start_failed(kind: ChildKind, pid: u32, reason: String) -> ClusterError {
    match kind {
        ChildKind::Library => ClusterError::LibraryInit { message: reason },
        ChildKind::Worker(worker_id) => ClusterError::WorkerFailed {
            worker_id,
            pid,
            status: format!("could not start: {reason}"),
        },
    }
}
