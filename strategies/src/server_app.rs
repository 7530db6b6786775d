//! The ServerApp of a strategy run, as the built-in apps have it: the run config is read
//! and checked into the run's settings, which then run to a [`History`]. Both `main` and
//! `check_config` read the config through the same [`StrategyRun::read`], so that a config
//! refused when it is submitted is exactly one the run would have failed on.

use crate::History;
use async_trait::async_trait;
use floret_core::{AppError, Context, Grid, ModelSize, RunEvent, ServerApp, UserConfig};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// The settings of one strategy run, read from a run's context.
#[async_trait]
pub trait StrategyRun: Sized + Send {
    /// Reads and checks the run config of `ctx`. When a config is checked on submission,
    /// `ctx` holds the run config and nothing else.
    fn read(ctx: &Context) -> Result<Self, AppError>;

    /// Runs the strategy with these settings and hands back its history.
    async fn run(self, grid: &dyn Grid) -> Result<History, AppError>;

    /// The model these settings make the run allocate, when they decide its size (see
    /// `ServerApp::model_size`); `None` for a model of fixed size.
    fn model_size(&self) -> Option<ModelSize> {
        None
    }
}

/// The ServerApp whose run is an `R`: `main` reads `R` from the context and runs it.
pub struct StrategyServer<R>(PhantomData<fn() -> R>);

impl<R: StrategyRun> StrategyServer<R> {
    /// Reads `R` from `ctx` and runs it: `main` that hands back the strategy's history.
    pub async fn run(&self, grid: &dyn Grid, ctx: &Context) -> Result<History, AppError> {
        R::read(ctx)?.run(grid).await
    }
}

#[async_trait]
impl<R: StrategyRun + 'static> ServerApp for StrategyServer<R> {
    async fn main(&self, grid: &dyn Grid, context: Context) -> Result<(), AppError> {
        self.run(grid, &context).await.map(|_| ())
    }

    fn check_config(&self, run_config: &UserConfig) -> Result<(), AppError> {
        let context = Context {
            run_config: run_config.clone(),
            ..Context::default()
        };
        R::read(&context).map(|_| ())
    }

    fn model_size(&self, run_config: &UserConfig) -> Option<ModelSize> {
        let context = Context {
            run_config: run_config.clone(),
            ..Context::default()
        };
        R::read(&context).ok()?.model_size()
    }
}

// By hand rather than derived: a derive would ask `R` for the same traits, and the server
// holds no `R`.
impl<R> Default for StrategyServer<R> {
    fn default() -> Self {
        StrategyServer(PhantomData)
    }
}

impl<R> Clone for StrategyServer<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for StrategyServer<R> {}

impl<R> fmt::Debug for StrategyServer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StrategyServer<{}>", std::any::type_name::<R>())
    }
}

/// Says `line` to the operator (the log) and to the user (a run event `flwr log` shows).
pub fn announce(grid: &dyn Grid, line: String) {
    tracing::info!(run_id = grid.run_id(), "{line}");
    grid.emit(RunEvent::Log(line));
}

/// The share of nodes in run config `key`: in (0, 1], or in [0, 1] when `zero_ok` (0 turns
/// a phase off).
pub fn fraction(ctx: &Context, key: &str, zero_ok: bool) -> Result<f64, AppError> {
    let v = ctx.run_config_f64(key)?;
    if (v > 0.0 || (zero_ok && v == 0.0)) && v <= 1.0 {
        Ok(v)
    } else {
        let range = if zero_ok {
            "[0, 1] (0 turns the phase off)"
        } else {
            "(0, 1]"
        };
        Err(AppError::Config(format!(
            "run config key {key:?} must be a fraction in {range}, but is {v}"
        )))
    }
}

/// Run config `round-timeout` in seconds, positive and finite.
pub fn round_timeout(ctx: &Context) -> Result<Duration, AppError> {
    let secs = ctx.run_config_f64("round-timeout")?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(AppError::Config(format!(
            "run config key \"round-timeout\" must be a positive number of seconds, but is {secs}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::UserConfigValue;

    /// Settings that need a positive `rounds`.
    struct Rounds;

    #[async_trait]
    impl StrategyRun for Rounds {
        fn read(ctx: &Context) -> Result<Self, AppError> {
            match ctx.run_config_i64("rounds")? {
                n if n > 0 => Ok(Rounds),
                n => Err(AppError::Config(format!(
                    "rounds must be positive, not {n}"
                ))),
            }
        }

        async fn run(self, _grid: &dyn Grid) -> Result<History, AppError> {
            Ok(History::default())
        }
    }

    #[test]
    fn check_config_refuses_what_read_refuses() {
        let server = StrategyServer::<Rounds>::default();
        let config = |n| UserConfig::from_iter([("rounds".to_string(), UserConfigValue::Int(n))]);
        assert!(server.check_config(&config(3)).is_ok());
        let err = server.check_config(&config(0)).unwrap_err().to_string();
        assert!(err.contains("rounds must be positive"), "{err}");
        assert!(server.check_config(&UserConfig::default()).is_err());
    }
}
