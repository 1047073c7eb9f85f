//! The attestation document: what `GET /v1/attestation?nonce=HEX` returns.
//!
//! ```json
//! {
//!   "format": "cloak-attestation/v1",
//!   "platform": "sim",
//!   "quote": "<base64: the DCAP quote>",
//!   "claims": "<base64: the identity claims CBOR, whose SHA-512 is the quote's report data>",
//!   "collateral": { "...": "dcap-qvl QuoteCollateralV3, relayed (signed by the trust root's PKI)" }
//! }
//! ```
//!
//! Nothing in the document is trusted for being in it: the client verifies the quote with the
//! collateral under its own trust root and policy, recomputes the report data from the claims
//! bytes, checks that the claims answer the nonce it sent (their `nonce`, or one of their
//! `nonces` when the server answered several clients with one quote), and parses the claims
//! itself.
//! `collateral` is `null` when the server has none to relay (the client must then bring its
//! own).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The `format` this build writes and reads.
pub const FORMAT: &str = "cloak-attestation/v1";
/// The most nonce bytes a server accepts.
pub const MAX_NONCE_LEN: usize = 64;

/// A fresh attestation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttestationDocument {
    /// Always [`FORMAT`].
    pub format: String,
    /// `sim` or `gramine`.
    pub platform: String,
    /// The quote.
    #[serde(with = "crate::base64_bytes")]
    pub quote: Vec<u8>,
    /// The identity claims (CBOR), exactly as hashed into the report data.
    #[serde(with = "crate::base64_bytes")]
    pub claims: Vec<u8>,
    /// The collateral, as dcap-qvl `QuoteCollateralV3` JSON.
    pub collateral: Option<Box<RawValue>>,
}

impl AttestationDocument {
    /// A document over `quote`, `claims` and optional collateral JSON.
    pub fn new(
        platform: &str,
        quote: Vec<u8>,
        claims: Vec<u8>,
        collateral_json: Option<&[u8]>,
    ) -> Result<Self, serde_json::Error> {
        let collateral = collateral_json
            .map(|json| {
                let text = std::str::from_utf8(json).map_err(serde::de::Error::custom)?;
                RawValue::from_string(text.to_owned())
            })
            .transpose()?;
        Ok(Self {
            format: FORMAT.to_owned(),
            platform: platform.to_owned(),
            quote,
            claims,
            collateral,
        })
    }

    /// The collateral JSON bytes, if the server relayed any.
    pub fn collateral_json(&self) -> Option<&[u8]> {
        self.collateral.as_deref().map(|raw| raw.get().as_bytes())
    }
}

/// Encodes bytes as standard base64 (for callers that show quotes or claims).
pub fn to_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_through_json() {
        let collateral = br#"{"tcb_info":"{}","qe_identity":"{}"}"#;
        let doc =
            AttestationDocument::new("sim", vec![3, 0, 2], vec![0xA1], Some(collateral)).unwrap();
        let json = serde_json::to_string(&doc).unwrap();
        assert!(json.contains(r#""quote":"AwAC""#), "{json}");
        assert!(json.contains(r#""collateral":{"tcb_info""#), "{json}");
        let back: AttestationDocument = serde_json::from_str(&json).unwrap();
        assert_eq!(back.quote, [3, 0, 2]);
        assert_eq!(back.claims, [0xA1]);
        assert_eq!(back.collateral_json().unwrap(), collateral);
        assert_eq!(back.format, FORMAT);

        let none = AttestationDocument::new("gramine", vec![], vec![], None).unwrap();
        let back: AttestationDocument =
            serde_json::from_str(&serde_json::to_string(&none).unwrap()).unwrap();
        assert!(back.collateral_json().is_none());
    }

    #[test]
    fn bad_base64_and_bad_collateral_are_errors() {
        let bad = r#"{"format":"cloak-attestation/v1","platform":"sim","quote":"!!","claims":"","collateral":null}"#;
        assert!(serde_json::from_str::<AttestationDocument>(bad).is_err());
        assert!(AttestationDocument::new("sim", vec![], vec![], Some(b"{not json")).is_err());
        assert!(AttestationDocument::new("sim", vec![], vec![], Some(&[0xFF])).is_err());
    }
}
