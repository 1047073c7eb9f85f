//! A bounds-checked little-endian cursor over untrusted bytes: every read either succeeds or
//! reports how much was missing; nothing panics.

use super::QuoteError;

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    /// Offset of `bytes` within the whole quote, for error messages.
    offset: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    /// Offset of the next byte within the quote.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes not yet read.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], QuoteError> {
        let (head, tail) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or_else(|| self.short(field, N))?;
        self.bytes = tail;
        self.offset = self.offset.saturating_add(N);
        Ok(*head)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, QuoteError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, QuoteError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, QuoteError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// The next `len` bytes as a sub-reader (its offsets continue this reader's).
    pub(crate) fn sub(&mut self, len: usize, field: &'static str) -> Result<Self, QuoteError> {
        let (head, tail) = self
            .bytes
            .split_at_checked(len)
            .ok_or_else(|| self.short(field, len))?;
        let sub = Self {
            bytes: head,
            offset: self.offset,
        };
        self.bytes = tail;
        self.offset = self.offset.saturating_add(len);
        Ok(sub)
    }

    /// The next `len` bytes.
    pub(crate) fn bytes(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<&'a [u8], QuoteError> {
        self.sub(len, field).map(|sub| sub.bytes)
    }

    /// Fails unless every byte has been read.
    pub(crate) fn finish(&self, structure: &'static str) -> Result<(), QuoteError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(QuoteError::TrailingBytes {
                structure,
                offset: self.offset,
                count: self.bytes.len(),
            })
        }
    }

    fn short(&self, field: &'static str, needed: usize) -> QuoteError {
        QuoteError::Truncated {
            field,
            offset: self.offset,
            needed,
            available: self.bytes.len(),
        }
    }
}
