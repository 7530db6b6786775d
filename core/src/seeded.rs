//! Seeded, stateless randomness: a draw is a hash of the seed and of what is being decided,
//! so that the same seed gives the same decisions whatever order they are asked in (the
//! simulation's faults, the chaos tests' faults, the quickstart's noise).
//!
//! SplitMix64 and FNV-1a are written out here because `rand`'s generators do not promise the
//! same stream across versions, and `std`'s `DefaultHasher` does not promise the same hash:
//! a researcher's seed must keep meaning the same run.

/// SplitMix64's increment, the golden ratio in 64 bits.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 finaliser: a bijection on u64 that scatters nearby inputs (0 maps to 0).
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One SplitMix64 step from `x`: the finaliser of `x` plus the increment, so that 0 maps
/// somewhere far from 0.
pub fn splitmix(x: u64) -> u64 {
    mix(x.wrapping_add(GAMMA))
}

/// The SplitMix64 generator: advances `state` and returns its next output.
pub fn splitmix_next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GAMMA);
    mix(*state)
}

/// FNV-1a, to fold a string into a key.
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A uniform draw in [0, 1) from the top 53 bits of `h` (an `f64`'s mantissa).
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds keep their meaning only if these numbers never change: they are what the
    /// three copies this module replaced computed.
    #[test]
    fn outputs_are_pinned() {
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0x5692_161d_100b_05e5);
        assert_eq!(mix(42), 0xa759_ea27_d472_7622);
        assert_eq!(splitmix(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix(42), 0xbdd7_3226_2feb_6e95);
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("train"), 0xdee7_95a6_c508_7209);
        assert_eq!(fnv1a("1"), 0xaf63_ac4c_8601_9afc);
        assert_eq!(unit(splitmix(42)), 0.741_564_878_771_823_3);
        assert_eq!(unit(u64::MAX), 0.999_999_999_999_999_9);
    }

    #[test]
    fn the_generator_steps_by_the_increment() {
        let mut state = 7;
        assert_eq!(splitmix_next(&mut state), 0x63cb_e1e4_5932_0dd7);
        assert_eq!(splitmix_next(&mut state), 0x044c_3cd7_f43c_661c);
        assert_eq!(state, 0x3c6e_f372_fe94_f831);
        assert_eq!(splitmix(7), 0x63cb_e1e4_5932_0dd7);
    }

    #[test]
    fn unit_is_uniform() {
        let below = (0..10_000u64).filter(|&i| unit(splitmix(i)) < 0.25).count();
        assert!((2_300..2_700).contains(&below), "{below}");
    }
}
