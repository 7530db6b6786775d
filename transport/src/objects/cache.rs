//! The receiving node's chunk cache: verified chunks by id.
//!
//! A transfer under way keeps its chunks in its arrays' buffers (see `assembly`). When it is
//! abandoned (the SuperLink stayed away longer than the client's patience), the chunks it
//! had fetched and checked come here, so that when the same data is sent again only the
//! rest is fetched; they leave when a batch that needed them has been assembled, or `ttl`
//! after they arrived, at the next transfer.

use super::id::ObjectId;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub(crate) struct ChunkCache {
    chunks: Mutex<HashMap<ObjectId, (Bytes, Instant)>>,
    ttl: Duration,
}

impl ChunkCache {
    pub(crate) fn new(ttl: Duration) -> ChunkCache {
        ChunkCache {
            chunks: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectId, (Bytes, Instant)>> {
        self.chunks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The chunks of `ids` held here, and the ids of those that are not (to be fetched).
    pub(crate) fn split(
        &self,
        ids: &HashSet<ObjectId>,
    ) -> (HashMap<ObjectId, Bytes>, Vec<ObjectId>) {
        let held = self.lock();
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            match held.get(&id) {
                Some((c, _)) => {
                    found.insert(id, c.clone());
                }
                None => missing.push(id),
            }
        }
        (found, missing)
    }

    pub(crate) fn insert(&self, id: ObjectId, data: Bytes) {
        self.lock().insert(id, (data, Instant::now()));
    }

    /// Drops chunks no longer needed.
    pub(crate) fn remove_all(&self, ids: impl IntoIterator<Item = ObjectId>) {
        let mut chunks = self.lock();
        for id in ids {
            chunks.remove(&id);
        }
    }

    /// Drops leftovers of abandoned transfers older than the ttl.
    pub(crate) fn expire(&self) {
        let now = Instant::now();
        let ttl = self.ttl;
        self.lock()
            .retain(|_, (_, at)| now.duration_since(*at) < ttl);
    }

    /// Number of chunks and their bytes.
    pub(crate) fn size(&self) -> (usize, usize) {
        let chunks = self.lock();
        (chunks.len(), chunks.values().map(|(b, _)| b.len()).sum())
    }
}
