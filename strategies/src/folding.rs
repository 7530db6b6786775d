//! A phase's fold, shared by the ServerApp and by the threads where replies arrive.
//!
//! A phase offers its fold to the grid (`Grid::broadcast_folding`). A grid that can fold where
//! the replies are made (a simulation's workers) hands each reply to `ReplyFold::fold` on
//! the thread that made it and delivers nothing in its place: the fold counts what it
//! took, and what it left out and why, and wakes the phase once every sampled node's
//! reply is in. Any other reply (from a grid that cannot, an error the SuperLink made in a
//! node's place, one handed back) reaches the ServerApp whole and is folded by
//! `fold_batch`. Both go through one `CanonicalFold`, so the aggregate is the same bits
//! either way.

use crate::canonical::{CanonicalFold, Mergeable};
use crate::reply::Rejection;
use crate::shard::ShardPlan;
use floret_core::{Message, ReplyFold};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

/// Checks a reply against the template partial before it is offered.
pub(crate) type Check<P> = Box<dyn Fn(&P, &Message) -> Result<(), Rejection> + Send + Sync>;
/// Folds a run of checked replies, in canonical order, into a partial.
pub(crate) type Fold<P> = Box<dyn Fn(&mut P, Vec<Message>) + Send + Sync>;

/// What the replies folded where they arrived came to, read by the phase at `close`.
#[derive(Debug, Default)]
pub(crate) struct FoldedHere {
    /// Replies folded into the aggregate.
    pub folded: u64,
    /// Replies left out, with their node and why.
    pub left_out: Vec<(u64, Rejection)>,
}

/// One phase's fold (see the module doc).
pub(crate) struct PhaseFold<P> {
    sums: CanonicalFold<P, Message>,
    check: Check<P>,
    fold: Fold<P>,
    /// Open until `close`: a fold where a reply arrives holds it for reading from its
    /// check to its counted outcome, so that `close` waits for folds in progress and no
    /// reply is folded without the phase counting it.
    open: RwLock<bool>,
    /// Replies folded where they arrived; no receipt tells the phase about them.
    folded_here: AtomicU64,
    /// Replies left out where they arrived, with why (few: errors, wrong arrays).
    left_out_here: Mutex<Vec<(u64, Rejection)>>,
    /// Woken when the last sampled node's reply is taken where it arrived.
    complete: Notify,
}

impl<P: Mergeable + Send + Sync + 'static> PhaseFold<P> {
    /// A fold of the replies of `plan`'s nodes into partials made from `empty`.
    pub(crate) fn new(plan: ShardPlan, empty: P, check: Check<P>, fold: Fold<P>) -> Arc<Self> {
        Arc::new(PhaseFold {
            sums: CanonicalFold::new(plan, empty),
            check,
            fold,
            open: RwLock::new(true),
            folded_here: AtomicU64::new(0),
            left_out_here: Mutex::new(Vec::new()),
            complete: Notify::new(),
        })
    }

    /// Folds replies that reached the ServerApp whole. Hands back the ones left out, with
    /// why.
    pub(crate) fn fold_batch(&self, batch: Vec<Message>) -> Vec<(Message, Rejection)> {
        self.sums.offer_batch(
            batch,
            |m| m.metadata.src_node_id,
            |p, m| (self.check)(p, m),
            &|p, run| (self.fold)(p, run),
        )
    }

    /// Array bytes `fold_batch` would read from `batch` (decides where to fold it).
    pub(crate) fn weight_of(batch: &[Message]) -> usize {
        batch.iter().map(Message::array_bytes).sum()
    }

    /// Whether every sampled node's reply is in, wherever it was folded.
    pub(crate) fn all_in(&self) -> bool {
        self.sums.all_taken()
    }

    /// Whether `node`'s reply is in.
    pub(crate) fn has(&self, node: u64) -> bool {
        self.sums.is_taken(node)
    }

    /// Returns once every sampled node's reply is in (never, if some do not come: the
    /// phase waits for this beside its timeout).
    pub(crate) async fn all_folded(&self) {
        loop {
            let notified = self.complete.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.all_in() {
                return;
            }
            notified.await;
        }
    }

    /// Takes no more replies where they arrive, once the folds in progress are done, and
    /// returns what the replies folded there came to: they are in the aggregate, so the
    /// phase counts them.
    pub(crate) fn close(&self) -> FoldedHere {
        *self.open.write().unwrap_or_else(|p| p.into_inner()) = false;
        FoldedHere {
            folded: self.folded_here.load(Ordering::Acquire),
            left_out: std::mem::take(
                &mut *self.left_out_here.lock().unwrap_or_else(|p| p.into_inner()),
            ),
        }
    }

    /// Closes the fold and returns the total, what still waited folded in canonical order
    /// (see `CanonicalFold::finish`).
    pub(crate) fn finish(&self) -> P {
        self.sums.close();
        self.sums.finish(&|p, run| (self.fold)(p, run))
    }

    /// The most replies that waited for their turn at once.
    pub(crate) fn peak_waiting(&self) -> usize {
        self.sums.peak_waiting()
    }
}

impl<P: Mergeable + Send + Sync + 'static> ReplyFold for PhaseFold<P> {
    fn fold(&self, reply: Message) -> Option<Message> {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        if !*open {
            return Some(reply);
        }
        let node = reply.metadata.src_node_id;
        let (item, left_out) = match (self.check)(self.sums.template(), &reply) {
            Ok(()) => (Some(reply), None),
            Err(why) => (None, Some((reply, why))),
        };
        match self.sums.take(node, item, &|p, run| (self.fold)(p, run)) {
            Ok(()) => {
                match left_out {
                    Some((_, why)) => self
                        .left_out_here
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((node, why)),
                    None => {
                        self.folded_here.fetch_add(1, Ordering::AcqRel);
                    }
                }
                drop(open);
                if self.all_in() {
                    self.complete.notify_waiters();
                }
                None
            }
            // Not this fold's to take (a node outside the plan, a repeat): as it came.
            Err(back) => back.or(left_out.map(|(reply, _)| reply)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{Metadata, Payload, RecordDict};

    /// A partial that lists the nodes folded, shard by shard.
    #[derive(Debug, Default, PartialEq)]
    struct Nodes(Vec<u64>);

    impl Mergeable for Nodes {
        fn empty_like(&self) -> Self {
            Nodes::default()
        }

        fn merge(&mut self, later: Self) {
            self.0.extend(later.0);
        }
    }

    fn reply(node: u64) -> Message {
        Message {
            metadata: Metadata {
                src_node_id: node,
                reply_to_message_id: format!("m{node}"),
                ..Metadata::default()
            },
            payload: Payload::Content(RecordDict::new()),
        }
    }

    /// Nodes divisible by 5 are refused.
    fn fold_of(nodes: &[u64]) -> Arc<PhaseFold<Nodes>> {
        PhaseFold::new(
            ShardPlan::new(nodes),
            Nodes::default(),
            Box::new(|_, m| match m.metadata.src_node_id % 5 {
                0 => Err(Rejection::NoMetrics("refused".into())),
                _ => Ok(()),
            }),
            Box::new(|p, run| p.0.extend(run.iter().map(|m| m.metadata.src_node_id))),
        )
    }

    #[test]
    fn replies_folded_where_they_arrive_give_the_fold_the_serverapp_would_make() {
        let nodes: Vec<u64> = (1..=300).collect();
        let whole = fold_of(&nodes);
        let refused = whole.fold_batch(nodes.iter().rev().map(|&n| reply(n)).collect());
        assert_eq!(refused.len(), 60);
        assert!(whole.all_in());
        let expected = whole.finish();

        let here = fold_of(&nodes);
        let order = here.sums.plan().send_order(4);
        let delivered = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (here, order, delivered) = (&here, &order, &delivered);
                scope.spawn(move || {
                    for &node in order.iter().skip(t).step_by(4) {
                        assert!(!here.all_in(), "node {node}'s reply is still to come");
                        if let Some(back) = ReplyFold::fold(here.as_ref(), reply(node)) {
                            delivered.lock().unwrap().push(back);
                        }
                    }
                });
            }
        });
        assert!(
            delivered.into_inner().unwrap().is_empty(),
            "nothing delivered"
        );
        assert!(here.all_in());
        let counted = here.close();
        assert_eq!(counted.folded, 240);
        assert_eq!(
            counted.left_out.len(),
            60,
            "each refused reply is counted, with why"
        );
        assert!(counted.left_out.iter().all(|(node, _)| node % 5 == 0));
        assert_eq!(here.finish(), expected);
    }

    #[test]
    fn a_closed_fold_hands_replies_back_and_counts_what_it_took() {
        let fold = fold_of(&[1, 2, 3, 5]);
        assert!(ReplyFold::fold(fold.as_ref(), reply(2)).is_none());
        assert!(ReplyFold::fold(fold.as_ref(), reply(5)).is_none());
        let repeat = ReplyFold::fold(fold.as_ref(), reply(2)).expect("a repeat comes back");
        assert_eq!(repeat.metadata.reply_to_message_id, "m2");
        let outside = ReplyFold::fold(fold.as_ref(), reply(4)).expect("not sampled");
        assert_eq!(outside.metadata.src_node_id, 4);
        assert!(fold.has(2) && fold.has(5) && !fold.has(1) && !fold.has(4));
        assert!(!fold.all_in());
        let counted = fold.close();
        assert_eq!(counted.folded, 1);
        assert_eq!(counted.left_out.len(), 1);
        assert_eq!(
            counted.left_out[0].0, 5,
            "node 5's reply was left out, and why is kept"
        );
        let after = ReplyFold::fold(fold.as_ref(), reply(1)).expect("closed: handed back");
        assert_eq!(
            fold.fold_batch(vec![after]).len(),
            0,
            "delivered whole, folded here"
        );
        assert_eq!(fold.finish(), Nodes(vec![1, 2]));
    }

    #[tokio::test]
    async fn the_phase_is_woken_when_the_last_reply_is_folded_where_it_arrived() {
        let fold = fold_of(&[1, 2, 3]);
        let waiter = tokio::spawn({
            let fold = fold.clone();
            async move { fold.all_folded().await }
        });
        assert!(
            fold.fold_batch(vec![reply(2)]).is_empty(),
            "one comes whole"
        );
        let worker = std::thread::spawn({
            let fold = fold.clone();
            move || {
                assert!(ReplyFold::fold(fold.as_ref(), reply(3)).is_none());
                assert!(ReplyFold::fold(fold.as_ref(), reply(1)).is_none());
            }
        });
        worker.join().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(fold.all_in());
    }
}
