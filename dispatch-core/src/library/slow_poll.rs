//! Finding the method that holds up the Library: every poll of a call is timed, and a poll
//! over [`SLOW_POLL`] is logged with the method's name (as tokio-console's "poll took too long"
//! does), at most once per [`WARN_EVERY`], with the count of the ones not logged.
//!
//! A poll cannot be interrupted: a method that blocks its thread for 10 s is logged when it
//! returns. What it held up meanwhile depends on the Library's runtime (see
//! `Cluster::library_runtime`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A poll longer than this is logged.
pub(super) const SLOW_POLL: Duration = Duration::from_millis(100);
/// At most one warning per this.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// When the last warning was logged (ms since the first call timed), and long polls since.
static LAST_WARNING_MS: AtomicU64 = AtomicU64::new(0);
static NOT_LOGGED: AtomicU64 = AtomicU64::new(0);
static EPOCH: once_cell::sync::Lazy<Instant> = once_cell::sync::Lazy::new(Instant::now);

/// `inner`, with each of its polls timed; resolves to its output and when its last poll ended.
/// The first poll is timed from the instant given (the call's start, already read), so a call
/// done in one poll reads the clock once more than it did untimed: at its end, which the
/// method's metrics use too.
pub(super) struct Timed<'a, F> {
    inner: F,
    service: &'a str,
    method: &'a str,
    first: Option<Instant>,
}

impl<'a, F> Timed<'a, F> {
    pub(super) fn new(inner: F, service: &'a str, method: &'a str, started: Instant) -> Self {
        Timed {
            inner,
            service,
            method,
            first: Some(started),
        }
    }
}

impl<F: Future + Unpin> Future for Timed<'_, F> {
    type Output = (F::Output, Instant);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let began = self.first.take().unwrap_or_else(Instant::now);
        let result = Pin::new(&mut self.inner).poll(cx);
        let ended = Instant::now();
        let took = ended.saturating_duration_since(began);
        if took > SLOW_POLL {
            slow(self.service, self.method, took);
        }
        result.map(|output| (output, ended))
    }
}

#[cold]
fn slow(service: &str, method: &str, took: Duration) {
    let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX);
    let last = LAST_WARNING_MS.load(Ordering::Relaxed);
    let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
    if !due
        || LAST_WARNING_MS
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        NOT_LOGGED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let others = NOT_LOGGED.swap(0, Ordering::Relaxed);
    tracing::warn!(
        "a poll of `{service}.{method}` held its thread for {took:?} (over {SLOW_POLL:?}): it \
         blocks or spins, and calls waiting for that thread waited as long; make it a \
         `#[blocking]` fn, await between slices of work, or run the Library on a multi-thread \
         runtime (Cluster::library_runtime){}",
        if others == 0 {
            String::new()
        } else {
            format!("; {others} more slow polls since the last warning")
        }
    );
}
