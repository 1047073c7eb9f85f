//! Opening: a reader thread reads chunk records, the calling thread authenticates, decrypts (in
//! place) and writes them, and a hashing thread computes the plaintext digest, so reading,
//! AES-GCM and SHA-256 overlap.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use aws_lc_rs::aead::Aad;
use aws_lc_rs::{digest, hmac};
use zeroize::Zeroizing;

use super::header::RawHeader;
use super::keys::{FileKeys, GCM_TAG_LEN, LABEL_LEN, chunk_label, split_label};
use super::record::{RecordBuf, buffer_pool, pool_depth, read_full};
use super::{
    CHUNK_OVERHEAD, ContainerError, DigestCheck, HEADER_LEN, Header, MAGIC, VerifiedContainer,
    chunk_len, digest_array,
};
use crate::key::ModelKey;

/// How much trailing data is read before counting stops.
const TRAILING_COUNT_LIMIT: u64 = 1024 * 1024;

pub(super) fn open_stream<R: Read + Send>(
    key: &ModelKey,
    mut input: R,
    output: Option<&mut dyn Write>,
    digest: DigestCheck,
) -> Result<VerifiedContainer, ContainerError> {
    let raw = read_raw_header(&mut input)?;
    let keys = FileKeys::derive(key, &raw.file_id);
    authenticate_header(key, &keys, &raw)?;
    let header = raw.validate()?;

    let capacity = chunk_len(header.chunk_size).saturating_add(CHUNK_OVERHEAD);
    let depth = pool_depth(capacity);
    let (free_tx, free_rx) = buffer_pool(capacity);
    let (sealed_tx, sealed_rx) = sync_channel::<Result<RecordBuf, ContainerError>>(depth);
    let (opened_tx, opened_rx) = sync_channel::<RecordBuf>(depth);

    let plaintext_sha256 = thread::scope(|scope| {
        let header = &header;
        let reader = scope.spawn(move || read_records(input, header, &free_rx, &sealed_tx));
        let hasher = scope.spawn(move || hash_plaintext(&opened_rx, &free_tx, digest));
        let opened = open_records(key, &keys, header, &sealed_rx, &opened_tx, output);
        // Unblock the other threads if opening stopped early.
        drop(opened_tx);
        drop(sealed_rx);
        let sha256 = join(hasher);
        join(reader);
        opened.map(|()| sha256)
    })?;

    if let Some(actual) = plaintext_sha256
        && actual != header.plaintext_sha256
    {
        return Err(ContainerError::DigestMismatch {
            declared: hex::encode(header.plaintext_sha256),
            actual: hex::encode(actual),
        });
    }
    Ok(VerifiedContainer { header, digest })
}

fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Reader thread: reads each chunk record, then checks that nothing follows the last one.
/// Errors (I/O, truncation, trailing data) travel down the channel in order.
fn read_records<R: Read>(
    mut input: R,
    header: &Header,
    free: &Receiver<RecordBuf>,
    out: &SyncSender<Result<RecordBuf, ContainerError>>,
) {
    let mut consumed = HEADER_LEN as u64;
    for index in 0..header.chunk_count() {
        let Ok(mut buf) = free.recv() else { return };
        let len = header
            .chunk_plaintext_len(index)
            .saturating_add(CHUNK_OVERHEAD);
        let message = match buf.fill_record(&mut input, len) {
            Ok(got) if got == len => {
                consumed = consumed.saturating_add(got as u64);
                Ok(buf)
            }
            Ok(got) => Err(ContainerError::Truncated {
                expected: header.container_len(),
                actual: consumed.saturating_add(got as u64),
            }),
            Err(e) => Err(e.into()),
        };
        let failed = message.is_err();
        if out.send(message).is_err() || failed {
            return;
        }
    }
    let trailing = io::copy(&mut input.take(TRAILING_COUNT_LIMIT), &mut io::sink());
    let _ = match trailing {
        Ok(0) => return,
        Ok(extra) => out.send(Err(ContainerError::TrailingData { extra })),
        Err(e) => out.send(Err(e.into())),
    };
}

/// Calling thread: authenticates and decrypts each record in place, in order, writes its
/// plaintext, and passes the buffer on to the hashing thread.
fn open_records(
    key: &ModelKey,
    keys: &FileKeys,
    header: &Header,
    records: &Receiver<Result<RecordBuf, ContainerError>>,
    plaintext: &SyncSender<RecordBuf>,
    mut output: Option<&mut dyn Write>,
) -> Result<(), ContainerError> {
    // Neither helper thread hangs up before this one, barring a panic, which `join` re-raises.
    let stopped = || ContainerError::Io(io::Error::other("container pipeline stopped"));
    for index in 0..header.chunk_count() {
        let mut buf = records.recv().map_err(|_| stopped())??;
        open_chunk(key, keys, header, index, buf.record_mut())?;
        if let Some(out) = output.as_mut() {
            out.write_all(buf.payload())?;
        }
        plaintext.send(buf).map_err(|_| stopped())?;
    }
    // After the last record the reader reports trailing data or an I/O error, or hangs up.
    if let Ok(Err(e)) = records.recv() {
        return Err(e);
    }
    if let Some(out) = output {
        out.flush()?;
    }
    Ok(())
}

/// Hashing thread: computes the plaintext digest (if asked to) and recycles each buffer.
fn hash_plaintext(
    records: &Receiver<RecordBuf>,
    free: &SyncSender<RecordBuf>,
    digest: DigestCheck,
) -> Option<[u8; 32]> {
    let mut sha256 =
        (digest == DigestCheck::Recompute).then(|| digest::Context::new(&digest::SHA256));
    for buf in records {
        if let Some(sha256) = sha256.as_mut() {
            sha256.update(buf.payload());
        }
        let _ = free.send(buf);
    }
    sha256.map(|context| digest_array(context.finish()))
}

/// Reads the 256-byte header and checks the fields that decide whether it can be read at all.
pub(super) fn read_raw_header<R: Read>(input: &mut R) -> Result<RawHeader, ContainerError> {
    let mut bytes = [0u8; HEADER_LEN];
    let got = read_full(input, &mut bytes)?;
    if got < HEADER_LEN {
        // Too short to be a container: report truncation if what is there starts like one (an
        // empty input does), else say it is something else.
        let present = bytes.get(..got.min(MAGIC.len())).unwrap_or_default();
        return if MAGIC.starts_with(present) {
            Err(ContainerError::Truncated {
                expected: HEADER_LEN as u64,
                actual: got as u64,
            })
        } else {
            Err(ContainerError::NotContainer)
        };
    }
    RawHeader::parse(&bytes)
}

/// Checks the header tag; on failure tells a wrong key from a modified header.
fn authenticate_header(
    key: &ModelKey,
    keys: &FileKeys,
    raw: &RawHeader,
) -> Result<(), ContainerError> {
    if hmac::verify(&keys.header, &raw.authenticated_bytes(), &raw.tag).is_ok() {
        return Ok(());
    }
    let supplied = key.id();
    if raw.key_id == supplied {
        return Err(ContainerError::HeaderAuthentication);
    }
    // The key ids differ. Either the key is wrong, or the header was sealed with this key and its
    // key-id field was then changed: in that case the tag verifies once our key id is put back.
    let restored = raw.with_key_id(supplied);
    if hmac::verify(&keys.header, &restored.authenticated_bytes(), &raw.tag).is_ok() {
        return Err(ContainerError::HeaderAuthentication);
    }
    Err(ContainerError::WrongKey {
        expected: raw.key_id,
        supplied,
    })
}

/// Authenticates and decrypts one chunk record (`label ‖ ciphertext ‖ tag`) in place.
fn open_chunk(
    key: &ModelKey,
    keys: &FileKeys,
    header: &Header,
    index: u32,
    record: &mut [u8],
) -> Result<(), ContainerError> {
    let last = header.is_last_chunk(index);
    let expected = chunk_label(&header.file_id, index);
    let Some((label, sealed)) = record.split_first_chunk_mut::<LABEL_LEN>() else {
        return Err(ContainerError::ChunkAuthentication { index });
    };
    if *label != expected {
        let label = *label;
        return Err(diagnose_foreign_chunk(
            key, keys, header, index, label, sealed,
        ));
    }
    keys.body
        .open_in_place(keys.nonce(index, last), Aad::from(expected), sealed)
        .map(|_| ())
        .map_err(|_| ContainerError::ChunkAuthentication { index })
}

/// Explains a chunk whose label is not the one expected at `position`: an authentic chunk of
/// this file from elsewhere (reordering), an authentic chunk of another container sealed with the
/// same key (splicing), or neither (modification). A diagnosis is reported only after the chunk
/// has been authenticated under the keys and nonce its label claims.
fn diagnose_foreign_chunk(
    key: &ModelKey,
    keys: &FileKeys,
    header: &Header,
    position: u32,
    label: [u8; LABEL_LEN],
    sealed: &[u8],
) -> ContainerError {
    let (claimed_file, claimed_index) = split_label(label);
    let mut scratch = Zeroizing::new(sealed.to_vec());
    // Authenticates the first `len` bytes of the sealed payload as chunk `claimed_index`.
    let mut authentic = |keys: &FileKeys, last: bool, len: usize| {
        scratch.copy_from_slice(sealed);
        let prefix = scratch.get_mut(..len).unwrap_or_default();
        keys.body
            .open_in_place(keys.nonce(claimed_index, last), Aad::from(label), prefix)
            .is_ok()
    };

    if claimed_file == header.file_id {
        // Records are read at the length of the position they sit in; a final chunk moved
        // forward is shorter than that, so its record is a prefix of what was read.
        let claimed_len = header
            .chunk_plaintext_len(claimed_index)
            .saturating_add(GCM_TAG_LEN);
        if claimed_index < header.chunk_count()
            && claimed_len <= sealed.len()
            && authentic(keys, header.is_last_chunk(claimed_index), claimed_len)
        {
            return ContainerError::ChunkReordered {
                position,
                original: claimed_index,
            };
        }
    } else {
        // Whether the chunk was last in its own file is unknown: try both.
        let other = FileKeys::derive(key, &claimed_file);
        let whole = sealed.len();
        if authentic(&other, false, whole) || authentic(&other, true, whole) {
            return ContainerError::ChunkSpliced {
                position,
                source_file_id: hex::encode(claimed_file),
                source_index: claimed_index,
            };
        }
    }
    ContainerError::ChunkAuthentication { index: position }
}
