//! A ServerApp's `main` driving a run through `RemoteGrid`, as a process-isolated ServerApp
//! does.

use super::appio_double::{FakeServerAppIo, TOKEN, run_context, serverappio};
use super::*;
use crate::grpc::RemoteGrid;
use floret_core::{
    AppIoError, AppOutcome, Context, Grid, Message, NodeSet, Payload, PhaseSummary, RoundSummary,
    RunEvent, ServerAppIo,
};

/// Weighted average of the "model" arrays of `replies`, by their "num-examples".
fn fed_avg(replies: &[Message]) -> Vec<f32> {
    let mut sum: Vec<f64> = Vec::new();
    let mut total = 0.0;
    for r in replies {
        let content = r.content().unwrap();
        let n = content
            .metric_record("train-metrics")
            .unwrap()
            .get_f64("num-examples")
            .unwrap();
        let weights: Vec<f32> = content
            .array_record("model")
            .unwrap()
            .get("w")
            .unwrap()
            .values::<f32>()
            .unwrap()
            .into_owned();
        sum.resize(weights.len(), 0.0);
        for (s, w) in sum.iter_mut().zip(weights) {
            *s += f64::from(w) * n;
        }
        total += n;
    }
    sum.into_iter().map(|s| (s / total) as f32).collect()
}

/// A node "trains" by adding its id to every weight; node k has 10k examples.
fn train(m: &Message) -> Payload {
    let node = m.metadata.dst_node_id;
    let weights: Vec<f32> = m
        .content()
        .unwrap()
        .array_record("model")
        .unwrap()
        .get("w")
        .unwrap()
        .values::<f32>()
        .unwrap()
        .into_owned();
    let trained: Vec<f32> = weights.iter().map(|w| w + node as f32).collect();
    let mut arrays = ArrayRecord::new();
    arrays.insert("w", Array::from_slice(&trained));
    let mut metrics = MetricRecord::new();
    metrics.insert("num-examples", 10 * node as i64);
    Payload::Content(
        RecordDict::new()
            .with("model", arrays)
            .with("train-metrics", metrics),
    )
}

/// What a ServerApp's `main` does with a grid: FedAvg for the configured rounds.
async fn fed_avg_main(grid: &dyn Grid, context: Context) -> Vec<f32> {
    let rounds = context.run_config_i64("num-server-rounds").unwrap() as u64;
    let mut model = vec![0.0f32; 4];
    for round in 1..=rounds {
        grid.emit(RunEvent::RoundStarted {
            round,
            num_rounds: rounds,
        });
        let nodes = grid.node_ids().await.unwrap();
        let messages = nodes
            .iter()
            .map(|&node| {
                let mut arrays = ArrayRecord::new();
                arrays.insert("w", Array::from_slice(&model));
                Message::new(RecordDict::new().with("model", arrays), node, "train")
                    .with_group_id(round.to_string())
            })
            .collect();
        let replies = grid
            .send_and_receive(messages, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(replies.len(), nodes.len());
        model = fed_avg(&replies);
        grid.emit(RunEvent::RoundFinished(RoundSummary {
            round,
            train: Some(PhaseSummary {
                sampled: nodes.len() as u64,
                replies: replies.len() as u64,
                ..PhaseSummary::default()
            }),
            ..RoundSummary::default()
        }));
    }
    model
}

#[tokio::test]
async fn remote_grid_drives_a_fed_avg_run() {
    let (appio, server, client) =
        serverappio(FakeServerAppIo::new(run_context(), vec![1, 2, 3], train)).await;
    let (grid, context) = RemoteGrid::connect(Arc::new(client), TOKEN).await.unwrap();
    assert_eq!(grid.run_id(), 7);
    let model = fed_avg_main(&grid, context).await;
    grid.finish(AppOutcome::Completed).await.unwrap();

    // Each round adds the example-weighted mean node id: (10 + 40 + 90) / 60.
    let step = 140.0f32 / 60.0;
    for w in model {
        assert!((w - 2.0 * step).abs() < 1e-5, "{w}");
    }
    assert_eq!(appio.sent().len(), 6);
    assert!(appio.sent().iter().all(|m| m.metadata.run_id == 7));
    let events = appio.events();
    assert_eq!(
        events.len(),
        4,
        "every event arrives before finish: {events:?}"
    );
    assert_eq!(
        events[0],
        RunEvent::RoundStarted {
            round: 1,
            num_rounds: 2
        }
    );
    assert!(matches!(&events[3], RunEvent::RoundFinished(s) if s.round == 2));
    assert_eq!(appio.outcome(), Some(AppOutcome::Completed));
    server.shutdown().await;
}

#[tokio::test]
async fn remote_grid_keeps_checkpoints_in_the_superlink() {
    let (_appio, server, client) =
        serverappio(FakeServerAppIo::new(run_context(), vec![1], train)).await;
    let client = Arc::new(client);
    let (grid, _) = RemoteGrid::connect(client.clone(), TOKEN).await.unwrap();
    assert_eq!(grid.load_checkpoint().await.unwrap(), None);
    let checkpoint = bytes::Bytes::from(vec![7u8; 3 << 20]);
    grid.save_checkpoint(checkpoint.clone()).await.unwrap();
    // A ServerApp process started again (after a SuperLink restart) reads it back.
    let (again, _) = RemoteGrid::connect(client, TOKEN).await.unwrap();
    assert_eq!(again.load_checkpoint().await.unwrap(), Some(checkpoint));
    server.shutdown().await;
}

/// A SuperLink that is gone: every call fails as a client's does once its connect
/// patience has run out; `emit` counts its calls.
#[derive(Default)]
struct GoneSuperLink {
    emits: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl ServerAppIo for GoneSuperLink {
    async fn context(&self, _: &str) -> Result<Context, AppIoError> {
        Ok(Context::default())
    }
    async fn node_ids(&self, _: &str) -> Result<NodeSet, AppIoError> {
        Err(gone())
    }
    async fn send(&self, _: &str, _: Vec<Message>) -> Result<Vec<String>, AppIoError> {
        Err(gone())
    }
    async fn pull(&self, _: &str, _: &[String]) -> Result<Vec<Message>, AppIoError> {
        Err(gone())
    }
    async fn receive(&self, _: &str, _: Duration) -> Result<Vec<Message>, AppIoError> {
        Err(gone())
    }
    async fn emit(&self, _: &str, _: RunEvent) -> Result<(), AppIoError> {
        self.emits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // What each attempt costs a real client: its connect patience.
        tokio::time::sleep(Duration::from_secs(30)).await;
        Err(gone())
    }
    async fn finish(&self, _: &str, _: AppOutcome) -> Result<(), AppIoError> {
        Err(gone())
    }
    async fn load_checkpoint(&self, _: &str) -> Result<Option<bytes::Bytes>, AppIoError> {
        Err(gone())
    }
    async fn save_checkpoint(&self, _: &str, _: bytes::Bytes) -> Result<(), AppIoError> {
        Err(gone())
    }
}

fn gone() -> AppIoError {
    AppIoError::Unavailable("connection refused".into())
}

/// A ServerApp process whose SuperLink crashed must still end: the events it queued are
/// dropped once one of them finds the SuperLink gone, instead of each waiting out the
/// client's patience before `finish` may report the end.
#[tokio::test(start_paused = true)]
async fn events_queued_for_a_gone_superlink_do_not_hold_up_the_end() {
    let appio = Arc::new(GoneSuperLink::default());
    let (grid, _) = RemoteGrid::connect(appio.clone(), TOKEN).await.unwrap();
    for round in 0..500 {
        grid.emit(RunEvent::Log(format!("round {round}")));
    }
    let started = tokio::time::Instant::now();
    assert!(grid.finish(AppOutcome::Completed).await.is_err());
    assert_eq!(appio.emits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
