//! Recycling (PM2's `max_memory_restart`, gunicorn's `max_requests` with jitter): four times a
//! second the master looks for a ready worker past a limit of [`Recycle`](crate::Recycle) (its
//! resident memory, its requests or calls plus its own jitter, its age) and replaces it the way
//! a rolling reload does, start-new-first, through the same machinery (a reload of one worker).
//!
//! Only one worker is recycled at a time, none while a reload runs, and two recycles are at
//! least `Recycle::min_interval` apart (from one old worker told to stop to the next), so that
//! workers never retire together; the most overdue worker goes first. A worker past its memory
//! limit goes before any other and does not wait for the interval (still one at a time). The
//! reason is logged and kept in the slot for `dispatchctl status`. A replacement that cannot
//! start leaves the old worker serving and pauses recycling for [`RECYCLE_RETRY`].

use super::state::{Master, Part, Reload, Timer};
use super::stats::rss_kib;
use crate::process::ChildKind;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// How long recycling pauses after a replacement failed to start (the old worker keeps
/// serving meanwhile).
pub(super) const RECYCLE_RETRY: Duration = Duration::from_secs(10);

/// How often the master looks for a worker to recycle.
pub(super) const RECYCLE_CHECK: Duration = Duration::from_millis(250);

/// The master's memory of recycling: when an old worker last retired, and the jitter draws.
#[derive(Debug)]
pub(super) struct Recycling {
    /// When a reload or a recycle last told an old worker to stop.
    pub(super) last_retired: Option<Instant>,
    /// When a recycle's replacement last failed to start.
    pub(super) failed_at: Option<Instant>,
    rng: u64,
}

impl Recycling {
    pub(super) fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x2545_f491, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Recycling {
            last_retired: None,
            failed_at: None,
            rng: seed | 1,
        }
    }

    /// Uniform in `0..=max` (xorshift64; the modulo bias is nil for any sane jitter).
    fn draw(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % max.saturating_add(1).max(1)
    }
}

impl Master {
    /// A new process's jitter: drawn for each worker process, none for the Library.
    pub(super) fn draw_jitter(&mut self, kind: ChildKind) -> u64 {
        match kind {
            ChildKind::Worker(_) if self.config.recycle.counts() => {
                let max = self.config.recycle.max_requests_jitter;
                self.recycling.draw(max)
            }
            _ => 0,
        }
    }

    /// One look for a worker to recycle; schedules the next.
    pub(super) fn check_recycle(&mut self) {
        if !self.config.recycle.enabled() {
            return;
        }
        self.schedule(RECYCLE_CHECK, Timer::Recycle);
        // One at a time, none while a reload runs (it waits for the next look).
        if self.ready_at.is_none() || self.reload.is_some() || self.pending_scale.is_some() {
            return;
        }
        // After a replacement failed (new code that cannot start), not a new process every look.
        if self
            .recycling
            .failed_at
            .is_some_and(|at| at.elapsed() < RECYCLE_RETRY)
        {
            return;
        }
        // A worker past its memory limit before any other, then the most overdue (so that a
        // fresh worker past a low limit does not starve the others).
        let due = (0..self.workers.len() as u32)
            .filter_map(|id| {
                let pid = self.workers[id as usize].current?;
                self.recycle_reason(pid).map(|due| (id, pid, due))
            })
            .max_by(|(_, _, a), (_, _, b)| {
                a.memory
                    .cmp(&b.memory)
                    .then(a.overdue.total_cmp(&b.overdue))
            });
        let Some((id, pid, due)) = due else {
            return;
        };
        // Spaced, so that workers never retire together; memory does not wait.
        let spacing = self.config.recycle.min_interval;
        let recent = self
            .recycling
            .last_retired
            .is_some_and(|at| at.elapsed() < spacing);
        if recent && !due.memory {
            return;
        }
        tracing::info!(pid, "recycling worker {id}: {}", due.why);
        let slot = &mut self.workers[id as usize];
        slot.recycles += 1;
        slot.last_recycle = Some(due.why);
        self.reload = Some(Reload {
            queue: VecDeque::from([id]),
            step: None,
            started: Instant::now(),
            recycle: true,
        });
        self.advance_reload();
    }

    /// A recycle's replacement `pid` failed to start: the old worker keeps serving, and
    /// recycling pauses for [`RECYCLE_RETRY`].
    pub(super) fn recycle_failed(&mut self, pid: u32, kind: ChildKind, how: &str) {
        tracing::error!(
            pid,
            "recycle aborted: the new {} {how}; the old one keeps serving; next try in \
             {RECYCLE_RETRY:?}",
            kind.label()
        );
        self.recycling.failed_at = Some(Instant::now());
        if let ChildKind::Worker(id) = kind {
            if let Some(slot) = self.workers.get_mut(id as usize) {
                slot.recycles = slot.recycles.saturating_sub(1);
                if let Some(why) = slot.last_recycle.as_mut() {
                    why.push_str(&format!(" (aborted: the new worker {how})"));
                }
            }
        }
    }

    /// Why the ready worker `pid` is due for recycling, if it is.
    fn recycle_reason(&self, pid: u32) -> Option<Due> {
        let p = self.procs.get(&pid)?;
        if !p.ready || p.part != Part::Current {
            return None;
        }
        let limits = &self.config.recycle;
        if let Some(max) = limits.max_rss_bytes {
            let rss = rss_kib(pid).unwrap_or(0).saturating_mul(1024);
            if rss > max {
                return Some(Due {
                    why: format!("rss {} > {}", mib(rss), mib(max)),
                    memory: true,
                    overdue: rss as f64 / max.max(1) as f64,
                });
            }
        }
        let served = p.handle.heard().served;
        let counted = [
            (limits.max_requests, served.requests, "requests"),
            (limits.max_calls, served.calls, "calls"),
        ];
        let mut reasons = Vec::new();
        for (max, done, what) in counted {
            let Some(max) = max else { continue };
            let limit = max.saturating_add(p.jitter);
            if done >= limit {
                reasons.push(Due {
                    why: format!("{done} {what} (limit {max}+{} jitter)", p.jitter),
                    memory: false,
                    overdue: done as f64 / limit.max(1) as f64,
                });
            }
        }
        if let Some(max) = limits.max_age {
            let age = p.started.elapsed();
            if age >= max {
                reasons.push(Due {
                    why: format!("age {age:.0?} >= {max:?}"),
                    memory: false,
                    overdue: age.as_secs_f64() / max.as_secs_f64().max(1e-3),
                });
            }
        }
        reasons
            .into_iter()
            .max_by(|a, b| a.overdue.total_cmp(&b.overdue))
    }
}

/// A worker due for recycling.
#[derive(Debug)]
struct Due {
    /// For the log and the status.
    why: String,
    /// Past its memory limit: recycled first, without waiting for `Recycle::min_interval`.
    memory: bool,
    /// How far past its limit, as a ratio (1.0: just reached it).
    overdue: f64,
}

/// `130 MiB` (one decimal under 10 MiB).
fn mib(bytes: u64) -> String {
    let mib = bytes as f64 / f64::from(1 << 20);
    if mib < 10.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{mib:.0} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::Recycling;

    #[test]
    fn jitter_draws_stay_in_range_and_vary() {
        let mut r = Recycling::new();
        let draws: Vec<u64> = (0..1000).map(|_| r.draw(100)).collect();
        assert!(draws.iter().all(|d| *d <= 100));
        assert!(draws.iter().any(|d| *d < 20) && draws.iter().any(|d| *d > 80));
        assert_eq!(r.draw(0), 0);
    }
}
