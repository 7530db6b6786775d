//! The data and the model, with no federated learning in them.
//!
//! The model is Flower's PyTorch quickstart CNN in `burn`: conv -> pool -> conv -> pool ->
//! three linear layers, here with 3x3 convolutions padded to keep the small images' size.
//! It trains with `burn`'s autodiff and Adam, on burn's pure-Rust CPU backend (`flex`), or
//! on a GPU with the `wgpu` feature (see README.md). Its parameters travel as an
//! `ArrayRecord` named and laid out as PyTorch's `state_dict` would hold them
//! (`conv1.weight` `[6, 1, 3, 3]`, `fc1.weight` `[120, 64]` as `[out, in]`, ...), so a
//! model can be compared with, or loaded into, a PyTorch one. The images are in
//! `task/data.rs`. Replace both with your own.

pub mod data;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::relu;
use data::{Images, NUM_CLASSES, Partitioner, Source, SplitMix64, shuffled};
use floret_app::floret_core::{AppError, Array, ArrayRecord, Context, UserConfigValue};
use std::sync::Arc;

/// Channels out of the first and the second convolution, and the widths of the hidden
/// linear layers: those of Flower's PyTorch quickstart.
const CONV1: usize = 6;
const CONV2: usize = 16;
const FC1: usize = 120;
const FC2: usize = 84;
/// Images per forward pass when evaluating.
const EVAL_BATCH: usize = 256;

/// The device the model computes on: burn's `flex` CPU backend, or the GPU `wgpu` finds
/// when the app is built with `--features wgpu`.
pub fn device() -> Device {
    #[cfg(feature = "wgpu")]
    return Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    #[cfg(not(feature = "wgpu"))]
    Device::flex()
}

/// The backend in words, for the log.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "wgpu") {
        "burn's wgpu backend (GPU)"
    } else {
        "burn's flex backend (CPU; build with --features wgpu for a GPU)"
    }
}

/// The CNN. Field names are the parameter names' prefixes (`conv1.weight`, ...).
#[derive(Module, Debug)]
pub struct Net {
    conv1: Conv2d,
    pool: MaxPool2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl Net {
    /// A freshly initialised network for `side` x `side` images (`side` divisible by 4),
    /// the same for the same `seed`.
    pub fn new(side: usize, seed: u64, device: &Device) -> Net {
        device.seed(seed);
        let conv = |channels| {
            Conv2dConfig::new(channels, [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Net {
            conv1: conv([1, CONV1]),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            conv2: conv([CONV1, CONV2]),
            fc1: LinearConfig::new(flat_features(side), FC1).init(device),
            fc2: LinearConfig::new(FC1, FC2).init(device),
            fc3: LinearConfig::new(FC2, NUM_CLASSES).init(device),
        }
    }

    /// Digit scores (logits) `[batch, 10]` of images `[batch, 1, side, side]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv1.forward(images)));
        let x = self.pool.forward(relu(self.conv2.forward(x)));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(self.fc1.forward(x));
        let x = relu(self.fc2.forward(x));
        self.fc3.forward(x)
    }

    /// The image side this network takes, from the width of `fc1`.
    pub fn side(&self) -> usize {
        let [flat, _] = self.fc1.weight.val().dims();
        side_of(flat).unwrap_or(0)
    }

    /// The parameters under PyTorch's `state_dict` names and layouts. burn keeps a linear
    /// layer's weight as `[in, out]`; PyTorch (and so this record) as `[out, in]`.
    pub fn to_arrays(&self) -> ArrayRecord {
        let mut arrays = ArrayRecord::new();
        let mut conv = |name: &str, layer: &Conv2d| {
            arrays.insert(format!("{name}.weight"), array_of(layer.weight.val()));
            if let Some(bias) = &layer.bias {
                arrays.insert(format!("{name}.bias"), array_of(bias.val()));
            }
        };
        conv("conv1", &self.conv1);
        conv("conv2", &self.conv2);
        for (name, layer) in [("fc1", &self.fc1), ("fc2", &self.fc2), ("fc3", &self.fc3)] {
            arrays.insert(
                format!("{name}.weight"),
                array_of(layer.weight.val().transpose()),
            );
            if let Some(bias) = &layer.bias {
                arrays.insert(format!("{name}.bias"), array_of(bias.val()));
            }
        }
        arrays
    }

    /// Reads parameters as `to_arrays` writes them onto `device`, checking every name and
    /// shape.
    pub fn from_arrays(arrays: &ArrayRecord, device: &Device) -> Result<Net, AppError> {
        let fc1_in = arrays
            .get("fc1.weight")?
            .shape
            .get(1)
            .map_or(0, |&d| d.max(0) as usize);
        let side = side_of(fc1_in).ok_or_else(|| {
            AppError::other(format!(
                "fc1.weight takes {fc1_in} inputs; a {CONV2}-channel image of a side divisible by 4 flattens to {CONV2} * (side / 4)^2"
            ))
        })?;
        let conv = |name: &str, shape: [usize; 4]| -> Result<Conv2d, AppError> {
            let mut layer = Conv2dConfig::new([shape[1], shape[0]], [shape[2], shape[3]])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device);
            layer.weight =
                Param::from_tensor(tensor_of(arrays, &format!("{name}.weight"), shape, device)?);
            layer.bias = Some(Param::from_tensor(tensor_of(
                arrays,
                &format!("{name}.bias"),
                [shape[0]],
                device,
            )?));
            Ok(layer)
        };
        let linear = |name: &str, inputs: usize, outputs: usize| -> Result<Linear, AppError> {
            let weight: Tensor<2> =
                tensor_of(arrays, &format!("{name}.weight"), [outputs, inputs], device)?;
            Ok(Linear {
                weight: Param::from_tensor(weight.transpose()),
                bias: Some(Param::from_tensor(tensor_of(
                    arrays,
                    &format!("{name}.bias"),
                    [outputs],
                    device,
                )?)),
            })
        };
        Ok(Net {
            conv1: conv("conv1", [CONV1, 1, 3, 3])?,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            conv2: conv("conv2", [CONV2, CONV1, 3, 3])?,
            fc1: linear("fc1", flat_features(side), FC1)?,
            fc2: linear("fc2", FC1, FC2)?,
            fc3: linear("fc3", FC2, NUM_CLASSES)?,
        })
    }
}

/// Features into `fc1`: `CONV2` channels of `side / 4` squared after two 2x2 poolings.
fn flat_features(side: usize) -> usize {
    CONV2 * (side / 4) * (side / 4)
}

/// The image side that flattens to `flat` features, if one does.
fn side_of(flat: usize) -> Option<usize> {
    let quarter = ((flat / CONV2) as f64).sqrt().round() as usize;
    (quarter > 0 && flat_features(4 * quarter) == flat).then_some(4 * quarter)
}

/// A tensor as a float32 array of its shape.
fn array_of<const D: usize>(tensor: Tensor<D>) -> Array {
    let shape = tensor.dims().iter().map(|&d| d as i32).collect();
    // `into_data_as::<f32>` converts to f32 first, so reading f32 back cannot fail.
    let values = tensor
        .into_data_as::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default();
    Array::from_vec(shape, values)
}

/// The array `name` as a tensor of `shape` on `device`.
fn tensor_of<const D: usize>(
    arrays: &ArrayRecord,
    name: &str,
    shape: [usize; D],
    device: &Device,
) -> Result<Tensor<D>, AppError> {
    let array = arrays.get(name)?;
    let found: Vec<usize> = array.shape.iter().map(|&d| d.max(0) as usize).collect();
    if found != shape {
        return Err(AppError::other(format!(
            "{name} has shape {found:?}, but the model needs {shape:?}"
        )));
    }
    let values = array.values::<f32>()?.into_owned();
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// How a node trains: from the server's config record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Training {
    /// Passes over the node's images.
    pub epochs: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Images per step.
    pub batch_size: usize,
    /// Seeds the order of the images.
    pub seed: u64,
}

/// Loss and accuracy of a model on some images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Share of images whose highest-scored digit is right.
    pub accuracy: f64,
}

/// `images` (a batch of `indices`) as the model's input `[n, 1, side, side]` and the digits
/// as class indices `[n]`.
fn batch(images: &Images, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let selected = images.select(indices);
    let n = selected.len();
    let x = Tensor::from_data(
        TensorData::new(selected.pixels, [n, 1, images.side, images.side]),
        device,
    );
    let labels: Vec<i64> = selected.labels.iter().map(|&l| i64::from(l)).collect();
    let y = Tensor::from_data(TensorData::new(labels, [n]), device);
    (x, y)
}

/// Checks that the model and the images agree on the image size.
fn check_side(net: &Net, images: &Images) -> Result<(), AppError> {
    if net.side() == images.side {
        return Ok(());
    }
    Err(AppError::Config(format!(
        "the global model takes {0}x{0} images but this node's are {1}x{1}: set the same data-dir in the run config (the server's) as on the nodes",
        net.side(),
        images.side
    )))
}

/// Trains the model received as `arrays` on `images` with Adam, mini-batches in a seeded
/// order; returns the trained parameters and the mean training loss.
pub fn train(
    arrays: &ArrayRecord,
    images: &Images,
    training: Training,
) -> Result<(ArrayRecord, f64), AppError> {
    let device = device().autodiff();
    let mut net = Net::from_arrays(arrays, &device)?;
    check_side(&net, images)?;
    let mut optimizer = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = SplitMix64(training.seed);
    let (mut total, mut seen) = (0.0, 0);
    for _ in 0..training.epochs {
        for indices in shuffled(images.len(), rng.next()).chunks(training.batch_size.max(1)) {
            let (x, y) = batch(images, indices, &device);
            let loss = loss_fn.forward(net.forward(x), y);
            total += f64::from(loss.clone().into_scalar::<f32>()) * indices.len() as f64;
            seen += indices.len();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optimizer.step(training.lr, net, grads);
        }
    }
    let loss = if seen == 0 { 0.0 } else { total / seen as f64 };
    Ok((net.valid().to_arrays(), loss))
}

/// Scores the model received as `arrays` on `images`.
pub fn evaluate(arrays: &ArrayRecord, images: &Images) -> Result<Evaluation, AppError> {
    let device = device();
    let net = Net::from_arrays(arrays, &device)?;
    check_side(&net, images)?;
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (mut loss, mut correct) = (0.0, 0i64);
    let all: Vec<usize> = (0..images.len()).collect();
    for indices in all.chunks(EVAL_BATCH) {
        let (x, y) = batch(images, indices, &device);
        let scores = net.forward(x);
        let batch_loss = loss_fn.forward(scores.clone(), y.clone());
        loss += f64::from(batch_loss.into_scalar::<f32>()) * indices.len() as f64;
        let predicted: Tensor<1, Int> = scores.argmax(1).flatten(0, 1);
        correct += predicted.equal(y).int().sum().into_scalar::<i64>();
    }
    let n = images.len().max(1) as f64;
    Ok(Evaluation {
        loss: loss / n,
        accuracy: correct as f64 / n,
    })
}

/// `data-dir`: the node config's (a SuperNode's own copy) before the run config's.
fn data_source(context: &Context) -> Result<Source, AppError> {
    match context.node_config.get("data-dir") {
        Some(UserConfigValue::Str(dir)) => Ok(Source::from_data_dir(dir)),
        Some(_) => Err(AppError::Config(
            "node config data-dir must be a string (a directory)".to_owned(),
        )),
        None => Ok(Source::from_data_dir(context.run_config_str("data-dir")?)),
    }
}

/// The server's test images, from the run config's `data-dir`.
pub fn test_images(context: &Context) -> Result<Arc<Images>, AppError> {
    Source::from_data_dir(context.run_config_str("data-dir")?).test_set()
}

/// How the run config cuts the pool.
pub fn partitioner(context: &Context) -> Result<Partitioner, AppError> {
    Partitioner::from_config(
        context.run_config_str("partitioner")?,
        context.run_config_f64("alpha")?,
    )
}

/// The images of the node `context` describes: partition `partition-id` of
/// `num-partitions` (a simulation sets both; a SuperNode gets them from
/// `--node-config "partition-id=0 num-partitions=2"`), or the whole pool without them.
pub fn node_images(context: &Context) -> Result<Images, AppError> {
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
    let pool = data_source(context)?.pool()?;
    let seed = context.run_config_i64("seed")? as u64;
    // 0 <= id < num, both from an i64.
    let indices = data::partition(
        &pool.labels,
        partitioner(context)?,
        id as usize,
        num as usize,
        seed,
    );
    Ok(pool.select(&indices))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(n: usize) -> Images {
        Source::Digits
            .pool()
            .unwrap()
            .select(&(0..n).collect::<Vec<_>>())
    }

    #[test]
    fn parameters_have_pytorchs_names_and_shapes() {
        let arrays = Net::new(8, 1, &device()).to_arrays();
        let shapes: Vec<(String, Vec<i32>)> = arrays
            .iter()
            .map(|(name, array)| (name.clone(), array.shape.clone()))
            .collect();
        let expected = [
            ("conv1.weight", vec![6, 1, 3, 3]),
            ("conv1.bias", vec![6]),
            ("conv2.weight", vec![16, 6, 3, 3]),
            ("conv2.bias", vec![16]),
            ("fc1.weight", vec![120, 64]),
            ("fc1.bias", vec![120]),
            ("fc2.weight", vec![84, 120]),
            ("fc2.bias", vec![84]),
            ("fc3.weight", vec![10, 84]),
            ("fc3.bias", vec![10]),
        ];
        let expected: Vec<(String, Vec<i32>)> = expected
            .into_iter()
            .map(|(name, shape)| (name.to_owned(), shape))
            .collect();
        assert_eq!(shapes, expected);
        assert_eq!(
            Net::new(28, 1, &device())
                .to_arrays()
                .get("fc1.weight")
                .unwrap()
                .shape,
            [120, 784]
        );
    }

    #[test]
    fn a_model_round_trips_through_its_arrays_with_the_same_outputs() {
        let device = device();
        let net = Net::new(8, 3, &device);
        let back = Net::from_arrays(&net.to_arrays(), &device).unwrap();
        assert_eq!(back.to_arrays(), net.to_arrays());
        let images = digits(16);
        let (x, _) = batch(&images, &(0..16).collect::<Vec<_>>(), &device);
        let (a, b) = (net.forward(x.clone()), back.forward(x));
        let (a, b) = (
            a.into_data().try_to_vec::<f32>().unwrap(),
            b.into_data().try_to_vec::<f32>().unwrap(),
        );
        // Equal up to rounding: burn sums a transposed weight in another order.
        let worst = a
            .iter()
            .zip(&b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(a.len() == 16 * NUM_CLASSES && worst < 1e-5, "{worst}");
        // The linear weights really are transposed to PyTorch's [out, in].
        let fc3 = net
            .fc3
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let arrays = net.to_arrays();
        let record = arrays.get("fc3.weight").unwrap().values::<f32>().unwrap();
        assert_eq!(
            record[1], fc3[NUM_CLASSES],
            "[out 0, in 1] is burn's [in 1, out 0]"
        );
    }

    #[test]
    fn wrong_arrays_are_refused_by_name() {
        let device = device();
        let mut arrays = Net::new(8, 3, &device).to_arrays();
        arrays.insert("fc2.weight", Array::zeros::<f32>(vec![84, 7]));
        let e = Net::from_arrays(&arrays, &device).unwrap_err().to_string();
        assert!(e.contains("fc2.weight has shape [84, 7]"), "{e}");
        let mut arrays = Net::new(8, 3, &device).to_arrays();
        arrays.insert("fc1.weight", Array::zeros::<f32>(vec![120, 65]));
        assert!(Net::from_arrays(&arrays, &device).is_err());
        let e = check_side(&Net::new(28, 1, &device), &digits(4))
            .unwrap_err()
            .to_string();
        assert!(e.contains("28x28 images but this node's are 8x8"), "{e}");
    }

    #[test]
    fn training_learns_the_digits() {
        let test = Source::Digits.test_set().unwrap();
        let initial = Net::new(8, 5, &device()).to_arrays();
        let before = evaluate(&initial, &test).unwrap();
        let training = Training {
            epochs: 3,
            lr: 0.01,
            batch_size: 32,
            seed: 1,
        };
        let (trained, loss) = train(&initial, &Source::Digits.pool().unwrap(), training).unwrap();
        let after = evaluate(&trained, &test).unwrap();
        assert!(
            loss.is_finite() && after.loss < before.loss,
            "{before:?} {after:?}"
        );
        assert!(after.accuracy > 0.85, "{after:?}");
        // The same seed trains the same model.
        let (again, _) = train(&initial, &Source::Digits.pool().unwrap(), training).unwrap();
        assert_eq!(again, trained);
    }
}
