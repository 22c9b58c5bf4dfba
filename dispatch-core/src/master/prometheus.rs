//! The Prometheus endpoint (`Cluster::metrics_addr`): `GET /metrics` on a TCP address, served
//! by the master in the Prometheus text format (0.0.4), encoded with `prometheus-client`.
//!
//! A scrape is a status request with per-method metrics, the same one `dispatchctl status
//! --methods` makes: the master asks every ready process for its counters (waiting at most the
//! status deadline), then renders what arrived. Nothing is kept between scrapes; every counter
//! is the process's own, so it equals what the processes counted.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] scrapes at once (more are closed), a request may not
//! exceed [`MAX_REQUEST`] bytes or take longer than [`IO_DEADLINE`].

use super::command::Command;
use crate::admin::ClusterStatus;
use crate::cluster_error::ClusterError;
use crate::metrics::{MethodStats, LATENCY_BOUNDS_US};
use prometheus_client::encoding::{prometheus_text, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Scrapes served at once; more connections are closed at once.
const MAX_CONNECTIONS: usize = 8;
/// The largest request read (a scrape's request is a few hundred bytes).
const MAX_REQUEST: usize = 8 * 1024;
/// How long a scraper has to send its request, and the master to answer.
const IO_DEADLINE: Duration = Duration::from_secs(5);

/// Labels: `(name, value)` pairs.
type Labels = Vec<(String, String)>;

/// Binds `addr` and serves scrapes until the master exits. Returns the bound address.
pub(crate) fn start(
    addr: &str,
    commands: mpsc::UnboundedSender<Command>,
) -> Result<std::net::SocketAddr, ClusterError> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| ClusterError::io(format!("cannot serve metrics on {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| ClusterError::io("cannot read the metrics address", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ClusterError::io("cannot make the metrics listener non-blocking", e))?;
    let listener = TcpListener::from_std(listener)
        .map_err(|e| ClusterError::io("cannot register the metrics listener", e))?;
    tracing::info!("metrics on http://{local}/metrics");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        tracing::debug!("closed a metrics connection: {MAX_CONNECTIONS} served");
                        continue;
                    };
                    let commands = commands.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(IO_DEADLINE, serve(stream, commands)).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed on the metrics listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}

/// Answers one HTTP/1 request.
async fn serve(mut stream: TcpStream, commands: mpsc::UnboundedSender<Command>) {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0_u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if request.len() + n > MAX_REQUEST => {
                let _ = respond(&mut stream, "431 Request Header Fields Too Large", "").await;
                return;
            }
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (words.next(), words.next());
    if method != Some(b"GET") {
        let _ = respond(&mut stream, "405 Method Not Allowed", "only GET /metrics\n").await;
        return;
    }
    if path != Some(b"/metrics") {
        let _ = respond(
            &mut stream,
            "404 Not Found",
            "the metrics are at /metrics\n",
        )
        .await;
        return;
    }
    let (reply, status) = oneshot::channel();
    if commands
        .send(Command::Status {
            methods: true,
            reply,
        })
        .is_err()
    {
        let _ = respond(
            &mut stream,
            "503 Service Unavailable",
            "the cluster is stopping\n",
        )
        .await;
        return;
    }
    let body = match status.await {
        Ok(status) => render(&status),
        Err(_) => {
            let _ = respond(&mut stream, "503 Service Unavailable", "no status\n").await;
            return;
        }
    };
    let _ = respond(&mut stream, "200 OK", &body).await;
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        prometheus_text::CONTENT_TYPE,
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// A process's labels: its role and, for a worker, its id.
fn process_labels(role: &str, worker_id: Option<u32>) -> Labels {
    let mut labels = vec![("role".to_owned(), role.to_owned())];
    if let Some(id) = worker_id {
        labels.push(("worker_id".to_owned(), id.to_string()));
    }
    labels
}

fn method_labels(m: &MethodStats) -> Labels {
    vec![
        ("service".to_owned(), m.service.clone()),
        ("method".to_owned(), m.method.clone()),
    ]
}

/// The status in the Prometheus text format.
pub(crate) fn render(status: &ClusterStatus) -> String {
    let mut registry = Registry::with_prefix("dispatch");
    let cluster_uptime: Gauge<f64, AtomicU64> = Gauge::default();
    cluster_uptime.set(status.uptime_ms as f64 / 1000.0);
    registry.register(
        "cluster_uptime_seconds",
        "Seconds since the master started",
        cluster_uptime,
    );

    let workers: Gauge = Gauge::default();
    workers.set(i64::from(status.workers));
    registry.register(
        "workers",
        "Workers the master runs (Cluster::workers, then dispatchctl scale)",
        workers,
    );

    let restarts = Family::<Labels, Counter>::default();
    let recycles = Family::<Labels, Counter>::default();
    let state = Family::<Labels, Gauge>::default();
    let rss = Family::<Labels, Gauge>::default();
    let uptime = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let calls = Family::<Labels, Counter>::default();
    let in_flight = Family::<Labels, Gauge>::default();
    let queued_bytes = Family::<Labels, Gauge>::default();
    let queued_messages = Family::<Labels, Gauge>::default();
    let queue_budget = Family::<Labels, Gauge>::default();
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for p in &status.processes {
        let labels = process_labels(&p.role, p.worker_id);
        restarts
            .get_or_create(&labels)
            .inc_by(u64::from(p.restarts));
        if p.worker_id.is_some() {
            recycles
                .get_or_create(&labels)
                .inc_by(u64::from(p.recycles));
        }
        let mut with_state = labels.clone();
        with_state.push(("state".to_owned(), p.state.clone()));
        state.get_or_create(&with_state).set(1);
        if let Some(kib) = p.rss_kib {
            rss.get_or_create(&labels)
                .set(i64::try_from(kib.saturating_mul(1024)).unwrap_or(i64::MAX));
        }
        uptime
            .get_or_create(&labels)
            .set(p.uptime_ms as f64 / 1000.0);
        if let Some(n) = p.calls {
            calls.get_or_create(&labels).inc_by(n);
        }
        if let Some(n) = p.in_flight {
            in_flight.get_or_create(&labels).set(gauge(n));
        }
        queued_bytes
            .get_or_create(&labels)
            .set(gauge(p.queued_bytes));
        queued_messages
            .get_or_create(&labels)
            .set(gauge(p.queued_messages));
        queue_budget
            .get_or_create(&labels)
            .set(gauge(p.queue_budget_bytes));
    }
    registry.register(
        "process_restarts",
        "Restarts of the process's slot after a crash (the Library, or worker N)",
        restarts,
    );
    registry.register(
        "process_recycles",
        "Recycles of worker N's process (Cluster::recycle: memory, requests, age)",
        recycles,
    );
    registry.register(
        "process_state",
        "1 for each process, labelled with its state (starting, ready, replacing, retiring, removing, unresponsive)",
        state,
    );
    registry.register(
        "process_resident_memory_bytes",
        "Resident memory of the process (VmRSS)",
        rss,
    );
    registry.register(
        "process_uptime_seconds",
        "Seconds since the process started",
        uptime,
    );
    registry.register(
        "process_calls",
        "Calls served (the Library) or made (a worker) by the process",
        calls,
    );
    registry.register(
        "process_calls_in_flight",
        "Calls running (the Library) or waiting for a reply (a worker) now",
        in_flight,
    );

    registry.register(
        "process_queued_bytes",
        "Bytes of messages the master holds for the process now (its control queue)",
        queued_bytes,
    );
    registry.register(
        "process_queued_messages",
        "Messages the master holds for the process now",
        queued_messages,
    );
    registry.register(
        "process_queue_budget_bytes",
        "The master's byte budget for the process's queue (Cluster::child_queue_bytes)",
        queue_budget,
    );

    let method_calls = Family::<Labels, Counter>::default();
    let method_errors = Family::<Labels, Counter>::default();
    let mut latency = Histograms::default();
    for m in &status.methods {
        let labels = method_labels(m);
        method_calls.get_or_create(&labels).inc_by(m.calls);
        for (kind, n) in &m.errors {
            let mut with_kind = labels.clone();
            with_kind.push(("kind".to_owned(), kind.clone()));
            method_errors.get_or_create(&with_kind).inc_by(*n);
        }
        latency.0.push((labels, Histogram::of(m)));
    }
    registry.register(
        "method_calls",
        "Calls of a service method that reached the Library",
        method_calls,
    );
    registry.register(
        "method_errors",
        "Failed calls of a service method, by kind (service, panicked, too_large, codec, other)",
        method_errors,
    );
    registry.register(
        "method_latency_seconds",
        "Time the Library spent on a call, from its arrival to its reply",
        latency,
    );

    register_schedules(&mut registry, status);

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// The schedules' counters (issue 17), labelled `schedule`, and the fleet singletons' roles.
fn register_schedules(registry: &mut Registry, status: &ClusterStatus) {
    let runs = Family::<Labels, Counter>::default();
    let failures = Family::<Labels, Counter>::default();
    let skips = Family::<Labels, Counter>::default();
    for s in &status.schedules {
        let labels = vec![("schedule".to_owned(), s.name.clone())];
        runs.get_or_create(&labels).inc_by(s.runs);
        failures.get_or_create(&labels).inc_by(s.failures);
        for (reason, n) in [
            ("skipped", s.skips),
            ("missed", s.missed),
            ("elsewhere", s.elsewhere),
        ] {
            let mut with = labels.clone();
            with.push(("reason".to_owned(), reason.to_owned()));
            skips.get_or_create(&with).inc_by(n);
        }
    }
    registry.register(
        "schedule_runs",
        "Runs of a schedule started on this host",
        runs,
    );
    registry.register(
        "schedule_failures",
        "Runs of a schedule that failed (error, panic, timeout, or the process died mid-run)",
        failures,
    );
    registry.register(
        "schedule_skips",
        "Ticks of a schedule not run on this host, by reason (skipped: previous run still going or \
         the fleet's Redis unreachable; missed: no process before the next tick; elsewhere: \
         claimed by another host of the fleet)",
        skips,
    );
    let leading = Family::<Labels, Gauge>::default();
    for s in &status.singletons {
        let labels = vec![("service".to_owned(), s.service.clone())];
        leading.get_or_create(&labels).set(i64::from(s.active));
    }
    registry.register(
        "fleet_singleton_active",
        "1 when this host's Library serves the fleet singleton service, 0 on standby",
        leading,
    );
}

/// One method's latency histogram, as the Library counted it.
#[derive(Debug)]
struct Histogram {
    sum_seconds: f64,
    count: u64,
    /// `(upper bound in seconds, calls in this bucket)`, not cumulative.
    buckets: Vec<(f64, u64)>,
}

impl Histogram {
    fn of(m: &MethodStats) -> Self {
        let buckets = LATENCY_BOUNDS_US
            .iter()
            .zip(m.latency_buckets.iter().chain(std::iter::repeat(&0)))
            .map(|(le, n)| (*le as f64 / 1e6, *n))
            .collect();
        Histogram {
            sum_seconds: m.latency_sum_us as f64 / 1e6,
            count: m.calls,
            buckets,
        }
    }
}

/// Every method's histogram, each with its labels.
#[derive(Debug, Default)]
struct Histograms(Vec<(Labels, Histogram)>);

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
