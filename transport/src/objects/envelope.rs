//! Envelopes: a core message split into Flower's `Message` (large arrays left without data)
//! plus the chunk ids of those arrays, and back.
//!
//! Splitting never fails. Opening validates everything a peer could get wrong before any
//! chunk is fetched (indices, ids, lengths), and assembling checks the fetched chunks add up
//! to the announced lengths; either returns a [`DecodeError`] naming the field.

use super::id::ObjectId;
use super::{ChunkPolicy, MAX_CHUNK_LEN};
use crate::convert;
use crate::error::{DecodeError, Loc};
use crate::proto::{self, record_dict, v1};
use bytes::{Bytes, BytesMut};
use floret_core::Message;
use std::collections::{HashMap, HashSet};

/// An array taken out of a message to travel as chunks.
pub(crate) struct Detached {
    record: u32,
    array: u32,
    /// The array's data; its chunks are slices of it (no copy).
    pub(crate) data: Bytes,
}

/// A message split for the wire, before its chunks are hashed.
pub(crate) struct Split {
    message: proto::Message,
    /// In the order of the message: by record, then by array.
    pub(crate) detached: Vec<Detached>,
}

fn array_mut(
    message: &mut proto::Message,
    record: usize,
    array: usize,
) -> Option<&mut proto::Array> {
    let item = message.content.as_mut()?.items.get_mut(record)?;
    match item.value.as_mut()? {
        record_dict::item::Value::ArrayRecord(r) => r.items.get_mut(array)?.value.as_mut(),
        _ => None,
    }
}

/// Splits `msg` by `policy`. `budget` is what is left of the inline budget of the request
/// or response being built; it shrinks by the array bytes left inline.
pub(crate) fn split(msg: &Message, policy: &ChunkPolicy, budget: &mut usize) -> Split {
    let mut message = convert::message_to_proto(msg);
    let mut detached = Vec::new();
    let mut inline: Vec<(u32, u32, usize)> = Vec::new();
    if let Some(content) = message.content.as_mut() {
        for (r, item) in content.items.iter_mut().enumerate() {
            let (Ok(r), Some(record_dict::item::Value::ArrayRecord(record))) =
                (u32::try_from(r), item.value.as_mut())
            else {
                continue;
            };
            for (a, array_item) in record.items.iter_mut().enumerate() {
                let (Ok(a), Some(array)) = (u32::try_from(a), array_item.value.as_mut()) else {
                    continue;
                };
                let len = array.data.len();
                if len > policy.threshold {
                    let data = std::mem::take(&mut array.data);
                    detached.push(Detached {
                        record: r,
                        array: a,
                        data,
                    });
                } else if len > 0 {
                    inline.push((r, a, len));
                }
            }
        }
    }
    let mut inline_total: usize = inline.iter().map(|&(_, _, len)| len).sum();
    if inline_total > *budget {
        inline.sort_by_key(|&(_, _, len)| std::cmp::Reverse(len));
        for (r, a, len) in inline {
            if inline_total <= *budget {
                break;
            }
            if let Some(array) = array_mut(&mut message, r as usize, a as usize) {
                let data = std::mem::take(&mut array.data);
                detached.push(Detached {
                    record: r,
                    array: a,
                    data,
                });
                inline_total -= len;
            }
        }
        detached.sort_by_key(|d| (d.record, d.array));
    }
    *budget = budget.saturating_sub(inline_total);
    Split { message, detached }
}

impl Split {
    /// The envelope, given the chunk ids of each detached array (in `detached` order).
    pub(crate) fn seal<I: AsRef<[ObjectId]>>(self, ids: &[I], delivery_id: u64) -> v1::Envelope {
        let chunked_arrays = self
            .detached
            .iter()
            .zip(ids)
            .map(|(d, ids)| v1::ChunkedArray {
                record_index: d.record,
                array_index: d.array,
                length: d.data.len() as u64,
                chunk_ids: ids.as_ref().iter().map(|id| id.to_hex()).collect(),
            })
            .collect();
        v1::Envelope {
            message: Some(self.message),
            chunked_arrays,
            delivery_id,
        }
    }
}

/// Chunk `index` of `data` cut into `chunk_len`-byte pieces: a slice, not a copy.
pub(crate) fn chunk_of(data: &Bytes, chunk_len: usize, index: usize) -> Bytes {
    let start = index.saturating_mul(chunk_len).min(data.len());
    let end = start.saturating_add(chunk_len).min(data.len());
    data.slice(start..end)
}

/// Where a chunked array goes back, and from which chunks.
pub(super) struct Placement {
    /// Position in `Envelope.chunked_arrays`, for error messages.
    index: usize,
    record: usize,
    array: usize,
    /// The array's bytes, as announced (at most `ids.len() * MAX_CHUNK_LEN`, checked).
    pub(super) length: usize,
    pub(super) ids: Vec<ObjectId>,
}

/// A received envelope whose structure has been checked; its chunks are still to fetch.
pub(crate) struct Opened {
    message: proto::Message,
    placements: Vec<Placement>,
    delivery_id: u64,
}

/// Checks `envelope` without fetching anything.
pub(crate) fn open(envelope: v1::Envelope) -> Result<Opened, DecodeError> {
    let root = Loc::Root("Envelope");
    let message = envelope
        .message
        .ok_or_else(|| root.field("message").missing())?;
    let list = root.field("chunked_arrays");
    let mut seen = HashSet::new();
    let mut placements = Vec::with_capacity(envelope.chunked_arrays.len());
    for (index, chunked) in envelope.chunked_arrays.into_iter().enumerate() {
        let here = list.index(index);
        let record = chunked.record_index as usize;
        let array = chunked.array_index as usize;
        let items = message.content.as_ref().map_or(&[][..], |c| &c.items[..]);
        let item = items.get(record).ok_or_else(|| {
            here.field("record_index").invalid(format!(
                "is {record}, but the message has {} records",
                items.len()
            ))
        })?;
        let Some(record_dict::item::Value::ArrayRecord(arrays)) = &item.value else {
            return Err(here.field("record_index").invalid(format!(
                "points at record {:?}, which is not an array record",
                item.key
            )));
        };
        let array_item = arrays.items.get(array).ok_or_else(|| {
            here.field("array_index").invalid(format!(
                "is {array}, but array record {:?} has {} arrays",
                item.key,
                arrays.items.len()
            ))
        })?;
        let target = array_item.value.as_ref().ok_or_else(|| {
            here.field("array_index").invalid(format!(
                "points at array {:?}, which has no value",
                array_item.key
            ))
        })?;
        if !target.data.is_empty() {
            return Err(here.invalid(format!(
                "points at array {:?}, which already has inline data",
                array_item.key
            )));
        }
        if !seen.insert((record, array)) {
            return Err(here.invalid("names the same array as an earlier entry"));
        }
        let id_list = here.field("chunk_ids");
        let ids = chunked
            .chunk_ids
            .iter()
            .enumerate()
            .map(|(k, s)| ObjectId::parse(s).map_err(|e| id_list.index(k).invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        // Every chunk holds 1 to MAX_CHUNK_LEN bytes.
        let length = usize::try_from(chunked.length)
            .ok()
            .filter(|&n| n <= ids.len().saturating_mul(MAX_CHUNK_LEN) && ids.len() <= n)
            .ok_or_else(|| {
                here.field("length").invalid(format!(
                    "is {} bytes, which {} chunks of 1 to {MAX_CHUNK_LEN} bytes cannot hold",
                    chunked.length,
                    ids.len()
                ))
            })?;
        placements.push(Placement {
            index,
            record,
            array,
            length,
            ids,
        });
    }
    Ok(Opened {
        message,
        placements,
        delivery_id: envelope.delivery_id,
    })
}

/// The deliveries to confirm once `opened` are assembled: those the sender keeps chunks for.
pub(crate) fn deliveries(opened: &[Opened]) -> Vec<u64> {
    opened
        .iter()
        .map(Opened::delivery_id)
        .filter(|&d| d != 0)
        .collect()
}

impl Opened {
    /// What to confirm once assembled; 0 when the sender keeps nothing for us.
    pub(crate) fn delivery_id(&self) -> u64 {
        self.delivery_id
    }

    /// The run the message belongs to.
    pub(crate) fn run_id(&self) -> u64 {
        self.message.metadata.as_ref().map_or(0, |m| m.run_id)
    }

    /// The chunks this message needs (an id may repeat when arrays share content).
    pub(crate) fn chunk_ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.placements.iter().flat_map(|p| p.ids.iter().copied())
    }

    /// Where the chunked arrays go, in `chunked_arrays` order.
    pub(super) fn placements(&self) -> &[Placement] {
        &self.placements
    }

    /// The core message, with the data of each chunked array from `data`, called once per
    /// placement in order with where it sits (for error messages).
    pub(super) fn complete(
        mut self,
        mut data: impl FnMut(&Placement, &Loc<'_>) -> Result<Bytes, DecodeError>,
    ) -> Result<Message, DecodeError> {
        let root = Loc::Root("Envelope");
        let list = root.field("chunked_arrays");
        for p in &self.placements {
            let bytes = data(p, &list.index(p.index))?;
            // `open` checked the position; it cannot have moved since.
            if let Some(array) = array_mut(&mut self.message, p.record, p.array) {
                array.data = bytes;
            }
        }
        convert::message_from_proto(self.message)
    }

    /// The core message, with each chunked array copied once into a contiguous buffer (an
    /// array of one chunk shares that chunk instead; an array of the same chunks as one in
    /// `built` shares that buffer). `chunks` holds fetched, verified chunks.
    fn assemble(
        self,
        chunks: &HashMap<ObjectId, Bytes>,
        built: &mut HashMap<Vec<ObjectId>, Bytes>,
    ) -> Result<Message, DecodeError> {
        self.complete(|p, here| {
            if let Some(data) = built.get(&p.ids) {
                return Ok(data.clone());
            }
            let data = gather(p, here, |_, id| chunks.get(id).cloned())?;
            if p.ids.len() > 1 {
                built.insert(p.ids.clone(), data.clone());
            }
            Ok(data)
        })
    }
}

/// The alignment an array's data needs to be read in place as any element type.
const ALIGN: usize = 8;

/// The array of `p` from its chunks (`chunk(k, id)`: chunk `k`, if received): the only
/// chunk itself (copied once when it is not 8-byte aligned), or all of them copied into
/// one buffer.
///
/// # Errors
/// A chunk that was not received, or chunks that do not add up to the announced length.
pub(super) fn gather(
    p: &Placement,
    here: &Loc<'_>,
    chunk: impl Fn(usize, &ObjectId) -> Option<Bytes>,
) -> Result<Bytes, DecodeError> {
    let parts = p
        .ids
        .iter()
        .enumerate()
        .map(|(k, id)| {
            chunk(k, id).ok_or_else(|| {
                here.field("chunk_ids")
                    .index(k)
                    .invalid(format!("chunk {id} was not received"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total: usize = parts.iter().map(Bytes::len).sum();
    if total != p.length {
        return Err(here.field("length").invalid(format!(
            "is {} bytes, but its chunks hold {total}",
            p.length
        )));
    }
    Ok(match <[Bytes; 1]>::try_from(parts) {
        // Shared as received, unless it starts off an 8-byte boundary (a chunk decoded by
        // tonic starts 10 bytes into its frame): `Array::values` would then copy it value
        // by value on every read, so it is copied once here, to a fresh allocation.
        Ok([only]) if !(only.as_ptr() as usize).is_multiple_of(ALIGN) => {
            Bytes::copy_from_slice(&only)
        }
        Ok([only]) => only,
        Err(parts) => {
            let mut buf = BytesMut::with_capacity(total);
            for c in &parts {
                buf.extend_from_slice(c);
            }
            buf.freeze()
        }
    })
}

/// Assembles a batch of opened envelopes from fetched, verified chunks. Arrays made of the
/// same chunks (a model sent to several nodes in one batch) share one buffer rather than
/// getting a copy each. Call it from a blocking thread: large arrays are copied into place.
///
/// # Errors
/// The position of the first envelope that does not assemble, and why.
pub(crate) fn assemble_all(
    opened: Vec<Opened>,
    chunks: &HashMap<ObjectId, Bytes>,
) -> Result<Vec<Message>, (usize, DecodeError)> {
    let mut built = HashMap::new();
    opened
        .into_iter()
        .enumerate()
        .map(|(i, o)| o.assemble(chunks, &mut built).map_err(|e| (i, e)))
        .collect()
}
