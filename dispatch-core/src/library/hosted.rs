//! The Library's set of live services: constructed once at start, called by every connection,
//! closed at shutdown.

use crate::error::RemoteError;
use crate::fast_hash::{self, FastMap};
use crate::metrics::InFlight;
use crate::metrics::{MethodMetrics, MethodStats, Outcome};
use crate::service::Manifest;
use crate::service::{self, panic, ErasedService, MethodInfo};
use crate::wire::{CallResponse, RequestRef};
use futures::FutureExt;
use serde_bytes::ByteBuf;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// One live service and the metrics of its methods.
struct Hosted {
    instance: Arc<dyn ErasedService>,
    /// It has handover hooks: its calls wait at the gate while a handover holds them.
    handover: bool,
    /// Its methods: one lookup per call finds the running count and the metrics.
    methods: FastMap<&'static str, Arc<Method>>,
    /// Set when it is a fleet singleton (issue 17): served only while this host leads.
    lead: Option<Arc<super::fleet::Leadership>>,
}

struct Method {
    /// Calls running now (kept with metrics off too: the heartbeat reports them).
    running: AtomicU64,
    /// `None` with metrics off.
    metrics: Option<MethodMetrics>,
    /// Returns `Result<T, E>`: a reply starting with bincode's `Err` tag is the service's error.
    fallible: bool,
    /// `#[oneway]`: acknowledged at once, run detached (see `calls::serve_calls`).
    oneway: bool,
}

/// A call as [`Services::begin`] returns it.
pub(crate) struct Started {
    /// Its response, when it finishes.
    pub(crate) reply: Reply,
    /// The method is `#[oneway]`: acknowledged at once, run detached (`calls::serve_calls`).
    pub(crate) oneway: bool,
}

impl Started {
    /// A call that fails before it runs: an unknown service or method (answered as a unary
    /// call, with its error: `oneway` false), or a standby's `NotLeader` (for a one-way method,
    /// acknowledged and logged as its failure, as if it had run).
    fn failed(error: RemoteError, oneway: bool) -> Started {
        Started {
            reply: Box::pin(std::future::ready(Err(error))),
            oneway,
        }
    }
}

/// The future of a call's response.
pub(crate) type Reply = std::pin::Pin<Box<dyn std::future::Future<Output = CallResponse> + Send>>;

/// A started call's method: made, or waiting to be made.
enum Call {
    /// Its future.
    Made(service::CallFuture),
    /// It waits for this host to lead, or at a handover's gate, before its method runs.
    Waiting {
        instance: Arc<dyn ErasedService>,
        args: Vec<u8>,
        lead: Option<Arc<super::fleet::Leadership>>,
        gated: bool,
    },
}

/// The future of `method` on `instance` with `args`, decoded now: a panic while decoding (a
/// user's `Deserialize` may panic) is the call's [`RemoteError::Panicked`], as a panic in the
/// method is, never the connection's.
fn make(instance: &Arc<dyn ErasedService>, method: &str, args: &[u8]) -> service::CallFuture {
    let instance = Arc::clone(instance);
    match std::panic::catch_unwind(AssertUnwindSafe(|| instance.call(method, args))) {
        Ok(call) => call,
        // The method's name is added by `Services::reply`.
        Err(panic) => Box::pin(std::future::ready(Err(RemoteError::Panicked {
            method: String::new(),
            message: panic::message(&*panic),
        }))),
    }
}

/// Why the old Library has no snapshot to hand over.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    /// A service's snapshot hook returned an error.
    #[error("service `{service}`: its snapshot hook failed: {message}")]
    Hook {
        /// The service.
        service: String,
        /// The hook's error.
        message: String,
    },
    /// A service's snapshot hook panicked.
    #[error("service `{service}`: its snapshot hook panicked: {message}")]
    Panicked {
        /// The service.
        service: String,
        /// The panic's message.
        message: String,
    },
    /// The snapshots together do not fit in one control message.
    #[error(
        "the snapshots take {size} bytes, over the {budget} bytes one control message carries: \
         keep large state in a store both Libraries reach, and only its key in the snapshot"
    )]
    TooLarge {
        /// Their size.
        size: usize,
        /// The budget.
        budget: usize,
    },
}

/// Every service of the Library, by wire name.
pub(crate) struct Services {
    by_name: FastMap<&'static str, Hosted>,
    manifest: Manifest,
    payload_limit: usize,
    calls: AtomicU64,
    in_flight: AtomicU64,
    /// Calls to services with handover hooks wait (a new Library, until it restored them).
    held: AtomicBool,
    /// `true` while held; calls wait for `false`.
    gate: watch::Sender<bool>,
    /// The running feeds of streaming methods (`library/streams.rs`).
    hub: Arc<crate::stream::hub::Hub>,
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
        let mut by_name = fast_hash::map();
        let mut failures = Vec::new();
        for (reg, outcome) in futures::future::join_all(inits).await {
            match outcome {
                Ok(instance) => {
                    let methods = reg
                        .methods
                        .iter()
                        .map(|m| (m.name, Arc::new(Method::new(m, metrics))))
                        .collect();
                    let handover = instance.has_handover();
                    by_name.insert(
                        reg.name,
                        Hosted {
                            instance,
                            handover,
                            methods,
                            lead: None,
                        },
                    );
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
            held: AtomicBool::new(false),
            gate: watch::Sender::new(false),
            hub: Arc::new(crate::stream::hub::Hub::new(payload_limit)),
        })
    }

    /// The live instance of service `name`.
    pub(crate) fn instance(&self, name: &str) -> Option<Arc<dyn ErasedService>> {
        self.by_name.get(name).map(|h| Arc::clone(&h.instance))
    }

    /// The running feeds of streaming methods.
    pub(crate) fn hub(&self) -> &Arc<crate::stream::hub::Hub> {
        &self.hub
    }

    /// Gates the fleet singleton `service` by `lead`.
    ///
    /// # Errors
    /// When no such service is hosted, naming those that are.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn lead(
        &mut self,
        service: &str,
        lead: Arc<super::fleet::Leadership>,
    ) -> Result<(), String> {
        let Some(hosted) = self.by_name.get_mut(service) else {
            return Err(format!(
                "fleet singleton `{service}` is not a hosted service (hosted: {})",
                self.manifest.summary()
            ));
        };
        hosted.lead = Some(lead);
        Ok(())
    }

    /// The manifest sent to every Agent.
    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Starts the call `request`: finds its service and method (once), decodes its arguments
    /// now, from the frame they lie in, and returns the future of its response with whether the
    /// method is one-way. A panic in the method becomes [`RemoteError::Panicked`]; a reply over
    /// the frame limit becomes [`RemoteError::TooLarge`] instead of breaking the connection.
    pub(crate) fn begin(self: &Arc<Self>, request: &RequestRef<'_>) -> Started {
        let Some((&service, hosted)) = self.by_name.get_key_value(request.service) else {
            return Started::failed(
                RemoteError::UnknownService {
                    service: request.service.to_owned(),
                },
                false,
            );
        };
        let Some((&method, entry)) = hosted.methods.get_key_value(request.method) else {
            return Started::failed(
                RemoteError::UnknownMethod {
                    service: service.to_owned(),
                    method: request.method.to_owned(),
                },
                false,
            );
        };
        let mut lead = None;
        if let Some(leadership) = &hosted.lead {
            if !leadership.active() {
                if !leadership.wait {
                    let error = RemoteError::NotLeader {
                        service: service.to_owned(),
                        leader: leadership.leader(),
                    };
                    return Started::failed(error, entry.oneway);
                }
                lead = Some(Arc::clone(leadership));
            }
        }
        // A handover's new Library holds the calls to services with handover hooks until the
        // old one's state is restored.
        let gated = hosted.handover && self.held.load(Ordering::Acquire);
        let instance = &hosted.instance;
        let call = if lead.is_none() && !gated {
            // The common case: the method's future is made now, and owns its decoded arguments.
            Call::Made(make(instance, method, request.args))
        } else {
            // It waits first: for this host to lead (bounded by the caller's deadline, as the
            // gate is), or at the gate. Only then is it made, from a copy of the arguments.
            Call::Waiting {
                instance: Arc::clone(instance),
                args: request.args.to_vec(),
                lead,
                gated,
            }
        };
        Started {
            oneway: entry.oneway,
            reply: Box::pin(Arc::clone(self).run(service, method, Arc::clone(entry), call)),
        }
    }

    /// Runs a started call, every poll timed (the first from when it was made), and records it.
    async fn run(
        self: Arc<Self>,
        service: &'static str,
        method: &'static str,
        entry: Arc<Method>,
        call: Call,
    ) -> CallResponse {
        let (call, started, _running) = match call {
            // Timed from here, where it runs: not from when it was read (a call may wait for
            // a place on its connection, or for its task, in between).
            Call::Made(call) => (call, Instant::now(), InFlight::start(&self.in_flight)),
            Call::Waiting {
                instance,
                args,
                lead,
                gated,
            } => {
                if let Some(lead) = lead {
                    lead.until_active().await;
                }
                let started = Instant::now();
                // Counted down on drop: a call cut at its deadline is dropped, not finished.
                let running = InFlight::start(&self.in_flight);
                if gated {
                    let _ = self.gate.subscribe().wait_for(|held| !*held).await;
                }
                (make(&instance, method, &args), started, running)
            }
        };
        let _method_running = InFlight::start(&entry.running);
        let timed = super::slow_poll::Timed::new(call, service, method, started);
        let (outcome, ended) = match AssertUnwindSafe(timed).catch_unwind().await {
            Ok((outcome, ended)) => (Ok(outcome), ended),
            Err(panic) => (Err(panic), Instant::now()),
        };
        let result = self.reply(service, method, outcome);
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = &entry.metrics {
            let outcome = match &result {
                Ok(reply) if entry.fallible && reply.first() == Some(&1) => Outcome::ServiceError,
                other => Outcome::of(other),
            };
            metrics.record(outcome, ended.saturating_duration_since(started));
        }
        result
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

    /// The live instance of the service named `service`, if it is an `S`.
    pub(crate) fn typed_instance<S: ErasedService>(&self, service: &str) -> Option<Arc<S>> {
        let hosted = self.by_name.get(service)?;
        let any = Arc::clone(&hosted.instance) as Arc<dyn std::any::Any + Send + Sync>;
        any.downcast::<S>().ok()
    }

    /// Runs an in-process call of `service.method` (its future already built by the caller's
    /// local client): counted, timed and recorded in the method's metrics like a call from a
    /// worker; a panic in it becomes [`RemoteError::Panicked`]. `is_service_error` tells a
    /// fallible method's `Err` apart for the metrics.
    pub(crate) async fn call_local<R>(
        &self,
        service: &str,
        method: &str,
        call: impl std::future::Future<Output = R>,
        is_service_error: impl FnOnce(&R) -> bool,
    ) -> Result<R, RemoteError> {
        let entry = self
            .by_name
            .get(service)
            .and_then(|hosted| hosted.methods.get(method));
        let started = Instant::now();
        let _running = crate::metrics::InFlight::start(&self.in_flight);
        let _method_running = entry.map(|m| crate::metrics::InFlight::start(&m.running));
        let result = AssertUnwindSafe(call).catch_unwind().await;
        let ended = Instant::now();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let (result, outcome) = match result {
            Ok(value) => {
                let outcome = if is_service_error(&value) {
                    Outcome::ServiceError
                } else {
                    Outcome::Ok
                };
                (Ok(value), outcome)
            }
            Err(panic) => (
                Err(RemoteError::Panicked {
                    method: format!("{service}.{method}"),
                    message: panic::message(&*panic),
                }),
                Outcome::Failed("panicked"),
            ),
        };
        if let Some(metrics) = entry.and_then(|m| m.metrics.as_ref()) {
            metrics.record(outcome, ended.saturating_duration_since(started));
        }
        result
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

    /// Holds the calls to services with handover hooks at the gate until
    /// [`restore`](Services::restore); returns whether any service has them.
    pub(crate) fn hold_for_handover(&self) -> bool {
        let any = self.by_name.values().any(|h| h.handover);
        if any {
            self.gate.send_replace(true);
            self.held.store(true, Ordering::Release);
        }
        any
    }

    /// The snapshots of the services with handover hooks, by name. The first failing hook (or
    /// panic) fails the whole snapshot; so does a total over `budget` bytes.
    pub(crate) async fn snapshot(
        &self,
        budget: usize,
    ) -> Result<Vec<(String, ByteBuf)>, SnapshotError> {
        let mut state = Vec::new();
        let mut size = 0_usize;
        for (name, hosted) in self.by_name.iter().filter(|(_, h)| h.handover) {
            let instance = Arc::clone(&hosted.instance);
            let service = (*name).to_owned();
            match AssertUnwindSafe(instance.snapshot()).catch_unwind().await {
                Ok(Ok(bytes)) => {
                    size = size.saturating_add(bytes.len() + name.len() + 16);
                    state.push((service, ByteBuf::from(bytes)));
                }
                Ok(Err(message)) => return Err(SnapshotError::Hook { service, message }),
                Err(panic) => {
                    return Err(SnapshotError::Panicked {
                        service,
                        message: panic::message(&*panic),
                    })
                }
            }
        }
        if size > budget {
            return Err(SnapshotError::TooLarge { size, budget });
        }
        Ok(state)
    }

    /// Restores the services from `state` (each snapshot given to the service of its name),
    /// then admits the held calls. A failing hook is logged; the service keeps its fresh state.
    pub(crate) async fn restore(&self, state: Option<Vec<(String, ByteBuf)>>) {
        for (name, bytes) in state.unwrap_or_default() {
            let Some(hosted) = self.by_name.get(name.as_str()).filter(|h| h.handover) else {
                tracing::warn!(
                    "handover: the old library sent a snapshot of service `{name}`, which has no \
                     handover hooks here: ignored"
                );
                continue;
            };
            let instance = Arc::clone(&hosted.instance);
            match AssertUnwindSafe(instance.restore(bytes.into_vec()))
                .catch_unwind()
                .await
            {
                Ok(Ok(())) => tracing::info!("handover: service `{name}` restored its state"),
                Ok(Err(e)) => tracing::error!(
                    "handover: service `{name}` could not restore its state: {e}; it serves \
                     from its fresh state"
                ),
                Err(panic) => tracing::error!(
                    "handover: the restore hook of service `{name}` panicked: {}; it serves \
                     from its fresh state",
                    panic::message(&*panic)
                ),
            }
        }
        self.held.store(false, Ordering::Release);
        self.gate.send_replace(false);
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
            oneway: info.is_oneway(),
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
