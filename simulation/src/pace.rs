//! How far the virtual fleet may run ahead of the folding of its replies: pure decisions,
//! no clock and no I/O.
//!
//! Two bounds, both proportional to the worker count and neither to the number of nodes:
//!
//! - `Budget`: replies computed and waiting in the state for the ServerApp to take them
//!   cost at most `WAITING_BYTES_PER_WORKER` per worker (their arrays' bytes, plus
//!   `REPLY_OVERHEAD` each so replies without arrays count too; a reply its worker
//!   folds never waits there). Workers faster than the fold pause instead of piling replies up (S5 before this: ten thousand 4 MB replies,
//!   41 GB at 16 workers). In bytes, not replies: two 4 MB replies per worker wait, or
//!   two thousand 4 KB ones, so small replies do not pay a pause every other reply.
//! - `Window`: replies finished while an older instruction is still being served may cost
//!   as much again. Replies are folded in canonical order (each shard in node order),
//!   which is close to the order instructions are queued and taken in; a reply that
//!   comes before an earlier one of its shard (a worker descheduled mid-call) waits whole
//!   until its turn, in the shard it folds into when the workers fold (a sum-type
//!   strategy's phase) or in the ServerApp otherwise, and the window bounds what can
//!   wait so. Past it, workers pause until the old instruction is served.

use floret_actors::state::WaitingReplies;
use floret_core::Message;
use std::collections::{BTreeMap, BTreeSet};

/// What the replies waiting in the state, unfolded, may cost per worker before workers
/// pause; and, separately, what replies finished ahead of an older instruction may cost.
/// Two 4 MB replies a worker keep every worker busy while the ServerApp folds the batch
/// before.
pub const WAITING_BYTES_PER_WORKER: usize = 8 << 20;
/// What a reply costs besides its arrays (its metadata, ids and metrics), so replies
/// without arrays are bounded too.
pub const REPLY_OVERHEAD: usize = 1 << 10;

/// What a reply costs while it waits: its arrays' bytes and `REPLY_OVERHEAD`.
pub fn reply_cost(reply: &Message) -> usize {
    reply.array_bytes() + REPLY_OVERHEAD
}

/// The bound on replies waiting for the ServerApp.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    max_cost: usize,
}

impl Budget {
    pub(crate) fn for_workers(workers: usize) -> Budget {
        Budget {
            max_cost: WAITING_BYTES_PER_WORKER * workers.max(1),
        }
    }

    /// Whether another reply may be computed while `waiting` wait.
    pub(crate) fn has_room(&self, waiting: WaitingReplies) -> bool {
        waiting.bytes + waiting.replies * REPLY_OVERHEAD < self.max_cost
    }
}

/// The instructions taken, by number in the order taken, which are still served, and what
/// the replies finished ahead of the oldest of those cost.
#[derive(Debug)]
pub(crate) struct Window {
    /// The number the next instruction taken gets.
    next: u64,
    /// Numbers of the instructions being served now.
    serving: BTreeSet<u64>,
    /// Replies finished after the oldest instruction still served was taken, by number:
    /// what each costs.
    ahead: BTreeMap<u64, usize>,
    /// The sum of `ahead`.
    ahead_cost: usize,
    /// What `ahead` may cost before no instruction is taken.
    max_cost: usize,
}

impl Window {
    pub(crate) fn for_workers(workers: usize) -> Window {
        Window {
            next: 0,
            serving: BTreeSet::new(),
            ahead: BTreeMap::new(),
            ahead_cost: 0,
            max_cost: WAITING_BYTES_PER_WORKER * workers.max(1),
        }
    }

    /// Whether another instruction may be taken now.
    pub(crate) fn is_open(&self) -> bool {
        self.ahead_cost < self.max_cost
    }

    /// Numbers an instruction just taken; `done` with the number when it is served.
    pub(crate) fn take(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        self.serving.insert(n);
        n
    }

    /// The instruction numbered `n` is served, and its reply costs `cost`.
    pub(crate) fn done(&mut self, n: u64, cost: usize) {
        self.serving.remove(&n);
        if self.serving.first().is_some_and(|&oldest| oldest < n) {
            self.ahead.insert(n, cost);
            self.ahead_cost += cost;
        }
        // Replies before the oldest instruction still served can be folded now.
        while let Some(entry) = self.ahead.first_entry() {
            if self
                .serving
                .first()
                .is_some_and(|&oldest| oldest < *entry.key())
            {
                break;
            }
            self.ahead_cost -= entry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_bytes_and_replies_per_worker() {
        let budget = Budget::for_workers(2);
        let waiting = |replies, bytes| WaitingReplies { replies, bytes };
        assert!(budget.has_room(waiting(0, 0)));
        assert!(budget.has_room(waiting(3, 12 << 20)));
        assert!(
            !budget.has_room(waiting(4, 16 << 20)),
            "four 4 MB replies fill two workers"
        );
        assert!(budget.has_room(waiting(10_000, 0)));
        assert!(
            !budget.has_room(waiting(16_384, 0)),
            "replies without arrays count too"
        );
    }

    #[test]
    fn a_slow_instruction_holds_the_window_until_it_is_served() {
        let mut window = Window::for_workers(2);
        let slow = window.take();
        let mut others: Vec<u64> = (0..4).map(|_| window.take()).collect();
        for &n in &others[..3] {
            window.done(n, 4 << 20);
            assert!(window.is_open(), "{n}");
        }
        window.done(others[3], 4 << 20);
        assert!(!window.is_open(), "16 MB finished past the slow one");
        window.done(slow, 4 << 20);
        assert!(window.is_open(), "all of it can be folded now");
        others.push(window.take());
        assert_eq!(others, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn replies_finished_in_order_never_close_the_window() {
        let mut window = Window::for_workers(1);
        for _ in 0..1_000 {
            let (a, b) = (window.take(), window.take());
            window.done(a, 4 << 20);
            window.done(b, 4 << 20);
            assert!(window.is_open());
        }
    }

    #[test]
    fn a_reply_costs_its_arrays_and_the_overhead() {
        let mut arrays = floret_core::ArrayRecord::new();
        arrays.insert("w", floret_core::Array::from_slice(&[0.0f32; 256]));
        let content = floret_core::RecordDict::new().with("arrays", arrays);
        let reply = Message::new(content, 1, "train");
        assert_eq!(reply_cost(&reply), 1024 + REPLY_OVERHEAD);
    }
}
