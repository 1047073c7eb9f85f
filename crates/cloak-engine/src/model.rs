//! A loaded model, shared by every request, and its caches: a compiled plan per distinct set
//! of input shapes, and the run states finished sessions leave behind. The caching is
//! backend-neutral; what it caches — the parsed model, plans and run states — is tract's.

use std::fmt;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::InferenceModel;

use crate::plan::{self, Plan, RunState};
use crate::{EngineError, Session, TensorSpec};

/// Plans kept per model, one per distinct set of input shapes.
const MAX_PLANS: usize = 16;

/// A compiled plan and the input shapes it was compiled for.
type CachedPlan = (Vec<Vec<usize>>, Arc<Plan>);
/// A plan's run state (its buffers), kept for the next request of the same shapes.
type IdleState = (Arc<Plan>, RunState);
/// The most run states kept idle per model: enough for every worker of a busy server.
const MAX_IDLE_STATES: usize = 16;

/// A loaded, optimized model: immutable and shared (cloning is an `Arc` clone).
#[derive(Clone)]
pub struct PreparedModel {
    inner: Arc<Prepared>,
}

struct Prepared {
    name: String,
    source_bytes: usize,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    /// The parsed model, with its inputs as declared.
    model: InferenceModel,
    /// Compiled plans by input shapes, most recently used last.
    plans: Mutex<Vec<CachedPlan>>,
    /// Run states of finished sessions: a request reuses one of its plan instead of allocating
    /// every intermediate buffer again.
    idle: Mutex<Vec<IdleState>>,
}

impl PreparedModel {
    /// The name it was loaded under.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its inputs, in the model's order.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inner.inputs
    }

    /// Its outputs, in the model's order.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.inner.outputs
    }

    /// The size of the ONNX bytes it was loaded from.
    pub fn source_bytes(&self) -> usize {
        self.inner.source_bytes
    }

    /// A session for one request.
    pub fn session(&self) -> Session {
        Session::new(self.clone())
    }

    /// A model ready for requests. One with only fixed dimensions is compiled here, once, and
    /// a failure to compile it is a failure to load.
    pub(crate) fn new(
        name: String,
        source_bytes: usize,
        inputs: Vec<TensorSpec>,
        outputs: Vec<TensorSpec>,
        model: InferenceModel,
    ) -> Result<Self, EngineError> {
        let fixed: Option<Vec<Vec<usize>>> = inputs.iter().map(TensorSpec::fixed_shape).collect();
        let prepared = Self {
            inner: Arc::new(Prepared {
                name,
                source_bytes,
                inputs,
                outputs,
                model,
                plans: Mutex::new(Vec::new()),
                idle: Mutex::new(Vec::new()),
            }),
        };
        if let Some(shapes) = fixed {
            prepared.plan(shapes).map_err(|e| match e {
                EngineError::Shape(message) => EngineError::Load(message),
                other => other,
            })?;
        }
        Ok(prepared)
    }

    /// The plan for these input shapes (in input order), compiled if it is not cached.
    pub(crate) fn plan(&self, shapes: Vec<Vec<usize>>) -> Result<Arc<Plan>, EngineError> {
        {
            let mut plans = self
                .inner
                .plans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(at) = plans.iter().position(|(key, _)| *key == shapes) {
                let entry = plans.remove(at);
                let plan = Arc::clone(&entry.1);
                plans.push(entry);
                return Ok(plan);
            }
        }
        // Compiled outside the lock: requests of shapes already compiled do not wait.
        let plan = plan::compile(&self.inner.model, &self.inner.inputs, &shapes)?;
        let mut plans = self
            .inner
            .plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if plans.len() >= MAX_PLANS {
            plans.remove(0);
        }
        plans.push((shapes, Arc::clone(&plan)));
        Ok(plan)
    }

    /// An idle run state of this plan, if a finished session left one.
    pub(crate) fn take_idle(&self, plan: &Arc<Plan>) -> Option<IdleState> {
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.iter()
            .rposition(|(p, _)| Arc::ptr_eq(p, plan))
            .map(|at| idle.swap_remove(at))
    }

    /// Keeps a finished session's run state for the next request, unless enough are kept.
    pub(crate) fn keep_idle(&self, state: IdleState) {
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE_STATES {
            idle.push(state);
        }
    }
}

impl fmt::Debug for PreparedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedModel")
            .field("name", &self.inner.name)
            .field("inputs", &self.inner.inputs)
            .field("outputs", &self.inner.outputs)
            .finish_non_exhaustive()
    }
}
