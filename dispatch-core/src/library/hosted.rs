//! The Library's set of live services: constructed once at start, called by every connection,
//! closed at shutdown.

use crate::error::RemoteError;
use crate::metrics::{MethodMetrics, MethodStats, Outcome};
use crate::service::Manifest;
use crate::service::{self, panic, ErasedService, MethodInfo};
use crate::wire::{CallRequest, CallResponse};
use futures::FutureExt;
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One live service and the metrics of its methods.
struct Hosted {
    instance: Arc<dyn ErasedService>,
    /// Its methods: one lookup per call finds the running count and the metrics.
    methods: HashMap<&'static str, Method>,
}

struct Method {
    /// Calls running now (kept with metrics off too: the heartbeat reports them).
    running: AtomicU64,
    /// `None` with metrics off.
    metrics: Option<MethodMetrics>,
    /// Returns `Result<T, E>`: a reply starting with bincode's `Err` tag is the service's error.
    fallible: bool,
}

/// Every service of the Library, by wire name.
pub(crate) struct Services {
    by_name: HashMap<&'static str, Hosted>,
    manifest: Manifest,
    payload_limit: usize,
    calls: AtomicU64,
    in_flight: AtomicU64,
    /// The fleet singletons among the services, by name (issue 17).
    leadership: HashMap<String, Arc<super::fleet::Leadership>>,
}

impl Services {
    /// Constructs every registered service (concurrently). Any failure, a panic included, aborts
    /// with a message naming each service that failed.
    #[cfg(test)]
    pub(crate) async fn start(payload_limit: usize) -> Result<Services, String> {
        Self::start_with(payload_limit, true).await
    }

    /// [`start`](Services::start), with per-method metrics on or off.
    pub(crate) async fn start_with(
        payload_limit: usize,
        metrics: bool,
    ) -> Result<Services, String> {
        let regs = service::registered();
        let inits = regs.iter().map(|reg| async move {
            let result = AssertUnwindSafe((reg.init)()).catch_unwind().await;
            let outcome = match result {
                Ok(Ok(instance)) => Ok(instance),
                Ok(Err(message)) => Err(message),
                Err(panic) => Err(format!("panicked: {}", panic::message(&*panic))),
            };
            (reg, outcome)
        });
        let mut by_name = HashMap::new();
        let mut failures = Vec::new();
        for (reg, outcome) in futures::future::join_all(inits).await {
            match outcome {
                Ok(instance) => {
                    let methods = reg
                        .methods
                        .iter()
                        .map(|m| (m.name, Method::new(m, metrics)))
                        .collect();
                    by_name.insert(reg.name, Hosted { instance, methods });
                }
                Err(message) => failures.push(format!(
                    "service `{}` ({}) failed to initialise: {message}",
                    reg.name, reg.type_name
                )),
            }
        }
        if !failures.is_empty() {
            return Err(failures.join("; "));
        }
        Ok(Services {
            by_name,
            manifest: Manifest::from_registrations(&regs),
            payload_limit,
            calls: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            leadership: HashMap::new(),
        })
    }

    /// Gates the fleet singleton `service` by `lead`.
    ///
    /// # Errors
    /// When no such service is hosted, naming those that are.
    pub(crate) fn lead(
        &mut self,
        service: &str,
        lead: Arc<super::fleet::Leadership>,
    ) -> Result<(), String> {
        if !self.by_name.contains_key(service) {
            return Err(format!(
                "fleet singleton `{service}` is not a hosted service (hosted: {})",
                self.manifest.summary()
            ));
        }
        self.leadership.insert(service.to_owned(), lead);
        Ok(())
    }

    /// The manifest sent to every Agent.
    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Runs one call. A panic in the method becomes [`RemoteError::Panicked`]; a reply over the
    /// frame limit becomes [`RemoteError::TooLarge`] instead of breaking the connection.
    pub(crate) async fn call(&self, request: CallRequest) -> CallResponse {
        let CallRequest {
            service,
            method,
            args,
            trace: _,
        } = request;
        let Some(hosted) = self.by_name.get(service.as_str()) else {
            return Err(RemoteError::UnknownService { service });
        };
        if let Some(lead) = self.leadership.get(service.as_str()) {
            if !lead.active() {
                if !lead.wait {
                    let leader = lead.leader();
                    return Err(RemoteError::NotLeader { service, leader });
                }
                // Held until this host leads; the caller's deadline bounds the wait.
                lead.until_active().await;
            }
        }
        let started = Instant::now();
        // Counted down on drop: a call cut at its deadline is dropped, not finished.
        let _running = crate::metrics::InFlight::start(&self.in_flight);
        let entry = hosted.methods.get(method.as_str());
        let _method_running = entry.map(|m| crate::metrics::InFlight::start(&m.running));
        let (result, ended) = self
            .run(hosted, &service, &method, args.into_vec(), started)
            .await;
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some((m, metrics)) = entry.and_then(|m| Some((m, m.metrics.as_ref()?))) {
            let outcome = match &result {
                Ok(reply) if m.fallible && reply.first() == Some(&1) => Outcome::ServiceError,
                other => Outcome::of(other),
            };
            metrics.record(outcome, ended.saturating_duration_since(started));
        }
        result
    }

    /// Runs the method, every poll timed (the first from `started`); returns its response and
    /// when its last poll ended.
    async fn run(
        &self,
        hosted: &Hosted,
        service: &str,
        method: &str,
        args: Vec<u8>,
        started: Instant,
    ) -> (CallResponse, Instant) {
        let instance = Arc::clone(&hosted.instance);
        let timed =
            super::slow_poll::Timed::new(instance.call(method, args), service, method, started);
        let (outcome, ended) = match AssertUnwindSafe(timed).catch_unwind().await {
            Ok((outcome, ended)) => (Ok(outcome), ended),
            Err(panic) => (Err(panic), Instant::now()),
        };
        (self.reply(service, method, outcome), ended)
    }

    /// The response for what the method returned, or the panic it raised.
    fn reply(
        &self,
        service: &str,
        method: &str,
        outcome: std::thread::Result<Result<Vec<u8>, RemoteError>>,
    ) -> CallResponse {
        let reply = match outcome {
            Ok(Ok(reply)) => reply,
            // A `#[blocking]` method's panic comes back without the method's name.
            Ok(Err(RemoteError::Panicked { message, .. })) => {
                return Err(RemoteError::Panicked {
                    method: format!("{service}.{method}"),
                    message,
                })
            }
            Ok(Err(e)) => return Err(e),
            Err(panic) => {
                return Err(RemoteError::Panicked {
                    method: format!("{service}.{method}"),
                    message: panic::message(&*panic),
                })
            }
        };
        if reply.len() > self.payload_limit {
            tracing::warn!(
                "reply of `{service}.{method}` is {} bytes, over the frame limit: returned as an error",
                reply.len()
            );
            return Err(RemoteError::TooLarge {
                size: reply.len() as u64,
                limit: self.payload_limit as u64,
            });
        }
        Ok(ByteBuf::from(reply))
    }

    /// Calls served, and calls running now.
    pub(crate) fn call_counts(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed),
        )
    }

    /// Calls running now by `service.method`, for the methods with any.
    pub(crate) fn in_flight_by_method(&self) -> Vec<(String, u64)> {
        self.by_name
            .iter()
            .flat_map(|(service, hosted)| {
                hosted.methods.iter().filter_map(move |(method, m)| {
                    let n = m.running.load(Ordering::Relaxed);
                    (n > 0).then(|| (format!("{service}.{method}"), n))
                })
            })
            .collect()
    }

    /// The metrics of every method (empty with metrics off), sorted by service and method.
    pub(crate) fn method_stats(&self) -> Vec<MethodStats> {
        let mut all: Vec<MethodStats> = self
            .by_name
            .iter()
            .flat_map(|(service, hosted)| {
                hosted.methods.iter().filter_map(move |(name, m)| {
                    m.metrics
                        .as_ref()
                        .map(|metrics| metrics.snapshot(service, name))
                })
            })
            .collect();
        all.sort_by(|a, b| (&a.service, &a.method).cmp(&(&b.service, &b.method)));
        all
    }

    /// Logs the metrics of every method that was called, one line each.
    pub(crate) fn log_method_stats(&self) {
        for s in self.method_stats().iter().filter(|s| s.calls > 0) {
            let errors: Vec<String> = s.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
            tracing::info!(
                "{}.{}: {} calls, p50 {} µs, p99 {} µs, errors: {}",
                s.service,
                s.method,
                s.calls,
                s.p50_us,
                s.p99_us,
                if errors.is_empty() {
                    "none".to_owned()
                } else {
                    errors.join(" ")
                }
            );
        }
    }

    /// Runs every service's close hook.
    pub(crate) async fn close(&self) {
        let closes = self.by_name.iter().map(|(name, hosted)| {
            let instance = Arc::clone(&hosted.instance);
            async move {
                if AssertUnwindSafe(instance.close())
                    .catch_unwind()
                    .await
                    .is_err()
                {
                    tracing::error!("the close hook of service `{name}` panicked");
                }
            }
        });
        futures::future::join_all(closes).await;
    }
}

impl Method {
    fn new(info: &MethodInfo, metrics: bool) -> Self {
        Method {
            running: AtomicU64::new(0),
            metrics: metrics.then(MethodMetrics::default),
            fallible: returns_result(info.signature),
        }
    }
}

/// Whether a normalised signature returns `Result<T, E>` (the macro's rule: the return type's
/// last path segment is `Result` with two arguments).
fn returns_result(signature: &str) -> bool {
    let Some((_, ret)) = signature.rsplit_once("->") else {
        return false;
    };
    let ret = ret.trim();
    let Some(open) = ret.find('<') else {
        return false;
    };
    let path = ret[..open].trim();
    let last = path.rsplit("::").next().unwrap_or(path);
    let mut depth = 0;
    let top_level_comma = ret[open..].chars().any(|c| {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 1 => return true,
            _ => {}
        }
        false
    });
    last == "Result" && top_level_comma
}

#[cfg(test)]
mod tests {
    use super::returns_result;

    #[test]
    fn result_signatures_are_recognised() {
        assert!(returns_result(
            "async fn parse(s: String) -> Result<u32, ParseError>"
        ));
        assert!(returns_result(
            "fn f() -> std::result::Result<Vec<(u8, u8)>, E>"
        ));
        assert!(!returns_result("fn f() -> Result<u32>"));
        assert!(!returns_result("fn f() -> Vec<Result<u8, u8>>"));
        assert!(!returns_result("fn f(a: Result<u8, u8>)"));
    }
}
