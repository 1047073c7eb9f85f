//! Parsing: one pass over the JSON header, without an intermediate JSON tree.
//!
//! The header is parsed by serde seeds that carry a `Ctx`: the limits, the element budget, the
//! binary part and how much of it the tensors have taken. serde errors can only carry strings, so
//! a seed that rejects something records the typed `KserveError` in the context first
//! (`Ctx::fail`) and the parse function returns that. Type errors raised by serde itself (a string
//! where an array belongs) are attributed to the field recorded just before reading it (the
//! "crumb"); anything else serde reports is a syntax error.
//!
//! The seeds are split by what they read: the request and response objects and the outputs a
//! request asks for (`message`), tensor objects and their shapes (`tensor`), and tensor `data`
//! (`data`). The context, the object keys, `parameters` and skipped values are shared, here.

mod data;
mod message;
mod tensor;

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{
    KserveError, Limits, MAX_JSON_DEPTH, PARAMETERS_EXPECTED, Parameter, Parameters, Role, echo,
};
use crate::tensor::{TensorError, element_count};

/// Parses a request or response body: see
/// [`InferRequest::parse`](super::InferRequest::parse).
pub(super) fn parse<T: Message>(
    body: &[u8],
    header_len: Option<usize>,
    limits: &Limits,
) -> Result<T, KserveError> {
    let (header, binary) = split_body(body, header_len)?;
    let mut ctx = Ctx::new(limits, header.len(), binary);
    let message = T::from_header(&mut ctx, header).map_err(|err| ctx.take_error(&err))?;
    ctx.finish()?;
    Ok(message)
}

/// A message a body's JSON header holds: [`InferRequest`](super::InferRequest) or
/// [`InferResponse`](super::InferResponse), each read by its own seed.
pub(super) trait Message: Sized {
    /// Runs the message's seed over the whole of `header`.
    fn from_header(ctx: &mut Ctx<'_>, header: &[u8]) -> Result<Self, serde_json::Error>;
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

/// Parse state shared by every seed of one header.
pub(super) struct Ctx<'b> {
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

    /// Reads the value of the object key `field` into `slot`, the one step every object's
    /// fields share: refuses the key if `slot` is already filled (a repeated key, which must not
    /// silently replace the first), records that the value must hold `expected` (for the type
    /// errors serde raises), then reads it with `read`.
    fn take_once<T, E: de::Error>(
        &mut self,
        slot: &mut Option<T>,
        field: &'static str,
        expected: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<(), E> {
        self.unique(slot.is_some(), field)?;
        self.expect(field, expected);
        *slot = Some(read(self)?);
        Ok(())
    }

    /// The value of a required field, or the error that `object` lacks it.
    fn required<T, E: de::Error>(
        &mut self,
        value: Option<T>,
        object: &'static str,
        field: &'static str,
    ) -> Result<T, E> {
        value.ok_or_else(|| self.fail(KserveError::MissingField { object, field }))
    }

    /// Reads the array of `role` objects (tensors, or the outputs a request asks for) that
    /// `next` yields one by one, told whether the element would pass the role's limit: refuses
    /// the element over the limit and a name given twice.
    fn named_list<T, E: de::Error>(
        &mut self,
        role: Role,
        name: impl Fn(&T) -> &str,
        mut next: impl FnMut(&mut Self, bool) -> Result<Option<T>, E>,
    ) -> Result<Vec<T>, E> {
        let limit = role.limit(&self.limits);
        let mut items: Vec<T> = Vec::new();
        let mut names = HashSet::new();
        loop {
            self.expect(role.list(), role.expected());
            let Some(item) = next(self, items.len() >= limit)? else {
                break;
            };
            if !names.insert(name(&item).to_owned()) {
                return Err(self.fail(role.duplicate(name(&item))));
            }
            items.push(item);
        }
        Ok(items)
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
        let elements = element_count(shape).map_err(|err| match err {
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
        let mut parameters = Parameters::new();
        while let Some(name) = map.next_key::<String>()? {
            self.ctx
                .unique::<A::Error>(parameters.get(&name).is_some(), &name)?;
            self.ctx.expect("parameters", PARAMETERS_EXPECTED);
            let value = map.next_value::<Parameter>()?;
            parameters.insert(name, value);
        }
        Ok(parameters)
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
