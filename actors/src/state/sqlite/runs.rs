//! Runs, their event logs and their checkpoints.

use super::{Inner, RunEntry, from_sql_id, sealed, sql_id, storage, write};
use crate::state::rules::{self, RunIds};
use crate::state::{NewRun, RunInfo, StateError, unix_now};
use bytes::Bytes;
use floret_core::{RunEvent, RunStatus, UserConfig};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::sync::Arc;

/// Every run with the length of its log, for the mirror.
pub(super) fn load(conn: &Connection) -> Result<HashMap<u64, RunEntry>, StateError> {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT run_id, COUNT(*) FROM events GROUP BY run_id")
        .map_err(storage)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .map_err(storage)?;
    for row in rows {
        let (run_id, n) = row.map_err(storage)?;
        counts.insert(from_sql_id(run_id), usize::try_from(n).unwrap_or(0));
    }
    let mut runs = HashMap::new();
    let mut stmt = conn.prepare("SELECT info FROM runs").map_err(storage)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .map_err(storage)?;
    for row in rows {
        let info: RunInfo = sealed::decode(sealed::RUN, &row.map_err(storage)?)?;
        let events = counts.get(&info.run_id).copied().unwrap_or(0);
        runs.insert(
            info.run_id,
            RunEntry {
                info,
                events,
                signals: Arc::default(),
            },
        );
    }
    Ok(runs)
}

/// An upsert rather than `INSERT OR REPLACE`, which deletes the row first and so would set
/// the run's other columns (its resume count) back to their defaults.
fn save_info(tx: &rusqlite::Transaction<'_>, info: &RunInfo) -> Result<(), StateError> {
    tx.execute(
        "INSERT INTO runs (run_id, info) VALUES (?1, ?2)
         ON CONFLICT (run_id) DO UPDATE SET info = excluded.info",
        params![sql_id(info.run_id), sealed::encode(sealed::RUN, info)?],
    )
    .map_err(storage)?;
    Ok(())
}

impl Inner {
    pub(super) fn create_run(&mut self, run: NewRun) -> Result<u64, StateError> {
        let run_id = rules::new_run_id(RunIds::Random, 0, rand::random, |id| {
            self.runs.contains_key(&id)
        });
        let options = (!run.federation_options.is_empty())
            .then(|| sealed::encode(sealed::RUN_OPTIONS, &run.federation_options))
            .transpose()?;
        let info = rules::new_run(run_id, run, unix_now());
        write(&mut self.conn, |tx| {
            save_info(tx, &info)?;
            if let Some(options) = &options {
                tx.execute(
                    "UPDATE runs SET federation_options = ?2 WHERE run_id = ?1",
                    params![sql_id(run_id), options],
                )
                .map_err(storage)?;
            }
            Ok(())
        })?;
        self.runs.insert(
            run_id,
            RunEntry {
                info,
                events: 0,
                signals: Arc::default(),
            },
        );
        Ok(run_id)
    }

    pub(super) fn set_run_status(
        &mut self,
        run_id: u64,
        status: RunStatus,
        reason: &str,
    ) -> Result<RunInfo, StateError> {
        let mut info = self.run_entry(run_id)?.info.clone();
        rules::set_status(&mut info, status, reason, unix_now())?;
        write(&mut self.conn, |tx| save_info(tx, &info))?;
        let entry = self
            .runs
            .get_mut(&run_id)
            .ok_or(StateError::UnknownRun(run_id))?;
        entry.info = info.clone();
        // Whoever waits on replies or events must see that the run ended.
        entry.signals.replies.notify_waiters();
        entry.signals.events.notify_waiters();
        Ok(info)
    }

    pub(super) fn count_resume(&mut self, run_id: u64) -> Result<u32, StateError> {
        self.run_entry(run_id)?;
        let count: i64 = write(&mut self.conn, |tx| {
            tx.query_row(
                "UPDATE runs SET resumes = resumes + 1 WHERE run_id = ?1 RETURNING resumes",
                [sql_id(run_id)],
                |r| r.get(0),
            )
            .map_err(storage)
        })?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    pub(super) fn federation_options(&self, run_id: u64) -> Result<UserConfig, StateError> {
        self.run_entry(run_id)?;
        let blob: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT federation_options FROM runs WHERE run_id = ?1",
                [sql_id(run_id)],
                |r| r.get(0),
            )
            .map_err(storage)?;
        match blob {
            Some(blob) => sealed::decode(sealed::RUN_OPTIONS, &blob),
            None => Ok(UserConfig::new()),
        }
    }

    pub(super) fn clear_resumes(&mut self, run_id: u64) -> Result<(), StateError> {
        self.run_entry(run_id)?;
        write(&mut self.conn, |tx| {
            tx.execute(
                "UPDATE runs SET resumes = 0 WHERE run_id = ?1",
                [sql_id(run_id)],
            )
            .map_err(storage)?;
            Ok(())
        })
    }

    /// The run, if its log is still open.
    fn open_run(&self, run_id: u64) -> Result<&RunEntry, StateError> {
        let entry = self.run_entry(run_id)?;
        rules::check_open(run_id, entry.info.status)?;
        Ok(entry)
    }

    pub(super) fn push_event(&mut self, run_id: u64, event: RunEvent) -> Result<(), StateError> {
        let idx = self.open_run(run_id)?.events;
        let blob = sealed::encode(sealed::EVENT, &event)?;
        write(&mut self.conn, |tx| {
            tx.execute(
                "INSERT INTO events (run_id, idx, event) VALUES (?1, ?2, ?3)",
                params![sql_id(run_id), idx as i64, blob],
            )
            .map_err(storage)?;
            Ok(())
        })?;
        if let Some(entry) = self.runs.get_mut(&run_id) {
            entry.events = idx + 1;
            entry.signals.events.notify_waiters();
        }
        Ok(())
    }

    pub(super) fn events(
        &self,
        run_id: u64,
        from: usize,
    ) -> Result<(Vec<RunEvent>, usize), StateError> {
        let len = self.run_entry(run_id)?.events;
        if from >= len {
            return Ok((Vec::new(), len));
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT event FROM events WHERE run_id = ?1 AND idx >= ?2 ORDER BY idx")
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![sql_id(run_id), from as i64], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .map_err(storage)?;
        let mut out = Vec::with_capacity(len - from);
        for row in rows {
            out.push(sealed::decode(sealed::EVENT, &row.map_err(storage)?)?);
        }
        Ok((out, len))
    }

    /// The bytes are the ServerApp's own format, so only the envelope is added. `INSERT OR
    /// REPLACE` in one transaction is the atomic swap the trait asks for.
    pub(super) fn save_checkpoint(&mut self, run_id: u64, data: &[u8]) -> Result<(), StateError> {
        self.open_run(run_id)?;
        write(&mut self.conn, |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO checkpoints (run_id, data) VALUES (?1, ?2)",
                params![sql_id(run_id), sealed::seal_raw(sealed::CHECKPOINT, data)],
            )
            .map_err(storage)?;
            Ok(())
        })
    }

    pub(super) fn checkpoint(&self, run_id: u64) -> Result<Option<Bytes>, StateError> {
        self.run_entry(run_id)?;
        self.conn
            .query_row(
                "SELECT data FROM checkpoints WHERE run_id = ?1",
                [sql_id(run_id)],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map_err(storage)?
            .map(|blob| {
                // The body is the tail of the blob: share it rather than copy it.
                let start = blob.len() - sealed::open_raw(sealed::CHECKPOINT, &blob)?.len();
                Ok(Bytes::from(blob).slice(start..))
            })
            .transpose()
    }
}

impl Inner {
    /// Deletes the finished runs among `run_ids` and what is kept for them, in one
    /// transaction, children before the run (the foreign keys ask for it), and the FABs no
    /// run left refers to; then gives the freed pages back (`vacuum`).
    pub(super) fn delete_runs(&mut self, run_ids: &[u64]) -> Result<usize, StateError> {
        let doomed: Vec<u64> = run_ids
            .iter()
            .copied()
            .filter(|id| {
                self.runs
                    .get(id)
                    .is_some_and(|r| r.info.status.is_finished())
            })
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let kept_fabs: std::collections::HashSet<String> = self
            .runs
            .iter()
            .filter(|(id, _)| !doomed.contains(id))
            .map(|(_, r)| rules::fab_key(&r.info.app.fab_hash))
            .collect();
        let orphans: Vec<String> = doomed
            .iter()
            .filter_map(|id| self.runs.get(id))
            .map(|r| rules::fab_key(&r.info.app.fab_hash))
            .filter(|key| !key.is_empty() && !kept_fabs.contains(key))
            .collect();
        write(&mut self.conn, |tx| {
            for id in &doomed {
                for table in ["events", "checkpoints", "instructions", "replies", "runs"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE run_id = ?1"),
                        [sql_id(*id)],
                    )
                    .map_err(storage)?;
                }
            }
            for key in &orphans {
                tx.execute("DELETE FROM fabs WHERE fab_hash = ?1", [key])
                    .map_err(storage)?;
            }
            Ok(())
        })?;
        for id in &doomed {
            if let Some(entry) = self.runs.remove(id) {
                // Whoever still follows the run sees it gone rather than waiting on.
                entry.signals.events.notify_waiters();
                entry.signals.replies.notify_waiters();
            }
        }
        self.vacuum();
        Ok(doomed.len())
    }

    pub(super) fn drop_checkpoint(&mut self, run_id: u64) -> Result<(), StateError> {
        if !self.run_entry(run_id)?.info.status.is_finished() {
            return Ok(());
        }
        let dropped = write(&mut self.conn, |tx| {
            tx.execute(
                "DELETE FROM checkpoints WHERE run_id = ?1",
                [sql_id(run_id)],
            )
            .map_err(storage)
        })?;
        if dropped > 0 {
            self.vacuum();
        }
        Ok(())
    }
}
