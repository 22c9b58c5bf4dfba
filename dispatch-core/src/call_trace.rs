//! Traces across processes: a call's span in the worker (`call`) and its span in the Library
//! (`serve`), both with target `dispatch::call` at INFO, joined by the ids the call carries
//! ([`TraceParent`]): the same `trace_id`, and the Library span's `parent_span_id` is the worker
//! span's `span_id`. Each span ends with one `call finished` event carrying the outcome, so a
//! plain fmt or JSON subscriber shows the ids on a line.
//!
//! Nothing here runs unless a subscriber wants `dispatch::call` at INFO: the callers check
//! [`enabled`] (a cached callsite interest) first and take the untraced path otherwise.
//!
//! Ids: without OpenTelemetry each worker call starts its own trace (random trace and span
//! ids). With the `otel` feature and a `tracing-opentelemetry` layer installed, the ids are the
//! OpenTelemetry ids of the span itself, so a call made inside the application's own spans
//! joins their trace, and the Library's span gets the worker's as its OpenTelemetry parent.

use crate::wire::TraceParent;
use tracing::field::{display, Empty};
use tracing::Span;

/// Whether some subscriber wants the spans of calls.
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: "dispatch::call", tracing::Level::INFO)
}

/// The worker's span of one call, a child of the current span, and the ids to send with it.
pub(crate) fn caller_span(service: &str, method: &str) -> (Span, TraceParent) {
    let span = tracing::info_span!(
        target: "dispatch::call",
        "call",
        service,
        method,
        trace_id = Empty,
        span_id = Empty
    );
    let parent = otel_ids(&span).unwrap_or_else(|| TraceParent {
        trace_id: nonzero_u128(),
        span_id: nonzero_u64(),
        sampled: false,
    });
    span.record(
        "trace_id",
        display(format_args!("{:032x}", parent.trace_id)),
    );
    span.record("span_id", display(format_args!("{:016x}", parent.span_id)));
    (span, parent)
}

/// The Library's span of one call: in the worker's trace, its parent the worker's span (a new
/// trace if the worker sent no ids).
pub(crate) fn serve_span(service: &str, method: &str, caller: Option<TraceParent>) -> Span {
    let span = tracing::info_span!(
        target: "dispatch::call",
        "serve",
        service,
        method,
        trace_id = Empty,
        parent_span_id = Empty,
        span_id = Empty
    );
    let trace_id = match caller {
        Some(caller) => {
            set_otel_parent(&span, caller);
            span.record(
                "parent_span_id",
                display(format_args!("{:016x}", caller.span_id)),
            );
            caller.trace_id
        }
        None => nonzero_u128(),
    };
    let own = otel_ids(&span).map_or_else(nonzero_u64, |ids| ids.span_id);
    span.record("trace_id", display(format_args!("{trace_id:032x}")));
    span.record("span_id", display(format_args!("{own:016x}")));
    span
}

/// Logs the end of a call in its span: its outcome is `ok`, or `error` with the error.
pub(crate) fn finished(span: &Span, error: Option<&dyn std::fmt::Display>) {
    span.in_scope(|| match error {
        None => tracing::info!(target: "dispatch::call", outcome = "ok", "call finished"),
        Some(e) => tracing::info!(
            target: "dispatch::call",
            outcome = "error",
            error = %e,
            "call finished"
        ),
    });
}

fn nonzero_u128() -> u128 {
    rand::random::<std::num::NonZeroU128>().get()
}

fn nonzero_u64() -> u64 {
    rand::random::<std::num::NonZeroU64>().get()
}

/// The span's OpenTelemetry ids, when an OpenTelemetry layer gave it some.
#[cfg(feature = "otel")]
fn otel_ids(span: &Span) -> Option<TraceParent> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let otel = context.span();
    let ids = otel.span_context();
    ids.is_valid().then(|| TraceParent {
        trace_id: u128::from_be_bytes(ids.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(ids.span_id().to_bytes()),
        sampled: ids.is_sampled(),
    })
}

#[cfg(not(feature = "otel"))]
fn otel_ids(_span: &Span) -> Option<TraceParent> {
    None
}

/// Makes the worker's span the OpenTelemetry parent of `span` (nothing without an
/// OpenTelemetry layer).
#[cfg(feature = "otel")]
fn set_otel_parent(span: &Span, caller: TraceParent) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let flags = if caller.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(caller.trace_id.to_be_bytes()),
        SpanId::from_bytes(caller.span_id.to_be_bytes()),
        flags,
        true,
        Default::default(),
    );
    // An error means no OpenTelemetry layer: the ids are in the span's fields anyway.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

#[cfg(not(feature = "otel"))]
fn set_otel_parent(_span: &Span, _caller: TraceParent) {}
