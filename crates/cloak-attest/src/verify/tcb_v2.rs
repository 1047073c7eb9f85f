//! SGX quotes whose collateral carries Intel's TCB info **version 2** (2019–2022 collateral, as
//! Open Enclave endorsements of that time hold), which dcap-qvl 0.7.1 cannot decode: it reads
//! only version 3, whose levels list components as `sgxtcbcomponents: [{svn}, …]` where
//! version 2 names them `sgxtcbcomp01svn` … `sgxtcbcomp16svn`.
//!
//! The conversion is the one Intel's specification implies (PCS API v3 serves version 2, v4
//! serves version 3 with the same levels): component *n* of a version 2 level is
//! `sgxtcbcomponents[n-1].svn` of version 3, `pcesvn`, `tcbDate`, `tcbStatus` and
//! `advisoryIDs` carry over unchanged, and version 2 describes SGX only (it has no `id`, which
//! version 3 sets to `SGX`, and no TDX components). The signature is checked over the version 2
//! text as Intel signed it, never over a conversion.
//!
//! dcap-qvl's verifier checks the TCB info signature first and cannot be given a converted
//! object, so this path runs the whole SGX verification itself, from the same parts: the
//! webpki fork dcap-qvl uses for certificate paths and CRLs, dcap-qvl's PCK-extension reader,
//! QE identity and TCB level types (and its level-matching rule), and the steps in the order
//! and with the checks of dcap-qvl's `verify_impl`. A differential test runs this path on every
//! SGX vector and mutation the dcap-qvl path is tested with (version 3 collateral, read by the
//! same conversion's version 3 branch) and requires the same verdict, status and reason.

use std::time::Duration;

use dcap_qvl::{
    QeIdentity, Tcb, TcbComponents, TcbInfo, TcbLevel, TcbStatus as QvlStatus,
    TcbStatusWithAdvisory,
};
use dcap_webpki as webpki;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use serde::Deserialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::classify::from_webpki;
use super::{TcbStatus, VerifyError};
use crate::collateral::Collateral;
use crate::quote::{Quote, ReportBody};

/// Intel's PKI signs with ECDSA P-256 and SHA-256 throughout; no other algorithm is accepted.
const ALG: &dyn SignatureVerificationAlgorithm = webpki::ring::ECDSA_P256_SHA256;
/// A DCAP chain has at most a CA and the root above its leaf (as dcap-qvl bounds it).
const MAX_INTERMEDIATES: usize = 4;
/// The QE authentication data Intel's QE hashes into its report data.
const QE_AUTH_DATA_LEN: usize = 32;

/// What the TCB appraisal found, for [`super::VerifiedQuote`].
pub(super) struct Appraisal {
    pub(super) tcb_status: TcbStatus,
    pub(super) platform_tcb_status: TcbStatus,
    pub(super) qe_tcb_status: TcbStatus,
    pub(super) advisory_ids: Vec<String>,
}

/// Verifies an SGX quote with collateral whose TCB info is version 2 (or, for the differential
/// test, version 3), chained to `anchor_der`, at `now`. The caller has parsed the quote and
/// checked the collateral's time window and the chains' roots.
pub(super) fn verify(
    anchor_der: &[u8],
    quote: &[u8],
    parsed: &Quote,
    collateral: &Collateral,
    now: u64,
) -> Result<Appraisal, VerifyError> {
    let ReportBody::Sgx(_) = parsed.body() else {
        return Err(VerifyError::CollateralMismatch(format!(
            "{} quote with SGX-only TCB info version 2",
            parsed.tee().as_str()
        )));
    };
    let raw = &collateral.raw;
    let anchor_cert = CertificateDer::from(anchor_der);
    let anchor = webpki::anchor_from_trusted_cert(&anchor_cert)
        .map_err(|e| VerifyError::UntrustedRoot(format!("the trust anchor: {e}")))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now));

    // The Root CA's CRL is verified here, under the anchor's key; the PCK CRL when a PCK
    // certificate's revocation is checked, under its issuer's.
    let root_crl = webpki::OwnedCertRevocationList::from_der_verified(
        &raw.root_ca_crl,
        anchor.subject_public_key_info.as_ref(),
        &[ALG],
    )
    .map_err(|e| webpki_error(&e, "the Root CA CRL"))?;
    let pck_crl = webpki::OwnedCertRevocationList::from_der(&raw.pck_crl)
        .map_err(|e| webpki_error(&e, "the PCK CRL"))?;
    let crls = [
        webpki::CertRevocationList::from(root_crl),
        webpki::CertRevocationList::from(pck_crl),
    ];
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
    webpki::check_single_cert_revocation(anchor_der, &crl_refs, &[ALG], time)
        .map_err(|e| webpki_error(&e, "the Root CA"))?;
    let pki = Pki {
        anchor,
        crls: &crl_refs,
        time,
    };

    // Step 1: the TCB info, signed by a certificate the root issued.
    // The chains were parsed once, when the collateral was read.
    let chain = |name: &str| {
        collateral
            .chain(name)
            .ok_or_else(|| VerifyError::MalformedCollateral(format!("no {name}")))
    };
    let tcb_chain = chain("tcb_info_issuer_chain")?;
    let tcb_signer = pki.signer("TCB info", tcb_chain)?;
    verify_fixed(
        &tcb_signer,
        raw.tcb_info.as_bytes(),
        &raw.tcb_info_signature,
        "the TCB info",
    )?;
    let tcb_info = tcb_info(&raw.tcb_info)?;

    // Step 2: the QE identity, by the same certificate or another the root issued.
    let qe_chain = chain("qe_identity_issuer_chain")?;
    let qe_signer = if qe_chain == tcb_chain {
        tcb_signer
    } else {
        pki.signer("QE identity", qe_chain)?
    };
    verify_fixed(
        &qe_signer,
        raw.qe_identity.as_bytes(),
        &raw.qe_identity_signature,
        "the QE identity",
    )?;
    let qe_identity: QeIdentity = serde_json::from_str(&raw.qe_identity)
        .map_err(|e| VerifyError::MalformedCollateral(format!("the QE identity: {e}")))?;
    if qe_identity.id != "QE" || qe_identity.version != 2 {
        return Err(VerifyError::CollateralMismatch(format!(
            "QE identity {} version {} for an SGX quote (expected QE version 2)",
            qe_identity.id, qe_identity.version
        )));
    }

    // Step 3: the PCK certificate, from the collateral if it carries one, else the quote.
    let pck_chain = match collateral.chain("pck_certificate_chain") {
        Some(chain) => chain,
        None => parsed
            .signature()
            .certification
            .pck_chain()
            .ok_or_else(|| {
                VerifyError::PckChainMissing(format!(
                    "certification data type {}",
                    parsed.signature().certification.kind()
                ))
            })?,
    };
    let [pck_leaf, pck_rest @ ..] = pck_chain else {
        return Err(VerifyError::MalformedCollateral(
            "the PCK certificate chain is empty".into(),
        ));
    };
    pki.path(pck_leaf, pck_rest, "the PCK certificate")?;
    let pck = dcap_qvl::intel::parse_pck_extension(pck_leaf)
        .map_err(|e| VerifyError::MalformedCertificate(format!("the PCK certificate: {e:#}")))?;

    // Step 4: the QE report, signed by the PCK.
    let signature = parsed.signature();
    verify_fixed(
        &spki(pck_leaf, "the PCK certificate")?,
        &signature.qe_report_raw,
        &signature.qe_report_signature,
        "the QE report",
    )?;

    // Step 5: the QE report binds the attestation key (the caller checks the upper half).
    if signature.qe_auth_data.len() != QE_AUTH_DATA_LEN {
        return Err(VerifyError::QeReportDataMismatch(format!(
            "QE authentication data of {} bytes, not {QE_AUTH_DATA_LEN}",
            signature.qe_auth_data.len()
        )));
    }
    let bound = cloak_crypto::hash::sha256(
        &[
            signature.attestation_key.as_slice(),
            signature.qe_auth_data.as_slice(),
        ]
        .concat(),
    );
    if signature.qe_report.report_data.as_bytes().get(..32) != Some(bound.as_slice()) {
        return Err(VerifyError::QeReportDataMismatch(
            "the QE report data is not SHA-256(attestation key ‖ QE authentication data)".into(),
        ));
    }

    // Step 6: the QE is the one Intel's QE identity describes, at a TCB level it lists.
    let qe_level = appraise_qe(&signature.qe_report, &qe_identity)?;

    // Step 7: the attestation key signed the header and report body.
    let mut point = [0x04; 65];
    if let Some(xy) = point.get_mut(1..) {
        xy.copy_from_slice(&signature.attestation_key);
    }
    let signed = quote.get(..parsed.signed_len()).ok_or_else(|| {
        VerifyError::MalformedQuote("the signed part is longer than the quote".into())
    })?;
    verify_fixed(
        &point,
        signed,
        &signature.isv_signature,
        "the ISV enclave report",
    )?;

    // Step 8: the platform's TCB level.
    let platform_level = appraise_platform(&tcb_info, &pck)?;

    // Steps 9 and 10: platform and QE statuses converge as Intel's QVL converges them.
    let combined = TcbStatusWithAdvisory::new(
        platform_level.tcb_status,
        platform_level.advisory_ids.clone(),
    )
    .merge(&TcbStatusWithAdvisory::new(
        qe_level.tcb_status,
        qe_level.advisory_ids.clone(),
    ));
    if combined.status == QvlStatus::Revoked {
        return Err(VerifyError::Revoked("TCB status is Revoked".into()));
    }
    Ok(Appraisal {
        tcb_status: status(combined.status)?,
        platform_tcb_status: status(platform_level.tcb_status)?,
        qe_tcb_status: status(qe_level.tcb_status)?,
        advisory_ids: combined.advisory_ids,
    })
}

/// The anchor, the two CRLs and the time every certificate path is checked with.
struct Pki<'a> {
    anchor: TrustAnchor<'a>,
    crls: &'a [&'a webpki::CertRevocationList<'a>],
    time: UnixTime,
}

impl Pki<'_> {
    /// Verifies `leaf` up to the anchor through `rest`, with revocation checked along the whole
    /// chain (unknown status refused, expired CRLs refused). Returns how many intermediates the
    /// path took.
    fn path(&self, leaf: &[u8], rest: &[Vec<u8>], what: &str) -> Result<usize, VerifyError> {
        if rest.len() > MAX_INTERMEDIATES {
            return Err(VerifyError::MalformedCollateral(format!(
                "{what}: {} certificates above the leaf",
                rest.len()
            )));
        }
        let leaf_der = CertificateDer::from(leaf);
        let end_entity =
            webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| webpki_error(&e, what))?;
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|der| CertificateDer::from(der.as_slice()))
            .collect();
        let revocation = webpki::RevocationOptionsBuilder::new(self.crls)
            .map_err(|_| VerifyError::MalformedCollateral("no CRLs".into()))?
            .with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Deny)
            .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
            .build();
        let path = end_entity
            .verify_for_usage(
                &[ALG],
                std::slice::from_ref(&self.anchor),
                &intermediates,
                self.time,
                webpki::KeyUsage::server_auth(),
                Some(revocation),
                None,
            )
            .map_err(|e| webpki_error(&e, what))?;
        Ok(path.intermediate_certificates().count())
    }

    /// The SubjectPublicKeyInfo of the certificate that signs a collateral document: the first
    /// of `chain`, issued by the root itself.
    fn signer(&self, what: &str, chain: &[Vec<u8>]) -> Result<Vec<u8>, VerifyError> {
        let [leaf, rest @ ..] = chain else {
            return Err(VerifyError::MalformedCollateral(format!(
                "the {what} issuer chain is empty"
            )));
        };
        let what = format!("the {what} signing certificate");
        if self.path(leaf, rest, &what)? != 0 {
            return Err(VerifyError::UntrustedRoot(format!(
                "{what} must be issued directly by the root CA"
            )));
        }
        spki(leaf, &what)
    }
}

/// A version 2 TCB level (`tcb` names each component).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LevelV2 {
    tcb: TcbV2,
    tcb_date: String,
    tcb_status: QvlStatus,
    #[serde(rename = "advisoryIDs", default)]
    advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TcbV2 {
    sgxtcbcomp01svn: u8,
    sgxtcbcomp02svn: u8,
    sgxtcbcomp03svn: u8,
    sgxtcbcomp04svn: u8,
    sgxtcbcomp05svn: u8,
    sgxtcbcomp06svn: u8,
    sgxtcbcomp07svn: u8,
    sgxtcbcomp08svn: u8,
    sgxtcbcomp09svn: u8,
    sgxtcbcomp10svn: u8,
    sgxtcbcomp11svn: u8,
    sgxtcbcomp12svn: u8,
    sgxtcbcomp13svn: u8,
    sgxtcbcomp14svn: u8,
    sgxtcbcomp15svn: u8,
    sgxtcbcomp16svn: u8,
    pcesvn: u16,
}

/// Version 2 TCB info.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbInfoV2 {
    version: u8,
    issue_date: String,
    next_update: String,
    fmspc: String,
    pce_id: String,
    tcb_type: u32,
    tcb_evaluation_data_number: u32,
    tcb_levels: Vec<LevelV2>,
}

/// Reads TCB info text of version 2 (converted as the module documentation says) or 3.
fn tcb_info(text: &str) -> Result<TcbInfo, VerifyError> {
    let malformed =
        |e: serde_json::Error| VerifyError::MalformedCollateral(format!("TCB info: {e}"));
    #[derive(Deserialize)]
    struct Version {
        version: u8,
    }
    let Version { version } = serde_json::from_str(text).map_err(malformed)?;
    let info = match version {
        2 => {
            let v2: TcbInfoV2 = serde_json::from_str(text).map_err(malformed)?;
            TcbInfo {
                id: "SGX".to_owned(),
                version: v2.version,
                issue_date: v2.issue_date,
                next_update: v2.next_update,
                fmspc: v2.fmspc,
                pce_id: v2.pce_id,
                tcb_type: v2.tcb_type,
                tcb_evaluation_data_number: v2.tcb_evaluation_data_number,
                tcb_levels: v2.tcb_levels.into_iter().map(level_v3).collect(),
                tdx_module: None,
                tdx_module_identities: Vec::new(),
            }
        }
        3 => serde_json::from_str(text).map_err(malformed)?,
        other => {
            return Err(VerifyError::MalformedCollateral(format!(
                "TCB info version {other} (2 and 3 are known)"
            )));
        }
    };
    if info.id != "SGX" {
        return Err(VerifyError::CollateralMismatch(format!(
            "SGX quote with {} TCB info",
            info.id
        )));
    }
    // Version 2 defines TCB type 0 only: components compared one by one.
    if info.tcb_type != 0 {
        return Err(VerifyError::MalformedCollateral(format!(
            "TCB type {} (only 0 is defined)",
            info.tcb_type
        )));
    }
    Ok(info)
}

fn level_v3(level: LevelV2) -> TcbLevel {
    let t = level.tcb;
    let svns = [
        t.sgxtcbcomp01svn,
        t.sgxtcbcomp02svn,
        t.sgxtcbcomp03svn,
        t.sgxtcbcomp04svn,
        t.sgxtcbcomp05svn,
        t.sgxtcbcomp06svn,
        t.sgxtcbcomp07svn,
        t.sgxtcbcomp08svn,
        t.sgxtcbcomp09svn,
        t.sgxtcbcomp10svn,
        t.sgxtcbcomp11svn,
        t.sgxtcbcomp12svn,
        t.sgxtcbcomp13svn,
        t.sgxtcbcomp14svn,
        t.sgxtcbcomp15svn,
        t.sgxtcbcomp16svn,
    ];
    TcbLevel {
        tcb: Tcb {
            sgx_components: svns.into_iter().map(|svn| TcbComponents { svn }).collect(),
            tdx_components: Vec::new(),
            pce_svn: t.pcesvn,
        },
        tcb_date: level.tcb_date,
        tcb_status: level.tcb_status,
        advisory_ids: level.advisory_ids,
    }
}

/// The statuses Intel's QVL accepts in a TCB info level and in a QE identity level.
const PLATFORM_STATUSES: [QvlStatus; 7] = [
    QvlStatus::UpToDate,
    QvlStatus::OutOfDate,
    QvlStatus::ConfigurationNeeded,
    QvlStatus::Revoked,
    QvlStatus::OutOfDateConfigurationNeeded,
    QvlStatus::SWHardeningNeeded,
    QvlStatus::ConfigurationAndSWHardeningNeeded,
];
const QE_STATUSES: [QvlStatus; 5] = [
    QvlStatus::UpToDate,
    QvlStatus::OutOfDate,
    QvlStatus::ConfigurationNeeded,
    QvlStatus::Revoked,
    QvlStatus::OutOfDateConfigurationNeeded,
];

/// The platform's level: the FMSPC and PCE id must be the TCB info's, and the level is the
/// highest one (Intel's order: components, then PCE SVN, highest first) that every component
/// and the PCE SVN of the PCK certificate meet.
fn appraise_platform(
    info: &TcbInfo,
    pck: &dcap_qvl::intel::PckExtension,
) -> Result<TcbLevel, VerifyError> {
    if hex::decode(&info.fmspc).ok().as_deref() != Some(pck.fmspc.as_slice()) {
        return Err(VerifyError::CollateralMismatch(format!(
            "TCB info for FMSPC {}, the PCK certificate's is {}",
            info.fmspc,
            hex::encode_upper(pck.fmspc)
        )));
    }
    if hex::decode(&info.pce_id).ok().as_deref() != Some(pck.pce_id.as_slice()) {
        return Err(VerifyError::CollateralMismatch(format!(
            "TCB info for PCE id {}, the PCK certificate's is {}",
            info.pce_id,
            hex::encode_upper(&pck.pce_id)
        )));
    }
    let mut levels: Vec<&TcbLevel> = info.tcb_levels.iter().collect();
    levels.sort_by(|a, b| {
        b.tcb
            .sgx_components
            .cmp(&a.tcb.sgx_components)
            .then(b.tcb.pce_svn.cmp(&a.tcb.pce_svn))
    });
    for level in levels {
        let shortfalls = level
            .shortfalls(&pck.cpu_svn, pck.pce_svn, None)
            .map_err(|e| VerifyError::MalformedCollateral(format!("TCB info: {e:#}")))?;
        if shortfalls.is_empty() {
            if !PLATFORM_STATUSES.contains(&level.tcb_status) {
                return Err(VerifyError::MalformedCollateral(format!(
                    "TCB status {} in a TCB info level",
                    level.tcb_status
                )));
            }
            return Ok(level.clone());
        }
    }
    Err(VerifyError::TcbNotSupported(
        "no TCB level in the TCB info matches the platform".into(),
    ))
}

/// The QE against its identity: signer, product, MISCSELECT and ATTRIBUTES under their masks, not
/// in debug mode, and the first level whose ISVSVN the QE meets.
fn appraise_qe(
    qe: &crate::quote::EnclaveReport,
    identity: &QeIdentity,
) -> Result<dcap_qvl::QeTcbLevel, VerifyError> {
    let mismatch = |what: &str| Err(VerifyError::QeIdentityMismatch(what.to_owned()));
    if qe.mr_signer.as_bytes() != &identity.mrsigner {
        return mismatch("QE MRSIGNER");
    }
    if qe.isv_prod_id != identity.isvprodid {
        return mismatch("QE ISVPRODID");
    }
    let mask = u32::from_le_bytes(identity.miscselect_mask);
    if qe.misc_select & mask != u32::from_le_bytes(identity.miscselect) & mask {
        return mismatch("QE MISCSELECT");
    }
    // ATTRIBUTES as the report lays them out: FLAGS then XFRM, little-endian.
    let differs = qe
        .attribute_flags
        .to_le_bytes()
        .iter()
        .chain(&qe.attribute_xfrm.to_le_bytes())
        .zip(&identity.attributes)
        .zip(&identity.attributes_mask)
        .any(|((have, want), mask)| have & mask != want & mask);
    if differs {
        return mismatch("QE ATTRIBUTES");
    }
    if qe.is_debug() {
        return mismatch("the QE runs in debug mode");
    }
    // The first level, in the identity's order (highest first, as Intel publishes it), that the
    // QE meets: dcap-qvl's rule, kept identical so both cores judge alike.
    let level = identity
        .tcb_levels
        .iter()
        .find(|level| qe.isv_svn >= level.tcb.isvsvn)
        .ok_or_else(|| {
            VerifyError::TcbNotSupported(format!(
                "QE ISVSVN {} is below every level of the QE identity",
                qe.isv_svn
            ))
        })?;
    if !QE_STATUSES.contains(&level.tcb_status) {
        return Err(VerifyError::MalformedCollateral(format!(
            "TCB status {} in a QE identity level",
            level.tcb_status
        )));
    }
    Ok(level.clone())
}

fn status(status: QvlStatus) -> Result<TcbStatus, VerifyError> {
    status
        .to_string()
        .parse()
        .map_err(|e: super::UnknownTcbStatus| VerifyError::MalformedCollateral(e.to_string()))
}

fn spki(der: &[u8], what: &str) -> Result<Vec<u8>, VerifyError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert.tbs_certificate.subject_pki.raw.to_vec())
        .map_err(|e| VerifyError::MalformedCertificate(format!("{what}: {e}")))
}

fn verify_fixed(
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
    what: &str,
) -> Result<(), VerifyError> {
    cloak_crypto::sig::verify_fixed(public_key, message, signature)
        .map_err(|_| VerifyError::SignatureInvalid(format!("the signature over {what}")))
}

fn webpki_error(error: &webpki::Error, what: &str) -> VerifyError {
    from_webpki(error, format!("{what}: {error}"))
}
