//! Model keys kept across restarts: each key the broker released is sealed to this enclave's
//! measurement (`KeyPolicy::Measurement`) and written beside its container as
//! `NAME.cloak.sealed-key`, so a restart of the same build serves without the broker. Another
//! build (a new measurement) or a changed byte cannot unseal it; such a file is ignored and the
//! key is asked for again.
//!
//! The sealed plaintext binds the key to its model and to the end of its lease:
//! `"cloak-model-key/v2" ‖ 0x00 ‖ model name ‖ 0x00 ‖ lease end (Unix seconds, u64 big-endian) ‖
//! key (32 bytes) ‖ the owner's access-token key (SubjectPublicKeyInfo DER, when there is one)`, so a sealed key renamed onto another container is refused, and a file cannot
//! be made to outlive its lease: the host may put back an older file, whose lease ends earlier,
//! but cannot change what a file says. A key sealed before leases (`v1`) is not used: the broker
//! is asked again.

use std::path::{Path, PathBuf};

use cloak_crypto::key::{KEY_LEN, ModelKey};
use cloak_tee::{KeyPolicy, Platform};

const DOMAIN: &[u8] = b"cloak-model-key/v2";
/// The length of an access-token key (a P-256 SubjectPublicKeyInfo in DER).
pub const TOKEN_KEY_LEN: usize = 91;
/// The layout from before leases, recognised only to say why it is not used.
const DOMAIN_V1: &[u8] = b"cloak-model-key/v1";
const SUFFIX: &str = ".sealed-key";

/// Where the sealed key of the container at `container` lives.
pub fn sealed_key_path(container: &Path) -> PathBuf {
    let mut name = container.as_os_str().to_owned();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// A key sealed here, with the end of its lease and the owner's access-token key.
#[derive(Debug)]
pub struct SealedKey {
    /// The model key.
    pub key: ModelKey,
    /// When its lease ends (Unix seconds, the broker's clock).
    pub lease_expires: u64,
    /// The model owner's access-token key, when the model's policy names one.
    pub token_key: Option<Vec<u8>>,
}

/// Seals `sealed` for `model` to this enclave's measurement and writes it (atomically, mode
/// 0600).
pub fn seal_key(
    platform: &dyn Platform,
    container: &Path,
    model: &str,
    sealed: &SealedKey,
) -> Result<(), cloak_tee::seal::SealError> {
    let plaintext = zeroize::Zeroizing::new(encode(model, sealed));
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
) -> Result<Option<SealedKey>, UnsealFailure> {
    let path = sealed_key_path(container);
    if !path.exists() {
        return Ok(None);
    }
    let plaintext = cloak_tee::seal::unseal_file(platform, &path).map_err(|e| UnsealFailure {
        code: e.code(),
        reason: format!("{}: {e}", path.display()),
    })?;
    if plaintext.starts_with(DOMAIN_V1) {
        return Err(UnsealFailure {
            code: "sealed-key-without-lease",
            reason: format!("{} was sealed before keys had leases", path.display()),
        });
    }
    decode(&plaintext, model)
        .map(Some)
        .ok_or_else(|| UnsealFailure {
            code: "sealed-key-mismatch",
            reason: format!("{} holds the key of another model", path.display()),
        })
}

/// Deletes the sealed key beside `container`, if any (its lease was revoked or ended).
pub fn remove_sealed_key(container: &Path) {
    let path = sealed_key_path(container);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "a sealed key could not be removed");
    }
}

fn encode(model: &str, sealed: &SealedKey) -> Vec<u8> {
    let SealedKey {
        key,
        lease_expires,
        token_key,
    } = sealed;
    let mut out = Vec::with_capacity(
        DOMAIN
            .len()
            .saturating_add(model.len())
            .saturating_add(KEY_LEN + 10),
    );
    out.extend_from_slice(DOMAIN);
    out.push(0);
    out.extend_from_slice(model.as_bytes());
    out.push(0);
    out.extend_from_slice(&lease_expires.to_be_bytes());
    out.extend_from_slice(key.secret_bytes());
    if let Some(token_key) = token_key {
        out.extend_from_slice(token_key);
    }
    out
}

fn decode(plaintext: &[u8], model: &str) -> Option<SealedKey> {
    let rest = plaintext.strip_prefix(DOMAIN)?.strip_prefix(&[0])?;
    let rest = rest.strip_prefix(model.as_bytes())?.strip_prefix(&[0])?;
    let (lease, rest) = rest.split_at_checked(8)?;
    let lease_expires = u64::from_be_bytes(lease.try_into().ok()?);
    let (key, token_key) = rest.split_at_checked(KEY_LEN)?;
    let bytes: [u8; KEY_LEN] = key.try_into().ok()?;
    // Nothing, or exactly one P-256 public key: any other length is not this layout.
    let token_key = match token_key.len() {
        0 => None,
        TOKEN_KEY_LEN => Some(token_key.to_vec()),
        _ => return None,
    };
    Some(SealedKey {
        key: ModelKey::from_bytes(bytes),
        lease_expires,
        token_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_binds_the_model_name() {
        let sealed = SealedKey {
            key: ModelKey::from_bytes([7; KEY_LEN]),
            lease_expires: 1_900_000_000,
            token_key: Some(vec![9; 91]),
        };
        let encoded = encode("cls", &sealed);
        let opened = decode(&encoded, "cls").unwrap();
        assert_eq!(opened.key.secret_bytes(), &[7; KEY_LEN]);
        assert_eq!(opened.lease_expires, 1_900_000_000);
        assert_eq!(opened.token_key.as_deref(), Some(&[9u8; 91][..]));
        let open = SealedKey {
            token_key: None,
            ..sealed
        };
        assert_eq!(
            decode(&encode("cls", &open), "cls").unwrap().token_key,
            None
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
