//! The seeds of the objects around the tensors: `$inference_request`, `$inference_response`, and
//! the `$request_output`s a request asks for.

use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::tensor::TensorsSeed;
use super::{
    Crumb, Ctx, Message, OutputKey, ParametersSeed, RequestKey, ResponseKey, Skip, parse_json,
};
use crate::kserve::{
    BINARY_DATA, BINARY_DATA_OUTPUT, CLASSIFICATION, InferRequest, InferResponse, KserveError,
    PARAMETERS_EXPECTED, Parameter, Parameters, RequestedOutput, Role, SHARED_MEMORY_PARAMETERS,
    TensorEncoding, echo,
};

impl Message for InferRequest {
    fn from_header(ctx: &mut Ctx<'_>, header: &[u8]) -> Result<Self, serde_json::Error> {
        parse_json(header, RequestSeed { ctx })
    }
}

impl Message for InferResponse {
    fn from_header(ctx: &mut Ctx<'_>, header: &[u8]) -> Result<Self, serde_json::Error> {
        parse_json(header, ResponseSeed { ctx })
    }
}

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
                RequestKey::Id => ctx.take_once(&mut id, "id", "a string", |_| map.next_value())?,
                RequestKey::Inputs => {
                    ctx.take_once(&mut inputs, "inputs", Role::Input.expected(), |ctx| {
                        map.next_value_seed(TensorsSeed {
                            ctx,
                            role: Role::Input,
                        })
                    })?;
                }
                RequestKey::Outputs => {
                    ctx.take_once(&mut outputs, "outputs", Role::Output.expected(), |ctx| {
                        map.next_value_seed(OutputsSeed { ctx })
                    })?;
                }
                RequestKey::Parameters => {
                    ctx.take_once(&mut parameters, "parameters", PARAMETERS_EXPECTED, |ctx| {
                        map.next_value_seed(ParametersSeed { ctx })
                    })?;
                }
                RequestKey::Unknown => map.next_value_seed(Skip { ctx, depth: 1 })?,
            }
        }
        let inputs = ctx.required(inputs, "request", "inputs")?;
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
                    ctx.take_once(&mut id, "id", "a string", |_| map.next_value())?
                }
                ResponseKey::ModelName => {
                    ctx.take_once(&mut model_name, "model_name", "a string", |_| {
                        map.next_value()
                    })?;
                }
                ResponseKey::ModelVersion => {
                    ctx.take_once(&mut model_version, "model_version", "a string", |_| {
                        map.next_value()
                    })?;
                }
                ResponseKey::Outputs => {
                    ctx.take_once(&mut outputs, "outputs", Role::Output.expected(), |ctx| {
                        map.next_value_seed(TensorsSeed {
                            ctx,
                            role: Role::Output,
                        })
                    })?;
                }
                ResponseKey::Parameters => {
                    ctx.take_once(&mut parameters, "parameters", PARAMETERS_EXPECTED, |ctx| {
                        map.next_value_seed(ParametersSeed { ctx })
                    })?;
                }
                ResponseKey::Unknown => map.next_value_seed(Skip { ctx, depth: 1 })?,
            }
        }
        let model_name = ctx.required(model_name, "response", "model_name")?;
        let outputs = ctx.required(outputs, "response", "outputs")?;
        Ok(InferResponse {
            model_name,
            model_version,
            id,
            parameters: parameters.unwrap_or_default(),
            outputs,
        })
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
        self.ctx
            .named_list(Role::Output, RequestedOutput::name, |ctx, over_limit| {
                seq.next_element_seed(OutputSeed { ctx, over_limit })
            })
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
                    ctx.take_once(&mut name, "name", "a string", |_| map.next_value())?;
                }
                OutputKey::Parameters => {
                    ctx.take_once(&mut parameters, "parameters", PARAMETERS_EXPECTED, |ctx| {
                        map.next_value_seed(ParametersSeed { ctx })
                    })?;
                }
                OutputKey::Unknown => map.next_value_seed(Skip { ctx, depth: 3 })?,
            }
        }
        let name: String = ctx.required(name, "output", "name")?;
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
