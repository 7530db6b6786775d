//! One array's elements as f64 and back: how the strategies that compute in f64 (the
//! server optimisers, the robust aggregators, differential privacy) read a model and store
//! their result in the model's own dtype.

use floret_core::{Array, DType, Element};

/// The elements of `a` as f64, in order; `None` for a dtype the strategies do not average
/// or data that cannot be read.
pub(crate) fn to_f64(a: &Array) -> Option<Vec<f64>> {
    fn read<T: Element>(a: &Array, widen: impl Fn(T) -> f64) -> Option<Vec<f64>> {
        a.values::<T>()
            .ok()
            .map(|v| v.iter().map(|&x| widen(x)).collect())
    }
    match a.dtype {
        DType::F32 => read::<f32>(a, f64::from),
        DType::F64 => read::<f64>(a, |v| v),
        DType::I32 => read::<i32>(a, f64::from),
        DType::I64 => read::<i64>(a, |v| v as f64),
        DType::U8 => read::<u8>(a, f64::from),
        DType::Other(_) => None,
    }
}

/// `values` as an array of `like`'s dtype and shape: floats rounded to their precision,
/// integers to the nearest (saturating, as `as` does).
pub(crate) fn from_f64(like: &Array, values: Vec<f64>) -> Array {
    let shape = like.shape.clone();
    match like.dtype {
        DType::F32 => Array::from_vec(shape, values.iter().map(|&v| v as f32).collect()),
        DType::I32 => Array::from_vec(shape, values.iter().map(|v| v.round() as i32).collect()),
        DType::I64 => Array::from_vec(shape, values.iter().map(|v| v.round() as i64).collect()),
        DType::U8 => Array::from_vec(shape, values.iter().map(|v| v.round() as u8).collect()),
        _ => Array::from_vec(shape, values),
    }
}

/// Test models: one float32 array "w".
#[cfg(test)]
pub(crate) mod testing {
    use floret_core::{Array, ArrayRecord};

    /// A model of one float32 array "w" holding `v`.
    pub(crate) fn model(v: &[f32]) -> ArrayRecord {
        let mut r = ArrayRecord::new();
        r.insert("w", Array::from_slice(v));
        r
    }

    /// The values of `r`'s array "w".
    pub(crate) fn values(r: &ArrayRecord) -> Vec<f32> {
        r.0["w"].values::<f32>().unwrap().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dtype_reads_as_f64_and_comes_back_in_its_own_type() {
        let f = Array::from_slice(&[1.5f32, -2.0]);
        assert_eq!(to_f64(&f), Some(vec![1.5, -2.0]));
        assert_eq!(from_f64(&f, vec![0.1, 2.0]).dtype, DType::F32);
        let i = Array::from_slice(&[3i64, 4]);
        let back = from_f64(&i, vec![2.6, -1.4]);
        assert_eq!(back.values::<i64>().unwrap()[..], [3, -1]);
        let u = Array::from_slice(&[7u8]);
        assert_eq!(from_f64(&u, vec![300.0]).values::<u8>().unwrap()[0], 255);
    }
}
