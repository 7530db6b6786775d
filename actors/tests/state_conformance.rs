//! One suite, two stores: every test here runs against `MemoryLinkState` and against
//! `SqliteLinkState`, so the durable store is held to the same contract as the reference
//! (the docs on `LinkState`). What only the in-memory store offers (`SimulationStore`, for a
//! simulation's virtual fleet) is tested in `memory_only`; tests only the SQLite store can
//! fail (restart, refusing bad files, a flat file over a long run) follow in `sqlite_only`.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use bytes::Bytes;
use floret_actors::state::prelude::*;
use floret_actors::state::{
    MemoryLinkState, NewRun, NodeLease, OpenError, SqliteLinkState, StateError, Sweep,
};
use floret_core::{
    AppRef, Array, ArrayRecord, Message, MessageError, Payload, RecordDict, RunEvent, RunStatus,
    SubStatus, UserConfigValue, error_code,
};
use std::future::Future;
use std::pin::Pin;

/// Generates `mod memory` and `mod sqlite` with one `#[test]` per listed function, each
/// given a fresh store.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[test]
            fn $name() {
                super::$name(&floret_actors::state::MemoryLinkState::new());
            })*
        }
        mod sqlite {
            $(#[test]
            fn $name() {
                let (_dir, state) = super::sqlite_store();
                super::$name(&state);
            })*
        }
    };
}

conformance!(
    runs_follow_the_state_machine_and_keep_every_field,
    events_are_read_from_a_cursor_and_closed_when_the_run_finishes,
    only_running_runs_send,
    instructions_reach_their_node_and_replies_their_run,
    a_reply_is_accepted_once_and_only_from_its_node,
    redeliver_requeues_unanswered_deliveries_in_order,
    take_replies_to_takes_only_the_named_replies,
    purge_drops_one_runs_messages,
    an_instruction_to_an_unknown_node_is_answered_at_once,
    a_leaving_node_has_its_queued_and_delivered_instructions_answered,
    sweep_forgets_nodes_past_their_lease_only,
    a_registered_node_counts_only_once_it_shows_it_is_alive,
    sweep_answers_expired_instructions_queued_or_delivered,
    signals_fire_for_their_node_and_run_only,
    node_keys_bind_ids_and_list_nodes,
    a_fab_is_stored_once_per_hash,
    checkpoints_are_replaced_and_closed_with_the_run,
    held_messages_drops_to_zero_once_everything_is_answered_and_taken,
    resumes_are_counted_per_run_until_cleared,
    a_finished_runs_checkpoint_is_dropped_an_unfinished_ones_kept,
    deleting_runs_takes_their_logs_and_fabs_no_run_left_refers_to,
);

fn sqlite_store() -> (tempfile::TempDir, SqliteLinkState) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = SqliteLinkState::open(&dir.path().join("state.db")).expect("a fresh database");
    (dir, state)
}

fn lease(until: f64) -> NodeLease {
    NodeLease {
        heartbeat_interval: 10.0,
        online_until: until,
    }
}

/// Registers nodes under known ids with a lease that outlasts every test, alive.
fn connect(s: &dyn LinkState, node_ids: &[u64]) {
    for &id in node_ids {
        s.activate_node(id, lease(1e9)).unwrap();
        s.node_alive(id).unwrap();
    }
}

fn running_run(s: &dyn LinkState) -> u64 {
    let id = s.create_run(NewRun::default()).unwrap();
    s.set_run_status(id, RunStatus::Starting, "").unwrap();
    s.set_run_status(id, RunStatus::Running, "").unwrap();
    id
}

fn msg(node: u64, kind: &str) -> Message {
    Message::new(RecordDict::new(), node, kind)
}

fn ok_reply(m: &Message) -> Message {
    m.reply(Payload::Content(RecordDict::new()))
}

fn only_error(s: &dyn LinkState, run: u64) -> MessageError {
    let mut replies = s.take_replies(run).unwrap();
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies.remove(0).error().expect("an error reply").clone()
}

fn types(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| m.metadata.message_type.clone())
        .collect()
}

fn runs_follow_the_state_machine_and_keep_every_field(s: &dyn LinkState) {
    let mut run_config = floret_core::UserConfig::default();
    run_config.insert("num-server-rounds".into(), UserConfigValue::Int(3));
    run_config.insert("lr".into(), UserConfigValue::Float(0.5));
    let new = NewRun {
        app: AppRef {
            name: "digits".into(),
            serverapp: "digits.server_app:app".into(),
            clientapp: "digits.client_app:app".into(),
            fab_hash: "ab".repeat(32),
        },
        federation: "local".into(),
        run_config: run_config.clone(),
        owner: "alice".into(),
        federation_options: run_config.clone(),
    };
    let a = s.create_run(new.clone()).unwrap();
    let b = s.create_run(NewRun::default()).unwrap();
    assert_ne!(a, b);
    let info = s.run(a).unwrap();
    assert_eq!(
        (
            info.run_id,
            &info.app,
            &info.federation,
            &info.run_config,
            &info.owner
        ),
        (a, &new.app, &new.federation, &run_config, &new.owner)
    );
    assert_eq!(info.status, RunStatus::Pending);
    assert!(info.created_at > 0.0 && info.status_changed_at >= info.created_at);
    assert!(matches!(
        s.set_run_status(a, RunStatus::Running, ""),
        Err(StateError::Transition(_))
    ));
    s.set_run_status(a, RunStatus::Starting, "").unwrap();
    s.set_run_status(a, RunStatus::Running, "").unwrap();
    let failed = s
        .set_run_status(a, RunStatus::Finished(SubStatus::Failed), "boom")
        .unwrap();
    assert_eq!(failed.reason, "boom");
    assert_eq!(s.run(a), Some(failed), "the change is what is read back");
    assert_eq!(
        s.run_status(a),
        Some(RunStatus::Finished(SubStatus::Failed))
    );
    assert!(matches!(
        s.set_run_status(a, RunStatus::Running, ""),
        Err(StateError::Transition(_))
    ));
    // Listed in the order they were submitted (ids are random; equal times by id).
    let runs = s.runs();
    assert!(
        runs.windows(2)
            .all(|w| (w[0].created_at, w[0].run_id) <= (w[1].created_at, w[1].run_id)),
        "{runs:?}"
    );
    let mut ids: Vec<u64> = runs.iter().map(|r| r.run_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [a.min(b), a.max(b)]);
    assert_eq!(s.run(999), None);
    assert_eq!(s.run_status(999), None);
    // A `--simulation` SuperLink builds a resumed run's fleet from these.
    assert_eq!(s.federation_options(a).unwrap(), run_config);
    assert!(s.federation_options(b).unwrap().is_empty());
    assert_eq!(s.federation_options(999), Err(StateError::UnknownRun(999)));
    assert_eq!(
        s.set_run_status(999, RunStatus::Starting, ""),
        Err(StateError::UnknownRun(999))
    );
    assert!(matches!(s.signals(999), Err(StateError::UnknownRun(999))));
}

fn events_are_read_from_a_cursor_and_closed_when_the_run_finishes(s: &dyn LinkState) {
    let run = s.create_run(NewRun::default()).unwrap();
    assert_eq!(s.events(run, 0).unwrap(), (vec![], 0));
    s.push_event(run, RunEvent::Log("a".into())).unwrap();
    s.push_event(
        run,
        RunEvent::RoundStarted {
            round: 1,
            num_rounds: 3,
        },
    )
    .unwrap();
    let (first, next) = s.events(run, 0).unwrap();
    assert_eq!(
        first,
        vec![
            RunEvent::Log("a".into()),
            RunEvent::RoundStarted {
                round: 1,
                num_rounds: 3
            }
        ]
    );
    assert_eq!(next, 2);
    s.push_event(run, RunEvent::Log("c".into())).unwrap();
    assert_eq!(
        s.events(run, next).unwrap(),
        (vec![RunEvent::Log("c".into())], 3)
    );
    assert_eq!(
        s.events(run, 10).unwrap(),
        (vec![], 3),
        "a cursor past the end"
    );
    s.set_run_status(run, RunStatus::Finished(SubStatus::Stopped), "")
        .unwrap();
    assert_eq!(
        s.push_event(run, RunEvent::Log("late".into())),
        Err(StateError::RunFinished(run))
    );
    assert_eq!(s.events(run, 0).unwrap().1, 3, "the log is final");
    assert_eq!(
        s.push_event(77, RunEvent::Log("x".into())),
        Err(StateError::UnknownRun(77))
    );
    assert!(matches!(s.events(77, 0), Err(StateError::UnknownRun(77))));
}

fn only_running_runs_send(s: &dyn LinkState) {
    connect(s, &[1]);
    let pending = s.create_run(NewRun::default()).unwrap();
    assert_eq!(
        s.push_instructions(pending, vec![msg(1, "train")], 0.0),
        Err(StateError::RunNotRunning(pending))
    );
    assert_eq!(
        s.push_instructions(42, vec![msg(1, "train")], 0.0),
        Err(StateError::UnknownRun(42))
    );
    assert_eq!(s.held_messages(), 0);
}

fn instructions_reach_their_node_and_replies_their_run(s: &dyn LinkState) {
    connect(s, &[5, 6]);
    let run = running_run(s);
    let mut m = msg(6, "train").with_group_id("2");
    m.metadata.src_node_id = 99;
    m.metadata.ttl = 30.0;
    let ids = s
        .push_instructions(run, vec![m, msg(6, "evaluate")], 7.0)
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    assert!(s.pull_instructions(5, 10).unwrap().is_empty());
    let got = s.pull_instructions(6, 1).unwrap();
    assert_eq!(got.len(), 1, "the limit holds");
    let md = &got[0].metadata;
    assert_eq!(
        (&md.message_id, md.run_id, md.src_node_id, md.dst_node_id),
        (&ids[0], run, 0, 6)
    );
    assert_eq!(
        (md.created_at, md.ttl, md.group_id.as_str()),
        (7.0, 30.0, "2")
    );
    assert_eq!(types(&s.pull_instructions(6, 10).unwrap()), ["evaluate"]);
    s.push_reply(ok_reply(&got[0]), 8.0).unwrap();
    let replies = s.take_replies(run).unwrap();
    assert_eq!(replies.len(), 1);
    let r = &replies[0].metadata;
    assert_eq!(
        (r.reply_to_message_id.as_str(), r.run_id),
        (ids[0].as_str(), run)
    );
    assert_eq!(r.created_at, 8.0);
    assert!(
        !ids.contains(&r.message_id),
        "a reply gets an id of its own"
    );
    assert!(s.take_replies(run).unwrap().is_empty(), "taken once");
    assert_eq!(s.pull_instructions(9, 1), Err(StateError::UnknownNode(9)));
    assert!(matches!(
        s.take_replies(404),
        Err(StateError::UnknownRun(404))
    ));
}

fn a_reply_is_accepted_once_and_only_from_its_node(s: &dyn LinkState) {
    connect(s, &[5]);
    let run = running_run(s);
    s.push_instructions(run, vec![msg(5, "train")], 1.0)
        .unwrap();
    let m = s.pull_instructions(5, 1).unwrap().remove(0);
    let mut forged = ok_reply(&m);
    forged.metadata.src_node_id = 9;
    assert_eq!(
        s.push_reply(forged, 2.0),
        Err(StateError::WrongReplier {
            message_id: m.metadata.message_id.clone(),
            from: 9,
            to: 5
        })
    );
    assert_eq!(s.held_messages(), 1, "a refused reply changes nothing");
    let reply = ok_reply(&m);
    s.push_reply(reply.clone(), 2.0).unwrap();
    assert!(matches!(
        s.push_reply(reply, 3.0),
        Err(StateError::UnknownReply(_))
    ));
    let mut unknown = ok_reply(&m);
    unknown.metadata.reply_to_message_id = "nope".into();
    assert_eq!(
        s.push_reply(unknown, 3.0),
        Err(StateError::UnknownReply("nope".into()))
    );
    assert_eq!(s.take_replies(run).unwrap().len(), 1);
}

fn redeliver_requeues_unanswered_deliveries_in_order(s: &dyn LinkState) {
    let node = s.create_node(lease(100.0)).unwrap();
    let run = running_run(s);
    let msgs = ["train", "evaluate", "query"].map(|t| msg(node, t));
    s.push_instructions(run, msgs.to_vec(), 1.0).unwrap();
    let first = s.pull_instructions(node, 2).unwrap();
    s.push_reply(ok_reply(&first[0]), 2.0).unwrap();
    assert_eq!(s.redeliver(node), Ok(1), "only the unanswered one");
    assert_eq!(
        types(&s.pull_instructions(node, 10).unwrap()),
        ["evaluate", "query"]
    );
    let again = ok_reply(&first[1]);
    s.push_reply(again.clone(), 3.0).unwrap();
    assert!(
        s.push_reply(again, 3.0).is_err(),
        "a reply is accepted once"
    );
    assert_eq!(s.redeliver(node), Ok(1), "the query is still out");
    assert_eq!(s.redeliver(node), Ok(0), "nothing delivered since");
    s.push_instructions(run, vec![msg(node, "late")], 4.0)
        .unwrap();
    assert_eq!(
        types(&s.pull_instructions(node, 10).unwrap()),
        ["query", "late"],
        "redelivered work goes before newer work"
    );
    assert_eq!(s.redeliver(7), Err(StateError::UnknownNode(7)));
}

fn pull_any_serves_nodes_in_arrival_order_within_the_limit(s: &dyn SimulationStore) {
    s.register_nodes(&[1, 2, 3]);
    let run = running_run(s);
    let msgs = [3, 1, 3, 2, 1].map(|n| msg(n, "train"));
    s.push_instructions(run, msgs.to_vec(), 0.0).unwrap();
    let dst = |v: Vec<Message>| v.iter().map(|m| m.metadata.dst_node_id).collect::<Vec<_>>();
    assert_eq!(dst(s.pull_any_instructions(1, 0.0)), [3]);
    assert_eq!(dst(s.pull_any_instructions(10, 0.0)), [3, 1, 1, 2]);
    assert!(s.pull_any_instructions(10, 0.0).is_empty());
    assert_eq!(s.redeliver(3), Ok(0), "pull_any is not a node's delivery");
    assert_eq!(s.held_messages(), 5, "taken but not answered");
}

fn take_replies_to_takes_only_the_named_replies(s: &dyn LinkState) {
    connect(s, &[1, 2, 3]);
    let run = running_run(s);
    let ids = s
        .push_instructions(run, [1, 2, 3].map(|n| msg(n, "train")).to_vec(), 0.0)
        .unwrap();
    for n in [3, 1, 2] {
        let m = s.pull_instructions(n, 1).unwrap().remove(0);
        s.push_reply(ok_reply(&m), 1.0).unwrap();
    }
    let wanted = [
        ids[1].clone(),
        ids[2].clone(),
        ids[2].clone(),
        "other".into(),
    ];
    let got = s.take_replies_to(run, &wanted).unwrap();
    let answered: Vec<&str> = got
        .iter()
        .map(|m| m.metadata.reply_to_message_id.as_str())
        .collect();
    assert_eq!(
        answered,
        [ids[2].as_str(), ids[1].as_str()],
        "oldest first, once each"
    );
    let rest = s.take_replies(run).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].metadata.reply_to_message_id, ids[0]);
    assert!(matches!(
        s.take_replies_to(404, &ids),
        Err(StateError::UnknownRun(404))
    ));
}

fn purge_drops_one_runs_messages(s: &dyn LinkState) {
    connect(s, &[1]);
    let gone = running_run(s);
    let kept = running_run(s);
    s.push_instructions(gone, vec![msg(1, "a"), msg(1, "b"), msg(9, "c")], 0.0)
        .unwrap();
    let delivered = s.pull_instructions(1, 1).unwrap().remove(0);
    s.push_instructions(kept, vec![msg(1, "k")], 0.0).unwrap();
    assert_eq!(
        s.held_messages(),
        4,
        "two queued, one delivered... and one error reply"
    );
    s.purge_messages(gone);
    assert_eq!(s.held_messages(), 1);
    assert!(s.take_replies(gone).unwrap().is_empty());
    assert!(s.push_reply(ok_reply(&delivered), 1.0).is_err());
    assert_eq!(s.redeliver(1), Ok(0));
    assert_eq!(types(&s.pull_instructions(1, 10).unwrap()), ["k"]);
}

fn an_instruction_to_an_unknown_node_is_answered_at_once(s: &dyn LinkState) {
    let run = running_run(s);
    let mut m = msg(42, "train").with_group_id("3");
    m.metadata.ttl = 12.0;
    let ids = s.push_instructions(run, vec![m], 5.0).unwrap();
    let reply = s.take_replies(run).unwrap().remove(0);
    let md = &reply.metadata;
    assert_eq!(md.reply_to_message_id, ids[0]);
    assert_eq!((md.src_node_id, md.dst_node_id, md.run_id), (42, 0, run));
    assert_eq!(
        (md.group_id.as_str(), md.message_type.as_str()),
        ("3", "train")
    );
    assert_ne!(md.message_id, ids[0]);
    let err = reply.error().unwrap();
    assert_eq!(err.code, error_code::NODE_UNAVAILABLE);
    assert!(
        err.reason.starts_with("node 42 unavailable: "),
        "{}",
        err.reason
    );
    assert_eq!(s.held_messages(), 0, "nothing queued for any node");
}

fn a_leaving_node_has_its_queued_and_delivered_instructions_answered(s: &dyn LinkState) {
    let node = s.create_node(lease(100.0)).unwrap();
    assert_ne!(node, 0);
    assert!(s.has_node(node));
    let run = running_run(s);
    s.push_instructions(run, vec![msg(node, "train"), msg(node, "evaluate")], 1.0)
        .unwrap();
    let delivered = s.pull_instructions(node, 1).unwrap();
    assert!(s.unregister_node(node, "it deactivated", 2.0));
    let replies = s.take_replies(run).unwrap();
    assert_eq!(replies.len(), 2);
    for r in &replies {
        assert_eq!(
            r.error().map(|e| e.reason.clone()),
            Some(format!("node {node} unavailable: it deactivated"))
        );
    }
    assert!(s.node_ids().is_empty());
    assert!(!s.has_node(node));
    assert_eq!(
        s.pull_instructions(node, 1),
        Err(StateError::UnknownNode(node))
    );
    assert!(
        s.push_reply(ok_reply(&delivered[0]), 3.0).is_err(),
        "a late reply to an answered instruction is refused"
    );
    assert!(!s.unregister_node(node, "again", 3.0));
    assert_eq!(s.held_messages(), 0);
}

fn sweep_forgets_nodes_past_their_lease_only(s: &dyn LinkState) {
    let late = s.create_node(lease(10.0)).unwrap();
    let fine = s.create_node(lease(30.0)).unwrap();
    let run = running_run(s);
    s.push_instructions(run, vec![msg(late, "train")], 1.0)
        .unwrap();
    assert_eq!(
        s.sweep(10.0),
        Sweep::default(),
        "the lease end itself is still online"
    );
    let sweep = s.sweep(10.5);
    assert_eq!(sweep.offline, vec![late]);
    let err = only_error(s, run);
    assert_eq!(err.code, error_code::NODE_UNAVAILABLE);
    assert_eq!(
        err.reason,
        format!("node {late} unavailable: it missed its heartbeats and is offline")
    );
    s.renew_node(fine, lease(40.0)).unwrap();
    s.node_alive(fine).unwrap();
    assert!(s.sweep(35.0).offline.is_empty());
    assert_eq!(
        s.renew_node(late, lease(50.0)),
        Err(StateError::UnknownNode(late))
    );
    assert_eq!(s.node_ids().to_vec(), vec![fine]);
}

/// A ghost node: registered (by anyone who reaches the Fleet API, or a SuperNode that
/// crashed at once) and never heard from again. It is listed, offline, but no ServerApp
/// samples it or waits for it; its first sign of life makes it count.
fn a_registered_node_counts_only_once_it_shows_it_is_alive(s: &dyn LinkState) {
    let ghost = s.create_node(lease(1e9)).unwrap();
    let keyed = 77;
    s.activate_node(keyed, lease(1e9)).unwrap();
    assert!(
        s.has_node(ghost) && s.has_node(keyed),
        "both are registered"
    );
    assert!(s.node_ids().is_empty(), "neither is offered to ServerApps");
    let listed: Vec<(u64, bool)> = s
        .nodes_info()
        .iter()
        .map(|n| (n.node_id, n.online))
        .collect();
    assert!(listed.contains(&(ghost, false)), "{listed:?}");
    s.node_alive(keyed).unwrap();
    assert_eq!(s.node_ids().to_vec(), vec![keyed]);
    s.node_alive(keyed).unwrap();
    assert_eq!(s.node_ids().to_vec(), vec![keyed], "once is enough");
    assert_eq!(s.node_alive(5), Err(StateError::UnknownNode(5)));
    // Registering again (a keyed SuperNode restarting) keeps an alive node alive.
    s.activate_node(keyed, lease(2e9)).unwrap();
    assert_eq!(s.node_ids().to_vec(), vec![keyed]);
    assert!(s.unregister_node(keyed, "gone", 1.0));
    s.activate_node(keyed, lease(1e9)).unwrap();
    assert!(
        s.node_ids().is_empty(),
        "a new registration starts not alive"
    );
}

fn virtual_nodes_never_expire_even_when_renewed(s: &dyn SimulationStore) {
    let late = s.create_node(lease(10.0)).unwrap();
    s.register_nodes(&[7]);
    s.renew_node(7, lease(1.0)).unwrap();
    assert_eq!(s.sweep(35.0).offline, vec![late]);
    assert_eq!(
        s.node_ids().to_vec(),
        vec![7],
        "virtual nodes never expire, even when renewed"
    );
}

fn sweep_answers_expired_instructions_queued_or_delivered(s: &dyn LinkState) {
    connect(s, &[1, 2]);
    let run = running_run(s);
    let mut queued = msg(1, "train");
    queued.metadata.ttl = 5.0;
    let mut delivered = msg(2, "evaluate");
    delivered.metadata.ttl = 5.0;
    let mut long = msg(1, "query");
    long.metadata.ttl = 50.0;
    s.push_instructions(run, vec![queued, delivered, long], 100.0)
        .unwrap();
    let out = s.pull_instructions(2, 1).unwrap().remove(0);
    assert_eq!(
        s.sweep(105.0).expired,
        0,
        "the TTL's end itself is still alive"
    );
    assert_eq!(s.sweep(106.0).expired, 2);
    let replies = s.take_replies(run).unwrap();
    assert_eq!(replies.len(), 2);
    for r in &replies {
        let e = r.error().expect("an error reply");
        assert_eq!(e.code, error_code::MESSAGE_TTL_EXPIRED);
        assert!(e.reason.contains("TTL of 5 s"), "{}", e.reason);
    }
    assert_eq!(
        types(&s.pull_instructions(1, 10).unwrap()),
        ["query"],
        "taken off the queue"
    );
    assert_eq!(s.redeliver(2), Ok(0), "nor redelivered");
    assert!(s.push_reply(ok_reply(&out), 107.0).is_err());
    assert_eq!(s.held_messages(), 1);
}

/// Whether a registered wait has been woken, without a runtime.
fn woken(f: Pin<&mut tokio::sync::futures::Notified<'_>>) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    f.poll(&mut cx).is_ready()
}

fn signals_fire_for_their_node_and_run_only(s: &dyn LinkState) {
    let a = s.create_node(lease(100.0)).unwrap();
    let b = s.create_node(lease(100.0)).unwrap();
    let run = running_run(s);
    let other = running_run(s);
    let (sig_a, sig_b) = (s.node_signal(a).unwrap(), s.node_signal(b).unwrap());
    let (run_sig, other_sig) = (s.signals(run).unwrap(), s.signals(other).unwrap());
    let wait_a = sig_a.notified();
    let wait_b = sig_b.notified();
    let replies = run_sig.replies.notified();
    let quiet = other_sig.replies.notified();
    tokio::pin!(wait_a, wait_b, replies, quiet);
    for w in [&mut wait_a, &mut wait_b, &mut replies, &mut quiet] {
        w.as_mut().enable();
    }
    s.push_instructions(run, vec![msg(a, "train")], 1.0)
        .unwrap();
    assert!(woken(wait_a.as_mut()));
    assert!(!woken(wait_b.as_mut()));
    let m = s.pull_instructions(a, 1).unwrap().remove(0);
    assert!(!woken(replies.as_mut()));
    s.push_reply(ok_reply(&m), 2.0).unwrap();
    assert!(woken(replies.as_mut()));
    assert!(!woken(quiet.as_mut()));
    s.unregister_node(b, "bye", 2.0);
    assert!(
        woken(wait_b.as_mut()),
        "a leaving node's deliverer is woken"
    );
    let events = run_sig.events.notified();
    tokio::pin!(events);
    events.as_mut().enable();
    s.push_event(run, RunEvent::Log("x".into())).unwrap();
    assert!(woken(events.as_mut()));
    let ended = other_sig.events.notified();
    tokio::pin!(ended);
    ended.as_mut().enable();
    s.set_run_status(other, RunStatus::Finished(SubStatus::Stopped), "")
        .unwrap();
    assert!(woken(ended.as_mut()), "watchers see the run end");
    assert!(woken(quiet.as_mut()), "and so does its ServerApp");
    assert!(matches!(s.node_signal(b), Err(StateError::UnknownNode(_))));
}

fn a_fleet_is_woken_when_instructions_are_queued(s: &dyn SimulationStore) {
    let a = s.create_node(lease(100.0)).unwrap();
    let run = running_run(s);
    let ready = s.instructions_ready().notified();
    tokio::pin!(ready);
    ready.as_mut().enable();
    s.push_instructions(run, vec![msg(a, "train")], 1.0)
        .unwrap();
    assert!(woken(ready.as_mut()));
}

fn node_keys_bind_ids_and_list_nodes(s: &dyn LinkState) {
    assert!(!s.node_auth());
    s.set_node_auth(true);
    assert!(s.node_auth());
    let key_a = Bytes::from_static(b"key a DER");
    let key_b = Bytes::from_static(b"key b DER");
    let a = s.allow_node_key(key_a.clone(), 10.0).unwrap();
    let b = s.allow_node_key(key_b.clone(), 11.0).unwrap();
    assert_ne!(a, b);
    assert!(a != 0 && b != 0);
    assert_eq!(
        s.allow_node_key(key_a.clone(), 12.0),
        Ok(a),
        "a key keeps its id"
    );
    assert_eq!(s.node_id_of_key(&key_a), Some(a));
    assert!(s.admits(&key_b) && !s.admits(b"stranger"));
    assert!(s.owns(a, &key_a) && !s.owns(b, &key_a));
    assert!(!s.has_node(a), "allowed is not registered");
    s.activate_node(a, lease(100.0)).unwrap();
    s.activate_node(a, lease(200.0)).unwrap();
    assert!(s.has_node(a));
    s.node_alive(a).unwrap();
    s.node_seen(a, 15.0);
    connect(s, &[3]);
    let info = s.nodes_info();
    let mut want = vec![
        (a, true, 10.0, Some(15.0)),
        (b, false, 11.0, None),
        (3, true, 0.0, None),
    ];
    want.sort_by_key(|w| w.0);
    let got: Vec<_> = info
        .iter()
        .map(|n| (n.node_id, n.online, n.registered_at, n.last_seen))
        .collect();
    assert_eq!(got, want);
    let keys: Vec<&[u8]> = info.iter().map(|n| n.public_key.as_ref()).collect();
    assert!(keys.contains(&key_a.as_ref()) && keys.contains(&&b""[..]));
    assert_eq!(
        s.sweep(150.0).offline,
        Vec::<u64>::new(),
        "the second activation renewed"
    );
    assert_eq!(s.disallow_node(b), Some(key_b.clone()));
    assert_eq!(s.disallow_node(b), None);
    assert_eq!(s.node_id_of_key(&key_b), None);
    assert!(!s.admits(&key_b));
    let again = s.allow_node_key(key_b, 20.0).unwrap();
    assert!(
        again != a,
        "a key allowed again never takes another key's id"
    );
    s.set_node_auth(false);
    assert!(!s.node_auth());
}

fn a_fab_is_stored_once_per_hash(s: &dyn LinkState) {
    let hash = "ABCDEF".to_string() + &"0".repeat(58);
    assert_eq!(s.fab(&hash), None);
    s.store_fab(&hash, Bytes::from_static(b"first")).unwrap();
    s.store_fab(&hash.to_ascii_lowercase(), Bytes::from_static(b"second"))
        .unwrap();
    assert_eq!(
        s.fab(&hash.to_ascii_lowercase()),
        Some(Bytes::from_static(b"first"))
    );
    assert_eq!(
        s.fab(&hash),
        Some(Bytes::from_static(b"first")),
        "hashes ignore case"
    );
    assert_eq!(s.fab(&"1".repeat(64)), None);
}

fn checkpoints_are_replaced_and_closed_with_the_run(s: &dyn LinkState) {
    let run = running_run(s);
    let other = running_run(s);
    assert_eq!(s.checkpoint(run), Ok(None));
    s.save_checkpoint(run, Bytes::from_static(b"round 1"))
        .unwrap();
    s.save_checkpoint(run, Bytes::from_static(b"round 2"))
        .unwrap();
    s.save_checkpoint(other, Bytes::from_static(b"other"))
        .unwrap();
    assert_eq!(s.checkpoint(run), Ok(Some(Bytes::from_static(b"round 2"))));
    s.set_run_status(run, RunStatus::Finished(SubStatus::Completed), "")
        .unwrap();
    assert_eq!(
        s.save_checkpoint(run, Bytes::from_static(b"round 3")),
        Err(StateError::RunFinished(run))
    );
    assert_eq!(s.checkpoint(run), Ok(Some(Bytes::from_static(b"round 2"))));
    assert_eq!(s.checkpoint(other), Ok(Some(Bytes::from_static(b"other"))));
    assert_eq!(s.checkpoint(404), Err(StateError::UnknownRun(404)));
    assert_eq!(
        s.save_checkpoint(404, Bytes::new()),
        Err(StateError::UnknownRun(404))
    );
}

fn held_messages_drops_to_zero_once_everything_is_answered_and_taken(s: &dyn LinkState) {
    connect(s, &[1, 2]);
    let gone = s.create_node(lease(5.0)).unwrap();
    let run = running_run(s);
    let mut short = msg(2, "evaluate");
    short.metadata.ttl = 1.0;
    s.push_instructions(
        run,
        vec![msg(1, "train"), short, msg(gone, "x"), msg(77, "y")],
        1.0,
    )
    .unwrap();
    assert_eq!(s.held_messages(), 4, "three out, one answered at once");
    let m = s.pull_instructions(1, 10).unwrap().remove(0);
    s.push_reply(ok_reply(&m), 2.0).unwrap();
    assert_eq!(
        s.held_messages(),
        4,
        "the instruction is dropped for its reply"
    );
    assert_eq!(
        s.sweep(10.0),
        Sweep {
            offline: vec![gone],
            expired: 1
        }
    );
    assert_eq!(s.held_messages(), 4, "all answered, no reply taken");
    assert_eq!(s.take_replies(run).unwrap().len(), 4);
    assert_eq!(s.held_messages(), 0);
}

mod memory_only {
    use super::*;

    #[test]
    fn pull_any_serves_nodes_in_arrival_order_within_the_limit() {
        super::pull_any_serves_nodes_in_arrival_order_within_the_limit(&MemoryLinkState::new());
    }

    #[test]
    fn virtual_nodes_never_expire_even_when_renewed() {
        super::virtual_nodes_never_expire_even_when_renewed(&MemoryLinkState::new());
    }

    #[test]
    fn a_fleet_is_woken_when_instructions_are_queued() {
        super::a_fleet_is_woken_when_instructions_are_queued(&MemoryLinkState::new());
    }

    #[test]
    fn the_simulation_store_numbers_runs_from_one_and_tells_no_incarnation() {
        let s = MemoryLinkState::for_simulation();
        assert_eq!(running_run(&s), 1);
        assert_eq!(running_run(&s), 2);
        assert_eq!(s.incarnation(), 0);
    }
}

/// What a SuperLink started on fresh state hands out must differ from what the last one
/// did, since its SuperNodes may still hold state under those ids.
fn two_fresh_stores_share_no_run_id_message_id_or_incarnation(
    a: &dyn LinkState,
    b: &dyn LinkState,
) {
    let (run_a, run_b) = (running_run(a), running_run(b));
    assert_ne!(run_a, run_b, "run ids");
    assert_ne!(a.incarnation(), b.incarnation(), "incarnations");
    assert!(a.incarnation() != 0 && b.incarnation() != 0);
    connect(a, &[7]);
    connect(b, &[7]);
    let ids_a = a.push_instructions(run_a, vec![msg(7, "x")], 1.0).unwrap();
    let ids_b = b.push_instructions(run_b, vec![msg(7, "x")], 1.0).unwrap();
    assert_ne!(ids_a, ids_b, "message ids");
}

#[test]
fn two_fresh_memory_stores_share_no_run_id_message_id_or_incarnation() {
    two_fresh_stores_share_no_run_id_message_id_or_incarnation(
        &MemoryLinkState::new(),
        &MemoryLinkState::new(),
    );
}

#[test]
fn two_fresh_sqlite_stores_share_no_run_id_message_id_or_incarnation() {
    let (_a_dir, a) = sqlite_store();
    let (_b_dir, b) = sqlite_store();
    two_fresh_stores_share_no_run_id_message_id_or_incarnation(&a, &b);
}

fn resumes_are_counted_per_run_until_cleared(s: &dyn LinkState) {
    let a = s.create_run(NewRun::default()).unwrap();
    let b = running_run(s);
    assert_eq!(s.count_resume(a), Ok(1));
    assert_eq!(s.count_resume(a), Ok(2));
    assert_eq!(s.count_resume(b), Ok(1), "each run has its own count");
    // A status change keeps the count (SQLite: the run's row is rewritten).
    s.set_run_status(a, RunStatus::Starting, "").unwrap();
    assert_eq!(s.count_resume(a), Ok(3));
    s.clear_resumes(a).unwrap();
    assert_eq!(
        s.count_resume(a),
        Ok(1),
        "a clean shutdown starts the count anew"
    );
    assert_eq!(s.count_resume(99), Err(StateError::UnknownRun(99)));
    assert_eq!(s.clear_resumes(99), Err(StateError::UnknownRun(99)));
}

fn a_finished_runs_checkpoint_is_dropped_an_unfinished_ones_kept(s: &dyn LinkState) {
    let run = running_run(s);
    s.save_checkpoint(run, Bytes::from_static(b"model"))
        .unwrap();
    s.drop_checkpoint(run).unwrap();
    assert_eq!(
        s.checkpoint(run),
        Ok(Some(Bytes::from_static(b"model"))),
        "a running run may yet be resumed from it"
    );
    s.set_run_status(run, RunStatus::Finished(SubStatus::Completed), "")
        .unwrap();
    s.drop_checkpoint(run).unwrap();
    assert_eq!(s.checkpoint(run), Ok(None));
    s.drop_checkpoint(run).unwrap();
    assert_eq!(s.drop_checkpoint(404), Err(StateError::UnknownRun(404)));
}

fn fab_run(s: &dyn LinkState, fab_hash: &str) -> u64 {
    let run = s
        .create_run(NewRun {
            app: AppRef {
                fab_hash: fab_hash.into(),
                ..AppRef::default()
            },
            ..NewRun::default()
        })
        .unwrap();
    s.set_run_status(run, RunStatus::Starting, "").unwrap();
    s.set_run_status(run, RunStatus::Running, "").unwrap();
    run
}

fn deleting_runs_takes_their_logs_and_fabs_no_run_left_refers_to(s: &dyn LinkState) {
    let (shared, own) = ("a".repeat(64), "b".repeat(64));
    s.store_fab(&shared, Bytes::from_static(b"shared")).unwrap();
    s.store_fab(&own, Bytes::from_static(b"own")).unwrap();
    let old = fab_run(s, &shared);
    let alone = fab_run(s, &own.to_ascii_uppercase());
    let going = fab_run(s, &shared);
    connect(s, &[9]);
    s.push_instructions(old, vec![msg(9, "train")], 1.0)
        .unwrap();
    s.push_event(old, RunEvent::Log("old".into())).unwrap();
    s.save_checkpoint(old, Bytes::from_static(b"model"))
        .unwrap();
    for run in [old, alone] {
        s.set_run_status(run, RunStatus::Finished(SubStatus::Completed), "")
            .unwrap();
    }
    assert_eq!(
        s.delete_runs(&[old, alone, going, 404]),
        Ok(2),
        "an unfinished run and an unknown one are left alone"
    );
    assert_eq!(s.run(old), None);
    assert_eq!(s.run_status(alone), None);
    assert_eq!(s.events(old, 0), Err(StateError::UnknownRun(old)));
    assert_eq!(s.checkpoint(old), Err(StateError::UnknownRun(old)));
    assert_eq!(s.held_messages(), 0);
    assert_eq!(
        s.runs().iter().map(|r| r.run_id).collect::<Vec<_>>(),
        [going]
    );
    assert_eq!(
        s.fab(&shared),
        Some(Bytes::from_static(b"shared")),
        "the running run still needs it"
    );
    assert_eq!(s.fab(&own), None);
    assert_eq!(s.delete_runs(&[old]), Ok(0));
}

mod sqlite_only {
    use super::*;
    use std::path::Path;

    fn bytes(path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("the database file")
    }

    #[test]
    fn the_resume_count_survives_reopen_and_status_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let run = {
            let s = SqliteLinkState::open(&path).unwrap();
            let run = s.create_run(NewRun::default()).unwrap();
            s.set_run_status(run, RunStatus::Starting, "").unwrap();
            assert_eq!(s.count_resume(run), Ok(1));
            s.set_run_status(run, RunStatus::Running, "").unwrap();
            assert_eq!(s.count_resume(run), Ok(2));
            run
        };
        let s = SqliteLinkState::open(&path).unwrap();
        assert_eq!(s.run_status(run), Some(RunStatus::Running));
        assert_eq!(
            s.count_resume(run),
            Ok(3),
            "the two resumes before the reopen count"
        );
    }

    fn file_size(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    fn auto_vacuum(path: &Path) -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
            .unwrap()
    }

    /// A file written before incremental vacuum (auto_vacuum NONE) is switched at open,
    /// and from then on deleting finished runs gives their space back: the file shrinks.
    #[test]
    fn deleted_runs_give_their_space_back_even_in_a_file_from_before_vacuum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(SqliteLinkState::open(&path).unwrap());
        assert_eq!(
            auto_vacuum(&path),
            2,
            "a new file is incremental from the start"
        );
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
            .unwrap();
        assert_eq!(auto_vacuum(&path), 0, "as an older build left it");
        let s = SqliteLinkState::open(&path).unwrap();
        assert_eq!(auto_vacuum(&path), 2);
        s.checkpoint_wal().unwrap();
        let empty = file_size(&path);
        let model = Bytes::from(vec![7u8; 4 << 20]);
        let runs: Vec<u64> = (0..3)
            .map(|_| {
                let run = running_run(&s);
                s.save_checkpoint(run, model.clone()).unwrap();
                s.push_event(run, RunEvent::Log("x".repeat(100_000)))
                    .unwrap();
                s.set_run_status(run, RunStatus::Finished(SubStatus::Completed), "")
                    .unwrap();
                run
            })
            .collect();
        s.checkpoint_wal().unwrap();
        assert!(file_size(&path) > empty + (12 << 20), "three models kept");
        s.drop_checkpoint(runs[0]).unwrap();
        s.checkpoint_wal().unwrap();
        let one_dropped = file_size(&path);
        assert!(
            one_dropped < empty + (9 << 20),
            "{one_dropped}: a model given back"
        );
        assert_eq!(s.delete_runs(&runs), Ok(3));
        s.checkpoint_wal().unwrap();
        assert!(
            file_size(&path) < empty + (64 << 10),
            "{} bytes left of {empty} empty",
            file_size(&path)
        );
    }

    /// `--max-database-size`: a write past the cap fails as a full disk would, saying what
    /// is full and what to do; what fits still goes in, and deleting makes room again.
    #[test]
    fn a_full_database_refuses_writes_naming_the_problem_and_the_fix() {
        let (_dir, s) = sqlite_store();
        let cap = s.limit_size(2 << 20).unwrap();
        assert!(cap <= 2 << 20 && cap > (2 << 20) - 8192, "{cap}");
        let run = running_run(&s);
        s.save_checkpoint(run, Bytes::from(vec![1u8; 1 << 20]))
            .unwrap();
        let Err(StateError::Storage(reason)) =
            s.save_checkpoint(run, Bytes::from(vec![2u8; 3 << 20]))
        else {
            panic!("a write past the cap is refused");
        };
        assert!(
            reason.starts_with(
                "the state database is full: free disk space where it is kept, or raise \
                 --max-database-size"
            ),
            "{reason}"
        );
        assert_eq!(
            s.checkpoint(run).unwrap().map(|c| c.len()),
            Some(1 << 20),
            "the refused write changed nothing"
        );
        s.set_run_status(run, RunStatus::Finished(SubStatus::Failed), &reason)
            .unwrap();
        s.drop_checkpoint(run).unwrap();
        let next = running_run(&s);
        s.save_checkpoint(next, Bytes::from(vec![3u8; 1 << 20]))
            .unwrap();
    }

    #[test]
    fn a_reopened_database_keeps_its_incarnation_and_issues_new_message_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let backup = dir.path().join("backup.db");
        let (incarnation, run, first) = {
            let s = SqliteLinkState::open(&path).unwrap();
            let run = running_run(&s);
            connect(&s, &[7]);
            s.checkpoint_wal().unwrap();
            std::fs::copy(&path, &backup).unwrap();
            let first = s.push_instructions(run, vec![msg(7, "x")], 1.0).unwrap();
            (s.incarnation(), run, first)
        };
        let s = SqliteLinkState::open(&path).unwrap();
        assert_eq!(
            s.incarnation(),
            incarnation,
            "a crash-resume is the same SuperLink"
        );
        drop(s);
        // Restored from a backup taken before `first` was issued: its counter went back.
        std::fs::copy(&backup, &path).unwrap();
        let s = SqliteLinkState::open(&path).unwrap();
        let again = s.push_instructions(run, vec![msg(7, "y")], 2.0).unwrap();
        assert_ne!(again, first, "an id SuperNodes saw is not reissued");
    }

    #[test]
    fn only_the_sqlite_store_is_durable() {
        let (_dir, state) = sqlite_store();
        assert!(state.is_durable());
        assert!(!MemoryLinkState::new().is_durable());
    }

    #[test]
    fn reopening_restores_the_state_and_issues_ids_not_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let key = Bytes::from_static(b"node key");
        let (run, finished, node, keyed, issued) = {
            let s = SqliteLinkState::open(&path).unwrap();
            s.set_node_auth(true);
            let keyed = s.allow_node_key(key.clone(), 3.0).unwrap();
            s.activate_node(keyed, lease(1000.0)).unwrap();
            s.node_seen(keyed, 4.0);
            let node = s.create_node(lease(50.0)).unwrap();
            connect(&s, &[7]);
            let finished = running_run(&s);
            s.set_run_status(finished, RunStatus::Finished(SubStatus::Completed), "")
                .unwrap();
            let run = s
                .create_run(NewRun {
                    owner: "bob".into(),
                    federation: "fed".into(),
                    ..NewRun::default()
                })
                .unwrap();
            s.set_run_status(run, RunStatus::Starting, "").unwrap();
            s.set_run_status(run, RunStatus::Running, "up").unwrap();
            s.push_event(run, RunEvent::Log("one".into())).unwrap();
            s.push_event(run, RunEvent::Log("two".into())).unwrap();
            s.store_fab(&"f".repeat(64), Bytes::from_static(b"fab"))
                .unwrap();
            s.save_checkpoint(run, Bytes::from_static(b"ckpt")).unwrap();
            let mut issued = s
                .push_instructions(
                    run,
                    vec![msg(node, "a"), msg(node, "b"), msg(7, "c"), msg(keyed, "d")],
                    10.0,
                )
                .unwrap();
            let a = s.pull_instructions(node, 1).unwrap().remove(0);
            let d = s.pull_instructions(keyed, 1).unwrap().remove(0);
            s.push_reply(ok_reply(&d), 11.0).unwrap();
            issued.push(a.metadata.message_id.clone());
            assert_eq!(s.held_messages(), 4);
            (run, finished, node, keyed, issued)
        };
        let s = SqliteLinkState::open(&path).unwrap();
        let info = s.run(run).unwrap();
        assert_eq!(
            (
                info.status,
                info.reason.as_str(),
                info.owner.as_str(),
                info.federation.as_str()
            ),
            (RunStatus::Running, "up", "bob", "fed")
        );
        assert_eq!(
            s.run_status(finished),
            Some(RunStatus::Finished(SubStatus::Completed))
        );
        assert_eq!(
            s.events(run, 0).unwrap(),
            (
                vec![RunEvent::Log("one".into()), RunEvent::Log("two".into())],
                2
            )
        );
        assert_eq!(s.checkpoint(run), Ok(Some(Bytes::from_static(b"ckpt"))));
        assert_eq!(s.fab(&"f".repeat(64)), Some(Bytes::from_static(b"fab")));
        assert!(s.node_auth());
        assert_eq!(s.node_id_of_key(&key), Some(keyed));
        let seen = s
            .nodes_info()
            .into_iter()
            .find(|n| n.node_id == keyed)
            .unwrap();
        assert_eq!(
            (seen.registered_at, seen.last_seen, seen.online),
            (3.0, Some(4.0), false),
            "registered, but not online until it is back"
        );
        assert!(
            s.node_ids().is_empty(),
            "no node is offered to a ServerApp before it shows it is alive after the restart"
        );
        for id in [node, 7, keyed] {
            s.node_alive(id).unwrap();
        }
        let mut nodes = s.node_ids().to_vec();
        nodes.sort_unstable();
        let mut want = vec![node, 7, keyed];
        want.sort_unstable();
        assert_eq!(nodes, want);
        assert_eq!(
            s.held_messages(),
            4,
            "queued, delivered and a reply not taken"
        );
        drop(s);
        let s = SqliteLinkState::open(&path).unwrap();
        assert_eq!(s.redeliver(node), Ok(1), "the delivery is remembered");
        assert_eq!(types(&s.pull_instructions(node, 10).unwrap()), ["a", "b"]);
        assert_eq!(types(&s.pull_instructions(7, 10).unwrap()), ["c"]);
        assert_eq!(s.take_replies(run).unwrap().len(), 1);

        let next = s.create_run(NewRun::default()).unwrap();
        assert!(
            next != run && next != finished,
            "a new run id is none in use: {next}"
        );
        let fresh = s.push_instructions(run, vec![msg(7, "e")], 20.0).unwrap();
        assert!(!issued.contains(&fresh[0]), "message ids are not reused");

        let sweep = s.sweep(60.0);
        assert_eq!(
            sweep.offline,
            vec![node],
            "a node that did not come back is swept"
        );
        let errors = s.take_replies(run).unwrap();
        assert_eq!(errors.len(), 2);
        assert!(
            errors
                .iter()
                .all(|r| r.error().map(|e| e.code) == Some(error_code::NODE_UNAVAILABLE))
        );
    }

    /// A database with some content, closed, and its bytes.
    fn closed_database(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("state.db");
        let s = SqliteLinkState::open(&path).unwrap();
        let run = running_run(&s);
        for i in 0..200 {
            s.push_event(run, RunEvent::Log(format!("line {i} {}", "x".repeat(100))))
                .unwrap();
        }
        drop(s);
        assert!(
            !dir.join("state.db-wal").exists(),
            "closing folds the log in"
        );
        path
    }

    fn refused(path: &Path) -> OpenError {
        match SqliteLinkState::open(path) {
            Ok(_) => panic!("{} was opened", path.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();
        let e = refused(&path);
        assert!(matches!(e, OpenError::NotSqlite(_)), "{e}");
        assert!(e.to_string().contains("not an SQLite database"), "{e}");
        assert_eq!(bytes(&path), garbage);
    }

    #[test]
    fn another_programs_database_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
                .unwrap();
        }
        let before = bytes(&path);
        let e = refused(&path);
        assert!(matches!(e, OpenError::Foreign { .. }), "{e}");
        assert!(e.to_string().contains("another program"), "{e}");
        assert_eq!(bytes(&path), before);
    }

    #[test]
    fn a_database_from_a_newer_floret_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_database(dir.path());
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let before = bytes(&path);
        let e = refused(&path);
        assert!(matches!(e, OpenError::TooNew { found: 99, .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("newer Floret (schema 99") && text.contains("--database"),
            "{e}"
        );
        assert_eq!(bytes(&path), before);
    }

    #[test]
    fn a_corrupt_database_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_database(dir.path());
        let mut data = bytes(&path);
        let page = 4096;
        assert!(data.len() > 3 * page, "{} bytes", data.len());
        for b in &mut data[page..] {
            *b = 0xA5;
        }
        std::fs::write(&path, &data).unwrap();
        let e = refused(&path);
        assert!(matches!(e, OpenError::Corrupt { .. }), "{e}");
        assert!(
            e.to_string().contains("corrupt") && e.to_string().contains("backup"),
            "{e}"
        );
        assert_eq!(bytes(&path), data);
    }

    #[test]
    fn a_database_missing_a_table_is_refused_at_open_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_database(dir.path());
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch("DROP TABLE checkpoints").unwrap();
        }
        let before = bytes(&path);
        let e = refused(&path);
        assert!(
            matches!(&e, OpenError::Incomplete { missing, .. } if missing == "table checkpoints"),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains(&path.display().to_string())
                && text.contains("table checkpoints")
                && text.contains("backup")
                && text.contains("move it away"),
            "{e}"
        );
        assert_eq!(bytes(&path), before);
    }

    /// Whether this process can write despite permissions (root can).
    fn privileged(probe: &Path) -> bool {
        let can = std::fs::write(probe, b"probe").is_ok();
        let _ = std::fs::remove_file(probe);
        can
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_file_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_database(dir.path());
        chmod(&path, 0o444);
        let writable = std::fs::OpenOptions::new().write(true).open(&path).is_ok();
        if writable {
            println!("note: running with rights that ignore file modes; read-only not checked");
        } else {
            let e = refused(&path);
            assert!(matches!(e, OpenError::ReadOnly(_)), "{e}");
            assert!(e.to_string().contains("writable"), "{e}");
        }
        chmod(&path, 0o644);
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_directory_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        chmod(&ro, 0o555);
        if privileged(&ro.join("probe")) {
            println!("note: running with rights that ignore file modes; read-only not checked");
        } else {
            let e = refused(&ro.join("state.db"));
            assert!(matches!(e, OpenError::ReadOnly(_)), "{e}");
            assert!(!ro.join("state.db").exists());
        }
        chmod(&ro, 0o755);
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = refused(&dir.path().join("nope").join("state.db"));
        assert!(matches!(e, OpenError::NoDirectory(_)), "{e}");
        assert!(!dir.path().join("nope").exists());
    }

    #[test]
    fn a_long_run_leaves_nothing_behind_and_the_file_flat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let s = SqliteLinkState::open(&path).unwrap();
        let nodes: Vec<u64> = (1..=20).collect();
        connect(&s, &nodes);
        let run = running_run(&s);
        let content = || {
            let mut arrays = ArrayRecord::default();
            arrays
                .0
                .insert("w".into(), Array::from_slice(&[0.5f32; 256]));
            let mut content = RecordDict::new();
            content.insert("arrays", arrays);
            content
        };
        let mut size_at_50 = 0;
        for round in 1..=200u32 {
            let now = f64::from(round);
            let out: Vec<Message> = nodes
                .iter()
                .map(|&n| Message::new(content(), n, "train"))
                .collect();
            let ids = s.push_instructions(run, out, now).unwrap();
            for &n in &nodes {
                for m in s.pull_instructions(n, 10).unwrap() {
                    s.push_reply(m.reply(Payload::Content(content())), now)
                        .unwrap();
                }
            }
            assert_eq!(s.take_replies_to(run, &ids).unwrap().len(), nodes.len());
            assert_eq!(s.held_messages(), 0, "round {round}");
            if round == 50 {
                s.checkpoint_wal().unwrap();
                size_at_50 = std::fs::metadata(&path).unwrap().len();
            }
        }
        s.checkpoint_wal().unwrap();
        let size_at_200 = std::fs::metadata(&path).unwrap().len();
        assert!(
            size_at_200 <= size_at_50 + 16 * 4096,
            "the file grew from {size_at_50} to {size_at_200} bytes"
        );
    }
}
