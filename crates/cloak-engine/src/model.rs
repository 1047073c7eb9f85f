//! A loaded model, shared by every request: its signature, the engine that loaded it, and the
//! backend's compiled form of it.

use std::fmt;
use std::sync::Arc;

use crate::{EngineError, EngineInfo, Session, TensorSpec, onnxruntime, tract};

/// A loaded model: immutable and shared (cloning is an `Arc` clone).
#[derive(Clone)]
pub struct PreparedModel {
    inner: Arc<Prepared>,
}

struct Prepared {
    name: String,
    source_bytes: usize,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    engine: Arc<EngineInfo>,
    backend: Backend,
}

/// The backend's form of a model.
pub(crate) enum Backend {
    OnnxRuntime(onnxruntime::Model),
    Tract(Box<tract::Model>),
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

    /// The engine that runs it.
    pub fn engine(&self) -> &EngineInfo {
        &self.inner.engine
    }

    /// Plans compiled for this model since it was loaded (tract compiles one per distinct set
    /// of input shapes; ONNX Runtime, which plans inside its session, counts none).
    pub fn plans_compiled(&self) -> u64 {
        match &self.inner.backend {
            Backend::Tract(model) => model.compilations(),
            Backend::OnnxRuntime(_) => 0,
        }
    }

    /// A session for one request.
    pub fn session(&self) -> Session {
        Session::new(self.clone())
    }

    /// A model ready for requests. A tract model with only fixed dimensions is compiled here,
    /// once, and a failure to compile it is a failure to load.
    pub(crate) fn new(
        name: String,
        source_bytes: usize,
        inputs: Vec<TensorSpec>,
        outputs: Vec<TensorSpec>,
        engine: Arc<EngineInfo>,
        backend: Backend,
    ) -> Result<Self, EngineError> {
        if let Backend::Tract(model) = &backend
            && let Some(shapes) = inputs
                .iter()
                .map(TensorSpec::fixed_shape)
                .collect::<Option<Vec<_>>>()
        {
            model.plan(&inputs, shapes).map_err(|e| match e {
                EngineError::Shape(message) => EngineError::Load(message),
                other => other,
            })?;
        }
        if let Backend::Tract(model) = &backend {
            model.compile_declared(&inputs).map_err(|e| match e {
                EngineError::Shape(message) => EngineError::Load(message),
                other => other,
            })?;
        }
        Ok(Self {
            inner: Arc::new(Prepared {
                name,
                source_bytes,
                inputs,
                outputs,
                engine,
                backend,
            }),
        })
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner.backend
    }
}

impl fmt::Debug for PreparedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedModel")
            .field("name", &self.inner.name)
            .field("engine", &self.inner.engine.kind())
            .field("inputs", &self.inner.inputs)
            .field("outputs", &self.inner.outputs)
            .finish_non_exhaustive()
    }
}
