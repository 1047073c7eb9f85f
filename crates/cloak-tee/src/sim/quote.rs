//! Simulated DCAP v3 quotes, byte-compatible with hardware quotes: header, ISV enclave report
//! body signed by the attestation key, QE report binding the attestation key and QE
//! authentication data (signed by the PCK key), and certification data type 5 with the PEM PCK
//! chain (leaf, CA, root; NUL-terminated, as Intel's quoting library writes it).

use super::{QE_ISV_PROD_ID, QE_ISV_SVN, SimError, SimPlatform};
use crate::Identity;

const VERSION: u16 = 3;
const ATTESTATION_KEY_ECDSA_P256: u16 = 2;
const TEE_TYPE_SGX: u32 = 0;
const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9A, 0x72, 0x33, 0xF7, 0x9C, 0x4C, 0xA9, 0x94, 0x0A, 0x0D, 0xB3, 0x95, 0x7F, 0x06, 0x07,
];
const CERT_DATA_PCK_CHAIN: u16 = 5;
/// ATTRIBUTES.FLAGS: INIT | MODE64BIT, plus DEBUG (0x02) for debug enclaves.
const FLAGS_PRODUCTION: u64 = 0x05;
const FLAG_DEBUG: u64 = 0x02;
/// The quoting enclave's flags: INIT | MODE64BIT | PROVISIONKEY.
const FLAGS_QE: u64 = 0x15;
const XFRM: u64 = 0xE7;

/// Fields of an enclave report body.
struct ReportBody<'a> {
    cpu_svn: &'a [u8; 16],
    flags: u64,
    mrenclave: &'a [u8; 32],
    mrsigner: &'a [u8; 32],
    isv_prod_id: u16,
    isv_svn: u16,
    report_data: &'a [u8; 64],
}

impl ReportBody<'_> {
    /// The 384-byte SGX report body layout.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.cpu_svn);
        out.extend_from_slice(&0u32.to_le_bytes()); // MISCSELECT
        out.extend_from_slice(&[0; 12]); // CET attributes, reserved
        out.extend_from_slice(&[0; 16]); // ISVEXTPRODID
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&XFRM.to_le_bytes());
        out.extend_from_slice(self.mrenclave);
        out.extend_from_slice(&[0; 32]);
        out.extend_from_slice(self.mrsigner);
        out.extend_from_slice(&[0; 32]);
        out.extend_from_slice(&[0; 64]); // CONFIGID
        out.extend_from_slice(&self.isv_prod_id.to_le_bytes());
        out.extend_from_slice(&self.isv_svn.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // CONFIGSVN
        out.extend_from_slice(&[0; 42]);
        out.extend_from_slice(&[0; 16]); // ISVFAMILYID
        out.extend_from_slice(self.report_data);
    }
}

/// A quote for `enclave` carrying `report_data`.
pub(super) fn quote(
    platform: &SimPlatform,
    enclave: &Identity,
    report_data: &[u8; 64],
) -> Result<Vec<u8>, SimError> {
    let state = &platform.state;
    let mut quote = Vec::with_capacity(8192);
    quote.extend_from_slice(&VERSION.to_le_bytes());
    quote.extend_from_slice(&ATTESTATION_KEY_ECDSA_P256.to_le_bytes());
    quote.extend_from_slice(&TEE_TYPE_SGX.to_le_bytes());
    quote.extend_from_slice(&QE_ISV_SVN.to_le_bytes());
    quote.extend_from_slice(&state.pce_svn.to_le_bytes());
    quote.extend_from_slice(&INTEL_QE_VENDOR_ID);
    quote.extend_from_slice(&state.qe_id);
    quote.extend_from_slice(&[0; 4]);
    let flags = if enclave.debug {
        FLAGS_PRODUCTION | FLAG_DEBUG
    } else {
        FLAGS_PRODUCTION
    };
    ReportBody {
        cpu_svn: &state.cpu_svn,
        flags,
        mrenclave: &enclave.mrenclave,
        mrsigner: &enclave.mrsigner,
        isv_prod_id: enclave.isv_prod_id,
        isv_svn: enclave.isv_svn,
        report_data,
    }
    .encode(&mut quote);

    let attestation = platform.keys.signer("attestation")?;
    let isv_signature = attestation.sign_raw(&quote)?;
    let attestation_key = attestation.public_raw();
    let qe_auth_data: Vec<u8> = (0u8..32).collect();
    let mut binding = attestation_key.to_vec();
    binding.extend_from_slice(&qe_auth_data);
    let mut qe_report_data = [0u8; 64];
    if let Some(head) = qe_report_data.get_mut(..32) {
        head.copy_from_slice(&cloak_crypto::hash::sha256(&binding));
    }
    let mut qe_report = Vec::with_capacity(384);
    ReportBody {
        cpu_svn: &state.cpu_svn,
        flags: FLAGS_QE,
        mrenclave: &state.qe_mrenclave,
        mrsigner: &state.qe_mrsigner,
        isv_prod_id: QE_ISV_PROD_ID,
        isv_svn: QE_ISV_SVN,
        report_data: &qe_report_data,
    }
    .encode(&mut qe_report);
    let qe_report_signature = platform.keys.signer("pck")?.sign_raw(&qe_report)?;

    let mut chain = String::new();
    for der in [
        &platform.certs.pck,
        &platform.certs.pck_ca,
        &platform.certs.root,
    ] {
        chain.push_str(&super::pki::pem(der));
    }
    let mut cert_data = chain.into_bytes();
    cert_data.push(0);

    let mut signature = Vec::with_capacity(cert_data.len().saturating_add(1024));
    signature.extend_from_slice(&isv_signature);
    signature.extend_from_slice(&attestation_key);
    signature.extend_from_slice(&qe_report);
    signature.extend_from_slice(&qe_report_signature);
    signature.extend_from_slice(&len16(qe_auth_data.len())?.to_le_bytes());
    signature.extend_from_slice(&qe_auth_data);
    signature.extend_from_slice(&CERT_DATA_PCK_CHAIN.to_le_bytes());
    signature.extend_from_slice(&len32(cert_data.len())?.to_le_bytes());
    signature.extend_from_slice(&cert_data);

    quote.extend_from_slice(&len32(signature.len())?.to_le_bytes());
    quote.extend_from_slice(&signature);
    Ok(quote)
}

fn len16(len: usize) -> Result<u16, SimError> {
    u16::try_from(len).map_err(|_| SimError::State("field too long".to_owned()))
}

fn len32(len: usize) -> Result<u32, SimError> {
    u32::try_from(len).map_err(|_| SimError::State("field too long".to_owned()))
}
