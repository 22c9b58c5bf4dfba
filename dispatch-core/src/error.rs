//! The errors a caller of a Library service can tell apart.

use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

/// The error of a call from a worker to a Library service.
///
/// `E` is the service's own error type: a method declared as returning `Result<T, E>` gives its
/// caller `Result<T, Error<E>>`, with the service's error in [`Error::Service`]. Every other
/// variant is about getting the call there and back. Methods that cannot fail use the default,
/// `Error<Infallible>`.
///
/// The enum is `#[non_exhaustive]`: match the cases you handle and keep a wildcard arm, or use the
/// `is_*` helpers.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E = Infallible> {
    /// The Library could not be reached: it is not running, the connection broke, or this process
    /// has no Agent. The call was not delivered.
    Unavailable {
        /// Why the Library could not be reached.
        reason: String,
    },
    /// The Library restarted while the call was in flight. The call may or may not have run; it
    /// is never retried for you, because it may have had effects.
    LibraryRestarted,
    /// The service is a fleet singleton (`Cluster::fleet_singleton`) and this host is on
    /// standby: another host's Library runs it. Call again later, or on the leader's host.
    NotLeader {
        /// The service.
        service: String,
        /// The host that leads now, as the fleet's Redis says (`None`: no leader right now).
        leader: Option<String>,
    },
    /// No answer came before the call's deadline. The Library stops working on the call.
    DeadlineExceeded {
        /// The time the call was given.
        timeout: Duration,
    },
    /// The Library hosts no service of this name.
    UnknownService {
        /// The service that was asked for.
        service: String,
    },
    /// The service has no method of this name.
    UnknownMethod {
        /// The service that was asked.
        service: String,
        /// The method that was asked for.
        method: String,
    },
    /// The service method panicked. The Library keeps running; the panic's message is carried
    /// back here.
    Panicked {
        /// `service.method` that panicked.
        method: String,
        /// The panic's message.
        message: String,
    },
    /// The service method returned its own error.
    Service(E),
    /// The request or the response is larger than the cluster's frame limit. Nothing else on the
    /// connection is affected.
    TooLarge {
        /// Which side was too large: `"request"` or `"response"`.
        what: &'static str,
        /// Its encoded size in bytes.
        size: usize,
        /// The largest payload a frame can carry.
        limit: usize,
    },
    /// The arguments or the result could not be encoded or decoded (usually: worker and Library
    /// were built from different sources).
    Codec {
        /// What failed, and where.
        message: String,
    },
    /// A notice on a stream (`RemoteStream`), not its end: the Library restarted or the
    /// connection broke, and the Agent re-opened the subscription by itself. Values published
    /// meanwhile may be missing; the stream goes on (for a keyed subscription, with the latest
    /// value first).
    StreamResumed,
    /// A notice on a stream, not its end: this subscriber read too slowly, its buffer in the
    /// Library overflowed and `missed` values were dropped here (policies `keep_latest` and
    /// `drop_oldest`). The stream goes on.
    StreamGap {
        /// Values dropped for this subscriber at this point.
        missed: u64,
    },
    /// The end of a stream: this subscriber read too slowly and its buffer of `buffer` values
    /// overflowed (policy `close`). Subscribe again to go on from the latest value.
    StreamLagged {
        /// The buffer the subscriber overflowed, in values.
        buffer: usize,
    },
}

impl<E> Error<E> {
    /// Whether the Library could not be reached.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
    /// Whether the service is a fleet singleton led by another host.
    pub fn is_not_leader(&self) -> bool {
        matches!(self, Error::NotLeader { .. })
    }

    /// Whether the Library restarted while the call was in flight.
    pub fn is_library_restarted(&self) -> bool {
        matches!(self, Error::LibraryRestarted)
    }
    /// Whether the call ran out of time.
    pub fn is_deadline_exceeded(&self) -> bool {
        matches!(self, Error::DeadlineExceeded { .. })
    }
    /// Whether the service or the method does not exist in the Library.
    pub fn is_unknown(&self) -> bool {
        matches!(
            self,
            Error::UnknownService { .. } | Error::UnknownMethod { .. }
        )
    }
    /// Whether the service method panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, Error::Panicked { .. })
    }
    /// Whether this is the service's own error.
    pub fn is_service(&self) -> bool {
        matches!(self, Error::Service(_))
    }
    /// Whether the request or response exceeded the frame limit.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Error::TooLarge { .. })
    }
    /// Whether encoding or decoding failed.
    pub fn is_codec(&self) -> bool {
        matches!(self, Error::Codec { .. })
    }
    /// The panic message, if the method panicked.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            Error::Panicked { message, .. } => Some(message),
            _ => None,
        }
    }
    /// The service's own error, if that is what this is.
    pub fn into_service(self) -> Option<E> {
        match self {
            Error::Service(e) => Some(e),
            _ => None,
        }
    }
    /// Whether this is a notice on a stream that goes on ([`Error::StreamResumed`],
    /// [`Error::StreamGap`]) rather than a failure.
    pub fn is_stream_notice(&self) -> bool {
        matches!(self, Error::StreamResumed | Error::StreamGap { .. })
    }
    /// Maps the service's own error with `f`, keeping every other variant.
    pub fn map_service<F>(self, f: impl FnOnce(E) -> F) -> Error<F> {
        match self {
            Error::Unavailable { reason } => Error::Unavailable { reason },
            Error::LibraryRestarted => Error::LibraryRestarted,
            Error::NotLeader { service, leader } => Error::NotLeader { service, leader },
            Error::DeadlineExceeded { timeout } => Error::DeadlineExceeded { timeout },
            Error::UnknownService { service } => Error::UnknownService { service },
            Error::UnknownMethod { service, method } => Error::UnknownMethod { service, method },
            Error::Panicked { method, message } => Error::Panicked { method, message },
            Error::Service(e) => Error::Service(f(e)),
            Error::TooLarge { what, size, limit } => Error::TooLarge { what, size, limit },
            Error::Codec { message } => Error::Codec { message },
            Error::StreamResumed => Error::StreamResumed,
            Error::StreamGap { missed } => Error::StreamGap { missed },
            Error::StreamLagged { buffer } => Error::StreamLagged { buffer },
        }
    }
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unavailable { reason } => write!(f, "the library is unavailable: {reason}"),
            Error::NotLeader { service, leader } => write!(
                f,
                "service `{service}` is a fleet singleton and this host is on standby (leader: \
                 {}): call it on the leader's host, or again later",
                leader.as_deref().unwrap_or("none right now")
            ),
            Error::LibraryRestarted => {
                f.write_str("the library restarted while the call was in flight (it may have run)")
            }
            Error::DeadlineExceeded { timeout } => {
                write!(f, "the call exceeded its deadline of {timeout:?}")
            }
            Error::UnknownService { service } => {
                write!(
                    f,
                    "the library has no service `{service}`: if it is declared with \
                     #[library_service] in another crate, make sure the binary uses that crate \
                     (a crate nothing references is not linked: add `use that_crate as _;`)"
                )
            }
            Error::UnknownMethod { service, method } => {
                write!(f, "service `{service}` has no method `{method}`")
            }
            Error::Panicked { method, message } => {
                write!(f, "service method `{method}` panicked: {message}")
            }
            Error::Service(e) => write!(f, "the service returned an error: {e:?}"),
            Error::TooLarge { what, size, limit } => write!(
                f,
                "the {what} is too large: {size} bytes, the frame limit allows {limit}"
            ),
            Error::Codec { message } => write!(f, "encoding or decoding failed: {message}"),
            Error::StreamResumed => f.write_str(
                "the stream was re-opened after the library restarted: values may be missing here \
                 (the stream goes on)",
            ),
            Error::StreamGap { missed } => write!(
                f,
                "this subscriber read too slowly: {missed} values were dropped here (the stream \
                 goes on; read faster or raise the method's #[subscription(buffer = …)])"
            ),
            Error::StreamLagged { buffer } => write!(
                f,
                "this subscriber read too slowly and overflowed its buffer of {buffer} values: \
                 the stream is closed (subscribe again, or raise #[subscription(buffer = …)])"
            ),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for Error<E> {}

/// A failure of a call on the Library's side, as it travels back over the wire. The Agent turns
/// it into an [`Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[doc(hidden)]
pub enum RemoteError {
    /// No such service.
    UnknownService {
        /// The service asked for.
        service: String,
    },
    /// No such method.
    UnknownMethod {
        /// The service asked.
        service: String,
        /// The method asked for.
        method: String,
    },
    /// The method panicked.
    Panicked {
        /// `service.method`.
        method: String,
        /// The panic message.
        message: String,
    },
    /// The response exceeded the frame limit.
    TooLarge {
        /// Encoded size.
        size: u64,
        /// Limit.
        limit: u64,
    },
    /// Arguments or result failed to encode or decode.
    Codec {
        /// What failed.
        message: String,
    },
    /// The Library is stopping and takes no new calls.
    ShuttingDown,
    /// A fleet singleton on a standby host (issue 17).
    NotLeader {
        /// The service.
        service: String,
        /// The leading host, if any.
        leader: Option<String>,
    },
}

impl<E> From<RemoteError> for Error<E> {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::UnknownService { service } => Error::UnknownService { service },
            RemoteError::UnknownMethod { service, method } => {
                Error::UnknownMethod { service, method }
            }
            RemoteError::Panicked { method, message } => Error::Panicked { method, message },
            RemoteError::TooLarge { size, limit } => Error::TooLarge {
                what: "response",
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            },
            RemoteError::Codec { message } => Error::Codec { message },
            RemoteError::ShuttingDown => Error::Unavailable {
                reason: "the library is shutting down".into(),
            },
            RemoteError::NotLeader { service, leader } => Error::NotLeader { service, leader },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_match_variants() {
        let e: Error = Error::DeadlineExceeded {
            timeout: Duration::from_secs(1),
        };
        assert!(e.is_deadline_exceeded() && !e.is_unavailable());
        let e: Error<String> = Error::Service("nope".into());
        assert!(e.is_service());
        assert_eq!(e.into_service().as_deref(), Some("nope"));
        let e: Error = RemoteError::Panicked {
            method: "demo.boom".into(),
            message: "kaboom".into(),
        }
        .into();
        assert_eq!(e.panic_message(), Some("kaboom"));
        assert_eq!(e.to_string(), "service method `demo.boom` panicked: kaboom");
    }
}
