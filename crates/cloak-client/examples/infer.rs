//! Runs one KServe v2 request on a Cloak server after appraising it, and prints the answer and
//! its verified receipt.
//!
//! ```sh
//! cargo run -p cloak-client --example infer -- URL MODEL REQUEST.json ROOT.der MRENCLAVE
//! ```
//!
//! `ROOT.der` is the trust root the server's quotes must chain to (a simulated platform's
//! `root.der`, for a server on `--platform sim`); `MRENCLAVE` the measurement to pin (64 hex
//! digits). Over attested TLS by default; set `CLOAK_MODE=ohttp` for encapsulated requests.

use std::process::ExitCode;

use cloak_client::{
    AppraisalPolicy, Client, InferRequest, Measurement, Mode, SgxIdentityPolicy, TrustRootPolicy,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, model, request, root, mrenclave] = args.as_slice() else {
        return Err("usage: infer URL MODEL REQUEST.json ROOT.der MRENCLAVE".into());
    };
    let mrenclave: [u8; 32] = cloak_client::attest::types::parse_hex(mrenclave)?;
    let policy = AppraisalPolicy::strict()
        .with_trust_root(TrustRootPolicy::Der(std::fs::read(root)?))
        .with_sgx_identity(SgxIdentityPolicy {
            mrenclave: Some(vec![Measurement::from_bytes(mrenclave)]),
            ..SgxIdentityPolicy::default()
        });
    let mode = match std::env::var("CLOAK_MODE").as_deref() {
        Ok("ohttp") => Mode::Encapsulated,
        _ => Mode::AttestedTls,
    };
    let request = InferRequest::parse(
        &std::fs::read(request)?,
        None,
        &cloak_client::proto::kserve::Limits::default(),
    )?;

    let client = Client::builder()
        .policy(policy)
        .mode(mode)
        .connect(url)
        .await?;
    let server = client.appraisal();
    println!(
        "accepted: TCB {}, models {:?}",
        server.server().accepted().verified().tcb_status().as_str(),
        server
            .server()
            .claims()
            .models
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
    );
    let answer = client.infer(model, &request).await?;
    println!(
        "receipt verified: request {} on model {}",
        answer.receipt.request_id, answer.receipt.model
    );
    for output in answer.response.outputs() {
        println!(
            "{}: {:?} {:?}",
            output.name(),
            output.tensor().dtype(),
            output.tensor().shape()
        );
    }
    Ok(())
}
