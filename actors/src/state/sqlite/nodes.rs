//! Registered nodes with their leases, and the allow-list of node keys.
//!
//! Leases are stored with their `online_until`, so after a restart a node that does not
//! come back is swept as offline like any other. A node stored without one (a simulation's
//! virtual node, which only a database of schema 1 may hold) never expires, as in memory.

use super::{Inner, from_sql_id, set_counter, sql_id, storage, write};
use crate::state::nodes::Nodes;
use crate::state::rules;
use crate::state::{NodeLease, StateError};
use bytes::Bytes;
use floret_core::NodeInfo;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::HashSet;

/// The registry as stored, for the mirror.
pub(super) fn load(conn: &Connection) -> Result<Nodes, StateError> {
    let mut nodes = Nodes::default();
    let mut stmt = conn
        .prepare("SELECT node_id, heartbeat_interval, online_until FROM nodes")
        .map_err(storage)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<f64>>(1)?,
                r.get::<_, Option<f64>>(2)?,
            ))
        })
        .map_err(storage)?;
    let mut permanent = Vec::new();
    for row in rows {
        match row.map_err(storage)? {
            (id, Some(heartbeat_interval), Some(online_until)) => nodes.activate(
                from_sql_id(id),
                NodeLease {
                    heartbeat_interval,
                    online_until,
                },
            ),
            (id, _, _) => permanent.push(from_sql_id(id)),
        }
    }
    nodes.add_permanent(&permanent);
    Ok(nodes)
}

/// Stores a lease, registering the node if it is not.
fn save_lease(tx: &Transaction<'_>, node_id: u64, lease: NodeLease) -> Result<(), StateError> {
    tx.execute(
        "INSERT INTO nodes (node_id, heartbeat_interval, online_until) VALUES (?1, ?2, ?3)
         ON CONFLICT (node_id) DO UPDATE SET heartbeat_interval = ?2, online_until = ?3",
        params![
            sql_id(node_id),
            lease.heartbeat_interval,
            lease.online_until
        ],
    )
    .map_err(storage)?;
    Ok(())
}

impl Inner {
    fn key_has_id(&self, node_id: u64) -> Result<bool, StateError> {
        self.conn
            .query_row(
                "SELECT 1 FROM node_keys WHERE node_id = ?1",
                [sql_id(node_id)],
                |_| Ok(()),
            )
            .optional()
            .map(|hit| hit.is_some())
            .map_err(storage)
    }

    /// A random non-zero id used by no node and bound to no key: random like Flower's, so
    /// ids do not reveal how many nodes came before.
    fn fresh_node_id(&self) -> Result<u64, StateError> {
        loop {
            let id: u64 = rand::random();
            if id != 0 && !self.nodes.contains(id) && !self.key_has_id(id)? {
                return Ok(id);
            }
        }
    }

    pub(super) fn create_node(&mut self, lease: NodeLease) -> Result<u64, StateError> {
        let id = self.fresh_node_id()?;
        write(&mut self.conn, |tx| save_lease(tx, id, lease))?;
        self.nodes.activate(id, lease);
        Ok(id)
    }

    pub(super) fn renew_node(&mut self, node_id: u64, lease: NodeLease) -> Result<(), StateError> {
        if !self.nodes.contains(node_id) {
            return Err(StateError::UnknownNode(node_id));
        }
        // Nodes without a lease never expire; a heartbeat does not give them one.
        write(&mut self.conn, |tx| {
            tx.execute(
                "UPDATE nodes SET heartbeat_interval = ?2, online_until = ?3
                 WHERE node_id = ?1 AND online_until IS NOT NULL",
                params![
                    sql_id(node_id),
                    lease.heartbeat_interval,
                    lease.online_until
                ],
            )
            .map_err(storage)?;
            Ok(())
        })?;
        self.nodes.renew(node_id, lease)
    }

    pub(super) fn unregister_node(
        &mut self,
        node_id: u64,
        reason: &str,
        now: f64,
    ) -> Result<bool, StateError> {
        if !self.nodes.contains(node_id) {
            return Ok(false);
        }
        let gone = HashSet::from([node_id]);
        let (ids, runs) = write(&mut self.conn, |tx| {
            let mut ids = self.counters;
            let runs = super::messages::drop_nodes(tx, &mut ids, &gone, reason, now)?;
            set_counter(tx, "next_message", ids.next_message)?;
            Ok((ids, runs))
        })?;
        self.counters = ids;
        self.forget_nodes(&gone);
        self.wake_runs(&runs);
        Ok(true)
    }

    /// Takes nodes out of the mirror after their rows are gone, waking their deliverers.
    pub(super) fn forget_nodes(&mut self, gone: &HashSet<u64>) {
        for &node in gone {
            self.nodes.remove(node);
        }
    }

    pub(super) fn activate_node(
        &mut self,
        node_id: u64,
        lease: NodeLease,
    ) -> Result<(), StateError> {
        write(&mut self.conn, |tx| save_lease(tx, node_id, lease))?;
        self.nodes.activate(node_id, lease);
        Ok(())
    }

    pub(super) fn set_node_auth(&mut self, required: bool) -> Result<(), StateError> {
        write(&mut self.conn, |tx| {
            set_counter(tx, "node_auth", u64::from(required))
        })?;
        self.node_auth = required;
        Ok(())
    }

    pub(super) fn allow_node_key(&mut self, key: &[u8], now: f64) -> Result<u64, StateError> {
        if let Some(id) = self.node_id_of_key(key) {
            return Ok(id);
        }
        let id = self.fresh_node_id()?;
        write(&mut self.conn, |tx| {
            tx.execute(
                "INSERT INTO node_keys (public_key, node_id, allowed_at, last_seen)
                 VALUES (?1, ?2, ?3, NULL)",
                params![key, sql_id(id), now],
            )
            .map_err(storage)?;
            Ok(())
        })?;
        Ok(id)
    }

    pub(super) fn disallow_node(&mut self, node_id: u64) -> Result<Option<Bytes>, StateError> {
        write(&mut self.conn, |tx| {
            let key: Option<Vec<u8>> = tx
                .query_row(
                    "DELETE FROM node_keys WHERE node_id = ?1 RETURNING public_key",
                    [sql_id(node_id)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(storage)?;
            Ok(key.map(Bytes::from))
        })
    }

    /// Asked on every authenticated request; a read failure counts as "not allowed", the
    /// safe answer, and is logged.
    pub(super) fn node_id_of_key(&self, key: &[u8]) -> Option<u64> {
        let found = self
            .conn
            .prepare_cached("SELECT node_id FROM node_keys WHERE public_key = ?1")
            .and_then(|mut stmt| stmt.query_row([key], |r| r.get::<_, i64>(0)).optional());
        match found {
            Ok(id) => id.map(from_sql_id),
            Err(e) => {
                super::warn_failed("look up a node key", &storage(e));
                None
            }
        }
    }

    pub(super) fn node_seen(&mut self, node_id: u64, now: f64) -> Result<(), StateError> {
        write(&mut self.conn, |tx| {
            tx.execute(
                "UPDATE node_keys SET last_seen = ?2 WHERE node_id = ?1",
                params![sql_id(node_id), now],
            )
            .map_err(storage)?;
            Ok(())
        })
    }

    pub(super) fn nodes_info(&mut self) -> Result<Vec<NodeInfo>, StateError> {
        let mut keyed = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT public_key, node_id, allowed_at, last_seen FROM node_keys")
                .map_err(storage)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, f64>(2)?,
                        r.get::<_, Option<f64>>(3)?,
                    ))
                })
                .map_err(storage)?;
            for row in rows {
                let (key, id, allowed_at, last_seen) = row.map_err(storage)?;
                let node_id = from_sql_id(id);
                keyed.push(NodeInfo {
                    node_id,
                    public_key: Bytes::from(key),
                    online: self.nodes.is_alive(node_id),
                    registered_at: allowed_at,
                    last_seen,
                });
            }
        }
        Ok(rules::nodes_info(keyed, &self.nodes.registered()))
    }
}
