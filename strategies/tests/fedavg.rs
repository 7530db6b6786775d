//! FedAvg driven through an in-memory grid, on tokio's paused clock.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{Answer, TestGrid, client, metrics, model, round_of, values};
use floret_core::{
    Array, ArrayRecord, ConfigRecord, DType, MessageError, MetricRecord, MetricValue, Payload,
    RecordDict, RunEvent, error_code,
};
use floret_strategies::{FedAvg, FedAvgConfig, History, StrategyError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_secs(10);

fn fedavg(config: FedAvgConfig) -> FedAvg {
    FedAvg::new(FedAvgConfig {
        seed: Some(1),
        ..config
    })
    .unwrap()
}

async fn run(strategy: &FedAvg, grid: &TestGrid, rounds: u64) -> Result<History, StrategyError> {
    strategy
        .start(
            grid,
            model(&[0.0, 0.0]),
            rounds,
            TIMEOUT,
            ConfigRecord::new(),
            ConfigRecord::new(),
        )
        .await
}

fn failing(code: i64) -> impl Fn(&floret_core::Message) -> Answer + Send + Sync {
    move |_| Answer::now(Payload::Error(MessageError::new(code, "out of memory")))
}

#[tokio::test(start_paused = true)]
async fn averages_models_and_metrics_weighted_by_examples() {
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 2.0], 1, 1.0))
        .node(2, client(vec![3.0, 4.0], 3, 3.0));
    let history = run(&fedavg(FedAvgConfig::default()), &grid, 1)
        .await
        .unwrap();

    assert_eq!(values(&history.arrays), [2.5, 3.5]);
    let round = &history.rounds[0];
    let train = round.train.as_ref().unwrap();
    assert_eq!(
        (train.sampled, train.replies, train.failures, train.late),
        (2, 2, 0, 0)
    );
    assert_eq!(train.metrics.get_f64("loss").unwrap(), 2.5);
    assert_eq!(
        train.metrics.get("num-examples").unwrap(),
        &MetricValue::I64(4)
    );
    let evaluate = round.evaluate.as_ref().unwrap();
    assert_eq!(evaluate.replies, 2);
    assert_eq!(evaluate.metrics.get_f64("loss").unwrap(), 2.5);
}

#[tokio::test(start_paused = true)]
async fn history_and_events_cover_every_round() {
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 1.0], 1, 0.5))
        .node(2, client(vec![1.0, 1.0], 1, 0.5));
    let history = run(&fedavg(FedAvgConfig::default()), &grid, 3)
        .await
        .unwrap();

    let rounds: Vec<u64> = history.rounds.iter().map(|r| r.round).collect();
    assert_eq!(rounds, [1, 2, 3]);
    let events = grid.events.lock().unwrap().clone();
    let started: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::RoundStarted {
                round,
                num_rounds: 3,
            } => Some(*round),
            _ => None,
        })
        .collect();
    assert_eq!(started, [1, 2, 3]);
    let finished: Vec<&floret_core::RoundSummary> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::RoundFinished(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(finished, history.rounds.iter().collect::<Vec<_>>());
    assert!(
        grid.logs()
            .iter()
            .any(|l| l == "round 3: 2/2 train replies, 0 failed"),
        "{:#?}",
        grid.logs()
    );
}

#[tokio::test(start_paused = true)]
async fn messages_follow_flowers_layout() {
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 1.0], 1, 0.5))
        .node(2, client(vec![1.0, 1.0], 1, 0.5));
    let mut train_config = ConfigRecord::new();
    train_config.insert("lr", 0.1);
    let mut evaluate_config = ConfigRecord::new();
    evaluate_config.insert("batch-size", 32i64);
    fedavg(FedAvgConfig::default())
        .start(
            &grid,
            model(&[0.0, 0.0]),
            2,
            TIMEOUT,
            train_config,
            evaluate_config,
        )
        .await
        .unwrap();

    let train = grid.sent_of_type("train");
    assert_eq!(train.len(), 4);
    let last = &train[3];
    assert_eq!(last.metadata.group_id, "2");
    let content = last.content().unwrap();
    let config = content.config_record("config").unwrap();
    assert_eq!(config.get_f64("lr").unwrap(), 0.1);
    assert_eq!(config.get_i64("server-round").unwrap(), 2);
    assert_eq!(values(content.array_record("arrays").unwrap()), [1.0, 1.0]);
    assert!(
        train[0]
            .content()
            .unwrap()
            .shares_with(train[1].content().unwrap())
    );

    let evaluate = grid.sent_of_type("evaluate");
    assert_eq!(evaluate.len(), 4);
    let config = evaluate[0]
        .content()
        .unwrap()
        .config_record("config")
        .unwrap()
        .clone();
    assert_eq!(config.get_i64("batch-size").unwrap(), 32);
    assert_eq!(config.get_i64("server-round").unwrap(), 1);
    assert_eq!(evaluate[0].metadata.group_id, "1");
}

#[tokio::test(start_paused = true)]
async fn waits_for_min_available_nodes_before_sampling() {
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 1.0], 1, 0.5))
        .node_joining(2, Duration::from_secs(3), client(vec![1.0, 1.0], 1, 0.5))
        .node_joining(3, Duration::from_secs(7), client(vec![1.0, 1.0], 1, 0.5));
    let config = FedAvgConfig {
        min_available_nodes: 3,
        fraction_evaluate: 0.0,
        ..FedAvgConfig::default()
    };
    let began = Instant::now();
    let history = run(&fedavg(config), &grid, 1).await.unwrap();

    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(7) && waited <= Duration::from_secs(8),
        "{waited:?}"
    );
    assert_eq!(history.rounds[0].train.as_ref().unwrap().sampled, 3);
    assert!(
        grid.logs()[1].contains("waiting up to 10s for 3 nodes"),
        "{:#?}",
        grid.logs()
    );
}

#[tokio::test(start_paused = true)]
async fn min_train_nodes_is_waited_for_too() {
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 1.0], 1, 0.5))
        .node_joining(2, Duration::from_secs(2), client(vec![1.0, 1.0], 1, 0.5));
    let config = FedAvgConfig {
        min_available_nodes: 1,
        fraction_evaluate: 0.0,
        ..FedAvgConfig::default()
    };
    let history = run(&fedavg(config), &grid, 1).await.unwrap();
    assert_eq!(history.rounds[0].train.as_ref().unwrap().sampled, 2);
}

#[tokio::test(start_paused = true)]
async fn too_few_nodes_after_the_timeout_is_a_clear_error() {
    let grid = TestGrid::new().node(1, client(vec![1.0, 1.0], 1, 0.5));
    let began = Instant::now();
    let err = run(&fedavg(FedAvgConfig::default()), &grid, 2)
        .await
        .unwrap_err();

    assert_eq!(began.elapsed(), TIMEOUT);
    assert!(
        matches!(
            err,
            StrategyError::NotEnoughNodes {
                round: 1,
                phase: "train",
                required: 2,
                available: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("start more SuperNodes"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn error_replies_are_counted_and_left_out() {
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 2.0], 1, 1.0))
        .node(2, client(vec![3.0, 4.0], 3, 3.0))
        .node(3, failing(error_code::CLIENT_APP_RAISED_EXCEPTION));
    let history = run(&fedavg(FedAvgConfig::default()), &grid, 1)
        .await
        .unwrap();

    assert_eq!(values(&history.arrays), [2.5, 3.5]);
    let train = history.rounds[0].train.as_ref().unwrap();
    assert_eq!((train.sampled, train.replies, train.failures), (3, 2, 1));
    assert_eq!(history.rounds[0].evaluate.as_ref().unwrap().failures, 1);
    let logs = grid.logs();
    assert!(
        logs.iter().any(|l| l == "round 1: 2/3 train replies, 1 failed; left out: the node reported error 2: out of memory (from node 3)"),
        "{logs:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn malformed_replies_are_failures_not_fatal() {
    let bad_shape = |_: &floret_core::Message| {
        let content = RecordDict::new()
            .with("arrays", model(&[1.0, 2.0, 3.0]))
            .with("metrics", metrics(5, 0.1));
        Answer::now(Payload::Content(content))
    };
    let zero_weight = |_: &floret_core::Message| {
        let content = RecordDict::new()
            .with("arrays", model(&[9.0, 9.0]))
            .with("metrics", metrics(0, 0.1));
        Answer::now(Payload::Content(content))
    };
    let wrong_dtype = |_: &floret_core::Message| {
        let mut arrays = ArrayRecord::new();
        arrays.insert("w", Array::from_slice(&[1.0f64, 2.0]));
        let content = RecordDict::new()
            .with("arrays", arrays)
            .with("metrics", metrics(5, 0.1));
        Answer::now(Payload::Content(content))
    };
    let no_metrics = |_: &floret_core::Message| {
        Answer::now(Payload::Content(
            RecordDict::new().with("arrays", model(&[9.0, 9.0])),
        ))
    };
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 2.0], 1, 1.0))
        .node(2, bad_shape)
        .node(3, zero_weight)
        .node(4, wrong_dtype)
        .node(5, no_metrics);
    let config = FedAvgConfig {
        fraction_evaluate: 0.0,
        ..FedAvgConfig::default()
    };
    let history = run(&fedavg(config), &grid, 1).await.unwrap();

    assert_eq!(values(&history.arrays), [1.0, 2.0]);
    let train = history.rounds[0].train.as_ref().unwrap();
    assert_eq!((train.replies, train.failures), (1, 4));
    let logs = grid.logs().join("\n");
    for expected in [
        "shape [3]",
        "\"num-examples\" is 0",
        "dtype float64",
        "no metrics in the reply",
    ] {
        assert!(logs.contains(expected), "{expected:?} not in {logs}");
    }
}

#[tokio::test(start_paused = true)]
async fn no_valid_train_reply_keeps_the_previous_model() {
    let grid = TestGrid::new()
        .node(1, failing(error_code::NODE_UNAVAILABLE))
        .node(2, failing(error_code::NODE_UNAVAILABLE));
    let history = run(&fedavg(FedAvgConfig::default()), &grid, 2)
        .await
        .unwrap();

    assert_eq!(values(&history.arrays), [0.0, 0.0]);
    assert_eq!(history.rounds.len(), 2);
    assert!(
        grid.logs()
            .iter()
            .any(|l| l == "round 2: no valid train reply; keeping the previous model")
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_ends_the_round_at_the_timeout() {
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 2.0], 1, 1.0))
        .node(2, client(vec![3.0, 4.0], 3, 3.0))
        .node(3, |_| Answer::Silent);
    let config = FedAvgConfig {
        fraction_evaluate: 0.0,
        ..FedAvgConfig::default()
    };
    let began = Instant::now();
    let history = run(&fedavg(config), &grid, 1).await.unwrap();

    assert_eq!(began.elapsed(), TIMEOUT);
    assert_eq!(values(&history.arrays), [2.5, 3.5]);
    let train = history.rounds[0].train.as_ref().unwrap();
    assert_eq!(
        (train.sampled, train.replies, train.failures, train.late),
        (3, 2, 0, 0)
    );
    assert!(
        grid.logs()
            .iter()
            .any(|l| l == "round 1: 2/3 train replies, 0 failed, 1 without reply after 10s"),
        "{:#?}",
        grid.logs()
    );
}

#[tokio::test(start_paused = true)]
async fn a_reply_from_an_earlier_round_is_late_and_left_out() {
    // Node 3 answers round 1 after 15 s (the round ends at 10 s) and round 2 after 8 s, so
    // its round-1 reply arrives in the middle of round 2.
    let slow = |m: &floret_core::Message| {
        let (after, v) = if round_of(m) == 1 {
            (15, 100.0)
        } else {
            (8, 5.0)
        };
        let content = RecordDict::new()
            .with("arrays", model(&[v, v]))
            .with("metrics", metrics(1, 0.0));
        Answer::Reply {
            after: Duration::from_secs(after),
            payload: Payload::Content(content),
        }
    };
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 1.0], 1, 0.0))
        .node(2, client(vec![3.0, 3.0], 1, 0.0))
        .node(3, slow);
    let config = FedAvgConfig {
        fraction_evaluate: 0.0,
        ..FedAvgConfig::default()
    };
    let history = run(&fedavg(config), &grid, 2).await.unwrap();

    let r1 = history.rounds[0].train.as_ref().unwrap();
    assert_eq!((r1.replies, r1.late), (2, 0));
    let r2 = history.rounds[1].train.as_ref().unwrap();
    assert_eq!((r2.sampled, r2.replies, r2.failures, r2.late), (3, 3, 0, 1));
    assert_eq!(values(&history.arrays), [3.0, 3.0]);
    assert!(
        grid.logs()
            .iter()
            .any(|l| l.contains("left out: it answers no message of this phase"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_repeated_reply_is_applied_once() {
    let twice = |_: &floret_core::Message| {
        let content = RecordDict::new()
            .with("arrays", model(&[3.0, 4.0]))
            .with("metrics", metrics(3, 3.0));
        Answer::Twice(Payload::Content(content))
    };
    let grid = TestGrid::new()
        .node(1, |_: &floret_core::Message| Answer::Reply {
            after: Duration::from_secs(1),
            payload: Payload::Content(
                RecordDict::new()
                    .with("arrays", model(&[1.0, 2.0]))
                    .with("metrics", metrics(1, 1.0)),
            ),
        })
        .node(2, twice);
    let config = FedAvgConfig {
        fraction_evaluate: 0.0,
        ..FedAvgConfig::default()
    };
    let history = run(&fedavg(config), &grid, 1).await.unwrap();

    assert_eq!(values(&history.arrays), [2.5, 3.5]);
    let train = history.rounds[0].train.as_ref().unwrap();
    assert_eq!((train.replies, train.late), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn central_evaluation_sees_each_rounds_model() {
    let seen: Arc<Mutex<Vec<(u64, f32)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let strategy = fedavg(FedAvgConfig::default()).with_evaluate_fn(move |round, arrays| {
        let v = arrays.get("w").ok()?.values::<f32>().ok()?[0];
        record.lock().unwrap().push((round, v));
        let mut m = MetricRecord::new();
        m.insert("central-loss", f64::from(v));
        Some(m)
    });
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 2.0], 1, 1.0))
        .node(2, client(vec![3.0, 4.0], 3, 3.0));
    let history = run(&strategy, &grid, 2).await.unwrap();

    assert_eq!(*seen.lock().unwrap(), [(1, 2.5), (2, 2.5)]);
    let central: Vec<u64> = history.central.iter().map(|(r, _)| *r).collect();
    assert_eq!(central, [1, 2]);
    let in_summary = history.rounds[1].central.as_ref().unwrap();
    assert_eq!(in_summary.get_f64("central-loss").unwrap(), 2.5);
}

#[tokio::test(start_paused = true)]
async fn evaluation_is_skipped_when_too_few_nodes_connect() {
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 2.0], 1, 1.0))
        .node(2, client(vec![3.0, 4.0], 3, 3.0));
    let config = FedAvgConfig {
        min_evaluate_nodes: 3,
        ..FedAvgConfig::default()
    };
    let history = run(&fedavg(config), &grid, 1).await.unwrap();

    assert!(history.rounds[0].evaluate.is_none());
    assert_eq!(values(&history.arrays), [2.5, 3.5]);
    assert!(
        grid.logs()
            .iter()
            .any(|l| l.starts_with("round 1: skipping federated evaluation"))
    );
}

#[tokio::test(start_paused = true)]
async fn zero_fraction_evaluate_sends_no_evaluate_messages() {
    let grid = TestGrid::new()
        .node(1, client(vec![1.0, 2.0], 1, 1.0))
        .node(2, client(vec![3.0, 4.0], 3, 3.0));
    let config = FedAvgConfig {
        fraction_evaluate: 0.0,
        ..FedAvgConfig::default()
    };
    let history = run(&fedavg(config), &grid, 2).await.unwrap();
    assert!(history.rounds.iter().all(|r| r.evaluate.is_none()));
    assert!(grid.sent_of_type("evaluate").is_empty());
}

#[tokio::test(start_paused = true)]
async fn seeded_sampling_picks_the_same_nodes() {
    async fn sampled(seed: u64) -> Vec<u64> {
        let grid = (1..=10).fold(TestGrid::new(), |g, id| {
            g.node(id, client(vec![1.0, 1.0], 1, 0.0))
        });
        let strategy = FedAvg::new(FedAvgConfig {
            fraction_train: 0.3,
            fraction_evaluate: 0.0,
            seed: Some(seed),
            ..FedAvgConfig::default()
        })
        .unwrap();
        run(&strategy, &grid, 2).await.unwrap();
        grid.sent_of_type("train")
            .iter()
            .map(|m| m.metadata.dst_node_id)
            .collect()
    }
    let a = sampled(42).await;
    assert_eq!(a.len(), 6, "3 of 10 nodes in each of 2 rounds");
    assert_eq!(a, sampled(42).await);
}

#[tokio::test(start_paused = true)]
async fn bad_arguments_are_refused_before_round_one() {
    let grid = TestGrid::new();
    let strategy = fedavg(FedAvgConfig::default());
    let err = strategy
        .start(
            &grid,
            model(&[0.0]),
            1,
            Duration::ZERO,
            ConfigRecord::new(),
            ConfigRecord::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StrategyError::InvalidConfig {
                field: "round_timeout",
                ..
            }
        ),
        "{err}"
    );

    let mut odd = model(&[0.0]);
    if let Some(a) = odd.0.get_mut("w") {
        a.dtype = DType::Other("bfloat16".into());
    }
    let err = strategy
        .start(
            &grid,
            odd,
            1,
            TIMEOUT,
            ConfigRecord::new(),
            ConfigRecord::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StrategyError::InitialArrays { .. }), "{err}");
    assert!(grid.sent.lock().unwrap().is_empty());
}

#[test]
fn invalid_config_is_refused_by_new() {
    let err = FedAvg::new(FedAvgConfig {
        fraction_train: 1.5,
        ..FedAvgConfig::default()
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid strategy setting `fraction_train` = 1.5"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_models_are_folded_off_the_runtime_threads() {
    let n = 300_000;
    let grid = TestGrid::new()
        .node(1, client(vec![1.0; n], 1, 1.0))
        .node(2, client(vec![3.0; n], 3, 3.0));
    let history = FedAvg::new(FedAvgConfig::default())
        .unwrap()
        .start(
            &grid,
            model(&vec![0.0; n]),
            1,
            TIMEOUT,
            ConfigRecord::new(),
            ConfigRecord::new(),
        )
        .await
        .unwrap();
    assert!(values(&history.arrays).iter().all(|&v| v == 2.5));
}

#[test]
fn start_can_run_on_a_spawned_task() {
    fn assert_send<T: Send>(_: &T) {}
    let grid = TestGrid::new();
    let strategy = fedavg(FedAvgConfig::default());
    let fut = run(&strategy, &grid, 1);
    assert_send(&fut);
}
