//! Oblivious HTTP message encapsulation (RFC 9458 §3–§4), for DHKEM(X25519, HKDF-SHA256) with
//! HKDF-SHA256 and AES-128-GCM or AES-256-GCM.
//!
//! Cloak's servers offer AES-256-GCM only; AES-128-GCM is implemented so that the construction
//! can be checked byte for byte against other implementations, which mostly stop at it.
//!
//! ```text
//! key config   = key_id(1) ‖ kem_id(2) ‖ pkR(32) ‖ len(2) ‖ { kdf_id(2) ‖ aead_id(2) }*
//! hdr          = key_id(1) ‖ kem_id(2) ‖ kdf_id(2) ‖ aead_id(2)
//! info         = "message/bhttp request" ‖ 0x00 ‖ hdr
//! enc_request  = hdr ‖ enc ‖ HPKE-Seal(pkR, info, aad = "", request)
//! secret       = context.Export("message/bhttp response", max(Nn, Nk))
//! salt         = enc ‖ response_nonce (max(Nn, Nk) random bytes)
//! key, nonce   = HKDF-Expand(HKDF-Extract(salt, secret), "key", Nk), (…, "nonce", Nn)
//! enc_response = response_nonce ‖ AEAD-Seal(key, nonce, aad = "", response)
//! ```
//!
//! The client keeps a [`ClientResponse`] to open the answer; the gateway gets a
//! [`ServerResponse`] with each decapsulated request to seal its answer. Failures say nothing
//! about which step failed (RFC 9458 §5.2: a gateway must not reveal it).

use std::io;
use std::ops::Range;

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use crate::hpke::HpkeKeyPair;
use crate::secret::{SecretBuf, SecretBytes};

type Kem = crate::hpke_kem::X25519;
type Kdf = hpke::kdf::HkdfSha256;

/// DHKEM(X25519, HKDF-SHA256).
pub const KEM_X25519_SHA256: u16 = 0x0020;
/// HKDF-SHA256.
pub const KDF_HKDF_SHA256: u16 = 0x0001;
/// `message/ohttp-req`.
pub const REQUEST_MEDIA_TYPE: &str = "message/ohttp-req";
/// `message/ohttp-res`.
pub const RESPONSE_MEDIA_TYPE: &str = "message/ohttp-res";
/// `application/ohttp-keys`.
pub const KEYS_MEDIA_TYPE: &str = "application/ohttp-keys";

const REQUEST_LABEL: &[u8] = b"message/bhttp request";
const RESPONSE_LABEL: &[u8] = b"message/bhttp response";
const HEADER_LEN: usize = 7;
const ENC_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// What precedes the ciphertext of an encapsulated request: the header and `enc`.
const PREFIX_LEN: usize = HEADER_LEN + ENC_LEN;

/// The AEADs this implementation speaks.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AeadId {
    /// AES-128-GCM (1).
    Aes128Gcm,
    /// AES-256-GCM (2), the one Cloak's servers offer.
    Aes256Gcm,
}

impl AeadId {
    /// The RFC 9180 identifier.
    pub fn id(self) -> u16 {
        match self {
            Self::Aes128Gcm => 1,
            Self::Aes256Gcm => 2,
        }
    }

    fn from_id(id: u16) -> Option<Self> {
        match id {
            1 => Some(Self::Aes128Gcm),
            2 => Some(Self::Aes256Gcm),
            _ => None,
        }
    }

    /// Nk.
    fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm => 16,
            Self::Aes256Gcm => 32,
        }
    }

    /// max(Nn, Nk).
    fn secret_len(self) -> usize {
        self.key_len().max(NONCE_LEN)
    }

    fn aead_key(self, key: &[u8]) -> Result<LessSafeKey, OhttpError> {
        let algorithm = match self {
            Self::Aes128Gcm => &AES_128_GCM,
            Self::Aes256Gcm => &AES_256_GCM,
        };
        UnboundKey::new(algorithm, key)
            .map(LessSafeKey::new)
            .map_err(|_| OhttpError::Crypto)
    }
}

/// One key configuration (RFC 9458 §3): a key id, an X25519 public key and the symmetric
/// suites offered with it (always HKDF-SHA256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyConfig {
    /// The key id.
    pub key_id: u8,
    /// The gateway's X25519 public key.
    pub public_key: [u8; ENC_LEN],
    /// The AEADs offered, in order of preference.
    pub aeads: Vec<AeadId>,
}

impl KeyConfig {
    /// The encoding (without the list's length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let suites = self.aeads.len().saturating_mul(4);
        let mut out = Vec::with_capacity(suites.saturating_add(HEADER_LEN + ENC_LEN));
        out.push(self.key_id);
        out.extend_from_slice(&KEM_X25519_SHA256.to_be_bytes());
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&u16::try_from(suites).unwrap_or(u16::MAX).to_be_bytes());
        for aead in &self.aeads {
            out.extend_from_slice(&KDF_HKDF_SHA256.to_be_bytes());
            out.extend_from_slice(&aead.id().to_be_bytes());
        }
        out
    }

    /// Parses one key configuration, which must fill `bytes` exactly. Suites this
    /// implementation does not speak are skipped; a configuration with none left, another KEM,
    /// or a malformed length is refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, OhttpError> {
        let mut reader = Reader(bytes);
        let key_id = reader.u8()?;
        if reader.u16()? != KEM_X25519_SHA256 {
            return Err(OhttpError::Unsupported);
        }
        let public_key: [u8; ENC_LEN] = reader.array()?;
        let suites_len = usize::from(reader.u16()?);
        if suites_len == 0 || suites_len % 4 != 0 {
            return Err(OhttpError::Malformed);
        }
        let mut suites = Reader(reader.take(suites_len)?);
        let mut aeads = Vec::new();
        while !suites.0.is_empty() {
            let kdf = suites.u16()?;
            let aead = suites.u16()?;
            if kdf == KDF_HKDF_SHA256
                && let Some(aead) = AeadId::from_id(aead)
            {
                aeads.push(aead);
            }
        }
        if !reader.0.is_empty() {
            return Err(OhttpError::Malformed);
        }
        if aeads.is_empty() {
            return Err(OhttpError::Unsupported);
        }
        Ok(Self {
            key_id,
            public_key,
            aeads,
        })
    }

    /// An `application/ohttp-keys` list: each configuration prefixed by its 2-byte length.
    pub fn encode_list(configs: &[Self]) -> Vec<u8> {
        let mut out = Vec::new();
        for config in configs {
            let encoded = config.encode();
            out.extend_from_slice(&u16::try_from(encoded.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(&encoded);
        }
        out
    }

    /// Parses an `application/ohttp-keys` list, keeping the configurations this
    /// implementation speaks; malformed framing is an error.
    pub fn parse_list(bytes: &[u8]) -> Result<Vec<Self>, OhttpError> {
        let mut reader = Reader(bytes);
        let mut configs = Vec::new();
        while !reader.0.is_empty() {
            let len = usize::from(reader.u16()?);
            match Self::parse(reader.take(len)?) {
                Ok(config) => configs.push(config),
                Err(OhttpError::Unsupported) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(configs)
    }
}

/// What a client keeps to open the gateway's answer to one request.
pub struct ClientResponse {
    aead: AeadId,
    enc: [u8; ENC_LEN],
    secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ClientResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientResponse")
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}

/// Encapsulates `request` (a BHTTP message) to the gateway `config` names, with `aead` (which
/// the configuration must offer).
pub fn encapsulate_request(
    config: &KeyConfig,
    aead: AeadId,
    request: &[u8],
) -> Result<(Vec<u8>, ClientResponse), OhttpError> {
    let mut buffer = RequestBuffer::with_capacity(request.len());
    buffer.0.extend_from_slice(request);
    encapsulate_buffer(config, aead, buffer)
}

/// A BHTTP request written where its encapsulation will be: room for the header and `enc` is
/// kept in front of it, and [`encapsulate_buffer`] seals it in place, so the request is not
/// copied again. Until it is sealed it is plaintext, kept as a [`SecretBuf`] keeps it: wiped
/// when the buffer outgrows an allocation or is dropped unsealed, and never printed. Written
/// through [`io::Write`] (as `bhttp::Message::write_bhttp` writes).
#[derive(Debug)]
pub struct RequestBuffer(SecretBuf);

impl RequestBuffer {
    /// An empty request with room for `request_len` bytes and its encapsulation's framing.
    pub fn with_capacity(request_len: usize) -> Self {
        let mut buffer = SecretBuf::with_capacity(
            request_len
                .saturating_add(PREFIX_LEN)
                .saturating_add(TAG_LEN),
        );
        buffer.extend_from_slice(&[0; PREFIX_LEN]);
        Self(buffer)
    }

    /// The request written so far.
    pub fn request(&self) -> &[u8] {
        self.0.get(PREFIX_LEN..).unwrap_or_default()
    }
}

impl io::Write for RequestBuffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Encapsulates the request in `buffer` where it lies, as [`encapsulate_request`] does.
pub fn encapsulate_buffer(
    config: &KeyConfig,
    aead: AeadId,
    mut buffer: RequestBuffer,
) -> Result<(Vec<u8>, ClientResponse), OhttpError> {
    if !config.aeads.contains(&aead) {
        return Err(OhttpError::Unsupported);
    }
    let header = header(config.key_id, aead);
    let info = request_info(&header);
    let public = <Kem as hpke::Kem>::PublicKey::from_bytes(&config.public_key)
        .map_err(|_| OhttpError::Crypto)?;
    let mut secret = Zeroizing::new(vec![0u8; aead.secret_len()]);
    let message = &mut buffer.0;
    let enc = match aead {
        AeadId::Aes128Gcm => {
            seal_request::<crate::hpke_aead::Aes128>(&public, &info, &header, message, &mut secret)
        }
        AeadId::Aes256Gcm => {
            seal_request::<crate::hpke_aead::Aes256>(&public, &info, &header, message, &mut secret)
        }
    }?;
    // Sealed: ciphertext, which needs no wiping.
    Ok((buffer.0.into_vec(), ClientResponse { aead, enc, secret }))
}

impl ClientResponse {
    /// Opens the gateway's encapsulated response.
    pub fn decapsulate(self, enc_response: &[u8]) -> Result<SecretBytes, OhttpError> {
        let nonce_len = self.aead.secret_len();
        if enc_response.len() < nonce_len.saturating_add(TAG_LEN) {
            return Err(OhttpError::Malformed);
        }
        let (response_nonce, sealed) = enc_response.split_at(nonce_len);
        let (key, nonce) = response_keys(self.aead, &self.enc, response_nonce, &self.secret)?;
        let mut in_out = SecretBytes::new(sealed.to_vec());
        let len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut in_out,
            )
            .map_err(|_| OhttpError::Crypto)?
            .len();
        in_out.truncate(len);
        Ok(in_out)
    }
}

/// A gateway: one key configuration and its private key.
pub struct Gateway {
    config: KeyConfig,
    key: HpkeKeyPair,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a gateway keeps to seal its answer to one request.
pub struct ServerResponse {
    aead: AeadId,
    enc: [u8; ENC_LEN],
    secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ServerResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerResponse")
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway for `key`, offering `aeads` under `key_id`.
    pub fn new(key_id: u8, key: HpkeKeyPair, aeads: Vec<AeadId>) -> Self {
        Self {
            config: KeyConfig {
                key_id,
                public_key: *key.public_key(),
                aeads,
            },
            key,
        }
    }

    /// The key configuration clients encapsulate to.
    pub fn config(&self) -> &KeyConfig {
        &self.config
    }

    /// Decapsulates an encapsulated request: the BHTTP request, and what is needed to answer.
    /// Every failure (unknown key id or suite, malformed, not authentic) is the same
    /// [`OhttpError`] to the caller's peer.
    pub fn decapsulate(
        &self,
        enc_request: &[u8],
    ) -> Result<(SecretBytes, ServerResponse), OhttpError> {
        let (aead, header, enc) = self.parse(enc_request)?;
        let mut request =
            SecretBytes::new(enc_request.get(PREFIX_LEN..).unwrap_or_default().to_vec());
        let (len, response) = self.open(aead, &header, enc, &mut request)?;
        request.truncate(len);
        Ok((request, response))
    }

    /// Decapsulates an encapsulated request where it lies: its ciphertext is decrypted in place,
    /// and the BHTTP request is `enc_request[range]`. For a request of hundreds of KB this saves
    /// the allocation and copy of [`decapsulate`](Self::decapsulate). The caller owns the
    /// plaintext's memory, and wipes it (a [`SecretBytes`] does). On an error the buffer holds
    /// nothing to use: discard it.
    pub fn decapsulate_in_place(
        &self,
        enc_request: &mut [u8],
    ) -> Result<(Range<usize>, ServerResponse), OhttpError> {
        let (aead, header, enc) = self.parse(enc_request)?;
        let ciphertext = enc_request.get_mut(PREFIX_LEN..).unwrap_or_default();
        let (len, response) = self.open(aead, &header, enc, ciphertext)?;
        Ok((PREFIX_LEN..PREFIX_LEN.saturating_add(len), response))
    }

    /// The suite, header and `enc` of an encapsulated request, if this gateway takes them.
    fn parse(
        &self,
        enc_request: &[u8],
    ) -> Result<(AeadId, [u8; HEADER_LEN], [u8; ENC_LEN]), OhttpError> {
        let mut reader = Reader(enc_request);
        let header: [u8; HEADER_LEN] = reader.array()?;
        let mut fields = Reader(&header);
        let key_id = fields.u8()?;
        let kem = fields.u16()?;
        let kdf = fields.u16()?;
        let aead = AeadId::from_id(fields.u16()?).ok_or(OhttpError::Unsupported)?;
        if key_id != self.config.key_id
            || kem != KEM_X25519_SHA256
            || kdf != KDF_HKDF_SHA256
            || !self.config.aeads.contains(&aead)
        {
            return Err(OhttpError::Unsupported);
        }
        let enc: [u8; ENC_LEN] = reader.array()?;
        Ok((aead, header, enc))
    }

    /// Opens `ciphertext ‖ tag` in place: the plaintext's length, and what is needed to answer.
    fn open(
        &self,
        aead: AeadId,
        header: &[u8; HEADER_LEN],
        enc: [u8; ENC_LEN],
        sealed: &mut [u8],
    ) -> Result<(usize, ServerResponse), OhttpError> {
        let encapped =
            <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).map_err(|_| OhttpError::Crypto)?;
        let info = request_info(header);
        let mut secret = Zeroizing::new(vec![0u8; aead.secret_len()]);
        let private = self.key.private_key();
        let len = match aead {
            AeadId::Aes128Gcm => open_request::<crate::hpke_aead::Aes128>(
                private,
                &encapped,
                &info,
                sealed,
                &mut secret,
            ),
            AeadId::Aes256Gcm => open_request::<crate::hpke_aead::Aes256>(
                private,
                &encapped,
                &info,
                sealed,
                &mut secret,
            ),
        }?;
        Ok((len, ServerResponse { aead, enc, secret }))
    }
}

impl ServerResponse {
    /// Seals the BHTTP response to the client that sent the request.
    pub fn encapsulate(self, response: &[u8]) -> Result<Vec<u8>, OhttpError> {
        let mut response_nonce = vec![0u8; self.aead.secret_len()];
        getrandom::fill(&mut response_nonce).map_err(|_| OhttpError::Crypto)?;
        self.encapsulate_with_nonce(response, &response_nonce)
    }

    fn encapsulate_with_nonce(
        self,
        response: &[u8],
        response_nonce: &[u8],
    ) -> Result<Vec<u8>, OhttpError> {
        let (key, nonce) = response_keys(self.aead, &self.enc, response_nonce, &self.secret)?;
        let mut out = Vec::with_capacity(
            response_nonce
                .len()
                .saturating_add(response.len())
                .saturating_add(TAG_LEN),
        );
        out.extend_from_slice(response_nonce);
        let start = out.len();
        out.extend_from_slice(response);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                out.get_mut(start..).unwrap_or_default(),
            )
            .map_err(|_| OhttpError::Crypto)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }
}

/// Why encapsulation or decapsulation failed. Deliberately coarse.
#[non_exhaustive]
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OhttpError {
    /// The bytes are not a well-formed message or configuration.
    #[error("malformed Oblivious HTTP message or key configuration")]
    Malformed,
    /// A key id, KEM, KDF or AEAD that is not offered.
    #[error("unsupported Oblivious HTTP key or suite")]
    Unsupported,
    /// Decryption or authentication failed, or a key is invalid.
    #[error("the Oblivious HTTP message does not decrypt")]
    Crypto,
}

impl OhttpError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "ohttp-malformed",
            Self::Unsupported => "ohttp-key",
            Self::Crypto => "ohttp-decrypt",
        }
    }
}

fn header(key_id: u8, aead: AeadId) -> [u8; HEADER_LEN] {
    let [kem0, kem1] = KEM_X25519_SHA256.to_be_bytes();
    let [kdf0, kdf1] = KDF_HKDF_SHA256.to_be_bytes();
    let [aead0, aead1] = aead.id().to_be_bytes();
    [key_id, kem0, kem1, kdf0, kdf1, aead0, aead1]
}

fn request_info(header: &[u8; HEADER_LEN]) -> Vec<u8> {
    let mut info = Vec::with_capacity(REQUEST_LABEL.len().saturating_add(1 + HEADER_LEN));
    info.extend_from_slice(REQUEST_LABEL);
    info.push(0);
    info.extend_from_slice(header);
    info
}

/// Seals the request in `message` (after [`PREFIX_LEN`] bytes kept for them) in place, and
/// writes the header and `enc` in front and the tag behind: `header ‖ enc ‖ ciphertext ‖ tag`.
fn seal_request<A: hpke::aead::Aead>(
    public: &<Kem as hpke::Kem>::PublicKey,
    info: &[u8],
    header: &[u8; HEADER_LEN],
    message: &mut SecretBuf,
    secret: &mut [u8],
) -> Result<[u8; ENC_LEN], OhttpError> {
    let (encapped, mut context) = hpke::setup_sender::<A, Kdf, Kem>(&OpModeS::Base, public, info)
        .map_err(|_| OhttpError::Crypto)?;
    let enc: [u8; ENC_LEN] = encapped
        .to_bytes()
        .as_slice()
        .try_into()
        .map_err(|_| OhttpError::Crypto)?;
    let (prefix, request) = message
        .as_mut_slice()
        .split_at_mut_checked(PREFIX_LEN)
        .ok_or(OhttpError::Malformed)?;
    let (header_part, enc_part) = prefix.split_at_mut(HEADER_LEN);
    header_part.copy_from_slice(header);
    enc_part.copy_from_slice(&enc);
    let tag = context
        .seal_inout_detached(hpke::inout::InOutBuf::from(request), b"")
        .map_err(|_| OhttpError::Crypto)?;
    message.extend_from_slice(&tag.to_bytes());
    context
        .export(RESPONSE_LABEL, secret)
        .map_err(|_| OhttpError::Crypto)?;
    Ok(enc)
}

/// Opens `sealed` (`ciphertext ‖ tag`) in place; returns the plaintext's length.
fn open_request<A: hpke::aead::Aead>(
    private: &<Kem as hpke::Kem>::PrivateKey,
    encapped: &<Kem as hpke::Kem>::EncappedKey,
    info: &[u8],
    sealed: &mut [u8],
    secret: &mut [u8],
) -> Result<usize, OhttpError> {
    let len = sealed
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(OhttpError::Crypto)?;
    let (ciphertext, tag) = sealed.split_at_mut(len);
    let tag = hpke::aead::AeadTag::<A>::from_bytes(tag).map_err(|_| OhttpError::Crypto)?;
    let mut context = hpke::setup_receiver::<A, Kdf, Kem>(&OpModeR::Base, private, encapped, info)
        .map_err(|_| OhttpError::Crypto)?;
    context
        .open_inout_detached(hpke::inout::InOutBuf::from(ciphertext), b"", &tag)
        .map_err(|_| OhttpError::Crypto)?;
    context
        .export(RESPONSE_LABEL, secret)
        .map_err(|_| OhttpError::Crypto)?;
    Ok(len)
}

/// The response AEAD key and nonce (RFC 9458 §4.4).
fn response_keys(
    aead: AeadId,
    enc: &[u8; ENC_LEN],
    response_nonce: &[u8],
    secret: &[u8],
) -> Result<(LessSafeKey, [u8; NONCE_LEN]), OhttpError> {
    let mut salt = Vec::with_capacity(ENC_LEN.saturating_add(response_nonce.len()));
    salt.extend_from_slice(enc);
    salt.extend_from_slice(response_nonce);
    let mut key = Zeroizing::new(vec![0u8; aead.key_len()]);
    crate::key::hkdf_expand(&salt, secret, b"key", &mut key);
    let mut nonce = [0u8; NONCE_LEN];
    crate::key::hkdf_expand(&salt, secret, b"nonce", &mut nonce);
    Ok((aead.aead_key(&key)?, nonce))
}

/// A cursor over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], OhttpError> {
        if self.0.len() < n {
            return Err(OhttpError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], OhttpError> {
        self.take(N)?.try_into().map_err(|_| OhttpError::Malformed)
    }

    fn u8(&mut self) -> Result<u8, OhttpError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, OhttpError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests;
