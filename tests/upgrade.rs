//! Binary upgrade without downtime (issue 14): build 1 of an app serves HTTP (each request a
//! Library call) under continuous load; build 2 (other replies, a service method with another
//! signature) replaces the file on disk; `dispatchctl upgrade` moves every process, the master
//! included, to build 2 with no failed request or call. A build 2 that cannot start leaves
//! build 1 serving, and `dispatchctl` exits non-zero with the reason.

mod support;

use std::time::{Duration, Instant};
use support::upgrade::{alive, await_group_gone, ctl, text, v1, v2, Installed, Load};

/// The new master's pid, from `dispatchctl upgrade`'s answer.
fn new_master_pid(out: &str) -> u32 {
    out.split("new master pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no new master pid in {out:?}"))
}

#[test]
fn upgrade_under_load_moves_every_process_to_the_new_build_with_no_failure() {
    let app = Installed::new("dispatch-upgrade-ok", &v1());
    let name = format!("upgrade-ok-{}", std::process::id());
    let cluster = support::Cluster::start_bin(&app.path, &[], &[("UPGRADE_NAME", name.as_str())]);
    let old_master = cluster.pid();
    let addr = cluster.listen_addr();
    let load = Load::start(&addr, 4);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        load.samples()
            .iter()
            .all(|s| s.ok && s.detail.contains(" v1 ")),
        "build 1 serves: {:?}",
        load.samples().first()
    );

    app.replace_with(&v2());
    let started = Instant::now();
    let out = ctl(&["--cluster", &name, "upgrade"]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "dispatchctl upgrade failed: {}\n--- cluster log\n{}",
        text(&out),
        cluster.stderr()
    );
    let new_master = new_master_pid(&text(&out));
    assert_ne!(new_master, old_master, "the master was replaced too");
    // While the old master drains, its name already leads to the new one.
    let status = ctl(&["--cluster", &name, "status"]);
    assert!(
        text(&status).contains(&format!("master pid {new_master}")),
        "dispatchctl follows the new master at once: {}",
        text(&status)
    );

    // Load goes on through the old processes' drain.
    std::thread::sleep(Duration::from_secs(1));
    let samples = load.stop();
    let failed: Vec<_> = samples.iter().filter(|s| !s.ok).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the upgrade, first: {:?}\n--- log\n{}",
        failed.len(),
        samples.len(),
        failed.first(),
        cluster.stderr()
    );
    let last_v1 = samples
        .iter()
        .filter(|s| s.detail.contains(" v1 "))
        .map(|s| s.sent + s.latency)
        .max()
        .expect("build 1 answered");
    let first_v2 = samples
        .iter()
        .filter(|s| s.detail.contains(" v2 "))
        .map(|s| s.sent + s.latency)
        .min()
        .expect("build 2 answered");
    let all_v2_after = last_v1.saturating_duration_since(started);
    assert!(
        all_v2_after < Duration::from_secs(10),
        "build 1 still answered {all_v2_after:?} after the upgrade started"
    );
    let during: Vec<_> = samples.iter().filter(|s| s.sent >= started).collect();
    let max_latency = during.iter().map(|s| s.latency).max().unwrap_or_default();
    println!(
        "measured: upgrade took {took:?} (dispatchctl upgrade), first v2 reply {:?} and last v1 \
         reply {all_v2_after:?} after it started, {} requests ({} during the upgrade and drain) \
         0 failed, max latency during it {max_latency:?}",
        first_v2.saturating_duration_since(started),
        samples.len(),
        during.len()
    );

    // The old master retires; `dispatchctl` finds the new one by the cluster's name.
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(old_master) {
        assert!(Instant::now() < deadline, "the old master did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = ctl(&["--cluster", &name, "status"]);
    assert!(
        status.status.success() && text(&status).contains(&format!("master pid {new_master}")),
        "dispatchctl follows the new master: {}",
        text(&status)
    );
    let list = text(&ctl(&["list"]));
    assert_eq!(
        list.matches(&name).count(),
        1,
        "one cluster of that name: {list}"
    );
    let (code, body) = support::http::get(&addr, "/").expect("build 2 serves");
    assert!(
        code == 200 && body.starts_with("v2 hello-load,hello-load "),
        "{code} {body}"
    );

    let stop = ctl(&["--cluster", &name, "stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    await_group_gone(cluster.pid() as i32, Duration::from_secs(30));
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&format!("dispatch-{old_master}-"))
                || n.starts_with(&format!("dispatch-{new_master}-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "runtime dirs left: {leftovers:?}");
}

#[test]
fn a_new_build_that_cannot_start_leaves_the_old_one_serving() {
    let app = Installed::new("dispatch-upgrade-broken", &v1());
    let name = format!("upgrade-broken-{}", std::process::id());
    // Build 1 ignores the variable; build 2's Library fails its setup because of it.
    let cluster = support::Cluster::start_bin(
        &app.path,
        &[],
        &[("UPGRADE_NAME", name.as_str()), ("UPGRADE_V2_BROKEN", "1")],
    );
    let master = cluster.pid();
    let addr = cluster.listen_addr();
    let load = Load::start(&addr, 2);
    std::thread::sleep(Duration::from_millis(300));

    app.replace_with(&v2());
    let started = Instant::now();
    let out = ctl(&["--cluster", &name, "upgrade"]);
    let took = started.elapsed();
    let said = text(&out);
    assert!(
        !out.status.success(),
        "dispatchctl upgrade must fail: {said}"
    );
    assert!(
        said.contains("upgrade failed") && said.contains("UPGRADE_V2_BROKEN is set"),
        "the reason is given: {said}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let samples = load.stop();
    let failed: Vec<_> = samples.iter().filter(|s| !s.ok).collect();
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        samples.iter().all(|s| s.detail.contains(" v1 ")),
        "build 1 serves on"
    );
    println!(
        "measured: failed upgrade answered in {took:?} with: {}; {} requests, 0 failed",
        said.trim(),
        samples.len()
    );
    let status = text(&ctl(&["--cluster", &name, "status"]));
    assert!(
        status.contains(&format!("master pid {master}")),
        "the old master serves on: {status}"
    );
    let stop = ctl(&["--cluster", &name, "stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    let run = cluster.wait(Duration::from_secs(30));
    run.assert_success();
}

#[test]
fn sigusr2_upgrades_too() {
    let app = Installed::new("dispatch-upgrade-usr2", &v1());
    let name = format!("upgrade-usr2-{}", std::process::id());
    let cluster = support::Cluster::start_bin(&app.path, &[], &[("UPGRADE_NAME", name.as_str())]);
    let old_master = cluster.pid();
    let addr = cluster.listen_addr();
    let load = Load::start(&addr, 2);
    app.replace_with(&v2());
    let started = Instant::now();
    cluster.signal(nix::sys::signal::Signal::SIGUSR2);
    cluster.await_log("the old master handed over", 1, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(old_master) {
        assert!(Instant::now() < deadline, "the old master did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let samples = load.stop();
    assert!(samples.iter().all(|s| s.ok), "no request failed");
    let (code, body) = support::http::get(&addr, "/").expect("build 2 serves");
    assert!(code == 200 && body.starts_with("v2 "), "{code} {body}");
    println!(
        "measured: SIGUSR2 upgrade, old master gone after {took:?}, {} requests 0 failed",
        samples.len()
    );
    let stop = ctl(&["--cluster", &name, "stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    await_group_gone(cluster.pid() as i32, Duration::from_secs(30));
}

#[test]
fn a_file_that_is_not_a_cluster_fails_the_upgrade_with_its_exit() {
    use std::os::unix::fs::PermissionsExt;
    let app = Installed::new("dispatch-upgrade-script", &v1());
    let name = format!("upgrade-script-{}", std::process::id());
    let cluster = support::Cluster::start_bin(&app.path, &[], &[("UPGRADE_NAME", name.as_str())]);
    let addr = cluster.listen_addr();
    let script = app.path.with_file_name("script");
    std::fs::write(&script, "#!/bin/sh\necho 'not a cluster' >&2\nexit 3\n").expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    app.replace_with(&script);
    let out = ctl(&["--cluster", &name, "upgrade"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("exit status: 3"),
        "the exit is the reason: {said}"
    );
    let (code, body) = support::http::get(&addr, "/").expect("build 1 serves on");
    assert!(code == 200 && body.starts_with("v1 "), "{code} {body}");
    println!(
        "measured: upgrade to a non-cluster file refused: {}",
        said.trim()
    );
    let stop = ctl(&["--cluster", &name, "stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    cluster.wait(Duration::from_secs(30)).assert_success();
}

#[test]
fn the_cluster_handle_upgrades_from_the_masters_own_code() {
    let app = Installed::new("dispatch-upgrade-handle", &v1());
    let name = format!("upgrade-handle-{}", std::process::id());
    let trigger = app.path.with_file_name("trigger");
    let trigger_env = trigger.to_string_lossy().into_owned();
    let cluster = support::Cluster::start_bin(
        &app.path,
        &[],
        &[
            ("UPGRADE_NAME", name.as_str()),
            ("UPGRADE_TRIGGER", trigger_env.as_str()),
        ],
    );
    let old_master = cluster.pid();
    let addr = cluster.listen_addr();
    app.replace_with(&v2());
    std::fs::write(&trigger, "").expect("trigger");
    cluster.await_stdout("TRIGGER upgrade queued=true", 1, Duration::from_secs(30));
    cluster.await_log("the old master handed over", 1, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(old_master) {
        assert!(Instant::now() < deadline, "the old master did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, body) = support::http::get(&addr, "/").expect("build 2 serves");
    assert!(code == 200 && body.starts_with("v2 "), "{code} {body}");
    let stop = ctl(&["--cluster", &name, "stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    await_group_gone(cluster.pid() as i32, Duration::from_secs(30));
}

/// Issue 14 item 2 ("the Library handover ... used by upgrade"): a service with handover hooks
/// keeps its state across an upgrade, exactly, under continuous calls: the new Library holds
/// the calls to it until the old Library (which the drained old workers no longer call) hands
/// over its snapshot.
#[test]
fn a_counter_with_handover_hooks_keeps_every_increment_across_an_upgrade() {
    let app = Installed::new("dispatch-upgrade-state", &v1());
    let name = format!("upgrade-state-{}", std::process::id());
    let cluster = support::Cluster::start_bin(&app.path, &[], &[("UPGRADE_NAME", name.as_str())]);
    let old_master = cluster.pid();
    let addr = cluster.listen_addr();
    let load = Load::start_on(&addr, 4, "/count");
    std::thread::sleep(Duration::from_millis(500));

    app.replace_with(&v2());
    let started = Instant::now();
    let out = ctl(&["--cluster", &name, "upgrade"]);
    assert!(
        out.status.success(),
        "dispatchctl upgrade failed: {}\n--- cluster log\n{}",
        text(&out),
        cluster.stderr()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(old_master) {
        assert!(Instant::now() < deadline, "the old master did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Some calls on the new build after the state arrived.
    std::thread::sleep(Duration::from_millis(500));
    let samples = load.stop();
    let failed: Vec<_> = samples.iter().filter(|s| !s.ok).collect();
    assert!(
        failed.is_empty(),
        "{} of {} increments failed during the upgrade, first: {:?}\n--- log\n{}",
        failed.len(),
        samples.len(),
        failed.first(),
        cluster.stderr()
    );
    let (code, body) = support::http::get(&addr, "/count").expect("build 2 serves");
    let value: u64 = body
        .trim()
        .strip_prefix("count ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{code} {body}"));
    assert_eq!(
        value,
        samples.len() as u64 + 1,
        "every increment made before, during and after the upgrade counts once\n--- log\n{}",
        cluster.stderr()
    );
    let during: Vec<_> = samples.iter().filter(|s| s.sent >= started).collect();
    let max_latency = during.iter().map(|s| s.latency).max().unwrap_or_default();
    println!(
        "measured: counter {value} = {} increments + 1 across the upgrade, 0 failed, slowest \
         increment during it {max_latency:?} (held until the old Library's snapshot arrived)",
        samples.len()
    );

    let stop = ctl(&["--cluster", &name, "stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    await_group_gone(cluster.pid() as i32, Duration::from_secs(30));
}
