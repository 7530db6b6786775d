//! Turning core messages into envelopes for the wire, on either side of a link.
//!
//! - [`Outbox`]: the side that serves chunks (a SuperLink to its nodes, a daemon to its app
//!   processes) keeps them in its [`ObjectStore`] under a delivery, for the peer to fetch.
//! - [`pack`]: the side that uploads (a SuperNode, an app process) hands back the chunks
//!   too, to push those the peer says it lacks.

use super::ChunkPolicy;
use super::envelope::{self, chunk_of};
use super::id::{ObjectId, hash_many_blocking};
use super::store::{Counters, ObjectStore};
use crate::proto::v1;
use bytes::Bytes;
use floret_core::Message;
use std::collections::HashMap;
use std::sync::Arc;

/// Envelopes for one peer's messages, their chunks held in the store until the peer
/// confirms or the lease ends.
pub(crate) struct Outbox {
    pub(crate) objects: Arc<ObjectStore>,
    pub(crate) chunking: ChunkPolicy,
}

impl Outbox {
    /// The envelope of `message` for `peer`. `budget` is what is left of the inline budget
    /// of the response being built.
    pub(crate) async fn envelope(
        &self,
        peer: u64,
        message: &Message,
        budget: &mut usize,
    ) -> v1::Envelope {
        let split = envelope::split(message, &self.chunking, budget);
        if split.detached.is_empty() {
            return split.seal::<[ObjectId; 0]>(&[], 0);
        }
        let sources: Vec<_> = split.detached.iter().map(|d| d.data.clone()).collect();
        let delivery = self.objects.deliver(peer, &sources).await;
        split.seal(&delivery.ids, delivery.id)
    }

    /// The envelopes of `messages`, sharing one inline budget.
    pub(crate) async fn envelopes(&self, peer: u64, messages: &[Message]) -> Vec<v1::Envelope> {
        let mut budget = self.chunking.inline_budget;
        let mut envelopes = Vec::with_capacity(messages.len());
        for m in messages {
            envelopes.push(self.envelope(peer, m, &mut budget).await);
        }
        envelopes
    }
}

/// Splits `messages` into envelopes (sharing one inline budget) and their chunks by id.
/// Each distinct array buffer is hashed once, however many messages carry it (a model sent
/// to every node), all of them at once off the async threads.
/// The chunks a peer asked for by id (its `missing_object_ids`), taken from those a call
/// carries; `Err` with the first id that names none of them.
pub(crate) fn requested<'a>(
    missing: &'a [String],
    chunks: &HashMap<ObjectId, Bytes>,
) -> Result<Vec<(ObjectId, Bytes)>, &'a str> {
    missing
        .iter()
        .map(|s| {
            ObjectId::parse(s)
                .ok()
                .and_then(|id| chunks.get(&id).map(|c| (id, c.clone())))
                .ok_or(s.as_str())
        })
        .collect()
}

pub(crate) async fn pack(
    messages: &[Message],
    policy: &ChunkPolicy,
    counters: &Counters,
) -> (Vec<v1::Envelope>, HashMap<ObjectId, Bytes>) {
    let chunk_len = policy.chunk_len();
    let mut budget = policy.inline_budget;
    let splits: Vec<_> = messages
        .iter()
        .map(|m| envelope::split(m, policy, &mut budget))
        .collect();
    // Buffers by identity (address and length): clones of one `Bytes` are one buffer.
    let mut distinct: HashMap<(usize, usize), usize> = HashMap::new();
    let mut buffers: Vec<Bytes> = Vec::new();
    let positions: Vec<usize> = splits
        .iter()
        .flat_map(|s| s.detached.iter())
        .map(|d| {
            let key = (d.data.as_ptr() as usize, d.data.len());
            *distinct.entry(key).or_insert_with(|| {
                buffers.push(d.data.clone());
                buffers.len() - 1
            })
        })
        .collect();
    let hashed = hash_many_blocking(buffers.clone(), chunk_len).await;
    let mut chunks = HashMap::new();
    for (data, ids) in buffers.iter().zip(&hashed) {
        counters.hashed(ids.len());
        for (k, &id) in ids.iter().enumerate() {
            chunks
                .entry(id)
                .or_insert_with(|| chunk_of(data, chunk_len, k));
        }
    }
    let mut positions = positions.into_iter();
    let envelopes = splits
        .into_iter()
        .map(|s| {
            let ids: Vec<&Vec<ObjectId>> = positions
                .by_ref()
                .take(s.detached.len())
                .map(|i| &hashed[i])
                .collect();
            s.seal(&ids, 0)
        })
        .collect();
    (envelopes, chunks)
}
