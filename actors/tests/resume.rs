//! A SuperLink that goes down mid-run and comes back over the same state: the run resumes
//! from its last checkpoint and ends with the model of a run that was never interrupted.
//!
//! "Crash and restart" is one `Arc`'d state shared by two `SuperLinkService`s: the first is
//! `abort`ed (as SIGKILL would end it: nothing recorded, streams broken) and the second
//! starts over the state. SuperNodes reach the link through a `SwitchFleet`, so they find
//! the restarted SuperLink at the "same address" by themselves.
//!
//! Models are compared bitwise (the "final model sha256" line). The runs use 2 nodes: a
//! round's fold adds two f32 terms, and two-term addition gives the same bits whichever
//! reply arrives first, so the comparison does not depend on reply order.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use floret_actors::state::prelude::*;
use floret_actors::state::{RunSignals, StateError, Sweep};
use floret_actors::{
    AppLauncher, FabCache, HeartbeatPolicy, Isolation, LinkAppIo, LinkFabs, LinkState,
    MemoryLinkState, NewRun, NodeLease, SqliteLinkState, SuperLinkService,
};
use floret_core::fab::{Fab, FabManifest, HOST_TARGET, sha256_hex};
use floret_core::{
    AppCatalog, AppIoError, AppOutcome, AppRef, ClientApp, Control, Fleet, FleetError, Message,
    NodeAuthority, NodeInfo, NodeSet, RegisterNode, Registration, RunEvent, RunInfo, RunStatus,
    ServerApp, ServerAppIo, SubStatus,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

const ROUNDS: i64 = 4;

async fn start(state: Arc<dyn LinkState>, catalog: Arc<dyn AppCatalog>) -> SuperLinkService {
    SuperLinkService::start(state, catalog, HeartbeatPolicy::default())
        .await
        .unwrap()
}

/// A SuperLink over `state` with one run that never ends, once it is running.
async fn start_hanging_run(
    state: &Arc<dyn LinkState>,
    catalog: &TestCatalog,
) -> (SuperLinkService, u64) {
    let service = start(state.clone(), Arc::new(catalog.clone())).await;
    let run = service
        .control()
        .start_run(start_request(HANG, &[]))
        .await
        .unwrap();
    wait_until("the run to run", Duration::from_secs(10), || {
        state.run_status(run) == Some(RunStatus::Running)
    })
    .await;
    (service, run)
}

fn final_digests(events: &[RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Log(l) => l.strip_prefix("final model sha256 ").map(str::to_string),
            _ => None,
        })
        .collect()
}

fn logs(events: &[RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Log(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

/// How often each round was started, rounds 1..=ROUNDS.
fn round_starts(events: &[RunEvent]) -> Vec<usize> {
    (1..=ROUNDS as u64)
        .map(|r| {
            events
                .iter()
                .filter(|e| matches!(e, RunEvent::RoundStarted { round, .. } if *round == r))
                .count()
        })
        .collect()
}

/// The final model's digest of the FedAvg run on 2 nodes, never interrupted.
async fn uninterrupted_digest() -> String {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let nodes: Vec<NodeHandle> = (0..2)
        .map(|p| spawn_node(node_config(p), link.fleet(), &catalog))
        .collect();
    let control = link.control();
    let run_id = control.start_run(fedavg_request(ROUNDS, 2)).await.unwrap();
    let (info, events) = follow_to_end(control.as_ref(), run_id).await;
    assert_eq!(info.status, RunStatus::Finished(SubStatus::Completed));
    assert_eq!(round_starts(&events), [1, 1, 1, 1]);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    link.shutdown().await;
    let digests = final_digests(&events);
    assert_eq!(digests.len(), 1, "{events:#?}");
    digests[0].clone()
}

/// The SuperNodes' link: a `SwitchFleet` that can also hold back the replies of one round
/// (so the test knows the round is under way when it crashes the SuperLink), and, once told
/// to, pushes every reply batch twice (a retransmission) and counts what the SuperLink made
/// of the second copy.
struct NodeLink {
    switch: Arc<SwitchFleet>,
    /// Replies in this group (a FedAvg round) wait while it is set.
    hold_group: Mutex<Option<String>>,
    released: Notify,
    held: AtomicUsize,
    /// Held replies the SuperLink refused once released.
    held_refused: AtomicUsize,
    twice: AtomicBool,
    second_accepted: AtomicUsize,
    second_refused: AtomicUsize,
}

impl NodeLink {
    fn new(fleet: Arc<dyn Fleet>) -> NodeLink {
        NodeLink {
            switch: Arc::new(SwitchFleet::new(fleet)),
            hold_group: Mutex::new(None),
            released: Notify::new(),
            held: AtomicUsize::new(0),
            held_refused: AtomicUsize::new(0),
            twice: AtomicBool::new(false),
            second_accepted: AtomicUsize::new(0),
            second_refused: AtomicUsize::new(0),
        }
    }

    fn hold(&self, group: &str) {
        *self.hold_group.lock().unwrap() = Some(group.to_string());
    }

    fn release(&self) {
        *self.hold_group.lock().unwrap() = None;
        self.released.notify_waiters();
    }

    fn holds(&self, batch: &[Message]) -> bool {
        let group = self.hold_group.lock().unwrap();
        group
            .as_ref()
            .is_some_and(|g| batch.iter().any(|m| m.metadata.group_id == *g))
    }
}

#[async_trait]
impl Fleet for NodeLink {
    async fn register_node(&self, r: RegisterNode) -> Result<Registration, FleetError> {
        self.switch.register_node(r).await
    }
    async fn deactivate_node(&self, n: u64) -> Result<(), FleetError> {
        self.switch.deactivate_node(n).await
    }
    async fn heartbeat(&self, n: u64, i: f64) -> Result<(), FleetError> {
        self.switch.heartbeat(n, i).await
    }
    async fn pull_messages(&self, n: u64) -> Result<Vec<Message>, FleetError> {
        self.switch.pull_messages(n).await
    }
    async fn push_messages(&self, n: u64, m: Vec<Message>) -> Result<(), FleetError> {
        if self.holds(&m) {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            self.held.fetch_add(1, Ordering::SeqCst);
            if self.holds(&m) {
                released.await;
            }
            let pushed = self.switch.push_messages(n, m).await;
            if pushed.is_err() {
                self.held_refused.fetch_add(1, Ordering::SeqCst);
            }
            return pushed;
        }
        let pushed = self.switch.push_messages(n, m.clone()).await;
        if pushed.is_ok() && self.twice.load(Ordering::SeqCst) {
            match self.switch.push_messages(n, m).await {
                Ok(()) => self.second_accepted.fetch_add(1, Ordering::SeqCst),
                Err(_) => self.second_refused.fetch_add(1, Ordering::SeqCst),
            };
        }
        pushed
    }
    async fn get_run(&self, r: u64) -> Result<RunInfo, FleetError> {
        self.switch.get_run(r).await
    }
    async fn get_fab(&self, h: &str) -> Result<Bytes, FleetError> {
        self.switch.get_fab(h).await
    }
    async fn subscribe(&self, n: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
        self.switch.subscribe(n).await
    }
}

/// A `MemoryLinkState` that says it is durable, as a database-backed state would.
struct Durable(MemoryLinkState);

impl NodeAuthority for Durable {
    fn admits(&self, public_key: &[u8]) -> bool {
        self.0.admits(public_key)
    }
    fn owns(&self, node_id: u64, public_key: &[u8]) -> bool {
        self.0.owns(node_id, public_key)
    }
}

impl RunStore for Durable {
    fn create_run(&self, run: NewRun) -> Result<u64, StateError> {
        self.0.create_run(run)
    }

    fn run(&self, run_id: u64) -> Option<RunInfo> {
        self.0.run(run_id)
    }

    fn runs(&self) -> Vec<RunInfo> {
        self.0.runs()
    }

    fn run_status(&self, run_id: u64) -> Option<RunStatus> {
        self.0.run_status(run_id)
    }

    fn set_run_status(
        &self,
        run_id: u64,
        status: RunStatus,
        reason: &str,
    ) -> Result<RunInfo, StateError> {
        self.0.set_run_status(run_id, status, reason)
    }

    fn signals(&self, run_id: u64) -> Result<Arc<RunSignals>, StateError> {
        self.0.signals(run_id)
    }

    fn count_resume(&self, run_id: u64) -> Result<u32, StateError> {
        self.0.count_resume(run_id)
    }

    fn federation_options(&self, run_id: u64) -> Result<floret_core::UserConfig, StateError> {
        self.0.federation_options(run_id)
    }

    fn clear_resumes(&self, run_id: u64) -> Result<(), StateError> {
        self.0.clear_resumes(run_id)
    }

    fn delete_runs(&self, run_ids: &[u64]) -> Result<usize, StateError> {
        self.0.delete_runs(run_ids)
    }
}

impl NodeStore for Durable {
    fn create_node(&self, lease: NodeLease) -> Result<u64, StateError> {
        self.0.create_node(lease)
    }

    fn renew_node(&self, node_id: u64, lease: NodeLease) -> Result<(), StateError> {
        self.0.renew_node(node_id, lease)
    }

    fn activate_node(&self, node_id: u64, lease: NodeLease) -> Result<(), StateError> {
        self.0.activate_node(node_id, lease)
    }

    fn unregister_node(&self, node_id: u64, reason: &str, now: f64) -> bool {
        self.0.unregister_node(node_id, reason, now)
    }

    fn node_ids(&self) -> NodeSet {
        self.0.node_ids()
    }

    fn node_alive(&self, node_id: u64) -> Result<(), StateError> {
        self.0.node_alive(node_id)
    }

    fn has_node(&self, node_id: u64) -> bool {
        self.0.has_node(node_id)
    }

    fn node_signal(&self, node_id: u64) -> Result<Arc<Notify>, StateError> {
        self.0.node_signal(node_id)
    }

    fn sweep(&self, now: f64) -> Sweep {
        self.0.sweep(now)
    }
}

impl MessageStore for Durable {
    fn push_instructions(
        &self,
        run_id: u64,
        messages: Vec<Message>,
        now: f64,
    ) -> Result<Vec<String>, StateError> {
        self.0.push_instructions(run_id, messages, now)
    }

    fn pull_instructions(&self, node_id: u64, limit: usize) -> Result<Vec<Message>, StateError> {
        self.0.pull_instructions(node_id, limit)
    }

    fn redeliver(&self, node_id: u64) -> Result<usize, StateError> {
        self.0.redeliver(node_id)
    }

    fn push_reply(&self, reply: Message, now: f64) -> Result<(), StateError> {
        self.0.push_reply(reply, now)
    }

    fn take_replies(&self, run_id: u64) -> Result<Vec<Message>, StateError> {
        self.0.take_replies(run_id)
    }

    fn take_replies_to(
        &self,
        run_id: u64,
        message_ids: &[String],
    ) -> Result<Vec<Message>, StateError> {
        self.0.take_replies_to(run_id, message_ids)
    }

    fn purge_messages(&self, run_id: u64) {
        self.0.purge_messages(run_id)
    }

    fn held_messages(&self) -> usize {
        self.0.held_messages()
    }
}

impl EventLog for Durable {
    fn push_event(&self, run_id: u64, event: RunEvent) -> Result<(), StateError> {
        self.0.push_event(run_id, event)
    }

    fn events(&self, run_id: u64, from: usize) -> Result<(Vec<RunEvent>, usize), StateError> {
        self.0.events(run_id, from)
    }
}

impl FabStore for Durable {
    fn store_fab(&self, fab_hash: &str, packed: Bytes) -> Result<(), StateError> {
        self.0.store_fab(fab_hash, packed)
    }

    fn fab(&self, fab_hash: &str) -> Option<Bytes> {
        self.0.fab(fab_hash)
    }
}

impl NodeKeyStore for Durable {
    fn set_node_auth(&self, required: bool) {
        self.0.set_node_auth(required)
    }

    fn node_auth(&self) -> bool {
        self.0.node_auth()
    }

    fn allow_node_key(&self, public_key: Bytes, now: f64) -> Result<u64, StateError> {
        self.0.allow_node_key(public_key, now)
    }

    fn disallow_node(&self, node_id: u64) -> Option<Bytes> {
        self.0.disallow_node(node_id)
    }

    fn node_id_of_key(&self, public_key: &[u8]) -> Option<u64> {
        self.0.node_id_of_key(public_key)
    }

    fn node_seen(&self, node_id: u64, now: f64) {
        self.0.node_seen(node_id, now)
    }

    fn nodes_info(&self) -> Vec<NodeInfo> {
        self.0.nodes_info()
    }
}

impl CheckpointStore for Durable {
    fn save_checkpoint(&self, run_id: u64, checkpoint: Bytes) -> Result<(), StateError> {
        self.0.save_checkpoint(run_id, checkpoint)
    }

    fn checkpoint(&self, run_id: u64) -> Result<Option<Bytes>, StateError> {
        self.0.checkpoint(run_id)
    }

    fn drop_checkpoint(&self, run_id: u64) -> Result<(), StateError> {
        self.0.drop_checkpoint(run_id)
    }
}

impl LinkState for Durable {
    fn is_durable(&self) -> bool {
        true
    }

    fn incarnation(&self) -> u64 {
        self.0.incarnation()
    }
}

/// The test apps minus one ServerApp: the SuperLink was upgraded and the app is gone.
struct Without(TestCatalog, &'static str);

impl AppCatalog for Without {
    fn server_app(&self, component: &str) -> Option<Arc<dyn ServerApp>> {
        if component == self.1 {
            return None;
        }
        self.0.server_app(component)
    }
    fn client_app(&self, component: &str) -> Option<ClientApp> {
        self.0.client_app(component)
    }
    fn components(&self) -> Vec<(String, String)> {
        self.0.components()
    }
}

fn count(n: &AtomicUsize) -> usize {
    n.load(Ordering::SeqCst)
}

/// A SuperLink over `state` running the FedAvg run on 2 SuperNodes that reach it through a
/// `NodeLink`, once that link holds back both nodes' replies of round `round`.
async fn fedavg_held_at_round(
    state: &Arc<dyn LinkState>,
    catalog: &TestCatalog,
    round: u32,
) -> (SuperLinkService, Arc<NodeLink>, Vec<NodeHandle>, u64) {
    let service = start(state.clone(), Arc::new(catalog.clone())).await;
    let link = Arc::new(NodeLink::new(service.fleet()));
    link.hold(&round.to_string());
    let nodes: Vec<NodeHandle> = (0..2)
        .map(|p| spawn_node(node_config(p), link.clone(), catalog))
        .collect();
    let run_id = service
        .control()
        .start_run(fedavg_request(ROUNDS, 2))
        .await
        .unwrap();
    wait_until(
        &format!("both round-{round} replies"),
        Duration::from_secs(120),
        || count(&link.held) == 2,
    )
    .await;
    (service, link, nodes, run_id)
}

#[tokio::test(start_paused = true)]
async fn a_run_resumes_after_a_superlink_crash_and_ends_with_the_uninterrupted_model() {
    let expected = uninterrupted_digest().await;
    let catalog = TestCatalog::new();
    let state: Arc<dyn LinkState> = Arc::new(MemoryLinkState::new());
    // Both nodes have answered round 3 and the ServerApp waits for those answers: the
    // crash comes after round 2's checkpoint, in the middle of round 3.
    let (old, link, nodes, run_id) = fedavg_held_at_round(&state, &catalog, 3).await;
    assert!(state.checkpoint(run_id).unwrap().is_some());
    old.abort().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        state.run_status(run_id),
        Some(RunStatus::Running),
        "a crash records nothing"
    );

    let new = start(state.clone(), Arc::new(catalog.clone())).await;
    link.switch.switch(new.fleet());
    link.twice.store(true, Ordering::SeqCst);
    link.release();
    let (info, events) = follow_to_end(new.control().as_ref(), run_id).await;

    assert_eq!(
        info.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        info.reason
    );
    assert_eq!(final_digests(&events), [expected], "bitwise the same model");
    // Rounds 1 and 2 were not redone; round 3 started before the crash and again after.
    assert_eq!(round_starts(&events), [1, 1, 2, 1]);
    let logs = logs(&events);
    let resumed = format!("run {run_id} resumed after a SuperLink restart (it was running)");
    assert!(logs.contains(&resumed), "{logs:#?}");
    let from = "FedAvg: resuming from round 3 of 4 (checkpoint after round 2)".to_string();
    assert!(logs.contains(&from), "{logs:#?}");
    // The replies computed for the crashed ServerApp reached the new SuperLink and were
    // refused; every reply pushed twice was taken once.
    assert_eq!(count(&link.held_refused), 2);
    assert!(
        count(&link.second_refused) >= 4,
        "rounds 3 and 4, two nodes"
    );
    assert_eq!(count(&link.second_accepted), 0);
    assert_eq!(state.held_messages(), 0);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    new.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn runs_that_cannot_resume_are_failed_with_the_reason() {
    let catalog = TestCatalog::new();
    let state: Arc<dyn LinkState> = Arc::new(MemoryLinkState::new());
    let (old, hang) = start_hanging_run(&state, &catalog).await;
    // A FAB run, left running; the restarted SuperLink runs built-in apps only.
    let fab = state
        .create_run(NewRun {
            app: AppRef {
                name: "fab".into(),
                serverapp: "fab.server:app".into(),
                clientapp: "fab.client:app".into(),
                fab_hash: "ab".repeat(32),
            },
            ..NewRun::default()
        })
        .unwrap();
    state.set_run_status(fab, RunStatus::Starting, "").unwrap();
    state.set_run_status(fab, RunStatus::Running, "").unwrap();
    old.abort().await;

    let new = start(state.clone(), Arc::new(Without(catalog, HANG.0))).await;

    let run = state.run(hang).unwrap();
    assert_eq!(run.status, RunStatus::Finished(SubStatus::Failed));
    assert_eq!(
        run.reason,
        format!(
            "run {hang} cannot resume after a SuperLink restart: its ServerApp \
             \"test.server:hang\" is not among this SuperLink's apps"
        )
    );
    let (events, _) = state.events(hang, 0).unwrap();
    assert!(logs(&events).contains(&run.reason), "{events:#?}");
    let run = state.run(fab).unwrap();
    assert_eq!(run.status, RunStatus::Finished(SubStatus::Failed));
    assert!(
        run.reason.starts_with(&format!(
            "run {fab} cannot resume after a SuperLink restart"
        )),
        "{}",
        run.reason
    );
    assert!(run.reason.contains("FAB"), "{}", run.reason);
    new.shutdown().await;
}

fn open(path: &std::path::Path) -> Arc<dyn LinkState> {
    Arc::new(SqliteLinkState::open(path).unwrap())
}

/// The lines of `run`'s log that say it was resumed.
fn resumed_lines(state: &dyn LinkState, run: u64) -> usize {
    let (events, _) = state.events(run, 0).unwrap();
    logs(&events)
        .iter()
        .filter(|l| l.starts_with(&format!("run {run} resumed after a SuperLink restart")))
        .count()
}

/// A run whose ServerApp takes the SuperLink down at every start (here the service is
/// aborted, as an abort on allocation or SIGKILL ends it) is resumed 3 times
/// (`--max-resume-attempts`' default), each counted in the database before the ServerApp
/// runs again, and is then failed with why instead of taking down every start after.
#[tokio::test(start_paused = true)]
async fn a_run_that_keeps_crashing_the_superlink_is_failed_after_three_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let catalog = TestCatalog::new();
    let (first, run) = start_hanging_run(&open(&path), &catalog).await;
    first.abort().await;
    for resumes in 1..=3 {
        let state = open(&path);
        let link = start(state.clone(), Arc::new(catalog.clone())).await;
        assert_eq!(state.run_status(run), Some(RunStatus::Running));
        assert_eq!(resumed_lines(state.as_ref(), run), resumes);
        link.abort().await;
    }

    let state = open(&path);
    let link = start(state.clone(), Arc::new(catalog.clone())).await;
    let info = state.run(run).unwrap();
    assert_eq!(info.status, RunStatus::Finished(SubStatus::Failed));
    assert!(
        info.reason.starts_with(&format!(
            "run {run} was not resumed again: it crashed the SuperLink 3 times"
        )),
        "{}",
        info.reason
    );
    assert!(
        info.reason.contains("--max-resume-attempts"),
        "{}",
        info.reason
    );
    let (events, _) = state.events(run, 0).unwrap();
    assert_eq!(logs(&events).last(), Some(&info.reason), "{events:#?}");
    assert_eq!(resumed_lines(state.as_ref(), run), 3);
    // The SuperLink goes on serving.
    let next = link
        .control()
        .start_run(start_request(HANG, &[]))
        .await
        .unwrap();
    assert_ne!(next, run);
    link.shutdown().await;
}

/// Only resumes that end in a crash count: a run suspended by clean shutdowns is resumed
/// at every start, however many there are.
#[tokio::test(start_paused = true)]
async fn clean_shutdowns_do_not_count_towards_the_resume_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let catalog = TestCatalog::new();
    let (first, run) = start_hanging_run(&open(&path), &catalog).await;
    first.abort().await;
    for _ in 0..5 {
        let state = open(&path);
        let link = start(state.clone(), Arc::new(catalog.clone())).await;
        assert_eq!(
            state.run_status(run),
            Some(RunStatus::Running),
            "{:?}",
            state.run(run)
        );
        link.shutdown().await;
    }
    assert_eq!(resumed_lines(open(&path).as_ref(), run), 5);
}

#[tokio::test(start_paused = true)]
async fn a_graceful_shutdown_over_a_durable_state_leaves_the_run_to_resume() {
    let expected = uninterrupted_digest().await;
    let catalog = TestCatalog::new();
    let state: Arc<dyn LinkState> = Arc::new(Durable(MemoryLinkState::new()));
    let (old, link, nodes, run_id) = fedavg_held_at_round(&state, &catalog, 2).await;
    old.shutdown().await;
    let left = state.run(run_id).unwrap();
    assert_eq!(left.status, RunStatus::Running, "{}", left.reason);
    assert!(left.reason.is_empty(), "{}", left.reason);

    let new = start(state.clone(), Arc::new(catalog.clone())).await;
    link.switch.switch(new.fleet());
    link.release();
    let (info, events) = follow_to_end(new.control().as_ref(), run_id).await;
    assert_eq!(
        info.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        info.reason
    );
    assert_eq!(final_digests(&events), [expected]);
    assert_eq!(round_starts(&events), [1, 2, 1, 1]);
    assert!(
        logs(&events)
            .iter()
            .any(|l| l.starts_with(&format!("run {run_id} resumed after a SuperLink restart"))),
        "{events:#?}"
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    new.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_graceful_shutdown_over_a_state_that_dies_with_the_process_stops_the_run() {
    let catalog = TestCatalog::new();
    let state: Arc<dyn LinkState> = Arc::new(MemoryLinkState::new());
    let (old, hang) = start_hanging_run(&state, &catalog).await;
    old.shutdown().await;
    let run = state.run(hang).unwrap();
    assert_eq!(run.status, RunStatus::Finished(SubStatus::Stopped));
    assert_eq!(
        run.reason,
        floret_actors::superlink::service::SHUTDOWN_REASON
    );
    // Nothing left to resume for a SuperLink started over it.
    let new = start(state.clone(), Arc::new(catalog)).await;
    assert_eq!(state.run(hang).unwrap(), run);
    new.shutdown().await;
}

/// A FAB whose app process is this test (`--isolation process`): its binary never runs.
fn fab() -> Bytes {
    let binary = Bytes::from_static(b"#!/bin/sh\nexit 0\n");
    Fab {
        manifest: FabManifest {
            name: "resumable".into(),
            version: "1.0.0".into(),
            publisher: "test".into(),
            serverapp: "resumable:server".into(),
            clientapp: "resumable:client".into(),
            target: HOST_TARGET.into(),
            binary_sha256: sha256_hex(&binary),
            pyproject: String::new(),
        },
        binary,
    }
    .pack()
}

async fn fab_link(
    state: Arc<dyn LinkState>,
    dir: &std::path::Path,
) -> (SuperLinkService, Arc<LinkAppIo>) {
    let io = Arc::new(LinkAppIo::new(state.clone()));
    let fabs = LinkFabs {
        io: io.clone(),
        launcher: AppLauncher::new(Isolation::Process, FabCache::new(dir), "127.0.0.1:1".into()),
        simulation_workers: None,
    };
    let catalog = Arc::new(TestCatalog::new());
    let service =
        SuperLinkService::start_with_fabs(state, catalog, HeartbeatPolicy::default(), Some(fabs))
            .await
            .unwrap();
    (service, io)
}

/// Claims the run waiting for an app process, as `<app> serverapp` started by hand would.
async fn claim(io: &LinkAppIo) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(token) = io.claim().await.unwrap() {
            return token;
        }
        assert!(tokio::time::Instant::now() < deadline, "no run to claim");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_fab_run_resumes_and_its_new_app_process_reads_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn LinkState> = Arc::new(MemoryLinkState::new());
    let (old, old_io) = fab_link(state.clone(), dir.path()).await;
    let packed = fab();
    let request = floret_core::StartRun {
        app: AppRef {
            name: "resumable".into(),
            serverapp: "resumable:server".into(),
            clientapp: "resumable:client".into(),
            fab_hash: floret_core::fab_hash(&packed),
        },
        fab: Some(packed),
        ..floret_core::StartRun::default()
    };
    let run_id = old.control().start_run(request).await.unwrap();
    let token = claim(&old_io).await;
    let saved = Bytes::from_static(b"after round 2");
    old_io.save_checkpoint(&token, saved.clone()).await.unwrap();
    old.abort().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        old_io.context(&token).await.unwrap_err(),
        AppIoError::BadToken,
        "the crashed SuperLink's app process is told to exit"
    );

    let (new, io) = fab_link(state.clone(), dir.path()).await;
    let token = claim(&io).await;
    assert_eq!(io.context(&token).await.unwrap().run_id, run_id);
    assert_eq!(io.load_checkpoint(&token).await.unwrap(), Some(saved));
    io.finish(&token, AppOutcome::Completed).await.unwrap();
    wait_until("the run to complete", Duration::from_secs(10), || {
        state.run_status(run_id) == Some(RunStatus::Finished(SubStatus::Completed))
    })
    .await;
    new.shutdown().await;
}
