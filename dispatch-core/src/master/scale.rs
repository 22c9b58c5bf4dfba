//! Scale at run time (PM2's `scale`, gunicorn's TTIN/TTOU): `dispatchctl scale N|+K|-K` and
//! [`ClusterHandle::scale`](super::ClusterHandle::scale).
//!
//! Scale-up appends slots and starts their workers; scale-down removes the highest slots: each
//! one's worker is asked to stop (its application drains through `Worker::shutdown`), is no
//! longer a member at once (no new message is routed to it), and is killed only after the grace
//! period. Its exit is not a crash and is not restarted. A later reload replaces the workers of
//! the new count. During a rolling reload or a recycle, the change waits for it to end (the
//! last one asked for wins).

use super::state::{Master, Part, Slot, Timer};
use crate::admin::{Scale, ScaleError};
use crate::process::ChildKind;
use crate::wire::ToChild;

impl Master {
    /// Validates `change` and applies it now, or after the reload in progress. `Ok` says what
    /// was done, for the operator.
    pub(super) fn scale(&mut self, change: Scale) -> Result<String, ScaleError> {
        if self.ready_at.is_none() {
            return Err(ScaleError::NotRunning {
                why: "the cluster is starting; scale once it is ready".into(),
            });
        }
        if self.upgrade.is_some() {
            return Err(ScaleError::NotRunning {
                why: "an upgrade is in progress: the new build starts with this cluster's worker \
                      count; scale it once the upgrade is done"
                    .into(),
            });
        }
        let current = self
            .pending_scale
            .unwrap_or(u32::try_from(self.workers.len()).unwrap_or(u32::MAX));
        let max = u32::try_from(self.config.max_workers).unwrap_or(u32::MAX);
        let target = match change.target(current) {
            Some(0) | None if !matches!(change, Scale::Up(_)) => {
                return Err(ScaleError::TooFew { change, current })
            }
            Some(n) if n <= max => n,
            _ => {
                return Err(ScaleError::TooMany {
                    change,
                    current,
                    max,
                })
            }
        };
        if let Some(reload) = &self.reload {
            self.pending_scale = Some(target);
            let what = if reload.recycle {
                "a worker is being recycled"
            } else {
                "a rolling reload is in progress"
            };
            tracing::info!("scale to {target} workers asked for: {what}; applied after it");
            return Ok(format!(
                "{what}: scaling to {target} workers once it completes"
            ));
        }
        Ok(self.apply_scale(target))
    }

    /// After a reload: the scale asked for meanwhile.
    pub(super) fn apply_pending_scale(&mut self) {
        if let Some(target) = self.pending_scale.take() {
            self.apply_scale(target);
        }
    }

    /// Runs `target` workers from now on.
    fn apply_scale(&mut self, target: u32) -> String {
        let target = target as usize;
        let current = self.workers.len();
        let done = if target > current {
            let mut started = Vec::new();
            for id in current..target {
                self.workers.push(Slot::default());
                match self.spawn(ChildKind::Worker(id as u32), Part::Current) {
                    Ok(pid) => started.push(format!("{id} (pid {pid})")),
                    Err(e) => {
                        // This slot and the ones after it are not added.
                        tracing::error!("scale: cannot start worker {id}: {e}");
                        self.workers.truncate(id);
                        break;
                    }
                }
            }
            format!(
                "scaled from {current} to {} workers: started {}",
                self.workers.len(),
                started.join(", ")
            )
        } else if target < current {
            let mut stopping = Vec::new();
            for id in (target..current).rev() {
                let Some(slot) = self.workers.pop() else {
                    break;
                };
                let dropped = self.drop_mailbox(ChildKind::Worker(id as u32));
                if dropped > 0 {
                    tracing::warn!(
                        "scale: dropped {dropped} messages waiting for worker {id}, now removed"
                    );
                }
                // Its process (a restart may be pending: the timer finds no slot).
                let Some(pid) = slot.current else { continue };
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.part = Part::Removed;
                    let _ = p.handle.send(ToChild::Shutdown);
                }
                stopping.push(format!("{id} (pid {pid})"));
                self.schedule(self.config.grace_period, Timer::Kill(pid));
            }
            self.announce_members();
            format!(
                "scaled from {current} to {target} workers: stopping {}",
                if stopping.is_empty() {
                    "none (their slots had no process)".into()
                } else {
                    stopping.join(", ")
                }
            )
        } else {
            format!("already {current} workers")
        };
        // New children are told the current count.
        self.config.workers = self.workers.len();
        self.init.settings.workers = self.workers.len();
        tracing::info!("{done}");
        done
    }
}
