//! The data and the model, with no federated learning in them.
//!
//! The data is the UCI handwritten digits (`data/digits.txt`: 1797 images of 8x8 pixels,
//! as smartcore ships them), compiled into the binary. A seeded fifth of the images is the
//! server's test set; the rest is split evenly among the nodes, 7 images a node even with
//! 200 nodes. The model is a softmax regression (one linear layer, then softmax) in
//! `ndarray`, trained with mini-batch SGD on the cross-entropy loss. Replace both with your
//! own data and model.

use floret_app::floret_core::{AppError, Array, ArrayRecord, Context};
use ndarray::{Array1, Array2, Axis, Ix1, Ix2};
use std::sync::OnceLock;

/// Pixels per image (8x8).
pub const NUM_FEATURES: usize = 64;
/// The digits 0-9, the model's outputs.
pub const NUM_CLASSES: usize = 10;
/// Seeds the test split and the partitions: the same on the server and on every node.
const SEED: u64 = 42;
/// Share of the images held out for the server's test set.
const TEST_FRACTION: f64 = 0.2;
/// Examples per SGD step.
const BATCH_SIZE: usize = 8;
/// The most ink a pixel holds.
const MAX_INK: u32 = 16;

const DIGITS_TXT: &str = include_str!("../data/digits.txt");

/// Images: pixels scaled to `[0, 1]` `[n, NUM_FEATURES]` and the digits they show.
#[derive(Debug, Clone, PartialEq)]
pub struct Data {
    pub x: Array2<f32>,
    pub y: Vec<usize>,
}

impl Data {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The images at `indices`.
    pub fn select(&self, indices: &[usize]) -> Data {
        Data {
            x: self.x.select(Axis(0), indices),
            y: indices.iter().map(|&i| self.y[i]).collect(),
        }
    }
}

/// All images; read once per process.
pub fn digits() -> Result<&'static Data, AppError> {
    static DIGITS: OnceLock<Result<Data, String>> = OnceLock::new();
    DIGITS
        .get_or_init(|| parse(DIGITS_TXT))
        .as_ref()
        .map_err(|e| AppError::other(format!("data/digits.txt: {e}")))
}

/// Reads `data/digits.txt`: one image a line, its digit, a space, and its 64 pixels row by
/// row, each pixel's ink (0 to 16) as one base-17 digit (`0`-`9`, `a`-`g`).
fn parse(text: &str) -> Result<Data, String> {
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}", number + 1);
        let (digit, pixels) = line
            .split_once(' ')
            .ok_or_else(|| at("expected a digit, a space and 64 pixels"))?;
        let label = digit
            .parse::<usize>()
            .ok()
            .filter(|&d| d < NUM_CLASSES)
            .ok_or_else(|| at(&format!("{digit:?} is not a digit")))?;
        if pixels.chars().count() != NUM_FEATURES {
            return Err(at(&format!("expected {NUM_FEATURES} pixels")));
        }
        for pixel in pixels.chars() {
            let ink = pixel
                .to_digit(MAX_INK + 1)
                .ok_or_else(|| at(&format!("{pixel:?} is not a pixel (0-9, a-g)")))?;
            features.push(ink as f32 / MAX_INK as f32);
        }
        labels.push(label);
    }
    if labels.is_empty() {
        return Err("no images".to_owned());
    }
    let x = Array2::from_shape_vec((labels.len(), NUM_FEATURES), features)
        .map_err(|e| e.to_string())?;
    Ok(Data { x, y: labels })
}

/// `0..n` in a seeded random order.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

/// The server's test images and the pool the nodes' partitions are cut from.
fn split() -> Result<(Vec<usize>, Vec<usize>), AppError> {
    let n = digits()?.len();
    let mut order = shuffled(n, SEED);
    let pool = order.split_off((n as f64 * TEST_FRACTION).round() as usize);
    Ok((order, pool))
}

/// The server's test set.
pub fn test_data() -> Result<Data, AppError> {
    Ok(digits()?.select(&split()?.0))
}

/// The images of the node `context` describes: partition `partition-id` of
/// `num-partitions` (a simulation sets both; a SuperNode gets them from
/// `--node-config "partition-id=0 num-partitions=2"`), or the whole pool without them.
/// Partitions are even and never empty: with more partitions than images (1438), each
/// node gets one image, shared with other nodes.
pub fn node_data(context: &Context) -> Result<Data, AppError> {
    let config = &context.node_config;
    let (id, num) = if config.contains_key("partition-id") || config.contains_key("num-partitions")
    {
        (
            context.node_config_i64("partition-id")?,
            context.node_config_i64("num-partitions")?,
        )
    } else {
        (0, 1)
    };
    if num < 1 || id < 0 || id >= num {
        return Err(AppError::Config(format!(
            "node config needs 0 <= partition-id < num-partitions, but has partition-id={id} num-partitions={num}"
        )));
    }
    let pool = split()?.1;
    // 0 <= id < num, both from an i64.
    Ok(digits()?.select(partition(&pool, id as usize, num as usize)))
}

/// Part `id` of `num` even, contiguous parts of `pool`; part `id % len` of single items
/// when there are more parts than items, so that no part is empty.
fn partition(pool: &[usize], id: usize, num: usize) -> &[usize] {
    if num > pool.len() {
        let at = id % pool.len().max(1);
        return &pool[at..pool.len().min(at + 1)];
    }
    &pool[id * pool.len() / num..(id + 1) * pool.len() / num]
}

/// Softmax regression: `probabilities = softmax(x · weightᵀ + bias)`. Its parameters travel
/// as the float32 arrays `weight` `[10, 64]` and `bias` `[10]`, laid out as PyTorch's
/// `nn.Linear` would.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub weight: Array2<f32>,
    pub bias: Array1<f32>,
}

/// Loss and accuracy of a model on some images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Share of images whose most likely digit is right.
    pub accuracy: f64,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            weight: Array2::zeros((NUM_CLASSES, NUM_FEATURES)),
            bias: Array1::zeros(NUM_CLASSES),
        }
    }
}

impl Model {
    pub fn to_arrays(&self) -> ArrayRecord {
        let mut arrays = ArrayRecord::new();
        arrays.insert("weight", Array::from_ndarray(self.weight.view().into_dyn()));
        arrays.insert("bias", Array::from_ndarray(self.bias.view().into_dyn()));
        arrays
    }

    /// Reads parameters as `to_arrays` writes them, checking their shapes.
    pub fn from_arrays(arrays: &ArrayRecord) -> Result<Model, AppError> {
        let model = Model {
            weight: arrays
                .get("weight")?
                .to_ndarray::<f32>()?
                .into_dimensionality::<Ix2>()
                .map_err(|e| AppError::other(format!("weight: {e}")))?,
            bias: arrays
                .get("bias")?
                .to_ndarray::<f32>()?
                .into_dimensionality::<Ix1>()
                .map_err(|e| AppError::other(format!("bias: {e}")))?,
        };
        let expected = Model::default();
        if model.weight.dim() != expected.weight.dim() || model.bias.dim() != expected.bias.dim() {
            return Err(AppError::other(format!(
                "the model needs weight {:?} and bias {:?}, but got {:?} and {:?}",
                expected.weight.dim(),
                expected.bias.dim(),
                model.weight.dim(),
                model.bias.dim()
            )));
        }
        Ok(model)
    }

    /// Digit probabilities `[n, 10]`.
    fn probabilities(&self, x: &Array2<f32>) -> Array2<f32> {
        let mut p = x.dot(&self.weight.t()) + &self.bias;
        for mut row in p.rows_mut() {
            let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            row.mapv_inplace(|v| (v - max).exp());
            let sum = row.sum();
            row /= sum;
        }
        p
    }

    /// `epochs` passes of mini-batch SGD over `data` in a seeded order; returns the mean
    /// loss of the batches.
    pub fn train(&mut self, data: &Data, epochs: usize, lr: f32, seed: u64) -> f64 {
        let mut rng = SplitMix64(seed);
        let (mut loss, mut steps) = (0.0, 0);
        for _ in 0..epochs {
            for batch in shuffled(data.len(), rng.next()).chunks(BATCH_SIZE) {
                let batch = data.select(batch);
                let mut grad = self.probabilities(&batch.x);
                for (mut row, &label) in grad.rows_mut().into_iter().zip(&batch.y) {
                    loss -= f64::from(row[label].max(f32::MIN_POSITIVE).ln());
                    row[label] -= 1.0;
                }
                grad /= batch.len() as f32;
                self.weight.scaled_add(-lr, &grad.t().dot(&batch.x));
                self.bias.scaled_add(-lr, &grad.sum_axis(Axis(0)));
                steps += batch.len();
            }
        }
        if steps == 0 { 0.0 } else { loss / steps as f64 }
    }

    pub fn evaluate(&self, data: &Data) -> Evaluation {
        if data.is_empty() {
            return Evaluation {
                loss: 0.0,
                accuracy: 0.0,
            };
        }
        let p = self.probabilities(&data.x);
        let (mut loss, mut correct) = (0.0, 0);
        for (row, &label) in p.rows().into_iter().zip(&data.y) {
            loss -= f64::from(row[label].max(f32::MIN_POSITIVE).ln());
            let best = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            correct += usize::from(best == label);
        }
        Evaluation {
            loss: loss / data.len() as f64,
            accuracy: correct as f64 / data.len() as f64,
        }
    }
}

/// SplitMix64: a small seeded random number generator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), up to a negligible bias.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_app::floret_core::UserConfigValue;

    fn node(id: i64, num: i64) -> Context {
        let mut context = Context::default();
        let config = &mut context.node_config;
        config.insert("partition-id".into(), UserConfigValue::Int(id));
        config.insert("num-partitions".into(), UserConfigValue::Int(num));
        context
    }

    #[test]
    fn the_digits_load_and_split_into_partitions_none_empty() {
        assert_eq!(digits().unwrap().len(), 1797);
        assert_eq!(test_data().unwrap().len(), 359);
        for num in [1, 10, 200, 1437] {
            let sizes: Vec<usize> = (0..num)
                .map(|id| node_data(&node(id, num)).unwrap().len())
                .collect();
            assert_eq!(sizes.iter().sum::<usize>(), 1438, "{num} partitions");
            assert!(sizes.iter().all(|&n| n > 0), "{num} partitions: {sizes:?}");
        }
        assert_eq!(node_data(&node(4999, 5000)).unwrap().len(), 1);
        assert!(node_data(&node(2, 2)).is_err());
    }

    #[test]
    fn training_learns_the_digits() {
        let mut model = Model::default();
        let data = node_data(&Context::default()).unwrap();
        let before = model.evaluate(&test_data().unwrap());
        model.train(&data, 5, 0.1, 1);
        let after = model.evaluate(&test_data().unwrap());
        assert!(
            after.loss < before.loss && after.accuracy > 0.9,
            "{after:?}"
        );
        assert_eq!(Model::from_arrays(&model.to_arrays()).unwrap(), model);
    }
}
