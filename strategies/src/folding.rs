//! A phase's fold, shared by the ServerApp and by the threads where replies arrive.
//!
//! A phase offers its fold to the grid (`Grid::send_folding`). A grid that can fold where
//! the replies are made (a simulation's workers) hands each reply to `ReplyFold::fold` on
//! the thread that made it and delivers a receipt instead; any other reply (from a grid
//! that cannot, an error the SuperLink made in a node's place, one handed back) reaches the
//! ServerApp whole and is folded by `fold_batch`. Both go through one `CanonicalFold`, so
//! the aggregate is the same bits either way, and the phase learns each reply's outcome,
//! folded or left out and why, from its receipt.

use crate::canonical::{CanonicalFold, Mergeable};
use crate::reply::Rejection;
use crate::shard::ShardPlan;
use floret_core::{Message, Payload, RecordDict, ReplyFold};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Checks a reply against the template partial before it is offered.
pub(crate) type Check<P> = Box<dyn Fn(&P, &Message) -> Result<(), Rejection> + Send + Sync>;
/// Folds a run of checked replies, in canonical order, into a partial.
pub(crate) type Fold<P> = Box<dyn Fn(&mut P, Vec<Message>) + Send + Sync>;

/// What happened to a reply folded where it arrived: `None` folded, `Some` left out.
type Outcome = Option<Rejection>;

/// One phase's fold (see the module doc).
pub(crate) struct PhaseFold<P> {
    sums: CanonicalFold<P, Message>,
    check: Check<P>,
    fold: Fold<P>,
    /// Open until `close`: a fold where a reply arrives holds it for reading from its
    /// check to its recorded outcome, so that `close` waits for folds in progress and no
    /// reply is folded without the phase counting it.
    open: RwLock<bool>,
    /// Outcomes of replies folded where they arrived, by node, until the phase reads their
    /// receipts.
    receipts: Mutex<HashMap<u64, Outcome>>,
}

impl<P: Mergeable + Send + Sync + 'static> PhaseFold<P> {
    /// A fold of the replies of `plan`'s nodes into partials made from `empty`.
    pub(crate) fn new(plan: ShardPlan, empty: P, check: Check<P>, fold: Fold<P>) -> Arc<Self> {
        Arc::new(PhaseFold {
            sums: CanonicalFold::new(plan, empty),
            check,
            fold,
            open: RwLock::new(true),
            receipts: Mutex::new(HashMap::new()),
        })
    }

    /// Folds replies that reached the ServerApp: receipts of replies folded where they
    /// arrived, and whole replies. Hands back the ones left out, with why.
    pub(crate) fn fold_batch(&self, batch: Vec<Message>) -> Vec<(Message, Rejection)> {
        let mut rejected = Vec::new();
        let mut whole = Vec::with_capacity(batch.len());
        {
            let mut receipts = self.receipts();
            for reply in batch {
                match receipts.remove(&reply.metadata.src_node_id) {
                    Some(None) => {}
                    Some(Some(why)) => rejected.push((reply, why)),
                    None => whole.push(reply),
                }
            }
        }
        if !whole.is_empty() {
            rejected.extend(self.sums.offer_batch(
                whole,
                |m| m.metadata.src_node_id,
                |p, m| (self.check)(p, m),
                &|p, run| (self.fold)(p, run),
            ));
        }
        rejected
    }

    /// Array bytes `fold_batch` would read from `batch` (decides where to fold it).
    pub(crate) fn weight_of(batch: &[Message]) -> usize {
        batch.iter().map(Message::array_bytes).sum()
    }

    /// Takes no more replies where they arrive, once the folds in progress are done, and
    /// returns the outcomes of replies folded there whose receipts the phase has not read
    /// (it stopped waiting first): they are in the aggregate, so the phase counts them.
    pub(crate) fn close(&self) -> Vec<(u64, Outcome)> {
        *self.open.write().unwrap_or_else(|p| p.into_inner()) = false;
        self.receipts().drain().collect()
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

    fn receipts(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Outcome>> {
        self.receipts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Replies with fewer array bytes than this are delivered whole: folding them where they
/// arrive would save the ServerApp less than their receipts cost (a million replies of
/// 4 KB fold in well under a second on one thread; their receipts would double the
/// messages the state allocates).
pub(crate) const FOLD_HERE_MIN_BYTES: usize = 64 << 10;

impl<P: Mergeable + Send + Sync + 'static> ReplyFold for PhaseFold<P> {
    fn takes(&self, reply: &Message) -> bool {
        reply.array_bytes() >= FOLD_HERE_MIN_BYTES
    }

    fn fold(&self, reply: Message) -> Message {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        if !*open {
            return reply;
        }
        let node = reply.metadata.src_node_id;
        let receipt = Message {
            metadata: reply.metadata.clone(),
            payload: Payload::Content(RecordDict::new()),
        };
        let (item, left_out) = match (self.check)(self.sums.template(), &reply) {
            Ok(()) => (Some(reply), None),
            Err(why) => (None, Some((reply, why))),
        };
        match self.sums.take(node, item, &|p, run| (self.fold)(p, run)) {
            Ok(()) => {
                self.receipts().insert(node, left_out.map(|(_, why)| why));
                receipt
            }
            // Not this fold's to take (a node outside the plan, a repeat): as it came.
            Err(back) => back.or(left_out.map(|(reply, _)| reply)).unwrap_or(receipt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{Array, ArrayRecord, Metadata};

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
        let expected = whole.finish();

        let here = fold_of(&nodes);
        let order = here.sums.plan().send_order(4);
        let receipts = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (here, order, receipts) = (&here, &order, &receipts);
                scope.spawn(move || {
                    for &node in order.iter().skip(t).step_by(4) {
                        let delivered = ReplyFold::fold(here.as_ref(), reply(node));
                        receipts.lock().unwrap().push(delivered);
                    }
                });
            }
        });
        let receipts = receipts.into_inner().unwrap();
        let rejected = here.fold_batch(receipts);
        assert_eq!(rejected.len(), 60, "each refused reply's receipt says why");
        assert!(
            rejected
                .iter()
                .all(|(m, _)| m.metadata.src_node_id % 5 == 0)
        );
        assert!(here.close().is_empty(), "every receipt was read");
        assert_eq!(here.finish(), expected);
    }

    #[test]
    fn a_closed_fold_hands_replies_back_and_counts_receipts_not_read() {
        let fold = fold_of(&[1, 2, 3, 5]);
        let receipt = ReplyFold::fold(fold.as_ref(), reply(2));
        assert!(receipt.content().unwrap().is_empty());
        let refused = ReplyFold::fold(fold.as_ref(), reply(5));
        assert!(refused.content().unwrap().is_empty());
        let repeat = ReplyFold::fold(fold.as_ref(), reply(2));
        assert_eq!(
            repeat.metadata.reply_to_message_id, "m2",
            "a repeat comes back whole"
        );
        let mut unread = fold.close();
        unread.sort_by_key(|(node, _)| *node);
        assert_eq!(unread.len(), 2);
        assert_eq!(unread[0], (2, None));
        assert!(
            unread[1].1.is_some(),
            "node 5's reply was left out, and why is kept"
        );
        let after = ReplyFold::fold(fold.as_ref(), reply(1));
        assert_eq!(
            fold.fold_batch(vec![after]).len(),
            0,
            "delivered whole, folded here"
        );
        assert_eq!(fold.finish(), Nodes(vec![1, 2]));
    }

    #[test]
    fn only_replies_with_enough_array_bytes_are_taken_where_they_arrive() {
        let fold = fold_of(&[1]);
        let with = |values: usize| {
            let mut m = reply(1);
            let mut arrays = ArrayRecord::new();
            arrays.insert("w", Array::zeros::<f32>(vec![values as i32]));
            m.payload = Payload::Content(RecordDict::new().with("arrays", arrays));
            m
        };
        assert!(!fold.takes(&with(1_000)), "4 KB: delivered whole");
        assert!(fold.takes(&with(FOLD_HERE_MIN_BYTES / 4)));
    }
}
