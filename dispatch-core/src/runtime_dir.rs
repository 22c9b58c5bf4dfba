//! The master's private runtime directory: mode 0700, unique per master, removed when the master
//! ends. Directories left by masters that died (SIGKILL) are removed at the next start.

use crate::cluster_error::ClusterError;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

const PREFIX: &str = "dispatch-";

/// A private directory for a cluster's sockets. Removed on drop.
#[derive(Debug)]
pub(crate) struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates `dispatch-<master pid>-<random>` under `$XDG_RUNTIME_DIR` (when it is ours) or
    /// the temp dir, first removing stale directories of dead masters of this user.
    pub(crate) fn create() -> Result<RuntimeDir, ClusterError> {
        let base = base_dir();
        remove_stale(&base);
        let pid = std::process::id();
        for _ in 0..8 {
            let path = base.join(format!("{PREFIX}{pid}-{}", random_hex(6)?));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(RuntimeDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(ClusterError::io(
                        format!("cannot create the runtime dir {}", path.display()),
                        e,
                    ))
                }
            }
        }
        Err(ClusterError::io(
            "cannot create a unique runtime dir",
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.path.display(), "cannot remove the runtime dir: {e}");
            }
        }
    }
}

/// `$XDG_RUNTIME_DIR` if it exists and belongs to us, else the system temp dir.
fn base_dir() -> PathBuf {
    let uid = nix::unistd::getuid().as_raw();
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if fs::metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == uid) {
            return dir;
        }
    }
    std::env::temp_dir()
}

/// Removes `dispatch-<pid>-*` directories owned by this user whose master pid is not alive.
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let uid = nix::unistd::getuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // symlink_metadata: never follow a link someone planted under our prefix.
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid || pid_alive(pid) {
            continue;
        }
        match fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::info!(dir = %entry.path().display(), "removed the runtime dir of dead master {pid}")
            }
            Err(e) => {
                tracing::debug!(dir = %entry.path().display(), "cannot remove a stale runtime dir: {e}")
            }
        }
    }
}

fn pid_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// `bytes` random bytes from the kernel, as hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, ClusterError> {
    let mut buf = vec![0_u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| ClusterError::io("cannot read /dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_unique_and_removed() {
        let a = RuntimeDir::create().expect("create");
        let b = RuntimeDir::create().expect("create");
        assert_ne!(a.path(), b.path());
        let mode = fs::metadata(a.path()).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn stale_dirs_of_dead_masters_are_removed() {
        let base = std::env::temp_dir().join(format!(
            "dispatch-test-base-{}",
            random_hex(4).expect("rand")
        ));
        fs::create_dir(&base).expect("base");
        // pid 0x7ffffffe is never alive.
        let stale = base.join("dispatch-2147483646-abc");
        let live = base.join(format!("dispatch-{}-abc", std::process::id()));
        fs::create_dir(&stale).expect("stale");
        fs::create_dir(&live).expect("live");
        remove_stale(&base);
        assert!(!stale.exists());
        assert!(live.exists());
        fs::remove_dir_all(&base).expect("cleanup");
    }
}
