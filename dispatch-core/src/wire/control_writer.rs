//! A child's queue of messages to the master, written by one task in order, bounded in bytes.

use super::control::{ToMaster, MAX_CONTROL_FRAME};
use super::control_channel::ControlSender;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The most the writer task buffers before it writes to the socket.
const BATCH_BYTES: usize = 256 << 10;

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The writer is gone: the control socket is closed or broken.
    Closed,
    /// The encoded message is larger than a control frame.
    TooLarge {
        /// Its encoded size.
        size: usize,
    },
    /// The queue holds its budget already: the master does not keep up.
    Full {
        /// Bytes queued now.
        queued: usize,
        /// The budget.
        budget: usize,
    },
    /// The message could not be encoded.
    Encode(String),
}

/// A child's queue of messages to the master, written by one task in order; sending never
/// blocks the caller. Messages to route ([`ToMaster::Send`]) are refused past the queue's byte
/// budget; the others (ready, failed, stats) are small, few and always queued.
#[derive(Debug, Clone)]
pub(crate) struct ControlWriter {
    tx: mpsc::UnboundedSender<Outbound>,
    queued: Arc<AtomicUsize>,
    budget: usize,
}

#[derive(Debug)]
enum Outbound {
    Frame(Bytes),
    Flush(oneshot::Sender<()>),
}

impl ControlWriter {
    /// Starts the task that writes to `sender`, with a budget of `budget` bytes queued.
    pub(crate) fn spawn(mut sender: ControlSender, budget: usize) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outbound>();
        let queued = Arc::new(AtomicUsize::new(0));
        let written = Arc::clone(&queued);
        tokio::spawn(async move {
            let mut next = rx.recv().await;
            while let Some(item) = next.take() {
                let mut batch = 0;
                let mut flush_waiter = None;
                let mut item = Some(item);
                // Everything already queued goes out in one write, up to BATCH_BYTES.
                while let Some(current) = item.take() {
                    match current {
                        Outbound::Frame(frame) => {
                            batch += frame.len();
                            if let Err(e) = sender.feed(frame).await {
                                tracing::error!("cannot write to the master's control socket: {e}");
                                return;
                            }
                        }
                        Outbound::Flush(done) => {
                            flush_waiter = Some(done);
                            break;
                        }
                    }
                    if batch < BATCH_BYTES {
                        item = rx.try_recv().ok();
                    }
                }
                if let Err(e) = sender.flush().await {
                    tracing::error!("cannot write to the master's control socket: {e}");
                    return;
                }
                written.fetch_sub(batch, Ordering::Relaxed);
                if let Some(done) = flush_waiter {
                    let _ = done.send(());
                }
                next = rx.recv().await;
            }
        });
        ControlWriter { tx, queued, budget }
    }

    /// Queues `msg`. A [`ToMaster::Send`] is refused when the queue already holds its budget.
    pub(crate) fn send(&self, msg: &ToMaster) -> Result<(), Refused> {
        let bytes = super::codec::encode(msg).map_err(|e| Refused::Encode(e.to_string()))?;
        if bytes.len() > MAX_CONTROL_FRAME {
            return Err(Refused::TooLarge { size: bytes.len() });
        }
        let queued = self.queued.load(Ordering::Relaxed);
        if matches!(msg, ToMaster::Send(_)) && queued + bytes.len() > self.budget {
            return Err(Refused::Full {
                queued,
                budget: self.budget,
            });
        }
        self.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        self.tx
            .send(Outbound::Frame(Bytes::from(bytes)))
            .map_err(|_| Refused::Closed)
    }

    /// Resolves once everything queued before has been written.
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Outbound::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}
