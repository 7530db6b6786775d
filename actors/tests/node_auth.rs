//! Node authentication in the SuperLink's state and Fleet: the allow-list decides who may
//! register, and a key keeps its node id.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use bytes::Bytes;
use floret_actors::state::NewRun;
use floret_actors::state::prelude::*;
use floret_actors::{HeartbeatPolicy, LinkFleet, MemoryLinkState};
use floret_core::{
    Fleet, FleetError, Message, NodeAuthority, RecordDict, RegisterNode, RunStatus, error_code,
};
use std::sync::Arc;

fn register(key: &'static [u8]) -> RegisterNode {
    RegisterNode {
        public_key: Bytes::from_static(key),
        heartbeat_interval: 30.0,
    }
}

fn setup() -> (Arc<MemoryLinkState>, LinkFleet) {
    let state = Arc::new(MemoryLinkState::new());
    state.set_node_auth(true);
    let fleet = LinkFleet::new(state.clone(), HeartbeatPolicy::default());
    (state, fleet)
}

#[tokio::test]
async fn unknown_key_is_refused() {
    let (state, fleet) = setup();
    state
        .allow_node_key(Bytes::from_static(b"key-a"), 1.0)
        .unwrap();
    let e = fleet.register_node(register(b"key-b")).await.unwrap_err();
    assert!(
        matches!(e, FleetError::Unauthenticated(ref m) if m.contains("allow-list")),
        "{e}"
    );
    let e = fleet.register_node(register(b"")).await.unwrap_err();
    assert!(
        matches!(e, FleetError::Unauthenticated(ref m) if m.contains("--auth-supernode-private-key")),
        "{e}"
    );
    assert!(state.node_ids().is_empty());
}

#[tokio::test]
async fn a_key_keeps_its_node_id() {
    let (state, fleet) = setup();
    let reserved = state
        .allow_node_key(Bytes::from_static(b"key-a"), 1.0)
        .unwrap();
    assert_eq!(
        state
            .allow_node_key(Bytes::from_static(b"key-a"), 2.0)
            .unwrap(),
        reserved
    );
    assert!(!state.has_node(reserved), "allowed is not yet connected");
    let id = fleet
        .register_node(register(b"key-a"))
        .await
        .unwrap()
        .node_id;
    assert_eq!(id, reserved);
    assert!(state.owns(id, b"key-a") && !state.owns(id, b"key-b"));
    assert!(state.admits(b"key-a") && !state.admits(b"key-b"));
    fleet.deactivate_node(id).await.unwrap();
    assert_eq!(
        fleet
            .register_node(register(b"key-a"))
            .await
            .unwrap()
            .node_id,
        id
    );
    let info = state.nodes_info();
    assert_eq!(info.len(), 1);
    assert!(!info[0].online && info[0].last_seen.is_some());
    fleet.heartbeat(id, 30.0).await.unwrap();
    assert!(state.nodes_info()[0].online, "online once it beats");
}

/// A SuperNode killed and restarted within its lease registers again with its key: what
/// the old process was sent is answered at once, not after two missed heartbeats.
#[tokio::test]
async fn registering_again_answers_the_old_sessions_instructions_at_once() {
    let (state, fleet) = setup();
    state
        .allow_node_key(Bytes::from_static(b"key-a"), 1.0)
        .unwrap();
    let id = fleet
        .register_node(register(b"key-a"))
        .await
        .unwrap()
        .node_id;
    let run = state.create_run(NewRun::default()).unwrap();
    state.set_run_status(run, RunStatus::Starting, "").unwrap();
    state.set_run_status(run, RunStatus::Running, "").unwrap();
    let sent = state
        .push_instructions(run, vec![Message::new(RecordDict::new(), id, "train")], 1.0)
        .unwrap();
    let mut old_stream = fleet.subscribe(id).await.unwrap();
    let delivered = old_stream.recv().await.unwrap();
    assert_eq!(delivered.metadata.message_id, sent[0]);
    assert!(state.take_replies(run).unwrap().is_empty(), "in flight");

    assert_eq!(
        fleet
            .register_node(register(b"key-a"))
            .await
            .unwrap()
            .node_id,
        id
    );

    let replies = state.take_replies(run).unwrap();
    assert_eq!(
        replies.len(),
        1,
        "the old session's instruction is answered"
    );
    assert_eq!(replies[0].metadata.reply_to_message_id, sent[0]);
    let err = replies[0].error().unwrap();
    assert_eq!(err.code, error_code::NODE_UNAVAILABLE);
    assert!(err.reason.contains("restarted"), "{}", err.reason);
    assert!(
        state.has_node(id),
        "the node is registered under the same id"
    );
    let _new_stream = fleet.subscribe(id).await.unwrap();
    let info = state.nodes_info();
    assert!(
        info.len() == 1 && info[0].online,
        "and online once it subscribes"
    );
    assert_eq!(state.held_messages(), 0, "nothing is left to send again");
}

#[tokio::test]
async fn a_disallowed_key_is_refused_again() {
    let (state, fleet) = setup();
    state
        .allow_node_key(Bytes::from_static(b"key-a"), 1.0)
        .unwrap();
    let id = fleet
        .register_node(register(b"key-a"))
        .await
        .unwrap()
        .node_id;
    assert_eq!(state.disallow_node(id), Some(Bytes::from_static(b"key-a")));
    assert!(!state.owns(id, b"key-a"));
    assert!(matches!(
        fleet.register_node(register(b"key-a")).await,
        Err(FleetError::Unauthenticated(_))
    ));
}

#[tokio::test]
async fn without_node_auth_keys_are_not_needed() {
    let state = Arc::new(MemoryLinkState::new());
    let fleet = LinkFleet::new(state.clone(), HeartbeatPolicy::default());
    let id = fleet.register_node(register(b"")).await.unwrap().node_id;
    assert!(state.has_node(id));
    assert_eq!(state.nodes_info().len(), 1);
}
