//! Differential privacy as Flower 1.42 has it: clipping each node's update to a norm and
//! adding Gaussian noise, on the server or on the nodes, with a fixed or an adaptive
//! clipping norm; and local DP, where each node adds its own noise.
//!
//! One module holds every rule, for both sides: the clip (`clip_update`), the noise
//! (`add_gaussian_noise`), the adaptive norm's update and its noise parameters
//! (`DpConfig`), and the nodes' ClientApp mods (`fixed_clipping_mod`,
//! `adaptive_clipping_mod`, `LocalDpMod`), which a user adds in one line:
//! `client_app().with_mod(dp::fixed_clipping_mod())`.
//!
//! | Flower | Floret |
//! |---|---|
//! | `DifferentialPrivacyServerSideFixedClipping` | `FedAvg::with_dp(DpConfig::server_fixed(..))` |
//! | `DifferentialPrivacyServerSideAdaptiveClipping` | `DpConfig::server_adaptive(..)` |
//! | `DifferentialPrivacyClientSideFixedClipping` + `fixedclipping_mod` | `DpConfig::client_fixed(..)` + [`fixed_clipping_mod`] |
//! | `DifferentialPrivacyClientSideAdaptiveClipping` + `adaptiveclipping_mod` | `DpConfig::client_adaptive(..)` + [`adaptive_clipping_mod`] |
//! | `LocalDpMod` | [`LocalDpMod`] |
//!
//! The formulas and their order are Flower's (`flwr/common/differential_privacy.py`,
//! `serverapp/strategy/dp_fixed_clipping.py`, `dp_adaptive_clipping.py`,
//! `clientapp/mod/centraldp_mods.py`, `localdp_mod.py`; the fixtures' README describes
//! them). Where Floret differs on purpose:
//! - the noise is drawn from a generator seeded by the run's seed and the round (server
//!   side) or by the node and the round (local DP), so a run is reproducible and a resumed
//!   run draws what the uninterrupted one drew; Flower draws from numpy's unseeded global
//!   generator, so its noise can only be matched in distribution (tests check the spread);
//! - norms and clipping are computed in f64 (Flower: float32 BLAS), results stored in the
//!   model's dtype;
//! - a round with failed replies aggregates the others, as FedAvg does (Flower's server-side
//!   DP wrappers skip such a round).
//!
//! Kept as Flower has it, for comparable results: the adaptive norm is multiplied by
//! `exp(-clip_norm_lr * (clipped share - target_clipped_quantile))`, with the share of
//! updates that *were* clipped, so it shrinks when more than the target are clipped (the
//! paper, Andrew et al. 2021, counts the unclipped ones).

use crate::checkpoint::round_rng;
use crate::values;
use floret_core::{
    AppError, Array, ArrayRecord, Context, DType, Message, MetricRecord, Next, RecordDict,
    message_type,
};
use rand::Rng;

/// Key of the clipping norm the client-side variants send to the nodes (Flower's name).
pub const CLIPPING_NORM_KEY: &str = "clipping_norm";
/// Metric in which `adaptive_clipping_mod` says whether it clipped (1) or not (0).
pub const NORM_BIT_KEY: &str = "norm_bit";

/// Salt of the server's noise generator, so that it is independent of the sampling.
const NOISE_SALT: u64 = 0x6470_6e6f_6973_6521;

/// Where the updates are clipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server clips each reply's update before aggregating.
    Server,
    /// The nodes clip (a mod), the server sends them the norm.
    Client,
}

/// How the clipping norm is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Clipping {
    /// A fixed norm.
    Fixed {
        /// `clipping_norm`.
        clipping_norm: f64,
    },
    /// A norm that follows a quantile of the updates' norms (Andrew et al. 2021).
    Adaptive {
        /// `initial_clipping_norm` (Flower's default 0.1).
        initial_clipping_norm: f64,
        /// `target_clipped_quantile` (default 0.5): the share of updates meant to be clipped.
        target_clipped_quantile: f64,
        /// `clip_norm_lr` (default 0.2).
        clip_norm_lr: f64,
        /// `clipped_count_stddev`: noise on the count of clipped updates; `None` takes
        /// Flower's default (`num_sampled_clients / 20` with noise, 0 without).
        clipped_count_stddev: Option<f64>,
    },
}

/// Central differential privacy for a strategy: the clip, the noise on the aggregate, and
/// (adaptive) the norm's update.
#[derive(Debug, Clone, PartialEq)]
pub struct DpConfig {
    /// Who clips.
    pub side: Side,
    /// `noise_multiplier`: the noise's standard deviation is this times the clipping norm,
    /// over `num_sampled_clients`.
    pub noise_multiplier: f64,
    /// `num_sampled_clients`: the nodes sampled per round, as Flower takes it (a parameter,
    /// not the replies counted).
    pub num_sampled_clients: usize,
    /// The norm.
    pub clipping: Clipping,
}

impl DpConfig {
    /// `DifferentialPrivacyServerSideFixedClipping`.
    pub fn server_fixed(
        noise_multiplier: f64,
        clipping_norm: f64,
        num_sampled_clients: usize,
    ) -> Self {
        DpConfig {
            side: Side::Server,
            noise_multiplier,
            num_sampled_clients,
            clipping: Clipping::Fixed { clipping_norm },
        }
    }

    /// `DifferentialPrivacyClientSideFixedClipping` (the nodes need [`fixed_clipping_mod`]).
    pub fn client_fixed(
        noise_multiplier: f64,
        clipping_norm: f64,
        num_sampled_clients: usize,
    ) -> Self {
        DpConfig {
            side: Side::Client,
            ..DpConfig::server_fixed(noise_multiplier, clipping_norm, num_sampled_clients)
        }
    }

    /// `DifferentialPrivacyServerSideAdaptiveClipping` with Flower's defaults (initial
    /// norm 0.1, target quantile 0.5, learning rate 0.2).
    pub fn server_adaptive(noise_multiplier: f64, num_sampled_clients: usize) -> Self {
        DpConfig {
            side: Side::Server,
            noise_multiplier,
            num_sampled_clients,
            clipping: Clipping::Adaptive {
                initial_clipping_norm: 0.1,
                target_clipped_quantile: 0.5,
                clip_norm_lr: 0.2,
                clipped_count_stddev: None,
            },
        }
    }

    /// `DifferentialPrivacyClientSideAdaptiveClipping` (the nodes need
    /// [`adaptive_clipping_mod`]).
    pub fn client_adaptive(noise_multiplier: f64, num_sampled_clients: usize) -> Self {
        DpConfig {
            side: Side::Client,
            ..DpConfig::server_adaptive(noise_multiplier, num_sampled_clients)
        }
    }

    /// Checks the parameters; the error names the first bad one and what to set.
    pub fn validate(&self) -> Result<(), (&'static str, String, String)> {
        let bad = |field, v: f64, fix: &str| Err((field, v.to_string(), fix.to_string()));
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return bad(
                "noise_multiplier",
                self.noise_multiplier,
                "set a number >= 0, e.g. 1.0",
            );
        }
        if self.num_sampled_clients == 0 {
            return bad(
                "num_sampled_clients",
                0.0,
                "set the number of nodes sampled per round (at least 1)",
            );
        }
        match self.clipping {
            Clipping::Fixed { clipping_norm }
                if !(clipping_norm.is_finite() && clipping_norm > 0.0) =>
            {
                bad(
                    "clipping_norm",
                    clipping_norm,
                    "set a positive norm, e.g. 1.0",
                )
            }
            Clipping::Adaptive {
                initial_clipping_norm,
                target_clipped_quantile,
                clip_norm_lr,
                ..
            } => {
                if !(initial_clipping_norm.is_finite() && initial_clipping_norm > 0.0) {
                    return bad(
                        "initial_clipping_norm",
                        initial_clipping_norm,
                        "set a positive norm, e.g. 0.1",
                    );
                }
                if !(0.0..=1.0).contains(&target_clipped_quantile) {
                    return bad(
                        "target_clipped_quantile",
                        target_clipped_quantile,
                        "set a share in [0, 1], e.g. 0.5",
                    );
                }
                if !(clip_norm_lr.is_finite() && clip_norm_lr > 0.0) {
                    return bad(
                        "clip_norm_lr",
                        clip_norm_lr,
                        "set a positive rate, e.g. 0.2",
                    );
                }
                let (stddev, _) = self.adaptive_noise();
                if self.noise_multiplier > 0.0 && self.noise_multiplier >= 2.0 * stddev {
                    return bad(
                        "clipped_count_stddev",
                        stddev,
                        "with noise it must exceed noise_multiplier / 2 (Flower's rule)",
                    );
                }
                Ok(())
            }
            Clipping::Fixed { .. } => Ok(()),
        }
    }

    /// The clipping norm of the first round.
    pub fn initial_norm(&self) -> f64 {
        match self.clipping {
            Clipping::Fixed { clipping_norm } => clipping_norm,
            Clipping::Adaptive {
                initial_clipping_norm,
                ..
            } => initial_clipping_norm,
        }
    }

    /// The noise multiplier the model's noise gets: `noise_multiplier` itself, or with an
    /// adaptive norm what is left once the noisy count took its share (Flower replaces the
    /// parameter with it too: 0.4 with a count deviation of 1 gives 0.408).
    pub fn effective_noise_multiplier(&self) -> f64 {
        self.adaptive_noise().1
    }

    /// Flower's `compute_adaptive_noise_params`: the count's standard deviation and the
    /// effective noise multiplier left for the model once the count took its share.
    fn adaptive_noise(&self) -> (f64, f64) {
        let Clipping::Adaptive {
            clipped_count_stddev,
            ..
        } = self.clipping
        else {
            return (0.0, self.noise_multiplier);
        };
        let nm = self.noise_multiplier;
        if nm > 0.0 {
            let stddev = clipped_count_stddev.unwrap_or(self.num_sampled_clients as f64 / 20.0);
            let effective = (nm.powi(-2) - (2.0 * stddev).powi(-2)).powf(-0.5);
            (stddev, effective)
        } else {
            (clipped_count_stddev.unwrap_or(0.0), 0.0)
        }
    }

    /// The round's noise generator: from the run's seed and the round alone.
    pub(crate) fn rng(seed: u64, round: u64) -> rand::rngs::SmallRng {
        round_rng(seed ^ NOISE_SALT, round)
    }

    /// After a round: for an adaptive norm, its next value from how many of `replies`
    /// updates were clipped (a noisy count); then the noise on `model`, with the (new) norm.
    /// Returns the norm for the next round.
    pub(crate) fn finish_round(
        &self,
        norm: f64,
        clipped: usize,
        replies: usize,
        model: &mut ArrayRecord,
        rng: &mut impl Rng,
    ) -> f64 {
        let (stddev, noise_multiplier) = self.adaptive_noise();
        let norm = match self.clipping {
            Clipping::Adaptive {
                target_clipped_quantile,
                clip_norm_lr,
                ..
            } if replies > 0 => {
                let noisy = clipped as f64 + stddev * gaussian(rng);
                let fraction = noisy / replies as f64;
                norm * (-clip_norm_lr * (fraction - target_clipped_quantile)).exp()
            }
            _ => norm,
        };
        let std = noise_multiplier * norm / self.num_sampled_clients as f64;
        add_gaussian_noise(model, std, rng);
        norm
    }
}

/// A standard normal draw (Box–Muller).
fn gaussian(rng: &mut impl Rng) -> f64 {
    // 1 - u is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Adds N(0, std^2) to every float element of `model`, array by array in the record's
/// order (integer arrays are left alone). `std == 0` adds nothing.
pub fn add_gaussian_noise(model: &mut ArrayRecord, std: f64, rng: &mut impl Rng) {
    if std == 0.0 {
        return;
    }
    for (_, array) in model.0.iter_mut() {
        let noisy = match array.dtype {
            DType::F32 => array.values::<f32>().ok().map(|v| {
                let v: Vec<f32> = v
                    .iter()
                    .map(|&x| (f64::from(x) + std * gaussian(rng)) as f32)
                    .collect();
                Array::from_vec(array.shape.clone(), v)
            }),
            DType::F64 => array.values::<f64>().ok().map(|v| {
                let v: Vec<f64> = v.iter().map(|&x| x + std * gaussian(rng)).collect();
                Array::from_vec(array.shape.clone(), v)
            }),
            _ => None,
        };
        if let Some(noisy) = noisy {
            *array = noisy;
        }
    }
}

/// Flower's `compute_clip_model_update`: `global + min(1, clipping_norm / |u|) * u` with
/// `u = local - global` over all float arrays; and whether it clipped. Arrays missing from
/// `global` or of other dtypes are kept as they are.
pub fn clip_update(
    local: &ArrayRecord,
    global: &ArrayRecord,
    clipping_norm: f64,
) -> (ArrayRecord, bool) {
    let pairs: Vec<(Vec<f64>, Vec<f64>)> = local
        .iter()
        .map(|(key, a)| (floats(a), global.0.get(key).map(floats).unwrap_or_default()))
        .collect();
    let norm = pairs
        .iter()
        .filter(|(l, g)| l.len() == g.len())
        .flat_map(|(l, g)| l.iter().zip(g).map(|(l, g)| (l - g) * (l - g)))
        .sum::<f64>()
        .sqrt();
    let scale = (clipping_norm / norm).min(1.0);
    let clipped = scale < 1.0;
    let out = local
        .iter()
        .zip(&pairs)
        .map(|((key, a), (l, g))| {
            if l.is_empty() || l.len() != g.len() {
                return (key.clone(), a.clone());
            }
            let v = l.iter().zip(g).map(|(l, g)| g + (l - g) * scale).collect();
            (key.clone(), values::from_f64(a, v))
        })
        .collect();
    (out, clipped)
}

/// A float array's values as f64; empty for other dtypes (only floats are clipped).
fn floats(a: &Array) -> Vec<f64> {
    match a.dtype {
        DType::F32 | DType::F64 => values::to_f64(a).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The instruction's model (its one array record, as Flower's mods require).
fn instruction_arrays(message: &Message) -> Result<&ArrayRecord, AppError> {
    let content = message
        .content()
        .map_err(|e| AppError::other(format!("DP mod: the instruction has no content: {e}")))?;
    Ok(content.array_record("arrays")?)
}

/// Clips the train reply's update against the instruction's model with the norm `norm`
/// gives; `bit` adds `norm_bit` to the reply's metrics.
fn clip_reply(
    message: &Message,
    context: &mut Context,
    next: Next<'_>,
    norm: impl Fn(&Message) -> Result<f64, AppError>,
    bit: bool,
) -> Result<RecordDict, AppError> {
    if message.metadata.message_type != message_type::TRAIN {
        return next(message, context);
    }
    let clipping_norm = norm(message)?;
    let global = instruction_arrays(message)?.clone();
    let mut reply = next(message, context)?;
    let local = reply.array_record("arrays")?;
    let (clipped, was_clipped) = clip_update(local, &global, clipping_norm);
    reply.insert("arrays", clipped);
    if bit {
        let mut metrics = reply
            .metric_record("metrics")
            .cloned()
            .unwrap_or_else(|_| MetricRecord::new());
        metrics.insert(NORM_BIT_KEY, i64::from(was_clipped));
        reply.insert("metrics", metrics);
    }
    Ok(reply)
}

/// The clipping norm the server sent with a train message.
fn sent_norm(message: &Message) -> Result<f64, AppError> {
    let content = message
        .content()
        .map_err(|e| AppError::other(format!("DP mod: the instruction has no content: {e}")))?;
    content
        .config_record("config")?
        .get_f64(CLIPPING_NORM_KEY)
        .map_err(|_| {
            AppError::other(format!(
                "DP mod: the train config has no {CLIPPING_NORM_KEY:?}: the ServerApp must use \
                 client-side clipping (DpConfig::client_fixed or client_adaptive)"
            ))
        })
}

/// Flower's `fixedclipping_mod`: clips each train reply's update to the norm the server
/// sends (`DpConfig::client_fixed`).
pub fn fixed_clipping_mod()
-> impl Fn(&Message, &mut Context, Next<'_>) -> Result<RecordDict, AppError> + Send + Sync + 'static
{
    |message, context, next| clip_reply(message, context, next, sent_norm, false)
}

/// Flower's `adaptiveclipping_mod`: as `fixed_clipping_mod`, and tells the server whether it
/// clipped (`norm_bit`), from which the norm adapts (`DpConfig::client_adaptive`).
pub fn adaptive_clipping_mod()
-> impl Fn(&Message, &mut Context, Next<'_>) -> Result<RecordDict, AppError> + Send + Sync + 'static
{
    |message, context, next| clip_reply(message, context, next, sent_norm, true)
}

/// Flower's `LocalDpMod`: each node clips its update and adds Gaussian noise of standard
/// deviation `sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon` itself, seeded by `seed`,
/// the node and the round.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalDpMod {
    /// `clipping_norm`.
    pub clipping_norm: f64,
    /// `sensitivity`.
    pub sensitivity: f64,
    /// `epsilon`.
    pub epsilon: f64,
    /// `delta`.
    pub delta: f64,
    /// Seed of the noise.
    pub seed: u64,
}

impl LocalDpMod {
    /// A local DP mod; refused when a parameter is out of range.
    pub fn new(
        clipping_norm: f64,
        sensitivity: f64,
        epsilon: f64,
        delta: f64,
        seed: u64,
    ) -> Result<Self, AppError> {
        let bad = |name: &str, v: f64, want: &str| {
            Err(AppError::Config(format!(
                "LocalDpMod: {name} must be {want}, but is {v}"
            )))
        };
        if !(clipping_norm.is_finite() && clipping_norm > 0.0) {
            return bad("clipping_norm", clipping_norm, "positive");
        }
        if !(sensitivity.is_finite() && sensitivity >= 0.0) {
            return bad("sensitivity", sensitivity, "0 or more");
        }
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return bad("epsilon", epsilon, "positive");
        }
        if !(delta > 0.0 && delta < 1.0) {
            return bad("delta", delta, "in (0, 1)");
        }
        Ok(LocalDpMod {
            clipping_norm,
            sensitivity,
            epsilon,
            delta,
            seed,
        })
    }

    /// The noise's standard deviation.
    pub fn noise_std(&self) -> f64 {
        self.sensitivity * (2.0 * (1.25 / self.delta).ln()).sqrt() / self.epsilon
    }

    /// The mod, to pass to `ClientApp::with_mod`.
    pub fn into_mod(
        self,
    ) -> impl Fn(&Message, &mut Context, Next<'_>) -> Result<RecordDict, AppError> + Send + Sync + 'static
    {
        move |message, context, next| {
            let round = message
                .content()
                .ok()
                .and_then(|c| c.config_record("config").ok()?.get_i64("server-round").ok())
                .unwrap_or(0) as u64;
            let norm = self.clipping_norm;
            let mut reply = clip_reply(message, context, next, |_| Ok(norm), false)?;
            if message.metadata.message_type == message_type::TRAIN {
                let mut rng = round_rng(
                    self.seed ^ context.node_id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    round,
                );
                let mut arrays = reply.array_record("arrays")?.clone();
                add_gaussian_noise(&mut arrays, self.noise_std(), &mut rng);
                reply.insert("arrays", arrays);
            }
            Ok(reply)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::values::testing::{model, values};

    #[test]
    fn an_update_longer_than_the_norm_is_scaled_to_it() {
        // Update (3, 4): norm 5, clipped to 1 -> (0.6, 0.8).
        let (out, clipped) = clip_update(&model(&[4.0, 6.0]), &model(&[1.0, 2.0]), 1.0);
        assert!(clipped);
        assert_eq!(values(&out), [1.6, 2.8]);
        let (out, clipped) = clip_update(&model(&[4.0, 6.0]), &model(&[1.0, 2.0]), 10.0);
        assert!(!clipped);
        assert_eq!(values(&out), [4.0, 6.0]);
    }

    #[test]
    fn noise_is_seeded_and_has_the_asked_spread() {
        let mut a = ArrayRecord::new();
        a.insert("w", Array::from_slice(&vec![0f64; 100_000]));
        let mut b = a.clone();
        add_gaussian_noise(&mut a, 0.5, &mut DpConfig::rng(7, 1));
        add_gaussian_noise(&mut b, 0.5, &mut DpConfig::rng(7, 1));
        assert_eq!(a, b);
        let v = a.0["w"].values::<f64>().unwrap();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((std - 0.5).abs() < 0.01, "{std}");
        let mut c = ArrayRecord::new();
        c.insert("w", Array::from_slice(&[0f64; 8]));
        add_gaussian_noise(&mut c, 0.5, &mut DpConfig::rng(8, 1));
        assert_ne!(c.0["w"].values::<f64>().unwrap()[..], v[..8]);
    }

    #[test]
    fn the_adaptive_norm_moves_by_flowers_rule() {
        let dp = DpConfig::server_adaptive(0.0, 10);
        let mut m = model(&[0.0]);
        let mut rng = DpConfig::rng(1, 1);
        // Flower's rule, norm * exp(-lr * (clipped share - target)): 0 of 10 clipped grows
        // the norm by exp(0.1), 10 of 10 shrinks it by exp(-0.1).
        let up = dp.finish_round(1.0, 0, 10, &mut m, &mut rng);
        assert!((up - (0.1f64).exp()).abs() < 1e-15);
        let down = dp.finish_round(1.0, 10, 10, &mut m, &mut rng);
        assert!((down - (-0.1f64).exp()).abs() < 1e-15);
        assert_eq!(values(&m), [0.0], "no noise at noise_multiplier 0");
    }

    #[test]
    fn adaptive_noise_takes_flowers_effective_multiplier() {
        let mut dp = DpConfig::server_adaptive(0.4, 5);
        if let Clipping::Adaptive {
            clipped_count_stddev,
            ..
        } = &mut dp.clipping
        {
            *clipped_count_stddev = Some(1.0);
        }
        let (stddev, effective) = dp.adaptive_noise();
        assert_eq!(stddev, 1.0);
        assert!((effective - 0.408_248_290_463_863_1).abs() < 1e-15);
        // The default stddev (5 / 20) is too small for 0.6: Flower refuses it too.
        assert!(DpConfig::server_adaptive(0.4, 5).validate().is_ok());
        let e = DpConfig::server_adaptive(0.6, 5).validate().unwrap_err();
        assert_eq!(e.0, "clipped_count_stddev");
    }

    #[test]
    fn local_dp_refuses_bad_parameters_by_name() {
        let e = LocalDpMod::new(1.0, 0.1, 0.0, 1e-5, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("epsilon"), "{e}");
        let m = LocalDpMod::new(0.5, 0.01, 5.0, 1e-5, 0).unwrap();
        assert!((m.noise_std() - 0.009_689_610_525_210_779).abs() < 1e-15);
    }
}
