//! The digits ServerApp: FedAvg (or the strategy the run config's `strategy` names, with
//! its parameters: `floret_strategies::choice`) of the MLP for `num-server-rounds`, sending `local-epochs`,
//! `lr` and `batch-size` with every train message, and scoring each global model on the
//! held-out test split (`accuracy`, `loss`: what `flwr run` shows as the final accuracy).

use crate::client_app::DataConfig;
use crate::data::{digits, test_split};
use crate::model::Mlp;
use async_trait::async_trait;
use floret_core::{AppError, ArrayRecord, ConfigRecord, Context, Grid, MetricRecord, ServerApp};
use floret_strategies::{
    FedAvgConfig, History, StrategyChoice, StrategyRun, StrategyServer, announce, fraction,
    round_timeout, strategy_from_run_config,
};
use std::sync::Arc;
use std::time::Duration;

/// The ServerApp registered as `digits.server_app:app`.
pub fn server_app() -> Arc<dyn ServerApp> {
    Arc::new(DigitsServer::default())
}

/// The run config of the digits app, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitsConfig {
    /// `num-server-rounds`: rounds of FedAvg to run.
    pub num_server_rounds: u64,
    /// `fraction-train`: the share of connected nodes sampled to train each round, in (0, 1].
    pub fraction_train: f64,
    /// `fraction-evaluate`: the share sampled for federated evaluation, in [0, 1]; 0 turns
    /// that phase off (the central evaluation on the test split still runs).
    pub fraction_evaluate: f64,
    /// `local-epochs`: passes over its partition each node makes per round; at least 1.
    /// Sent to the nodes in the train config.
    pub local_epochs: i64,
    /// `lr`: the nodes' SGD learning rate; positive. Sent in the train config.
    pub lr: f64,
    /// `batch-size`: examples per SGD step on the nodes; at least 1. Sent in the train config.
    pub batch_size: i64,
    /// `round-timeout` (seconds in the run config): bounds each wait of a round on its
    /// own, for enough nodes and for each phase's replies.
    pub round_timeout: Duration,
    /// `seed`, `partitioner` and `dirichlet-alpha`, read as the nodes read them; the seed
    /// also fixes the held-out test split and FedAvg's sampling.
    pub data: DataConfig,
    /// `strategy` and its parameters (`eta`, `server-momentum`, ...; `nan` for Flower's
    /// default).
    pub strategy: StrategyChoice,
}

impl DigitsConfig {
    /// Reads and checks the run config keys above; an out-of-range value is an
    /// `AppError::Config` naming the key.
    pub fn from_context(ctx: &Context) -> Result<DigitsConfig, AppError> {
        let rounds = ctx.run_config_i64("num-server-rounds")?;
        let num_server_rounds = u64::try_from(rounds).map_err(|_| {
            AppError::Config(format!(
                "run config key \"num-server-rounds\" must not be negative, but is {rounds}"
            ))
        })?;
        let positive_int = |key: &str| -> Result<i64, AppError> {
            let v = ctx.run_config_i64(key)?;
            if v > 0 {
                Ok(v)
            } else {
                Err(AppError::Config(format!(
                    "run config key {key:?} must be at least 1, but is {v}"
                )))
            }
        };
        let lr = ctx.run_config_f64("lr")?;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(AppError::Config(format!(
                "run config key \"lr\" must be a positive number, but is {lr}"
            )));
        }
        let round_timeout = round_timeout(ctx)?;
        Ok(DigitsConfig {
            num_server_rounds,
            fraction_train: fraction(ctx, "fraction-train", false)?,
            fraction_evaluate: fraction(ctx, "fraction-evaluate", true)?,
            local_epochs: positive_int("local-epochs")?,
            lr,
            batch_size: positive_int("batch-size")?,
            round_timeout,
            data: DataConfig::from_context(ctx)?,
            strategy: strategy_from_run_config(ctx)?,
        })
    }

    /// The config record sent with every train message (FedAvg adds `server-round`).
    pub fn train_config(&self) -> ConfigRecord {
        let mut config = ConfigRecord::new();
        config.insert("local-epochs", self.local_epochs);
        config.insert("lr", self.lr);
        config.insert("batch-size", self.batch_size);
        config
    }
}

/// Scores a global model on the held-out test split of `seed`: `accuracy` and `loss`.
/// Parameters that do not fit the model give `None` (and a warning), not a panic.
pub fn central_evaluate(
    seed: u64,
) -> impl Fn(u64, &ArrayRecord) -> Option<MetricRecord> + Send + Sync + 'static {
    let split = test_split(digits().len(), seed);
    let (x, y) = digits().gather(&split.test);
    move |round, arrays| {
        let model = match Mlp::from_arrays(arrays) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(round, "central evaluation skipped: {e}");
                return None;
            }
        };
        let eval = model.evaluate(x.view(), &y);
        let mut metrics = MetricRecord::new();
        metrics.insert("accuracy", eval.accuracy);
        metrics.insert("loss", eval.loss);
        Some(metrics)
    }
}

/// The digits ServerApp. `run` is `main` that hands back the strategy's history.
pub type DigitsServer = StrategyServer<DigitsConfig>;

#[async_trait]
impl StrategyRun for DigitsConfig {
    fn read(ctx: &Context) -> Result<Self, AppError> {
        DigitsConfig::from_context(ctx)
    }

    async fn run(self, grid: &dyn Grid) -> Result<History, AppError> {
        let strategy = self
            .strategy
            .build(FedAvgConfig {
                fraction_train: self.fraction_train,
                fraction_evaluate: self.fraction_evaluate,
                seed: Some(self.data.seed),
                ..FedAvgConfig::default()
            })
            .map_err(AppError::other)?
            .with_evaluate_fn(central_evaluate(self.data.seed));
        announce(
            grid,
            format!(
                "digits: {} rounds of {}, {} partitions, {} local epochs, lr {}, batch size {}",
                self.num_server_rounds,
                strategy.name(),
                self.data.partitioner,
                self.local_epochs,
                self.lr,
                self.batch_size
            ),
        );
        let history = strategy
            .start(
                grid,
                Mlp::init(self.data.seed).to_arrays(),
                self.num_server_rounds,
                self.round_timeout,
                self.train_config(),
                ConfigRecord::new(),
            )
            .await
            .map_err(AppError::other)?;
        let done = match history.central.last() {
            Some((round, m)) => format!(
                "digits: after round {round}, test accuracy {:.4}, test loss {:.4}",
                m.get_f64("accuracy").unwrap_or(f64::NAN),
                m.get_f64("loss").unwrap_or(f64::NAN),
            ),
            None => "digits: finished without a central evaluation".to_string(),
        };
        announce(grid, done);
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{Array, UserConfigValue};

    fn ctx() -> Context {
        let mut ctx = Context::default();
        let pairs = [
            ("num-server-rounds", UserConfigValue::Int(10)),
            ("fraction-train", UserConfigValue::Float(1.0)),
            ("fraction-evaluate", UserConfigValue::Float(1.0)),
            ("local-epochs", UserConfigValue::Int(5)),
            ("lr", UserConfigValue::Float(0.2)),
            ("batch-size", UserConfigValue::Int(16)),
            ("partitioner", UserConfigValue::Str("iid".into())),
            ("dirichlet-alpha", UserConfigValue::Float(0.5)),
            ("seed", UserConfigValue::Int(42)),
            ("round-timeout", UserConfigValue::Float(600.0)),
        ];
        for (k, v) in pairs {
            ctx.run_config.insert(k.to_string(), v);
        }
        ctx
    }

    #[test]
    fn config_is_read_and_forwarded_to_the_nodes() {
        let cfg = DigitsConfig::from_context(&ctx()).unwrap();
        assert_eq!(cfg.num_server_rounds, 10);
        assert_eq!(cfg.round_timeout, Duration::from_secs(600));
        assert_eq!(cfg.data.seed, 42);
        let train = cfg.train_config();
        assert_eq!(train.get_i64("local-epochs").unwrap(), 5);
        assert_eq!(train.get_f64("lr").unwrap(), 0.2);
        assert_eq!(train.get_i64("batch-size").unwrap(), 16);
    }

    #[test]
    fn bad_config_names_the_key() {
        let cases = [
            ("num-server-rounds", UserConfigValue::Int(-1)),
            ("fraction-train", UserConfigValue::Float(0.0)),
            ("fraction-evaluate", UserConfigValue::Float(1.5)),
            ("local-epochs", UserConfigValue::Int(0)),
            ("lr", UserConfigValue::Float(-0.1)),
            ("lr", UserConfigValue::Float(f64::INFINITY)),
            ("batch-size", UserConfigValue::Int(0)),
            ("partitioner", UserConfigValue::Str("shards".into())),
            ("seed", UserConfigValue::Int(-3)),
            ("round-timeout", UserConfigValue::Float(0.0)),
        ];
        for (key, value) in cases {
            let mut c = ctx();
            c.run_config.insert(key.to_string(), value.clone());
            let err = DigitsConfig::from_context(&c).unwrap_err().to_string();
            assert!(err.contains(key), "{key}={value}: {err}");
        }
        let mut c = ctx();
        c.run_config.insert(
            "partitioner".into(),
            UserConfigValue::Str("dirichlet".into()),
        );
        c.run_config
            .insert("dirichlet-alpha".into(), UserConfigValue::Float(0.0));
        let err = DigitsConfig::from_context(&c).unwrap_err().to_string();
        assert!(err.contains("dirichlet-alpha"), "{err}");
    }

    #[test]
    fn central_evaluate_scores_models_and_skips_foreign_ones() {
        let evaluate = central_evaluate(42);
        let metrics = evaluate(0, &Mlp::init(42).to_arrays()).unwrap();
        let acc = metrics.get_f64("accuracy").unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert!(metrics.get_f64("loss").unwrap() > 0.0);
        let mut foreign = ArrayRecord::new();
        foreign.insert("w", Array::zeros::<f32>(vec![3]));
        assert!(evaluate(1, &foreign).is_none());
    }
}
