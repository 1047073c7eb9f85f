//! A model as tract holds it, and its caches: a compiled plan per distinct set of input shapes,
//! and the run states finished sessions leave behind. Runs happen here, with tract's panics
//! contained.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cloak_proto::tensor::Tensor;
use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::{InferenceModel, TVec};

use super::convert::{from_tract, run_error, to_tract};
use super::plan::{self, Plan, RunState};
use crate::{EngineError, TensorSpec};

/// Plans kept per model, one per distinct set of input shapes, besides the declared ones.
const MAX_PLANS: usize = 16;
/// The ONNX metadata key under which a model owner declares the input shapes to compile at
/// load: shape sets separated by `;`, one shape per input (in input order) separated by `,`,
/// dimensions by `x` — `1x3x224x224;8x3x224x224`, or `1x128,1x128;4x128,4x128` for two inputs.
pub(crate) const PRECOMPILE_KEY: &str = "cloak.precompile";
/// Most shape sets a model may declare.
const MAX_DECLARED: usize = 16;

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
    /// The input shapes the model owner declared (the model's `cloak.precompile` metadata),
    /// compiled at load.
    declared: Vec<Vec<Vec<usize>>>,
    /// Plans for the declared shapes: never evicted.
    pinned: Mutex<Vec<CachedPlan>>,
    /// Other compiled plans by input shapes, least recently used first: evicted from the front.
    plans: Mutex<Vec<CachedPlan>>,
    /// Held while a plan compiles: one compilation at a time per model, so requests cycling
    /// through new shapes cost at most one core, and two requests of one new shape compile it
    /// once.
    compiling: Mutex<()>,
    /// Plans compiled since load (declared ones included).
    compilations: AtomicU64,
    /// Run states of finished sessions: a request reuses one of its plan instead of allocating
    /// every intermediate buffer again.
    idle: Mutex<Vec<IdleState>>,
}

/// One session's run state: the plan of its last run and the state it runs in.
#[derive(Default)]
pub(crate) struct SessionState(Option<(Arc<Plan>, RunState)>);

impl Model {
    pub(crate) fn new(
        model: InferenceModel,
        executor: Option<Executor>,
        declared: Vec<Vec<Vec<usize>>>,
    ) -> Self {
        Self {
            model,
            executor,
            declared,
            pinned: Mutex::new(Vec::new()),
            plans: Mutex::new(Vec::new()),
            compiling: Mutex::new(()),
            compilations: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Compiles the plans of the declared shapes, checked against `inputs` first; kept for the
    /// model's life.
    pub(crate) fn compile_declared(&self, inputs: &[TensorSpec]) -> Result<(), EngineError> {
        for shapes in &self.declared {
            if shapes.len() != inputs.len() {
                return Err(EngineError::Load(format!(
                    "{PRECOMPILE_KEY}: a shape set names {} inputs; the model has {}",
                    shapes.len(),
                    inputs.len()
                )));
            }
            for (spec, shape) in inputs.iter().zip(shapes) {
                if !spec.accepts_shape(shape) {
                    return Err(EngineError::Load(format!(
                        "{PRECOMPILE_KEY}: shape {shape:?} does not fit input {}",
                        spec.name()
                    )));
                }
            }
            let plan = plan::compile(&self.model, inputs, shapes)?;
            self.compilations.fetch_add(1, Ordering::Relaxed);
            lock(&self.pinned).push((shapes.clone(), plan));
        }
        Ok(())
    }

    /// Plans compiled since load.
    pub(crate) fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// The plan for these input shapes (in input order): a declared one, a cached one, or one
    /// compiled now.
    pub(crate) fn plan(
        &self,
        inputs: &[TensorSpec],
        shapes: Vec<Vec<usize>>,
    ) -> Result<Arc<Plan>, EngineError> {
        if let Some(plan) = self.cached(&shapes) {
            return Ok(plan);
        }
        let _one_at_a_time = lock(&self.compiling);
        // Another request may have compiled it while this one waited.
        if let Some(plan) = self.cached(&shapes) {
            return Ok(plan);
        }
        let plan = plan::compile(&self.model, inputs, &shapes)?;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let evicted = {
            let mut plans = lock(&self.plans);
            let evicted = (plans.len() >= MAX_PLANS).then(|| plans.remove(0).1);
            plans.push((shapes, Arc::clone(&plan)));
            evicted
        };
        // An evicted plan's idle run states would otherwise stay allocated for nothing.
        if let Some(evicted) = evicted {
            lock(&self.idle).retain(|(p, _)| !Arc::ptr_eq(p, &evicted));
        }
        Ok(plan)
    }

    /// A declared or cached plan for these shapes, marked as used most recently.
    fn cached(&self, shapes: &[Vec<usize>]) -> Option<Arc<Plan>> {
        if let Some((_, plan)) = lock(&self.pinned).iter().find(|(key, _)| key == shapes) {
            return Some(Arc::clone(plan));
        }
        let mut plans = lock(&self.plans);
        let at = plans.iter().position(|(key, _)| key == shapes)?;
        let entry = plans.remove(at);
        let plan = Arc::clone(&entry.1);
        plans.push(entry);
        Some(plan)
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
            let mut idle = lock(&self.idle);
            if idle.len() < MAX_IDLE_STATES {
                idle.push(state);
            }
        }
    }

    /// An idle run state of this plan, if a finished session left one.
    fn take_idle(&self, plan: &Arc<Plan>) -> Option<IdleState> {
        let mut idle = lock(&self.idle);
        idle.iter()
            .rposition(|(p, _)| Arc::ptr_eq(p, plan))
            .map(|at| idle.swap_remove(at))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The declared shape sets of a `cloak.precompile` value (see [`PRECOMPILE_KEY`]).
pub(crate) fn parse_declared(value: &str) -> Result<Vec<Vec<Vec<usize>>>, EngineError> {
    let bad = |why: &str| EngineError::Load(format!("{PRECOMPILE_KEY}: {why}"));
    let sets: Vec<Vec<Vec<usize>>> = value
        .split(';')
        .map(str::trim)
        .filter(|set| !set.is_empty())
        .map(|set| {
            set.split(',')
                .map(|shape| {
                    let shape = shape.trim();
                    if shape.is_empty() {
                        return Ok(Vec::new());
                    }
                    shape
                        .split('x')
                        .map(|d| {
                            d.trim()
                                .parse::<usize>()
                                .map_err(|_| bad("a dimension is not a size"))
                        })
                        .collect()
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;
    if sets.len() > MAX_DECLARED {
        return Err(bad(&format!("at most {MAX_DECLARED} shape sets")));
    }
    Ok(sets)
}
