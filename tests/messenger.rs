//! The messenger between real processes: order, delivery before ready, random spread, addressed
//! sends, published values across Library restarts, membership and lifecycle events.

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;

#[test]
fn ten_thousand_messages_reach_every_worker_in_order_and_early_ones_are_not_lost() {
    let run = support::run(
        &[
            "messages",
            "--workers",
            "2",
            "--count",
            "10000",
            "--early",
            "100",
        ],
        &[],
        Duration::from_secs(60),
    );
    run.assert_success();
    let lines = run.lines("RESULT messages");
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for line in lines {
        println!("{line}");
        // 100 messages sent by the Library during its init, before any worker existed.
        assert_eq!(support::field(line, "early"), Some("100"), "{line}");
        assert_eq!(support::field(line, "received"), Some("10000"), "{line}");
        assert_eq!(support::field(line, "in_order"), Some("true"), "{line}");
    }
}

#[test]
fn send_random_spreads_over_every_worker() {
    let run = support::run(
        &["random", "--workers", "3", "--count", "1000"],
        &[],
        Duration::from_secs(30),
    );
    run.assert_success();
    let hits: Vec<f64> = run
        .lines("RESULT random")
        .iter()
        .map(|l| support::number(l, "hits"))
        .collect();
    println!("send_random hits per worker: {hits:?}");
    assert_eq!(hits.len(), 3);
    assert_eq!(hits.iter().sum::<f64>(), 1000.0);
    assert!(hits.iter().all(|h| *h > 0.0), "a worker got none: {hits:?}");
}

#[test]
fn send_to_reaches_one_pid_and_an_unknown_pid_is_an_error() {
    let run = support::run(
        &["addressed", "--workers", "2"],
        &[],
        Duration::from_secs(30),
    );
    run.assert_success();
    let unknown = run.lines("RESULT unknown_pid")[0];
    assert!(
        unknown.contains("no process of the cluster has pid 1"),
        "{unknown}"
    );
    let ping = run.lines("RESULT ping")[0];
    assert!(ping.contains("worker=1"), "{ping}");
    assert!(ping.contains("hello from"), "{ping}");
    let library = run.lines("RESULT library_ping")[0];
    assert!(library.contains("to the library"), "{library}");
}

#[test]
fn a_published_value_survives_library_restarts_and_membership_follows_restarts() {
    let state = support::TempPath::new("dispatch-versions");
    let state_str = state.as_str();
    let cluster = support::Cluster::start(
        &["versions", "--workers", "2"],
        &[("FIXTURE_STATE_FILE", &state_str)],
    );
    // Both workers get the first Library's value (published before they existed: replayed).
    cluster.await_stdout(" v=1 ", 2, Duration::from_secs(20));

    // Kill the Library: the new one publishes v2, which reaches the same subscriptions.
    let log = cluster.stderr();
    let library = support::pid_after(&log, "started the library").expect("library pid");
    kill(Pid::from_raw(library), Signal::SIGKILL).expect("kill the library");
    cluster.await_stdout(" v=2 ", 2, Duration::from_secs(20));
    cluster.await_stdout("library_restarted=", 2, Duration::from_secs(20));
    cluster.await_stdout("RESULT library_members", 2, Duration::from_secs(20));
    let workers: Vec<i32> = log
        .lines()
        .filter(|l| l.contains("started the worker"))
        .filter_map(|l| support::pid_after(l, "started the worker"))
        .collect();
    let stdout = cluster.stdout();
    let known = stdout
        .lines()
        .find(|l| l.starts_with("RESULT library_members"))
        .expect("library members");
    for pid in &workers {
        assert!(
            known.contains(&pid.to_string()),
            "the restarted Library does not know worker {pid}: {known}"
        );
    }

    // Kill worker 1: its replacement gets the latest value at once, and worker 0 sees it
    // leave and come back in the membership.
    let victim = support::pid_after(&log, "started the worker 1").expect("worker 1 pid");
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill worker 1");
    cluster.await_stdout(
        &format!("exited=1 pid={victim}"),
        1,
        Duration::from_secs(20),
    );
    cluster.await_stdout(" v=2 ", 3, Duration::from_secs(20));
    let log = cluster.stderr();
    let replacement = log
        .lines()
        .filter(|l| l.contains("started the worker 1"))
        .nth(1)
        .and_then(|l| support::pid_after(l, "started the worker 1"))
        .expect("worker 1 restarted");
    cluster.await_stdout(
        &format!("started=1 pid={replacement}"),
        1,
        Duration::from_secs(20),
    );
    // Worker 0's own membership names the replacement (worker 1's lines name it first: waiting
    // for any line with it raced worker 0's update against the SIGTERM below).
    let seen_by_worker_0 = |out: &str| {
        out.lines().any(|l| {
            l.contains("RESULT members worker=0") && l.contains(&format!("1:{replacement}"))
        })
    };
    let limit = std::time::Instant::now() + Duration::from_secs(20);
    while !seen_by_worker_0(&cluster.stdout()) {
        assert!(
            std::time::Instant::now() < limit,
            "worker 0 never listed the replacement {replacement}: {}",
            cluster.stdout()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();
    // The replacement's first value was the latest (v2), never the stale v1.
    let replacement_versions: Vec<&str> = run
        .lines("RESULT version")
        .into_iter()
        .filter(|l| l.contains(&format!("pid={replacement}")))
        .collect();
    assert!(
        replacement_versions[0].contains(" v=2 "),
        "{replacement_versions:?}"
    );
    assert!(
        replacement_versions[0].contains("latest=Some(2)"),
        "{replacement_versions:?}"
    );
    // Worker 0's last membership lists the Library and both workers with the new pid.
    let last = run
        .lines("RESULT members worker=0")
        .last()
        .map(|l| (*l).to_owned())
        .expect("membership lines");
    assert!(last.contains(&format!("1:{replacement}")), "{last}");
    assert!(!last.contains("library=0"), "{last}");
}
