//! A whole deployment in one process: a SuperLinkService and SuperNodes talking through
//! the `LinkFleet`, started and driven through the Control API.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::*;
use floret_actors::{RunStatus, SubStatus};
use floret_core::{Control, RunEvent, error_code};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_supernodes_run_fedavg_to_completion_and_keep_their_context() {
    let (catalog, link, nodes) = link_with_nodes::<3>().await;
    let state = link.state();
    let control = link.control();
    let run_id = control.start_run(fedavg_request(2, 3)).await.unwrap();
    let (info, events) = follow_to_end(control.as_ref(), run_id).await;
    assert_eq!(
        info.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        info.reason
    );
    let rounds: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::RoundFinished(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(rounds.len(), 2);
    let round2 = rounds[1].train.as_ref().unwrap();
    assert_eq!((round2.sampled, round2.replies, round2.failures), (3, 3, 0));
    // The `calls` counter lives in each node's context state: 2 in round 2 on every node.
    assert_eq!(round2.metrics.get_f64("calls").unwrap(), 2.0);
    // Partitions 0, 1, 2 weighted by p + 1 add (0 + 2 + 6) / 6 = 4/3 per round.
    let history = catalog.history.lock().unwrap().take().unwrap();
    let w = history.arrays.get("w").unwrap().values::<f32>().unwrap();
    let want = [8.0f32 / 3.0, 10.0 + 8.0 / 3.0];
    assert!(
        w.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5),
        "{w:?}"
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    assert!(state.node_ids().is_empty(), "stopping nodes deactivate");
    link.shutdown().await;
}

/// ClientApp panics become error replies and the node keeps the run's context; a host that
/// dies is replaced by a fresh one (fresh context) and the node serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clientapp_failures_are_error_replies_and_a_failed_host_is_replaced() {
    let (catalog, link, [node]) = link_with_nodes().await;
    let control = link.control();
    let steps = "train,query,train,evaluate,train";
    let run_id = control
        .start_run(probe_request(steps, 600.0))
        .await
        .unwrap();
    let (info, _) = follow_to_end(control.as_ref(), run_id).await;
    assert_eq!(info.status, RunStatus::Finished(SubStatus::Completed));
    let replies = catalog.replies.lock().unwrap().clone();
    let summary: Vec<String> = replies
        .iter()
        .map(|r| match r.content() {
            Ok(c) => format!(
                "calls={}",
                c.metric_record("metrics")
                    .unwrap()
                    .get_f64("calls")
                    .unwrap()
            ),
            Err(e) => format!("error {}: {}", e.code, e.reason),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "calls=1".to_string(),
            format!(
                "error {}: ClientApp panicked: query is broken",
                error_code::CLIENT_APP_RAISED_EXCEPTION
            ),
            "calls=2".to_string(),
            format!(
                "error {}: ClientApp host failed: payload dropped",
                error_code::CLIENT_APP_RAISED_EXCEPTION
            ),
            "calls=1".to_string(),
        ]
    );
    node.shutdown().await.unwrap();
    link.shutdown().await;
}

/// The SuperLink knows the app but this node does not: every message of the run is answered
/// with LOAD_CLIENT_APP_EXCEPTION, and the run itself carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_runs_clientapp_answers_load_client_app_exception() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let other_apps = TestCatalog {
        clients: false,
        ..catalog.clone()
    };
    let node = spawn_node(node_config(0), link.fleet(), &other_apps);
    wait_for_nodes(&link, 1).await;
    let control = link.control();
    let run_id = control
        .start_run(probe_request("train", 600.0))
        .await
        .unwrap();
    let (info, _) = follow_to_end(control.as_ref(), run_id).await;
    assert_eq!(info.status, RunStatus::Finished(SubStatus::Completed));
    let replies = catalog.replies.lock().unwrap().clone();
    let err = replies[0].error().expect("an error reply");
    assert_eq!(err.code, error_code::LOAD_CLIENT_APP_EXCEPTION);
    assert!(
        err.reason
            .starts_with("unknown clientapp component \"test.client:probe\""),
        "{}",
        err.reason
    );
    node.shutdown().await.unwrap();
    link.shutdown().await;
}

/// D3's shape: many subscribed nodes, each gets exactly its own instructions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_subscribers_each_receive_only_their_own_instructions() {
    use floret_actors::NewRun;
    use floret_core::{Fleet, Message, RecordDict, RegisterNode};
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let fleet = link.fleet();
    let mut streams = Vec::new();
    for _ in 0..10_000 {
        let id = fleet
            .register_node(RegisterNode {
                heartbeat_interval: 30.0,
                ..RegisterNode::default()
            })
            .await
            .unwrap()
            .node_id;
        streams.push((id, fleet.subscribe(id).await.unwrap()));
    }
    assert_eq!(fleet.subscribers(), 10_000);
    let state = link.state();
    let run = state.create_run(NewRun::default()).unwrap();
    state.set_run_status(run, RunStatus::Starting, "").unwrap();
    state.set_run_status(run, RunStatus::Running, "").unwrap();
    let picked = [streams[17].0, streams[9_999].0];
    let messages = picked
        .iter()
        .map(|&n| Message::new(RecordDict::new(), n, "train"))
        .collect();
    state.push_instructions(run, messages, 1.0).unwrap();
    for (i, (id, rx)) in streams.iter_mut().enumerate() {
        if picked.contains(id) {
            let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.metadata.dst_node_id, *id);
        } else if i % 500 == 0 {
            assert!(rx.try_recv().is_err());
        }
    }
    drop(streams);
    let fleet = Arc::clone(&fleet);
    wait_until("delivery tasks to end", Duration::from_secs(5), || {
        fleet.subscribers() == 0
    })
    .await;
    link.shutdown().await;
}
