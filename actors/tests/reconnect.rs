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

/// A restartable SuperLink address, like `SwitchFleet`, that answers every registration
/// with the incarnation the test set: two SuperLinks on the simulation's store reuse run
/// and message ids exactly (runs from 1, no random part in message ids), as fresh
/// SuperLinks did before run ids were random, and this gives them the incarnations two
/// fresh SuperLinks have.
struct Incarnated {
    link: SwitchFleet,
    incarnation: std::sync::atomic::AtomicU64,
}

impl Incarnated {
    fn switch(&self, fleet: Arc<dyn Fleet>, incarnation: u64) {
        self.link.switch(fleet);
        self.incarnation.store(incarnation, Ordering::SeqCst);
    }
}

#[async_trait]
impl Fleet for Incarnated {
    async fn register_node(&self, r: RegisterNode) -> Result<Registration, FleetError> {
        let registered = self.link.register_node(r).await?;
        Ok(Registration {
            incarnation: self.incarnation.load(Ordering::SeqCst),
            ..registered
        })
    }
    async fn deactivate_node(&self, n: u64) -> Result<(), FleetError> {
        self.link.deactivate_node(n).await
    }
    async fn heartbeat(&self, n: u64, i: f64) -> Result<(), FleetError> {
        self.link.heartbeat(n, i).await
    }
    async fn pull_messages(&self, n: u64) -> Result<Vec<Message>, FleetError> {
        self.link.pull_messages(n).await
    }
    async fn push_messages(&self, n: u64, m: Vec<Message>) -> Result<(), FleetError> {
        self.link.push_messages(n, m).await
    }
    async fn get_run(&self, r: u64) -> Result<RunInfo, FleetError> {
        self.link.get_run(r).await
    }
    async fn subscribe(&self, n: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
        self.link.subscribe(n).await
    }
}

/// A SuperLink on the simulation's store: run 1 first, message ids without a random part.
async fn service_reusing_ids(catalog: &TestCatalog) -> floret_actors::SuperLinkService {
    let state: Arc<dyn floret_actors::LinkState> =
        Arc::new(floret_actors::MemoryLinkState::for_simulation());
    floret_actors::SuperLinkService::start(
        state,
        Arc::new(catalog.clone()),
        floret_actors::HeartbeatPolicy::default(),
    )
    .await
    .unwrap()
}

/// Runs one `train` through the single node and returns its run id, the instruction's id
/// and the `calls` count the ClientApp kept in its node state.
async fn one_train(
    link: &floret_actors::SuperLinkService,
    catalog: &TestCatalog,
) -> (u64, String, f64) {
    catalog.replies.lock().unwrap().clear();
    let control = link.control();
    let run_id = control
        .start_run(probe_request("train", 120.0))
        .await
        .unwrap();
    follow_to_end(control.as_ref(), run_id).await;
    let replies = catalog.replies.lock().unwrap().clone();
    assert_eq!(replies.len(), 1);
    let reply = &replies[0];
    assert!(reply.error().is_none(), "{:?}", reply.error());
    let calls = reply
        .content()
        .unwrap()
        .metric_record("metrics")
        .unwrap()
        .get_f64("calls")
        .unwrap();
    (run_id, reply.metadata.reply_to_message_id.clone(), calls)
}

/// The fresh-state restart of issue 12 in one process: the new SuperLink's first run has
/// the old one's run id and its first instruction the old one's message id. A node that
/// kept its caches would drop that instruction as a duplicate (the run waits out its TTL)
/// or serve it with the old run's ClientApp and node state.
#[tokio::test(start_paused = true)]
async fn a_supernode_meeting_a_new_superlink_incarnation_drops_what_it_kept_by_run_and_message_id()
{
    let catalog = TestCatalog::new();
    let old = service_reusing_ids(&catalog).await;
    let fleet = Arc::new(Incarnated {
        link: SwitchFleet::new(old.fleet()),
        incarnation: 1.into(),
    });
    let node = spawn_node(node_config(0), fleet.clone(), &catalog);
    wait_for_nodes(&old, 1).await;
    let before = one_train(&old, &catalog).await;
    assert_eq!(before.2, 1.0);

    let new = service_reusing_ids(&catalog).await;
    fleet.switch(new.fleet(), 2);
    old.shutdown().await;
    wait_for_nodes(&new, 1).await;
    let after = one_train(&new, &catalog).await;
    assert_eq!(
        (after.0, &after.1),
        (before.0, &before.1),
        "the test reuses run and message ids"
    );
    assert_eq!(
        after.2, 1.0,
        "the new run's ClientApp starts from fresh node state"
    );
    node.shutdown().await.unwrap();
    new.shutdown().await;
}
