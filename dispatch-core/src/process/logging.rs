//! Logs: `tracing`, with every process's events inside a span carrying its role, worker id and
//! pid. `RUST_LOG` selects what is shown (default `info`, with tarpc's own logs off: every failure
//! it logs reaches the caller as a typed error; and the spans of calls, `dispatch::call`, off
//! unless `RUST_LOG` names them: a line per call, and work on every call, only when asked for).

use crate::settings::{LogFormat, Runtime};
use std::io::IsTerminal;
use tracing::Span;

/// Installs a stderr subscriber filtered by `RUST_LOG`, unless the application installed one,
/// and routes panics through `tracing` so they carry the process's span.
///
/// In a master run by `dispatch::testing` (`in_test`), the subscriber writes through the test
/// harness's capture (its lines show with the test's output) and the panic hook is left alone,
/// so a failing test reports as usual.
pub(crate) fn init(format: LogFormat, in_test: bool) {
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, TestWriter};
    use tracing_subscriber::EnvFilter;
    // The spans of calls (`dispatch::call`, a line per call and work on every call) only when
    // RUST_LOG names them: `RUST_LOG=info` alone leaves them off.
    let filter = || {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tarpc=off"));
        let named = std::env::var("RUST_LOG").is_ok_and(|spec| spec.contains("dispatch::call"));
        match "dispatch::call=off".parse() {
            Ok(off) if !named => filter.add_directive(off),
            _ => filter,
        }
    };
    let json = format == LogFormat::Json
        || std::env::var("DISPATCH_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let writer = || {
        if in_test {
            BoxMakeWriter::new(TestWriter::new())
        } else {
            BoxMakeWriter::new(std::io::stderr)
        }
    };
    let _ = if json {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter())
            .with_writer(writer())
            .try_init()
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(writer())
            .with_ansi(
                !in_test
                    && std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none(),
            )
            .try_init()
    };
    if in_test {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(target: "dispatch::panic", "{info}");
    }));
}

/// The span every event of this process is logged in.
pub(crate) fn process_span(role: &'static str, worker_id: Option<u32>) -> Span {
    let span = tracing::info_span!(
        "dispatch",
        role,
        worker_id = tracing::field::Empty,
        pid = std::process::id()
    );
    if let Some(id) = worker_id {
        span.record("worker_id", id);
    }
    span
}

/// A tokio runtime of the `flavour` asked for, whose threads (the one that runs `block_on` and
/// every other it starts) log inside `span`.
pub(crate) fn runtime(span: &Span, flavour: Runtime) -> std::io::Result<tokio::runtime::Runtime> {
    let for_threads = span.clone();
    let mut builder = match flavour {
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Runtime::MultiThread { threads } => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(threads.max(1));
            b
        }
    };
    builder
        .enable_all()
        .on_thread_start(move || {
            // A worker thread or a thread of the blocking pool: stays in the process span for
            // its whole life.
            std::mem::forget(for_threads.clone().entered());
        })
        .build()
}
