//! The Library SIGKILLed under load: calls in flight fail at once with the typed error, calls
//! made during the outage wait for the restarted Library, and service resumes by itself.

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;

#[test]
fn library_killed_under_load_is_restarted_and_agents_reconnect() {
    let cluster = support::Cluster::start(
        &[
            "failover",
            "--workers",
            "2",
            "--inflight",
            "16",
            "--after",
            "200",
        ],
        &[],
    );
    cluster.await_stdout("RESULT library_pid", 1, Duration::from_secs(20));
    let stdout = cluster.stdout();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT library_pid"))
        .expect("library pid line");
    let library = support::number(line, "pid") as i32;
    // Let the load run, then kill the Library with calls in flight.
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(library), Signal::SIGKILL).expect("kill the library");
    cluster.await_stdout("RESULT failover", 1, Duration::from_secs(30));
    cluster.await_log("worker 0 finished", 1, Duration::from_secs(10));
    cluster.signal(Signal::SIGTERM);
    let run = cluster.wait(Duration::from_secs(20));
    run.assert_success();

    let result = run.lines("RESULT failover")[0];
    println!("{result}");
    // Every call in flight at the crash got the typed error, and nothing else failed: calls
    // made while the Library was down waited for it.
    assert!(support::number(result, "restarted") >= 1.0, "{result}");
    assert_eq!(support::number(result, "other"), 0.0, "{result}");
    assert!(support::number(result, "ok_after") >= 200.0, "{result}");
    let recovery_ms = support::number(result, "recovery_ms");
    assert!(recovery_ms >= 0.0, "{result}");
    println!("recovery after a Library SIGKILL: {recovery_ms:.1} ms (first typed error -> first success)");

    assert!(
        run.stderr.contains("the library was killed by SIGKILL"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("restarting the library in 0ns"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("library restarted: telling the workers to reconnect"),
        "{}",
        run.stderr
    );
    // Both workers reconnected, after checking the new Library's manifest.
    assert_eq!(
        run.stderr
            .matches("reconnected to the library after")
            .count(),
        2,
        "{}",
        run.stderr
    );
}
