//! Tensors as they cross every boundary in Cloak: a [`DataType`], a shape, and the elements as
//! row-major little-endian bytes — the layout of the KServe v2 binary tensor extension, so
//! request bytes become a tensor without conversion.
//!
//! `BYTES` tensors hold, for each element, a 4-byte little-endian length followed by that many
//! bytes (Triton's serialization). `BOOL` is one byte per element, `0` or `1`.
//!
//! Tensor data is plaintext inference input or output: it is zeroized when dropped, and
//! [`Tensor`]'s `Debug` shows the data type, shape and size but never the data.

use std::fmt;

use cloak_crypto::secret::SecretBytes;

/// The most dimensions a tensor may have (ONNX models in practice use at most 8).
pub const MAX_RANK: usize = 16;

/// A tensor element type, named as the KServe v2 protocol names it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `BOOL`: one byte, 0 or 1.
    Bool,
    /// `BYTES`: variable-length byte strings.
    Bytes,
    /// `FP16`: IEEE 754 half precision.
    Fp16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `INT8`.
    Int8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `UINT8`.
    Uint8,
}

impl DataType {
    /// Every data type, in protocol-name order.
    pub const ALL: [Self; 13] = [
        Self::Bool,
        Self::Bytes,
        Self::Fp16,
        Self::Fp32,
        Self::Fp64,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::Int8,
        Self::Uint16,
        Self::Uint32,
        Self::Uint64,
        Self::Uint8,
    ];

    /// The protocol name (`"FP32"`, `"BYTES"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Bytes => "BYTES",
            Self::Fp16 => "FP16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Int8 => "INT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Uint8 => "UINT8",
        }
    }

    /// The data type a protocol name denotes (case-sensitive, as the protocol is).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|dtype| dtype.name() == name)
    }

    /// Bytes per element; `None` for `BYTES`, whose elements vary in length.
    pub fn element_size(self) -> Option<usize> {
        match self {
            Self::Bool | Self::Int8 | Self::Uint8 => Some(1),
            Self::Fp16 | Self::Int16 | Self::Uint16 => Some(2),
            Self::Fp32 | Self::Int32 | Self::Uint32 => Some(4),
            Self::Fp64 | Self::Int64 | Self::Uint64 => Some(8),
            Self::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor: data type, shape, and row-major little-endian element bytes.
///
/// The constructor checks that the bytes hold exactly as many elements as the shape says (and,
/// for `BOOL`, that each is 0 or 1; for `BYTES`, that the length prefixes tile the data), so
/// every `Tensor` is well-formed.
#[derive(Clone, PartialEq, Eq)]
pub struct Tensor {
    dtype: DataType,
    shape: Vec<usize>,
    elements: usize,
    data: SecretBytes,
}

impl Tensor {
    /// A tensor over `data`, checked against `dtype` and `shape`.
    pub fn new(dtype: DataType, shape: Vec<usize>, data: Vec<u8>) -> Result<Self, TensorError> {
        let data = SecretBytes::new(data);
        let elements = element_count(&shape)?;
        match dtype.element_size() {
            Some(size) => {
                let expected = elements
                    .checked_mul(size)
                    .ok_or(TensorError::TooManyElements)?;
                if data.len() != expected {
                    return Err(TensorError::LengthMismatch {
                        dtype,
                        expected,
                        actual: data.len(),
                    });
                }
                if dtype == DataType::Bool && data.iter().any(|&b| b > 1) {
                    return Err(TensorError::InvalidBool);
                }
            }
            None => {
                let found = BytesElements { rest: &data }
                    .try_fold(0usize, |n, element| element.map(|_| n.saturating_add(1)))?;
                if found != elements {
                    return Err(TensorError::ElementCountMismatch {
                        expected: elements,
                        actual: found,
                    });
                }
            }
        }
        Ok(Self {
            dtype,
            shape,
            elements,
            data,
        })
    }

    /// A tensor of fixed-size elements.
    pub fn from_values<T: Element>(shape: Vec<usize>, values: &[T]) -> Result<Self, TensorError> {
        let mut data = Vec::with_capacity(values.len().saturating_mul(size_of::<T>()));
        for value in values {
            value.write_le(&mut data);
        }
        Self::new(T::DTYPE, shape, data)
    }

    /// A `BYTES` tensor of the given elements.
    pub fn from_byte_strings<B: AsRef<[u8]>>(
        shape: Vec<usize>,
        elements: &[B],
    ) -> Result<Self, TensorError> {
        let mut data = Vec::new();
        for element in elements {
            let element = element.as_ref();
            let len = u32::try_from(element.len()).map_err(|_| TensorError::TooManyElements)?;
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(element);
        }
        Self::new(DataType::Bytes, shape, data)
    }

    /// The element type.
    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    /// The shape (empty for a scalar).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements (the product of the shape).
    pub fn element_count(&self) -> usize {
        self.elements
    }

    /// The element bytes, as described in the [module docs](self).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The element bytes, zeroized when the returned buffer drops.
    pub fn into_data(self) -> SecretBytes {
        self.data
    }

    /// The elements as values of `T`, which must be this tensor's type.
    pub fn to_values<T: Element>(&self) -> Result<Vec<T>, TensorError> {
        if self.dtype != T::DTYPE {
            return Err(TensorError::TypeMismatch {
                expected: T::DTYPE,
                actual: self.dtype,
            });
        }
        Ok(self
            .data
            .chunks_exact(size_of::<T>())
            .map(T::read_le)
            .collect())
    }

    /// The elements of a `BYTES` tensor; `None` for any other type.
    pub fn byte_strings(&self) -> Option<impl Iterator<Item = &[u8]>> {
        (self.dtype == DataType::Bytes).then(|| {
            // `new` checked that the prefixes tile the data, so no element is an error.
            BytesElements { rest: &self.data }.map_while(Result::ok)
        })
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// The product of `shape`, checked for overflow and rank.
pub fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    if shape.len() > MAX_RANK {
        return Err(TensorError::RankTooHigh(shape.len()));
    }
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or(TensorError::TooManyElements)
}

/// Splits Triton's `BYTES` serialization into elements.
struct BytesElements<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for BytesElements<'a> {
    type Item = Result<&'a [u8], TensorError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((len, tail)) = self.rest.split_first_chunk::<4>() else {
            self.rest = &[];
            return Some(Err(TensorError::MalformedBytes));
        };
        let len = u32::from_le_bytes(*len) as usize;
        match tail.split_at_checked(len) {
            Some((element, tail)) => {
                self.rest = tail;
                Some(Ok(element))
            }
            None => {
                self.rest = &[];
                Some(Err(TensorError::MalformedBytes))
            }
        }
    }
}

/// A fixed-size element type with a KServe data type.
pub trait Element: Copy + sealed::Sealed {
    /// The data type of tensors of this element.
    const DTYPE: DataType;
    /// Appends the little-endian encoding.
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads from exactly `size_of::<Self>()` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! numeric_element {
    ($($t:ty => $dtype:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DataType = DataType::$dtype;
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; size_of::<$t>()];
                if let Some(source) = bytes.get(..raw.len()) {
                    raw.copy_from_slice(source);
                }
                <$t>::from_le_bytes(raw)
            }
        }
    )*};
}

numeric_element!(
    half::f16 => Fp16, f32 => Fp32, f64 => Fp64,
    i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64,
    u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64,
);

impl sealed::Sealed for bool {}
impl Element for bool {
    const DTYPE: DataType = DataType::Bool;
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn read_le(bytes: &[u8]) -> Self {
        bytes.first().is_some_and(|&b| b != 0)
    }
}

/// Why bytes, a data type and a shape do not make a tensor.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// A `BYTES` tensor's elements do not match its shape.
    #[error("the BYTES data holds {actual} elements; the shape needs {expected}")]
    ElementCountMismatch {
        /// Elements the shape needs.
        expected: usize,
        /// Elements found.
        actual: usize,
    },
    /// A `BOOL` element is neither 0 nor 1.
    #[error("a BOOL element is neither 0 nor 1")]
    InvalidBool,
    /// The data length does not match the shape.
    #[error("{dtype} data needs {expected} bytes for its shape, got {actual}")]
    LengthMismatch {
        /// The data type.
        dtype: DataType,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// `BYTES` data whose length prefixes overrun it.
    #[error("malformed BYTES data: a length prefix runs past the end")]
    MalformedBytes,
    /// More dimensions than [`MAX_RANK`].
    #[error("{0} dimensions; at most {MAX_RANK} are supported")]
    RankTooHigh(usize),
    /// The element count or byte length overflows.
    #[error("the shape holds more elements than memory can")]
    TooManyElements,
    /// Values of one type were asked of a tensor of another.
    #[error("the tensor is {actual}, not {expected}")]
    TypeMismatch {
        /// The type asked for.
        expected: DataType,
        /// The tensor's type.
        actual: DataType,
    },
}

impl TensorError {
    /// A stable kebab-case code for scripts and the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ElementCountMismatch { .. } => "element-count-mismatch",
            Self::InvalidBool => "invalid-bool",
            Self::LengthMismatch { .. } => "length-mismatch",
            Self::MalformedBytes => "malformed-bytes",
            Self::RankTooHigh(_) => "rank-too-high",
            Self::TooManyElements => "too-many-elements",
            Self::TypeMismatch { .. } => "type-mismatch",
        }
    }
}

#[cfg(test)]
mod tests;
