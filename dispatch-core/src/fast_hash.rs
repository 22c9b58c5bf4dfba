//! A fast hasher for the maps on the call path (request ids, service and method names):
//! rustc's "Fx" hash, a rotate, xor and multiply per word. Its keys come from this process or
//! from an authenticated peer of the same cluster, and no map keyed by it grows past its
//! budget, so the flooding resistance of std's SipHash (several times slower on short keys)
//! buys nothing here.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// An empty [`FastMap`].
pub(crate) fn map<K, V>() -> FastMap<K, V> {
    HashMap::default()
}

/// rustc's Fx hash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0_u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0_u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_and_short_names_spread_and_find_their_entries() {
        let mut ids = map();
        for id in 0..10_000_u64 {
            ids.insert(id, id * 2);
        }
        assert!((0..10_000_u64).all(|id| ids.get(&id) == Some(&(id * 2))));
        let mut names = map();
        for name in ["demo", "demo2", "d", "", "a_rather_long_service_name_x"] {
            names.insert(name, name.len());
        }
        assert_eq!(names.get("demo2"), Some(&5));
        assert_eq!(names.get(""), Some(&0));
        assert_eq!(names.get("demo3"), None);
        // Distinct hashes for keys that differ only past the first word.
        let hash = |s: &str| {
            let mut h = FastHasher::default();
            h.write(s.as_bytes());
            h.finish()
        };
        assert_ne!(hash("abcdefgh1"), hash("abcdefgh2"));
    }
}
