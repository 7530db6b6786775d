//! `options.chaos.byzantine-*` on real simulations: the quickstart app, FedAvg and the
//! virtual fleet, with 30 % of the nodes sending sign-flipped updates; and a run on a
//! `flower-superlink --simulation`, whose fleet poisons alike.

// Tests may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use async_trait::async_trait;
use floret_actors::state::SimulationStore;
use floret_actors::{
    HeartbeatPolicy, MemoryLinkState, RunLimits, RunStatus, SubStatus, SuperLinkService,
};
use floret_core::{
    AppCatalog, AppError, AppRef, Array, ArrayRecord, ByzantineMode, ClientApp, Context, Control,
    Grid, Message, RecordDict, RoundSummary, RunEvent, ServerApp, StartRun, UserConfig,
    UserConfigValue,
};
use floret_simulation::node_ids::node_id;
use floret_simulation::{Chaos, ChaosOptions, LinkFleets, SimulationOptions, SimulationRun};
use std::sync::Arc;
use std::time::Duration;

const NODES: u64 = 20;

/// What a run showed: its log lines and its rounds.
struct Seen {
    logs: Vec<String>,
    rounds: Vec<RoundSummary>,
}

impl Seen {
    /// The final model's sha256, as FedAvg logs it.
    fn model(&self) -> &str {
        self.logs
            .iter()
            .find_map(|l| l.strip_prefix("final model sha256 "))
            .expect("FedAvg logs the final model's sha256")
    }
}

async fn run_quickstart(chaos: &ChaosOptions) -> Seen {
    let options = SimulationOptions {
        num_supernodes: NODES,
        num_cpus: 1.0,
        num_gpus: 0.0,
    };
    let run = common::quickstart(
        "byzantine",
        "num-server-rounds=3 total-params=1000 fraction-train=1.0 fraction-evaluate=1.0",
    );
    let state: Arc<dyn SimulationStore> = Arc::new(MemoryLinkState::for_simulation());
    let mut seen = Seen {
        logs: Vec::new(),
        rounds: Vec::new(),
    };
    let outcome = floret_simulation::run_with(&options, chaos, state, run, |e| match e {
        RunEvent::Log(line) => seen.logs.push(line.clone()),
        RunEvent::RoundFinished(s) => seen.rounds.push(s.clone()),
        _ => {}
    })
    .await
    .unwrap();
    assert_eq!(
        outcome.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        outcome.reason
    );
    assert_eq!(seen.rounds.len(), 3);
    seen
}

fn metric(summary: Option<&floret_core::PhaseSummary>, key: &str) -> f64 {
    summary.unwrap().metrics.get_f64(key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_flipping_nodes_change_the_model_but_not_the_evaluate_replies() {
    let clean = run_quickstart(&ChaosOptions::default()).await;
    let attack = ChaosOptions {
        byzantine_rate: 0.3,
        byzantine_mode: ByzantineMode::SignFlip,
        seed: 7,
        ..ChaosOptions::default()
    };
    let attacked = run_quickstart(&attack).await;

    // The attack is announced once, with the count the seeded decision predicts.
    let chaos = Chaos::new(&attack).unwrap();
    let byzantine = (0..NODES)
        .filter(|&i| chaos.is_byzantine(1, node_id(i)))
        .count();
    assert!((1..NODES as usize).contains(&byzantine), "{byzantine}");
    let announced: Vec<&String> = attacked
        .logs
        .iter()
        .filter(|l| l.contains("Byzantine"))
        .collect();
    assert_eq!(announced.len(), 1, "{:?}", attacked.logs);
    assert!(
        announced[0].starts_with(&format!(
            "chaos: {byzantine} of {NODES} virtual SuperNodes are Byzantine"
        )),
        "{}",
        announced[0]
    );
    assert!(announced[0].ends_with("sign-flip"), "{}", announced[0]);
    assert!(!clean.logs.iter().any(|l| l.contains("Byzantine")));

    assert_ne!(
        attacked.model(),
        clean.model(),
        "the attack moved the model"
    );
    // Every reply is counted: Byzantine nodes answer, with poisoned arrays.
    for (a, c) in attacked.rounds.iter().zip(&clean.rounds) {
        for phase in [a.train.as_ref(), a.evaluate.as_ref()] {
            let p = phase.unwrap();
            assert_eq!((p.sampled, p.replies, p.failures), (NODES, NODES, 0));
        }
        // Metrics are sent as they are: examples counted alike in both phases.
        let examples = |p: Option<&floret_core::PhaseSummary>| metric(p, "num-examples");
        assert_eq!(examples(a.train.as_ref()), examples(c.train.as_ref()));
        assert_eq!(examples(a.evaluate.as_ref()), examples(c.evaluate.as_ref()));
    }
    // Round 1 trains from the same initial model, so honest and poisoned nodes alike
    // report the clean run's train loss; the evaluation after it sees the poisoned model.
    let (a1, c1) = (&attacked.rounds[0], &clean.rounds[0]);
    assert_eq!(
        metric(a1.train.as_ref(), "train_loss"),
        metric(c1.train.as_ref(), "train_loss")
    );
    assert_ne!(
        metric(a1.evaluate.as_ref(), "eval_loss"),
        metric(c1.evaluate.as_ref(), "eval_loss")
    );

    // Seeded: the same attack gives the same model.
    assert_eq!(run_quickstart(&attack).await.model(), attacked.model());
}

/// The model every instruction carries, and what every ClientApp sends back.
const GLOBAL: [f32; 2] = [1.0, -1.0];
const LOCAL: [f32; 2] = [2.0, 1.0];

fn arrays(values: &[f32]) -> RecordDict {
    let mut arrays = ArrayRecord::new();
    arrays.insert("w", Array::from_slice(values));
    RecordDict::new().with("arrays", arrays)
}

/// Sends every node `GLOBAL` to train, then to evaluate, and fails unless every train reply
/// is sign-flipped and every evaluate reply is `LOCAL` as the ClientApp made it.
struct TrainThenEvaluate;

#[async_trait]
impl ServerApp for TrainThenEvaluate {
    async fn main(&self, grid: &dyn Grid, _ctx: Context) -> Result<(), AppError> {
        let nodes = grid.node_ids().await.map_err(AppError::other)?;
        // global - (local - global), element by element.
        let flipped = [0.0f32, -3.0];
        for (kind, expected) in [("train", flipped), ("evaluate", LOCAL)] {
            let messages = nodes
                .iter()
                .map(|&node| Message::new(arrays(&GLOBAL), node, kind).with_group_id("1"))
                .collect();
            let replies = grid
                .send_and_receive(messages, Duration::from_secs(60))
                .await
                .map_err(AppError::other)?;
            for reply in &replies {
                let content = reply
                    .content()
                    .map_err(|e| AppError::other(e.to_string()))?;
                let w = content.array_record("arrays")?.get("w")?.values::<f32>()?;
                if *w != expected {
                    return Err(AppError::other(format!(
                        "{kind} reply {w:?}, not {expected:?}"
                    )));
                }
            }
            if replies.len() != nodes.len() {
                return Err(AppError::other(format!("{} {kind} replies", replies.len())));
            }
        }
        Ok(())
    }
}

struct Catalog;

impl AppCatalog for Catalog {
    fn server_app(&self, _: &str) -> Option<Arc<dyn ServerApp>> {
        Some(Arc::new(TrainThenEvaluate))
    }

    fn client_app(&self, _: &str) -> Option<ClientApp> {
        Some(
            ClientApp::new()
                .train(|_, _| Ok(arrays(&LOCAL)))
                .evaluate(|_, _| Ok(arrays(&LOCAL))),
        )
    }

    fn components(&self) -> Vec<(String, String)> {
        vec![("s".into(), "c".into())]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulation_superlink_poisons_train_replies_alike_and_says_so() {
    let catalog = Arc::new(Catalog);
    let service = SuperLinkService::start_with(
        Arc::new(MemoryLinkState::new()),
        catalog.clone(),
        HeartbeatPolicy::default(),
        None,
        RunLimits::default(),
        Some(Arc::new(LinkFleets::new(catalog, 2, 100))),
    )
    .await
    .unwrap();
    let mut options = UserConfig::new();
    options.insert("num-supernodes".into(), UserConfigValue::Int(5));
    options.insert("chaos.byzantine-rate".into(), UserConfigValue::Float(1.0));
    let request = StartRun {
        app: AppRef {
            name: "app".into(),
            serverapp: "s".into(),
            clientapp: "c".into(),
            fab_hash: String::new(),
        },
        federation_options: options,
        ..StartRun::default()
    };
    let run_id = service.control().start_run(request).await.unwrap();
    let state = service.state();
    let mut status = state.run_status(run_id);
    for _ in 0..600 {
        if status.is_some_and(RunStatus::is_finished) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = state.run_status(run_id);
    }
    assert_eq!(
        status,
        Some(RunStatus::Finished(SubStatus::Completed)),
        "{:?}",
        state.run(run_id)
    );
    let (events, _) = state.events(run_id, 0).unwrap();
    let said: Vec<&RunEvent> = events
        .iter()
        .filter(|e| matches!(e, RunEvent::Log(l) if l.contains("Byzantine")))
        .collect();
    assert_eq!(
        said,
        vec![&RunEvent::Log(
            "chaos: 5 of 5 virtual SuperNodes are Byzantine (options.chaos.byzantine-rate 1) \
             and poison their train replies with sign-flip"
                .into()
        )]
    );
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byzantine_rate_out_of_range_built_in_code_is_refused_with_the_fix() {
    let options = SimulationOptions {
        num_supernodes: 2,
        num_cpus: 1.0,
        num_gpus: 0.0,
    };
    let chaos = ChaosOptions {
        byzantine_rate: 1.5,
        ..ChaosOptions::default()
    };
    let run = SimulationRun {
        app: AppRef::default(),
        federation: "byzantine".into(),
        run_config: UserConfig::new(),
        server_app: floret_app_quickstart::server_app(),
        client_app: floret_app_quickstart::client_app(),
    };
    let state: Arc<dyn SimulationStore> = Arc::new(MemoryLinkState::for_simulation());
    let e = floret_simulation::run_with(&options, &chaos, state, run, |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "options.chaos.byzantine-rate must be a fraction between 0 and 1 (got 1.5): \
         set options.chaos.byzantine-rate = 0.3 for 30 % of the fleet's nodes"
    );
}
