//! A `redis-server` of one test alone (loopback, free port, no persistence, killed on drop), as
//! `tests/config_sync.rs` starts one. Included with `#[path]` by the tests that need it.

#![allow(dead_code, unreachable_pub)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Starts one on a free loopback port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let port = crate::support::free_port();
        let dir =
            std::env::temp_dir().join(format!("dispatch-redis-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
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
        let server = RedisServer {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = server.try_client().and_then(|mut c| {
                redis::cmd("PING")
                    .query::<String>(&mut c)
                    .map_err(|e| e.to_string())
            });
            if ping.is_ok() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer: {ping:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn try_client(&self) -> Result<redis::Connection, String> {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .map_err(|e| e.to_string())
    }

    /// A connection to it.
    pub fn client(&self) -> redis::Connection {
        self.try_client().expect("connect to the test's Redis")
    }
}

impl RedisServer {
    /// Kills the server at once (SIGKILL): connections drop without a goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
