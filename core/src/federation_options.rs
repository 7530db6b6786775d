//! A federation's `options.*`: the settings of a simulation, read from `pyproject.toml` by
//! `flwr` and, for a simulation on a remote SuperLink, sent flattened in `StartRun`'s
//! `federation_options` and read back there. One parser serves both ([`FederationOptions::set`]),
//! so a key means the same and is refused with the same words wherever it is read.

use crate::user_config::{UserConfig, UserConfigValue};
use thiserror::Error;

/// A federation's `options.*` keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FederationOptions {
    /// `options.num-supernodes`: the size of a simulated fleet; at least 1 when present.
    pub num_supernodes: Option<u64>,
    /// `options.backend.client-resources.*`.
    pub client_resources: ClientResources,
    /// `options.chaos.*`: faults the simulation injects; all off unless set.
    pub chaos: ChaosOptions,
    /// Every other `options.*` key, flattened and without the `options.` prefix, kept for
    /// the simulation backend to interpret.
    pub extra: UserConfig,
}

/// Resources one simulated ClientApp reserves; the simulation sizes its worker pool by them.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientResources {
    /// Greater than zero; Flower's default is 1.
    pub num_cpus: f64,
    /// Zero or more, fractions allowed so that ClientApps can share a GPU.
    pub num_gpus: f64,
}

impl Default for ClientResources {
    fn default() -> Self {
        ClientResources {
            num_cpus: 1.0,
            num_gpus: 0.0,
        }
    }
}

/// `options.chaos.*`: faults the virtual fleet of a simulation (local, or on a
/// `--simulation` SuperLink) injects, so that a researcher can measure a strategy under dropouts, stragglers, slow links and
/// Byzantine clients with the same `flwr run` they use without them. Every fault is drawn from `seed`, so the same
/// manifest gives the same faults on every run. All off by default; see docs/CHAOS.md.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChaosOptions {
    /// `options.chaos.dropout-rate`, in [0, 1]: the share of instructions whose node drops
    /// out before answering; the strategy gets a `NODE_UNAVAILABLE` error reply instead.
    pub dropout_rate: f64,
    /// `options.chaos.straggler-rate`, in [0, 1]: the share of instructions whose reply is
    /// held back until the run's next phase has started, so it arrives late.
    pub straggler_rate: f64,
    /// `options.chaos.latency-ms`: added to every reply before it reaches the SuperLink.
    pub latency: std::time::Duration,
    /// `options.chaos.latency-jitter-ms`: up to this much more, drawn per reply.
    pub latency_jitter: std::time::Duration,
    /// `options.chaos.seed`: the seed of every fault drawn; default 0.
    pub seed: u64,
    /// `options.chaos.byzantine-rate`, in [0, 1]: the share of the fleet's nodes that are
    /// Byzantine for the whole run and poison the arrays of their train replies.
    pub byzantine_rate: f64,
    /// `options.chaos.byzantine-mode`: how a Byzantine node poisons its arrays.
    pub byzantine_mode: ByzantineMode,
    /// `options.chaos.byzantine-scale`: the attack's strength (`sign-flip`'s and `scaled`'s
    /// factor on the update, `gaussian`'s standard deviation); `None` for the mode's own
    /// default (`ByzantineMode::default_scale`).
    pub byzantine_scale: Option<f64>,
}

/// `options.chaos.byzantine-mode`: what a Byzantine node sends instead of its trained
/// arrays. `global` is the instruction's array under the same key, `local` the trained one;
/// the exact arithmetic is in docs/CHAOS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ByzantineMode {
    /// `global - (local - global)`: the update negated (the sign-flipping attack).
    #[default]
    SignFlip,
    /// Every element a seeded N(0, 1) draw.
    Gaussian,
    /// Every element zero.
    Zeros,
    /// `global + 10 * (local - global)`: the update boosted tenfold.
    Scaled,
}

impl ByzantineMode {
    /// Every mode, in the order errors list them.
    pub const ALL: [ByzantineMode; 4] = [
        ByzantineMode::SignFlip,
        ByzantineMode::Gaussian,
        ByzantineMode::Zeros,
        ByzantineMode::Scaled,
    ];

    /// The name `pyproject.toml` gives the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            ByzantineMode::SignFlip => "sign-flip",
            ByzantineMode::Gaussian => "gaussian",
            ByzantineMode::Zeros => "zeros",
            ByzantineMode::Scaled => "scaled",
        }
    }

    /// The mode named `name`, if there is one.
    pub fn parse(name: &str) -> Option<ByzantineMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// The strength the mode attacks with when `options.chaos.byzantine-scale` is not set:
    /// `sign-flip` negates the update as it is (1), `scaled` makes it ten times longer,
    /// `gaussian` draws with standard deviation 1; `zeros` has none.
    pub fn default_scale(self) -> f64 {
        match self {
            ByzantineMode::Scaled => 10.0,
            ByzantineMode::SignFlip | ByzantineMode::Gaussian | ByzantineMode::Zeros => 1.0,
        }
    }
}

impl std::fmt::Display for ByzantineMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ChaosOptions {
    /// The `options.chaos.*` keys there are, for errors that list them.
    pub const KEYS: [&'static str; 8] = [
        "options.chaos.dropout-rate",
        "options.chaos.straggler-rate",
        "options.chaos.latency-ms",
        "options.chaos.latency-jitter-ms",
        "options.chaos.seed",
        "options.chaos.byzantine-rate",
        "options.chaos.byzantine-mode",
        "options.chaos.byzantine-scale",
    ];

    /// True when no fault is injected at all (the seed or a Byzantine mode alone changes
    /// nothing), so the simulation can keep its fault-free fast path.
    pub fn is_off(&self) -> bool {
        self.dropout_rate == 0.0
            && self.straggler_rate == 0.0
            && self.byzantine_rate == 0.0
            && self.latency.is_zero()
            && self.latency_jitter.is_zero()
    }
}

/// Why an `options.*` key cannot be used; `key` is written as in `pyproject.toml`
/// (`options.num-supernodes`).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OptionError {
    /// The value has the wrong type.
    #[error("`{key}` must be {expected}, not {found}")]
    WrongType {
        /// The offending key.
        key: String,
        /// The type it takes ("an int").
        expected: &'static str,
        /// The type it has.
        found: &'static str,
    },
    /// The value is out of range, or the key does not exist.
    #[error("`{key}` {problem}: {fix}")]
    Invalid {
        /// The offending key.
        key: String,
        /// What is wrong with it, phrased to follow the key.
        problem: String,
        /// What to write instead.
        fix: String,
    },
}

fn invalid(key: &str, problem: String, fix: &str) -> OptionError {
    OptionError::Invalid {
        key: key.to_owned(),
        problem,
        fix: fix.to_owned(),
    }
}

/// An int or float as `f64`: resource counts may be written either way (`num-cpus = 1`).
fn number(value: &UserConfigValue) -> Option<f64> {
    match value {
        UserConfigValue::Int(i) => Some(*i as f64),
        UserConfigValue::Float(f) => Some(*f),
        UserConfigValue::Bool(_) | UserConfigValue::Str(_) => None,
    }
}

impl FederationOptions {
    /// Sets one option; `key` is as written in `pyproject.toml`, with its `options.` prefix.
    /// A key this build does not interpret outside `options.chaos.*` is kept in `extra`.
    pub fn set(&mut self, key: &str, value: &UserConfigValue) -> Result<(), OptionError> {
        let wrong = |expected| OptionError::WrongType {
            key: key.to_owned(),
            expected,
            found: value.type_name(),
        };
        match (key, value) {
            ("options.num-supernodes", UserConfigValue::Int(n)) => {
                let n = u64::try_from(*n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                    invalid(
                        key,
                        format!("must be at least 1 (got {n})"),
                        "set options.num-supernodes = 10",
                    )
                })?;
                self.num_supernodes = Some(n);
            }
            ("options.num-supernodes", _) => return Err(wrong("an int")),
            ("options.backend.client-resources.num-cpus", _) => {
                let cpus = number(value).ok_or_else(|| wrong("an int or float"))?;
                if !(cpus > 0.0 && cpus.is_finite()) {
                    return Err(invalid(
                        key,
                        format!("must be greater than 0 (got {value})"),
                        "set options.backend.client-resources.num-cpus = 1",
                    ));
                }
                self.client_resources.num_cpus = cpus;
            }
            ("options.backend.client-resources.num-gpus", _) => {
                let gpus = number(value).ok_or_else(|| wrong("an int or float"))?;
                if !(gpus >= 0.0 && gpus.is_finite()) {
                    return Err(invalid(
                        key,
                        format!("must be 0 or more (got {value})"),
                        "set options.backend.client-resources.num-gpus = 0.0 for CPU-only ClientApps",
                    ));
                }
                self.client_resources.num_gpus = gpus;
            }
            (
                "options.chaos.dropout-rate"
                | "options.chaos.straggler-rate"
                | "options.chaos.byzantine-rate",
                _,
            ) => {
                let rate = number(value).ok_or_else(|| wrong("an int or float"))?;
                let of_what = match key {
                    "options.chaos.byzantine-rate" => "the fleet's nodes",
                    _ => "the sampled nodes",
                };
                if !(0.0..=1.0).contains(&rate) {
                    return Err(invalid(
                        key,
                        format!("must be a fraction between 0 and 1 (got {value})"),
                        &format!("set {key} = 0.3 for 30 % of {of_what}"),
                    ));
                }
                match key {
                    "options.chaos.dropout-rate" => self.chaos.dropout_rate = rate,
                    "options.chaos.straggler-rate" => self.chaos.straggler_rate = rate,
                    _ => self.chaos.byzantine_rate = rate,
                }
            }
            ("options.chaos.byzantine-mode", UserConfigValue::Str(name)) => {
                self.chaos.byzantine_mode = ByzantineMode::parse(name).ok_or_else(|| {
                    let modes: Vec<String> = ByzantineMode::ALL
                        .iter()
                        .map(|m| format!("\"{m}\""))
                        .collect();
                    invalid(
                        key,
                        format!("is not a Byzantine mode (got \"{name}\")"),
                        &format!("use one of: {}", modes.join(", ")),
                    )
                })?;
            }
            ("options.chaos.byzantine-mode", _) => return Err(wrong("a string")),
            ("options.chaos.byzantine-scale", _) => {
                let scale = number(value).ok_or_else(|| wrong("an int or float"))?;
                if !(scale.is_finite() && scale > 0.0) {
                    return Err(invalid(
                        key,
                        format!("must be a positive number (got {value})"),
                        &format!(
                            "set {key} = 4.0 for an update flipped and made four times longer"
                        ),
                    ));
                }
                self.chaos.byzantine_scale = Some(scale);
            }
            ("options.chaos.latency-ms" | "options.chaos.latency-jitter-ms", _) => {
                let ms = number(value).ok_or_else(|| wrong("an int or float"))?;
                let duration =
                    std::time::Duration::try_from_secs_f64(ms / 1000.0).map_err(|_| {
                        invalid(
                            key,
                            format!("must be 0 or more milliseconds (got {value})"),
                            &format!("set {key} = 50 for 50 ms"),
                        )
                    })?;
                match key {
                    "options.chaos.latency-ms" => self.chaos.latency = duration,
                    _ => self.chaos.latency_jitter = duration,
                }
            }
            ("options.chaos.seed", UserConfigValue::Int(n)) => {
                self.chaos.seed = u64::try_from(*n).map_err(|_| {
                    invalid(
                        key,
                        format!("must be 0 or more (got {n})"),
                        "set options.chaos.seed = 42",
                    )
                })?;
            }
            ("options.chaos.seed", _) => return Err(wrong("an int")),
            (chaos, _) if chaos.starts_with("options.chaos.") => {
                return Err(invalid(
                    key,
                    "is not a chaos option".to_owned(),
                    &format!("use one of: {}", ChaosOptions::KEYS.join(", ")),
                ));
            }
            _ => {
                let option = key.strip_prefix("options.").unwrap_or(key);
                self.extra.insert(option.to_owned(), value.clone());
            }
        }
        Ok(())
    }

    /// The checks across keys, once every key is set: a node either drops out or
    /// straggles, so the two shares add up to at most 1.
    pub fn check(&self) -> Result<(), OptionError> {
        let chaos = &self.chaos;
        if chaos.dropout_rate + chaos.straggler_rate > 1.0 {
            return Err(invalid(
                "options.chaos.straggler-rate",
                format!(
                    "plus options.chaos.dropout-rate is more than 1 ({} + {})",
                    chaos.straggler_rate, chaos.dropout_rate
                ),
                "lower one of them: a node either drops out or straggles, so the two shares must add up to at most 1",
            ));
        }
        Ok(())
    }

    /// The options as `StartRun.federation_options` carries them: flattened, without the
    /// `options.` prefix (`num-supernodes`, `backend.client-resources.num-cpus`, ...). Only
    /// what was set or differs from the default is written, so a deployment federation
    /// sends nothing.
    pub fn to_flat(&self) -> UserConfig {
        let mut flat = UserConfig::new();
        let mut put = |key: &str, value: UserConfigValue| {
            flat.insert(key.to_owned(), value);
        };
        if let Some(n) = self.num_supernodes {
            put(
                "num-supernodes",
                UserConfigValue::Int(i64::try_from(n).unwrap_or(i64::MAX)),
            );
        }
        let defaults = ClientResources::default();
        if self.client_resources.num_cpus != defaults.num_cpus {
            put(
                "backend.client-resources.num-cpus",
                UserConfigValue::Float(self.client_resources.num_cpus),
            );
        }
        if self.client_resources.num_gpus != defaults.num_gpus {
            put(
                "backend.client-resources.num-gpus",
                UserConfigValue::Float(self.client_resources.num_gpus),
            );
        }
        let chaos = &self.chaos;
        let ms = |d: std::time::Duration| UserConfigValue::Float(d.as_nanos() as f64 / 1e6);
        for (key, value, set) in [
            (
                "chaos.dropout-rate",
                UserConfigValue::Float(chaos.dropout_rate),
                chaos.dropout_rate != 0.0,
            ),
            (
                "chaos.straggler-rate",
                UserConfigValue::Float(chaos.straggler_rate),
                chaos.straggler_rate != 0.0,
            ),
            (
                "chaos.latency-ms",
                ms(chaos.latency),
                !chaos.latency.is_zero(),
            ),
            (
                "chaos.latency-jitter-ms",
                ms(chaos.latency_jitter),
                !chaos.latency_jitter.is_zero(),
            ),
            (
                "chaos.seed",
                UserConfigValue::Int(i64::try_from(chaos.seed).unwrap_or(i64::MAX)),
                chaos.seed != 0,
            ),
            (
                "chaos.byzantine-rate",
                UserConfigValue::Float(chaos.byzantine_rate),
                chaos.byzantine_rate != 0.0,
            ),
            (
                "chaos.byzantine-mode",
                UserConfigValue::Str(chaos.byzantine_mode.as_str().to_owned()),
                chaos.byzantine_mode != ByzantineMode::default(),
            ),
            (
                "chaos.byzantine-scale",
                UserConfigValue::Float(chaos.byzantine_scale.unwrap_or(0.0)),
                chaos.byzantine_scale.is_some(),
            ),
        ] {
            if set {
                put(key, value);
            }
        }
        for (key, value) in &self.extra {
            flat.insert(key.clone(), value.clone());
        }
        flat
    }

    /// Reads options flattened as [`FederationOptions::to_flat`] writes them (keys
    /// without the `options.` prefix), with the same checks as `pyproject.toml`.
    pub fn from_flat(flat: &UserConfig) -> Result<FederationOptions, OptionError> {
        let mut options = FederationOptions::default();
        for (key, value) in flat {
            options.set(&format!("options.{key}"), value)?;
        }
        options.check()?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_survive_the_trip_through_start_run() {
        let mut options = FederationOptions::default();
        for (key, value) in [
            ("options.num-supernodes", UserConfigValue::Int(10)),
            (
                "options.backend.client-resources.num-cpus",
                UserConfigValue::Int(2),
            ),
            ("options.chaos.dropout-rate", UserConfigValue::Float(0.25)),
            ("options.chaos.latency-ms", UserConfigValue::Int(20)),
            ("options.chaos.seed", UserConfigValue::Int(7)),
            ("options.chaos.byzantine-rate", UserConfigValue::Float(0.2)),
            (
                "options.chaos.byzantine-mode",
                UserConfigValue::Str("scaled".into()),
            ),
            (
                "options.backend.init-args.logging-level",
                UserConfigValue::Str("info".into()),
            ),
        ] {
            options.set(key, &value).unwrap();
        }
        let flat = options.to_flat();
        assert_eq!(flat["num-supernodes"], UserConfigValue::Int(10));
        assert_eq!(
            flat["chaos.byzantine-mode"],
            UserConfigValue::Str("scaled".into())
        );
        assert_eq!(FederationOptions::from_flat(&flat).unwrap(), options);
        assert!(FederationOptions::default().to_flat().is_empty());
    }

    #[test]
    fn a_bad_option_from_the_wire_names_the_pyproject_key_and_the_fix() {
        let mut flat = UserConfig::new();
        flat.insert("num-supernodes".into(), UserConfigValue::Int(0));
        let e = FederationOptions::from_flat(&flat).unwrap_err().to_string();
        assert_eq!(
            e,
            "`options.num-supernodes` must be at least 1 (got 0): set options.num-supernodes = 10"
        );
        let mut flat = UserConfig::new();
        flat.insert("chaos.dropout-rate".into(), UserConfigValue::Float(0.7));
        flat.insert("chaos.straggler-rate".into(), UserConfigValue::Float(0.7));
        let e = FederationOptions::from_flat(&flat).unwrap_err().to_string();
        assert!(
            e.contains("plus options.chaos.dropout-rate is more than 1"),
            "{e}"
        );
    }

    #[test]
    fn byzantine_options_are_parsed_and_refused_with_the_valid_values() {
        let mut options = FederationOptions::default();
        assert_eq!(options.chaos.byzantine_mode, ByzantineMode::SignFlip);
        options
            .set("options.chaos.byzantine-rate", &UserConfigValue::Int(1))
            .unwrap();
        assert_eq!(options.chaos.byzantine_rate, 1.0);
        assert!(!options.chaos.is_off(), "Byzantine nodes are a fault");
        for mode in ByzantineMode::ALL {
            options
                .set(
                    "options.chaos.byzantine-mode",
                    &UserConfigValue::Str(mode.as_str().into()),
                )
                .unwrap();
            assert_eq!(options.chaos.byzantine_mode, mode);
        }
        let e = options
            .set(
                "options.chaos.byzantine-mode",
                &UserConfigValue::Str("flip".into()),
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "`options.chaos.byzantine-mode` is not a Byzantine mode (got \"flip\"): use one of: \"sign-flip\", \"gaussian\", \"zeros\", \"scaled\""
        );
        let e = options
            .set("options.chaos.byzantine-rate", &UserConfigValue::Float(1.5))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "`options.chaos.byzantine-rate` must be a fraction between 0 and 1 (got 1.5): set options.chaos.byzantine-rate = 0.3 for 30 % of the fleet's nodes"
        );
        let e = options
            .set(
                "options.chaos.byzantine-scale",
                &UserConfigValue::Float(-2.0),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be a positive number (got -2.0)"), "{e}");
        options
            .set("options.chaos.byzantine-scale", &UserConfigValue::Int(4))
            .unwrap();
        assert_eq!(options.chaos.byzantine_scale, Some(4.0));
        let e = options
            .set("options.chaos.byzantine-mode", &UserConfigValue::Int(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be a string"), "{e}");
        // A remote SuperLink reads the same keys with the same words.
        let mut flat = UserConfig::new();
        flat.insert(
            "chaos.byzantine-mode".into(),
            UserConfigValue::Str("flip".into()),
        );
        let e = FederationOptions::from_flat(&flat).unwrap_err().to_string();
        assert!(
            e.starts_with("`options.chaos.byzantine-mode` is not a Byzantine mode"),
            "{e}"
        );
        let mode_only = ChaosOptions {
            byzantine_mode: ByzantineMode::Zeros,
            ..ChaosOptions::default()
        };
        assert!(mode_only.is_off(), "a mode without a rate poisons nothing");
    }
}
