//! The simulator's one source of randomness: ChaCha8 seeded by the run seed.
//!
//! Two streams of the same generator keep the run stable under shrinking:
//! stream 0 draws the fault plan, stream 1 drives everything at run time.
//! Removing a scheduled fault therefore leaves every message latency and
//! client choice before it unchanged.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// A seeded generator with the few draws the simulator needs.
#[derive(Clone, Debug)]
pub struct SimRng(ChaCha8Rng);

impl SimRng {
    /// Stream `stream` of the generator seeded by `seed`.
    pub fn new(seed: u64, stream: u64) -> SimRng {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        SimRng(rng)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `low..=high` (returns `low` if `high < low`).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        let span = high - low + 1;
        low + self.next_u64() % span
    }

    /// True with probability `ppm` parts per million.
    pub fn chance_ppm(&mut self, ppm: u64) -> bool {
        self.next_u64() % 1_000_000 < ppm
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}
