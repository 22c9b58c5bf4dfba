//! A `redis-server` of one test alone (loopback, free port, no persistence, killed on drop).
//! Included with `#[path]` by the tests that need it (`config_sync`, `fleet`,
//! `schedule_example`).

#![allow(dead_code, unreachable_pub)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one on a free loopback port and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::on(crate::support::free_port())
    }

    /// Starts one on `port` and waits until it answers PING.
    pub fn on(port: u16) -> RedisServer {
        let dir =
            std::env::temp_dir().join(format!("dispatch-redis-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut server = RedisServer {
            child: None,
            port,
            dir,
        };
        server.spawn(&[]);
        server
    }

    /// Runs the server with `extra` arguments and waits until it answers PING (with the
    /// `--requirepass` among them, if any).
    fn spawn(&mut self, extra: &[&str]) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: `.ci/run` installs it (apt-get install -y \
                 redis-server); these tests need a real Redis"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let password = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| extra.get(i + 1));
        loop {
            let ping = self.connection(password.copied()).and_then(|mut c| {
                redis::cmd("PING")
                    .query::<String>(&mut c)
                    .map_err(|e| e.to_string())
            });
            if ping.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {}: {ping:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection, with `password` if the server asks for one.
    pub fn connection(&self, password: Option<&str>) -> Result<redis::Connection, String> {
        let url = match password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => self.url(),
        };
        redis::Client::open(url)
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .map_err(|e| e.to_string())
    }

    /// A connection to it.
    pub fn client(&self) -> redis::Connection {
        self.connection(None).expect("connect to the test's Redis")
    }

    /// Kills the server at once (SIGKILL): connections drop without a goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (no persistence), with `extra` arguments.
    pub fn restart(&mut self, extra: &[&str]) {
        self.kill();
        self.spawn(extra);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
