//! Nonces seen within the window, so that each signed request is accepted once.
//!
//! Bounded in memory: an entry is dropped once its request's timestamp has left the window
//! (a replay of it would then be refused as stale anyway), and the cache refuses new
//! entries beyond `capacity` rather than forgetting live ones, which would reopen replays.

use std::collections::{BTreeSet, HashSet};

pub(crate) struct ReplayCache {
    /// Nonces of accepted requests still inside the window.
    live: HashSet<u128>,
    /// (expiry in unix ms, nonce), oldest expiry first.
    expiries: BTreeSet<(u64, u128)>,
    capacity: usize,
}

pub(crate) enum Admit {
    Fresh,
    Replayed,
    Full,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            live: HashSet::new(),
            expiries: BTreeSet::new(),
            capacity,
        }
    }

    /// Records `nonce` until `expires_ms` unless it is already recorded.
    pub(crate) fn admit(&mut self, nonce: u128, expires_ms: u64, now_ms: u64) -> Admit {
        self.expire(now_ms);
        if self.live.contains(&nonce) {
            return Admit::Replayed;
        }
        if self.live.len() >= self.capacity {
            return Admit::Full;
        }
        self.live.insert(nonce);
        self.expiries.insert((expires_ms, nonce));
        Admit::Fresh
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(expiry, nonce)) = self.expiries.first() {
            if expiry >= now_ms {
                break;
            }
            self.expiries.pop_first();
            self.live.remove(&nonce);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }
}
