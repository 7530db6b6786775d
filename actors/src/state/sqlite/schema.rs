//! The database layout and how a file is recognised, checked and brought up to date.
//!
//! `PRAGMA application_id` marks a file as Floret's, so a SuperLink pointed at some other
//! program's database refuses it instead of adding tables to it. `PRAGMA user_version` is
//! the number of migrations applied; each migration runs in its own transaction together
//! with the version bump, so a crash mid-upgrade leaves the file at the previous version.
//! Every check happens before the first write: a file that is refused is left untouched.

use super::OpenError;
use rusqlite::{Connection, ErrorCode};
use std::path::Path;

/// "FLRT" as a big-endian 32-bit integer, the value `PRAGMA application_id` holds.
pub(super) const APPLICATION_ID: i32 = 0x464C_5254;

/// The first bytes of every SQLite 3 file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Migrations in order; migration `i` moves the schema from version `i` to `i + 1`. Append
/// only: a released migration never changes, or databases written by it would differ.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the first layout. Node and run ids are stored as the i64 with the same bits,
    // because random node ids use all 64 bits.
    "
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO counters (name, value) VALUES ('next_run_id', 0), ('next_message', 0),
        ('node_auth', 0);

    CREATE TABLE runs (
        run_id INTEGER PRIMARY KEY,
        info   BLOB NOT NULL
    );
    CREATE TABLE events (
        run_id INTEGER NOT NULL REFERENCES runs (run_id),
        idx    INTEGER NOT NULL,
        event  BLOB NOT NULL,
        PRIMARY KEY (run_id, idx)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoints (
        run_id INTEGER PRIMARY KEY REFERENCES runs (run_id),
        data   BLOB NOT NULL
    );
    CREATE TABLE fabs (
        fab_hash TEXT PRIMARY KEY,
        packed   BLOB NOT NULL
    );

    CREATE TABLE nodes (
        node_id            INTEGER PRIMARY KEY,
        heartbeat_interval REAL,
        online_until       REAL
    );
    CREATE TABLE node_keys (
        public_key BLOB PRIMARY KEY,
        node_id    INTEGER NOT NULL UNIQUE,
        allowed_at REAL NOT NULL,
        last_seen  REAL
    );

    CREATE TABLE instructions (
        seq          INTEGER PRIMARY KEY,
        message_id   TEXT NOT NULL UNIQUE,
        run_id       INTEGER NOT NULL REFERENCES runs (run_id),
        dst_node_id  INTEGER NOT NULL,
        state        INTEGER NOT NULL,
        created_at   REAL NOT NULL,
        ttl          REAL NOT NULL,
        expires_at   REAL,
        group_id     TEXT NOT NULL,
        message_type TEXT NOT NULL,
        message      BLOB NOT NULL,
        content      BLOB NOT NULL REFERENCES contents (digest)
    );
    -- An instruction's payload, stored once however many nodes it goes to (a broadcast
    -- model is the same bytes for every node), found by the sha256 of its encoding and
    -- counted by the instructions that refer to it.
    CREATE TABLE contents (
        digest BLOB PRIMARY KEY,
        refs   INTEGER NOT NULL,
        data   BLOB NOT NULL
    );
    -- Every way an instruction goes (answered, expired, purged, its node dropped) releases
    -- its payload here, so none is forgotten.
    CREATE TRIGGER instructions_release_content AFTER DELETE ON instructions BEGIN
        UPDATE contents SET refs = refs - 1 WHERE digest = OLD.content;
        DELETE FROM contents WHERE digest = OLD.content AND refs <= 0;
    END;
    CREATE INDEX instructions_by_node ON instructions (dst_node_id, state, seq);
    CREATE INDEX instructions_by_run ON instructions (run_id);
    CREATE INDEX instructions_by_expiry ON instructions (expires_at) WHERE expires_at IS NOT NULL;
    -- A node's turn in `pull_any_instructions`: a row exactly while it has queued work,
    -- numbered when its queue became non-empty, kept while it is served in part.
    CREATE TABLE turns (
        turn    INTEGER PRIMARY KEY AUTOINCREMENT,
        node_id INTEGER NOT NULL UNIQUE
    );

    CREATE TABLE replies (
        seq      INTEGER PRIMARY KEY,
        run_id   INTEGER NOT NULL REFERENCES runs (run_id),
        reply_to TEXT NOT NULL,
        message  BLOB NOT NULL
    );
    CREATE INDEX replies_by_run ON replies (run_id, reply_to);
    ",
    // 2: no `turns`. It ordered nodes for the virtual fleet of a simulation, which runs on
    // the in-memory store only; every push kept it up to date for nothing. Instructions a
    // fleet had taken (state 2) lost their taker with its process: they are queued again,
    // as the open of schema 1 did on every start.
    "
    UPDATE instructions SET state = 0 WHERE state = 2;
    DROP TABLE turns;
    ",
    // 3: how often each run was resumed by a restarted SuperLink since it last left one
    // cleanly, so that a run whose ServerApp crashes the SuperLink is failed after a few
    // resumes instead of crashing every start. Runs of older files start at 0.
    "
    ALTER TABLE runs ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;
    ",
    // 4: each run's `federation_options` (sealed, NULL when empty), so that a
    // `--simulation` SuperLink builds a resumed run's virtual fleet again.
    "
    ALTER TABLE runs ADD COLUMN federation_options BLOB;
    ",
];

/// The schema version this build writes and the newest it reads.
pub(super) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Refuses a non-empty file that is not SQLite before SQLite ever opens it, so not even a
/// `-wal` file appears next to it.
pub(super) fn check_header(path: &Path) -> Result<(), OpenError> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(OpenError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    let mut head = Vec::with_capacity(16);
    file.by_ref()
        .take(16)
        .read_to_end(&mut head)
        .map_err(|e| OpenError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
    if head.is_empty() || head.as_slice() == SQLITE_HEADER {
        Ok(())
    } else {
        Err(OpenError::NotSqlite(path.to_path_buf()))
    }
}

/// Checks that the open file is Floret's (or empty), not newer than this build and intact.
/// Reads only.
pub(super) fn check(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let sql = |e| OpenError::from_sqlite(path, e);
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(sql)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    let objects: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(sql)?;
    if app_id != APPLICATION_ID && (app_id != 0 || objects > 0 || version != 0) {
        return Err(OpenError::Foreign {
            path: path.to_path_buf(),
            application_id: app_id,
        });
    }
    if version > LATEST {
        return Err(OpenError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: LATEST,
        });
    }
    let verdict: Vec<String> = {
        let mut stmt = conn.prepare("PRAGMA quick_check").map_err(sql)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)?
    };
    if verdict != ["ok"] {
        return Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            detail: verdict.join("; "),
        });
    }
    Ok(())
}

/// Applies the migrations the file has not seen yet, each in one transaction.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let sql = |e| OpenError::from_sqlite(path, e);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    let start = usize::try_from(version).unwrap_or(0);
    for (done, migration) in MIGRATIONS.iter().enumerate().skip(start) {
        let tx = conn.transaction().map_err(sql)?;
        tx.execute_batch(migration).map_err(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sql)?;
        tx.pragma_update(None, "user_version", done as i64 + 1)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    Ok(())
}

/// The tables (with their columns), indexes and triggers a file has, each described as
/// the error names it: `table runs`, `column runs.resumes`, `index replies_by_run`,
/// `trigger instructions_release_content`. SQLite's own objects are left out.
fn layout(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let objects: Vec<(String, String)> = {
        let mut stmt = conn.prepare(
            "SELECT type, name FROM sqlite_schema
             WHERE type IN ('table', 'index', 'trigger') AND name NOT LIKE 'sqlite%'
             ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, name",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut described = Vec::new();
    for (kind, name) in objects {
        described.push(format!("{kind} {name}"));
        if kind == "table" {
            let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
            let columns = stmt.query_map([&name], |r| r.get::<_, String>(0))?;
            for column in columns {
                described.push(format!("column {name}.{}", column?));
            }
        }
    }
    Ok(described)
}

/// Refuses a migrated file that lacks a table, column, index or trigger the migrations
/// create, before anything is served from it: otherwise it opens and every run then fails
/// at its first write. The expected layout is the one the migrations give a fresh
/// database, so it never needs a list kept by hand. Reads only; a file at the latest
/// schema that is refused here is left as it was.
pub(super) fn check_layout(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let sql = |e| OpenError::from_sqlite(path, e);
    let mut fresh = Connection::open_in_memory().map_err(sql)?;
    let tx = fresh.transaction().map_err(sql)?;
    for migration in MIGRATIONS {
        tx.execute_batch(migration).map_err(sql)?;
    }
    tx.commit().map_err(sql)?;
    let expected = layout(&fresh).map_err(sql)?;
    let found = layout(conn).map_err(sql)?;
    match expected.into_iter().find(|e| !found.contains(e)) {
        Some(missing) => Err(OpenError::Incomplete {
            path: path.to_path_buf(),
            missing,
        }),
        None => Ok(()),
    }
}

/// `PRAGMA auto_vacuum` of a file that gives freed pages back on `incremental_vacuum`.
const INCREMENTAL: i64 = 2;

/// Puts a file written before auto-vacuum was used (or by another tool) in
/// `auto_vacuum = INCREMENTAL` mode, so that deleting finished runs shrinks it. A file
/// with tables changes mode only through a one-time `VACUUM`, which rewrites it and
/// needs up to its size again in free disk space for a moment; without that room the file
/// stays as it is (a warning says so) and is tried again at the next start, since freed
/// pages are still reused.
pub(super) fn incremental_vacuum_mode(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let sql = |e| OpenError::from_sqlite(path, e);
    let mode: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .map_err(sql)?;
    if mode == INCREMENTAL {
        return Ok(());
    }
    conn.pragma_update(None, "auto_vacuum", INCREMENTAL)
        .map_err(sql)?;
    tracing::info!(
        "switching {} to incremental vacuum (a one-time rewrite), so the file shrinks when \
         finished runs are deleted",
        path.display()
    );
    if let Err(e) = conn.execute_batch("VACUUM") {
        tracing::warn!(
            "could not rewrite {} for incremental vacuum ({e}); it keeps working, but does \
             not shrink until a start with free disk space for a copy of it",
            path.display()
        );
    }
    Ok(())
}

/// Whether an SQLite error says the file cannot be written or opened for lack of rights.
pub(super) fn is_permission(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied)
    )
}

#[cfg(test)]
mod tests {
    use super::super::{SqliteLinkState, sealed};
    use super::*;
    use crate::state::prelude::*;
    use crate::state::{NewRun, rules};
    use floret_core::{Message, Payload, RecordDict, RunEvent, RunStatus, error_code};
    use rusqlite::params;

    /// Writes a database as a build of schema 1 left it: the `turns` table, a leased node
    /// (5) and a simulation's virtual node without a lease (7), a running run with one
    /// event, an instruction queued to 5, one delivered to 5, one a virtual fleet had taken
    /// (state 2) for 7, and a reply not taken yet. Rows are written with the encodings the
    /// store uses, through schema 1's statements only.
    fn schema_1_database(path: &Path) {
        let mut conn = Connection::open(path).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        let mut info = rules::new_run(1, NewRun::default(), 1.0);
        info.status = RunStatus::Running;
        tx.execute(
            "INSERT INTO runs (run_id, info) VALUES (1, ?1)",
            [sealed::encode(sealed::RUN, &info).unwrap()],
        )
        .unwrap();
        let event = sealed::encode(sealed::EVENT, &RunEvent::Log("one".into())).unwrap();
        tx.execute(
            "INSERT INTO events (run_id, idx, event) VALUES (1, 0, ?1)",
            [event],
        )
        .unwrap();
        tx.execute_batch(
            "UPDATE counters SET value = 1 WHERE name = 'next_run_id';
             UPDATE counters SET value = 4 WHERE name = 'next_message';
             INSERT INTO nodes VALUES (5, 10.0, 1000.0), (7, NULL, NULL);",
        )
        .unwrap();
        let empty = Payload::Content(RecordDict::new());
        tx.execute(
            "INSERT INTO contents (digest, refs, data) VALUES (x'00', 3, ?1)",
            [sealed::encode(sealed::PAYLOAD, &empty).unwrap()],
        )
        .unwrap();
        for (seq, node, state, kind) in [(1, 5, 0, "a"), (2, 7, 2, "b"), (3, 5, 1, "c")] {
            // Ids as schema 1 wrote them: run and counter.
            let id = format!("1-{seq:x}");
            let mut m = Message::new(RecordDict::new(), node, kind);
            rules::stamp_instruction(&mut m.metadata, 1, id.clone(), 10.0);
            let md = &m.metadata;
            tx.execute(
                "INSERT INTO instructions (seq, message_id, run_id, dst_node_id, state,
                     created_at, ttl, expires_at, group_id, message_type, message, content)
                 VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, '', ?8, ?9, x'00')",
                params![
                    seq as i64,
                    id,
                    node as i64,
                    state,
                    md.created_at,
                    md.ttl,
                    rules::expires_at(md.created_at, md.ttl),
                    kind,
                    sealed::encode(sealed::MESSAGE, &m).unwrap()
                ],
            )
            .unwrap();
        }
        tx.execute("INSERT INTO turns (node_id) VALUES (7)", [])
            .unwrap();
        let mut answered = Message::new(RecordDict::new(), 5, "z");
        rules::stamp_instruction(&mut answered.metadata, 1, "1-0".into(), 9.0);
        let mut reply = answered.reply(empty);
        rules::stamp_reply(&mut reply.metadata, 1, "1-4".into(), 9.5);
        tx.execute(
            "INSERT INTO replies (run_id, reply_to, message) VALUES (1, ?1, ?2)",
            params![
                reply.metadata.reply_to_message_id,
                sealed::encode(sealed::MESSAGE, &reply).unwrap()
            ],
        )
        .unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn a_database_missing_a_column_or_trigger_is_named_at_open() {
        let dir = tempfile::tempdir().unwrap();
        for (damage, missing) in [
            (
                "ALTER TABLE runs DROP COLUMN resumes",
                "column runs.resumes",
            ),
            (
                "DROP TRIGGER instructions_release_content",
                "trigger instructions_release_content",
            ),
        ] {
            let path = dir.path().join(format!("{}.db", missing.replace(' ', "_")));
            drop(SqliteLinkState::open(&path).unwrap());
            Connection::open(&path)
                .unwrap()
                .execute_batch(damage)
                .unwrap();
            match SqliteLinkState::open(&path) {
                Err(OpenError::Incomplete { missing: m, .. }) => assert_eq!(m, missing),
                Err(e) => panic!("{missing}: {e}"),
                Ok(_) => panic!("{missing}: opened"),
            }
        }
    }

    fn types(msgs: &[Message]) -> Vec<&str> {
        msgs.iter()
            .map(|m| m.metadata.message_type.as_str())
            .collect()
    }

    #[test]
    fn a_schema_1_database_opens_without_turns_and_keeps_its_runs_and_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        schema_1_database(&path);

        let s = SqliteLinkState::open(&path).unwrap();
        {
            let inner = s.lock();
            let version: i64 = inner
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(version, LATEST);
            let turns: i64 = inner
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'turns'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(turns, 0, "the table is gone");
        }
        assert_eq!(s.run_status(1), Some(RunStatus::Running));
        assert_eq!(
            s.events(1, 0).unwrap(),
            (vec![RunEvent::Log("one".into())], 1)
        );
        assert_eq!(s.held_messages(), 4, "three instructions and a reply");
        assert_eq!(
            types(&s.pull_instructions(7, 10).unwrap()),
            ["b"],
            "what a fleet took is queued again"
        );
        assert_eq!(s.redeliver(5), Ok(1), "the delivery is remembered");
        assert_eq!(types(&s.pull_instructions(5, 10).unwrap()), ["a", "c"]);
        let replies = s.take_replies(1).unwrap();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].metadata.reply_to_message_id, "1-0");

        let fresh = s
            .push_instructions(1, vec![Message::new(RecordDict::new(), 7, "d")], 20.0)
            .unwrap();
        assert!(
            fresh[0].starts_with("1-") && fresh[0].ends_with("-5"),
            "message ids continue: {fresh:?}"
        );
        assert_eq!(
            s.count_resume(1),
            Ok(1),
            "an old run starts with no resumes"
        );
        let run = s.create_run(NewRun::default()).unwrap();
        assert!(
            run != 0 && run != 1,
            "a new run id is neither none nor taken: {run}"
        );
        let sweep = s.sweep(2000.0);
        assert_eq!(sweep.offline, vec![5], "the virtual node never expires");
        let errors = s.take_replies(1).unwrap();
        assert_eq!(errors.len(), 2, "both instructions out to node 5");
        assert!(
            errors
                .iter()
                .all(|r| r.error().map(|e| e.code) == Some(error_code::NODE_UNAVAILABLE))
        );
    }
}
