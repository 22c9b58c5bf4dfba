//! The one framing of every socket of the cluster: a 4-byte big-endian length before each frame,
//! with a limit checked as soon as the length is read (a longer frame is refused before any of
//! it is buffered).
//!
//! On the Library's side of the data plane the stream also carries a [`FrameMeter`]: the bytes
//! of every partial frame (its length read, its bytes not all arrived) count against one
//! [`FrameBudget`] shared by every connection, so slow or stalled senders together cannot make
//! the Library hold more than the budget (issue 12). The length is checked against the budget
//! as soon as it is read; a frame that would take the total past it fails that connection's
//! read. A frame that arrives whole in one read never touches the budget (the common case: no
//! atomic operation per call).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A framed Unix stream.
pub(crate) type Framing = Framed<FrameStream, LengthDelimitedCodec>;

/// Frames `stream` with frames of at most `max_frame` bytes.
pub(crate) fn framed(stream: UnixStream, max_frame: usize) -> Framing {
    framed_stream(FrameStream::new(stream), max_frame)
}

/// Frames an already wrapped stream.
pub(crate) fn framed_stream(stream: FrameStream, max_frame: usize) -> Framing {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec();
    Framed::new(stream, codec)
}

/// The bytes the Library may hold in partial frames, over every connection.
#[derive(Debug)]
pub(crate) struct FrameBudget {
    limit: usize,
    held: AtomicUsize,
    high_water: AtomicUsize,
}

impl FrameBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        FrameBudget {
            limit,
            held: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The most bytes ever held at once.
    #[cfg(test)]
    pub(crate) fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> Result<(), usize> {
        match self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= self.limit)
            }) {
            Ok(before) => {
                self.high_water.fetch_max(before + n, Ordering::Relaxed);
                Ok(())
            }
            Err(held) => Err(held),
        }
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Follows the frames going through one stream's reads, and holds the current partial frame's
/// length against the shared budget until its last byte has been read.
#[derive(Debug)]
pub(crate) struct FrameMeter {
    budget: Arc<FrameBudget>,
    /// Frames longer than this are refused by the codec: they are never buffered, so never
    /// counted.
    max_frame: usize,
    header: [u8; 4],
    header_len: usize,
    /// Bytes of the current frame's body still to come (0: a header is being read).
    body_left: usize,
    /// The current frame's length.
    len: usize,
    /// Bytes taken from the budget for the current frame.
    held: usize,
    /// Why the next read fails: the budget was spent when the limit was raised mid-frame.
    failed: Option<String>,
}

impl FrameMeter {
    /// A meter against `budget`, for frames of at most `max_frame` bytes.
    pub(crate) fn new(budget: Arc<FrameBudget>, max_frame: usize) -> Self {
        FrameMeter {
            budget,
            max_frame,
            header: [0; 4],
            header_len: 0,
            body_left: 0,
            len: 0,
            held: 0,
            failed: None,
        }
    }

    /// Follows the codec's new frame limit (raised after the handshake). A frame already
    /// under way that the old limit left uncounted, and that the new one allows, is counted
    /// now.
    pub(crate) fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
        if self.body_left > 0 && self.held == 0 && self.len <= max_frame {
            if let Err(e) = self.take(self.len) {
                self.failed = Some(e.to_string());
            }
        }
    }

    /// Takes a partial frame of `len` bytes (and its prefix) from the budget.
    fn take(&mut self, len: usize) -> io::Result<()> {
        let want = len + 4;
        if let Err(held) = self.budget.try_take(want) {
            return Err(io::Error::other(format!(
                "the library's budget for partial frames is spent: {held} of {} bytes are held \
                 by frames not yet complete on all connections, and this frame declares {len} \
                 more (raise Cluster::partial_frame_bytes if workers send large calls at once)",
                self.budget.limit
            )));
        }
        self.held = want;
        Ok(())
    }

    /// Follows `bytes`, just read. An error when a frame's length would take the budget past
    /// its limit.
    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if let Some(why) = self.failed.take() {
            return Err(io::Error::other(why));
        }
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let k = self.body_left.min(bytes.len());
                self.body_left -= k;
                bytes = &bytes[k..];
                if self.body_left == 0 {
                    self.release();
                }
                continue;
            }
            let k = (4 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + k].copy_from_slice(&bytes[..k]);
            self.header_len += k;
            bytes = &bytes[k..];
            if self.header_len < 4 {
                continue;
            }
            self.header_len = 0;
            let len = u32::from_be_bytes(self.header) as usize;
            self.body_left = len;
            self.len = len;
            // A frame whose bytes are all here is not partial; one over the limit is refused
            // by the codec before it is buffered.
            if len > bytes.len() && len <= self.max_frame {
                self.take(len)?;
            }
        }
        Ok(())
    }

    fn release(&mut self) {
        if self.held > 0 {
            self.budget.give_back(std::mem::take(&mut self.held));
        }
    }
}

impl Drop for FrameMeter {
    fn drop(&mut self) {
        self.release();
    }
}

/// A Unix stream, metered on the Library's side of the data plane.
#[derive(Debug)]
pub(crate) struct FrameStream {
    inner: UnixStream,
    meter: Option<FrameMeter>,
}

impl FrameStream {
    /// `stream`, not metered.
    pub(crate) fn new(inner: UnixStream) -> Self {
        FrameStream { inner, meter: None }
    }

    /// `stream`, its partial frames counted by `meter`.
    pub(crate) fn metered(inner: UnixStream, meter: FrameMeter) -> Self {
        FrameStream {
            inner,
            meter: Some(meter),
        }
    }

    /// Follows the codec's new frame limit (see [`FrameMeter::set_max_frame`]).
    pub(crate) fn set_max_frame(&mut self, max_frame: usize) {
        if let Some(meter) = &mut self.meter {
            meter.set_max_frame(max_frame);
        }
    }

    /// The socket.
    pub(crate) fn into_inner(self) -> UnixStream {
        self.inner
    }
}

impl AsyncRead for FrameStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(meter)) = (&polled, &mut this.meter) {
            meter.observe(&buf.filled()[before..])?;
        }
        polled
    }
}

impl AsyncWrite for FrameStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut f = (len as u32).to_be_bytes().to_vec();
        f.resize(4 + len, 7);
        f
    }

    #[test]
    fn whole_frames_never_touch_the_budget_and_partial_ones_are_held_until_complete() {
        let budget = Arc::new(FrameBudget::new(100));
        let mut meter = FrameMeter::new(Arc::clone(&budget), 1000);
        // Many whole frames in one read: nothing held.
        let mut bytes = Vec::new();
        for len in [0, 1, 10, 50] {
            bytes.extend(frame(len));
        }
        meter.observe(&bytes).expect("whole frames");
        assert_eq!(budget.held(), 0);
        // A frame split over reads, its header split too.
        let f = frame(60);
        meter.observe(&f[..2]).expect("half a header");
        assert_eq!(budget.held(), 0);
        meter.observe(&f[2..10]).expect("the rest of the header");
        assert_eq!(budget.held(), 64);
        // A second connection cannot take more than what is left.
        let mut other = FrameMeter::new(Arc::clone(&budget), 1000);
        let g = frame(40);
        let err = other.observe(&g[..20]).expect_err("over the budget");
        assert!(err.to_string().contains("partial frames"), "{err}");
        meter.observe(&f[10..]).expect("the rest");
        assert_eq!(budget.held(), 0);
        other = FrameMeter::new(Arc::clone(&budget), 1000);
        other.observe(&g[..20]).expect("room again");
        assert_eq!(budget.held(), 44);
        drop(other);
        assert_eq!(budget.held(), 0, "a closed connection gives its bytes back");
        assert_eq!(budget.high_water(), 64);
        // Over the frame limit: the codec refuses it, the meter does not count it...
        let mut meter = FrameMeter::new(Arc::clone(&budget), 10);
        meter.observe(&frame(50)[..8]).expect("left to the codec");
        assert_eq!(budget.held(), 0);
        // ...unless the limit is raised while it is under way (a call pipelined behind the
        // hello): then it counts, and past the budget the next read fails.
        meter.set_max_frame(1000);
        assert_eq!(budget.held(), 54);
        let mut other = FrameMeter::new(Arc::clone(&budget), 10);
        other.observe(&frame(60)[..8]).expect("left to the codec");
        other.set_max_frame(1000);
        assert_eq!(budget.held(), 54);
        assert!(other.observe(&[7]).is_err(), "over the budget");
    }
}
