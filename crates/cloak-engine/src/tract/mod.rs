//! The tract backend: pure Rust, compiled in.
//!
//! Loading parses an ONNX model from bytes in memory, refuses operators tract lacks, and reads
//! the signature from what the model declares (and, where it declares nothing, from type
//! inference). `model` keeps the parsed model, its compiled plans and idle run states, and runs
//! requests; `plan` compiles; `convert` maps types, tensors and errors to and from tract's.

mod convert;
mod model;
mod plan;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;

use tract_linalg::multithread::Executor;
use tract_onnx::pb;
use tract_onnx::prelude::{DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt};
use tract_onnx::tract_hir::infer::{Factoid, GenericFactoid};

use self::convert::{data_type, load_error};
pub(crate) use self::model::{Model, SessionState};
use crate::{Dim, EngineError, TensorSpec};

/// tract's configuration: the thread pool its matrix products run on, when a request may use
/// more than one thread.
#[derive(Clone)]
pub(crate) struct Runtime {
    executor: Option<Executor>,
}

impl Runtime {
    pub(crate) fn new(threads: NonZeroUsize) -> Self {
        let executor = (threads.get() > 1)
            .then(|| Executor::multithread_with_name(threads.get(), "cloak-tract"));
        Self { executor }
    }
}

/// Parses and analyses an ONNX model held in memory.
///
/// Node names are made unique first (some exporters repeat them, which tract refuses). Some
/// exporters also write intermediate shape annotations (`value_info`) that tract cannot
/// reconcile; they are ignored. Errors name the failing node and operator.
pub(crate) fn load(
    runtime: &Runtime,
    onnx: &[u8],
) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>, Model), EngineError> {
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
    let declared_shapes = match proto
        .metadata_props
        .iter()
        .find(|entry| entry.key == model::PRECOMPILE_KEY)
    {
        Some(entry) => model::parse_declared(&entry.value)?,
        None => Vec::new(),
    };
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
    Ok((
        inputs,
        outputs,
        Model::new(model, runtime.executor.clone(), declared_shapes),
    ))
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
        Ok(TensorSpec::new(name, dtype, shape))
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
