//! What a Byzantine node sends (`options.chaos.byzantine-mode`): the arrays of its train
//! reply, poisoned. Pure arithmetic on the reply and the model it was trained from; which
//! nodes are Byzantine, and the seed of their noise, is decided in `chaos`.
//!
//! Float32 and float64 arrays are poisoned, computed in f64 and rounded to the array's
//! type; any other array (integers, foreign dtypes, non-raw data) is sent as it is, as are
//! the reply's metric and config records.

use floret_core::seeded::{splitmix_next, unit};
use floret_core::{Array, ArrayRecord, ByzantineMode, DType, Element, Record, RecordDict};
use std::f64::consts::TAU;

/// `content`, a train reply's records, with every float array of its array records
/// poisoned by `mode`. `global` is the instruction's `arrays` record: the model the node
/// was sent, matched by array key; where it has no array of the same key, dtype and shape,
/// the global array counts as zeros (so `sign-flip` negates the local array). `noise_seed`
/// seeds the `gaussian` draws; `scale` is the attack's strength
/// (`options.chaos.byzantine-scale`, or the mode's default).
pub(crate) fn poison(
    mode: ByzantineMode,
    scale: f64,
    content: &RecordDict,
    global: Option<&ArrayRecord>,
    noise_seed: u64,
) -> RecordDict {
    let mut noise = Normal::new(noise_seed);
    content
        .iter()
        .map(|(name, record)| {
            let record = match record {
                Record::Array(arrays) => Record::Array(
                    arrays
                        .iter()
                        .map(|(key, local)| {
                            let global = global.and_then(|g| g.get(key).ok());
                            let attack = Attack { mode, scale };
                            (key.clone(), poison_array(attack, local, global, &mut noise))
                        })
                        .collect(),
                ),
                other => other.clone(),
            };
            (name.clone(), record)
        })
        .collect()
}

/// A mode and its strength.
#[derive(Clone, Copy)]
struct Attack {
    mode: ByzantineMode,
    scale: f64,
}

fn poison_array(
    attack: Attack,
    local: &Array,
    global: Option<&Array>,
    noise: &mut Normal,
) -> Array {
    let poisoned = match local.dtype {
        DType::F32 => poison_values::<f32>(attack, local, global, noise),
        DType::F64 => poison_values::<f64>(attack, local, global, noise),
        _ => None,
    };
    poisoned.unwrap_or_else(|| local.clone())
}

/// A float element type, computed with in f64.
trait Real: Element {
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// The poisoned array, or `None` when `local` cannot be read as `T` (it is then sent as
/// it is).
fn poison_values<T: Real>(
    Attack { mode, scale }: Attack,
    local: &Array,
    global: Option<&Array>,
    noise: &mut Normal,
) -> Option<Array> {
    let local_values = local.values::<T>().ok()?;
    let global_values = global
        .filter(|g| g.shape == local.shape)
        .and_then(|g| g.values::<T>().ok())
        .filter(|g| g.len() == local_values.len());
    let values = local_values
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let l = l.to_f64();
            let g = global_values.as_ref().map_or(0.0, |g| g[i].to_f64());
            T::from_f64(match mode {
                ByzantineMode::SignFlip => g - scale * (l - g),
                ByzantineMode::Gaussian => scale * noise.draw(),
                ByzantineMode::Zeros => 0.0,
                ByzantineMode::Scaled => g + scale * (l - g),
            })
        })
        .collect();
    Some(Array::from_vec(local.shape.clone(), values))
}

/// Standard normal draws (Box-Muller) from a SplitMix64 stream, so the same seed gives the
/// same noise on every run (to the last bit of the platform's `ln`, `sin` and `cos`).
struct Normal {
    state: u64,
    /// The second draw of the last pair.
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Normal {
        Normal {
            state: seed,
            spare: None,
        }
    }

    fn draw(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // In (0, 1], so that the logarithm is finite.
        let u1 = 1.0 - unit(splitmix_next(&mut self.state));
        let u2 = unit(splitmix_next(&mut self.state));
        let r = (-2.0 * u1.ln()).sqrt();
        self.spare = Some(r * (TAU * u2).sin());
        r * (TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::MetricRecord;

    /// A train reply of one float array `local` under "arrays", plus metrics.
    fn reply(local: Array) -> RecordDict {
        let mut metrics = MetricRecord::new();
        metrics.insert("num-examples", 100i64);
        let mut arrays = ArrayRecord::new();
        arrays.insert("w", local);
        RecordDict::new()
            .with("arrays", arrays)
            .with("metrics", metrics)
    }

    fn model(global: Array) -> ArrayRecord {
        let mut arrays = ArrayRecord::new();
        arrays.insert("w", global);
        arrays
    }

    fn poisoned<T: Real + std::fmt::Debug>(
        mode: ByzantineMode,
        local: &[T],
        global: Option<&[T]>,
    ) -> Vec<T> {
        let global = global.map(|g| model(Array::from_slice(g)));
        let out = poison(
            mode,
            mode.default_scale(),
            &reply(Array::from_slice(local)),
            global.as_ref(),
            1,
        );
        let arrays = out.array_record("arrays").unwrap();
        arrays.get("w").unwrap().values::<T>().unwrap().into_owned()
    }

    #[test]
    fn sign_flip_sends_the_negated_update_in_f32_and_f64() {
        let (local, global) = ([1.5f32, -2.0, 0.0], [1.0f32, 1.0, -0.5]);
        assert_eq!(
            poisoned(ByzantineMode::SignFlip, &local, Some(&global)),
            vec![0.5, 4.0, -1.0]
        );
        let (local, global) = ([1.5f64, -2.0, 0.0], [1.0f64, 1.0, -0.5]);
        assert_eq!(
            poisoned(ByzantineMode::SignFlip, &local, Some(&global)),
            vec![0.5, 4.0, -1.0]
        );
    }

    #[test]
    fn without_a_matching_global_array_sign_flip_negates_the_local_one() {
        assert_eq!(
            poisoned(ByzantineMode::SignFlip, &[1.5f32, -2.0], None),
            vec![-1.5, 2.0]
        );
        // A global array of another shape does not match.
        assert_eq!(
            poisoned(
                ByzantineMode::SignFlip,
                &[1.5f64, -2.0],
                Some(&[1.0, 1.0, 1.0])
            ),
            vec![-1.5, 2.0]
        );
    }

    /// `options.chaos.byzantine-scale` sets the strength: sign-flip's and scaled's factor on
    /// the update, gaussian's standard deviation.
    #[test]
    fn the_scale_sets_the_attacks_strength() {
        let arrays = |mode, scale| {
            let out = poison(
                mode,
                scale,
                &reply(Array::from_slice(&[3.0f64])),
                Some(&model(Array::from_slice(&[1.0f64]))),
                1,
            );
            out.array_record("arrays")
                .unwrap()
                .get("w")
                .unwrap()
                .values::<f64>()
                .unwrap()[0]
        };
        // Update 2: flipped four times longer is 1 - 8; boosted three times is 1 + 6.
        assert_eq!(arrays(ByzantineMode::SignFlip, 4.0), -7.0);
        assert_eq!(arrays(ByzantineMode::Scaled, 3.0), 7.0);
        assert_eq!(
            arrays(ByzantineMode::Gaussian, 2.0),
            2.0 * arrays(ByzantineMode::Gaussian, 1.0)
        );
    }

    #[test]
    fn scaled_boosts_the_update_tenfold_and_zeros_sends_zeros() {
        let (local, global) = ([1.5f32, -2.0], [1.0f32, 1.0]);
        assert_eq!(
            poisoned(ByzantineMode::Scaled, &local, Some(&global)),
            vec![6.0, -29.0]
        );
        let (local, global) = ([1.5f64, -2.0], [1.0f64, 1.0]);
        assert_eq!(
            poisoned(ByzantineMode::Scaled, &local, Some(&global)),
            vec![6.0, -29.0]
        );
        assert_eq!(
            poisoned(ByzantineMode::Zeros, &[1.5f32, -2.0], Some(&[1.0, 1.0])),
            vec![0.0, 0.0]
        );
        assert_eq!(
            poisoned(ByzantineMode::Zeros, &[1.5f64, -2.0], None),
            vec![0.0, 0.0]
        );
    }

    #[test]
    fn gaussian_noise_is_seeded_standard_normal() {
        let local = vec![3.0f64; 20_000];
        let a = poisoned(ByzantineMode::Gaussian, &local, None);
        assert_eq!(a, poisoned(ByzantineMode::Gaussian, &local, None));
        let n = a.len() as f64;
        let mean = a.iter().sum::<f64>() / n;
        let var = a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        // Standard errors: 0.007 for the mean, 0.01 for the variance.
        assert!(mean.abs() < 0.04, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
        let f32s = poisoned(ByzantineMode::Gaussian, &[3.0f32; 4], None);
        assert!(f32s.iter().all(|x| *x != 3.0 && x.is_finite()), "{f32s:?}");
        let other_seed = poison(
            ByzantineMode::Gaussian,
            1.0,
            &reply(Array::from_slice(&local)),
            None,
            2,
        );
        let other = other_seed.array_record("arrays").unwrap().get("w").unwrap();
        assert_ne!(other.values::<f64>().unwrap().into_owned(), a);
    }

    /// A researcher's seed must keep meaning the same noise.
    #[test]
    fn gaussian_draws_are_pinned() {
        let mut noise = Normal::new(42);
        let pinned = [
            0.882_248_906_222_268_8,
            1.388_473_285_287_707,
            -0.450_849_875_718_860_1,
        ];
        for expected in pinned {
            // `ln`, `sin` and `cos` may differ in the last bit from one libm to another.
            let drawn = noise.draw();
            assert!((drawn - expected).abs() < 1e-12, "{drawn} != {expected}");
        }
    }

    #[test]
    fn integer_arrays_and_metrics_are_sent_as_they_are() {
        for mode in ByzantineMode::ALL {
            let ints = reply(Array::from_slice(&[1i64, -2, 3]));
            let global = model(Array::from_slice(&[0i64, 0, 0]));
            assert_eq!(
                poison(mode, mode.default_scale(), &ints, Some(&global), 1),
                ints,
                "{mode}"
            );
            let bytes = reply(Array::from_slice(&[1u8, 2]));
            assert_eq!(
                poison(mode, mode.default_scale(), &bytes, None, 1),
                bytes,
                "{mode}"
            );
            let out = poison(
                mode,
                mode.default_scale(),
                &reply(Array::from_slice(&[1.5f32])),
                None,
                1,
            );
            assert_eq!(
                out.metric_record("metrics").unwrap(),
                reply(Array::from_slice(&[1.5f32]))
                    .metric_record("metrics")
                    .unwrap()
            );
        }
    }
}
