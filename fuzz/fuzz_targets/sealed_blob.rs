//! Untrusted sealed blobs (read back from the host's disk): unsealing never panics and never
//! succeeds for bytes this platform did not seal.
#![no_main]

use std::sync::OnceLock;

use cloak_tee::gramine::GraminePlatform;
use cloak_tee::seal;
use libfuzzer_sys::fuzz_target;

/// A Gramine backend over a fixed replay directory: deterministic identity and keys.
fn platform() -> &'static GraminePlatform {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cloak-fuzz-sealed-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let mut report = vec![0u8; 432];
        report[64] = 0xAA;
        std::fs::write(dir.join("report"), report).unwrap();
        std::fs::write(dir.join("keys/_sgx_mrenclave"), [1u8; 16]).unwrap();
        std::fs::write(dir.join("keys/_sgx_mrsigner"), [2u8; 16]).unwrap();
        dir
    });
    static PLATFORM: OnceLock<GraminePlatform> = OnceLock::new();
    PLATFORM.get_or_init(|| GraminePlatform::with_root(dir))
}

fuzz_target!(|data: &[u8]| {
    let _ = seal::policy_of(data);
    assert!(seal::unseal(platform(), data).is_err());
});
