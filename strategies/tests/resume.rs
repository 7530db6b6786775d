//! FedAvg checkpoints: a run interrupted after some rounds and started again on a grid that
//! holds its checkpoint ends exactly where the uninterrupted run ends.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{Answer, TestGrid, metrics, model, round_of};
use floret_core::codec::{self, Bincode, Codec};
use floret_core::{
    ArrayRecord, ConfigRecord, GridError, Message, MetricRecord, Payload, RecordDict, message_type,
};
use floret_strategies::{
    CHECKPOINT_KIND, CHECKPOINT_VERSION, FedAvg, FedAvgConfig, History, ServerUpdate,
    StrategyError, model_sha256,
};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);
const ROUNDS: u64 = 5;

/// Half of the nodes train and evaluate each round, so the seeded sampling decides the
/// model; a central evaluation puts central metrics in the history.
fn fedavg(seed: u64) -> FedAvg {
    FedAvg::new(FedAvgConfig {
        fraction_train: 0.5,
        fraction_evaluate: 0.5,
        seed: Some(seed),
        ..FedAvgConfig::default()
    })
    .unwrap()
    .with_evaluate_fn(|round, arrays| {
        let w = arrays.get("w").ok()?.values::<f32>().ok()?.into_owned();
        let mut m = MetricRecord::new();
        m.insert("w0", f64::from(w[0]));
        m.insert("round", round as i64);
        Some(m)
    })
}

/// Node `id` adds `0.37 * id` to every weight it receives and weighs itself by `id`, so
/// the model after a round depends on which nodes were sampled in every round before.
fn drifting(id: u64) -> impl Fn(&Message) -> Answer + Send + Sync {
    move |m: &Message| {
        let content = if m.metadata.message_type == message_type::TRAIN {
            let w = m
                .content()
                .unwrap()
                .array_record("arrays")
                .unwrap()
                .get("w")
                .unwrap()
                .values::<f32>()
                .unwrap()
                .into_owned();
            let moved: Vec<f32> = w.iter().map(|x| x + 0.37 * id as f32).collect();
            RecordDict::new()
                .with("arrays", model(&moved))
                .with("metrics", metrics(id as i64, 0.1 * id as f64))
        } else {
            RecordDict::new().with("metrics", metrics(id as i64, 0.2 * id as f64))
        };
        Answer::now(Payload::Content(content))
    }
}

/// Four nodes: two are sampled per phase, so each fold adds two terms, and f32 addition of
/// two terms does not depend on which reply arrives first.
fn grid() -> TestGrid {
    (1..=4).fold(TestGrid::new(), |g, id| g.node(id, drifting(id)))
}

async fn run(strategy: &FedAvg, grid: &TestGrid, rounds: u64) -> Result<History, StrategyError> {
    strategy
        .start(
            grid,
            model(&[0.5, -1.25, 3.0]),
            rounds,
            TIMEOUT,
            ConfigRecord::new(),
            ConfigRecord::new(),
        )
        .await
}

/// `(round, destination)` of every train and evaluate message, sorted.
fn sampled(grid: &TestGrid, from_round: i64) -> Vec<(i64, String, u64)> {
    let mut out: Vec<(i64, String, u64)> = grid
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|m| round_of(m) >= from_round)
        .map(|m| {
            (
                round_of(m),
                m.metadata.message_type.clone(),
                m.metadata.dst_node_id,
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(start_paused = true)]
async fn a_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_run() {
    let strategy = fedavg(11);
    let whole_grid = grid();
    let whole = run(&strategy, &whole_grid, ROUNDS).await.unwrap();

    // The SuperLink "crashes" once round 2's checkpoint is saved, during round 3.
    let crashed = grid().crashing_after_saves(2);
    let err = run(&strategy, &crashed, ROUNDS).await.unwrap_err();
    assert!(matches!(err, StrategyError::Grid { round: 3, .. }), "{err}");
    let checkpoint = crashed.checkpoint.lock().unwrap().clone();
    assert!(checkpoint.is_some());

    let restarted = grid().with_checkpoint(checkpoint);
    let resumed = run(&strategy, &restarted, ROUNDS).await.unwrap();

    assert_eq!(resumed, whole, "model (bitwise) and history");
    assert_eq!(model_sha256(&resumed.arrays), model_sha256(&whole.arrays));
    // The restarted run did not redo rounds 1 and 2, and sampled as the whole run did.
    assert_eq!(sampled(&restarted, 1), sampled(&whole_grid, 3));
    let logs = restarted.logs();
    assert!(
        logs.iter()
            .any(|l| l == "FedAvg: resuming from round 3 of 5 (checkpoint after round 2)"),
        "{logs:#?}"
    );
    let digest = format!("final model sha256 {}", model_sha256(&whole.arrays));
    assert!(logs.contains(&digest), "{logs:#?}");
    assert!(whole_grid.logs().contains(&digest));
}

/// FedAdam's moments carry from round to round: a run resumed from its checkpoint must
/// step from the saved moments, not from zero, to end with the uninterrupted model.
#[tokio::test(start_paused = true)]
async fn a_resumed_fedadam_run_keeps_its_moments() {
    let strategy = fedavg(11).with_server_update(ServerUpdate::adam()).unwrap();
    let whole = run(&strategy, &grid(), ROUNDS).await.unwrap();

    let crashed = grid().crashing_after_saves(2);
    run(&strategy, &crashed, ROUNDS).await.unwrap_err();
    let checkpoint = crashed.checkpoint.lock().unwrap().clone();
    let restarted = grid().with_checkpoint(checkpoint.clone());
    let resumed = run(&strategy, &restarted, ROUNDS).await.unwrap();
    assert_eq!(resumed, whole, "model (bitwise) and history");
    assert!(
        restarted
            .logs()
            .iter()
            .any(|l| l == "FedAdam: resuming from round 3 of 5 (checkpoint after round 2)"),
        "{:#?}",
        restarted.logs()
    );

    // The same checkpoint read by a FedAvg (no moments) resumes to another model: the
    // moments are what made the FedAdam run end where it did.
    let plain = run(&fedavg(11), &grid().with_checkpoint(checkpoint), ROUNDS)
        .await
        .unwrap();
    assert_ne!(model_sha256(&plain.arrays), model_sha256(&whole.arrays));
}

#[tokio::test(start_paused = true)]
async fn sampling_differs_between_rounds_so_resuming_them_is_a_real_check() {
    let g = grid();
    run(&fedavg(11), &g, ROUNDS).await.unwrap();
    let per_round: Vec<Vec<u64>> = (1..=ROUNDS as i64)
        .map(|r| {
            sampled(&g, r)
                .into_iter()
                .filter(|(round, kind, _)| *round == r && kind == "train")
                .map(|(_, _, n)| n)
                .collect()
        })
        .collect();
    assert!(per_round.iter().all(|s| s.len() == 2));
    assert!(per_round.windows(2).any(|w| w[0] != w[1]), "{per_round:?}");
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_after_the_last_round_finishes_without_sending() {
    let strategy = fedavg(3);
    let first = grid();
    let whole = run(&strategy, &first, 2).await.unwrap();
    let again = grid().with_checkpoint(first.checkpoint.lock().unwrap().clone());
    assert_eq!(run(&strategy, &again, 2).await.unwrap(), whole);
    assert!(again.sent.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_of_a_newer_format_is_refused_before_anything_is_sent() {
    let body = Bincode.encode("test", &1u64).unwrap();
    let newer = codec::seal(CHECKPOINT_KIND, CHECKPOINT_VERSION + 1, &body);
    let g = grid().with_checkpoint(Some(newer.into()));
    let err = run(&fedavg(1), &g, ROUNDS).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StrategyError::Checkpoint { .. }), "{text}");
    assert!(text.contains("is newer than this build reads"), "{text}");
    assert!(g.sent.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_of_a_run_with_other_settings_is_refused() {
    let first = grid().crashing_after_saves(1);
    run(&fedavg(1), &first, ROUNDS).await.unwrap_err();
    let saved = first.checkpoint.lock().unwrap().clone();

    let err = run(&fedavg(1), &grid().with_checkpoint(saved.clone()), 7)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("run of 5 rounds, but this run has 7"),
        "{err}"
    );
    let err = run(&fedavg(2), &grid().with_checkpoint(saved.clone()), ROUNDS)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("seed"), "{err}");
    let bigger = FedAvg::start(
        &fedavg(1),
        &grid().with_checkpoint(saved),
        model(&[0.0; 4]),
        ROUNDS,
        TIMEOUT,
        ConfigRecord::new(),
        ConfigRecord::new(),
    )
    .await
    .unwrap_err();
    assert!(bigger.to_string().contains("model changed"), "{bigger}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_save_is_reported_and_the_run_goes_on() {
    let g = grid().failing_saves(GridError::Storage("disk full".into()));
    let history = run(&fedavg(1), &g, 2).await.unwrap();
    assert_eq!(history.rounds.len(), 2);
    let warnings: Vec<String> = g
        .logs()
        .into_iter()
        .filter(|l| l.contains("could not save a checkpoint"))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings[0].contains("disk full"), "{warnings:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_grid_without_checkpoints_is_not_an_error_nor_a_warning() {
    let g = grid().failing_saves(GridError::Unsupported("saving a checkpoint".into()));
    let history = run(&fedavg(1), &g, 2).await.unwrap();
    assert_eq!(history.rounds.len(), 2);
    assert!(
        !g.logs().iter().any(|l| l.contains("checkpoint")),
        "{:#?}",
        g.logs()
    );
    assert_ne!(history.arrays, ArrayRecord::new());
}

#[tokio::test(start_paused = true)]
async fn a_run_without_a_seed_resumes_with_the_seed_it_drew() {
    // Ten nodes, five sampled a round: 252 possible samples per round, so two resumes
    // that drew fresh seeds would all but never sample alike for three rounds.
    let many = || (1..=10).fold(TestGrid::new(), |g, id| g.node(id, drifting(id)));
    let seedless = FedAvg::new(FedAvgConfig {
        fraction_train: 0.5,
        fraction_evaluate: 0.0,
        ..FedAvgConfig::default()
    })
    .unwrap();
    let crashed = many().crashing_after_saves(2);
    run(&seedless, &crashed, ROUNDS).await.unwrap_err();
    let saved = crashed.checkpoint.lock().unwrap().clone();

    let (a, b) = (
        many().with_checkpoint(saved.clone()),
        many().with_checkpoint(saved),
    );
    let first = run(&seedless, &a, ROUNDS).await.unwrap();
    let second = run(&seedless, &b, ROUNDS).await.unwrap();
    assert_eq!(sampled(&a, 1), sampled(&b, 1));
    assert_eq!(first, second);
}
