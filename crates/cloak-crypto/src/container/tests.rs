use std::io::{self, Cursor};

use proptest::prelude::*;

use aws_lc_rs::hmac;

use super::header::RawHeader;
use super::keys::{BODY_KEY_INFO, FileKeys, HEADER_KEY_INFO};
use super::*;
use crate::key::{KEY_LEN, hkdf_expand};

const SMALL: ChunkSize = ChunkSize::MIN;
const CHUNK: usize = ChunkSize::MIN.get() as usize;

fn key() -> ModelKey {
    ModelKey::from_bytes([7; KEY_LEN])
}

fn other_key() -> ModelKey {
    ModelKey::from_bytes([8; KEY_LEN])
}

/// Deterministic, incompressible-looking model bytes.
fn model(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn seal_with(key: &ModelKey, plaintext: &[u8], chunk_size: ChunkSize) -> Vec<u8> {
    let options = SealOptions::new(ModelName::new("test-model").unwrap())
        .with_chunk_size(chunk_size)
        .with_created_at(1_790_000_000);
    let mut out = Cursor::new(Vec::new());
    seal(key, &options, plaintext, &mut out).unwrap();
    out.into_inner()
}

fn sealed(plaintext: &[u8]) -> Vec<u8> {
    seal_with(&key(), plaintext, SMALL)
}

fn open_bytes(key: &ModelKey, container: &[u8]) -> Result<Vec<u8>, ContainerError> {
    let mut out = Vec::new();
    open(key, container, &mut out)?;
    Ok(out)
}

fn open_err(container: &[u8]) -> ContainerError {
    open_bytes(&key(), container).expect_err("tampered container must not open")
}

/// Byte range of chunk record `index` in a container whose chunks are all `CHUNK` long but the
/// last.
fn record_range(index: usize, plaintext_len: usize) -> std::ops::Range<usize> {
    let start = HEADER_LEN + index * (CHUNK + CHUNK_OVERHEAD);
    let len = plaintext_len.saturating_sub(index * CHUNK).min(CHUNK) + CHUNK_OVERHEAD;
    start..start + len
}

/// Re-signs a header with the test key, as only the key holder can.
fn resign(container: &mut [u8], edit: impl FnOnce(&mut [u8; HEADER_LEN])) {
    let mut bytes: [u8; HEADER_LEN] = container[..HEADER_LEN].try_into().unwrap();
    edit(&mut bytes);
    let raw = RawHeader::parse(&bytes).unwrap();
    let keys = FileKeys::derive(&key(), &raw.file_id);
    let tag = hmac::sign(&keys.header, &raw.authenticated_bytes());
    bytes[HEADER_LEN - 32..].copy_from_slice(tag.as_ref());
    container[..HEADER_LEN].copy_from_slice(&bytes);
}

#[test]
fn round_trips_every_length_class() {
    for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5] {
        let plaintext = model(len);
        let container = sealed(&plaintext);
        let chunks = len.div_ceil(CHUNK).max(1);
        assert_eq!(
            container.len(),
            HEADER_LEN + chunks * CHUNK_OVERHEAD + len,
            "len {len}"
        );
        let mut out = Vec::new();
        let verified = open(&key(), &container[..], &mut out).unwrap();
        assert_eq!(out, plaintext, "len {len}");
        assert_eq!(verified.digest_check(), DigestCheck::Recompute);
        let header = verified.header();
        assert_eq!(header.plaintext_len(), len as u64);
        assert_eq!(header.chunk_count() as usize, chunks);
        assert_eq!(header.container_len(), container.len() as u64);
    }
}

#[test]
fn round_trips_with_the_default_chunk_size() {
    let plaintext = model(2 * 1024 * 1024 + 17);
    let container = seal_with(&key(), &plaintext, ChunkSize::DEFAULT);
    assert_eq!(open_bytes(&key(), &container).unwrap(), plaintext);
}

#[test]
fn header_records_what_was_sealed() {
    let plaintext = model(10_000);
    let container = sealed(&plaintext);
    let header = read_header(&container[..]).unwrap();
    assert_eq!(header.format_version(), FORMAT_VERSION);
    assert_eq!(header.algorithm(), Algorithm::Aes256GcmStream);
    assert_eq!(header.name().as_str(), "test-model");
    assert_eq!(header.key_id(), key().id());
    assert_eq!(header.chunk_size(), SMALL);
    assert_eq!(header.plaintext_len(), 10_000);
    assert_eq!(header.created_at(), 1_790_000_000);
    let expected = digest::digest(&digest::SHA256, &plaintext);
    assert_eq!(&header.plaintext_sha256()[..], expected.as_ref());
    assert_eq!(&container[..8], b"\x89CLOAK\r\n");
    let verified = verify(&key(), &container[..], DigestCheck::Skip).unwrap();
    assert_eq!(verified.header(), &header);
}

#[test]
fn containers_of_the_same_model_and_key_differ() {
    let plaintext = model(5000);
    let a = sealed(&plaintext);
    let b = sealed(&plaintext);
    assert_ne!(a, b);
    assert_ne!(
        read_header(&a[..]).unwrap().file_id(),
        read_header(&b[..]).unwrap().file_id()
    );
}

#[test]
fn ciphertext_does_not_contain_the_plaintext() {
    let plaintext = vec![0x41u8; 3 * CHUNK];
    let container = sealed(&plaintext);
    assert!(
        !container.windows(64).any(|w| w == &plaintext[..64]),
        "plaintext run found in container"
    );
}

#[test]
fn every_header_bit_flip_fails_with_the_error_for_its_field() {
    let container = sealed(&model(100));
    for byte in 0..HEADER_LEN {
        for bit in 0..8 {
            let mut tampered = container.clone();
            tampered[byte] ^= 1 << bit;
            let err = open_err(&tampered);
            let ok = match byte {
                0..=7 => matches!(err, ContainerError::NotContainer),
                8..=9 => matches!(err, ContainerError::UnsupportedVersion { .. }),
                10..=11 => matches!(err, ContainerError::UnsupportedAlgorithm { .. }),
                _ => matches!(err, ContainerError::HeaderAuthentication),
            };
            assert!(ok, "byte {byte:#04x} bit {bit}: {err:?}");
        }
    }
}

#[test]
fn every_body_bit_flip_fails_as_chunk_authentication_of_that_chunk() {
    let len = CHUNK + 100;
    let container = sealed(&model(len));
    for index in 0..2 {
        for byte in record_range(index, len) {
            for bit in 0..8 {
                let mut tampered = container.clone();
                tampered[byte] ^= 1 << bit;
                match open_err(&tampered) {
                    ContainerError::ChunkAuthentication { index: i } => {
                        assert_eq!(i as usize, index, "byte {byte} bit {bit}");
                    }
                    other => panic!("byte {byte} bit {bit}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn swapped_chunks_are_reported_as_reordered() {
    let len = 3 * CHUNK;
    let container = sealed(&model(len));
    let (r0, r1, r2) = (
        record_range(0, len),
        record_range(1, len),
        record_range(2, len),
    );

    let mut swapped = container.clone();
    swapped[r0.clone()].copy_from_slice(&container[r1.clone()]);
    swapped[r1.clone()].copy_from_slice(&container[r0.clone()]);
    assert!(matches!(
        open_err(&swapped),
        ContainerError::ChunkReordered {
            position: 0,
            original: 1
        }
    ));

    // The final chunk moved forward: its last-chunk flag is checked at its claimed position.
    let mut last_moved = container.clone();
    last_moved[r1.clone()].copy_from_slice(&container[r2.clone()]);
    last_moved[r2].copy_from_slice(&container[r1.clone()]);
    assert!(matches!(
        open_err(&last_moved),
        ContainerError::ChunkReordered {
            position: 1,
            original: 2
        }
    ));

    // A duplicated chunk is a reordering too.
    let mut duplicated = container.clone();
    duplicated[r1].copy_from_slice(&container[r0]);
    assert!(matches!(
        open_err(&duplicated),
        ContainerError::ChunkReordered {
            position: 1,
            original: 0
        }
    ));
}

#[test]
fn chunks_from_another_container_with_the_same_key_are_reported_as_spliced() {
    let len = 3 * CHUNK;
    let plaintext = model(len);
    let a = sealed(&plaintext);
    let b = sealed(&plaintext);
    let b_file = hex::encode(read_header(&b[..]).unwrap().file_id());
    for index in 0..3 {
        let range = record_range(index, len);
        let mut spliced = a.clone();
        spliced[range.clone()].copy_from_slice(&b[range]);
        match open_err(&spliced) {
            ContainerError::ChunkSpliced {
                position,
                source_file_id,
                source_index,
            } => {
                assert_eq!(position as usize, index);
                assert_eq!(source_index as usize, index);
                assert_eq!(source_file_id, b_file);
            }
            other => panic!("chunk {index}: {other:?}"),
        }
    }
}

#[test]
fn chunks_from_a_container_with_another_key_are_chunk_authentication_failures() {
    let len = 2 * CHUNK;
    let plaintext = model(len);
    let a = sealed(&plaintext);
    let b = seal_with(&other_key(), &plaintext, SMALL);
    let range = record_range(1, len);
    let mut spliced = a.clone();
    spliced[range.clone()].copy_from_slice(&b[range]);
    assert!(matches!(
        open_err(&spliced),
        ContainerError::ChunkAuthentication { index: 1 }
    ));
}

#[test]
fn truncation_anywhere_is_reported_with_lengths() {
    let len = 2 * CHUNK + 10;
    let container = sealed(&model(len));
    let full = container.len() as u64;
    for cut in [
        4,
        8,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 1,
        record_range(0, len).end,
        record_range(1, len).end - 1,
        record_range(1, len).end,
        container.len() - 1,
    ] {
        let expected = if cut < HEADER_LEN {
            HEADER_LEN as u64
        } else {
            full
        };
        match open_err(&container[..cut]) {
            ContainerError::Truncated {
                expected: e,
                actual,
            } => {
                assert_eq!((e, actual), (expected, cut as u64), "cut at {cut}");
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn the_last_chunk_flag_stops_truncation_at_a_chunk_boundary_even_with_an_authentic_length() {
    // Only the key holder can re-sign a header, but even then a container cut after a non-final
    // chunk does not open: that chunk was sealed without the last-chunk flag.
    let container = sealed(&model(2 * CHUNK));
    let mut cut = container[..record_range(0, 2 * CHUNK).end].to_vec();
    resign(&mut cut, |h| {
        h[0x10..0x18].copy_from_slice(&(CHUNK as u64).to_be_bytes())
    });
    assert!(matches!(
        open_err(&cut),
        ContainerError::ChunkAuthentication { index: 0 }
    ));
}

#[test]
fn trailing_bytes_are_rejected_and_counted_up_to_a_mebibyte() {
    let mut container = sealed(&model(100));
    container.extend_from_slice(&[0; 3]);
    assert!(matches!(
        open_err(&container),
        ContainerError::TrailingData { extra: 3 }
    ));
    container.extend_from_slice(&vec![0; 100_000]);
    assert!(matches!(
        open_err(&container),
        ContainerError::TrailingData { extra: 100_003 }
    ));
    container.extend_from_slice(&vec![0; 2 << 20]);
    assert!(matches!(
        open_err(&container),
        ContainerError::TrailingData { extra: 1_048_576 }
    ));
}

#[test]
fn a_different_key_is_reported_as_wrong_key_with_both_ids() {
    let container = sealed(&model(100));
    match open_bytes(&other_key(), &container).unwrap_err() {
        ContainerError::WrongKey { expected, supplied } => {
            assert_eq!(expected, key().id());
            assert_eq!(supplied, other_key().id());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_key_id_field_rewritten_to_another_key_is_header_tampering_not_wrong_key() {
    let mut container = sealed(&model(100));
    container[0x20..0x30].copy_from_slice(other_key().id().as_bytes());
    assert!(matches!(
        open_err(&container),
        ContainerError::HeaderAuthentication
    ));
}

#[test]
fn unknown_versions_and_algorithms_are_refused_before_any_cryptography() {
    let mut v2 = sealed(&model(10));
    v2[8..10].copy_from_slice(&2u16.to_be_bytes());
    assert!(matches!(
        read_header(&v2[..]).unwrap_err(),
        ContainerError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    ));
    assert!(matches!(
        open_err(&v2),
        ContainerError::UnsupportedVersion { found: 2, .. }
    ));

    let mut alg = sealed(&model(10));
    alg[10..12].copy_from_slice(&0x0002u16.to_be_bytes());
    assert!(matches!(
        open_err(&alg),
        ContainerError::UnsupportedAlgorithm { found: 2 }
    ));
}

#[test]
fn non_containers_are_recognised() {
    for input in [&b"\x89CLOAX\r\n"[..], b"PK\x03\x04 zip file", &[0u8; 300]] {
        assert!(matches!(open_err(input), ContainerError::NotContainer));
        assert!(matches!(
            read_header(input).unwrap_err(),
            ContainerError::NotContainer
        ));
    }
}

#[test]
fn an_empty_input_is_a_truncated_container() {
    assert!(matches!(
        open_err(b""),
        ContainerError::Truncated {
            expected: 256,
            actual: 0
        }
    ));
}

#[test]
fn a_moved_short_final_chunk_is_reported_as_reordered() {
    let len = 4 * CHUNK + 100;
    let container = sealed(&model(len));
    let mut moved = container[..HEADER_LEN].to_vec();
    moved.extend_from_slice(&container[record_range(4, len)]);
    for index in 1..4 {
        moved.extend_from_slice(&container[record_range(index, len)]);
    }
    moved.extend_from_slice(&container[record_range(0, len)]);
    assert_eq!(moved.len(), container.len());
    assert!(matches!(
        open_err(&moved),
        ContainerError::ChunkReordered {
            position: 0,
            original: 4
        }
    ));
}

#[test]
fn an_edited_key_id_with_other_edits_is_indistinguishable_from_a_wrong_key() {
    // Without the right key nothing tells these apart, so the error says the key id the header
    // names is unauthenticated.
    let mut container = sealed(&model(100));
    container[0x20..0x30].copy_from_slice(&[0xEE; 16]);
    container[0x60] ^= 0x20;
    let err = open_err(&container);
    assert!(matches!(err, ContainerError::WrongKey { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("unauthenticated"), "{message}");
    assert!(message.contains("header was modified"), "{message}");
}

#[test]
fn a_reader_that_claims_more_than_it_was_given_is_an_io_error() {
    struct Liar;
    impl Read for Liar {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Ok(buf.len() + 1)
        }
    }
    assert!(matches!(
        open(&key(), Liar, io::sink()).unwrap_err(),
        ContainerError::Io(_)
    ));
    let options = SealOptions::new(ModelName::new("x").unwrap());
    assert!(matches!(
        seal(&key(), &options, Liar, Cursor::new(Vec::new())).unwrap_err(),
        SealError::Io(_)
    ));
}

#[test]
fn a_header_whose_digest_lies_fails_the_digest_check_but_still_authenticates() {
    let mut container = sealed(&model(5000));
    resign(&mut container, |h| h[0x40] ^= 0xFF);
    assert!(matches!(
        open_err(&container),
        ContainerError::DigestMismatch { .. }
    ));
    assert!(matches!(
        verify(&key(), &container[..], DigestCheck::Recompute).unwrap_err(),
        ContainerError::DigestMismatch { .. }
    ));
    let verified = verify(&key(), &container[..], DigestCheck::Skip).unwrap();
    assert_eq!(verified.digest_check(), DigestCheck::Skip);
}

#[test]
fn authentic_but_malformed_headers_are_rejected() {
    type Edit = fn(&mut [u8; HEADER_LEN]);
    let edits: [(&str, Edit); 4] = [
        ("chunk size too small", |h| {
            h[0x0C..0x10].copy_from_slice(&1024u32.to_be_bytes());
        }),
        ("chunk size too large", |h| {
            h[0x0C..0x10].copy_from_slice(&(32u32 << 20).to_be_bytes());
        }),
        ("name padding", |h| h[0xDF] = b'x'),
        ("name alphabet", |h| h[0x60] = b'/'),
    ];
    for (what, edit) in edits {
        let mut container = sealed(&model(10));
        resign(&mut container, edit);
        assert!(
            matches!(open_err(&container), ContainerError::MalformedHeader(_)),
            "{what}"
        );
        assert!(
            matches!(
                read_header(&container[..]).unwrap_err(),
                ContainerError::MalformedHeader(_)
            ),
            "{what}"
        );
    }
}

#[test]
fn model_names_follow_the_documented_alphabet() {
    for good in [
        "a",
        "resnet50",
        "all-MiniLM-L6-v2",
        "m.v1_2",
        &"x".repeat(128),
    ] {
        assert!(ModelName::new(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "-lead",
        ".hidden",
        "has space",
        "slash/name",
        "ünï",
        "nul\0",
        &"x".repeat(129),
    ] {
        assert!(ModelName::new(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn algorithm_and_names_display_as_documented() {
    assert_eq!(Algorithm::Aes256GcmStream.id(), 0x0001);
    assert_eq!(Algorithm::Aes256GcmStream.name(), "aes-256-gcm-stream");
    let name = ModelName::new("resnet-50").unwrap();
    assert_eq!(name.to_string(), "resnet-50");
    assert_eq!(format!("{name:?}"), "ModelName(\"resnet-50\")");
}

#[test]
fn the_chunk_count_limit_is_enforced_at_its_boundary() {
    // A header may describe at most MAX_CHUNKS chunks: exactly that many is a valid (if huge,
    // here truncated) container; one byte more is malformed.
    let at_limit = u64::from(MAX_CHUNKS) * CHUNK as u64;
    let mut container = sealed(&model(10));
    resign(&mut container, |h| {
        h[0x10..0x18].copy_from_slice(&at_limit.to_be_bytes())
    });
    assert!(matches!(
        open_err(&container),
        ContainerError::Truncated { .. }
    ));
    resign(&mut container, |h| {
        h[0x10..0x18].copy_from_slice(&(at_limit + 1).to_be_bytes());
    });
    assert!(matches!(
        open_err(&container),
        ContainerError::MalformedHeader(_)
    ));
}

#[test]
fn chunk_sizes_are_bounded() {
    assert!(ChunkSize::new(4095).is_none());
    assert!(ChunkSize::new(4096).is_some());
    assert!(ChunkSize::new(16 << 20).is_some());
    assert!(ChunkSize::new((16 << 20) + 1).is_none());
}

#[test]
fn file_keys_match_independent_hkdf_computation() {
    // Computed with Python's hmac/hashlib from the README's definitions, K = 0x07 * 32 and
    // F = 00 01 .. 0f.
    let file_id: [u8; 16] = core::array::from_fn(|i| i as u8);
    let keys = FileKeys::derive(&key(), &file_id);
    assert_eq!(hex::encode(keys.nonce_prefix), "0faaff5625231c");
    let mut header_key = [0u8; 32];
    hkdf_expand(&file_id, &[7; 32], HEADER_KEY_INFO, &mut header_key);
    assert_eq!(
        hex::encode(header_key),
        "e39dd18cc502a4b5d958537fb5ce98f695ffe894cdb386708d148c00fbd25f29"
    );
    let mut body_key = [0u8; 32];
    hkdf_expand(&file_id, &[7; 32], BODY_KEY_INFO, &mut body_key);
    assert_eq!(
        hex::encode(body_key),
        "5f3b2489d2b093bbd4df9179e3e43f4bb8a24f11e5f99c7bfcdd4a8da3d8ba5a"
    );
}

#[test]
fn nonces_bind_position_and_finality() {
    let keys = FileKeys::derive(&key(), &[1; 16]);
    let n = |i, last| keys.nonce(i, last).as_ref().to_vec();
    assert_ne!(n(0, false), n(0, true));
    assert_ne!(n(0, false), n(1, false));
    assert_eq!(&n(0x0102_0304, true)[7..], &[1, 2, 3, 4, 1]);
}

#[test]
fn error_codes_are_distinct() {
    let errors = [
        ContainerError::ChunkAuthentication { index: 0 },
        ContainerError::ChunkReordered {
            position: 0,
            original: 1,
        },
        ContainerError::ChunkSpliced {
            position: 0,
            source_file_id: String::new(),
            source_index: 0,
        },
        ContainerError::DigestMismatch {
            declared: String::new(),
            actual: String::new(),
        },
        ContainerError::HeaderAuthentication,
        ContainerError::Io(io::Error::other("x")),
        ContainerError::MalformedHeader("x"),
        ContainerError::NotContainer,
        ContainerError::TrailingData { extra: 1 },
        ContainerError::Truncated {
            expected: 1,
            actual: 0,
        },
        ContainerError::UnsupportedAlgorithm { found: 0 },
        ContainerError::UnsupportedVersion {
            found: 0,
            supported: 1,
        },
        ContainerError::WrongKey {
            expected: key().id(),
            supplied: other_key().id(),
        },
    ];
    let mut codes: Vec<_> = errors.iter().map(ContainerError::code).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}

/// A reader that hands out at most 7 bytes per call and interrupts every other call.
struct Trickle<'a> {
    data: &'a [u8],
    interrupt: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(7).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A reader that fails after `ok` bytes.
struct FailingReader<'a> {
    data: &'a [u8],
    ok: usize,
}

impl Read for FailingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.ok).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.ok -= n;
        Ok(n)
    }
}

/// A writer that fails after `ok` bytes.
struct FailingWriter {
    ok: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.ok);
        self.ok -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn short_and_interrupted_reads_are_handled() {
    let plaintext = model(3 * CHUNK + 11);
    let mut sealed_out = Cursor::new(Vec::new());
    let options = SealOptions::new(ModelName::new("trickle").unwrap()).with_chunk_size(SMALL);
    seal(
        &key(),
        &options,
        Trickle {
            data: &plaintext,
            interrupt: false,
        },
        &mut sealed_out,
    )
    .unwrap();
    let container = sealed_out.into_inner();
    assert_eq!(container.len(), sealed(&plaintext).len());
    let mut out = Vec::new();
    open(
        &key(),
        Trickle {
            data: &container,
            interrupt: false,
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(out, plaintext);
}

#[test]
fn input_and_output_errors_are_reported_as_io_errors() {
    let plaintext = model(3 * CHUNK);
    let container = sealed(&plaintext);
    for ok in [
        0,
        10,
        HEADER_LEN + 5,
        record_range(1, plaintext.len()).start + 3,
    ] {
        let reader = FailingReader {
            data: &container,
            ok,
        };
        let err = open(&key(), reader, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(&err, ContainerError::Io(e) if e.to_string() == "disk on fire"),
            "fail after {ok}: {err:?}"
        );
    }
    for ok in [0, CHUNK - 1, 2 * CHUNK + 5] {
        let err = open(&key(), &container[..], FailingWriter { ok }).unwrap_err();
        assert!(
            matches!(&err, ContainerError::Io(e) if e.to_string() == "disk full"),
            "fail after {ok}: {err:?}"
        );
    }
    let options = SealOptions::new(ModelName::new("x").unwrap()).with_chunk_size(SMALL);
    let reader = FailingReader {
        data: &plaintext,
        ok: CHUNK + 3,
    };
    let err = seal(&key(), &options, reader, Cursor::new(Vec::new())).unwrap_err();
    assert!(matches!(&err, SealError::Io(e) if e.to_string() == "disk on fire"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = open_bytes(&key(), &bytes);
        let _ = read_header(&bytes[..]);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_magic_never_open(
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&tail);
        prop_assert!(open_bytes(&key(), &bytes).is_err());
    }

    #[test]
    fn any_edit_of_a_container_is_detected(
        len in 0usize..(3 * CHUNK),
        position in any::<prop::sample::Index>(),
        xor in 1u8..,
        cut in any::<prop::sample::Index>(),
        edit in 0u8..3,
    ) {
        let plaintext = model(len);
        let container = sealed(&plaintext);
        let mut edited = container.clone();
        match edit {
            0 => edited[position.index(container.len())] ^= xor,
            1 => edited.truncate(cut.index(container.len())),
            _ => edited.insert(position.index(container.len() + 1), xor),
        }
        prop_assert!(open_bytes(&key(), &edited).is_err());
    }
}
