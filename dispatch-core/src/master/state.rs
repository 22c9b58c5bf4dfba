//! The master's state: every live process, every slot (the Library, worker `i`), the timers,
//! a reload in progress, and the channels it listens on. One task owns it.

use super::backoff::{CrashWindow, SlotCrashes};
use super::child::{ChildEvent, ChildHandle, KillReason};
use super::command::Command;
use super::recycle::Recycling;
use super::routing::Mailboxes;
use super::signals::MasterSignals;
use super::stats::PendingStatus;
use super::upgrade::{NewMasterLink, Upgrade, UpgradeEvent};
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
    /// Replaced by a reload (or a recycle) and stopping.
    Retiring,
    /// Its slot was removed by a scale-down: stopping, not restarted.
    Removed,
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
    /// Added to `Recycle::max_requests` and `max_calls` for this process (its jitter).
    pub(super) jitter: u64,
    /// The kernel's count of out-of-memory kills when it started (`process::oom`).
    pub(super) oom_kills_at_start: Option<u64>,
}

impl Proc {
    /// How it ended, in words: the master's kill and its reason, or who else killed it.
    pub(super) fn how(&self, status: std::process::ExitStatus) -> String {
        super::child::describe_kill(status, self.killed, self.oom_kills_at_start)
    }
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
    /// The Library's last handover (why, how long), for `dispatchctl status`.
    pub(super) last_handover: Option<String>,
    /// How often its process was recycled.
    pub(super) recycles: u32,
    /// Why its process was last recycled, for `dispatchctl status`.
    pub(super) last_recycle: Option<String>,
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
    /// Tell systemd's watchdog this master is alive; comes back every half watchdog interval.
    Watchdog(Duration),
    /// The current step of Library handover `generation` is late (see `handover`).
    Handover(u64),
    /// Check the Library against its recycling limits; comes back every second.
    LibraryRecycle,
    /// Look for a worker to recycle (see `recycle`); comes back every 250 ms.
    Recycle,
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
    /// A recycle of one worker (not a reload requested by an operator).
    pub(super) recycle: bool,
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
    /// A Library handover in progress.
    pub(super) library_handover: Option<super::handover::LibraryHandover>,
    /// The number of the last Library handover (its socket is `library-<n>.sock`).
    pub(super) library_generation: u64,
    /// No recycling of the Library before then (just tried).
    pub(super) recycle_after: Option<Instant>,
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
    /// The path this master was started from: an upgrade runs the build there now.
    pub(super) exe: Option<std::path::PathBuf>,
    /// An upgrade in progress (this master being replaced).
    pub(super) upgrade: Option<Upgrade>,
    pub(super) upgrade_tx: mpsc::UnboundedSender<UpgradeEvent>,
    pub(super) upgrade_rx: mpsc::UnboundedReceiver<UpgradeEvent>,
    /// Handed over to a new master: stopping without telling systemd.
    pub(super) retiring: bool,
    /// This master was started by an upgrade and has not taken over yet.
    pub(super) new_link: Option<NewMasterLink>,
    /// Started by an upgrade, and the old master has not said `go` yet: the old one still
    /// runs the schedules' ticks.
    pub(super) taking_over: bool,
    /// After `go`, in the old master: where the Library's snapshots go once the workers
    /// drained.
    pub(super) state_for_new_master:
        Option<tokio::sync::oneshot::Sender<Option<super::upgrade::Inherited>>>,
    /// A scale asked for during a reload or a recycle: the worker count to apply after it.
    pub(super) pending_scale: Option<u32>,
    /// When an old worker was last told to stop by a reload or a recycle, and the jitter draws.
    pub(super) recycling: Recycling,
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
        let (upgrade_tx, upgrade_rx) = mpsc::unbounded_channel();
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
            library_handover: None,
            library_generation: 0,
            recycle_after: None,
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
            exe: None,
            upgrade: None,
            upgrade_tx,
            upgrade_rx,
            retiring: false,
            new_link: None,
            taking_over: false,
            state_for_new_master: None,
            pending_scale: None,
            recycling: Recycling::new(),
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
        let jitter = self.draw_jitter(kind);
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
                jitter,
                oom_kills_at_start: crate::process::oom::kills(),
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

    /// Worker slot `id`, if the cluster has it (a scale-down removes slots).
    pub(super) fn worker_slot(&self, id: u32) -> Option<&Slot> {
        self.workers.get(id as usize)
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
