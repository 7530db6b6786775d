//! The serving side's handling of what a peer sends it, shared by the Fleet and AppIo
//! services: chunks pushed one by one, then envelopes that name them, assembled into core
//! messages once every chunk is there.

use super::status::{from_decode_error, unknown_object};
use crate::limits::batch_run;
use crate::objects::MAX_CHUNK_LEN;
use crate::objects::envelope::{self, Opened};
use crate::objects::id::{ObjectId, verify_blocking};
use crate::objects::store::ObjectStore;
use crate::proto::v1;
use bytes::Bytes;
use floret_core::Message;
use std::collections::{HashMap, HashSet};
use tonic::Status;

fn parse_id(field: &str, s: &str) -> Result<ObjectId, Status> {
    ObjectId::parse(s).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// Checks a pushed chunk against its id and keeps it for `peer`, counted against `run_id`
/// (0: none). `request` names the request type in errors (`PushObjectRequest`).
pub(crate) async fn accept_chunk(
    objects: &ObjectStore,
    (peer, run_id): (u64, u64),
    request: &str,
    object_id: &str,
    content: Bytes,
) -> Result<(), Status> {
    let id = parse_id(&format!("{request}.object_id"), object_id)?;
    if content.len() > MAX_CHUNK_LEN {
        return Err(Status::invalid_argument(format!(
            "{request}.content: is {} bytes; chunks are at most {MAX_CHUNK_LEN}",
            content.len()
        )));
    }
    verify_blocking(id, content.clone())
        .await
        .map_err(|actual| {
            Status::invalid_argument(format!(
                "{request}.content: its sha256 is {actual}, not the object id {id}: the chunk \
                 is corrupt"
            ))
        })?;
    objects.put(peer, run_id, id, content).map_err(|refused| {
        tracing::warn!(peer, run_id, "refused an uploaded chunk: {refused}");
        Status::resource_exhausted(refused.to_string())
    })
}

/// A chunk delivered to `peer`; `holder` names the peer in the error ("node 3").
pub(crate) fn serve_chunk(
    objects: &ObjectStore,
    peer: u64,
    holder: &str,
    request: &str,
    object_id: &str,
) -> Result<Bytes, Status> {
    let id = parse_id(&format!("{request}.object_id"), object_id)?;
    objects
        .fetch(peer, id)
        .ok_or_else(|| unknown_object(id, holder))
}

/// Checks the structure of one received envelope; `what` names its field.
pub(crate) fn open(what: &str, e: v1::Envelope) -> Result<Opened, Status> {
    envelope::open(e).map_err(|e| from_decode_error(what, &e))
}

/// [`open`] for a list; `what` names the list (`PushMessagesRequest.envelopes`).
pub(crate) fn open_all(what: &str, list: Vec<v1::Envelope>) -> Result<Vec<Opened>, Status> {
    list.into_iter()
        .enumerate()
        .map(|(i, e)| open(&format!("{what}[{i}]"), e))
        .collect()
}

/// Chunks claimed for a batch of envelopes.
pub(crate) struct Claimed {
    pub(crate) chunks: HashMap<ObjectId, Bytes>,
    /// Their ids, for [`ObjectStore::release_uploads`] once the batch has been applied.
    pub(crate) ids: HashSet<ObjectId>,
}

/// The chunks `opened` names, or the hex ids of those `peer` has still to push.
pub(crate) fn claim<'a>(
    objects: &ObjectStore,
    peer: u64,
    opened: impl IntoIterator<Item = &'a Opened>,
) -> Result<Claimed, Vec<String>> {
    let opened: Vec<&Opened> = opened.into_iter().collect();
    let ids: HashSet<ObjectId> = opened.iter().flat_map(|o| o.chunk_ids()).collect();
    if ids.is_empty() {
        return Ok(Claimed {
            chunks: HashMap::new(),
            ids,
        });
    }
    let run_id = batch_run(opened.iter().map(|o| o.run_id()));
    match objects.claim(peer, run_id, &ids) {
        Ok(chunks) => Ok(Claimed { chunks, ids }),
        Err(missing) => Err(missing.into_iter().map(ObjectId::to_hex).collect()),
    }
}

/// Assembles received envelopes from their chunks, off the async threads (large arrays are
/// copied once into place). `what` names each envelope's field in errors, given its index
/// (`PushMessagesRequest.envelopes[2]`).
pub(crate) async fn assemble(
    what: impl Fn(usize) -> String,
    opened: Vec<Opened>,
    chunks: HashMap<ObjectId, Bytes>,
) -> Result<Vec<Message>, Status> {
    tokio::task::spawn_blocking(move || envelope::assemble_all(opened, &chunks))
        .await
        .map_err(|e| Status::internal(format!("assembling received messages failed: {e}")))?
        .map_err(|(i, e)| from_decode_error(&what(i), &e))
}
