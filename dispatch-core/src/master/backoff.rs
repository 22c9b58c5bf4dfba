//! The master's memory of crashes: each slot's run of crashes (for its backoff) and every crash
//! of the cluster within the window (for the crash-loop limit). The policy itself is a setting:
//! [`RestartPolicy`].

use crate::settings::RestartPolicy;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The crashes of one process slot (the Library, or worker `i`), for its backoff and to see
/// whether its process can stay up at all.
#[derive(Debug, Default, Clone)]
pub(crate) struct SlotCrashes {
    /// Crashes since the backoff last started over.
    consecutive: u32,
    /// Unstable runs in a row (each shorter than the policy's `min_uptime`).
    unstable: u32,
}

/// What to do after a slot's process crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Start it again after this wait.
    Restart(Duration),
    /// It cannot stay up: this many unstable runs in a row, more than the policy allows.
    GiveUp { unstable_runs: u32 },
}

impl SlotCrashes {
    /// Records a crash of a process that ran for `uptime`: restart it after its backoff (at
    /// once after a run of at least `min_uptime` or `reset_after`), or give up when it had more
    /// unstable runs in a row than `max_unstable_restarts`.
    pub(crate) fn record(&mut self, policy: &RestartPolicy, uptime: Duration) -> Verdict {
        if uptime >= policy.min_uptime {
            self.unstable = 0;
        } else {
            self.unstable += 1;
            if self.unstable > policy.max_unstable_restarts {
                return Verdict::GiveUp {
                    unstable_runs: self.unstable,
                };
            }
        }
        if uptime >= policy.reset_after.min(policy.min_uptime) {
            self.consecutive = 0;
        }
        self.consecutive += 1;
        Verdict::Restart(policy.backoff(self.consecutive))
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
        let wait = |v| match v {
            Verdict::Restart(wait) => wait,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            wait(slot.record(&p, Duration::from_secs(1))),
            Duration::ZERO
        );
        assert_eq!(
            wait(slot.record(&p, Duration::from_secs(1))),
            Duration::from_millis(100)
        );
        assert_eq!(
            wait(slot.record(&p, Duration::from_secs(60))),
            Duration::ZERO
        );
    }

    /// Row 5 of issue 13: at the default policy, a process that always crashes (each run as
    /// long as an unstable run can be, the worst case) ends the cluster within 2 minutes,
    /// while a process that stays up past `min_uptime` between crashes is restarted at once
    /// forever (a Library's outage then stays its restart time, far under the call deadline).
    #[test]
    fn default_policy_ends_an_always_crashing_process_within_two_minutes() {
        let p = RestartPolicy::default();
        for run in [
            Duration::from_millis(50),
            Duration::from_secs(1),
            p.min_uptime - Duration::from_millis(1),
        ] {
            let mut slot = SlotCrashes::default();
            let mut clock = Duration::ZERO;
            let mut crashes = 0;
            let runs = loop {
                clock += run;
                crashes += 1;
                match slot.record(&p, run) {
                    Verdict::Restart(wait) => clock += wait,
                    Verdict::GiveUp { unstable_runs } => break unstable_runs,
                }
                assert!(crashes < 1000, "never gives up");
            };
            println!(
                "measured: runs of {run:?} end the cluster after {crashes} crashes, {clock:?}"
            );
            assert_eq!(runs, p.max_unstable_restarts + 1);
            assert!(clock < Duration::from_secs(120), "{clock:?}");
        }
        let mut slot = SlotCrashes::default();
        for _ in 0..1000 {
            assert_eq!(
                slot.record(&p, p.min_uptime),
                Verdict::Restart(Duration::ZERO)
            );
        }
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
