//! The master: starts the Library, then the workers, supervises them (restarts with backoff,
//! crash-loop limit, ready deadlines, rolling reload), and stops everything in order. It runs no
//! application code.
//!
//! One task owns all state and reacts to four sources: child events (ready, failed, exited),
//! signals, commands from a [`ClusterHandle`](crate::ClusterHandle), and timers.

mod reload;
mod routing;
mod status;

use crate::child::{describe, ChildEvent, ChildHandle};
use crate::cluster::{ClusterConfig, Command};
use crate::cluster_error::ClusterError;
use crate::control::{ChildInit, Target, ToChild, ToMaster};
use crate::listeners::SharedListeners;
use crate::restart::{CrashWindow, SlotCrashes};
use crate::runtime_dir::{self, RuntimeDir};
use crate::signals::{MasterSignal, MasterSignals};
use crate::spawn::{spawn_child, ChildKind};
use crate::topic::events;
use nix::sys::signal::Signal;
use routing::Mailboxes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::process::ExitStatus;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The master's whole life.
pub(crate) async fn run(
    config: ClusterConfig,
    commands: Option<mpsc::UnboundedReceiver<Command>>,
    admin: mpsc::UnboundedSender<Command>,
) -> Result<(), ClusterError> {
    let dir = RuntimeDir::create()?;
    crate::admin::server::start(dir.path(), &config.name(), admin)?;
    let listeners = SharedListeners::bind(&config.listen)?;
    let init = ChildInit {
        token: runtime_dir::random_hex(16)?,
        library_socket: dir.path().join("library.sock"),
        max_frame: config.max_frame as u64,
        call_timeout_ms: millis(config.call_timeout),
        handshake_timeout_ms: millis(config.handshake_timeout),
        max_in_flight: config.max_in_flight,
        worker_ready_timeout_ms: millis(config.worker_ready_timeout),
        method_metrics: config.method_metrics,
        published: Vec::new(),
        members: crate::topic::Members::default(),
    };
    let mut master = Master::new(config, init, dir, listeners, commands)?;
    let result = master.supervise().await;
    match &result {
        Ok(()) => tracing::info!("cluster stopped"),
        Err(e) => tracing::error!("cluster failed: {e}"),
    }
    result
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a process is to its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The slot's process.
    Current,
    /// Started by a rolling reload to take over the slot once ready.
    Replacement,
    /// Replaced by a reload and stopping.
    Retiring,
}

/// A live child process.
#[derive(Debug)]
struct Proc {
    handle: ChildHandle,
    part: Part,
    started: Instant,
    ready: bool,
    /// Why it failed, as it said (or as the master decided) before it exited.
    failure: Option<String>,
    /// Killed for missing its ready deadline.
    missed_ready: bool,
}

/// A place in the cluster: the Library, or worker `i`.
#[derive(Debug, Default)]
struct Slot {
    current: Option<u32>,
    crashes: SlotCrashes,
    /// A worker that exited 0 after its work: not restarted.
    finished: bool,
    /// How often its process was restarted after a crash.
    restarts: u32,
}

/// Something the master does at a set time.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// Start the slot's process again (after its backoff).
    Restart(ChildKind),
    /// Kill `pid` unless it is ready by now.
    ReadyDeadline(u32),
    /// Kill `pid` if it is still alive (end of a retiring worker's grace period).
    Kill(u32),
    /// Answer status request `id` with what has arrived.
    StatusDeadline(u64),
}

/// A rolling reload in progress.
#[derive(Debug)]
struct Reload {
    queue: VecDeque<u32>,
    /// The worker being replaced now, and its replacement's pid.
    step: Option<(u32, u32)>,
    started: Instant,
}

/// What to do after handling one input.
enum Flow {
    Continue,
    Stop(Result<(), ClusterError>),
}

struct Master {
    config: ClusterConfig,
    init: ChildInit,
    dir: RuntimeDir,
    listeners: SharedListeners,
    procs: HashMap<u32, Proc>,
    library: Slot,
    workers: Vec<Slot>,
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    crash_window: CrashWindow,
    reload: Option<Reload>,
    mail: Mailboxes,
    statuses: HashMap<u64, status::PendingStatus>,
    status_seq: u64,
    /// When the cluster became ready; `None` while starting.
    ready_at: Option<Instant>,
    started: Instant,
    events_tx: mpsc::UnboundedSender<ChildEvent>,
    events: mpsc::UnboundedReceiver<ChildEvent>,
    signals: MasterSignals,
    commands: Option<mpsc::UnboundedReceiver<Command>>,
}

impl Master {
    fn new(
        config: ClusterConfig,
        init: ChildInit,
        dir: RuntimeDir,
        listeners: SharedListeners,
        commands: Option<mpsc::UnboundedReceiver<Command>>,
    ) -> Result<Self, ClusterError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let workers = (0..config.workers).map(|_| Slot::default()).collect();
        let mail = Mailboxes::new(config.message_queue_limit);
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
            signals: MasterSignals::install()?,
            commands,
        })
    }

    async fn supervise(&mut self) -> Result<(), ClusterError> {
        tracing::info!(
            runtime_dir = %self.dir.path().display(),
            "master starting a library and {} workers",
            self.config.workers
        );
        let result = match self.spawn(ChildKind::Library, Part::Current) {
            Ok(_) => self.event_loop().await,
            Err(e) => Err(e),
        };
        self.stop_all().await;
        result
    }

    async fn event_loop(&mut self) -> Result<(), ClusterError> {
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let flow = tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => Flow::Stop(Err(ClusterError::Protocol {
                        message: "the child event channel closed".into(),
                    })),
                },
                signal = self.signals.recv() => self.on_signal(signal),
                command = next_command(&mut self.commands) => match command {
                    Some(command) => self.on_command(command),
                    None => {
                        self.commands = None;
                        Flow::Continue
                    }
                },
                () = sleep_until(next_timer) => self.on_timers(),
            };
            if let Flow::Stop(result) = flow {
                return result;
            }
        }
    }

    // ---- inputs ---------------------------------------------------------------------------

    fn on_event(&mut self, event: ChildEvent) -> Flow {
        match event {
            ChildEvent::Message {
                pid,
                msg: ToMaster::Ready { services },
                ..
            } => self.on_ready(pid, &services),
            ChildEvent::Message {
                kind,
                pid,
                msg: ToMaster::Failed { reason },
            } => {
                tracing::error!(pid, "the {} could not start: {reason}", kind.label());
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.failure = Some(reason);
                }
                Flow::Continue
            }
            ChildEvent::Message {
                pid,
                msg: ToMaster::Send(out),
                ..
            } => {
                self.route(pid, out);
                Flow::Continue
            }
            ChildEvent::Message {
                pid,
                msg:
                    ToMaster::Stats {
                        id,
                        calls,
                        in_flight,
                        methods,
                    },
                ..
            } => {
                self.on_stats(pid, id, calls, in_flight, methods);
                Flow::Continue
            }
            ChildEvent::Exited { pid, status, .. } => {
                let flow = self.on_exit(pid, status);
                self.announce_members();
                flow
            }
        }
    }

    fn on_signal(&mut self, signal: MasterSignal) -> Flow {
        match signal {
            MasterSignal::Stop(name) if self.ready_at.is_none() => {
                tracing::info!("received {name} while starting: stopping");
                Flow::Stop(Err(ClusterError::Interrupted { signal: name }))
            }
            MasterSignal::Stop(name) => {
                tracing::info!("received {name}: stopping the cluster");
                Flow::Stop(Ok(()))
            }
            MasterSignal::Reload => {
                tracing::info!("received SIGHUP: rolling reload");
                self.start_reload();
                Flow::Continue
            }
        }
    }

    fn on_command(&mut self, command: Command) -> Flow {
        match command {
            Command::Reload => {
                tracing::info!("reload requested");
                self.start_reload();
                Flow::Continue
            }
            Command::Stop => {
                tracing::info!("stop requested: stopping the cluster");
                Flow::Stop(Ok(()))
            }
            Command::Status { methods, reply } => {
                self.start_status(methods, reply);
                Flow::Continue
            }
        }
    }

    fn on_timers(&mut self) -> Flow {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let flow = match timer {
                Timer::StatusDeadline(id) => {
                    self.finish_status(id);
                    Flow::Continue
                }
                Timer::Restart(kind) => match self.spawn_restart(kind) {
                    Ok(_) => Flow::Continue,
                    Err(e) => Flow::Stop(Err(e)),
                },
                Timer::ReadyDeadline(pid) => {
                    self.enforce_ready_deadline(pid);
                    Flow::Continue
                }
                Timer::Kill(pid) => {
                    if let Some(p) = self.procs.get(&pid) {
                        tracing::warn!(
                            pid,
                            "the {} did not stop in time: killing it",
                            p.handle.kind.label()
                        );
                        p.handle.signal(Signal::SIGKILL);
                    }
                    Flow::Continue
                }
            };
            if let Flow::Stop(_) = flow {
                return flow;
            }
        }
        Flow::Continue
    }

    // ---- readiness ------------------------------------------------------------------------

    fn on_ready(&mut self, pid: u32, services: &str) -> Flow {
        let Some(p) = self.procs.get_mut(&pid) else {
            return Flow::Continue;
        };
        if p.ready {
            return Flow::Continue;
        }
        p.ready = true;
        let (kind, part, took) = (p.handle.kind, p.part, p.started.elapsed());
        match kind {
            ChildKind::Library => {
                tracing::info!(pid, "library ready in {took:?}, hosting {services}");
                self.on_member_ready(pid, kind);
                if self.ready_at.is_none() {
                    return self.start_workers();
                }
                tracing::info!(pid, "library restarted: telling the workers to reconnect");
                self.send_to_workers(&ToChild::LibraryRestarted);
                self.emit(
                    Target::Broadcast,
                    &events::LIBRARY_RESTARTED,
                    &events::LibraryRestarted { pid },
                );
            }
            ChildKind::Worker(id) => {
                tracing::info!(pid, "worker {id} ready in {took:?}");
                if part == Part::Replacement {
                    self.replacement_ready(id, pid);
                }
                if part == Part::Current || self.is_current(kind, pid) {
                    self.on_member_ready(pid, kind);
                }
                self.emit(
                    Target::Broadcast,
                    &events::WORKER_STARTED,
                    &events::WorkerStarted { worker_id: id, pid },
                );
                if self.ready_at.is_some() {
                    self.send(pid, ToChild::ClusterReady);
                } else {
                    self.maybe_cluster_ready();
                }
            }
        }
        Flow::Continue
    }

    fn start_workers(&mut self) -> Flow {
        for id in 0..self.workers.len() {
            if let Err(e) = self.spawn(ChildKind::Worker(id as u32), Part::Current) {
                return Flow::Stop(Err(e));
            }
        }
        Flow::Continue
    }

    /// The cluster is ready once every worker is ready, or already finished its work.
    fn maybe_cluster_ready(&mut self) {
        let all = self
            .workers
            .iter()
            .all(|s| s.finished || s.current.is_some_and(|p| self.is_ready(p)));
        if self.ready_at.is_none() && all {
            self.cluster_ready();
        }
    }

    fn cluster_ready(&mut self) {
        self.ready_at = Some(Instant::now());
        for p in self.procs.values() {
            p.handle.send(ToChild::ClusterReady);
        }
        let workers = self.workers.len() as u32;
        self.emit(
            Target::Broadcast,
            &events::CLUSTER_READY,
            &events::ClusterReady { workers },
        );
        let addrs = self.listeners.addresses();
        tracing::info!(
            "cluster ready in {:?}: library and {} workers{}",
            self.started.elapsed(),
            self.workers.len(),
            if addrs.is_empty() {
                String::new()
            } else {
                format!(", listening on {}", addrs.join(", "))
            }
        );
    }

    fn enforce_ready_deadline(&mut self, pid: u32) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if p.ready {
            return;
        }
        let kind = p.handle.kind;
        let timeout = ready_timeout(&self.config, kind);
        tracing::error!(
            pid,
            "the {} did not become ready within {timeout:?}: killing it",
            kind.label()
        );
        p.missed_ready = true;
        p.failure = Some(format!("did not become ready within {timeout:?}"));
        p.handle.signal(Signal::SIGKILL);
    }

    fn is_ready(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|p| p.ready)
    }

    fn is_current(&self, kind: ChildKind, pid: u32) -> bool {
        match kind {
            ChildKind::Library => self.library.current == Some(pid),
            ChildKind::Worker(id) => self.workers[id as usize].current == Some(pid),
        }
    }

    // ---- exits ----------------------------------------------------------------------------

    fn on_exit(&mut self, pid: u32, status: ExitStatus) -> Flow {
        let Some(p) = self.procs.remove(&pid) else {
            return Flow::Continue;
        };
        let kind = p.handle.kind;
        if let (ChildKind::Worker(worker_id), true) = (kind, p.ready) {
            let status = describe(status);
            self.emit(
                Target::Broadcast,
                &events::WORKER_EXITED,
                &events::WorkerExited {
                    worker_id,
                    pid,
                    status,
                },
            );
        }
        match p.part {
            Part::Retiring => {
                tracing::info!(
                    pid,
                    "the old {} stopped ({})",
                    kind.label(),
                    describe(status)
                );
                self.advance_reload();
                Flow::Continue
            }
            Part::Replacement => {
                let how = p.failure.unwrap_or_else(|| describe(status));
                tracing::error!(
                    pid,
                    "reload aborted: the new {} {how}; the old one keeps serving",
                    kind.label()
                );
                self.reload = None;
                // If the old one died meanwhile, the slot still needs a process.
                if let ChildKind::Worker(id) = kind {
                    if self.workers[id as usize].current.is_none() {
                        return self.crashed(kind, pid, p.started, &how);
                    }
                }
                Flow::Continue
            }
            Part::Current => {
                let slot = self.slot_mut(kind);
                slot.current = None;
                if matches!(kind, ChildKind::Worker(_)) && status.success() && p.ready {
                    slot.finished = true;
                    tracing::info!(pid, "{} finished", kind.label());
                    self.maybe_cluster_ready();
                    if self.workers.iter().all(|s| s.finished) {
                        tracing::info!("every worker finished");
                        return Flow::Stop(Ok(()));
                    }
                    return Flow::Continue;
                }
                let how = describe(status);
                let how = match (&p.failure, p.ready) {
                    (Some(reason), _) => format!("{how}: {reason}"),
                    (None, false) => format!("{how} before it was ready"),
                    (None, true) => how,
                };
                tracing::error!(pid, "the {} {how}", kind.label());
                if self.ready_at.is_none() {
                    return Flow::Stop(Err(start_error(&self.config, kind, pid, &p, how)));
                }
                self.crashed(kind, pid, p.started, &how)
            }
        }
    }

    /// A running slot's process crashed: restart it after its backoff, or stop the cluster if
    /// restarts are off or this is a crash loop.
    fn crashed(&mut self, kind: ChildKind, pid: u32, started: Instant, how: &str) -> Flow {
        let policy = self.config.restart.clone();
        if !policy.enabled {
            return Flow::Stop(Err(failed(kind, pid, how.to_owned())));
        }
        if let Some(crashes) = self.crash_window.record(&policy, std::time::Instant::now()) {
            return Flow::Stop(Err(ClusterError::CrashLoop {
                crashes,
                window: policy.crash_window,
                last: format!("the {} (pid {pid}) {how}", kind.label()),
            }));
        }
        // A reload is already starting this slot's next process.
        if let (
            ChildKind::Worker(id),
            Some(Reload {
                step: Some((slot, _)),
                ..
            }),
        ) = (kind, &self.reload)
        {
            if *slot == id {
                return Flow::Continue;
            }
        }
        let wait = self
            .slot_mut(kind)
            .crashes
            .record(&policy, started.elapsed());
        tracing::info!("restarting the {} in {wait:?}", kind.label());
        self.schedule(wait, Timer::Restart(kind));
        Flow::Continue
    }

    // ---- stopping -------------------------------------------------------------------------

    /// Stops every child: workers first (told to stop, killed after the grace period), then the
    /// Library (workers may call it while draining). A second stop signal kills at once.
    async fn stop_all(&mut self) {
        self.timers.clear();
        let workers: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.handle.kind != ChildKind::Library)
            .map(|(pid, _)| *pid)
            .collect();
        self.stop(&workers).await;
        let rest: Vec<u32> = self.procs.keys().copied().collect();
        self.stop(&rest).await;
    }

    /// Asks `pids` to stop, waits up to the grace period, kills what is left and reaps it.
    async fn stop(&mut self, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            self.send(*pid, ToChild::Shutdown);
        }
        let grace = Instant::now() + self.config.grace_period;
        if let Some(name) = self.await_exits(pids, Some(grace)).await {
            tracing::warn!("received {name} while stopping: killing at once");
        }
        let left: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| self.procs.contains_key(p))
            .collect();
        for pid in &left {
            if let Some(p) = self.procs.get(pid) {
                tracing::warn!(
                    pid,
                    "the {} did not stop in time: killing it",
                    p.handle.kind.label()
                );
                p.handle.signal(Signal::SIGKILL);
            }
        }
        // SIGKILL cannot be ignored: the exits follow at once.
        let _ = self.await_exits(&left, None).await;
    }

    /// Consumes events until none of `pids` is alive or the deadline passes. With a deadline, a
    /// stop signal ends the wait early and is returned.
    async fn await_exits(
        &mut self,
        pids: &[u32],
        deadline: Option<Instant>,
    ) -> Option<&'static str> {
        while pids.iter().any(|p| self.procs.contains_key(p)) {
            let event = tokio::select! {
                event = self.events.recv() => event,
                signal = self.signals.recv(), if deadline.is_some() => match signal {
                    MasterSignal::Stop(name) => return Some(name),
                    MasterSignal::Reload => continue,
                },
                () = sleep_until(deadline) => return None,
            };
            match event {
                Some(ChildEvent::Exited { kind, pid, status }) => {
                    self.procs.remove(&pid);
                    tracing::info!(pid, "the {} stopped ({})", kind.label(), describe(status));
                }
                Some(ChildEvent::Message { .. }) => {}
                None => return None,
            }
        }
        None
    }

    // ---- helpers --------------------------------------------------------------------------

    fn spawn(&mut self, kind: ChildKind, part: Part) -> Result<u32, ClusterError> {
        let listeners = self.listeners.raw_fds();
        let spawned = spawn_child(kind, self.dir.path(), &listeners)?;
        let handle = ChildHandle::watch(kind, spawned, self.events_tx.clone());
        let pid = handle.pid;
        tracing::info!(pid, "started the {}", kind.label());
        let mut init = self.init.clone();
        init.published = self.published();
        init.members = self.members();
        handle.send(ToChild::Init(init));
        self.procs.insert(
            pid,
            Proc {
                handle,
                part,
                started: Instant::now(),
                ready: false,
                failure: None,
                missed_ready: false,
            },
        );
        if part == Part::Current {
            self.slot_mut(kind).current = Some(pid);
        }
        self.schedule(ready_timeout(&self.config, kind), Timer::ReadyDeadline(pid));
        Ok(pid)
    }

    fn spawn_restart(&mut self, kind: ChildKind) -> Result<u32, ClusterError> {
        self.slot_mut(kind).restarts += 1;
        self.spawn(kind, Part::Current)
    }

    fn schedule(&mut self, after: Duration, timer: Timer) {
        self.timer_seq += 1;
        self.timers
            .insert((Instant::now() + after, self.timer_seq), timer);
    }

    fn slot_mut(&mut self, kind: ChildKind) -> &mut Slot {
        match kind {
            ChildKind::Library => &mut self.library,
            ChildKind::Worker(id) => &mut self.workers[id as usize],
        }
    }

    fn send(&self, pid: u32, msg: ToChild) {
        if let Some(p) = self.procs.get(&pid) {
            p.handle.send(msg);
        }
    }

    fn send_to_workers(&self, msg: &ToChild) {
        for p in self.procs.values() {
            if p.handle.kind != ChildKind::Library {
                p.handle.send(msg.clone());
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_command(commands: &mut Option<mpsc::UnboundedReceiver<Command>>) -> Option<Command> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn ready_timeout(config: &ClusterConfig, kind: ChildKind) -> Duration {
    match kind {
        ChildKind::Library => config.library_ready_timeout,
        ChildKind::Worker(_) => config.worker_ready_timeout,
    }
}

/// The error of a start aborted because `kind` failed.
fn start_error(
    config: &ClusterConfig,
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

fn failed(kind: ChildKind, pid: u32, status: String) -> ClusterError {
    match kind {
        ChildKind::Library => ClusterError::LibraryExited { pid, status },
        ChildKind::Worker(worker_id) => ClusterError::WorkerFailed {
            worker_id,
            pid,
            status,
        },
    }
}
