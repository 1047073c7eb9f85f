//! A model as tract holds it, and its caches: a compiled plan per distinct set of input shapes,
//! and the run states finished sessions leave behind. Runs happen here, with tract's panics
//! contained.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};

use cloak_proto::tensor::Tensor;
use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::{InferenceModel, TVec};

use super::convert::{from_tract, run_error, to_tract};
use super::plan::{self, Plan, RunState};
use crate::{EngineError, TensorSpec};

/// Plans kept per model, one per distinct set of input shapes.
const MAX_PLANS: usize = 16;

/// A compiled plan and the input shapes it was compiled for.
type CachedPlan = (Vec<Vec<usize>>, Arc<Plan>);
/// A plan's run state (its buffers), kept for the next request of the same shapes.
type IdleState = (Arc<Plan>, RunState);
/// The most run states kept idle per model: enough for every worker of a busy server.
const MAX_IDLE_STATES: usize = 16;

/// A parsed model and its caches.
pub(crate) struct Model {
    /// The parsed model, with its inputs as declared.
    model: InferenceModel,
    /// The thread pool matrix products use, if more than one thread per request.
    executor: Option<Executor>,
    /// Compiled plans by input shapes, most recently used last.
    plans: Mutex<Vec<CachedPlan>>,
    /// Run states of finished sessions: a request reuses one of its plan instead of allocating
    /// every intermediate buffer again.
    idle: Mutex<Vec<IdleState>>,
}

/// One session's run state: the plan of its last run and the state it runs in.
#[derive(Default)]
pub(crate) struct SessionState(Option<(Arc<Plan>, RunState)>);

impl Model {
    pub(crate) fn new(model: InferenceModel, executor: Option<Executor>) -> Self {
        Self {
            model,
            executor,
            plans: Mutex::new(Vec::new()),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The plan for these input shapes (in input order), compiled if it is not cached.
    pub(crate) fn plan(
        &self,
        inputs: &[TensorSpec],
        shapes: Vec<Vec<usize>>,
    ) -> Result<Arc<Plan>, EngineError> {
        {
            let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(at) = plans.iter().position(|(key, _)| *key == shapes) {
                let entry = plans.remove(at);
                let plan = Arc::clone(&entry.1);
                plans.push(entry);
                return Ok(plan);
            }
        }
        // Compiled outside the lock: requests of shapes already compiled do not wait.
        let plan = plan::compile(&self.model, inputs, &shapes)?;
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        if plans.len() >= MAX_PLANS {
            plans.remove(0);
        }
        plans.push((shapes, Arc::clone(&plan)));
        Ok(plan)
    }

    /// Runs a request whose inputs passed the signature checks, in the model's input order.
    pub(crate) fn run(
        &self,
        session: &mut SessionState,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
        tensors: Vec<Tensor>,
    ) -> Result<Vec<Tensor>, EngineError> {
        let shapes = tensors.iter().map(|t| t.shape().to_vec()).collect();
        let values = inputs
            .iter()
            .zip(tensors)
            .map(|(spec, tensor)| to_tract(spec, tensor))
            .collect::<Result<TVec<_>, _>>()?;
        let plan = self.plan(inputs, shapes)?;
        if !matches!(&session.0, Some((current, _)) if Arc::ptr_eq(current, &plan)) {
            session.0 = match self.take_idle(&plan) {
                Some(state) => Some(state),
                None => {
                    let state = plan.spawn().map_err(run_error)?;
                    Some((plan, state))
                }
            };
        }
        let Some((_, state)) = session.0.as_mut() else {
            return Err(EngineError::Panicked);
        };
        let run = catch_unwind(AssertUnwindSafe(|| match &self.executor {
            Some(executor) => multithread_tract_scope(executor.clone(), || state.run(values)),
            None => state.run(values),
        }));
        let values = match run {
            Ok(Ok(values)) => values,
            // A state that failed or panicked mid-run is not reused.
            Ok(Err(e)) => {
                session.0 = None;
                return Err(run_error(e));
            }
            Err(_) => {
                session.0 = None;
                return Err(EngineError::Panicked);
            }
        };
        outputs
            .iter()
            .zip(values)
            .map(|(spec, value)| from_tract(spec, &value))
            .collect()
    }

    /// Gives a finished session's run state back for the next request — only when none of its
    /// operators keeps state between runs (tract clears every intermediate value at the end of
    /// a run), so nothing of one request can reach another.
    pub(crate) fn finish(&self, session: &mut SessionState) {
        if let Some(state) = session.0.take()
            && state.1.op_states.iter().all(Option::is_none)
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE_STATES {
                idle.push(state);
            }
        }
    }

    /// An idle run state of this plan, if a finished session left one.
    fn take_idle(&self, plan: &Arc<Plan>) -> Option<IdleState> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.iter()
            .rposition(|(p, _)| Arc::ptr_eq(p, plan))
            .map(|at| idle.swap_remove(at))
    }
}
