//! The frames of a stream connection, after the usual handshake (a [`Hello`](crate::wire::Hello)
//! whose protocol carries [`STREAM_CONNECTION`]). Length-prefixed bincode, as every socket.

use crate::error::RemoteError;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Set in a hello's `protocol` by an Agent's stream connection: the Library serves it with
/// `library/streams.rs` instead of tarpc.
pub(crate) const STREAM_CONNECTION: u32 = 1 << 31;

/// Open streams one connection may hold; an `Open` past it is ended with an error.
pub(crate) const MAX_STREAMS_PER_CONNECTION: usize = 4096;

/// Agent → Library.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Up {
    /// Opens stream `id` (chosen by the Agent, unique on its connection): `service.method(args)`.
    /// An `Open` of an id already open is ignored (the Agent re-sends every open stream after a
    /// reconnect, and may race one it was opening).
    Open {
        /// The stream's id.
        id: u64,
        /// The service's wire name.
        service: String,
        /// The streaming method.
        method: String,
        /// The bincode-encoded argument tuple.
        args: ByteBuf,
    },
    /// The caller dropped stream `id`.
    Cancel {
        /// The stream's id.
        id: u64,
    },
}

/// Library → Agent. The frames of one stream come in this order: `Opened`, then `Item`s and
/// `Gap`s, then `End` (or `End` alone when it could not open).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Down {
    /// Stream `id` is open (for a keyed subscription, the last value follows).
    Opened {
        /// The stream's id.
        id: u64,
    },
    /// One value, encoded.
    Item {
        /// The stream's id.
        id: u64,
        /// The bincode-encoded value.
        bytes: ByteBuf,
    },
    /// `missed` values were dropped here for this subscriber (its buffer overflowed).
    Gap {
        /// The stream's id.
        id: u64,
        /// Values dropped.
        missed: u64,
    },
    /// Stream `id` ended: its feed ended (`None`), or why not.
    End {
        /// The stream's id.
        id: u64,
        /// Why, when it is not the feed's own end.
        error: Option<StreamEnd>,
    },
}

/// Why a stream ended other than by its feed's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StreamEnd {
    /// The method could not open, or its feed failed.
    Remote(RemoteError),
    /// The subscriber overflowed its buffer of `buffer` values (policy `close`).
    Lagged {
        /// The buffer, in values.
        buffer: u64,
    },
    /// The connection already holds as many streams as it may.
    TooMany {
        /// The limit.
        limit: u64,
    },
}

/// [`Down::Item`], borrowed: encodes as `Down::Item` without copying the value first.
#[derive(Serialize)]
pub(crate) enum DownRef<'a> {
    /// Never sent: keeps the variant index of `Item` equal to `Down`'s.
    #[allow(dead_code)]
    _Opened,
    /// [`Down::Item`].
    Item {
        /// The stream's id.
        id: u64,
        /// The encoded value.
        bytes: &'a serde_bytes::Bytes,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec;

    #[test]
    fn a_borrowed_item_encodes_as_an_item_and_garbage_never_panics() {
        let bytes = [1_u8, 2, 3];
        let borrowed = codec::encode(&DownRef::Item {
            id: 7,
            bytes: serde_bytes::Bytes::new(&bytes),
        })
        .expect("encode");
        let owned = codec::encode(&Down::Item {
            id: 7,
            bytes: ByteBuf::from(bytes.to_vec()),
        })
        .expect("encode");
        assert_eq!(borrowed, owned);
        match codec::decode::<Down>(&borrowed) {
            Ok(Down::Item { id: 7, bytes }) => assert_eq!(bytes.into_vec(), vec![1, 2, 3]),
            other => panic!("decoded {other:?}"),
        }
        // Every prefix and a few mutations of real frames decode to a value or an error.
        let open = codec::encode(&Up::Open {
            id: 1,
            service: "s".into(),
            method: "m".into(),
            args: ByteBuf::from(vec![0; 8]),
        })
        .expect("encode");
        for frame in [&open, &owned] {
            for end in 0..frame.len() {
                let _ = codec::decode::<Up>(&frame[..end]);
                let _ = codec::decode::<Down>(&frame[..end]);
                let mut mutated = frame.clone();
                mutated[end] ^= 0xff;
                let _ = codec::decode::<Up>(&mutated);
                let _ = codec::decode::<Down>(&mutated);
            }
        }
    }
}
