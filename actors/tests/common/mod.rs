//! Test apps, catalog and Fleet wrappers shared by the deployment tests. The link is the
//! `LinkFleet` itself: SuperNodes call it in-process, as they would through a transport.

#![allow(dead_code)] // each test file uses a different part

use async_trait::async_trait;
use floret_actors::{
    HeartbeatPolicy, LinkState, MemoryLinkState, SuperLinkService, SuperNode, SuperNodeConfig,
    SuperNodeError,
};
use floret_core::{
    AppCatalog, AppError, AppRef, Array, ArrayRecord, ClientApp, ConfigRecord, Context, Control,
    Fleet, FleetError, Grid, Message, MetricRecord, RecordDict, RegisterNode, RunEvent, RunInfo,
    ServerApp, StartRun, UserConfig, UserConfigValue,
};
use floret_strategies::{FedAvg, FedAvgConfig, History};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub(crate) const FEDAVG: (&str, &str) = ("test.server:fedavg", "test.client:fedavg");
pub(crate) const PROBE: (&str, &str) = ("test.server:probe", "test.client:probe");
pub(crate) const HANG: (&str, &str) = ("test.server:hang", "test.client:fedavg");

/// Each node adds its partition id to every weight, weighs itself by partition id + 1 and
/// counts its calls in its context state.
pub(crate) fn fedavg_client() -> ClientApp {
    ClientApp::new().train(|msg, ctx| {
        let content = msg.content().map_err(|e| AppError::other(e.clone()))?;
        let w = content.array_record("arrays")?.get("w")?.values::<f32>()?;
        let p = ctx.node_config_i64("partition-id")?;
        let calls = count_call(ctx)?;
        let updated: Vec<f32> = w.iter().map(|x| x + p as f32).collect();
        let mut arrays = ArrayRecord::new();
        arrays.insert("w", Array::from_vec(vec![updated.len() as i32], updated));
        let mut metrics = MetricRecord::new();
        metrics.insert("num-examples", p + 1);
        metrics.insert("calls", calls);
        Ok(RecordDict::new()
            .with("arrays", arrays)
            .with("metrics", metrics))
    })
}

fn count_call(ctx: &mut Context) -> Result<i64, AppError> {
    let calls = match ctx.state.metric_record("calls") {
        Ok(m) => m.get_f64("n")? as i64 + 1,
        Err(_) => 1,
    };
    let mut count = MetricRecord::new();
    count.insert("n", calls);
    ctx.state.insert("calls", count);
    Ok(calls)
}

/// A panic payload whose drop panics again: the panic escapes `client_exec`'s guard and
/// takes the host's blocking thread down, which is how a host failure looks.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("payload dropped");
    }
}

/// `train` counts calls in the context; `query` panics; `evaluate` kills its host.
pub(crate) fn probe_client() -> ClientApp {
    ClientApp::new()
        .train(|_, ctx| {
            let mut m = MetricRecord::new();
            m.insert("calls", count_call(ctx)?);
            Ok(RecordDict::new().with("metrics", m))
        })
        .query(|_, _| panic!("query is broken"))
        .evaluate(|_, _| std::panic::panic_any(PanicsOnDrop))
}

/// FedAvg over every connected node: `num-server-rounds` rounds, waiting for
/// `min-nodes` nodes.
pub(crate) struct FedAvgServer {
    pub history: Arc<Mutex<Option<History>>>,
}

#[async_trait]
impl ServerApp for FedAvgServer {
    async fn main(&self, grid: &dyn Grid, ctx: Context) -> Result<(), AppError> {
        let rounds = ctx.run_config_i64("num-server-rounds")? as u64;
        let nodes = ctx.run_config_i64("min-nodes")? as usize;
        let strategy = FedAvg::new(FedAvgConfig {
            fraction_evaluate: 0.0,
            min_available_nodes: nodes,
            min_train_nodes: nodes.min(2),
            seed: Some(1),
            ..FedAvgConfig::default()
        })
        .map_err(AppError::other)?;
        let mut initial = ArrayRecord::new();
        initial.insert("w", Array::from_slice(&[0.0f32, 10.0]));
        let history = strategy
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
        *self.history.lock().unwrap() = Some(history);
        Ok(())
    }

    fn check_config(&self, run_config: &UserConfig) -> Result<(), AppError> {
        match run_config.get("num-server-rounds") {
            Some(UserConfigValue::Int(n)) if *n >= 1 => Ok(()),
            other => Err(AppError::Config(format!(
                "num-server-rounds must be an integer of 1 or more, got {other:?}"
            ))),
        }
    }
}

/// Sends the message types listed in `steps` (comma-separated) one after the other to every
/// connected node, with TTL `ttl` seconds, and records every reply.
pub(crate) struct ProbeServer {
    pub replies: Arc<Mutex<Vec<Message>>>,
}

#[async_trait]
impl ServerApp for ProbeServer {
    async fn main(&self, grid: &dyn Grid, ctx: Context) -> Result<(), AppError> {
        let steps = ctx.run_config_str("steps")?.to_string();
        let ttl = ctx.run_config_f64("ttl")?;
        for step in steps.split(',') {
            let nodes = grid.node_ids().await?;
            let messages = nodes
                .iter()
                .map(|&n| {
                    let mut m = Message::new(RecordDict::new(), n, step);
                    m.metadata.ttl = ttl;
                    m
                })
                .collect();
            let replies = grid
                .send_and_receive(messages, Duration::from_secs(3600))
                .await?;
            self.replies.lock().unwrap().extend(replies);
        }
        Ok(())
    }
}

/// Logs a line, then waits for an hour: a run that only ends when stopped.
pub(crate) struct HangServer;

#[async_trait]
impl ServerApp for HangServer {
    async fn main(&self, grid: &dyn Grid, _ctx: Context) -> Result<(), AppError> {
        grid.emit(RunEvent::Log("hanging".into()));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

/// The test apps. `clients: false` leaves the ClientApps out (a node with other apps).
#[derive(Clone)]
pub(crate) struct TestCatalog {
    pub history: Arc<Mutex<Option<History>>>,
    pub replies: Arc<Mutex<Vec<Message>>>,
    pub clients: bool,
}

impl TestCatalog {
    pub(crate) fn new() -> TestCatalog {
        TestCatalog {
            history: Arc::default(),
            replies: Arc::default(),
            clients: true,
        }
    }
}

impl AppCatalog for TestCatalog {
    fn server_app(&self, component: &str) -> Option<Arc<dyn ServerApp>> {
        match component {
            c if c == FEDAVG.0 => Some(Arc::new(FedAvgServer {
                history: self.history.clone(),
            })),
            c if c == PROBE.0 => Some(Arc::new(ProbeServer {
                replies: self.replies.clone(),
            })),
            c if c == HANG.0 => Some(Arc::new(HangServer)),
            _ => None,
        }
    }

    fn client_app(&self, component: &str) -> Option<ClientApp> {
        match component {
            _ if !self.clients => None,
            c if c == FEDAVG.1 => Some(fedavg_client()),
            c if c == PROBE.1 => Some(probe_client()),
            _ => None,
        }
    }

    fn components(&self) -> Vec<(String, String)> {
        [FEDAVG, PROBE, HANG]
            .iter()
            .map(|(s, c)| (s.to_string(), c.to_string()))
            .collect()
    }
}

pub(crate) async fn service(catalog: &TestCatalog) -> SuperLinkService {
    let state: Arc<dyn LinkState> = Arc::new(MemoryLinkState::new());
    SuperLinkService::start(state, Arc::new(catalog.clone()), HeartbeatPolicy::default())
        .await
        .unwrap()
}

pub(crate) fn start_request(app: (&str, &str), config: &[(&str, UserConfigValue)]) -> StartRun {
    StartRun {
        app: AppRef {
            name: "test".into(),
            serverapp: app.0.into(),
            clientapp: app.1.into(),
            fab_hash: String::new(),
        },
        federation: "remote".into(),
        run_config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        federation_options: UserConfig::new(),
        fab: None,
    }
}

/// A FEDAVG run of `rounds` rounds that waits for `min_nodes` nodes.
pub(crate) fn fedavg_request(rounds: i64, min_nodes: i64) -> StartRun {
    start_request(
        FEDAVG,
        &[
            ("num-server-rounds", UserConfigValue::Int(rounds)),
            ("min-nodes", UserConfigValue::Int(min_nodes)),
        ],
    )
}

/// A PROBE run that sends `steps` (comma-separated message types) with a TTL of `ttl` s.
pub(crate) fn probe_request(steps: &str, ttl: f64) -> StartRun {
    start_request(
        PROBE,
        &[
            ("steps", UserConfigValue::Str(steps.into())),
            ("ttl", UserConfigValue::Float(ttl)),
        ],
    )
}

pub(crate) fn node_config(partition: i64) -> SuperNodeConfig {
    let mut node_config = UserConfig::new();
    node_config.insert("partition-id".into(), UserConfigValue::Int(partition));
    SuperNodeConfig {
        node_config,
        heartbeat_interval: Duration::from_secs(10),
        ..SuperNodeConfig::default()
    }
}

/// A SuperNode running in a task, and the switch that stops it.
pub(crate) struct NodeHandle {
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<Result<(), SuperNodeError>>,
}

impl NodeHandle {
    pub(crate) async fn shutdown(self) -> Result<(), SuperNodeError> {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

pub(crate) fn spawn_node(
    config: SuperNodeConfig,
    fleet: Arc<dyn Fleet>,
    catalog: &TestCatalog,
) -> NodeHandle {
    let (stop, stopped) = oneshot::channel::<()>();
    let catalog = Arc::new(catalog.clone());
    let task = tokio::spawn(SuperNode::run(config, fleet, catalog, async move {
        let _ = stopped.await;
    }));
    NodeHandle { stop, task }
}

/// Polls `check` every 10 ms (virtual or real) until it holds; panics after `limit`.
pub(crate) async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits up to 10 s for `link` to have `n` registered nodes.
pub(crate) async fn wait_for_nodes(link: &SuperLinkService, n: usize) {
    let state = link.state();
    wait_until(&format!("{n} node(s)"), Duration::from_secs(10), || {
        state.node_ids().len() == n
    })
    .await;
}

/// A SuperLink over the test apps with `N` SuperNodes (partitions `0..N`) on its Fleet,
/// once all of them have registered.
pub(crate) async fn link_with_nodes<const N: usize>()
-> (TestCatalog, SuperLinkService, [NodeHandle; N]) {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let nodes = std::array::from_fn(|p| spawn_node(node_config(p as i64), link.fleet(), &catalog));
    wait_for_nodes(&link, N).await;
    (catalog, link, nodes)
}

/// Waits for a run to finish, through `stream_events(follow)`, and returns it.
pub(crate) async fn follow_to_end(control: &dyn Control, run_id: u64) -> (RunInfo, Vec<RunEvent>) {
    let mut rx = control.stream_events(run_id, true).await.unwrap();
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    (control.get_run(run_id).await.unwrap(), events)
}

/// A Fleet that is unreachable for its first `failures` calls, then passes calls through;
/// it counts the calls that failed.
pub(crate) struct FlakyFleet {
    pub inner: Arc<dyn Fleet>,
    pub failures: u32,
    pub failed: AtomicU32,
}

impl FlakyFleet {
    pub(crate) fn new(inner: Arc<dyn Fleet>, failures: u32) -> FlakyFleet {
        FlakyFleet {
            inner,
            failures,
            failed: AtomicU32::new(0),
        }
    }

    fn gate(&self) -> Result<(), FleetError> {
        let failed = self.failed.load(Ordering::SeqCst);
        if failed < self.failures {
            self.failed.store(failed + 1, Ordering::SeqCst);
            Err(FleetError::Unavailable("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

/// A Fleet handle whose SuperLink can be swapped: a restarted SuperLink at the same address.
pub(crate) struct SwitchFleet {
    pub current: RwLock<Arc<dyn Fleet>>,
}

impl SwitchFleet {
    pub(crate) fn new(fleet: Arc<dyn Fleet>) -> SwitchFleet {
        SwitchFleet {
            current: RwLock::new(fleet),
        }
    }

    pub(crate) fn switch(&self, fleet: Arc<dyn Fleet>) {
        *self.current.write().unwrap() = fleet;
    }

    fn get(&self) -> Arc<dyn Fleet> {
        self.current.read().unwrap().clone()
    }
}

/// Delegates every Fleet call to `$inner` after `$gate`.
macro_rules! delegate_fleet {
    ($ty:ty, |$s:ident| $inner:expr, $gate:expr) => {
        #[async_trait]
        impl Fleet for $ty {
            async fn register_node(
                &self,
                r: RegisterNode,
            ) -> Result<floret_core::Registration, FleetError> {
                let $s = self;
                $gate?;
                $inner.register_node(r).await
            }
            async fn deactivate_node(&self, n: u64) -> Result<(), FleetError> {
                let $s = self;
                $gate?;
                $inner.deactivate_node(n).await
            }
            async fn heartbeat(&self, n: u64, i: f64) -> Result<(), FleetError> {
                let $s = self;
                $gate?;
                $inner.heartbeat(n, i).await
            }
            async fn pull_messages(&self, n: u64) -> Result<Vec<Message>, FleetError> {
                let $s = self;
                $gate?;
                $inner.pull_messages(n).await
            }
            async fn push_messages(&self, n: u64, m: Vec<Message>) -> Result<(), FleetError> {
                let $s = self;
                $gate?;
                $inner.push_messages(n, m).await
            }
            async fn get_run(&self, r: u64) -> Result<RunInfo, FleetError> {
                let $s = self;
                $gate?;
                $inner.get_run(r).await
            }
            async fn get_fab(&self, h: &str) -> Result<bytes::Bytes, FleetError> {
                let $s = self;
                $gate?;
                $inner.get_fab(h).await
            }
            async fn subscribe(&self, n: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
                let $s = self;
                $gate?;
                $inner.subscribe(n).await
            }
        }
    };
}

delegate_fleet!(FlakyFleet, |s| s.inner, s.gate());
delegate_fleet!(SwitchFleet, |s| s.get(), Ok::<(), FleetError>(()));
