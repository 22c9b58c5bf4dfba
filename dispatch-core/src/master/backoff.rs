//! The master's memory of crashes: each slot's run of crashes (for its backoff) and every crash
//! of the cluster within the window (for the crash-loop limit). The policy itself is a setting:
//! [`RestartPolicy`].

use crate::settings::RestartPolicy;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

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
