//! Rolling reload: one worker at a time, start the replacement, wait until it is ready, then
//! stop the old one gracefully. A replacement that fails to become ready aborts the reload and
//! the old worker keeps serving.

use super::state::{Master, Part, Reload, Timer};
use crate::process::{systemd, ChildKind};
use crate::wire::ToChild;
use std::collections::VecDeque;
use tokio::time::Instant;

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
        if self.reload.is_some() {
            tracing::info!("a reload is already in progress");
            return;
        }
        let queue: VecDeque<u32> = (0..self.workers.len() as u32)
            .filter(|id| !self.workers[*id as usize].finished)
            .collect();
        tracing::info!("rolling reload of {} workers, one at a time", queue.len());
        systemd::notify(&systemd::reloading());
        self.reload = Some(Reload {
            queue,
            step: None,
            started: Instant::now(),
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
                tracing::info!("rolling reload complete in {:?}", reload.started.elapsed());
                self.reload = None;
                systemd::notify("READY=1\nSTATUS=reloaded");
                return;
            };
            let slot = &self.workers[id as usize];
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
                    tracing::error!("reload aborted: cannot start a new worker {id}: {e}");
                    self.reload = None;
                    systemd::notify("READY=1\nSTATUS=reload aborted");
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
        let old = self.workers[id as usize].current.replace(new);
        let Some(old) = old else {
            self.advance_reload();
            return;
        };
        if let Some(p) = self.procs.get_mut(&old) {
            p.part = Part::Retiring;
            let _ = p.handle.send(ToChild::Shutdown);
        }
        tracing::info!("worker {id}: pid {new} took over, stopping pid {old}");
        self.schedule(self.config.grace_period, Timer::Kill(old));
    }
}
