//! Sealing: a reader thread reads and hashes the plaintext chunk by chunk (looking one chunk
//! ahead to know which is last) while the calling thread encrypts and writes.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::mpsc::sync_channel;
use std::thread;

use aws_lc_rs::aead::Aad;
use aws_lc_rs::{digest, hmac};

use super::keys::{FileKeys, GCM_TAG_LEN, LABEL_LEN, chunk_label};
use super::record::{RecordBuf, buffer_pool, pool_depth};
use super::{
    Algorithm, CHUNK_OVERHEAD, FILE_ID_LEN, HEADER_LEN, Header, MAX_CHUNKS, SealError, SealOptions,
    chunk_len, digest_array,
};
use crate::key::ModelKey;

/// A plaintext chunk on its way to encryption.
struct Chunk {
    index: u32,
    buf: RecordBuf,
    last: bool,
}

/// What the reader saw in total.
struct ReadSummary {
    plaintext_len: u64,
    sha256: [u8; 32],
}

pub(super) fn seal<R: Read + Send, W: Write + Seek>(
    key: &ModelKey,
    options: &SealOptions,
    input: R,
    mut output: W,
) -> Result<Header, SealError> {
    let start = output.stream_position()?;
    let mut file_id = [0u8; FILE_ID_LEN];
    getrandom::fill(&mut file_id).map_err(|e| SealError::Random(e.to_string()))?;
    let keys = FileKeys::derive(key, &file_id);
    output.write_all(&[0u8; HEADER_LEN])?;

    let chunk = chunk_len(options.chunk_size);
    let capacity = chunk.saturating_add(CHUNK_OVERHEAD);
    let (free_tx, free_rx) = buffer_pool(capacity);
    let (chunk_tx, chunk_rx) = sync_channel::<Result<Chunk, SealError>>(pool_depth(capacity));

    let summary = thread::scope(|scope| {
        let reader = scope.spawn(move || read_chunks(input, chunk, &free_rx, &chunk_tx));
        let written = encrypt_chunks(&keys, &file_id, &chunk_rx, &free_tx, &mut output);
        // Unblock the reader if encryption stopped early.
        drop(chunk_rx);
        drop(free_tx);
        let summary = match reader.join() {
            Ok(summary) => summary,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        written.map(|()| summary)
    })?;
    let Some(summary) = summary else {
        // The reader stopped without a final chunk and without reporting an error: only possible
        // if the encryption side hung up first, which returns its own error above.
        return Err(SealError::Encryption);
    };

    let header = Header {
        algorithm: Algorithm::Aes256GcmStream,
        chunk_size: options.chunk_size,
        plaintext_len: summary.plaintext_len,
        created_at: options.created_at,
        key_id: key.id(),
        file_id,
        plaintext_sha256: summary.sha256,
        name: options.name.clone(),
    };
    let mut raw = header.to_raw();
    let tag = hmac::sign(&keys.header, &raw.authenticated_bytes());
    raw.tag.copy_from_slice(tag.as_ref());
    let end = output.stream_position()?;
    output.seek(SeekFrom::Start(start))?;
    output.write_all(&raw.to_bytes())?;
    output.seek(SeekFrom::Start(end))?;
    output.flush()?;
    Ok(header)
}

/// Reader thread: fills buffers with plaintext, hashes it, and marks the final chunk, which it
/// can only know by reading one chunk ahead. Errors travel down the channel.
fn read_chunks<R: Read>(
    mut input: R,
    chunk: usize,
    free: &std::sync::mpsc::Receiver<RecordBuf>,
    out: &std::sync::mpsc::SyncSender<Result<Chunk, SealError>>,
) -> Option<ReadSummary> {
    let mut sha256 = digest::Context::new(&digest::SHA256);
    let mut plaintext_len = 0u64;
    let mut pending: Option<RecordBuf> = None;
    let mut index = 0u32;
    loop {
        let mut buf = free.recv().ok()?;
        let got = match buf.fill_payload(&mut input, chunk) {
            Ok(got) => got,
            Err(e) => {
                let _ = out.send(Err(e.into()));
                return None;
            }
        };
        sha256.update(buf.payload());
        plaintext_len = plaintext_len.saturating_add(got as u64);
        let at_end = got < chunk;
        if let Some(previous) = pending.take() {
            // A full chunk followed by nothing is the final chunk.
            let last = got == 0;
            out.send(Ok(Chunk {
                index,
                buf: previous,
                last,
            }))
            .ok()?;
            if last {
                break;
            }
            index = match index.checked_add(1).filter(|&i| i < MAX_CHUNKS) {
                Some(next) => next,
                None => {
                    let _ = out.send(Err(SealError::InputTooLarge {
                        chunk_size: u32::try_from(chunk).unwrap_or(u32::MAX),
                    }));
                    return None;
                }
            };
        }
        if at_end {
            out.send(Ok(Chunk {
                index,
                buf,
                last: true,
            }))
            .ok()?;
            break;
        }
        pending = Some(buf);
    }
    Some(ReadSummary {
        plaintext_len,
        sha256: digest_array(sha256.finish()),
    })
}

/// Calling thread: labels, encrypts and writes each chunk, and returns its buffer to the pool.
fn encrypt_chunks<W: Write>(
    keys: &FileKeys,
    file_id: &[u8; FILE_ID_LEN],
    chunks: &std::sync::mpsc::Receiver<Result<Chunk, SealError>>,
    free: &std::sync::mpsc::SyncSender<RecordBuf>,
    output: &mut W,
) -> Result<(), SealError> {
    for message in chunks {
        let Chunk {
            index,
            mut buf,
            last,
        } = message?;
        let label = chunk_label(file_id, index);
        let (label_field, payload, tag_field) = buf.parts_mut();
        // `fill_payload` sized the record as label, payload and tag; this cannot fail.
        if tag_field.len() != GCM_TAG_LEN || label_field.len() != LABEL_LEN {
            return Err(SealError::Encryption);
        }
        label_field.copy_from_slice(&label);
        let tag = keys
            .body
            .seal_in_place_separate_tag(keys.nonce(index, last), Aad::from(label), payload)
            .map_err(|_| SealError::Encryption)?;
        tag_field.copy_from_slice(tag.as_ref());
        output.write_all(buf.record())?;
        let _ = free.send(buf);
        if last {
            return Ok(());
        }
    }
    Ok(())
}
