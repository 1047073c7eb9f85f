//! Model keys kept across restarts: each key the broker released is sealed to this enclave's
//! measurement (`KeyPolicy::Measurement`) and written beside its container as
//! `NAME.cloak.sealed-key`, so a restart of the same build serves without the broker. Another
//! build (a new measurement) or a changed byte cannot unseal it; such a file is ignored and the
//! key is asked for again.
//!
//! The sealed plaintext binds the key to its model: `"cloak-model-key/v1" ‖ 0x00 ‖ model name ‖
//! 0x00 ‖ key (32 bytes)`, so a sealed key renamed onto another container is refused.

use std::path::{Path, PathBuf};

use cloak_crypto::key::{KEY_LEN, ModelKey};
use cloak_tee::{KeyPolicy, Platform};

const DOMAIN: &[u8] = b"cloak-model-key/v1";
const SUFFIX: &str = ".sealed-key";

/// Where the sealed key of the container at `container` lives.
pub fn sealed_key_path(container: &Path) -> PathBuf {
    let mut name = container.as_os_str().to_owned();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// Seals `key` for `model` to this enclave's measurement and writes it (atomically, mode 0600).
pub fn seal_key(
    platform: &dyn Platform,
    container: &Path,
    model: &str,
    key: &ModelKey,
) -> Result<(), cloak_tee::seal::SealError> {
    let plaintext = zeroize::Zeroizing::new(encode(model, key));
    cloak_tee::seal::seal_to_file(
        platform,
        KeyPolicy::Measurement,
        &plaintext,
        &sealed_key_path(container),
    )
}

/// Why a sealed key could not be used.
#[derive(Debug)]
pub struct UnsealFailure {
    /// A stable code (the sealing layer's, or `sealed-key-mismatch`).
    pub code: &'static str,
    /// A sentence.
    pub reason: String,
}

/// The sealed key for `model` beside `container`: `Ok(None)` when there is none.
pub fn unseal_key(
    platform: &dyn Platform,
    container: &Path,
    model: &str,
) -> Result<Option<ModelKey>, UnsealFailure> {
    let path = sealed_key_path(container);
    if !path.exists() {
        return Ok(None);
    }
    let plaintext = cloak_tee::seal::unseal_file(platform, &path).map_err(|e| UnsealFailure {
        code: e.code(),
        reason: format!("{}: {e}", path.display()),
    })?;
    decode(&plaintext, model)
        .map(Some)
        .ok_or_else(|| UnsealFailure {
            code: "sealed-key-mismatch",
            reason: format!("{} holds the key of another model", path.display()),
        })
}

fn encode(model: &str, key: &ModelKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        DOMAIN
            .len()
            .saturating_add(model.len())
            .saturating_add(KEY_LEN + 2),
    );
    out.extend_from_slice(DOMAIN);
    out.push(0);
    out.extend_from_slice(model.as_bytes());
    out.push(0);
    out.extend_from_slice(key.secret_bytes());
    out
}

fn decode(plaintext: &[u8], model: &str) -> Option<ModelKey> {
    let rest = plaintext.strip_prefix(DOMAIN)?.strip_prefix(&[0])?;
    let rest = rest.strip_prefix(model.as_bytes())?.strip_prefix(&[0])?;
    let bytes: [u8; KEY_LEN] = rest.try_into().ok()?;
    Some(ModelKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_binds_the_model_name() {
        let key = ModelKey::from_bytes([7; KEY_LEN]);
        let encoded = encode("cls", &key);
        assert_eq!(
            decode(&encoded, "cls").unwrap().secret_bytes(),
            &[7; KEY_LEN]
        );
        assert!(decode(&encoded, "cl").is_none());
        assert!(decode(&encoded, "clsx").is_none());
        assert!(decode(&encoded[..encoded.len() - 1], "cls").is_none());
        assert_eq!(
            sealed_key_path(Path::new("/m/cls.cloak")),
            Path::new("/m/cls.cloak.sealed-key")
        );
    }
}
