//! Envelopes, ids and the store's hold rules, without a network.

use super::envelope::{self, chunk_of};
use super::id::{ObjectId, hash_chunks};
use super::store::ObjectStore;
use super::{ChunkPolicy, MAX_CHUNK_LEN};
use bytes::{Bytes, BytesMut};
use floret_core::{Array, ArrayRecord, Message, MetricRecord, RecordDict};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

fn policy(threshold: usize, chunk_len: usize, inline_budget: usize) -> ChunkPolicy {
    ChunkPolicy {
        threshold,
        chunk_len,
        inline_budget,
    }
}

fn message(arrays: &[(&str, usize)]) -> Message {
    let mut record = ArrayRecord::new();
    for (i, &(name, len)) in arrays.iter().enumerate() {
        let values: Vec<u8> = (0..len).map(|k| (k * 7 + i) as u8).collect();
        record.insert(name, Array::from_vec(vec![len as i32], values));
    }
    let mut metrics = MetricRecord::new();
    metrics.insert("n", 1i64);
    Message::new(
        RecordDict::new()
            .with("metrics", metrics)
            .with("model", record),
        3,
        "train",
    )
}

/// Splits, hashes, seals, opens and assembles `m`: what both ends of the wire do.
fn through_envelope(m: &Message, p: &ChunkPolicy) -> (Message, usize) {
    let mut budget = p.inline_budget;
    let split = envelope::split(m, p, &mut budget);
    let mut chunks = HashMap::new();
    let ids: Vec<Vec<ObjectId>> = split
        .detached
        .iter()
        .map(|d| {
            let ids = hash_chunks(&d.data, p.chunk_len());
            for (k, id) in ids.iter().enumerate() {
                chunks.insert(*id, chunk_of(&d.data, p.chunk_len(), k));
            }
            ids
        })
        .collect();
    let detached = split.detached.len();
    let opened = envelope::open(split.seal(&ids, 9)).unwrap();
    assert_eq!(opened.delivery_id(), 9);
    let back = envelope::assemble_all(vec![opened], &chunks)
        .unwrap()
        .remove(0);
    (back, detached)
}

#[test]
fn arrays_above_the_threshold_travel_as_chunks_and_come_back_intact() {
    let m = message(&[("small", 100), ("big", 1000), ("exact", 500)]);
    let (back, detached) = through_envelope(&m, &policy(500, 64, 1 << 20));
    assert_eq!(back, m);
    assert_eq!(detached, 1, "only the array above 500 bytes");
}

#[test]
fn inline_arrays_beyond_the_budget_are_chunked_largest_first() {
    let m = message(&[("a", 300), ("b", 400), ("c", 200)]);
    let p = policy(1000, 128, 450);
    let mut budget = p.inline_budget;
    let split = envelope::split(&m, &p, &mut budget);
    let lens: Vec<usize> = split.detached.iter().map(|d| d.data.len()).collect();
    assert_eq!(
        lens,
        [300, 400],
        "b then a leave, listed in message order; c fits"
    );
    assert_eq!(budget, 250);
    assert_eq!(through_envelope(&m, &p).0, m);
}

#[test]
fn one_chunk_arrays_share_the_chunk_and_many_are_copied_once() {
    let m = message(&[("one", 100), ("many", 1000)]);
    let (back, _) = through_envelope(&m, &policy(10, 128, 0));
    assert_eq!(back, m);
}

#[test]
fn chunk_ids_are_sha256_in_lowercase_hex() {
    let id = ObjectId::of(b"abc");
    assert_eq!(
        id.to_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(ObjectId::parse(&id.to_hex().to_uppercase()).unwrap(), id);
    assert!(ObjectId::parse("ba78").is_err());
    assert!(ObjectId::parse(&"g".repeat(64)).is_err());
    assert!(ObjectId::parse(&"é".repeat(32)).is_err());
}

#[test]
fn parallel_hashing_matches_sequential() {
    let data = Bytes::from(
        (0..20_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let ids = hash_chunks(&data, MAX_CHUNK_LEN);
    let expected: Vec<ObjectId> = data.chunks(MAX_CHUNK_LEN).map(ObjectId::of).collect();
    assert_eq!(ids, expected);
}

fn sealed(m: &Message) -> crate::proto::v1::Envelope {
    let p = policy(10, 64, 0);
    let mut budget = 0;
    let split = envelope::split(m, &p, &mut budget);
    let ids: Vec<Vec<ObjectId>> = split
        .detached
        .iter()
        .map(|d| hash_chunks(&d.data, 64))
        .collect();
    split.seal(&ids, 0)
}

#[test]
fn open_refuses_envelopes_that_do_not_fit_their_message() {
    let m = message(&[("w", 200)]);
    let check = |mutate: &dyn Fn(&mut crate::proto::v1::Envelope), expected: &str| {
        let mut e = sealed(&m);
        mutate(&mut e);
        let err = envelope::open(e).err().expect("refused").to_string();
        assert!(err.starts_with(expected), "{err}");
    };
    check(
        &|e| e.chunked_arrays[0].record_index = 0,
        "Envelope.chunked_arrays[0].record_index: points at record \"metrics\", which is not an array record",
    );
    check(
        &|e| e.chunked_arrays[0].array_index = 3,
        "Envelope.chunked_arrays[0].array_index: is 3, but array record \"model\" has 1 arrays",
    );
    check(
        &|e| {
            let again = e.chunked_arrays[0].clone();
            e.chunked_arrays.push(again);
        },
        "Envelope.chunked_arrays[1]: names the same array as an earlier entry",
    );
    check(
        &|e| e.chunked_arrays[0].chunk_ids[1] = "xyz".into(),
        "Envelope.chunked_arrays[0].chunk_ids[1]: \"xyz\" is not an object id",
    );
    check(
        &|e| e.chunked_arrays[0].length = u64::MAX,
        "Envelope.chunked_arrays[0].length: is 18446744073709551615 bytes, which 4 chunks",
    );
    check(
        &|e| e.chunked_arrays[0].length = 2,
        "Envelope.chunked_arrays[0].length: is 2 bytes, which 4 chunks",
    );
}

#[test]
fn arrays_of_the_same_chunks_in_one_batch_share_one_buffer() {
    let m = message(&[("w", 200)]);
    let data = match m.content().unwrap().array_record("model").unwrap().get("w") {
        Ok(a) => a.data.clone(),
        Err(e) => panic!("{e}"),
    };
    let chunks: HashMap<ObjectId, Bytes> = (0..4)
        .map(|k| {
            let c = chunk_of(&data, 64, k);
            (ObjectId::of(&c), c)
        })
        .collect();
    let opened = vec![
        envelope::open(sealed(&m)).unwrap(),
        envelope::open(sealed(&m)).unwrap(),
    ];
    let back = envelope::assemble_all(opened, &chunks).unwrap();
    let w = |m: &Message| {
        m.content()
            .unwrap()
            .array_record("model")
            .unwrap()
            .get("w")
            .unwrap()
            .data
            .clone()
    };
    assert_eq!(back[0], m);
    assert_eq!(back[1], m);
    assert_eq!(
        w(&back[0]).as_ptr(),
        w(&back[1]).as_ptr(),
        "one copy, not two"
    );
}

#[test]
fn assemble_refuses_chunks_that_do_not_add_up() {
    let m = message(&[("w", 200)]);
    let mut e = sealed(&m);
    e.chunked_arrays[0].length = 201;
    let opened = envelope::open(e).unwrap();
    let data = match m.content().unwrap().array_record("model").unwrap().get("w") {
        Ok(a) => a.data.clone(),
        Err(e) => panic!("{e}"),
    };
    let chunks: HashMap<ObjectId, Bytes> = (0..4)
        .map(|k| {
            let c = chunk_of(&data, 64, k);
            (ObjectId::of(&c), c)
        })
        .collect();
    let (index, err) = envelope::assemble_all(vec![opened], &chunks).unwrap_err();
    assert_eq!(index, 0);
    let err = err.to_string();
    assert_eq!(
        err,
        "Envelope.chunked_arrays[0].length: is 201 bytes, but its chunks hold 200"
    );
}

fn sources(len: usize) -> Vec<Bytes> {
    vec![Bytes::from(
        (0..len).map(|i| (i % 253) as u8).collect::<Vec<_>>(),
    )]
}

#[tokio::test]
async fn one_buffer_sent_to_many_nodes_is_hashed_and_stored_once() {
    let store = ObjectStore::new(100, Duration::from_secs(60));
    let model = sources(1000);
    let a = store.deliver(1, &model).await;
    let b = store.deliver(2, &model).await;
    let (c, d) = tokio::join!(store.deliver(3, &model), store.deliver(4, &model));
    assert!([&b, &c, &d].iter().all(|x| x.ids == a.ids));
    assert_eq!(
        store
            .counters
            .chunks_hashed
            .load(std::sync::atomic::Ordering::Relaxed),
        10
    );
    assert_eq!(store.size(), (10, 1000));

    // A copy of the same bytes elsewhere in memory is hashed again but stored once.
    let copy = vec![Bytes::copy_from_slice(&model[0])];
    let e = store.deliver(5, &copy).await;
    assert_eq!(e.ids, a.ids);
    assert_eq!(store.size(), (10, 1000));

    for (node, delivery) in [(1, &a), (2, &b), (3, &c), (4, &d)] {
        assert_eq!(store.size().0, 10);
        store.confirm(node, &[delivery.id]);
    }
    assert_eq!(store.size(), (10, 1000), "node 5 has not confirmed");
    store.confirm(5, &[e.id]);
    assert_eq!(store.size(), (0, 0));
}

#[tokio::test]
async fn a_node_may_fetch_only_chunks_delivered_to_it() {
    let store = ObjectStore::new(100, Duration::from_secs(60));
    let delivery = store.deliver(1, &sources(250)).await;
    let id = delivery.ids[0][0];
    assert_eq!(store.fetch(1, id).map(|b| b.len()), Some(100));
    assert_eq!(store.fetch(2, id), None);
    store.confirm(2, &[delivery.id]);
    assert!(
        store.fetch(1, id).is_some(),
        "another node cannot confirm node 1's delivery"
    );
    store.confirm(1, &[delivery.id]);
    assert_eq!(store.fetch(1, id), None);
}

#[tokio::test(start_paused = true)]
async fn stalled_deliveries_expire_but_progress_extends_them() {
    let store = ObjectStore::new(100, Duration::from_secs(60));
    let delivery = store.deliver(1, &sources(300)).await;
    tokio::time::advance(Duration::from_secs(50)).await;
    assert!(store.fetch(1, delivery.ids[0][0]).is_some());
    tokio::time::advance(Duration::from_secs(50)).await;
    store.sweep();
    assert_eq!(store.size().0, 3, "the fetch 50 s ago extended the lease");
    tokio::time::advance(Duration::from_secs(11)).await;
    store.sweep();
    assert_eq!(store.size(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn uploads_are_kept_until_used_or_expired() {
    let store = ObjectStore::new(100, Duration::from_secs(60));
    let chunk = Bytes::from_static(b"uploaded chunk");
    let id = ObjectId::of(&chunk);
    let other = ObjectId::of(b"not uploaded");
    let wanted: HashSet<ObjectId> = [id, other].into();
    store.put(7, 0, id, chunk.clone()).unwrap();
    assert_eq!(store.claim(7, 0, &wanted).unwrap_err(), vec![other]);
    let only: HashSet<ObjectId> = [id].into();
    assert_eq!(store.claim(7, 0, &only).unwrap().get(&id), Some(&chunk));
    store.release_uploads(7, &only);
    assert_eq!(store.size(), (0, 0));

    store.put(7, 0, id, chunk).unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    store.sweep();
    assert_eq!(store.size(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn uploading_again_and_again_does_not_keep_a_hold_past_six_leases() {
    let store = ObjectStore::new(100, Duration::from_secs(60));
    for i in 0..20u8 {
        let chunk = Bytes::from(vec![i; 10]);
        // Each upload renews the node's hold, but not past six leases from its first.
        store.put(7, 0, ObjectId::of(&chunk), chunk).unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        store.sweep();
        if i < 11 {
            assert!(store.size().0 > 0, "renewed within six leases ({i})");
        }
    }
    // 20 uploads, 30 s apart: the first hold ended at 360 s with its chunks; later
    // uploads started another.
    assert!(store.size().0 < 20, "{:?}", store.size());
    tokio::time::advance(Duration::from_secs(61)).await;
    store.sweep();
    assert_eq!(store.size(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn upload_caps_count_each_node_and_all_nodes_and_free_on_release() {
    let limits = crate::limits::ServerLimits {
        max_upload_bytes_per_node: 20,
        max_upload_bytes: 30,
        ..crate::limits::ServerLimits::default()
    };
    let store = ObjectStore::new(100, Duration::from_secs(60)).limited(limits);
    let chunk = |b: u8| Bytes::from(vec![b; 10]);
    store.put(1, 0, ObjectId::of(&chunk(1)), chunk(1)).unwrap();
    store.put(1, 0, ObjectId::of(&chunk(2)), chunk(2)).unwrap();
    // The same chunk again costs nothing.
    store.put(1, 0, ObjectId::of(&chunk(2)), chunk(2)).unwrap();
    let e = store
        .put(1, 0, ObjectId::of(&chunk(3)), chunk(3))
        .unwrap_err();
    assert!(e.to_string().contains("--max-upload-bytes-per-node"), "{e}");
    store.put(2, 0, ObjectId::of(&chunk(4)), chunk(4)).unwrap();
    let e = store
        .put(3, 0, ObjectId::of(&chunk(5)), chunk(5))
        .unwrap_err();
    assert!(e.to_string().contains("--max-upload-bytes)"), "{e}");
    // Used by node 1's PushMessages: its room comes back, and everyone's.
    let used: HashSet<ObjectId> = [ObjectId::of(&chunk(1)), ObjectId::of(&chunk(2))].into();
    store.release_uploads(1, &used);
    store.put(3, 0, ObjectId::of(&chunk(5)), chunk(5)).unwrap();
    store.put(1, 0, ObjectId::of(&chunk(3)), chunk(3)).unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_run_cap_counts_every_node_of_a_run_and_spares_other_runs() {
    let limits = crate::limits::ServerLimits {
        max_upload_bytes_per_node: 30,
        max_upload_bytes_per_run: 20,
        max_upload_bytes: 100,
        ..crate::limits::ServerLimits::default()
    };
    let store = ObjectStore::new(100, Duration::from_secs(60)).limited(limits);
    let chunk = |b: u8| Bytes::from(vec![b; 10]);
    let put = |node, run, b| store.put(node, run, ObjectId::of(&chunk(b)), chunk(b));
    put(1, 5, 1).unwrap();
    put(2, 5, 2).unwrap();
    let e = put(3, 5, 3).unwrap_err();
    assert!(e.to_string().contains("run 5"), "{e}");
    assert!(e.to_string().contains("--max-upload-bytes-per-run"), "{e}");
    // Another run of the same node is still taken, and so is a chunk that names no run.
    put(3, 6, 3).unwrap();
    put(3, 0, 4).unwrap();
    // Node 1's PushMessages used its chunk: run 5 has room again.
    store.release_uploads(1, &[ObjectId::of(&chunk(1))].into());
    put(3, 5, 7).unwrap();
    // Expired holds give the run's room back as well.
    tokio::time::advance(Duration::from_secs(61)).await;
    store.sweep();
    assert_eq!(store.size(), (0, 0));
    put(4, 5, 8).unwrap();
    put(5, 5, 9).unwrap();
}

/// The receiver's assembly: chunks copied into place as they arrive, in any order.
mod assembly {
    use super::*;
    use crate::objects::assembly::{Assembly, State, hash_into};
    use crate::objects::cache::ChunkCache;
    use std::sync::Arc;

    /// `m` sealed with chunks of 64 bytes, and those chunks in order.
    fn sealed_with_chunks(m: &Message) -> (crate::proto::v1::Envelope, Vec<(ObjectId, Bytes)>) {
        let data = w(m);
        let chunks = (0..data.len().div_ceil(64))
            .map(|k| {
                let c = chunk_of(&data, 64, k);
                (ObjectId::of(&c), c)
            })
            .collect();
        (sealed(m), chunks)
    }

    fn w(m: &Message) -> Bytes {
        m.content()
            .unwrap()
            .array_record("model")
            .unwrap()
            .get("w")
            .unwrap()
            .data
            .clone()
    }

    /// What a blocking thread does with a fetched chunk; whether it matched its id.
    fn feed(state: &mut State, id: ObjectId, data: &Bytes) -> bool {
        let mut claim = state.claim(id, data.len());
        let checked = hash_into(data, claim.slots_mut()) == id;
        state.put_back(claim, data.clone(), checked);
        checked
    }

    #[test]
    fn chunks_arriving_in_any_order_land_at_their_offsets() {
        let m = message(&[("w", 200)]);
        let (e, chunks) = sealed_with_chunks(&m);
        // The last (short) chunk first, before the layout is known; then the rest.
        for order in [[3, 1, 0, 2], [0, 1, 2, 3], [2, 3, 0, 1]] {
            let mut state = State::new(vec![envelope::open(e.clone()).unwrap()]);
            for k in order {
                assert!(feed(&mut state, chunks[k].0, &chunks[k].1));
            }
            let back = state.finish().unwrap();
            assert_eq!(back, vec![m.clone()], "order {order:?}");
        }
    }

    #[test]
    fn the_chunks_are_copied_into_one_buffer_as_they_arrive() {
        let m = message(&[("w", 200)]);
        let (e, chunks) = sealed_with_chunks(&m);
        let mut state = State::new(vec![envelope::open(e).unwrap()]);
        // The first chunk lays the buffer out; each later one fills its slot.
        for (id, data) in &chunks[..3] {
            let mut claim = state.claim(*id, data.len());
            assert_eq!(claim.slots_len(), 1, "copied into place, not kept");
            assert_eq!(hash_into(data, claim.slots_mut()), *id);
            state.put_back(claim, data.clone(), true);
        }
        assert!(feed(&mut state, chunks[3].0, &chunks[3].1));
        assert_eq!(state.finish().unwrap(), vec![m]);
    }

    #[test]
    fn a_chunk_repeated_in_an_array_is_copied_to_every_place() {
        let mut record = ArrayRecord::new();
        let mut values = vec![0u8; 200];
        values[199] = 1;
        record.insert("w", Array::from_vec(vec![200], values));
        let m = Message::new(RecordDict::new().with("model", record), 3, "train");
        let (e, chunks) = sealed_with_chunks(&m);
        assert_eq!(chunks[0].0, chunks[2].0, "three equal chunks");
        let mut state = State::new(vec![envelope::open(e).unwrap()]);
        assert_eq!(state.wanted().len(), 2, "each chunk fetched once");
        let mut claim = state.claim(chunks[0].0, 64);
        assert_eq!(claim.slots_len(), 3);
        hash_into(&chunks[0].1, claim.slots_mut());
        state.put_back(claim, chunks[0].1.clone(), true);
        assert!(feed(&mut state, chunks[3].0, &chunks[3].1));
        assert_eq!(state.finish().unwrap(), vec![m]);
    }

    #[test]
    fn a_corrupt_chunk_fills_nothing_and_the_array_does_not_assemble() {
        let m = message(&[("w", 200)]);
        let (e, chunks) = sealed_with_chunks(&m);
        let mut state = State::new(vec![envelope::open(e).unwrap()]);
        let mut spoiled = chunks[1].1.to_vec();
        spoiled[0] ^= 1;
        assert!(feed(&mut state, chunks[0].0, &chunks[0].1));
        assert!(!feed(&mut state, chunks[1].0, &Bytes::from(spoiled)));
        for (id, data) in &chunks[2..] {
            assert!(feed(&mut state, *id, data));
        }
        let (index, err) = state.finish().unwrap_err();
        assert_eq!(index, 0);
        assert_eq!(
            err.to_string(),
            format!(
                "Envelope.chunked_arrays[0].chunk_ids[1]: chunk {} was not received",
                chunks[1].0
            )
        );
    }

    #[test]
    fn chunks_of_uneven_lengths_are_gathered_and_checked_against_the_length() {
        let m = message(&[("w", 136)]);
        let data = w(&m);
        // 64, 8 and 64 bytes: no single chunk length lays this out.
        let parts = [data.slice(0..64), data.slice(64..72), data.slice(72..136)];
        let mut e = sealed(&m);
        e.chunked_arrays[0].chunk_ids = parts.iter().map(|c| ObjectId::of(c).to_hex()).collect();
        let mut state = State::new(vec![envelope::open(e.clone()).unwrap()]);
        for c in &parts {
            assert!(feed(&mut state, ObjectId::of(c), c));
        }
        assert_eq!(state.finish().unwrap(), vec![m.clone()]);

        e.chunked_arrays[0].length = 137;
        let mut state = State::new(vec![envelope::open(e).unwrap()]);
        for c in &parts {
            assert!(feed(&mut state, ObjectId::of(c), c));
        }
        let (_, err) = state.finish().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Envelope.chunked_arrays[0].length: is 137 bytes, but its chunks hold 136"
        );
    }

    /// An array of one chunk shares the chunk, unless the chunk starts off an 8-byte
    /// boundary (tonic's decode buffers do): then it is copied once, so that every later
    /// read is in place.
    #[test]
    fn a_lone_chunk_off_alignment_is_copied_once_to_aligned_memory() {
        let m = message(&[("w", 40)]);
        let (e, chunks) = sealed_with_chunks(&m);
        assert_eq!(chunks.len(), 1);
        let (id, data) = &chunks[0];
        // The chunk's bytes placed one to seven bytes into a buffer: off alignment.
        let mut buf = BytesMut::zeroed(data.len() + 8);
        let start = (1..8)
            .find(|&k| !(buf[k..].as_ptr() as usize).is_multiple_of(8))
            .unwrap();
        buf[start..start + data.len()].copy_from_slice(data);
        let odd = buf.freeze().slice(start..start + data.len());
        assert!(!(odd.as_ptr() as usize).is_multiple_of(8));
        assert_eq!(&odd[..], &data[..]);
        let mut state = State::new(vec![envelope::open(e).unwrap()]);
        assert!(feed(&mut state, *id, &odd));
        let built = state.finish().unwrap();
        let got = w(&built[0]);
        assert_eq!(&got[..], &data[..]);
        assert!((got.as_ptr() as usize).is_multiple_of(8));
        // An aligned chunk is shared as it came.
        let mut state = State::new(vec![envelope::open(sealed(&m)).unwrap()]);
        assert!(feed(&mut state, *id, data));
        let shared = w(&state.finish().unwrap()[0]);
        if (data.as_ptr() as usize).is_multiple_of(8) {
            assert_eq!(shared.as_ptr(), data.as_ptr());
        }
    }

    #[test]
    fn the_same_array_twice_in_a_batch_is_built_once() {
        let m = message(&[("w", 200)]);
        let (e, chunks) = sealed_with_chunks(&m);
        let opened = vec![
            envelope::open(e.clone()).unwrap(),
            envelope::open(e).unwrap(),
        ];
        let mut state = State::new(opened);
        for (id, data) in &chunks {
            assert!(feed(&mut state, *id, data));
        }
        let back = state.finish().unwrap();
        assert_eq!(back, vec![m.clone(), m]);
        assert_eq!(w(&back[0]).as_ptr(), w(&back[1]).as_ptr(), "one buffer");
    }

    #[tokio::test]
    async fn an_abandoned_assembly_leaves_what_arrived_in_the_cache_for_a_retry() {
        let m = message(&[("w", 200)]);
        let (e, chunks) = sealed_with_chunks(&m);
        let cache = Arc::new(ChunkCache::new(Duration::from_secs(60)));
        let (assembly, missing) =
            Assembly::start(vec![envelope::open(e.clone()).unwrap()], cache.clone());
        assert_eq!(missing, chunks.iter().map(|c| c.0).collect::<Vec<_>>());
        for (id, data) in &chunks[..2] {
            assembly.receive(*id, data.clone()).await.unwrap();
        }
        drop(assembly);
        assert_eq!(cache.size(), (2, 128));

        // The retry fetches only the other two.
        let (assembly, missing) = Assembly::start(vec![envelope::open(e).unwrap()], cache);
        assert_eq!(missing, vec![chunks[2].0, chunks[3].0]);
        for (id, data) in &chunks[2..] {
            assembly.receive(*id, data.clone()).await.unwrap();
        }
        assert_eq!(assembly.finish().await.unwrap().unwrap(), vec![m]);
    }

    #[tokio::test]
    async fn a_corrupt_chunk_is_refused_with_its_actual_id() {
        let m = message(&[("w", 200)]);
        let (e, chunks) = sealed_with_chunks(&m);
        let cache = Arc::new(ChunkCache::new(Duration::from_secs(60)));
        let (assembly, _) = Assembly::start(vec![envelope::open(e).unwrap()], cache.clone());
        let wrong = chunks[1].1.clone();
        let err = assembly
            .receive(chunks[0].0, wrong.clone())
            .await
            .unwrap_err();
        assert_eq!(err, ObjectId::of(&wrong));
        drop(assembly);
        assert_eq!(cache.size(), (0, 0), "a corrupt chunk is not kept");
    }
}

mod fuzz {
    use super::*;
    use crate::proto::v1;
    use proptest::prelude::*;

    fn known_chunks() -> Vec<Bytes> {
        vec![
            Bytes::from_static(&[1u8; 64]),
            Bytes::from_static(&[2u8; 64]),
            Bytes::from_static(&[3u8; 8]),
        ]
    }

    fn chunked_array() -> impl Strategy<Value = v1::ChunkedArray> {
        let id = prop_oneof![
            (0usize..3).prop_map(|i| ObjectId::of(&known_chunks()[i]).to_hex()),
            "[0-9a-fA-F]{0,66}",
            ".{0,8}",
        ];
        (
            0u32..4,
            0u32..4,
            prop_oneof![0u64..300, any::<u64>()],
            proptest::collection::vec(id, 0..6),
        )
            .prop_map(
                |(record_index, array_index, length, chunk_ids)| v1::ChunkedArray {
                    record_index,
                    array_index,
                    length,
                    chunk_ids,
                },
            )
    }

    proptest! {
        /// Whatever chunk list a peer sends with a message, opening and assembling it (all
        /// at the end, or as the chunks arrive) either succeeds or says what is wrong: it
        /// never panics.
        #[test]
        fn arbitrary_chunk_lists_never_panic(
            arrays in proptest::collection::vec(chunked_array(), 0..4),
            strip in any::<bool>(),
        ) {
            let m = message(&[("w", if strip { 0 } else { 8 }), ("v", 0)]);
            let mut e = sealed(&m);
            e.chunked_arrays = arrays;
            let chunks: HashMap<ObjectId, Bytes> =
                known_chunks().into_iter().map(|c| (ObjectId::of(&c), c)).collect();
            if let Ok(opened) = envelope::open(e.clone()) {
                let _ = envelope::assemble_all(vec![opened], &chunks);
            }
            if let Ok(opened) = envelope::open(e) {
                let mut state = crate::objects::assembly::State::new(vec![opened]);
                for (id, c) in &chunks {
                    let mut claim = state.claim(*id, c.len());
                    crate::objects::assembly::hash_into(c, claim.slots_mut());
                    state.put_back(claim, c.clone(), true);
                }
                let _ = state.finish();
            }
        }
    }
}
