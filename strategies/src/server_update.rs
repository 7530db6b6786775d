//! What the server does with a round's weighted average: the part in which FedAvg's family
//! differs. FedAvg and FedProx take the average as the new model; FedAvgM moves along a
//! momentum of the pseudo-gradient; FedAdagrad, FedAdam and FedYogi (Flower's `FedOpt`
//! family, Reddi et al. 2021) take an adaptive step along the first moment of
//! `average - model`. All of them aggregate by the same weighted sum, so they share
//! FedAvg's streaming, canonically ordered fold (`canonical`); only this last step and its
//! state are theirs.
//!
//! The formulas are Flower 1.42's (`flwr/serverapp/strategy/fedavgm.py`, `fedopt.py`,
//! `fedadagrad.py`, `fedadam.py`, `fedyogi.py`), including its choices: FedAdam's bias
//! correction uses the exponent `round + 1`, FedAvgM's momentum starts as the first
//! pseudo-gradient, and the moments start at zero. Where Floret differs on purpose:
//! - the step is computed in f64 and the model keeps its dtype (Flower computes a float32
//!   model in float32, and its FedAdam turns it into float64, because `eta_norm` is a NumPy
//!   float64 scalar); the results agree to float32 precision (tests against Flower's own
//!   outputs: `tests/flower_fixtures.rs`);
//! - integer arrays (e.g. `num_batches_tracked`) are stepped in f64 and rounded back, as
//!   FedAvg's average of them is.
//!
//! The state (momentum, moments) is saved in every checkpoint, so a resumed FedAdam run
//! ends with the model the uninterrupted run would have.
//!
//! Pure: no I/O, no clock.

use crate::error::StrategyError;
use crate::values;
use floret_core::{Array, ArrayRecord};
use serde::{Deserialize, Serialize};

/// The server's step from the round's average to the next global model.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerUpdate {
    /// FedAvg, FedProx: the average is the new model.
    Average,
    /// FedAvgM (Hsu et al. 2019): `model - server_learning_rate * momentum`.
    Momentum {
        /// `server_learning_rate` (Flower's default 1.0).
        server_learning_rate: f64,
        /// `server_momentum` (Flower's default 0.0: no momentum).
        server_momentum: f64,
    },
    /// FedAdagrad, FedAdam, FedYogi.
    Adaptive {
        /// Which second-moment rule.
        rule: AdaptiveRule,
        /// Server-side learning rate `eta`.
        eta: f64,
        /// Client-side learning rate `eta_l`: kept for the record, as Flower keeps it; it
        /// is not sent to the nodes (Flower does not send it either).
        eta_l: f64,
        /// First-moment decay `beta_1` (0 for FedAdagrad).
        beta_1: f64,
        /// Second-moment decay `beta_2` (unused by FedAdagrad).
        beta_2: f64,
        /// Adaptivity `tau`, added to the root of the second moment.
        tau: f64,
    },
}

/// The second-moment rule of an adaptive update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdaptiveRule {
    /// `v += delta^2`.
    Adagrad,
    /// `v = beta_2 v + (1 - beta_2) delta^2`, with bias correction of the step.
    Adam,
    /// `v -= (1 - beta_2) delta^2 sign(v - delta^2)`.
    Yogi,
}

/// The server's optimiser state between rounds, array by array in the model's order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServerState {
    /// FedAvgM's momentum vector, or FedOpt's first moment `m_t`; empty before the first
    /// update.
    pub first: Vec<Vec<f64>>,
    /// FedOpt's second moment `v_t`; empty before the first update.
    pub second: Vec<Vec<f64>>,
    /// Differential privacy's adaptive clipping norm after the last round; `None` before
    /// the first (see `dp`).
    pub clipping_norm: Option<f64>,
}

impl ServerUpdate {
    /// FedAvgM with Flower's defaults (learning rate 1.0, momentum 0.0).
    pub fn momentum() -> ServerUpdate {
        ServerUpdate::Momentum {
            server_learning_rate: 1.0,
            server_momentum: 0.0,
        }
    }

    /// FedAdagrad with Flower's defaults (eta 0.1, eta_l 0.1, tau 0.001).
    pub fn adagrad() -> ServerUpdate {
        ServerUpdate::Adaptive {
            rule: AdaptiveRule::Adagrad,
            eta: 1e-1,
            eta_l: 1e-1,
            beta_1: 0.0,
            beta_2: 0.0,
            tau: 1e-3,
        }
    }

    /// FedAdam with Flower's defaults (eta 0.1, eta_l 0.1, beta_1 0.9, beta_2 0.99, tau 0.001).
    pub fn adam() -> ServerUpdate {
        ServerUpdate::Adaptive {
            rule: AdaptiveRule::Adam,
            eta: 1e-1,
            eta_l: 1e-1,
            beta_1: 0.9,
            beta_2: 0.99,
            tau: 1e-3,
        }
    }

    /// FedYogi with Flower's defaults (eta 0.01, eta_l 0.0316, beta_1 0.9, beta_2 0.99,
    /// tau 0.001).
    pub fn yogi() -> ServerUpdate {
        ServerUpdate::Adaptive {
            rule: AdaptiveRule::Yogi,
            eta: 1e-2,
            eta_l: 0.0316,
            beta_1: 0.9,
            beta_2: 0.99,
            tau: 1e-3,
        }
    }

    /// Checks the parameters; the error names the first bad one and what to set.
    pub fn validate(&self) -> Result<(), StrategyError> {
        match *self {
            ServerUpdate::Average => Ok(()),
            ServerUpdate::Momentum {
                server_learning_rate,
                server_momentum,
            } => {
                finite("server_learning_rate", server_learning_rate)?;
                if !(0.0..1.0).contains(&server_momentum) {
                    return Err(invalid(
                        "server_momentum",
                        server_momentum,
                        "a momentum in [0, 1), e.g. 0.9 (Flower's default is 0.0)",
                    ));
                }
                Ok(())
            }
            ServerUpdate::Adaptive {
                eta,
                eta_l,
                beta_1,
                beta_2,
                tau,
                ..
            } => {
                finite("eta", eta)?;
                finite("eta_l", eta_l)?;
                for (name, beta) in [("beta_1", beta_1), ("beta_2", beta_2)] {
                    if !(0.0..1.0).contains(&beta) {
                        return Err(invalid(name, beta, "a decay in [0, 1), e.g. 0.9"));
                    }
                }
                if !(tau.is_finite() && tau > 0.0) {
                    return Err(invalid(
                        "tau",
                        tau,
                        "a small positive number, e.g. 0.001 (it keeps the step finite)",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Whether the step is the average itself: FedAvg, or FedAvgM with Flower's defaults
    /// (which Flower then skips: `server_opt` is off).
    fn is_average(&self) -> bool {
        match *self {
            ServerUpdate::Average => true,
            ServerUpdate::Momentum {
                server_learning_rate,
                server_momentum,
            } => server_learning_rate == 1.0 && server_momentum == 0.0,
            ServerUpdate::Adaptive { .. } => false,
        }
    }

    /// The strategy's name as Flower spells its class.
    pub fn name(&self) -> &'static str {
        match self {
            ServerUpdate::Average => "FedAvg",
            ServerUpdate::Momentum { .. } => "FedAvgM",
            ServerUpdate::Adaptive { rule, .. } => match rule {
                AdaptiveRule::Adagrad => "FedAdagrad",
                AdaptiveRule::Adam => "FedAdam",
                AdaptiveRule::Yogi => "FedYogi",
            },
        }
    }

    /// The name of the strategy this update makes with FedProx's `proximal_mu` (when set):
    /// FedProx is FedAvg's update with a proximal term on the nodes.
    pub fn name_with(&self, proximal_mu: Option<f64>) -> &'static str {
        match (self, proximal_mu) {
            (ServerUpdate::Average, Some(_)) => "FedProx",
            (update, _) => update.name(),
        }
    }

    /// The next global model after `round` (1-based), from the model the round started with
    /// and the round's weighted average of the replies (same keys, dtypes and shapes).
    pub fn apply(
        &self,
        round: u64,
        state: &mut ServerState,
        current: &ArrayRecord,
        average: ArrayRecord,
    ) -> Result<ArrayRecord, StrategyError> {
        if self.is_average() {
            return Ok(average);
        }
        let mut next = ArrayRecord::new();
        let slots = current.len();
        let fresh = state.first.len() != slots;
        if fresh {
            state.first = vec![Vec::new(); slots];
            state.second = vec![Vec::new(); slots];
        }
        for (i, (key, old)) in current.iter().enumerate() {
            let new = average
                .0
                .get(key)
                .ok_or_else(|| mismatch(key, "is missing from the average"))?;
            let x = as_f64(key, old)?;
            let avg = as_f64(key, new)?;
            if x.len() != avg.len() {
                return Err(mismatch(key, "has another size in the average"));
            }
            let stepped = self.step(round, &x, &avg, &mut state.first[i], &mut state.second[i]);
            next.insert(key.clone(), values::from_f64(old, stepped));
        }
        Ok(next)
    }

    /// One array's step; `first`/`second` are its state, empty before the first round.
    fn step(
        &self,
        round: u64,
        x: &[f64],
        avg: &[f64],
        first: &mut Vec<f64>,
        second: &mut Vec<f64>,
    ) -> Vec<f64> {
        match *self {
            ServerUpdate::Average => avg.to_vec(),
            ServerUpdate::Momentum {
                server_learning_rate: lr,
                server_momentum: beta,
            } => {
                // pseudo-gradient = old - new; the momentum starts as the first one.
                let pg = x.iter().zip(avg).map(|(o, n)| o - n);
                if beta > 0.0 {
                    if first.is_empty() {
                        *first = pg.collect();
                    } else {
                        first
                            .iter_mut()
                            .zip(pg)
                            .for_each(|(m, g)| *m = beta * *m + g);
                    }
                    x.iter()
                        .zip(first.iter())
                        .map(|(o, m)| o - lr * m)
                        .collect()
                } else {
                    x.iter().zip(pg).map(|(o, g)| o - lr * g).collect()
                }
            }
            ServerUpdate::Adaptive {
                rule,
                eta,
                beta_1,
                beta_2,
                tau,
                ..
            } => {
                if first.is_empty() {
                    *first = vec![0.0; x.len()];
                    *second = vec![0.0; x.len()];
                }
                let eta = match rule {
                    // Flower's exponent: `server_round + 1.0`.
                    AdaptiveRule::Adam => {
                        let t = round as f64 + 1.0;
                        eta * (1.0 - beta_2.powf(t)).sqrt() / (1.0 - beta_1.powf(t))
                    }
                    AdaptiveRule::Adagrad | AdaptiveRule::Yogi => eta,
                };
                let mut out = Vec::with_capacity(x.len());
                for (j, (&o, &n)) in x.iter().zip(avg).enumerate() {
                    let delta = n - o;
                    let d2 = delta * delta;
                    let m = beta_1 * first[j] + (1.0 - beta_1) * delta;
                    let v = second[j];
                    let v = match rule {
                        AdaptiveRule::Adagrad => v + d2,
                        AdaptiveRule::Adam => beta_2 * v + (1.0 - beta_2) * d2,
                        AdaptiveRule::Yogi => v - (1.0 - beta_2) * d2 * sign(v - d2),
                    };
                    first[j] = m;
                    second[j] = v;
                    out.push(o + eta * m / (v.sqrt() + tau));
                }
                out
            }
        }
    }
}

/// NumPy's `sign`: 0 at 0.
fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn as_f64(key: &str, array: &Array) -> Result<Vec<f64>, StrategyError> {
    values::to_f64(array).ok_or_else(|| {
        mismatch(
            key,
            &format!("has dtype {} or unreadable data", array.dtype.as_str()),
        )
    })
}

fn mismatch(key: &str, what: &str) -> StrategyError {
    StrategyError::InitialArrays {
        key: key.to_string(),
        problem: format!("the server update cannot step it: it {what}"),
    }
}

fn finite(field: &'static str, v: f64) -> Result<(), StrategyError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(invalid(field, v, "a finite number"))
    }
}

fn invalid(field: &'static str, v: f64, fix: &str) -> StrategyError {
    StrategyError::InvalidConfig {
        field,
        value: v.to_string(),
        fix: format!("set {fix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::values::testing::{model, values};
    use floret_core::DType;

    #[test]
    fn fedavg_takes_the_average() {
        let mut s = ServerState::default();
        let next = ServerUpdate::Average
            .apply(1, &mut s, &model(&[1.0]), model(&[3.0]))
            .unwrap();
        assert_eq!(values(&next), [3.0]);
        assert_eq!(s, ServerState::default());
    }

    #[test]
    fn fedavgm_momentum_starts_as_the_first_pseudo_gradient() {
        let u = ServerUpdate::Momentum {
            server_learning_rate: 1.0,
            server_momentum: 0.5,
        };
        let mut s = ServerState::default();
        // Round 1: pg = 1 - 3 = -2, momentum -2, model 1 + 2 = 3.
        let m1 = u.apply(1, &mut s, &model(&[1.0]), model(&[3.0])).unwrap();
        assert_eq!(values(&m1), [3.0]);
        // Round 2: pg = 3 - 4 = -1, momentum 0.5 * -2 - 1 = -2, model 3 + 2 = 5.
        let m2 = u.apply(2, &mut s, &m1, model(&[4.0])).unwrap();
        assert_eq!(values(&m2), [5.0]);
        assert_eq!(s.first, [vec![-2.0]]);
    }

    #[test]
    fn fedavgm_without_momentum_scales_the_step() {
        let u = ServerUpdate::Momentum {
            server_learning_rate: 0.5,
            server_momentum: 0.0,
        };
        let next = u
            .apply(
                1,
                &mut ServerState::default(),
                &model(&[1.0]),
                model(&[3.0]),
            )
            .unwrap();
        assert_eq!(values(&next), [2.0]);
    }

    #[test]
    fn fedadagrad_first_step_moves_by_eta_times_the_sign() {
        // m = delta, v = delta^2: the step is eta * delta / (|delta| + tau).
        let mut s = ServerState::default();
        let next = ServerUpdate::adagrad()
            .apply(1, &mut s, &model(&[1.0, 1.0]), model(&[3.0, 0.0]))
            .unwrap();
        let expect = |d: f64| (1.0 + 0.1 * d / (d.abs() + 1e-3)) as f32;
        assert_eq!(values(&next), [expect(2.0), expect(-1.0)]);
        assert_eq!(s.second, [vec![4.0, 1.0]]);
    }

    #[test]
    fn fedadam_corrects_the_bias_with_the_round_plus_one() {
        let mut s = ServerState::default();
        let next = ServerUpdate::adam()
            .apply(1, &mut s, &model(&[0.0]), model(&[1.0]))
            .unwrap();
        let (m, v) = (0.1, 0.01 * 1.0);
        let eta = 0.1 * (1.0f64 - 0.99f64.powf(2.0)).sqrt() / (1.0 - 0.9f64.powf(2.0));
        assert_eq!(values(&next), [(eta * m / (f64::sqrt(v) + 1e-3)) as f32]);
    }

    #[test]
    fn fedyogi_second_moment_moves_toward_delta_squared() {
        let mut s = ServerState::default();
        ServerUpdate::yogi()
            .apply(1, &mut s, &model(&[0.0]), model(&[2.0]))
            .unwrap();
        // v = 0 - 0.01 * 4 * sign(0 - 4) = 0.04.
        assert!((s.second[0][0] - 0.04).abs() < 1e-15);
    }

    #[test]
    fn integer_arrays_keep_their_dtype() {
        let mut current = ArrayRecord::new();
        current.insert("n", Array::from_slice(&[10i64]));
        let mut avg = ArrayRecord::new();
        avg.insert("n", Array::from_slice(&[14i64]));
        let u = ServerUpdate::Momentum {
            server_learning_rate: 0.5,
            server_momentum: 0.0,
        };
        let next = u
            .apply(1, &mut ServerState::default(), &current, avg)
            .unwrap();
        assert_eq!(next.0["n"].dtype, DType::I64);
        assert_eq!(next.0["n"].values::<i64>().unwrap()[0], 12);
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let e = ServerUpdate::Momentum {
            server_learning_rate: 1.0,
            server_momentum: 1.5,
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("server_momentum"), "{e}");
        let mut adam = ServerUpdate::adam();
        if let ServerUpdate::Adaptive { tau, .. } = &mut adam {
            *tau = 0.0;
        }
        assert!(adam.validate().unwrap_err().to_string().contains("tau"));
    }
}
