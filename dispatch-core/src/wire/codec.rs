//! The one encoding of every payload and control message: bincode 1.x `DefaultOptions` (varint
//! integers, little endian), the same options tarpc's bincode transport uses, so both ends agree
//! without negotiation.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

/// Encodes `value`.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::DefaultOptions::new().serialize(value)
}

/// Decodes a `T` from exactly `bytes`. Never panics on arbitrary input: a length field larger
/// than the input is an error (not an allocation), and so are trailing bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::DefaultOptions::new()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
}

/// Decodes a `T` from the start of `bytes`, ignoring what follows: to read the first fields of
/// a message before deciding how to read the whole.
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::DefaultOptions::new()
        .with_limit(bytes.len() as u64)
        .allow_trailing_bytes()
        .deserialize(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let bytes = encode(&(1_i64, String::from("x"))).expect("encode");
        let back: (i64, String) = decode(&bytes).expect("decode");
        assert_eq!(back, (1, "x".into()));
        // A huge length prefix for a Vec must be an error, not an allocation.
        assert!(
            decode::<Vec<u8>>(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err()
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode::<(i64, String)>(&trailing).is_err());
    }
}
