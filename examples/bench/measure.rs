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

/// Call latencies, counted in a fixed histogram rather than kept one by one: a measuring
/// process does 300k calls/s and more, and a `Vec` of them grew its heap by megabytes, which
/// the `rss` workload then charged to the runtime. Values below 64 ns are exact; above, each
/// power of two is split into 32 buckets (at most 3 % wide), 896 buckets in all (7 KiB).
#[derive(Debug, Clone)]
pub(crate) struct Latencies {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

/// Buckets for every `u32` nanosecond value: 64 exact ones, then 26 powers of two × 32.
const BUCKETS: usize = 896;

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl Latencies {
    /// Counts one latency of `ns` nanoseconds.
    pub(crate) fn record(&mut self, ns: u32) {
        self.counts[bucket(ns)] += 1;
        self.total += 1;
    }

    /// Adds `other`'s counts to these.
    pub(crate) fn merge(&mut self, other: &Latencies) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    /// How many latencies were counted.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// The `p`-th percentile (0..=100) in nanoseconds: the upper edge of the bucket holding the
    /// value of that rank (never below the true value, at most 3 % above it).
    pub(crate) fn percentile_ns(&self, p: f64) -> u32 {
        if self.total == 0 {
            return 0;
        }
        let rank = (p / 100.0 * (self.total - 1) as f64).round() as u64;
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen > rank {
                return upper_edge(i);
            }
        }
        u32::MAX
    }
}

/// The bucket of `ns`: itself below 64; above, 32 buckets per power of two.
fn bucket(ns: u32) -> usize {
    if ns < 64 {
        return ns as usize;
    }
    let shift = 26 - ns.leading_zeros() as usize; // the highest bit's position - 5, ≥ 1
    shift * 32 + (ns >> shift) as usize
}

/// The largest value of bucket `i`.
fn upper_edge(i: usize) -> u32 {
    if i < 64 {
        return i as u32;
    }
    let shift = i / 32 - 1;
    let lowest = ((i % 32 + 32) as u64) << shift;
    u32::try_from(lowest + (1 << shift) - 1).unwrap_or(u32::MAX)
}

/// The result of one measurement.
#[derive(Debug)]
pub(crate) struct Measured {
    /// Calls completed.
    pub(crate) calls: u64,
    /// From the first call's start to the last call's end.
    pub(crate) elapsed: Duration,
    /// Every call's latency.
    pub(crate) latencies: Latencies,
}

impl Measured {
    /// The result of calls taking `elapsed` in all, with these latencies.
    pub(crate) fn new(elapsed: Duration, latencies: Latencies) -> Measured {
        Measured {
            calls: latencies.len(),
            elapsed,
            latencies,
        }
    }

    /// The line a measuring process prints (after `BENCH `).
    pub(crate) fn line(&self) -> String {
        format!(
            "calls={} secs={:.6} p50_ns={} p99_ns={}",
            self.calls,
            self.elapsed.as_secs_f64(),
            self.latencies.percentile_ns(50.0),
            self.latencies.percentile_ns(99.0)
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
            let mut latencies = Latencies::default();
            while plan.more(&issued, start) {
                let t = Instant::now();
                call().await?;
                latencies.record(nanos(t.elapsed()));
            }
            Ok::<_, E>(latencies)
        });
    }
    let mut all = Latencies::default();
    while let Some(joined) = tasks.join_next().await {
        // A task panics only if `call` does: let it through.
        all.merge(&joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?);
    }
    Ok(Measured::new(start.elapsed(), all))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(values: impl IntoIterator<Item = u32>) -> Latencies {
        let mut l = Latencies::default();
        values.into_iter().for_each(|v| l.record(v));
        l
    }

    #[test]
    fn percentiles_pick_the_value_of_their_rank() {
        let m = Measured::new(Duration::from_secs(1), counted((1..=100).rev()));
        assert_eq!(m.latencies.percentile_ns(50.0), 51);
        assert_eq!(m.latencies.percentile_ns(99.0), 99);
        assert_eq!(m.calls, 100);
        assert_eq!(Latencies::default().percentile_ns(50.0), 0);
    }

    #[test]
    fn buckets_cover_every_u32_and_are_at_most_3_percent_wide() {
        for v in [
            64,
            65,
            127,
            128,
            1_000,
            54_321,
            1 << 20,
            u32::MAX - 1,
            u32::MAX,
        ] {
            let edge = upper_edge(bucket(v));
            assert!(edge >= v, "{v} reported as {edge}");
            assert!(
                f64::from(edge - v) <= f64::from(v) / 32.0,
                "{v} reported as {edge}"
            );
        }
        assert_eq!(bucket(u32::MAX), BUCKETS - 1);
        let mut a = counted([10, 20]);
        a.merge(&counted([30]));
        assert_eq!((a.len(), a.percentile_ns(100.0)), (3, 30));
    }
}
