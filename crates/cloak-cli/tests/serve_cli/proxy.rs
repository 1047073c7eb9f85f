//! `cloak proxy`: stock KServe clients through a local verifying proxy.

use crate::{assert_triton_report, cloak, proxy, serve, triton_check, tritonclient};

#[test]
fn tritonclient_through_the_verifying_proxy() {
    let Some(python) = tritonclient() else { return };
    let server = serve(&[]);
    let policy = server.policy();
    let policy: Vec<&str> = policy.iter().map(String::as_str).collect();
    for mode in ["atls", "ohttp"] {
        let mut args = vec!["--mode", mode];
        args.extend_from_slice(&policy);
        let proxy = proxy(server.dir.path(), &server.url, &args).unwrap();
        let report = triton_check(&python, proxy.url());
        assert_triton_report(&server, &report);
        // Every inference answer was checked against its receipt on the way.
        let log = proxy.log();
        assert!(log.contains("upstream accepted"), "{log}");
        assert!(!log.contains("request not forwarded"), "{log}");
    }

    // A proxy whose policy rejects the upstream never listens.
    let zeros = "00".repeat(32);
    let args = [
        "--mode",
        "ohttp",
        "--trust-root",
        policy[1],
        "--expect-mrenclave",
        &zeros,
    ];
    let (code, log) = proxy(server.dir.path(), &server.url, &args)
        .err()
        .expect("a rejected upstream");
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("REJECTED (measurement-mismatch)"), "{log}");
    // And it listens on loopback only: it serves plaintext.
    let out = cloak(&["proxy", "--upstream", &server.url, "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// One HTTP/1.1 exchange with the proxy at `url` (`http://HOST:PORT`): the status line and the
/// whole answer.
fn exchange(url: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn the_proxy_serves_only_this_machine_and_checks_every_inference() {
    let server = serve(&[]);
    let policy = server.policy();
    let policy: Vec<&str> = policy.iter().map(String::as_str).collect();
    let proxy = proxy(server.dir.path(), &server.url, &policy).unwrap();
    let body =
        r#"{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}"#;
    let post = |path: &str, extra: &str| {
        exchange(
            proxy.url(),
            &format!(
                "POST {path} HTTP/1.1\r\n{extra}content-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let local = "host: localhost\r\n";
    // The plain request is forwarded, its receipt checked and passed on.
    let answer = post("/v2/models/demo/infer", local);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("cloak-receipt:"),
        "{answer}"
    );
    // An inference in another spelling is not forwarded unchecked.
    for bent in ["/v2/models/demo/infer?x=1", "/v2/models/demo/./infer"] {
        let answer = post(bent, local);
        assert!(answer.starts_with("HTTP/1.1 400"), "{bent}: {answer}");
    }
    // A web page that rebound its name to 127.0.0.1 is refused (DNS rebinding).
    let answer = post("/v2/models/demo/infer", "host: evil.example:8000\r\n");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let page = "host: localhost\r\norigin: https://evil.example\r\n";
    let answer = post("/v2/models/demo/infer", page);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}
