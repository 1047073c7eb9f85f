//! Intel DCAP quotes: SGX quote v3 and TDX quote v4 and v5 (TD report body types 2, 3 and 4),
//! parsed into typed structures.
//!
//! Parsing is strict: every declared length must match the structure exactly, only the
//! versions, key types, TEE types, body types and certification-data types listed here are
//! accepted, and bytes after the signature data may only be zero padding (which real TDX quotes
//! carry). Parsing authenticates nothing; [`crate::verify`] does.

pub(crate) mod reader;

use std::fmt;

use serde::Serialize;

use self::reader::Reader;
use crate::types::{Measurement, ReportData};

/// Intel's quoting-enclave vendor id (`939A7233-F79C-4CA9-940A-0DB3957F0607`).
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9A, 0x72, 0x33, 0xF7, 0x9C, 0x4C, 0xA9, 0x94, 0x0A, 0x0D, 0xB3, 0x95, 0x7F, 0x06, 0x07,
];

const ATTESTATION_KEY_ECDSA_P256: u16 = 2;
const TEE_TYPE_SGX: u32 = 0x0000_0000;
const TEE_TYPE_TDX: u32 = 0x0000_0081;
const ENCLAVE_REPORT_LEN: usize = 384;
const TD_REPORT10_LEN: usize = 584;
const TD_REPORT15_LEN: usize = 648;
const TD_REPORT15_EX_LEN: usize = 885;
const CERT_DATA_QE_REPORT: u16 = 6;
const CERT_DATA_PCK_CHAIN: u16 = 5;
/// Largest variable-length field accepted (certification data, QE authentication data): the
/// limit dcap-qvl applies, so both parsers accept the same quotes.
const MAX_FIELD_LEN: usize = 1024 * 1024;
/// SGX ATTRIBUTES.FLAGS bit 1.
const SGX_FLAG_DEBUG: u64 = 0x02;
/// TDATTRIBUTES bits 0–7, the "TD under debug" group: DEBUG (bit 0) and the profiling and
/// reserved bits. The TDX module ABI calls a TD with any of them set untrusted.
const TD_ATTRIBUTES_TUD: u64 = 0xFF;

/// The trusted execution environment a quote comes from.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TeeType {
    /// An Intel SGX enclave.
    Sgx,
    /// An Intel TDX trust domain.
    Tdx,
}

impl TeeType {
    /// `"sgx"` or `"tdx"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sgx => "sgx",
            Self::Tdx => "tdx",
        }
    }
}

impl fmt::Display for TeeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed DCAP quote. The bytes it was parsed from stay with it: the signature covers them,
/// not this structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    header: QuoteHeader,
    body: ReportBody,
    signature: QuoteSignature,
    signed_len: usize,
    padding: usize,
}

impl Quote {
    /// Parses a quote.
    pub fn parse(bytes: &[u8]) -> Result<Self, QuoteError> {
        let (mut quote, len) = Self::parse_prefix(bytes)?;
        quote.padding = zero_padding(bytes.get(len..).unwrap_or_default(), "quote", len)?;
        Ok(quote)
    }

    /// Parses the quote at the start of `bytes` and returns it with its length (header, body,
    /// signature data), leaving whatever follows to the caller: wrappers such as Open
    /// Enclave's evidence put other data after the quote.
    pub fn parse_prefix(bytes: &[u8]) -> Result<(Self, usize), QuoteError> {
        let mut r = Reader::new(bytes);
        let header = QuoteHeader::parse(&mut r)?;
        let body = match (header.version, header.tee) {
            (3, TeeType::Sgx) => ReportBody::Sgx(EnclaveReport::parse(&mut r)?),
            (4, TeeType::Tdx) => ReportBody::TdxV10(TdReport10::parse(&mut r)?),
            (5, TeeType::Tdx) => parse_v5_body(&mut r)?,
            (version, tee) => return Err(QuoteError::UnsupportedVersionForTee { version, tee }),
        };
        let signed_len = r.offset();
        let signature_len = r.u32("signature data length")?;
        let mut signature = r.sub(usize_from(signature_len), "signature data")?;
        let signature_data = QuoteSignature::parse(&mut signature, header.version)?;
        signature.finish("signature data")?;
        let quote = Self {
            header,
            body,
            signature: signature_data,
            signed_len,
            padding: 0,
        };
        Ok((quote, r.offset()))
    }

    /// The header.
    pub fn header(&self) -> &QuoteHeader {
        &self.header
    }

    /// The report body (the enclave's or the TD's measurements and report data).
    pub fn body(&self) -> &ReportBody {
        &self.body
    }

    /// The signature data: signatures, the QE report and the certification data.
    pub fn signature(&self) -> &QuoteSignature {
        &self.signature
    }

    /// Length of the prefix the attestation key signs (header and body).
    pub fn signed_len(&self) -> usize {
        self.signed_len
    }

    /// Zero bytes after the signature data (real TDX quotes are often padded).
    pub fn padding(&self) -> usize {
        self.padding
    }

    /// The TEE the quote comes from.
    pub fn tee(&self) -> TeeType {
        self.header.tee
    }

    /// The report data the enclave or TD chose.
    pub fn report_data(&self) -> &ReportData {
        match &self.body {
            ReportBody::Sgx(report) => &report.report_data,
            ReportBody::TdxV10(report) => &report.report_data,
            ReportBody::TdxV15(report) => &report.base.report_data,
            ReportBody::TdxV15Ex(report) => &report.base.base.report_data,
        }
    }

    /// The measurements and identity fields, for display and JSON.
    pub fn measurements(&self) -> Measurements {
        match &self.body {
            ReportBody::Sgx(report) => Measurements::Sgx(SgxMeasurements::of(report)),
            ReportBody::TdxV10(report) => Measurements::Tdx(TdxMeasurements::of(report, None)),
            ReportBody::TdxV15(report) => {
                Measurements::Tdx(TdxMeasurements::of(&report.base, Some(report)))
            }
            ReportBody::TdxV15Ex(report) => {
                Measurements::Tdx(TdxMeasurements::of(&report.base.base, Some(&report.base)))
            }
        }
    }

    /// Whether the enclave or TD runs in debug mode (its memory is open to the host).
    pub fn is_debug(&self) -> bool {
        match &self.body {
            ReportBody::Sgx(report) => report.is_debug(),
            ReportBody::TdxV10(report) => report.is_debug(),
            ReportBody::TdxV15(report) => report.base.is_debug(),
            ReportBody::TdxV15Ex(report) => report.base.base.is_debug(),
        }
    }
}

/// The identity fields of a quote's body, flattened for display and JSON.
// Built for display, once per quote: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Measurements {
    /// An SGX enclave's.
    Sgx(SgxMeasurements),
    /// A TD's.
    Tdx(TdxMeasurements),
}

/// An SGX enclave's identity fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SgxMeasurements {
    /// MRENCLAVE.
    pub mrenclave: Measurement<32>,
    /// MRSIGNER.
    pub mrsigner: Measurement<32>,
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// CONFIGSVN.
    pub config_svn: u16,
    /// CONFIGID, hex.
    pub config_id: String,
    /// ATTRIBUTES.FLAGS, hex.
    pub attributes: String,
    /// ATTRIBUTES.XFRM, hex.
    pub xfrm: String,
    /// MISCSELECT, hex.
    pub misc_select: String,
    /// Whether the enclave is a debug enclave.
    pub debug: bool,
}

impl SgxMeasurements {
    fn of(report: &EnclaveReport) -> Self {
        Self {
            mrenclave: report.mr_enclave,
            mrsigner: report.mr_signer,
            isv_prod_id: report.isv_prod_id,
            isv_svn: report.isv_svn,
            config_svn: report.config_svn,
            config_id: hex::encode(report.config_id),
            attributes: format!("{:016x}", report.attribute_flags),
            xfrm: format!("{:016x}", report.attribute_xfrm),
            misc_select: format!("{:08x}", report.misc_select),
            debug: report.is_debug(),
        }
    }
}

/// A TD's identity fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TdxMeasurements {
    /// MRTD.
    pub mrtd: Measurement<48>,
    /// RTMR0.
    pub rtmr0: Measurement<48>,
    /// RTMR1.
    pub rtmr1: Measurement<48>,
    /// RTMR2.
    pub rtmr2: Measurement<48>,
    /// RTMR3.
    pub rtmr3: Measurement<48>,
    /// MRCONFIGID.
    pub mr_config_id: Measurement<48>,
    /// MROWNER.
    pub mr_owner: Measurement<48>,
    /// MROWNERCONFIG.
    pub mr_owner_config: Measurement<48>,
    /// MRSEAM (the TDX module).
    pub mr_seam: Measurement<48>,
    /// TDATTRIBUTES, hex.
    pub td_attributes: String,
    /// XFAM, hex.
    pub xfam: String,
    /// TEE_TCB_SVN, hex.
    pub tee_tcb_svn: String,
    /// TEE_TCB_SVN2 (TDX 1.5), hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tee_tcb_svn2: Option<String>,
    /// MRSERVICETD (TDX 1.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_service_td: Option<Measurement<48>>,
    /// Whether the TD is a debug TD.
    pub debug: bool,
}

impl TdxMeasurements {
    fn of(report: &TdReport10, v15: Option<&TdReport15>) -> Self {
        let [rtmr0, rtmr1, rtmr2, rtmr3] = report.rtmr;
        Self {
            mrtd: report.mr_td,
            rtmr0,
            rtmr1,
            rtmr2,
            rtmr3,
            mr_config_id: report.mr_config_id,
            mr_owner: report.mr_owner,
            mr_owner_config: report.mr_owner_config,
            mr_seam: report.mr_seam,
            td_attributes: format!("{:016x}", report.td_attributes),
            xfam: format!("{:016x}", report.xfam),
            tee_tcb_svn: hex::encode(report.tee_tcb_svn),
            tee_tcb_svn2: v15.map(|r| hex::encode(r.tee_tcb_svn2)),
            mr_service_td: v15.map(|r| r.mr_service_td),
            debug: report.is_debug(),
        }
    }
}

fn parse_v5_body(r: &mut Reader<'_>) -> Result<ReportBody, QuoteError> {
    let body_type = r.u16("body type")?;
    let declared = r.u32("body size")?;
    let expected = match body_type {
        2 => TD_REPORT10_LEN,
        3 => TD_REPORT15_LEN,
        4 => TD_REPORT15_EX_LEN,
        other => return Err(QuoteError::UnsupportedBodyType(other)),
    };
    if usize_from(declared) != expected {
        return Err(QuoteError::BodySizeMismatch {
            body_type,
            declared,
            expected,
        });
    }
    let mut body = r.sub(expected, "report body")?;
    let parsed = match body_type {
        2 => ReportBody::TdxV10(TdReport10::parse(&mut body)?),
        3 => ReportBody::TdxV15(TdReport15::parse(&mut body)?),
        _ => ReportBody::TdxV15Ex(TdReport15Ex::parse(&mut body)?),
    };
    body.finish("report body")?;
    Ok(parsed)
}

/// The 48-byte quote header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteHeader {
    version: u16,
    tee: TeeType,
    qe_svn: u16,
    pce_svn: u16,
    qe_vendor_id: [u8; 16],
    user_data: [u8; 20],
}

impl QuoteHeader {
    fn parse(r: &mut Reader<'_>) -> Result<Self, QuoteError> {
        let version = r.u16("version")?;
        if !(3..=5).contains(&version) {
            return Err(QuoteError::UnsupportedVersion(version));
        }
        let key_type = r.u16("attestation key type")?;
        if key_type != ATTESTATION_KEY_ECDSA_P256 {
            return Err(QuoteError::UnsupportedAttestationKeyType(key_type));
        }
        let tee = match r.u32("TEE type")? {
            TEE_TYPE_SGX => TeeType::Sgx,
            TEE_TYPE_TDX => TeeType::Tdx,
            other => return Err(QuoteError::UnsupportedTeeType(other)),
        };
        let qe_svn = r.u16("QE SVN")?;
        let pce_svn = r.u16("PCE SVN")?;
        let qe_vendor_id = r.array("QE vendor id")?;
        if qe_vendor_id != INTEL_QE_VENDOR_ID {
            return Err(QuoteError::UnknownQeVendor(qe_vendor_id));
        }
        let user_data = r.array("user data")?;
        Ok(Self {
            version,
            tee,
            qe_svn,
            pce_svn,
            qe_vendor_id,
            user_data,
        })
    }

    /// The quote format version (3, 4 or 5).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The TEE type.
    pub fn tee(&self) -> TeeType {
        self.tee
    }

    /// The quoting enclave's SVN (version 3; zero in TDX quotes).
    pub fn qe_svn(&self) -> u16 {
        self.qe_svn
    }

    /// The provisioning certification enclave's SVN (version 3).
    pub fn pce_svn(&self) -> u16 {
        self.pce_svn
    }

    /// The QE vendor id (always Intel's in a parsed quote).
    pub fn qe_vendor_id(&self) -> &[u8; 16] {
        &self.qe_vendor_id
    }

    /// Vendor-defined user data (Intel's QE puts its QE id here).
    pub fn user_data(&self) -> &[u8; 20] {
        &self.user_data
    }
}

/// The body a quote attests to.
// Quotes are parsed once per verification; boxing the larger bodies would buy nothing.
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportBody {
    /// An SGX enclave report (quote v3).
    Sgx(EnclaveReport),
    /// A TDX 1.0 TD report (quote v4, or v5 body type 2).
    TdxV10(TdReport10),
    /// A TDX 1.5 TD report (quote v5 body type 3).
    TdxV15(TdReport15),
    /// A TDX 1.5 TD report with the service-TD extension (quote v5 body type 4).
    TdxV15Ex(TdReport15Ex),
}

/// An SGX enclave report body (384 bytes): the enclave's identity and report data. Also the
/// layout of the quoting enclave's own report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnclaveReport {
    /// CPU security version.
    pub cpu_svn: [u8; 16],
    /// MISCSELECT.
    pub misc_select: u32,
    /// ISVEXTPRODID (KSS).
    pub isv_ext_prod_id: [u8; 16],
    /// ATTRIBUTES.FLAGS.
    pub attribute_flags: u64,
    /// ATTRIBUTES.XFRM.
    pub attribute_xfrm: u64,
    /// MRENCLAVE: the measurement of the enclave's code and initial data.
    pub mr_enclave: Measurement<32>,
    /// MRSIGNER: the hash of the enclave signer's public key.
    pub mr_signer: Measurement<32>,
    /// CONFIGID (KSS).
    pub config_id: [u8; 64],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// CONFIGSVN (KSS).
    pub config_svn: u16,
    /// ISVFAMILYID (KSS).
    pub isv_family_id: [u8; 16],
    /// REPORTDATA.
    pub report_data: ReportData,
}

impl EnclaveReport {
    /// Parses the 384-byte report body at the reader's position.
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, QuoteError> {
        let cpu_svn = r.array("CPUSVN")?;
        let misc_select = r.u32("MISCSELECT")?;
        let _cet_and_reserved: [u8; 12] = r.array("reserved")?;
        let isv_ext_prod_id = r.array("ISVEXTPRODID")?;
        let attribute_flags = r.u64("ATTRIBUTES.FLAGS")?;
        let attribute_xfrm = r.u64("ATTRIBUTES.XFRM")?;
        let mr_enclave = Measurement(r.array("MRENCLAVE")?);
        let _reserved2: [u8; 32] = r.array("reserved")?;
        let mr_signer = Measurement(r.array("MRSIGNER")?);
        let _reserved3: [u8; 32] = r.array("reserved")?;
        let config_id = r.array("CONFIGID")?;
        let isv_prod_id = r.u16("ISVPRODID")?;
        let isv_svn = r.u16("ISVSVN")?;
        let config_svn = r.u16("CONFIGSVN")?;
        let _reserved4: [u8; 42] = r.array("reserved")?;
        let isv_family_id = r.array("ISVFAMILYID")?;
        let report_data = ReportData(r.array("REPORTDATA")?);
        Ok(Self {
            cpu_svn,
            misc_select,
            isv_ext_prod_id,
            attribute_flags,
            attribute_xfrm,
            mr_enclave,
            mr_signer,
            config_id,
            isv_prod_id,
            isv_svn,
            config_svn,
            isv_family_id,
            report_data,
        })
    }

    /// Whether ATTRIBUTES.DEBUG is set.
    pub fn is_debug(&self) -> bool {
        self.attribute_flags & SGX_FLAG_DEBUG != 0
    }
}

/// A TDX 1.0 TD report body (584 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdReport10 {
    /// TEE_TCB_SVN: the TDX module's TCB.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: the TDX module's measurement.
    pub mr_seam: Measurement<48>,
    /// MRSIGNERSEAM (zero for Intel's modules).
    pub mr_signer_seam: Measurement<48>,
    /// SEAMATTRIBUTES.
    pub seam_attributes: [u8; 8],
    /// TDATTRIBUTES (bit 0: debug).
    pub td_attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRTD: the measurement of the TD's initial contents.
    pub mr_td: Measurement<48>,
    /// MRCONFIGID.
    pub mr_config_id: Measurement<48>,
    /// MROWNER.
    pub mr_owner: Measurement<48>,
    /// MROWNERCONFIG.
    pub mr_owner_config: Measurement<48>,
    /// RTMR0 to RTMR3: run-time measurement registers.
    pub rtmr: [Measurement<48>; 4],
    /// REPORTDATA.
    pub report_data: ReportData,
}

impl TdReport10 {
    fn parse(r: &mut Reader<'_>) -> Result<Self, QuoteError> {
        Ok(Self {
            tee_tcb_svn: r.array("TEE_TCB_SVN")?,
            mr_seam: Measurement(r.array("MRSEAM")?),
            mr_signer_seam: Measurement(r.array("MRSIGNERSEAM")?),
            seam_attributes: r.array("SEAMATTRIBUTES")?,
            td_attributes: r.u64("TDATTRIBUTES")?,
            xfam: r.u64("XFAM")?,
            mr_td: Measurement(r.array("MRTD")?),
            mr_config_id: Measurement(r.array("MRCONFIGID")?),
            mr_owner: Measurement(r.array("MROWNER")?),
            mr_owner_config: Measurement(r.array("MROWNERCONFIG")?),
            rtmr: [
                Measurement(r.array("RTMR0")?),
                Measurement(r.array("RTMR1")?),
                Measurement(r.array("RTMR2")?),
                Measurement(r.array("RTMR3")?),
            ],
            report_data: ReportData(r.array("REPORTDATA")?),
        })
    }

    /// Whether any "TD under debug" attribute is set (DEBUG, or the profiling bits): the host
    /// can observe such a TD.
    pub fn is_debug(&self) -> bool {
        self.td_attributes & TD_ATTRIBUTES_TUD != 0
    }
}

/// A TDX 1.5 TD report body (648 bytes): the 1.0 body and two more fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdReport15 {
    /// The TDX 1.0 fields.
    pub base: TdReport10,
    /// TEE_TCB_SVN2: the TCB of the running TDX module after a TD-preserving update.
    pub tee_tcb_svn2: [u8; 16],
    /// MRSERVICETD: the service TDs bound to this TD.
    pub mr_service_td: Measurement<48>,
}

impl TdReport15 {
    fn parse(r: &mut Reader<'_>) -> Result<Self, QuoteError> {
        Ok(Self {
            base: TdReport10::parse(r)?,
            tee_tcb_svn2: r.array("TEE_TCB_SVN2")?,
            mr_service_td: Measurement(r.array("MRSERVICETD")?),
        })
    }
}

/// A TDX 1.5 TD report body with the 237-byte extension (885 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdReport15Ex {
    /// The TDX 1.5 fields.
    pub base: TdReport15,
    /// VM index (0 for an unpartitioned TD).
    pub vmid: u8,
    /// TD instance id.
    pub td_id: [u8; 32],
    /// Hash of the device information.
    pub dev_info: Measurement<48>,
    /// SERVTD_HASH of the service TDs bound at creation.
    pub init_service_td_hash: Measurement<48>,
    /// Attributes of the service TD bound at creation.
    pub init_service_td_attributes: [u8; 8],
    /// CPUSVN at creation.
    pub init_cpu_svn: [u8; 16],
    /// TEE_TCB_SVN at creation.
    pub init_tee_tcb_svn: [u8; 16],
    /// Platform model at creation.
    pub init_tee_fmspc: [u8; 12],
    /// SERVTD_HASH of the currently bound service TDs.
    pub cur_service_td_hash: Measurement<48>,
    /// Attributes of the currently bound service TD.
    pub cur_service_td_attributes: [u8; 8],
}

impl TdReport15Ex {
    fn parse(r: &mut Reader<'_>) -> Result<Self, QuoteError> {
        Ok(Self {
            base: TdReport15::parse(r)?,
            vmid: u8::from_le_bytes(r.array("VMID")?),
            td_id: r.array("TD_ID")?,
            dev_info: Measurement(r.array("DEV_INFO")?),
            init_service_td_hash: Measurement(r.array("INIT_SERVTD_HASH")?),
            init_service_td_attributes: r.array("INIT_SERVTD_ATTRIBUTES")?,
            init_cpu_svn: r.array("INIT_CPUSVN")?,
            init_tee_tcb_svn: r.array("INIT_TEE_TCB_SVN")?,
            init_tee_fmspc: r.array("INIT_TEE_FMSPC")?,
            cur_service_td_hash: Measurement(r.array("CUR_SERVTD_HASH")?),
            cur_service_td_attributes: r.array("CUR_SERVTD_ATTRIBUTES")?,
        })
    }
}

/// The quote's signature data: the attestation key's signature over header and body, the
/// quoting enclave's report (signed by the PCK) binding that key, and the PCK certification data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteSignature {
    /// ECDSA P-256 signature (r‖s) over the signed prefix, by the attestation key.
    pub isv_signature: [u8; 64],
    /// The attestation public key (x‖y).
    pub attestation_key: [u8; 64],
    /// The quoting enclave's report; its REPORTDATA binds the attestation key.
    pub qe_report: EnclaveReport,
    /// The raw bytes of the QE report (what the PCK signs).
    pub qe_report_raw: Vec<u8>,
    /// ECDSA P-256 signature over the QE report, by the PCK.
    pub qe_report_signature: [u8; 64],
    /// QE authentication data (hashed with the attestation key into the QE REPORTDATA).
    pub qe_auth_data: Vec<u8>,
    /// How the PCK certificate is provided.
    pub certification: CertificationData,
}

impl QuoteSignature {
    fn parse(r: &mut Reader<'_>, version: u16) -> Result<Self, QuoteError> {
        let isv_signature = r.array("quote signature")?;
        let attestation_key = r.array("attestation key")?;
        if version == 3 {
            return Self::parse_qe_part(r, isv_signature, attestation_key);
        }
        let outer = r.u16("certification data type")?;
        if outer != CERT_DATA_QE_REPORT {
            return Err(QuoteError::UnsupportedCertificationDataType {
                found: outer,
                allowed: "6 (QE report certification data)",
            });
        }
        let len = field_len(r.u32("certification data size")?, "certification data")?;
        let mut inner = r.sub(len, "QE report certification data")?;
        let parsed = Self::parse_qe_part(&mut inner, isv_signature, attestation_key)?;
        inner.finish("QE report certification data")?;
        Ok(parsed)
    }

    fn parse_qe_part(
        r: &mut Reader<'_>,
        isv_signature: [u8; 64],
        attestation_key: [u8; 64],
    ) -> Result<Self, QuoteError> {
        let mut qe = r.sub(ENCLAVE_REPORT_LEN, "QE report")?;
        let qe_report_raw = qe.rest().to_vec();
        let qe_report = EnclaveReport::parse(&mut qe)?;
        let qe_report_signature = r.array("QE report signature")?;
        let auth_len = r.u16("QE authentication data size")?;
        let qe_auth_data = r
            .bytes(usize::from(auth_len), "QE authentication data")?
            .to_vec();
        let certification = CertificationData::parse(r)?;
        Ok(Self {
            isv_signature,
            attestation_key,
            qe_report,
            qe_report_raw,
            qe_report_signature,
            qe_auth_data,
            certification,
        })
    }
}

/// The platform a PCK certificate was issued to, as its SGX extension names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PckPlatform {
    /// FMSPC (family-model-stepping-platform-customSKU), upper-case hex as Intel writes it:
    /// what selects the TCB info.
    pub fmspc: String,
    /// PCE id, upper-case hex.
    pub pce_id: String,
    /// PCE security version.
    pub pce_svn: u16,
    /// The 16 SGX TCB component SVNs (the CPUSVN the certificate was issued for).
    pub tcb_components: Vec<u8>,
}

/// How a quote provides the PCK certificate that signs the QE report.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificationData {
    /// Type 5: the PCK certificate chain (leaf, intermediate CA, root CA), as DER certificates
    /// decoded from the PEM text in the quote.
    PckChain(Vec<Vec<u8>>),
    /// Types 1–4: PPID or PCK leaf only; the chain must come with the collateral.
    Other {
        /// The certification data type (1 to 4).
        kind: u16,
        /// The raw certification data.
        data: Vec<u8>,
    },
}

impl CertificationData {
    fn parse(r: &mut Reader<'_>) -> Result<Self, QuoteError> {
        let kind = r.u16("certification data type")?;
        let len = field_len(r.u32("certification data size")?, "certification data")?;
        let data = r.bytes(len, "certification data")?;
        match kind {
            CERT_DATA_PCK_CHAIN => parse_canonical_pem_chain(data).map(Self::PckChain),
            1..=4 => Ok(Self::Other {
                kind,
                data: data.to_vec(),
            }),
            other => Err(QuoteError::UnsupportedCertificationDataType {
                found: other,
                allowed: "1 to 5",
            }),
        }
    }

    /// The PCK chain as DER certificates, leaf first, when the quote carries it.
    pub fn pck_chain(&self) -> Option<&[Vec<u8>]> {
        match self {
            Self::PckChain(chain) => Some(chain),
            Self::Other { .. } => None,
        }
    }

    /// What the PCK certificate's SGX extension says about the platform, when the quote
    /// carries the certificate: read, not verified.
    pub fn pck_platform(&self) -> Option<PckPlatform> {
        let leaf = self.pck_chain()?.first()?;
        let ext = dcap_qvl::intel::parse_pck_extension(leaf).ok()?;
        Some(PckPlatform {
            fmspc: hex::encode_upper(ext.fmspc),
            pce_id: hex::encode_upper(&ext.pce_id),
            pce_svn: ext.pce_svn,
            tcb_components: ext.cpu_svn.to_vec(),
        })
    }

    /// The certification data type.
    pub fn kind(&self) -> u16 {
        match self {
            Self::PckChain(_) => CERT_DATA_PCK_CHAIN,
            Self::Other { kind, .. } => *kind,
        }
    }
}

/// `text` without the NUL bytes real quotes sometimes end their PEM with.
fn without_trailing_nuls(text: &[u8]) -> &[u8] {
    let end = text
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last.saturating_add(1));
    text.get(..end).unwrap_or_default()
}

/// Decodes concatenated PEM certificates (real quotes sometimes end the text with NUL bytes).
pub(crate) fn parse_pem_chain(text: &[u8]) -> Result<Vec<Vec<u8>>, QuoteError> {
    let trimmed = without_trailing_nuls(text);
    let blocks = pem::parse_many(trimmed).map_err(|_| QuoteError::InvalidPckChain)?;
    if blocks.is_empty() || blocks.iter().any(|b| b.tag() != "CERTIFICATE") {
        return Err(QuoteError::InvalidPckChain);
    }
    Ok(blocks.into_iter().map(pem::Pem::into_contents).collect())
}

/// [`parse_pem_chain`], and the text must be exactly the canonical encoding of what it decodes
/// to, certificate by certificate: each in 64-character lines (RFC 7468) or the 76-character
/// MIME lines some quotes from 2019 carry (Open Enclave's), with LF or CRLF line endings, and
/// with or without the line ending after its last line (real chains run one certificate's END
/// line into the next BEGIN). Nothing else is accepted, so that a quote's bytes cannot change
/// in any other way without changing what it says.
fn parse_canonical_pem_chain(text: &[u8]) -> Result<Vec<Vec<u8>>, QuoteError> {
    let certs = parse_pem_chain(text)?;
    let mut rest = without_trailing_nuls(text);
    for der in &certs {
        let block = pem::Pem::new("CERTIFICATE", der.clone());
        let matched = [pem::LineEnding::LF, pem::LineEnding::CRLF]
            .into_iter()
            .flat_map(|ending| PEM_LINE_WIDTHS.map(|width| (ending, width)))
            .find_map(|(ending, width)| {
                let config = pem::EncodeConfig::new()
                    .set_line_ending(ending)
                    .set_line_wrap(width);
                let encoded = pem::encode_config(&block, config);
                let encoded = encoded.as_bytes();
                let unended = encoded.strip_suffix(ending_bytes(ending))?;
                [encoded, unended]
                    .into_iter()
                    .find(|candidate| rest.starts_with(candidate))
                    .map(<[u8]>::len)
            })
            .ok_or(QuoteError::InvalidPckChain)?;
        rest = rest.get(matched..).unwrap_or_default();
    }
    if rest.is_empty() {
        Ok(certs)
    } else {
        Err(QuoteError::InvalidPckChain)
    }
}

/// The line widths of the PEM in real quotes: RFC 7468's 64, and MIME's 76.
const PEM_LINE_WIDTHS: [usize; 2] = [64, 76];

fn ending_bytes(ending: pem::LineEnding) -> &'static [u8] {
    match ending {
        pem::LineEnding::CRLF => b"\r\n",
        pem::LineEnding::LF => b"\n",
    }
}

/// The length of `rest`, the bytes after a `structure` that ends at `offset`, which may only be
/// zero padding.
pub(crate) fn zero_padding(
    rest: &[u8],
    structure: &'static str,
    offset: usize,
) -> Result<usize, QuoteError> {
    match rest.iter().position(|&b| b != 0) {
        None => Ok(rest.len()),
        Some(position) => Err(QuoteError::TrailingBytes {
            structure,
            offset: offset.saturating_add(position),
            count: rest.len().saturating_sub(position),
        }),
    }
}

/// A declared field length, refused above [`MAX_FIELD_LEN`].
fn field_len(declared: u32, field: &'static str) -> Result<usize, QuoteError> {
    let len = usize_from(declared);
    if len > MAX_FIELD_LEN {
        return Err(QuoteError::FieldTooLarge { field, len });
    }
    Ok(len)
}

fn usize_from(value: u32) -> usize {
    // Every target this crate builds for has at least 32-bit pointers.
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Why a quote could not be parsed.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// A v5 body size does not match its body type.
    #[error("body type {body_type} has {expected} bytes, but the quote declares {declared}")]
    BodySizeMismatch {
        /// The body type.
        body_type: u16,
        /// The declared size.
        declared: u32,
        /// The size of that body type.
        expected: usize,
    },
    /// A variable-length field is larger than any real quote's.
    #[error("{field} is {len} bytes, more than the 1 MiB limit")]
    FieldTooLarge {
        /// The field.
        field: &'static str,
        /// Its declared length.
        len: usize,
    },
    /// The PCK certificate chain in the certification data is not canonical PEM certificates.
    #[error(
        "the PCK certificate chain in the quote is not a sequence of canonical PEM certificates"
    )]
    InvalidPckChain,
    /// Bytes are left over where a structure should end.
    #[error("{count} unexpected bytes at offset {offset} after the {structure}")]
    TrailingBytes {
        /// The structure that should have ended.
        structure: &'static str,
        /// Offset of the first unexpected byte.
        offset: usize,
        /// How many bytes are left over.
        count: usize,
    },
    /// The quote ends inside a field.
    #[error("truncated: {field} at offset {offset} needs {needed} bytes, {available} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Its offset.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that remain.
        available: usize,
    },
    /// The QE vendor is not Intel.
    #[error("unknown QE vendor id {}", hex::encode(.0))]
    UnknownQeVendor([u8; 16]),
    /// An attestation key type other than ECDSA P-256.
    #[error("unsupported attestation key type {0} (only 2, ECDSA-256-with-P-256, is supported)")]
    UnsupportedAttestationKeyType(u16),
    /// A v5 body type other than 2, 3 or 4.
    #[error("unsupported quote v5 body type {0} (2, 3 and 4 are supported)")]
    UnsupportedBodyType(u16),
    /// A certification data type this format does not allow.
    #[error("unsupported certification data type {found} (allowed: {allowed})")]
    UnsupportedCertificationDataType {
        /// The type found.
        found: u16,
        /// What is allowed here.
        allowed: &'static str,
    },
    /// A TEE type other than SGX (0) or TDX (0x81).
    #[error("unsupported TEE type {0:#x}")]
    UnsupportedTeeType(u32),
    /// A quote version other than 3, 4 or 5.
    #[error("unsupported quote version {0} (3, 4 and 5 are supported)")]
    UnsupportedVersion(u16),
    /// A version that does not go with the TEE type (SGX quotes are v3; TDX quotes v4 or v5).
    #[error("quote version {version} is not supported for {tee} (SGX: 3; TDX: 4 or 5)")]
    UnsupportedVersionForTee {
        /// The version.
        version: u16,
        /// The TEE type.
        tee: TeeType,
    },
}

impl QuoteError {
    /// The stable reason code: `unsupported-quote-format` for well-formed quotes of a kind this
    /// verifier does not accept, `malformed-quote` for broken ones.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownQeVendor(_)
            | Self::UnsupportedAttestationKeyType(_)
            | Self::UnsupportedBodyType(_)
            | Self::UnsupportedCertificationDataType { .. }
            | Self::UnsupportedTeeType(_)
            | Self::UnsupportedVersion(_)
            | Self::UnsupportedVersionForTee { .. } => "unsupported-quote-format",
            Self::BodySizeMismatch { .. }
            | Self::FieldTooLarge { .. }
            | Self::InvalidPckChain
            | Self::TrailingBytes { .. }
            | Self::Truncated { .. } => "malformed-quote",
        }
    }
}

#[cfg(test)]
mod tests;
