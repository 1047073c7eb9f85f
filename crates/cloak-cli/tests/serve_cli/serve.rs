//! The server and a data owner: appraisal, inference, refusals, and the unmodified
//! `tritonclient`.

use cloak_test_support::cli::ok;
use serde_json::Value;

use crate::{
    assert_triton_report, cloak, cloak_infer, cloak_mrenclave, receipt_verify_args, serve,
    server_metrics, triton_check, tritonclient, write_request,
};

#[test]
fn attest_and_infer_against_a_served_model() {
    let server = serve(&[]);
    let summary = server.process.stdout.join("\n");
    assert!(summary.contains("model ready      demo"), "{summary}");
    assert!(summary.contains("model FAILED     tampered"), "{summary}");

    let mrenclave = hex::encode(cloak_mrenclave());
    let policy = server.policy();

    // The data owner appraises the server: verdict, measurements, claims.
    let mut args = vec![
        "attest",
        "server",
        &server.url,
        "--json",
        "--nonce",
        "00112233",
    ];
    args.extend(policy.iter().map(String::as_str));
    let out = cloak(&args);
    ok(&out);
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["verdict"], "accepted");
    assert_eq!(verdict["simulated"], true);
    assert_eq!(verdict["nonce"], "00112233");
    assert_eq!(verdict["measurements"]["mrenclave"], mrenclave.as_str());
    assert_eq!(verdict["claims"]["platform"], "sim");
    let models = verdict["claims"]["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{models:?}");
    assert_eq!(models[0]["name"], "demo");
    assert_eq!(
        models[0]["sha256"],
        hex::encode(cloak_crypto::hash::sha256(
            cloak_test_support::models::DEMO_ONNX
        ))
        .as_str()
    );

    // Inference: exactly the KServe v2 response body with --json.
    let request = write_request(server.dir.path());
    let out = cloak_infer(&server.url, "demo", &request, &policy, true);
    ok(&out);
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["model_name"], "demo");
    assert_eq!(response["id"], "cli-1");
    let probabilities = response["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(probabilities.len(), 6);
    let row: f64 = probabilities[..3].iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((row - 1.0).abs() < 1e-5, "softmax rows sum to 1: {row}");

    // Without --json: the verdict line, then the response.
    let out = cloak_infer(&server.url, "demo", &request, &policy, false);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("server accepted: MRENCLAVE"), "{text}");
    assert!(text.contains("SIMULATED"), "{text}");

    // An unknown model is the server's error, exit 2.
    let out = cloak_infer(&server.url, "nope", &request, &policy, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));

    // The tampered model: the server says why, over the protocol.
    let out = cloak_infer(&server.url, "tampered", &request, &policy, false);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("503") && stderr.contains("chunk-authentication"),
        "{stderr}"
    );

    // The server logged every request (debug level), and never an input value.
    let log = server.log();
    assert!(log.contains("inference done"), "{log}");
    assert!(!log.contains("3.14159"), "{log}");

    // A second server whose listener for encrypted requests is taken does not start at all:
    // exit 2, naming the flag and the address, and nothing listening.
    let taken = server.url.strip_prefix("https://").unwrap();
    let mut args = server.args.clone();
    let at = args.iter().position(|a| a == "--listen").unwrap() + 1;
    args[at] = "127.0.0.1:0".to_owned();
    args.extend(["--ohttp-listen".to_owned(), taken.to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cloak(&args);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {taken} (--ohttp-listen)")),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
}

#[test]
fn a_rejected_server_gets_nothing() {
    let server = serve(&[]);
    let request = write_request(server.dir.path());
    let wrong = server.sim.policy_flags([0xab; 32]);
    let pinned_only = vec!["--expect-mrenclave".to_owned(), "ab".repeat(32)];
    let cases: Vec<(Vec<String>, &str)> = vec![
        (wrong, "measurement-mismatch"),
        // The strict default trusts only Intel's root.
        (pinned_only, "untrusted-root"),
    ];
    for (policy, reason) in cases {
        let mut args = vec!["attest", "server", &server.url, "--json"];
        args.extend(policy.iter().map(String::as_str));
        let out = cloak(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(verdict["verdict"], "rejected");
        assert_eq!(verdict["reason"], reason);

        let out = cloak_infer(&server.url, "demo", &request, &policy, true);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            out.stdout.is_empty(),
            "nothing printed for a refused server"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("REJECTED") && stderr.contains(reason),
            "{stderr}"
        );
    }
    // Nothing was inferred: the server's own counters say so.
    let metrics = server_metrics(&server);
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("cloak_inference_requests_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn a_policy_that_names_no_enclave_is_refused_unless_dangerously_allowed() {
    let server = serve(&[]);
    let request = write_request(server.dir.path());
    // The simulation root trusted, but no measurement: any enclave under that root would do.
    let root_only = server.sim.policy_flags([0; 32])[..2].to_vec();
    assert_eq!(root_only[0], "--trust-root");
    for args in [
        vec!["attest", "server", &server.url],
        vec!["infer", &server.url, "--model", "demo"],
        vec![
            "proxy",
            "--upstream",
            &server.url,
            "--listen",
            "127.0.0.1:0",
        ],
    ] {
        let mut args = args.clone();
        args.extend(root_only.iter().map(String::as_str));
        if args[0] == "infer" {
            args.extend(["--input", request.to_str().unwrap()]);
        }
        let out = cloak(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("names no enclave") && stderr.contains("--allow-any-enclave"),
            "{stderr}"
        );
    }
    // Said explicitly, it goes on, and warns.
    let mut args = vec![
        "attest",
        "server",
        server.url.as_str(),
        "--allow-any-enclave",
    ];
    args.extend(root_only.iter().map(String::as_str));
    let out = cloak(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("warning: the appraisal policy names no enclave")
    );
    // Nothing was inferred.
    let metrics = server_metrics(&server);
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("cloak_inference_requests_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn a_debug_enclave_is_refused_unless_allowed() {
    let server = serve(&["--sim-debug"]);
    let policy = server.policy();
    let mut args = vec!["attest", "server", server.url.as_str(), "--json"];
    args.extend(policy.iter().map(String::as_str));
    let out = cloak(&args);
    assert_eq!(out.status.code(), Some(1));
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["reason"], "debug-enclave");
    args.push("--allow-debug");
    let out = cloak(&args);
    ok(&out);
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["measurements"]["debug"], true);
}

#[test]
fn tritonclient_works_unmodified() {
    let Some(python) = tritonclient() else { return };
    let server = serve(&[]);
    let report = triton_check(&python, server.url.strip_prefix("https://").unwrap());
    assert_triton_report(&server, &report);
}

/// The server is spelled the same way by every command that talks to one (`--server`, or the
/// earlier first argument and `--upstream`), the accepted attestation goes to
/// `--attestation-out` (or the earlier `--out`), and the flags that weaken appraisal are grouped
/// under their own heading.
#[test]
fn commands_spell_their_shared_flags_alike() {
    let server = serve(&[]);
    let dir = server.dir.path();
    let policy = server.policy();
    let request = write_request(dir);
    let new_style = dir.join("new.json");
    let old_style = dir.join("old.json");
    for (args, out) in [
        (
            vec![
                "attest",
                "server",
                "--server",
                &server.url,
                "--attestation-out",
            ],
            &new_style,
        ),
        (vec!["attest", "server", &server.url, "--out"], &old_style),
    ] {
        let mut args = args;
        args.push(cloak_test_support::cli::s(out));
        args.extend(policy.iter().map(String::as_str));
        ok(&cloak(&args));
        let saved: Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
        assert_eq!(saved["format"], "cloak-attestation/v1", "{saved}");
    }
    let mut args = vec![
        "infer",
        "--server",
        &server.url,
        "--model",
        "demo",
        "--input",
        cloak_test_support::cli::s(&request),
        "--json",
    ];
    args.extend(policy.iter().map(String::as_str));
    ok(&cloak(&args));
    // Both spellings at once is a usage error.
    let out = cloak(&[
        "infer",
        &server.url,
        "--server",
        &server.url,
        "--model",
        "demo",
    ]);
    assert_eq!(out.status.code(), Some(2));
    for command in [
        ["infer", "--help"],
        ["proxy", "--help"],
        ["attest", "server"],
    ] {
        let mut args = command.to_vec();
        if args[1] == "server" {
            args.push("--help");
        }
        let out = cloak(&args);
        ok(&out);
        let help = String::from_utf8_lossy(&out.stdout);
        let dangerous = help
            .split("Dangerous (these weaken appraisal):")
            .nth(1)
            .unwrap_or_else(|| panic!("{args:?}: {help}"));
        for flag in [
            "--trust-root",
            "--allow-debug",
            "--allow-advisory",
            "--allow-status",
        ] {
            assert!(dangerous.contains(flag), "{args:?}: {flag}");
        }
        assert!(help.contains("--server <URL>"), "{args:?}: {help}");
        assert!(help.contains("--attestation-out"), "{args:?}: {help}");
    }
    // One duration format: a unit, or plain seconds; anything else is a usage error.
    let out = cloak(&["proxy", "--server", &server.url, "--reverify-every", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("30s"));
}

/// `cloak infer` asks for BLAKE3 receipts (version 3) unless told `--receipt-digest sha256`
/// (version 2), replaces its outputs only with `--force`, and `cloak receipt verify
/// --require-digest` holds a receipt to one kind.
#[test]
fn receipts_are_blake3_unless_sha256_is_asked_for() {
    let server = serve(&[]);
    let dir = server.dir.path();
    let policy = server.policy();
    let request = write_request(dir);
    let (receipt, attestation) = (dir.join("receipt.txt"), dir.join("attestation.json"));
    let s = cloak_test_support::cli::s;
    let mut infer = vec![
        "infer",
        server.url.as_str(),
        "--model",
        "demo",
        "--input",
        s(&request),
        "--receipt-out",
        s(&receipt),
        "--attestation-out",
        s(&attestation),
    ];
    infer.extend(policy.iter().map(String::as_str));
    let verify = receipt_verify_args(&receipt, &attestation, &request, &policy);
    let verdict = |extra: &[&str]| {
        let mut args = verify.clone();
        args.extend_from_slice(extra);
        let out = cloak(&args);
        let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), verdict)
    };

    ok(&cloak(&infer));
    let (status, first) = verdict(&[]);
    assert_eq!(status, Some(0), "{first}");
    assert_eq!(first["version"], 3);
    assert_eq!(first["body_digest"], "salted-blake3");
    // The outputs exist now: replaced only with --force.
    assert_eq!(cloak(&infer).status.code(), Some(2));
    let mut sha256 = infer.clone();
    sha256.extend_from_slice(&["--receipt-digest", "sha256", "--force"]);
    ok(&cloak(&sha256));
    let (status, second) = verdict(&[]);
    assert_eq!(status, Some(0), "{second}");
    assert_eq!(second["version"], 2);
    assert_eq!(second["body_digest"], "salted-sha256");
    assert_ne!(second["request_id"], first["request_id"]);
    // --require-digest: this version 2 receipt passes where SHA-256 is required, and is
    // refused where BLAKE3 is.
    assert_eq!(verdict(&["--require-digest", "sha256"]).0, Some(0));
    let (status, refused) = verdict(&["--require-digest", "blake3"]);
    assert_eq!(status, Some(1));
    assert_eq!(refused["reason"], "receipt-digest-not-asked", "{refused}");
    let mut unknown = infer.clone();
    unknown.extend_from_slice(&["--receipt-digest", "md5", "--force"]);
    assert_eq!(cloak(&unknown).status.code(), Some(2));
}
