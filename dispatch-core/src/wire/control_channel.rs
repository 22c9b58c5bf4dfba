//! One end of a control socket: the master's end of each child's private socket pair, or the
//! child's end, inherited at a fixed descriptor so that no other process can reach it.
//! End-of-file on it means the other side is gone.

use super::control::MAX_CONTROL_FRAME;
use super::framing::{framed, Framing};
use crate::cluster_error::ClusterError;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
#[cfg(test)]
use serde::Serialize;
use tokio::net::UnixStream;

/// One end of a control socket.
#[derive(Debug)]
pub(crate) struct ControlChannel {
    framed: Framing,
}

impl ControlChannel {
    pub(crate) fn new(stream: UnixStream) -> Self {
        ControlChannel {
            framed: framed(stream, MAX_CONTROL_FRAME),
        }
    }

    /// Sends one message.
    #[cfg(test)]
    pub(crate) async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ClusterError> {
        send(&mut self.framed, msg).await
    }

    /// The next message, or `None` at end-of-file.
    pub(crate) async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ClusterError> {
        recv(&mut self.framed).await
    }

    /// The next frame, undecoded, or `None` at end-of-file.
    pub(crate) async fn recv_frame(&mut self) -> Result<Option<bytes::BytesMut>, ClusterError> {
        self.framed
            .next()
            .await
            .transpose()
            .map_err(|e| ClusterError::io("cannot read the control socket", e))
    }

    /// Separates the two directions, so one task can read while another writes.
    pub(crate) fn split(self) -> (ControlSender, ControlReceiver) {
        let (sink, stream) = self.framed.split();
        (ControlSender { sink }, ControlReceiver { stream })
    }
}

/// The writing half of a [`ControlChannel`].
#[derive(Debug)]
pub(crate) struct ControlSender {
    sink: SplitSink<Framing, Bytes>,
}

impl ControlSender {
    /// Buffers one already encoded message (at most [`MAX_CONTROL_FRAME`] bytes), writing out
    /// what the buffer holds if it is full; [`flush`](ControlSender::flush) writes the rest.
    pub(crate) async fn feed(&mut self, frame: Bytes) -> std::io::Result<()> {
        self.sink.feed(frame).await
    }

    /// Writes out everything buffered.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush().await
    }
}

/// The reading half of a [`ControlChannel`].
#[derive(Debug)]
pub(crate) struct ControlReceiver {
    stream: SplitStream<Framing>,
}

impl ControlReceiver {
    /// The next message, or `None` at end-of-file.
    pub(crate) async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ClusterError> {
        recv(&mut self.stream).await
    }

    /// The next frame, undecoded, or `None` at end-of-file. A length prefix over
    /// [`MAX_CONTROL_FRAME`] is an error of kind `InvalidData`, returned as soon as it is read.
    pub(crate) async fn recv_frame(&mut self) -> std::io::Result<Option<bytes::BytesMut>> {
        self.stream.next().await.transpose()
    }
}

#[cfg(test)]
async fn send<S, T>(sink: &mut S, msg: &T) -> Result<(), ClusterError>
where
    S: futures::Sink<Bytes, Error = std::io::Error> + Unpin,
    T: Serialize,
{
    let bytes = super::codec::encode(msg).map_err(|e| ClusterError::Protocol {
        message: format!("cannot encode a control message: {e}"),
    })?;
    sink.send(Bytes::from(bytes))
        .await
        .map_err(|e| ClusterError::io("cannot write to the control socket", e))
}

async fn recv<S, T>(stream: &mut S) -> Result<Option<T>, ClusterError>
where
    S: futures::Stream<Item = std::io::Result<bytes::BytesMut>> + Unpin,
    T: DeserializeOwned,
{
    match stream.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(ClusterError::io("cannot read the control socket", e)),
        Some(Ok(frame)) => {
            super::codec::decode(&frame)
                .map(Some)
                .map_err(|e| ClusterError::Protocol {
                    message: format!("undecodable control message: {e}"),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ToChild, ToMaster};

    #[tokio::test]
    async fn messages_cross_a_socket_pair() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (mut a, mut b) = (ControlChannel::new(a), ControlChannel::new(b));
        a.send(&ToChild::ClusterReady).await.expect("send");
        let got: Option<ToChild> = b.recv().await.expect("recv");
        assert!(matches!(got, Some(ToChild::ClusterReady)));
        b.send(&ToMaster::Failed { reason: "x".into() })
            .await
            .expect("send");
        let got: Option<ToMaster> = a.recv().await.expect("recv");
        assert!(matches!(got, Some(ToMaster::Failed { reason }) if reason == "x"));
        drop(a);
        assert!(b.recv::<ToChild>().await.expect("eof").is_none());
    }
}
