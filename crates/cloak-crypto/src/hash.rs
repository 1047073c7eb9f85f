//! SHA-2 and BLAKE3 digests, for the crates that must not name a cryptography provider
//! themselves.

use aws_lc_rs::digest;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// SHA-256 of the concatenation of `parts`, without copying them together.
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// BLAKE3 (256-bit output, plain hashing mode) of the concatenation of `parts`, without
/// copying them together.
pub fn blake3_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}

/// SHA-384 of `data`.
pub fn sha384(data: &[u8]) -> [u8; 48] {
    let mut out = [0u8; 48];
    out.copy_from_slice(digest::digest(&digest::SHA384, data).as_ref());
    out
}

/// SHA-512 of `data`.
pub fn sha512(data: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(digest::digest(&digest::SHA512, data).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_known_answers() {
        // FIPS 180-2 "abc" test vectors.
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(hex::encode(sha384(b"abc")).starts_with("cb00753f45a35e8bb5a03d699ac65007"));
        assert!(hex::encode(sha512(b"abc")).starts_with("ddaf35a193617abacc417349ae204131"));
        assert_eq!(sha256_parts(&[b"a", b"", b"bc"]), sha256(b"abc"));
        // BLAKE3's published test vector for the empty input, and "abc" in parts.
        assert_eq!(
            hex::encode(blake3_parts(&[])),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            hex::encode(blake3_parts(&[b"a", b"", b"bc"])),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }
}
