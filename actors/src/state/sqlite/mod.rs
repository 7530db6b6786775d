//! The SQLite `LinkState`: everything the SuperLink knows, in one database file, so a
//! SuperLink that is killed and restarted on the same file finds its runs, their logs and
//! checkpoints, its nodes and the messages between them where it left them.
//!
//! One connection behind a mutex: the trait is synchronous, every critical section is a
//! short transaction, and the lock is never held across an `.await` (there are none). What
//! cannot outlive the process stays in memory next to it: the per-run and per-node wake-ups. Runs and the node registry are also mirrored in
//! memory, written through after each commit, because `run_status` and `has_node` are asked
//! on every request; the file stays the source of truth at open.
//!
//! Every change runs in one transaction and touches the in-memory mirror only after the
//! commit, so a failed write (disk full, read-only file, I/O error) leaves the state as it
//! was and reports `StateError::Storage`. Messages are deleted once answered or taken, so
//! the file does not grow over a long run: freed pages are reused. The file is in
//! `auto_vacuum = INCREMENTAL` mode, and a deletion that frees a lot (a finished run's
//! checkpoint, runs past their retention) gives the pages back, so the file shrinks.

mod fabs;
mod messages;
mod nodes;
mod runs;
mod schema;
mod sealed;

use super::nodes::Nodes;
use super::{
    CheckpointStore, EventLog, FabStore, LinkState, MessageStore, NewRun, NodeKeyStore, NodeLease,
    NodeStore, RunInfo, RunSignals, RunStore, StateError, Sweep,
};
use bytes::Bytes;
use floret_core::{Message, NodeAuthority, NodeInfo, NodeSet, RunEvent, RunStatus, UserConfig};
use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::Notify;

/// How long a write waits for a lock held by another connection (a backup tool, the
/// `sqlite3` shell) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The bytes the write-ahead log keeps on disk after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Why a database file could not be opened. Each message names the file, the problem and
/// what to do; the file itself is never changed when it is refused.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The file is not empty and does not start with SQLite's header; refused before
    /// SQLite opens it, so not even a `-wal` file appears next to it.
    #[error(
        "{0} is not an SQLite database: pass a different --database, or move the file away \
         to start from a fresh state"
    )]
    NotSqlite(PathBuf),
    /// An SQLite database of another program: a foreign `PRAGMA application_id`, or none in
    /// a database that already holds tables. Floret never writes into it.
    #[error(
        "{path} is an SQLite database of another program (application id {application_id:#x}): \
         pass a different --database"
    )]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// The `application_id` found in the file's header.
        application_id: i32,
    },
    /// The file's schema is newer than this build knows; reading it could misread or
    /// lose what a newer Floret wrote.
    #[error(
        "{path} was written by a newer Floret (schema {found}, this build reads up to \
         {supported}): run a newer flower-superlink or pass a different --database"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The file's schema version (`PRAGMA user_version`).
        found: i64,
        /// The newest schema version this build reads (its number of migrations).
        supported: i64,
    },
    /// SQLite reports the file as damaged, or `PRAGMA quick_check` found problems.
    #[error(
        "{path} is corrupt ({detail}): restore it from a backup, or pass a different \
         --database to start from a fresh state"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported: the error, or `quick_check`'s findings joined by `; `.
        detail: String,
    },
    /// The file or its directory is not writable by this user. Refused at open rather
    /// than at the first write, where SQLite's read-only fallback would otherwise surface.
    #[error(
        "{0} cannot be written: make the file and its directory writable by this user, or \
         pass a different --database"
    )]
    ReadOnly(PathBuf),
    /// The file's parent directory does not exist; the file is created when missing, its
    /// directory never is.
    #[error("the directory of {0} does not exist: create it, or pass a different --database")]
    NoDirectory(PathBuf),
    /// A file at the current schema that lacks a table (or a column, index or trigger)
    /// the migrations create, say one dropped by hand; refused at open rather than
    /// failing every run at its first write.
    #[error(
        "{path} lacks the {missing} this build needs: restore the file from a backup, or \
         move it away to start from a fresh state"
    )]
    Incomplete {
        /// The database file.
        path: PathBuf,
        /// What is missing, e.g. `table checkpoints` or `column runs.resumes`.
        missing: String,
    },
    /// The file opened and passed its checks, but its rows could not be loaded into
    /// the in-memory mirror (runs and nodes).
    #[error(
        "cannot restore the state kept in {path} ({detail}): restore the file from a backup, \
         or pass a different --database to start from a fresh state"
    )]
    Restore {
        /// The database file.
        path: PathBuf,
        /// The `StateError` met while loading.
        detail: String,
    },
    /// The file exists but could not be read to check its header.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The database file.
        path: PathBuf,
        /// The I/O error from reading it.
        source: std::io::Error,
    },
    /// Any other SQLite error while opening, configuring or migrating the file.
    #[error("cannot open the database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error SQLite returned.
        source: rusqlite::Error,
    },
}

impl OpenError {
    /// Sorts an SQLite error met while opening into the variant that says what to do.
    fn from_sqlite(path: &Path, e: rusqlite::Error) -> OpenError {
        let path = path.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => OpenError::NotSqlite(path),
            Some(ErrorCode::DatabaseCorrupt) => OpenError::Corrupt {
                path,
                detail: e.to_string(),
            },
            _ if schema::is_permission(&e) => OpenError::ReadOnly(path),
            _ => OpenError::Sqlite { path, source: e },
        }
    }
}

/// A run as mirrored in memory.
struct RunEntry {
    info: RunInfo,
    /// Events in the run's log; the next event's index.
    events: usize,
    signals: Arc<RunSignals>,
}

/// What makes message ids unique across restarts: the counter, kept in the `counters`
/// table, and this opening's random tag (`rules::message_id`). Run ids are random and
/// need no counter; the `next_run_id` row of schema 1 is left unused.
#[derive(Clone, Copy, Default)]
struct Counters {
    next_message: u64,
    lifetime: u32,
}

struct Inner {
    conn: Connection,
    runs: HashMap<u64, RunEntry>,
    /// Registered nodes with their leases and wake-ups, as in the `nodes` table.
    nodes: Nodes,
    node_auth: bool,
    counters: Counters,
    /// The database's incarnation (`LinkState::incarnation`), made with the file.
    incarnation: u64,
}

/// See the module doc.
pub struct SqliteLinkState {
    inner: Mutex<Inner>,
}

impl SqliteLinkState {
    /// Opens the database at `path`, creating it if it does not exist, and restores the
    /// state it holds.
    ///
    /// WAL with `synchronous=NORMAL`: a commit is in the log before the call returns, so it
    /// survives the SuperLink being killed at any moment (the failure this file is for); a
    /// power cut may lose the last commits but never corrupts the file. `FULL` would add an
    /// fsync to every heartbeat of every node.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        schema::check_header(path)?;
        let exists = path.exists();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(OpenError::NoDirectory(path.to_path_buf()));
        }
        let flags = if exists {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| OpenError::from_sqlite(path, e))?;
        Self::setup(conn, path)
    }

    /// A database that lives as long as the value; for tests.
    pub fn open_in_memory() -> Result<Self, OpenError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| OpenError::from_sqlite(path, e))?;
        Self::setup(conn, path)
    }

    fn setup(mut conn: Connection, path: &Path) -> Result<Self, OpenError> {
        let sql = |e| OpenError::from_sqlite(path, e);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        // SQLite falls back to read-only when the file is; say so now, not at the first write.
        if conn.is_readonly("main").map_err(sql)? {
            return Err(OpenError::ReadOnly(path.to_path_buf()));
        }
        schema::check(&conn, path)?;
        let fresh: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(sql)?;
        if fresh == 0 {
            // Before the first table: a new file needs no VACUUM to take the mode.
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(sql)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql)?;
        // A round of large models passes through the write-ahead log; without a limit the
        // log keeps its largest size on disk for as long as the SuperLink runs.
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(sql)?;
        schema::migrate(&mut conn, path)?;
        schema::check_layout(&conn, path)?;
        schema::incremental_vacuum_mode(&conn, path)?;
        let restore = |e: StateError| OpenError::Restore {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let inner = Inner::load(conn).map_err(restore)?;
        Ok(SqliteLinkState {
            inner: Mutex::new(inner),
        })
    }

    /// Copies the write-ahead log into the database file and truncates it: for a tidy
    /// shutdown and for measuring the file's size.
    pub fn checkpoint_wal(&self) -> Result<(), StateError> {
        self.lock()
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(storage)
    }

    /// Caps the database file at about `bytes` (`--max-database-size`): a write that would
    /// grow it further fails as a full disk would, with [`FULL`] as its reason, so a
    /// SuperLink sharing its disk cannot fill it. SQLite counts pages, so the cap is rounded
    /// down to whole pages, and never set below the pages the file has now; returns the cap
    /// in bytes as set.
    pub fn limit_size(&self, bytes: u64) -> Result<u64, StateError> {
        let inner = self.lock();
        let page: i64 = inner
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(storage)?;
        let page = u64::try_from(page).unwrap_or(4096).max(512);
        let pages = i64::try_from(bytes / page).unwrap_or(i64::MAX).max(1);
        let set: i64 = inner
            .conn
            .pragma_update_and_check(None, "max_page_count", pages, |r| r.get(0))
            .map_err(storage)?;
        Ok(u64::try_from(set).unwrap_or(0) * page)
    }

    /// A poisoned lock means a panic mid-call elsewhere; an unfinished transaction was
    /// rolled back when it was dropped and the mirror is only touched after commits, so
    /// keep serving.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Reads the mirror and counters from a migrated database.
    fn load(conn: Connection) -> Result<Inner, StateError> {
        let counters = Counters {
            next_message: counter(&conn, "next_message")?,
            lifetime: rand::random(),
        };
        let incarnation = incarnation(&conn)?;
        let node_auth = counter(&conn, "node_auth")? != 0;
        let runs = runs::load(&conn)?;
        let nodes = nodes::load(&conn)?;
        Ok(Inner {
            conn,
            runs,
            nodes,
            node_auth,
            counters,
            incarnation,
        })
    }

    /// Gives the pages freed by a deletion back to the file system (the file is in
    /// `auto_vacuum = INCREMENTAL` mode), so the file shrinks instead of keeping its largest
    /// size. Only a warning when it fails: the pages stay free and are reused by later
    /// writes, nothing is lost.
    fn vacuum(&mut self) {
        let done = self
            .conn
            .prepare_cached("PRAGMA incremental_vacuum")
            .and_then(|mut stmt| {
                let mut rows = stmt.query([])?;
                while rows.next()?.is_some() {}
                Ok(())
            });
        if let Err(e) = done {
            warn_failed("give freed space back", &storage(e));
        }
    }

    fn run_entry(&self, run_id: u64) -> Result<&RunEntry, StateError> {
        self.runs.get(&run_id).ok_or(StateError::UnknownRun(run_id))
    }
}

/// Runs `f` in an immediate transaction and commits; nothing is kept if either fails.
fn write<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StateError>,
) -> Result<T, StateError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(storage)?;
    let out = f(&tx)?;
    tx.commit().map_err(storage)?;
    Ok(out)
}

/// A failed write as `StateError::Storage`. A full database (the disk, or
/// `--max-database-size`) says so and what to do, since that reason ends up as the reason
/// of the run that met it (`flwr ls`).
fn storage<E: std::fmt::Display + 'static>(e: E) -> StateError {
    let full = (&e as &dyn std::any::Any)
        .downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
        == Some(ErrorCode::DiskFull);
    if full {
        StateError::Storage(format!("{FULL} ({e})"))
    } else {
        StateError::Storage(e.to_string())
    }
}

/// What a write that found the database full reports.
pub(crate) const FULL: &str = "the state database is full: free disk space where it is \
     kept, or raise --max-database-size if it is set";

/// Ids use all 64 bits; SQLite integers are signed. Same bits, both ways.
fn sql_id(id: u64) -> i64 {
    id as i64
}

fn from_sql_id(id: i64) -> u64 {
    id as u64
}

fn counter(conn: &Connection, name: &str) -> Result<u64, StateError> {
    conn.query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
        r.get::<_, i64>(0)
    })
    .map(from_sql_id)
    .map_err(storage)
}

/// The database's incarnation, drawn and kept in the `counters` table the first time a
/// file is opened: a row rather than a migration, since nothing else changes. A file
/// reopened after a crash keeps it; a new or replaced file gets a new one.
fn incarnation(conn: &Connection) -> Result<u64, StateError> {
    conn.execute(
        "INSERT OR IGNORE INTO counters (name, value) VALUES ('incarnation', ?1)",
        [sql_id(super::rules::incarnation(rand::random))],
    )
    .map_err(storage)?;
    counter(conn, "incarnation")
}

fn set_counter(tx: &Transaction<'_>, name: &str, value: u64) -> Result<(), StateError> {
    tx.execute(
        "UPDATE counters SET value = ?2 WHERE name = ?1",
        rusqlite::params![name, sql_id(value)],
    )
    .map_err(storage)?;
    Ok(())
}

/// For the methods that cannot report a failure: say it and keep serving.
fn warn_failed(what: &str, e: &StateError) {
    tracing::warn!(error = %e, "the SuperLink's database refused to {what}; nothing changed");
}

impl RunStore for SqliteLinkState {
    fn create_run(&self, run: NewRun) -> Result<u64, StateError> {
        self.lock().create_run(run)
    }

    fn run(&self, run_id: u64) -> Option<RunInfo> {
        self.lock().runs.get(&run_id).map(|r| r.info.clone())
    }

    fn runs(&self) -> Vec<RunInfo> {
        let mut v: Vec<RunInfo> = self.lock().runs.values().map(|r| r.info.clone()).collect();
        super::rules::sort_for_listing(&mut v);
        v
    }

    fn run_status(&self, run_id: u64) -> Option<RunStatus> {
        self.lock().runs.get(&run_id).map(|r| r.info.status)
    }

    fn set_run_status(
        &self,
        run_id: u64,
        status: RunStatus,
        reason: &str,
    ) -> Result<RunInfo, StateError> {
        self.lock().set_run_status(run_id, status, reason)
    }

    fn signals(&self, run_id: u64) -> Result<Arc<RunSignals>, StateError> {
        Ok(self.lock().run_entry(run_id)?.signals.clone())
    }

    fn count_resume(&self, run_id: u64) -> Result<u32, StateError> {
        self.lock().count_resume(run_id)
    }

    fn federation_options(&self, run_id: u64) -> Result<UserConfig, StateError> {
        self.lock().federation_options(run_id)
    }

    fn clear_resumes(&self, run_id: u64) -> Result<(), StateError> {
        self.lock().clear_resumes(run_id)
    }

    fn delete_runs(&self, run_ids: &[u64]) -> Result<usize, StateError> {
        self.lock().delete_runs(run_ids)
    }
}

impl NodeStore for SqliteLinkState {
    fn create_node(&self, lease: NodeLease) -> Result<u64, StateError> {
        self.lock().create_node(lease)
    }

    fn renew_node(&self, node_id: u64, lease: NodeLease) -> Result<(), StateError> {
        self.lock().renew_node(node_id, lease)
    }

    fn activate_node(&self, node_id: u64, lease: NodeLease) -> Result<(), StateError> {
        self.lock().activate_node(node_id, lease)
    }

    fn unregister_node(&self, node_id: u64, reason: &str, now: f64) -> bool {
        match self.lock().unregister_node(node_id, reason, now) {
            Ok(done) => done,
            Err(e) => {
                warn_failed("unregister a node", &e);
                false
            }
        }
    }

    fn node_ids(&self) -> NodeSet {
        self.lock().nodes.set()
    }

    fn node_alive(&self, node_id: u64) -> Result<(), StateError> {
        self.lock().nodes.alive(node_id)
    }

    fn has_node(&self, node_id: u64) -> bool {
        self.lock().nodes.contains(node_id)
    }

    fn node_signal(&self, node_id: u64) -> Result<Arc<Notify>, StateError> {
        self.lock().nodes.signal(node_id)
    }

    fn sweep(&self, now: f64) -> Sweep {
        match self.lock().sweep(now) {
            Ok(sweep) => sweep,
            Err(e) => {
                warn_failed("sweep offline nodes and expired messages", &e);
                Sweep::default()
            }
        }
    }
}

impl MessageStore for SqliteLinkState {
    fn push_instructions(
        &self,
        run_id: u64,
        messages: Vec<Message>,
        now: f64,
    ) -> Result<Vec<String>, StateError> {
        self.lock().push_instructions(run_id, messages, now)
    }

    fn pull_instructions(&self, node_id: u64, limit: usize) -> Result<Vec<Message>, StateError> {
        self.lock().pull_instructions(node_id, limit)
    }

    fn redeliver(&self, node_id: u64) -> Result<usize, StateError> {
        self.lock().redeliver(node_id)
    }

    fn push_reply(&self, reply: Message, now: f64) -> Result<(), StateError> {
        self.lock().push_reply(reply, now)
    }

    fn take_replies(&self, run_id: u64) -> Result<Vec<Message>, StateError> {
        self.lock().take_replies(run_id, None)
    }

    fn take_replies_to(
        &self,
        run_id: u64,
        message_ids: &[String],
    ) -> Result<Vec<Message>, StateError> {
        self.lock().take_replies(run_id, Some(message_ids))
    }

    fn purge_messages(&self, run_id: u64) {
        if let Err(e) = self.lock().purge_messages(run_id) {
            warn_failed("purge a run's messages", &e);
        }
    }

    fn held_messages(&self) -> usize {
        match self.lock().held_messages() {
            Ok(n) => n,
            Err(e) => {
                warn_failed("count held messages", &e);
                0
            }
        }
    }
}

impl EventLog for SqliteLinkState {
    fn push_event(&self, run_id: u64, event: RunEvent) -> Result<(), StateError> {
        self.lock().push_event(run_id, event)
    }

    fn events(&self, run_id: u64, from: usize) -> Result<(Vec<RunEvent>, usize), StateError> {
        self.lock().events(run_id, from)
    }
}

impl FabStore for SqliteLinkState {
    fn store_fab(&self, fab_hash: &str, packed: Bytes) -> Result<(), StateError> {
        self.lock().store_fab(fab_hash, &packed)
    }

    fn fab(&self, fab_hash: &str) -> Option<Bytes> {
        match self.lock().fab(fab_hash) {
            Ok(fab) => fab,
            Err(e) => {
                warn_failed("read a FAB", &e);
                None
            }
        }
    }
}

impl NodeKeyStore for SqliteLinkState {
    fn set_node_auth(&self, required: bool) {
        if let Err(e) = self.lock().set_node_auth(required) {
            warn_failed("switch node authentication", &e);
        }
    }

    fn node_auth(&self) -> bool {
        self.lock().node_auth
    }

    fn allow_node_key(&self, public_key: Bytes, now: f64) -> Result<u64, StateError> {
        self.lock().allow_node_key(&public_key, now)
    }

    fn disallow_node(&self, node_id: u64) -> Option<Bytes> {
        match self.lock().disallow_node(node_id) {
            Ok(key) => key,
            Err(e) => {
                warn_failed("take a node key off the allow-list", &e);
                None
            }
        }
    }

    fn node_id_of_key(&self, public_key: &[u8]) -> Option<u64> {
        self.lock().node_id_of_key(public_key)
    }

    fn node_seen(&self, node_id: u64, now: f64) {
        if let Err(e) = self.lock().node_seen(node_id, now) {
            warn_failed("record a node's heartbeat", &e);
        }
    }

    fn nodes_info(&self) -> Vec<NodeInfo> {
        match self.lock().nodes_info() {
            Ok(info) => info,
            Err(e) => {
                warn_failed("list nodes", &e);
                Vec::new()
            }
        }
    }
}

impl CheckpointStore for SqliteLinkState {
    fn save_checkpoint(&self, run_id: u64, checkpoint: Bytes) -> Result<(), StateError> {
        self.lock().save_checkpoint(run_id, &checkpoint)
    }

    fn checkpoint(&self, run_id: u64) -> Result<Option<Bytes>, StateError> {
        self.lock().checkpoint(run_id)
    }

    fn drop_checkpoint(&self, run_id: u64) -> Result<(), StateError> {
        self.lock().drop_checkpoint(run_id)
    }
}

impl LinkState for SqliteLinkState {
    fn is_durable(&self) -> bool {
        true
    }

    fn incarnation(&self) -> u64 {
        self.lock().incarnation
    }
}

impl NodeAuthority for SqliteLinkState {
    fn admits(&self, public_key: &[u8]) -> bool {
        self.lock().node_id_of_key(public_key).is_some()
    }

    fn owns(&self, node_id: u64, public_key: &[u8]) -> bool {
        self.lock().node_id_of_key(public_key) == Some(node_id)
    }
}

#[cfg(test)]
mod tests;
