//! The KServe v2 (Open Inference Protocol) HTTP inference codec, with Triton's binary tensor data
//! extension, and no transport: the caller passes body bytes and the value of the
//! [`Inference-Header-Content-Length`](HEADER_CONTENT_LENGTH) header, and gets back tensors; or
//! passes tensors and gets back body bytes and that header's value.
//!
//! Both sides are here. A server parses an [`InferRequest`] and encodes an [`InferResponse`]; a
//! client encodes the request and parses the response. The metadata, readiness, health and error
//! objects of the protocol are plain serde types ([`ServerMetadata`], [`ModelMetadata`],
//! [`ModelReady`], [`ServerLive`], [`ServerReady`], [`ErrorBody`]).
//!
//! Parsing is one pass over the JSON header. Tensor `data` arrays are decoded straight into
//! little-endian element bytes as they are read, without an intermediate JSON tree; binary tensors
//! are copied once, from the body into their [`Tensor`]. Element counts are checked against
//! [`Limits`] before anything is allocated for them. Every buffer that holds tensor data is
//! zeroized when it is dropped or outgrown, and no error message ever contains a data value: they
//! name tensors, fields, data types and shapes only.
//!
//! The crate README specifies the accepted and produced JSON field by field.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;

use cloak_crypto::secret::SecretBytes;
use half::f16;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::tensor::{self, DataType, MAX_RANK, Tensor, TensorError};

/// The HTTP header that carries the length of the JSON part of a body followed by binary tensor
/// data. Required on requests and responses whenever any tensor is binary.
pub const HEADER_CONTENT_LENGTH: &str = "Inference-Header-Content-Length";

/// The name under which servers list the binary tensor data extension in `GET /v2`.
pub const BINARY_TENSOR_DATA_EXTENSION: &str = "binary_tensor_data";

/// The content type of bodies that carry binary tensor data.
pub const CONTENT_TYPE_BINARY: &str = "application/octet-stream";

/// The content type of JSON-only bodies, error bodies included.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// How deeply arrays and objects may nest in an inference header. The protocol's own objects
/// nest at most 19 deep (a rank-16 tensor's nested `data`); deeper JSON can only come from
/// unknown fields, and is refused with [`KserveError::JsonTooDeep`].
pub const MAX_JSON_DEPTH: usize = 32;

/// The request parameter that asks for binary outputs by default.
const BINARY_DATA_OUTPUT: &str = "binary_data_output";
/// The input and output parameter that gives a tensor's length in the binary part.
const BINARY_DATA_SIZE: &str = "binary_data_size";
/// The requested-output parameter that asks for this output as binary (or JSON).
const BINARY_DATA: &str = "binary_data";
/// Tensor parameters of extensions Cloak refuses: shared memory would let the host read or write
/// tensors outside the enclave, and classification would change what an output means.
const SHARED_MEMORY_PARAMETERS: [&str; 3] = [
    "shared_memory_byte_size",
    "shared_memory_offset",
    "shared_memory_region",
];
/// The classification extension's requested-output parameter.
const CLASSIFICATION: &str = "classification";
/// Echoed client strings (names, keys, data types) are cut to this many characters in errors.
const MAX_ECHO_CHARS: usize = 64;

/// Bounds on what one inference header may ask the parser to build.
///
/// The body length itself is the transport's to bound; these limits keep a small body from
/// claiming a large allocation, and are checked before anything is allocated.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most tensor elements, summed over all tensors of a request or response. `BYTES`
    /// elements count one each, whatever their length.
    pub max_elements: usize,
    /// The most input tensors in a request.
    pub max_inputs: usize,
    /// The most requested outputs in a request, and the most output tensors in a response.
    pub max_outputs: usize,
}

impl Default for Limits {
    /// 16 Mi elements (64 MiB of `FP32`), 64 inputs and 64 outputs.
    fn default() -> Self {
        Self {
            max_elements: 16_777_216,
            max_inputs: 64,
            max_outputs: 64,
        }
    }
}

/// How a tensor travels in a body: as a JSON `data` array, or as raw bytes after the JSON header.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorEncoding {
    /// Raw little-endian bytes in the binary part, sized by `parameters.binary_data_size`.
    Binary,
    /// A flat, row-major JSON `data` array.
    Json,
}

/// A tensor with the name it has in a request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedTensor {
    name: String,
    tensor: Tensor,
}

impl NamedTensor {
    /// Names a tensor.
    pub fn new(name: impl Into<String>, tensor: Tensor) -> Self {
        Self {
            name: name.into(),
            tensor,
        }
    }

    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// The name and the tensor.
    pub fn into_parts(self) -> (String, Tensor) {
        (self.name, self.tensor)
    }
}

/// A parameter value: the protocol allows strings, numbers and booleans.
///
/// JSON integers parse as [`Int`](Self::Int) when they fit an `i64` and as [`Uint`](Self::Uint)
/// above that; other numbers parse as [`Float`](Self::Float).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Parameter {
    /// A boolean.
    Bool(bool),
    /// A number with a fraction or an exponent.
    Float(f64),
    /// An integer.
    Int(i64),
    /// A string.
    String(String),
    /// An integer above `i64::MAX`.
    Uint(u64),
}

impl Parameter {
    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(value) => Some(*value),
            _ => None,
        }
    }

    /// The integer, if this is one that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(value) => Some(*value),
            Self::Uint(value) => i64::try_from(*value).ok(),
            _ => None,
        }
    }

    /// The integer, if this is a non-negative one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Int(value) => u64::try_from(*value).ok(),
            Self::Uint(value) => Some(*value),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(value) => Some(value),
            _ => None,
        }
    }
}

/// The `parameters` object of a request, input, output or response: named [`Parameter`]s.
///
/// Parsing refuses a name given twice rather than letting the last one win.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parameters(BTreeMap<String, Parameter>);

impl Parameters {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&Parameter> {
        self.0.get(name)
    }

    /// Sets a parameter, returning the value it replaces.
    pub fn insert(&mut self, name: impl Into<String>, value: Parameter) -> Option<Parameter> {
        self.0.insert(name.into(), value)
    }

    /// Removes a parameter, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Parameter> {
        self.0.remove(name)
    }

    /// The parameters, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Parameter)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value))
    }

    /// How many parameters there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, Parameter)> for Parameters {
    fn from_iter<I: IntoIterator<Item = (String, Parameter)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// An output a request asks for, and how it wants it encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedOutput {
    name: String,
    encoding: Option<TensorEncoding>,
}

impl RequestedOutput {
    /// Asks for the output `name`, encoded as the request's `binary_data_output` says.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            encoding: None,
        }
    }

    /// Asks for this output in the given encoding (the `binary_data` parameter).
    pub fn with_encoding(mut self, encoding: TensorEncoding) -> Self {
        self.encoding = Some(encoding);
        self
    }

    /// The output's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The encoding asked for this output, if the request named one (`binary_data`).
    pub fn encoding(&self) -> Option<TensorEncoding> {
        self.encoding
    }
}

/// An inference request: `POST /v2/models/{model}[/versions/{version}]/infer`.
///
/// A parsed request is well-formed: input names are unique, every input is a valid [`Tensor`],
/// requested outputs are unique, and the binary part was consumed exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    id: Option<String>,
    parameters: Parameters,
    inputs: Vec<NamedTensor>,
    outputs: Vec<RequestedOutput>,
    binary_data_output: bool,
}

impl InferRequest {
    /// A request over `inputs`, asking for every output as JSON; add to it with the `with_`
    /// methods.
    pub fn new(inputs: Vec<NamedTensor>) -> Self {
        Self {
            id: None,
            parameters: Parameters::new(),
            inputs,
            outputs: Vec::new(),
            binary_data_output: false,
        }
    }

    /// Sets the request id, which the response echoes.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the request parameters. A `binary_data_output` among them is ignored in favour of
    /// [`with_binary_data_output`](Self::with_binary_data_output).
    pub fn with_parameters(mut self, parameters: Parameters) -> Self {
        self.parameters = parameters;
        self
    }

    /// Asks for an output by name (when none are asked for, the server returns them all).
    pub fn with_output(mut self, output: RequestedOutput) -> Self {
        self.outputs.push(output);
        self
    }

    /// Asks for outputs in binary unless a [`RequestedOutput`] says otherwise.
    pub fn with_binary_data_output(mut self, binary: bool) -> Self {
        self.binary_data_output = binary;
        self
    }

    /// Parses a request body. `header_len` is the `Inference-Header-Content-Length` value: the
    /// length of the JSON header at the start of `body`, followed by the binary part; `None`
    /// means the whole body is JSON.
    ///
    /// The caller owns `body` and should zeroize it once the request has been parsed: the
    /// tensors are copies.
    pub fn parse(
        body: &[u8],
        header_len: Option<usize>,
        limits: &Limits,
    ) -> Result<Self, KserveError> {
        let (header, binary) = split_body(body, header_len)?;
        let mut ctx = Ctx::new(limits, header.len(), binary);
        let request = parse_json(header, RequestSeed { ctx: &mut ctx });
        let request = request.map_err(|err| ctx.take_error(&err))?;
        ctx.finish()?;
        Ok(request)
    }

    /// The request id, to echo in the response.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The request parameters, except `binary_data_output`, which
    /// [`binary_data_output`](Self::binary_data_output) interprets. Unknown parameters are kept.
    pub fn parameters(&self) -> &Parameters {
        &self.parameters
    }

    /// The input tensors, in request order.
    pub fn inputs(&self) -> &[NamedTensor] {
        &self.inputs
    }

    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&Tensor> {
        self.inputs
            .iter()
            .find(|input| input.name == name)
            .map(NamedTensor::tensor)
    }

    /// The input tensors, moved out.
    pub fn into_inputs(self) -> Vec<NamedTensor> {
        self.inputs
    }

    /// The outputs asked for, in request order; empty means every output.
    pub fn outputs(&self) -> &[RequestedOutput] {
        &self.outputs
    }

    /// Whether outputs come back binary by default (`parameters.binary_data_output`).
    pub fn binary_data_output(&self) -> bool {
        self.binary_data_output
    }

    /// How the output `name` should be encoded in the response: its own `binary_data` if the
    /// request gave one, else `binary_data_output`. Pass this to [`InferResponse::encode`].
    pub fn output_encoding(&self, name: &str) -> TensorEncoding {
        let requested = self
            .outputs
            .iter()
            .find(|output| output.name == name)
            .and_then(RequestedOutput::encoding);
        match requested {
            Some(encoding) => encoding,
            None if self.binary_data_output => TensorEncoding::Binary,
            None => TensorEncoding::Json,
        }
    }

    /// Encodes the request body, each input as `encoding(name)` says.
    ///
    /// Fails for duplicate input or output names, and for inputs asked to go as JSON that JSON
    /// cannot carry (non-finite floats, non-UTF-8 `BYTES`).
    pub fn encode(
        &self,
        encoding: impl Fn(&str) -> TensorEncoding,
    ) -> Result<EncodedBody, KserveError> {
        let encodings: Vec<TensorEncoding> = self
            .inputs
            .iter()
            .map(|input| encoding(&input.name))
            .collect();
        check_unique(self.outputs.iter().map(RequestedOutput::name), Role::Output)?;
        let header = RequestHeader {
            id: self.id.as_deref(),
            parameters: RequestParameters {
                parameters: &self.parameters,
                binary_data_output: self.binary_data_output,
            },
            inputs: tensor_headers(&self.inputs, &encodings, Role::Input)?,
            outputs: self
                .outputs
                .iter()
                .map(|output| OutputHeader {
                    name: &output.name,
                    parameters: output.encoding.map(|encoding| BinaryDataFlag {
                        binary_data: encoding == TensorEncoding::Binary,
                    }),
                })
                .collect(),
        };
        Ok(encode_body(&header, &self.inputs, &encodings))
    }
}

/// An inference response.
#[derive(Clone, Debug, PartialEq)]
pub struct InferResponse {
    model_name: String,
    model_version: Option<String>,
    id: Option<String>,
    parameters: Parameters,
    outputs: Vec<NamedTensor>,
}

impl InferResponse {
    /// A response from `model_name` carrying `outputs`.
    pub fn new(model_name: impl Into<String>, outputs: Vec<NamedTensor>) -> Self {
        Self {
            model_name: model_name.into(),
            model_version: None,
            id: None,
            parameters: Parameters::new(),
            outputs,
        }
    }

    /// Sets the model version (servers without versioning should not send one).
    pub fn with_model_version(mut self, version: impl Into<String>) -> Self {
        self.model_version = Some(version.into());
        self
    }

    /// Sets the id: the request's id, which the response must echo.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the response parameters.
    pub fn with_parameters(mut self, parameters: Parameters) -> Self {
        self.parameters = parameters;
        self
    }

    /// Parses a response body; `header_len` as for [`InferRequest::parse`]. `limits.max_outputs`
    /// bounds the output tensors.
    pub fn parse(
        body: &[u8],
        header_len: Option<usize>,
        limits: &Limits,
    ) -> Result<Self, KserveError> {
        let (header, binary) = split_body(body, header_len)?;
        let mut ctx = Ctx::new(limits, header.len(), binary);
        let response = parse_json(header, ResponseSeed { ctx: &mut ctx });
        let response = response.map_err(|err| ctx.take_error(&err))?;
        ctx.finish()?;
        Ok(response)
    }

    /// The model that answered.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The model version, if the server sent one.
    pub fn model_version(&self) -> Option<&str> {
        self.model_version.as_deref()
    }

    /// The request id this answers.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The response parameters.
    pub fn parameters(&self) -> &Parameters {
        &self.parameters
    }

    /// The output tensors, in response order.
    pub fn outputs(&self) -> &[NamedTensor] {
        &self.outputs
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&Tensor> {
        self.outputs
            .iter()
            .find(|output| output.name == name)
            .map(NamedTensor::tensor)
    }

    /// The output tensors, moved out.
    pub fn into_outputs(self) -> Vec<NamedTensor> {
        self.outputs
    }

    /// Encodes the response body, each output as `encoding(name)` says; a server passes
    /// `|name| request.output_encoding(name)`.
    ///
    /// Binary outputs follow the JSON header in output order, and the body then has a
    /// [`header_len`](EncodedBody::header_len). Fails for duplicate output names, and for
    /// outputs asked for as JSON that JSON cannot carry: NaN or infinite floats and non-UTF-8
    /// `BYTES` ([`KserveError::NonFiniteJson`], [`KserveError::NonUtf8Json`]), whose messages
    /// tell the client to ask for binary output.
    pub fn encode(
        &self,
        encoding: impl Fn(&str) -> TensorEncoding,
    ) -> Result<EncodedBody, KserveError> {
        let encodings: Vec<TensorEncoding> = self
            .outputs
            .iter()
            .map(|output| encoding(&output.name))
            .collect();
        let header = ResponseHeader {
            model_name: &self.model_name,
            model_version: self.model_version.as_deref(),
            id: self.id.as_deref(),
            parameters: &self.parameters,
            outputs: tensor_headers(&self.outputs, &encodings, Role::Output)?,
        };
        Ok(encode_body(&header, &self.outputs, &encodings))
    }
}

/// An encoded request or response body. It holds tensor data, so it is zeroized on drop and its
/// `Debug` shows only lengths.
#[derive(Clone)]
pub struct EncodedBody {
    body: SecretBytes,
    header_len: Option<usize>,
}

impl EncodedBody {
    /// The body: the JSON header, then the binary tensors.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The length of the JSON header when binary tensors follow it: send it as
    /// [`HEADER_CONTENT_LENGTH`]. `None` for a JSON-only body.
    pub fn header_len(&self) -> Option<usize> {
        self.header_len
    }

    /// The `Content-Type` to send: [`CONTENT_TYPE_BINARY`] when binary tensors follow the
    /// header, else [`CONTENT_TYPE_JSON`].
    pub fn content_type(&self) -> &'static str {
        match self.header_len {
            Some(_) => CONTENT_TYPE_BINARY,
            None => CONTENT_TYPE_JSON,
        }
    }

    /// The body, zeroized when the returned buffer drops.
    pub fn into_body(self) -> SecretBytes {
        self.body
    }
}

impl fmt::Debug for EncodedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedBody")
            .field("bytes", &self.body.len())
            .field("header_len", &self.header_len)
            .finish()
    }
}

/// `GET /v2`: the server's name, version and protocol extensions.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// The server's name.
    pub name: String,
    /// The server's version.
    pub version: String,
    /// The extensions it supports, such as [`BINARY_TENSOR_DATA_EXTENSION`].
    pub extensions: Vec<String>,
}

impl ServerMetadata {
    /// Server metadata.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        extensions: Vec<String>,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            extensions,
        }
    }
}

/// `GET /v2/models/{model}[/versions/{version}]`: a model's tensors.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// The versions available; empty (and then not sent) for servers without versioning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// The framework, as `<project>_<format>` (clients ignore it).
    pub platform: String,
    /// The inputs the model takes.
    pub inputs: Vec<TensorMetadata>,
    /// The outputs it produces.
    pub outputs: Vec<TensorMetadata>,
}

impl ModelMetadata {
    /// Model metadata without versions.
    pub fn new(
        name: impl Into<String>,
        platform: impl Into<String>,
        inputs: Vec<TensorMetadata>,
        outputs: Vec<TensorMetadata>,
    ) -> Self {
        Self {
            name: name.into(),
            versions: Vec::new(),
            platform: platform.into(),
            inputs,
            outputs,
        }
    }
}

/// One input or output in [`ModelMetadata`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorMetadata {
    /// The tensor's name.
    pub name: String,
    /// Its element type, by protocol name.
    #[serde(with = "datatype_name")]
    pub datatype: DataType,
    /// Its shape; [`Dimension::Dynamic`] travels as `-1`.
    pub shape: Vec<Dimension>,
}

impl TensorMetadata {
    /// Tensor metadata.
    pub fn new(name: impl Into<String>, datatype: DataType, shape: Vec<Dimension>) -> Self {
        Self {
            name: name.into(),
            datatype,
            shape,
        }
    }
}

/// A dimension in [`TensorMetadata`]: fixed, or chosen per request.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Any size (`-1` on the wire).
    Dynamic,
    /// Exactly this size.
    Fixed(u64),
}

impl Serialize for Dimension {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Dynamic => serializer.serialize_i64(-1),
            Self::Fixed(size) => serializer.serialize_u64(*size),
        }
    }
}

impl<'de> Deserialize<'de> for Dimension {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DimensionVisitor;
        impl Visitor<'_> for DimensionVisitor {
            type Value = Dimension;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer, or -1 for a dynamic dimension")
            }
            fn visit_u64<E: de::Error>(self, size: u64) -> Result<Dimension, E> {
                Ok(Dimension::Fixed(size))
            }
            fn visit_i64<E: de::Error>(self, size: i64) -> Result<Dimension, E> {
                match u64::try_from(size) {
                    Ok(size) => Ok(Dimension::Fixed(size)),
                    Err(_) if size == -1 => Ok(Dimension::Dynamic),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(size), &self)),
                }
            }
        }
        deserializer.deserialize_i64(DimensionVisitor)
    }
}

/// `GET /v2/models/{model}[/versions/{version}]/ready`.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelReady {
    /// The model's name.
    pub name: String,
    /// Whether it can serve inference requests.
    pub ready: bool,
}

impl ModelReady {
    /// A model's readiness.
    pub fn new(name: impl Into<String>, ready: bool) -> Self {
        Self {
            name: name.into(),
            ready,
        }
    }
}

/// `GET /v2/health/live`. Send it with status 200 when live and 503 when not: tritonclient
/// reads only the status, the kserve client reads the body.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLive {
    /// Whether the server is live.
    pub live: bool,
}

impl ServerLive {
    /// The server's liveness.
    pub fn new(live: bool) -> Self {
        Self { live }
    }
}

/// `GET /v2/health/ready`, sent like [`ServerLive`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReady {
    /// Whether the server is ready.
    pub ready: bool,
}

impl ServerReady {
    /// The server's readiness.
    pub fn new(ready: bool) -> Self {
        Self { ready }
    }
}

/// The body of every non-200 response: `{"error": "..."}`, sent as [`CONTENT_TYPE_JSON`].
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
    /// The tensors hold more elements than [`Limits::max_elements`].
    #[error("the tensors hold more than {limit} elements in all")]
    TooManyElements {
        /// The limit.
        limit: usize,
    },
    /// More inputs than [`Limits::max_inputs`].
    #[error("more than {limit} inputs")]
    TooManyInputs {
        /// The limit.
        limit: usize,
    },
    /// More outputs than [`Limits::max_outputs`].
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

/// Splits a body into its JSON header and binary part.
fn split_body(body: &[u8], header_len: Option<usize>) -> Result<(&[u8], &[u8]), KserveError> {
    match header_len {
        None => Ok((body, &[])),
        Some(header_len) => {
            body.split_at_checked(header_len)
                .ok_or(KserveError::HeaderLengthExceedsBody {
                    header_len,
                    body_len: body.len(),
                })
        }
    }
}

/// Runs `seed` over the whole of `header`, refusing trailing characters.
fn parse_json<'de, S: DeserializeSeed<'de>>(
    header: &'de [u8],
    seed: S,
) -> Result<S::Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(header);
    let value = seed.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// A client string as errors show it: at most [`MAX_ECHO_CHARS`] characters.
fn echo(text: &str) -> String {
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

/// Whether a tensor list holds a request's inputs or a response's (or request's) outputs:
/// picks the limit and the error variants.
#[derive(Clone, Copy)]
enum Role {
    Input,
    Output,
}

impl Role {
    fn object(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }

    fn list(self) -> &'static str {
        match self {
            Self::Input => "inputs",
            Self::Output => "outputs",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Self::Input => "an array of input objects",
            Self::Output => "an array of output objects",
        }
    }

    fn limit(self, limits: &Limits) -> usize {
        match self {
            Self::Input => limits.max_inputs,
            Self::Output => limits.max_outputs,
        }
    }

    fn too_many(self, limits: &Limits) -> KserveError {
        let limit = self.limit(limits);
        match self {
            Self::Input => KserveError::TooManyInputs { limit },
            Self::Output => KserveError::TooManyOutputs { limit },
        }
    }

    fn duplicate(self, name: &str) -> KserveError {
        let name = echo(name);
        match self {
            Self::Input => KserveError::DuplicateInput { name },
            Self::Output => KserveError::DuplicateOutput { name },
        }
    }
}

// ---- Parsing ----------------------------------------------------------------------------------
//
// The header is parsed by serde seeds that carry a `Ctx`: the limits, the element budget, the
// binary part and how much of it the tensors have taken. serde errors can only carry strings, so
// a seed that rejects something records the typed `KserveError` in the context first
// (`Ctx::fail`) and the parse function returns that. Type errors raised by serde itself (a string
// where an array belongs) are attributed to the field recorded just before reading it (the
// "crumb"); anything else serde reports is a syntax error.

/// Parse state shared by every seed of one header.
struct Ctx<'b> {
    binary: &'b [u8],
    binary_used: usize,
    crumb: Crumb,
    elements_left: usize,
    error: Option<KserveError>,
    header_len: usize,
    limits: Limits,
}

/// The field being read, for errors serde raises about its type.
#[derive(Clone, Copy)]
enum Crumb {
    Field {
        field: &'static str,
        expected: &'static str,
    },
    Header,
}

impl<'b> Ctx<'b> {
    fn new(limits: &Limits, header_len: usize, binary: &'b [u8]) -> Self {
        Self {
            binary,
            binary_used: 0,
            crumb: Crumb::Header,
            elements_left: limits.max_elements,
            error: None,
            header_len,
            limits: *limits,
        }
    }

    /// Records that `field`, about to be read, must hold `expected`.
    fn expect(&mut self, field: &'static str, expected: &'static str) {
        self.crumb = Crumb::Field { field, expected };
    }

    /// Records `error` (unless an earlier one is recorded) and returns a serde error that aborts
    /// the parse.
    fn fail<E: de::Error>(&mut self, error: KserveError) -> E {
        self.error.get_or_insert(error);
        E::custom("the inference header was rejected")
    }

    /// Fails if an object key was already seen.
    fn unique<E: de::Error>(&mut self, seen: bool, key: &str) -> Result<(), E> {
        if seen {
            return Err(self.fail(KserveError::DuplicateKey { key: echo(key) }));
        }
        Ok(())
    }

    /// The error a failed parse stands for.
    fn take_error(&mut self, err: &serde_json::Error) -> KserveError {
        if let Some(error) = self.error.take() {
            return error;
        }
        match (err.is_data(), self.crumb) {
            (true, Crumb::Header) => KserveError::HeaderNotObject,
            (true, Crumb::Field { field, expected }) => {
                KserveError::FieldTypeMismatch { field, expected }
            }
            (false, _) => KserveError::InvalidJson {
                line: err.line(),
                column: err.column(),
            },
        }
    }

    /// Counts a tensor's elements against the budget, before anything is allocated for them.
    fn charge(&mut self, name: &str, shape: &[usize]) -> Result<usize, KserveError> {
        let elements = tensor::element_count(shape).map_err(|err| match err {
            TensorError::RankTooHigh(rank) => KserveError::RankTooHigh {
                name: echo(name),
                rank,
            },
            _ => KserveError::ShapeOverflow { name: echo(name) },
        })?;
        self.elements_left =
            self.elements_left
                .checked_sub(elements)
                .ok_or(KserveError::TooManyElements {
                    limit: self.limits.max_elements,
                })?;
        Ok(elements)
    }

    /// The next `size` bytes of the binary part.
    fn take_binary(&mut self, size: usize) -> Result<&'b [u8], KserveError> {
        let short = KserveError::BinaryDataShort {
            needed: self.binary_used.saturating_add(size),
            available: self.binary.len(),
        };
        let end = self.binary_used.checked_add(size).ok_or(short.clone())?;
        let bytes = self.binary.get(self.binary_used..end).ok_or(short)?;
        self.binary_used = end;
        Ok(bytes)
    }

    /// Fails if the tensors left part of the binary part unused.
    fn finish(&self) -> Result<(), KserveError> {
        if self.binary_used != self.binary.len() {
            return Err(KserveError::BinaryDataTrailing {
                used: self.binary_used,
                available: self.binary.len(),
            });
        }
        Ok(())
    }
}

/// Declares the known keys of one JSON object, and how they deserialize (any other key is
/// `Unknown`, and skipped).
macro_rules! object_keys {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $key:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        enum $name {
            $($variant,)*
            Unknown,
        }

        impl $name {
            fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $key,)*
                    Self::Unknown => "",
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_identifier(KeyVisitor(|key: &str| match key {
                    $($key => Self::$variant,)*
                    _ => Self::Unknown,
                }))
            }
        }
    };
}

object_keys!(
    /// Keys of `$inference_request`.
    RequestKey {
        Id => "id",
        Inputs => "inputs",
        Outputs => "outputs",
        Parameters => "parameters",
    }
);

object_keys!(
    /// Keys of `$inference_response`.
    ResponseKey {
        Id => "id",
        ModelName => "model_name",
        ModelVersion => "model_version",
        Outputs => "outputs",
        Parameters => "parameters",
    }
);

object_keys!(
    /// Keys of `$request_input` and `$response_output`.
    TensorKey {
        Data => "data",
        Datatype => "datatype",
        Name => "name",
        Parameters => "parameters",
        Shape => "shape",
    }
);

object_keys!(
    /// Keys of `$request_output`.
    OutputKey {
        Name => "name",
        Parameters => "parameters",
    }
);

/// Maps an object key to its enum without allocating.
struct KeyVisitor<F>(F);

impl<K, F: FnOnce(&str) -> K> Visitor<'_> for KeyVisitor<F> {
    type Value = K;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<K, E> {
        Ok((self.0)(key))
    }
}

/// What `parameters` must hold, for type errors.
const PARAMETERS_EXPECTED: &str = "an object of string, number and boolean values";

/// `$inference_request`, at depth 1.
struct RequestSeed<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_, '_> {
    type Value = InferRequest;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<InferRequest, D::Error> {
        self.ctx.crumb = Crumb::Header;
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_, '_> {
    type Value = InferRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InferRequest, A::Error> {
        let ctx = self.ctx;
        let mut id = None;
        let mut parameters = None;
        let mut inputs = None;
        let mut outputs = None;
        while let Some(key) = map.next_key::<RequestKey>()? {
            match key {
                RequestKey::Id => {
                    ctx.unique::<A::Error>(id.is_some(), key.name())?;
                    ctx.expect("id", "a string");
                    id = Some(map.next_value::<String>()?);
                }
                RequestKey::Inputs => {
                    ctx.unique::<A::Error>(inputs.is_some(), key.name())?;
                    ctx.expect("inputs", Role::Input.expected());
                    inputs = Some(map.next_value_seed(TensorsSeed {
                        ctx: &mut *ctx,
                        role: Role::Input,
                    })?);
                }
                RequestKey::Outputs => {
                    ctx.unique::<A::Error>(outputs.is_some(), key.name())?;
                    ctx.expect("outputs", "an array of output objects");
                    outputs = Some(map.next_value_seed(OutputsSeed { ctx: &mut *ctx })?);
                }
                RequestKey::Parameters => {
                    ctx.unique::<A::Error>(parameters.is_some(), key.name())?;
                    ctx.expect("parameters", PARAMETERS_EXPECTED);
                    parameters = Some(map.next_value_seed(ParametersSeed { ctx: &mut *ctx })?);
                }
                RequestKey::Unknown => map.next_value_seed(Skip {
                    ctx: &mut *ctx,
                    depth: 1,
                })?,
            }
        }
        let inputs = inputs.ok_or_else(|| {
            ctx.fail::<A::Error>(KserveError::MissingField {
                object: "request",
                field: "inputs",
            })
        })?;
        let mut parameters: Parameters = parameters.unwrap_or_default();
        let binary_data_output = match parameters.remove(BINARY_DATA_OUTPUT) {
            None => false,
            Some(Parameter::Bool(binary)) => binary,
            Some(_) => {
                return Err(ctx.fail(KserveError::InvalidParameter {
                    name: BINARY_DATA_OUTPUT,
                    expected: "a boolean",
                }));
            }
        };
        Ok(InferRequest {
            id,
            parameters,
            inputs,
            outputs: outputs.unwrap_or_default(),
            binary_data_output,
        })
    }
}

/// `$inference_response`, at depth 1.
struct ResponseSeed<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
}

impl<'de> DeserializeSeed<'de> for ResponseSeed<'_, '_> {
    type Value = InferResponse;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<InferResponse, D::Error> {
        self.ctx.crumb = Crumb::Header;
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResponseSeed<'_, '_> {
    type Value = InferResponse;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference response object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InferResponse, A::Error> {
        let ctx = self.ctx;
        let mut model_name = None;
        let mut model_version = None;
        let mut id = None;
        let mut parameters = None;
        let mut outputs = None;
        while let Some(key) = map.next_key::<ResponseKey>()? {
            match key {
                ResponseKey::Id => {
                    ctx.unique::<A::Error>(id.is_some(), key.name())?;
                    ctx.expect("id", "a string");
                    id = Some(map.next_value::<String>()?);
                }
                ResponseKey::ModelName => {
                    ctx.unique::<A::Error>(model_name.is_some(), key.name())?;
                    ctx.expect("model_name", "a string");
                    model_name = Some(map.next_value::<String>()?);
                }
                ResponseKey::ModelVersion => {
                    ctx.unique::<A::Error>(model_version.is_some(), key.name())?;
                    ctx.expect("model_version", "a string");
                    model_version = Some(map.next_value::<String>()?);
                }
                ResponseKey::Outputs => {
                    ctx.unique::<A::Error>(outputs.is_some(), key.name())?;
                    ctx.expect("outputs", "an array of output objects");
                    outputs = Some(map.next_value_seed(TensorsSeed {
                        ctx: &mut *ctx,
                        role: Role::Output,
                    })?);
                }
                ResponseKey::Parameters => {
                    ctx.unique::<A::Error>(parameters.is_some(), key.name())?;
                    ctx.expect("parameters", PARAMETERS_EXPECTED);
                    parameters = Some(map.next_value_seed(ParametersSeed { ctx: &mut *ctx })?);
                }
                ResponseKey::Unknown => map.next_value_seed(Skip {
                    ctx: &mut *ctx,
                    depth: 1,
                })?,
            }
        }
        let model_name = model_name.ok_or_else(|| {
            ctx.fail::<A::Error>(KserveError::MissingField {
                object: "response",
                field: "model_name",
            })
        })?;
        let outputs = outputs.ok_or_else(|| {
            ctx.fail::<A::Error>(KserveError::MissingField {
                object: "response",
                field: "outputs",
            })
        })?;
        Ok(InferResponse {
            model_name,
            model_version,
            id,
            parameters: parameters.unwrap_or_default(),
            outputs,
        })
    }
}

/// A `parameters` object: unique keys, scalar values.
struct ParametersSeed<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
}

impl<'de> DeserializeSeed<'de> for ParametersSeed<'_, '_> {
    type Value = Parameters;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Parameters, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ParametersSeed<'_, '_> {
    type Value = Parameters;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PARAMETERS_EXPECTED)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parameters, A::Error> {
        let mut parameters = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            self.ctx
                .unique::<A::Error>(parameters.contains_key(&name), &name)?;
            self.ctx.expect("parameters", PARAMETERS_EXPECTED);
            let value = map.next_value::<Parameter>()?;
            parameters.insert(name, value);
        }
        Ok(Parameters(parameters))
    }
}

/// The `inputs` of a request or the `outputs` of a response, at depth 2.
struct TensorsSeed<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
    role: Role,
}

impl<'de> DeserializeSeed<'de> for TensorsSeed<'_, '_> {
    type Value = Vec<NamedTensor>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TensorsSeed<'_, '_> {
    type Value = Vec<NamedTensor>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tensor objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Self { ctx, role } = self;
        let limit = role.limit(&ctx.limits);
        let mut tensors: Vec<NamedTensor> = Vec::new();
        let mut names = HashSet::new();
        loop {
            ctx.expect(role.list(), role.expected());
            let seed = TensorSeed {
                ctx: &mut *ctx,
                role,
                over_limit: tensors.len() >= limit,
            };
            let Some(tensor) = seq.next_element_seed(seed)? else {
                break;
            };
            if !names.insert(tensor.name.clone()) {
                return Err(ctx.fail(role.duplicate(&tensor.name)));
            }
            tensors.push(tensor);
        }
        Ok(tensors)
    }
}

/// The `outputs` a request asks for, at depth 2.
struct OutputsSeed<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
}

impl<'de> DeserializeSeed<'de> for OutputsSeed<'_, '_> {
    type Value = Vec<RequestedOutput>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for OutputsSeed<'_, '_> {
    type Value = Vec<RequestedOutput>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of output objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut outputs: Vec<RequestedOutput> = Vec::new();
        let mut names = HashSet::new();
        loop {
            ctx.expect("outputs", "an array of output objects");
            let over_limit = outputs.len() >= ctx.limits.max_outputs;
            let seed = OutputSeed {
                ctx: &mut *ctx,
                over_limit,
            };
            let Some(output) = seq.next_element_seed(seed)? else {
                break;
            };
            if !names.insert(output.name.clone()) {
                return Err(ctx.fail(Role::Output.duplicate(&output.name)));
            }
            outputs.push(output);
        }
        Ok(outputs)
    }
}

/// One `$request_output`, at depth 3.
struct OutputSeed<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
    over_limit: bool,
}

impl<'de> DeserializeSeed<'de> for OutputSeed<'_, '_> {
    type Value = RequestedOutput;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        if self.over_limit {
            return Err(self.ctx.fail(Role::Output.too_many(&self.ctx.limits)));
        }
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OutputSeed<'_, '_> {
    type Value = RequestedOutput;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an output object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut name = None;
        let mut parameters = None;
        while let Some(key) = map.next_key::<OutputKey>()? {
            match key {
                OutputKey::Name => {
                    ctx.unique::<A::Error>(name.is_some(), key.name())?;
                    ctx.expect("name", "a string");
                    name = Some(map.next_value::<String>()?);
                }
                OutputKey::Parameters => {
                    ctx.unique::<A::Error>(parameters.is_some(), key.name())?;
                    ctx.expect("parameters", PARAMETERS_EXPECTED);
                    parameters = Some(map.next_value_seed(ParametersSeed { ctx: &mut *ctx })?);
                }
                OutputKey::Unknown => map.next_value_seed(Skip {
                    ctx: &mut *ctx,
                    depth: 3,
                })?,
            }
        }
        let name: String = name.ok_or_else(|| {
            ctx.fail::<A::Error>(KserveError::MissingField {
                object: "output",
                field: "name",
            })
        })?;
        let parameters: Parameters = parameters.unwrap_or_default();
        let unsupported = SHARED_MEMORY_PARAMETERS
            .into_iter()
            .chain([CLASSIFICATION])
            .find(|parameter| parameters.get(parameter).is_some());
        if let Some(parameter) = unsupported {
            return Err(ctx.fail(KserveError::UnsupportedParameter {
                name: echo(&name),
                parameter,
            }));
        }
        let encoding = match parameters.get(BINARY_DATA) {
            None => None,
            Some(Parameter::Bool(true)) => Some(TensorEncoding::Binary),
            Some(Parameter::Bool(false)) => Some(TensorEncoding::Json),
            Some(_) => {
                return Err(ctx.fail(KserveError::InvalidParameter {
                    name: BINARY_DATA,
                    expected: "a boolean",
                }));
            }
        };
        Ok(RequestedOutput { name, encoding })
    }
}

/// One `$request_input` or `$response_output`, at depth 3.
struct TensorSeed<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
    role: Role,
    over_limit: bool,
}

/// A tensor's JSON `data`: decoded as it was read, or kept as raw JSON when it came before the
/// name, data type or shape it needs (decoded once the object ends).
enum JsonData<'de> {
    Decoded(SecretBuf),
    Raw(&'de RawValue),
}

impl<'de> DeserializeSeed<'de> for TensorSeed<'_, '_> {
    type Value = NamedTensor;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<NamedTensor, D::Error> {
        if self.over_limit {
            return Err(self.ctx.fail(self.role.too_many(&self.ctx.limits)));
        }
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TensorSeed<'_, '_> {
    type Value = NamedTensor;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tensor object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NamedTensor, A::Error> {
        let Self { ctx, role, .. } = self;
        let mut name: Option<String> = None;
        let mut datatype: Option<String> = None;
        let mut shape: Option<RawShape> = None;
        let mut parameters: Option<Parameters> = None;
        let mut data: Option<JsonData<'de>> = None;
        let mut charged: Option<usize> = None;
        while let Some(key) = map.next_key::<TensorKey>()? {
            match key {
                TensorKey::Data => {
                    ctx.unique::<A::Error>(data.is_some(), key.name())?;
                    let dtype = datatype.as_deref().and_then(DataType::from_name);
                    let streamable = match (&name, dtype, &shape) {
                        (Some(name), Some(dtype), Some(shape)) if shape.problem.is_none() => {
                            Some((name, dtype, shape))
                        }
                        _ => None,
                    };
                    data = Some(match streamable {
                        Some((name, dtype, shape)) => {
                            let elements = ctx
                                .charge(name, &shape.dims)
                                .map_err(|e| ctx.fail::<A::Error>(e))?;
                            charged = Some(elements);
                            let mut sink = Sink::new(name, dtype, elements, shape.dims.len(), ctx);
                            map.next_value_seed(DataSeed {
                                ctx: &mut *ctx,
                                sink: &mut sink,
                                level: 0,
                            })?;
                            JsonData::Decoded(sink.finish().map_err(|e| ctx.fail::<A::Error>(e))?)
                        }
                        None => {
                            ctx.expect("data", "an array");
                            JsonData::Raw(map.next_value::<&RawValue>()?)
                        }
                    });
                }
                TensorKey::Datatype => {
                    ctx.unique::<A::Error>(datatype.is_some(), key.name())?;
                    ctx.expect("datatype", "a string");
                    datatype = Some(map.next_value::<String>()?);
                }
                TensorKey::Name => {
                    ctx.unique::<A::Error>(name.is_some(), key.name())?;
                    ctx.expect("name", "a string");
                    name = Some(map.next_value::<String>()?);
                }
                TensorKey::Parameters => {
                    ctx.unique::<A::Error>(parameters.is_some(), key.name())?;
                    ctx.expect("parameters", PARAMETERS_EXPECTED);
                    parameters = Some(map.next_value_seed(ParametersSeed { ctx: &mut *ctx })?);
                }
                TensorKey::Shape => {
                    ctx.unique::<A::Error>(shape.is_some(), key.name())?;
                    ctx.expect("shape", "an array of non-negative integers");
                    shape = Some(map.next_value_seed(ShapeSeed { ctx: &mut *ctx })?);
                }
                TensorKey::Unknown => map.next_value_seed(Skip {
                    ctx: &mut *ctx,
                    depth: 3,
                })?,
            }
        }
        let fields = TensorFields {
            name,
            datatype,
            shape,
            parameters,
            data,
            charged,
        };
        fields.finish(ctx, role).map_err(|e| ctx.fail(e))
    }
}

/// The fields of one tensor object, read in whatever order they came.
struct TensorFields<'de> {
    name: Option<String>,
    datatype: Option<String>,
    shape: Option<RawShape>,
    parameters: Option<Parameters>,
    data: Option<JsonData<'de>>,
    charged: Option<usize>,
}

impl TensorFields<'_> {
    /// Checks the fields in a fixed order (name, data type, shape, element budget, parameters,
    /// data) and builds the tensor, taking binary data from the context.
    fn finish(self, ctx: &mut Ctx<'_>, role: Role) -> Result<NamedTensor, KserveError> {
        let missing = |field| KserveError::MissingField {
            object: role.object(),
            field,
        };
        let name = self.name.ok_or_else(|| missing("name"))?;
        let datatype = self.datatype.ok_or_else(|| missing("datatype"))?;
        let dtype =
            DataType::from_name(&datatype).ok_or_else(|| KserveError::UnsupportedDatatype {
                name: echo(&name),
                datatype: echo(&datatype),
            })?;
        let shape = self.shape.ok_or_else(|| missing("shape"))?.check(&name)?;
        let elements = match self.charged {
            Some(elements) => elements,
            None => ctx.charge(&name, &shape)?,
        };
        let parameters = self.parameters.unwrap_or_default();
        let unsupported = SHARED_MEMORY_PARAMETERS
            .into_iter()
            .find(|parameter| parameters.get(parameter).is_some());
        if let Some(parameter) = unsupported {
            return Err(KserveError::UnsupportedParameter {
                name: echo(&name),
                parameter,
            });
        }
        let binary_size = match parameters.get(BINARY_DATA_SIZE) {
            None => None,
            Some(size) => Some(
                size.as_u64()
                    .and_then(|size| usize::try_from(size).ok())
                    .ok_or(KserveError::InvalidParameter {
                        name: BINARY_DATA_SIZE,
                        expected: "a non-negative integer",
                    })?,
            ),
        };
        let bytes = match (self.data, binary_size) {
            (Some(_), Some(_)) => return Err(KserveError::BinaryAndJsonData { name: echo(&name) }),
            (None, None) => return Err(KserveError::MissingData { name: echo(&name) }),
            (None, Some(size)) => {
                if let Some(element_size) = dtype.element_size() {
                    // Refuse a wrong length before copying anything.
                    let expected = elements
                        .checked_mul(element_size)
                        .ok_or_else(|| KserveError::ShapeOverflow { name: echo(&name) })?;
                    if size != expected {
                        return Err(KserveError::InvalidTensor {
                            name: echo(&name),
                            source: TensorError::LengthMismatch {
                                dtype,
                                expected,
                                actual: size,
                            },
                        });
                    }
                }
                ctx.take_binary(size)?.to_vec()
            }
            (Some(JsonData::Decoded(data)), None) => data.into_vec(),
            (Some(JsonData::Raw(raw)), None) => {
                let mut sink = Sink::new(&name, dtype, elements, shape.len(), ctx);
                let mut deserializer = serde_json::Deserializer::from_str(raw.get());
                let seed = DataSeed {
                    ctx: &mut *ctx,
                    sink: &mut sink,
                    level: 0,
                };
                if seed.deserialize(&mut deserializer).is_err() {
                    // `DataSeed` records every error it raises; the raw value is valid JSON.
                    return Err(ctx.error.take().unwrap_or(KserveError::MalformedData {
                        name: echo(&name),
                        rank: shape.len(),
                    }));
                }
                sink.finish()?.into_vec()
            }
        };
        let tensor =
            Tensor::new(dtype, shape, bytes).map_err(|source| KserveError::InvalidTensor {
                name: echo(&name),
                source,
            })?;
        Ok(NamedTensor { name, tensor })
    }
}

/// A `shape` as read, its problems kept until the tensor's name is known.
struct RawShape {
    dims: Vec<usize>,
    rank: usize,
    problem: Option<ShapeProblem>,
}

#[derive(Clone, Copy)]
enum ShapeProblem {
    Negative,
    Overflow,
    RankTooHigh,
}

impl RawShape {
    /// The dimensions, or the first problem with them.
    fn check(self, name: &str) -> Result<Vec<usize>, KserveError> {
        match self.problem {
            None => Ok(self.dims),
            Some(ShapeProblem::Negative) => {
                Err(KserveError::NegativeDimension { name: echo(name) })
            }
            Some(ShapeProblem::Overflow) => Err(KserveError::ShapeOverflow { name: echo(name) }),
            Some(ShapeProblem::RankTooHigh) => Err(KserveError::RankTooHigh {
                name: echo(name),
                rank: self.rank,
            }),
        }
    }
}

/// A `shape` array, at depth 4.
struct ShapeSeed<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
}

impl<'de> DeserializeSeed<'de> for ShapeSeed<'_, '_> {
    type Value = RawShape;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawShape, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed<'_, '_> {
    type Value = RawShape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of non-negative integers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawShape, A::Error> {
        let mut shape = RawShape {
            dims: Vec::new(),
            rank: 0,
            problem: None,
        };
        while let Some(dim) = seq.next_element::<Dim>()? {
            shape.rank = shape.rank.saturating_add(1);
            let problem = match dim {
                Dim::Size(size) => match usize::try_from(size) {
                    Ok(size) if shape.rank <= MAX_RANK => {
                        shape.dims.push(size);
                        None
                    }
                    Ok(_) => Some(ShapeProblem::RankTooHigh),
                    Err(_) => Some(ShapeProblem::Overflow),
                },
                Dim::Negative => Some(ShapeProblem::Negative),
                Dim::TooLarge => Some(ShapeProblem::Overflow),
                Dim::Fraction => {
                    return Err(self.ctx.fail(KserveError::FieldTypeMismatch {
                        field: "shape",
                        expected: "an array of non-negative integers",
                    }));
                }
            };
            shape.problem = shape.problem.or(problem);
        }
        Ok(shape)
    }
}

/// One dimension as JSON has it.
enum Dim {
    Fraction,
    Negative,
    Size(u64),
    TooLarge,
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DimVisitor;
        impl Visitor<'_> for DimVisitor {
            type Value = Dim;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, size: u64) -> Result<Dim, E> {
                Ok(Dim::Size(size))
            }
            fn visit_i64<E: de::Error>(self, size: i64) -> Result<Dim, E> {
                Ok(u64::try_from(size).map_or(Dim::Negative, Dim::Size))
            }
            fn visit_f64<E: de::Error>(self, size: f64) -> Result<Dim, E> {
                // JSON integers beyond 64 bits arrive as floats.
                Ok(if size < 0.0 {
                    Dim::Negative
                } else if size.fract() == 0.0 && size >= u64::MAX as f64 {
                    Dim::TooLarge
                } else {
                    Dim::Fraction
                })
            }
        }
        deserializer.deserialize_any(DimVisitor)
    }
}

/// Receives a tensor's JSON elements as little-endian bytes, checking each against the data type.
struct Sink<'n> {
    data: SecretBuf,
    dtype: DataType,
    expected: usize,
    found: usize,
    levels: usize,
    name: &'n str,
}

impl<'n> Sink<'n> {
    /// A sink for `elements` elements of `dtype`. The buffer is sized for the elements the shape
    /// claims, but never for more than the JSON header could hold (two bytes per element at the
    /// least), so a short body cannot claim a large allocation.
    fn new(name: &'n str, dtype: DataType, elements: usize, rank: usize, ctx: &Ctx<'_>) -> Self {
        let plausible = elements.min(ctx.header_len / 2);
        let capacity = plausible.saturating_mul(dtype.element_size().unwrap_or(4));
        Self {
            data: SecretBuf::with_capacity(capacity),
            dtype,
            expected: elements,
            found: 0,
            levels: rank.max(1),
            name,
        }
    }

    /// The next element's index, and whether to keep it (elements past the shape's count are
    /// checked and counted, for the error, but not kept).
    fn next(&mut self) -> (usize, bool) {
        let index = self.found;
        self.found = self.found.saturating_add(1);
        (index, index < self.expected)
    }

    fn keep(&mut self, keep: bool, bytes: &[u8]) {
        if keep {
            self.data.extend(bytes);
        }
    }

    fn type_mismatch(&self, index: usize) -> KserveError {
        KserveError::ElementTypeMismatch {
            name: echo(self.name),
            dtype: self.dtype,
            index,
        }
    }

    fn out_of_range(&self, index: usize) -> KserveError {
        KserveError::ElementOutOfRange {
            name: echo(self.name),
            dtype: self.dtype,
            index,
        }
    }

    fn bool(&mut self, value: bool) -> Result<(), KserveError> {
        let (index, keep) = self.next();
        match self.dtype {
            DataType::Bool => {
                self.keep(keep, &[u8::from(value)]);
                Ok(())
            }
            _ => Err(self.type_mismatch(index)),
        }
    }

    fn integer(&mut self, value: i128) -> Result<(), KserveError> {
        let (index, keep) = self.next();
        macro_rules! int {
            ($t:ty) => {{
                let value = <$t>::try_from(value).map_err(|_| self.out_of_range(index))?;
                self.keep(keep, &value.to_le_bytes());
                Ok(())
            }};
        }
        match self.dtype {
            DataType::Int8 => int!(i8),
            DataType::Int16 => int!(i16),
            DataType::Int32 => int!(i32),
            DataType::Int64 => int!(i64),
            DataType::Uint8 => int!(u8),
            DataType::Uint16 => int!(u16),
            DataType::Uint32 => int!(u32),
            DataType::Uint64 => int!(u64),
            DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => {
                self.float_at(index, keep, value as f64)
            }
            DataType::Bool | DataType::Bytes => Err(self.type_mismatch(index)),
        }
    }

    fn float(&mut self, value: f64) -> Result<(), KserveError> {
        let (index, keep) = self.next();
        self.float_at(index, keep, value)
    }

    /// Stores a JSON number in a float type; JSON numbers are finite, so an infinity after the
    /// conversion means the value is out of the type's range.
    fn float_at(&mut self, index: usize, keep: bool, value: f64) -> Result<(), KserveError> {
        match self.dtype {
            DataType::Fp16 => {
                let value = f16::from_f64(value);
                if !value.is_finite() {
                    return Err(self.out_of_range(index));
                }
                self.keep(keep, &value.to_le_bytes());
            }
            DataType::Fp32 => {
                let value = value as f32;
                if !value.is_finite() {
                    return Err(self.out_of_range(index));
                }
                self.keep(keep, &value.to_le_bytes());
            }
            DataType::Fp64 => self.keep(keep, &value.to_le_bytes()),
            _ => return Err(self.type_mismatch(index)),
        }
        Ok(())
    }

    fn string(&mut self, value: &str) -> Result<(), KserveError> {
        let (index, keep) = self.next();
        if self.dtype != DataType::Bytes {
            return Err(self.type_mismatch(index));
        }
        let len = u32::try_from(value.len()).map_err(|_| self.out_of_range(index))?;
        self.keep(keep, &len.to_le_bytes());
        self.keep(keep, value.as_bytes());
        Ok(())
    }

    /// The element bytes, if there were exactly as many elements as the shape says.
    fn finish(self) -> Result<SecretBuf, KserveError> {
        if self.found != self.expected {
            return Err(KserveError::ElementCountMismatch {
                name: echo(self.name),
                expected: self.expected,
                found: self.found,
            });
        }
        Ok(self.data)
    }
}

/// A tensor's `data`, or one value within it, `level` arrays deep.
struct DataSeed<'c, 'b, 's, 'n> {
    ctx: &'c mut Ctx<'b>,
    sink: &'s mut Sink<'n>,
    level: usize,
}

impl DataSeed<'_, '_, '_, '_> {
    /// Hands an element to the sink, which must sit inside the top-level array.
    fn element<E: de::Error>(
        self,
        store: impl FnOnce(&mut Sink<'_>) -> Result<(), KserveError>,
    ) -> Result<(), E> {
        if self.level == 0 {
            return Err(self.malformed());
        }
        store(self.sink).map_err(|err| self.ctx.fail(err))
    }

    fn malformed<E: de::Error>(self) -> E {
        self.ctx.fail(KserveError::MalformedData {
            name: echo(self.sink.name),
            rank: self.sink.levels,
        })
    }
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_, '_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_, '_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.element(|sink| sink.bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.element(|sink| sink.integer(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.element(|sink| sink.integer(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.element(|sink| sink.float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.element(|sink| sink.string(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.element(|sink| {
            let (index, _) = sink.next();
            Err(sink.type_mismatch(index))
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        self.element(|sink| {
            let (index, _) = sink.next();
            Err(sink.type_mismatch(index))
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // The top-level array is level 0; a rank-r shape allows r levels of arrays.
        let level = self.level.saturating_add(1);
        if level > self.sink.levels {
            return Err(self.malformed());
        }
        let Self { ctx, sink, .. } = self;
        while seq
            .next_element_seed(DataSeed {
                ctx: &mut *ctx,
                sink: &mut *sink,
                level,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// Skips a value of an unknown field, refusing nesting deeper than [`MAX_JSON_DEPTH`]. `depth`
/// is the depth of the object holding the value.
struct Skip<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
    depth: usize,
}

impl Skip<'_, '_> {
    /// The depth of the array or object being entered, if allowed.
    fn enter<E: de::Error>(self) -> Result<(usize, Self), E> {
        let depth = self.depth.saturating_add(1);
        if depth > MAX_JSON_DEPTH {
            return Err(self.ctx.fail(KserveError::JsonTooDeep));
        }
        Ok((depth, self))
    }
}

impl<'de> DeserializeSeed<'de> for Skip<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (depth, Self { ctx, .. }) = self.enter()?;
        while seq
            .next_element_seed(Skip {
                ctx: &mut *ctx,
                depth,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (depth, Self { ctx, .. }) = self.enter()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Skip {
                ctx: &mut *ctx,
                depth,
            })?;
        }
        Ok(())
    }
}

impl Serialize for Parameter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bool(value) => serializer.serialize_bool(*value),
            Self::Float(value) => serializer.serialize_f64(*value),
            Self::Int(value) => serializer.serialize_i64(*value),
            Self::String(value) => serializer.serialize_str(value),
            Self::Uint(value) => serializer.serialize_u64(*value),
        }
    }
}

impl<'de> Deserialize<'de> for Parameter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ParameterVisitor;
        impl Visitor<'_> for ParameterVisitor {
            type Value = Parameter;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Parameter, E> {
                Ok(Parameter::Bool(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Parameter, E> {
                Ok(Parameter::Int(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Parameter, E> {
                Ok(i64::try_from(value).map_or(Parameter::Uint(value), Parameter::Int))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Parameter, E> {
                Ok(Parameter::Float(value))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Parameter, E> {
                Ok(Parameter::String(value.to_owned()))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<Parameter, E> {
                Ok(Parameter::String(value))
            }
        }
        deserializer.deserialize_any(ParameterVisitor)
    }
}

impl Serialize for Parameters {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(&self.0)
    }
}

impl<'de> Deserialize<'de> for Parameters {
    /// Refuses a repeated name.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ParametersVisitor;
        impl<'de> Visitor<'de> for ParametersVisitor {
            type Value = Parameters;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PARAMETERS_EXPECTED)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parameters, A::Error> {
                let mut parameters = BTreeMap::new();
                while let Some((name, value)) = map.next_entry::<String, Parameter>()? {
                    if parameters.contains_key(&name) {
                        return Err(de::Error::custom(format_args!(
                            "parameter `{}` appears twice",
                            echo(&name)
                        )));
                    }
                    parameters.insert(name, value);
                }
                Ok(Parameters(parameters))
            }
        }
        deserializer.deserialize_map(ParametersVisitor)
    }
}

/// [`DataType`] as its protocol name, for serde's `with`.
mod datatype_name {
    use serde::{Deserialize, Deserializer, Serializer, de};

    use crate::tensor::DataType;

    pub(super) fn serialize<S: Serializer>(
        dtype: &DataType,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(dtype.name())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DataType, D::Error> {
        let name = String::deserialize(deserializer)?;
        DataType::from_name(&name)
            .ok_or_else(|| de::Error::custom(format_args!("unsupported datatype `{name}`")))
    }
}

// ---- Encoding ---------------------------------------------------------------------------------

/// Fails if two tensors share a name.
fn check_unique<'a>(names: impl Iterator<Item = &'a str>, role: Role) -> Result<(), KserveError> {
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(role.duplicate(name));
        }
    }
    Ok(())
}

/// The JSON descriptions of `tensors`, after checking that names are unique and that the ones to
/// go as JSON can.
fn tensor_headers<'a>(
    tensors: &'a [NamedTensor],
    encodings: &[TensorEncoding],
    role: Role,
) -> Result<Vec<TensorHeader<'a>>, KserveError> {
    check_unique(tensors.iter().map(NamedTensor::name), role)?;
    tensors
        .iter()
        .zip(encodings)
        .map(|(named, encoding)| {
            let tensor = &named.tensor;
            let (parameters, data) = match encoding {
                TensorEncoding::Binary => (
                    Some(BinaryDataSize {
                        binary_data_size: tensor.data().len(),
                    }),
                    None,
                ),
                TensorEncoding::Json => {
                    check_json_encodable(named)?;
                    (None, Some(JsonElements(tensor)))
                }
            };
            Ok(TensorHeader {
                name: &named.name,
                shape: tensor.shape(),
                datatype: tensor.dtype().name(),
                parameters,
                data,
            })
        })
        .collect()
}

/// Fails for what JSON cannot carry: NaN and infinities, and `BYTES` that are not UTF-8.
fn check_json_encodable(named: &NamedTensor) -> Result<(), KserveError> {
    let data = named.tensor.data();
    let encodable = match named.tensor.dtype() {
        DataType::Fp16 => chunks::<2>(data).all(|bytes| f16::from_le_bytes(bytes).is_finite()),
        DataType::Fp32 => chunks::<4>(data).all(|bytes| f32::from_le_bytes(bytes).is_finite()),
        DataType::Fp64 => chunks::<8>(data).all(|bytes| f64::from_le_bytes(bytes).is_finite()),
        DataType::Bytes => {
            let utf8 = named
                .tensor
                .byte_strings()
                .into_iter()
                .flatten()
                .all(|element| std::str::from_utf8(element).is_ok());
            if !utf8 {
                return Err(KserveError::NonUtf8Json {
                    name: echo(&named.name),
                });
            }
            true
        }
        _ => true,
    };
    if !encodable {
        return Err(KserveError::NonFiniteJson {
            name: echo(&named.name),
        });
    }
    Ok(())
}

/// `data`'s fixed-size elements, as byte arrays.
fn chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.as_chunks::<N>().0.iter().copied()
}

/// Writes the JSON header, then the binary tensors in order.
fn encode_body(
    header: &impl Serialize,
    tensors: &[NamedTensor],
    encodings: &[TensorEncoding],
) -> EncodedBody {
    let mut binary_len = 0usize;
    let mut json_estimate = 256usize;
    for (named, encoding) in tensors.iter().zip(encodings) {
        let tensor = &named.tensor;
        match encoding {
            TensorEncoding::Binary => binary_len = binary_len.saturating_add(tensor.data().len()),
            // Generous for numbers ("-1.2345678e-30," is 15 characters for 4 bytes); `BYTES`
            // that need escaping grow the buffer.
            TensorEncoding::Json => {
                json_estimate = json_estimate
                    .saturating_add(tensor.data().len().saturating_mul(3))
                    .saturating_add(tensor.element_count().saturating_mul(4));
            }
        }
        json_estimate = json_estimate.saturating_add(named.name.len().saturating_add(128));
    }
    let mut body = SecretBuf::with_capacity(json_estimate.saturating_add(binary_len));
    #[allow(clippy::expect_used)]
    serde_json::to_writer(&mut body, header)
        // The writer never fails, every map key is a string, and the only fallible `Serialize`
        // here (`JsonElements`, for non-UTF-8 `BYTES`) runs after `check_json_encodable` passed.
        .expect("serialising the inference header into memory cannot fail");
    let header_len = body.len();
    let mut any_binary = false;
    for (named, encoding) in tensors.iter().zip(encodings) {
        if *encoding == TensorEncoding::Binary {
            body.extend(named.tensor.data());
            any_binary = true;
        }
    }
    EncodedBody {
        body: body.into_secret(),
        header_len: any_binary.then_some(header_len),
    }
}

/// `$inference_request`, for encoding.
#[derive(Serialize)]
struct RequestHeader<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "RequestParameters::is_empty")]
    parameters: RequestParameters<'a>,
    inputs: Vec<TensorHeader<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<OutputHeader<'a>>,
}

/// A request's parameters with `binary_data_output` set from the request, not the map.
struct RequestParameters<'a> {
    parameters: &'a Parameters,
    binary_data_output: bool,
}

impl RequestParameters<'_> {
    fn others(&self) -> impl Iterator<Item = (&str, &Parameter)> {
        self.parameters
            .iter()
            .filter(|(name, _)| *name != BINARY_DATA_OUTPUT)
    }

    fn is_empty(&self) -> bool {
        !self.binary_data_output && self.others().next().is_none()
    }
}

impl Serialize for RequestParameters<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in self.others() {
            map.serialize_entry(name, value)?;
        }
        if self.binary_data_output {
            map.serialize_entry(BINARY_DATA_OUTPUT, &true)?;
        }
        map.end()
    }
}

/// `$request_output`, for encoding.
#[derive(Serialize)]
struct OutputHeader<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryDataFlag>,
}

#[derive(Serialize)]
struct BinaryDataFlag {
    binary_data: bool,
}

/// `$inference_response`, for encoding.
#[derive(Serialize)]
struct ResponseHeader<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "no_parameters")]
    parameters: &'a Parameters,
    outputs: Vec<TensorHeader<'a>>,
}

fn no_parameters(parameters: &&Parameters) -> bool {
    parameters.is_empty()
}

/// `$request_input` or `$response_output`, for encoding, in tritonclient's field order (data
/// last, so parsers that stream it know the shape first).
#[derive(Serialize)]
struct TensorHeader<'a> {
    name: &'a str,
    shape: &'a [usize],
    datatype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryDataSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonElements<'a>>,
}

#[derive(Serialize)]
struct BinaryDataSize {
    binary_data_size: usize,
}

/// A tensor's elements as a flat JSON array, written straight from its bytes.
struct JsonElements<'a>(&'a Tensor);

impl Serialize for JsonElements<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn all<Q: SerializeSeq, const N: usize, T: Serialize>(
            seq: &mut Q,
            data: &[u8],
            convert: impl Fn([u8; N]) -> T,
        ) -> Result<(), Q::Error> {
            chunks::<N>(data).try_for_each(|bytes| seq.serialize_element(&convert(bytes)))
        }

        let tensor = self.0;
        let data = tensor.data();
        let mut seq = serializer.serialize_seq(Some(tensor.element_count()))?;
        match tensor.dtype() {
            DataType::Bool => all(&mut seq, data, |[byte]: [u8; 1]| byte != 0)?,
            DataType::Bytes => {
                for element in tensor.byte_strings().into_iter().flatten() {
                    let text = std::str::from_utf8(element).map_err(|_| {
                        serde::ser::Error::custom("BYTES element is not UTF-8 text")
                    })?;
                    seq.serialize_element(text)?;
                }
            }
            DataType::Fp16 => all(&mut seq, data, |bytes| f16::from_le_bytes(bytes).to_f32())?,
            DataType::Fp32 => all(&mut seq, data, f32::from_le_bytes)?,
            DataType::Fp64 => all(&mut seq, data, f64::from_le_bytes)?,
            DataType::Int8 => all(&mut seq, data, i8::from_le_bytes)?,
            DataType::Int16 => all(&mut seq, data, i16::from_le_bytes)?,
            DataType::Int32 => all(&mut seq, data, i32::from_le_bytes)?,
            DataType::Int64 => all(&mut seq, data, i64::from_le_bytes)?,
            DataType::Uint8 => all(&mut seq, data, u8::from_le_bytes)?,
            DataType::Uint16 => all(&mut seq, data, u16::from_le_bytes)?,
            DataType::Uint32 => all(&mut seq, data, u32::from_le_bytes)?,
            DataType::Uint64 => all(&mut seq, data, u64::from_le_bytes)?,
        }
        seq.end()
    }
}

/// A byte buffer that zeroizes every allocation it lets go of, including the ones it outgrows (a
/// `Vec` frees its old allocation on growth without clearing it).
struct SecretBuf(SecretBytes);

impl SecretBuf {
    fn with_capacity(capacity: usize) -> Self {
        Self(SecretBytes::with_capacity(capacity))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn extend(&mut self, bytes: &[u8]) {
        let needed = self.0.len().saturating_add(bytes.len());
        if needed > self.0.capacity() {
            let capacity = needed.max(self.0.capacity().saturating_mul(2));
            let mut grown = SecretBytes::with_capacity(capacity);
            grown.extend_from_slice(self.0.as_slice());
            // The old allocation is zeroized as it drops.
            self.0 = grown;
        }
        self.0.extend_from_slice(bytes);
    }

    /// The bytes as a plain `Vec`, moved out without a copy, for a [`Tensor`] to own (and
    /// zeroize) from here on.
    fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.0)
    }

    fn into_secret(self) -> SecretBytes {
        self.0
    }
}

impl io::Write for SecretBuf {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.extend(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
