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
//! `CanonicalFold` is that rule applied to replies arriving in any order and on any
//! thread: a reply whose predecessors in its shard are all in is folded at once, together
//! with the ones it unblocks; one that arrives early waits (`waiting` counts them). Each
//! shard has its own lock, so replies of different shards fold at the same time on
//! different threads (the workers of a simulation fold the replies they make: see
//! `Grid::send_folding`), while the replies of one shard are added one after another in
//! node order whoever adds them. A shard's partial is made when it first folds and merged
//! into the total once it and every shard before it are complete, so live partials are
//! those of shards in progress. Replies sent in canonical order and computed in that order
//! (the virtual fleet does both) arrive nearly in order, so few wait; a fleet of W workers
//! gets a phase's messages striped over W shards (`ShardPlan::send_order`), so that its
//! workers fold into W partials side by side instead of queueing for one.
//!
//! Strategies that need every reply at once (FedMedian, trimmed mean, Krum) fit the same
//! contract with a partial that keeps its replies in order and merges by appending: their
//! memory is the replies themselves, which `waiting` and the partial's own size account for.

use crate::shard::ShardPlan;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

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
    /// Sum of the replies folded so far; `None` until one is.
    partial: Option<P>,
    /// The partial has been handed to the merge (the shard is complete).
    handed: bool,
}

/// The shards' partials on their way into the total, merged strictly in shard order.
#[derive(Debug)]
struct Merge<P> {
    /// Shard 0's partial, and every complete shard before `merged` merged into it.
    total: Option<P>,
    /// Shards merged into `total` so far.
    merged: usize,
    /// Complete shards that wait for an earlier one; `None` for one that folded nothing.
    complete: BTreeMap<usize, Option<P>>,
}

/// Folds a phase's replies into a `Mergeable` total in canonical order, from any number of
/// threads at once (see the module doc).
#[derive(Debug)]
pub struct CanonicalFold<P, T> {
    plan: ShardPlan,
    /// The empty partial every shard starts from (`empty_like`), and what replies are
    /// checked against; never folded into.
    template: P,
    shards: Vec<Mutex<Shard<P, T>>>,
    merge: Mutex<Merge<P>>,
    /// Set by `close` and `finish`: no reply is taken after it.
    closed: AtomicBool,
    /// The rank after the last reply offered, where the next one is likely to be.
    hint: AtomicUsize,
    /// Replies waiting for their turn now, and the most that ever waited.
    waiting: AtomicUsize,
    peak_waiting: AtomicUsize,
    /// Nodes whose reply (or its place, for one left out) has been taken: when it reaches
    /// the plan's size, every reply is in.
    taken: AtomicUsize,
}

fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
    // A fold that panicked leaves a shard half-folded; the phase fails with that panic, and
    // nothing reads the shard after it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<P: Mergeable, T> CanonicalFold<P, T> {
    /// Nothing folded yet; `empty` is the partial every shard starts from (as `empty_like`).
    pub fn new(plan: ShardPlan, empty: P) -> Self {
        let shards = (0..plan.shards())
            .map(|s| {
                Mutex::new(Shard {
                    next: 0,
                    len: plan.shard_len(s),
                    waiting: BTreeMap::new(),
                    partial: None,
                    handed: false,
                })
            })
            .collect();
        CanonicalFold {
            plan,
            template: empty,
            shards,
            merge: Mutex::new(Merge {
                total: None,
                merged: 0,
                complete: BTreeMap::new(),
            }),
            closed: AtomicBool::new(false),
            hint: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            peak_waiting: AtomicUsize::new(0),
            taken: AtomicUsize::new(0),
        }
    }

    /// The plan this fold follows.
    pub fn plan(&self) -> &ShardPlan {
        &self.plan
    }

    /// Shaped like every partial, so replies can be checked against it.
    pub fn template(&self) -> &P {
        &self.template
    }

    /// Takes the reply of `node` (`Some(item)` to fold, `None` for one left out) and folds
    /// what is in turn in its shard with `fold`. `false` (and nothing kept) for a node
    /// outside the plan, one whose reply was already taken, or a closed fold.
    pub fn offer(&self, node: u64, item: Option<T>, fold: &impl Fn(&mut P, Vec<T>)) -> bool {
        self.take(node, item, fold).is_ok()
    }

    /// `offer`, handing the item back when it is not taken.
    pub fn take(
        &self,
        node: u64,
        item: Option<T>,
        fold: &impl Fn(&mut P, Vec<T>),
    ) -> Result<(), Option<T>> {
        let s = self.place(node, item)?;
        self.advance(s, fold, false);
        Ok(())
    }

    /// Offers every reply of `batch` from the node `node_of` names, as checked by `check`
    /// against the template (a reply it refuses only passes its turn on, and is handed
    /// back with why), then folds what is in turn, each shard once (a batch of replies in
    /// order is one call of `fold` per shard).
    pub fn offer_batch<E>(
        &self,
        batch: Vec<T>,
        node_of: impl Fn(&T) -> u64,
        check: impl Fn(&P, &T) -> Result<(), E>,
        fold: &impl Fn(&mut P, Vec<T>),
    ) -> Vec<(T, E)> {
        let mut refused = Vec::new();
        let mut touched = Vec::new();
        for reply in batch {
            let node = node_of(&reply);
            let item = match check(&self.template, &reply) {
                Ok(()) => Some(reply),
                Err(why) => {
                    refused.push((reply, why));
                    None
                }
            };
            match self.place(node, item) {
                Ok(s) if touched.last() != Some(&s) => touched.push(s),
                Ok(_) => {}
                Err(_) => {
                    tracing::debug!(node_id = node, "reply from a node not sampled, or repeated")
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for s in touched {
            self.advance(s, fold, false);
        }
        refused
    }

    /// Replies in before their turn, waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The most replies that waited at once.
    pub fn peak_waiting(&self) -> usize {
        self.peak_waiting.load(Ordering::Relaxed)
    }

    /// Whether every node of the plan has had its reply (or its place) taken.
    pub fn all_taken(&self) -> bool {
        self.taken.load(Ordering::Acquire) >= self.plan.nodes().len()
    }

    /// Whether `node`'s reply (or its place) has been taken.
    pub fn is_taken(&self, node: u64) -> bool {
        let Some((s, position)) = self.plan.locate(node) else {
            return false;
        };
        self.shards.get(s).is_some_and(|cell| {
            let shard = lock(cell);
            position < shard.next || shard.waiting.contains_key(&position)
        })
    }

    /// Takes no reply from now on; one being folded still completes.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Closes the fold, folds what still waits (the replies that never came are skipped),
    /// merges every shard in order, and returns the total.
    pub fn finish(&self, fold: &impl Fn(&mut P, Vec<T>)) -> P {
        self.close();
        for s in 0..self.shards.len() {
            self.advance(s, fold, true);
        }
        let mut merge = lock(&self.merge);
        merge
            .total
            .take()
            .unwrap_or_else(|| self.template.empty_like())
    }

    /// Puts `item` in its shard's waiting map and returns the shard, or hands the item back
    /// when it is not taken.
    fn place(&self, node: u64, item: Option<T>) -> Result<usize, Option<T>> {
        let hint = self.hint.load(Ordering::Relaxed);
        let Some((s, position, rank)) = self.plan.locate_near(node, hint) else {
            return Err(item);
        };
        self.hint.store(rank + 1, Ordering::Relaxed);
        let Some(cell) = self.shards.get(s) else {
            return Err(item);
        };
        let mut shard = lock(cell);
        // Checked under the shard's lock: `finish` takes every shard's lock after closing,
        // so nothing lands in a shard it has already finished.
        if self.closed.load(Ordering::SeqCst)
            || position < shard.next
            || shard.waiting.contains_key(&position)
        {
            return Err(item);
        }
        shard.waiting.insert(position, item);
        self.taken.fetch_add(1, Ordering::AcqRel);
        let now = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_waiting.fetch_max(now, Ordering::Relaxed);
        Ok(s)
    }

    /// Folds shard `s`'s replies that are in turn (with `skip_gaps`, every waiting one) and,
    /// once the shard is complete, hands its partial to the merge.
    fn advance(&self, s: usize, fold: &impl Fn(&mut P, Vec<T>), skip_gaps: bool) {
        let Some(cell) = self.shards.get(s) else {
            return;
        };
        let handed = {
            let mut guard = lock(cell);
            let shard = &mut *guard;
            let mut run = Vec::new();
            while let Some(entry) = shard.waiting.first_entry() {
                if *entry.key() != shard.next && !skip_gaps {
                    break;
                }
                let position = *entry.key();
                run.extend(entry.remove());
                shard.next = position + 1;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            if skip_gaps {
                shard.next = shard.len;
            }
            if !run.is_empty() {
                let template = &self.template;
                let partial = shard.partial.get_or_insert_with(|| template.empty_like());
                fold(partial, run);
            }
            if shard.next < shard.len || shard.handed {
                return;
            }
            shard.handed = true;
            shard.partial.take()
        };
        self.complete(s, handed);
    }

    /// Merges shard `s`'s partial, and every complete one after it that was waiting for it,
    /// into the total, in shard order.
    fn complete(&self, s: usize, partial: Option<P>) {
        let mut merge = lock(&self.merge);
        merge.complete.insert(s, partial);
        loop {
            let next = merge.merged;
            let Some(partial) = merge.complete.remove(&next) else {
                break;
            };
            merge.merged += 1;
            match (&mut merge.total, partial) {
                // Shard 0's partial is the total's start (or an empty one, if it folded
                // nothing), as a fold from empty in node order would give.
                (total @ None, p) => {
                    *total = Some(p.unwrap_or_else(|| self.template.empty_like()));
                }
                (Some(total), Some(p)) => total.merge(p),
                (Some(_), None) => {}
            }
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
        let fold = CanonicalFold::new(ShardPlan::new(nodes), Trace::default());
        for &node in arrival {
            if missing.contains(&node) {
                continue;
            }
            let item = (!left_out.contains(&node)).then_some(node);
            assert!(fold.offer(node, item, &fold_in));
        }
        fold.finish(&fold_in)
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
        let fold = CanonicalFold::new(ShardPlan::new(&nodes), Trace::default());
        for node in [3, 2, 4] {
            fold.offer(node, Some(node), &fold_in);
        }
        assert_eq!(fold.waiting(), 3);
        let calls = AtomicUsize::new(0);
        fold.offer(1, Some(1), &|p: &mut Trace, run| {
            calls.fetch_add(1, Ordering::Relaxed);
            fold_in(p, run);
        });
        assert_eq!(
            (fold.waiting(), calls.load(Ordering::Relaxed)),
            (0, 1),
            "one run, folded in one call"
        );
        assert_eq!(fold.peak_waiting(), 4);
        assert!(!fold.offer(2, Some(2), &fold_in), "a repeat is refused");
        assert!(
            !fold.offer(99, Some(99), &fold_in),
            "so is a node not sampled"
        );
        assert_eq!(fold.finish(&fold_in).0, ["1", "2", "3", "4"]);
        assert!(
            !fold.offer(5, Some(5), &fold_in),
            "and anything after the end"
        );
    }

    #[test]
    fn threads_folding_side_by_side_give_the_one_canonical_sequence() {
        // 200 nodes: 13 shards. Four threads offer interleaved replies, in any order.
        let nodes: Vec<u64> = (0..200).map(|i| 5_000 - i * 3).collect();
        let sorted: Vec<u64> = nodes.iter().rev().copied().collect();
        let expected = run(&nodes, &sorted, &[7 * 3 + 5_000 - 600], &[]);
        for striped in [false, true] {
            let fold = CanonicalFold::new(ShardPlan::new(&nodes), Trace::default());
            let order = if striped {
                fold.plan().send_order(4)
            } else {
                nodes.clone()
            };
            std::thread::scope(|scope| {
                for t in 0..4 {
                    let (fold, order) = (&fold, &order);
                    scope.spawn(move || {
                        for &node in order.iter().skip(t).step_by(4) {
                            let item = (node != 7 * 3 + 5_000 - 600).then_some(node);
                            assert!(fold.offer(node, item, &fold_in));
                        }
                    });
                }
            });
            assert_eq!(fold.finish(&fold_in), expected, "striped: {striped}");
        }
    }
}
