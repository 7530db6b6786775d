//! The allow-list of SuperNode public keys and the node id bound to each.
//!
//! A key keeps its node id while it stays on the list, also while its node is offline, so a
//! SuperNode that restarts with the same key gets its old id back: its node config and any
//! state kept under that id stay its own.

use bytes::Bytes;
use std::collections::HashMap;

pub(super) struct KeyEntry {
    pub(super) node_id: u64,
    /// Unix seconds the key was allowed.
    pub(super) allowed_at: f64,
    /// Unix seconds of the node's last registration or heartbeat.
    pub(super) last_seen: Option<f64>,
}

#[derive(Default)]
pub(super) struct NodeKeys {
    /// Whether the SuperLink requires keys (an allow-list was given).
    pub(super) required: bool,
    /// By SubjectPublicKeyInfo DER.
    by_key: HashMap<Bytes, KeyEntry>,
    by_id: HashMap<u64, Bytes>,
}

impl NodeKeys {
    /// Allows `key` under `fresh_id` unless it is already allowed; returns its id.
    pub(super) fn allow(
        &mut self,
        key: Bytes,
        fresh_id: impl FnOnce(&Self) -> u64,
        now: f64,
    ) -> u64 {
        if let Some(e) = self.by_key.get(&key) {
            return e.node_id;
        }
        let node_id = fresh_id(self);
        self.by_id.insert(node_id, key.clone());
        self.by_key.insert(
            key,
            KeyEntry {
                node_id,
                allowed_at: now,
                last_seen: None,
            },
        );
        node_id
    }

    pub(super) fn remove(&mut self, node_id: u64) -> Option<Bytes> {
        let key = self.by_id.remove(&node_id)?;
        self.by_key.remove(&key);
        Some(key)
    }

    pub(super) fn id_of(&self, key: &[u8]) -> Option<u64> {
        self.by_key.get(key).map(|e| e.node_id)
    }

    pub(super) fn has_id(&self, node_id: u64) -> bool {
        self.by_id.contains_key(&node_id)
    }

    pub(super) fn seen(&mut self, node_id: u64, now: f64) {
        if let Some(key) = self.by_id.get(&node_id)
            && let Some(e) = self.by_key.get_mut(key)
        {
            e.last_seen = Some(now);
        }
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = (&Bytes, &KeyEntry)> {
        self.by_key.iter()
    }
}
