//! The ServerApp: FedAvg (or the strategy `strategy` names, with its parameters) for
//! `num-server-rounds`, starting from a seeded CNN, sending `local-epochs`, `lr` and
//! `batch-size` to the nodes, and scoring every round's global model on the server's test
//! images (the `accuracy` and `loss` that `flwr run` shows as server metrics).

use crate::task::{self, Net, data::Images};
use floret_app::async_trait::async_trait;
use floret_app::floret_core::{
    AppError, ArrayRecord, ConfigRecord, Context, Grid, MetricRecord, RunEvent, ServerApp,
    UserConfig,
};
use floret_app::floret_strategies::{FedAvg, FedAvgConfig, fraction, strategy_from_run_config};
use std::sync::Arc;
use std::time::Duration;

/// How long a round waits for enough nodes, and for their replies.
const ROUND_TIMEOUT: Duration = Duration::from_secs(600);

/// The ServerApp, `serverapp` in pyproject.toml.
pub fn app() -> Arc<dyn ServerApp> {
    Arc::new(Server)
}

struct Server;

/// `[tool.flwr.app.config]`, read and checked.
struct Config {
    num_server_rounds: u64,
    seed: u64,
    strategy: FedAvg,
    train_config: ConfigRecord,
    test_images: Arc<Images>,
}

impl Config {
    fn read(run_config: &UserConfig) -> Result<Config, AppError> {
        let context = Context {
            run_config: run_config.clone(),
            ..Context::default()
        };
        let rounds = context.run_config_i64("num-server-rounds")?;
        let num_server_rounds = u64::try_from(rounds).map_err(|_| {
            AppError::Config(format!(
                "num-server-rounds must not be negative, but is {rounds}"
            ))
        })?;
        let local_epochs = context.run_config_i64("local-epochs")?;
        let lr = context.run_config_f64("lr")?;
        let batch_size = context.run_config_i64("batch-size")?;
        if local_epochs < 1 || !(lr.is_finite() && lr > 0.0) || batch_size < 1 {
            return Err(AppError::Config(format!(
                "local-epochs and batch-size must be at least 1 and lr a positive number, but they are {local_epochs}, {batch_size} and {lr}"
            )));
        }
        // Checked here so that a bad partitioner is refused before the run starts, not
        // by every node.
        task::partitioner(&context)?;
        // The model's initial weights and the node sampling are seeded, nodes train with
        // seeds of their own (node id and round) and FedAvg folds replies in node order:
        // a rerun gives the same model.
        let seed = context.run_config_i64("seed")? as u64;
        let test_images = task::test_images(&context)?;
        let central_images = test_images.clone();
        // `fraction-fit` is the name Flower 1.18's templates give the share of nodes
        // sampled to train; FedAvg calls it `fraction_train`, as Flower 1.21 does.
        let strategy = strategy_from_run_config(&context)?
            .build(FedAvgConfig {
                fraction_train: fraction(&context, "fraction-fit", false)?,
                fraction_evaluate: fraction(&context, "fraction-evaluate", true)?,
                seed: Some(seed),
                ..FedAvgConfig::default()
            })
            .map_err(|e| AppError::Config(e.to_string()))?
            .with_evaluate_fn(move |_round, arrays| central_evaluate(arrays, &central_images));
        let mut train_config = ConfigRecord::new();
        train_config.insert("local-epochs", local_epochs);
        train_config.insert("lr", lr);
        train_config.insert("batch-size", batch_size);
        Ok(Config {
            num_server_rounds,
            seed,
            strategy,
            train_config,
            test_images,
        })
    }
}

/// Scores a global model on the server's test images.
fn central_evaluate(arrays: &ArrayRecord, images: &Images) -> Option<MetricRecord> {
    let evaluation = task::evaluate(arrays, images).ok()?;
    let mut metrics = MetricRecord::new();
    metrics.insert("accuracy", evaluation.accuracy);
    metrics.insert("loss", evaluation.loss);
    Some(metrics)
}

#[async_trait]
impl ServerApp for Server {
    async fn main(&self, grid: &dyn Grid, context: Context) -> Result<(), AppError> {
        let config = Config::read(&context.run_config)?;
        let side = config.test_images.side;
        grid.emit(RunEvent::Log(format!(
            "a CNN for {side}x{side} images; the ClientApps compute with {}",
            task::backend_name()
        )));
        let initial = Net::new(side, config.seed, &task::device()).to_arrays();
        let history = config
            .strategy
            .start(
                grid,
                initial,
                config.num_server_rounds,
                ROUND_TIMEOUT,
                config.train_config,
                ConfigRecord::new(),
            )
            .await
            .map_err(AppError::other)?;
        if let Some((round, metrics)) = history.central.last() {
            let accuracy = metrics.get_f64("accuracy").unwrap_or(f64::NAN);
            grid.emit(RunEvent::Log(format!(
                "after round {round}, the global model classifies {:.0} % of the test images right",
                accuracy * 100.0
            )));
        }
        Ok(())
    }

    /// Refuses a bad run config when the run is submitted, before it starts.
    fn check_config(&self, run_config: &UserConfig) -> Result<(), AppError> {
        Config::read(run_config).map(|_| ())
    }
}
