//! Simulated PCS collateral: TCB info and QE identity JSON signed like Intel's (ECDSA P-256 over
//! the exact JSON bytes, raw r‖s), CRLs, and the issuer chains, in dcap-qvl `QuoteCollateralV3`
//! JSON — fresh each time it is asked for, as a PCS serves it.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::{SimError, SimState, TcbStatusName};

/// Collateral is valid from a minute before it is made until this long after.
pub const COLLATERAL_LIFETIME: u64 = 30 * 24 * 3600;
const TCB_DATE: &str = "2025-01-01T00:00:00Z";
/// The TCB evaluation data number of simulated TCB info.
pub const TCB_EVALUATION_DATA_NUMBER: u32 = 1;

/// Intel's TCB info formats: version 3 (served since 2022) and version 2 (2019–2022 collateral,
/// which Open Enclave endorsements of that time hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TcbInfoVersion {
    /// Components as `sgxtcbcomponents: [{svn}, ...]`, with `id`.
    V3,
    /// Components as `sgxtcbcomp01svn` ... `sgxtcbcomp16svn`, without `id`.
    V2,
}

/// TCB info JSON for the platform: levels arranged so that the platform's SVNs match a level
/// with the configured status (with one `UpToDate` level above it when that status is not
/// `UpToDate`), and an `OutOfDate` level below.
pub(super) fn tcb_info(state: &SimState, issue: u64, next: u64, version: TcbInfoVersion) -> String {
    let level = |components: &[u8; 16], pcesvn: u16, status: &str, advisories: &[String]| {
        let tcb = match version {
            TcbInfoVersion::V3 => json!({
                "sgxtcbcomponents": components.iter().map(|svn| json!({ "svn": svn })).collect::<Vec<_>>(),
                "pcesvn": pcesvn,
            }),
            TcbInfoVersion::V2 => {
                let mut tcb = serde_json::Map::new();
                for (i, svn) in (1..).zip(components) {
                    tcb.insert(format!("sgxtcbcomp{i:02}svn"), json!(svn));
                }
                tcb.insert("pcesvn".to_owned(), json!(pcesvn));
                serde_json::Value::Object(tcb)
            }
        };
        let mut value = json!({
            "tcb": tcb,
            "tcbDate": TCB_DATE,
            "tcbStatus": status,
        });
        if let Some(object) = value.as_object_mut().filter(|_| !advisories.is_empty()) {
            object.insert("advisoryIDs".to_owned(), json!(advisories));
        }
        value
    };
    let platform = state.cpu_svn;
    let mut levels = Vec::new();
    if state.tcb_status != TcbStatusName::UpToDate {
        let mut newer = platform;
        if let Some(first) = newer.first_mut() {
            *first = first.saturating_add(1);
        }
        levels.push(level(&newer, state.pce_svn, "UpToDate", &[]));
    }
    levels.push(level(
        &platform,
        state.pce_svn,
        state.tcb_status.as_str(),
        &state.advisories,
    ));
    let older = platform.map(|svn| svn.saturating_sub(1));
    levels.push(level(
        &older,
        state.pce_svn.saturating_sub(1),
        "OutOfDate",
        &["SIM-SA-00001".to_owned()],
    ));
    let mut body = json!({
        "id": "SGX",
        "version": 3,
        "issueDate": rfc3339(issue),
        "nextUpdate": rfc3339(next),
        "fmspc": hex::encode_upper(state.fmspc),
        "pceId": hex::encode_upper(state.pce_id),
        "tcbType": 0,
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "tcbLevels": levels,
    });
    if version == TcbInfoVersion::V2
        && let Some(object) = body.as_object_mut()
    {
        object.remove("id");
        object.insert("version".to_owned(), json!(2));
    }
    body.to_string()
}

/// QE identity JSON for the simulated quoting enclave.
pub(super) fn qe_identity(state: &SimState, issue: u64, next: u64) -> String {
    json!({
        "id": "QE",
        "version": 2,
        "issueDate": rfc3339(issue),
        "nextUpdate": rfc3339(next),
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": hex::encode_upper(state.qe_mrsigner),
        "isvprodid": super::QE_ISV_PROD_ID,
        "tcbLevels": [
            { "tcb": { "isvsvn": super::QE_ISV_SVN }, "tcbDate": TCB_DATE, "tcbStatus": "UpToDate" }
        ],
    })
    .to_string()
}

/// The whole collateral document, valid from `now − 60 s` for [`COLLATERAL_LIFETIME`].
pub(super) fn document(
    platform: &super::SimPlatform,
    now: u64,
    version: TcbInfoVersion,
) -> Result<Vec<u8>, SimError> {
    let state = &platform.state;
    let issue = now.saturating_sub(60);
    let next = now.saturating_add(COLLATERAL_LIFETIME);
    let tcb_info = tcb_info(state, issue, next, version);
    let qe_identity = qe_identity(state, issue, next);
    let tcb_key = platform.keys.signer("tcb-signing")?;
    let tcb_info_signature = tcb_key.sign_raw(tcb_info.as_bytes())?;
    let qe_identity_signature = tcb_key.sign_raw(qe_identity.as_bytes())?;
    let root = platform.keys.rcgen("root")?;
    let pck_ca = platform.keys.rcgen("pck-ca")?;
    let root_issuer = rcgen::Issuer::new(super::pki::root_params(&state.root_serial), &root);
    let pck_ca_issuer =
        rcgen::Issuer::new(super::pki::pck_ca_params(&state.pck_ca_serial), &pck_ca);
    let root_crl = super::pki::crl(&root_issuer, issue, next, &[])?;
    let revoked: Vec<&[u8]> = if state.revoked {
        vec![state.pck_serial.as_slice()]
    } else {
        Vec::new()
    };
    let pck_crl = super::pki::crl(&pck_ca_issuer, issue, next, &revoked)?;
    let root_pem = super::pki::pem(&platform.certs.root);
    let tcb_chain = format!("{}{root_pem}", super::pki::pem(&platform.certs.tcb_signing));
    let document = json!({
        "pck_crl_issuer_chain": format!("{}{root_pem}", super::pki::pem(&platform.certs.pck_ca)),
        "root_ca_crl": hex::encode(root_crl),
        "pck_crl": hex::encode(pck_crl),
        "tcb_info_issuer_chain": tcb_chain,
        "tcb_info": tcb_info,
        "tcb_info_signature": hex::encode(tcb_info_signature),
        "qe_identity_issuer_chain": tcb_chain,
        "qe_identity": qe_identity,
        "qe_identity_signature": hex::encode(qe_identity_signature),
    });
    serde_json::to_vec_pretty(&document).map_err(|e| SimError::State(e.to_string()))
}

fn rfc3339(unix: u64) -> String {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(unix))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}
