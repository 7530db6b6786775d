//! A simulation's instructions, kept as the pushes that made them.
//!
//! Why: a phase of a million-node simulation is one push of a million instructions. Kept
//! as a million per-node queues, a million-entry list of ready nodes and a million
//! in-flight records keyed by id string, its bookkeeping cost more than the ClientApp
//! calls of a small model, most of it on the ServerApp's one thread, and every reply was
//! a lookup in a map too large for any cache. A store served by a virtual fleet (one with
//! fold lanes) keeps each push here instead, as one entry: its messages in order, a
//! record per message (its node and flight, no key), and a cursor. Workers take
//! instructions in push order (`take`), stamping each as they take it; a reply finds its
//! record from the counter in its id (`rules::parse_message_id`) among the few pushes in
//! flight. Pure bookkeeping under the store's lock: no I/O, no clock.
//!
//! A virtual fleet asks for any node's instructions (`SimulationStore::pull_any_instructions`);
//! `pull_instructions` and `redeliver`, a SuperNode's calls, do not look here.

use super::StateError;
use super::rules::{self, Inflight};
use floret_core::{Message, ReplyFold};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// Where an instruction of a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not handed out yet.
    Queued,
    /// Handed out, not answered.
    Delivered,
    /// Answered, by its node or in its place.
    Answered,
}

/// What a batch's instructions carry, unstamped.
enum Content {
    /// The messages of a push, each until it is handed out.
    Each(Vec<Option<Message>>),
    /// One message to every node of the batch (`Grid::broadcast_folding`): no message
    /// per node exists until a worker takes one.
    Template(Message),
}

/// Consecutive instructions of one push that share their TTL, group and type (see the
/// module doc).
struct Batch {
    run_id: u64,
    /// The store's lifetime tag, for the ids.
    lifetime: u32,
    /// The counter of the first instruction; the others follow one by one.
    first: u64,
    content: Content,
    /// Each instruction's node.
    dst: Vec<u64>,
    /// What the instructions' flights share; each is this with its own node.
    flight: Inflight,
    slots: Vec<Slot>,
    /// Instructions before this one have been handed out or answered.
    next: usize,
    /// Instructions not answered yet.
    unanswered: usize,
}

impl Batch {
    fn new(
        first: u64,
        content: Content,
        dst: Vec<u64>,
        flight: Inflight,
        ids: (u64, u32),
    ) -> Batch {
        let len = dst.len();
        Batch {
            run_id: ids.0,
            lifetime: ids.1,
            first,
            content,
            dst,
            flight,
            slots: vec![Slot::Queued; len],
            next: 0,
            unanswered: len,
        }
    }

    fn id(&self, index: usize) -> String {
        rules::message_id(self.run_id, self.lifetime, self.first + index as u64)
    }

    fn flight(&self, index: usize) -> Inflight {
        self.flight.for_node(self.dst[index])
    }

    /// The instruction at `index`, unstamped, if it is still queued.
    fn message(&mut self, index: usize) -> Option<Message> {
        match &mut self.content {
            Content::Each(messages) => messages[index].take(),
            Content::Template(template) => Some(template.to(self.dst[index])),
        }
    }

    /// Marks instruction `index` answered and returns its id and flight, for the store to
    /// answer in its node's place.
    fn answer(&mut self, index: usize) -> (String, Inflight) {
        self.slots[index] = Slot::Answered;
        if let Content::Each(messages) = &mut self.content {
            messages[index] = None;
        }
        self.unanswered -= 1;
        (self.id(index), self.flight(index))
    }
}

/// A push made ready outside the store's lock (`Batches::prepare`), added under it.
pub(super) struct Prepared(Vec<Batch>);

/// Every batched push still in flight, oldest first (see the module doc).
#[derive(Default)]
pub(super) struct Batches {
    list: VecDeque<Batch>,
}

impl Batches {
    /// Makes a push of `messages` to run `run_id` (counters from `first`, sent at `now`)
    /// ready to add; its replies go to `fold` when there is one. The messages' ids and
    /// stamps are written when they are taken.
    pub(super) fn prepare(
        (run_id, lifetime, first): (u64, u32, u64),
        messages: Vec<Message>,
        now: f64,
        fold: Option<Arc<dyn ReplyFold>>,
    ) -> Prepared {
        let mut batches: Vec<Batch> = Vec::new();
        let mut start = first;
        let mut messages = messages.into_iter().peekable();
        while let Some(head) = messages.next() {
            let flight = Inflight::unstamped(
                run_id,
                &head.metadata,
                now,
                Inflight::push_of(&head.metadata, fold.clone()),
            );
            let mut dst = vec![head.metadata.dst_node_id];
            let mut run = vec![Some(head)];
            while let Some(m) = messages.next_if(|m| flight.takes_like(&m.metadata)) {
                dst.push(m.metadata.dst_node_id);
                run.push(Some(m));
            }
            let len = dst.len() as u64;
            batches.push(Batch::new(
                start,
                Content::Each(run),
                dst,
                flight,
                (run_id, lifetime),
            ));
            start += len;
        }
        Prepared(batches)
    }

    /// `prepare` for `template` sent to each of `nodes`.
    pub(super) fn prepare_broadcast(
        (run_id, lifetime, first): (u64, u32, u64),
        template: Message,
        nodes: &[u64],
        now: f64,
        fold: Option<Arc<dyn ReplyFold>>,
    ) -> Prepared {
        if nodes.is_empty() {
            return Prepared(Vec::new());
        }
        let md = &template.metadata;
        let flight = Inflight::unstamped(run_id, md, now, Inflight::push_of(md, fold));
        let content = Content::Template(template);
        Prepared(vec![Batch::new(
            first,
            content,
            nodes.to_vec(),
            flight,
            (run_id, lifetime),
        )])
    }

    /// Adds a prepared push, in counter order (two pushes may take their counters and be
    /// added in either order); it is taken after the pushes numbered before it.
    pub(super) fn add(&mut self, prepared: Prepared) {
        for batch in prepared.0 {
            let at = self.list.partition_point(|b| b.first < batch.first);
            self.list.insert(at, batch);
        }
    }

    /// Instructions not answered yet.
    pub(super) fn held(&self) -> usize {
        self.list.iter().map(|b| b.unanswered).sum()
    }

    /// Hands out up to `limit` instructions in push order, stamped, into `out`. One whose
    /// node `known` does not know is answered instead: its id and flight go to `gone`, for
    /// the store to answer in the node's place.
    pub(super) fn take(
        &mut self,
        limit: usize,
        known: impl Fn(u64) -> bool,
        out: &mut Vec<Message>,
        gone: &mut Vec<(String, Inflight)>,
    ) {
        for batch in self.list.iter_mut() {
            while out.len() < limit && batch.next < batch.slots.len() {
                let index = batch.next;
                batch.next += 1;
                if batch.slots[index] != Slot::Queued {
                    continue;
                }
                if !known(batch.dst[index]) {
                    gone.push(batch.answer(index));
                    continue;
                }
                let Some(mut message) = batch.message(index) else {
                    continue;
                };
                let id = batch.id(index);
                let sent = batch.flight.created_at();
                rules::stamp_instruction(&mut message.metadata, batch.run_id, id, sent);
                batch.slots[index] = Slot::Delivered;
                out.push(message);
            }
            if out.len() >= limit {
                break;
            }
        }
        // Only an instruction answered here (its node unknown) can finish a batch.
        if !gone.is_empty() {
            self.list.retain(|b| b.unanswered > 0);
        }
    }

    /// Accepts the reply of node `from` to `reply_to`: `None` when `reply_to` is no
    /// batched instruction in flight (the store looks elsewhere), `WrongReplier` when
    /// another node sent it, else the instruction's flight, now answered.
    pub(super) fn accept(
        &mut self,
        reply_to: &str,
        from: u64,
    ) -> Option<Result<Inflight, StateError>> {
        let (run_id, lifetime, counter) = rules::parse_message_id(reply_to)?;
        let at = self
            .list
            .partition_point(|b| b.first + b.slots.len() as u64 <= counter);
        let batch = self.list.get_mut(at)?;
        if batch.run_id != run_id || batch.lifetime != lifetime || counter < batch.first {
            return None;
        }
        let index = usize::try_from(counter - batch.first).ok()?;
        if batch.slots[index] == Slot::Answered {
            return None;
        }
        if let Err(e) = rules::check_replier(reply_to, from, batch.dst[index]) {
            return Some(Err(e));
        }
        let (_, flight) = batch.answer(index);
        if batch.unanswered == 0 {
            self.list.remove(at);
        }
        Some(Ok(flight))
    }

    /// Answers every instruction to a node in `gone`: their ids and flights, for the store
    /// to answer in the nodes' place.
    pub(super) fn drop_nodes(&mut self, gone: &HashSet<u64>) -> Vec<(String, Inflight)> {
        self.answer_where(|b, i| gone.contains(&b.dst[i]))
    }

    /// Answers every instruction whose TTL has ended by `now`, likewise.
    pub(super) fn expire(&mut self, now: f64) -> Vec<(String, Inflight)> {
        self.answer_where(|b, _| b.flight.is_expired(now))
    }

    /// Forgets run `run_id`'s instructions.
    pub(super) fn purge(&mut self, run_id: u64) {
        self.list.retain(|b| b.run_id != run_id);
    }

    fn answer_where(&mut self, hit: impl Fn(&Batch, usize) -> bool) -> Vec<(String, Inflight)> {
        let mut answered = Vec::new();
        for batch in self.list.iter_mut() {
            for index in 0..batch.slots.len() {
                if batch.slots[index] != Slot::Answered && hit(batch, index) {
                    answered.push(batch.answer(index));
                }
            }
        }
        self.list.retain(|b| b.unanswered > 0);
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::RecordDict;

    fn messages(nodes: &[u64], ttl: f64) -> Vec<Message> {
        nodes
            .iter()
            .map(|&n| {
                let mut m = Message::new(RecordDict::new(), n, "train").with_group_id("1");
                m.metadata.ttl = ttl;
                m
            })
            .collect()
    }

    fn batches_of(pushes: &[(u64, &[u64])]) -> Batches {
        let mut b = Batches::default();
        let mut first = 1;
        for &(run, nodes) in pushes {
            b.add(Batches::prepare(
                (run, 0, first),
                messages(nodes, 60.0),
                100.0,
                None,
            ));
            first += nodes.len() as u64;
        }
        b
    }

    fn take_all(b: &mut Batches, limit: usize) -> Vec<Message> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        b.take(limit, |_| true, &mut out, &mut gone);
        assert!(gone.is_empty());
        out
    }

    #[test]
    fn instructions_are_taken_in_push_order_stamped_with_their_ids() {
        let mut b = batches_of(&[(7, &[10, 11, 12]), (7, &[13])]);
        let first = take_all(&mut b, 2);
        let rest = take_all(&mut b, 10);
        let got: Vec<(u64, String, u64, f64)> = first
            .iter()
            .chain(&rest)
            .map(|m| {
                let md = &m.metadata;
                (
                    md.dst_node_id,
                    md.message_id.clone(),
                    md.run_id,
                    md.created_at,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (10, "7-0-1".to_string(), 7, 100.0),
                (11, "7-0-2".to_string(), 7, 100.0),
                (12, "7-0-3".to_string(), 7, 100.0),
                (13, "7-0-4".to_string(), 7, 100.0),
            ]
        );
        assert!(take_all(&mut b, 10).is_empty());
        assert_eq!(b.held(), 4, "taken is not answered");
    }

    #[test]
    fn a_reply_is_accepted_once_and_only_from_its_node() {
        let mut b = batches_of(&[(7, &[10, 11])]);
        take_all(&mut b, 10);
        assert!(matches!(
            b.accept("7-0-1", 11),
            Some(Err(StateError::WrongReplier {
                from: 11,
                to: 10,
                ..
            }))
        ));
        let flight = b.accept("7-0-1", 10).expect("in flight").expect("its node");
        assert_eq!((flight.run_id, flight.dst_node_id), (7, 10));
        assert!(b.accept("7-0-1", 10).is_none(), "answered already");
        for other in ["8-0-2", "7-1-2", "7-0-3", "7-0-02", "nonsense"] {
            assert!(b.accept(other, 11).is_none(), "{other}");
        }
        assert_eq!(b.held(), 1);
        assert!(b.accept("7-0-2", 11).is_some_and(|r| r.is_ok()));
        assert_eq!(b.held(), 0);
        assert!(b.list.is_empty(), "a batch answered in full is dropped");
    }

    #[test]
    fn a_reply_finds_its_push_among_several() {
        let mut b = batches_of(&[(1, &[1, 2, 3]), (2, &[4, 5]), (1, &[6])]);
        take_all(&mut b, 10);
        for (id, node) in [("2-0-5", 5), ("1-0-6", 6), ("1-0-1", 1), ("2-0-4", 4)] {
            assert!(b.accept(id, node).is_some_and(|r| r.is_ok()), "{id}");
        }
        assert_eq!(b.held(), 2);
        b.purge(1);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn instructions_to_unknown_nodes_are_answered_when_their_turn_comes() {
        let mut b = batches_of(&[(7, &[10, 11, 12])]);
        let (mut out, mut gone) = (Vec::new(), Vec::new());
        b.take(10, |n| n != 11, &mut out, &mut gone);
        assert_eq!(out.len(), 2);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].0.as_str(), gone[0].1.dst_node_id), ("7-0-2", 11));
        assert!(
            b.accept("7-0-2", 11).is_none(),
            "answered in its place already"
        );
    }

    #[test]
    fn dropped_nodes_and_expired_instructions_are_answered_queued_or_taken() {
        let mut b = Batches::default();
        b.add(Batches::prepare(
            (7, 0, 1),
            messages(&[10, 11, 12], 60.0),
            100.0,
            None,
        ));
        b.add(Batches::prepare(
            (7, 0, 4),
            messages(&[13], 10.0),
            100.0,
            None,
        ));
        take_all(&mut b, 1);
        let dropped = b.drop_nodes(&HashSet::from([10, 12]));
        let ids: Vec<&str> = dropped.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["7-0-1", "7-0-3"], "one taken, one still queued");
        let expired = b.expire(120.0);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, "7-0-4");
        let left = take_all(&mut b, 10);
        assert_eq!(left.len(), 1, "answered instructions are not handed out");
        assert_eq!(left[0].metadata.dst_node_id, 11);
        let expired = b.expire(1000.0);
        assert_eq!(expired.len(), 1);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn a_broadcast_makes_each_message_as_it_is_taken() {
        let mut b = Batches::default();
        let template = messages(&[0], 60.0).remove(0);
        b.add(Batches::prepare_broadcast(
            (3, 0, 5),
            template,
            &[8, 9],
            100.0,
            None,
        ));
        assert_eq!(b.held(), 2);
        let taken = take_all(&mut b, 10);
        let got: Vec<(u64, &str, &str)> = taken
            .iter()
            .map(|m| {
                let md = &m.metadata;
                (md.dst_node_id, md.message_id.as_str(), md.group_id.as_str())
            })
            .collect();
        assert_eq!(got, [(8, "3-0-5", "1"), (9, "3-0-6", "1")]);
        assert!(b.accept("3-0-6", 9).is_some_and(|r| r.is_ok()));
        assert_eq!(b.held(), 1);
    }

    #[test]
    fn a_push_of_messages_that_differ_keeps_each_flight() {
        let mut b = Batches::default();
        let mut msgs = messages(&[1, 2, 3], 60.0);
        msgs[1].metadata.ttl = 5.0;
        b.add(Batches::prepare((7, 0, 1), msgs, 100.0, None));
        assert_eq!(b.list.len(), 3, "split where the TTL changes");
        let expired = b.expire(110.0);
        assert_eq!(expired.len(), 1);
        assert_eq!(
            (expired[0].0.as_str(), expired[0].1.dst_node_id),
            ("7-0-2", 2)
        );
        let left: Vec<u64> = take_all(&mut b, 10)
            .iter()
            .map(|m| m.metadata.dst_node_id)
            .collect();
        assert_eq!(left, [1, 3]);
    }

    #[test]
    fn an_empty_push_leaves_nothing() {
        let mut b = batches_of(&[(7, &[])]);
        assert_eq!(b.held(), 0);
        assert!(take_all(&mut b, 10).is_empty());
        assert!(b.list.is_empty());
    }
}
