//! Library handover: the Library is replaced without failing a call. A new Library starts
//! beside the old one on a socket of its own (`library-<generation>.sock`); once it is ready,
//! every worker moves its new calls there while its calls in flight finish on the old one
//! ([`ToChild::LibraryMoved`] → [`ToMaster::LibrarySwitched`]); then the old Library takes its
//! services' snapshots ([`ToChild::Snapshot`]), the new one restores them and admits the
//! calls it held ([`ToChild::Restore`] → [`ToMaster::Restored`]), and the old one stops (close
//! hooks, then killed if still there after the grace period).
//!
//! A new Library that fails to become ready aborts the handover: the old one keeps serving,
//! and the command is answered with the reason. An old Library that dies meanwhile leaves the
//! new one to start from fresh state. Each step has a deadline, so a worker that does not
//! answer cannot stall the handover.

use super::state::{Flow, Master, Part, Timer};
use crate::process::ChildKind;
use crate::wire::ToChild;
use serde_bytes::ByteBuf;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Where a handover is.
#[derive(Debug)]
pub(super) enum Phase {
    /// The new Library is starting.
    Starting,
    /// The workers (these pids) are moving their calls to the new Library.
    Switching(HashSet<u32>),
    /// The old Library takes its snapshots.
    Snapshotting,
    /// The new Library restores them.
    Restoring,
}

/// A Library handover in progress.
#[derive(Debug)]
pub(super) struct LibraryHandover {
    pub(super) generation: u64,
    pub(super) reason: String,
    pub(super) old: u32,
    pub(super) new: u32,
    /// The new Library's socket: the slot's, and given to workers started from then on, once
    /// it is ready.
    pub(super) new_path: PathBuf,
    pub(super) phase: Phase,
    pub(super) started: Instant,
    /// When the current step's deadline passes.
    pub(super) deadline: Instant,
    /// Answered once the new Library is ready (or failed).
    pub(super) reply: Option<oneshot::Sender<Result<String, String>>>,
}

/// How long each step after the new Library is ready may take before the master goes on
/// without it: the workers' calls in flight on the old Library must finish (their deadlines
/// bound them), then the snapshots and the restore.
fn step_deadline(master: &Master) -> Duration {
    master
        .config
        .call_timeout
        .max(master.config.grace_period)
        .saturating_add(Duration::from_secs(5))
}

impl Master {
    /// Starts a handover of the Library, for `reason`; `reply` is answered once the new Library
    /// is ready, or with why there is no handover.
    pub(super) fn start_library_handover(
        &mut self,
        reason: String,
        reply: Option<oneshot::Sender<Result<String, String>>>,
    ) {
        let mut reply = reply;
        let mut refuse = |why: String| {
            tracing::warn!("library handover ({reason}) refused: {why}");
            if let Some(reply) = reply.take() {
                let _ = reply.send(Err(why));
            }
        };
        if self.ready_at.is_none() {
            return refuse("the cluster is still starting".into());
        }
        if self.upgrade.is_some() {
            return refuse(
                "an upgrade is in progress: the new build brings its own Library".into(),
            );
        }
        if let Some(h) = &self.library_handover {
            return refuse(format!(
                "library handover {} is already in progress",
                h.generation
            ));
        }
        let Some(old) = self.library.current.filter(|pid| self.is_ready(*pid)) else {
            return refuse("the library is not running now (it is being restarted)".into());
        };
        self.library_generation += 1;
        let generation = self.library_generation;
        let new_path = self.dir.path().join(format!("library-{generation}.sock"));
        // Only the new Library is told the new socket now; workers started before it is ready
        // connect to the old one, and move with the others.
        let old_path = std::mem::replace(&mut self.init.library_socket, new_path.clone());
        self.init.handover = true;
        let spawned = self.spawn(ChildKind::Library, Part::Replacement);
        self.init.handover = false;
        self.init.library_socket = old_path;
        let new = match spawned {
            Ok(new) => new,
            Err(e) => return refuse(format!("cannot start a new library: {e}")),
        };
        tracing::info!(
            "library handover {generation} ({reason}): starting a new library (pid {new}) beside \
             pid {old}"
        );
        self.library_handover = Some(LibraryHandover {
            generation,
            reason,
            old,
            new,
            new_path,
            phase: Phase::Starting,
            started: Instant::now(),
            deadline: Instant::now(),
            reply,
        });
    }

    /// Sets the current step's deadline.
    fn arm_handover_deadline(&mut self, generation: u64) {
        let after = step_deadline(self);
        if let Some(h) = self.library_handover.as_mut() {
            h.deadline = Instant::now() + after;
        }
        self.schedule(after, Timer::Handover(generation));
    }

    /// The handover's new Library is ready: it takes the slot, and the workers move to it.
    pub(super) fn handover_library_ready(&mut self, new: u32) {
        let Some(h) = self.library_handover.as_mut() else {
            return;
        };
        if h.new != new || !matches!(h.phase, Phase::Starting) {
            return;
        }
        let (old, generation) = (h.old, h.generation);
        let workers: HashSet<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.handle.kind != ChildKind::Library)
            .map(|(pid, _)| *pid)
            .collect();
        let path = h.new_path.clone();
        self.init.library_socket = path.clone();
        tracing::info!(
            "library handover {generation}: the new library (pid {new}) is ready after {:?}; \
             moving {} workers to it",
            h.started.elapsed(),
            workers.len()
        );
        if let Some(reply) = h.reply.take() {
            let _ = reply.send(Ok(format!(
                "library handover {generation}: new library pid {new} ready, replacing pid {old}"
            )));
        }
        h.phase = Phase::Switching(workers.clone());
        if let Some(p) = self.procs.get_mut(&new) {
            p.part = Part::Current;
        }
        if let Some(p) = self.procs.get_mut(&old) {
            p.part = Part::Retiring;
        }
        self.library.current = Some(new);
        for pid in &workers {
            self.send(
                *pid,
                ToChild::LibraryMoved {
                    path: path.clone(),
                    generation,
                },
            );
        }
        self.on_member_ready(new, ChildKind::Library);
        self.arm_handover_deadline(generation);
        if workers.is_empty() {
            self.take_snapshots();
        }
    }

    /// Worker `pid` moved (or is gone): the snapshots follow once every worker did.
    pub(super) fn handover_worker_done(&mut self, pid: u32, generation: Option<u64>) {
        let Some(h) = self.library_handover.as_mut() else {
            return;
        };
        if generation.is_some_and(|g| g != h.generation) {
            return;
        }
        let Phase::Switching(pending) = &mut h.phase else {
            return;
        };
        if pending.remove(&pid) && pending.is_empty() {
            tracing::info!(
                "library handover {}: every worker moved, {:?} after the start",
                h.generation,
                h.started.elapsed()
            );
            self.take_snapshots();
        }
    }

    /// Asks the old Library for its snapshots (none if it is gone).
    fn take_snapshots(&mut self) {
        let Some(h) = self.library_handover.as_mut() else {
            return;
        };
        let (old, generation) = (h.old, h.generation);
        if !self.procs.contains_key(&old) {
            self.restore(None);
            return;
        }
        h.phase = Phase::Snapshotting;
        self.send(old, ToChild::Snapshot);
        self.arm_handover_deadline(generation);
    }

    /// The old Library's snapshots arrived.
    pub(super) fn handover_snapshot(
        &mut self,
        pid: u32,
        state: Result<Vec<(String, ByteBuf)>, String>,
    ) {
        let Some(h) = &self.library_handover else {
            return;
        };
        if h.old != pid || !matches!(h.phase, Phase::Snapshotting) {
            return;
        }
        let state = match state {
            Ok(state) => Some(state),
            Err(e) => {
                tracing::error!(
                    "library handover {}: the old library has no snapshot ({e}): the new one \
                     serves from its fresh state",
                    h.generation
                );
                None
            }
        };
        self.restore(state);
    }

    fn restore(&mut self, state: Option<Vec<(String, ByteBuf)>>) {
        let Some(h) = self.library_handover.as_mut() else {
            return;
        };
        h.phase = Phase::Restoring;
        let (new, generation) = (h.new, h.generation);
        self.send(new, ToChild::Restore { state });
        self.arm_handover_deadline(generation);
    }

    /// The new Library restored its services: the old one stops, the handover is complete.
    pub(super) fn handover_restored(&mut self, pid: u32) {
        if !self
            .library_handover
            .as_ref()
            .is_some_and(|h| h.new == pid && matches!(h.phase, Phase::Restoring))
        {
            return;
        }
        self.finish_handover("complete");
    }

    /// Ends the handover: the old Library (if still there) is asked to stop, and killed after
    /// the grace period.
    fn finish_handover(&mut self, how: &str) {
        let Some(h) = self.library_handover.take() else {
            return;
        };
        tracing::info!(
            "library handover {} ({}) {how} in {:?}: pid {} serves, pid {} stops",
            h.generation,
            h.reason,
            h.started.elapsed(),
            h.new,
            h.old
        );
        self.library.last_handover = Some(format!(
            "handover {} ({}) {how} in {} ms, replacing pid {}",
            h.generation,
            h.reason,
            h.started.elapsed().as_millis(),
            h.old
        ));
        if self.procs.contains_key(&h.old) {
            self.send(h.old, ToChild::Shutdown);
            self.schedule(self.config.grace_period, Timer::Kill(h.old));
        }
    }

    /// A step's deadline passed: go on without what did not come.
    pub(super) fn handover_deadline(&mut self, generation: u64) {
        let Some(h) = &self.library_handover else {
            return;
        };
        if h.generation != generation {
            return;
        }
        // Each step schedules its own deadline: only the current step's may act.
        if Instant::now() < h.deadline {
            return;
        }
        match &h.phase {
            Phase::Starting => {}
            Phase::Switching(pending) => {
                tracing::warn!(
                    "library handover {generation}: workers {pending:?} did not finish their \
                     calls on the old library in time; going on without them"
                );
                self.take_snapshots();
            }
            Phase::Snapshotting => {
                tracing::error!(
                    "library handover {generation}: the old library sent no snapshot in time: \
                     the new one serves from its fresh state"
                );
                self.restore(None);
            }
            Phase::Restoring => {
                tracing::error!(
                    "library handover {generation}: the new library did not report its restore \
                     in time"
                );
                self.finish_handover("ended without a restore report");
            }
        }
    }

    /// A process of the handover exited; `Some` when this module handled the exit.
    pub(super) fn handover_exit(
        &mut self,
        pid: u32,
        kind: ChildKind,
        part: Part,
        how: &str,
    ) -> Option<Flow> {
        if let ChildKind::Worker(_) = kind {
            self.handover_worker_done(pid, None);
            return None;
        }
        let h = self.library_handover.as_ref()?;
        if pid == h.new && part == Part::Replacement {
            let h = self.library_handover.take()?;
            let why = format!("the new library (pid {pid}) {how}");
            tracing::error!(
                "library handover {} aborted: {why}; the old one (pid {}) keeps serving",
                h.generation,
                h.old
            );
            let _ = std::fs::remove_file(&h.new_path);
            self.library.last_handover = Some(format!(
                "handover {} ({}) aborted after {} ms: {why}",
                h.generation,
                h.reason,
                h.started.elapsed().as_millis()
            ));
            if let Some(reply) = h.reply {
                let _ = reply.send(Err(why.clone()));
            }
            if self.library.current.is_none() {
                // The old one died meanwhile: the slot needs a process.
                return Some(self.crashed(kind, pid, Instant::now(), &why));
            }
            return Some(Flow::Continue);
        }
        if pid == h.old && part == Part::Current {
            // Before the new Library is ready: it takes the slot once it is, and the workers
            // (disconnected meanwhile, their calls waiting) move to it.
            tracing::error!(
                "library handover {}: the old library {how} before the new one was ready; the \
                 new one takes over once ready",
                h.generation
            );
            self.library.current = None;
            self.library.last_failure = Some(how.to_owned());
            return Some(Flow::Continue);
        }
        if pid == h.old && part == Part::Retiring {
            let generation = h.generation;
            match h.phase {
                Phase::Snapshotting => {
                    tracing::error!(
                        "library handover {generation}: the old library {how} before its \
                         snapshot: the new one serves from its fresh state"
                    );
                    self.restore(None);
                }
                Phase::Switching(_) => tracing::error!(
                    "library handover {generation}: the old library {how}; the new one takes \
                     over"
                ),
                _ => {}
            }
            return Some(Flow::Continue);
        }
        if pid == h.new {
            // The new Library crashed after taking over: it is restarted as any Library is;
            // the old one stops.
            tracing::error!(
                "library handover {}: the new library {how}; it is restarted",
                h.generation
            );
            self.finish_handover("cut short");
        }
        None
    }
}

/// How often the master checks the Library against its recycling limits.
pub(super) const RECYCLE_CHECK: Duration = Duration::from_secs(1);
/// How long after a recycling attempt the limits are checked again (a new Library that fails
/// its init is not started every second).
const RECYCLE_RETRY: Duration = Duration::from_secs(30);

impl Master {
    /// Whether the Library is checked against recycling limits at all.
    pub(super) fn recycles_library(&self) -> bool {
        self.config.library_max_rss.is_some() || self.config.library_max_age.is_some()
    }

    /// Starts a handover if the Library crossed one of its recycling limits.
    pub(super) fn check_library_recycle(&mut self) {
        if self.ready_at.is_none() || self.library_handover.is_some() {
            return;
        }
        if self.recycle_after.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let Some(pid) = self.library.current.filter(|pid| self.is_ready(*pid)) else {
            return;
        };
        let age = self.procs.get(&pid).map(|p| p.started.elapsed());
        let rss = super::stats::rss_kib(pid).map(|kib| kib * 1024);
        let reason = match (
            self.config.library_max_rss,
            rss,
            self.config.library_max_age,
            age,
        ) {
            (Some(limit), Some(rss), _, _) if rss > limit => format!(
                "recycled: resident memory {} MiB over the limit of {} MiB",
                rss >> 20,
                limit >> 20
            ),
            (_, _, Some(limit), Some(age)) if age > limit => {
                format!("recycled: running for {age:?}, over the limit of {limit:?}")
            }
            _ => return,
        };
        tracing::warn!(
            pid,
            "the library is {reason}: replacing it through a handover"
        );
        self.recycle_after = Some(Instant::now() + RECYCLE_RETRY);
        self.start_library_handover(reason, None);
    }
}
