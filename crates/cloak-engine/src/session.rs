//! One request's run over a [`PreparedModel`]: its inputs checked against the signature (the
//! same checks for every backend), then run by the model's backend, whose outputs come back in
//! the model's order with their names.

use std::collections::HashMap;
use std::fmt;

use cloak_proto::tensor::Tensor;

use crate::model::Backend;
use crate::{EngineError, PreparedModel, tract};

/// The state of one request's run over a [`PreparedModel`].
pub struct Session {
    model: PreparedModel,
    /// tract's run state of the last run, kept for the next run of the same shapes (ONNX
    /// Runtime keeps none here).
    tract: tract::SessionState,
}

impl Session {
    /// A session with no run state yet: it takes one when it first runs.
    pub(crate) fn new(model: PreparedModel) -> Self {
        Self {
            model,
            tract: tract::SessionState::default(),
        }
    }

    /// Runs the model. `inputs` must name every model input exactly once; the outputs come back
    /// in the model's order, with their names.
    pub fn run(
        &mut self,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>, EngineError> {
        let model = &self.model;
        let mut by_name: HashMap<String, Tensor> = HashMap::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            if !model.inputs().iter().any(|spec| spec.name() == name) {
                return Err(EngineError::UnknownInput(name));
            }
            if by_name.contains_key(&name) {
                return Err(EngineError::DuplicateInput(name));
            }
            by_name.insert(name, tensor);
        }
        let mut symbols: HashMap<&str, usize> = HashMap::new();
        let mut ordered = Vec::with_capacity(model.inputs().len());
        for spec in model.inputs() {
            let tensor = by_name
                .remove(spec.name())
                .ok_or_else(|| EngineError::MissingInput(spec.name().to_owned()))?;
            spec.check(&tensor, &mut symbols)?;
            ordered.push(tensor);
        }
        let outputs = match model.backend() {
            Backend::Tract(backend) => {
                backend.run(&mut self.tract, model.inputs(), model.outputs(), ordered)?
            }
            Backend::OnnxRuntime(backend) => {
                backend.run(model.inputs(), model.outputs(), ordered)?
            }
        };
        Ok(model
            .outputs()
            .iter()
            .map(|spec| spec.name().to_owned())
            .zip(outputs)
            .collect())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Backend::Tract(backend) = self.model.backend() {
            backend.finish(&mut self.tract);
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("model", &self.model.name())
            .finish_non_exhaustive()
    }
}
