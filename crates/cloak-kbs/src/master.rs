//! The broker master key and what is derived from it: the key that wraps model keys at rest,
//! the audit-chain key, and the key-check value that tells a wrong master key at start-up.
//!
//! ```text
//! wrap key   = HKDF-SHA256(salt = "cloak-kbs/v1", ikm = master, info = "model-key-wrap")
//! audit key  = HKDF-SHA256(salt = "cloak-kbs/v1", ikm = master, info = "audit-chain")
//! check key  = HKDF-SHA256(salt = "cloak-kbs/v1", ikm = master, info = "key-check")
//! record key = HKDF-SHA256(salt = "cloak-kbs/v1", ikm = master, info = "model-record")
//! key check  = HMAC-SHA256(check key, "cloak-kbs/v1 master key check")
//! wrapped    = nonce (12 random bytes) ‖ AES-256-GCM(wrap key, nonce, aad = model name, key)
//! record mac = HMAC-SHA256(record key, "cloak-kbs/v1 model record" ‖ for each of name, key id,
//!              wrapped key, policy: its length (u64, big-endian) ‖ its bytes ‖ created (u64) ‖
//!              updated (u64))
//! ```
//!
//! The record MAC makes a model's row in the database authenticated: whoever can write the
//! database (a database administrator, the network between broker and database) cannot put a
//! policy there that the broker would act on — a policy that pins their own enclave would
//! otherwise be a key theft. They can still delete rows (deny service) or put back a row the
//! broker itself wrote earlier, with its MAC (undoing a later policy change or removal):
//! rollback needs state outside the database, so keep the database's access and its link
//! private (see the README).

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use cloak_crypto::aead;
use cloak_crypto::key::{KEY_LEN, ModelKey};
use zeroize::Zeroizing;

use crate::BrokerError;

/// Length of the master key.
pub const MASTER_KEY_LEN: usize = 32;

const KDF_SALT: &[u8] = b"cloak-kbs/v1";
const WRAP_INFO: &[u8] = b"model-key-wrap";
const AUDIT_INFO: &[u8] = b"audit-chain";
const CHECK_INFO: &[u8] = b"key-check";
const RECORD_INFO: &[u8] = b"model-record";
const RECORD_CONTEXT: &[u8] = b"cloak-kbs/v1 model record";
const CHECK_MESSAGE: &[u8] = b"cloak-kbs/v1 master key check";
const WRAP_NONCE_LEN: usize = 12;
/// Largest master-key file read (64 hex digits and a little whitespace).
const MAX_FILE_LEN: usize = 256;

/// The broker's master key (32 bytes), zeroized on drop and never printed.
pub struct MasterKey(Zeroizing<[u8; MASTER_KEY_LEN]>);

impl MasterKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self, BrokerError> {
        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        getrandom::fill(key.as_mut_slice()).map_err(|e| BrokerError::Random(e.to_string()))?;
        Ok(Self(key))
    }

    /// Parses 64 hexadecimal digits (the form of the file and of `CLOAK_KBS_MASTER_KEY`);
    /// surrounding whitespace is ignored.
    pub fn from_hex(text: &str) -> Result<Self, BrokerError> {
        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        hex::decode_to_slice(text.trim(), key.as_mut_slice()).map_err(|_| {
            BrokerError::MasterKey("the master key is not exactly 64 hexadecimal digits".into())
        })?;
        Ok(Self(key))
    }

    /// Reads a master-key file, refusing one that group or others may access or that belongs
    /// to another user.
    pub fn read_file(path: &Path) -> Result<Self, BrokerError> {
        let text = cloak_fs::secret::read_secret(path, MAX_FILE_LEN)
            .map_err(|e| BrokerError::MasterKey(format!("master key file {e}")))?;
        Self::from_hex(&text)
            .map_err(|e| BrokerError::MasterKey(format!("{}: {e}", path.display())))
    }

    /// Writes the key as hex to a new file with mode 0600; an existing file is never replaced.
    pub fn write_new_file(&self, path: &Path) -> Result<(), BrokerError> {
        let mut digits = Zeroizing::new(hex::encode(self.0.as_slice()));
        digits.push('\n');
        write_secret_file(path, digits.as_bytes())
    }

    fn derive(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        cloak_crypto::kdf::hkdf_sha256(KDF_SALT, self.0.as_slice(), info)
    }

    /// The keys the broker works with, derived once.
    pub(crate) fn derived(&self) -> DerivedKeys {
        DerivedKeys {
            wrap: self.derive(WRAP_INFO),
            audit: self.derive(AUDIT_INFO),
            check: self.derive(CHECK_INFO),
            record: self.derive(RECORD_INFO),
        }
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The working keys derived from the master key.
pub(crate) struct DerivedKeys {
    wrap: Zeroizing<[u8; 32]>,
    audit: Zeroizing<[u8; 32]>,
    check: Zeroizing<[u8; 32]>,
    record: Zeroizing<[u8; 32]>,
}

impl DerivedKeys {
    /// The key-check value stored in the database (hex).
    pub(crate) fn check_value(&self) -> String {
        hex::encode(hmac_sha256(&self.check, &[CHECK_MESSAGE]))
    }

    /// Whether `stored` (hex) is this master key's check value, compared in constant time.
    pub(crate) fn matches_check_value(&self, stored: &str) -> bool {
        let Ok(stored) = hex::decode(stored) else {
            return false;
        };
        let mine = hmac_sha256(&self.check, &[CHECK_MESSAGE]);
        subtle::ConstantTimeEq::ct_eq(stored.as_slice(), mine.as_slice()).into()
    }

    /// The audit-chain key.
    pub(crate) fn audit(&self) -> &[u8; 32] {
        &self.audit
    }

    /// The MAC (hex) that authenticates `record`'s fields (its own `mac` aside).
    pub(crate) fn record_mac(&self, record: &crate::store::ModelRecord) -> String {
        hex::encode(self.record_mac_bytes(record))
    }

    /// Whether `record.mac` authenticates its fields, compared in constant time.
    pub(crate) fn record_is_authentic(&self, record: &crate::store::ModelRecord) -> bool {
        let Ok(stored) = hex::decode(&record.mac) else {
            return false;
        };
        let expected = self.record_mac_bytes(record);
        subtle::ConstantTimeEq::ct_eq(stored.as_slice(), expected.as_slice()).into()
    }

    fn record_mac_bytes(&self, record: &crate::store::ModelRecord) -> [u8; 32] {
        let fields = [
            record.name.as_bytes(),
            record.key_id.as_bytes(),
            record.wrapped_key.as_bytes(),
            record.policy.as_bytes(),
        ];
        let lengths: Vec<[u8; 8]> = fields
            .iter()
            .map(|f| u64::try_from(f.len()).unwrap_or(u64::MAX).to_be_bytes())
            .collect();
        let (created, updated) = (record.created.to_be_bytes(), record.updated.to_be_bytes());
        let mut parts: Vec<&[u8]> = vec![RECORD_CONTEXT];
        for (field, length) in fields.iter().zip(&lengths) {
            parts.push(length);
            parts.push(field);
        }
        parts.push(&created);
        parts.push(&updated);
        hmac_sha256(&self.record, &parts)
    }

    /// Wraps `key` for storage under `model`'s name: `nonce ‖ ciphertext ‖ tag`, hex.
    pub(crate) fn wrap(&self, model: &str, key: &ModelKey) -> Result<String, BrokerError> {
        let mut nonce = [0u8; WRAP_NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| BrokerError::Random(e.to_string()))?;
        let mut blob = nonce.to_vec();
        aead::seal_append(
            &self.wrap,
            nonce,
            model.as_bytes(),
            key.secret_bytes(),
            &mut blob,
        );
        Ok(hex::encode(blob))
    }

    /// Unwraps what [`wrap`](Self::wrap) produced for `model`.
    pub(crate) fn unwrap(&self, model: &str, wrapped: &str) -> Result<ModelKey, BrokerError> {
        let blob = hex::decode(wrapped).map_err(|_| BrokerError::KeyUnwrap)?;
        let (nonce, sealed) = blob
            .split_at_checked(WRAP_NONCE_LEN)
            .ok_or(BrokerError::KeyUnwrap)?;
        let nonce: [u8; WRAP_NONCE_LEN] = nonce.try_into().map_err(|_| BrokerError::KeyUnwrap)?;
        let plain = aead::open(&self.wrap, nonce, model.as_bytes(), sealed)
            .ok_or(BrokerError::KeyUnwrap)?;
        let bytes: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| BrokerError::KeyUnwrap)?;
        let key = ModelKey::from_bytes(bytes);
        // `bytes` is a copy on the stack; clear it.
        let mut bytes = bytes;
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    }
}

/// Writes `contents` to a new file at `path` with mode 0600, atomically; never replaces an
/// existing file.
pub(crate) fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), BrokerError> {
    let io = |e: std::io::Error| BrokerError::Io(format!("cannot write {}: {e}", path.display()));
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(BrokerError::FileExists(path.display().to_string()));
    }
    let mut file = cloak_fs::AtomicFile::create(path, 0o600).map_err(io)?;
    file.file().write_all(contents).map_err(io)?;
    file.commit(cloak_fs::Commit::NoClobber).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            BrokerError::FileExists(path.display().to_string())
        } else {
            io(e.error)
        }
    })
}

/// HMAC-SHA256 under `key` of the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    cloak_crypto::mac::hmac_sha256(key, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_open_only_under_their_model_name_and_master_key() {
        let master = MasterKey::generate().unwrap();
        let keys = master.derived();
        let key = ModelKey::generate().unwrap();
        let wrapped = keys.wrap("a", &key).unwrap();
        assert!(!wrapped.contains(&hex::encode(key.secret_bytes())));
        assert_eq!(
            keys.unwrap("a", &wrapped).unwrap().secret_bytes(),
            key.secret_bytes()
        );
        assert!(matches!(
            keys.unwrap("b", &wrapped),
            Err(BrokerError::KeyUnwrap)
        ));
        let other = MasterKey::generate().unwrap().derived();
        assert!(matches!(
            other.unwrap("a", &wrapped),
            Err(BrokerError::KeyUnwrap)
        ));
        assert!(keys.matches_check_value(&keys.check_value()));
        assert!(!other.matches_check_value(&keys.check_value()));
    }

    #[test]
    fn master_key_parses_only_64_hex_digits() {
        assert!(MasterKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::from_hex(&"ab".repeat(31)).is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
