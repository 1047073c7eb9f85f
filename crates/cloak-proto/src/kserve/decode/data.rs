//! A tensor's JSON `data`, decoded element by element into little-endian bytes as it is read.

use std::fmt;

use cloak_crypto::secret::SecretBuf;
use half::f16;
use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::Ctx;
use crate::kserve::{KserveError, echo};
use crate::tensor::DataType;

pub(super) struct Sink<'n> {
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
    pub(super) fn new(
        name: &'n str,
        dtype: DataType,
        elements: usize,
        rank: usize,
        ctx: &Ctx<'_>,
    ) -> Self {
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

    /// The seed that reads the whole of a tensor's `data` into this sink.
    pub(super) fn seed<'c, 'b, 's>(&'s mut self, ctx: &'c mut Ctx<'b>) -> DataSeed<'c, 'b, 's, 'n> {
        DataSeed {
            ctx,
            sink: self,
            level: 0,
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
            self.data.extend_from_slice(bytes);
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
    pub(super) fn finish(self) -> Result<SecretBuf, KserveError> {
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
pub(super) struct DataSeed<'c, 'b, 's, 'n> {
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
