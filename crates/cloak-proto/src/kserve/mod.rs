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
//! are copied once, from the body into their [`Tensor`](crate::tensor::Tensor). Element counts
//! are checked against [`Limits`] before anything is allocated for them. Every buffer that holds
//! tensor data is zeroized when it is dropped or outgrown, and no error message ever contains a
//! data value: they name tensors, fields, data types and shapes only.
//!
//! The crate README specifies the accepted and produced JSON field by field.
//!
//! The module is split by concept: [`InferRequest`], [`InferResponse`] and their parts in
//! `message`, the metadata and health objects in `metadata`, [`KserveError`] and [`ErrorBody`] in
//! `error`, the streaming parser in `decode` and the writer in `encode`.

mod decode;
mod encode;
mod error;
mod message;
mod metadata;

use self::error::echo;
pub use self::error::{ErrorBody, KserveError};
pub use self::message::{
    EncodedBody, InferRequest, InferResponse, NamedTensor, Parameter, Parameters, RequestedOutput,
};
pub use self::metadata::{
    Dimension, ModelMetadata, ModelReady, ServerLive, ServerMetadata, ServerReady, TensorMetadata,
};

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
/// What `parameters` must hold, for type errors.
const PARAMETERS_EXPECTED: &str = "an object of string, number and boolean values";

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

#[cfg(test)]
mod tests;
