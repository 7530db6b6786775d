//! The SuperLink's disk: what a finished run leaves in the state, how long it stays, and
//! what a full database does to the run that meets it.
//!
//! Real runs: FedAvg over a model of a few MB on two in-process SuperNodes, over a
//! SQLite state in a file, as `flower-superlink --database FILE` keeps it.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

#[macro_use]
mod common;

use async_trait::async_trait;
use common::*;
use floret_actors::state::Retention;
use floret_actors::state::prelude::*;
use floret_actors::{
    HeartbeatPolicy, LinkState, MemoryLinkState, RunLimits, SqliteLinkState, SuperLinkService,
    SuperNode,
};
use floret_core::{
    AppCatalog, AppError, Array, ArrayRecord, ClientApp, ConfigRecord, Context, Control, Fleet,
    FleetError, Grid, Message, MetricRecord, RecordDict, RegisterNode, RunInfo, RunStatus,
    ServerApp, SubStatus, UserConfigValue,
};
use floret_strategies::{FedAvg, FedAvgConfig};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

const BIG: (&str, &str) = ("disk.server:fedavg", "disk.client:fedavg");

/// FedAvg on 2 nodes over a model of `params` float32 values, `rounds` rounds; its
/// strategy saves a checkpoint (the whole model) after every round.
struct BigFedAvg;

#[async_trait]
impl ServerApp for BigFedAvg {
    async fn main(&self, grid: &dyn Grid, ctx: Context) -> Result<(), AppError> {
        let params = ctx.run_config_i64("params")? as usize;
        let rounds = ctx.run_config_i64("rounds")? as u64;
        let strategy = FedAvg::new(FedAvgConfig {
            fraction_evaluate: 0.0,
            min_available_nodes: 2,
            min_train_nodes: 2,
            seed: Some(1),
            ..FedAvgConfig::default()
        })
        .map_err(AppError::other)?;
        let mut initial = ArrayRecord::new();
        initial.insert(
            "w",
            Array::from_vec(vec![params as i32], vec![0.5f32; params]),
        );
        strategy
            .start(
                grid,
                initial,
                rounds,
                Duration::from_secs(600),
                ConfigRecord::new(),
                ConfigRecord::new(),
            )
            .await
            .map_err(AppError::other)?;
        Ok(())
    }
}

/// The apps of these tests. With `padded`, the ClientApp's reply carries a second copy of
/// the model next to the update (which FedAvg ignores), so a reply takes more room than
/// the instruction it answers frees.
#[derive(Clone)]
struct DiskCatalog {
    padded: bool,
}

impl AppCatalog for DiskCatalog {
    fn server_app(&self, component: &str) -> Option<Arc<dyn ServerApp>> {
        (component == BIG.0).then(|| Arc::new(BigFedAvg) as Arc<dyn ServerApp>)
    }

    fn client_app(&self, component: &str) -> Option<ClientApp> {
        if component != BIG.1 {
            None
        } else if self.padded {
            Some(padded_client())
        } else {
            Some(fedavg_client())
        }
    }

    fn components(&self) -> Vec<(String, String)> {
        vec![(BIG.0.into(), BIG.1.into())]
    }
}

/// Sends the model back unchanged, plus a copy of it under `pad`.
fn padded_client() -> ClientApp {
    ClientApp::new().train(|msg, _ctx| {
        let content = msg.content().map_err(|e| AppError::other(e.clone()))?;
        let w: Vec<f32> = content
            .array_record("arrays")?
            .get("w")?
            .values::<f32>()?
            .iter()
            .copied()
            .collect();
        let mut arrays = ArrayRecord::new();
        arrays.insert("w", Array::from_vec(vec![w.len() as i32], w.clone()));
        let mut pad = ArrayRecord::new();
        pad.insert("pad", Array::from_vec(vec![w.len() as i32], w));
        let mut metrics = MetricRecord::new();
        metrics.insert("num-examples", 1i64);
        Ok(RecordDict::new()
            .with("arrays", arrays)
            .with("pad", pad)
            .with("metrics", metrics))
    })
}

fn big_run(params: i64, rounds: i64) -> floret_core::StartRun {
    start_request(
        BIG,
        &[
            ("params", UserConfigValue::Int(params)),
            ("rounds", UserConfigValue::Int(rounds)),
        ],
    )
}

/// A SuperLink over `state` with `limits`, and two SuperNodes registered with it through
/// `wrap` of its Fleet.
async fn link_through(
    state: Arc<dyn LinkState>,
    limits: RunLimits,
    padded: bool,
    wrap: impl Fn(Arc<dyn Fleet>) -> Arc<dyn Fleet>,
) -> (SuperLinkService, Vec<NodeHandle>) {
    let catalog = DiskCatalog { padded };
    let link = SuperLinkService::start_with(
        state,
        Arc::new(catalog.clone()),
        HeartbeatPolicy::default(),
        None,
        limits,
        None,
    )
    .await
    .unwrap();
    let nodes = (0..2)
        .map(|p| {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(SuperNode::run(
                node_config(p),
                wrap(link.fleet()),
                Arc::new(catalog.clone()),
                async move {
                    let _ = stopped.await;
                },
            ));
            NodeHandle { stop, task }
        })
        .collect();
    wait_for_nodes(&link, 2).await;
    (link, nodes)
}

async fn link(state: Arc<dyn LinkState>, limits: RunLimits) -> (SuperLinkService, Vec<NodeHandle>) {
    link_through(state, limits, false, |fleet| fleet).await
}

/// The nodes' Fleet: the first call a node makes while the SuperLink holds a message (the
/// round's broadcast is stored) caps the database at its current size, as a disk filling
/// up mid-round would: the nodes' (padded) replies then find it full.
struct FillsUp {
    inner: Arc<dyn Fleet>,
    sqlite: Arc<SqliteLinkState>,
    full: Arc<AtomicBool>,
}

impl FillsUp {
    fn gate(&self) -> Result<(), FleetError> {
        if self.sqlite.held_messages() > 0 && !self.full.swap(true, Ordering::SeqCst) {
            self.sqlite.limit_size(0).unwrap();
        }
        Ok(())
    }
}

delegate_fleet!(FillsUp, |s| s.inner, s.gate());

/// Nodes run the `fedavg` ClientApp of the common catalog, which the BIG run names.
async fn run_to_end(link: &SuperLinkService, params: i64, rounds: i64) -> floret_core::RunInfo {
    let control = link.control();
    let run = control.start_run(big_run(params, rounds)).await.unwrap();
    let (info, _) = follow_to_end(control.as_ref(), run).await;
    info
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// 2 MB of float32.
const PARAMS: i64 = 500_000;

/// Finding 5 of issue 12: each finished run left its last checkpoint (the whole model) in
/// the database, which grew by a model per run forever. Now a run's checkpoint goes with
/// its end and the freed pages are given back: 50 runs (2 rounds each, so a checkpoint is
/// replaced too) leave the file about the size the first one left, under the default
/// retention, which keeps every run's record and log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_runs_leave_the_database_about_the_size_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let sqlite = Arc::new(SqliteLinkState::open(&path).unwrap());
    let (link, nodes) = link(sqlite.clone(), RunLimits::default()).await;
    let mut after_first = 0;
    for i in 0..50 {
        let info = run_to_end(&link, PARAMS, 2).await;
        assert_eq!(
            info.status,
            RunStatus::Finished(SubStatus::Completed),
            "run {i}: {}",
            info.reason
        );
        // The record ends with the checkpoint dropped; `follow_to_end` returns once the
        // status is final, a moment before. (A build that keeps checkpoints fails below.)
        for _ in 0..100 {
            if sqlite.checkpoint(info.run_id) == Ok(None) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if i == 0 {
            sqlite.checkpoint_wal().unwrap();
            after_first = file_size(&path);
        }
    }
    sqlite.checkpoint_wal().unwrap();
    let after_fifty = file_size(&path);
    eprintln!("database after 1 run: {after_first} bytes, after 50: {after_fifty} bytes");
    assert!(
        after_fifty < 2 * after_first + (1 << 20),
        "50 runs left {after_fifty} bytes, 1 run {after_first}"
    );
    assert_eq!(
        link.state().runs().len(),
        50,
        "the default retention keeps them"
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    link.shutdown().await;
}

/// `--retention-runs`: beyond the newest N finished runs, the older ones are deleted by
/// the SuperLink itself, with their logs, in both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_beyond_the_retention_count_are_deleted_with_their_logs() {
    let dir = tempfile::tempdir().unwrap();
    let stores: [Arc<dyn LinkState>; 2] = [
        Arc::new(MemoryLinkState::new()),
        Arc::new(SqliteLinkState::open(&dir.path().join("state.db")).unwrap()),
    ];
    for state in stores {
        let limits = RunLimits {
            retention: Retention {
                max_age: None,
                max_runs: Some(2),
                period: Duration::from_millis(50),
            },
            ..RunLimits::default()
        };
        let (link, nodes) = link(state.clone(), limits).await;
        let mut runs = Vec::new();
        for _ in 0..4 {
            runs.push(run_to_end(&link, 10, 1).await.run_id);
        }
        wait_until("the retention sweep", Duration::from_secs(10), || {
            state.runs().len() == 2
        })
        .await;
        let kept: Vec<u64> = state.runs().iter().map(|r| r.run_id).collect();
        assert_eq!(kept, runs[2..], "the two most recent are kept");
        assert!(state.events(runs[0], 0).is_err(), "its log went with it");
        for node in nodes {
            node.shutdown().await.unwrap();
        }
        link.shutdown().await;
    }
}

/// A full database (here its size cap, `--max-database-size`, as a full disk would do)
/// used to drop a node's reply with an INFO line on the node and leave the run `running`
/// until its round timed out (600 s here). Now the run fails at once, with a reason that
/// says what is full and what to do, as `flwr ls` shows it; and the SuperLink is still
/// able to record that, although the database is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_fails_the_run_at_once_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteLinkState::open(&dir.path().join("state.db")).unwrap());
    let full = Arc::new(AtomicBool::new(false));
    let (link, nodes) = link_through(sqlite.clone(), RunLimits::default(), true, |inner| {
        Arc::new(FillsUp {
            inner,
            sqlite: sqlite.clone(),
            full: full.clone(),
        })
    })
    .await;
    let started = tokio::time::Instant::now();
    let info = tokio::time::timeout(Duration::from_secs(60), run_to_end(&link, PARAMS, 1))
        .await
        .expect("the run ends well before its round timeout");
    assert_eq!(info.status, RunStatus::Finished(SubStatus::Failed));
    assert!(
        info.reason.contains(
            "the state database is full: free disk space where it is kept, or raise \
             --max-database-size"
        ),
        "{}",
        info.reason
    );
    eprintln!("failed after {:?}: {}", started.elapsed(), info.reason);
    let listed = link.state().run(info.run_id).unwrap();
    assert_eq!(listed.reason, info.reason, "flwr ls shows the same");
    assert!(
        full.load(Ordering::SeqCst),
        "the database filled up mid-round"
    );
    assert!(
        info.reason.starts_with("a reply from node "),
        "the reply's write failed: {}",
        info.reason
    );
    assert_eq!(link.state().held_messages(), 0, "its messages were dropped");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    link.shutdown().await;
}
