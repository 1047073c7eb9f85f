//! Open Enclave's serialized endorsements (`oe_endorsements_t`): the collateral an OE verifier
//! takes with SGX evidence, read into the same [`Collateral`] a DCAP quote is verified with.
//!
//! The layout (all integers little-endian `u32`): `version` = 1, `enclave_type` = 2 (SGX),
//! `buffer_size` (bytes after this 16-byte header), `num_elements` = 9, then `num_elements`
//! offsets relative to the data area that follows the offset table; item *i* runs from its
//! offset to the next one (the last to the end). The items, in order: the endorsements version
//! (`u32` 1), the TCB info (`{"tcbInfo":{…},"signature":"<hex r‖s>"}`), its issuer chain (PEM),
//! the PCK CRL, the Root CA CRL (OE names this slot `CRL_PCK_PROC_CA`, but fills it with the CRL
//! the Root CA issues), the PCK CRL's issuer chain, the QE identity
//! (`{"enclaveIdentity":{…},"signature":…}`), its issuer chain, and the creation time (RFC 3339).
//! Text items end in one NUL; a CRL is DER or, as PCCS 3.0 serves it, hex of the DER.
//!
//! The signatures cover the inner JSON objects exactly as they appear in the text, so the
//! objects are kept byte for byte ([`serde_json::value::RawValue`]), never re-serialized.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::collateral::{Collateral, CollateralError};
use crate::quote::reader::Reader;

/// `OE_ENDORSEMENTS_VERSION`.
const ENDORSEMENTS_VERSION: u32 = 1;
/// `OE_ENCLAVE_TYPE_SGX`.
const ENCLAVE_TYPE_SGX: u32 = 2;
/// `OE_SGX_ENDORSEMENTS_VERSION`, the first item.
const SGX_ENDORSEMENTS_VERSION: u32 = 1;
/// The items of `oe_sgx_endorsements_fields_t`, in order.
const ITEMS: [&str; 9] = [
    "VERSION",
    "TCB_INFO",
    "TCB_ISSUER_CHAIN",
    "CRL_PCK_CERT",
    "CRL_PCK_PROC_CA",
    "CRL_ISSUER_CHAIN_PCK_CERT",
    "QE_ID_INFO",
    "QE_ID_ISSUER_CHAIN",
    "CREATION_DATETIME",
];
/// The header: four `u32`s.
const HEADER_LEN: usize = 16;
/// Endorsements are a few tens of kilobytes; anything larger is not Intel's collateral.
pub const MAX_ENDORSEMENTS_LEN: usize = 1 << 20;

/// Parsed Open Enclave endorsements: collateral and the time OE says they were made.
#[derive(Clone, Debug)]
pub struct Endorsements {
    collateral: Collateral,
    created_at: u64,
}

impl Endorsements {
    /// Parses `oe_endorsements_t` bytes. The collateral inside is checked as strictly as
    /// [`Collateral::from_json`] checks its own; nothing is authenticated here.
    pub fn parse(bytes: &[u8]) -> Result<Self, CollateralError> {
        if bytes.len() > MAX_ENDORSEMENTS_LEN {
            return Err(malformed(
                "endorsements",
                format!("{} bytes, more than {MAX_ENDORSEMENTS_LEN}", bytes.len()),
            ));
        }
        let items = split(bytes)?;
        let [
            version,
            tcb_info,
            tcb_chain,
            pck_crl,
            root_crl,
            pck_crl_chain,
            qe_identity,
            qe_chain,
            created,
        ] = items;
        let version = <[u8; 4]>::try_from(version)
            .map(u32::from_le_bytes)
            .map_err(|_| malformed(ITEMS[0], "must be 4 bytes".to_owned()))?;
        if version != SGX_ENDORSEMENTS_VERSION {
            return Err(malformed(
                ITEMS[0],
                format!("version {version}, only {SGX_ENDORSEMENTS_VERSION} is defined"),
            ));
        }
        let (tcb_info, tcb_info_signature) = signed_json(ITEMS[1], tcb_info, "tcbInfo")?;
        let (qe_identity, qe_identity_signature) =
            signed_json(ITEMS[6], qe_identity, "enclaveIdentity")?;
        let created_text = text(ITEMS[8], created)?;
        let created_at = crate::collateral::rfc3339(ITEMS[8], &created_text)?;
        let raw = dcap_qvl::QuoteCollateralV3 {
            pck_crl_issuer_chain: text(ITEMS[5], pck_crl_chain)?,
            root_ca_crl: crl(ITEMS[4], root_crl)?,
            pck_crl: crl(ITEMS[3], pck_crl)?,
            tcb_info_issuer_chain: text(ITEMS[2], tcb_chain)?,
            tcb_info,
            tcb_info_signature,
            qe_identity_issuer_chain: text(ITEMS[7], qe_chain)?,
            qe_identity,
            qe_identity_signature,
            pck_certificate_chain: None,
        };
        Ok(Self {
            collateral: Collateral::from_raw(raw)?,
            created_at,
        })
    }

    /// The collateral.
    pub fn collateral(&self) -> &Collateral {
        &self.collateral
    }

    /// The collateral, owned.
    pub fn into_collateral(self) -> Collateral {
        self.collateral
    }

    /// `CREATION_DATETIME` in Unix seconds: when the endorsements were gathered, the time at
    /// which Open Enclave verifies them when no other time is given.
    pub fn created_at(&self) -> u64 {
        self.created_at
    }
}

/// The nine items, checked against the header's sizes and offsets.
fn split(bytes: &[u8]) -> Result<[&[u8]; 9], CollateralError> {
    let mut r = Reader::new(bytes);
    let header = |e: crate::quote::QuoteError| malformed("endorsements header", e.to_string());
    let version = r.u32("version").map_err(header)?;
    let enclave_type = r.u32("enclave type").map_err(header)?;
    let buffer_size = r.u32("buffer size").map_err(header)?;
    let count = r.u32("number of elements").map_err(header)?;
    if version != ENDORSEMENTS_VERSION {
        return Err(malformed(
            "endorsements header",
            format!("version {version}, only {ENDORSEMENTS_VERSION} is defined"),
        ));
    }
    if enclave_type != ENCLAVE_TYPE_SGX {
        return Err(malformed(
            "endorsements header",
            format!("enclave type {enclave_type}, not SGX ({ENCLAVE_TYPE_SGX})"),
        ));
    }
    if usize::try_from(count).ok() != Some(ITEMS.len()) {
        return Err(malformed(
            "endorsements header",
            format!("{count} elements; SGX endorsements have {}", ITEMS.len()),
        ));
    }
    let after_header = bytes.len().saturating_sub(HEADER_LEN);
    if usize::try_from(buffer_size).ok() != Some(after_header) {
        return Err(malformed(
            "endorsements header",
            format!("buffer size {buffer_size}, but {after_header} bytes follow the header"),
        ));
    }
    let mut offsets = [0_usize; 9];
    for offset in &mut offsets {
        let value = r.u32("offset").map_err(header)?;
        *offset = usize::try_from(value).map_err(|_| malformed("offsets", "too large".into()))?;
    }
    let data = r.rest();
    if offsets.first() != Some(&0) {
        return Err(malformed(
            "offsets",
            "the first item must start the data".into(),
        ));
    }
    // Item i runs from its offset to the next item's (the last one to the end of the data).
    let ends = offsets
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(data.len()));
    let mut items: [&[u8]; 9] = [&[]; 9];
    for (((item, name), start), end) in items.iter_mut().zip(ITEMS).zip(offsets).zip(ends) {
        *item = data.get(start..end).ok_or_else(|| {
            malformed(
                name,
                format!("spans {start}..{end} of {} bytes of data", data.len()),
            )
        })?;
    }
    Ok(items)
}

/// A text item: UTF-8, ending in exactly one NUL (OE copies C strings with their terminator),
/// or in none.
fn text(item: &'static str, bytes: &[u8]) -> Result<String, CollateralError> {
    let body = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if body.contains(&0) {
        return Err(malformed(item, "a NUL inside the text".into()));
    }
    String::from_utf8(body.to_vec()).map_err(|_| malformed(item, "not UTF-8".into()))
}

/// A CRL item: DER, or hex of the DER (PCCS 3.0), with an optional terminating NUL.
fn crl(item: &'static str, bytes: &[u8]) -> Result<Vec<u8>, CollateralError> {
    let body = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    // DER starts with a SEQUENCE tag and a long-form length byte (0x30 0x8x), which hex text
    // never contains, so the two encodings cannot be confused.
    if !body.is_empty() && body.iter().all(u8::is_ascii_hexdigit) {
        return hex::decode(body).map_err(|_| malformed(item, "odd-length hex".into()));
    }
    Ok(body.to_vec())
}

/// `{"<body>": {…}, "signature": "<hex>"}`: the body's exact text and the raw signature.
fn signed_json(
    item: &'static str,
    bytes: &[u8],
    body: &'static str,
) -> Result<(String, Vec<u8>), CollateralError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Signed<'a> {
        #[serde(borrow, rename = "tcbInfo", default)]
        tcb_info: Option<&'a RawValue>,
        #[serde(borrow, rename = "enclaveIdentity", default)]
        enclave_identity: Option<&'a RawValue>,
        signature: &'a str,
    }
    let json = text(item, bytes)?;
    let signed: Signed<'_> =
        serde_json::from_str(&json).map_err(|e| malformed(item, e.to_string()))?;
    let (wanted, other) = match body {
        "tcbInfo" => (signed.tcb_info, signed.enclave_identity),
        _ => (signed.enclave_identity, signed.tcb_info),
    };
    let (Some(object), None) = (wanted, other) else {
        return Err(malformed(
            item,
            format!("must sign exactly one {body:?} object"),
        ));
    };
    let signature = hex::decode(signed.signature)
        .map_err(|_| malformed(item, "the signature is not hex".into()))?;
    Ok((object.get().to_owned(), signature))
}

fn malformed(field: &'static str, problem: String) -> CollateralError {
    CollateralError::Field { field, problem }
}

#[cfg(test)]
mod tests;
