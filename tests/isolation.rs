//! One slow call never stalls the others, deadlines cancel calls in the Library, the runtime
//! flavour is the application's choice, and a worker that finishes at once counts as finished.
//! Every test runs real processes: `tests/fixtures/isolation.rs`.

mod support;

use std::time::{Duration, Instant};

fn fixture() -> &'static str {
    env!("CARGO_BIN_EXE_dispatch-isolation-fixture")
}

fn run(args: &[&str], limit: Duration) -> support::Run {
    support::Cluster::start_bin(fixture(), args, &[]).wait(limit)
}

#[test]
fn a_method_blocking_or_spinning_its_thread_does_not_stall_the_other_workers() {
    let run = run(
        &["stall", "--workers", "3", "--library-threads", "2"],
        Duration::from_secs(90),
    );
    run.assert_success();
    let others = run.lines("RESULT other");
    assert_eq!(others.len(), 2, "{}", run.stdout);
    let mut max_gap = 0.0_f64;
    for line in &others {
        assert!(support::number(line, "calls") > 10.0, "{line}");
        assert_eq!(support::number(line, "failed"), 0.0, "{line}");
        max_gap = max_gap.max(support::number(line, "max_gap_ms"));
    }
    let steps = run.lines("RESULT blocker");
    println!("measured: other workers' longest gap between successful calls: {max_gap} ms");
    for step in &steps {
        println!("measured: {step}");
    }
    // A wide bound for a busy machine: the blocker blocks, then spins, for 3 s each.
    assert!(
        max_gap < 1_000.0,
        "the other workers went {max_gap} ms without a successful call\n{}",
        run.stdout
    );
    let step = |name: &str| {
        steps
            .iter()
            .find(|l| l.contains(&format!("step={name} ")))
            .copied()
            .unwrap_or_else(|| panic!("no step {name}:\n{}", run.stdout))
    };
    for name in ["block", "spin"] {
        let line = step(name);
        assert_eq!(
            support::field(line, "deadline_exceeded"),
            Some("true"),
            "{line}"
        );
        assert!(support::number(line, "after_ms") < 2_500.0, "{line}");
        // The Library says which method held its thread.
        assert!(
            run.stderr.contains(&format!("`stalls.{name}`")),
            "no warning naming stalls.{name}:\n{}",
            run.stderr
        );
    }
    assert_eq!(support::field(step("big"), "ok"), Some("true"));
    // The call past its deadline was dropped in the Library: it stopped counting slices.
    let chunked = step("chunked");
    assert_eq!(support::field(chunked, "deadline_exceeded"), Some("true"));
    assert_eq!(
        support::field(chunked, "cancelled"),
        Some("true"),
        "{chunked}"
    );
    assert_eq!(
        support::field(chunked, "finished"),
        Some("false"),
        "{chunked}"
    );
    assert!(
        support::number(chunked, "slices") <= support::number(chunked, "slices_at_deadline") + 2.0,
        "the call kept running after its deadline: {chunked}"
    );
}

#[test]
fn block_in_place_works_on_a_multi_thread_worker_runtime() {
    let run = run(
        &["block-in-place", "--workers", "1", "--worker-threads", "2"],
        Duration::from_secs(30),
    );
    run.assert_success();
    let lines = run.lines("RESULT block_in_place");
    println!("measured: {lines:?}");
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    assert_eq!(support::field(lines[0], "value"), Some("42"));
}

#[test]
fn block_in_place_on_the_default_current_thread_runtime_fails_with_tokios_message() {
    let run = run(
        &["block-in-place", "--workers", "1", "--no-restart"],
        Duration::from_secs(30),
    );
    assert!(!run.status.success(), "{}", run.stderr);
    // The message the README quotes.
    assert!(
        run.stderr
            .contains("can call blocking only when running on the multi-threaded runtime"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_worker_that_finishes_at_once_counts_as_finished_20_times_out_of_20() {
    for own_subscriber in [false, true] {
        let started = Instant::now();
        let mut ok = 0;
        let mut failures = Vec::new();
        for _ in 0..20 {
            let mut args = vec!["finish", "--workers", "2", "--no-restart"];
            if own_subscriber {
                args.push("--own-subscriber");
            }
            let run = run(&args, Duration::from_secs(30));
            if run.status.success() {
                ok += 1;
            } else {
                failures.push(run.stderr);
            }
        }
        println!(
            "measured: workers returning Ok(()) at once{}: {ok} of 20 runs returned Ok(()) ({:?})",
            if own_subscriber {
                " with the app's own subscriber"
            } else {
                ""
            },
            started.elapsed()
        );
        assert_eq!(ok, 20, "first failure:\n{}", failures[0]);
    }
}
