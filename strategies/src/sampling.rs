//! Which nodes a phase asks, and how long to wait for them: pure arithmetic, no clock.

use floret_core::NodeSet;
use rand::Rng;
use std::ops::Deref;
use std::time::Duration;

/// Nodes that must be connected before a phase samples.
///
/// Flower samples as soon as `min_available_nodes` are up, so with the defaults round 1 may
/// train on fewer nodes than `min_train_nodes` asks for; Floret waits for both.
pub fn required_nodes(min_available_nodes: usize, min_phase_nodes: usize) -> usize {
    min_available_nodes.max(min_phase_nodes)
}

/// How many of `available` nodes to sample: `max(ceil(fraction * available), min_nodes)`,
/// capped at `available`.
pub fn sample_size(fraction: f64, min_nodes: usize, available: usize) -> usize {
    let wanted = fraction_of(fraction, available);
    wanted.max(min_nodes).min(available)
}

/// `ceil(fraction * n)`, without letting float noise round up a product that is a whole
/// number (0.1 * 30 is 3.0000000000000004 in f64, and must give 3, not 4).
fn fraction_of(fraction: f64, n: usize) -> usize {
    if fraction.is_nan() || fraction <= 0.0 {
        return 0;
    }
    let exact = fraction * n as f64;
    let nearest = exact.round();
    let whole = if (exact - nearest).abs() <= 1e-9 * nearest.max(1.0) {
        nearest
    } else {
        exact.ceil()
    };
    // Saturating float-to-int cast; `sample_size` caps at `n` anyway.
    whole as usize
}

/// The nodes a phase asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampled {
    /// Every connected node: the grid's own set, shared rather than copied.
    All(NodeSet),
    /// The nodes drawn, in the order drawn.
    Drawn(Vec<u64>),
}

impl Deref for Sampled {
    type Target = [u64];

    fn deref(&self) -> &[u64] {
        match self {
            Sampled::All(nodes) => nodes,
            Sampled::Drawn(nodes) => nodes,
        }
    }
}

/// `amount` distinct nodes of `nodes`, chosen uniformly by `rng`. Asking for all of them
/// keeps the grid's set without drawing; otherwise only `amount` indices are drawn (plus,
/// when `amount` is close to the total, rand's in-place index buffer).
pub fn sample_nodes<R: Rng + ?Sized>(rng: &mut R, nodes: NodeSet, amount: usize) -> Sampled {
    if amount >= nodes.len() {
        return Sampled::All(nodes);
    }
    let drawn = rand::seq::index::sample(rng, nodes.len(), amount)
        .into_iter()
        .filter_map(|i| nodes.get(i).copied())
        .collect();
    Sampled::Drawn(drawn)
}

/// Poll intervals while waiting for nodes: 50 ms, doubling up to 1 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);

    /// Starts at the first, shortest pause.
    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// The next pause, never past the `left` time before the deadline.
    pub fn next_delay(&mut self, left: Duration) -> Duration {
        let delay = self.next.min(left);
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn fraction_rounds_up() {
        assert_eq!(sample_size(0.5, 1, 10), 5);
        assert_eq!(sample_size(0.5, 1, 11), 6);
        assert_eq!(sample_size(0.01, 1, 1000), 10);
        assert_eq!(sample_size(0.001, 1, 1500), 2);
    }

    #[test]
    fn whole_products_are_not_rounded_up_by_float_noise() {
        assert_eq!(sample_size(0.1, 1, 30), 3);
        assert_eq!(sample_size(0.7, 1, 10), 7);
        assert_eq!(sample_size(0.3, 1, 100_000), 30_000);
    }

    #[test]
    fn min_nodes_raise_the_sample() {
        assert_eq!(sample_size(0.1, 2, 10), 2);
        assert_eq!(sample_size(0.0, 3, 10), 3);
    }

    #[test]
    fn sample_is_capped_at_available() {
        assert_eq!(sample_size(1.0, 2, 10), 10);
        assert_eq!(sample_size(0.5, 20, 10), 10);
        assert_eq!(sample_size(1.0, 2, 0), 0);
    }

    #[test]
    fn phases_wait_for_the_larger_minimum() {
        assert_eq!(required_nodes(2, 5), 5);
        assert_eq!(required_nodes(8, 2), 8);
    }

    #[test]
    fn sampled_nodes_are_distinct_members_and_seeded() {
        let nodes: NodeSet = (100..200).collect::<Vec<u64>>().into();
        let a = sample_nodes(&mut SmallRng::seed_from_u64(7), nodes.clone(), 10);
        let b = sample_nodes(&mut SmallRng::seed_from_u64(7), nodes, 10);
        assert_eq!(a, b);
        let set: HashSet<u64> = a.iter().copied().collect();
        assert_eq!(set.len(), 10);
        assert!(a.iter().all(|n| (100..200).contains(n)));
    }

    #[test]
    fn sampling_all_nodes_shares_the_grids_set() {
        let nodes: NodeSet = vec![5, 3, 9].into();
        let all = sample_nodes(&mut SmallRng::seed_from_u64(1), nodes.clone(), 3);
        assert!(matches!(&all, Sampled::All(s) if Arc::ptr_eq(s, &nodes)));
        assert_eq!(*all, [5, 3, 9]);
        assert_eq!(
            *sample_nodes(&mut SmallRng::seed_from_u64(1), nodes, 7),
            [5, 3, 9]
        );
    }

    #[test]
    fn backoff_doubles_to_one_second_and_respects_the_deadline() {
        let mut b = Backoff::new();
        let long = Duration::from_secs(60);
        let delays: Vec<u64> = (0..7)
            .map(|_| b.next_delay(long).as_millis() as u64)
            .collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            b.next_delay(Duration::from_millis(30)),
            Duration::from_millis(30)
        );
    }
}
