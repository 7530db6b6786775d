//! A deployment in one process for the link-fault scenarios: a SuperLinkService serving
//! the quickstart app, and SuperNodes each talking to it through its own `FaultyFleet`,
//! over the in-process `LinkFleet`, gRPC or QUIC (127.0.0.1, ephemeral ports).

#![allow(dead_code)] // each scenario file uses a different part

use floret_actors::{
    Backoff, HeartbeatPolicy, LinkState, MemoryLinkState, SuperLinkService, SuperNode,
    SuperNodeConfig, SuperNodeError,
};
use floret_app_quickstart::{CLIENT_COMPONENT, SERVER_COMPONENT};
use floret_chaos_tests::{FaultCounts, FaultPlan, FaultyFleet};
use floret_core::run_config::{apply_overrides, parse_overrides};
use floret_core::{
    AppCatalog, AppManifest, AppRef, ClientApp, Control, Fleet, RoundSummary, RunEvent, RunInfo,
    ServerApp, StartRun, UserConfig, UserConfigValue,
};
use floret_transport::TransportKind;
use floret_transport::grpc::{
    ClientOptions, Server, ServerOptions, bind_fleet_with, fleet_client_with,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How the SuperNodes reach the SuperLink.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Wire {
    /// The `LinkFleet` itself, in-process (the tests run on tokio's paused clock).
    Memory,
    Grpc,
    Quic,
}

/// Runs a scenario once per wire, each as its own test: in memory on the paused clock,
/// over gRPC and QUIC in real time. Every variant is bounded by `$secs` seconds (virtual
/// time in memory, real time on sockets), so a hang fails instead of blocking the suite.
#[macro_export]
macro_rules! over_every_wire {
    ($scenario:ident, $secs:literal) => {
        mod $scenario {
            use super::common::Wire;

            async fn bounded(wire: Wire) {
                let limit = std::time::Duration::from_secs($secs);
                if tokio::time::timeout(limit, super::$scenario(wire))
                    .await
                    .is_err()
                {
                    panic!(
                        "{} over {wire:?} did not finish within {limit:?}",
                        stringify!($scenario)
                    );
                }
            }

            #[tokio::test(start_paused = true)]
            async fn in_memory() {
                bounded(Wire::Memory).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_grpc() {
                bounded(Wire::Grpc).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_quic() {
                bounded(Wire::Quic).await;
            }
        }
    };
}

/// The quickstart apps, as the daemons register them.
struct Quickstart;

impl AppCatalog for Quickstart {
    fn server_app(&self, component: &str) -> Option<Arc<dyn ServerApp>> {
        (component == SERVER_COMPONENT).then(floret_app_quickstart::server_app)
    }

    fn client_app(&self, component: &str) -> Option<ClientApp> {
        (component == CLIENT_COMPONENT).then(floret_app_quickstart::client_app)
    }

    fn components(&self) -> Vec<(String, String)> {
        vec![(SERVER_COMPONENT.into(), CLIENT_COMPONENT.into())]
    }
}

/// A SuperNode running in a task, and the switch that stops it.
struct NodeHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), SuperNodeError>>,
}

/// A run's end and what happened in each round.
pub(crate) struct RunOutcome {
    pub info: RunInfo,
    pub rounds: Vec<RoundSummary>,
    /// From `RoundStarted` to `RoundFinished` of each round, as the event follower saw it.
    pub durations: Vec<Duration>,
}

impl RunOutcome {
    /// Asserts the run completed (else shows why not) and went through `rounds` rounds.
    pub(crate) fn assert_completed(&self, rounds: usize) {
        assert_eq!(
            self.info.status,
            floret_core::RunStatus::Finished(floret_core::SubStatus::Completed),
            "{}",
            self.info.reason
        );
        assert_eq!(self.rounds.len(), rounds);
    }

    pub(crate) fn train(&self, round: usize) -> &floret_core::PhaseSummary {
        self.rounds[round - 1]
            .train
            .as_ref()
            .expect("every round trains")
    }
}

pub(crate) struct Deployment {
    pub wire: Wire,
    pub service: SuperLinkService,
    server: Option<Server>,
    /// The link of node `i`, for its counters and for partitions.
    pub links: Vec<FaultyFleet>,
    nodes: Vec<NodeHandle>,
}

/// Reconnects within a quarter second of the link coming back: the scenarios time their
/// outages against round timeouts of a few seconds.
fn node_config(partition: usize) -> SuperNodeConfig {
    let mut node_config = UserConfig::new();
    node_config.insert(
        "partition-id".into(),
        UserConfigValue::Int(partition as i64),
    );
    SuperNodeConfig {
        superlink: "chaos".into(),
        node_config,
        heartbeat_interval: Duration::from_secs(10),
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(250),
            ..Backoff::default()
        },
        ..SuperNodeConfig::default()
    }
}

impl Deployment {
    /// A SuperLink and one SuperNode per plan, node `i` through a `FaultyFleet` with
    /// `plans[i]` as link `i`; returns once every node has subscribed to its instructions.
    /// Registrations are not counted here: a fault may have left extra ones.
    pub(crate) async fn start(wire: Wire, plans: Vec<FaultPlan>) -> Deployment {
        let state: Arc<dyn LinkState> = Arc::new(MemoryLinkState::new());
        let service =
            SuperLinkService::start(state, Arc::new(Quickstart), HeartbeatPolicy::default())
                .await
                .expect("the SuperLink starts");
        let server = match wire {
            Wire::Memory => None,
            Wire::Grpc | Wire::Quic => {
                let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
                let options = ServerOptions {
                    quic: true,
                    ..ServerOptions::default()
                };
                Some(
                    bind_fleet_with(localhost, service.fleet(), options)
                        .await
                        .expect("the Fleet API binds to 127.0.0.1"),
                )
            }
        };
        let mut links = Vec::new();
        let mut nodes = Vec::new();
        for (i, plan) in plans.into_iter().enumerate() {
            let base: Arc<dyn Fleet> = match (&server, wire) {
                (Some(server), Wire::Grpc | Wire::Quic) => {
                    let options = ClientOptions {
                        transport: if wire == Wire::Quic {
                            TransportKind::Quic
                        } else {
                            TransportKind::Grpc
                        },
                        connect_timeout: Duration::from_secs(2),
                        request_timeout: Duration::from_secs(10),
                        ..ClientOptions::default()
                    };
                    let address = server.local_addr().to_string();
                    Arc::new(fleet_client_with(&address, options).expect("a valid address"))
                }
                _ => service.fleet(),
            };
            let faulty = FaultyFleet::new(base, plan, i as u64).expect("a valid plan");
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(SuperNode::run(
                node_config(i),
                Arc::new(faulty.clone()),
                Arc::new(Quickstart),
                async move {
                    let _ = stopped.await;
                },
            ));
            links.push(faulty);
            nodes.push(NodeHandle { stop, task });
        }
        let deployment = Deployment {
            wire,
            service,
            server,
            links,
            nodes,
        };
        let links = deployment.links.clone();
        wait_until("every node to connect", Duration::from_secs(10), || {
            links.iter().all(|link| link.counts().subscriptions > 0)
        })
        .await;
        deployment
    }

    /// Runs the quickstart with `overrides` (and `fraction-evaluate`) to its end.
    pub(crate) async fn run(&self, overrides: &str, fraction_evaluate: f64) -> RunOutcome {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/quickstart/pyproject.toml");
        let text = std::fs::read_to_string(&path).expect("the quickstart's pyproject.toml");
        let manifest = AppManifest::parse(&text, &path).expect("a valid manifest");
        let overrides = parse_overrides(overrides).expect("valid overrides");
        let mut run_config = apply_overrides(&manifest.config, &overrides).expect("known keys");
        run_config.insert(
            "fraction-evaluate".into(),
            UserConfigValue::Float(fraction_evaluate),
        );
        let control = self.service.control();
        let run_id = control
            .start_run(StartRun {
                app: AppRef {
                    name: "quickstart".into(),
                    serverapp: SERVER_COMPONENT.into(),
                    clientapp: CLIENT_COMPONENT.into(),
                    fab_hash: String::new(),
                },
                federation: "chaos".into(),
                run_config,
                federation_options: UserConfig::new(),
                fab: None,
            })
            .await
            .expect("the run starts");
        let mut events = control
            .stream_events(run_id, true)
            .await
            .expect("the run's events");
        let mut rounds = Vec::new();
        let mut durations = Vec::new();
        let mut started = Instant::now();
        while let Some(event) = events.recv().await {
            match event {
                RunEvent::RoundStarted { .. } => started = Instant::now(),
                RunEvent::RoundFinished(summary) => {
                    durations.push(started.elapsed());
                    rounds.push(summary);
                }
                RunEvent::Log(_) => {}
            }
        }
        let info = control.get_run(run_id).await.expect("the run is known");
        RunOutcome {
            info,
            rounds,
            durations,
        }
    }

    /// Injected faults over every link.
    pub(crate) fn counts(&self) -> FaultCounts {
        let all: Vec<FaultCounts> = self.links.iter().map(FaultyFleet::counts).collect();
        FaultCounts::sum(&all)
    }

    /// Stops the nodes, then the server and the SuperLink.
    pub(crate) async fn shutdown(self) {
        for node in self.nodes {
            let _ = node.stop.send(());
            // A node whose link is down cannot deactivate; it gives up after a few seconds.
            let _ = node.task.await;
        }
        if let Some(server) = self.server {
            server.shutdown().await;
        }
        self.service.shutdown().await;
    }
}

/// Polls `check` every 10 ms (virtual or real) until it holds; panics after `limit`.
pub(crate) async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
