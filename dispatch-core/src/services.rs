//! The Library's set of live services: constructed once at start, called by every connection,
//! closed at shutdown.

use crate::error::RemoteError;
use crate::manifest::Manifest;
use crate::service::{self, ErasedService};
use crate::wire::{CallRequest, CallResponse};
use futures::FutureExt;
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// Every service of the Library, by wire name.
pub(crate) struct Services {
    by_name: HashMap<&'static str, Arc<dyn ErasedService>>,
    manifest: Manifest,
    payload_limit: usize,
}

impl Services {
    /// Constructs every registered service (concurrently). Any failure, a panic included, aborts
    /// with a message naming each service that failed.
    pub(crate) async fn start(payload_limit: usize) -> Result<Services, String> {
        let regs = service::registered();
        let inits = regs.iter().map(|reg| async move {
            let result = AssertUnwindSafe((reg.init)()).catch_unwind().await;
            let outcome = match result {
                Ok(Ok(instance)) => Ok(instance),
                Ok(Err(message)) => Err(message),
                Err(panic) => Err(format!("panicked: {}", crate::panic::message(&*panic))),
            };
            (reg, outcome)
        });
        let mut by_name = HashMap::new();
        let mut failures = Vec::new();
        for (reg, outcome) in futures::future::join_all(inits).await {
            match outcome {
                Ok(instance) => {
                    by_name.insert(reg.name, instance);
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
        })
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
        } = request;
        let Some(instance) = self.by_name.get(service.as_str()) else {
            return Err(RemoteError::UnknownService { service });
        };
        let instance = Arc::clone(instance);
        let outcome = AssertUnwindSafe(async { instance.call(&method, args.into_vec()).await })
            .catch_unwind()
            .await;
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
                    message: crate::panic::message(&*panic),
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

    /// Runs every service's close hook.
    pub(crate) async fn close(&self) {
        let closes = self.by_name.iter().map(|(name, instance)| {
            let instance = Arc::clone(instance);
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
