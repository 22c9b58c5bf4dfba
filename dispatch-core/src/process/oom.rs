//! The kernel's count of out-of-memory kills, to tell a SIGKILL from the OOM killer apart from
//! one another process sent: a log that says "out of memory" should be able to show it.

/// How many processes the kernel's out-of-memory killer has killed on this host since boot
/// (`oom_kill` in `/proc/vmstat`, Linux 4.13 and later; the whole host's, also in a
/// container); `None` where it cannot be read.
pub(crate) fn kills() -> Option<u64> {
    parse(&std::fs::read_to_string("/proc/vmstat").ok()?)
}

fn parse(vmstat: &str) -> Option<u64> {
    vmstat
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// Who sent a SIGKILL that the master did not, in words for a log, from the kernel's count of
/// OOM kills when the process started (`before`) and now.
pub(crate) fn sender(before: Option<u64>, now: Option<u64>) -> String {
    match (before, now) {
        (Some(before), Some(now)) if now > before => {
            let n = now - before;
            format!(
                "most likely by the kernel's out-of-memory killer: it killed {n} process{} on \
                 this host since this one started (see `dmesg`)",
                if n == 1 { "" } else { "es" }
            )
        }
        (Some(_), Some(_)) => "not by the master, nor by the kernel's out-of-memory killer (it \
                               killed nothing on this host since this one started)"
            .to_owned(),
        _ => "not by the master: by the kernel's out-of-memory killer or by another process"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_count_and_names_the_sender() {
        assert_eq!(parse("pgfault 12\noom_kill 3\npswpin 0\n"), Some(3));
        assert_eq!(parse("pgfault 12\n"), None);
        assert!(sender(Some(3), Some(4)).contains("killed 1 process on"));
        assert!(sender(Some(3), Some(5)).contains("killed 2 processes"));
        assert!(sender(Some(3), Some(3)).starts_with("not by the master, nor"));
        assert!(sender(None, Some(3)).contains("or by another process"));
        // This host's count is readable (Linux 4.13+), as the tests of real kills expect.
        assert!(kills().is_some());
    }
}
