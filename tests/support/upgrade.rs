//! For the binary-upgrade and systemd tests: the app's two builds installed at one path (and
//! replaced there, as a deploy does), `dispatchctl`, and HTTP load that records each request's
//! latency and reply.

use super::TempPath;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Build 1 of the upgrade fixture.
pub fn v1() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_dispatch-upgrade-v1") {
        Some(path) => path.into(),
        None => panic!("the upgrade fixtures need the `axum` feature"),
    }
}

/// Build 2 of the upgrade fixture.
pub fn v2() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_dispatch-upgrade-v2") {
        Some(path) => path.into(),
        None => panic!("the upgrade fixtures need the `axum` feature"),
    }
}

/// `dispatchctl`, built next to the test binaries (`cargo test --workspace` builds it; with a
/// filtered run, `cargo build -p dispatchctl` first).
pub fn dispatchctl() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("dispatchctl");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p dispatchctl` first",
        path.display()
    );
    path
}

/// Runs `dispatchctl args…`; killed (and the test failed) if it runs over a minute.
pub fn ctl(args: &[&str]) -> Output {
    let mut child = Command::new(dispatchctl())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dispatchctl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for dispatchctl").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap dispatchctl");
            panic!(
                "dispatchctl {args:?} did not answer within 60 s: {}",
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("read dispatchctl's output")
}

/// stdout and stderr of a run, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The app, installed at a path of its own (a deploy replaces the file there).
pub struct Installed {
    dir: TempPath,
    pub path: PathBuf,
}

impl Installed {
    /// Copies `build` to `<temp>/<prefix>-<pid>/app`.
    pub fn new(prefix: &str, build: &std::path::Path) -> Installed {
        let dir = TempPath::new(prefix);
        std::fs::create_dir_all(&dir.0).expect("create the install dir");
        let path = dir.0.join("app");
        std::fs::copy(build, &path).expect("install build 1");
        Installed { dir, path }
    }

    /// Replaces the file atomically with `build` (copy beside it, then rename over it).
    pub fn replace_with(&self, build: &std::path::Path) {
        let tmp = self.dir.0.join("app.new");
        std::fs::copy(build, &tmp).expect("copy the new build");
        std::fs::rename(&tmp, &self.path).expect("rename the new build into place");
    }
}

/// One request: when it was sent, how long it took, its outcome.
#[derive(Debug, Clone)]
pub struct Sample {
    pub sent: Instant,
    pub latency: Duration,
    pub ok: bool,
    /// `200 <body>`, `503 <error>` or the I/O error.
    pub detail: String,
}

/// `threads` clients sending `GET /` back to back (one connection each) until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: &str, threads: usize) -> Load {
        Load::start_on(addr, threads, "/")
    }

    /// [`Load::start`] on another path.
    pub fn start_on(addr: &str, threads: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (addr, stop, samples) =
                    (addr.to_owned(), Arc::clone(&stop), Arc::clone(&samples));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let (ok, detail) = match super::http::get(&addr, path) {
                            Ok((200, body)) => (true, format!("200 {}", body.trim())),
                            Ok((code, body)) => (false, format!("{code} {}", body.trim())),
                            Err(e) => (false, e.to_string()),
                        };
                        let latency = sent.elapsed();
                        if let Ok(mut s) = samples.lock() {
                            s.push(Sample {
                                sent,
                                latency,
                                ok,
                                detail,
                            });
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            threads,
        }
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops the clients and returns every sample.
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Waits until no process of group `pgid` runs; panics after `limit`.
pub fn await_group_gone(pgid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !super::running_in_group(pgid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes of group {pgid} still run after {limit:?}: {:?}",
            super::running_in_group(pgid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` runs (not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_owned()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

/// Kills process group `.0` when dropped (a test that starts a cluster by hand).
pub struct GroupGuard(pub i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        super::kill_group(self.0);
    }
}
