//! Instructions and replies.
//!
//! An instruction is one row from push to answer, in one of two states: queued, or
//! delivered by `pull_instructions` (put back by `redeliver`). `seq` is its place in its
//! node's queue and never changes: what a node pulled was at the head of its queue, so
//! putting it back with its old `seq` puts it back at the head, in order (the redelivery
//! order of `rules::requeue`). The row carries the few fields needed to answer in the node's place without
//! decoding the message. It is deleted when answered; a reply is deleted when taken.
//!
//! An instruction's payload lives in `contents`, keyed by the sha256 of its encoding and
//! shared by every instruction that carries the same bytes: a 100 MB model sent to 50
//! nodes is written once, not 50 times. A trigger releases it when the last instruction
//! referring to it goes. Replies differ per node and are stored whole.

use super::{Counters, Inner, from_sql_id, sealed, set_counter, sql_id, storage, write};
use crate::state::rules::{self, Inflight};
use crate::state::{StateError, Sweep};
use floret_core::{Message, MessageError, Metadata, Payload, RecordDict};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// Values of `instructions.state`. (Schema 1 also had 2, taken by a simulation's fleet;
/// migration 2 queued such rows again.)
const QUEUED: i64 = 0;
const DELIVERED: i64 = 1;

/// The columns `flight` reads, in its order.
const FLIGHT_COLUMNS: &str =
    "seq, message_id, run_id, dst_node_id, created_at, ttl, group_id, message_type";

impl Counters {
    fn message_id(&mut self, run_id: u64) -> String {
        self.next_message += 1;
        rules::message_id(run_id, self.lifetime, self.next_message)
    }
}

/// An instruction row as `FLIGHT_COLUMNS` selects it: its `seq`, id and flight.
fn flight(r: &Row<'_>) -> rusqlite::Result<(i64, String, Inflight)> {
    let md = Metadata {
        run_id: from_sql_id(r.get(2)?),
        dst_node_id: from_sql_id(r.get(3)?),
        created_at: r.get(4)?,
        ttl: r.get(5)?,
        group_id: r.get(6)?,
        message_type: r.get(7)?,
        ..Metadata::default()
    };
    Ok((r.get(0)?, r.get(1)?, Inflight::of(&md)))
}

fn insert_reply(tx: &Transaction<'_>, reply: &Message) -> Result<(), StateError> {
    let md = &reply.metadata;
    tx.prepare_cached("INSERT INTO replies (run_id, reply_to, message) VALUES (?1, ?2, ?3)")
        .and_then(|mut stmt| {
            stmt.execute(params![
                sql_id(md.run_id),
                md.reply_to_message_id,
                sealed::encode(sealed::MESSAGE, reply).map_err(to_sql_error)?
            ])
        })
        .map_err(storage)?;
    Ok(())
}

fn to_sql_error(e: StateError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Answers instruction `seq` in its node's place and deletes it; returns its run.
fn answer(
    tx: &Transaction<'_>,
    ids: &mut Counters,
    (seq, reply_to, flight): (i64, String, Inflight),
    error: MessageError,
    now: f64,
) -> Result<u64, StateError> {
    let id = ids.message_id(flight.run_id);
    insert_reply(tx, &rules::error_reply(&flight, reply_to, id, error, now))?;
    tx.execute("DELETE FROM instructions WHERE seq = ?1", [seq])
        .map_err(storage)?;
    Ok(flight.run_id)
}

/// Deletes `gone` nodes and answers everything sent to them with `NODE_UNAVAILABLE`;
/// returns the runs that got replies.
pub(super) fn drop_nodes(
    tx: &Transaction<'_>,
    ids: &mut Counters,
    gone: &HashSet<u64>,
    reason: &str,
    now: f64,
) -> Result<HashSet<u64>, StateError> {
    let mut runs = HashSet::new();
    for &node in gone {
        tx.execute("DELETE FROM nodes WHERE node_id = ?1", [sql_id(node)])
            .map_err(storage)?;
        let flights = select_flights(tx, "dst_node_id = ?1", sql_id(node))?;
        for f in flights {
            let error = rules::node_unavailable(node, reason);
            runs.insert(answer(tx, ids, f, error, now)?);
        }
    }
    Ok(runs)
}

/// Answers instructions whose TTL ended with `MESSAGE_TTL_EXPIRED`, whatever their state.
fn expire(
    tx: &Transaction<'_>,
    ids: &mut Counters,
    now: f64,
    runs: &mut HashSet<u64>,
) -> Result<usize, StateError> {
    let flights = select_flights(tx, "expires_at < ?1", now)?;
    let count = flights.len();
    for f in flights {
        let error = rules::ttl_expired(&f.2);
        runs.insert(answer(tx, ids, f, error, now)?);
    }
    Ok(count)
}

fn select_flights(
    tx: &Transaction<'_>,
    filter: &str,
    value: impl rusqlite::ToSql,
) -> Result<Vec<(i64, String, Inflight)>, StateError> {
    let sql = format!("SELECT {FLIGHT_COLUMNS} FROM instructions WHERE {filter} ORDER BY seq");
    let mut stmt = tx.prepare_cached(&sql).map_err(storage)?;
    let rows = stmt.query_map([value], flight).map_err(storage)?;
    rows.collect::<Result<_, _>>().map_err(storage)
}

/// Up to `limit` queued instructions of `node`, oldest first, marked delivered.
fn deliver_queued(
    tx: &Transaction<'_>,
    node: u64,
    limit: usize,
) -> Result<Vec<Message>, StateError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT i.seq, i.message, c.data FROM instructions i
                 JOIN contents c ON c.digest = i.content
             WHERE i.dst_node_id = ?1 AND i.state = ?2 ORDER BY i.seq LIMIT ?3",
        )
        .map_err(storage)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![sql_id(node), QUEUED, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(storage)?;
    let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = rows.collect::<Result<_, _>>().map_err(storage)?;
    let mut update = tx
        .prepare_cached("UPDATE instructions SET state = ?2 WHERE seq = ?1")
        .map_err(storage)?;
    let mut out = Vec::with_capacity(rows.len());
    for (seq, message, payload) in rows {
        let mut m: Message = sealed::decode(sealed::MESSAGE, &message)?;
        m.payload = sealed::decode(sealed::PAYLOAD, &payload)?;
        out.push(m);
        update.execute([seq, DELIVERED]).map_err(storage)?;
    }
    Ok(out)
}

/// The payloads one push stores, by digest.
#[derive(Default)]
struct Contents {
    /// The payload stored last and its digest: a broadcast's messages come one after the
    /// other with equal payloads, and comparing is cheaper than encoding and hashing.
    last: Option<(Payload, Vec<u8>)>,
}

impl Contents {
    /// Stores `payload` or counts one more reference to its stored copy; returns its digest.
    fn add(&mut self, tx: &Transaction<'_>, payload: Payload) -> Result<Vec<u8>, StateError> {
        if let Some((last, digest)) = &self.last
            && *last == payload
        {
            tx.prepare_cached("UPDATE contents SET refs = refs + 1 WHERE digest = ?1")
                .and_then(|mut stmt| stmt.execute([digest]))
                .map_err(storage)?;
            return Ok(digest.clone());
        }
        let data = sealed::encode(sealed::PAYLOAD, &payload)?;
        let digest = Sha256::digest(&data).to_vec();
        tx.prepare_cached(
            "INSERT INTO contents (digest, refs, data) VALUES (?1, 1, ?2)
             ON CONFLICT (digest) DO UPDATE SET refs = refs + 1",
        )
        .and_then(|mut stmt| stmt.execute(params![digest, data]))
        .map_err(storage)?;
        self.last = Some((payload, digest.clone()));
        Ok(digest)
    }
}

impl Inner {
    /// Wakes the ServerApps of runs that got replies.
    pub(super) fn wake_runs(&self, runs: &HashSet<u64>) {
        for run in runs {
            if let Some(entry) = self.runs.get(run) {
                entry.signals.replies.notify_waiters();
            }
        }
    }

    pub(super) fn sweep(&mut self, now: f64) -> Result<Sweep, StateError> {
        let offline = self.nodes.overdue(now);
        let gone: HashSet<u64> = offline.iter().copied().collect();
        let (ids, runs, expired) = write(&mut self.conn, |tx| {
            let mut ids = self.counters;
            let mut runs = drop_nodes(tx, &mut ids, &gone, rules::OFFLINE, now)?;
            let expired = expire(tx, &mut ids, now, &mut runs)?;
            set_counter(tx, "next_message", ids.next_message)?;
            Ok((ids, runs, expired))
        })?;
        self.counters = ids;
        self.forget_nodes(&gone);
        self.wake_runs(&runs);
        Ok(Sweep { offline, expired })
    }

    pub(super) fn push_instructions(
        &mut self,
        run_id: u64,
        messages: Vec<Message>,
        now: f64,
    ) -> Result<Vec<String>, StateError> {
        rules::check_can_send(run_id, self.run_entry(run_id)?.info.status)?;
        let nodes = &self.nodes;
        let (ids, out, queued_to, answered) = write(&mut self.conn, |tx| {
            let mut ids = self.counters;
            let mut out = Vec::with_capacity(messages.len());
            let mut queued_to = Vec::new();
            let mut answered = false;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO instructions (message_id, run_id, dst_node_id, state,
                         created_at, ttl, expires_at, group_id, message_type, message, content)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(storage)?;
            let mut contents = Contents::default();
            for mut m in messages {
                let id = ids.message_id(run_id);
                rules::stamp_instruction(&mut m.metadata, run_id, id.clone(), now);
                let md = &m.metadata;
                let dst = md.dst_node_id;
                out.push(id.clone());
                if !nodes.contains(dst) {
                    let flight = Inflight::of(md);
                    let reply_id = ids.message_id(run_id);
                    let error = rules::node_unavailable(dst, rules::NOT_CONNECTED);
                    insert_reply(tx, &rules::error_reply(&flight, id, reply_id, error, now))?;
                    answered = true;
                    continue;
                }
                let expires_at = rules::expires_at(md.created_at, md.ttl);
                let payload =
                    std::mem::replace(&mut m.payload, Payload::Content(RecordDict::new()));
                let digest = contents.add(tx, payload)?;
                let blob = sealed::encode(sealed::MESSAGE, &m)?;
                let md = &m.metadata;
                insert
                    .execute(params![
                        id,
                        sql_id(run_id),
                        sql_id(dst),
                        QUEUED,
                        md.created_at,
                        md.ttl,
                        expires_at,
                        md.group_id,
                        md.message_type,
                        blob,
                        digest
                    ])
                    .map_err(storage)?;
                queued_to.push(dst);
            }
            set_counter(tx, "next_message", ids.next_message)?;
            Ok((ids, out, queued_to, answered))
        })?;
        self.counters = ids;
        for dst in queued_to {
            self.nodes.notify(dst);
        }
        if answered {
            self.wake_runs(&HashSet::from([run_id]));
        }
        Ok(out)
    }

    pub(super) fn pull_instructions(
        &mut self,
        node_id: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StateError> {
        if !self.nodes.contains(node_id) {
            return Err(StateError::UnknownNode(node_id));
        }
        write(&mut self.conn, |tx| deliver_queued(tx, node_id, limit))
    }

    pub(super) fn redeliver(&mut self, node_id: u64) -> Result<usize, StateError> {
        if !self.nodes.contains(node_id) {
            return Err(StateError::UnknownNode(node_id));
        }
        let count = write(&mut self.conn, |tx| {
            tx.execute(
                "UPDATE instructions SET state = ?3 WHERE dst_node_id = ?1 AND state = ?2",
                params![sql_id(node_id), DELIVERED, QUEUED],
            )
            .map_err(storage)
        })?;
        if count > 0 {
            self.nodes.notify(node_id);
        }
        Ok(count)
    }

    pub(super) fn push_reply(&mut self, mut reply: Message, now: f64) -> Result<(), StateError> {
        let id = reply.metadata.reply_to_message_id.clone();
        let found: Option<(i64, i64)> = self
            .conn
            .query_row(
                "SELECT run_id, dst_node_id FROM instructions WHERE message_id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(storage)?;
        let Some((run_id, dst)) = found.map(|(r, d)| (from_sql_id(r), from_sql_id(d))) else {
            return Err(StateError::UnknownReply(id));
        };
        rules::check_replier(&id, reply.metadata.src_node_id, dst)?;
        self.run_entry(run_id)?;
        let ids = write(&mut self.conn, |tx| {
            let mut ids = self.counters;
            tx.execute("DELETE FROM instructions WHERE message_id = ?1", [&id])
                .map_err(storage)?;
            let reply_id = ids.message_id(run_id);
            rules::stamp_reply(&mut reply.metadata, run_id, reply_id, now);
            insert_reply(tx, &reply)?;
            set_counter(tx, "next_message", ids.next_message)?;
            Ok(ids)
        })?;
        self.counters = ids;
        self.wake_runs(&HashSet::from([run_id]));
        Ok(())
    }

    /// A run's replies not taken yet, oldest first, all or those answering `only`; removed.
    pub(super) fn take_replies(
        &mut self,
        run_id: u64,
        only: Option<&[String]>,
    ) -> Result<Vec<Message>, StateError> {
        self.run_entry(run_id)?;
        write(&mut self.conn, |tx| {
            let mut rows: Vec<(i64, Vec<u8>)> = Vec::new();
            let row = |r: &Row<'_>| Ok((r.get(0)?, r.get(1)?));
            match only {
                None => {
                    let mut stmt = tx
                        .prepare_cached(
                            "SELECT seq, message FROM replies WHERE run_id = ?1 ORDER BY seq",
                        )
                        .map_err(storage)?;
                    let found = stmt.query_map([sql_id(run_id)], row).map_err(storage)?;
                    rows = found.collect::<Result<_, _>>().map_err(storage)?;
                }
                Some(wanted) => {
                    let wanted: HashSet<&String> = wanted.iter().collect();
                    let mut stmt = tx
                        .prepare_cached(
                            "SELECT seq, message FROM replies WHERE run_id = ?1 AND reply_to = ?2",
                        )
                        .map_err(storage)?;
                    for reply_to in wanted {
                        let found = stmt
                            .query_map(params![sql_id(run_id), reply_to], row)
                            .map_err(storage)?;
                        for r in found {
                            rows.push(r.map_err(storage)?);
                        }
                    }
                    rows.sort_by_key(|(seq, _)| *seq);
                }
            }
            let mut delete = tx
                .prepare_cached("DELETE FROM replies WHERE seq = ?1")
                .map_err(storage)?;
            let mut out = Vec::with_capacity(rows.len());
            for (seq, blob) in rows {
                out.push(sealed::decode(sealed::MESSAGE, &blob)?);
                delete.execute([seq]).map_err(storage)?;
            }
            Ok(out)
        })
    }

    pub(super) fn purge_messages(&mut self, run_id: u64) -> Result<(), StateError> {
        write(&mut self.conn, |tx| {
            tx.execute(
                "DELETE FROM instructions WHERE run_id = ?1",
                [sql_id(run_id)],
            )
            .map_err(storage)?;
            tx.execute("DELETE FROM replies WHERE run_id = ?1", [sql_id(run_id)])
                .map_err(storage)?;
            Ok(())
        })
    }

    pub(super) fn held_messages(&self) -> Result<usize, StateError> {
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM instructions) + (SELECT COUNT(*) FROM replies)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(storage)
    }
}
