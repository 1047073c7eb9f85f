//! Per-container keys, nonces and chunk labels.

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use super::FILE_ID_LEN;
use crate::key::{ModelKey, hkdf_expand};

/// Length of a chunk label: file id and 32-bit chunk index.
pub(crate) const LABEL_LEN: usize = FILE_ID_LEN + 4;
/// Length of an AES-GCM tag.
pub(crate) const GCM_TAG_LEN: usize = 16;
const NONCE_PREFIX_LEN: usize = 7;

pub(crate) const BODY_KEY_INFO: &[u8] = b"cloak-model/v1 body-key";
pub(crate) const HEADER_KEY_INFO: &[u8] = b"cloak-model/v1 header-key";
const NONCE_PREFIX_INFO: &[u8] = b"cloak-model/v1 nonce-prefix";

/// The keys and nonce prefix of one container, derived from the model key and the file id.
pub(crate) struct FileKeys {
    pub(crate) body: LessSafeKey,
    pub(crate) header: hmac::Key,
    pub(crate) nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl FileKeys {
    pub(crate) fn derive(key: &ModelKey, file_id: &[u8; FILE_ID_LEN]) -> Self {
        let mut body = Zeroizing::new([0u8; 32]);
        let mut header = Zeroizing::new([0u8; 32]);
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        hkdf_expand(file_id, key.expose(), BODY_KEY_INFO, body.as_mut_slice());
        hkdf_expand(
            file_id,
            key.expose(),
            HEADER_KEY_INFO,
            header.as_mut_slice(),
        );
        hkdf_expand(file_id, key.expose(), NONCE_PREFIX_INFO, &mut nonce_prefix);
        #[allow(clippy::expect_used)]
        let body = UnboundKey::new(&AES_256_GCM, body.as_slice())
            // AES-256-GCM accepts any 32-byte key.
            .expect("a 32-byte key is a valid AES-256 key");
        Self {
            body: LessSafeKey::new(body),
            header: hmac::Key::new(hmac::HMAC_SHA256, header.as_slice()),
            nonce_prefix,
        }
    }

    /// `prefix ‖ be32(index) ‖ last-chunk flag`.
    pub(crate) fn nonce(&self, index: u32, last: bool) -> Nonce {
        let mut nonce = [0u8; NONCE_LEN];
        let (prefix, rest) = nonce.split_at_mut(NONCE_PREFIX_LEN);
        let (counter, flag) = rest.split_at_mut(4);
        prefix.copy_from_slice(&self.nonce_prefix);
        counter.copy_from_slice(&index.to_be_bytes());
        flag.fill(u8::from(last));
        Nonce::assume_unique_for_key(nonce)
    }
}

/// `file id ‖ be32(index)`.
pub(crate) fn chunk_label(file_id: &[u8; FILE_ID_LEN], index: u32) -> [u8; LABEL_LEN] {
    let mut label = [0u8; LABEL_LEN];
    let (file, counter) = label.split_at_mut(FILE_ID_LEN);
    file.copy_from_slice(file_id);
    counter.copy_from_slice(&index.to_be_bytes());
    label
}

/// The file id and chunk index a label names.
pub(crate) fn split_label(label: [u8; LABEL_LEN]) -> ([u8; FILE_ID_LEN], u32) {
    let (file, counter) = label.split_at(FILE_ID_LEN);
    let mut file_id = [0u8; FILE_ID_LEN];
    file_id.copy_from_slice(file);
    let mut index = [0u8; 4];
    index.copy_from_slice(counter);
    (file_id, u32::from_be_bytes(index))
}
