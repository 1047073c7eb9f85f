//! A model's signature — its inputs' and outputs' names, element types and shapes — and the
//! checks a request's inputs must pass against it. Backend-neutral: nothing here knows tract.

use std::collections::HashMap;
use std::fmt;

use cloak_proto::tensor::{DataType, Tensor};

use crate::EngineError;

/// One dimension of a model input or output.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// Decided per request; the text is the model's name for it (`batch`, `sequence`, or an
    /// expression such as `2*S`).
    Dynamic(String),
    /// Always this size.
    Fixed(usize),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dynamic(name) => f.write_str(name),
            Self::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// A model input or output: name, data type and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    name: String,
    dtype: DataType,
    shape: Vec<Dim>,
}

impl TensorSpec {
    /// The tensor's name in the model.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its element type.
    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    /// Its shape.
    pub fn shape(&self) -> &[Dim] {
        &self.shape
    }

    /// The shape as KServe metadata writes it: `-1` for a dynamic dimension.
    pub fn kserve_shape(&self) -> Vec<i64> {
        self.shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => i64::try_from(*n).unwrap_or(-1),
                Dim::Dynamic(_) => -1,
            })
            .collect()
    }

    /// A spec as the loader reads it from the model.
    pub(crate) fn new(name: String, dtype: DataType, shape: Vec<Dim>) -> Self {
        Self { name, dtype, shape }
    }

    /// The shape, if every dimension is fixed.
    pub(crate) fn fixed_shape(&self) -> Option<Vec<usize>> {
        self.shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Some(*n),
                Dim::Dynamic(_) => None,
            })
            .collect()
    }

    /// Whether a tensor of `shape` could be this input: the rank and the fixed dimensions.
    pub(crate) fn accepts_shape(&self, shape: &[usize]) -> bool {
        shape.len() == self.shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(dim, &n)| !matches!(dim, Dim::Fixed(fixed) if *fixed != n))
    }

    /// Checks a request's tensor for this input: exact data type (no silent casts), rank, fixed
    /// dimensions, and dynamic dimensions against the sizes earlier inputs gave them in
    /// `symbols`, where this input's sizes are recorded for the inputs after it.
    pub(crate) fn check<'a>(
        &'a self,
        tensor: &Tensor,
        symbols: &mut HashMap<&'a str, usize>,
    ) -> Result<(), EngineError> {
        if tensor.dtype() != self.dtype {
            return Err(EngineError::TypeMismatch {
                input: self.name.clone(),
                expected: self.dtype,
                actual: tensor.dtype(),
            });
        }
        let shape_error = || EngineError::ShapeMismatch {
            input: self.name.clone(),
            expected: format!("[{}]", join(&self.shape)),
            actual: format!("[{}]", join(tensor.shape())),
        };
        if tensor.shape().len() != self.shape.len() {
            return Err(shape_error());
        }
        for (dim, &actual) in self.shape.iter().zip(tensor.shape()) {
            match dim {
                Dim::Fixed(n) if *n != actual => return Err(shape_error()),
                Dim::Dynamic(symbol)
                    if is_symbol(symbol)
                        && *symbols.entry(symbol.as_str()).or_insert(actual) != actual =>
                {
                    return Err(EngineError::DimensionConflict {
                        input: self.name.clone(),
                        dimension: symbol.clone(),
                        value: actual,
                        earlier: symbols.get(symbol.as_str()).copied().unwrap_or(actual),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A plain symbol (not an expression such as `2*S`), which must take one value per request.
fn is_symbol(dim: &str) -> bool {
    dim.chars().all(|c| c.is_alphanumeric() || c == '_')
}

fn join(items: &[impl fmt::Display]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
