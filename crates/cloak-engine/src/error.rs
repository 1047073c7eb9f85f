//! Why a model does not load or a request does not run, and whose fault it is.
//! Backend-neutral: each backend's errors become these in its `convert`.

use cloak_proto::tensor::DataType;

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
    /// The engine's library could not be loaded: missing, not ONNX Runtime, older than this
    /// build supports, or another library already loaded in this process.
    #[error("the inference engine is unavailable: {0}")]
    Library(String),
    /// The model could not be parsed, analysed or optimized; the message names the failing
    /// node and operator.
    #[error("the model does not load: {0}")]
    Load(String),
    /// A model input was not given.
    #[error("input {0} is missing")]
    MissingInput(String),
    /// The backend panicked while running the request; the session was discarded.
    #[error("the inference engine failed on this request (internal error)")]
    Panicked,
    /// The backend failed while running the request (the message names the node and
    /// operator).
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
        /// The backend's name for its type.
        datum: String,
    },
}

impl EngineError {
    /// A stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DimensionConflict { .. } => "dimension-conflict",
            Self::DuplicateInput(_) => "duplicate-input",
            Self::Library(_) => "engine-unavailable",
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
