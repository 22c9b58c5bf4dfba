//! One-way calls and services calling services (issue 15 items 5 and 6), against a real cluster
//! (`tests/fixtures/oneway.rs`). Each scenario runs once, shared by the tests that read it.
//!
//! Bounds are correctness bounds: a one-way call to a method that sleeps 2 s must return before
//! the method ends (measured ~0.1 ms idle; the bound is 1.5 s), and everything else is counted.

mod support;

use nix::sys::signal::Signal;
use std::sync::OnceLock;
use std::time::Duration;
use support::{field, number, Cluster, Run};

const CALLS: u64 = 10_000;

/// Runs `scenario` to its `RESULT done`, stops the cluster, and returns what it printed.
fn scenario(name: &str) -> Run {
    scenario_with(name, CALLS)
}

/// [`scenario`] with `calls` calls.
fn scenario_with(name: &str, calls: u64) -> Run {
    scenario_env(name, calls, &[])
}

/// [`scenario_with`] with extra environment.
fn scenario_env(name: &str, calls: u64, env: &[(&str, &str)]) -> Run {
    let calls = calls.to_string();
    let cluster = Cluster::start_bin(
        env!("CARGO_BIN_EXE_dispatch-oneway-fixture"),
        &[name, "--calls", &calls],
        env,
    );
    cluster.await_stdout("RESULT done", 1, Duration::from_secs(180));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(60));
    run.assert_success();
    assert!(
        run.stdout.contains("RESULT done ok=true"),
        "the scenario failed\n{}",
        run.stdout
    );
    run
}

fn oneway() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| scenario("oneway"))
}

fn behind() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| scenario_with("behind", 10))
}

fn local() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| scenario("local"))
}

/// The last line starting with `RESULT <prefix>`.
fn result<'a>(run: &'a Run, name: &str) -> &'a str {
    let prefix = format!("RESULT {name}");
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    assert!(!lines.is_empty(), "no `{prefix}` line\n{}", run.stdout);
    lines[lines.len() - 1]
}

#[test]
fn a_oneway_call_returns_before_its_method_ends_and_its_effect_follows() {
    let run = oneway();
    let returned = result(run, "slow_note returned_us=");
    let returned_us = number(returned, "returned_us");
    println!("measured: a one-way call to a method sleeping 2 s returned in {returned_us} µs");
    assert!(
        returned_us < 1_500_000.0,
        "the one-way call waited for its method: {returned}"
    );
    assert_eq!(
        field(returned, "note_right_after"),
        Some("\"\""),
        "the method had not run yet when the call returned: {returned}"
    );
    let effect = result(run, "slow_note effect=");
    assert_eq!(field(effect, "effect"), Some("\"hello\""), "{effect}");
    let after_ms = number(effect, "after_ms");
    println!("measured: its effect was seen {after_ms} ms after the call (the method sleeps 2 s)");
    assert!(after_ms >= 2000.0, "{effect}");
}

#[test]
fn a_panicking_oneway_method_is_logged_in_the_library_and_never_returned() {
    let run = oneway();
    assert_eq!(
        field(result(run, "explode "), "ok"),
        Some("true"),
        "the worker must see no error"
    );
    let logged = run
        .stderr
        .lines()
        .find(|l| l.contains("one-way call sink.explode from worker 0"))
        .unwrap_or_else(|| panic!("the Library logs the failure\n{}", run.stderr));
    assert!(
        logged.contains("role=\"library\"") && logged.contains("was told to fail (7)"),
        "logged by the Library, with the panic's message: {logged}"
    );
    assert!(logged.contains("(pid "), "with the caller's pid: {logged}");
    // Counted in the method's metrics (logged when the Library stops).
    let metrics = run
        .stderr
        .lines()
        .find(|l| l.contains("sink.explode: 1 calls"))
        .unwrap_or_else(|| panic!("the method's metrics count it\n{}", run.stderr));
    assert!(metrics.contains("panicked=1"), "{metrics}");
    println!("measured: logged `{logged}`");
}

#[test]
fn a_oneway_call_is_one_trace_whose_library_span_ends_with_the_method() {
    let run = scenario_env(
        "oneway",
        1,
        &[("RUST_LOG", "info,dispatch::call=info"), ("NO_COLOR", "1")],
    );
    let finished = |role: &str| {
        run.stderr
            .lines()
            .find(|l| {
                l.contains(&format!("role=\"{role}\""))
                    && l.contains("method=\"slow_note\"")
                    && l.contains("call finished")
            })
            .unwrap_or_else(|| panic!("no {role} span of sink.slow_note\n{}", run.stderr))
    };
    let (worker, library) = (finished("worker"), finished("library"));
    let id = |line: &str, key: &str| {
        let start = line.find(&format!(" {key}=")).map(|i| i + key.len() + 2);
        start.map(|i| line[i..].split([' ', '}']).next().unwrap_or("").to_owned())
    };
    assert_eq!(id(worker, "trace_id"), id(library, "trace_id"), "one trace");
    assert_eq!(
        id(worker, "span_id"),
        id(library, "parent_span_id"),
        "the Library's span is the child of the worker's:\n{worker}\n{library}"
    );
    println!("measured: worker span `{worker}`\nLibrary span `{library}`");
}

#[test]
fn ten_thousand_oneway_calls_all_run() {
    let run = oneway();
    let bumps = result(run, "bumps ");
    assert_eq!(number(bumps, "failed"), 0.0, "{bumps}");
    assert_eq!(number(bumps, "executed"), CALLS as f64, "{bumps}");
    println!(
        "measured: {CALLS} one-way calls sent at {} µs each, all run within {} ms; a unary \
         call: {} µs (debug build, one worker)",
        number(bumps, "oneway_us_per_call"),
        number(bumps, "all_executed_ms"),
        number(bumps, "unary_us_per_call"),
    );
}

#[test]
fn oneway_calls_past_the_budget_fail_as_unavailable_and_every_sent_one_runs() {
    let run = behind();
    let line = result(run, "behind ");
    let (sent, refused) = (number(line, "sent"), number(line, "refused"));
    assert_eq!(sent + refused, 10.0, "{line}");
    // 4 places in the Library (running) + 4 unacknowledged in the worker: at most 8 are sent
    // before the first 2 s method ends.
    assert!(sent >= 8.0 && refused >= 1.0, "{line}");
    assert!(line.contains("the library is behind"), "{line}");
    assert_eq!(number(line, "ran"), sent, "every call sent runs: {line}");
    // The budget is shared: a unary call of the same worker waits behind them (the first four
    // hold every place for 2 s).
    assert!(
        number(line, "first_unary_ms") >= 1500.0,
        "a unary call takes a place too: {line}"
    );
    println!("measured: max_in_flight 4, 10 one-way calls of a 2 s method: {line}");
}

#[test]
fn a_service_calls_another_in_process_without_a_socket() {
    let run = local();
    let relay = result(run, "relay ");
    assert_eq!(number(relay, "bumps"), CALLS as f64, "{relay}");
    assert_eq!(
        field(relay, "sockets_before"),
        field(relay, "sockets_after"),
        "no socket opened: {relay}"
    );
    assert_eq!(field(relay, "sum"), Some("5"), "{relay}");
    assert!(relay.contains("odd=service:3 is odd"), "{relay}");
    assert_eq!(field(relay, "panicked"), Some("true"), "{relay}");
    assert_eq!(field(relay, "blocking"), Some("42"), "{relay}");
    // Through the method metrics, as a worker's calls.
    assert!(
        run.stderr.contains(&format!("sink.bump: {CALLS} calls")),
        "in-process calls are counted in the method's metrics\n{}",
        run.stderr
    );
    println!(
        "measured: an in-process call costs {} µs (debug build)",
        number(relay, "us_per_call")
    );
}

#[test]
fn the_inprocess_api_says_where_it_works() {
    let run = local();
    let worker = result(run, "worker_library ");
    assert_eq!(field(worker, "try_get_none"), Some("true"), "{worker}");
    assert!(
        worker.contains("outside the Library process")
            && worker.contains("Agent::get().<service>()"),
        "{worker}"
    );
    let library = result(run, "agent_in_library ");
    assert!(
        library.contains("Agent::get() called in the Library")
            && library.contains("dispatch::Library::get().<service>()"),
        "{library}"
    );
}
