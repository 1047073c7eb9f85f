//! Evidence in the wrappers other SGX stacks put around a DCAP quote, unwrapped to the quote the
//! verifier takes.
//!
//! | format | bytes |
//! |---|---|
//! | [`EvidenceFormat::DcapQuote`] | a bare quote (SGX v3, TDX v4/v5), as Intel's DCAP libraries, Gramine and Cloak produce it; also Open Enclave's `OE_FORMAT_UUID_RAW_SGX_QUOTE_ECDSA` and its `OE_FORMAT_UUID_SGX_ECDSA` evidence produced without the format id (a quote followed by the custom-claims buffer) |
//! | [`EvidenceFormat::OeReport`] | Open Enclave's legacy remote report: `u32 version = 1`, `u32 report_type = 2` (SGX remote), `u64 report_size`, then that many bytes of quote (what OE's attested-TLS certificates carry) |
//! | [`EvidenceFormat::OeEvidence`] | Open Enclave's attestation header: `u32 version = 3`, a 16-byte format UUID, 4 bytes of alignment padding, `u64 data_size`, then the data: for `SGX_ECDSA` a quote followed by the custom-claims buffer, for `RAW_SGX_QUOTE_ECDSA` a quote |
//!
//! The formats cannot be confused: a quote begins with its `u16` version (3 to 5) and the
//! attestation key type 2, so its first `u32` is `0x0002_0003` and up, never 1 or 3.
//!
//! For `SGX_ECDSA`, Open Enclave binds the custom claims by putting SHA-256 of their buffer in
//! the first 32 bytes of the report data; [`Evidence::claims_bound`] says whether it holds.
//! Nothing here verifies a signature: the quote is verified as any other, by
//! [`crate::verify::Verifier`].

use crate::quote::reader::Reader;
use crate::quote::{Quote, QuoteError, zero_padding};

/// `OE_REPORT_HEADER_VERSION`.
const OE_REPORT_VERSION: u32 = 1;
/// `OE_REPORT_TYPE_SGX_REMOTE`.
const OE_REPORT_TYPE_SGX_REMOTE: u32 = 2;
/// `OE_REPORT_TYPE_SGX_LOCAL` (a local report: no quote, nothing a remote party can verify).
const OE_REPORT_TYPE_SGX_LOCAL: u32 = 1;
/// `OE_ATTESTATION_HEADER_VERSION`.
const OE_ATTESTATION_VERSION: u32 = 3;
/// The custom-claims buffer's version.
const CUSTOM_CLAIMS_VERSION: u64 = 1;
/// More custom claims than any real evidence carries.
const MAX_CUSTOM_CLAIMS: u64 = 256;

/// Open Enclave's format UUIDs (bytes in the order written: the textual form is big-endian).
pub mod oe_format {
    /// `OE_FORMAT_UUID_SGX_ECDSA`: a quote followed by the custom-claims buffer.
    pub const SGX_ECDSA: [u8; 16] = uuid(0xa3a21e87_1b4d_4014_b70a_a125d2fbcd8c);
    /// `OE_FORMAT_UUID_RAW_SGX_QUOTE_ECDSA`: a bare quote.
    pub const RAW_SGX_QUOTE_ECDSA: [u8; 16] = uuid(0x1923d91e_12d2_4c72_b220_25cd8dace871);
    /// `OE_FORMAT_UUID_LEGACY_REPORT_REMOTE`: an OE remote report.
    pub const LEGACY_REPORT_REMOTE: [u8; 16] = uuid(0xc8303454_d923_4c2c_a691_df7def460a76);
    /// `OE_FORMAT_UUID_SGX_LOCAL_ATTESTATION`: an SGX report for local attestation.
    pub const SGX_LOCAL_ATTESTATION: [u8; 16] = uuid(0x09268c33_6e0b_45e5_8a27_15644d0ef89a);
    /// `OE_FORMAT_UUID_SGX_EPID_LINKABLE`.
    pub const SGX_EPID_LINKABLE: [u8; 16] = uuid(0xf228aa3f_de4d_49d3_884c_b2aa87a50da6);
    /// `OE_FORMAT_UUID_SGX_EPID_UNLINKABLE`.
    pub const SGX_EPID_UNLINKABLE: [u8; 16] = uuid(0x5c35d290_a2c2_4c55_9e13_5ad732746c88);

    const fn uuid(value: u128) -> [u8; 16] {
        value.to_be_bytes()
    }

    /// The constant's name, for display.
    pub fn name(id: &[u8; 16]) -> Option<&'static str> {
        Some(match *id {
            SGX_ECDSA => "OE_FORMAT_UUID_SGX_ECDSA",
            RAW_SGX_QUOTE_ECDSA => "OE_FORMAT_UUID_RAW_SGX_QUOTE_ECDSA",
            LEGACY_REPORT_REMOTE => "OE_FORMAT_UUID_LEGACY_REPORT_REMOTE",
            SGX_LOCAL_ATTESTATION => "OE_FORMAT_UUID_SGX_LOCAL_ATTESTATION",
            SGX_EPID_LINKABLE => "OE_FORMAT_UUID_SGX_EPID_LINKABLE",
            SGX_EPID_UNLINKABLE => "OE_FORMAT_UUID_SGX_EPID_UNLINKABLE",
            _ => return None,
        })
    }
}

/// The wrapper a piece of evidence came in.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvidenceFormat {
    /// A bare DCAP quote (possibly followed by OE custom claims).
    DcapQuote,
    /// Open Enclave's legacy remote report (report header, then the quote).
    OeReport,
    /// Open Enclave's attestation header (version 3, a format UUID) around a quote.
    OeEvidence,
}

impl EvidenceFormat {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::DcapQuote => "dcap-quote",
            Self::OeReport => "oe-report",
            Self::OeEvidence => "oe-evidence",
        }
    }

    /// The format named `name` ([`EvidenceFormat::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::DcapQuote, Self::OeReport, Self::OeEvidence]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

impl std::fmt::Display for EvidenceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One custom claim of Open Enclave evidence: a name and opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomClaim {
    /// The claim's name (without OE's terminating NUL).
    pub name: String,
    /// Its value.
    pub value: Vec<u8>,
}

/// Evidence unwrapped: its format, the quote and what came with it.
#[derive(Clone, Debug)]
pub struct Evidence<'a> {
    format: EvidenceFormat,
    oe_format_id: Option<[u8; 16]>,
    quote_bytes: &'a [u8],
    quote: Quote,
    /// OE `SGX_ECDSA` custom claims: the raw buffer (what the report data binds) and its claims.
    custom_claims: Option<(&'a [u8], Vec<CustomClaim>)>,
}

impl<'a> Evidence<'a> {
    /// Unwraps `bytes`, detecting the format.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EvidenceError> {
        Self::parse_as(bytes, detect(bytes))
    }

    /// Unwraps `bytes` as `format`.
    pub fn parse_as(bytes: &'a [u8], format: EvidenceFormat) -> Result<Self, EvidenceError> {
        match format {
            EvidenceFormat::DcapQuote => Self::quote_then_claims(format, None, bytes),
            EvidenceFormat::OeReport => {
                let (report_type, report) = oe_report(bytes)?;
                if report_type != OE_REPORT_TYPE_SGX_REMOTE {
                    return Err(EvidenceError::UnsupportedOeReportType(report_type));
                }
                let (quote, len) = Quote::parse_prefix(report)?;
                // A report holds its quote and nothing else; zero padding is tolerated as in a
                // bare quote.
                zero_padding(report.get(len..).unwrap_or_default(), "OE report", len)?;
                Ok(Self {
                    format,
                    oe_format_id: None,
                    quote_bytes: report.get(..len).unwrap_or_default(),
                    quote,
                    custom_claims: None,
                })
            }
            EvidenceFormat::OeEvidence => {
                let (id, data) = oe_attestation(bytes)?;
                match id {
                    oe_format::SGX_ECDSA | oe_format::RAW_SGX_QUOTE_ECDSA => {
                        Self::quote_then_claims(format, Some(id), data)
                    }
                    oe_format::LEGACY_REPORT_REMOTE => {
                        let inner = Self::parse_as(data, EvidenceFormat::OeReport)?;
                        Ok(Self {
                            format,
                            oe_format_id: Some(id),
                            ..inner
                        })
                    }
                    other => Err(EvidenceError::UnsupportedOeFormat(other)),
                }
            }
        }
    }

    /// A quote, then (OE `SGX_ECDSA`) the custom-claims buffer or nothing.
    fn quote_then_claims(
        format: EvidenceFormat,
        oe_format_id: Option<[u8; 16]>,
        bytes: &'a [u8],
    ) -> Result<Self, EvidenceError> {
        let (quote, len) = Quote::parse_prefix(bytes)?;
        let quote_bytes = bytes.get(..len).unwrap_or_default();
        let rest = bytes.get(len..).unwrap_or_default();
        let raw = oe_format_id == Some(oe_format::RAW_SGX_QUOTE_ECDSA);
        let custom_claims = if raw || rest.iter().all(|&b| b == 0) {
            zero_padding(rest, "quote", len)?;
            None
        } else {
            // Must parse as OE's custom-claims buffer, or it is not evidence we understand.
            Some((rest, parse_custom_claims(rest)?))
        };
        Ok(Self {
            format,
            oe_format_id,
            quote_bytes,
            quote,
            custom_claims,
        })
    }

    /// The wrapper it came in.
    pub fn format(&self) -> EvidenceFormat {
        self.format
    }

    /// The OE format UUID in its attestation header, if it has one.
    pub fn oe_format_id(&self) -> Option<&[u8; 16]> {
        self.oe_format_id.as_ref()
    }

    /// The quote's bytes, exactly as the quote's signatures cover them.
    pub fn quote_bytes(&self) -> &'a [u8] {
        self.quote_bytes
    }

    /// The parsed quote.
    pub fn quote(&self) -> &Quote {
        &self.quote
    }

    /// The raw custom-claims buffer of OE `SGX_ECDSA` evidence, if any.
    pub fn custom_claims_raw(&self) -> Option<&'a [u8]> {
        self.custom_claims.as_ref().map(|(raw, _)| *raw)
    }

    /// The custom claims (empty when there are none).
    pub fn custom_claims(&self) -> &[CustomClaim] {
        self.custom_claims
            .as_ref()
            .map_or(&[], |(_, claims)| claims.as_slice())
    }

    /// For evidence carrying custom claims: whether the report data's first 32 bytes are
    /// SHA-256 of the claims buffer, as Open Enclave binds them. `None` without claims.
    pub fn claims_bound(&self) -> Option<bool> {
        let raw = self.custom_claims_raw()?;
        let digest = cloak_crypto::hash::sha256(raw);
        Some(self.quote.report_data().as_bytes().get(..32) == Some(&digest[..]))
    }
}

/// The format `bytes` are in, from their first bytes (a bare quote when nothing else fits).
pub fn detect(bytes: &[u8]) -> EvidenceFormat {
    match bytes.first_chunk::<4>().map(|b| u32::from_le_bytes(*b)) {
        Some(OE_REPORT_VERSION) => EvidenceFormat::OeReport,
        Some(OE_ATTESTATION_VERSION) => EvidenceFormat::OeEvidence,
        _ => EvidenceFormat::DcapQuote,
    }
}

/// An OE report header's type and the report it declares.
fn oe_report(bytes: &[u8]) -> Result<(u32, &[u8]), EvidenceError> {
    let mut r = Reader::new(bytes);
    let version = r.u32("OE report header version")?;
    if version != OE_REPORT_VERSION {
        return Err(EvidenceError::UnsupportedOeVersion(version));
    }
    let report_type = r.u32("OE report type")?;
    if report_type != OE_REPORT_TYPE_SGX_REMOTE && report_type != OE_REPORT_TYPE_SGX_LOCAL {
        return Err(EvidenceError::UnsupportedOeReportType(report_type));
    }
    let size = r.u64("OE report size")?;
    Ok((report_type, declared(r, size, "OE report")?))
}

/// An OE attestation header's format UUID and the data it declares.
fn oe_attestation(bytes: &[u8]) -> Result<([u8; 16], &[u8]), EvidenceError> {
    let mut r = Reader::new(bytes);
    let version = r.u32("OE attestation header version")?;
    if version != OE_ATTESTATION_VERSION {
        return Err(EvidenceError::UnsupportedOeVersion(version));
    }
    let format_id = r.array::<16>("OE format id")?;
    // The C structure's alignment padding; OE zeroes the header before filling it in.
    if r.array::<4>("OE attestation header padding")? != [0; 4] {
        return Err(EvidenceError::Malformed(
            "the OE attestation header's padding is not zero",
        ));
    }
    let size = r.u64("OE evidence size")?;
    Ok((format_id, declared(r, size, "OE evidence")?))
}

/// Exactly the `size` bytes left in `r`: fewer is truncated, more is trailing bytes.
fn declared<'b>(mut r: Reader<'b>, size: u64, what: &'static str) -> Result<&'b [u8], QuoteError> {
    let data = r.bytes(usize::try_from(size).unwrap_or(usize::MAX), what)?;
    r.finish(what)?;
    Ok(data)
}

/// OE's custom-claims buffer: `u64 version = 1`, `u64 count`, then per claim `u64 name_size`
/// (with its NUL), `u64 value_size`, the name, the value; nothing after the last claim.
fn parse_custom_claims(bytes: &[u8]) -> Result<Vec<CustomClaim>, EvidenceError> {
    let mut r = Reader::new(bytes);
    if r.u64("OE custom claims version")? != CUSTOM_CLAIMS_VERSION {
        return Err(EvidenceError::Malformed(
            "the OE custom-claims buffer's version is not 1",
        ));
    }
    let count = r.u64("OE custom claims count")?;
    if count > MAX_CUSTOM_CLAIMS {
        return Err(EvidenceError::Malformed(
            "the OE custom-claims buffer declares too many claims",
        ));
    }
    let len = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
    let mut claims = Vec::new();
    for _ in 0..count {
        let name_size = len(r.u64("OE custom claim name size")?);
        let value_size = len(r.u64("OE custom claim value size")?);
        let name = r
            .bytes(name_size, "OE custom claim name")?
            .strip_suffix(&[0])
            .filter(|n| !n.contains(&0))
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or(EvidenceError::Malformed(
                "an OE custom claim's name is not NUL-terminated UTF-8",
            ))?
            .to_owned();
        let value = r.bytes(value_size, "OE custom claim value")?.to_vec();
        claims.push(CustomClaim { name, value });
    }
    r.finish("OE custom claims")?;
    Ok(claims)
}

/// Why evidence could not be unwrapped.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The quote inside is not a quote this verifier reads.
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// A wrapper is not well formed.
    #[error("{0}")]
    Malformed(&'static str),
    /// An OE header version other than the ones defined.
    #[error("unsupported Open Enclave header version {0}")]
    UnsupportedOeVersion(u32),
    /// An OE report that is not a remote SGX report (a local report has no quote).
    #[error(
        "unsupported Open Enclave report type {0} (only 2, an SGX remote report, carries a quote)"
    )]
    UnsupportedOeReportType(u32),
    /// An OE format other than SGX ECDSA, the raw quote or the legacy report.
    #[error("unsupported Open Enclave evidence format {} ({})", uuid_text(.0), oe_format::name(.0).unwrap_or("unknown"))]
    UnsupportedOeFormat([u8; 16]),
}

impl EvidenceError {
    /// The stable reason code, as [`QuoteError::code`]'s: `unsupported-quote-format` for
    /// well-formed evidence of a kind this verifier does not accept, `malformed-quote` for
    /// broken evidence.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Quote(e) => e.code(),
            Self::UnsupportedOeVersion(_)
            | Self::UnsupportedOeReportType(_)
            | Self::UnsupportedOeFormat(_) => "unsupported-quote-format",
            Self::Malformed(_) => "malformed-quote",
        }
    }
}

/// A format UUID in its textual form.
pub fn uuid_text(id: &[u8; 16]) -> String {
    let hex = hex::encode(id);
    format!(
        "{}-{}-{}-{}-{}",
        hex.get(0..8).unwrap_or_default(),
        hex.get(8..12).unwrap_or_default(),
        hex.get(12..16).unwrap_or_default(),
        hex.get(16..20).unwrap_or_default(),
        hex.get(20..32).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests;
