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
