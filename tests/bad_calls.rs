//! Calls that go wrong get a typed error, and the connection and the Library keep serving.

mod support;

use std::time::Duration;

#[test]
fn unknown_names_panics_service_errors_and_oversized_payloads_are_typed_errors() {
    let run = support::run(&["errors", "--workers", "2"], &[], Duration::from_secs(30));
    run.assert_success();
    for id in ["0", "1"] {
        let one = |key: &str| -> String {
            let prefix = format!("RESULT {key} worker={id}");
            run.lines(&prefix)
                .first()
                .map(|l| (*l).to_owned())
                .unwrap_or_else(|| panic!("no `{prefix}` line:\n{}\n{}", run.stdout, run.stderr))
        };
        assert!(one("unknown_method").contains("error=Err(true)"));
        assert!(one("unknown_service").contains("error=Err(true)"));
        // The panic's message travels back to the caller…
        assert!(one("panic").contains(&format!("boom from worker {id}")));
        // …and the Library keeps serving the same connection.
        assert!(one("after_panic").contains("name=\"get name\""));
        assert!(one("service_error").contains("typed=true"));
        assert!(one("service_ok").contains("value=3"));
        assert!(one("too_large_reply").contains("ok=true"));
        assert!(one("too_large_request").contains("ok=true"));
        assert!(one("echo").contains("len=4096"));
    }
    // The Library logged both panics and is the same process throughout: it never restarted.
    assert_eq!(run.stderr.matches("started the library").count(), 1);
}

#[test]
fn a_slow_call_hits_its_deadline_while_a_fast_call_on_the_same_connection_is_answered() {
    let run = support::run(
        &["deadline", "--workers", "1"],
        &[],
        Duration::from_secs(30),
    );
    run.assert_success();
    let line = run.lines("RESULT deadline")[0];
    assert_eq!(
        support::field(line, "slow_deadline_exceeded"),
        Some("true"),
        "{line}"
    );
    assert_eq!(support::field(line, "fast_ok"), Some("true"), "{line}");
    let slow_ms: u64 = support::field(line, "slow_ms")
        .and_then(|v| v.parse().ok())
        .expect("slow_ms");
    // The deadline (200 ms) ended the call long before the method's 5 s.
    assert!(
        slow_ms < 4_000,
        "the slow call was not cut at its deadline: {line}"
    );
    let fast_ms: u64 = support::field(line, "fast_ms")
        .and_then(|v| v.parse().ok())
        .expect("fast_ms");
    // Served concurrently: the fast call did not queue behind the slow one.
    assert!(
        fast_ms < 150,
        "the fast call waited for the slow one: {line}"
    );
}
