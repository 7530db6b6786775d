//! Chunked object transfer: large arrays cross the wire as content-addressed chunks.
//!
//! A message is sent as an envelope (`floret.v1.Envelope`): Flower's `Message` in which every
//! array above a size threshold has empty data, plus, for each such array, its length and the
//! ordered ids of its chunks (id = hex sha256 of the chunk's bytes, chunks of at most
//! [`MAX_CHUNK_LEN`]). The receiver fetches only the chunks it does not hold, checks each
//! against its id and copies it into its place in the array's buffer as it arrives.
//!
//! - [`id`]: object ids and hashing (in parallel, off the async threads).
//! - [`envelope`]: splitting a core message into an envelope and its chunks, and assembling
//!   an envelope plus fetched chunks back into a core message, refusing malformed envelopes.
//! - [`store`]: the serving side's store (a SuperLink, or a daemon serving its app
//!   processes): chunk ids cached per array buffer so a model broadcast to many nodes is
//!   hashed and stored once, and holds that decide when a chunk is freed.
//! - [`outbox`]: envelopes for sending, with their chunks held in the store (serving side)
//!   or handed back to be uploaded on request (the other side).
//! - [`assembly`]: the receiver's side (SuperNode or app side): each chunk checked and copied
//!   into the array's final buffer in one pass as it arrives.
//! - [`cache`]: the receiver's cache: the chunks of an abandoned transfer, kept so that a
//!   resumed transfer fetches only what is missing.

pub(crate) mod assembly;
pub(crate) mod cache;
pub(crate) mod envelope;
pub(crate) mod id;
pub(crate) mod outbox;
pub(crate) mod store;

/// `now + d`, saturating at a year from now: durations come from options and must not
/// overflow the clock.
pub(crate) fn deadline_after(d: std::time::Duration) -> tokio::time::Instant {
    deadline_after_from(tokio::time::Instant::now(), d)
}

/// `base + d`, saturating at a year after `base`.
pub(crate) fn deadline_after_from(
    base: tokio::time::Instant,
    d: std::time::Duration,
) -> tokio::time::Instant {
    base.checked_add(d)
        .unwrap_or_else(|| base + std::time::Duration::from_secs(365 * 24 * 3600))
}

/// The largest chunk any Floret peer sends or accepts: 4 MiB.
pub const MAX_CHUNK_LEN: usize = 4 * 1024 * 1024;

/// When arrays are sent as chunks, and how large the chunks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPolicy {
    /// Arrays with more data bytes than this travel as chunks. Default 512 KiB.
    pub threshold: usize,
    /// Bytes per chunk (the last chunk of an array may be shorter); at most
    /// [`MAX_CHUNK_LEN`], which is also the default.
    pub chunk_len: usize,
    /// Array bytes that may stay inline in one request or response (a batch of messages):
    /// when the arrays below the threshold add up to more, the largest of them are chunked
    /// too, so that no gRPC message outgrows its size limit. Default 8 MiB.
    pub inline_budget: usize,
}

impl Default for ChunkPolicy {
    fn default() -> Self {
        ChunkPolicy {
            threshold: 512 * 1024,
            chunk_len: MAX_CHUNK_LEN,
            inline_budget: 8 * 1024 * 1024,
        }
    }
}

impl ChunkPolicy {
    /// The chunk length actually used: within 1..=MAX_CHUNK_LEN.
    pub(crate) fn chunk_len(&self) -> usize {
        self.chunk_len.clamp(1, MAX_CHUNK_LEN)
    }
}

/// What a peer has sent and received as chunks, and what it holds now. On a SuperLink
/// (`Server::transfer_stats`), "held" is its object store: chunks kept for nodes to fetch
/// and uploads not yet used; on a SuperNode (`FleetClient::transfer_stats`), the chunks
/// left by an abandoned transfer (those of a transfer under way are already in their
/// arrays' buffers, and not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Chunks hashed to be sent. A model broadcast to many nodes is hashed once.
    pub chunks_hashed: u64,
    /// Chunks sent to the peer (served by PullObject, or uploaded by PushObject).
    pub chunks_sent: u64,
    /// Payload bytes of those chunks.
    pub bytes_sent: u64,
    /// Chunks received and checked against their ids.
    pub chunks_received: u64,
    /// Payload bytes of those chunks.
    pub bytes_received: u64,
    /// Chunks held now (a gauge, unlike the counters above): see the type's doc for what
    /// "held" means on each side.
    pub chunks_held: u64,
    /// Payload bytes of the chunks held now.
    pub bytes_held: u64,
}

impl TransferStats {
    pub(crate) fn of(c: &store::Counters, (chunks_held, bytes_held): (usize, usize)) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        TransferStats {
            chunks_hashed: c.chunks_hashed.load(Relaxed),
            chunks_sent: c.chunks_sent.load(Relaxed),
            bytes_sent: c.bytes_sent.load(Relaxed),
            chunks_received: c.chunks_received.load(Relaxed),
            bytes_received: c.bytes_received.load(Relaxed),
            chunks_held: chunks_held as u64,
            bytes_held: bytes_held as u64,
        }
    }
}

#[cfg(test)]
mod tests;
