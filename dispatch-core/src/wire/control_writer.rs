//! A child's queue of messages to the master, written by one task in order.

use super::control::ToMaster;
use super::control_channel::ControlSender;
use tokio::sync::{mpsc, oneshot};

/// A child's queue of messages to the master, written by one task in order; sending never
/// blocks the caller.
#[derive(Debug, Clone)]
pub(crate) struct ControlWriter {
    tx: mpsc::UnboundedSender<Outbound>,
}

#[derive(Debug)]
enum Outbound {
    Message(ToMaster),
    Flush(oneshot::Sender<()>),
}

impl ControlWriter {
    /// Starts the task that writes to `sender`.
    pub(crate) fn spawn(mut sender: ControlSender) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outbound>();
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Outbound::Message(msg) => {
                        if sender.send(&msg).await.is_err() {
                            break;
                        }
                    }
                    Outbound::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        ControlWriter { tx }
    }

    /// Queues `msg`; `false` if the writer is gone.
    pub(crate) fn send(&self, msg: ToMaster) -> bool {
        self.tx.send(Outbound::Message(msg)).is_ok()
    }

    /// Resolves once everything queued before has been written.
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Outbound::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}
