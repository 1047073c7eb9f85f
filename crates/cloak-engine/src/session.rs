//! One request's run over a [`PreparedModel`]: its inputs checked against the signature,
//! converted, run with tract's panics contained, and its outputs converted back. The flow is
//! backend-neutral; what is tract's is the values and run state it handles (see `convert` and
//! `plan`) and three calls on the run state: spawning it, running it, and asking whether its
//! operators keep state between runs.

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use cloak_proto::tensor::Tensor;
use tract_onnx::prelude::tvec;

use crate::convert::{from_tract, run_error, to_tract};
use crate::plan::{Plan, RunState};
use crate::{EngineError, PreparedModel};

/// The state of one request's run over a [`PreparedModel`].
pub struct Session {
    model: PreparedModel,
    /// The plan of the last run and its run state, kept for the next run of the same shapes.
    state: Option<(Arc<Plan>, RunState)>,
}

impl Session {
    /// A session with no run state yet: it takes one when it first runs.
    pub(crate) fn new(model: PreparedModel) -> Self {
        Self { model, state: None }
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
        let mut values = tvec!();
        let mut shapes = Vec::with_capacity(model.inputs().len());
        for spec in model.inputs() {
            let tensor = by_name
                .remove(spec.name())
                .ok_or_else(|| EngineError::MissingInput(spec.name().to_owned()))?;
            spec.check(&tensor, &mut symbols)?;
            shapes.push(tensor.shape().to_vec());
            values.push(to_tract(spec, tensor)?);
        }
        let plan = model.plan(shapes)?;
        if !matches!(&self.state, Some((current, _)) if Arc::ptr_eq(current, &plan)) {
            self.state = match model.take_idle(&plan) {
                Some(state) => Some(state),
                None => {
                    let state = plan.spawn().map_err(run_error)?;
                    Some((plan, state))
                }
            };
        }
        let Some((_, state)) = self.state.as_mut() else {
            return Err(EngineError::Panicked);
        };
        let run = catch_unwind(AssertUnwindSafe(|| state.run(values)));
        let outputs = match run {
            Ok(Ok(outputs)) => outputs,
            // A state that failed or panicked mid-run is not reused.
            Ok(Err(e)) => {
                self.state = None;
                return Err(run_error(e));
            }
            Err(_) => {
                self.state = None;
                return Err(EngineError::Panicked);
            }
        };
        model
            .outputs()
            .iter()
            .zip(outputs)
            .map(|(spec, value)| Ok((spec.name().to_owned(), from_tract(spec, &value)?)))
            .collect()
    }
}

impl Drop for Session {
    /// Gives the run state back to the model for the next request — only when none of its
    /// operators keeps state between runs (tract clears every intermediate value at the end of
    /// a run), so nothing of one request can reach another.
    fn drop(&mut self) {
        if let Some(state) = self.state.take()
            && state.1.op_states.iter().all(Option::is_none)
        {
            self.model.keep_idle(state);
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
