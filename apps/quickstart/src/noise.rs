//! The quickstart's "training": seeded uniform noise added to every parameter.
//!
//! Eight independent xorshift32 streams run side by side, so the compiler keeps the loop in
//! SIMD registers (shifts, xors and an int -> float conversion, all in baseline SSE2): a
//! node's update costs about as much as copying its model. The streams are seeded with
//! SplitMix64 from (node id, server round, array index), so a rerun gives the same model.

use floret_core::seeded::splitmix_next;

/// Half-width of the noise: each value moves by a uniform amount in `[-NOISE, NOISE)`.
pub const NOISE: f32 = 0.01;

const LANES: usize = 8;
/// Values summed in `f32` before being added to the `f64` total, to bound rounding error.
const BLOCK: usize = 4096;
/// Maps a 24-bit integer onto `[0, 2 * NOISE)`.
const SCALE: f32 = 2.0 * NOISE / (1u32 << 24) as f32;

/// The seed of one array's noise on one node in one round.
pub fn seed_for(node_id: u64, server_round: u64, array_index: u64) -> u64 {
    let mut s = node_id;
    let a = splitmix_next(&mut s);
    let mut s = a ^ server_round.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let b = splitmix_next(&mut s);
    let mut s = b ^ array_index.wrapping_mul(0xA076_1D64_78BD_642F);
    splitmix_next(&mut s)
}

#[inline(always)]
fn step(x: &mut u32) -> f32 {
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    // 24 high bits fit in an i32, whose conversion to f32 is a single SIMD instruction.
    ((*x >> 8) as i32) as f32 * SCALE - NOISE
}

/// Returns `values` plus noise in a new vector, and the sum of the noise's absolute values.
pub fn add_noise(values: &[f32], seed: u64) -> (Vec<f32>, f64) {
    let mut sm = seed;
    let mut lanes = [0u32; LANES];
    for lane in lanes.iter_mut() {
        // xorshift32 must not start at zero; SplitMix64's low bits are never all zero for
        // long, but be sure.
        *lane = (splitmix_next(&mut sm) as u32) | 1;
    }
    let mut total = 0f64;
    let mut acc = [0f32; LANES];
    // Written block by block, each block's loop free of any other branch, so the compiler
    // keeps the eight streams in SIMD registers; and into an iterator of known length
    // rather than a zeroed buffer (zeroing a model-sized buffer that is overwritten at
    // once cost as much as a tenth of a small model's round).
    let mut body: Vec<[f32; LANES]> = Vec::with_capacity(values.len() / LANES);
    for block in values.chunks(BLOCK) {
        body.extend(block.chunks_exact(LANES).map(|i| {
            let mut o = [0f32; LANES];
            for l in 0..LANES {
                let noise = step(&mut lanes[l]);
                o[l] = i[l] + noise;
                acc[l] += noise.abs();
            }
            o
        }));
        if block.len() == BLOCK {
            total += acc.iter().map(|&a| f64::from(a)).sum::<f64>();
            acc = [0f32; LANES];
        }
    }
    let tail = &values[body.len() * LANES..];
    let mut out = body.into_flattened();
    out.reserve_exact(tail.len());
    for (l, i) in tail.iter().enumerate() {
        let noise = step(&mut lanes[l]);
        out.push(i + noise);
        acc[l] += noise.abs();
    }
    total += acc.iter().map(|&a| f64::from(a)).sum::<f64>();
    (out, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_bounded_and_roughly_uniform() {
        let values = vec![1.0f32; 100_003];
        let (out, total) = add_noise(&values, 7);
        assert_eq!(out.len(), values.len());
        let mut sum = 0f64;
        for &v in &out {
            let d = v - 1.0;
            assert!((-NOISE - 1e-6..NOISE + 1e-6).contains(&d), "{d}");
            sum += f64::from(d);
        }
        let mean = sum / out.len() as f64;
        assert!(mean.abs() < 2e-4, "mean {mean}");
        // The mean absolute value of U(-a, a) is a / 2.
        let mean_abs = total / out.len() as f64;
        assert!((mean_abs - 0.005).abs() < 2e-4, "mean abs {mean_abs}");
    }

    #[test]
    fn same_seed_same_noise_other_seed_other_noise() {
        let values = vec![0.0f32; 1000];
        let (a, _) = add_noise(&values, seed_for(3, 1, 0));
        let (b, _) = add_noise(&values, seed_for(3, 1, 0));
        let (c, _) = add_noise(&values, seed_for(3, 2, 0));
        let (d, _) = add_noise(&values, seed_for(4, 1, 0));
        let (e, _) = add_noise(&values, seed_for(3, 1, 1));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_ne!(a, e);
    }

    #[test]
    fn lanes_are_not_copies_of_each_other() {
        let (out, _) = add_noise(&[0.0f32; 16], 99);
        let distinct: std::collections::HashSet<u32> = out.iter().map(|v| v.to_bits()).collect();
        assert_eq!(distinct.len(), 16);
    }

    /// A rerun with the same seed must give the same model, across releases too: these are
    /// the seeds and noise the code gave when the hash moved to `floret_core::seeded`.
    #[test]
    fn seeds_and_noise_are_pinned() {
        assert_eq!(seed_for(3, 1, 0), 0xe6e4_ae83_e612_7ab9);
        assert_eq!(seed_for(4, 2, 1), 0xd9ae_11de_1268_1dcc);
        let (out, total) = add_noise(&[0.0f32; 10], seed_for(3, 1, 0));
        let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            bits,
            [
                0xbc16_3485,
                0xbc10_4d6a,
                0x3c09_b5ce,
                0x3b90_23e8,
                0xbc10_e7a1,
                0xbb15_ff62,
                0x3c10_f1fc,
                0xbba9_bf1c,
                0xbb11_b00a,
                0x397d_a3c0,
            ]
        );
        assert_eq!(total, 0.058_404_272_887_855_77);
    }

    /// The same across blocks (where the lanes' sums go into the total) and a tail: the
    /// bits of a model of two and a half blocks, folded into one number.
    #[test]
    fn noise_across_blocks_is_pinned() {
        let values: Vec<f32> = (0..2 * BLOCK + BLOCK / 2 + 5).map(|i| i as f32).collect();
        let (out, total) = add_noise(&values, seed_for(9, 3, 2));
        let folded = out
            .iter()
            .fold(0u64, |h, v| h.rotate_left(5) ^ u64::from(v.to_bits()));
        assert_eq!(
            (folded, total),
            (0xf71a_1245_8ed6_dc86, 51.124_745_965_003_97)
        );
    }

    #[test]
    fn empty_input_gives_empty_output() {
        assert_eq!(add_noise(&[], 1), (Vec::new(), 0.0));
    }
}
