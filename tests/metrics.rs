//! The Prometheus endpoint (`Cluster::metrics_addr`) against a real cluster: what it serves
//! passes `promtool check metrics`, the per-method call counter equals the calls made, and the
//! Library's restart counter rises by one after a SIGKILL.

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{pid_after, Cluster};

const LIMIT: Duration = Duration::from_secs(30);

fn fixture() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_dispatch-metrics-fixture").into()
}

/// The address from the master's `metrics on http://ADDR/metrics` line.
fn metrics_addr(cluster: &Cluster) -> String {
    cluster.await_log("metrics on http://", 1, LIMIT);
    let log = cluster.stderr();
    let at = log.find("metrics on http://").expect("the line") + "metrics on http://".len();
    log[at..].split('/').next().expect("an address").to_owned()
}

/// `GET /metrics`: the status line and the body.
fn scrape(addr: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(LIMIT)).expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample `name` exactly as written (labels included), if present.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn promtool_check(body: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.expect(
        "promtool is needed (apt-get install prometheus; .ci/run installs it): cannot run it",
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool's verdict");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- body\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_endpoint_passes_promtool_and_counts_what_the_cluster_did() {
    const CALLS: u64 = 137;
    let cluster = Cluster::start_bin(fixture(), &["--calls", &CALLS.to_string()], &[]);
    let addr = metrics_addr(&cluster);
    cluster.await_stdout("RESULT calls_done", 1, LIMIT);

    let (status, body) = scrape(&addr);
    assert!(status.contains("200"), "{status}\n{body}");
    promtool_check(&body);
    let incr = r#"dispatch_method_calls_total{service="counter",method="incr"}"#;
    assert_eq!(sample(&body, incr), Some(CALLS as f64), "{body}");
    let count = r#"dispatch_method_latency_seconds_count{service="counter",method="incr"}"#;
    assert_eq!(sample(&body, count), Some(CALLS as f64), "{body}");
    let restarts = r#"dispatch_process_restarts_total{role="library"}"#;
    assert_eq!(sample(&body, restarts), Some(0.0), "{body}");
    let budget = r#"dispatch_process_queue_budget_bytes{role="worker",worker_id="1"}"#;
    assert_eq!(sample(&body, budget), Some((64 << 20) as f64), "{body}");
    let queued = r#"dispatch_process_queued_bytes{role="library"}"#;
    assert!(sample(&body, queued).is_some(), "{body}");
    let worker_calls = r#"dispatch_process_calls_total{role="worker",worker_id="0"}"#;
    assert_eq!(sample(&body, worker_calls), Some(CALLS as f64), "{body}");
    println!(
        "measured: scrape of {} bytes, {} samples",
        body.len(),
        body.lines().count()
    );

    // SIGKILL the Library: its slot's restart counter rises by exactly one.
    let library = pid_after(&cluster.stderr(), "started the library").expect("the Library's pid");
    kill(Pid::from_raw(library), Signal::SIGKILL).expect("kill the Library");
    cluster.await_log(
        "library restarted: telling the workers to reconnect",
        1,
        LIMIT,
    );
    let (_, body) = scrape(&addr);
    assert_eq!(sample(&body, restarts), Some(1.0), "{body}");
    promtool_check(&body);

    // Anything but GET /metrics is refused plainly.
    let mut other = std::net::TcpStream::connect(&addr).expect("connect");
    other.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
    let mut answer = String::new();
    let _ = other.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    cluster.signal(Signal::SIGTERM);
    cluster.wait(LIMIT).assert_success();
}
