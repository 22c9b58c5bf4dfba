//! `examples/http.rs`, run as users run it: its port, its routes, its exit on SIGTERM.

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The example binary, built by `cargo test` next to this test's own binary.
fn example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile_dir.join("examples").join("http");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples; with a filtered run, `cargo build --examples` first",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn the_http_example_serves_both_routes_and_exits_zero_on_sigterm() {
    use std::os::unix::process::CommandExt;
    let port = free_port();
    let mut child = Command::new(example())
        .args(["--port", &port.to_string(), "--workers", "2"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("start the example");
    let pgid = child.id() as i32;
    let guard = scopeguard(pgid);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        first.contains(&format!("listening on 127.0.0.1:{port}")),
        "{first}"
    );

    let addr = format!("127.0.0.1:{port}");
    let (status, body) = support::http::get(&addr, "/").expect("GET /");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("1 from pid "), "{body}");
    let (status, body) = support::http::get(&addr, "/name").expect("GET /name");
    assert_eq!((status, body.as_str()), (200, "get name"));

    kill(Pid::from_raw(pgid), Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the example did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        support::running_in_group(pgid).is_empty(),
        "children outlived the example"
    );
    drop(guard);
}

/// Kills the example's process group if the test fails half-way.
fn scopeguard(pgid: i32) -> impl Drop {
    struct Guard(i32);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
    Guard(pgid)
}
