//! `cloak infer`: appraise a Cloak server, then run one KServe v2 inference on it. The request
//! is never sent to a server the policy rejects (exit 1), and the answer counts only with a
//! receipt from the appraised enclave for exactly this request and response (else exit 1).

use std::path::{Path, PathBuf};

use clap::Args;
use cloak_client::{Error, ServerStatus};
use cloak_proto::kserve::{self, InferRequest, InferResponse, TensorEncoding};
use serde_json::Value;

use crate::Reported;
use crate::args::ServerArgs;
use crate::failure::{EXIT_VERIFICATION, Failure};
use crate::{files, report};

/// Largest request file read.
const MAX_REQUEST_FILE: u64 = 256 << 20;

/// Arguments of `cloak infer`.
#[derive(Debug, Args)]
pub(crate) struct InferArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The model to run
    #[arg(long, value_name = "NAME")]
    model: String,
    /// The KServe v2 inference request body (JSON)
    #[arg(long, value_name = "REQUEST.json")]
    input: PathBuf,
    /// Save the response's receipt here: the Cloak-Receipt header value on the first line, and
    /// `salt=HEX` (the salt of its digests, which checking it against the bodies takes) on the
    /// second. Share the first line alone to prove which model answered without letting anyone
    /// test guesses of the bodies
    #[arg(long, value_name = "FILE")]
    receipt_out: Option<PathBuf>,
    /// Print exactly the KServe v2 response body (JSON) and nothing else
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &InferArgs) -> Result<(), Reported> {
    if args.model.is_empty()
        || !args
            .model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Failure::usage(
            "invalid-argument",
            "--model: model names are ASCII letters, digits, '.', '_' and '-'",
        )
        .into());
    }
    let body = read_request(&args.input)?;
    // The outputs are checked before the request goes out: an answer is never computed only
    // to be lost for want of a place to keep it.
    let mut paths = vec![("request", args.input.as_path())];
    if let Some(path) = args.server.attestation_out() {
        paths.push(("attestation output", path.as_path()));
    }
    if let Some(path) = &args.receipt_out {
        paths.push(("receipt output", path.as_path()));
    }
    files::ensure_distinct(&paths)?;
    args.server.check_outputs()?;
    let existing = args.server.existing();
    if let Some(path) = &args.receipt_out {
        files::check_output(path, "receipt", existing)?;
    }
    let builder = args.server.client()?;
    let runtime = crate::runtime::current_thread()?;
    let client = match runtime.block_on(builder.connect(args.server.url())) {
        Ok(client) => client,
        Err(e) => return Err(report::refused(&e, false)?),
    };
    let path = format!("/v2/models/{}/infer", args.model);
    let (response, receipt) = match runtime.block_on(client.send_inference(&path, body, None)) {
        Ok(answer) => answer,
        Err(Error::Receipt(e)) => {
            eprintln!(
                "error: the response's receipt is INVALID ({}): {e}",
                e.code()
            );
            return Err(Reported(std::process::ExitCode::from(EXIT_VERIFICATION)));
        }
        Err(e) => return Err(Failure::usage(e.code(), e.to_string()).into()),
    };
    // The attestation the receipt verifies against: the appraised server's, or that of the
    // fleet replica that answered.
    if let Some(path) = args.server.attestation_out() {
        match response.answering_attestation() {
            Some(answering) if receipt.is_some() => {
                files::write_json(path, &answering, "attestation", existing)?;
            }
            _ => files::write_json(
                path,
                client.appraisal().attestation(),
                "attestation",
                existing,
            )?,
        }
    }
    let Some(receipt) = receipt else {
        let status = ServerStatus::from_response(&response);
        return Err(Failure::usage("server-error", status.to_string()).into());
    };
    if let (Some(path), Some(text)) = (&args.receipt_out, &response.receipt) {
        let mut kept = format!("{text}\n");
        if let Some(salt) = &response.receipt_salt {
            kept.push_str(&format!("salt={}\n", hex::encode(salt)));
        }
        files::write_output(path, kept.as_bytes(), "receipt", existing)?;
    }
    // A request that asked for binary outputs gets them; show them as JSON.
    let body = match response.header_len {
        None => response.body,
        Some(header_len) => {
            let parsed =
                InferResponse::parse(&response.body, Some(header_len), &kserve::Limits::default())
                    .map_err(|e| Failure::usage("protocol-error", format!("the response: {e}")))?;
            parsed
                .encode(|_| TensorEncoding::Json)
                .map_err(|e| Failure::usage("protocol-error", e.to_string()))?
                .body()
                .to_vec()
        }
    };
    if args.json {
        let text = String::from_utf8(body)
            .map_err(|_| Failure::usage("protocol-error", "the response is not UTF-8"))?;
        say!("{text}")?;
        return Ok(());
    }
    let appraisal = client.appraisal();
    let server = appraisal.server();
    let verified = server.accepted().verified();
    say!(
        "server accepted: MRENCLAVE {} MRSIGNER {} (TCB {}{})",
        report::measurement(server, "mrenclave"),
        report::measurement(server, "mrsigner"),
        verified.tcb_status().as_str(),
        if verified.is_simulated() {
            ", SIMULATED platform"
        } else {
            ""
        }
    )?;
    say!(
        "receipt verified: request {} on model {} (sha256 {})",
        receipt.request_id,
        receipt.model,
        hex::encode(receipt.model_sha256)
    )?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| Failure::usage("protocol-error", format!("the response: {e}")))?;
    Ok(report::print_json(&value)?)
}

/// Reads and checks the request file (a KServe v2 JSON request) before anything is sent.
fn read_request(path: &Path) -> Result<Vec<u8>, Failure> {
    let body = files::read_limited(path, MAX_REQUEST_FILE, "request")?;
    InferRequest::parse(&body, None, &kserve::Limits::default()).map_err(|e| {
        Failure::usage(
            "invalid-request",
            format!("{} is not a KServe v2 request: {e}", path.display()),
        )
    })?;
    Ok(body)
}
