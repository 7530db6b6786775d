//! Object ids: the sha256 of an object's bytes, written as 64 lowercase hex digits on the
//! wire.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::fmt;
use thiserror::Error;

/// The sha256 of a chunk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ObjectId([u8; 32]);

/// A string that is not an object id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{shown:?} is not an object id (64 hex digits of a sha256)")]
pub(crate) struct ObjectIdError {
    shown: String,
}

impl ObjectId {
    /// The id of `data`.
    pub(crate) fn of(data: &[u8]) -> ObjectId {
        ObjectId(Sha256::digest(data).into())
    }

    /// The id of what was fed to `hasher`.
    pub(crate) fn from_hasher(hasher: Sha256) -> ObjectId {
        ObjectId(hasher.finalize().into())
    }

    pub(crate) fn parse(s: &str) -> Result<ObjectId, ObjectIdError> {
        let err = || ObjectIdError {
            shown: s.chars().take(80).collect(),
        };
        let raw = s.as_bytes();
        if raw.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
            let hi = hex_value(pair[0]).ok_or_else(err)?;
            let lo = hex_value(pair[1]).ok_or_else(err)?;
            *byte = (hi << 4) | lo;
        }
        Ok(ObjectId(out))
    }

    pub(crate) fn to_hex(self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(DIGITS[usize::from(b >> 4)]));
            s.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        s
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Twelve digits identify a chunk in logs; the full id is in `Display`.
        write!(f, "ObjectId({}…)", &self.to_hex()[..12])
    }
}

/// Below this many bytes, one thread hashes faster than several can be started.
const PARALLEL_MIN: usize = 8 * 1024 * 1024;

/// The ids of each buffer cut into chunks of `chunk_len` bytes, in order. Spreads the work
/// over the machine's cores: call it from a blocking thread (`spawn_blocking`), not a task.
pub(crate) fn hash_many(buffers: &[Bytes], chunk_len: usize) -> Vec<Vec<ObjectId>> {
    let chunks: Vec<(usize, &[u8])> = buffers
        .iter()
        .enumerate()
        .flat_map(|(i, b)| b.chunks(chunk_len.max(1)).map(move |c| (i, c)))
        .collect();
    let total: usize = buffers.iter().map(Bytes::len).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(chunks.len());
    let ids: Vec<ObjectId> = if threads <= 1 || total < PARALLEL_MIN {
        chunks.iter().map(|(_, c)| ObjectId::of(c)).collect()
    } else {
        let per_thread = chunks.len().div_ceil(threads);
        let hash_group = |group: &[(usize, &[u8])]| -> Vec<ObjectId> {
            group.iter().map(|(_, c)| ObjectId::of(c)).collect()
        };
        std::thread::scope(|scope| {
            let workers: Vec<_> = chunks
                .chunks(per_thread)
                .map(|group| (group, scope.spawn(move || hash_group(group))))
                .collect();
            workers
                .into_iter()
                // A hashing thread cannot panic short of memory exhaustion; if one does,
                // hash its share here rather than propagate the panic into the server.
                .flat_map(|(group, worker)| worker.join().unwrap_or_else(|_| hash_group(group)))
                .collect()
        })
    };
    let mut out = vec![Vec::new(); buffers.len()];
    for ((i, _), id) in chunks.iter().zip(ids) {
        out[*i].push(id);
    }
    out
}

/// The ids of `data` cut into chunks of `chunk_len` bytes (see [`hash_many`]).
#[cfg(test)]
pub(crate) fn hash_chunks(data: &Bytes, chunk_len: usize) -> Vec<ObjectId> {
    hash_many(std::slice::from_ref(data), chunk_len)
        .pop()
        .unwrap_or_default()
}

/// [`hash_many`] on tokio's blocking pool.
pub(crate) async fn hash_many_blocking(
    buffers: Vec<Bytes>,
    chunk_len: usize,
) -> Vec<Vec<ObjectId>> {
    let copy = buffers.clone();
    match tokio::task::spawn_blocking(move || hash_many(&copy, chunk_len)).await {
        Ok(ids) => ids,
        // The blocking pool is gone (runtime shutting down): hash on this thread.
        Err(_) => hash_many(&buffers, chunk_len),
    }
}

/// The ids of `data` cut into chunks, on tokio's blocking pool.
pub(crate) async fn hash_chunks_blocking(data: Bytes, chunk_len: usize) -> Vec<ObjectId> {
    hash_many_blocking(vec![data], chunk_len)
        .await
        .pop()
        .unwrap_or_default()
}

/// Whether `data` is the object `id`, checked on tokio's blocking pool for large data.
pub(crate) async fn verify_blocking(id: ObjectId, data: Bytes) -> Result<(), ObjectId> {
    let actual = if data.len() < 64 * 1024 {
        ObjectId::of(&data)
    } else {
        let copy = data.clone();
        tokio::task::spawn_blocking(move || ObjectId::of(&copy))
            .await
            .unwrap_or_else(|_| ObjectId::of(&data))
    };
    if actual == id { Ok(()) } else { Err(actual) }
}
