//! What a receiver holds: a subscription to one topic, decoding each delivery as the topic's
//! type.

use futures::Stream;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A delivered message before decoding.
#[derive(Debug)]
pub(super) struct Delivery {
    pub(super) from: u32,
    pub(super) version: u64,
    pub(super) payload: ByteBuf,
}

/// A received message with its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<T> {
    /// The sender's pid (0: the master, for lifecycle events).
    pub from: u32,
    /// For a published value, its version: numbered by the master per topic from 1, so it keeps
    /// growing across Library restarts. 0 for an ordinary message.
    pub version: u64,
    /// The value.
    pub value: T,
}

/// The messages of one topic, decoded: a [`Stream`] of [`Received<T>`].
#[derive(Debug)]
pub struct Subscription<T> {
    pub(super) topic: &'static str,
    pub(super) rx: mpsc::UnboundedReceiver<Arc<Delivery>>,
    pub(super) ty: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Stream for Subscription<T> {
    type Item = Received<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(delivery)) => {
                    match crate::wire::codec::decode(&delivery.payload) {
                        Ok(value) => {
                            return Poll::Ready(Some(Received {
                                from: delivery.from,
                                version: delivery.version,
                                value,
                            }))
                        }
                        Err(e) => tracing::error!(
                            topic = self.topic,
                            from = delivery.from,
                            "a message does not decode as this topic's type (skipped): {e}"
                        ),
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
