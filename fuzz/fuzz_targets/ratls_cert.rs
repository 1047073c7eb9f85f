//! Untrusted RA-TLS certificates (PEM or DER): reading never panics.
#![no_main]

use cloak_attest::ratls::RaTlsCertificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = RaTlsCertificate::parse(data) {
        for evidence in cert.evidence() {
            let _ = evidence.binding().holds();
            let _ = evidence.quote().map(|q| q.measurements());
        }
    }
});
