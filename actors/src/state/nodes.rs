//! The node registry of the in-memory store: who is registered, until when each node
//! counts as online, and the wake-up of whoever delivers its instructions.
//!
//! A registered node is offered to ServerApps (`set`) only once it has shown it is alive
//! after registering: a heartbeat, its instruction stream, a pull. A `RegisterNode` that
//! is never followed by anything (a crashed SuperNode, or anyone who can reach the Fleet
//! API) would otherwise be sampled, and every round would wait for it until its lease ran
//! out, up to two days.

use super::{NodeLease, StateError};
use crate::policy::heartbeat::is_offline;
use floret_core::NodeSet;
use floret_core::hashing::FastHashMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// One registered node.
struct Entry {
    /// `None` for nodes that never expire (a simulation's virtual nodes).
    lease: Option<NodeLease>,
    /// Created when someone subscribes, so a million virtual nodes cost no `Notify` each.
    signal: Option<Arc<Notify>>,
    /// Whether it has shown it is alive since it registered (see the module doc); only
    /// such nodes are in `set`.
    alive: bool,
}

/// See the module doc.
#[derive(Default)]
pub(super) struct Nodes {
    entries: FastHashMap<u64, Entry>,
    /// Sorted ids of the alive nodes, rebuilt lazily: 10,000 nodes registering one by one
    /// must not sort 10,000 times, and a ServerApp asking every round must not copy them.
    set: NodeSet,
    dirty: bool,
}

impl Nodes {
    /// Registers a node under a fresh random id: never 0 (the SuperLink's own id) and never
    /// one in use. Random like Flower's, so ids do not reveal how many nodes came before.
    pub(super) fn create(&mut self, lease: NodeLease) -> u64 {
        let id = loop {
            let id: u64 = rand::random();
            if id != 0 && !self.entries.contains_key(&id) {
                break id;
            }
        };
        self.insert(id, Some(lease), false);
        id
    }

    /// Registers a node under a known id, or renews its lease if it is registered. A node
    /// registered here (a keyed node connecting, one loaded after a restart) is not alive
    /// until it shows it is.
    pub(super) fn activate(&mut self, id: u64, lease: NodeLease) {
        match self.entries.get_mut(&id) {
            Some(entry) => entry.lease = Some(lease),
            None => self.insert(id, Some(lease), false),
        }
    }

    /// A simulation's virtual nodes: alive from the start, never expiring.
    pub(super) fn add_permanent(&mut self, ids: &[u64]) {
        self.entries.reserve(ids.len());
        for &id in ids {
            self.insert(id, None, true);
        }
    }

    fn insert(&mut self, id: u64, lease: Option<NodeLease>, alive: bool) {
        self.entries.insert(
            id,
            Entry {
                lease,
                signal: None,
                alive,
            },
        );
        self.dirty = true;
    }

    /// The node showed it is alive: from now on it is offered to ServerApps.
    pub(super) fn alive(&mut self, id: u64) -> Result<(), StateError> {
        let entry = self
            .entries
            .get_mut(&id)
            .ok_or(StateError::UnknownNode(id))?;
        if !entry.alive {
            entry.alive = true;
            self.dirty = true;
        }
        Ok(())
    }

    /// Whether the node is registered and has shown it is alive.
    pub(super) fn is_alive(&self, id: u64) -> bool {
        self.entries.get(&id).is_some_and(|e| e.alive)
    }

    /// Every registered node with whether it is alive: for `flwr supernode list`.
    pub(super) fn registered(&self) -> Vec<(u64, bool)> {
        self.entries.iter().map(|(&id, e)| (id, e.alive)).collect()
    }

    pub(super) fn renew(&mut self, id: u64, lease: NodeLease) -> Result<(), StateError> {
        let entry = self
            .entries
            .get_mut(&id)
            .ok_or(StateError::UnknownNode(id))?;
        if entry.lease.is_some() {
            entry.lease = Some(lease);
        }
        Ok(())
    }

    /// Forgets a node and wakes its deliverer, which then finds it gone and closes the
    /// node's stream.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        match self.entries.remove(&id) {
            Some(entry) => {
                if let Some(signal) = entry.signal {
                    signal.notify_waiters();
                }
                self.dirty = true;
                true
            }
            None => false,
        }
    }

    pub(super) fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    pub(super) fn signal(&mut self, id: u64) -> Result<Arc<Notify>, StateError> {
        let entry = self
            .entries
            .get_mut(&id)
            .ok_or(StateError::UnknownNode(id))?;
        Ok(entry.signal.get_or_insert_with(Arc::default).clone())
    }

    /// Wakes the node's deliverer, if it has one.
    pub(super) fn notify(&self, id: u64) {
        if let Some(signal) = self.entries.get(&id).and_then(|e| e.signal.as_ref()) {
            signal.notify_waiters();
        }
    }

    /// Nodes whose lease ended before `now`.
    pub(super) fn overdue(&self, now: f64) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.lease.is_some_and(|l| is_offline(l.online_until, now)))
            .map(|(&id, _)| id)
            .collect()
    }

    /// The alive nodes, the ones a ServerApp may sample and wait for.
    pub(super) fn set(&mut self) -> NodeSet {
        if self.dirty {
            let mut all: Vec<u64> = self
                .entries
                .iter()
                .filter(|(_, e)| e.alive)
                .map(|(&id, _)| id)
                .collect();
            all.sort_unstable();
            self.set = all.into();
            self.dirty = false;
        }
        self.set.clone()
    }
}
