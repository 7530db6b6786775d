//! The model: a multi-layer perceptron 64 -> 32 (ReLU) -> 10 (softmax), trained with
//! mini-batch SGD on the cross-entropy loss, in plain `ndarray`.
//!
//! Its parameters travel as four float32 arrays named and laid out as PyTorch's
//! `nn.Linear` would (`fc1.weight` is `[out, in]`), in this order: `fc1.weight`,
//! `fc1.bias`, `fc2.weight`, `fc2.bias`.

use crate::data::{NUM_CLASSES, NUM_FEATURES};
use floret_core::{Array, ArrayError, ArrayRecord, RecordError};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use thiserror::Error;

/// Units of the hidden layer.
pub const HIDDEN: usize = 32;

/// The parameter names, in the order they are sent.
pub const KEYS: [&str; 4] = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"];

/// Parameters that do not fit this model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A record was missing or of another kind.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A parameter is not a readable float32 array.
    #[error("parameter {key:?}: {source}")]
    Array {
        /// The parameter's name.
        key: String,
        /// Why it could not be read.
        source: ArrayError,
    },
    /// A parameter has another shape than the model's layer.
    #[error("parameter {key:?} has shape {found:?}, but this model needs {expected:?}")]
    Shape {
        /// The parameter's name.
        key: String,
        /// The shape received.
        found: Vec<i32>,
        /// The shape the layer has.
        expected: Vec<usize>,
    },
    /// The record does not hold exactly the model's parameters, in order.
    #[error("the model has parameters {expected:?}, but the record holds {found:?}")]
    Keys {
        /// `KEYS`.
        expected: Vec<&'static str>,
        /// The names in the record, in its order.
        found: Vec<String>,
    },
    /// A parameter holds a NaN or an infinity, which training would only spread.
    #[error("parameter {key:?} holds a value that is not finite")]
    NotFinite {
        /// The parameter's name.
        key: String,
    },
}

/// The multi-layer perceptron's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    /// `[HIDDEN, NUM_FEATURES]`
    pub w1: Array2<f32>,
    /// `[HIDDEN]`
    pub b1: Array1<f32>,
    /// `[NUM_CLASSES, HIDDEN]`
    pub w2: Array2<f32>,
    /// `[NUM_CLASSES]`
    pub b2: Array1<f32>,
}

/// Loss and accuracy of a model on a set of examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Share of examples whose most likely class is the label, in [0, 1].
    pub accuracy: f64,
    /// How many examples the figures are over.
    pub num_examples: usize,
}

impl Mlp {
    /// A seeded initialisation as PyTorch's `nn.Linear` does it: weights and biases uniform
    /// in `+-1/sqrt(fan_in)`.
    pub fn init(seed: u64) -> Mlp {
        let mut rng = SmallRng::seed_from_u64(seed);
        let b_in = 1.0 / (NUM_FEATURES as f32).sqrt();
        let b_hidden = 1.0 / (HIDDEN as f32).sqrt();
        let mut uniform = |bound: f32| rng.random_range(-bound..bound);
        let w1 = Array2::from_shape_simple_fn((HIDDEN, NUM_FEATURES), || uniform(b_in));
        let b1 = Array1::from_shape_simple_fn(HIDDEN, || uniform(b_in));
        let w2 = Array2::from_shape_simple_fn((NUM_CLASSES, HIDDEN), || uniform(b_hidden));
        let b2 = Array1::from_shape_simple_fn(NUM_CLASSES, || uniform(b_hidden));
        Mlp { w1, b1, w2, b2 }
    }

    /// The parameters as an `ArrayRecord` (four float32 arrays, see the module docs).
    pub fn to_arrays(&self) -> ArrayRecord {
        let mut record = ArrayRecord::new();
        record.insert(KEYS[0], Array::from_ndarray(self.w1.view().into_dyn()));
        record.insert(KEYS[1], Array::from_ndarray(self.b1.view().into_dyn()));
        record.insert(KEYS[2], Array::from_ndarray(self.w2.view().into_dyn()));
        record.insert(KEYS[3], Array::from_ndarray(self.b2.view().into_dyn()));
        record
    }

    /// Reads parameters sent as `to_arrays` writes them, checking names, order, dtype,
    /// shapes and that every value is finite.
    pub fn from_arrays(record: &ArrayRecord) -> Result<Mlp, ModelError> {
        let names: Vec<&str> = record.iter().map(|(k, _)| k.as_str()).collect();
        if names != KEYS {
            return Err(ModelError::Keys {
                expected: KEYS.to_vec(),
                found: names.iter().map(|s| s.to_string()).collect(),
            });
        }
        Ok(Mlp {
            w1: matrix(record, KEYS[0], [HIDDEN, NUM_FEATURES])?,
            b1: vector(record, KEYS[1], HIDDEN)?,
            w2: matrix(record, KEYS[2], [NUM_CLASSES, HIDDEN])?,
            b2: vector(record, KEYS[3], NUM_CLASSES)?,
        })
    }

    /// Hidden activations `[n, HIDDEN]` and logits `[n, NUM_CLASSES]` of a batch.
    fn forward(&self, x: ArrayView2<'_, f32>) -> (Array2<f32>, Array2<f32>) {
        let mut hidden = x.dot(&self.w1.t()) + &self.b1;
        hidden.mapv_inplace(|v| v.max(0.0));
        let logits = hidden.dot(&self.w2.t()) + &self.b2;
        (hidden, logits)
    }

    /// Class probabilities `[n, NUM_CLASSES]`.
    pub fn predict_proba(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        let (_, mut logits) = self.forward(x);
        softmax_rows(&mut logits);
        logits
    }

    /// Mean cross-entropy and accuracy on `(x, y)`; zeros for no examples.
    pub fn evaluate(&self, x: ArrayView2<'_, f32>, y: &[u8]) -> Evaluation {
        let n = y.len().min(x.nrows());
        if n == 0 {
            return Evaluation {
                loss: 0.0,
                accuracy: 0.0,
                num_examples: 0,
            };
        }
        let probs = self.predict_proba(x);
        let mut loss = 0f64;
        let mut correct = 0usize;
        for (row, &label) in probs.outer_iter().zip(y) {
            let label = usize::from(label);
            loss -= f64::from(row[label].max(f32::MIN_POSITIVE)).ln();
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &p)| if p > b.1 { (i, p) } else { b },
                )
                .0;
            correct += usize::from(best == label);
        }
        Evaluation {
            loss: loss / n as f64,
            accuracy: correct as f64 / n as f64,
            num_examples: n,
        }
    }

    /// One SGD step on a batch; returns the batch's mean loss before the step.
    pub fn sgd_step(&mut self, x: ArrayView2<'_, f32>, y: &[u8], lr: f32) -> f64 {
        let n = y.len().min(x.nrows());
        if n == 0 {
            return 0.0;
        }
        let (hidden, mut grad) = self.forward(x);
        softmax_rows(&mut grad);
        // d loss / d logits = (softmax - onehot) / n
        let mut loss = 0f64;
        for (mut row, &label) in grad.outer_iter_mut().zip(y) {
            let label = usize::from(label);
            loss -= f64::from(row[label].max(f32::MIN_POSITIVE)).ln();
            row[label] -= 1.0;
        }
        grad /= n as f32;
        let dw2 = grad.t().dot(&hidden);
        let db2 = grad.sum_axis(Axis(0));
        let mut dhidden = grad.dot(&self.w2);
        dhidden.zip_mut_with(&hidden, |d, &h| {
            if h <= 0.0 {
                *d = 0.0;
            }
        });
        let dw1 = dhidden.t().dot(&x);
        let db1 = dhidden.sum_axis(Axis(0));
        self.w1.scaled_add(-lr, &dw1);
        self.b1.scaled_add(-lr, &db1);
        self.w2.scaled_add(-lr, &dw2);
        self.b2.scaled_add(-lr, &db2);
        loss / n as f64
    }

    /// FedProx's proximal term `mu / 2 * ||w - global||^2`, one SGD step of it: every
    /// parameter moves `lr * mu` of the way back toward `global`'s.
    pub fn pull_toward(&mut self, global: &Mlp, lr_mu: f32) {
        let pull = |w: &mut ndarray::ArrayViewMutD<'_, f32>, g: &ndarray::ArrayViewD<'_, f32>| {
            w.zip_mut_with(g, |w, &g| *w -= lr_mu * (*w - g));
        };
        pull(
            &mut self.w1.view_mut().into_dyn(),
            &global.w1.view().into_dyn(),
        );
        pull(
            &mut self.b1.view_mut().into_dyn(),
            &global.b1.view().into_dyn(),
        );
        pull(
            &mut self.w2.view_mut().into_dyn(),
            &global.w2.view().into_dyn(),
        );
        pull(
            &mut self.b2.view_mut().into_dyn(),
            &global.b2.view().into_dyn(),
        );
    }

    /// `epochs` passes of mini-batch SGD over `(x, y)` in a seeded random order; returns
    /// the mean batch loss over all steps (0 without examples).
    pub fn train(
        &mut self,
        x: ArrayView2<'_, f32>,
        y: &[u8],
        epochs: usize,
        batch_size: usize,
        lr: f32,
        seed: u64,
    ) -> f64 {
        self.train_proximal(x, y, epochs, batch_size, lr, seed, 0.0)
    }

    /// `train` with FedProx's proximal term of weight `proximal_mu` (0: plain SGD) toward
    /// the model training started from.
    #[allow(clippy::too_many_arguments)]
    pub fn train_proximal(
        &mut self,
        x: ArrayView2<'_, f32>,
        y: &[u8],
        epochs: usize,
        batch_size: usize,
        lr: f32,
        seed: u64,
        proximal_mu: f32,
    ) -> f64 {
        let global = (proximal_mu > 0.0).then(|| self.clone());
        let n = y.len().min(x.nrows());
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..n).collect();
        let mut total = 0f64;
        let mut steps = 0usize;
        for _ in 0..epochs {
            order.shuffle(&mut rng);
            for batch in order.chunks(batch_size.max(1)) {
                let xb = x.select(Axis(0), batch);
                let yb: Vec<u8> = batch.iter().map(|&i| y[i]).collect();
                total += self.sgd_step(xb.view(), &yb, lr);
                if let Some(global) = &global {
                    self.pull_toward(global, lr * proximal_mu);
                }
                steps += 1;
            }
        }
        if steps == 0 {
            0.0
        } else {
            total / steps as f64
        }
    }
}

/// Replaces each row of logits by its softmax, stably.
fn softmax_rows(logits: &mut Array2<f32>) {
    for mut row in logits.outer_iter_mut() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row /= sum;
    }
}

fn checked(record: &ArrayRecord, key: &str, expected: &[usize]) -> Result<Vec<f32>, ModelError> {
    let array = record.get(key)?;
    let shape_ok = array.shape.len() == expected.len()
        && array
            .shape
            .iter()
            .zip(expected)
            .all(|(&d, &e)| usize::try_from(d) == Ok(e));
    if !shape_ok {
        return Err(ModelError::Shape {
            key: key.to_string(),
            found: array.shape.clone(),
            expected: expected.to_vec(),
        });
    }
    let values = array.values::<f32>().map_err(|source| ModelError::Array {
        key: key.to_string(),
        source,
    })?;
    if !values.iter().all(|v| v.is_finite()) {
        return Err(ModelError::NotFinite {
            key: key.to_string(),
        });
    }
    Ok(values.into_owned())
}

fn matrix(record: &ArrayRecord, key: &str, shape: [usize; 2]) -> Result<Array2<f32>, ModelError> {
    let values = checked(record, key, &shape)?;
    // `checked` made sure the length fits the shape.
    Array2::from_shape_vec(shape, values).map_err(|_| ModelError::Shape {
        key: key.to_string(),
        found: record.get(key).map(|a| a.shape.clone()).unwrap_or_default(),
        expected: shape.to_vec(),
    })
}

fn vector(record: &ArrayRecord, key: &str, len: usize) -> Result<Array1<f32>, ModelError> {
    Ok(Array1::from_vec(checked(record, key, &[len])?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{digits, test_split};

    fn batch(n: usize) -> (Array2<f32>, Vec<u8>) {
        let split = test_split(digits().len(), 42);
        digits().gather(&split.pool[..n])
    }

    #[test]
    fn one_sgd_step_lowers_the_loss() {
        let (x, y) = batch(64);
        let mut model = Mlp::init(1);
        let before = model.evaluate(x.view(), &y).loss;
        let reported = model.sgd_step(x.view(), &y, 0.1);
        let after = model.evaluate(x.view(), &y).loss;
        assert!((reported - before).abs() < 1e-5, "{reported} vs {before}");
        assert!(after < before, "loss went from {before} to {after}");
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = batch(8);
        let model = Mlp::init(2);
        let lr = 1e-3f32;
        let mut stepped = model.clone();
        stepped.sgd_step(x.view(), &y, lr);
        // The step moved each parameter by -lr * gradient; compare two of them with a
        // central difference of the loss.
        let loss = |m: &Mlp| m.evaluate(x.view(), &y).loss;
        let eps = 1e-2f32;
        for (r, c) in [(0, 10), (5, 36)] {
            let grad = f64::from((model.w1[[r, c]] - stepped.w1[[r, c]]) / lr);
            let (mut plus, mut minus) = (model.clone(), model.clone());
            plus.w1[[r, c]] += eps;
            minus.w1[[r, c]] -= eps;
            let numeric = (loss(&plus) - loss(&minus)) / (2.0 * f64::from(eps));
            assert!(
                (grad - numeric).abs() < 1e-3 + 0.05 * numeric.abs(),
                "w1[{r},{c}]: {grad} vs {numeric}"
            );
        }
        let grad = f64::from((model.b2[3] - stepped.b2[3]) / lr);
        let (mut plus, mut minus) = (model.clone(), model.clone());
        plus.b2[3] += eps;
        minus.b2[3] -= eps;
        let numeric = (loss(&plus) - loss(&minus)) / (2.0 * f64::from(eps));
        assert!(
            (grad - numeric).abs() < 1e-3 + 0.05 * numeric.abs(),
            "b2[3]: {grad} vs {numeric}"
        );
    }

    #[test]
    fn arrays_round_trip_with_pytorch_names_and_shapes() {
        let model = Mlp::init(3);
        let arrays = model.to_arrays();
        let layout: Vec<(&str, Vec<i32>)> = arrays
            .iter()
            .map(|(k, a)| (k.as_str(), a.shape.clone()))
            .collect();
        assert_eq!(
            layout,
            [
                ("fc1.weight", vec![32, 64]),
                ("fc1.bias", vec![32]),
                ("fc2.weight", vec![10, 32]),
                ("fc2.bias", vec![10]),
            ]
        );
        assert!(arrays.iter().all(|(_, a)| a.dtype.as_str() == "float32"));
        assert_eq!(Mlp::from_arrays(&arrays).unwrap(), model);
        assert_eq!(Mlp::init(3), model);
        assert_ne!(Mlp::init(4), model);
    }

    #[test]
    fn foreign_parameters_are_refused_with_a_reason() {
        let good = Mlp::init(0).to_arrays();
        let replace = |key: &str, array: Array| {
            let mut r = good.clone();
            r.insert(key, array);
            r
        };
        let cases = [
            (replace("fc1.bias", Array::zeros::<f32>(vec![31])), "shape"),
            (
                replace("fc1.bias", Array::zeros::<f64>(vec![32])),
                "float32",
            ),
            (
                replace("fc2.bias", Array::from_slice(&[f32::NAN; 10])),
                "not finite",
            ),
            (replace("extra", Array::zeros::<f32>(vec![1])), "extra"),
            (ArrayRecord::new(), "fc1.weight"),
        ];
        for (record, needle) in cases {
            let err = Mlp::from_arrays(&record).unwrap_err().to_string();
            assert!(err.contains(needle), "expected {needle:?} in: {err}");
        }
    }

    /// FedProx's term pulls toward the model training started from: at `lr * mu = 1` each
    /// step ends back on it, and a small `mu` keeps the model closer than plain SGD does.
    #[test]
    fn the_proximal_term_holds_training_near_the_global_model() {
        let split = test_split(digits().len(), 42);
        let (x, y) = digits().gather(&split.pool[..200]);
        let global = Mlp::init(7);
        let distance = |m: &Mlp| (&m.w1 - &global.w1).mapv(|d| d * d).sum();
        let mut pinned = global.clone();
        pinned.train_proximal(x.view(), &y, 2, 16, 0.1, 3, 10.0);
        assert_eq!(pinned, global);
        let mut free = global.clone();
        free.train(x.view(), &y, 2, 16, 0.1, 3);
        let mut held = global.clone();
        held.train_proximal(x.view(), &y, 2, 16, 0.1, 3, 1.0);
        assert!(
            distance(&held) < distance(&free),
            "{} {}",
            distance(&held),
            distance(&free)
        );
        assert!(distance(&held) > 0.0);
    }

    #[test]
    fn central_training_learns_the_digits() {
        let split = test_split(digits().len(), 42);
        let (x, y) = digits().gather(&split.pool);
        let (xt, yt) = digits().gather(&split.test);
        let mut model = Mlp::init(42);
        let chance = model.evaluate(xt.view(), &yt);
        assert!(chance.accuracy < 0.3, "{chance:?}");
        model.train(x.view(), &y, 10, 32, 0.1, 1);
        let trained = model.evaluate(xt.view(), &yt);
        assert!(trained.accuracy > 0.9, "{trained:?}");
        assert!(trained.loss < chance.loss);
        assert_eq!(trained.num_examples, split.test.len());
    }

    #[test]
    fn no_examples_means_no_change() {
        let mut model = Mlp::init(0);
        let before = model.clone();
        let x = Array2::<f32>::zeros((0, NUM_FEATURES));
        assert_eq!(model.train(x.view(), &[], 3, 8, 0.1, 0), 0.0);
        assert_eq!(model, before);
        assert_eq!(model.evaluate(x.view(), &[]).num_examples, 0);
    }
}
