//! Running a real cluster in a test: the fixture binary as master, its Library and workers as
//! separate processes, all in a fresh process group that the guard kills on drop. Every run is
//! bounded in time and checked for survivors.

#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The fixture binary, built by cargo for integration tests.
pub const FIXTURE: &str = env!("CARGO_BIN_EXE_dispatch-fixture");

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

/// A started cluster. Dropping it kills its whole process group.
pub struct Cluster {
    child: Option<Child>,
    pgid: i32,
}

impl Cluster {
    /// Starts the fixture master with `args` and extra environment.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Cluster {
        let mut cmd = Command::new(FIXTURE);
        cmd.args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = cmd.spawn().expect("start the fixture master");
        let pgid = child.id() as i32;
        Cluster {
            child: Some(child),
            pgid,
        }
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.pgid as u32
    }

    /// Waits for the master to exit (at most `limit`), then checks that no process of the
    /// cluster survived it.
    pub fn wait(mut self, limit: Duration) -> Run {
        let started = Instant::now();
        let mut child = self.child.take().expect("not yet waited");
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if started.elapsed() > limit {
                kill_group(self.pgid);
                let _ = child.wait();
                let stderr = err_reader.join().unwrap_or_default();
                panic!("the cluster did not finish within {limit:?}; stderr:\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = started.elapsed();
        let survivors = survivors_after(self.pgid, Duration::from_secs(2));
        kill_group(self.pgid);
        let run = Run {
            status,
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
            elapsed,
        };
        assert!(
            !survivors,
            "processes of the cluster outlived its master\n--- stderr\n{}",
            run.stderr
        );
        run
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
    // SAFETY-free: a plain syscall through nix.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Whether any process of group `pgid` is still alive after `grace`.
fn survivors_after(pgid: i32, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        let alive = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok();
        if !alive {
            return false;
        }
        if Instant::now() > deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `key=value` fields of a result line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// The signal that ended a run, if any.
pub fn signal_of(status: &ExitStatus) -> Option<i32> {
    status.signal()
}
