//! The ServerApp: FedAvg for `num-server-rounds` from a seeded random model, sending `lr`
//! to the nodes with every train message.

use crate::task;
use floret_app::async_trait::async_trait;
use floret_app::floret_core::{AppError, ConfigRecord, Context, Grid, ServerApp, UserConfig};
use floret_app::floret_strategies::{FedAvg, FedAvgConfig};
use std::sync::Arc;
use std::time::Duration;

/// How long a round waits for enough nodes, and for their replies.
const ROUND_TIMEOUT: Duration = Duration::from_secs(600);
/// Seeds the initial model.
const SEED: u64 = 42;

/// The ServerApp, `serverapp` in pyproject.toml.
pub fn app() -> Arc<dyn ServerApp> {
    Arc::new(Server)
}

struct Server;

/// `[tool.flwr.app.config]`, read and checked.
struct Config {
    num_server_rounds: u64,
    strategy: FedAvg,
    train_config: ConfigRecord,
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
        let lr = context.run_config_f64("lr")?;
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(AppError::Config(format!(
                "lr must be a number of 0 or more, but is {lr}"
            )));
        }
        let strategy = FedAvg::new(FedAvgConfig {
            fraction_train: context.run_config_f64("fraction-train")?,
            fraction_evaluate: context.run_config_f64("fraction-evaluate")?,
            ..FedAvgConfig::default()
        })
        .map_err(|e| AppError::Config(e.to_string()))?;
        let mut train_config = ConfigRecord::new();
        train_config.insert("lr", lr);
        Ok(Config {
            num_server_rounds,
            strategy,
            train_config,
        })
    }
}

#[async_trait]
impl ServerApp for Server {
    async fn main(&self, grid: &dyn Grid, context: Context) -> Result<(), AppError> {
        let config = Config::read(&context.run_config)?;
        config
            .strategy
            .start(
                grid,
                task::initial_arrays(SEED),
                config.num_server_rounds,
                ROUND_TIMEOUT,
                config.train_config,
                ConfigRecord::new(),
            )
            .await
            .map_err(AppError::other)?;
        Ok(())
    }

    /// Refuses a bad run config when the run is submitted, before it starts.
    fn check_config(&self, run_config: &UserConfig) -> Result<(), AppError> {
        Config::read(run_config).map(|_| ())
    }
}
