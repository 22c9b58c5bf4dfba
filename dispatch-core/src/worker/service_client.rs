//! The caller's side of one service: what a generated stub (`DemoClient`) wraps.

use super::agent::Agent;
use crate::error::Error;
use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;

/// A handle on one Library service, bound to an [`Agent`]. Generated stubs wrap it; use it
/// directly to call a service by name, without a stub.
///
/// ```no_run
/// # async fn f() -> Result<(), dispatch::Error> {
/// use dispatch::Agent;
/// let sum: i64 = Agent::get().service("demo").call("add", &(1_i64, 2_i64)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ServiceClient<'a> {
    pub(super) agent: &'a Agent,
    pub(super) service: &'a str,
    pub(super) timeout: Option<Duration>,
}

impl<'a> ServiceClient<'a> {
    /// A handle on `service` through `agent`.
    pub fn new(agent: &'a Agent, service: &'a str) -> Self {
        ServiceClient {
            agent,
            service,
            timeout: None,
        }
    }

    /// The same handle, with every call given `timeout` instead of the Agent's default.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The service's wire name.
    pub fn service_name(&self) -> &str {
        self.service
    }

    /// Calls `method` with `args` (a tuple of the method's arguments, `()` for none) and decodes
    /// its return value as `R`.
    ///
    /// # Errors
    /// Every [`Error`] but [`Error::Service`].
    pub async fn call<A, R>(&self, method: &str, args: &A) -> Result<R, Error>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let reply = self.call_encoded(method, args).await?;
        decode_reply(self.service, method, &reply)
    }

    /// Calls a method declared as returning `Result<T, E>`: the service's `E` comes back as
    /// [`Error::Service`].
    ///
    /// # Errors
    /// Every [`Error`], [`Error::Service`] included.
    pub async fn call_fallible<A, T, E>(&self, method: &str, args: &A) -> Result<T, Error<E>>
    where
        A: Serialize + ?Sized,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let reply = self
            .call_encoded(method, args)
            .await
            .map_err(|e| e.map_service(|never| match never {}))?;
        let result: Result<T, E> = decode_reply(self.service, method, &reply)
            .map_err(|e: Error| e.map_service(|never| match never {}))?;
        result.map_err(Error::Service)
    }

    /// Calls a one-way method (`#[oneway]`): returns once the request is queued on the
    /// connection, in order with this task's later calls, without waiting for the method to run.
    /// What the method does, a failure or a panic included, is the Library's to log: a one-way
    /// call has no reply.
    ///
    /// # Errors
    /// When the request cannot be sent: too large ([`Error::TooLarge`]), not encodable
    /// ([`Error::Codec`]), or no connection to the Library, or too many of this worker's one-way
    /// calls not yet acknowledged, within the deadline ([`Error::Unavailable`]).
    pub async fn call_oneway<A>(&self, method: &str, args: &A) -> Result<(), Error>
    where
        A: Serialize + ?Sized,
    {
        let args = crate::wire::codec::encode(args).map_err(|e| Error::Codec {
            message: format!(
                "cannot encode the arguments of `{}.{method}`: {e}",
                self.service
            ),
        })?;
        self.agent
            .send_oneway(self.service, method, args, self.timeout)
            .await
    }

    /// Calls `method` with already encoded arguments and returns the encoded reply.
    ///
    /// # Errors
    /// Every [`Error`] but [`Error::Service`].
    pub async fn call_raw(&self, method: &str, args: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.agent
            .call_raw(self.service, method, args, self.timeout)
            .await
            .map(Vec::from)
    }

    async fn call_encoded<A: Serialize + ?Sized>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<bytes::Bytes, Error> {
        let args = crate::wire::codec::encode(args).map_err(|e| Error::Codec {
            message: format!(
                "cannot encode the arguments of `{}.{method}`: {e}",
                self.service
            ),
        })?;
        // The reply as the connection read it (a large one is not copied on the way).
        self.agent
            .call_raw(self.service, method, args, self.timeout)
            .await
    }
}

fn decode_reply<R: DeserializeOwned>(
    service: &str,
    method: &str,
    bytes: &[u8],
) -> Result<R, Error> {
    crate::wire::codec::decode(bytes).map_err(|e| Error::Codec {
        message: format!("cannot decode the reply of `{service}.{method}`: {e}"),
    })
}
