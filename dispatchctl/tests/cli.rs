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

    // Another user's dir (a live pid: this test's own; a dir owned by nobody) is not a
    // cluster of ours: ignored (issue 12, row 9), never "permission denied".
    let foreign = empty.join(format!("dispatch-{}-0123456789ab", std::process::id()));
    std::fs::create_dir_all(&foreign).expect("foreign dir");
    if nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None).is_ok() {
        let ignored = ctl(
            &["--cluster", &std::process::id().to_string(), "status"],
            &env,
        );
        assert!(!ignored.status.success());
        let err = String::from_utf8_lossy(&ignored.stderr);
        assert!(err.contains("no cluster named or with master pid"), "{err}");
    } else {
        println!("not root: cannot make a directory of another user, the permission case is not exercised");
    }
}

/// A private base for runtime dirs (`TMPDIR` and `XDG_RUNTIME_DIR`), removed at the end.
fn private_base(name: &str) -> (RemoveOnDrop, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("base");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let s = dir.to_string_lossy().into_owned();
    (RemoveOnDrop(dir), s)
}

/// A long-running cluster named `name` in `base`, once it is ready.
fn serving(name: &str, base: &str) -> support::Cluster {
    let cluster = support::Cluster::start(
        &["serve", "--workers", "1", "--name", name],
        &[("TMPDIR", base), ("XDG_RUNTIME_DIR", base)],
    );
    cluster.await_log("cluster ready", 1, Duration::from_secs(30));
    cluster
}

/// Issue 12, row 9: another user creates 50 empty dirs named like our cluster's runtime dir
/// (our master's pid in the name) in the base. Before: `dispatchctl` failed with "the cluster
/// in …/dispatch-…-000000000160 belongs to uid 1001" and `list` no longer showed the real
/// cluster. Now dirs of other users are ignored (logged at debug level).
#[test]
fn dirs_of_other_users_named_like_ours_are_ignored() {
    let (_base, base) = private_base("dispatchctl-foreign");
    let env = [
        ("TMPDIR", base.as_str()),
        ("XDG_RUNTIME_DIR", base.as_str()),
    ];
    let name = format!("foreign-{}", std::process::id());
    let cluster = serving(&name, &base);
    let pid = cluster.pid();
    let mut made = 0;
    for i in 0..50_u64 {
        let dir = std::path::Path::new(&base).join(format!("dispatch-{pid}-{:012x}", 0x100 + i));
        std::fs::create_dir_all(&dir).expect("decoy");
        if nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(1001)), None).is_ok() {
            made += 1;
        }
    }
    if made == 0 {
        println!("not root: cannot make directories of another user; row 9 is not exercised");
        return;
    }
    let list = ctl(&["list"], &env);
    let out = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.status.success());
    assert!(out.contains(&name), "{out}");
    assert_eq!(out.lines().count(), 1, "only the real cluster: {out}");
    for args in [vec!["status"], vec!["--cluster", name.as_str(), "status"]] {
        let out = ctl(&args, &env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pid_s = pid.to_string();
    let out = ctl(&["--cluster", &pid_s, "status", "--json"], &env);
    assert_eq!(json(&out)["master_pid"], pid);
    println!("measured: {made} decoy dirs of uid 1001; list, status by default, name and pid all reach the real cluster");
}

/// Issue 12, row 10: idle connections on `admin.sock` (16, the cap, then 64) must not lock out
/// `dispatchctl`. Before: `status` failed 5 times out of 5 ("Connection reset by peer"). Now
/// the oldest idle connection makes room, and an idle one is closed after 1 s anyway.
#[test]
fn idle_admin_connections_cannot_lock_out_the_tool() {
    let (_base, base) = private_base("dispatchctl-idle");
    let env = [
        ("TMPDIR", base.as_str()),
        ("XDG_RUNTIME_DIR", base.as_str()),
    ];
    let name = format!("idle-{}", std::process::id());
    let cluster = serving(&name, &base);
    let socket = std::fs::read_dir(&base)
        .expect("base")
        .flatten()
        .map(|e| e.path().join("admin.sock"))
        .find(|p| p.exists())
        .expect("admin.sock");
    for idle in [16, 64] {
        let held: Vec<std::os::unix::net::UnixStream> = (0..idle)
            .filter_map(|_| std::os::unix::net::UnixStream::connect(&socket).ok())
            .collect();
        let mut ok = 0;
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            let started = std::time::Instant::now();
            let out = ctl(&["--cluster", &name, "status"], &env);
            slowest = slowest.max(started.elapsed());
            if out.status.success() {
                ok += 1;
            }
        }
        println!(
            "measured: {idle} idle connections held: status succeeded {ok}/5, slowest {slowest:?}"
        );
        assert_eq!(ok, 5, "{idle} idle connections locked the tool out");
        // Correctness bound: the tool's own deadline is 10 s.
        assert!(slowest < Duration::from_secs(8), "{slowest:?}");
        drop(held);
    }
    // An idle connection is closed by the master after its request deadline (1 s).
    let mut idle = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut buf = [0_u8; 1];
    let n = std::io::Read::read(&mut idle, &mut buf).unwrap_or(0);
    let took = started.elapsed();
    println!("measured: a silent admin connection was closed after {took:?}");
    assert_eq!(n, 0);
    assert!(took < Duration::from_secs(8), "{took:?}");
    drop(cluster);
}

/// Issue 12, row 12: two clusters of the same name. Before: `dispatchctl --cluster NAME stop`
/// stopped the newest silently. Now every command refuses, listing both (by pid), and both
/// keep running; choosing by pid works.
#[test]
fn an_ambiguous_name_is_an_error_listing_the_candidates() {
    let (_base, base) = private_base("dispatchctl-twins");
    let env = [
        ("TMPDIR", base.as_str()),
        ("XDG_RUNTIME_DIR", base.as_str()),
    ];
    let name = format!("twin-{}", std::process::id());
    let first = serving(&name, &base);
    let second = serving(&name, &base);
    for command in ["stop", "reload", "status"] {
        let out = ctl(&["--cluster", &name, command], &env);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{command} must fail: {err}");
        assert!(
            err.contains(&format!("2 clusters are named `{name}`")),
            "{err}"
        );
        assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
        assert!(err.contains(&format!("pid {}", second.pid())), "{err}");
    }
    // Nothing was stopped.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !first.stderr().contains("stop requested"),
        "{}",
        first.stderr()
    );
    assert!(
        !second.stderr().contains("stop requested"),
        "{}",
        second.stderr()
    );
    let pid = second.pid().to_string();
    let out = ctl(&["--cluster", &pid, "stop"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = second.wait(Duration::from_secs(30));
    run.assert_success();
    println!("measured: stop, reload and status by the shared name refused, listing pids {} and {}; stop by pid stopped only that one", first.pid(), pid);
    drop(first);
}

/// Removes a test's directory when the test ends, passed or failed.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
