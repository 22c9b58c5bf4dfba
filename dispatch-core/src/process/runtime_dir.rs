//! The master's private runtime directory: mode 0700, unique per master, removed when the master
//! ends. Directories left by masters that died (SIGKILL) are removed at the next start.
//!
//! One concept despite its length: the directory's whole life (create, check its owner and mode,
//! recreate, find stale ones, remove), about a third of it tests of those checks.
//!
//! The directory is the first defence of the Library's socket: only its owner can reach a socket
//! inside it. So it is created only under a base directory that other users cannot tamper with
//! (one they cannot write to, or a sticky one like `/tmp`, where they cannot rename or remove
//! what is ours), it is named `dispatch-<master pid>-<12 random hex digits>` so that two clusters
//! never share one, and a stale one is removed only when everything says it is ours and dead.

use crate::cluster_error::ClusterError;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const PREFIX: &str = "dispatch-";
/// Random bytes in a runtime dir's name (written as twice as many hex digits).
const RANDOM_BYTES: usize = 6;
/// Permission bits of a runtime dir.
const DIR_MODE: u32 = 0o700;

/// A private directory for a cluster's sockets. Removed on drop.
#[derive(Debug)]
pub(crate) struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates `dispatch-<master pid>-<random>` under `$XDG_RUNTIME_DIR` (when it is ours and
    /// private) or the temp dir (when other users cannot tamper with it), first removing stale
    /// directories of dead masters of this user.
    ///
    /// # Errors
    /// When neither base directory is safe, or the directory cannot be created.
    pub(crate) fn create() -> Result<RuntimeDir, ClusterError> {
        let base = safe_base_dir()?;
        remove_stale(&base);
        let pid = std::process::id();
        for _ in 0..8 {
            let path = base.join(format!("{PREFIX}{pid}-{}", random_hex(RANDOM_BYTES)?));
            match fs::DirBuilder::new().mode(DIR_MODE).create(&path) {
                Ok(()) => {
                    let dir = RuntimeDir { path };
                    dir.make_private()?;
                    return Ok(dir);
                }
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

    /// Makes sure the directory is still there: creates it again (0700) if it was removed (a
    /// temp cleaner such as `systemd-tmpfiles` or `tmpreaper` removes what it thinks is old);
    /// returns whether it did.
    ///
    /// # Errors
    /// When something other than a private directory of this user now stands at its path
    /// (replaced by another file or another user's directory), or it cannot be created again.
    pub(crate) fn ensure(&self) -> Result<bool, ClusterError> {
        match self.path.symlink_metadata() {
            Ok(meta) => {
                let uid = nix::unistd::getuid().as_raw();
                if meta.is_dir() && meta.uid() == uid && meta.mode() & 0o777 == DIR_MODE {
                    Ok(false)
                } else {
                    Err(ClusterError::io(
                        format!(
                            "the runtime dir {} was replaced by something that is not a private \
                             directory of this user; stopping, as its sockets are no longer safe",
                            self.path.display()
                        ),
                        io::Error::from(io::ErrorKind::PermissionDenied),
                    ))
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(DIR_MODE)
                    .create(&self.path)
                    .map_err(|e| {
                        ClusterError::io(
                            format!(
                                "the runtime dir {} was removed and cannot be created again",
                                self.path.display()
                            ),
                            e,
                        )
                    })?;
                self.make_private()?;
                Ok(true)
            }
            Err(e) => Err(ClusterError::io(
                format!("cannot check the runtime dir {}", self.path.display()),
                e,
            )),
        }
    }

    /// Sets the mode to exactly 0700 (`mkdir` applies the umask, which could leave less) and
    /// checks that the directory just created is a directory of ours.
    fn make_private(&self) -> Result<(), ClusterError> {
        let fail = |e: io::Error| {
            ClusterError::io(
                format!(
                    "cannot make the runtime dir {} private",
                    self.path.display()
                ),
                e,
            )
        };
        fs::set_permissions(&self.path, fs::Permissions::from_mode(DIR_MODE)).map_err(fail)?;
        let meta = self.path.symlink_metadata().map_err(fail)?;
        let uid = nix::unistd::getuid().as_raw();
        if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o777 != DIR_MODE {
            return Err(fail(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "it is not a directory of this user with mode 0700",
            )));
        }
        Ok(())
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

/// Where runtime dirs live: `$XDG_RUNTIME_DIR` if it is a private directory of this user, else
/// the system temp dir. (The admin tools look for running clusters here too.)
pub(crate) fn base_dir() -> PathBuf {
    let uid = nix::unistd::getuid().as_raw();
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() && meta.uid() == uid && meta.mode() & 0o022 == 0 => {
                return dir
            }
            Ok(_) => tracing::debug!(
                dir = %dir.display(),
                "XDG_RUNTIME_DIR is not a private directory of this user: using the temp dir"
            ),
            Err(e) => tracing::debug!(dir = %dir.display(), "XDG_RUNTIME_DIR unusable: {e}"),
        }
    }
    std::env::temp_dir()
}

/// [`base_dir`], if other users cannot tamper with what we create there.
fn safe_base_dir() -> Result<PathBuf, ClusterError> {
    let base = base_dir();
    let meta = fs::metadata(&base)
        .map_err(|e| ClusterError::io(format!("cannot use the temp dir {}", base.display()), e))?;
    match unsafe_base(&meta, nix::unistd::getuid().as_raw()) {
        None => Ok(base),
        Some(why) => Err(ClusterError::io(
            format!(
                "cannot create a private runtime dir in {}: {why}; set XDG_RUNTIME_DIR or TMPDIR \
                 to a directory only this user can write to",
                base.display()
            ),
            io::Error::from(io::ErrorKind::PermissionDenied),
        )),
    }
}

/// Why a base directory is unsafe for runtime dirs, or `None` when it is safe: a directory owned
/// by this user or root, that others cannot write to, or sticky (others cannot rename or remove
/// what we create there).
fn unsafe_base(meta: &fs::Metadata, uid: u32) -> Option<&'static str> {
    if !meta.is_dir() {
        return Some("it is not a directory");
    }
    if meta.uid() != uid && meta.uid() != 0 {
        return Some("it belongs to another user");
    }
    let others_write = meta.mode() & 0o022 != 0;
    let sticky = meta.mode() & 0o1000 != 0;
    if others_write && !sticky {
        return Some("other users can write to it and it is not sticky");
    }
    None
}

/// The master pid in a runtime dir's name, if the name is exactly `dispatch-<pid>-<hex>` as
/// [`RuntimeDir::create`] makes it. Anything else (`dispatch-2024-notes`) is not a runtime dir.
pub(crate) fn master_pid_of(dir_name: &str) -> Option<u32> {
    let rest = dir_name.strip_prefix(PREFIX)?;
    let (pid, random) = rest.split_once('-')?;
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    let hex = random.len() == 2 * RANDOM_BYTES
        && random
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !digits || !hex {
        return None;
    }
    // Pids are positive and fit in an i32 (`kill` takes one).
    pid.parse()
        .ok()
        .filter(|pid: &u32| *pid > 0 && i32::try_from(*pid).is_ok())
}

/// Removes runtime dirs of this user whose master is dead. A directory is removed only if its
/// name is exactly one [`RuntimeDir::create`] makes, it is a real directory (not a link) of this
/// user with mode 0700, its master pid is not alive, and no Library answers on its socket (a
/// master in another pid namespace looks dead from here).
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let uid = nix::unistd::getuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(master_pid_of)
            .and_then(|pid| i32::try_from(pid).ok())
        else {
            continue;
        };
        let path = entry.path();
        // symlink_metadata: never follow a link someone planted under our prefix.
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o777 != DIR_MODE {
            continue;
        }
        if pid_alive(pid) || a_socket_answers(&path) {
            continue;
        }
        // remove_dir_all does not follow links inside the directory.
        match fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed the runtime dir of dead master {pid}")
            }
            Err(e) => {
                tracing::debug!(dir = %path.display(), "cannot remove a stale runtime dir: {e}")
            }
        }
    }
}

/// Whether a process accepts connections on any socket in `dir` (the Library's, the master's
/// admin socket): then the cluster is alive, whatever its pid says.
fn a_socket_answers(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        entry
            .file_type()
            .is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_socket(&t))
            && std::os::unix::net::UnixStream::connect(entry.path()).is_ok()
    })
}

/// Whether process `pid` exists (it may belong to another user).
pub(crate) fn pid_alive(pid: i32) -> bool {
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

    /// A scratch base directory, removed on drop.
    struct Base(PathBuf);

    impl Base {
        fn new() -> Base {
            let path = std::env::temp_dir().join(format!(
                "dispatch-test-base-{}",
                random_hex(4).expect("rand")
            ));
            fs::create_dir(&path).expect("base");
            Base(path)
        }

        fn dir(&self, name: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            fs::create_dir(&path).expect("dir");
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            path
        }
    }

    impl Drop for Base {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn private_unique_and_removed() {
        let a = RuntimeDir::create().expect("create");
        let b = RuntimeDir::create().expect("create");
        assert_ne!(a.path(), b.path());
        let meta = fs::symlink_metadata(a.path()).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), nix::unistd::getuid().as_raw());
        let name = a.path().file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(master_pid_of(name), Some(std::process::id()));
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn a_removed_dir_is_created_again_and_a_replaced_one_refused() {
        let dir = RuntimeDir::create().expect("create");
        assert!(!dir.ensure().expect("there"));
        fs::remove_dir_all(dir.path()).expect("remove");
        assert!(dir.ensure().expect("recreated"));
        let meta = fs::symlink_metadata(dir.path()).expect("meta");
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        fs::remove_dir_all(dir.path()).expect("remove");
        fs::write(dir.path(), b"not a dir").expect("file");
        assert!(dir.ensure().is_err());
        fs::remove_file(dir.path()).expect("remove");
    }

    #[test]
    fn only_names_we_make_are_ours() {
        assert_eq!(master_pid_of("dispatch-123-0123456789ab"), Some(123));
        for name in [
            "dispatch-2024-notes",
            "dispatch-123-0123456789AB",
            "dispatch-123-0123456789a",
            "dispatch-123-0123456789abc",
            "dispatch--0123456789ab",
            "dispatch-0-0123456789ab",
            "dispatch-12x-0123456789ab",
            "dispatch-99999999999-0123456789ab",
            "dispatch-4294967295-0123456789ab",
            "other-123-0123456789ab",
            "dispatch-123",
        ] {
            assert_eq!(master_pid_of(name), None, "{name}");
        }
    }

    #[test]
    fn stale_dirs_of_dead_masters_are_removed_and_nothing_else() {
        let base = Base::new();
        // pid 0x7ffffffe is never alive.
        let stale = base.dir("dispatch-2147483646-0123456789ab", 0o700);
        fs::write(stale.join("leftover"), b"x").expect("file");
        let live = base.dir(
            &format!("dispatch-{}-0123456789ab", std::process::id()),
            0o700,
        );
        let not_ours_by_name = base.dir("dispatch-2147483646-notes", 0o700);
        let not_private = base.dir("dispatch-2147483646-aaaaaaaaaaaa", 0o755);
        // A link under our prefix, pointing at a directory that must survive.
        let target = base.dir("target", 0o700);
        let link = base.0.join("dispatch-2147483646-bbbbbbbbbbbb");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        // A dead pid, but a Library still answers (a master in another pid namespace).
        let answering = base.dir("dispatch-2147483646-cccccccccccc", 0o700);
        let _listener =
            std::os::unix::net::UnixListener::bind(answering.join("library.sock")).expect("listen");
        // A dead pid and a socket nobody listens on any more: stale.
        let dead_socket = base.dir("dispatch-2147483646-dddddddddddd", 0o700);
        drop(
            std::os::unix::net::UnixListener::bind(dead_socket.join("library.sock"))
                .expect("listen"),
        );

        remove_stale(&base.0);

        assert!(!stale.exists());
        assert!(live.exists());
        assert!(not_ours_by_name.exists());
        assert!(not_private.exists());
        assert!(link.symlink_metadata().is_ok() && target.exists());
        assert!(answering.exists());
        assert!(!dead_socket.exists());
    }

    #[test]
    fn a_base_others_can_tamper_with_is_refused() {
        let base = Base::new();
        let uid = nix::unistd::getuid().as_raw();
        let check = |mode: u32| {
            let dir = base.dir(&format!("m{mode:o}"), mode);
            unsafe_base(&fs::metadata(&dir).expect("meta"), uid)
        };
        assert_eq!(check(0o700), None);
        assert_eq!(check(0o755), None);
        // Like /tmp: world-writable but sticky.
        assert_eq!(check(0o1777), None);
        assert!(check(0o777).is_some());
        assert!(check(0o770).is_some());
        let file = base.0.join("file");
        fs::write(&file, b"x").expect("file");
        assert!(unsafe_base(&fs::metadata(&file).expect("meta"), uid).is_some());
        if uid != 0 {
            // Owned by root is fine (as /tmp is); owned by someone else is not.
            assert!(unsafe_base(&fs::metadata("/").expect("meta"), uid).is_none());
        }
    }
}
