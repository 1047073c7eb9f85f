//! Conversions between Cloak's types and ONNX Runtime's: element types, signatures, tensors
//! (one copy each way), and ONNX Runtime's errors, redacted to what may be sent or logged.

use cloak_proto::tensor::{DataType, Element, Tensor};
use ort::session::SessionInputValue;
use ort::value::{
    DynValue, PrimitiveTensorElementType, Shape, SymbolicDimensions, TensorElementType, TensorRef,
    ValueType,
};
use zerocopy::{FromBytes, Immutable};

use crate::{Dim, EngineError, TensorSpec};

/// The spec of a model input or output as ONNX Runtime reports it: dynamic dimensions keep the
/// model's name for them, or are called `tensor[axis]` (each its own) when it has none.
pub(super) fn spec(
    name: &str,
    ty: TensorElementType,
    shape: &Shape,
    symbols: &SymbolicDimensions,
) -> Result<TensorSpec, EngineError> {
    let dtype = data_type(ty).ok_or_else(|| EngineError::UnsupportedType {
        tensor: name.to_owned(),
        datum: ty.to_string(),
    })?;
    let dims = shape
        .iter()
        .enumerate()
        .map(|(axis, &size)| match usize::try_from(size) {
            Ok(n) if n > 0 => Dim::Fixed(n),
            _ => match symbols.get(axis) {
                Some(symbol) if !symbol.is_empty() => Dim::Dynamic(symbol.clone()),
                _ => Dim::Dynamic(format!("{name}[{axis}]")),
            },
        })
        .collect();
    Ok(TensorSpec::new(name.to_owned(), dtype, dims))
}

/// Cloak's name for one of ONNX Runtime's element types, if Cloak can carry it.
fn data_type(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        _ => return None,
    })
}

/// Evaluates one of two expressions with a type alias bound to the Rust element type of a Cloak
/// data type: `plain` for the types any bytes are a valid value of (which ONNX Runtime can read
/// in place), `checked` for `BOOL` and `FP16` (copied, element by element); `_` for a type with
/// no element type (`BYTES`).
macro_rules! by_element {
    ($dtype:expr, plain $p:ident => $plain:expr, checked $c:ident => $checked:expr, _ => $other:expr) => {{
        macro_rules! plain {
            ($t:ty) => {{
                type $p = $t;
                $plain
            }};
        }
        macro_rules! checked {
            ($t:ty) => {{
                type $c = $t;
                $checked
            }};
        }
        match $dtype {
            DataType::Bool => checked!(bool),
            DataType::Fp16 => checked!(half::f16),
            DataType::Fp32 => plain!(f32),
            DataType::Fp64 => plain!(f64),
            DataType::Int8 => plain!(i8),
            DataType::Int16 => plain!(i16),
            DataType::Int32 => plain!(i32),
            DataType::Int64 => plain!(i64),
            DataType::Uint8 => plain!(u8),
            DataType::Uint16 => plain!(u16),
            DataType::Uint32 => plain!(u32),
            DataType::Uint64 => plain!(u64),
            _ => $other,
        }
    }};
}

/// A request's tensor as an ONNX Runtime input: a view of its own bytes where they are aligned
/// for the element type (no copy; the allocator aligns large buffers), else a copy. `BOOL` and
/// `FP16` are always copied (their byte patterns are checked, or their Rust types do not offer
/// a checked view).
pub(super) fn to_ort<'a>(
    spec: &TensorSpec,
    tensor: &'a Tensor,
) -> Result<SessionInputValue<'a>, EngineError> {
    let shape: Vec<i64> = tensor
        .shape()
        .iter()
        .map(|&n| i64::try_from(n).unwrap_or(i64::MAX))
        .collect();
    by_element!(tensor.dtype(),
        plain T => view_or_copy::<T>(spec, tensor, shape),
        checked T => copy::<T>(spec, tensor, shape),
        _ => Err(EngineError::UnsupportedType {
            tensor: spec.name().to_owned(),
            datum: tensor.dtype().name().to_owned(),
        })
    )
}

/// A view of `tensor`'s bytes as `T`s if they are aligned for it, else a copy.
fn view_or_copy<'a, T>(
    spec: &TensorSpec,
    tensor: &'a Tensor,
    shape: Vec<i64>,
) -> Result<SessionInputValue<'a>, EngineError>
where
    T: FromBytes + Immutable + Element + PrimitiveTensorElementType + std::fmt::Debug + Clone,
    T: 'static,
{
    match <[T]>::ref_from_bytes(tensor.data()) {
        Ok(values) => TensorRef::from_array_view((shape, values))
            .map(SessionInputValue::from)
            .map_err(run_error),
        Err(_) => copy::<T>(spec, tensor, shape),
    }
}

/// Copies a request's tensor into an ONNX Runtime value of element type `T`.
fn copy<T>(
    spec: &TensorSpec,
    tensor: &Tensor,
    shape: Vec<i64>,
) -> Result<SessionInputValue<'static>, EngineError>
where
    T: Element + PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static,
{
    let values = tensor
        .to_values::<T>()
        .map_err(|e| EngineError::Run(format!("input {}: {e}", spec.name())))?;
    ort::value::Tensor::from_array((shape, values))
        .map(|value| SessionInputValue::from(value.into_dyn()))
        .map_err(run_error)
}

/// Copies an output of ONNX Runtime's into a Cloak tensor of the spec's type.
pub(super) fn from_ort(spec: &TensorSpec, value: &DynValue) -> Result<Tensor, EngineError> {
    let unsupported = |datum: String| EngineError::UnsupportedType {
        tensor: spec.name().to_owned(),
        datum,
    };
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(unsupported(other.to_string())),
    };
    let dtype = data_type(ty).ok_or_else(|| unsupported(ty.to_string()))?;
    by_element!(dtype,
        plain T => extract::<T>(spec, value),
        checked T => extract::<T>(spec, value),
        _ => Err(unsupported(ty.to_string()))
    )
}

/// Copies an output whose elements are `T`s.
fn extract<T>(spec: &TensorSpec, value: &DynValue) -> Result<Tensor, EngineError>
where
    T: Element + PrimitiveTensorElementType,
{
    let (shape, values) = value.try_extract_tensor::<T>().map_err(run_error)?;
    let shape = shape
        .iter()
        .map(|&n| usize::try_from(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| EngineError::Run(format!("output {}: a negative dimension", spec.name())))?;
    Tensor::from_values(shape, values)
        .map_err(|e| EngineError::Run(format!("output {}: {e}", spec.name())))
}

/// An ONNX Runtime error while compiling a model, [`redacted`].
pub(super) fn load_error(e: ort::Error) -> EngineError {
    EngineError::Load(redacted(&e))
}

/// An ONNX Runtime error while running a request, [`redacted`].
pub(super) fn run_error(e: ort::Error) -> EngineError {
    EngineError::Run(redacted(&e))
}

/// The longest part of an ONNX Runtime message kept.
const MAX_MESSAGE: usize = 240;

/// The part of an ONNX Runtime error that names the step, node and operator. A failing kernel's
/// own words follow `Status Message:` and can quote the data it failed on (an index out of
/// range prints the index, which is the client's input), so they are dropped, and the rest is
/// cut to a bounded length.
pub(super) fn redacted(e: &ort::Error) -> String {
    let out = redact(e.message());
    if out.is_empty() {
        return format!("ONNX Runtime error ({:?})", e.code());
    }
    out
}

/// [`redacted`] for any message of ONNX Runtime's (its log lines too).
pub(super) fn redact(message: &str) -> String {
    let kept = match message.find("Status Message:") {
        Some(at) => &message[..at],
        None => message,
    };
    let kept = kept.trim().trim_end_matches(['.', ',']);
    let mut out: String = kept.chars().take(MAX_MESSAGE).collect();
    if out.len() < kept.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_message_is_dropped_and_the_node_kept() {
        // `ort::Error::new` needs the library loaded; the text is what matters.
        let message = redact(
            "Non-zero status code returned while running Gather node. Name:'lookup' Status \
             Message: indices element out of data bounds, idx=123456 must be within the \
             inclusive range [-10,9]",
        );
        assert!(message.contains("Gather node. Name:'lookup'"), "{message}");
        assert!(!message.contains("123456"), "{message}");
    }

    /// An aligned request tensor reaches ONNX Runtime as a view of its own bytes (no copy);
    /// `BOOL` goes as a copy.
    #[test]
    fn aligned_inputs_are_read_in_place() {
        let Some(library) = cloak_test_support::deps::onnxruntime_library() else {
            return;
        };
        super::super::Runtime::open(&library).unwrap();
        let floats = Tensor::from_values(vec![2, 2], &[1.5f32, -2.0, 3.25, 0.0]).unwrap();
        let spec = TensorSpec::new("x".into(), DataType::Fp32, vec![Dim::Fixed(2); 2]);
        let value = to_ort(&spec, &floats).unwrap();
        if floats.data().as_ptr().align_offset(align_of::<f32>()) == 0 {
            assert!(matches!(value, SessionInputValue::View(_)));
            let (_, values) = value.try_extract_tensor::<f32>().unwrap();
            assert_eq!(values.as_ptr().cast::<u8>(), floats.data().as_ptr());
        } else {
            cloak_test_support::deps::skip("the allocator gave an unaligned buffer; no view");
        }
        let bools = Tensor::from_values(vec![2], &[true, false]).unwrap();
        let spec = TensorSpec::new("b".into(), DataType::Bool, vec![Dim::Fixed(2)]);
        let value = to_ort(&spec, &bools).unwrap();
        assert!(matches!(value, SessionInputValue::Owned(_)));
        assert_eq!(value.try_extract_tensor::<bool>().unwrap().1, [true, false]);
    }

    #[test]
    fn long_messages_are_cut() {
        assert!(redact(&"x".repeat(10_000)).chars().count() <= MAX_MESSAGE + 1);
    }
}
