//! The one framing of every socket of the cluster: a 4-byte big-endian length before each frame,
//! with a limit checked as soon as the length is read (a longer frame is refused before any of
//! it is buffered).

use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A framed Unix stream.
pub(crate) type Framing = Framed<UnixStream, LengthDelimitedCodec>;

/// Frames `stream` with frames of at most `max_frame` bytes.
pub(crate) fn framed(stream: UnixStream, max_frame: usize) -> Framing {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec();
    Framed::new(stream, codec)
}
