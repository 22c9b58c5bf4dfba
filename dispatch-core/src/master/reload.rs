//! Rolling reload: one worker at a time, start the replacement, wait until it is ready, then
//! stop the old one gracefully. A replacement that fails to become ready aborts the reload and
//! the old worker keeps serving. A recycle (see `recycle`) is a reload of one worker; a scale
//! asked for meanwhile is applied when the reload ends (see `scale`).

use super::state::{Master, Part, Reload, Timer};
use crate::process::{systemd, ChildKind};
use crate::wire::ToChild;
use std::collections::VecDeque;
use tokio::time::Instant;

fn reload_is_recycle(reload: Option<&Reload>) -> bool {
    reload.is_some_and(|r| r.recycle)
}

impl Master {
    pub(super) fn start_reload(&mut self) {
        if self.ready_at.is_none() {
            tracing::warn!("reload requested while the cluster is starting: ignored");
            return;
        }
        if self.upgrade.is_some() {
            tracing::warn!("reload requested during an upgrade: ignored (the new build replaces every process)");
            return;
        }
        let queue: VecDeque<u32> = (0..self.workers.len() as u32)
            .filter(|id| !self.workers[*id as usize].finished)
            .collect();
        match self.reload.as_mut() {
            // A recycle in progress becomes the first step of the reload: every worker is
            // replaced after it (the recycled one too, so that each runs the reloaded code).
            Some(running) if running.recycle => {
                tracing::info!(
                    "rolling reload of {} workers, one at a time, after the recycle in progress",
                    queue.len()
                );
                running.recycle = false;
                running.queue = queue;
                return;
            }
            Some(_) => {
                tracing::info!("a reload is already in progress");
                return;
            }
            None => {}
        }
        tracing::info!("rolling reload of {} workers, one at a time", queue.len());
        systemd::notify(&systemd::reloading());
        self.reload = Some(Reload {
            queue,
            step: None,
            started: Instant::now(),
            recycle: false,
        });
        self.advance_reload();
    }

    /// Starts the replacement of the next worker, or ends the reload.
    pub(super) fn advance_reload(&mut self) {
        loop {
            let Some(reload) = self.reload.as_mut() else {
                return;
            };
            reload.step = None;
            let Some(id) = reload.queue.pop_front() else {
                if reload.recycle {
                    tracing::info!("recycle complete in {:?}", reload.started.elapsed());
                } else {
                    tracing::info!("rolling reload complete in {:?}", reload.started.elapsed());
                }
                let recycle = reload.recycle;
                self.reload = None;
                if !recycle {
                    systemd::notify("READY=1\nSTATUS=reloaded");
                }
                self.apply_pending_scale();
                return;
            };
            // A slot a scale-down removed, finished, or waiting for its restart.
            let Some(slot) = self.worker_slot(id) else {
                continue;
            };
            if slot.finished || slot.current.is_none() {
                continue;
            }
            match self.spawn(ChildKind::Worker(id), Part::Replacement) {
                Ok(new) => {
                    if let Some(reload) = self.reload.as_mut() {
                        reload.step = Some((id, new));
                    }
                    return;
                }
                Err(e) => {
                    let recycle = reload_is_recycle(self.reload.as_ref());
                    if recycle {
                        self.recycling.failed_at = Some(Instant::now());
                    }
                    tracing::error!("reload aborted: cannot start a new worker {id}: {e}");
                    self.reload = None;
                    if !recycle {
                        systemd::notify("READY=1\nSTATUS=reload aborted");
                    }
                    self.apply_pending_scale();
                    return;
                }
            }
        }
    }

    /// The replacement of worker `id` is ready: it takes the slot; the old one stops.
    pub(super) fn replacement_ready(&mut self, id: u32, new: u32) {
        if let Some(p) = self.procs.get_mut(&new) {
            p.part = Part::Current;
        }
        let Some(slot) = self.workers.get_mut(id as usize) else {
            self.advance_reload();
            return;
        };
        let old = slot.current.replace(new);
        let Some(old) = old else {
            self.advance_reload();
            return;
        };
        if let Some(p) = self.procs.get_mut(&old) {
            p.part = Part::Retiring;
            let _ = p.handle.send(ToChild::Shutdown);
        }
        self.recycling.last_retired = Some(Instant::now());
        tracing::info!("worker {id}: pid {new} took over, stopping pid {old}");
        self.schedule(self.config.grace_period, Timer::Kill(old));
    }
}
