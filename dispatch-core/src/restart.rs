//! When to restart a crashed process, and when to give up.
//!
//! A crash is restarted at once the first time; if the restarted process crashes again before
//! it has run for [`RestartPolicy::reset_after`], the next restart waits, the wait growing by
//! [`RestartPolicy::backoff_factor`] up to [`RestartPolicy::max_backoff`] (PM2's scheme). Over all
//! processes, more than [`RestartPolicy::crash_limit`] crashes within
//! [`RestartPolicy::crash_window`] is a crash loop: the cluster stops (cfork's limit, OTP's
//! intensity/period).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How the master restarts crashed processes.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Whether crashed processes are restarted at all. Without restarts, the first crash stops
    /// the cluster with an error.
    pub enabled: bool,
    /// The wait before the second restart in a row (the first is immediate). Default 100 ms.
    pub initial_backoff: Duration,
    /// How much each further wait grows. Default 1.5.
    pub backoff_factor: f64,
    /// The longest wait. Default 15 s.
    pub max_backoff: Duration,
    /// A process that ran this long before crashing starts the backoff over. Default 30 s.
    pub reset_after: Duration,
    /// More crashes than this within `crash_window`, over all processes, stop the cluster.
    /// Default 60.
    pub crash_limit: u32,
    /// The window of `crash_limit`. Default 60 s.
    pub crash_window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            enabled: true,
            initial_backoff: Duration::from_millis(100),
            backoff_factor: 1.5,
            max_backoff: Duration::from_secs(15),
            reset_after: Duration::from_secs(30),
            crash_limit: 60,
            crash_window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// No restarts: the first crash stops the cluster.
    pub fn never() -> Self {
        RestartPolicy {
            enabled: false,
            ..RestartPolicy::default()
        }
    }

    /// The wait before restarting after the `consecutive`-th crash in a row (1-based).
    pub(crate) fn backoff(&self, consecutive: u32) -> Duration {
        if consecutive <= 1 {
            return Duration::ZERO;
        }
        let exp = i32::try_from(consecutive - 2).unwrap_or(i32::MAX);
        let wait = self.initial_backoff.as_secs_f64() * self.backoff_factor.max(1.0).powi(exp);
        Duration::try_from_secs_f64(wait)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// The crashes of one process slot (the Library, or worker `i`), for its backoff.
#[derive(Debug, Default, Clone)]
pub(crate) struct SlotCrashes {
    consecutive: u32,
}

impl SlotCrashes {
    /// Records a crash of a process that ran for `uptime`; returns the wait before restarting.
    pub(crate) fn record(&mut self, policy: &RestartPolicy, uptime: Duration) -> Duration {
        if uptime >= policy.reset_after {
            self.consecutive = 0;
        }
        self.consecutive += 1;
        policy.backoff(self.consecutive)
    }
}

/// Every crash of the cluster within the window, to detect a crash loop.
#[derive(Debug, Default)]
pub(crate) struct CrashWindow {
    times: VecDeque<Instant>,
}

impl CrashWindow {
    /// Records a crash at `now`; returns the number of crashes within the window, this one
    /// included, if that is over the limit.
    pub(crate) fn record(&mut self, policy: &RestartPolicy, now: Instant) -> Option<usize> {
        self.times.push_back(now);
        while let Some(first) = self.times.front() {
            if now.duration_since(*first) > policy.crash_window {
                self.times.pop_front();
            } else {
                break;
            }
        }
        (self.times.len() > policy.crash_limit as usize).then_some(self.times.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_restart_is_immediate_then_backs_off_by_half_up_to_the_cap() {
        let p = RestartPolicy::default();
        assert_eq!(p.backoff(1), Duration::ZERO);
        assert_eq!(p.backoff(2), Duration::from_millis(100));
        assert_eq!(p.backoff(3), Duration::from_millis(150));
        assert_eq!(p.backoff(4), Duration::from_millis(225));
        assert_eq!(p.backoff(100), Duration::from_secs(15));
    }

    #[test]
    fn a_long_run_resets_the_backoff() {
        let p = RestartPolicy::default();
        let mut slot = SlotCrashes::default();
        assert_eq!(slot.record(&p, Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(
            slot.record(&p, Duration::from_secs(1)),
            Duration::from_millis(100)
        );
        assert_eq!(slot.record(&p, Duration::from_secs(60)), Duration::ZERO);
    }

    #[test]
    fn more_crashes_than_the_limit_within_the_window_is_a_loop() {
        let p = RestartPolicy {
            crash_limit: 3,
            crash_window: Duration::from_secs(10),
            ..RestartPolicy::default()
        };
        let mut w = CrashWindow::default();
        let t0 = Instant::now();
        assert_eq!(w.record(&p, t0), None);
        assert_eq!(w.record(&p, t0 + Duration::from_secs(1)), None);
        assert_eq!(w.record(&p, t0 + Duration::from_secs(2)), None);
        assert_eq!(w.record(&p, t0 + Duration::from_secs(3)), Some(4));
        // Old crashes leave the window.
        let mut w = CrashWindow::default();
        for s in [0, 1, 2] {
            w.record(&p, t0 + Duration::from_secs(s));
        }
        assert_eq!(w.record(&p, t0 + Duration::from_secs(30)), None);
    }
}
