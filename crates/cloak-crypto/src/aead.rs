//! Single-shot AES-256-GCM, for small blobs (sealed keys and state) that need no streaming.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

/// Length of the authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// Encrypts `plaintext` under `key` and a nonce that must never repeat for this key; returns
/// `ciphertext ‖ tag`.
pub fn seal(key: &[u8; 32], nonce: [u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len().saturating_add(TAG_LEN));
    seal_append(key, nonce, aad, plaintext, &mut out);
    out
}

/// Like [`seal`], but appends `ciphertext ‖ tag` to `out` (which may already hold a header),
/// so the caller can build a whole blob in one allocation.
pub fn seal_append(
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.reserve(plaintext.len().saturating_add(TAG_LEN));
    out.extend_from_slice(plaintext);
    let tag = {
        let in_out = out.get_mut(start..).unwrap_or_default();
        // AES-256-GCM accepts any 32-byte key and fails only for inputs beyond 64 GiB.
        #[allow(clippy::expect_used)]
        aes(key)
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .expect("AES-256-GCM seals any input below 64 GiB")
    };
    out.extend_from_slice(tag.as_ref());
}

/// Authenticates and decrypts `ciphertext ‖ tag`; `None` if anything was changed (or the key,
/// nonce or AAD differ). The plaintext is zeroized on drop.
pub fn open(
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let mut in_out = Zeroizing::new(sealed.to_vec());
    let len = aes(key)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut in_out,
        )
        .ok()?
        .len();
    in_out.truncate(len);
    Some(in_out)
}

fn aes(key: &[u8; 32]) -> LessSafeKey {
    // A 32-byte slice is always a valid AES-256 key.
    #[allow(clippy::expect_used)]
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256 key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_any_change() {
        let key = [3u8; 32];
        let sealed = seal(&key, [1; 12], b"aad", b"secret");
        assert_eq!(sealed.len(), 6 + TAG_LEN);
        assert_eq!(
            open(&key, [1; 12], b"aad", &sealed).unwrap().as_slice(),
            b"secret"
        );
        assert!(open(&[4; 32], [1; 12], b"aad", &sealed).is_none());
        assert!(open(&key, [2; 12], b"aad", &sealed).is_none());
        assert!(open(&key, [1; 12], b"aaD", &sealed).is_none());
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 1;
            assert!(open(&key, [1; 12], b"aad", &tampered).is_none(), "byte {i}");
        }
    }

    #[test]
    fn seal_append_keeps_the_prefix_and_matches_seal() {
        let key = [5u8; 32];
        let mut out = b"header".to_vec();
        seal_append(&key, [9; 12], b"header", b"state", &mut out);
        assert_eq!(&out[..6], b"header");
        assert_eq!(out[6..], seal(&key, [9; 12], b"header", b"state")[..]);
        assert_eq!(
            open(&key, [9; 12], b"header", &out[6..])
                .unwrap()
                .as_slice(),
            b"state"
        );
    }
}
