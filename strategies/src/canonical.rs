//! The accumulator contract, and folding replies in canonical order whatever order they
//! arrive in.
//!
//! A strategy whose aggregate is a sum (FedAvg and its family: FedAvgM, FedProx, FedAdam,
//! ... differ in what they do with the average, not in how it is summed) keeps a partial
//! aggregate that implements `Mergeable`: replies fold into a partial, and two partials
//! merge. The result is defined, bit for bit, as
//!
//! ```text
//! total = p(shard 0) + p(shard 1) + ... + p(shard S-1)      merged left to right
//! p(k)  = fold of shard k's replies, from empty, in node-id order
//! ```
//!
//! with the shards of `shard::ShardPlan`. Nothing in it depends on when a reply arrived or
//! on how many workers computed the replies: the same set of replies gives the same model.
//! Whoever holds a shard's replies may fold its partial (this phase does it as replies come;
//! a worker that made them could do the same) as long as the partials are merged in shard
//! order.
//!
//! `CanonicalFold` is that rule applied to replies arriving in any order: a reply whose
//! predecessors in its shard are all in is folded at once, together with the ones it
//! unblocks; one that arrives early waits (`waiting` counts them). A shard's partial is
//! made when it first folds and merged into the total as soon as it and every shard before
//! it are complete, so live partials are those of shards in progress. Replies sent in
//! canonical order and computed in that order (the virtual fleet does both) arrive nearly
//! in order, so few wait. Shard 0 folds straight into the total: a round of one shard
//! (fewer than `2 * MIN_SHARD_NODES` nodes) is a plain fold in node order.
//!
//! Strategies that need every reply at once (FedMedian, trimmed mean, Krum) fit the same
//! contract with a partial that keeps its replies in order and merges by appending: their
//! memory is the replies themselves, which `waiting` and the partial's own size account for.

use crate::shard::ShardPlan;
use std::collections::BTreeMap;

/// A partial aggregate that can start empty and absorb another: the contract of sum-type
/// strategies (see the module doc for the order it is used in).
pub trait Mergeable: Sized {
    /// A partial with nothing folded in, shaped like `self`.
    fn empty_like(&self) -> Self;

    /// Adds `later`, the partial of the next shard, to `self`.
    fn merge(&mut self, later: Self);
}

/// One shard's progress.
#[derive(Debug)]
struct Shard<P, T> {
    /// Position of the next reply to fold.
    next: usize,
    /// Replies in this shard.
    len: usize,
    /// Replies in before their turn, by position; `None` is a reply left out, which only
    /// passes its turn on.
    waiting: BTreeMap<usize, Option<T>>,
    /// Sum of the replies folded so far; `None` until one is (shard 0 uses the total).
    partial: Option<P>,
}

impl<P, T> Shard<P, T> {
    fn complete(&self) -> bool {
        self.next >= self.len
    }
}

/// Folds a phase's replies into a `Mergeable` total in canonical order.
#[derive(Debug)]
pub struct CanonicalFold<P, T> {
    plan: ShardPlan,
    shards: Vec<Shard<P, T>>,
    /// Shard 0's partial, and every complete shard before `merged` merged into it.
    total: P,
    /// Shards merged into `total` so far (shard 0 counts once complete).
    merged: usize,
    /// Shards offered a reply since the last `fold_ready`.
    touched: Vec<usize>,
    /// The rank after the last reply offered, where the next one is likely to be.
    hint: usize,
    /// Replies waiting for their turn now, and the most that ever waited.
    waiting: usize,
    peak_waiting: usize,
}

impl<P: Mergeable, T> CanonicalFold<P, T> {
    /// Nothing folded yet; `empty` is the empty partial every shard starts from.
    pub fn new(plan: ShardPlan, empty: P) -> Self {
        let shards = (0..plan.shards())
            .map(|s| Shard {
                next: 0,
                len: plan.shard_len(s),
                waiting: BTreeMap::new(),
                partial: None,
            })
            .collect();
        CanonicalFold {
            plan,
            shards,
            total: empty,
            merged: 0,
            touched: Vec::new(),
            hint: 0,
            waiting: 0,
            peak_waiting: 0,
        }
    }

    /// The plan this fold follows.
    pub fn plan(&self) -> &ShardPlan {
        &self.plan
    }

    /// Takes the reply of `node`: `Some(item)` to fold, `None` for one left out; `fold_ready`
    /// then folds it once its turn has come. `false` (and nothing kept) for a node outside
    /// the plan or one whose reply was already taken.
    pub fn offer(&mut self, node: u64, item: Option<T>) -> bool {
        let Some((s, position, rank)) = self.plan.locate_near(node, self.hint) else {
            return false;
        };
        self.hint = rank + 1;
        let Some(shard) = self.shards.get_mut(s) else {
            return false;
        };
        if position < shard.next || shard.waiting.contains_key(&position) {
            return false;
        }
        shard.waiting.insert(position, item);
        if self.touched.last() != Some(&s) {
            self.touched.push(s);
        }
        self.waiting += 1;
        self.peak_waiting = self.peak_waiting.max(self.waiting);
        true
    }

    /// Offers every reply of `batch` from the node `node_of` names, as checked by `check`
    /// against the total (a reply it refuses only passes its turn on, and is handed back
    /// with why), then folds what is in turn (`fold_ready`).
    pub fn offer_batch<E>(
        &mut self,
        batch: Vec<T>,
        node_of: impl Fn(&T) -> u64,
        check: impl Fn(&P, &T) -> Result<(), E>,
        fold: &mut impl FnMut(&mut P, Vec<T>),
    ) -> Vec<(T, E)> {
        let mut refused = Vec::new();
        for reply in batch {
            let node = node_of(&reply);
            let item = match check(&self.total, &reply) {
                Ok(()) => Some(reply),
                Err(why) => {
                    refused.push((reply, why));
                    None
                }
            };
            if !self.offer(node, item) {
                tracing::debug!(node_id = node, "reply from a node not sampled, or repeated");
            }
        }
        self.fold_ready(fold);
        refused
    }

    /// Folds every reply offered whose turn has come, with `fold`, which gets a shard's
    /// partial and a run of consecutive items in canonical order (so a batch of replies in
    /// order is one call), and merges the shards that are complete and next in line.
    pub fn fold_ready(&mut self, fold: &mut impl FnMut(&mut P, Vec<T>)) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &s in &touched {
            self.advance(s, fold, false);
        }
        touched.clear();
        self.touched = touched;
    }

    /// The total so far: shaped like every partial, so replies can be checked against it.
    pub fn total(&self) -> &P {
        &self.total
    }

    /// Replies in before their turn, waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// The most replies that waited at once.
    pub fn peak_waiting(&self) -> usize {
        self.peak_waiting
    }

    /// Folds what still waits (the replies that never came are skipped), merges every
    /// shard in order, and returns the total.
    pub fn finish(mut self, fold: &mut impl FnMut(&mut P, Vec<T>)) -> P {
        for s in 0..self.shards.len() {
            self.advance(s, fold, true);
        }
        self.total
    }

    /// Folds shard `s`'s replies that are in turn (with `skip_gaps`, every waiting one),
    /// then merges the complete shards that are next in line.
    fn advance(&mut self, s: usize, fold: &mut impl FnMut(&mut P, Vec<T>), skip_gaps: bool) {
        let Some(shard) = self.shards.get_mut(s) else {
            return;
        };
        let mut run = Vec::new();
        while let Some(entry) = shard.waiting.first_entry() {
            if *entry.key() != shard.next && !skip_gaps {
                break;
            }
            shard.next = *entry.key() + 1;
            self.waiting -= 1;
            run.extend(entry.remove());
        }
        if skip_gaps {
            shard.next = shard.len;
        }
        if !run.is_empty() {
            let partial = match (s, &mut shard.partial) {
                (0, _) => &mut self.total,
                (_, Some(p)) => p,
                (_, slot @ None) => slot.insert(self.total.empty_like()),
            };
            fold(partial, run);
        }
        while let Some(next) = self.shards.get_mut(self.merged) {
            if !next.complete() {
                break;
            }
            if let Some(partial) = next.partial.take() {
                self.total.merge(partial);
            }
            self.merged += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partial that records what it folded and merged, to check the order.
    #[derive(Debug, Default, PartialEq)]
    struct Trace(Vec<String>);

    impl Mergeable for Trace {
        fn empty_like(&self) -> Self {
            Trace::default()
        }

        fn merge(&mut self, later: Self) {
            self.0.push(format!("({})", later.0.join(" ")));
        }
    }

    fn fold_in(p: &mut Trace, items: Vec<u64>) {
        p.0.extend(items.iter().map(u64::to_string));
    }

    fn run(nodes: &[u64], arrival: &[u64], left_out: &[u64], missing: &[u64]) -> Trace {
        let mut fold = CanonicalFold::new(ShardPlan::new(nodes), Trace::default());
        for &node in arrival {
            if missing.contains(&node) {
                continue;
            }
            let item = (!left_out.contains(&node)).then_some(node);
            assert!(fold.offer(node, item));
            fold.fold_ready(&mut fold_in);
        }
        fold.finish(&mut fold_in)
    }

    #[test]
    fn any_arrival_order_gives_the_same_fold_and_merge_sequence() {
        let nodes: Vec<u64> = (0..40).map(|i| 1000 - i * 7).collect();
        let sorted: Vec<u64> = nodes.iter().rev().copied().collect();
        let expected = run(&nodes, &sorted, &[], &[]);
        // 40 nodes: 3 shards of 13, 13 and 14; shard 0 folds into the total.
        assert_eq!(expected.0.len(), 13 + 2);
        assert_eq!(
            expected.0[..13],
            sorted[..13].iter().map(u64::to_string).collect::<Vec<_>>()[..]
        );
        let mut shuffled = nodes.clone();
        for step in [7usize, 11, 3] {
            shuffled.rotate_left(step);
            shuffled.swap(1, 30);
            assert_eq!(run(&nodes, &shuffled, &[], &[]), expected);
        }
    }

    #[test]
    fn left_out_and_missing_replies_are_skipped_in_place() {
        let nodes: Vec<u64> = (1..=40).collect();
        let reversed: Vec<u64> = nodes.iter().rev().copied().collect();
        let out = run(&nodes, &reversed, &[2, 20], &[5, 39]);
        let ordered = run(&nodes, &nodes, &[2, 20], &[5, 39]);
        assert_eq!(out, ordered);
        // Shards: nodes 1..=13, 14..=26, 27..=40.
        let names = |r: std::ops::RangeInclusive<u64>, skip: &[u64]| -> Vec<String> {
            r.filter(|n| !skip.contains(n))
                .map(|n| n.to_string())
                .collect()
        };
        let mut expected = names(1..=13, &[2, 5]);
        expected.push(format!("({})", names(14..=26, &[20]).join(" ")));
        expected.push(format!("({})", names(27..=40, &[39]).join(" ")));
        assert_eq!(out.0, expected);
    }

    #[test]
    fn early_replies_wait_and_in_order_replies_do_not() {
        let nodes: Vec<u64> = (1..=8).collect();
        let mut fold = CanonicalFold::new(ShardPlan::new(&nodes), Trace::default());
        for node in [3, 2, 4] {
            fold.offer(node, Some(node));
            fold.fold_ready(&mut fold_in);
        }
        assert_eq!(fold.waiting(), 3);
        fold.offer(1, Some(1));
        let mut calls = 0;
        fold.fold_ready(&mut |p, run| {
            calls += 1;
            fold_in(p, run);
        });
        assert_eq!(
            (fold.waiting(), calls),
            (0, 1),
            "one run, folded in one call"
        );
        assert_eq!(fold.peak_waiting(), 4);
        assert!(!fold.offer(2, Some(2)), "a repeat is refused");
        assert!(!fold.offer(99, Some(99)), "so is a node not sampled");
        assert_eq!(fold.finish(&mut fold_in).0, ["1", "2", "3", "4"]);
    }
}
