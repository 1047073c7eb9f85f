//! Buffers of plaintext (tensor data, decrypted requests, encoded bodies) that are wiped when
//! they are dropped.
//!
//! `zeroize::Zeroizing<Vec<u8>>` would do, but zeroize 1.9 wipes a `Vec` one element at a time,
//! each a volatile write: about 120 µs for a 600 KB image tensor on the machines we build on,
//! over half the AES-GCM pass that decrypted it, and paid on every request. [`SecretBytes`]
//! wipes its whole allocation as one region, with the bulk fill and optimization barrier
//! zeroize uses for slices: about 11 µs, 1.1× a plain `fill(0)`
//! (`cargo bench -p cloak-crypto --bench wipe`).

use std::fmt;
use std::ops::{Deref, DerefMut};

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A byte vector whose allocation is zeroed when it is dropped (or [`Zeroize::zeroize`]d).
///
/// It dereferences to the `Vec<u8>`, so it is written and read as one. As with any `Vec`, an
/// allocation it outgrows is freed without being wiped: reserve the final size up front.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are wiped when this is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl Deref for SecretBytes {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for SecretBytes {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<[u8]> for SecretBytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl Zeroize for SecretBytes {
    fn zeroize(&mut self) {
        wipe_allocation(&mut self.0);
        self.0.clear();
    }
}

/// Zeroes every byte of `bytes`' allocation, its spare capacity included, leaving it at full
/// length: one bulk fill behind zeroize's optimization barrier, where zeroize's own `Vec` impl
/// writes element by element.
fn wipe_allocation(bytes: &mut Vec<u8>) {
    let capacity = bytes.capacity();
    bytes.resize(capacity, 0);
    bytes.as_mut_slice().zeroize();
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretBytes {}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_allocation_is_wiped_spare_capacity_included() {
        let mut bytes = vec![0xa5; 4096];
        bytes.truncate(100);
        let capacity = bytes.capacity();
        wipe_allocation(&mut bytes);
        assert_eq!(bytes.len(), capacity);
        assert!(bytes.iter().all(|&b| b == 0));

        let mut secret = SecretBytes::new(vec![0xa5; 4096]);
        let capacity = secret.capacity();
        secret.zeroize();
        assert!(secret.is_empty());
        assert_eq!(
            secret.capacity(),
            capacity,
            "wiped in place, not reallocated"
        );
    }

    #[test]
    fn debug_shows_the_length_not_the_bytes() {
        let secret = SecretBytes::new(b"patient 4711".to_vec());
        assert_eq!(format!("{secret:?}"), "SecretBytes(12 bytes)");
        assert_eq!(secret, *b"patient 4711".as_slice());
    }
}
