//! The inference messages: [`InferRequest`] and [`InferResponse`], the tensors and parameters they
//! carry, and the [`EncodedBody`] they encode to. Parsing and encoding themselves live in
//! `decode` and `encode`; the methods here hand over to them.

use std::collections::BTreeMap;
use std::fmt;

use cloak_crypto::secret::SecretBytes;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    CONTENT_TYPE_BINARY, CONTENT_TYPE_JSON, KserveError, Limits, PARAMETERS_EXPECTED,
    TensorEncoding, decode, echo, encode,
};
use crate::tensor::Tensor;

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

/// An output a request asks for, and how it wants it encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedOutput {
    pub(super) name: String,
    pub(super) encoding: Option<TensorEncoding>,
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
    pub(super) id: Option<String>,
    pub(super) parameters: Parameters,
    pub(super) inputs: Vec<NamedTensor>,
    pub(super) outputs: Vec<RequestedOutput>,
    pub(super) binary_data_output: bool,
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
        decode::parse(body, header_len, limits)
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
        encode::request(self, encoding)
    }
}

/// An inference response.
#[derive(Clone, Debug, PartialEq)]
pub struct InferResponse {
    pub(super) model_name: String,
    pub(super) model_version: Option<String>,
    pub(super) id: Option<String>,
    pub(super) parameters: Parameters,
    pub(super) outputs: Vec<NamedTensor>,
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
        decode::parse(body, header_len, limits)
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
        encode::response(self, encoding)
    }
}

/// An encoded request or response body. It holds tensor data, so it is zeroized on drop and its
/// `Debug` shows only lengths.
#[derive(Clone)]
pub struct EncodedBody {
    pub(super) body: SecretBytes,
    pub(super) header_len: Option<usize>,
}

impl EncodedBody {
    /// The body: the JSON header, then the binary tensors.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The length of the JSON header when binary tensors follow it: send it as
    /// [`HEADER_CONTENT_LENGTH`](super::HEADER_CONTENT_LENGTH). `None` for a JSON-only body.
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
