//! The memo of explored search configurations.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::hash::{BuildHasherDefault, Hasher};

use super::events::NIL;

/// The set of (linearized bitset, head) configurations already expanded.
/// Bitsets live in one flat arena; the table maps a configuration's hash to
/// the newest arena slot with that hash, and slots chain to older ones.
pub(super) struct Memo {
    pub words: usize,
    table: HashMap<u64, u32, BuildHasherDefault<PrehashedHasher>>,
    arena_bits: Vec<u64>,
    arena_key: Vec<u64>,
    arena_chain: Vec<u32>,
}

impl Memo {
    pub fn new(ops: usize) -> Self {
        Memo {
            words: ops.div_ceil(64).max(1),
            table: HashMap::default(),
            arena_bits: Vec::new(),
            arena_key: Vec::new(),
            arena_chain: Vec::new(),
        }
    }

    /// Records the configuration (`hash` covers both parts); false if it
    /// was already there.
    pub fn insert(&mut self, hash: u64, bits: &[u64], head_key: u64) -> bool {
        let slot = self.arena_key.len() as u32;
        match self.table.entry(hash) {
            MapEntry::Vacant(vacant) => {
                vacant.insert(slot);
                self.push(bits, head_key, NIL);
            }
            MapEntry::Occupied(mut occupied) => {
                let mut candidate = *occupied.get();
                while candidate != NIL {
                    let c = candidate as usize;
                    let stored = &self.arena_bits[c * self.words..(c + 1) * self.words];
                    if self.arena_key[c] == head_key && stored == bits {
                        return false;
                    }
                    candidate = self.arena_chain[c];
                }
                let older = occupied.insert(slot);
                self.push(bits, head_key, older);
            }
        }
        true
    }

    fn push(&mut self, bits: &[u64], head_key: u64, chain: u32) {
        self.arena_bits.extend_from_slice(bits);
        self.arena_key.push(head_key);
        self.arena_chain.push(chain);
    }
}

/// Keys are already uniformly mixed 64-bit hashes: pass them through.
#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x100_0000_01B3);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

pub(super) fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
