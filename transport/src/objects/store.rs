//! The SuperLink's object store: the chunks it serves to nodes and the chunks nodes upload.
//!
//! # When a chunk is freed
//!
//! A chunk lives exactly as long as some *hold* names it:
//! - a **delivery**: an envelope sent to a node names chunks; the hold ends when the node
//!   confirms it has assembled the message (`ConfirmDeliveries`), or when the node has not
//!   fetched any chunk for `lease` (it went away mid-transfer);
//! - an **upload**: chunks a node pushed for a run (or that a node's pending `PushMessages`
//!   needs); the hold ends when a `PushMessages` of that node uses them, or after `lease`
//!   without an upload from that node for that run. Uploads are counted per node, per run
//!   and in all against the caps of [`ServerLimits`].
//!
//! When its last hold ends a chunk is dropped at once, and with it the store's reference
//! to the array buffer it slices. Expired holds are swept by [`ObjectStore::sweep`], which the
//! server calls periodically. Memory is thus bounded by the messages in flight plus what
//! stalled transfers left behind for at most one lease.
//!
//! # Hashing once
//!
//! Chunk ids are cached per array buffer (the address and length of its `Bytes`, which
//! are shared, not copied, when a model is broadcast): while any delivery made from a buffer
//! is held, sending it again, to any node, reuses the ids and the stored chunks. The cache
//! entry keeps a reference to the buffer, so the address cannot be reused by other data
//! while the entry exists. Concurrent sends of one buffer wait for a single hashing.

use super::deadline_after;
use super::envelope::chunk_of;
use super::id::{ObjectId, hash_chunks_blocking, hash_many_blocking};
use crate::limits::{MAX_UPLOAD_LEASES, ServerLimits, UploadRefused, UploadsHeld};
use bytes::Bytes;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A buffer's identity: address and length of its bytes.
type SourceKey = (usize, usize);

fn key_of(b: &Bytes) -> SourceKey {
    (b.as_ptr() as usize, b.len())
}

struct Object {
    data: Bytes,
    /// Holds naming this object.
    refs: usize,
}

/// Cached chunk ids of one buffer.
struct Digest {
    /// Keeps the buffer, and so its address, alive while the ids are cached.
    _source: Bytes,
    ids: Arc<[ObjectId]>,
    /// Delivery holds made from this buffer.
    users: usize,
}

struct Hold {
    ids: HashSet<ObjectId>,
    /// Buffers whose digests this hold uses (deliveries only).
    sources: Vec<SourceKey>,
    expires: Instant,
    /// Uploads only: the most `expires` may be renewed to, [`MAX_UPLOAD_LEASES`] leases
    /// after the hold began, so that uploading without ever using the chunks frees them.
    renewable_until: Instant,
    /// Uploads only: bytes of the chunks it names, for the upload caps.
    bytes: usize,
}

/// An upload hold's key: (node id, run id), so a node's uploads are one range. Run 0 stands
/// for chunks whose node named no run.
type UploadKey = (u64, u64);

/// The upload holds of `node_id`, all runs.
fn node_range(node_id: u64) -> std::ops::RangeInclusive<UploadKey> {
    (node_id, 0)..=(node_id, u64::MAX)
}

impl Hold {
    /// The hold on `key`'s uploads (a new, empty one if there is none), to last for
    /// `lease` more: each upload or claim renews the lease of the hold, up to
    /// [`MAX_UPLOAD_LEASES`] leases from the hold's start.
    fn renewed(
        uploads: &mut BTreeMap<UploadKey, Hold>,
        key: UploadKey,
        lease: Duration,
    ) -> &mut Hold {
        let expires = deadline_after(lease);
        let hold = uploads.entry(key).or_insert_with(|| Hold {
            ids: HashSet::new(),
            sources: Vec::new(),
            expires,
            renewable_until: deadline_after(lease.saturating_mul(MAX_UPLOAD_LEASES)),
            bytes: 0,
        });
        hold.expires = expires.min(hold.renewable_until);
        hold
    }
}

/// Chunk ids of a buffer being hashed: `None` until done.
type Hashed = Option<Arc<[ObjectId]>>;

#[derive(Default)]
struct Inner {
    objects: HashMap<ObjectId, Object>,
    bytes: usize,
    /// `bytes`, summed over every store of the process, for Prometheus.
    held: HeldBytes,
    digests: HashMap<SourceKey, Digest>,
    /// Hashings under way, so that concurrent sends of one buffer hash it once.
    hashing: HashMap<SourceKey, watch::Receiver<Hashed>>,
    /// Keyed by (node id, delivery id), so a node's deliveries are one range.
    deliveries: BTreeMap<(u64, u64), Hold>,
    uploads: BTreeMap<UploadKey, Hold>,
    /// Bytes the upload holds name, summed over nodes.
    upload_bytes: usize,
    /// Bytes the upload holds name, summed per run (run 0 is not kept).
    run_upload_bytes: HashMap<u64, usize>,
    next_delivery: u64,
}

/// The `floret_object_store_bytes` gauge. Moved by the bytes each store adds and frees
/// (not set), so that several stores in one process (Fleet and AppIo APIs) add up.
struct HeldBytes(metrics::Gauge);

impl Default for HeldBytes {
    fn default() -> Self {
        HeldBytes(metrics::gauge!(crate::meter::OBJECT_STORE_BYTES))
    }
}

impl HeldBytes {
    fn add(&self, len: usize) {
        self.0.increment(len as f64);
    }

    fn sub(&self, len: usize) {
        self.0.decrement(len as f64);
    }
}

/// Counters of what a peer sent and received, for logs and tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) chunks_hashed: AtomicU64,
    pub(crate) chunks_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) chunks_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
}

impl Counters {
    pub(crate) fn sent(&self, bytes: usize) {
        self.chunks_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.chunks_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn hashed(&self, chunks: usize) {
        self.chunks_hashed
            .fetch_add(chunks as u64, Ordering::Relaxed);
    }
}

/// See the module documentation.
pub(crate) struct ObjectStore {
    inner: Mutex<Inner>,
    chunk_len: usize,
    lease: Duration,
    /// The caps on uploads.
    limits: ServerLimits,
    pub(crate) counters: Counters,
    /// Test hook: the next fetched chunk comes out with a flipped bit.
    #[cfg(test)]
    corrupt_next: std::sync::atomic::AtomicBool,
}

impl Drop for ObjectStore {
    /// A store that goes (its server shut down) no longer holds its bytes.
    fn drop(&mut self) {
        let inner = self.lock();
        inner.held.sub(inner.bytes);
    }
}

/// A delivery's chunk ids, per detached array, and the id the node confirms.
pub(crate) struct Delivery {
    pub(crate) id: u64,
    pub(crate) ids: Vec<Arc<[ObjectId]>>,
}

impl ObjectStore {
    pub(crate) fn new(chunk_len: usize, lease: Duration) -> ObjectStore {
        ObjectStore {
            inner: Mutex::new(Inner {
                next_delivery: 1,
                ..Inner::default()
            }),
            chunk_len,
            lease,
            limits: ServerLimits::default(),
            counters: Counters::default(),
            #[cfg(test)]
            corrupt_next: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// This store, with uploads capped by `limits`.
    pub(crate) fn limited(mut self, limits: ServerLimits) -> ObjectStore {
        self.limits = limits;
        self
    }

    #[cfg(test)]
    pub(crate) fn on_next_fetch_corrupt(&self) {
        self.corrupt_next.store(true, Ordering::SeqCst);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // breaks memory safety; keep serving rather than poison every later call.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Number of chunks held and their total bytes.
    pub(crate) fn size(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.objects.len(), inner.bytes)
    }

    /// Registers the chunks of `sources` (the detached arrays of one message sent to
    /// `node_id`) under a new delivery hold, hashing only the buffers no held delivery was
    /// made from (all of them at once, on every core).
    pub(crate) async fn deliver(&self, node_id: u64, sources: &[Bytes]) -> Delivery {
        let mut ids: Vec<Option<Arc<[ObjectId]>>> = vec![None; sources.len()];
        let mut mine: Vec<(usize, watch::Sender<Hashed>)> = Vec::new();
        let mut theirs: Vec<(usize, watch::Receiver<Hashed>)> = Vec::new();
        {
            let mut inner = self.lock();
            // A hashing whose sender is gone (cancelled) may name a buffer that is gone
            // too: drop it before its address can be looked up.
            inner.hashing.retain(|_, rx| rx.has_changed().is_ok());
            for (i, source) in sources.iter().enumerate() {
                let key = key_of(source);
                if let Some(d) = inner.digests.get(&key) {
                    ids[i] = Some(d.ids.clone());
                } else if let Some(rx) = inner.hashing.get(&key) {
                    theirs.push((i, rx.clone()));
                } else {
                    let (tx, rx) = watch::channel(None);
                    inner.hashing.insert(key, rx);
                    mine.push((i, tx));
                }
            }
        }
        if !mine.is_empty() {
            let buffers = mine.iter().map(|(i, _)| sources[*i].clone()).collect();
            let hashed = hash_many_blocking(buffers, self.chunk_len).await;
            for ((i, tx), h) in mine.iter().zip(hashed) {
                self.counters.hashed(h.len());
                let h: Arc<[ObjectId]> = h.into();
                tx.send_replace(Some(h.clone()));
                ids[*i] = Some(h);
            }
        }
        for (i, mut rx) in theirs {
            let done = rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|v| v.clone());
            ids[i] = Some(match done {
                Some(h) => h,
                // Whoever was hashing it gave up (its caller was cancelled): do it here.
                None => {
                    let h = hash_chunks_blocking(sources[i].clone(), self.chunk_len).await;
                    self.counters.hashed(h.len());
                    h.into()
                }
            });
        }
        let ids: Vec<Arc<[ObjectId]>> = ids.into_iter().flatten().collect();

        let mut inner = self.lock();
        let inner = &mut *inner;
        for (i, tx) in &mine {
            let key = key_of(&sources[*i]);
            if inner
                .hashing
                .get(&key)
                .is_some_and(|rx| tx.subscribe().same_channel(rx))
            {
                inner.hashing.remove(&key);
            }
        }
        let expires = deadline_after(self.lease);
        let mut hold = Hold {
            ids: HashSet::new(),
            sources: Vec::with_capacity(sources.len()),
            expires,
            renewable_until: expires,
            bytes: 0,
        };
        for (source, chunk_ids) in sources.iter().zip(&ids) {
            let key = key_of(source);
            let digest = inner.digests.entry(key).or_insert_with(|| Digest {
                _source: source.clone(),
                ids: chunk_ids.clone(),
                users: 0,
            });
            digest.users += 1;
            hold.sources.push(key);
            for (k, &id) in chunk_ids.iter().enumerate() {
                if hold.ids.insert(id) {
                    let object = inner.objects.entry(id).or_insert_with(|| {
                        let data = chunk_of(source, self.chunk_len, k);
                        inner.bytes += data.len();
                        inner.held.add(data.len());
                        Object { data, refs: 0 }
                    });
                    object.refs += 1;
                }
            }
        }
        let id = inner.next_delivery;
        inner.next_delivery += 1;
        inner.deliveries.insert((node_id, id), hold);
        Delivery { id, ids }
    }

    /// A chunk of a message delivered to `node_id`, or `None` when no delivery to that
    /// node names it (never delivered, confirmed or expired). Extends the node's deliveries:
    /// a transfer that makes progress does not expire.
    pub(crate) fn fetch(&self, node_id: u64, id: ObjectId) -> Option<Bytes> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let expires = deadline_after(self.lease);
        let mut allowed = false;
        for (_, hold) in inner
            .deliveries
            .range_mut((node_id, 0)..=(node_id, u64::MAX))
        {
            allowed |= hold.ids.contains(&id);
            hold.expires = expires;
        }
        if !allowed {
            return None;
        }
        let data = inner.objects.get(&id)?.data.clone();
        self.counters.sent(data.len());
        #[cfg(test)]
        if self.corrupt_next.swap(false, Ordering::SeqCst) {
            let mut spoiled = data.to_vec();
            if let Some(b) = spoiled.first_mut() {
                *b ^= 1;
            }
            return Some(Bytes::from(spoiled));
        }
        Some(data)
    }

    /// Ends the named deliveries to `node_id`; unknown ids are ignored (already expired).
    pub(crate) fn confirm(&self, node_id: u64, delivery_ids: &[u64]) {
        let mut inner = self.lock();
        for &d in delivery_ids {
            if let Some(hold) = inner.deliveries.remove(&(node_id, d)) {
                release(&mut inner, hold);
            }
        }
    }

    /// Keeps a chunk uploaded by `node_id` for `run_id` (0: the node named none; already
    /// checked against its id) until a `PushMessages` of that node uses it.
    ///
    /// # Errors
    /// [`UploadRefused`] when the node, the run's nodes, or all nodes together already hold
    /// as many bytes of uploads as the limits allow; the chunk is not kept.
    pub(crate) fn put(
        &self,
        node_id: u64,
        run_id: u64,
        id: ObjectId,
        data: Bytes,
    ) -> Result<(), UploadRefused> {
        self.counters.received(data.len());
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut node_held = 0;
        let mut known = false;
        for hold in inner.uploads.range(node_range(node_id)).map(|(_, h)| h) {
            node_held += hold.bytes;
            known |= hold.ids.contains(&id);
        }
        if !known {
            let run = (run_id != 0).then(|| {
                let held = inner.run_upload_bytes.get(&run_id).copied().unwrap_or(0);
                (run_id, held)
            });
            let held = UploadsHeld {
                node: node_held,
                run,
                all: inner.upload_bytes,
            };
            self.limits.admit_upload(held, data.len())?;
        }
        let hold = Hold::renewed(&mut inner.uploads, (node_id, run_id), self.lease);
        if !known && hold.ids.insert(id) {
            hold.bytes += data.len();
            track(inner, run_id, data.len());
            let object = inner.objects.entry(id).or_insert_with(|| {
                inner.bytes += data.len();
                inner.held.add(data.len());
                Object { data, refs: 0 }
            });
            object.refs += 1;
        }
        Ok(())
    }

    /// The chunks `ids` for a `PushMessages` of `node_id` for `run_id` (0: several or none),
    /// or the ids of those missing. When some are missing, those present are held for the
    /// node until it comes back with the rest.
    pub(crate) fn claim(
        &self,
        node_id: u64,
        run_id: u64,
        ids: &HashSet<ObjectId>,
    ) -> Result<HashMap<ObjectId, Bytes>, Vec<ObjectId>> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let missing: Vec<ObjectId> = ids
            .iter()
            .filter(|id| !inner.objects.contains_key(id))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(ids
                .iter()
                .filter_map(|id| inner.objects.get(id).map(|o| (*id, o.data.clone())))
                .collect());
        }
        let held: HashSet<ObjectId> = inner
            .uploads
            .range(node_range(node_id))
            .flat_map(|(_, h)| h.ids.iter().copied())
            .collect();
        let hold = Hold::renewed(&mut inner.uploads, (node_id, run_id), self.lease);
        let mut added = 0;
        for id in ids {
            if let Some(object) = inner.objects.get_mut(id)
                && !held.contains(id)
                && hold.ids.insert(*id)
            {
                object.refs += 1;
                hold.bytes += object.data.len();
                added += object.data.len();
            }
        }
        track(inner, run_id, added);
        Err(missing)
    }

    /// `node_id`'s `PushMessages` has used these chunks: its upload holds on them end.
    pub(crate) fn release_uploads(&self, node_id: u64, ids: &HashSet<ObjectId>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let keys: Vec<UploadKey> = inner
            .uploads
            .range(node_range(node_id))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(hold) = inner.uploads.get_mut(&key) else {
                continue;
            };
            let mut done = Hold {
                ids: HashSet::new(),
                sources: Vec::new(),
                expires: hold.expires,
                renewable_until: hold.expires,
                bytes: 0,
            };
            for id in ids {
                if hold.ids.remove(id) {
                    let len = inner.objects.get(id).map_or(0, |o| o.data.len());
                    hold.bytes = hold.bytes.saturating_sub(len);
                    done.bytes += len;
                    done.ids.insert(*id);
                }
            }
            if hold.ids.is_empty() {
                inner.uploads.remove(&key);
            }
            untrack(inner, key.1, done.bytes);
            release(inner, done);
        }
    }

    /// Ends every hold whose lease has run out.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        let expired: Vec<(u64, u64)> = inner
            .deliveries
            .iter()
            .filter(|(_, h)| h.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(hold) = inner.deliveries.remove(&key) {
                tracing::debug!(
                    node_id = key.0,
                    delivery_id = key.1,
                    "delivery expired before the node confirmed it"
                );
                release(&mut inner, hold);
            }
        }
        let stale: Vec<UploadKey> = inner
            .uploads
            .iter()
            .filter(|(_, h)| h.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for (node_id, run_id) in stale {
            if let Some(hold) = inner.uploads.remove(&(node_id, run_id)) {
                tracing::debug!(node_id, run_id, "unused uploaded chunks expired");
                untrack(&mut inner, run_id, hold.bytes);
                release(&mut inner, hold);
            }
        }
    }
}

/// Counts `len` more bytes of upload holds, in all and for `run_id` (unless 0).
fn track(inner: &mut Inner, run_id: u64, len: usize) {
    inner.upload_bytes += len;
    if run_id != 0 && len > 0 {
        *inner.run_upload_bytes.entry(run_id).or_insert(0) += len;
    }
}

/// Undoes [`track`]; a run that holds nothing leaves the map.
fn untrack(inner: &mut Inner, run_id: u64, len: usize) {
    inner.upload_bytes = inner.upload_bytes.saturating_sub(len);
    if let Entry::Occupied(mut e) = inner.run_upload_bytes.entry(run_id) {
        *e.get_mut() = e.get().saturating_sub(len);
        if *e.get() == 0 {
            e.remove();
        }
    }
}

fn release(inner: &mut Inner, hold: Hold) {
    for id in hold.ids {
        if let Entry::Occupied(mut e) = inner.objects.entry(id) {
            let object = e.get_mut();
            object.refs -= 1;
            if object.refs == 0 {
                inner.bytes -= object.data.len();
                inner.held.sub(object.data.len());
                e.remove();
            }
        }
    }
    for key in hold.sources {
        if let Entry::Occupied(mut e) = inner.digests.entry(key) {
            e.get_mut().users -= 1;
            if e.get().users == 0 {
                e.remove();
            }
        }
    }
}
