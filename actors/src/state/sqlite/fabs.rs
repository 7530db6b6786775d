//! Packed FABs by hash: runs of the same build share one copy.

use super::{Inner, storage, write};
use crate::state::{StateError, rules};
use bytes::Bytes;
use rusqlite::OptionalExtension;

impl Inner {
    pub(super) fn store_fab(&mut self, fab_hash: &str, packed: &[u8]) -> Result<(), StateError> {
        let hash = rules::fab_key(fab_hash);
        write(&mut self.conn, |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO fabs (fab_hash, packed) VALUES (?1, ?2)",
                rusqlite::params![hash, packed],
            )
            .map_err(storage)?;
            Ok(())
        })
    }

    pub(super) fn fab(&self, fab_hash: &str) -> Result<Option<Bytes>, StateError> {
        self.conn
            .query_row(
                "SELECT packed FROM fabs WHERE fab_hash = ?1",
                [rules::fab_key(fab_hash)],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map(|b| b.map(Bytes::from))
            .map_err(storage)
    }
}
