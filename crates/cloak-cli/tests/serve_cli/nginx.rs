//! Encrypted requests through a real, untrusted, TLS-terminating nginx that logs every body it
//! forwards: it sees ciphertext; a plaintext control request shows it would have seen the rest.

use std::path::{Path, PathBuf};
use std::process::Command;

use cloak_test_support::cli::{ok, s};
use serde_json::Value;

use crate::{cloak, cloak_infer, proxy, receipt_verify_args, serve};

/// nginx in front of one upstream, logging every request body it forwards.
struct Nginx {
    /// Kept running until the test ends.
    _running: cloak_test_support::nginx::Nginx,
    url: String,
    ca: PathBuf,
    access_log: PathBuf,
}

impl Nginx {
    fn access_log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.access_log).unwrap_or_default()).into_owned()
    }

    /// The access log once it has a line containing `needle`: nginx writes a request's line
    /// after the response has gone out, so a client can be faster than the log.
    fn access_log_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.access_log();
            if log.contains(needle) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Starts nginx in `dir` in front of `upstream` (`https://host:port`, re-encrypting to the
/// server's TLS without checking it, or `http://host:port`), or `None` where there is no nginx
/// (CI installs it and sets `CLOAK_REQUIRE_NGINX=1`).
fn nginx(dir: &Path, upstream: &str) -> Option<Nginx> {
    // The access log records each request body as nginx forwards it (non-printable bytes
    // escaped as \xHH).
    let inner = cloak_test_support::nginx::start(dir, |r, port| {
        format!(
            r#"    log_format bodies '$remote_addr "$request" $status "$http_content_type" "$request_body"';
    access_log {r}/access.log bodies;
    client_body_buffer_size 1m;
    client_max_body_size 16m;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {r}/lb.pem;
        ssl_certificate_key {r}/lb.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass {upstream};
            proxy_ssl_verify off;
            proxy_ssl_protocols TLSv1.3;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"#
        )
    })?;
    Some(Nginx {
        url: inner.url.clone(),
        ca: inner.ca.clone(),
        access_log: inner.root.join("access.log"),
        _running: inner,
    })
}

/// POSTs `data` (curl's `--data-binary`: text, or `@FILE`) as `content_type` to `url` through
/// the load balancer whose CA is `ca`; returns the status code and the body.
fn post_through(ca: &str, content_type: &str, data: &str, url: &str) -> (u16, String) {
    let header = format!("content-type: {content_type}");
    curl(&["--cacert", ca, "-H", &header, "--data-binary", data, url])
}

/// `curl` with `args`; returns the status code and the body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_owned())
}

#[test]
fn encrypted_requests_pass_a_tls_terminating_nginx_that_sees_only_ciphertext() {
    let server = serve(&["--ohttp-listen", "127.0.0.1:0"]);
    let Some(lb) = nginx(server.dir.path(), &server.url) else {
        return;
    };
    let dir = server.dir.path();
    let policy = server.policy();
    let policy_args: Vec<&str> = policy.iter().map(String::as_str).collect();
    // Values no log could contain by chance.
    let request = dir.join("secret-request.json");
    std::fs::write(
        &request,
        r#"{"inputs":[{"name":"features","datatype":"FP32","shape":[2,4],
            "data":[0.1234567,-0.7654321,0.3141593,0.2718282,-0.4242424,0.9999125,0.0123457,0.7777771]}]}"#,
    )
    .unwrap();
    // Every input value, as the request spells it.
    let secrets = [
        "0.1234567",
        "0.7654321",
        "0.3141593",
        "0.2718282",
        "0.4242424",
        "0.9999125",
        "0.0123457",
        "0.7777771",
    ];

    // A data owner through the load balancer: encapsulated to the enclave's attested key.
    let receipt = dir.join("receipt.txt");
    let attestation = dir.join("attestation.json");
    let mut args = vec![
        "infer",
        &lb.url,
        "--mode",
        "ohttp",
        "--ca",
        s(&lb.ca),
        "--model",
        "demo",
        "--input",
        s(&request),
        "--json",
        "--receipt-out",
        s(&receipt),
        "--attestation-out",
        s(&attestation),
    ];
    args.extend_from_slice(&policy_args);
    let out = cloak(&args);
    ok(&out);
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    let outputs: Vec<String> = response["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(outputs.len(), 6);
    // The output values distinctive enough to look for (not 0.0 or 1.0).
    let outputs: Vec<String> = outputs.into_iter().filter(|v| v.len() >= 8).collect();
    assert!(!outputs.is_empty(), "{response}");
    // The same request over attested TLS straight to the server gives the same numbers.
    let direct = cloak_infer(&server.url, "demo", &request, &policy, true);
    ok(&direct);
    let direct: Value = serde_json::from_slice(&direct.stdout).unwrap();
    assert_eq!(direct["outputs"], response["outputs"]);

    // nginx forwarded ciphertext: its log has the encapsulated request, no input or output
    // value; neither has the server's debug log.
    let ohttp_line = "\"POST /v1/ohttp HTTP/1.1\" 200 \"message/ohttp-req\"";
    let values: Vec<&str> = secrets
        .iter()
        .copied()
        .chain(outputs.iter().map(String::as_str))
        .collect();
    let saw_ciphertext_only = |lb: &Nginx| {
        let log = lb.access_log_with(ohttp_line);
        assert!(log.contains(ohttp_line), "{log}");
        let server_log = server.log();
        for value in &values {
            assert!(!log.contains(value), "nginx logged {value}: {log}");
            assert!(!server_log.contains(value), "the server logged {value}");
        }
    };
    saw_ciphertext_only(&lb);

    // The receipt verifies offline against the saved attestation, for exactly this request.
    let verify = receipt_verify_args(&receipt, &attestation, &request, &policy);
    let out = cloak(&verify);
    ok(&out);
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["verdict"], "valid");
    assert_eq!(verdict["model"], "demo");
    // `cloak infer` asks for BLAKE3 body digests (receipt version 3), through the balancer too.
    assert_eq!(verdict["version"], 3);
    assert_eq!(verdict["body_digest"], "salted-blake3");
    // Another request body, a changed receipt byte, or a policy that rejects the enclave: exit 1.
    let other = dir.join("other-request.json");
    std::fs::write(&other, b"{}").unwrap();
    let mut wrong_body = verify.clone();
    wrong_body[6] = s(&other);
    assert!(refused(&wrong_body).contains("receipt-input-mismatch"));
    let text = std::fs::read_to_string(&receipt).unwrap();
    let mut bytes = text.trim().as_bytes().to_vec();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered = dir.join("tampered-receipt.txt");
    std::fs::write(&tampered, &bytes).unwrap();
    let mut changed = verify.clone();
    changed[2] = s(&tampered);
    refused(&changed);
    // The receipt alone (its first line, as one would share it) proves the model but cannot be
    // checked against bodies without the salt kept beside it.
    let (shared_text, salt_line) = text.trim().split_once('\n').unwrap();
    let salt = salt_line.strip_prefix("salt=").unwrap();
    assert_eq!(salt.len(), 32);
    let shared = dir.join("shared-receipt.txt");
    std::fs::write(&shared, shared_text).unwrap();
    let mut unsalted = verify.clone();
    unsalted[2] = s(&shared);
    assert!(refused(&unsalted).contains("receipt-salt-missing"));
    unsalted.extend_from_slice(&["--salt", salt]);
    ok(&cloak(&unsalted));
    let zeros = "00".repeat(32);
    let mut rejecting = verify.clone();
    let pin = rejecting
        .iter()
        .position(|a| *a == "--expect-mrenclave")
        .unwrap();
    rejecting[pin + 1] = &zeros;
    assert!(refused(&rejecting).contains("measurement-mismatch"));

    // Attested TLS cannot pass a TLS-terminating proxy: the client sees nginx's certificate,
    // which carries no evidence, and sends nothing.
    let mut atls = vec!["infer", &lb.url, "--model", "demo", "--input", s(&request)];
    atls.extend_from_slice(&policy_args);
    refused(&atls);

    // The gateway's own refusals, in the clear and without content.
    let ca = s(&lb.ca);
    let gateway = format!("{}/v1/ohttp", lb.url);
    let (status, body) = post_through(
        ca,
        "message/ohttp-req",
        "not an encapsulated request",
        &gateway,
    );
    // Its first byte is not the attested key's id.
    assert_eq!(status, 400);
    assert!(body.contains("ohttp-key"), "{body}");
    assert!(!body.contains("encapsulated request"), "{body}");
    let (status, _) = post_through(ca, "application/json", "{}", &gateway);
    assert_eq!(status, 415);

    // The control: a plaintext request through the same nginx lands in its log, so the
    // checks above could have failed.
    let infer = format!("{}/v2/models/demo/infer", lb.url);
    let (status, _) = post_through(ca, "application/json", &format!("@{}", s(&request)), &infer);
    assert_eq!(status, 200);
    assert!(lb.access_log_with("0.1234567").contains("0.1234567"));

    // Without re-encryption: nginx forwards to the server's plain-HTTP listener for encrypted
    // requests. The same request gets the same answer (its receipt checked by `cloak infer`),
    // nginx still logs only ciphertext, and a plaintext request through it gets nothing.
    let plain = server
        .process
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("cloak serve: encrypted requests on "))
        .and_then(|url| url.strip_suffix("/v1/ohttp"))
        .unwrap_or_else(|| panic!("{:?}", server.process.stdout))
        .to_owned();
    assert!(plain.starts_with("http://"), "{plain}");
    let plain_dir = dir.join("plain");
    std::fs::create_dir(&plain_dir).unwrap();
    let plain_lb = nginx(&plain_dir, &plain).unwrap();
    let mut args = vec![
        "infer",
        &plain_lb.url,
        "--mode",
        "ohttp",
        "--ca",
        s(&plain_lb.ca),
        "--model",
        "demo",
        "--input",
        s(&request),
        "--json",
    ];
    args.extend_from_slice(&policy_args);
    let out = cloak(&args);
    ok(&out);
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["outputs"], response["outputs"]);
    saw_ciphertext_only(&plain_lb);
    let plain_infer = format!("{}/v2/models/demo/infer", plain_lb.url);
    let (status, body) = post_through(
        s(&plain_lb.ca),
        "application/json",
        &format!("@{}", s(&request)),
        &plain_infer,
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("plaintext-refused"), "{body}");

    // `cloak proxy --mode ohttp` through nginx; the server restarts behind it (new keys, new
    // identity) and the proxy appraises it again instead of failing.
    let mut args = vec!["--mode", "ohttp", "--ca", ca];
    args.extend_from_slice(&policy_args);
    let proxy = proxy(dir, &lb.url, &args).unwrap();
    let infer_url = format!("{}/v2/models/demo/infer", proxy.url());
    let post = [
        "-D",
        "-",
        "-H",
        "content-type: application/json",
        "--data-binary",
        &format!("@{}", s(&request)),
        &infer_url,
    ];
    let (status, body) = curl(&post);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_ascii_lowercase().contains("cloak-receipt: "),
        "{body}"
    );
    let mut server = server;
    server.restart();
    let (status, body) = curl(&post);
    assert_eq!(status, 200, "{body}");
    let log = proxy.log();
    assert!(log.contains("identity changed; re-appraising"), "{log}");
}

/// Runs `cloak ARGS`, requires exit status 1 (a refusal), and returns what it printed (standard
/// output, then standard error).
fn refused(args: &[&str]) -> String {
    let out = cloak(args);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{args:?}: {printed}");
    printed
}
