//! Node liveness and message expiry on virtual time: heartbeats, offline detection and
//! TTLs play out over minutes in milliseconds.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::*;
use floret_actors::{RunStatus, SubStatus};
use floret_core::RunInfo;
use floret_core::{
    Control, Fleet, FleetError, Message, Payload, RecordDict, RegisterNode, Registration, RunEvent,
    error_code,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Registers a node and beats once, so that it is alive and ServerApps sample it.
async fn register(fleet: &dyn Fleet, interval: f64) -> u64 {
    let node = fleet
        .register_node(RegisterNode {
            heartbeat_interval: interval,
            ..RegisterNode::default()
        })
        .await
        .unwrap()
        .node_id;
    fleet.heartbeat(node, interval).await.unwrap();
    node
}

/// A node that takes an instruction and then falls silent is declared offline 2 intervals
/// after its last heartbeat; its instruction comes back as NODE_UNAVAILABLE right then, and
/// the round completes with the other nodes instead of waiting out its 600 s timeout.
#[tokio::test(start_paused = true)]
async fn a_silent_node_goes_offline_after_two_intervals_and_its_work_is_answered_at_once() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let nodes: Vec<NodeHandle> = (0..2)
        .map(|p| spawn_node(node_config(p), link.fleet(), &catalog))
        .collect();
    let fleet = link.fleet();
    let silent = register(fleet.as_ref(), 10.0).await;
    let registered = Instant::now();
    let _stream = fleet.subscribe(silent).await.unwrap();
    let state = link.state();
    wait_for_nodes(&link, 3).await;
    let control = link.control();
    let run_id = control.start_run(fedavg_request(1, 3)).await.unwrap();
    let (info, events) = follow_to_end(control.as_ref(), run_id).await;
    let took = registered.elapsed();
    assert_eq!(
        info.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        info.reason
    );
    assert!(
        took >= Duration::from_secs(20) && took <= Duration::from_secs(22),
        "offline after 2 x 10 s (+ one 1 s sweep), not at the round timeout: {took:?}"
    );
    let round = events
        .iter()
        .find_map(|e| match e {
            RunEvent::RoundFinished(s) => s.train.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!((round.sampled, round.replies, round.failures), (3, 2, 1));
    assert_eq!(state.node_ids().len(), 2, "the beating nodes stay online");
    assert_eq!(
        fleet.heartbeat(silent, 10.0).await,
        Err(FleetError::UnknownNode(silent)),
        "a forgotten node is told so, and registers again"
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    link.shutdown().await;
}

/// An instruction nobody picks up is answered with MESSAGE_TTL_EXPIRED once its TTL ends.
#[tokio::test(start_paused = true)]
async fn an_instruction_past_its_ttl_is_answered_with_message_ttl_expired() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let fleet = link.fleet();
    // Alive for the whole test, but never pulls.
    let idle = register(fleet.as_ref(), 3600.0).await;
    let control = link.control();
    let start = Instant::now();
    let run_id = control
        .start_run(probe_request("train", 5.0))
        .await
        .unwrap();
    let (info, _) = follow_to_end(control.as_ref(), run_id).await;
    assert_eq!(info.status, RunStatus::Finished(SubStatus::Completed));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took <= Duration::from_secs(7),
        "{took:?}"
    );
    let replies = catalog.replies.lock().unwrap().clone();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].metadata.src_node_id, idle);
    let err = replies[0].error().unwrap();
    assert_eq!(err.code, error_code::MESSAGE_TTL_EXPIRED);
    assert_eq!(
        err.reason,
        format!("message TTL of 5 s expired before node {idle} replied")
    );
    assert!(
        fleet.pull_messages(idle).await.unwrap().is_empty(),
        "an expired instruction is no longer delivered"
    );
    link.shutdown().await;
}

/// The Fleet refuses what a node has no business sending (including a reply with a bad
/// TTL), without disturbing anything.
#[tokio::test(start_paused = true)]
async fn the_fleet_refuses_unknown_nodes_and_foreign_replies() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let fleet = link.fleet();
    assert_eq!(
        fleet.pull_messages(99).await,
        Err(FleetError::UnknownNode(99))
    );
    assert!(matches!(
        fleet.subscribe(99).await,
        Err(FleetError::UnknownNode(99))
    ));
    assert_eq!(
        fleet.deactivate_node(99).await,
        Err(FleetError::UnknownNode(99))
    );
    assert_eq!(fleet.get_run(5).await, Err(FleetError::UnknownRun(5)));
    assert!(matches!(
        fleet
            .register_node(RegisterNode {
                heartbeat_interval: 0.0,
                ..RegisterNode::default()
            })
            .await,
        Err(FleetError::Invalid(_))
    ));
    let a = register(fleet.as_ref(), 60.0).await;
    let b = register(fleet.as_ref(), 60.0).await;
    let control = link.control();
    let run_id = control
        .start_run(probe_request("train", 600.0))
        .await
        .unwrap();
    let mut to_a = Vec::new();
    while to_a.is_empty() {
        to_a = fleet.pull_messages(a).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let instruction = to_a.remove(0);
    // b answers a's instruction, in b's name and in a's.
    let foreign = Message {
        metadata: instruction.metadata.clone(),
        ..instruction.clone()
    }
    .reply(Payload::Content(RecordDict::new()));
    let refused = fleet.push_messages(b, vec![foreign.clone()]).await;
    assert!(
        matches!(&refused, Err(FleetError::Invalid(r)) if r.contains("claims to come from node")),
        "{refused:?}"
    );
    let mut as_b = foreign.clone();
    as_b.metadata.src_node_id = b;
    assert!(matches!(
        fleet.push_messages(b, vec![as_b]).await,
        Err(FleetError::Invalid(_))
    ));
    let mut unknown_run = foreign.clone();
    unknown_run.metadata.reply_to_message_id = "ff-ff".into();
    unknown_run.metadata.run_id = 12345;
    assert!(matches!(
        fleet.push_messages(a, vec![unknown_run]).await,
        Err(FleetError::Invalid(_))
    ));
    // A reply whose TTL is NaN, negative or huge is refused with the reason, not stored.
    for ttl in [f64::NAN, -1.0, 1e300] {
        let mut bad_ttl = foreign.clone();
        bad_ttl.metadata.ttl = ttl;
        let refused = fleet.push_messages(a, vec![bad_ttl]).await;
        assert!(
            matches!(&refused, Err(FleetError::Invalid(r)) if r.contains("invalid message TTL")),
            "{refused:?}"
        );
    }
    // The real reply still lands, and the run completes.
    fleet.push_messages(a, vec![foreign]).await.unwrap();
    let mut b_msgs = Vec::new();
    while b_msgs.is_empty() {
        b_msgs = fleet.pull_messages(b).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reply = b_msgs[0].reply(Payload::Content(RecordDict::new()));
    fleet.push_messages(b, vec![reply]).await.unwrap();
    let (info, _) = follow_to_end(control.as_ref(), run_id).await;
    assert_eq!(info.status, RunStatus::Finished(SubStatus::Completed));
    link.shutdown().await;
}

/// Sets a NaN TTL on the first instruction it delivers (as a broken or hostile SuperLink
/// would) and records which instructions the node answered.
struct NanTtlFleet {
    inner: Arc<dyn Fleet>,
    /// The id of the instruction whose TTL was set to NaN.
    tampered: Arc<Mutex<Option<String>>>,
    /// `reply_to_message_id` of every reply the node pushed.
    answered: Mutex<Vec<String>>,
}

fn tamper(tampered: &Mutex<Option<String>>, mut m: Message) -> Message {
    let mut tampered = tampered.lock().unwrap();
    if tampered.is_none() {
        m.metadata.ttl = f64::NAN;
        *tampered = Some(m.metadata.message_id.clone());
    }
    m
}

#[async_trait::async_trait]
impl Fleet for NanTtlFleet {
    async fn register_node(&self, r: RegisterNode) -> Result<Registration, FleetError> {
        self.inner.register_node(r).await
    }
    async fn deactivate_node(&self, n: u64) -> Result<(), FleetError> {
        self.inner.deactivate_node(n).await
    }
    async fn heartbeat(&self, n: u64, i: f64) -> Result<(), FleetError> {
        self.inner.heartbeat(n, i).await
    }
    async fn pull_messages(&self, n: u64) -> Result<Vec<Message>, FleetError> {
        let got = self.inner.pull_messages(n).await?;
        Ok(got.into_iter().map(|m| tamper(&self.tampered, m)).collect())
    }
    async fn push_messages(&self, n: u64, m: Vec<Message>) -> Result<(), FleetError> {
        let ids = m.iter().map(|r| r.metadata.reply_to_message_id.clone());
        self.answered.lock().unwrap().extend(ids);
        self.inner.push_messages(n, m).await
    }
    async fn get_run(&self, r: u64) -> Result<RunInfo, FleetError> {
        self.inner.get_run(r).await
    }
    async fn subscribe(&self, n: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
        let mut from_link = self.inner.subscribe(n).await?;
        let (tx, rx) = mpsc::channel(16);
        let tampered = self.tampered.clone();
        tokio::spawn(async move {
            while let Some(m) = from_link.recv().await {
                if tx.send(tamper(&tampered, m)).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// A SuperNode refuses an instruction whose TTL is NaN on receipt (a warning, no reply,
/// no panic) and goes on with the next one; the SuperLink answers the refused one when
/// its own TTL ends.
#[tokio::test(start_paused = true)]
async fn a_supernode_refuses_an_instruction_with_a_bad_ttl_and_goes_on() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let fleet = Arc::new(NanTtlFleet {
        inner: link.fleet(),
        tampered: Arc::default(),
        answered: Mutex::default(),
    });
    let node = spawn_node(node_config(0), fleet.clone(), &catalog);
    wait_for_nodes(&link, 1).await;
    let control = link.control();
    let run_id = control
        .start_run(probe_request("train,train", 600.0))
        .await
        .unwrap();
    let (info, _) = follow_to_end(control.as_ref(), run_id).await;
    assert_eq!(info.status, RunStatus::Finished(SubStatus::Completed));
    let tampered = fleet.tampered.lock().unwrap().clone().unwrap();
    let answered = fleet.answered.lock().unwrap().clone();
    assert!(!answered.contains(&tampered), "{answered:?}");
    assert_eq!(answered.len(), 1, "the second instruction is answered");
    let replies = catalog.replies.lock().unwrap().clone();
    assert_eq!(replies.len(), 2);
    assert_eq!(
        replies[0].error().map(|e| e.code),
        Some(error_code::MESSAGE_TTL_EXPIRED)
    );
    assert!(replies[1].error().is_none(), "{:?}", replies[1]);
    node.shutdown().await.unwrap();
    link.shutdown().await;
}
