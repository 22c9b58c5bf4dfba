//! Running a real cluster in a test: the fixture binary as master, its Library and workers as
//! separate processes, all in a fresh process group that the guard kills on drop. Every run is
//! bounded in time and checked for survivors.

#![allow(dead_code, unreachable_pub)]

pub mod http;
pub mod upgrade;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The fixture binary: built by cargo for this package's integration tests, and found next to
/// the test binary from other packages' tests (`cargo test --workspace` builds it).
pub fn fixture() -> std::path::PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_dispatch-fixture") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("dispatch-fixture");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace`, or `cargo build --bin dispatch-fixture` first",
        path.display()
    );
    path
}

/// A finished run.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Lines of stdout starting with `prefix`.
    pub fn lines(&self, prefix: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    /// Panics with the whole output unless the cluster exited 0.
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "cluster failed: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// Output collected while the cluster runs.
type Shared = Arc<Mutex<String>>;

/// A started cluster. Dropping it kills its whole process group.
pub struct Cluster {
    child: Option<Child>,
    pgid: i32,
    started: Instant,
    stdout: Shared,
    stderr: Shared,
    readers: Vec<JoinHandle<()>>,
}

fn collect(pipe: impl Read + Send + 'static, into: Shared) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut all) = into.lock() {
                all.push_str(&line);
                all.push('\n');
            }
        }
    })
}

impl Cluster {
    /// Starts the fixture master with `args` and extra environment.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Cluster {
        Cluster::start_bin(fixture(), args, env)
    }

    /// Starts `binary` (another fixture, or an example) as the master, with `args` and extra
    /// environment.
    pub fn start_bin(
        binary: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let mut cmd = Command::new(binary);
        // RUST_LOG: the one in `env`, else the test's own, else `info`.
        cmd.args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = spawn_retrying_busy_text(&mut cmd).expect("start the fixture master");
        let pgid = child.id() as i32;
        let (stdout, stderr) = (Shared::default(), Shared::default());
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), Arc::clone(&stdout)),
            collect(child.stderr.take().expect("stderr"), Arc::clone(&stderr)),
        ];
        Cluster {
            child: Some(child),
            pgid,
            started: Instant::now(),
            stdout,
            stderr,
            readers,
        }
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.pgid as u32
    }

    /// What the cluster logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// What the cluster printed so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until stderr holds `needle` at least `count` times; panics after `limit`.
    pub fn await_log(&self, needle: &str, count: usize, limit: Duration) {
        self.await_output(needle, count, limit, true);
    }

    /// Waits until stdout holds `needle` at least `count` times; panics after `limit`.
    pub fn await_stdout(&self, needle: &str, count: usize, limit: Duration) {
        self.await_output(needle, count, limit, false);
    }

    fn await_output(&self, needle: &str, count: usize, limit: Duration, stderr: bool) {
        let deadline = Instant::now() + limit;
        loop {
            let text = if stderr { self.stderr() } else { self.stdout() };
            if text.matches(needle).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited {limit:?} for {count}× {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address of the cluster's shared listener, from the master's log.
    pub fn listen_addr(&self) -> String {
        self.await_log("cluster ready", 1, Duration::from_secs(20));
        let log = self.stderr();
        log.split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|a| a.trim_end_matches(',').to_owned())
            .expect("the master logs its listener")
    }

    /// Sends `signal` to the master.
    pub fn signal(&self, signal: Signal) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pgid), signal);
    }

    /// Waits for the master to exit (at most `limit` from now), then checks that no process of
    /// the cluster survived it.
    pub fn wait(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let mut child = self.child.take().expect("not yet waited");
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                kill_group(self.pgid);
                let _ = child.wait();
                panic!(
                    "the cluster did not finish within {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        let survivors = survivors_after(self.pgid, Duration::from_secs(2));
        kill_group(self.pgid);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let run = Run {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
            elapsed,
        };
        assert!(
            !survivors,
            "processes of the cluster outlived its master\n--- stderr\n{}",
            run.stderr
        );
        run
    }

    /// Kills the master with SIGKILL and returns how long it took until no process of the
    /// cluster was left (`None` if some survived `limit`).
    pub fn kill_master(mut self, limit: Duration) -> Option<Duration> {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
        let killed = Instant::now();
        let gone = !survivors_after(self.pgid, limit);
        let took = killed.elapsed();
        kill_group(self.pgid);
        gone.then_some(took)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(self.pgid);
            let _ = child.wait();
        }
    }
}

/// Runs the fixture to completion.
pub fn run(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    Cluster::start(args, env).wait(limit)
}

fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// Whether any process of group `pgid` is still running after `grace`. Zombies do not count:
/// they have exited and only wait for their new parent (this machine's init) to reap them.
fn survivors_after(pgid: i32, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        if running_in_group(pgid).is_empty() {
            return false;
        }
        if Instant::now() > deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The pids of group `pgid` that have not exited, from `/proc/<pid>/stat`.
pub fn running_in_group(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp …; comm may hold spaces, so split after its `)`.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields
                .first()
                .is_some_and(|state| *state != "Z" && *state != "X")
                && fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
        })
        .collect()
}

/// The value of `key=value` in a result line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// A number field of a result line.
pub fn number(line: &str, key: &str) -> f64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number `{key}` in {line:?}"))
}

/// The signal that ended a run, if any.
pub fn signal_of(status: &ExitStatus) -> Option<i32> {
    status.signal()
}

/// A pid from a log line: the value of `pid=` after the first `needle`.
pub fn pid_after(log: &str, needle: &str) -> Option<i32> {
    let at = log.find(needle)?;
    log[at..]
        .lines()
        .next()
        .and_then(|line| field(line, "pid"))
        .and_then(|p| p.parse().ok())
}

/// A path in the temp dir named for this test process, removed when dropped (passed or failed).
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    /// `<temp dir>/<prefix>-<pid>`, not created, anything there removed first.
    pub fn new(prefix: &str) -> TempPath {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    /// The path as a string, for environment variables.
    pub fn as_str(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary of example `name`, built by `cargo test` next to the test binaries.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples; with a filtered run, `cargo build --examples` first",
        path.display()
    );
    path
}

/// A TCP port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `VmHWM` (peak resident set) of process `pid`, in kB, from `/proc/<pid>/status`.
pub fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// `cmd.spawn()`, retried while it fails with ETXTBSY ("Text file busy"): a test that has just
/// written an executable can meet it when another test's thread forks at that moment (the
/// child holds a copy of the writer's descriptor until its exec closes it). Bounded: 5 s.
pub fn spawn_retrying_busy_text(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(nix::libc::ETXTBSY)
                    && std::time::Instant::now() < give_up =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}
