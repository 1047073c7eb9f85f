//! Reusable chunk-record buffers and the plumbing that moves them between pipeline threads.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use zeroize::Zeroizing;

use super::keys::{GCM_TAG_LEN, LABEL_LEN};

/// At most this many bytes of record buffers exist at once (besides a floor of two buffers).
const PIPELINE_BYTES: usize = 32 * 1024 * 1024;
/// At most this many buffers circulate: enough to keep every stage busy.
const MAX_BUFFERS: usize = 4;

/// One chunk record in memory: `label ‖ payload ‖ tag`, where the payload is plaintext or
/// ciphertext depending on the stage. Zeroized on drop; never reallocated.
pub(crate) struct RecordBuf {
    bytes: Zeroizing<Vec<u8>>,
    len: usize,
}

impl RecordBuf {
    fn new(capacity: usize) -> Self {
        Self {
            bytes: Zeroizing::new(vec![0; capacity]),
            len: 0,
        }
    }

    /// Reads up to `len` bytes of `input` into the record, stopping early only at the end of the
    /// input; returns how many were read.
    pub(crate) fn fill_record<R: Read + ?Sized>(
        &mut self,
        input: &mut R,
        len: usize,
    ) -> io::Result<usize> {
        self.len = 0;
        let target = self.bytes.get_mut(..len).unwrap_or_default();
        self.len = read_full(input, target)?;
        Ok(self.len)
    }

    /// Reads up to `len` bytes of plaintext into the payload position (after the label); returns
    /// how many were read. The record then spans label, payload and room for the tag.
    pub(crate) fn fill_payload<R: Read + ?Sized>(
        &mut self,
        input: &mut R,
        len: usize,
    ) -> io::Result<usize> {
        self.len = 0;
        let end = LABEL_LEN.saturating_add(len);
        let target = self.bytes.get_mut(LABEL_LEN..end).unwrap_or_default();
        let got = read_full(input, target)?;
        self.len = got.saturating_add(LABEL_LEN + GCM_TAG_LEN);
        Ok(got)
    }

    /// The whole record.
    pub(crate) fn record(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    /// The whole record, mutably.
    pub(crate) fn record_mut(&mut self) -> &mut [u8] {
        self.bytes.get_mut(..self.len).unwrap_or_default()
    }

    /// The payload: the record without label and tag.
    pub(crate) fn payload(&self) -> &[u8] {
        let end = self.len.saturating_sub(GCM_TAG_LEN);
        self.bytes.get(LABEL_LEN..end).unwrap_or_default()
    }

    /// Label, payload and tag, mutably and separately.
    pub(crate) fn parts_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let record = self.bytes.get_mut(..self.len).unwrap_or_default();
        let (label, rest) = record.split_at_mut(LABEL_LEN.min(record.len()));
        let (payload, tag) = rest.split_at_mut(rest.len().saturating_sub(GCM_TAG_LEN));
        (label, payload, tag)
    }
}

/// A pool of record buffers: the receiver hands out free buffers, the sender takes them back.
pub(crate) fn buffer_pool(capacity: usize) -> (SyncSender<RecordBuf>, Receiver<RecordBuf>) {
    let count = pool_depth(capacity);
    let (free_tx, free_rx) = sync_channel(count);
    for _ in 0..count {
        // The channel has room for exactly `count` buffers and its receiver is alive.
        let _ = free_tx.send(RecordBuf::new(capacity));
    }
    (free_tx, free_rx)
}

/// The number of buffers a pool of `capacity`-byte buffers holds (the depth of its channels).
pub(crate) fn pool_depth(capacity: usize) -> usize {
    PIPELINE_BYTES
        .checked_div(capacity)
        .unwrap_or(MAX_BUFFERS)
        .clamp(2, MAX_BUFFERS)
}

/// Fills `buf` from `input` until it is full or the input ends; returns the bytes read.
pub(crate) fn read_full<R: Read + ?Sized>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        let room = rest.len();
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) if n > room => {
                return Err(io::Error::other(
                    "the reader claimed more bytes than the buffer holds",
                ));
            }
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
