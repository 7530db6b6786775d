//! The digits data: smartcore's bundled copy of the UCI handwritten digits (1797 images of
//! 8x8 pixels, classes 0-9), loaded once per process and scaled to [0, 1]; and the seeded
//! split into a held-out test set and the pool that the nodes' partitions are cut from.

use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use std::sync::OnceLock;

/// Pixels per image.
pub const NUM_FEATURES: usize = 64;
/// Digit classes.
pub const NUM_CLASSES: usize = 10;
/// Share of the images held out for the central test set.
pub const TEST_FRACTION: f64 = 0.2;
/// Pixel values in the raw data run from 0 to this.
const MAX_PIXEL: f32 = 16.0;
/// Mixed into the seed so the test split does not reuse another stream of the same seed.
const TEST_SPLIT_SALT: u64 = 0x7E57_5EED_0000_0001;

/// All images: row-major features in [0, 1] and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Digits {
    features: Vec<f32>,
    labels: Vec<u8>,
}

impl Digits {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The label (digit 0-9) of each image, in image order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The features of image `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * NUM_FEATURES..(i + 1) * NUM_FEATURES]
    }

    /// The images at `indices` as an `[n, 64]` matrix, and their labels.
    pub fn gather(&self, indices: &[usize]) -> (Array2<f32>, Vec<u8>) {
        let mut x = Vec::with_capacity(indices.len() * NUM_FEATURES);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            x.extend_from_slice(self.row(i));
            y.push(self.labels[i]);
        }
        let x = Array2::from_shape_vec((indices.len(), NUM_FEATURES), x)
            .unwrap_or_else(|_| Array2::zeros((0, NUM_FEATURES)));
        (x, y)
    }
}

/// The digits, loaded and scaled on first use and shared by every node of the process.
pub fn digits() -> &'static Digits {
    static DIGITS: OnceLock<Digits> = OnceLock::new();
    DIGITS.get_or_init(|| {
        let raw = smartcore::dataset::digits::load_dataset();
        let features = raw
            .data
            .iter()
            .map(|&p| (p / MAX_PIXEL).clamp(0.0, 1.0))
            .collect();
        // The bundled labels are the floats 0.0 ..= 9.0.
        let labels = raw
            .target
            .iter()
            .map(|&t| t.clamp(0.0, 9.0) as u8)
            .collect();
        Digits { features, labels }
    })
}

/// Indices of the held-out test images and of the pool the nodes train on.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Indices of the held-out images the server evaluates on; no node trains on them.
    pub test: Vec<usize>,
    /// Indices of the images the nodes' partitions are cut from.
    pub pool: Vec<usize>,
}

/// Splits `0..n` into a test set of `TEST_FRACTION` and the training pool, seeded; both
/// sorted. The same seed gives the same split on the server and on every node.
pub fn test_split(n: usize, seed: u64) -> Split {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut SmallRng::seed_from_u64(seed ^ TEST_SPLIT_SALT));
    let num_test = (n as f64 * TEST_FRACTION).round() as usize;
    let mut test = order[..num_test].to_vec();
    let mut pool = order[num_test..].to_vec();
    test.sort_unstable();
    pool.sort_unstable();
    Split { test, pool }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_digits_are_complete_and_scaled() {
        let d = digits();
        assert_eq!(d.len(), 1797);
        assert!(d.features.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(d.features.contains(&1.0));
        let mut counts = [0usize; NUM_CLASSES];
        for &l in d.labels() {
            counts[usize::from(l)] += 1;
        }
        // Each class has about 180 images.
        assert!(
            counts.iter().all(|&c| (170..=190).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn test_split_is_disjoint_covering_and_seeded() {
        let s = test_split(1797, 42);
        assert_eq!(s.test.len(), 359);
        assert_eq!(s.pool.len(), 1797 - 359);
        let mut all: Vec<usize> = s.test.iter().chain(&s.pool).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1797).collect::<Vec<_>>());
        assert_eq!(test_split(1797, 42), s);
        assert_ne!(test_split(1797, 43).test, s.test);
    }

    #[test]
    fn gather_copies_rows_and_labels() {
        let d = digits();
        let (x, y) = d.gather(&[5, 0]);
        assert_eq!(x.shape(), &[2, NUM_FEATURES]);
        assert_eq!(x.row(0).to_vec(), d.row(5).to_vec());
        assert_eq!(y, vec![d.labels()[5], d.labels()[0]]);
    }
}
