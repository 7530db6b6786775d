//! `Array`: one named tensor of a model, as dtype + shape + bytes.
//!
//! The data lives in `bytes::Bytes`, so cloning an array (to broadcast a model to many nodes,
//! or to hand it from the link to an app) is a reference-count bump, never a copy. The layout
//! of `STYPE_RAW` data is C-order, little-endian, with no header.

use bytes::Bytes;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use std::borrow::Cow;
use thiserror::Error;

#[cfg(target_endian = "big")]
compile_error!("floret-core stores array data little-endian and reinterprets it in place");

/// Serialisation type of `Array.data` written by Floret: raw little-endian elements, C-order.
pub const STYPE_RAW: &str = "raw";

/// Element type of an array, named as numpy names it on the wire (`"float32"`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    /// `float32`, what models usually hold.
    F32,
    /// `float64`.
    F64,
    /// `int32`.
    I32,
    /// `int64`.
    I64,
    /// `uint8`, e.g. raw image pixels.
    U8,
    /// A dtype Floret does not compute with but carries through unchanged.
    Other(String),
}

impl DType {
    /// The numpy name used on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::Other(s) => s,
        }
    }

    /// Parses a wire name; unknown names are kept as `Other` so foreign data round-trips.
    pub fn parse(s: &str) -> DType {
        match s {
            "float32" => DType::F32,
            "float64" => DType::F64,
            "int32" => DType::I32,
            "int64" => DType::I64,
            "uint8" => DType::U8,
            other => DType::Other(other.to_string()),
        }
    }

    /// Bytes per element, when Floret knows the type.
    pub fn size(&self) -> Option<usize> {
        match self {
            DType::F32 | DType::I32 => Some(4),
            DType::F64 | DType::I64 => Some(8),
            DType::U8 => Some(1),
            DType::Other(_) => None,
        }
    }
}

/// A Rust element type that maps to one `DType`.
pub trait Element: bytemuck::Pod + Send + Sync {
    /// The dtype an array of this element type carries.
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for f64 {
    const DTYPE: DType = DType::F64;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}
impl Element for i64 {
    const DTYPE: DType = DType::I64;
}
impl Element for u8 {
    const DTYPE: DType = DType::U8;
}

/// Why an array could not be read as the requested type.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ArrayError {
    /// The array holds another element type than the one asked for.
    #[error("array has dtype {found}, expected {expected}")]
    DType {
        /// The numpy name of the type asked for.
        expected: String,
        /// The numpy name of the type the array holds.
        found: String,
    },
    /// The data is serialised some other way than `STYPE_RAW`; the stype found.
    #[error("array has stype {0:?}; Floret reads only {STYPE_RAW:?} data")]
    SType(String),
    /// The data's length does not match what shape and dtype require.
    #[error("array data is {len} bytes, but shape {shape:?} of {dtype} needs {expected}")]
    Length {
        /// Bytes of data present.
        len: usize,
        /// Bytes the shape and dtype require.
        expected: usize,
        /// The array's shape.
        shape: Vec<i32>,
        /// The array's dtype, by its numpy name.
        dtype: String,
    },
    /// A dimension is negative; the shape found.
    #[error("array shape {0:?} has a negative dimension")]
    Shape(Vec<i32>),
}

/// One tensor: dtype, shape, serialisation type and the bytes themselves.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Array {
    /// The element type.
    pub dtype: DType,
    /// Dimensions, outermost first (C order); `i32` as on Flower's wire, never negative in a valid
    /// array.
    pub shape: Vec<i32>,
    /// How `data` is serialised; Floret writes and reads only `STYPE_RAW`.
    pub stype: String,
    /// The elements' bytes, shared rather than copied on clone.
    pub data: Bytes,
}

/// Owns a typed vector while `Bytes` borrows it as bytes: no copy, and alignment is kept.
struct TypedOwner<T: Element>(Vec<T>);

impl<T: Element> AsRef<[u8]> for TypedOwner<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

impl Array {
    /// Takes ownership of `values` without copying them.
    pub fn from_vec<T: Element>(shape: Vec<i32>, values: Vec<T>) -> Array {
        Array {
            dtype: T::DTYPE,
            shape,
            stype: STYPE_RAW.to_string(),
            data: Bytes::from_owner(TypedOwner(values)),
        }
    }

    /// A one-dimensional array of `values`.
    pub fn from_slice<T: Element>(values: &[T]) -> Array {
        Array::from_vec(vec![dim(values.len())], values.to_vec())
    }

    /// An array of zeros with the given shape.
    pub fn zeros<T: Element>(shape: Vec<i32>) -> Array {
        let n = shape.iter().map(|&d| d.max(0) as usize).product();
        Array::from_vec(shape, vec![T::zeroed(); n])
    }

    /// Copies an `ndarray` (any layout) into a C-order array.
    pub fn from_ndarray<T: Element>(view: ArrayViewD<'_, T>) -> Array {
        let shape = view.shape().iter().map(|&d| dim(d)).collect();
        let values = match view.as_slice() {
            Some(s) => s.to_vec(),
            None => view.iter().copied().collect(),
        };
        Array::from_vec(shape, values)
    }

    /// Number of elements the shape describes.
    pub fn num_elements(&self) -> Result<usize, ArrayError> {
        self.shape.iter().try_fold(1usize, |acc, &d| {
            usize::try_from(d)
                .map(|d| acc.saturating_mul(d))
                .map_err(|_| ArrayError::Shape(self.shape.clone()))
        })
    }

    /// Reads the data as `T`, borrowing it when it is aligned (the usual case) and copying
    /// only when a transport handed over unaligned bytes.
    pub fn values<T: Element>(&self) -> Result<Cow<'_, [T]>, ArrayError> {
        self.check::<T>()?;
        Ok(match bytemuck::try_cast_slice(&self.data) {
            Ok(slice) => Cow::Borrowed(slice),
            Err(_) => Cow::Owned(
                self.data
                    .chunks_exact(std::mem::size_of::<T>())
                    .map(bytemuck::pod_read_unaligned)
                    .collect(),
            ),
        })
    }

    /// Copies the data into an owned `ndarray` of the array's shape.
    pub fn to_ndarray<T: Element>(&self) -> Result<ArrayD<T>, ArrayError> {
        let values = self.values::<T>()?.into_owned();
        let shape: Vec<usize> = self.shape.iter().map(|&d| d as usize).collect();
        ArrayD::from_shape_vec(IxDyn(&shape), values)
            .map_err(|_| ArrayError::Shape(self.shape.clone()))
    }

    /// Checks dtype, stype and length against `T` before the bytes are reinterpreted.
    fn check<T: Element>(&self) -> Result<(), ArrayError> {
        if self.dtype != T::DTYPE {
            return Err(ArrayError::DType {
                expected: T::DTYPE.as_str().to_string(),
                found: self.dtype.as_str().to_string(),
            });
        }
        if self.stype != STYPE_RAW {
            return Err(ArrayError::SType(self.stype.clone()));
        }
        let expected = self
            .num_elements()?
            .saturating_mul(std::mem::size_of::<T>());
        if self.data.len() != expected {
            return Err(ArrayError::Length {
                len: self.data.len(),
                expected,
                shape: self.shape.clone(),
                dtype: self.dtype.as_str().to_string(),
            });
        }
        Ok(())
    }
}

/// Shapes are `int32` on the wire (as in Flower); larger dimensions saturate, and `check`
/// then reports the length mismatch instead of silently truncating.
fn dim(d: usize) -> i32 {
    i32::try_from(d).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;

    #[test]
    fn ndarray_round_trip_keeps_shape_and_values() {
        let a = arr2(&[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]).into_dyn();
        let arr = Array::from_ndarray(a.view());
        assert_eq!(arr.shape, vec![2, 3]);
        assert_eq!(arr.dtype.as_str(), "float32");
        assert_eq!(arr.to_ndarray::<f32>().unwrap(), a);
    }

    #[test]
    fn transposed_view_is_stored_in_c_order() {
        let a = arr2(&[[1i64, 2], [3, 4]]).into_dyn();
        let t = a.t();
        let arr = Array::from_ndarray(t.view());
        assert_eq!(arr.values::<i64>().unwrap().as_ref(), &[1, 3, 2, 4]);
    }

    #[test]
    fn clone_shares_the_bytes() {
        let arr = Array::from_vec(vec![1000], vec![1.5f64; 1000]);
        let copy = arr.clone();
        assert_eq!(arr.data.as_ptr(), copy.data.as_ptr());
    }

    #[test]
    fn wrong_dtype_is_an_error_not_a_panic() {
        let arr = Array::from_slice(&[1.0f32, 2.0]);
        let err = arr.values::<f64>().unwrap_err();
        assert!(matches!(err, ArrayError::DType { .. }), "{err}");
    }

    #[test]
    fn truncated_data_is_an_error() {
        let mut arr = Array::from_slice(&[1.0f32, 2.0]);
        arr.data = arr.data.slice(0..7);
        assert!(matches!(
            arr.values::<f32>(),
            Err(ArrayError::Length { .. })
        ));
    }

    #[test]
    fn unaligned_bytes_are_copied_not_misread() {
        let mut raw = vec![0u8; 9];
        raw[1..5].copy_from_slice(&2.5f32.to_le_bytes());
        raw[5..9].copy_from_slice(&(-1.0f32).to_le_bytes());
        let bytes = Bytes::from(raw).slice(1..9);
        let arr = Array {
            dtype: DType::F32,
            shape: vec![2],
            stype: STYPE_RAW.into(),
            data: bytes,
        };
        assert_eq!(arr.values::<f32>().unwrap().as_ref(), &[2.5, -1.0]);
    }

    #[test]
    fn negative_dimension_is_rejected() {
        let arr = Array {
            dtype: DType::F32,
            shape: vec![-1],
            stype: STYPE_RAW.into(),
            data: Bytes::new(),
        };
        assert!(matches!(arr.values::<f32>(), Err(ArrayError::Shape(_))));
    }
}
