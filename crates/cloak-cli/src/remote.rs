//! Commands that talk to a running Cloak server: `cloak attest server` and `cloak infer`.
//!
//! Both appraise the server first (its attested TLS certificate and a fresh attestation for a
//! nonce) and refuse — exit 1, the inference request never sent — when the policy rejects it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use cloak_attest::collateral::Collateral;
use cloak_client::{Client, ClientError, Method, Remote, Transport, VerifiedServer};
use cloak_fs::AtomicFile;
use cloak_proto::kserve::{self, InferRequest, InferResponse, TensorEncoding};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Reported;
use crate::attest::{PolicyArgs, build_policy, print_fields};
use crate::failure::{EXIT_VERIFICATION, Failure};
use crate::files::{self, Existing};

/// Largest request file read.
const MAX_REQUEST_FILE: u64 = 256 << 20;

/// Arguments of `cloak attest server`.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The server (https://host:port)
    url: String,
    /// The nonce for the fresh attestation (hex, 1 to 64 bytes) [default: 32 random bytes]
    #[arg(long, value_name = "HEX")]
    nonce: Option<String>,
    /// Appraise with this collateral (dcap-qvl QuoteCollateralV3 JSON) instead of the one the
    /// server relays
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Also save the accepted attestation (JSON) here, for checking receipts offline
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

/// Arguments of `cloak infer`.
#[derive(Debug, Args)]
pub(crate) struct InferArgs {
    /// The server (https://host:port), or with --mode ohttp the proxy or load balancer in
    /// front of it (https:// or http://)
    url: String,
    /// How the request reaches the enclave: attested TLS, or encapsulated (Oblivious HTTP) to
    /// the attested HPKE key through whatever is in between
    #[arg(long, value_enum, default_value = "atls")]
    mode: crate::proxy::ModeArg,
    /// With --mode ohttp over https: trust these CA certificates (PEM) for the transport's TLS
    #[arg(long, value_name = "FILE.pem")]
    ca: Option<PathBuf>,
    /// Save the response's receipt (the Cloak-Receipt header value) here
    #[arg(long, value_name = "FILE")]
    receipt_out: Option<PathBuf>,
    /// Save the attestation the server was accepted on (JSON) here
    #[arg(long, value_name = "FILE")]
    attestation_out: Option<PathBuf>,
    /// The model to run
    #[arg(long, value_name = "NAME")]
    model: String,
    /// The KServe v2 inference request body (JSON)
    #[arg(long, value_name = "REQUEST.json")]
    input: PathBuf,
    /// Appraise with this collateral (dcap-qvl QuoteCollateralV3 JSON) instead of the one the
    /// server relays; then nothing at all is sent before the server is appraised
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print exactly the KServe v2 response body (JSON) and nothing else
    #[arg(long)]
    json: bool,
}

pub(crate) fn attest_server(args: &ServerArgs) -> Result<(), Reported> {
    let policy = build_policy(&args.policy)?;
    let collateral = read_collateral(args.collateral.as_ref())?;
    let nonce = match &args.nonce {
        Some(text) => hex::decode(text.trim().trim_start_matches("0x"))
            .map_err(|e| Failure::usage("invalid-argument", format!("--nonce: {e}")))?,
        None => {
            let mut nonce = vec![0u8; 32];
            getrandom::fill(&mut nonce).map_err(|e| Failure::usage("random", e.to_string()))?;
            nonce
        }
    };
    let outcome = runtime()?.block_on(Client::bootstrap_with_nonce(
        &args.url, policy, collateral, &nonce,
    ));
    match outcome {
        Ok(client) => {
            if let (Some(path), Some(document)) = (&args.out, client.attestation()) {
                write_json(path, document, "attestation")?;
            }
            print_accepted(client.server(), &nonce, args.json)?;
            Ok(())
        }
        Err(e) => Err(refused(&e, args.json)?),
    }
}

pub(crate) fn infer(args: &InferArgs) -> Result<(), Reported> {
    if !args
        .model
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        || args.model.is_empty()
    {
        return Err(Failure::usage(
            "invalid-argument",
            "--model: model names are ASCII letters, digits, '.', '_' and '-'",
        )
        .into());
    }
    let body = read_request(&args.input)?;
    let policy = build_policy(&args.policy)?;
    let collateral = read_collateral(args.collateral.as_ref())?;
    let transport = transport(args.ca.as_ref())?;
    let runtime = runtime()?;
    let connect = Remote::connect(&args.url, args.mode.into(), policy, collateral, transport);
    let remote = match runtime.block_on(connect) {
        Ok(remote) => remote,
        Err(e) => return Err(refused(&e, false)?),
    };
    if let (Some(path), Some(document)) = (&args.attestation_out, remote.attestation()) {
        write_json(path, document, "attestation")?;
    }
    let path = format!("/v2/models/{}/infer", args.model);
    let exchange = async {
        let mut session = remote.session().await?;
        let response = session
            .send(Method::POST, &path, body.clone(), None)
            .await?;
        // The claims of the connection that answered (attested TLS appraises each one).
        let claims = session.server().claims().clone();
        Ok::<_, ClientError>((response, claims))
    };
    let (response, claims) = runtime
        .block_on(exchange)
        .map_err(|e| Failure::usage(e.code(), e.to_string()))?;
    if !response.status.is_success() {
        let message = serde_json::from_slice::<Value>(&response.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&response.body).into_owned());
        return Err(Failure::usage(
            "server-error",
            format!("the server answered {}: {message}", response.status),
        )
        .into());
    }
    // The answer counts only with a receipt from the appraised enclave for exactly this
    // request and this response.
    let receipt = match response.verify_receipt(&claims, &body) {
        Ok(receipt) => receipt,
        Err(e) => {
            eprintln!(
                "error: the response's receipt is INVALID ({}): {e}",
                e.code()
            );
            return Err(Reported(std::process::ExitCode::from(EXIT_VERIFICATION)));
        }
    };
    if let (Some(path), Some(text)) = (&args.receipt_out, &response.receipt) {
        write_text(path, text.as_bytes(), "receipt")?;
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
    let server = remote.server();
    say!(
        "server accepted: {} (TCB {}{})",
        measurement_line(server),
        server.accepted().verified().tcb_status().as_str(),
        if server.accepted().verified().is_simulated() {
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
    let text =
        serde_json::to_string_pretty(&value).map_err(|e| Failure::usage("json", e.to_string()))?;
    say!("{text}")?;
    Ok(())
}

/// The transport trust for encapsulated requests over https.
pub(crate) fn transport(ca: Option<&PathBuf>) -> Result<Transport, Failure> {
    match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| Failure::io("read", path, &e))?;
            Transport::with_ca_pem(&pem)
                .map_err(|e| Failure::usage("unreadable-input", format!("{}: {e}", path.display())))
        }
        None => Ok(Transport::default()),
    }
}

/// Writes `value` as pretty JSON to a new file (never over an existing one).
fn write_json<T: Serialize>(path: &Path, value: &T, what: &str) -> Result<(), Failure> {
    let text =
        serde_json::to_vec_pretty(value).map_err(|e| Failure::usage("json", e.to_string()))?;
    write_text(path, &text, what)
}

/// Writes `bytes` to a new file atomically (never over an existing one).
pub(crate) fn write_text(path: &Path, bytes: &[u8], what: &str) -> Result<(), Failure> {
    files::check_output(path, what, Existing::Keep)?;
    let mut file = AtomicFile::create(path, 0o644).map_err(|e| Failure::io("create", path, &e))?;
    file.file()
        .write_all(bytes)
        .map_err(|e| Failure::io("write", path, &e))?;
    files::commit_output(file, path, what, Existing::Keep).map_err(|e| e.failure)
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage("runtime", format!("cannot start the runtime: {e}")))
}

pub(crate) fn read_collateral(path: Option<&PathBuf>) -> Result<Option<Collateral>, Failure> {
    let Some(path) = path else { return Ok(None) };
    let bytes = std::fs::read(path).map_err(|e| Failure::io("read", path, &e))?;
    Collateral::from_json(&bytes)
        .map(Some)
        .map_err(|e| Failure::usage("unreadable-input", format!("{}: {e}", path.display())))
}

/// Reads and checks the request file (a KServe v2 JSON request) before anything is sent.
fn read_request(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    let metadata = std::fs::metadata(path).map_err(|e| Failure::io("read", path, &e))?;
    if metadata.len() > MAX_REQUEST_FILE {
        return Err(Failure::usage(
            "input-too-large",
            format!("{} is larger than {MAX_REQUEST_FILE} bytes", path.display()),
        ));
    }
    let body = std::fs::read(path).map_err(|e| Failure::io("read", path, &e))?;
    InferRequest::parse(&body, None, &kserve::Limits::default()).map_err(|e| {
        Failure::usage(
            "invalid-request",
            format!("{} is not a KServe v2 request: {e}", path.display()),
        )
    })?;
    Ok(body)
}

fn measurement_line(server: &VerifiedServer) -> String {
    match serde_json::to_value(server.measurements()) {
        Ok(Value::Object(fields)) => {
            let field = |name: &str| fields.get(name).and_then(Value::as_str).unwrap_or("?");
            format!(
                "MRENCLAVE {} MRSIGNER {}",
                field("mrenclave"),
                field("mrsigner")
            )
        }
        _ => "?".to_owned(),
    }
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
            "tls_spki_sha256": hex::encode(claims.tls_spki_sha256),
            "hpke_key_config": hex::encode(&claims.hpke_key_config),
            "receipt_public_key": hex::encode(&claims.receipt_public_key),
            "models": models,
        }),
    };
    if as_json {
        let text = serde_json::to_string_pretty(&accepted)
            .map_err(|e| Failure::usage("json", e.to_string()))?;
        return say!("{text}");
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
        print_fields(fields)?;
    }
    say!("  {:<16} {}", "platform", claims.platform)?;
    say!("  {:<16} {}", "server_version", claims.server_version)?;
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

/// Reports a refused or unreachable server; attestation refusals exit 1, the rest 2.
fn refused(error: &ClientError, as_json: bool) -> Result<Reported, Failure> {
    if as_json && error.is_rejection() {
        let text = serde_json::to_string_pretty(&json!({
            "verdict": "rejected",
            "reason": error.code(),
            "message": error.to_string(),
        }))
        .map_err(|e| Failure::usage("json", e.to_string()))?;
        say!("{text}")?;
    }
    if error.is_rejection() {
        eprintln!("error: server REJECTED ({}): {error}", error.code());
        Ok(Reported(std::process::ExitCode::from(EXIT_VERIFICATION)))
    } else {
        Ok(Reported::from(Failure::usage(
            error.code(),
            error.to_string(),
        )))
    }
}
