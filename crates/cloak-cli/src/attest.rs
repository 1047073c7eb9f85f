//! `cloak attest`: verify DCAP quotes against collateral and a policy; read RA-TLS certificates.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use cloak_attest::collateral::Collateral;
use cloak_attest::policy::{AppraisalPolicy, DebugPolicy, TrustRootPolicy};
use cloak_attest::quote::Quote;
use cloak_attest::ratls::{Binding, RaTlsCertificate};
use cloak_attest::types::{Measurement, ReportData, parse_hex};
use cloak_attest::verify::{TcbStatus, TrustAnchor, VerifiedQuote, Verifier};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Reported;
use crate::failure::{EXIT_VERIFICATION, Failure};

/// Largest quote or collateral file read (real ones are a few KiB to a few tens of KiB).
const MAX_INPUT: u64 = 4 * 1024 * 1024;

/// `cloak attest …`
#[derive(Debug, Subcommand)]
pub(crate) enum AttestCommand {
    /// Verify a DCAP quote (SGX v3, TDX v4/v5) with its collateral and appraise it against a
    /// policy; exit 0 accepted, 1 rejected, 2 bad usage or unreadable input
    Verify(Box<VerifyArgs>),
    /// Show the attestation evidence in an RA-TLS certificate and whether it binds the key;
    /// exit 0 if every evidence extension binds, 1 if one does not, 2 if unreadable
    InspectCert(InspectCertArgs),
    /// Appraise a running Cloak server: its attested TLS certificate and a fresh attestation
    /// for a nonce; exit 0 accepted, 1 rejected, 2 unreachable or bad usage
    Server(Box<crate::remote::ServerArgs>),
}

/// Arguments of `cloak attest verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The quote: binary, or hex text (with or without 0x)
    #[arg(long, value_name = "FILE")]
    quote: PathBuf,
    /// The collateral, as dcap-qvl QuoteCollateralV3 JSON
    #[arg(long, value_name = "FILE")]
    collateral: PathBuf,
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

/// The appraisal policy, as every command that appraises evidence takes it.
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// Trust this root (DER) instead of the Intel SGX Root CA (or the policy's root)
    #[arg(long, value_name = "FILE.der")]
    trust_root: Option<PathBuf>,
    /// Appraisal policy (TOML); the flags below add to it [default: the strict policy]
    #[arg(long = "policy", value_name = "FILE.toml")]
    policy_file: Option<PathBuf>,
    /// Also accept this TCB status (e.g. SWHardeningNeeded); repeatable
    #[arg(long = "allow-status", value_name = "NAME")]
    allow_status: Vec<String>,
    /// Also tolerate this advisory id, or '*' for any; repeatable
    #[arg(long = "allow-advisory", value_name = "ID")]
    allow_advisory: Vec<String>,
    /// Accept debug enclaves and TDs (their memory is open to the host: development only)
    #[arg(long)]
    allow_debug: bool,
    /// Require this MRENCLAVE (replaces the policy file's list)
    #[arg(long, value_name = "HEX")]
    expect_mrenclave: Option<String>,
    /// Require this MRSIGNER (replaces the policy file's list)
    #[arg(long, value_name = "HEX")]
    expect_mrsigner: Option<String>,
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
        AttestCommand::InspectCert(args) => inspect_cert(&args),
        AttestCommand::Server(args) => crate::remote::attest_server(&args),
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
    #[serde(skip_serializing_if = "Option::is_none")]
    tee: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quote_version: Option<u16>,
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
    let mut policy = build_policy(&args.policy)?;
    if let Some(hex) = &args.expect_report_data {
        policy = policy.with_report_data(ReportData::from_bytes(hex_arg(
            "--expect-report-data",
            hex,
        )?));
    }
    let quote = read_quote(&args.quote)?;
    let collateral_bytes = read_input(&args.collateral, "collateral")?;
    let collateral = Collateral::from_json(&collateral_bytes).map_err(|e| {
        Failure::usage(
            "unreadable-input",
            format!("{}: {e}", args.collateral.display()),
        )
    })?;
    let now = args.at.unwrap_or_else(unix_now);
    let parsed = Quote::parse(&quote).ok();
    let mut verdict = Verdict {
        verdict: "rejected",
        verified: false,
        reason: None,
        message: None,
        tee: parsed.as_ref().map(|q| q.tee().as_str()),
        quote_version: parsed.as_ref().map(|q| q.header().version()),
        trust_root: policy.trust_root().to_string(),
        simulated: false,
        tcb_status: None,
        advisory_ids: None,
        platform_tcb_status: None,
        qe_tcb_status: None,
        measurements: parsed
            .as_ref()
            .and_then(|q| serde_json::to_value(q.measurements()).ok()),
        report_data: parsed.as_ref().map(|q| q.report_data().to_string()),
        collateral_window: None,
        verified_at: now,
    };

    let outcome = evaluate(&policy, &quote, &collateral, now, &mut verdict);
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
        let text = serde_json::to_string_pretty(verdict)
            .map_err(|e| Failure::usage("json", e.to_string()))?;
        return say!("{text}");
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
        print_fields(fields)?;
    }
    if let Some(report_data) = &verdict.report_data {
        say!("  {:<16} {report_data}", "report_data")?;
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

/// Prints measurement fields one per line, strings unquoted.
pub(crate) fn print_fields(fields: &serde_json::Map<String, Value>) -> Result<(), Failure> {
    for (name, value) in fields {
        let shown = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        say!("  {name:<16} {shown}")?;
    }
    Ok(())
}

/// The policy file (or the strict policy), with the command-line flags applied.
pub(crate) fn build_policy(args: &PolicyArgs) -> Result<AppraisalPolicy, Failure> {
    let mut policy = match &args.policy_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| Failure::io("read policy", path, &e))?;
            let base = path.parent().unwrap_or(Path::new("."));
            AppraisalPolicy::from_toml(&text, base)
                .map_err(|e| Failure::usage("invalid-policy", format!("{}: {e}", path.display())))?
        }
        None => AppraisalPolicy::strict(),
    };
    if let Some(path) = &args.trust_root {
        let der = read_input(path, "trust root")?;
        TrustAnchor::custom(der.clone()).map_err(|e| {
            Failure::usage("invalid-trust-root", format!("{}: {e}", path.display()))
        })?;
        policy = policy.with_trust_root(TrustRootPolicy::Der(der));
    }
    for name in &args.allow_status {
        let status: TcbStatus = name
            .parse()
            .map_err(|e| Failure::usage("invalid-argument", format!("--allow-status: {e}")))?;
        policy = policy.allow_tcb_status(status);
    }
    for id in &args.allow_advisory {
        policy = policy.allow_advisory(id);
    }
    if args.allow_debug {
        policy = policy.with_debug(DebugPolicy::Allow);
    }
    if let Some(hex) = &args.expect_mrenclave {
        let value = Measurement::from_bytes(hex_arg("--expect-mrenclave", hex)?);
        policy.sgx_identity_mut().mrenclave = Some(vec![value]);
    }
    if let Some(hex) = &args.expect_mrsigner {
        let value = Measurement::from_bytes(hex_arg("--expect-mrsigner", hex)?);
        policy.sgx_identity_mut().mrsigner = Some(vec![value]);
    }
    Ok(policy)
}

fn hex_arg<const N: usize>(flag: &str, text: &str) -> Result<[u8; N], Failure> {
    parse_hex(text).map_err(|e| Failure::usage("invalid-argument", format!("{flag}: {e}")))
}

/// A quote file: binary, or hex text with or without `0x` (line breaks and spaces allowed, as
/// `xxd -p` writes it).
fn read_quote(path: &Path) -> Result<Vec<u8>, Failure> {
    let bytes = read_input(path, "quote")?;
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

fn read_input(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    let metadata =
        std::fs::metadata(path).map_err(|e| Failure::io(&format!("read {what}"), path, &e))?;
    if !metadata.is_file() {
        return Err(Failure::usage(
            "not-a-file",
            format!("{} is not a regular file", path.display()),
        ));
    }
    if metadata.len() > MAX_INPUT {
        return Err(Failure::usage(
            "unreadable-input",
            format!("{} is too large to be a {what}", path.display()),
        ));
    }
    std::fs::read(path).map_err(|e| Failure::io(&format!("read {what}"), path, &e))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn inspect_cert(args: &InspectCertArgs) -> Result<(), Reported> {
    let bytes = read_input(&args.cert, "certificate")?;
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
    let report = json!({
        "subject": cert.subject(),
        "spki_sha256": hex::encode(cloak_crypto::hash::sha256(cert.spki_der())),
        "preferred": cert.preferred().map(|e| e.carrier().name()),
        "binds": all_bind,
        "evidence": evidence,
    });
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::usage("json", e.to_string()))?;
        say!("{text}")?;
    } else {
        say!("certificate  {}", cert.subject())?;
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
                        print_fields(&fields)?;
                    }
                }
                Err(err) => say!("  quote      unreadable: {err}")?,
            }
        }
        say!(
            "note         the quote itself is not verified here; use `cloak attest verify` with its collateral"
        )?;
    }
    if all_bind {
        Ok(())
    } else {
        Err(Reported(std::process::ExitCode::from(EXIT_VERIFICATION)))
    }
}
