//! Inference for Cloak, over [tract](https://github.com/sonos/tract): pure Rust, no native
//! libraries to trust or to ship into an enclave.
//!
//! [`Engine`] → [`PreparedModel`] → [`Session`]:
//!
//! - [`Engine::load`] parses an ONNX model from bytes in memory (the server decrypts `.cloak`
//!   containers into memory; plaintext weights never touch disk), optimizes it once, and returns a
//!   [`PreparedModel`]: immutable, `Send + Sync`, shared by every request through an `Arc`.
//! - [`PreparedModel::session`] gives each request its own [`Session`], holding the mutable
//!   state of one run. Inputs are checked against the model's signature first — names, exact data
//!   types (no silent casts), ranks, fixed dimensions, and dynamic dimensions that several inputs
//!   share (such as `batch`) — each with its own [`EngineError`].
//!
//! Tensors in and out are [`cloak_proto::tensor::Tensor`]s. A panic inside tract while running a
//! request is caught and reported as [`EngineError::Panicked`]; the session is then discarded.
//!
//! ```no_run
//! use cloak_engine::Engine;
//! use cloak_proto::tensor::Tensor;
//!
//! let onnx = std::fs::read("model.onnx")?;
//! let model = Engine::new().load("mlp", &onnx)?;
//! let input = Tensor::from_values(vec![1, 4], &[0.5f32, -1.0, 2.0, 0.0])?;
//! let outputs = model.session().run(vec![("input".to_owned(), input)])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use cloak_proto::tensor::{DataType, Tensor};
use tract_onnx::pb;
use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable,
    IntoTValue, TDim, TValue, Tensor as TractTensor, TypedSimplePlan, TypedSimpleState, tvec,
};
use tract_onnx::tract_hir::infer::{Factoid, GenericFactoid};

/// Plans kept per model, one per distinct set of input shapes.
const MAX_PLANS: usize = 16;

/// A compiled plan and the input shapes it was compiled for.
type CachedPlan = (Vec<Vec<usize>>, Arc<TypedSimplePlan>);
/// A plan's run state (its buffers), kept for the next request of the same shapes.
type IdleState = (Arc<TypedSimplePlan>, TypedSimpleState);
/// The most run states kept idle per model: enough for every worker of a busy server.
const MAX_IDLE_STATES: usize = 16;

#[cfg(not(target_endian = "little"))]
compile_error!("cloak-engine copies little-endian tensor bytes straight into tract's memory");

/// Loads models. Cheap to create; holds only configuration.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    _private: (),
}

impl Engine {
    /// An engine with tract's default CPU runtime (single-threaded per session).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses and analyses an ONNX model held in memory.
    ///
    /// tract optimizes a model for concrete input shapes far more reliably than for symbolic
    /// ones (exporters' dynamic dimensions trip its shape inference on real models), so a plan
    /// is compiled per distinct set of input shapes and kept (up to 16 per model): a model with
    /// only fixed dimensions is compiled here, once; a model with dynamic dimensions (batch,
    /// sequence length, image size) compiles on the first request of each shape.
    ///
    /// Node names are made unique first (some exporters repeat them, which tract refuses).
    /// Some exporters also write intermediate shape annotations (`value_info`) that tract
    /// cannot reconcile; they are ignored. Errors name the failing node and operator.
    pub fn load(&self, name: &str, onnx: &[u8]) -> Result<PreparedModel, EngineError> {
        let framework = tract_onnx::onnx().with_ignore_value_info(true);
        let mut proto = framework
            .proto_model_for_read(&mut &onnx[..])
            .map_err(load_error)?;
        if let Some(graph) = proto.graph.as_mut() {
            unique_node_names(graph);
        }
        let model = framework
            .model_for_proto_model(&proto)
            .map_err(load_error)?;
        let declared_outputs: HashMap<String, Declared> = proto
            .graph
            .as_ref()
            .map(|graph| {
                graph
                    .output
                    .iter()
                    .map(|output| (output.name.clone(), proto_declared(output)))
                    .collect()
            })
            .unwrap_or_default();
        drop(proto);
        // tract parses operators it does not implement into placeholders; refuse them now,
        // named, rather than on the first request.
        if let Some(node) = model
            .nodes()
            .iter()
            .find(|node| node.op_is::<tract_onnx::tract_core::ops::unimpl::UnimplementedOp>())
        {
            return Err(EngineError::Load(format!(
                "node {:?} uses an operator tract does not implement: {}",
                node.name,
                node.op.name()
            )));
        }
        let mut inputs = Vec::new();
        for (ix, outlet) in model
            .input_outlets()
            .map_err(load_error)?
            .iter()
            .enumerate()
        {
            let fact = model.input_fact(ix).map_err(load_error)?;
            let name = model.node(outlet.node).name.clone();
            let declared = fact_declared(&name, fact);
            inputs.push(declared.into_spec(name)?);
        }
        // Output types and ranks the model does not declare come from type inference over
        // the graph (best effort: with dynamic inputs some shapes stay unknown, which is fine
        // here), run only when some output needs it.
        let mut analysed: Option<InferenceModel> = None;
        let mut outputs = Vec::new();
        for (ix, outlet) in model
            .output_outlets()
            .map_err(load_error)?
            .iter()
            .enumerate()
        {
            let name = model
                .outlet_label(*outlet)
                .map_or_else(|| model.node(outlet.node).name.clone(), str::to_owned);
            let mut declared = declared_outputs.get(&name).cloned().unwrap_or_default();
            if declared.datum.is_none() || declared.shape.is_none() {
                let analysed = analysed.get_or_insert_with(|| {
                    let mut analysed = model.clone();
                    let _ = analysed.analyse(false);
                    analysed
                });
                let inferred = fact_declared(&name, analysed.output_fact(ix).map_err(load_error)?);
                declared.datum = declared.datum.or(inferred.datum);
                declared.shape = declared.shape.or(inferred.shape);
            }
            outputs.push(declared.into_spec(name)?);
        }
        let prepared = Prepared {
            name: name.to_owned(),
            source_bytes: onnx.len(),
            inputs,
            outputs,
            model,
            plans: Mutex::new(Vec::new()),
            idle: Mutex::new(Vec::new()),
        };
        let fixed: Option<Vec<Vec<usize>>> = prepared
            .inputs
            .iter()
            .map(|spec| {
                spec.shape
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => Some(*n),
                        Dim::Dynamic(_) => None,
                    })
                    .collect()
            })
            .collect();
        if let Some(shapes) = fixed {
            prepared.plan(shapes).map_err(|e| match e {
                EngineError::Shape(message) => EngineError::Load(message),
                other => other,
            })?;
        }
        Ok(PreparedModel {
            inner: Arc::new(prepared),
        })
    }
}

/// Renames nodes whose name an earlier node already has (`name`, `name#2`, ...), in every
/// subgraph too.
fn unique_node_names(graph: &mut pb::GraphProto) {
    let mut seen: HashSet<String> = HashSet::new();
    for node in &mut graph.node {
        if !seen.insert(node.name.clone()) {
            let mut n = 2usize;
            let renamed = loop {
                let candidate = format!("{}#{n}", node.name);
                if !seen.contains(&candidate) {
                    break candidate;
                }
                n = n.saturating_add(1);
            };
            seen.insert(renamed.clone());
            node.name = renamed;
        }
        for attribute in &mut node.attribute {
            if let Some(subgraph) = attribute.g.as_mut() {
                unique_node_names(subgraph);
            }
            for subgraph in &mut attribute.graphs {
                unique_node_names(subgraph);
            }
        }
    }
}

fn load_error(e: impl Into<tract_onnx::prelude::TractError>) -> EngineError {
    let e: tract_onnx::prelude::TractError = e.into();
    EngineError::Load(format!("{e:#}"))
}

/// The part of a tract error that names the step, node and operator, without the details that
/// follow (which can print intermediate tensor values: never send or log those).
fn redacted(e: impl Into<tract_onnx::prelude::TractError>) -> String {
    let e: tract_onnx::prelude::TractError = e.into();
    let full = format!("{e:#}");
    full.split(": ").next().unwrap_or_default().to_owned()
}

/// What a model says about one of its tensors: element type and shape, where known.
#[derive(Clone, Debug, Default)]
struct Declared {
    datum: Option<DatumType>,
    shape: Option<Vec<Dim>>,
}

impl Declared {
    fn into_spec(self, name: String) -> Result<TensorSpec, EngineError> {
        let datum = self.datum.ok_or_else(|| {
            EngineError::Load(format!("tensor {name} has no declared element type"))
        })?;
        let dtype = data_type(datum).ok_or_else(|| EngineError::UnsupportedType {
            tensor: name.clone(),
            datum: format!("{datum:?}"),
        })?;
        let shape = self
            .shape
            .ok_or_else(|| EngineError::Load(format!("tensor {name} has no declared rank")))?;
        Ok(TensorSpec { name, dtype, shape })
    }
}

/// A dimension as declared: sizes are fixed, named dimensions keep their names, unknown ones
/// are called `tensor[axis]` (each its own).
fn declared_dim(tensor: &str, axis: usize, size: Option<i64>, symbol: Option<String>) -> Dim {
    match (size.and_then(|n| usize::try_from(n).ok()), symbol) {
        (Some(n), _) if size.is_some_and(|n| n > 0) => Dim::Fixed(n),
        (_, Some(symbol)) if !symbol.is_empty() => Dim::Dynamic(symbol),
        _ => Dim::Dynamic(format!("{tensor}[{axis}]")),
    }
}

/// What tract's fact for a tensor says.
fn fact_declared(name: &str, fact: &InferenceFact) -> Declared {
    let shape = (!fact.shape.is_open()).then(|| {
        fact.shape
            .dims()
            .enumerate()
            .map(|(axis, dim)| match dim {
                GenericFactoid::Only(d) => match d.to_i64() {
                    Ok(n) => declared_dim(name, axis, Some(n), None),
                    Err(_) => declared_dim(name, axis, None, Some(d.to_string())),
                },
                GenericFactoid::Any => declared_dim(name, axis, None, None),
            })
            .collect()
    });
    Declared {
        datum: fact.datum_type.concretize(),
        shape,
    }
}

/// What the ONNX graph declares for one of its outputs.
fn proto_declared(value: &pb::ValueInfoProto) -> Declared {
    use pb::tensor_shape_proto::dimension::Value as D;
    let Some(pb::type_proto::Value::TensorType(tensor)) =
        value.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Declared::default();
    };
    let datum = match tensor.elem_type {
        1 => Some(DatumType::F32),
        2 => Some(DatumType::U8),
        3 => Some(DatumType::I8),
        4 => Some(DatumType::U16),
        5 => Some(DatumType::I16),
        6 => Some(DatumType::I32),
        7 => Some(DatumType::I64),
        9 => Some(DatumType::Bool),
        10 => Some(DatumType::F16),
        11 => Some(DatumType::F64),
        12 => Some(DatumType::U32),
        13 => Some(DatumType::U64),
        8 => Some(DatumType::String),
        _ => None,
    };
    let shape = tensor.shape.as_ref().map(|shape| {
        shape
            .dim
            .iter()
            .enumerate()
            .map(|(axis, dim)| match &dim.value {
                Some(D::DimValue(n)) => declared_dim(&value.name, axis, Some(*n), None),
                Some(D::DimParam(symbol)) => {
                    declared_dim(&value.name, axis, None, Some(symbol.clone()))
                }
                None => declared_dim(&value.name, axis, None, None),
            })
            .collect()
    });
    Declared { datum, shape }
}

fn data_type(datum: DatumType) -> Option<DataType> {
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

fn datum_type(dtype: DataType) -> Option<DatumType> {
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

impl Prepared {
    /// The plan for these input shapes (in input order), compiled if it is not cached.
    fn plan(&self, shapes: Vec<Vec<usize>>) -> Result<Arc<TypedSimplePlan>, EngineError> {
        {
            let mut plans = self
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
        let mut model = self.model.clone();
        for (ix, (spec, shape)) in self.inputs.iter().zip(&shapes).enumerate() {
            let datum = datum_type(spec.dtype).ok_or_else(|| EngineError::UnsupportedType {
                tensor: spec.name.clone(),
                datum: spec.dtype.name().to_owned(),
            })?;
            let dims: Vec<TDim> = shape.iter().map(|&n| TDim::from(n)).collect();
            model
                .set_input_fact(ix, InferenceFact::dt_shape(datum, dims))
                .map_err(|e| EngineError::Shape(redacted(e)))?;
        }
        let compiled = catch_unwind(AssertUnwindSafe(|| {
            model.into_optimized().and_then(IntoRunnable::into_runnable)
        }));
        let plan = match compiled {
            Ok(Ok(plan)) => plan,
            Ok(Err(e)) => return Err(EngineError::Shape(redacted(e))),
            Err(_) => return Err(EngineError::Panicked),
        };
        let mut plans = self
            .plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if plans.len() >= MAX_PLANS {
            plans.remove(0);
        }
        plans.push((shapes, Arc::clone(&plan)));
        Ok(plan)
    }
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
        Session {
            model: self.clone(),
            state: None,
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

/// The state of one request's run over a [`PreparedModel`].
pub struct Session {
    model: PreparedModel,
    state: Option<(Arc<TypedSimplePlan>, TypedSimpleState)>,
}

impl Session {
    /// Runs the model. `inputs` must name every model input exactly once; the outputs come back
    /// in the model's order, with their names.
    pub fn run(
        &mut self,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>, EngineError> {
        let prepared = &self.model.inner;
        let mut by_name: HashMap<String, Tensor> = HashMap::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            if !prepared.inputs.iter().any(|spec| spec.name == name) {
                return Err(EngineError::UnknownInput(name));
            }
            if by_name.contains_key(&name) {
                return Err(EngineError::DuplicateInput(name));
            }
            by_name.insert(name, tensor);
        }
        let mut symbols: HashMap<&str, usize> = HashMap::new();
        let mut values = tvec!();
        let mut shapes = Vec::with_capacity(prepared.inputs.len());
        for spec in &prepared.inputs {
            let tensor = by_name
                .remove(&spec.name)
                .ok_or_else(|| EngineError::MissingInput(spec.name.clone()))?;
            spec.check(&tensor, &mut symbols)?;
            shapes.push(tensor.shape().to_vec());
            values.push(to_tract(spec, tensor)?);
        }
        let plan = prepared.plan(shapes)?;
        if !matches!(&self.state, Some((current, _)) if Arc::ptr_eq(current, &plan)) {
            let reused = {
                let mut idle = prepared
                    .idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                idle.iter()
                    .rposition(|(p, _)| Arc::ptr_eq(p, &plan))
                    .map(|at| idle.swap_remove(at))
            };
            self.state = match reused {
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
        prepared
            .outputs
            .iter()
            .zip(outputs)
            .map(|(spec, value)| Ok((spec.name.clone(), from_tract(spec, &value)?)))
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
            let mut idle = self
                .model
                .inner
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < MAX_IDLE_STATES {
                idle.push(state);
            }
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("model", &self.model.inner.name)
            .finish_non_exhaustive()
    }
}

fn run_error(e: impl Into<tract_onnx::prelude::TractError>) -> EngineError {
    EngineError::Run(redacted(e))
}

/// Copies the request's little-endian bytes into a tract tensor of the same type (one copy; the
/// machine is little-endian and the bytes were validated by [`Tensor::new`]).
fn to_tract(spec: &TensorSpec, tensor: Tensor) -> Result<TValue, EngineError> {
    let datum = datum_type(tensor.dtype()).ok_or_else(|| EngineError::UnsupportedType {
        tensor: spec.name.clone(),
        datum: tensor.dtype().name().to_owned(),
    })?;
    let mut value = TractTensor::zero_dt(datum, tensor.shape()).map_err(run_error)?;
    let mut view = value.try_as_plain_ram_mut().map_err(run_error)?;
    let target = view.as_bytes_mut();
    if target.len() != tensor.data().len() {
        return Err(EngineError::Run(format!(
            "input {}: {} bytes for a tensor of {}",
            spec.name,
            tensor.data().len(),
            target.len()
        )));
    }
    target.copy_from_slice(tensor.data());
    Ok(value.into_tvalue())
}

fn from_tract(spec: &TensorSpec, value: &TValue) -> Result<Tensor, EngineError> {
    let dtype = data_type(value.datum_type()).ok_or_else(|| EngineError::UnsupportedType {
        tensor: spec.name.clone(),
        datum: format!("{:?}", value.datum_type()),
    })?;
    let view = value.try_as_plain_ram().map_err(run_error)?;
    Tensor::new(dtype, value.shape().to_vec(), view.as_bytes().to_vec())
        .map_err(|e| EngineError::Run(format!("output {}: {e}", spec.name)))
}

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

    fn check<'a>(
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

/// Why a model does not load or a request does not run. Messages name inputs, data types and
/// shapes, never tensor values.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Two inputs that share a dynamic dimension give it different sizes.
    #[error(
        "input {input}: dimension {dimension} is {value} here but {earlier} in an earlier input"
    )]
    DimensionConflict {
        /// The input.
        input: String,
        /// The dimension's name.
        dimension: String,
        /// Its size in this input.
        value: usize,
        /// Its size in an earlier input.
        earlier: usize,
    },
    /// The same input was given twice.
    #[error("input {0} is given twice")]
    DuplicateInput(String),
    /// The model could not be parsed, analysed or optimized; the message names the failing
    /// node and operator.
    #[error("the model does not load: {0}")]
    Load(String),
    /// A model input was not given.
    #[error("input {0} is missing")]
    MissingInput(String),
    /// tract panicked while running the request; the session was discarded.
    #[error("the inference engine failed on this request (internal error)")]
    Panicked,
    /// tract failed while running the request (the message names the node and operator).
    #[error("inference failed: {0}")]
    Run(String),
    /// The model cannot be compiled for the request's input shapes (sizes the model's
    /// operators refuse, such as an image height a recognizer was not trained for); the message
    /// names the node and operator.
    #[error("the model cannot run on inputs of these shapes: {0}")]
    Shape(String),
    /// An input's shape does not fit the model.
    #[error("input {input}: shape {actual} does not fit the model's {expected}")]
    ShapeMismatch {
        /// The input.
        input: String,
        /// The model's shape (dynamic dimensions by name).
        expected: String,
        /// The shape given.
        actual: String,
    },
    /// An input's data type differs from the model's (no implicit conversions).
    #[error("input {input}: the model takes {expected}, not {actual}")]
    TypeMismatch {
        /// The input.
        input: String,
        /// The model's type.
        expected: DataType,
        /// The type given.
        actual: DataType,
    },
    /// The model has no input by this name.
    #[error("the model has no input {0}")]
    UnknownInput(String),
    /// A model input or output has a type Cloak cannot carry (strings, quantized or complex
    /// types at the model's boundary).
    #[error("tensor {tensor} has type {datum}, which Cloak cannot carry")]
    UnsupportedType {
        /// The tensor.
        tensor: String,
        /// tract's name for its type.
        datum: String,
    },
}

impl EngineError {
    /// A stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DimensionConflict { .. } => "dimension-conflict",
            Self::DuplicateInput(_) => "duplicate-input",
            Self::Load(_) => "model-load-failed",
            Self::MissingInput(_) => "missing-input",
            Self::Panicked => "engine-panicked",
            Self::Run(_) => "inference-failed",
            Self::Shape(_) => "shape-not-supported",
            Self::ShapeMismatch { .. } => "shape-mismatch",
            Self::TypeMismatch { .. } => "type-mismatch",
            Self::UnknownInput(_) => "unknown-input",
            Self::UnsupportedType { .. } => "unsupported-type",
        }
    }

    /// Whether the request (rather than the model or the engine) is at fault.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::DimensionConflict { .. }
                | Self::DuplicateInput(_)
                | Self::MissingInput(_)
                | Self::Shape(_)
                | Self::ShapeMismatch { .. }
                | Self::TypeMismatch { .. }
                | Self::UnknownInput(_)
        )
    }
}
