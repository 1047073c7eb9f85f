//! What goes wrong: [`KserveError`], why a body cannot be parsed or encoded, and [`ErrorBody`],
//! how a server sends it back.

use serde::{Deserialize, Serialize};

use super::MAX_JSON_DEPTH;
use crate::tensor::{DataType, MAX_RANK, TensorError};

/// Echoed client strings (names, keys, data types) are cut to this many characters in errors.
const MAX_ECHO_CHARS: usize = 64;

/// The body of every non-200 response: `{"error": "..."}`, sent as
/// [`CONTENT_TYPE_JSON`](super::CONTENT_TYPE_JSON).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
        }
    }
}

impl From<&KserveError> for ErrorBody {
    /// The error's message, which never holds tensor data.
    fn from(error: &KserveError) -> Self {
        Self::new(error.to_string())
    }
}

/// Why a body is not a valid KServe v2 request or response, or cannot be encoded.
///
/// Messages name tensors, fields, parameters, data types and shapes, never tensor values, and
/// echo client strings cut to 64 characters; they are safe to send back as an [`ErrorBody`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum KserveError {
    /// A tensor has both a JSON `data` array and a `binary_data_size`.
    #[error("tensor `{name}` has both `data` and `parameters.binary_data_size`; send one")]
    BinaryAndJsonData {
        /// The tensor.
        name: String,
    },
    /// The `binary_data_size` values reach past the end of the binary part.
    #[error(
        "the tensors' binary_data_size values need at least {needed} bytes after the JSON \
         header; the body has {available} (is Inference-Header-Content-Length right?)"
    )]
    BinaryDataShort {
        /// Bytes the tensors parsed so far need.
        needed: usize,
        /// Bytes after the JSON header.
        available: usize,
    },
    /// Bytes are left after the last binary tensor.
    #[error(
        "the tensors' binary_data_size values add up to {used} bytes, but {available} follow \
         the JSON header"
    )]
    BinaryDataTrailing {
        /// Bytes the tensors use.
        used: usize,
        /// Bytes after the JSON header.
        available: usize,
    },
    /// Two inputs share a name.
    #[error("input `{name}` appears twice")]
    DuplicateInput {
        /// The repeated name.
        name: String,
    },
    /// A JSON object repeats a key.
    #[error("the key `{key}` appears twice in one object")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// Two outputs (requested, or in a response) share a name.
    #[error("output `{name}` appears twice")]
    DuplicateOutput {
        /// The repeated name.
        name: String,
    },
    /// A tensor's JSON `data` holds more or fewer elements than its shape.
    #[error("tensor `{name}` has {found} elements in `data`; its shape needs {expected}")]
    ElementCountMismatch {
        /// The tensor.
        name: String,
        /// Elements the shape needs.
        expected: usize,
        /// Elements found.
        found: usize,
    },
    /// A JSON element does not fit the tensor's data type (`300` for `UINT8`, `1e39` for `FP32`).
    #[error("tensor `{name}`: element {index} is out of range for {dtype}")]
    ElementOutOfRange {
        /// The tensor.
        name: String,
        /// Its data type.
        dtype: DataType,
        /// The element's row-major index.
        index: usize,
    },
    /// A JSON element is of the wrong kind for the tensor's data type (`1.5` or `"1"` for
    /// `INT32`, `1` for `BOOL`).
    #[error("tensor `{name}`: element {index} is not {}, as {dtype} data needs", json_kind(*.dtype))]
    ElementTypeMismatch {
        /// The tensor.
        name: String,
        /// Its data type.
        dtype: DataType,
        /// The element's row-major index.
        index: usize,
    },
    /// A field holds the wrong kind of JSON value.
    #[error("`{field}` must be {expected}")]
    FieldTypeMismatch {
        /// The field.
        field: &'static str,
        /// What it must hold.
        expected: &'static str,
    },
    /// The header length is longer than the body.
    #[error(
        "Inference-Header-Content-Length is {header_len}, but the body has only {body_len} bytes"
    )]
    HeaderLengthExceedsBody {
        /// The header length given.
        header_len: usize,
        /// The body length.
        body_len: usize,
    },
    /// The header is JSON, but not an object.
    #[error("the inference header must be a JSON object")]
    HeaderNotObject,
    /// The header is not JSON: a syntax error, or it ends early.
    #[error("the inference header is not valid JSON (at line {line}, column {column})")]
    InvalidJson {
        /// The line of the error, from 1.
        line: usize,
        /// The column of the error, from 1.
        column: usize,
    },
    /// A parameter the protocol defines has a value of the wrong kind.
    #[error("parameter `{name}` must be {expected}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// What it must hold.
        expected: &'static str,
    },
    /// A tensor's bytes do not make a tensor of its data type and shape (a binary part of the
    /// wrong length, a `BOOL` byte other than 0 or 1, malformed `BYTES` length prefixes).
    #[error("tensor `{name}`: {source}")]
    InvalidTensor {
        /// The tensor.
        name: String,
        /// What is wrong with it.
        source: TensorError,
    },
    /// Arrays and objects nest deeper than [`MAX_JSON_DEPTH`].
    #[error("the inference header nests arrays and objects more than {MAX_JSON_DEPTH} deep")]
    JsonTooDeep,
    /// A tensor's `data` is not an array, or nests deeper than its shape has dimensions.
    #[error(
        "tensor `{name}`: `data` must be an array, flat or nested at most {} deep (its rank)",
        (*.rank).max(1)
    )]
    MalformedData {
        /// The tensor.
        name: String,
        /// The number of dimensions of its shape.
        rank: usize,
    },
    /// A tensor has neither `data` nor `binary_data_size`.
    #[error("tensor `{name}` has neither `data` nor `parameters.binary_data_size`")]
    MissingData {
        /// The tensor.
        name: String,
    },
    /// A required field is missing.
    #[error("the {object} object has no `{field}`")]
    MissingField {
        /// The object missing it (`request`, `input`, …).
        object: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A tensor's shape has a negative dimension.
    #[error("tensor `{name}` has a negative dimension")]
    NegativeDimension {
        /// The tensor.
        name: String,
    },
    /// A float tensor to be sent as JSON holds NaN or an infinity, which JSON cannot carry.
    #[error(
        "tensor `{name}` holds NaN or infinite values, which JSON cannot carry; request it as \
         binary data (`parameters.binary_data: true` on the output, or `binary_data_output: true`)"
    )]
    NonFiniteJson {
        /// The tensor.
        name: String,
    },
    /// A `BYTES` tensor to be sent as JSON holds an element that is not UTF-8 text.
    #[error(
        "tensor `{name}` holds BYTES that are not UTF-8 text, which JSON strings cannot carry; \
         request it as binary data (`parameters.binary_data: true` on the output, or \
         `binary_data_output: true`)"
    )]
    NonUtf8Json {
        /// The tensor.
        name: String,
    },
    /// A tensor's shape has more dimensions than [`MAX_RANK`].
    #[error("tensor `{name}` has {rank} dimensions; at most {MAX_RANK} are supported")]
    RankTooHigh {
        /// The tensor.
        name: String,
        /// Its number of dimensions.
        rank: usize,
    },
    /// A tensor's shape describes more elements than memory can address.
    #[error("tensor `{name}`: the shape's element count overflows")]
    ShapeOverflow {
        /// The tensor.
        name: String,
    },
    /// The tensors hold more elements than [`Limits::max_elements`](super::Limits::max_elements).
    #[error("the tensors hold more than {limit} elements in all")]
    TooManyElements {
        /// The limit.
        limit: usize,
    },
    /// More inputs than [`Limits::max_inputs`](super::Limits::max_inputs).
    #[error("more than {limit} inputs")]
    TooManyInputs {
        /// The limit.
        limit: usize,
    },
    /// More outputs than [`Limits::max_outputs`](super::Limits::max_outputs).
    #[error("more than {limit} outputs")]
    TooManyOutputs {
        /// The limit.
        limit: usize,
    },
    /// A tensor's data type is not one Cloak supports (`BF16`, or not a protocol name at all).
    #[error("tensor `{name}` has unsupported datatype `{datatype}`")]
    UnsupportedDatatype {
        /// The tensor.
        name: String,
        /// The data type given.
        datatype: String,
    },
    /// A tensor uses a protocol extension Cloak does not offer: shared memory (which would
    /// move tensors outside the enclave) or classification.
    #[error(
        "tensor `{name}`: parameter `{parameter}` belongs to an extension this server does not support"
    )]
    UnsupportedParameter {
        /// The tensor.
        name: String,
        /// The parameter.
        parameter: &'static str,
    },
}

impl KserveError {
    /// A stable kebab-case code for logs, scripts and the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BinaryAndJsonData { .. } => "binary-and-json-data",
            Self::BinaryDataShort { .. } => "binary-data-short",
            Self::BinaryDataTrailing { .. } => "binary-data-trailing",
            Self::DuplicateInput { .. } => "duplicate-input",
            Self::DuplicateKey { .. } => "duplicate-key",
            Self::DuplicateOutput { .. } => "duplicate-output",
            Self::ElementCountMismatch { .. } => "element-count-mismatch",
            Self::ElementOutOfRange { .. } => "element-out-of-range",
            Self::ElementTypeMismatch { .. } => "element-type-mismatch",
            Self::FieldTypeMismatch { .. } => "field-type-mismatch",
            Self::HeaderLengthExceedsBody { .. } => "header-length-exceeds-body",
            Self::HeaderNotObject => "header-not-object",
            Self::InvalidJson { .. } => "invalid-json",
            Self::InvalidParameter { .. } => "invalid-parameter",
            Self::InvalidTensor { .. } => "invalid-tensor",
            Self::JsonTooDeep => "json-too-deep",
            Self::MalformedData { .. } => "malformed-data",
            Self::MissingData { .. } => "missing-data",
            Self::MissingField { .. } => "missing-field",
            Self::NegativeDimension { .. } => "negative-dimension",
            Self::NonFiniteJson { .. } => "non-finite-json",
            Self::NonUtf8Json { .. } => "non-utf8-json",
            Self::RankTooHigh { .. } => "rank-too-high",
            Self::ShapeOverflow { .. } => "shape-overflow",
            Self::TooManyElements { .. } => "too-many-elements",
            Self::TooManyInputs { .. } => "too-many-inputs",
            Self::TooManyOutputs { .. } => "too-many-outputs",
            Self::UnsupportedDatatype { .. } => "unsupported-datatype",
            Self::UnsupportedParameter { .. } => "unsupported-parameter",
        }
    }

    /// The HTTP status Triton maps this kind of error to: 400 (invalid argument) for a
    /// malformed or over-limit body, 501 (unsupported) for an extension Cloak does not offer.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnsupportedParameter { .. } => 501,
            _ => 400,
        }
    }
}

/// A client string as errors show it: at most [`MAX_ECHO_CHARS`] characters.
pub(super) fn echo(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// What a JSON element of `dtype` data must be, for error messages.
fn json_kind(dtype: DataType) -> &'static str {
    match dtype {
        DataType::Bool => "true or false",
        DataType::Bytes => "a string",
        DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => "a number",
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Uint8
        | DataType::Uint16
        | DataType::Uint32
        | DataType::Uint64 => "an integer",
    }
}
