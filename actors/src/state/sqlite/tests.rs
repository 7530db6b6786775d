//! Failed writes, which the public API cannot provoke: the database is switched to
//! `query_only`, so every write fails as it would on a full disk or a read-only file.

use super::*;
use floret_core::{RecordDict, SubStatus};

fn lease(until: f64) -> NodeLease {
    NodeLease {
        heartbeat_interval: 10.0,
        online_until: until,
    }
}

fn refuse_writes(s: &SqliteLinkState, refuse: bool) {
    s.lock()
        .conn
        .pragma_update(None, "query_only", refuse)
        .unwrap();
}

/// The counters in memory are the ones in the file.
fn counters_agree(s: &SqliteLinkState) {
    let inner = s.lock();
    assert_eq!(
        counter(&inner.conn, "next_message").unwrap(),
        inner.counters.next_message
    );
}

fn is_storage<T: std::fmt::Debug>(r: Result<T, StateError>) -> bool {
    matches!(r, Err(StateError::Storage(_)))
}

#[test]
fn a_failed_write_reports_storage_and_changes_nothing() {
    let s = SqliteLinkState::open_in_memory().unwrap();
    let node = s.create_node(lease(100.0)).unwrap();
    s.activate_node(7, lease(1000.0)).unwrap();
    let run = s.create_run(NewRun::default()).unwrap();
    s.set_run_status(run, RunStatus::Starting, "").unwrap();
    s.set_run_status(run, RunStatus::Running, "").unwrap();
    s.push_instructions(run, vec![Message::new(RecordDict::new(), node, "a")], 1.0)
        .unwrap();
    let before = (s.runs(), s.held_messages(), s.events(run, 0).unwrap());

    refuse_writes(&s, true);
    assert!(is_storage(s.create_run(NewRun::default())));
    assert!(is_storage(s.set_run_status(
        run,
        RunStatus::Finished(SubStatus::Failed),
        "x"
    )));
    let unknown = Message::new(RecordDict::new(), 99, "b");
    assert!(is_storage(s.push_instructions(run, vec![unknown], 2.0)));
    assert!(is_storage(s.pull_instructions(node, 10)));
    assert!(is_storage(s.push_event(run, RunEvent::Log("x".into()))));
    assert!(is_storage(s.save_checkpoint(run, Bytes::from_static(b"c"))));
    assert!(is_storage(s.store_fab("ab", Bytes::from_static(b"f"))));
    assert!(is_storage(s.create_node(lease(100.0))));
    assert!(is_storage(s.renew_node(node, lease(500.0))));
    assert!(is_storage(s.allow_node_key(Bytes::from_static(b"k"), 1.0)));
    assert!(is_storage(s.activate_node(8, lease(100.0))));
    assert!(
        !s.has_node(8),
        "a registration that was not stored did not happen"
    );
    assert!(!s.unregister_node(node, "bye", 2.0));
    assert!(s.has_node(node));
    assert_eq!(s.sweep(200.0), Sweep::default(), "nothing was swept");
    s.set_node_auth(true);
    assert!(!s.node_auth());
    assert_eq!(
        (s.runs(), s.held_messages(), s.events(run, 0).unwrap()),
        before
    );
    assert_eq!(s.checkpoint(run), Ok(None));
    counters_agree(&s);

    refuse_writes(&s, false);
    assert_eq!(s.pull_instructions(node, 10).unwrap().len(), 1);
    let ids = s
        .push_instructions(run, vec![Message::new(RecordDict::new(), 99, "b")], 3.0)
        .unwrap();
    assert_eq!(s.held_messages(), 2, "{ids:?}");
    assert_eq!(
        s.sweep(200.0).offline,
        vec![node],
        "the lease was not renewed"
    );
    counters_agree(&s);
}

fn stored_payloads(s: &SqliteLinkState) -> (i64, i64) {
    s.lock()
        .conn
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM contents",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

#[test]
fn a_broadcast_payload_is_stored_once_and_released_with_its_last_instruction() {
    use floret_core::{Array, ArrayRecord};
    let s = SqliteLinkState::open_in_memory().unwrap();
    let nodes: Vec<u64> = (0..4)
        .map(|_| s.create_node(lease(100.0)).unwrap())
        .collect();
    let run = s.create_run(NewRun::default()).unwrap();
    s.set_run_status(run, RunStatus::Starting, "").unwrap();
    s.set_run_status(run, RunStatus::Running, "").unwrap();
    let model = |fill: f32| {
        let mut arrays = ArrayRecord::new();
        arrays.insert("w", Array::from_slice(&[fill; 4096]));
        let mut content = RecordDict::new();
        content.insert("arrays", arrays);
        content
    };
    let broadcast: Vec<Message> = nodes
        .iter()
        .map(|&n| Message::new(model(1.0), n, "train"))
        .collect();
    s.push_instructions(run, broadcast, 1.0).unwrap();
    let (rows, bytes) = stored_payloads(&s);
    assert_eq!(rows, 1, "four copies of one model are stored once");
    assert!(bytes > 16_384 && bytes < 2 * 16_384, "{bytes}");

    // Another payload, sent to one node, is stored beside it.
    s.push_instructions(run, vec![Message::new(model(2.0), nodes[0], "train")], 2.0)
        .unwrap();
    assert_eq!(stored_payloads(&s).0, 2);

    // Every node gets its own full copy back.
    for &n in &nodes {
        for m in s.pull_instructions(n, 10).unwrap() {
            let want = if m.metadata.created_at == 2.0 {
                2.0
            } else {
                1.0
            };
            assert_eq!(m.payload, floret_core::Payload::Content(model(want)));
            s.push_reply(
                m.reply(floret_core::Payload::Content(RecordDict::new())),
                3.0,
            )
            .unwrap();
        }
    }
    assert_eq!(
        stored_payloads(&s),
        (0, 0),
        "answered instructions release their payload"
    );
    assert_eq!(s.held_messages(), 5 /* replies */);
}
