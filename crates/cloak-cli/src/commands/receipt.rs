//! `cloak receipt verify`: checks an inference receipt offline against a recorded attestation.
//!
//! The attestation (`cloak attest server --attestation-out`, `cloak infer --attestation-out`) is appraised
//! under the policy flags as any other; its claims name the receipt key and the evidence the
//! receipt must name. With `--request` and `--response` the receipt must also cover exactly
//! those bodies.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use cloak_attest::collateral::Collateral;
use cloak_client::appraise_recorded_attestation;
use cloak_proto::attestation::AttestationDocument;
use cloak_proto::receipt::{BodyDigest, MAX_RECEIPT_LEN, Receipt, ReceiptError};
use serde_json::json;

use crate::Reported;
use crate::args::{AnyEnclaveArg, PolicyArgs, ReceiptDigestArg};
use crate::failure::{EXIT_VERIFICATION, Failure};
use crate::files::read_limited;

/// The largest attestation or body file read.
const MAX_FILE: u64 = 256 << 20;

/// `cloak receipt` commands.
#[derive(Debug, Subcommand)]
pub(crate) enum ReceiptCommand {
    /// Verify a receipt offline: signed by the receipt key of an attested server, over that
    /// server's evidence and a model it states (exit 1 if not)
    Verify(VerifyArgs),
}

/// Arguments of `cloak receipt verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The receipt: a file holding the `Cloak-Receipt` header value, and optionally a second
    /// line `salt=HEX` (as `cloak infer --receipt-out` writes it)
    receipt: PathBuf,
    /// The salt of the receipt's digests (32 hex digits), when the file does not hold it:
    /// checking --request or --response takes it
    #[arg(long, value_name = "HEX")]
    salt: Option<String>,
    /// The server's attestation (JSON, from `cloak attest server --attestation-out` or `cloak infer
    /// --attestation-out`)
    #[arg(long, value_name = "FILE")]
    attestation: PathBuf,
    /// Appraise with this collateral instead of the one the attestation carries
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    /// Also require the receipt to cover this request body
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
    /// Also require the receipt to cover this response body
    #[arg(long, value_name = "FILE")]
    response: Option<PathBuf>,
    /// Appraise the attestation as of this Unix time (seconds) instead of now, for receipts
    /// checked after the collateral expired
    #[arg(long, value_name = "UNIX")]
    at: Option<u64>,
    /// Also require the receipt's body digests to be these: salted SHA-256 (version 2, where
    /// only FIPS-approved algorithms are acceptable) or salted BLAKE3 (version 3)
    #[arg(long, value_enum, value_name = "DIGEST")]
    require_digest: Option<ReceiptDigestArg>,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    any_enclave: AnyEnclaveArg,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

/// Runs a `cloak receipt` command.
pub(crate) fn run(command: ReceiptCommand) -> Result<(), Reported> {
    match command {
        ReceiptCommand::Verify(args) => verify(&args),
    }
}

fn verify(args: &VerifyArgs) -> Result<(), Reported> {
    let policy = args.policy.build()?;
    args.any_enclave.check(&policy)?;
    let text = read_limited(&args.receipt, MAX_RECEIPT_LEN as u64 + 2, "receipt")?;
    let text = String::from_utf8(text)
        .map_err(|_| Failure::usage("unreadable-input", "the receipt is not text"))?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let text = lines.next().unwrap_or_default().to_owned();
    let kept_salt = lines.find_map(|l| l.strip_prefix("salt="));
    let salt = match args.salt.as_deref().or(kept_salt) {
        None => None,
        Some(hex) => Some(
            cloak_proto::receipt::parse_salt(hex.as_bytes()).ok_or_else(|| {
                Failure::usage(
                    "invalid-argument",
                    "the salt is 32 lowercase hex digits (16 bytes)",
                )
            })?,
        ),
    };
    let document: AttestationDocument =
        serde_json::from_slice(&read_limited(&args.attestation, MAX_FILE, "attestation")?)
            .map_err(|e| {
                Failure::usage(
                    "unreadable-input",
                    format!("{} is not an attestation: {e}", args.attestation.display()),
                )
            })?;
    let collateral = match &args.collateral {
        Some(path) => read_limited(path, MAX_FILE, "collateral")?,
        None => document
            .collateral_json()
            .ok_or_else(|| {
                Failure::usage(
                    "unreadable-input",
                    "the attestation carries no collateral; pass --collateral",
                )
            })?
            .to_vec(),
    };
    let collateral = Collateral::from_json(&collateral)
        .map_err(|e| Failure::usage("unreadable-input", format!("collateral: {e}")))?;
    let now = args.at.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let server = match appraise_recorded_attestation(&document, &collateral, &policy, now) {
        Ok(server) => server,
        Err(e) => {
            return Err(rejected(
                e.code(),
                &format!("the attestation: {e}"),
                args.json,
            ));
        }
    };
    let receipt = match Receipt::verify(&text, server.claims()) {
        Ok(receipt) => receipt,
        Err(e) => return Err(rejected(e.code(), &e.to_string(), args.json)),
    };
    if let Some(required) = args.require_digest
        && receipt.digests != BodyDigest::from(required)
    {
        let e = ReceiptError::DigestNotAsked(receipt.digests.version());
        return Err(rejected(e.code(), &e.to_string(), args.json));
    }
    let mut bodies = Vec::new();
    if let Some(path) = &args.request {
        let check = receipt.check_request(salt.as_ref(), &read_limited(path, MAX_FILE, "request")?);
        if let Err(e) = check {
            return Err(rejected(e.code(), &e.to_string(), args.json));
        }
        bodies.push("request");
    }
    if let Some(path) = &args.response {
        let check =
            receipt.check_response(salt.as_ref(), &read_limited(path, MAX_FILE, "response")?);
        if let Err(e) = check {
            return Err(rejected(e.code(), &e.to_string(), args.json));
        }
        bodies.push("response");
    }
    let verified = server.accepted().verified();
    let report = json!({
        "verdict": "valid",
        "model": receipt.model,
        "model_sha256": hex::encode(receipt.model_sha256),
        "version": receipt.digests.version(),
        // How the two body digests below are made (named `..._sha256` since version 1).
        "body_digest": receipt.digests.label(),
        "input_sha256": hex::encode(receipt.input_sha256),
        "output_sha256": hex::encode(receipt.output_sha256),
        "time_ms": receipt.time_ms,
        "request_id": receipt.request_id,
        "evidence_sha256": hex::encode(receipt.evidence_sha256),
        "bodies_checked": bodies,
        "simulated": verified.is_simulated(),
        "tcb_status": verified.tcb_status().as_str(),
        "measurements": serde_json::to_value(server.measurements()).unwrap_or_default(),
    });
    if args.json {
        return Ok(crate::report::print_json(&report)?);
    }
    say!(
        "VALID receipt: model {} (sha256 {}) answered request {} at {} ms",
        receipt.model,
        hex::encode(receipt.model_sha256),
        receipt.request_id,
        receipt.time_ms
    )?;
    say!(
        "  input digest     {} ({})",
        hex::encode(receipt.input_sha256),
        receipt.digests.label()
    )?;
    say!(
        "  output digest    {} ({})",
        hex::encode(receipt.output_sha256),
        receipt.digests.label()
    )?;
    say!(
        "  evidence sha256  {}",
        hex::encode(receipt.evidence_sha256)
    )?;
    say!(
        "  signed by the receipt key of an attested {}enclave (TCB {}){}",
        if verified.is_simulated() {
            "SIMULATED "
        } else {
            ""
        },
        verified.tcb_status().as_str(),
        if bodies.is_empty() {
            String::new()
        } else {
            format!("; the {} body matches", bodies.join(" and "))
        }
    )?;
    Ok(())
}

fn rejected(code: &str, message: &str, as_json: bool) -> Reported {
    if as_json
        && let Ok(text) = serde_json::to_string_pretty(&json!({
            "verdict": "invalid",
            "reason": code,
            "message": message,
        }))
    {
        let _ = say!("{text}");
    }
    eprintln!("error: receipt INVALID ({code}): {message}");
    Reported(std::process::ExitCode::from(EXIT_VERIFICATION))
}
