//! The master's state: every live process, every slot (the Library, worker `i`), the timers,
//! a reload in progress, and the channels it listens on. One task owns it.

use super::backoff::{CrashWindow, SlotCrashes};
use super::child::{ChildEvent, ChildHandle, KillReason};
use super::command::Command;
use super::routing::Mailboxes;
use super::signals::MasterSignals;
use super::stats::PendingStatus;
use crate::cluster_error::ClusterError;
use crate::process::listeners::SharedListeners;
use crate::process::runtime_dir::RuntimeDir;
use crate::process::{spawn_child, ChildKind};
use crate::settings::Settings;
use crate::wire::{ChildInit, ToChild};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a process is to its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// The slot's process.
    Current,
    /// Started by a rolling reload to take over the slot once ready.
    Replacement,
    /// Replaced by a reload and stopping.
    Retiring,
}

/// A live child process.
#[derive(Debug)]
pub(super) struct Proc {
    pub(super) handle: ChildHandle,
    pub(super) part: Part,
    pub(super) started: Instant,
    pub(super) ready: bool,
    /// Why it failed, as it said (or as the master decided) before it exited.
    pub(super) failure: Option<String>,
    /// Killed for missing its ready deadline.
    pub(super) missed_ready: bool,
    /// Why the master killed it, if it did (its exit is then logged as the master's doing).
    pub(super) killed: Option<KillReason>,
    /// Silent past the liveness timeout (and being killed).
    pub(super) unresponsive: bool,
    /// Asked to stop so that it starts again (the Library, to bind its removed socket).
    pub(super) rebind: bool,
    /// Killed for writing garbage on its control socket, or for leaving its queue full.
    pub(super) broken: bool,
    /// Since when its outgoing queue has been full (see `watch_queues`).
    pub(super) full_since: Option<Instant>,
}

/// A place in the cluster: the Library, or worker `i`.
#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) current: Option<u32>,
    pub(super) crashes: SlotCrashes,
    /// A worker that exited 0 after its work: not restarted.
    pub(super) finished: bool,
    /// How often its process was restarted after a crash.
    pub(super) restarts: u32,
    /// How its last process that failed ended, for `dispatchctl status`.
    pub(super) last_failure: Option<String>,
}

/// Something the master does at a set time.
#[derive(Debug, Clone, Copy)]
pub(super) enum Timer {
    /// Start the slot's process again (after its backoff).
    Restart(ChildKind),
    /// Kill `pid` unless it is ready by now.
    ReadyDeadline(u32),
    /// Kill `pid` if it is still alive (end of a retiring worker's grace period).
    Kill(u32),
    /// Answer status request `id` with what has arrived.
    StatusDeadline(u64),
    /// Check every child's heartbeat (and the runtime dir); comes back every heartbeat interval.
    Liveness,
    /// Look for children whose queues stayed full too long (see `watch_queues`).
    QueueWatch,
    /// Schedule `index`'s tick `tick` is due (issue 17).
    ScheduleTick { index: usize, tick: u64 },
}

/// A rolling reload in progress.
#[derive(Debug)]
pub(super) struct Reload {
    pub(super) queue: VecDeque<u32>,
    /// The worker being replaced now, and its replacement's pid.
    pub(super) step: Option<(u32, u32)>,
    pub(super) started: Instant,
}

/// What to do after handling one input.
pub(super) enum Flow {
    Continue,
    Stop(Result<(), ClusterError>),
}

pub(super) struct Master {
    pub(super) config: Settings,
    pub(super) init: ChildInit,
    pub(super) dir: RuntimeDir,
    pub(super) listeners: SharedListeners,
    pub(super) procs: HashMap<u32, Proc>,
    pub(super) library: Slot,
    pub(super) workers: Vec<Slot>,
    pub(super) timers: BTreeMap<(Instant, u64), Timer>,
    pub(super) timer_seq: u64,
    pub(super) crash_window: CrashWindow,
    pub(super) reload: Option<Reload>,
    pub(super) mail: Mailboxes,
    pub(super) statuses: HashMap<u64, PendingStatus>,
    pub(super) status_seq: u64,
    /// When the cluster became ready; `None` while starting.
    pub(super) ready_at: Option<Instant>,
    pub(super) started: Instant,
    pub(super) events_tx: mpsc::UnboundedSender<ChildEvent>,
    pub(super) events: mpsc::UnboundedReceiver<ChildEvent>,
    pub(super) signals: MasterSignals,
    pub(super) commands: Option<mpsc::UnboundedReceiver<Command>>,
    /// Where the admin socket sends its requests (to bind it again in a recreated runtime dir).
    pub(super) admin: mpsc::UnboundedSender<Command>,
    /// The schedules' clocks, runs and counters (issue 17).
    pub(super) schedules: super::schedules::Schedules,
}

impl Master {
    pub(super) fn new(
        config: Settings,
        init: ChildInit,
        dir: RuntimeDir,
        listeners: SharedListeners,
        commands: Option<mpsc::UnboundedReceiver<Command>>,
        admin: mpsc::UnboundedSender<Command>,
    ) -> Result<Self, ClusterError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let workers = (0..config.workers).map(|_| Slot::default()).collect();
        let mail = Mailboxes::new(config.message_queue_limit, config.child_queue_bytes);
        // A test's master leaves the signals to the test harness: tokio's handlers are never
        // uninstalled, and Ctrl-C must still end `cargo test`.
        let signals = MasterSignals::install(config.test_child_args.is_none())?;
        let schedules = super::schedules::Schedules::new(
            &config.schedules,
            config.fleet.as_ref(),
            &config.name(),
        );
        Ok(Master {
            config,
            init,
            dir,
            listeners,
            procs: HashMap::new(),
            library: Slot::default(),
            workers,
            timers: BTreeMap::new(),
            timer_seq: 0,
            crash_window: CrashWindow::default(),
            reload: None,
            mail,
            statuses: HashMap::new(),
            status_seq: 0,
            ready_at: None,
            started: Instant::now(),
            events_tx,
            events,
            signals,
            commands,
            admin,
            schedules,
        })
    }

    pub(super) fn spawn(&mut self, kind: ChildKind, part: Part) -> Result<u32, ClusterError> {
        // A child started into a missing runtime dir could never work (the Library cannot
        // bind its socket, a worker cannot reach it).
        self.ensure_runtime_dir()?;
        let listeners = self.listeners.raw_fds();
        let args = self.config.test_child_args.as_deref();
        let log_file = self.config.log_dir.as_ref().map(|dir| {
            dir.join(match kind {
                ChildKind::Library => "library.log".to_owned(),
                ChildKind::Worker(id) => format!("worker-{id}.log"),
            })
        });
        let spawned = spawn_child(kind, self.dir.path(), &listeners, args, log_file.as_deref())?;
        let budget = self.config.child_queue_bytes;
        let handle = ChildHandle::watch(kind, spawned, budget, self.events_tx.clone());
        let pid = handle.pid;
        tracing::info!(pid, "started the {}", kind.label());
        let mut init = self.init.clone();
        let published = self.published();
        init.published = u32::try_from(published.len()).unwrap_or(u32::MAX);
        init.members = self.members();
        // The published values follow the init message one by one: each fits a frame (it was
        // accepted under the message limit), whatever their number and total.
        let _ = handle.send(ToChild::Init(Box::new(init)));
        for value in published.into_iter().take(u32::MAX as usize) {
            let _ = handle.send(ToChild::Deliver(value));
        }
        self.procs.insert(
            pid,
            Proc {
                handle,
                part,
                started: Instant::now(),
                ready: false,
                failure: None,
                missed_ready: false,
                killed: None,
                unresponsive: false,
                rebind: false,
                broken: false,
                full_since: None,
            },
        );
        if part == Part::Current {
            self.slot_mut(kind).current = Some(pid);
        }
        self.schedule(ready_timeout(&self.config, kind), Timer::ReadyDeadline(pid));
        Ok(pid)
    }

    pub(super) fn spawn_restart(&mut self, kind: ChildKind) -> Result<u32, ClusterError> {
        self.slot_mut(kind).restarts += 1;
        self.spawn(kind, Part::Current)
    }

    pub(super) fn schedule(&mut self, after: Duration, timer: Timer) {
        self.timer_seq += 1;
        self.timers
            .insert((Instant::now() + after, self.timer_seq), timer);
    }

    pub(super) fn slot_mut(&mut self, kind: ChildKind) -> &mut Slot {
        match kind {
            ChildKind::Library => &mut self.library,
            ChildKind::Worker(id) => &mut self.workers[id as usize],
        }
    }

    /// Kills `pid` with SIGKILL, remembering that the master did it, and why.
    pub(super) fn kill(&mut self, pid: u32, why: KillReason) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.killed.get_or_insert(why);
            p.handle.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Recreates the runtime dir if it is gone (a temp cleaner), with the admin socket in it;
    /// fails if something else now stands at its path.
    pub(super) fn ensure_runtime_dir(&mut self) -> Result<(), ClusterError> {
        if self.dir.ensure()? {
            tracing::warn!(
                runtime_dir = %self.dir.path().display(),
                "the runtime dir was removed (by a temp cleaner?): created it again"
            );
            super::admin_socket::start(self.dir.path(), &self.config.name(), self.admin.clone())?;
        }
        Ok(())
    }

    /// Queues a control message for `pid`. Control messages are always queued (a queue left
    /// past its budget is watched by `watch_queues`).
    pub(super) fn send(&self, pid: u32, msg: ToChild) {
        if let Some(p) = self.procs.get(&pid) {
            let _ = p.handle.send(msg);
        }
    }

    pub(super) fn send_to_workers(&self, msg: &ToChild) {
        for p in self.procs.values() {
            if p.handle.kind != ChildKind::Library {
                let _ = p.handle.send(msg.clone());
            }
        }
    }
}

pub(super) fn ready_timeout(config: &Settings, kind: ChildKind) -> Duration {
    match kind {
        ChildKind::Library => config.library_ready_timeout,
        ChildKind::Worker(_) => config.worker_ready_timeout,
    }
}

/// The error of a start aborted because `kind` failed.
pub(super) fn start_error(
    config: &Settings,
    kind: ChildKind,
    pid: u32,
    p: &Proc,
    how: String,
) -> ClusterError {
    match (kind, p.missed_ready, &p.failure) {
        (ChildKind::Library, true, _) => ClusterError::LibraryNotReady {
            timeout: config.library_ready_timeout,
        },
        (ChildKind::Worker(worker_id), true, _) => ClusterError::WorkerNotReady {
            worker_id,
            pid,
            timeout: config.worker_ready_timeout,
        },
        (ChildKind::Library, false, Some(reason)) => ClusterError::LibraryInit {
            message: reason.clone(),
        },
        _ => failed(kind, pid, how),
    }
}

pub(super) fn failed(kind: ChildKind, pid: u32, status: String) -> ClusterError {
    match kind {
        ChildKind::Library => ClusterError::LibraryExited { pid, status },
        ChildKind::Worker(worker_id) => ClusterError::WorkerFailed {
            worker_id,
            pid,
            status,
        },
    }
}
