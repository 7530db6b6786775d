//! The quickstart ServerApp: FedAvg over `num-arrays` float32 arrays of zeros holding
//! `total-params` values in all.

use async_trait::async_trait;
use floret_core::{
    AppError, Array, ArrayRecord, ConfigRecord, Context, Grid, ModelSize, ServerApp,
};
use floret_strategies::{
    FedAvgConfig, History, StrategyChoice, StrategyRun, StrategyServer, announce, fraction,
    round_timeout, strategy_from_run_config,
};
use std::sync::Arc;
use std::time::Duration;

/// The ServerApp registered as `quickstart.server_app:app`.
pub fn server_app() -> Arc<dyn ServerApp> {
    Arc::new(QuickstartServer::default())
}

/// The run-config of the quickstart, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct QuickstartConfig {
    /// `num-server-rounds`: rounds of FedAvg to run.
    pub num_server_rounds: u64,
    /// `total-params`: float32 values in the model, over all its arrays; sets the size of
    /// every message (4 bytes a value).
    pub total_params: usize,
    /// `num-arrays`: how many arrays the values are split into, between 1 and
    /// `total_params`.
    pub num_arrays: usize,
    /// `fraction-train`: the share of connected nodes sampled to train each round, in (0, 1].
    pub fraction_train: f64,
    /// `fraction-evaluate`: the share sampled to evaluate each round, in [0, 1]; 0 turns
    /// the phase off. Default 1.0 when the key is absent.
    pub fraction_evaluate: f64,
    /// `round-timeout` (seconds in the run config): bounds each wait of a round on its
    /// own, for enough nodes and for each phase's replies.
    pub round_timeout: Duration,
    /// `strategy` and its parameters (FedAvg when absent; see `floret_strategies::choice`).
    pub strategy: StrategyChoice,
}

impl QuickstartConfig {
    /// Reads `num-server-rounds`, `total-params`, `num-arrays`, `fraction-train`,
    /// `round-timeout` and, if present, `fraction-evaluate` (default 1.0; 0 turns the
    /// federated evaluate phase off).
    pub fn from_context(ctx: &Context) -> Result<Self, AppError> {
        let num_server_rounds = non_negative(ctx, "num-server-rounds")?;
        let total_params = non_negative(ctx, "total-params")?;
        let num_arrays = non_negative(ctx, "num-arrays")?;
        if num_arrays == 0 || num_arrays > total_params {
            return Err(AppError::Config(format!(
                "run config key \"num-arrays\" must be between 1 and total-params ({total_params}), \
                 but is {num_arrays}"
            )));
        }
        let fraction_train = fraction(ctx, "fraction-train", false)?;
        let fraction_evaluate = if ctx.run_config.contains_key("fraction-evaluate") {
            fraction(ctx, "fraction-evaluate", true)?
        } else {
            1.0
        };
        Ok(QuickstartConfig {
            num_server_rounds,
            total_params: to_usize(total_params, "total-params")?,
            num_arrays: to_usize(num_arrays, "num-arrays")?,
            fraction_train,
            fraction_evaluate,
            round_timeout: round_timeout(ctx)?,
            strategy: strategy_from_run_config(ctx)?,
        })
    }
}

fn non_negative(ctx: &Context, key: &str) -> Result<u64, AppError> {
    let v = ctx.run_config_i64(key)?;
    u64::try_from(v).map_err(|_| {
        AppError::Config(format!(
            "run config key {key:?} must not be negative, but is {v}"
        ))
    })
}

fn to_usize(v: u64, key: &str) -> Result<usize, AppError> {
    usize::try_from(v)
        .map_err(|_| AppError::Config(format!("run config key {key:?} is too large: {v}")))
}

/// `num_arrays` one-dimensional float32 arrays of zeros, named `layer_0`, `layer_1`, ...,
/// whose sizes differ by at most one and add up to `total_params`.
pub fn initial_arrays(total_params: usize, num_arrays: usize) -> ArrayRecord {
    let num_arrays = num_arrays.max(1);
    let base = total_params / num_arrays;
    let extra = total_params % num_arrays;
    (0..num_arrays)
        .map(|i| {
            let n = base + usize::from(i < extra);
            let dim = i32::try_from(n).unwrap_or(i32::MAX);
            (format!("layer_{i}"), Array::zeros::<f32>(vec![dim]))
        })
        .collect()
}

/// The quickstart ServerApp. `run` is `main` that hands back the strategy's history.
pub type QuickstartServer = StrategyServer<QuickstartConfig>;

#[async_trait]
impl StrategyRun for QuickstartConfig {
    fn read(ctx: &Context) -> Result<Self, AppError> {
        QuickstartConfig::from_context(ctx)
    }

    /// `total-params` float32 values: what `initial_arrays` allocates, and what every
    /// round's broadcast, fold and checkpoint hold again.
    fn model_size(&self) -> Option<ModelSize> {
        Some(ModelSize {
            bytes: (self.total_params as u64).saturating_mul(4),
            set_by: format!("total-params={} (float32)", self.total_params),
        })
    }

    /// Runs FedAvg as the run config says.
    async fn run(self, grid: &dyn Grid) -> Result<History, AppError> {
        let strategy = self
            .strategy
            .build(FedAvgConfig {
                fraction_train: self.fraction_train,
                fraction_evaluate: self.fraction_evaluate,
                ..FedAvgConfig::default()
            })
            .map_err(AppError::other)?;
        announce(
            grid,
            format!(
                "quickstart: {} rounds of {} over {} arrays, {} parameters (fraction-train {})",
                self.num_server_rounds,
                strategy.name(),
                self.num_arrays,
                self.total_params,
                self.fraction_train
            ),
        );
        let history = strategy
            .start(
                grid,
                initial_arrays(self.total_params, self.num_arrays),
                self.num_server_rounds,
                self.round_timeout,
                ConfigRecord::new(),
                ConfigRecord::new(),
            )
            .await
            .map_err(AppError::other)?;
        announce(grid, summary(&history));
        Ok(history)
    }
}

/// One line on how the run went: rounds done and the last aggregated metrics.
fn summary(history: &History) -> String {
    let mut line = format!("quickstart: finished {} rounds", history.rounds.len());
    if let Some(last) = history.rounds.last() {
        for phase in [&last.train, &last.evaluate].into_iter().flatten() {
            for (k, v) in phase.metrics.iter() {
                if let Some(v) = v.as_f64() {
                    line.push_str(&format!(", {k} {v:.6}"));
                }
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::UserConfigValue;

    fn ctx(pairs: &[(&str, UserConfigValue)]) -> Context {
        let mut ctx = Context::default();
        for (k, v) in pairs {
            ctx.run_config.insert((*k).to_string(), v.clone());
        }
        ctx
    }

    fn defaults() -> Vec<(&'static str, UserConfigValue)> {
        vec![
            ("num-server-rounds", UserConfigValue::Int(3)),
            ("total-params", UserConfigValue::Int(100_000)),
            ("num-arrays", UserConfigValue::Int(4)),
            ("fraction-train", UserConfigValue::Float(1.0)),
            ("round-timeout", UserConfigValue::Float(600.0)),
        ]
    }

    #[test]
    fn initial_arrays_add_up_to_total_params() {
        let arrays = initial_arrays(100_003, 4);
        let sizes: Vec<i32> = arrays.iter().map(|(_, a)| a.shape[0]).collect();
        assert_eq!(sizes, [25_001, 25_001, 25_001, 25_000]);
        assert_eq!(arrays.num_bytes(), 100_003 * 4);
        let a = arrays.get("layer_0").unwrap();
        assert_eq!(a.dtype.as_str(), "float32");
        assert!(a.values::<f32>().unwrap().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn config_reads_the_pyproject_defaults() {
        let cfg = QuickstartConfig::from_context(&ctx(&defaults())).unwrap();
        assert_eq!(
            cfg,
            QuickstartConfig {
                num_server_rounds: 3,
                total_params: 100_000,
                num_arrays: 4,
                fraction_train: 1.0,
                fraction_evaluate: 1.0,
                round_timeout: Duration::from_secs(600),
                strategy: StrategyChoice {
                    update: floret_strategies::ServerUpdate::Average,
                    proximal_mu: None,
                    robust: None,
                },
            }
        );
    }

    #[test]
    fn the_model_size_is_total_params_float32_values_named_by_the_key() {
        let mut pairs = defaults();
        pairs.retain(|(k, _)| *k != "total-params");
        pairs.push(("total-params", UserConfigValue::Int(2_000_000_000)));
        let run_config = ctx(&pairs).run_config;
        let size = QuickstartServer::default().model_size(&run_config).unwrap();
        assert_eq!(size.bytes, 8_000_000_000);
        assert_eq!(size.set_by, "total-params=2000000000 (float32)");
        let bad = ctx(&[("total-params", UserConfigValue::Int(5))]).run_config;
        assert_eq!(QuickstartServer::default().model_size(&bad), None);
    }

    #[test]
    fn fraction_evaluate_zero_turns_evaluation_off() {
        let mut pairs = defaults();
        pairs.push(("fraction-evaluate", UserConfigValue::Float(0.0)));
        let cfg = QuickstartConfig::from_context(&ctx(&pairs)).unwrap();
        assert_eq!(cfg.fraction_evaluate, 0.0);
    }

    #[test]
    fn bad_config_names_the_key() {
        let cases = [
            ("num-arrays", UserConfigValue::Int(0), "num-arrays"),
            ("num-arrays", UserConfigValue::Int(100_001), "num-arrays"),
            ("total-params", UserConfigValue::Int(-5), "total-params"),
            (
                "fraction-train",
                UserConfigValue::Float(0.0),
                "fraction-train",
            ),
            (
                "fraction-train",
                UserConfigValue::Float(1.5),
                "fraction-train",
            ),
            (
                "fraction-evaluate",
                UserConfigValue::Float(-1.0),
                "fraction-evaluate",
            ),
            (
                "round-timeout",
                UserConfigValue::Float(-1.0),
                "round-timeout",
            ),
            (
                "round-timeout",
                UserConfigValue::Float(f64::NAN),
                "round-timeout",
            ),
            (
                "num-server-rounds",
                UserConfigValue::Str("3".into()),
                "num-server-rounds",
            ),
        ];
        for (key, value, named) in cases {
            let mut pairs = defaults();
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value.clone()));
            let err = QuickstartConfig::from_context(&ctx(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
    }
}
