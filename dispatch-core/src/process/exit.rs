//! How a child process ends: its exit codes, and the one place that ends it.
//!
//! A Library or a worker leaves through [`exit`] and nowhere else, so that what it wrote is
//! flushed first and a reader of the code finds every way out in one list.

use std::io::Write;

/// A Library whose services failed to initialise.
pub(crate) const LIBRARY_INIT_FAILED: i32 = 2;
/// A worker that could not join the cluster (or can no longer reach a Library it can serve).
pub(crate) const WORKER_START_FAILED: i32 = 2;
/// A child that failed after it started, or whose master is gone.
pub(crate) const FAILED: i32 = 1;

/// Flushes stdout and stderr and ends this process with `code`.
#[allow(clippy::exit)] // The one exit point of a child process.
pub(crate) fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}
