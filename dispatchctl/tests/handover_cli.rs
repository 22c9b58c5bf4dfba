//! `dispatchctl reload --library` against a running cluster under load (issue 14 item 2): the
//! Library is replaced, no call fails, and `status` shows the handover.

#[path = "../../tests/support/mod.rs"]
mod support;

use nix::sys::signal::Signal;
use std::process::Command;
use std::time::{Duration, Instant};

/// The handover fixture, built next to this test binary (`cargo test --workspace`, or
/// `cargo build --bin dispatch-handover-fixture` first).
fn fixture() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("dispatch-handover-fixture");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bin dispatch-handover-fixture` first",
        path.display()
    );
    path
}

fn ctl(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dispatchctl"))
        .args(args)
        .output()
        .expect("run dispatchctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("$ dispatchctl {}\n{text}", args.join(" "));
    (out.status.success(), text)
}

#[test]
fn reload_library_under_2_workers_x_32_calls_fails_no_call() {
    let cluster = support::Cluster::start_bin(
        fixture(),
        &["--workers", "2", "--calls", "32", "--work-ms", "5"],
        &[],
    );
    cluster.await_log("cluster ready", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let master = cluster.pid().to_string();
    let asked = Instant::now();
    let (ok, text) = ctl(&["--cluster", &master, "reload", "--library"]);
    let answered = asked.elapsed();
    assert!(ok && text.contains("new library pid"), "{text}");
    cluster.await_log(" complete in ", 1, Duration::from_secs(60));
    let (ok, status) = ctl(&["--cluster", &master, "status"]);
    assert!(
        ok && status.contains("library: last handover 1 (requested)"),
        "{status}"
    );
    std::thread::sleep(Duration::from_millis(300));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    let lines = run.lines("RESULT ");
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    let failed: f64 = lines.iter().map(|l| support::number(l, "failed")).sum();
    let calls: f64 = lines.iter().map(|l| support::number(l, "ok")).sum();
    eprintln!(
        "measured: dispatchctl reload --library answered in {answered:?}; {calls} calls ok, \
         {failed} failed"
    );
    assert_eq!(failed, 0.0, "{}", run.stdout);
}
