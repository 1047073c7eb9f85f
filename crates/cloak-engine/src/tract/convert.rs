//! Conversions between Cloak's types and tract's: element types, tensors (one copy each way),
//! and tract's errors, redacted to what may be sent or logged.

use cloak_proto::tensor::{DataType, Tensor};
use tract_onnx::prelude::{DatumType, IntoTValue, TValue, Tensor as TractTensor};

use crate::{EngineError, TensorSpec};

#[cfg(not(target_endian = "little"))]
compile_error!("cloak-engine copies little-endian tensor bytes straight into tract's memory");

/// Copies the request's little-endian bytes into a tract tensor of the same type (one copy; the
/// machine is little-endian and the bytes were validated by [`Tensor::new`]).
pub(crate) fn to_tract(spec: &TensorSpec, tensor: Tensor) -> Result<TValue, EngineError> {
    let datum = datum_type(tensor.dtype()).ok_or_else(|| EngineError::UnsupportedType {
        tensor: spec.name().to_owned(),
        datum: tensor.dtype().name().to_owned(),
    })?;
    let mut value = TractTensor::zero_dt(datum, tensor.shape()).map_err(run_error)?;
    let mut view = value.try_as_plain_ram_mut().map_err(run_error)?;
    let target = view.as_bytes_mut();
    if target.len() != tensor.data().len() {
        return Err(EngineError::Run(format!(
            "input {}: {} bytes for a tensor of {}",
            spec.name(),
            tensor.data().len(),
            target.len()
        )));
    }
    target.copy_from_slice(tensor.data());
    Ok(value.into_tvalue())
}

/// Copies an output of tract's into a Cloak tensor, validated by [`Tensor::new`].
pub(crate) fn from_tract(spec: &TensorSpec, value: &TValue) -> Result<Tensor, EngineError> {
    let dtype = data_type(value.datum_type()).ok_or_else(|| EngineError::UnsupportedType {
        tensor: spec.name().to_owned(),
        datum: format!("{:?}", value.datum_type()),
    })?;
    let view = value.try_as_plain_ram().map_err(run_error)?;
    Tensor::new(dtype, value.shape().to_vec(), view.as_bytes().to_vec())
        .map_err(|e| EngineError::Run(format!("output {}: {e}", spec.name())))
}

/// Cloak's name for one of tract's element types, if Cloak can carry it.
pub(crate) fn data_type(datum: DatumType) -> Option<DataType> {
    Some(match datum {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Fp16,
        DatumType::F32 => DataType::Fp32,
        DatumType::F64 => DataType::Fp64,
        _ => return None,
    })
}

/// tract's element type for one of Cloak's.
pub(crate) fn datum_type(dtype: DataType) -> Option<DatumType> {
    Some(match dtype {
        DataType::Bool => DatumType::Bool,
        DataType::Uint8 => DatumType::U8,
        DataType::Uint16 => DatumType::U16,
        DataType::Uint32 => DatumType::U32,
        DataType::Uint64 => DatumType::U64,
        DataType::Int8 => DatumType::I8,
        DataType::Int16 => DatumType::I16,
        DataType::Int32 => DatumType::I32,
        DataType::Int64 => DatumType::I64,
        DataType::Fp16 => DatumType::F16,
        DataType::Fp32 => DatumType::F32,
        DataType::Fp64 => DatumType::F64,
        _ => return None,
    })
}

/// A tract error while loading, [`redacted`]: the causes below the step can print the model's
/// constants, which are the owner's weights, and the message reaches the repository index and
/// the log.
pub(crate) fn load_error(e: impl Into<tract_onnx::prelude::TractError>) -> EngineError {
    EngineError::Load(redacted(e))
}

/// A tract error while running a request, [`redacted`].
pub(crate) fn run_error(e: impl Into<tract_onnx::prelude::TractError>) -> EngineError {
    EngineError::Run(redacted(e))
}

/// The part of a tract error that names the step, node and operator, without the details that
/// follow (which can print intermediate tensor values: never send or log those).
pub(crate) fn redacted(e: impl Into<tract_onnx::prelude::TractError>) -> String {
    let e: tract_onnx::prelude::TractError = e.into();
    let full = format!("{e:#}");
    full.split(": ").next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::TractError;

    use super::*;

    /// tract adds the step as context over a cause that may print a constant.
    fn failure() -> TractError {
        TractError::msg("incompatible constant 1,4,F32 1234.5677, 8765.4321")
            .context("Translating node #3 \"Add_y\" Add")
    }

    #[test]
    fn load_and_run_errors_keep_the_step_and_drop_the_values() {
        for err in [load_error(failure()), run_error(failure())] {
            let message = err.to_string();
            assert!(message.contains("node #3 \"Add_y\" Add"), "{message}");
            assert!(!message.contains("1234"), "{message}");
        }
    }
}
