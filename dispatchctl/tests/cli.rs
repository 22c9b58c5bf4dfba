//! `dispatchctl` against a running cluster: status (table and JSON), per-method metrics that
//! equal the calls made, reload and stop, and its errors.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Output};
use std::time::Duration;

/// The tool, built by cargo for this package's tests.
fn dispatchctl() -> &'static str {
    env!("CARGO_BIN_EXE_dispatchctl")
}

fn ctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(dispatchctl())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run dispatchctl");
    println!(
        "$ dispatchctl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn status_metrics_reload_and_stop_through_the_tool() {
    let name = format!("ctl-test-{}", std::process::id());
    let cluster = support::Cluster::start(
        &[
            "metered",
            "--workers",
            "2",
            "--count",
            "50",
            "--explicit-ready",
            "--name",
            &name,
        ],
        &[],
    );
    cluster.await_stdout("RESULT metered", 2, Duration::from_secs(20));
    let log = cluster.stderr();
    let library = support::pid_after(&log, "started the library").expect("library pid");
    let workers: Vec<i32> = log
        .lines()
        .filter(|l| l.contains("started the worker"))
        .filter_map(|l| support::pid_after(l, "started the worker"))
        .collect();

    // Status: every process with the right pid and state; call counts equal the calls made.
    let status = json(&ctl(&["--cluster", &name, "status", "--json"], &[]));
    assert_eq!(status["name"], name.as_str());
    assert_eq!(status["master_pid"], cluster.pid());
    let procs = status["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 3);
    assert_eq!(procs[0]["role"], "library");
    assert_eq!(procs[0]["pid"], library);
    assert_eq!(procs[0]["calls"], 102);
    for p in &procs[1..] {
        assert_eq!(p["role"], "worker");
        assert!(
            workers.contains(&(p["pid"].as_i64().unwrap_or(0) as i32)),
            "{p}"
        );
        assert_eq!(p["state"], "ready");
        assert_eq!(p["calls"], 51);
        assert_eq!(p["in_flight"], 0);
        assert!(p["rss_kib"].as_u64().unwrap_or(0) > 0, "{p}");
    }

    // Per-method metrics: counts equal the calls made, errors by kind.
    let status = json(&ctl(
        &[
            "--cluster",
            &cluster.pid().to_string(),
            "status",
            "--methods",
            "--json",
        ],
        &[],
    ));
    let methods = status["methods"].as_array().expect("methods");
    let find = |m: &str| {
        methods
            .iter()
            .find(|x| x["service"] == "demo" && x["method"] == m)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(find("add")["calls"], 100);
    assert_eq!(find("add")["errors"], serde_json::json!([]));
    assert!(find("add")["p99_us"].as_u64().is_some());
    assert_eq!(find("checked_div")["calls"], 2);
    assert_eq!(
        find("checked_div")["errors"],
        serde_json::json!([["service", 2]])
    );

    // The human table.
    let table = ctl(&["--cluster", &name, "status", "--methods"], &[]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(&format!("cluster {name} (master pid {}", cluster.pid())),
        "{text}"
    );
    assert!(
        text.contains("ROLE") && text.contains("IN FLIGHT") && text.contains("demo.add"),
        "{text}"
    );

    // Reload, then stop, through the tool.
    let reload = ctl(&["--cluster", &name, "reload"], &[]);
    assert!(reload.status.success());
    assert!(String::from_utf8_lossy(&reload.stdout).contains("rolling reload started"));
    cluster.await_log("rolling reload complete", 1, Duration::from_secs(20));
    let stop = ctl(&["--cluster", &name, "stop"], &[]);
    assert!(stop.status.success());
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();
    // The Library logged its metrics when it stopped: the replacements made their 50 calls each
    // too.
    assert!(run.stderr.contains("demo.add: 200 calls"), "{}", run.stderr);
    assert!(
        run.stderr.contains("demo.checked_div: 4 calls"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("errors: service=4"), "{}", run.stderr);
}

#[test]
fn the_tools_errors_are_clear() {
    let empty = std::env::temp_dir().join(format!("dispatchctl-empty-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(empty.clone());
    std::fs::create_dir_all(&empty).expect("temp dir");
    let empty_str = empty.to_string_lossy().into_owned();
    let env = [
        ("TMPDIR", empty_str.as_str()),
        ("XDG_RUNTIME_DIR", empty_str.as_str()),
    ];

    let none = ctl(&["status"], &env);
    assert!(!none.status.success());
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(err.contains("no cluster is running for this user"), "{err}");
    assert!(err.contains(&empty_str), "{err}");

    let unknown = ctl(&["--cluster", "nope", "status"], &env);
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("no cluster named or with master pid `nope`"));

    let usage = ctl(&["frobnicate"], &env);
    assert!(String::from_utf8_lossy(&usage.stderr).contains("unknown command `frobnicate`"));

    // Another user's cluster (a live pid: this test's own; a dir owned by nobody).
    let foreign = empty.join(format!("dispatch-{}-0123456789ab", std::process::id()));
    std::fs::create_dir_all(&foreign).expect("foreign dir");
    if nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None).is_ok() {
        let denied = ctl(
            &["--cluster", &std::process::id().to_string(), "status"],
            &env,
        );
        assert!(!denied.status.success());
        let err = String::from_utf8_lossy(&denied.stderr);
        assert!(err.contains("permission denied"), "{err}");
        assert!(err.contains("belongs to uid 65534"), "{err}");
    } else {
        println!("not root: cannot make a directory of another user, the permission case is not exercised");
    }
}

/// Removes a test's directory when the test ends, passed or failed.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
