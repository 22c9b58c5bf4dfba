//! Timing calls: how long to run, per-call latencies, CPU time, and the `BENCH` line a measuring
//! process prints for the driver.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When a measurement stops issuing calls.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Plan {
    /// After this many calls in total.
    Calls(u64),
    /// After this long; calls in flight at the end still count.
    For(Duration),
}

impl Plan {
    /// Whether one more call may start (`issued` counts the calls started so far, over every
    /// task of the measurement).
    pub(crate) fn more(self, issued: &AtomicU64, start: Instant) -> bool {
        match self {
            Plan::Calls(n) => issued.fetch_add(1, Ordering::Relaxed) < n,
            Plan::For(d) => start.elapsed() < d,
        }
    }
}

/// The result of one measurement.
#[derive(Debug)]
pub(crate) struct Measured {
    /// Calls completed.
    pub(crate) calls: u64,
    /// From the first call's start to the last call's end.
    pub(crate) elapsed: Duration,
    /// Every call's latency in nanoseconds, sorted.
    pub(crate) latencies_ns: Vec<u32>,
}

impl Measured {
    /// Builds the result from unsorted latencies.
    pub(crate) fn new(elapsed: Duration, mut latencies_ns: Vec<u32>) -> Measured {
        latencies_ns.sort_unstable();
        Measured {
            calls: latencies_ns.len() as u64,
            elapsed,
            latencies_ns,
        }
    }

    /// The `p`-th percentile (0..=100) in nanoseconds.
    pub(crate) fn percentile_ns(&self, p: f64) -> u32 {
        if self.latencies_ns.is_empty() {
            return 0;
        }
        let rank = (p / 100.0 * (self.latencies_ns.len() - 1) as f64).round() as usize;
        self.latencies_ns[rank.min(self.latencies_ns.len() - 1)]
    }

    /// The line a measuring process prints (after `BENCH `).
    pub(crate) fn line(&self) -> String {
        format!(
            "calls={} secs={:.6} p50_ns={} p99_ns={}",
            self.calls,
            self.elapsed.as_secs_f64(),
            self.percentile_ns(50.0),
            self.percentile_ns(99.0)
        )
    }
}

/// The CPU time used by this process and by its peer (the Library, or the floor's server) over
/// a measurement. Unlike calls/s, CPU time per call hardly depends on what else the machine runs.
#[derive(Debug)]
pub(crate) struct CpuMeter {
    peer: u32,
    peer_start: Duration,
    own_start: Duration,
}

impl CpuMeter {
    /// Starts counting, for this process and `peer`.
    pub(crate) fn start(peer: u32) -> std::io::Result<CpuMeter> {
        Ok(CpuMeter {
            peer,
            peer_start: cpu_time(peer)?,
            own_start: cpu_time(std::process::id())?,
        })
    }

    /// `peer_cpu_ns=… own_cpu_ns=…`: the CPU time used since [`CpuMeter::start`].
    pub(crate) fn line(&self) -> std::io::Result<String> {
        let peer = cpu_time(self.peer)?.saturating_sub(self.peer_start);
        let own = cpu_time(std::process::id())?.saturating_sub(self.own_start);
        Ok(format!(
            "peer_cpu_ns={} own_cpu_ns={}",
            peer.as_nanos(),
            own.as_nanos()
        ))
    }
}

/// The CPU time used so far by every live thread of `pid` (`/proc/<pid>/task/*/schedstat`,
/// nanoseconds on the CPU).
pub(crate) fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let mut total = 0_u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue; // the thread exited meanwhile
        };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(Duration::from_nanos(total))
}

/// A latency in nanoseconds, saturated at about 4.3 s (the deadline of every call is lower).
pub(crate) fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

/// Runs `call` from `inflight` tasks at once, each starting its next call when the previous
/// one returns, until `plan` says stop. Any failed call fails the measurement.
pub(crate) async fn calls<F, Fut, E>(inflight: usize, plan: Plan, call: F) -> Result<Measured, E>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..inflight.max(1) {
        let (call, issued) = (call.clone(), Arc::clone(&issued));
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            while plan.more(&issued, start) {
                let t = Instant::now();
                call().await?;
                latencies.push(nanos(t.elapsed()));
            }
            Ok::<_, E>(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        // A task panics only if `call` does: let it through.
        all.extend(joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?);
    }
    Ok(Measured::new(start.elapsed(), all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_from_sorted_latencies() {
        let m = Measured::new(Duration::from_secs(1), (1..=100).rev().collect());
        assert_eq!(m.percentile_ns(50.0), 51);
        assert_eq!(m.percentile_ns(99.0), 99);
        assert_eq!(m.calls, 100);
    }
}
