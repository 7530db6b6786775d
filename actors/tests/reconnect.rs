//! A SuperNode finding, losing and re-finding its SuperLink, on virtual time.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use async_trait::async_trait;
use common::*;
use floret_actors::{SuperNode, SuperNodeConfig, SuperNodeError};
use floret_core::{Control, Fleet, FleetError, Message, RegisterNode, Registration, RunInfo};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

/// Runs one `train` through the node(s) and checks every reply has content.
async fn node_serves(link: &floret_actors::SuperLinkService, catalog: &TestCatalog) {
    catalog.replies.lock().unwrap().clear();
    let control = link.control();
    let run_id = control
        .start_run(probe_request("train", 600.0))
        .await
        .unwrap();
    let (info, _) = follow_to_end(control.as_ref(), run_id).await;
    assert!(info.status.is_finished());
    let replies = catalog.replies.lock().unwrap().clone();
    assert_eq!(replies.len(), 1);
    assert!(replies[0].error().is_none(), "{:?}", replies[0].error());
}

#[tokio::test(start_paused = true)]
async fn a_supernode_started_before_its_superlink_connects_once_it_is_up() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let flaky = Arc::new(FlakyFleet::new(link.fleet(), 6));
    let node = spawn_node(node_config(0), flaky.clone(), &catalog);
    let state = link.state();
    // Backoff 1 + 2 + 4 + 8 + 16 + 30 s at most before the 7th attempt gets through.
    wait_until("the node to register", Duration::from_secs(70), || {
        state.node_ids().len() == 1
    })
    .await;
    assert_eq!(flaky.failed.load(Ordering::SeqCst), 6);
    node_serves(&link, &catalog).await;
    node.shutdown().await.unwrap();
    link.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_supernode_registers_again_when_the_superlink_forgets_it() {
    let (catalog, link, [node]) = link_with_nodes().await;
    let state = link.state();
    let first = state.node_ids()[0];
    state.unregister_node(
        first,
        "forgotten by the test",
        floret_actors::policy::clock::unix_now(),
    );
    wait_until("a new registration", Duration::from_secs(10), || {
        state.node_ids().first().is_some_and(|&id| id != first)
    })
    .await;
    node_serves(&link, &catalog).await;
    node.shutdown().await.unwrap();
    link.shutdown().await;
}

/// A SuperLink restart: same address, fresh state. The old one shuts down (streams close,
/// calls fail), the node reconnects to the new one, learns it is unknown there and
/// registers again.
#[tokio::test(start_paused = true)]
async fn a_supernode_follows_a_restarted_superlink() {
    let catalog = TestCatalog::new();
    let old = service(&catalog).await;
    let switch = Arc::new(SwitchFleet::new(old.fleet()));
    let node = spawn_node(node_config(0), switch.clone(), &catalog);
    wait_for_nodes(&old, 1).await;
    let new = service(&catalog).await;
    switch.switch(new.fleet());
    old.shutdown().await;
    let new_state = new.state();
    wait_until(
        "registration with the new SuperLink",
        Duration::from_secs(60),
        || new_state.node_ids().len() == 1,
    )
    .await;
    node_serves(&new, &catalog).await;
    node.shutdown().await.unwrap();
    new.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn exhausting_max_retries_ends_the_supernode_with_an_error_naming_address_and_limit() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let never = Arc::new(FlakyFleet::new(link.fleet(), u32::MAX));
    let config = SuperNodeConfig {
        superlink: "10.1.2.3:9092".into(),
        max_retries: Some(3),
        ..SuperNodeConfig::default()
    };
    let err = SuperNode::run(
        config,
        never.clone(),
        Arc::new(catalog),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SuperNodeError::GaveUp { attempts: 4, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("10.1.2.3:9092"), "{text}");
    assert!(text.contains("--max-retries 3"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    assert_eq!(never.failed.load(Ordering::SeqCst), 4);
    link.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn exhausting_max_wait_time_ends_the_supernode_at_the_deadline() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let never: Arc<dyn Fleet> = Arc::new(FlakyFleet::new(link.fleet(), u32::MAX));
    let config = SuperNodeConfig {
        max_wait_time: Some(Duration::from_secs(20)),
        ..SuperNodeConfig::default()
    };
    let start = tokio::time::Instant::now();
    let err = SuperNode::run(config, never, Arc::new(catalog), std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(20));
    assert!(err.to_string().contains("--max-wait-time 20"), "{err}");
    link.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_bad_configuration_is_refused_before_connecting() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let config = SuperNodeConfig {
        heartbeat_interval: Duration::ZERO,
        ..SuperNodeConfig::default()
    };
    let err = SuperNode::run(
        config,
        link.fleet(),
        Arc::new(catalog),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SuperNodeError::Config(_)), "{err:?}");
    link.shutdown().await;
}

/// A link whose first instruction stream dies with an instruction in it, as a dropped
/// connection does.
struct LossyFleet {
    inner: Arc<dyn Fleet>,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Fleet for LossyFleet {
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
        self.inner.pull_messages(n).await
    }
    async fn push_messages(&self, n: u64, m: Vec<Message>) -> Result<(), FleetError> {
        self.inner.push_messages(n, m).await
    }
    async fn get_run(&self, r: u64) -> Result<RunInfo, FleetError> {
        self.inner.get_run(r).await
    }
    async fn subscribe(&self, n: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
        let mut rx = self.inner.subscribe(n).await?;
        if self.lost.swap(true, Ordering::SeqCst) {
            return Ok(rx);
        }
        let (tx, out) = mpsc::channel(1);
        tokio::spawn(async move {
            let swallowed = rx.recv().await;
            assert!(swallowed.is_some());
            drop(tx);
        });
        Ok(out)
    }
}

/// The instruction lost with the old stream is redelivered on the new one and answered
/// within seconds, not at its TTL.
#[tokio::test(start_paused = true)]
async fn an_instruction_lost_with_a_dropped_stream_is_redelivered_on_reconnect() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let lossy = Arc::new(LossyFleet {
        inner: link.fleet(),
        lost: Default::default(),
    });
    let node = spawn_node(node_config(0), lossy, &catalog);
    wait_for_nodes(&link, 1).await;
    let start = tokio::time::Instant::now();
    node_serves(&link, &catalog).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    node.shutdown().await.unwrap();
    link.shutdown().await;
}
