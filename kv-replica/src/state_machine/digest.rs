//! The digest of a state machine: a deterministic hash the simulator
//! compares across replicas at the same applied index.

use super::KvStateMachine;

/// FNV-1a, 64 bits: tiny, dependency-free and the same on every platform.
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    /// Length first, so that ("ab", "c") and ("a", "bc") hash differently.
    fn str(&mut self, value: &str) {
        self.u64(value.len() as u64);
        self.bytes(value.as_bytes());
    }
}

impl KvStateMachine {
    /// A deterministic hash of the applied index, every key with its value and
    /// revision, and the dedup table (clients, seqs, indexes, results), so
    /// that the simulator can check that replicas at the same index agree.
    /// The dedup limit is configuration and is not included.
    pub fn digest(&self) -> u64 {
        let mut hash = Fnv1a(Fnv1a::OFFSET_BASIS);
        hash.u64(self.applied_index);
        hash.u64(self.data.len() as u64);
        for (key, stored) in &self.data {
            hash.str(key);
            hash.str(&stored.value);
            hash.u64(stored.revision);
        }
        hash.u64(self.dedup.len() as u64);
        let mut encoded = Vec::new();
        for (client_id, entry) in &self.dedup {
            hash.str(client_id);
            hash.u64(entry.seq);
            hash.u64(entry.index);
            encoded.clear();
            encoded = postcard::to_extend(&entry.result, encoded).expect("an OpResult serializes");
            hash.u64(encoded.len() as u64);
            hash.bytes(&encoded);
        }
        // Only when present, so that digests of clusters without an address
        // book stay what they were.
        if !self.addresses.is_empty() {
            hash.u64(self.addresses.len() as u64);
            for (name, url) in &self.addresses {
                hash.str(name);
                hash.str(url);
            }
        }
        // Likewise only when present.
        if !self.leases.is_empty() {
            hash.u64(self.leases.len() as u64);
            for (id, lease) in &self.leases {
                hash.u64(*id);
                hash.u64(lease.ttl_ms);
                hash.u64(lease.keys.len() as u64);
                for key in &lease.keys {
                    hash.str(key);
                }
            }
        }
        hash.0
    }
}
