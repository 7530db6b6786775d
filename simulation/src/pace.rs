//! How far the virtual fleet may run ahead of the ServerApp that folds its replies: pure
//! decisions, no clock and no I/O.
//!
//! Two bounds, both proportional to the worker count and neither to the number of nodes:
//!
//! - `Budget`: replies computed and waiting in the state for the ServerApp to take them
//!   cost at most `WAITING_BYTES_PER_WORKER` per worker (their arrays' bytes, plus
//!   `REPLY_OVERHEAD` each so replies without arrays count too). Workers faster than the
//!   fold pause instead of piling replies up (S5 before this: ten thousand 4 MB replies,
//!   41 GB at 16 workers). In bytes, not replies: two 4 MB replies per worker wait, or
//!   two thousand 4 KB ones, so small replies do not pay a pause every other reply.
//! - `Window`: no instruction is taken more than `AHEAD_PER_WORKER` per worker past the
//!   oldest one still being served. The ServerApp folds in canonical order, which is the
//!   order instructions are queued and taken in; a reply that comes before an earlier one
//!   (a worker descheduled mid-call) waits in the ServerApp until its turn, and the window
//!   bounds how many can.

use floret_actors::state::WaitingReplies;
use std::collections::BTreeSet;

/// What the replies waiting in the state, unfolded, may cost per worker before workers
/// pause. Two 4 MB replies a worker keep every worker busy while the ServerApp folds the
/// batch before.
pub const WAITING_BYTES_PER_WORKER: usize = 8 << 20;
/// What a waiting reply costs besides its arrays (its metadata, ids and metrics).
pub const REPLY_OVERHEAD: usize = 1 << 10;
/// Instructions per worker that may be taken past the oldest one still being served.
pub const AHEAD_PER_WORKER: u64 = 3;

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

/// The instructions taken, by number in the order taken, and which are still served.
#[derive(Debug)]
pub(crate) struct Window {
    /// The number the next instruction taken gets.
    next: u64,
    /// Numbers of the instructions being served now.
    serving: BTreeSet<u64>,
    /// How far past the oldest served instruction `next` may be.
    max_ahead: u64,
}

impl Window {
    pub(crate) fn for_workers(workers: usize) -> Window {
        Window {
            next: 0,
            serving: BTreeSet::new(),
            max_ahead: AHEAD_PER_WORKER * workers.max(1) as u64,
        }
    }

    /// Whether another instruction may be taken now.
    pub(crate) fn is_open(&self) -> bool {
        self.serving
            .first()
            .is_none_or(|&oldest| self.next - oldest < self.max_ahead)
    }

    /// Numbers an instruction just taken; `done` with the number when it is served.
    pub(crate) fn take(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        self.serving.insert(n);
        n
    }

    /// The instruction numbered `n` is served.
    pub(crate) fn done(&mut self, n: u64) {
        self.serving.remove(&n);
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
        let others: Vec<u64> = (0..5).map(|_| window.take()).collect();
        others.iter().for_each(|&n| window.done(n));
        assert!(!window.is_open(), "six taken past the slow one's start");
        window.done(slow);
        assert!(window.is_open());
        let again = window.take();
        assert_eq!(again, 6);
        assert!(window.is_open(), "nothing old is served any more");
    }
}
