//! One request, one trace across processes, from OpenTelemetry.
//!
//! ```text
//! cargo run --example trace --features otel
//! ```
//!
//! Every process (master, Library, worker) installs the same subscriber: a
//! `tracing-opentelemetry` layer over an OpenTelemetry tracer whose exporter prints each finished
//! span as one `SPAN …` line on stdout. The worker makes two calls inside its own `request` span,
//! then stops the cluster. The lines show one trace per request: the worker's `request`, its
//! `call` spans (children of `request`), and the Library's `serve` spans, each the child of the
//! worker's `call` span of the same call, although they ran in another process.

use dispatch::prelude::*;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use std::time::Duration;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;

/// The service of the example.
#[derive(Debug, Default)]
pub struct Greeter;

#[library_service]
impl Greeter {
    /// Greets `name`.
    pub fn hello(&self, name: String) -> String {
        format!("hello, {name}")
    }
}

/// Prints each finished span as one line on stdout.
#[derive(Debug)]
struct PrintSpans;

impl SpanExporter for PrintSpans {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        for span in batch {
            println!(
                "SPAN pid={} name={} trace_id={} span_id={} parent_span_id={}{}",
                std::process::id(),
                span.name,
                span.span_context.trace_id(),
                span.span_context.span_id(),
                span.parent_span_id,
                if span.parent_span_is_remote {
                    " (remote parent: the worker's span)"
                } else {
                    ""
                },
            );
        }
        std::future::ready(Ok(()))
    }
}

fn main() -> Result<(), ClusterError> {
    // In every process: spans of calls at INFO, exported through OpenTelemetry; warnings and
    // errors printed as usual.
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(PrintSpans)
        .build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("dispatch-example"));
    tracing_subscriber::registry()
        .with(otel.with_filter(tracing_subscriber::EnvFilter::new(
            "dispatch::call=info,trace=info",
        )))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    Cluster::new()
        .workers(1)
        .run(move |worker: Worker| async move {
            worker.cluster_ready().await;
            for name in ["ada", "grace"] {
                let request = tracing::info_span!(target: "trace", "request", name);
                let reply = Agent::get()
                    .greeter()
                    .hello(name.to_owned())
                    .instrument(request)
                    .await?;
                println!("REPLY {reply}");
            }
            // Let the Library export its spans, then stop the cluster (SIGTERM to the master).
            tokio::time::sleep(Duration::from_millis(200)).await;
            let master = nix::unistd::getppid();
            let _ = nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGTERM);
            worker.shutdown().await;
            Ok::<(), Error>(())
        })
}
