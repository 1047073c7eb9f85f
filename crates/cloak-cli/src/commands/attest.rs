//! `cloak attest`: verify DCAP quotes and Open Enclave evidence against collateral and a policy;
//! read quotes and RA-TLS certificates.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use cloak_attest::collateral::Collateral;
use cloak_attest::endorsements::Endorsements;
use cloak_attest::evidence::{Evidence, EvidenceFormat};
use cloak_attest::maa::{self, Jwks};
use cloak_attest::policy::AppraisalPolicy;
use cloak_attest::ratls::{Binding, RaTlsCertificate, SelfSignature};
use cloak_attest::types::ReportData;
use cloak_attest::verify::{TrustAnchor, VerifiedQuote, Verifier};
use cloak_client::VerifiedServer;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Reported;
use crate::args::{PolicyArgs, ServerArgs, TokenPolicyArgs, hex_arg, read_policy_file};
use crate::failure::{EXIT_VERIFICATION, Failure};
use crate::{files, report};

/// Largest quote or collateral file read (real ones are a few KiB to a few tens of KiB).
const MAX_INPUT: u64 = 4 * 1024 * 1024;

/// `cloak attest …`
#[derive(Debug, Subcommand)]
pub(crate) enum AttestCommand {
    /// Verify a DCAP quote (SGX v3, TDX v4/v5) or Open Enclave evidence with its collateral and
    /// appraise it against a policy; exit 0 accepted, 1 rejected, 2 bad usage or unreadable
    /// input
    Verify(Box<VerifyArgs>),
    /// Verify an Azure Attestation (MAA) token offline against a pinned JWKS and appraise its
    /// SGX claims against a policy; exit 0 accepted, 1 rejected, 2 bad usage or unreadable
    /// input
    VerifyToken(Box<VerifyTokenArgs>),
    /// Read a quote or Open Enclave evidence without verifying it: format, TEE, identity,
    /// attributes, FMSPC, report data; exit 0 readable, 1 not evidence this verifier reads, 2
    /// unreadable file
    InspectQuote(InspectQuoteArgs),
    /// Show the attestation evidence in an RA-TLS certificate (Gramine, Intel SGX SDK, rats-tls,
    /// Open Enclave, Azure Attestation signing certificates) and whether it binds the key; exit
    /// 0 if every evidence extension binds and the self-signature is not invalid, 1 if not, 2 if
    /// unreadable
    InspectCert(InspectCertArgs),
    /// Appraise a running Cloak server: its attested TLS certificate and a fresh attestation
    /// for a nonce; exit 0 accepted, 1 rejected, 2 unreachable or bad usage
    Server(Box<ServerAttestArgs>),
}

/// Arguments of `cloak attest verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The evidence: a DCAP quote, Open Enclave SGX evidence (with or without its attestation
    /// header, custom claims after the quote) or an OE remote report; binary, or hex text (with
    /// or without 0x)
    #[arg(long, value_name = "FILE")]
    quote: PathBuf,
    #[command(flatten)]
    format: FormatArg,
    /// The collateral, as dcap-qvl QuoteCollateralV3 JSON
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "endorsements",
        conflicts_with = "endorsements"
    )]
    collateral: Option<PathBuf>,
    /// The collateral as Open Enclave serialized endorsements (oe_endorsements_t), instead of
    /// --collateral; OE itself judges them at their creation time, which --json reports as
    /// endorsements_created_at (pass it to --at to do the same)
    #[arg(long, value_name = "FILE")]
    endorsements: Option<PathBuf>,
    /// Verify as of this time (Unix seconds) [default: now]
    #[arg(long, value_name = "UNIX_SECONDS")]
    at: Option<u64>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Require exactly this 64-byte report data (replaces the policy file's)
    #[arg(long, value_name = "HEX")]
    expect_report_data: Option<String>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

/// Arguments of `cloak attest server`.
#[derive(Debug, Args)]
pub(crate) struct ServerAttestArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The nonce for the fresh attestation (hex, 1 to 64 bytes) [default: 32 random bytes]
    #[arg(long, value_name = "HEX")]
    nonce: Option<String>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

/// `--format`: what an evidence file is.
#[derive(Debug, Args)]
pub(crate) struct FormatArg {
    /// What the evidence file is [default: detected from its first bytes]
    #[arg(long, value_name = "FORMAT", value_parser = ["dcap-quote", "oe-report", "oe-evidence"])]
    format: Option<String>,
}

impl FormatArg {
    /// Unwraps `bytes` as the named format, or the detected one.
    fn unwrap<'a>(
        &self,
        bytes: &'a [u8],
    ) -> Result<Evidence<'a>, cloak_attest::evidence::EvidenceError> {
        match self.format.as_deref().and_then(EvidenceFormat::from_name) {
            Some(format) => Evidence::parse_as(bytes, format),
            None => Evidence::parse(bytes),
        }
    }
}

/// Arguments of `cloak attest verify-token`.
#[derive(Debug, Args)]
pub(crate) struct VerifyTokenArgs {
    /// The token (compact JWS text)
    token: PathBuf,
    /// The attestation instance's signing keys, as its `/certs` endpoint returns them (JWKS with
    /// x5c certificates), pinned: nothing is fetched
    #[arg(long, value_name = "FILE")]
    jwks: PathBuf,
    /// Require this issuer (`iss`), e.g. `https://myinstance.weu.attest.azure.net`
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// Verify as of this time (Unix seconds) [default: now]
    #[arg(long, value_name = "UNIX_SECONDS")]
    at: Option<u64>,
    #[command(flatten)]
    policy: TokenPolicyArgs,
    /// Require exactly this 64-byte report data (x-ms-sgx-report-data)
    #[arg(long, value_name = "HEX")]
    expect_report_data: Option<String>,
    /// Require the enclave-held (runtime) data to be this file's bytes: equal to x-ms-sgx-ehd
    /// when the token carries it, and hashing (SHA-256) to the first half of the report data
    #[arg(long, value_name = "FILE")]
    expect_ehd: Option<PathBuf>,
    /// Also appraise the attestation service's own enclave: the quote in the signing key's
    /// certificate, with --signer-collateral or --signer-endorsements, under this policy (TOML)
    #[arg(long, value_name = "FILE.toml", help_heading = "Signer")]
    verify_signer: Option<PathBuf>,
    /// Collateral for the signer's quote (QuoteCollateralV3 JSON)
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Signer",
        conflicts_with = "signer_endorsements"
    )]
    signer_collateral: Option<PathBuf>,
    /// Collateral for the signer's quote, as Open Enclave endorsements
    #[arg(long, value_name = "FILE", help_heading = "Signer")]
    signer_endorsements: Option<PathBuf>,
    /// Appraise the signer's quote as of this time [default: --at]
    #[arg(long, value_name = "UNIX_SECONDS", help_heading = "Signer")]
    signer_at: Option<u64>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

/// Arguments of `cloak attest inspect-quote`.
#[derive(Debug, Args)]
pub(crate) struct InspectQuoteArgs {
    /// The quote or evidence: binary, or hex text (with or without 0x)
    quote: PathBuf,
    #[command(flatten)]
    format: FormatArg,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

/// Arguments of `cloak attest inspect-cert`.
#[derive(Debug, Args)]
pub(crate) struct InspectCertArgs {
    /// The certificate (PEM or DER)
    cert: PathBuf,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Runs a `cloak attest` command.
pub(crate) fn run(command: AttestCommand) -> Result<(), Reported> {
    match command {
        AttestCommand::Verify(args) => verify(&args),
        AttestCommand::InspectQuote(args) => inspect_quote(&args),
        AttestCommand::VerifyToken(args) => verify_token(&args),
        AttestCommand::InspectCert(args) => inspect_cert(&args),
        AttestCommand::Server(args) => server(&args),
    }
}

/// The verdict of `cloak attest verify`, as printed with `--json`.
#[derive(Serialize)]
struct Verdict {
    verdict: &'static str,
    /// Whether the quote's signatures verified, so that the fields below are authentic.
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// The evidence format (`dcap-quote`, `oe-report`, `oe-evidence`), once unwrapped.
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tee: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quote_version: Option<u16>,
    /// Open Enclave custom claims, and whether the report data binds them.
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_claims: Option<Value>,
    /// The creation time of Open Enclave endorsements (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    endorsements_created_at: Option<u64>,
    trust_root: String,
    /// Whether the trust root is a simulation root (the evidence comes from no real TEE).
    simulated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcb_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advisory_ids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform_tcb_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qe_tcb_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    measurements: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    collateral_window: Option<Value>,
    verified_at: u64,
}

fn verify(args: &VerifyArgs) -> Result<(), Reported> {
    let policy =
        with_expected_report_data(args.policy.build()?, args.expect_report_data.as_deref())?;
    let bytes = read_quote(&args.quote)?;
    let (collateral, created_at) = read_collateral(
        args.collateral.as_deref(),
        args.endorsements.as_deref(),
        "give --collateral or --endorsements",
    )?;
    let now = args.at.unwrap_or_else(unix_now);
    let evidence = args.format.unwrap(&bytes);
    let parsed = evidence.as_ref().ok();
    let mut verdict = Verdict {
        verdict: "rejected",
        verified: false,
        reason: None,
        message: None,
        format: parsed.map(|e| e.format().name()),
        tee: parsed.map(|e| e.quote().tee().as_str()),
        quote_version: parsed.map(|e| e.quote().header().version()),
        custom_claims: parsed.and_then(custom_claims),
        endorsements_created_at: created_at,
        trust_root: policy.trust_root().to_string(),
        simulated: false,
        tcb_status: None,
        advisory_ids: None,
        platform_tcb_status: None,
        qe_tcb_status: None,
        measurements: parsed.and_then(|e| serde_json::to_value(e.quote().measurements()).ok()),
        report_data: parsed.map(|e| e.quote().report_data().to_string()),
        collateral_window: None,
        verified_at: now,
    };

    let outcome = match &evidence {
        Ok(evidence) => {
            evaluate(
                &policy,
                evidence.quote_bytes(),
                &collateral,
                now,
                &mut verdict,
            )
            .and_then(
                // Claims the report data does not bind are not the enclave's: refuse them
                // rather than pass them on as if attested.
                |()| match evidence.claims_bound() {
                    Some(false) => Err((
                        "report-data-mismatch",
                        "the report data does not bind the evidence's custom claims".to_owned(),
                    )),
                    _ => Ok(()),
                },
            )
        }
        Err(e) => Err((e.code(), e.to_string())),
    };
    if let Err((code, message)) = outcome {
        verdict.reason = Some(code);
        verdict.message = Some(message);
    } else {
        verdict.verdict = "accepted";
    }
    print_verdict(&verdict, args.json)?;
    if verdict.verdict == "accepted" {
        Ok(())
    } else {
        Err(Reported(std::process::ExitCode::from(EXIT_VERIFICATION)))
    }
}

/// Collateral from a `QuoteCollateralV3` JSON file or from Open Enclave endorsements (with their
/// creation time); `missing` says which flags to give when there is neither.
fn read_collateral(
    collateral: Option<&Path>,
    endorsements: Option<&Path>,
    missing: &str,
) -> Result<(Collateral, Option<u64>), Failure> {
    let unreadable = |path: &Path, e: &dyn std::fmt::Display| {
        Failure::usage("unreadable-input", format!("{}: {e}", path.display()))
    };
    match (collateral, endorsements) {
        (Some(path), _) => {
            let bytes = files::read_limited(path, MAX_INPUT, "collateral")?;
            let collateral = Collateral::from_json(&bytes).map_err(|e| unreadable(path, &e))?;
            Ok((collateral, None))
        }
        (None, Some(path)) => {
            let bytes = files::read_limited(path, MAX_INPUT, "endorsements")?;
            let endorsements = Endorsements::parse(&bytes).map_err(|e| unreadable(path, &e))?;
            let created_at = endorsements.created_at();
            Ok((endorsements.into_collateral(), Some(created_at)))
        }
        (None, None) => Err(Failure::usage("invalid-argument", missing.to_owned())),
    }
}

/// `policy` requiring the `--expect-report-data` value, when one is given.
fn with_expected_report_data(
    policy: AppraisalPolicy,
    expected: Option<&str>,
) -> Result<AppraisalPolicy, Failure> {
    Ok(match expected {
        Some(hex) => policy.with_report_data(ReportData::from_bytes(hex_arg(
            "--expect-report-data",
            hex,
        )?)),
        None => policy,
    })
}

/// OE custom claims as JSON: each name with its value in hex, and whether they are bound.
fn custom_claims(evidence: &Evidence<'_>) -> Option<Value> {
    let bound = evidence.claims_bound()?;
    let claims: Vec<Value> = evidence
        .custom_claims()
        .iter()
        .map(|c| json!({ "name": c.name, "value": hex::encode(&c.value) }))
        .collect();
    Some(json!({ "bound": bound, "claims": claims }))
}

/// Verifies and appraises; fills in what verification established, even when the policy
/// then rejects.
fn evaluate(
    policy: &AppraisalPolicy,
    quote: &[u8],
    collateral: &Collateral,
    now: u64,
    verdict: &mut Verdict,
) -> Result<(), (&'static str, String)> {
    let anchor: TrustAnchor = policy
        .trust_root()
        .anchor(quote, collateral)
        .map_err(|e| (e.code(), e.to_string()))?;
    verdict.trust_root = anchor.root().to_string();
    verdict.simulated = anchor.is_simulated();
    let verified = Verifier::new(anchor)
        .verify(quote, collateral, now)
        .map_err(|e| (e.code(), e.to_string()))?;
    record(&verified, verdict);
    policy
        .appraise(verified)
        .map(|_| ())
        .map_err(|e| (e.code(), e.to_string()))
}

fn record(verified: &VerifiedQuote, verdict: &mut Verdict) {
    verdict.verified = true;
    verdict.tcb_status = Some(verified.tcb_status().as_str());
    verdict.platform_tcb_status = Some(verified.platform_tcb_status().as_str());
    verdict.qe_tcb_status = Some(verified.qe_tcb_status().as_str());
    verdict.advisory_ids = Some(verified.advisory_ids().to_vec());
    let (from, until) = verified.collateral_window();
    verdict.collateral_window = Some(json!({ "valid_from": from, "valid_until": until }));
}

fn print_verdict(verdict: &Verdict, as_json: bool) -> Result<(), Failure> {
    if as_json {
        return report::print_json(verdict);
    }
    match (verdict.verdict, verdict.reason, &verdict.message) {
        ("accepted", _, _) => say!(
            "ACCEPTED {}{} quote v{} (trust root {}, TCB {}, advisories [{}])",
            if verdict.simulated { "SIMULATED " } else { "" },
            verdict.tee.unwrap_or("?"),
            verdict.quote_version.unwrap_or(0),
            verdict.trust_root,
            verdict.tcb_status.unwrap_or("?"),
            verdict
                .advisory_ids
                .as_deref()
                .unwrap_or_default()
                .join(", ")
        )?,
        (_, Some(reason), Some(message)) => say!("REJECTED ({reason}): {message}")?,
        _ => say!("REJECTED")?,
    }
    if !verdict.verified && verdict.measurements.is_some() {
        say!("  (the quote did not verify: the values below are unauthenticated)")?;
    }
    if let Some(Value::Object(fields)) = &verdict.measurements {
        report::print_fields(fields)?;
    }
    if let Some(report_data) = &verdict.report_data {
        say!("  {:<16} {report_data}", "report_data")?;
    }
    if let Some(format) = verdict
        .format
        .filter(|f| *f != EvidenceFormat::DcapQuote.name())
    {
        say!("  {:<16} {format}", "format")?;
    }
    if let Some(created) = verdict.endorsements_created_at {
        say!(
            "  {:<16} {created} (Open Enclave judges them at this time)",
            "endorsed_at"
        )?;
    }
    if let Some(status) = verdict.tcb_status.filter(|_| verdict.verdict != "accepted") {
        say!(
            "  {:<16} {status} (advisories [{}])",
            "tcb_status",
            verdict
                .advisory_ids
                .as_deref()
                .unwrap_or_default()
                .join(", ")
        )?;
    }
    Ok(())
}

/// A quote file: binary, or hex text with or without `0x` (line breaks and spaces allowed, as
/// `xxd -p` writes it).
fn read_quote(path: &Path) -> Result<Vec<u8>, Failure> {
    let bytes = files::read_limited(path, MAX_INPUT, "quote")?;
    let compact: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let digits = compact
        .strip_prefix(b"0x")
        .or_else(|| compact.strip_prefix(b"0X"))
        .unwrap_or(&compact);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Ok(bytes);
    }
    hex::decode(digits).map_err(|e| {
        Failure::usage(
            "unreadable-input",
            format!("{}: bad hex: {e}", path.display()),
        )
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The verdict of `cloak attest verify-token`, as printed with `--json`: the shape of
/// [`Verdict`], with the token's own fields.
#[derive(Serialize)]
struct TokenVerdict {
    verdict: &'static str,
    /// Whether the token's signature, key, times and issuer verified.
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    format: &'static str,
    tee: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_window: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    measurements: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enclave_held_data_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signer: Option<Value>,
    verified_at: u64,
}

fn verify_token(args: &VerifyTokenArgs) -> Result<(), Reported> {
    let policy =
        with_expected_report_data(args.policy.build()?, args.expect_report_data.as_deref())?;
    let signer = match &args.verify_signer {
        Some(path) => Some(signer_inputs(args, path)?),
        None => None,
    };
    let token = files::read_limited(&args.token, MAX_INPUT, "token")?;
    let jwks_bytes = files::read_limited(&args.jwks, MAX_INPUT, "JWKS")?;
    let jwks = Jwks::from_json(&jwks_bytes)
        .map_err(|e| Failure::usage(e.code(), format!("{}: {e}", args.jwks.display())))?;
    let expected_ehd = match &args.expect_ehd {
        Some(path) => Some(files::read_limited(path, MAX_INPUT, "enclave-held data")?),
        None => None,
    };
    if args.issuer.is_none() {
        eprintln!(
            "warning: no --issuer: a token from any instance whose key is in the JWKS is accepted"
        );
    }
    let now = args.at.unwrap_or_else(unix_now);
    let mut verdict = TokenVerdict {
        verdict: "rejected",
        verified: false,
        reason: None,
        message: None,
        format: "maa-token",
        tee: "sgx",
        issuer: None,
        kid: None,
        algorithm: None,
        token_window: None,
        measurements: None,
        report_data: None,
        enclave_held_data_sha256: None,
        signer: None,
        verified_at: now,
    };
    let outcome = (|| {
        let verified = maa::verify_token(&token, &jwks, args.issuer.as_deref(), now)
            .map_err(|e| (e.code(), e.to_string()))?;
        record_token(&verified, &mut verdict);
        if let Some(expected) = &expected_ehd {
            check_ehd(verified.sgx(), expected)?;
        }
        let signer_certificate = verified.signer_certificate().to_vec();
        policy
            .appraise_token(verified)
            .map_err(|e| (e.code(), e.to_string()))?;
        if let Some((signer_policy, collateral)) = &signer {
            let at = args.signer_at.unwrap_or(now);
            let appraisal = appraise_signer(&signer_certificate, collateral, signer_policy, at);
            let refusal = appraisal.as_ref().err().cloned();
            verdict.signer = Some(match appraisal {
                Ok(value) => value,
                Err((code, message)) => json!({
                    "verdict": "rejected", "reason": code, "message": message, "verified_at": at,
                }),
            });
            if let Some((code, message)) = refusal {
                return Err((code, format!("the signing key's enclave: {message}")));
            }
        }
        Ok(())
    })();
    match outcome {
        Ok(()) => verdict.verdict = "accepted",
        Err((code, message)) => {
            verdict.reason = Some(code);
            verdict.message = Some(message);
        }
    }
    print_token_verdict(&verdict, args.json)?;
    if verdict.verdict == "accepted" {
        Ok(())
    } else {
        Err(Reported(std::process::ExitCode::from(EXIT_VERIFICATION)))
    }
}

/// The signer's policy and collateral, read before anything is verified (bad usage exits 2).
fn signer_inputs(
    args: &VerifyTokenArgs,
    policy_path: &Path,
) -> Result<(AppraisalPolicy, Collateral), Failure> {
    let policy = read_policy_file(policy_path)?;
    let (collateral, _) = read_collateral(
        args.signer_collateral.as_deref(),
        args.signer_endorsements.as_deref(),
        "--verify-signer needs --signer-collateral or --signer-endorsements",
    )?;
    Ok((policy, collateral))
}

fn record_token(verified: &maa::VerifiedToken, verdict: &mut TokenVerdict) {
    let sgx = verified.sgx();
    let (issued_at, not_before, expires) = verified.times();
    verdict.verified = true;
    verdict.issuer = Some(verified.issuer().to_owned());
    verdict.kid = Some(verified.kid().to_owned());
    verdict.algorithm = Some(verified.algorithm().to_owned());
    verdict.token_window = Some(json!({
        "issued_at": issued_at, "not_before": not_before, "expires": expires,
    }));
    verdict.measurements = Some(json!({
        "mrenclave": sgx.mrenclave.to_string(),
        "mrsigner": sgx.mrsigner.to_string(),
        "isv_prod_id": sgx.isv_prod_id,
        "isv_svn": sgx.isv_svn,
        "debug": sgx.debug,
    }));
    verdict.report_data = sgx.report_data.as_ref().map(ToString::to_string);
    verdict.enclave_held_data_sha256 = sgx
        .enclave_held_data
        .as_ref()
        .map(|ehd| hex::encode(cloak_crypto::hash::sha256(ehd)));
}

/// The caller's enclave-held data against the token: equal to the token's copy, and hashing
/// to the report data's first half; at least one of the two must be checkable.
fn check_ehd(sgx: &maa::SgxClaims, expected: &[u8]) -> Result<(), (&'static str, String)> {
    let mismatch = |why: &str| Err(("enclave-held-data-mismatch", why.to_owned()));
    if sgx.enclave_held_data.is_none() && sgx.report_data.is_none() {
        return mismatch("the token carries neither enclave-held data nor report data");
    }
    if let Some(ehd) = &sgx.enclave_held_data
        && ehd != expected
    {
        return mismatch("the token's x-ms-sgx-ehd is not the expected enclave-held data");
    }
    if let Some(report_data) = &sgx.report_data
        && report_data.as_bytes().get(..32) != Some(&cloak_crypto::hash::sha256(expected)[..])
    {
        return mismatch("SHA-256 of the expected enclave-held data is not the report data's");
    }
    Ok(())
}

/// The attestation service's own enclave: its signing certificate appraised as an RA-TLS peer
/// (the quote in it bound to the certificate's key, verified with `collateral` and appraised
/// under `policy` at `at`).
fn appraise_signer(
    certificate: &[u8],
    collateral: &Collateral,
    policy: &AppraisalPolicy,
    at: u64,
) -> Result<Value, (&'static str, String)> {
    let peer = cloak_client::appraise_peer_certificate(certificate, collateral, policy, at)
        .map_err(|e| (e.code(), e.to_string()))?;
    let verified = peer.accepted().verified();
    Ok(json!({
        "verdict": "accepted",
        "carrier": peer.carrier().name(),
        "tcb_status": verified.tcb_status().as_str(),
        "trust_root": verified.trust_root().to_string(),
        "measurements": peer.measurements(),
        "verified_at": at,
    }))
}

fn print_token_verdict(verdict: &TokenVerdict, as_json: bool) -> Result<(), Failure> {
    if as_json {
        return report::print_json(verdict);
    }
    match (verdict.verdict, verdict.reason, &verdict.message) {
        ("accepted", _, _) => say!(
            "ACCEPTED Azure Attestation token from {} (key {}, {})",
            verdict.issuer.as_deref().unwrap_or("?"),
            verdict.kid.as_deref().unwrap_or("?"),
            verdict.algorithm.as_deref().unwrap_or("?")
        )?,
        (_, Some(reason), Some(message)) => say!("REJECTED ({reason}): {message}")?,
        _ => say!("REJECTED")?,
    }
    if let Some(Value::Object(fields)) = &verdict.measurements {
        report::print_fields(fields)?;
    }
    if let Some(report_data) = &verdict.report_data {
        say!("  {:<16} {report_data}", "report_data")?;
    }
    if let Some(Value::Object(signer)) = &verdict.signer {
        say!(
            "  {:<16} {} {}",
            "signer",
            signer.get("verdict").and_then(Value::as_str).unwrap_or("?"),
            signer
                .get("reason")
                .or_else(|| signer.get("tcb_status"))
                .and_then(Value::as_str)
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

/// `cloak attest inspect-quote`: what the evidence says, read and not verified.
fn inspect_quote(args: &InspectQuoteArgs) -> Result<(), Reported> {
    let bytes = read_quote(&args.quote)?;
    let evidence = match args.format.unwrap(&bytes) {
        Ok(evidence) => evidence,
        Err(e) => {
            if args.json {
                report::print_json(&json!({
                    "readable": false,
                    "reason": e.code(),
                    "message": e.to_string(),
                }))?;
            } else {
                say!("UNREADABLE ({}): {e}", e.code())?;
            }
            return Err(Reported(std::process::ExitCode::from(EXIT_VERIFICATION)));
        }
    };
    let quote = evidence.quote();
    let header = quote.header();
    let certification = &quote.signature().certification;
    let pck = certification.pck_platform();
    let oe_format = evidence.oe_format_id().map(|id| {
        json!({
            "uuid": cloak_attest::evidence::uuid_text(id),
            "name": cloak_attest::evidence::oe_format::name(id),
        })
    });
    let report = json!({
        "readable": true,
        "verified": false,
        "format": evidence.format().name(),
        "oe_format": oe_format,
        "tee": quote.tee().as_str(),
        "quote_version": header.version(),
        "quote_len": evidence.quote_bytes().len(),
        "measurements": quote.measurements(),
        "report_data": quote.report_data().to_string(),
        "qe_svn": header.qe_svn(),
        "pce_svn": header.pce_svn(),
        "certification_data_type": certification.kind(),
        "pck": pck.as_ref().map(|p| json!({
            "fmspc": p.fmspc,
            "pce_id": p.pce_id,
            "pce_svn": p.pce_svn,
            "tcb_components": p.tcb_components,
        })),
        "custom_claims": custom_claims(&evidence),
    });
    if args.json {
        report::print_json(&report)?;
        return Ok(());
    }
    say!(
        "{} quote v{} ({} bytes) in {}{}",
        quote.tee(),
        header.version(),
        evidence.quote_bytes().len(),
        evidence.format().name(),
        evidence
            .oe_format_id()
            .and_then(cloak_attest::evidence::oe_format::name)
            .map_or_else(String::new, |name| format!(" ({name})"))
    )?;
    if let Ok(Value::Object(fields)) = serde_json::to_value(quote.measurements()) {
        report::print_fields(&fields)?;
    }
    say!("  {:<16} {}", "report_data", quote.report_data())?;
    match &pck {
        Some(p) => say!(
            "  {:<16} {} (PCE id {}, PCE SVN {}, TCB components {:?})",
            "fmspc",
            p.fmspc,
            p.pce_id,
            p.pce_svn,
            p.tcb_components
        )?,
        None => say!(
            "  {:<16} not in the quote (certification data type {})",
            "fmspc",
            certification.kind()
        )?,
    }
    if let Some(bound) = evidence.claims_bound() {
        say!(
            "  {:<16} {} claim(s), {}",
            "custom_claims",
            evidence.custom_claims().len(),
            if bound {
                "bound by the report data"
            } else {
                "NOT bound by the report data"
            }
        )?;
        for claim in evidence.custom_claims() {
            say!("    {} = {}", claim.name, hex::encode(&claim.value))?;
        }
    }
    say!(
        "note             nothing here is verified; use `cloak attest verify` with its collateral"
    )?;
    Ok(())
}

fn inspect_cert(args: &InspectCertArgs) -> Result<(), Reported> {
    let bytes = files::read_limited(&args.cert, MAX_INPUT, "certificate")?;
    let cert = RaTlsCertificate::parse(&bytes)
        .map_err(|e| Failure::usage(e.code(), format!("{}: {e}", args.cert.display())))?;
    let evidence: Vec<Value> = cert
        .evidence()
        .iter()
        .map(|e| {
            let quote = match e.quote() {
                Ok(q) => json!({
                    "version": q.header().version(),
                    "tee": q.tee().as_str(),
                    "measurements": q.measurements(),
                    "report_data": q.report_data().to_string(),
                }),
                Err(err) => json!({ "error": { "code": err.code(), "message": err.to_string() } }),
            };
            let binding = match e.binding() {
                Binding::Holds(kind) => json!({ "holds": true, "kind": kind.name() }),
                Binding::Broken(why) => json!({ "holds": false, "reason": why }),
                _ => json!({ "holds": false }),
            };
            let claims = e.claims().map(|c| {
                json!({
                    "sha256": hex::encode(cloak_crypto::hash::sha256(c.raw())),
                    "pubkey_hash": c.pubkey_hash().map(|(alg, hash)| json!({ "alg": alg, "hash": hex::encode(hash) })),
                    "nonce": c.nonce().map(hex::encode),
                    "other": c.other(),
                })
            });
            json!({
                "carrier": e.carrier().name(),
                "oid": e.carrier().oid(),
                "quote_len": e.quote_bytes().len(),
                "quote": quote,
                "claims": claims,
                "binding": binding,
            })
        })
        .collect();
    let all_bind = cert.evidence().iter().all(|e| e.binding().holds());
    let self_signature = cert.self_signature();
    let self_signature_json = match self_signature {
        SelfSignature::Unchecked(why) => json!({ "state": self_signature.name(), "why": why }),
        other => json!({ "state": other.name() }),
    };
    let report = json!({
        "subject": cert.subject(),
        "self_signature": self_signature_json,
        "spki_sha256": hex::encode(cloak_crypto::hash::sha256(cert.spki_der())),
        "preferred": cert.preferred().map(|e| e.carrier().name()),
        "binds": all_bind,
        "evidence": evidence,
    });
    if args.json {
        report::print_json(&report)?;
    } else {
        say!("certificate  {}", cert.subject())?;
        match self_signature {
            SelfSignature::Valid => say!("signature    self-signed, valid")?,
            SelfSignature::Invalid => {
                say!("signature    INVALID: the certificate was changed after it was signed")?;
            }
            SelfSignature::Unchecked(why) => say!("signature    not checked ({why})")?,
            _ => {}
        }
        say!(
            "spki sha256  {}",
            hex::encode(cloak_crypto::hash::sha256(cert.spki_der()))
        )?;
        for e in cert.evidence() {
            let binding = match e.binding() {
                Binding::Holds(kind) => format!("binds the key ({})", kind.name()),
                Binding::Broken(why) => format!("DOES NOT bind the key: {why}"),
                _ => "unknown binding".to_owned(),
            };
            say!(
                "evidence     {} ({}): {binding}",
                e.carrier().name(),
                e.carrier().oid()
            )?;
            match e.quote() {
                Ok(q) => {
                    say!(
                        "  quote      {} v{}, {} bytes",
                        q.tee(),
                        q.header().version(),
                        e.quote_bytes().len()
                    )?;
                    if let Ok(Value::Object(fields)) = serde_json::to_value(q.measurements()) {
                        report::print_fields(&fields)?;
                    }
                }
                Err(err) => say!("  quote      unreadable: {err}")?,
            }
        }
        say!(
            "note         the quote itself is not verified here; use `cloak attest verify` with its collateral"
        )?;
    }
    if all_bind && *self_signature != SelfSignature::Invalid {
        Ok(())
    } else {
        Err(Reported(std::process::ExitCode::from(EXIT_VERIFICATION)))
    }
}

/// `cloak attest server`: appraises the server (its attested TLS certificate, or its fresh
/// attestation alone with --mode ohttp) for a nonce, and prints the verdict.
fn server(args: &ServerAttestArgs) -> Result<(), Reported> {
    let nonce = match &args.nonce {
        Some(text) => hex::decode(text.trim().trim_start_matches("0x"))
            .map_err(|e| Failure::usage("invalid-argument", format!("--nonce: {e}")))?,
        None => {
            let mut nonce = vec![0u8; 32];
            getrandom::fill(&mut nonce).map_err(|e| Failure::usage("random", e.to_string()))?;
            nonce
        }
    };
    args.server.check_outputs()?;
    let builder = args.server.client()?.nonce(nonce.clone());
    let outcome = crate::runtime::current_thread()?.block_on(builder.connect(args.server.url()));
    let client = match outcome {
        Ok(client) => client,
        Err(e) => return Err(report::refused(&e, args.json)?),
    };
    let appraisal = client.appraisal();
    if let Some(path) = args.server.attestation_out() {
        files::write_json(
            path,
            appraisal.attestation(),
            "attestation",
            args.server.existing(),
        )?;
    }
    print_accepted(appraisal.server(), &nonce, args.json)?;
    Ok(())
}

#[derive(Serialize)]
struct Accepted {
    verdict: &'static str,
    trust_root: String,
    simulated: bool,
    tcb_status: &'static str,
    advisory_ids: Vec<String>,
    measurements: Value,
    nonce: String,
    claims: Value,
}

fn print_accepted(server: &VerifiedServer, nonce: &[u8], as_json: bool) -> Result<(), Failure> {
    let verified = server.accepted().verified();
    let claims = server.claims();
    let models: Vec<Value> = claims
        .models
        .iter()
        .map(|m| json!({"name": m.name, "bytes": m.bytes, "sha256": hex::encode(m.sha256)}))
        .collect();
    let accepted = Accepted {
        verdict: "accepted",
        trust_root: verified.trust_root().to_string(),
        simulated: verified.is_simulated(),
        tcb_status: verified.tcb_status().as_str(),
        advisory_ids: verified.advisory_ids().to_vec(),
        measurements: serde_json::to_value(server.measurements()).unwrap_or(Value::Null),
        nonce: hex::encode(nonce),
        claims: json!({
            "platform": claims.platform,
            "server_version": claims.server_version,
            "engine": claims.engine.as_ref().map(|e| json!({
                "name": e.name,
                "version": e.version,
                "library_sha256": e.library_sha256.map(hex::encode),
            })),
            "tls_spki_sha256": hex::encode(claims.tls_spki_sha256),
            "hpke_key_config": hex::encode(&claims.hpke_key_config),
            "receipt_public_key": hex::encode(&claims.receipt_public_key),
            "models": models,
        }),
    };
    if as_json {
        return report::print_json(&accepted);
    }
    say!(
        "ACCEPTED {}server (trust root {}, TCB {}, advisories [{}]); fresh for nonce {}",
        if accepted.simulated { "SIMULATED " } else { "" },
        accepted.trust_root,
        accepted.tcb_status,
        accepted.advisory_ids.join(", "),
        accepted.nonce
    )?;
    if let Value::Object(fields) = &accepted.measurements {
        report::print_fields(fields)?;
    }
    say!("  {:<16} {}", "platform", claims.platform)?;
    say!("  {:<16} {}", "server_version", claims.server_version)?;
    if let Some(engine) = &claims.engine {
        let library = engine.library_sha256.map_or_else(String::new, |sha| {
            format!(" (library sha256 {})", hex::encode(sha))
        });
        say!(
            "  {:<16} {} {}{library}",
            "engine",
            engine.name,
            engine.version
        )?;
    }
    say!(
        "  {:<16} {}",
        "tls_spki_sha256",
        hex::encode(claims.tls_spki_sha256)
    )?;
    for model in &claims.models {
        say!(
            "  {:<16} {} ({} bytes, sha256 {})",
            "model",
            model.name,
            model.bytes,
            hex::encode(model.sha256)
        )?;
    }
    Ok(())
}
