//! The ids of the instructions a SuperNode took on lately, so an instruction that reaches
//! it twice is run once: the SuperLink redelivers every unanswered instruction when a node
//! subscribes again (its old stream may have lost some), including those the node is still
//! working on. Bounded: old ids fall out first.

use std::collections::{HashSet, VecDeque};

/// See the module doc.
pub(super) struct RecentIds {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
}

impl RecentIds {
    pub(super) fn new(capacity: usize) -> RecentIds {
        RecentIds {
            order: VecDeque::with_capacity(capacity),
            set: HashSet::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; false if it was seen lately. Empty ids are never duplicates: they
    /// identify nothing.
    pub(super) fn insert(&mut self, id: &str) -> bool {
        if id.is_empty() {
            return true;
        }
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
        true
    }

    /// Forgets every id: they were another SuperLink's, whose ids may be reissued.
    pub(super) fn clear(&mut self) {
        self.order.clear();
        self.set.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::RecentIds;

    #[test]
    fn a_repeated_id_is_a_duplicate_until_it_falls_out() {
        let mut r = RecentIds::new(2);
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        assert!(r.insert("b"));
        assert!(r.insert("c"), "evicts a");
        assert!(r.insert("a"));
        assert!(!r.insert("c"));
        assert!(r.insert("") && r.insert(""));
    }

    #[test]
    fn a_cleared_id_is_new_again() {
        let mut r = RecentIds::new(4);
        assert!(r.insert("1-1"));
        r.clear();
        assert!(
            r.insert("1-1"),
            "an id of the last SuperLink must not drop a new one"
        );
        assert!(!r.insert("1-1"));
    }
}
