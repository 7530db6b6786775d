//! Streaming weighted average of models: replies are checked against the global model,
//! folded into running sums as they arrive, and dropped; the average is taken once at the end.
//!
//! Precision follows Flower/numpy: float32 arrays are summed in f32, float64 in f64. Integer
//! arrays (int32, int64, uint8; e.g. PyTorch's `num_batches_tracked`) are summed in f64 and
//! the average is rounded to the nearest integer, so they keep their dtype instead of turning
//! into floats as they would in numpy. Other dtypes cannot be averaged: a model holding one
//! is refused before round 1 (`StrategyError::InitialArrays`).

use crate::canonical::Mergeable;
use crate::error::StrategyError;
use crate::kernel;
use crate::reply::Rejection;
use floret_core::{Array, ArrayError, ArrayRecord, DType, Element};
use indexmap::IndexMap;
use std::borrow::Cow;

/// Running `sum(w * x)` and `sum(w)` over the replies folded so far, array by array.
#[derive(Debug)]
pub struct ArrayAccumulator {
    /// One running sum per array of the model, in the model's order.
    slots: IndexMap<String, Slot>,
    total_weight: f64,
    replies: u64,
}

#[derive(Debug)]
struct Slot {
    dtype: DType,
    shape: Vec<i32>,
    sum: Sum,
}

/// Running sum of one array, in the precision it is folded in.
#[derive(Debug)]
enum Sum {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Integer dtypes, summed in f64 and rounded back at the end.
    Int(Vec<f64>),
}

/// A reply's arrays, checked against the model and read as typed slices (borrowed from the
/// message when aligned), ready to fold. Only folds into the accumulator that checked it.
#[derive(Debug)]
pub struct CheckedArrays<'a> {
    /// In the model's order.
    views: Vec<View<'a>>,
}

#[derive(Debug)]
enum View<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
    I32(Cow<'a, [i32]>),
    I64(Cow<'a, [i64]>),
    U8(Cow<'a, [u8]>),
}

impl ArrayAccumulator {
    /// Zeroed sums shaped like `model`; refuses arrays that cannot be averaged.
    pub fn new(model: &ArrayRecord) -> Result<Self, StrategyError> {
        let mut slots = IndexMap::with_capacity(model.len());
        for (key, array) in model.iter() {
            let len = averageable(key, array)?;
            let sum = match array.dtype {
                DType::F32 => Sum::F32(vec![0.0; len]),
                DType::F64 => Sum::F64(vec![0.0; len]),
                _ => Sum::Int(vec![0.0; len]),
            };
            let slot = Slot {
                dtype: array.dtype.clone(),
                shape: array.shape.clone(),
                sum,
            };
            slots.insert(key.clone(), slot);
        }
        Ok(ArrayAccumulator {
            slots,
            total_weight: 0.0,
            replies: 0,
        })
    }

    /// Checks that `arrays` has exactly the model's keys, dtypes and shapes and readable
    /// data, and borrows it for `fold`. Nothing is folded yet, so a reply that fails on its
    /// last array leaves the sums untouched.
    pub fn check<'a>(&self, arrays: &'a ArrayRecord) -> Result<CheckedArrays<'a>, Rejection> {
        if arrays.len() != self.slots.len()
            && let Some((extra, _)) = arrays.iter().find(|(k, _)| !self.slots.contains_key(*k))
        {
            return Err(Rejection::UnexpectedArray(extra.clone()));
        }
        let mut views = Vec::with_capacity(self.slots.len());
        for (key, slot) in &self.slots {
            let array = arrays
                .0
                .get(key)
                .ok_or_else(|| Rejection::MissingArray(key.clone()))?;
            if array.dtype != slot.dtype {
                return Err(Rejection::dtype(key, &slot.dtype, &array.dtype));
            }
            if array.shape != slot.shape {
                return Err(Rejection::ArrayShape {
                    key: key.clone(),
                    expected: slot.shape.clone(),
                    found: array.shape.clone(),
                });
            }
            let unreadable = |source| Rejection::ArrayData {
                key: key.clone(),
                source,
            };
            let v = view(array)
                .map_err(unreadable)?
                .ok_or_else(|| Rejection::dtype(key, &slot.dtype, &array.dtype))?;
            views.push(v);
        }
        Ok(CheckedArrays { views })
    }

    /// Adds `weight * arrays` for each checked reply of `batch`, in order. The result is
    /// bit-identical to folding them one by one; a batch only saves memory traffic.
    pub fn fold(&mut self, batch: &[(CheckedArrays<'_>, f64)]) {
        for (i, slot) in self.slots.values_mut().enumerate() {
            match &mut slot.sum {
                Sum::F32(acc) => {
                    let terms: Vec<(&[f32], f32)> = batch
                        .iter()
                        .filter_map(|(c, w)| match c.views.get(i) {
                            Some(View::F32(x)) => Some((x.as_ref(), *w as f32)),
                            _ => None,
                        })
                        .collect();
                    kernel::fold_batch(acc, &terms);
                }
                Sum::F64(acc) => {
                    let terms: Vec<(&[f64], f64)> = batch
                        .iter()
                        .filter_map(|(c, w)| match c.views.get(i) {
                            Some(View::F64(x)) => Some((x.as_ref(), *w)),
                            _ => None,
                        })
                        .collect();
                    kernel::fold_batch(acc, &terms);
                }
                Sum::Int(acc) => {
                    for (c, w) in batch {
                        match c.views.get(i) {
                            Some(View::I32(x)) => fold_widened(acc, x, *w, f64::from),
                            Some(View::I64(x)) => fold_widened(acc, x, *w, |v| v as f64),
                            Some(View::U8(x)) => fold_widened(acc, x, *w, f64::from),
                            _ => {}
                        }
                    }
                }
            }
        }
        for (_, w) in batch {
            self.total_weight += w;
            self.replies += 1;
        }
    }

    /// Replies folded so far.
    pub fn replies(&self) -> u64 {
        self.replies
    }

    /// Sum of the weights folded so far.
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// The weighted average, as a model with the original keys, order, dtypes and shapes;
    /// `None` when nothing was folded.
    pub fn finish(self) -> Option<ArrayRecord> {
        if self.replies == 0 || self.total_weight <= 0.0 {
            return None;
        }
        let total = self.total_weight;
        Some(
            self.slots
                .into_iter()
                .map(|(key, slot)| (key, slot.average(total)))
                .collect(),
        )
    }
}

impl Mergeable for ArrayAccumulator {
    fn empty_like(&self) -> Self {
        let slots = self
            .slots
            .iter()
            .map(|(key, slot)| (key.clone(), slot.empty_like()))
            .collect();
        ArrayAccumulator {
            slots,
            total_weight: 0.0,
            replies: 0,
        }
    }

    /// Adds `later`'s sums element by element (`acc + 1 * x`, exact in the kernel's
    /// precision), its weight and its reply count.
    fn merge(&mut self, later: Self) {
        for (slot, other) in self.slots.values_mut().zip(later.slots.into_values()) {
            match (&mut slot.sum, other.sum) {
                (Sum::F32(acc), Sum::F32(x)) => kernel::fold_batch(acc, &[(&x[..], 1.0)]),
                (Sum::F64(acc), Sum::F64(x)) => kernel::fold_batch(acc, &[(&x[..], 1.0)]),
                (Sum::Int(acc), Sum::Int(x)) => kernel::fold_batch(acc, &[(&x[..], 1.0)]),
                // Both were made by `empty_like` from one model: the kinds always agree.
                _ => {}
            }
        }
        self.total_weight += later.total_weight;
        self.replies += later.replies;
    }
}

impl Slot {
    fn empty_like(&self) -> Slot {
        let sum = match &self.sum {
            Sum::F32(v) => Sum::F32(vec![0.0; v.len()]),
            Sum::F64(v) => Sum::F64(vec![0.0; v.len()]),
            Sum::Int(v) => Sum::Int(vec![0.0; v.len()]),
        };
        Slot {
            dtype: self.dtype.clone(),
            shape: self.shape.clone(),
            sum,
        }
    }

    fn average(self, total: f64) -> Array {
        let Slot { dtype, shape, sum } = self;
        match sum {
            Sum::F32(mut v) => {
                // Divide in f64: one correctly rounded result per element.
                v.iter_mut()
                    .for_each(|a| *a = (f64::from(*a) / total) as f32);
                Array::from_vec(shape, v)
            }
            Sum::F64(mut v) => {
                v.iter_mut().for_each(|a| *a /= total);
                Array::from_vec(shape, v)
            }
            // Float-to-int `as` saturates, so an out-of-range mean cannot wrap around.
            Sum::Int(v) => match dtype {
                DType::I32 => Array::from_vec(shape, rounded(&v, total, |m| m as i32)),
                DType::U8 => Array::from_vec(shape, rounded(&v, total, |m| m as u8)),
                _ => Array::from_vec(shape, rounded(&v, total, |m| m as i64)),
            },
        }
    }
}

fn rounded<E: Element>(sums: &[f64], total: f64, cast: impl Fn(f64) -> E) -> Vec<E> {
    sums.iter().map(|s| cast((s / total).round())).collect()
}

fn fold_widened<E: Copy>(acc: &mut [f64], x: &[E], w: f64, widen: impl Fn(E) -> f64) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += w * widen(v);
    }
}

/// Checks that every array of `model` can be averaged, without allocating any sums.
pub fn check_model(model: &ArrayRecord) -> Result<(), StrategyError> {
    model
        .iter()
        .try_for_each(|(key, array)| averageable(key, array).map(drop))
}

/// The element count of an array FedAvg can average, or why it cannot.
fn averageable(key: &str, array: &Array) -> Result<usize, StrategyError> {
    let refused = |problem: String| StrategyError::InitialArrays {
        key: key.to_string(),
        problem,
    };
    match view(array) {
        Ok(Some(_)) => array.num_elements().map_err(|e| refused(e.to_string())),
        Ok(None) => Err(refused(format!(
            "FedAvg averages float32, float64, int32, int64 and uint8 arrays, not {}",
            array.dtype.as_str()
        ))),
        Err(e) => Err(refused(e.to_string())),
    }
}

/// The array's data as a typed slice; `Ok(None)` for a dtype FedAvg does not average.
fn view(array: &Array) -> Result<Option<View<'_>>, ArrayError> {
    Ok(Some(match array.dtype {
        DType::F32 => View::F32(array.values()?),
        DType::F64 => View::F64(array.values()?),
        DType::I32 => View::I32(array.values()?),
        DType::I64 => View::I64(array.values()?),
        DType::U8 => View::U8(array.values()?),
        DType::Other(_) => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(arrays: Vec<(&str, Array)>) -> ArrayRecord {
        arrays
            .into_iter()
            .map(|(k, a)| (k.to_string(), a))
            .collect()
    }

    fn average(model: &ArrayRecord, replies: &[(ArrayRecord, f64)]) -> ArrayRecord {
        let mut acc = ArrayAccumulator::new(model).unwrap();
        for (r, w) in replies {
            let checked = acc.check(r).unwrap();
            acc.fold(&[(checked, *w)]);
        }
        acc.finish().unwrap()
    }

    #[test]
    fn weighted_average_of_two_f32_replies() {
        let model = record(vec![("w", Array::from_slice(&[0.0f32, 0.0]))]);
        let a = record(vec![("w", Array::from_slice(&[1.0f32, 2.0]))]);
        let b = record(vec![("w", Array::from_slice(&[3.0f32, 4.0]))]);
        let out = average(&model, &[(a, 1.0), (b, 3.0)]);
        assert_eq!(
            out.get("w").unwrap().values::<f32>().unwrap().as_ref(),
            &[2.5, 3.5]
        );
    }

    #[test]
    fn f64_and_integer_arrays_keep_dtype_and_shape() {
        let model = record(vec![
            ("w", Array::from_vec(vec![1, 2], vec![0.0f64; 2])),
            ("steps", Array::from_slice(&[0i64])),
            ("mask", Array::from_slice(&[0u8, 0])),
        ]);
        let a = record(vec![
            ("w", Array::from_vec(vec![1, 2], vec![1.0f64, 0.1])),
            ("steps", Array::from_slice(&[10i64])),
            ("mask", Array::from_slice(&[0u8, 255])),
        ]);
        let b = record(vec![
            ("w", Array::from_vec(vec![1, 2], vec![2.0f64, 0.2])),
            ("steps", Array::from_slice(&[13i64])),
            ("mask", Array::from_slice(&[1u8, 255])),
        ]);
        let out = average(&model, &[(a, 1.0), (b, 1.0)]);
        let w = out.get("w").unwrap();
        assert_eq!(w.shape, vec![1, 2]);
        assert_eq!(
            w.values::<f64>().unwrap().as_ref(),
            &[1.5, (0.1 + 0.2) / 2.0]
        );
        assert_eq!(
            out.get("steps").unwrap().values::<i64>().unwrap().as_ref(),
            &[12]
        );
        assert_eq!(
            out.get("mask").unwrap().values::<u8>().unwrap().as_ref(),
            &[1, 255]
        );
        let keys: Vec<&String> = out.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["w", "steps", "mask"]);
    }

    #[test]
    fn one_batch_equals_folding_one_by_one() {
        let model = record(vec![("w", Array::from_slice(&[0.0f32; 5]))]);
        let replies: Vec<ArrayRecord> = (0..6)
            .map(|i| {
                record(vec![(
                    "w",
                    Array::from_slice(&[0.1f32 * i as f32 + 0.37; 5]),
                )])
            })
            .collect();
        let weights = [3.0, 1.0, 7.0, 2.0, 5.0, 11.0];
        let pairs: Vec<(ArrayRecord, f64)> = replies.iter().cloned().zip(weights).collect();
        let one_by_one = average(&model, &pairs);
        let mut acc = ArrayAccumulator::new(&model).unwrap();
        let batch: Vec<_> = replies
            .iter()
            .zip(weights)
            .map(|(r, w)| (acc.check(r).unwrap(), w))
            .collect();
        acc.fold(&batch);
        drop(batch);
        assert_eq!(acc.finish().unwrap(), one_by_one);
    }

    #[test]
    fn mismatched_replies_are_rejected_with_the_array_named() {
        let model = record(vec![("w", Array::from_slice(&[0.0f32, 0.0]))]);
        let acc = ArrayAccumulator::new(&model).unwrap();
        let cases = [
            (record(vec![]), "missing"),
            (
                record(vec![("v", Array::from_slice(&[0.0f32, 0.0]))]),
                "\"w\" of the model is missing",
            ),
            (
                record(vec![("w", Array::from_slice(&[0.0f64, 0.0]))]),
                "dtype float64",
            ),
            (
                record(vec![("w", Array::from_slice(&[0.0f32; 3]))]),
                "shape [3]",
            ),
            (
                record(vec![
                    ("w", Array::from_slice(&[0.0f32, 0.0])),
                    ("extra", Array::from_slice(&[0.0f32])),
                ]),
                "\"extra\"",
            ),
        ];
        for (reply, expect) in cases {
            let err = acc.check(&reply).unwrap_err().to_string();
            assert!(err.contains(expect), "{err:?} lacks {expect:?}");
        }
        let mut truncated = Array::from_slice(&[0.0f32, 0.0]);
        truncated.data = truncated.data.slice(0..5);
        let err = acc.check(&record(vec![("w", truncated)])).unwrap_err();
        assert!(matches!(err, Rejection::ArrayData { .. }), "{err}");
    }

    #[test]
    fn unsupported_dtype_in_the_model_is_refused_up_front() {
        let mut a = Array::from_slice(&[0u8, 0]);
        a.dtype = DType::Other("bfloat16".into());
        let err = ArrayAccumulator::new(&record(vec![("w", a)])).unwrap_err();
        assert!(err.to_string().contains("not bfloat16"), "{err}");
    }

    #[test]
    fn merging_partials_adds_sums_weights_and_counts() {
        let model = record(vec![
            ("w", Array::from_slice(&[0.0f32, 0.0])),
            ("steps", Array::from_slice(&[0i64])),
        ]);
        let reply = |w: f32, steps: i64| {
            record(vec![
                ("w", Array::from_slice(&[w, -w])),
                ("steps", Array::from_slice(&[steps])),
            ])
        };
        let (a, b, c) = (reply(1.0, 10), reply(2.0, 20), reply(4.0, 40));
        let mut first = ArrayAccumulator::new(&model).unwrap();
        let checked = first.check(&a).unwrap();
        first.fold(&[(checked, 1.0)]);
        let mut second = first.empty_like();
        assert_eq!(second.replies(), 0);
        let batch = vec![
            (second.check(&b).unwrap(), 1.0),
            (second.check(&c).unwrap(), 2.0),
        ];
        second.fold(&batch);
        drop(batch);
        first.merge(second);
        assert_eq!((first.replies(), first.total_weight()), (3, 4.0));
        let out = first.finish().unwrap();
        assert_eq!(
            out.get("w").unwrap().values::<f32>().unwrap().as_ref(),
            &[11.0 / 4.0, -11.0 / 4.0]
        );
        assert_eq!(
            out.get("steps").unwrap().values::<i64>().unwrap().as_ref(),
            &[28]
        );
    }

    #[test]
    fn nothing_folded_gives_no_model() {
        let model = record(vec![("w", Array::from_slice(&[1.0f32]))]);
        assert!(ArrayAccumulator::new(&model).unwrap().finish().is_none());
    }
}
