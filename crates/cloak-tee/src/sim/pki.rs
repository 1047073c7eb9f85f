//! The simulation PKI: a root CA whose names say SIMULATED, a PCK Processor CA, a PCK leaf with a
//! real Intel SGX extension, a TCB signing certificate, and CRLs — shaped like Intel's, so that
//! the same verifier code checks them, but never with Intel's names.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;

use super::SimError;

/// Subject names. Every one says SIMULATED; none is Intel's.
pub(super) const ROOT_CN: &str = "Cloak SIMULATED SGX Root CA";
pub(super) const PCK_CA_CN: &str = "Cloak SIMULATED SGX PCK Processor CA";
pub(super) const PCK_CN: &str = "Cloak SIMULATED SGX PCK Certificate";
pub(super) const TCB_SIGNING_CN: &str = "Cloak SIMULATED SGX TCB Signing";
const ORGANIZATION: &str = "Cloak SIMULATED platform, not for production";

/// The Intel SGX extension OID, 1.2.840.113741.1.13.1, and its sub-OIDs.
const SGX_EXTENSION: [u64; 7] = [1, 2, 840, 113_741, 1, 13, 1];

/// What the PCK certificate's SGX extension says about the platform.
pub(super) struct PckFacts<'a> {
    pub(super) ppid: &'a [u8; 16],
    pub(super) cpu_svn: &'a [u8; 16],
    pub(super) pce_svn: u16,
    pub(super) pce_id: &'a [u8; 2],
    pub(super) fmspc: &'a [u8; 6],
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn
}

fn ca_params(cn: &str, serial: &[u8], path_len: Option<u8>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.is_ca = IsCa::Ca(match path_len {
        Some(len) => BasicConstraints::Constrained(len),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.use_authority_key_identifier_extension = true;
    params
}

fn leaf_params(cn: &str, serial: &[u8]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::ContentCommitment,
    ];
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.use_authority_key_identifier_extension = true;
    params
}

/// The root's parameters (deterministic, so that the root can sign CRLs later).
pub(super) fn root_params(serial: &[u8]) -> CertificateParams {
    ca_params(ROOT_CN, serial, Some(1))
}

/// The PCK CA's parameters.
pub(super) fn pck_ca_params(serial: &[u8]) -> CertificateParams {
    ca_params(PCK_CA_CN, serial, Some(0))
}

/// A self-signed root certificate, DER.
pub(super) fn root_certificate(key: &KeyPair, serial: &[u8]) -> Result<Vec<u8>, SimError> {
    Ok(root_params(serial).self_signed(key)?.der().to_vec())
}

/// A certificate for `params`' subject with `key`, signed by `issuer`.
pub(super) fn issue(
    params: &CertificateParams,
    key: &KeyPair,
    issuer: &Issuer<'_, &KeyPair>,
) -> Result<Vec<u8>, SimError> {
    Ok(params.signed_by(key, issuer)?.der().to_vec())
}

/// The PCK CA, signed by the root.
pub(super) fn pck_ca_certificate(
    key: &KeyPair,
    serial: &[u8],
    root: &Issuer<'_, &KeyPair>,
) -> Result<Vec<u8>, SimError> {
    issue(&pck_ca_params(serial), key, root)
}

/// The TCB signing certificate, signed by the root.
pub(super) fn tcb_signing_certificate(
    key: &KeyPair,
    serial: &[u8],
    root: &Issuer<'_, &KeyPair>,
) -> Result<Vec<u8>, SimError> {
    issue(&leaf_params(TCB_SIGNING_CN, serial), key, root)
}

/// The PCK leaf with its SGX extension, signed by the PCK CA.
pub(super) fn pck_certificate(
    key: &KeyPair,
    serial: &[u8],
    facts: &PckFacts<'_>,
    pck_ca: &Issuer<'_, &KeyPair>,
) -> Result<Vec<u8>, SimError> {
    let mut params = leaf_params(PCK_CN, serial);
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &SGX_EXTENSION,
            sgx_extension(facts),
        ));
    issue(&params, key, pck_ca)
}

/// The Intel SGX extension (OID 1.2.840.113741.1.13.1), laid out as in Intel's PCK certificates:
/// PPID, TCB (16 component SVNs, PCESVN, CPUSVN), PCE-ID, FMSPC, SGX type.
pub(super) fn sgx_extension(facts: &PckFacts<'_>) -> Vec<u8> {
    let oid = |tail: &[u64]| {
        let mut components = SGX_EXTENSION.to_vec();
        components.extend_from_slice(tail);
        yasna::models::ObjectIdentifier::from_slice(&components)
    };
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(&[1]));
                w.next().write_bytes(facts.ppid);
            });
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(&[2]));
                w.next().write_sequence(|w| {
                    for (i, svn) in (1u64..).zip(facts.cpu_svn) {
                        w.next().write_sequence(|w| {
                            w.next().write_oid(&oid(&[2, i]));
                            w.next().write_u8(*svn);
                        });
                    }
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&oid(&[2, 17]));
                        w.next().write_u16(facts.pce_svn);
                    });
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&oid(&[2, 18]));
                        w.next().write_bytes(facts.cpu_svn);
                    });
                });
            });
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(&[3]));
                w.next().write_bytes(facts.pce_id);
            });
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(&[4]));
                w.next().write_bytes(facts.fmspc);
            });
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(&[5]));
                w.next().write_enum(0);
            });
        });
    })
}

/// A CRL signed by `issuer`, valid from `this_update` to `next_update` (Unix seconds), revoking
/// `revoked` serials.
pub(super) fn crl(
    issuer: &Issuer<'_, &KeyPair>,
    this_update: u64,
    next_update: u64,
    revoked: &[&[u8]],
) -> Result<Vec<u8>, SimError> {
    let this = timestamp(this_update)?;
    let params = CertificateRevocationListParams {
        this_update: this,
        next_update: timestamp(next_update)?,
        crl_number: SerialNumber::from(this_update),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: this,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(issuer)?.der().to_vec())
}

fn timestamp(unix: u64) -> Result<OffsetDateTime, SimError> {
    i64::try_from(unix)
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .ok_or_else(|| SimError::State(format!("time {unix} out of range")))
}

/// PEM text of a DER certificate: 64-character lines, LF endings (canonical, as in Intel's quotes).
pub(super) fn pem(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), config)
}
