//! The fold's inner loops: `acc += w * x` over whole arrays.
//!
//! Written for the auto-vectoriser: fixed-size chunks (`as_chunks`) instead of indexing, so
//! the hot loop has no bounds checks, and up to `BATCH` replies per pass, so each pass reads
//! and writes the running sum once for several replies. The fold is memory-bound; the
//! batch cuts the traffic on the sum from two accesses per reply to two per batch.

use std::ops::{Add, Mul};

/// Element types the kernels fold in their own precision (f32 in f32, as numpy does).
pub(crate) trait Lane: Copy + Add<Output = Self> + Mul<Output = Self> {}
impl Lane for f32 {}
impl Lane for f64 {}

/// Elements per unrolled step: four 128-bit or two 256-bit vectors of f32.
const CHUNK: usize = 16;
/// Replies folded per pass over the running sum.
const BATCH: usize = 4;

/// Adds `w * x` to `acc` for each `(x, w)` of `terms`, in the order given: element by
/// element, `acc = ((acc + w0*x0) + w1*x1) + ...`, so a batch gives bit-identical sums to
/// folding its replies one at a time. Each `x` must be as long as `acc` (callers check);
/// a shorter one would only fold its own length, never panic.
pub(crate) fn fold_batch<T: Lane>(acc: &mut [T], terms: &[(&[T], T)]) {
    let (groups, rest) = terms.as_chunks::<BATCH>();
    for group in groups {
        fold_n(acc, *group);
    }
    match *rest {
        [a] => fold_n(acc, [a]),
        [a, b] => fold_n(acc, [a, b]),
        [a, b, c] => fold_n(acc, [a, b, c]),
        _ => {}
    }
}

fn fold_n<T: Lane, const K: usize>(acc: &mut [T], terms: [(&[T], T); K]) {
    let n = terms.iter().fold(acc.len(), |n, (x, _)| n.min(x.len()));
    let (acc_chunks, acc_rest) = acc[..n].as_chunks_mut::<CHUNK>();
    let xs = terms.map(|(x, _)| x[..n].as_chunks::<CHUNK>());
    let ws = terms.map(|(_, w)| w);
    for (i, a) in acc_chunks.iter_mut().enumerate() {
        for (x, &w) in xs.iter().zip(&ws) {
            if let Some(x) = x.0.get(i) {
                for j in 0..CHUNK {
                    a[j] = a[j] + w * x[j];
                }
            }
        }
    }
    for (i, a) in acc_rest.iter_mut().enumerate() {
        for (x, &w) in xs.iter().zip(&ws) {
            if let Some(&x) = x.1.get(i) {
                *a = *a + w * x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(seed: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 * 1e-7)
            .collect()
    }

    #[test]
    fn batch_is_bit_identical_to_one_at_a_time() {
        // 7 replies: one group of four and a tail of three; 37 elements: chunks plus a tail.
        let xs: Vec<Vec<f32>> = (0..7).map(|s| data(s, 37)).collect();
        let ws: Vec<f32> = (0..7).map(|s| 0.3 + s as f32 * 1.7).collect();
        let mut one_by_one = [0.25f32; 37];
        for (x, &w) in xs.iter().zip(&ws) {
            for (a, &v) in one_by_one.iter_mut().zip(x) {
                *a += w * v;
            }
        }
        let terms: Vec<(&[f32], f32)> = xs.iter().map(Vec::as_slice).zip(ws).collect();
        let mut batched = vec![0.25f32; 37];
        fold_batch(&mut batched, &terms);
        assert_eq!(
            batched.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            one_by_one.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn folds_f64_in_f64() {
        let mut acc = vec![0.0f64; 2];
        fold_batch(
            &mut acc,
            &[(&[1.0, 2.0][..], 1.0), (&[1e-10, 0.5][..], 2.0)],
        );
        assert_eq!(acc, [1.0 + 2e-10, 3.0]);
        assert_ne!(acc[0], 1.0, "an f32 sum would have lost the 2e-10");
    }

    #[test]
    fn short_input_folds_its_own_length_without_panicking() {
        let mut acc = vec![1.0f32; 20];
        fold_batch(&mut acc, &[(&[1.0; 18][..], 1.0)]);
        assert_eq!(acc[17], 2.0);
        assert_eq!(acc[18], 1.0);
    }
}
