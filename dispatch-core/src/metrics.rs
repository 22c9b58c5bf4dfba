//! Per-method metrics in the Library: calls, errors by kind, and a latency histogram from which
//! p50 and p99 are read. Lock-free on the call path: a few relaxed atomic increments per call.

use crate::error::RemoteError;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: latencies are recorded to within 1/8 (12.5 %).
const SUB: usize = 8;
/// Powers of two covered, from 1 µs: up to about 2^40 µs, far beyond any deadline.
const POWERS: usize = 40;
const BUCKETS: usize = POWERS * SUB;

/// The counters of one method.
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    calls: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS.len()],
    latency_us: Box<[AtomicU64]>,
    /// The sum of every call's latency, µs (a Prometheus histogram's `_sum`).
    latency_sum_us: AtomicU64,
}

/// The kinds of failure counted separately, in [`MethodStats::errors`] order.
pub const ERROR_KINDS: [&str; 5] = ["service", "panicked", "too_large", "codec", "other"];

impl Default for MethodMetrics {
    fn default() -> Self {
        MethodMetrics {
            calls: AtomicU64::new(0),
            errors: Default::default(),
            latency_us: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            latency_sum_us: AtomicU64::new(0),
        }
    }
}

/// How one call ended, for the counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Ok,
    /// The method returned its own `Err` (the call itself succeeded).
    ServiceError,
    Failed(&'static str),
}

impl Outcome {
    /// The outcome of a reply.
    pub(crate) fn of(result: &Result<serde_bytes::ByteBuf, RemoteError>) -> Self {
        match result {
            Ok(_) => Outcome::Ok,
            Err(RemoteError::Panicked { .. }) => Outcome::Failed("panicked"),
            Err(RemoteError::TooLarge { .. }) => Outcome::Failed("too_large"),
            Err(RemoteError::Codec { .. }) => Outcome::Failed("codec"),
            Err(_) => Outcome::Failed("other"),
        }
    }
}

impl MethodMetrics {
    /// Records one call.
    pub(crate) fn record(&self, outcome: Outcome, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let kind = match outcome {
            Outcome::Ok => None,
            Outcome::ServiceError => Some("service"),
            Outcome::Failed(kind) => Some(kind),
        };
        if let Some(kind) = kind {
            let i = ERROR_KINDS
                .iter()
                .position(|k| *k == kind)
                .unwrap_or(ERROR_KINDS.len() - 1);
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_us[bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A snapshot, named.
    pub(crate) fn snapshot(&self, service: &str, method: &str) -> MethodStats {
        let counts: Vec<u64> = self
            .latency_us
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        MethodStats {
            service: service.to_owned(),
            method: method.to_owned(),
            calls: self.calls.load(Ordering::Relaxed),
            errors: ERROR_KINDS
                .iter()
                .zip(&self.errors)
                .map(|(k, c)| ((*k).to_owned(), c.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            p50_us: percentile(&counts, 0.50),
            p99_us: percentile(&counts, 0.99),
            latency_buckets: coarse(&counts),
            latency_sum_us: self.latency_sum_us.load(Ordering::Relaxed),
        }
    }
}

/// The upper bounds, in µs, of the coarse latency buckets reported with [`MethodStats`] (the
/// Prometheus histogram's `le` values); a last bucket without a bound takes the rest.
pub const LATENCY_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The fine histogram summed into [`LATENCY_BOUNDS_US`]: per bound, the calls above the previous
/// bound and at most this one (a fine bucket counts under the first bound its whole range fits
/// under, so a latency may be placed one coarse bucket too high, never too low).
fn coarse(counts: &[u64]) -> Vec<u64> {
    let mut out = vec![0; LATENCY_BOUNDS_US.len()];
    for (i, count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
        let highest = lower_bound(i + 1).saturating_sub(1);
        if let Some(b) = LATENCY_BOUNDS_US.iter().position(|le| *le >= highest) {
            out[b] += count;
        }
    }
    out
}

/// The bucket of a latency in µs: exact below `SUB`, then `SUB` buckets per power of two.
fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let power = 63 - us.leading_zeros() as usize; // ≥ 3
    let shift = power - SUB.trailing_zeros() as usize;
    let sub = ((us >> shift) as usize) & (SUB - 1);
    ((power - 2) * SUB + sub).min(BUCKETS - 1)
}

/// The smallest latency of a bucket.
fn lower_bound(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let power = index / SUB + 2;
    let sub = (index % SUB) as u64;
    let shift = power - SUB.trailing_zeros() as usize;
    ((SUB as u64) | sub) << shift
}

fn percentile(counts: &[u64], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return lower_bound(i);
        }
    }
    lower_bound(counts.len() - 1)
}

/// One call in flight: counted up when started, down when dropped (finished, failed, or given
/// up at its deadline).
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    pub(crate) fn start(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The metrics of one service method, as `dispatchctl status --methods` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodStats {
    /// The service.
    pub service: String,
    /// The method.
    pub method: String,
    /// Calls that reached the method.
    pub calls: u64,
    /// Failed calls by kind (see [`ERROR_KINDS`]); kinds with none are left out.
    pub errors: Vec<(String, u64)>,
    /// Median latency in the Library, µs (to within 12.5 %).
    pub p50_us: u64,
    /// 99th percentile latency in the Library, µs (to within 12.5 %).
    pub p99_us: u64,
    /// Calls per latency bucket: `latency_buckets[i]` counts the calls above
    /// `LATENCY_BOUNDS_US[i - 1]` and at most `LATENCY_BOUNDS_US[i]` µs; calls above the last
    /// bound are `calls` less their sum.
    #[serde(default)]
    pub latency_buckets: Vec<u64>,
    /// The sum of every call's latency, µs.
    #[serde(default)]
    pub latency_sum_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in 0..100_000_u64 {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let lo = lower_bound(b);
            assert!(
                lo <= us && us - lo <= us / 8 + 1,
                "{us} in bucket from {lo}"
            );
        }
    }

    #[test]
    fn percentiles_and_error_kinds() {
        let m = MethodMetrics::default();
        for i in 1..=100 {
            m.record(Outcome::Ok, Duration::from_micros(i * 10));
        }
        m.record(Outcome::ServiceError, Duration::from_micros(5));
        m.record(Outcome::Failed("panicked"), Duration::from_micros(5));
        let s = m.snapshot("demo", "add");
        assert_eq!(s.calls, 102);
        assert!((440..=500).contains(&s.p50_us), "{s:?}");
        assert!((880..=1000).contains(&s.p99_us), "{s:?}");
        assert_eq!(
            s.errors,
            vec![("service".into(), 1), ("panicked".into(), 1)]
        );
        // 10..=1000 µs and two of 5 µs: every call within the bounds, none placed too low.
        assert_eq!(s.latency_buckets.iter().sum::<u64>(), 102);
        let at_most_1ms: u64 = s.latency_buckets[..=4].iter().sum();
        assert!(at_most_1ms >= 90, "{:?}", s.latency_buckets);
        let up_to_2_5ms: u64 = s.latency_buckets[..=5].iter().sum();
        assert_eq!(up_to_2_5ms, 102, "none lands more than one bucket high");
        assert_eq!(
            s.latency_sum_us,
            (1..=100).map(|i| i * 10).sum::<u64>() + 10
        );
    }
}
