//! Streams and keyed subscriptions across real processes (issue 15): one upstream feed per key
//! shared by every subscriber, the last value replayed, close when the last one leaves;
//! streams that survive a SIGKILLed Library; a stopped subscriber that stalls nobody and holds
//! the Library's memory to its buffer.

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};
use support::{field, Cluster};

const FIXTURE: &str = env!("CARGO_BIN_EXE_dispatch-streams-fixture");

fn line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in\n{stdout}"))
}

fn stop(cluster: Cluster) -> support::Run {
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    run
}

#[test]
fn keyed_subscriptions_share_one_feed_per_key_replay_the_last_value_and_close_once() {
    let cluster = Cluster::start_bin(FIXTURE, &["keyed"], &[]);
    cluster.await_stdout("RESULT done", 4, Duration::from_secs(120));
    let run = stop(cluster);
    let out = &run.stdout;
    eprintln!("{}", run.lines("RESULT").join("\n"));
    assert!(!out.contains("RESULT error"), "{out}");
    // Open ran once per distinct key: "a" (3 workers) and "b" (1).
    assert_eq!(
        field(
            line(out, "RESULT opens_after_subscribe"),
            "opens_after_subscribe"
        ),
        Some("2")
    );
    assert_eq!(out.matches("LIBRARY open key=a").count(), 1, "{out}");
    assert_eq!(out.matches("LIBRARY open key=b").count(), 1, "{out}");
    let keyed = run.lines("RESULT keyed");
    assert_eq!(keyed.len(), 4, "{out}");
    for l in &keyed {
        assert_eq!(field(l, "received"), Some("1000"), "{l}");
        assert_eq!(field(l, "in_order"), Some("true"), "{l}");
        assert_eq!(field(l, "foreign"), Some("0"), "{l}");
    }
    assert_eq!(keyed.iter().filter(|l| l.contains("key=a")).count(), 3);
    // The late subscriber of "a" got the latest value first, from the feed already open.
    let late = line(out, "RESULT late");
    assert_eq!(field(late, "first"), Some("Some(999)"), "{late}");
    assert_eq!(field(late, "opens"), Some("2"), "{late}");
    // The last subscriber of "a" leaving closed it, once; "b" is still open.
    let closed = line(out, "RESULT closed");
    assert_eq!(field(closed, "closes"), Some("1"), "{closed}");
    assert_eq!(out.matches("LIBRARY close key=a").count(), 1, "{out}");
    assert_eq!(
        line(out, "RESULT plain"),
        "RESULT plain values=[0, 1, 2, 3, 4]"
    );
    // Dropping a stream that never ends cancelled it in the Library.
    let cancelled = line(out, "RESULT cancelled");
    assert_eq!(cancelled, "RESULT cancelled first=[0, 1, 2] closes=1");
    println!("measured: opens=2 for 4 subscribers of 2 keys, closes=1 when \"a\"'s last left");
}

#[test]
fn streams_survive_a_sigkilled_library_flagged_as_resumed() {
    let cluster = Cluster::start_bin(FIXTURE, &["resume"], &[]);
    cluster.await_stdout("RESULT subscribed", 4, Duration::from_secs(60));
    let first = line(&cluster.stdout(), "RESULT subscribed").to_owned();
    let pid: i32 = field(&first, "library_pid")
        .and_then(|p| p.parse().ok())
        .expect("library pid");
    let killed = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL the library");
    cluster.await_stdout("RESULT resumed", 4, Duration::from_secs(60));
    let resumed_in = killed.elapsed();
    cluster.await_stdout("RESULT dangling", 1, Duration::from_secs(60));
    let run = stop(cluster);
    let out = &run.stdout;
    eprintln!("{}", run.lines("RESULT").join("\n"));
    assert!(!out.contains("RESULT error"), "{out}");
    let new = line(out, "RESULT new_library");
    assert_ne!(field(new, "pid"), Some(pid.to_string().as_str()), "{new}");
    // The new Library re-opened one feed per key, from the Agents' re-sent subscriptions.
    assert_eq!(field(new, "opens"), Some("2"), "{new}");
    for l in run.lines("RESULT resumed") {
        assert_eq!(field(l, "flagged"), Some("true"), "{l}");
        assert_eq!(field(l, "after"), Some("100"), "{l}");
        assert_eq!(field(l, "in_order"), Some("true"), "{l}");
    }
    let dangling = line(out, "RESULT dangling");
    assert_eq!(field(dangling, "dangling"), Some("0"), "{dangling}");
    println!(
        "measured: 4 streams resumed and 100 values each received {resumed_in:?} after the \
         SIGKILL; {dangling}"
    );
}

#[test]
fn a_stopped_subscriber_stalls_nobody_and_the_library_holds_its_buffer_only() {
    let go = support::TempPath::new("streams-go");
    let items = "100000";
    let cluster = Cluster::start_bin(
        FIXTURE,
        &["stall", "--go-file", &go.as_str(), "--items", items],
        &[],
    );
    cluster.await_stdout("RESULT subscribed", 3, Duration::from_secs(60));
    let stdout = cluster.stdout();
    let stalled = stdout
        .lines()
        .find(|l| l.starts_with("RESULT subscribed worker=2"))
        .expect("worker 2 subscribed");
    let pid: i32 = field(stalled, "pid")
        .and_then(|p| p.parse().ok())
        .expect("pid");
    let library: u32 = field(stalled, "library_pid")
        .and_then(|p| p.parse().ok())
        .expect("library pid");
    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP worker 2");
    let before = support::vm_hwm_kb(library).expect("library VmHWM");
    std::fs::write(go.as_str(), b"go").expect("go file");
    cluster.await_stdout("RESULT published", 1, Duration::from_secs(300));
    cluster.await_stdout("RESULT stall worker=", 2, Duration::from_secs(300));
    let after = support::vm_hwm_kb(library).expect("library VmHWM");
    kill(Pid::from_raw(pid), Signal::SIGCONT).expect("SIGCONT worker 2");
    cluster.await_stdout("RESULT stall worker=", 3, Duration::from_secs(120));
    let run = stop(cluster);
    let out = &run.stdout;
    eprintln!("{}", run.lines("RESULT").join("\n"));
    assert!(!out.contains("RESULT error"), "{out}");
    for w in ["0", "1"] {
        let l = line(out, &format!("RESULT stall worker={w} "));
        assert_eq!(field(l, "received"), Some(items), "every item: {l}");
        assert_eq!(field(l, "gaps"), Some("0"), "{l}");
    }
    let l2 = line(out, "RESULT stall worker=2 ");
    let missed: u64 = field(l2, "missed")
        .and_then(|m| m.parse().ok())
        .expect("missed");
    let received: u64 = field(l2, "received")
        .and_then(|m| m.parse().ok())
        .expect("received");
    assert!(
        missed > 0,
        "the stopped subscriber lost values, with a gap notice: {l2}"
    );
    assert_eq!(received + missed, 100_000, "values received + missed: {l2}");
    // 100 000 values of ~520 bytes would be 52 MB held for the stopped subscriber; its buffer
    // is 256 values (130 KB). The margin covers the allocator and the sockets' writers.
    let grown = after.saturating_sub(before);
    assert!(
        grown < 24 * 1024,
        "the Library's high-water RSS grew by {grown} KiB (from {before} KiB) while 100 000 \
         values went to a stopped subscriber"
    );
    println!(
        "measured: stopped subscriber missed {missed} values (received {received}); the \
         others received all {items}; the Library's VmHWM grew {grown} KiB (from {before} KiB); {}",
        line(out, "RESULT published")
    );
}

#[test]
fn the_registry_example_opens_one_upstream_watch_per_name_and_closes_each_once() {
    let run = Cluster::start_bin(
        support::example("registry"),
        &["--workers", "4", "--seconds", "2"],
        &[("RUST_LOG", "warn")],
    )
    .wait(Duration::from_secs(120));
    run.assert_success();
    let out = &run.stdout;
    for name in ["db", "cache"] {
        let opened = format!("upstream watch OPENED for {name:?}");
        let closed = format!("upstream watch CLOSED for {name:?}");
        assert_eq!(out.matches(&opened).count(), 1, "{out}");
        assert_eq!(out.matches(&closed).count(), 1, "{out}");
    }
    let updates: Vec<&str> = run
        .lines("worker ")
        .into_iter()
        .filter(|l| l.contains("updates of"))
        .collect();
    assert_eq!(updates.len(), 4, "{out}");
    println!("measured: {}", updates.join("; "));
}
