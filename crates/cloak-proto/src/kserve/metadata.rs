//! The protocol's metadata, readiness and health objects: plain serde types, which a server
//! serializes and a client deserializes.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::tensor::DataType;

/// `GET /v2`: the server's name, version and protocol extensions.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// The server's name.
    pub name: String,
    /// The server's version.
    pub version: String,
    /// The extensions it supports, such as
    /// [`BINARY_TENSOR_DATA_EXTENSION`](super::BINARY_TENSOR_DATA_EXTENSION).
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
