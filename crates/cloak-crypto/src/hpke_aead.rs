//! HPKE's AEADs computed by aws-lc-rs.
//!
//! The `hpke` crate runs RFC 9180's key schedule and nonce sequence; the AEAD it calls is a type
//! parameter. Its own AES-GCM (RustCrypto) runs at about 1 GB/s here, while aws-lc-rs — the
//! provider rustls and the rest of this crate use — seals several times faster. These adapters
//! give `hpke` aws-lc-rs's AES-128-GCM and AES-256-GCM behind the `aead` traits it expects, so
//! the bulk of an encrypted request is sealed and opened by aws-lc-rs while the HPKE framing
//! stays the crate's. Interoperability tests against the `ohttp` crate (which uses RustCrypto)
//! and the RFC 9180 vectors the `hpke` crate's own tests pin keep both sides honest.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, Algorithm, LessSafeKey, Nonce, UnboundKey};
use hpke_aead_traits::consts::{U12, U16, U32};
use hpke_aead_traits::inout::InOutBuf;
use hpke_aead_traits::{AeadCore, AeadInOut, Key, KeyInit, KeySizeUser, TagPosition};

/// One aws-lc-rs AES-GCM key.
#[derive(Clone)]
pub(crate) struct AwsLcGcm<const BITS: usize>(std::sync::Arc<LessSafeKey>);

/// AES-128-GCM for `hpke`, by aws-lc-rs (RFC 9180 AEAD id 1).
pub(crate) type Aes128 = AwsLcGcm<128>;
/// AES-256-GCM for `hpke`, by aws-lc-rs (RFC 9180 AEAD id 2).
pub(crate) type Aes256 = AwsLcGcm<256>;

impl<const BITS: usize> AwsLcGcm<BITS> {
    fn algorithm() -> &'static Algorithm {
        if BITS == 128 {
            &AES_128_GCM
        } else {
            &AES_256_GCM
        }
    }

    fn nonce(nonce: &hpke_aead_traits::Nonce<Self>) -> Nonce {
        let mut bytes = [0u8; 12];
        bytes.copy_from_slice(nonce.as_slice());
        Nonce::assume_unique_for_key(bytes)
    }
}

impl KeySizeUser for AwsLcGcm<128> {
    type KeySize = U16;
}

impl KeySizeUser for AwsLcGcm<256> {
    type KeySize = U32;
}

impl<const BITS: usize> KeyInit for AwsLcGcm<BITS>
where
    Self: KeySizeUser,
{
    fn new(key: &Key<Self>) -> Self {
        match UnboundKey::new(Self::algorithm(), key.as_slice()) {
            Ok(unbound) => Self(std::sync::Arc::new(LessSafeKey::new(unbound))),
            // A wrong key length is the only way this fails, and the types fix the length (16
            // or 32 bytes, as the algorithm needs): never reached. Abort rather than run on.
            Err(_) => std::process::abort(),
        }
    }
}

impl<const BITS: usize> AeadCore for AwsLcGcm<BITS> {
    type NonceSize = U12;
    type TagSize = U16;
    const TAG_POSITION: TagPosition = TagPosition::Postfix;
}

impl<const BITS: usize> AeadInOut for AwsLcGcm<BITS> {
    fn encrypt_inout_detached(
        &self,
        nonce: &hpke_aead_traits::Nonce<Self>,
        associated_data: &[u8],
        buffer: InOutBuf<'_, '_, u8>,
    ) -> hpke_aead_traits::Result<hpke_aead_traits::Tag<Self>> {
        let data = buffer.into_out_with_copied_in();
        let tag = self
            .0
            .seal_in_place_separate_tag(Self::nonce(nonce), Aad::from(associated_data), data)
            .map_err(|_| hpke_aead_traits::Error)?;
        let mut out = hpke_aead_traits::Tag::<Self>::default();
        out.as_mut_slice().copy_from_slice(tag.as_ref());
        Ok(out)
    }

    fn decrypt_inout_detached(
        &self,
        nonce: &hpke_aead_traits::Nonce<Self>,
        associated_data: &[u8],
        buffer: InOutBuf<'_, '_, u8>,
        tag: &hpke_aead_traits::Tag<Self>,
    ) -> hpke_aead_traits::Result<()> {
        let data = buffer.into_out_with_copied_in();
        self.0
            .open_in_place_separate_tag(
                Self::nonce(nonce),
                Aad::from(associated_data),
                tag.as_slice(),
                data,
            )
            .map(drop)
            .map_err(|_| hpke_aead_traits::Error)
    }
}

impl hpke::aead::Aead for Aes128 {
    type AeadImpl = Self;
    const AEAD_ID: u16 = 0x0001;
}

impl hpke::aead::Aead for Aes256 {
    type AeadImpl = Self;
    const AEAD_ID: u16 = 0x0002;
}
