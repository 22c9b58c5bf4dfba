//! A process's way through its slot: started, ready (and what that unlocks: the workers after
//! the Library, the cluster after every worker), exited (finished, crashed and restarted after
//! its backoff, or the end of a crash loop).

use super::backoff::Verdict;
use super::child::KillReason;
use super::state::{failed, ready_timeout, start_error, Flow, Master, Part, Reload, Timer};
use crate::cluster_error::ClusterError;
use crate::process::{systemd, ChildKind};
use crate::topic::events;
use crate::wire::{Target, ToChild};
use std::process::ExitStatus;
use std::time::Duration;
use tokio::time::Instant;

impl Master {
    pub(super) fn on_ready(&mut self, pid: u32, services: &str) -> Flow {
        let Some(p) = self.procs.get_mut(&pid) else {
            return Flow::Continue;
        };
        if p.ready {
            return Flow::Continue;
        }
        p.ready = true;
        let (kind, part, took) = (p.handle.kind, p.part, p.started.elapsed());
        match kind {
            ChildKind::Library if part == Part::Replacement => {
                tracing::info!(pid, "new library ready in {took:?}, hosting {services}");
                self.handover_library_ready(pid);
            }
            ChildKind::Library => {
                tracing::info!(pid, "library ready in {took:?}, hosting {services}");
                self.on_member_ready(pid, kind);
                if self.ready_at.is_none() {
                    return self.start_workers();
                }
                tracing::info!(pid, "library restarted: telling the workers to reconnect");
                self.on_schedule_target_ready();
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
                    self.on_schedule_target_ready();
                } else {
                    self.maybe_cluster_ready();
                }
            }
        }
        Flow::Continue
    }

    pub(super) fn start_workers(&mut self) -> Flow {
        for id in 0..self.workers.len() {
            if let Err(e) = self.spawn(ChildKind::Worker(id as u32), Part::Current) {
                return Flow::Stop(Err(e));
            }
        }
        Flow::Continue
    }

    /// The cluster is ready once every worker is ready, or already finished its work.
    pub(super) fn maybe_cluster_ready(&mut self) {
        let all = self
            .workers
            .iter()
            .all(|s| s.finished || s.current.is_some_and(|p| self.is_ready(p)));
        if self.ready_at.is_none() && all {
            self.cluster_ready();
        }
    }

    pub(super) fn cluster_ready(&mut self) {
        self.ready_at = Some(Instant::now());
        for p in self.procs.values() {
            let _ = p.handle.send(ToChild::ClusterReady);
        }
        self.start_schedules();
        let workers = self.workers.len() as u32;
        self.emit(
            Target::Broadcast,
            &events::CLUSTER_READY,
            &events::ClusterReady { workers },
        );
        match self.new_link.take() {
            Some(link) => link.announce_ready(
                self.dir.path().to_path_buf(),
                self.upgrade_tx.clone(),
                // The old master drains its workers (up to its grace period), then takes the
                // snapshots.
                self.config.grace_period + Duration::from_secs(30),
            ),
            None => {
                systemd::notify(&format!(
                    "READY=1\nSTATUS=ready: a library and {} workers",
                    self.workers.len()
                ));
            }
        }
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

    pub(super) fn enforce_ready_deadline(&mut self, pid: u32) {
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
        self.kill(pid, KillReason::ReadyDeadline);
    }

    pub(super) fn is_ready(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|p| p.ready)
    }

    pub(super) fn is_current(&self, kind: ChildKind, pid: u32) -> bool {
        match kind {
            ChildKind::Library => self.library.current == Some(pid),
            ChildKind::Worker(id) => self.worker_slot(id).is_some_and(|s| s.current == Some(pid)),
        }
    }

    pub(super) fn on_exit(&mut self, pid: u32, status: ExitStatus) -> Flow {
        let Some(p) = self.procs.remove(&pid) else {
            return Flow::Continue;
        };
        let kind = p.handle.kind;
        if let (ChildKind::Worker(worker_id), true) = (kind, p.ready) {
            let status = p.how(status);
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
        if self.library_handover.is_some() || kind != ChildKind::Library {
            let how = p.how(status);
            let how = match (&p.failure, p.ready) {
                (Some(reason), false) => format!("{how} before it was ready: {reason}"),
                (Some(reason), true) => format!("{how}: {reason}"),
                (None, false) => format!("{how} before it was ready"),
                (None, true) => how,
            };
            if let Some(flow) = self.handover_exit(pid, kind, p.part, &how) {
                if p.part == Part::Retiring {
                    tracing::info!(pid, "the old library stopped ({})", p.how(status));
                }
                return flow;
            }
        }
        match p.part {
            Part::Retiring if kind == ChildKind::Library => {
                tracing::info!(pid, "the old library stopped ({})", p.how(status));
                Flow::Continue
            }
            Part::Retiring => {
                tracing::info!(pid, "the old {} stopped ({})", kind.label(), p.how(status));
                self.advance_reload();
                Flow::Continue
            }
            Part::Removed => {
                let how = p.how(status);
                if status.success() {
                    tracing::info!(
                        pid,
                        "the {} removed by a scale-down stopped ({how})",
                        kind.label()
                    );
                } else {
                    tracing::warn!(
                        pid,
                        "the {} removed by a scale-down stopped ({how})",
                        kind.label()
                    );
                }
                Flow::Continue
            }
            Part::Replacement => {
                let how = p.failure.clone().unwrap_or_else(|| p.how(status));
                if self.reload.as_ref().is_some_and(|r| r.recycle) {
                    self.recycle_failed(pid, kind, &how);
                } else {
                    tracing::error!(
                        pid,
                        "reload aborted: the new {} {how}; the old one keeps serving",
                        kind.label()
                    );
                    systemd::notify("READY=1\nSTATUS=reload aborted");
                }
                self.reload = None;
                self.apply_pending_scale();
                // If the old one died meanwhile, the slot still needs a process.
                if let ChildKind::Worker(id) = kind {
                    if self.worker_slot(id).is_some_and(|s| s.current.is_none()) {
                        return self.crashed(kind, pid, p.started, &how);
                    }
                }
                Flow::Continue
            }
            Part::Current => {
                let running = self.ready_at.is_some();
                let slot = self.slot_mut(kind);
                slot.current = None;
                if kind == ChildKind::Library && p.rebind && running {
                    tracing::info!(
                        pid,
                        "the {} stopped ({}) to be started again",
                        kind.label(),
                        p.how(status)
                    );
                    return match self.spawn_restart(kind) {
                        Ok(_) => Flow::Continue,
                        Err(e) => Flow::Stop(Err(e)),
                    };
                }
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
                let how = p.how(status);
                let how = match (&p.failure, p.ready) {
                    (Some(reason), false) => format!("{how} before it was ready: {reason}"),
                    (Some(reason), true) => format!("{how}: {reason}"),
                    (None, false) => format!("{how} before it was ready"),
                    (None, true) => how,
                };
                tracing::error!(pid, "the {} {how}", kind.label());
                self.slot_mut(kind).last_failure = Some(how.clone());
                if self.ready_at.is_none() {
                    return Flow::Stop(Err(start_error(&self.config, kind, pid, &p, how)));
                }
                self.crashed(kind, pid, p.started, &how)
            }
        }
    }

    /// A running slot's process crashed: restart it after its backoff, or stop the cluster if
    /// restarts are off or this is a crash loop.
    pub(super) fn crashed(
        &mut self,
        kind: ChildKind,
        pid: u32,
        started: Instant,
        how: &str,
    ) -> Flow {
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
        let wait = match self
            .slot_mut(kind)
            .crashes
            .record(&policy, started.elapsed())
        {
            Verdict::Restart(wait) => wait,
            Verdict::GiveUp { unstable_runs } => {
                return Flow::Stop(Err(ClusterError::CannotStayUp {
                    process: kind.label(),
                    runs: unstable_runs,
                    min_uptime: policy.min_uptime,
                    last: format!("pid {pid} {how}"),
                }))
            }
        };
        tracing::info!("restarting the {} in {wait:?}", kind.label());
        self.schedule(wait, Timer::Restart(kind));
        Flow::Continue
    }
}
