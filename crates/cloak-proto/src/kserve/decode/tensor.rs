//! The seeds of tensor objects (`$request_input`, `$response_output`) and their `shape`; their
//! `data` is decoded in `data`.

use std::fmt;

use cloak_crypto::secret::SecretBuf;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::data::Sink;
use super::{Ctx, ParametersSeed, Skip, TensorKey};
use crate::kserve::{
    BINARY_DATA_SIZE, KserveError, NamedTensor, PARAMETERS_EXPECTED, Parameters, Role,
    SHARED_MEMORY_PARAMETERS, echo,
};
use crate::tensor::{DataType, MAX_RANK, Tensor, TensorError};

/// What `shape` must hold, for type errors.
const SHAPE_EXPECTED: &str = "an array of non-negative integers";

/// The `inputs` of a request or the `outputs` of a response, at depth 2.
pub(super) struct TensorsSeed<'c, 'b> {
    pub(super) ctx: &'c mut Ctx<'b>,
    pub(super) role: Role,
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
        ctx.named_list(role, NamedTensor::name, |ctx, over_limit| {
            seq.next_element_seed(TensorSeed {
                ctx,
                role,
                over_limit,
            })
        })
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
                // Only a raw value can hold the wrong type: streamed data takes any JSON value
                // and records its own errors, so the field's crumb is for the raw value.
                TensorKey::Data => ctx.take_once(&mut data, "data", "an array", |ctx| {
                    let dtype = datatype.as_deref().and_then(DataType::from_name);
                    let streamable = match (&name, dtype, &shape) {
                        (Some(name), Some(dtype), Some(shape)) if shape.problem.is_none() => {
                            Some((name, dtype, shape))
                        }
                        _ => None,
                    };
                    let Some((name, dtype, shape)) = streamable else {
                        return Ok(JsonData::Raw(map.next_value::<&RawValue>()?));
                    };
                    let elements = ctx
                        .charge(name, &shape.dims)
                        .map_err(|e| ctx.fail::<A::Error>(e))?;
                    charged = Some(elements);
                    let mut sink = Sink::new(name, dtype, elements, shape.dims.len(), ctx);
                    map.next_value_seed(sink.seed(ctx))?;
                    Ok(JsonData::Decoded(
                        sink.finish().map_err(|e| ctx.fail::<A::Error>(e))?,
                    ))
                })?,
                TensorKey::Datatype => {
                    ctx.take_once(&mut datatype, "datatype", "a string", |_| map.next_value())?;
                }
                TensorKey::Name => {
                    ctx.take_once(&mut name, "name", "a string", |_| map.next_value())?;
                }
                TensorKey::Parameters => {
                    ctx.take_once(&mut parameters, "parameters", PARAMETERS_EXPECTED, |ctx| {
                        map.next_value_seed(ParametersSeed { ctx })
                    })?;
                }
                TensorKey::Shape => {
                    ctx.take_once(&mut shape, "shape", SHAPE_EXPECTED, |ctx| {
                        map.next_value_seed(ShapeSeed { ctx })
                    })?;
                }
                TensorKey::Unknown => map.next_value_seed(Skip { ctx, depth: 3 })?,
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
                if sink.seed(ctx).deserialize(&mut deserializer).is_err() {
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
        Ok(NamedTensor::new(name, tensor))
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
        f.write_str(SHAPE_EXPECTED)
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
                        expected: SHAPE_EXPECTED,
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
