//! Seeded random streams, one per (seed, generation, purpose, index): the same seed gives the same search for
//! any number of threads, on any platform (ChaCha8 with explicit seeding, u32 ranges only).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a stream is used for; part of its derivation so that streams never overlap.
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    Random = 1,
    Mutation = 2,
    Crossover = 3,
    Local = 4,
    Racing = 5,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn stream(seed: u64, generation: usize, purpose: Purpose, index: usize) -> ChaCha8Rng {
    let mut h = splitmix(seed);
    h = splitmix(h ^ generation as u64);
    h = splitmix(h ^ purpose as u64);
    h = splitmix(h ^ index as u64);
    ChaCha8Rng::seed_from_u64(h)
}

/// A uniform index below `n` (n >= 1).
pub fn below<R: Rng>(rng: &mut R, n: usize) -> usize {
    rng.gen_range(0..n as u32) as usize
}

/// Fisher-Yates shuffle with u32 ranges (portable across pointer widths).
pub fn shuffle<R: Rng, T>(rng: &mut R, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.gen_range(0..=i as u32) as usize;
        items.swap(i, j);
    }
}
