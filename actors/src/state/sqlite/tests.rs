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
    assert_eq!(
        counter(&inner.conn, "next_run_id").unwrap(),
        inner.counters.next_run_id
    );
}

fn is_storage<T: std::fmt::Debug>(r: Result<T, StateError>) -> bool {
    matches!(r, Err(StateError::Storage(_)))
}

#[test]
fn a_failed_write_reports_storage_and_changes_nothing() {
    let s = SqliteLinkState::open_in_memory().unwrap();
    let node = s.create_node(lease(100.0)).unwrap();
    s.register_nodes(&[7]);
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
    s.register_nodes(&[8]);
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
