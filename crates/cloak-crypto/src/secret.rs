//! Buffers of plaintext (tensor data, decrypted requests, encoded bodies) that are wiped when
//! they are dropped.
//!
//! `zeroize::Zeroizing<Vec<u8>>` would do, but zeroize 1.9 wipes a `Vec` one element at a time,
//! each a volatile write: about 120 µs for a 600 KB image tensor on the machines we build on,
//! over half the AES-GCM pass that decrypted it, and paid on every request. [`SecretBytes`]
//! wipes its whole allocation as one region, with the bulk fill and optimization barrier
//! zeroize uses for slices: about 11 µs, 1.1× a plain `fill(0)`
//! (`cargo bench -p cloak-crypto --bench wipe`).
//!
//! A `Vec` that outgrows its allocation frees the old one without wiping it, so buffers whose
//! final size is not known up front (a parser's output, an encoder's body) are built in a
//! [`SecretBuf`], which wipes every allocation it lets go of.

use std::fmt;
use std::io;
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

/// A growable byte buffer that wipes every allocation it lets go of: the ones it outgrows as well
/// as the last one, when it is dropped (or [`Zeroize::zeroize`]d).
///
/// It grows by moving its bytes into a fresh [`SecretBytes`] of twice the capacity (or the
/// capacity needed, if more) and dropping the old one, which wipes it. It is written through
/// [`extend_from_slice`](Self::extend_from_slice) or [`io::Write`], and read as a `[u8]`; it
/// offers no `&mut Vec`, whose growth would free allocations unwiped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBuf(SecretBytes);

impl SecretBuf {
    /// An empty buffer with room for `capacity` bytes before it first grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(SecretBytes::with_capacity(capacity))
    }

    /// How many bytes it can hold before it grows.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Appends `bytes`, moving to a larger allocation (and wiping the old one) if they do not
    /// fit.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let needed = self.0.len().saturating_add(bytes.len());
        if needed > self.0.capacity() {
            // Doubling keeps the copies linear in the final length, as a `Vec`'s growth does.
            let capacity = needed.max(self.0.capacity().saturating_mul(2));
            let mut grown = SecretBytes::with_capacity(capacity);
            grown.extend_from_slice(self.0.as_slice());
            // The old allocation is wiped as it drops.
            self.0 = grown;
        }
        self.0.extend_from_slice(bytes);
    }

    /// The bytes written so far, to change in place (they cannot grow through this).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }

    /// The bytes as a plain `Vec`, moved out without a copy, for an owner that wipes them from
    /// here on (such as a tensor holding them in its own [`SecretBytes`]).
    pub fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.0)
    }

    /// The bytes, still wiped when they drop; they no longer grow without leaving copies.
    pub fn into_secret(self) -> SecretBytes {
        self.0
    }
}

impl Deref for SecretBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for SecretBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl io::Write for SecretBuf {
    /// Appends all of `bytes`; it never fails.
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Zeroize for SecretBuf {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

/// Its only field is a [`SecretBytes`], which wipes itself on drop.
impl ZeroizeOnDrop for SecretBuf {}

impl fmt::Debug for SecretBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBuf({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

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

    #[test]
    fn a_buffer_grows_keeps_what_was_written_and_wipes_in_place() {
        let mut buf = SecretBuf::with_capacity(4);
        assert!(buf.capacity() >= 4);
        buf.extend_from_slice(b"abc");
        buf.write_all(b"defgh").unwrap();
        assert_eq!(&*buf, b"abcdefgh");
        assert!(buf.capacity() >= 8, "grew to {}", buf.capacity());
        // A write far past double the capacity grows to fit it at once.
        buf.write_all(&[7; 100]).unwrap();
        assert_eq!(buf.len(), 108);
        assert_eq!(buf.get(8..), Some([7; 100].as_slice()));

        let capacity = buf.capacity();
        buf.zeroize();
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), capacity, "wiped in place, not reallocated");

        // Dropping wipes as `SecretBytes` does: its only field is one.
        fn wipes_on_drop<T: ZeroizeOnDrop>() {}
        wipes_on_drop::<SecretBuf>();
    }

    #[test]
    fn a_buffer_moves_out_without_a_copy() {
        let mut buf = SecretBuf::with_capacity(64);
        buf.extend_from_slice(b"patient 4711");
        let pointer = buf.as_ptr();
        let bytes = buf.clone().into_secret();
        assert_eq!(bytes, *b"patient 4711".as_slice());
        let vec = buf.into_vec();
        assert_eq!(vec.as_ptr(), pointer);
        assert_eq!(vec, b"patient 4711");
    }

    #[test]
    fn a_buffer_debug_shows_the_length_not_the_bytes() {
        let mut buf = SecretBuf::default();
        buf.extend_from_slice(b"patient 4711");
        assert_eq!(format!("{buf:?}"), "SecretBuf(12 bytes)");
    }
}
