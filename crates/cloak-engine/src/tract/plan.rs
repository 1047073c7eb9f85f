//! Compiled plans: a model optimized for one set of concrete input shapes, and the run state
//! (buffers) a plan runs in. The cache that keeps them is in `model`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tract_onnx::prelude::{
    InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable, TDim, TypedSimplePlan,
    TypedSimpleState,
};

use super::convert::{datum_type, redacted};
use crate::{EngineError, TensorSpec};

/// A model compiled for one set of input shapes.
pub(crate) type Plan = TypedSimplePlan;

/// The mutable state of a run over a [`Plan`]: its intermediate buffers, and the state of
/// operators that keep some between runs.
pub(crate) type RunState = TypedSimpleState;

/// Compiles `model` for these input shapes (in the order of `inputs`). A panic inside tract
/// is caught and reported as [`EngineError::Panicked`].
pub(crate) fn compile(
    model: &InferenceModel,
    inputs: &[TensorSpec],
    shapes: &[Vec<usize>],
) -> Result<Arc<Plan>, EngineError> {
    let mut model = model.clone();
    for (ix, (spec, shape)) in inputs.iter().zip(shapes).enumerate() {
        let datum = datum_type(spec.dtype()).ok_or_else(|| EngineError::UnsupportedType {
            tensor: spec.name().to_owned(),
            datum: spec.dtype().name().to_owned(),
        })?;
        let dims: Vec<TDim> = shape.iter().map(|&n| TDim::from(n)).collect();
        model
            .set_input_fact(ix, InferenceFact::dt_shape(datum, dims))
            .map_err(|e| EngineError::Shape(redacted(e)))?;
    }
    let compiled = catch_unwind(AssertUnwindSafe(|| {
        model.into_optimized().and_then(IntoRunnable::into_runnable)
    }));
    match compiled {
        Ok(Ok(plan)) => Ok(plan),
        Ok(Err(e)) => Err(EngineError::Shape(redacted(e))),
        Err(_) => Err(EngineError::Panicked),
    }
}
