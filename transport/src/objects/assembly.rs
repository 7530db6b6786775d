//! The receiver's assembly: each fetched chunk is checked against its id and copied into
//! its place in the array's final buffer in one pass, on a blocking thread, while the other
//! chunks are still on the wire.
//!
//! Copying a chunk as soon as it arrives lets its receive buffer go at once (the allocator
//! hands it to the next chunk instead of the kernel faulting in fresh pages), and spares
//! the second copy, of the whole model, that gathering the chunks at the end would take.
//! Hashing and copying run block by block, so the copy reads what the hash just brought
//! into the cache.
//!
//! An array's buffer is laid out when the first chunk before its last arrives: a Floret
//! sender cuts chunks of one length, the last shorter, so that chunk's length gives every
//! offset. A chunk that does not fit that layout (another sender, or a peer that lies) is
//! kept whole and the array gathered from its chunks at the end, as before; an array of
//! one chunk shares that chunk (no copy). The lengths are checked in the end either way.
//!
//! If the transfer is abandoned (dropped before [`Assembly::finish`]), the chunks received
//! so far go to the [`ChunkCache`], so that a retry fetches only the rest.

use super::cache::ChunkCache;
use super::envelope::{Opened, Placement, gather};
use super::id::ObjectId;
use crate::error::{DecodeError, Loc};
use bytes::{Bytes, BytesMut};
use floret_core::Message;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes hashed, then copied, at a time: small enough to stay in the core's cache between
/// the two.
const BLOCK: usize = 128 * 1024;

/// Largest array laid out on its first chunk. The buffer is taken at once (its pages are
/// only touched as chunks arrive), before the peer has sent most of the bytes it announced:
/// an absurd length must not make the allocation fail. Larger arrays are gathered from the
/// chunks that actually arrived, as before.
const MAX_LAID_OUT: usize = 4 << 30;

/// Below this many bytes a chunk is checked on the calling task: a blocking thread costs
/// more than the work.
const INLINE_MAX: usize = 64 * 1024;

/// One array to build. Arrays of the same chunks and length (a model sent twice in one
/// batch) are one target, so they share one buffer.
struct Target {
    length: usize,
    ids: Vec<ObjectId>,
    layout: Layout,
}

enum Layout {
    /// One chunk: the array is that chunk, shared.
    Whole,
    /// Several chunks, and none before the last has arrived: their length is not known.
    Unknown,
    /// Chunks of `chunk_len` bytes, the last one shorter or equal, each copied into its slot
    /// of the array's buffer; the slots are split from one allocation and joined back
    /// without a copy.
    Slots { chunk_len: usize, slots: Vec<Slot> },
    /// The first chunk's length cannot be the layout's: chunks are kept and gathered.
    Gather,
}

enum Slot {
    Empty(BytesMut),
    /// Out with a blocking thread that is copying a chunk into it.
    Filling,
    /// Holds its chunk, checked.
    Filled(BytesMut),
}

impl Target {
    /// Lays out the buffer from a chunk of `len` bytes at a position before the last: a
    /// buffer of slots when every chunk but the last can have that length, else gathering.
    fn lay_out(&mut self, len: usize) {
        let n = self.ids.len();
        let before_last = len.checked_mul(n - 1);
        self.layout = match before_last {
            Some(b)
                if len > 0
                    && b < self.length
                    && self.length - b <= len
                    && self.length <= MAX_LAID_OUT =>
            {
                let mut rest = BytesMut::zeroed(self.length);
                let mut slots: Vec<Slot> =
                    (1..n).map(|_| Slot::Empty(rest.split_to(len))).collect();
                slots.push(Slot::Empty(rest));
                Layout::Slots {
                    chunk_len: len,
                    slots,
                }
            }
            _ => Layout::Gather,
        };
    }

    /// The length chunk `k` must have in a layout of `chunk_len`-byte chunks.
    fn slot_len(&self, chunk_len: usize, k: usize) -> usize {
        let n = self.ids.len();
        if k + 1 < n {
            chunk_len
        } else {
            self.length - chunk_len * (n - 1)
        }
    }
}

/// What one chunk is to fill: taken from the state under its lock, filled without it.
pub(super) struct Claim {
    id: ObjectId,
    /// (target, position, the slot's buffer), each as long as the chunk.
    slots: Vec<(usize, usize, BytesMut)>,
    /// Some place needs the chunk whole (an array of one chunk, or one being gathered).
    keep: bool,
}

#[cfg(test)]
impl Claim {
    pub(super) fn slots_mut(&mut self) -> &mut [(usize, usize, BytesMut)] {
        &mut self.slots
    }

    pub(super) fn slots_len(&self) -> usize {
        self.slots.len()
    }
}

/// The I/O-free part: targets, where each chunk goes, and what has arrived.
pub(super) struct State {
    opened: Vec<Opened>,
    /// For each placement of each envelope, its target.
    targets_of: Vec<Vec<usize>>,
    targets: Vec<Target>,
    /// Where each chunk goes: (target, position).
    places: HashMap<ObjectId, Vec<(usize, usize)>>,
    /// Checked chunks kept whole: for arrays of one chunk, arrays being gathered, and chunks
    /// that arrived before their array was laid out or did not fit it.
    kept: HashMap<ObjectId, Bytes>,
}

impl State {
    pub(super) fn new(opened: Vec<Opened>) -> State {
        let mut by_content: HashMap<(Vec<ObjectId>, usize), usize> = HashMap::new();
        let mut targets: Vec<Target> = Vec::new();
        let mut places: HashMap<ObjectId, Vec<(usize, usize)>> = HashMap::new();
        let targets_of = opened
            .iter()
            .map(|o| {
                o.placements()
                    .iter()
                    .map(|p| {
                        *by_content
                            .entry((p.ids.clone(), p.length))
                            .or_insert_with(|| {
                                let t = targets.len();
                                for (k, id) in p.ids.iter().enumerate() {
                                    places.entry(*id).or_default().push((t, k));
                                }
                                let layout = if p.ids.len() == 1 {
                                    Layout::Whole
                                } else {
                                    Layout::Unknown
                                };
                                targets.push(Target {
                                    length: p.length,
                                    ids: p.ids.clone(),
                                    layout,
                                });
                                t
                            })
                    })
                    .collect()
            })
            .collect();
        State {
            opened,
            targets_of,
            targets,
            places,
            kept: HashMap::new(),
        }
    }

    /// The chunks to fetch, in the order of the arrays, each once: an array's first chunks
    /// come first and lay out its buffer.
    pub(super) fn wanted(&self) -> Vec<ObjectId> {
        let mut seen = HashSet::new();
        self.targets
            .iter()
            .flat_map(|t| t.ids.iter().copied())
            .filter(|id| seen.insert(*id))
            .collect()
    }

    /// A chunk received earlier and checked then (from the cache).
    pub(super) fn insert_checked(&mut self, id: ObjectId, data: Bytes) {
        self.kept.insert(id, data);
    }

    /// The slots chunk `id` of `len` bytes fills, taken out until [`State::put_back`].
    pub(super) fn claim(&mut self, id: ObjectId, len: usize) -> Claim {
        let mut claim = Claim {
            id,
            slots: Vec::new(),
            keep: false,
        };
        for &(t, k) in self.places.get(&id).map_or(&[][..], Vec::as_slice) {
            let Some(target) = self.targets.get_mut(t) else {
                continue;
            };
            if matches!(target.layout, Layout::Unknown) && k + 1 < target.ids.len() {
                target.lay_out(len);
            }
            let fits = match &target.layout {
                Layout::Slots { chunk_len, .. } => target.slot_len(*chunk_len, k) == len,
                _ => false,
            };
            match &mut target.layout {
                Layout::Slots { slots, .. } if fits => {
                    if let Some(slot @ Slot::Empty(_)) = slots.get_mut(k)
                        && let Slot::Empty(buf) = std::mem::replace(slot, Slot::Filling)
                    {
                        claim.slots.push((t, k, buf));
                    }
                    // Else already filled or being filled: the chunk came twice.
                }
                _ => claim.keep = true,
            }
        }
        claim
    }

    fn slot_mut(&mut self, t: usize, k: usize) -> Option<&mut Slot> {
        match &mut self.targets.get_mut(t)?.layout {
            Layout::Slots { slots, .. } => slots.get_mut(k),
            _ => None,
        }
    }

    /// Returns the slots of `claim`: filled when the chunk matched its id, else empty
    /// again (and the chunk is not kept).
    pub(super) fn put_back(&mut self, claim: Claim, data: Bytes, checked: bool) {
        for (t, k, buf) in claim.slots {
            if let Some(s) = self.slot_mut(t, k) {
                *s = if checked {
                    Slot::Filled(buf)
                } else {
                    Slot::Empty(buf)
                };
            }
        }
        if checked && claim.keep {
            self.kept.insert(claim.id, data);
        }
    }

    /// The checked chunks held, by id: what a retry need not fetch again.
    fn into_received(self) -> Vec<(ObjectId, Bytes)> {
        let mut received: Vec<(ObjectId, Bytes)> = self.kept.into_iter().collect();
        for target in self.targets {
            if let Layout::Slots { slots, .. } = target.layout {
                for (id, slot) in target.ids.into_iter().zip(slots) {
                    if let Slot::Filled(buf) = slot {
                        received.push((id, buf.freeze()));
                    }
                }
            }
        }
        received
    }

    /// The messages, once every chunk has been received. Slots still empty are filled from
    /// kept chunks that fit them; an array whose slots are all filled is joined without a
    /// copy, any other gathered from its chunks.
    ///
    /// # Errors
    /// The position of the first envelope that does not assemble, and why.
    pub(super) fn finish(mut self) -> Result<Vec<Message>, (usize, DecodeError)> {
        let mut built: Vec<Option<Bytes>> = vec![None; self.targets.len()];
        let targets_of = std::mem::take(&mut self.targets_of);
        let opened = std::mem::take(&mut self.opened);
        opened
            .into_iter()
            .zip(targets_of)
            .enumerate()
            .map(|(i, (o, targets))| {
                let mut targets = targets.into_iter();
                o.complete(|p, here| {
                    let t = targets.next().unwrap_or_default();
                    if let Some(data) = &built[t] {
                        return Ok(data.clone());
                    }
                    let data = self.build(t, p, here)?;
                    built[t] = Some(data.clone());
                    Ok(data)
                })
                .map_err(|e| (i, e))
            })
            .collect()
    }

    /// The data of target `t`, first placed at `p`.
    fn build(&mut self, t: usize, p: &Placement, here: &Loc<'_>) -> Result<Bytes, DecodeError> {
        let kept = &self.kept;
        let target = &mut self.targets[t];
        let Layout::Slots { slots, .. } = &mut target.layout else {
            return gather(p, here, |_, id| kept.get(id).cloned());
        };
        for (k, slot) in slots.iter_mut().enumerate() {
            if let Slot::Empty(buf) = slot
                && let Some(c) = kept.get(&target.ids[k])
                && c.len() == buf.len()
            {
                buf.copy_from_slice(c);
                *slot = Slot::Filled(std::mem::take(buf));
            }
        }
        let slots = std::mem::take(slots);
        if slots.iter().all(|s| matches!(s, Slot::Filled(_))) {
            let mut joined = BytesMut::new();
            for s in slots {
                if let Slot::Filled(buf) = s {
                    joined.unsplit(buf);
                }
            }
            return Ok(joined.freeze());
        }
        let filled: Vec<Option<Bytes>> = slots
            .into_iter()
            .map(|s| match s {
                Slot::Filled(buf) => Some(buf.freeze()),
                _ => None,
            })
            .collect();
        gather(p, here, |k, id| {
            filled
                .get(k)
                .cloned()
                .flatten()
                .or_else(|| kept.get(id).cloned())
        })
    }
}

/// The sha256 of `data`, copied into each of `slots` (each as long as `data`) block by
/// block as it is hashed.
pub(super) fn hash_into(data: &[u8], slots: &mut [(usize, usize, BytesMut)]) -> ObjectId {
    let mut hasher = Sha256::new();
    let mut at = 0;
    for block in data.chunks(BLOCK) {
        hasher.update(block);
        let end = at + block.len();
        for (_, _, slot) in slots.iter_mut() {
            if let Some(dst) = slot.get_mut(at..end) {
                dst.copy_from_slice(block);
            }
        }
        at = end;
    }
    ObjectId::from_hasher(hasher)
}

/// The state, shared with the blocking threads that fill it. Dropped before
/// [`Assembly::finish`] took it, it leaves what arrived in the cache.
struct Shared {
    state: Mutex<Option<State>>,
    cache: Arc<ChunkCache>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<State>> {
        // A panic while copying cannot leave the maps half-updated in a way that breaks
        // memory safety; the assembly's checks at the end still hold.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks chunk `id` and copies it into place: `Err` with its actual id if corrupt.
    fn receive(&self, id: ObjectId, data: Bytes) -> Result<(), ObjectId> {
        let claim = self.lock().as_mut().map(|s| s.claim(id, data.len()));
        let Some(mut claim) = claim else {
            // Finished or abandoned: nothing to fill, but a corrupt chunk is still refused.
            let actual = ObjectId::of(&data);
            return if actual == id { Ok(()) } else { Err(actual) };
        };
        let actual = hash_into(&data, &mut claim.slots);
        let checked = actual == id;
        if let Some(state) = self.lock().as_mut() {
            state.put_back(claim, data, checked);
        }
        if checked { Ok(()) } else { Err(actual) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(state) = state {
            for (id, data) in state.into_received() {
                self.cache.insert(id, data);
            }
        }
    }
}

/// One batch of received envelopes being assembled (see the module documentation).
pub(crate) struct Assembly {
    shared: Arc<Shared>,
}

impl Assembly {
    /// Starts assembling `opened`, with the chunks `cache` holds: returns the ids still to
    /// fetch, each once, in the order of the arrays.
    pub(crate) fn start(opened: Vec<Opened>, cache: Arc<ChunkCache>) -> (Assembly, Vec<ObjectId>) {
        let mut state = State::new(opened);
        let wanted = state.wanted();
        let (held, _) = cache.split(&wanted.iter().copied().collect());
        let missing = wanted
            .into_iter()
            .filter(|id| !held.contains_key(id))
            .collect();
        for (id, data) in held {
            state.insert_checked(id, data);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(Some(state)),
            cache,
        });
        (Assembly { shared }, missing)
    }

    /// Checks fetched chunk `id` against its id and copies it into place (on a blocking
    /// thread unless small). `Err` with the chunk's actual id when it does not match: it is
    /// then not used.
    pub(crate) async fn receive(&self, id: ObjectId, data: Bytes) -> Result<(), ObjectId> {
        if data.len() < INLINE_MAX {
            return self.shared.receive(id, data);
        }
        let (shared, copy) = (self.shared.clone(), data.clone());
        match tokio::task::spawn_blocking(move || shared.receive(id, copy)).await {
            Ok(result) => result,
            // The blocking pool is gone (runtime shutting down): check it on this thread.
            Err(_) => self.shared.receive(id, data),
        }
    }

    /// The messages, once every chunk has been received (on a blocking thread).
    ///
    /// # Errors
    /// Outer: the blocking thread failed. Inner: the position of the first envelope that
    /// does not assemble, and why.
    pub(crate) async fn finish(
        self,
    ) -> Result<Result<Vec<Message>, (usize, DecodeError)>, tokio::task::JoinError> {
        let state = self.shared.lock().take();
        tokio::task::spawn_blocking(move || state.map_or_else(|| Ok(Vec::new()), State::finish))
            .await
    }
}
