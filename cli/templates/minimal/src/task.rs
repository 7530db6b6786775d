//! The "model" and its "training", with no federated learning in them: a few float32
//! arrays that training nudges by seeded random noise. There is no data; replace this
//! file with your own model and data (see the `ndarray` template for a real one).

use floret_app::floret_core::{AppError, Array, ArrayRecord};

/// Names and shapes of the model's arrays.
const LAYERS: [(&str, [usize; 2]); 2] = [("layer_0", [16, 8]), ("layer_1", [8, 1])];

/// The initial model: small seeded random values.
pub fn initial_arrays(seed: u64) -> ArrayRecord {
    let mut rng = SplitMix64(seed);
    let mut arrays = ArrayRecord::new();
    for (name, [rows, cols]) in LAYERS {
        let values = (0..rows * cols).map(|_| 0.1 * rng.uniform()).collect();
        let shape = vec![rows as i32, cols as i32];
        arrays.insert(name, Array::from_vec(shape, values));
    }
    arrays
}

/// "Trains" a model: adds noise of up to `scale` to every value. Returns the new arrays
/// and the mean size of the change.
pub fn train(arrays: &ArrayRecord, scale: f32, seed: u64) -> Result<(ArrayRecord, f64), AppError> {
    let mut rng = SplitMix64(seed);
    let mut trained = ArrayRecord::new();
    let (mut change, mut count) = (0.0, 0);
    for (name, array) in arrays.iter() {
        let mut values = array.values::<f32>()?.into_owned();
        for v in &mut values {
            let step = scale * rng.uniform();
            *v += step;
            change += f64::from(step.abs());
        }
        count += values.len();
        trained.insert(name.clone(), Array::from_vec(array.shape.clone(), values));
    }
    Ok((trained, change / count.max(1) as f64))
}

/// "Evaluates" a model: the mean absolute value of its parameters.
pub fn evaluate(arrays: &ArrayRecord) -> Result<f64, AppError> {
    let (mut sum, mut count) = (0.0, 0);
    for (_, array) in arrays.iter() {
        let values = array.values::<f32>()?;
        sum += values.iter().map(|v| f64::from(v.abs())).sum::<f64>();
        count += values.len();
    }
    Ok(sum / count.max(1) as f64)
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

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_moves_every_value_a_little() {
        let model = initial_arrays(1);
        let (trained, change) = train(&model, 0.01, 2).unwrap();
        assert!(change > 0.0 && change <= 0.01, "{change}");
        assert_eq!(trained.len(), model.len());
        assert_ne!(trained, model);
        assert!(evaluate(&trained).unwrap() > 0.0);
    }
}
