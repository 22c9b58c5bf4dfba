//! Traces across processes (issue 16 item 5): a call's span in the Library is the child of the
//! caller's span in the worker. A real cluster logs JSON with `RUST_LOG=dispatch::call=info`;
//! each call's `call finished` line in the worker and in the Library carries its span's ids.

mod support;

use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use support::Cluster;

const CALLS: usize = 3;

/// One `call finished` line: the span's name, ids and the outcome.
#[derive(Debug)]
struct Finished {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    outcome: String,
    method: String,
}

fn finished_lines(stderr: &str) -> Vec<Finished> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["target"] == "dispatch::call" && v["fields"]["message"] == "call finished")
        .map(|v| {
            let span = &v["span"];
            Finished {
                name: text(span, "name").unwrap_or_default(),
                trace_id: text(span, "trace_id").expect("trace_id on the span"),
                span_id: text(span, "span_id").expect("span_id on the span"),
                parent_span_id: text(span, "parent_span_id"),
                outcome: text(&v["fields"], "outcome").unwrap_or_default(),
                method: text(span, "method").unwrap_or_default(),
            }
        })
        .collect()
}

/// Runs the fixture and checks that every worker span has its Library span in the same trace,
/// as its child.
fn joined_traces(extra: &[&str]) {
    let calls = CALLS.to_string();
    let mut args = vec!["--calls", calls.as_str()];
    args.extend_from_slice(extra);
    let cluster = Cluster::start_bin(
        env!("CARGO_BIN_EXE_dispatch-traces-fixture"),
        &args,
        &[
            ("RUST_LOG", "info,dispatch::call=info"),
            ("DISPATCH_LOG_FORMAT", "json"),
        ],
    );
    cluster.await_stdout("RESULT calls_done", 1, Duration::from_secs(30));
    // Both ends of every call (CALLS echoes and one failure).
    cluster.await_log("call finished", 2 * (CALLS + 1), Duration::from_secs(30));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(30));
    run.assert_success();
    assert!(
        run.stdout.contains("failed=true"),
        "tracer.fail must fail\n{}",
        run.stdout
    );

    let lines = finished_lines(&run.stderr);
    let (workers, library): (Vec<_>, Vec<_>) = lines.iter().partition(|f| f.name == "call");
    assert!(
        library.iter().all(|f| f.name == "serve"),
        "spans are `call` (worker) or `serve` (Library): {lines:#?}"
    );
    assert_eq!(
        workers.len(),
        CALLS + 1,
        "one worker span per call: {lines:#?}"
    );
    assert_eq!(
        library.len(),
        CALLS + 1,
        "one Library span per call: {lines:#?}"
    );
    let served: HashMap<&str, &Finished> =
        library.iter().map(|f| (f.trace_id.as_str(), *f)).collect();
    let mut traces = HashSet::new();
    for call in &workers {
        let serve = served.get(call.trace_id.as_str()).unwrap_or_else(|| {
            panic!("no Library span in the worker's trace {call:?}: {lines:#?}")
        });
        assert_eq!(
            serve.parent_span_id.as_deref(),
            Some(call.span_id.as_str()),
            "the Library's span is the child of the worker's"
        );
        assert_ne!(serve.span_id, call.span_id, "each span has its own id");
        assert_eq!(serve.method, call.method);
        assert_eq!(
            serve.outcome, call.outcome,
            "both ends saw the same outcome"
        );
        assert_eq!(call.trace_id.len(), 32, "a 128-bit trace id in hex");
        assert_eq!(call.span_id.len(), 16, "a 64-bit span id in hex");
        traces.insert(call.trace_id.clone());
        println!(
            "measured: {} trace_id={} worker span_id={} library span_id={} parent_span_id={} outcome={}",
            call.method,
            call.trace_id,
            call.span_id,
            serve.span_id,
            serve.parent_span_id.as_deref().unwrap_or("-"),
            call.outcome
        );
    }
    assert_eq!(traces.len(), CALLS + 1, "every call is its own trace");
    let failed: Vec<_> = workers.iter().filter(|f| f.method == "fail").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].outcome, "error", "a failed call says so");
}

#[test]
fn a_call_is_one_trace_across_worker_and_library() {
    joined_traces(&[]);
}

#[test]
fn a_call_is_one_trace_on_a_multi_thread_library() {
    joined_traces(&["--library-threads", "2"]);
}

/// `RUST_LOG=info` alone: no span of a call is logged (they are off unless named).
#[test]
fn call_spans_are_off_unless_asked_for() {
    let cluster = Cluster::start_bin(
        env!("CARGO_BIN_EXE_dispatch-traces-fixture"),
        &["--calls", "3"],
        &[("RUST_LOG", "info"), ("DISPATCH_LOG_FORMAT", "json")],
    );
    cluster.await_stdout("RESULT calls_done", 1, Duration::from_secs(30));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(30));
    run.assert_success();
    assert!(
        !run.stderr.contains("dispatch::call"),
        "no call spans at RUST_LOG=info:\n{}",
        run.stderr
    );
}
