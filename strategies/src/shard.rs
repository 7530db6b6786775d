//! The canonical order of a phase's replies: the sampled nodes in node-id order, cut into a
//! fixed number of shards of consecutive nodes.
//!
//! Float addition is not associative, so a sum of replies depends on the order they are
//! added in. The order replies arrive in depends on timing and on how many workers compute
//! them; the order a phase folds them in must not. `ShardPlan` fixes it from the sampled set
//! alone: shard `k` holds the nodes of ranks `k*n/S .. (k+1)*n/S` of the `n` sampled ids
//! sorted, and `S` depends only on `n`. `canonical::CanonicalFold` folds each shard in node
//! order and merges the shards in shard order. The same set of replies therefore gives the
//! same bits with 1, 2 or 16 workers, and after a resume, in a simulation and in a
//! deployment.
//!
//! Shards exist so that parts of the node space can be folded independently (by whoever
//! holds their replies) and merged once per round; a shard is at least `MIN_SHARD_NODES`
//! nodes, so a small round is one shard and pays for no merge.

/// Most shards a phase is cut into.
pub const MAX_SHARDS: usize = 64;
/// Fewest nodes in a shard (except the only shard of a phase with fewer nodes).
pub const MIN_SHARD_NODES: usize = 16;
/// Ranks `ShardPlan::locate_near` looks at before it searches.
const NEAR: usize = 8;

/// The sampled nodes of a phase in canonical order, and where each shard begins.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardPlan {
    /// The sampled node ids, sorted and distinct.
    nodes: Vec<u64>,
    /// How many shards `nodes` is cut into; at least 1.
    shards: usize,
}

impl ShardPlan {
    /// The plan for the nodes `targets` (in any order; repeated ids count once).
    pub fn new(targets: &[u64]) -> ShardPlan {
        let mut nodes = targets.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        let shards = shard_count(nodes.len());
        ShardPlan { nodes, shards }
    }

    /// The nodes in canonical order: the order to send to and to fold in.
    pub fn nodes(&self) -> &[u64] {
        &self.nodes
    }

    /// How many shards there are; at least 1.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// How many nodes shard `shard` holds (0 past the last shard).
    pub fn shard_len(&self, shard: usize) -> usize {
        if shard >= self.shards {
            return 0;
        }
        self.start(shard + 1) - self.start(shard)
    }

    /// `(shard, position within the shard)` of `node`; `None` for a node not sampled.
    pub fn locate(&self, node: u64) -> Option<(usize, usize)> {
        let rank = self.nodes.binary_search(&node).ok()?;
        Some(self.place(rank))
    }

    /// `locate`, looking first at the few ranks after `hint`: replies come nearly in
    /// canonical order, so the next one is usually there, and a binary search over a
    /// million ids costs some twenty cache misses. Also returns the rank, the next hint.
    pub fn locate_near(&self, node: u64, hint: usize) -> Option<(usize, usize, usize)> {
        let end = hint.saturating_add(NEAR).min(self.nodes.len());
        let near = self.nodes.get(hint..end).unwrap_or_default();
        let rank = match near.iter().position(|&id| id == node) {
            Some(i) => hint + i,
            None => self.nodes.binary_search(&node).ok()?,
        };
        let (shard, position) = self.place(rank);
        Some((shard, position, rank))
    }

    /// The nodes in the order to send to when `lanes` shards can fold at once: shards in
    /// waves of `lanes`, and within a wave their nodes taken in turn (first of each shard,
    /// second of each, ...). Replies computed side by side then belong to different shards
    /// and fold side by side, each shard still in node order, and about `lanes` partials
    /// are live at a time. With one lane (or one shard), the canonical order. Only when
    /// replies are made changes; what they sum to does not (the fold's order is fixed).
    pub fn send_order(&self, lanes: usize) -> Vec<u64> {
        if lanes <= 1 || self.shards == 1 {
            return self.nodes.clone();
        }
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut first = 0;
        while first < self.shards {
            let wave = first..(first + lanes).min(self.shards);
            let longest = wave.clone().map(|s| self.shard_len(s)).max().unwrap_or(0);
            for position in 0..longest {
                for s in wave.clone() {
                    if position < self.shard_len(s) {
                        order.push(self.nodes[self.start(s) + position]);
                    }
                }
            }
            first = wave.end;
        }
        order
    }

    /// `(shard, position within the shard)` of the node of rank `rank`.
    fn place(&self, rank: usize) -> (usize, usize) {
        let n = self.nodes.len();
        // The last shard whose start is at or before `rank`: start(k) = floor(k*n/S) <= rank
        // exactly when k < (rank+1)*S/n.
        let shard = ((rank + 1) * self.shards - 1) / n;
        (shard, rank - self.start(shard))
    }

    /// The rank of the first node of `shard`; `nodes.len()` for `shard == shards`.
    fn start(&self, shard: usize) -> usize {
        shard * self.nodes.len() / self.shards
    }
}

/// Shards for `n` nodes: one per `MIN_SHARD_NODES` started, at most `MAX_SHARDS`. A function
/// of `n` alone, never of the worker count.
pub fn shard_count(n: usize) -> usize {
    n.div_ceil(MIN_SHARD_NODES).clamp(1, MAX_SHARDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_striped_send_order_holds_every_node_once_each_shard_in_order() {
        let targets: Vec<u64> = (0..1_037u64).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
        let plan = ShardPlan::new(&targets);
        assert_eq!(plan.send_order(1), plan.nodes());
        for lanes in [2, 3, 16, 64, 200] {
            let order = plan.send_order(lanes);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, plan.nodes(), "{lanes} lanes: each node once");
            let mut last = vec![None; plan.shards()];
            for &node in &order {
                let (shard, position) = plan.locate(node).unwrap();
                assert!(
                    last[shard] < Some(position),
                    "{lanes} lanes: shard {shard} in order"
                );
                last[shard] = Some(position);
            }
        }
        // Two lanes: the first two nodes sent are the first of shards 0 and 1.
        let order = plan.send_order(2);
        assert_eq!(plan.locate(order[0]), Some((0, 0)));
        assert_eq!(plan.locate(order[1]), Some((1, 0)));
        assert_eq!(plan.locate(order[2]), Some((0, 1)));
    }

    #[test]
    fn small_rounds_are_one_shard_and_large_ones_at_most_the_cap() {
        assert_eq!(shard_count(0), 1);
        assert_eq!(shard_count(10), 1);
        assert_eq!(shard_count(16), 1);
        assert_eq!(shard_count(17), 2);
        assert_eq!(shard_count(1_000), 63);
        assert_eq!(shard_count(1_000_000), MAX_SHARDS);
    }

    #[test]
    fn every_node_has_one_place_and_shards_are_consecutive_ranks() {
        for n in [1usize, 2, 15, 16, 17, 100, 1_000, 1_037, 5_000] {
            let targets: Vec<u64> = (0..n as u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9))
                .rev()
                .collect();
            let plan = ShardPlan::new(&targets);
            let mut expected = (0, 0);
            for &node in plan.nodes() {
                if expected.1 == plan.shard_len(expected.0) {
                    expected = (expected.0 + 1, 0);
                }
                assert_eq!(plan.locate(node), Some(expected), "n={n} node={node}");
                let rank = plan.nodes().iter().position(|&id| id == node).unwrap();
                for hint in [0, rank.saturating_sub(1), rank, rank + 3, n + 5] {
                    assert_eq!(
                        plan.locate_near(node, hint),
                        Some((expected.0, expected.1, rank)),
                        "hint {hint}"
                    );
                }
                expected.1 += 1;
            }
            assert_eq!(expected.0 + 1, plan.shards(), "n={n}");
            let total: usize = (0..plan.shards()).map(|s| plan.shard_len(s)).sum();
            assert_eq!(total, n);
            let sizes: Vec<usize> = (0..plan.shards()).map(|s| plan.shard_len(s)).collect();
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{sizes:?}");
        }
    }

    #[test]
    fn the_order_targets_come_in_does_not_change_the_plan() {
        let a = ShardPlan::new(&[5, 3, 9, 1, 3]);
        let b = ShardPlan::new(&[1, 9, 3, 5]);
        assert_eq!(a, b);
        assert_eq!(a.nodes(), [1, 3, 5, 9]);
        assert_eq!(a.locate(4), None);
        assert_eq!(a.locate_near(4, 1), None);
    }
}
