//! glibc's allocator, set for the payloads a Library and a worker move: large allocations
//! come from the heap and stay there, instead of a fresh `mmap` (and its page faults) for each.
//!
//! By default glibc serves an allocation over 128 KiB (raised as such chunks are freed, up to
//! 32 MiB) with its own `mmap`, and returns the top of the heap to the kernel past 128 KiB
//! free. A call of 1 MiB allocates several buffers of about that size (the arguments, the
//! frame, the decoded payload, the reply) of slightly different sizes, so each was mapped,
//! faulted in page by page and unmapped again: the 1 MiB echo (`bench --workload w3-large`)
//! spent about 2 ms of CPU per call on each side, 10x the socket floor's 0.2 ms; with these
//! settings 0.6-0.7 ms.
//!
//! The price: up to [`trim_threshold`] bytes of freed heap may stay with the process after a
//! burst of large calls (the kernel gets it back past that). Off with
//! `Cluster::tune_malloc(false)`. Nothing is done on other C libraries (musl has no such knob).

/// The allocation size past which glibc maps memory of its own: twice the largest frame (a
/// buffer that grows by doubling reaches that), at least 1 MiB, at most glibc's cap of 32 MiB.
pub(crate) fn mmap_threshold(max_frame: usize) -> usize {
    max_frame.saturating_mul(2).clamp(1 << 20, 32 << 20)
}

/// Free bytes at the top of the heap past which glibc returns them to the kernel.
pub(crate) fn trim_threshold(max_frame: usize) -> usize {
    mmap_threshold(max_frame) * 2
}

/// Sets glibc's thresholds for frames of at most `max_frame` bytes. Returns whether they were
/// set (false on another C library, or if glibc refused a value).
pub(crate) fn tune(max_frame: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let clamp = |n: usize| libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets the allocator's parameters; it is called at process start,
        // before any thread of this crate runs.
        #[allow(unsafe_code)]
        let set = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, clamp(mmap_threshold(max_frame))) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, clamp(trim_threshold(max_frame))) == 1
        };
        if !set {
            tracing::warn!(
                "glibc refused the allocator thresholds for large calls; running without"
            );
        }
        set
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = max_frame;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_frame_limit_within_glibcs_range() {
        assert_eq!(mmap_threshold(8 << 20), 16 << 20);
        assert_eq!(trim_threshold(8 << 20), 32 << 20);
        assert_eq!(mmap_threshold(4096), 1 << 20);
        assert_eq!(mmap_threshold(1 << 30), 32 << 20);
        assert_eq!(mmap_threshold(usize::MAX), 32 << 20);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert!(tune(8 << 20), "glibc takes the thresholds");
    }
}
