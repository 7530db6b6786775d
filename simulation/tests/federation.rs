//! A whole simulated federation through the real actors and FedAvg.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use async_trait::async_trait;
use floret_actors::{RunStatus, SubStatus};
use floret_core::{
    AppError, AppRef, Array, ArrayRecord, ClientApp, ConfigRecord, Context, Grid, MetricRecord,
    RecordDict, RunEvent, ServerApp,
};
use floret_simulation::{SimulationError, SimulationOptions, SimulationRun};
use floret_strategies::{FedAvg, FedAvgConfig, History};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Each node adds its partition id to every weight and weighs itself by partition id + 1;
/// it counts its calls in its node state.
fn client_app() -> ClientApp {
    ClientApp::new().train(|msg, ctx| {
        let content = msg.content().map_err(|e| AppError::other(e.clone()))?;
        let w = content.array_record("arrays")?.get("w")?.values::<f32>()?;
        let p = ctx.node_config_i64("partition-id")?;
        let calls = match ctx.state.metric_record("calls") {
            Ok(m) => m.get_f64("n")? as i64 + 1,
            Err(_) => 1,
        };
        let mut count = MetricRecord::new();
        count.insert("n", calls);
        ctx.state.insert("calls", count);
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

struct Server {
    nodes: usize,
    history: Arc<Mutex<Option<History>>>,
}

#[async_trait]
impl ServerApp for Server {
    async fn main(&self, grid: &dyn Grid, _ctx: Context) -> Result<(), AppError> {
        let strategy = FedAvg::new(FedAvgConfig {
            fraction_evaluate: 0.0,
            min_available_nodes: self.nodes,
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
                2,
                Duration::from_secs(30),
                ConfigRecord::new(),
                ConfigRecord::new(),
            )
            .await
            .map_err(AppError::other)?;
        *self.history.lock().unwrap() = Some(history);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedavg_over_a_virtual_fleet_matches_the_hand_computed_average() {
    let history = Arc::new(Mutex::new(None));
    let options = SimulationOptions {
        num_supernodes: 4,
        num_cpus: 1.0,
        num_gpus: 0.0,
    };
    let mut rounds = Vec::new();
    let outcome = floret_simulation::run(
        &options,
        SimulationRun {
            app: AppRef {
                name: "test".into(),
                ..AppRef::default()
            },
            federation: "local".into(),
            run_config: Default::default(),
            server_app: Arc::new(Server {
                nodes: 4,
                history: history.clone(),
            }),
            client_app: client_app(),
        },
        |e| {
            if let RunEvent::RoundFinished(s) = e {
                rounds.push(s.clone());
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        outcome.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        outcome.reason
    );
    // Partition ids 0..4 weighted by p + 1: sum(p * (p + 1)) / sum(p + 1) = 20 / 10 = 2 per round.
    let history = history.lock().unwrap().take().unwrap();
    let w = history
        .arrays
        .get("w")
        .unwrap()
        .values::<f32>()
        .unwrap()
        .into_owned();
    assert_eq!(w, vec![4.0, 14.0]);
    assert_eq!(rounds.len(), 2);
    let train = rounds[1].train.as_ref().unwrap();
    assert_eq!((train.sampled, train.replies, train.failures), (4, 4, 0));
    // Node state persisted between rounds: every node was on its second call.
    assert_eq!(train.metrics.get_f64("calls").unwrap(), 2.0);
}

#[tokio::test]
async fn zero_supernodes_is_refused_with_the_fix() {
    let options = SimulationOptions {
        num_supernodes: 0,
        num_cpus: 1.0,
        num_gpus: 0.0,
    };
    let run = SimulationRun {
        app: AppRef {
            name: "test".into(),
            ..AppRef::default()
        },
        federation: "local".into(),
        run_config: Default::default(),
        server_app: Arc::new(Server {
            nodes: 1,
            history: Arc::default(),
        }),
        client_app: client_app(),
    };
    let err = floret_simulation::run(&options, run, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, SimulationError::Options(_)));
    assert!(
        err.to_string().contains("set options.num-supernodes = 10"),
        "{err}"
    );
}
