//! Choosing a strategy from a run config: `strategy = "fedadam"` and the strategy's
//! parameters under Flower's names, written as run-config keys (`eta`, `beta-1`,
//! `server-momentum`, `proximal-mu`, ...), so that
//! `flwr run apps/digits --run-config "strategy='fedyogi' eta=0.01"` picks FedYogi.
//!
//! A parameter key left out of the run config, or set to `nan` (how an app's
//! `pyproject.toml` declares a key it leaves to the strategy), takes the chosen strategy's
//! Flower default. A parameter the chosen strategy does not have is an error, as is an
//! unknown strategy: both name what is valid.

use crate::config::FedAvgConfig;
use crate::error::StrategyError;
use crate::fedavg::FedAvg;
use crate::robust::Robust;
use crate::server_update::{AdaptiveRule, ServerUpdate};
use floret_core::{AppError, Context, UserConfigValue, suggest};

/// Run-config key naming the strategy.
pub const STRATEGY_KEY: &str = "strategy";

/// The strategies a run config can choose, by the name it uses (Flower's class name in
/// lower case).
pub const STRATEGIES: &[&str] = &[
    "fedavg",
    "fedprox",
    "fedavgm",
    "fedadagrad",
    "fedadam",
    "fedyogi",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "qfedavg",
];

/// Each parameter's run-config key and the strategies that have it.
const PARAMETERS: &[(&str, &[&str])] = &[
    ("proximal-mu", &["fedprox"]),
    ("server-learning-rate", &["fedavgm"]),
    ("server-momentum", &["fedavgm"]),
    ("eta", &["fedadagrad", "fedadam", "fedyogi"]),
    ("eta-l", &["fedadagrad", "fedadam", "fedyogi"]),
    ("beta-1", &["fedadam", "fedyogi"]),
    ("beta-2", &["fedadam", "fedyogi"]),
    ("tau", &["fedadagrad", "fedadam", "fedyogi"]),
    ("beta", &["fedtrimmedavg"]),
    ("num-malicious-nodes", &["krum", "multikrum", "bulyan"]),
    ("num-nodes-to-select", &["multikrum"]),
    ("q", &["qfedavg"]),
    ("client-learning-rate", &["qfedavg"]),
];

/// A strategy chosen by a run config, checked: build it with the app's sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyChoice {
    /// The server's step (FedAvg's family).
    pub update: ServerUpdate,
    /// FedProx's `proximal_mu`.
    pub proximal_mu: Option<f64>,
    /// An aggregator over all replies (FedMedian, Krum, ...).
    pub robust: Option<Robust>,
}

impl StrategyChoice {
    /// The strategy, with `config`'s sampling settings.
    pub fn build(&self, config: FedAvgConfig) -> Result<FedAvg, StrategyError> {
        let strategy = FedAvg::new(config)?.with_server_update(self.update.clone())?;
        let strategy = match self.proximal_mu {
            Some(mu) => strategy.with_proximal_mu(mu)?,
            None => strategy,
        };
        match &self.robust {
            Some(robust) => strategy.with_robust(robust.clone()),
            None => Ok(strategy),
        }
    }

    /// Flower's class name of the strategy.
    pub fn name(&self) -> &'static str {
        match &self.robust {
            Some(robust) => robust.name(),
            None => self.update.name_with(self.proximal_mu),
        }
    }
}

/// The strategy the run config of `ctx` chooses (FedAvg when it has no `strategy` key),
/// with its parameters from the run config, checked.
pub fn from_run_config(ctx: &Context) -> Result<StrategyChoice, AppError> {
    let name = match ctx.run_config.get(STRATEGY_KEY) {
        None => "fedavg".to_string(),
        Some(UserConfigValue::Str(s)) => s.to_ascii_lowercase(),
        Some(other) => {
            return Err(AppError::Config(format!(
                "run config key \"strategy\" must be a string, one of {}, but is {other}",
                STRATEGIES.join(", ")
            )));
        }
    };
    let Some(&name) = STRATEGIES.iter().find(|s| **s == name) else {
        return Err(AppError::Config(format!(
            "unknown strategy {name:?}{}; valid strategies: {}",
            suggest::did_you_mean(&name, STRATEGIES.iter().copied()),
            STRATEGIES.join(", ")
        )));
    };
    let mut given = Vec::new();
    for &(key, owners) in PARAMETERS {
        let Some(value) = number(ctx, key)? else {
            continue;
        };
        if !owners.contains(&name) {
            return Err(AppError::Config(format!(
                "run config key {key:?} is a parameter of {}, not of {name}; remove it or set \
                 it to nan, or choose one of those strategies",
                owners.join(", ")
            )));
        }
        given.push((key, value));
    }
    let param = |key: &str, default: f64| {
        given
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(default, |(_, v)| *v)
    };
    let update = match name {
        "fedavgm" => ServerUpdate::Momentum {
            server_learning_rate: param("server-learning-rate", 1.0),
            server_momentum: param("server-momentum", 0.0),
        },
        "fedadagrad" | "fedadam" | "fedyogi" => {
            let defaults = match name {
                "fedadagrad" => ServerUpdate::adagrad(),
                "fedadam" => ServerUpdate::adam(),
                _ => ServerUpdate::yogi(),
            };
            with_parameters(defaults, &param)
        }
        _ => ServerUpdate::Average,
    };
    let count = |key: &str, default: usize| -> Result<usize, AppError> {
        let v = param(key, default as f64);
        if v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX) {
            Ok(v as usize)
        } else {
            Err(AppError::Config(format!(
                "run config key {key:?} must be a whole number of nodes, but is {v}"
            )))
        }
    };
    let robust = match name {
        "fedmedian" => Some(Robust::Median),
        "fedtrimmedavg" => Some(Robust::TrimmedMean {
            beta: param("beta", 0.2),
        }),
        "krum" => Some(Robust::Krum {
            num_malicious_nodes: count("num-malicious-nodes", 0)?,
        }),
        "multikrum" => Some(Robust::MultiKrum {
            num_malicious_nodes: count("num-malicious-nodes", 0)?,
            num_nodes_to_select: count("num-nodes-to-select", 1)?,
        }),
        "bulyan" => Some(Robust::Bulyan {
            num_malicious_nodes: count("num-malicious-nodes", 0)?,
        }),
        "qfedavg" => Some(Robust::QFedAvg {
            q: param("q", 0.1),
            client_learning_rate: client_learning_rate(ctx, &param)?,
            loss_key: "train_loss".into(),
        }),
        _ => None,
    };
    let choice = StrategyChoice {
        update,
        proximal_mu: (name == "fedprox").then(|| param("proximal-mu", 0.0)),
        robust,
    };
    // Built once here so that a bad parameter is refused when the run config is checked.
    choice
        .build(FedAvgConfig::default())
        .map_err(|e| AppError::Config(e.to_string()))?;
    Ok(choice)
}

/// An adaptive update with the parameters `param` gives (key, default) in place of its
/// defaults; FedAdagrad has no moment decays to set (Flower fixes them at 0).
fn with_parameters(defaults: ServerUpdate, param: &impl Fn(&str, f64) -> f64) -> ServerUpdate {
    match defaults {
        ServerUpdate::Adaptive {
            rule,
            eta,
            eta_l,
            beta_1,
            beta_2,
            tau,
        } => {
            let decays = rule != AdaptiveRule::Adagrad;
            ServerUpdate::Adaptive {
                rule,
                eta: param("eta", eta),
                eta_l: param("eta-l", eta_l),
                beta_1: if decays {
                    param("beta-1", beta_1)
                } else {
                    beta_1
                },
                beta_2: if decays {
                    param("beta-2", beta_2)
                } else {
                    beta_2
                },
                tau: param("tau", tau),
            }
        }
        other => other,
    }
}

/// QFedAvg's `client-learning-rate`; Flower requires it, so without it the app's own `lr`
/// (the nodes' learning rate in the built-in apps and the template) stands in.
fn client_learning_rate(ctx: &Context, param: &impl Fn(&str, f64) -> f64) -> Result<f64, AppError> {
    let given = param("client-learning-rate", f64::NAN);
    if !given.is_nan() {
        return Ok(given);
    }
    number(ctx, "lr")?.ok_or_else(|| {
        AppError::Config(
            "qfedavg needs the nodes' learning rate: set run config key \"client-learning-rate\""
                .into(),
        )
    })
}

/// The number at `key`, `None` when absent or `nan`.
fn number(ctx: &Context, key: &str) -> Result<Option<f64>, AppError> {
    match ctx.run_config.get(key) {
        None => Ok(None),
        Some(UserConfigValue::Float(f)) if f.is_nan() => Ok(None),
        Some(UserConfigValue::Float(f)) => Ok(Some(*f)),
        Some(UserConfigValue::Int(i)) => Ok(Some(*i as f64)),
        Some(other) => Err(AppError::Config(format!(
            "run config key {key:?} must be a number, but is {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::UserConfig;

    fn ctx(pairs: &[(&str, UserConfigValue)]) -> Context {
        Context {
            run_config: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<UserConfig>(),
            ..Context::default()
        }
    }

    fn choose(pairs: &[(&str, UserConfigValue)]) -> Result<FedAvg, AppError> {
        let choice = from_run_config(&ctx(pairs))?;
        let strategy = choice.build(FedAvgConfig::default()).unwrap();
        assert_eq!(strategy.name(), choice.name());
        Ok(strategy)
    }

    fn s(v: &str) -> UserConfigValue {
        UserConfigValue::Str(v.into())
    }

    #[test]
    fn no_strategy_key_is_fedavg() {
        assert_eq!(choose(&[]).unwrap().name(), "FedAvg");
    }

    #[test]
    fn each_name_builds_its_strategy() {
        let names: Vec<&str> = STRATEGIES
            .iter()
            .map(|n| {
                let lr = ("lr", UserConfigValue::Float(0.1));
                choose(&[("strategy", s(n)), lr]).unwrap().name()
            })
            .collect();
        assert_eq!(
            names,
            [
                "FedAvg",
                "FedProx",
                "FedAvgM",
                "FedAdagrad",
                "FedAdam",
                "FedYogi",
                "FedMedian",
                "FedTrimmedAvg",
                "Krum",
                "MultiKrum",
                "Bulyan",
                "QFedAvg"
            ]
        );
    }

    #[test]
    fn parameters_override_the_strategys_defaults_and_nan_keeps_them() {
        let yogi = choose(&[
            ("strategy", s("FedYogi")),
            ("eta", UserConfigValue::Float(0.05)),
            ("tau", UserConfigValue::Float(f64::NAN)),
        ])
        .unwrap();
        let text = format!("{yogi:?}");
        assert!(text.contains("eta: 0.05"), "{text}");
        assert!(text.contains("tau: 0.001"), "{text}");
        // A nan parameter of another strategy is left alone.
        let avg = choose(&[("eta", UserConfigValue::Float(f64::NAN))]).unwrap();
        assert_eq!(avg.name(), "FedAvg");
    }

    #[test]
    fn robust_strategies_read_their_parameters() {
        let bulyan = choose(&[
            ("strategy", s("bulyan")),
            ("num-malicious-nodes", UserConfigValue::Int(2)),
        ])
        .unwrap();
        assert!(format!("{bulyan:?}").contains("num_malicious_nodes: 2"));
        let e = choose(&[
            ("strategy", s("krum")),
            ("num-malicious-nodes", UserConfigValue::Float(1.5)),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("whole number"), "{e}");
        let e = choose(&[("strategy", s("qfedavg"))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("client-learning-rate"), "{e}");
        let q = choose(&[
            ("strategy", s("qfedavg")),
            ("lr", UserConfigValue::Float(0.05)),
        ])
        .unwrap();
        assert!(format!("{q:?}").contains("client_learning_rate: 0.05"));
        let e = choose(&[
            ("strategy", s("fedtrimmedavg")),
            ("beta", UserConfigValue::Float(0.6)),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("beta"), "{e}");
    }

    #[test]
    fn an_unknown_strategy_names_the_valid_ones() {
        let e = choose(&[("strategy", s("fedadma"))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `fedadam`"), "{e}");
        assert!(e.contains("fedavg, fedprox, fedavgm"), "{e}");
    }

    #[test]
    fn a_parameter_of_another_strategy_is_refused() {
        let e = choose(&[
            ("strategy", s("fedavg")),
            ("eta", UserConfigValue::Float(0.1)),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"eta\" is a parameter of fedadagrad, fedadam, fedyogi"),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_parameters_name_themselves() {
        let e = choose(&[
            ("strategy", s("fedavgm")),
            ("server-momentum", UserConfigValue::Float(2.0)),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("server_momentum"), "{e}");
        let e = choose(&[
            ("strategy", s("fedprox")),
            ("proximal-mu", UserConfigValue::Int(-1)),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("proximal_mu"), "{e}");
    }
}
