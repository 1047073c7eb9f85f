//! Sealing semantics on the simulated platform: measurement change, signer upgrade and
//! downgrade, another platform, and every header field.

use cloak_tee::seal::{self, SealError};
use cloak_tee::sim::{SimConfig, SimPlatform};
use cloak_tee::{Identity, KeyPolicy, Platform};

fn platform() -> (tempfile::TempDir, SimPlatform) {
    let dir = tempfile::tempdir().unwrap();
    let platform = SimPlatform::init(dir.path(), &SimConfig::up_to_date()).unwrap();
    (dir, platform)
}

fn enclave(svn: u16, mrenclave: u8) -> Identity {
    Identity {
        mrenclave: [mrenclave; 32],
        mrsigner: [0x5A; 32],
        isv_prod_id: 7,
        isv_svn: svn,
        debug: false,
    }
}

/// The same platform directory, running `identity`.
fn as_enclave(dir: &tempfile::TempDir, identity: Identity) -> SimPlatform {
    SimPlatform::open(dir.path())
        .unwrap()
        .with_enclave(identity)
}

#[test]
fn measurement_sealed_data_opens_only_in_the_same_enclave() {
    let (dir, _) = platform();
    let v1 = as_enclave(&dir, enclave(1, 0xA1));
    let blob = seal::seal(&v1, KeyPolicy::Measurement, b"secret").unwrap();
    assert_eq!(seal::unseal(&v1, &blob).unwrap().as_slice(), b"secret");
    let other_build = as_enclave(&dir, enclave(1, 0xA2));
    assert!(matches!(
        seal::unseal(&other_build, &blob),
        Err(SealError::MeasurementMismatch)
    ));
}

#[test]
fn signer_sealed_data_survives_an_upgrade_but_not_a_downgrade() {
    let (dir, _) = platform();
    let v2 = as_enclave(&dir, enclave(2, 0xB2));
    let blob = seal::seal(&v2, KeyPolicy::Signer { isv_svn: 2 }, b"state").unwrap();

    let v3 = as_enclave(&dir, enclave(3, 0xB3));
    assert_eq!(seal::unseal(&v3, &blob).unwrap().as_slice(), b"state");

    let v1 = as_enclave(&dir, enclave(1, 0xB1));
    assert!(matches!(
        seal::unseal(&v1, &blob),
        Err(SealError::SvnDowngrade {
            sealed: 2,
            current: 1
        })
    ));

    let mut other_product = enclave(3, 0xB3);
    other_product.isv_prod_id = 8;
    assert!(matches!(
        seal::unseal(&as_enclave(&dir, other_product), &blob),
        Err(SealError::ProductMismatch {
            sealed: 7,
            current: 8
        })
    ));
    let mut other_signer = enclave(3, 0xB3);
    other_signer.mrsigner = [0x6B; 32];
    assert!(matches!(
        seal::unseal(&as_enclave(&dir, other_signer), &blob),
        Err(SealError::SignerMismatch)
    ));
}

#[test]
fn a_downgraded_enclave_cannot_even_derive_the_key() {
    let (dir, _) = platform();
    let v1 = as_enclave(&dir, enclave(1, 0xC1));
    let err = v1
        .sealing_key(&cloak_tee::KeyRequest {
            policy: KeyPolicy::Signer { isv_svn: 2 },
            key_id: [0; 32],
        })
        .unwrap_err();
    assert_eq!(err.code(), "svn-too-high");
}

#[test]
fn a_blob_from_another_platform_fails_authentication() {
    let (dir_a, _) = platform();
    let (dir_b, _) = platform();
    let a = as_enclave(&dir_a, enclave(1, 0xD1));
    let b = as_enclave(&dir_b, enclave(1, 0xD1));
    let blob = seal::seal(&a, KeyPolicy::Measurement, b"secret").unwrap();
    assert!(matches!(
        seal::unseal(&b, &blob),
        Err(SealError::Authentication)
    ));
}

#[test]
fn debug_and_production_builds_get_different_keys() {
    let (dir, _) = platform();
    let production = as_enclave(&dir, enclave(1, 0xE1));
    let mut debug_identity = enclave(1, 0xE1);
    debug_identity.debug = true;
    let debug = as_enclave(&dir, debug_identity);
    let blob = seal::seal(&production, KeyPolicy::Measurement, b"secret").unwrap();
    assert!(matches!(
        seal::unseal(&debug, &blob),
        Err(SealError::DebugMismatch)
    ));
    // Forging the header's debug flag gets past the header check but not the key: the debug
    // enclave's key differs, so the blob fails authentication.
    let mut forged = blob.clone();
    forged[11] = 1;
    assert!(matches!(
        seal::unseal(&debug, &forged),
        Err(SealError::Authentication)
    ));
}

#[test]
fn the_product_id_is_part_of_the_key_not_only_the_header() {
    let (dir, _) = platform();
    let blob = seal::seal(
        &as_enclave(&dir, enclave(1, 0xE7)),
        KeyPolicy::Measurement,
        b"secret",
    )
    .unwrap();
    // The same MRENCLAVE signed as another product, given a header forged to match it.
    let mut product_8 = enclave(1, 0xE7);
    product_8.isv_prod_id = 8;
    let mut forged = blob.clone();
    forged[15] = 8;
    assert!(matches!(
        seal::unseal(&as_enclave(&dir, product_8), &forged),
        Err(SealError::Authentication)
    ));
}

#[test]
fn measurement_sealed_data_is_specific_to_the_products_svn() {
    let (dir, _) = platform();
    let svn1 = as_enclave(&dir, enclave(1, 0xE5));
    let blob = seal::seal(&svn1, KeyPolicy::Measurement, b"secret").unwrap();
    let svn2 = as_enclave(&dir, enclave(2, 0xE5));
    assert!(matches!(
        seal::unseal(&svn2, &blob),
        Err(SealError::SvnMismatch {
            sealed: 1,
            current: 2
        })
    ));
}

#[test]
fn every_header_field_is_checked_with_its_own_error() {
    let (dir, _) = platform();
    let p = as_enclave(&dir, enclave(1, 0xF1));
    let blob = seal::seal(&p, KeyPolicy::Measurement, b"secret").unwrap();
    let with = |at: usize, value: u8| {
        let mut b = blob.clone();
        b[at] = value;
        seal::unseal(&p, &b).unwrap_err().code()
    };
    assert_eq!(with(0, 0), "not-sealed-blob");
    assert_eq!(with(9, 2), "unsupported-version");
    assert_eq!(with(10, 9), "unknown-policy");
    assert_eq!(with(11, 1), "debug-mismatch");
    assert_eq!(with(11, 2), "malformed-sealed-blob");
    assert_eq!(with(13, 2), "svn-downgrade");
    assert_eq!(with(13, 0), "svn-mismatch");
    assert_eq!(with(15, 8), "product-mismatch");
    assert_eq!(with(16, 0), "measurement-mismatch");
    assert_eq!(with(50, blob[50] ^ 1), "seal-authentication");
    assert_eq!(with(85, blob[85] ^ 1), "seal-authentication");
    assert_eq!(
        seal::unseal(&p, &blob[..100]).unwrap_err().code(),
        "truncated"
    );
    assert_eq!(seal::unseal(&p, &[]).unwrap_err().code(), "truncated");
}

#[test]
fn sealed_files_are_written_atomically_and_privately() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _) = platform();
    let p = as_enclave(&dir, enclave(1, 0x71));
    let path = dir.path().join("model.key.sealed");
    seal::seal_to_file(&p, KeyPolicy::Measurement, b"k1", &path).unwrap();
    seal::seal_to_file(&p, KeyPolicy::Measurement, b"k2", &path).unwrap();
    assert_eq!(seal::unseal_file(&p, &path).unwrap().as_slice(), b"k2");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
