//! Encoding: a request or response becomes its JSON header, written straight from the tensors'
//! bytes into one wiped buffer, followed by its binary tensors.

use std::collections::HashSet;

use cloak_crypto::secret::SecretBuf;
use half::f16;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::{
    BINARY_DATA_OUTPUT, EncodedBody, InferRequest, InferResponse, KserveError, NamedTensor,
    Parameter, Parameters, RequestedOutput, Role, TensorEncoding, echo,
};
use crate::tensor::{DataType, Tensor};

/// Encodes `request`'s body, each input as `encoding(name)` says: see [`InferRequest::encode`].
pub(super) fn request(
    request: &InferRequest,
    encoding: impl Fn(&str) -> TensorEncoding,
) -> Result<EncodedBody, KserveError> {
    let encodings = encodings(&request.inputs, encoding);
    check_unique(
        request.outputs.iter().map(RequestedOutput::name),
        Role::Output,
    )?;
    let header = RequestHeader {
        id: request.id.as_deref(),
        parameters: RequestParameters {
            parameters: &request.parameters,
            binary_data_output: request.binary_data_output,
        },
        inputs: tensor_headers(&request.inputs, &encodings, Role::Input)?,
        outputs: request
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
    Ok(encode_body(&header, &request.inputs, &encodings))
}

/// Encodes `response`'s body, each output as `encoding(name)` says: see
/// [`InferResponse::encode`].
pub(super) fn response(
    response: &InferResponse,
    encoding: impl Fn(&str) -> TensorEncoding,
) -> Result<EncodedBody, KserveError> {
    let encodings = encodings(&response.outputs, encoding);
    let header = ResponseHeader {
        model_name: &response.model_name,
        model_version: response.model_version.as_deref(),
        id: response.id.as_deref(),
        parameters: &response.parameters,
        outputs: tensor_headers(&response.outputs, &encodings, Role::Output)?,
    };
    Ok(encode_body(&header, &response.outputs, &encodings))
}

/// How each of `tensors` is to be encoded, in order.
fn encodings(
    tensors: &[NamedTensor],
    encoding: impl Fn(&str) -> TensorEncoding,
) -> Vec<TensorEncoding> {
    tensors.iter().map(|named| encoding(named.name())).collect()
}

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
            let tensor = named.tensor();
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
                name: named.name(),
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
    let data = named.tensor().data();
    let encodable = match named.tensor().dtype() {
        DataType::Fp16 => chunks::<2>(data).all(|bytes| f16::from_le_bytes(bytes).is_finite()),
        DataType::Fp32 => chunks::<4>(data).all(|bytes| f32::from_le_bytes(bytes).is_finite()),
        DataType::Fp64 => chunks::<8>(data).all(|bytes| f64::from_le_bytes(bytes).is_finite()),
        DataType::Bytes => {
            let utf8 = named
                .tensor()
                .byte_strings()
                .into_iter()
                .flatten()
                .all(|element| std::str::from_utf8(element).is_ok());
            if !utf8 {
                return Err(KserveError::NonUtf8Json {
                    name: echo(named.name()),
                });
            }
            true
        }
        _ => true,
    };
    if !encodable {
        return Err(KserveError::NonFiniteJson {
            name: echo(named.name()),
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
        let tensor = named.tensor();
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
        json_estimate = json_estimate.saturating_add(named.name().len().saturating_add(128));
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
            body.extend_from_slice(named.tensor().data());
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
