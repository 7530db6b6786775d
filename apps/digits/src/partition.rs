//! Cutting the training pool into one partition per node: IID (seeded shuffle, equal
//! shares) or Dirichlet (per class, the shares of the partitions are drawn from
//! Dirichlet(alpha), as Flower Datasets' `DirichletPartitioner` does), and each partition's
//! train / validation split.
//!
//! Gamma variates come from Marsaglia and Tsang's method, kept in log space so that a small
//! `alpha` (0.01 and below) gives skewed but well-defined proportions instead of 0 / 0.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::fmt;

/// Flower's default minimum size of a Dirichlet partition, lowered when the pool is small.
pub const MIN_PARTITION_SIZE: usize = 10;
/// Draws of the Dirichlet proportions before settling for the best one (Flower tries 10).
pub const MAX_DIRICHLET_ATTEMPTS: usize = 10;
/// Share of a partition kept for its node's `evaluate`.
pub const VALIDATION_FRACTION: f64 = 0.2;

/// How the training pool is divided between the nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Partitioner {
    /// Equal shares of a seeded shuffle: every partition has about the same class mix.
    Iid,
    /// Per class, the partitions' shares drawn from Dirichlet(`alpha`): label-skewed partitions.
    Dirichlet {
        /// Concentration, above 0: small values (0.1) give skewed partitions, large ones
        /// (100) nearly IID ones.
        alpha: f64,
    },
}

impl Partitioner {
    /// Reads the run-config pair `partitioner` / `dirichlet-alpha`.
    pub fn parse(name: &str, alpha: f64) -> Result<Partitioner, String> {
        match name {
            "iid" => Ok(Partitioner::Iid),
            "dirichlet" if alpha.is_finite() && alpha > 0.0 => Ok(Partitioner::Dirichlet { alpha }),
            "dirichlet" => Err(format!(
                "\"dirichlet-alpha\" must be a positive number, but is {alpha}: small values \
                 (0.1) give skewed partitions, large ones (100) nearly IID ones"
            )),
            other => Err(format!(
                "\"partitioner\" must be \"iid\" or \"dirichlet\", but is {other:?}"
            )),
        }
    }

    /// Partitions `pool` (indices into `labels`) into `num_partitions` disjoint sets.
    pub fn partition(
        &self,
        pool: &[usize],
        labels: &[u8],
        num_classes: usize,
        num_partitions: usize,
        seed: u64,
    ) -> Vec<Vec<usize>> {
        match *self {
            Partitioner::Iid => iid(pool, num_partitions, seed),
            Partitioner::Dirichlet { alpha } => {
                dirichlet(pool, labels, num_classes, num_partitions, alpha, seed)
            }
        }
    }
}

impl fmt::Display for Partitioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partitioner::Iid => write!(f, "iid"),
            Partitioner::Dirichlet { alpha } => write!(f, "dirichlet(alpha={alpha})"),
        }
    }
}

/// Shuffles `pool` and deals it into `num_partitions` contiguous shares whose sizes differ
/// by at most one.
pub fn iid(pool: &[usize], num_partitions: usize, seed: u64) -> Vec<Vec<usize>> {
    let num_partitions = num_partitions.max(1);
    let mut order = pool.to_vec();
    order.shuffle(&mut SmallRng::seed_from_u64(seed));
    let base = order.len() / num_partitions;
    let extra = order.len() % num_partitions;
    let mut rest = order.as_slice();
    (0..num_partitions)
        .map(|i| {
            let (part, tail) = rest.split_at(base + usize::from(i < extra));
            rest = tail;
            part.to_vec()
        })
        .collect()
}

/// For each class, draws the partitions' shares from Dirichlet(alpha, ..., alpha) and cuts
/// the (shuffled) images of the class accordingly. Draws again, up to
/// `MAX_DIRICHLET_ATTEMPTS` times, while some partition has fewer than
/// `min(MIN_PARTITION_SIZE, pool / num_partitions)` images, then keeps the draw whose smallest
/// partition is largest.
pub fn dirichlet(
    pool: &[usize],
    labels: &[u8],
    num_classes: usize,
    num_partitions: usize,
    alpha: f64,
    seed: u64,
) -> Vec<Vec<usize>> {
    let num_partitions = num_partitions.max(1);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for &i in pool {
        if let Some(class) = labels
            .get(i)
            .and_then(|&l| by_class.get_mut(usize::from(l)))
        {
            class.push(i);
        }
    }
    let min_size = MIN_PARTITION_SIZE.min(pool.len() / num_partitions);
    let mut best: Option<(usize, Vec<Vec<usize>>)> = None;
    for _ in 0..MAX_DIRICHLET_ATTEMPTS {
        let mut parts = vec![Vec::new(); num_partitions];
        for class in &by_class {
            let mut members = class.clone();
            members.shuffle(&mut rng);
            let shares = sample_dirichlet(&mut rng, alpha, num_partitions);
            let mut cumulative = 0.0;
            let mut start = 0;
            for (p, share) in shares.iter().enumerate() {
                cumulative += share;
                let end = if p + 1 == num_partitions {
                    members.len()
                } else {
                    ((cumulative * members.len() as f64).round() as usize)
                        .clamp(start, members.len())
                };
                parts[p].extend_from_slice(&members[start..end]);
                start = end;
            }
        }
        let smallest = parts.iter().map(Vec::len).min().unwrap_or(0);
        if best.as_ref().is_none_or(|(s, _)| smallest > *s) {
            best = Some((smallest, parts));
        }
        if smallest >= min_size {
            break;
        }
    }
    let mut parts = best.map(|(_, p)| p).unwrap_or_default();
    for part in &mut parts {
        part.sort_unstable();
    }
    parts
}

/// A standard normal variate (Marsaglia's polar method).
fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    loop {
        let u = 2.0 * rng.random::<f64>() - 1.0;
        let v = 2.0 * rng.random::<f64>() - 1.0;
        let s = u * u + v * v;
        if s > 0.0 && s < 1.0 {
            return u * (-2.0 * s.ln() / s).sqrt();
        }
    }
}

/// `ln X` for X ~ Gamma(shape, 1), by Marsaglia and Tsang (2000). For `shape < 1` it uses
/// Gamma(a) = Gamma(a + 1) * U^(1/a), added in log space so that tiny values do not
/// underflow to zero.
pub fn sample_ln_gamma<R: Rng>(rng: &mut R, shape: f64) -> f64 {
    if shape < 1.0 {
        // random() is in [0, 1): use 1 - u, in (0, 1], so the logarithm is finite.
        let u = 1.0 - rng.random::<f64>();
        return sample_ln_gamma(rng, shape + 1.0) + u.ln() / shape;
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = 1.0 - rng.random::<f64>();
        let x2 = x * x;
        if u < 1.0 - 0.0331 * x2 * x2 || u.ln() < 0.5 * x2 + d * (1.0 - v + v.ln()) {
            return (d * v).ln();
        }
    }
}

/// One draw from the symmetric Dirichlet(alpha, ..., alpha) over `k` categories.
pub fn sample_dirichlet<R: Rng>(rng: &mut R, alpha: f64, k: usize) -> Vec<f64> {
    let logs: Vec<f64> = (0..k).map(|_| sample_ln_gamma(rng, alpha)).collect();
    let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = logs.iter().map(|&l| (l - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

/// Splits one partition into (train, validation), seeded: `VALIDATION_FRACTION` of it,
/// rounded down, is held back, so a partition of one image trains on it.
pub fn train_validation_split(partition: &[usize], seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order = partition.to_vec();
    order.shuffle(&mut SmallRng::seed_from_u64(seed));
    let num_val = (order.len() as f64 * VALIDATION_FRACTION).floor() as usize;
    let train = order.split_off(num_val);
    (train, order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{NUM_CLASSES, digits, test_split};

    fn pool() -> Vec<usize> {
        test_split(digits().len(), 42).pool
    }

    fn assert_disjoint_cover(parts: &[Vec<usize>], pool: &[usize]) {
        let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
        all.sort_unstable();
        let mut expected = pool.to_vec();
        expected.sort_unstable();
        assert_eq!(
            all, expected,
            "partitions must be disjoint and cover the pool"
        );
    }

    /// Mean over partitions of the share of the partition's most common class.
    fn mean_majority_share(parts: &[Vec<usize>]) -> f64 {
        let labels = digits().labels();
        let shares: Vec<f64> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| {
                let mut counts = [0usize; NUM_CLASSES];
                for &i in p {
                    counts[usize::from(labels[i])] += 1;
                }
                *counts.iter().max().unwrap_or(&0) as f64 / p.len() as f64
            })
            .collect();
        shares.iter().sum::<f64>() / shares.len() as f64
    }

    #[test]
    fn iid_partitions_are_disjoint_equal_and_cover_the_pool() {
        let pool = pool();
        let parts = iid(&pool, 10, 42);
        assert_eq!(parts.len(), 10);
        assert_disjoint_cover(&parts, &pool);
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(max - min <= 1, "{sizes:?}");
        // Shuffled, not cut in index order.
        assert!(parts[0].iter().any(|&i| i > pool[pool.len() / 2]));
        assert_eq!(iid(&pool, 10, 42), parts);
        assert_ne!(iid(&pool, 10, 7), parts);
    }

    #[test]
    fn iid_with_more_partitions_than_images_leaves_some_empty() {
        let parts = iid(&[1, 2, 3], 5, 0);
        assert_disjoint_cover(&parts, &[1, 2, 3]);
        assert_eq!(parts.iter().filter(|p| p.is_empty()).count(), 2);
    }

    #[test]
    fn dirichlet_partitions_are_disjoint_and_cover_the_pool() {
        let pool = pool();
        for alpha in [0.05, 0.5, 100.0] {
            let parts = dirichlet(&pool, digits().labels(), NUM_CLASSES, 10, alpha, 1);
            assert_eq!(parts.len(), 10);
            assert_disjoint_cover(&parts, &pool);
        }
    }

    #[test]
    fn dirichlet_is_skewed_for_small_alpha_and_balanced_for_large() {
        let pool = pool();
        let labels = digits().labels();
        let skewed = mean_majority_share(&dirichlet(&pool, labels, NUM_CLASSES, 10, 0.1, 3));
        let balanced = mean_majority_share(&dirichlet(&pool, labels, NUM_CLASSES, 10, 1000.0, 3));
        let iid = mean_majority_share(&iid(&pool, 10, 3));
        // IID partitions of ~144 images have a majority class of ~15-20 %.
        assert!(iid < 0.25, "iid {iid}");
        assert!(balanced < 0.25, "alpha 1000: {balanced}");
        assert!(skewed > 0.5, "alpha 0.1: {skewed}");
    }

    #[test]
    fn dirichlet_is_deterministic_for_a_seed() {
        let pool = pool();
        let labels = digits().labels();
        let a = dirichlet(&pool, labels, NUM_CLASSES, 10, 0.5, 9);
        assert_eq!(a, dirichlet(&pool, labels, NUM_CLASSES, 10, 0.5, 9));
        assert_ne!(a, dirichlet(&pool, labels, NUM_CLASSES, 10, 0.5, 10));
    }

    #[test]
    fn dirichlet_retries_for_the_minimum_size() {
        let pool = pool();
        let parts = dirichlet(&pool, digits().labels(), NUM_CLASSES, 10, 0.5, 4);
        assert!(
            parts.iter().all(|p| p.len() >= MIN_PARTITION_SIZE),
            "{:?}",
            parts.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn gamma_has_the_right_mean_and_dirichlet_sums_to_one() {
        let mut rng = SmallRng::seed_from_u64(5);
        for shape in [0.1, 0.5, 1.0, 2.5, 10.0] {
            let n = 20_000;
            let mean = (0..n)
                .map(|_| sample_ln_gamma(&mut rng, shape).exp())
                .sum::<f64>()
                / n as f64;
            // Var = shape, so the standard error of the mean is sqrt(shape / n).
            let tolerance = 5.0 * (shape / n as f64).sqrt();
            assert!(
                (mean - shape).abs() < tolerance,
                "shape {shape}: mean {mean}"
            );
        }
        for alpha in [1e-3, 0.5, 50.0] {
            let p = sample_dirichlet(&mut rng, alpha, 10);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(p.iter().all(|v| v.is_finite() && *v >= 0.0));
        }
    }

    #[test]
    fn train_validation_split_holds_back_a_fifth() {
        let part: Vec<usize> = (100..150).collect();
        let (train, val) = train_validation_split(&part, 1);
        assert_eq!((train.len(), val.len()), (40, 10));
        let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, part);
        assert_eq!(train_validation_split(&part, 1), (train, val));
        assert_eq!(train_validation_split(&[7], 1), (vec![7], vec![]));
    }

    #[test]
    fn partitioner_parse_names_the_fix() {
        assert_eq!(Partitioner::parse("iid", 0.5), Ok(Partitioner::Iid));
        assert_eq!(
            Partitioner::parse("dirichlet", 0.5),
            Ok(Partitioner::Dirichlet { alpha: 0.5 })
        );
        assert!(
            Partitioner::parse("dirichlet", 0.0)
                .unwrap_err()
                .contains("dirichlet-alpha")
        );
        assert!(Partitioner::parse("dirichlet", f64::NAN).is_err());
        assert!(
            Partitioner::parse("pathological", 0.5)
                .unwrap_err()
                .contains("\"iid\"")
        );
    }
}
