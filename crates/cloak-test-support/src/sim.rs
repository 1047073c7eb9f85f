//! Simulated platforms, what they measure, and the policies that trust them.
//!
//! The simulated platform gives a process the SHA-256 of its executable as MRENCLAVE, so a
//! policy that pins a binary pins [`measurement_of`] that binary. Policies here trust the
//! simulation root explicitly (no default policy does) and pin a measurement: a data owner who
//! trusts "any enclave under this root" is not a case worth testing as acceptance.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::{AppraisalPolicy, SgxIdentityPolicy, TrustRootPolicy};
use cloak_attest::types::Measurement;
use cloak_tee::sim::{SimConfig, SimPlatform};

/// A simulated platform in a directory of the test's (as `cloak sim init --dir` makes it).
#[derive(Debug)]
pub struct Sim {
    platform: SimPlatform,
}

impl Sim {
    /// Creates an up-to-date simulated platform in `dir`.
    pub fn init(dir: &Path) -> Self {
        Self {
            platform: SimPlatform::init(dir, &SimConfig::up_to_date())
                .expect("a simulated platform"),
        }
    }

    /// The platform.
    pub fn platform(&self) -> &SimPlatform {
        &self.platform
    }

    /// The platform's directory (`--sim-dir`).
    pub fn dir(&self) -> &Path {
        self.platform.dir()
    }

    /// The simulation root certificate's file (`--trust-root`).
    pub fn root_path(&self) -> PathBuf {
        self.platform.dir().join("root.der")
    }

    /// The collateral for quotes made now.
    pub fn collateral(&self) -> Collateral {
        Collateral::from_json(&self.platform.collateral(unix_now()).expect("collateral"))
            .expect("the simulated collateral parses")
    }

    /// What a data owner who trusts this root and pins `mrenclave` accepts.
    pub fn policy(&self, mrenclave: [u8; 32]) -> AppraisalPolicy {
        policy_trusting(self.platform.root_der().to_vec(), mrenclave)
    }

    /// [`Sim::policy`] as `cloak` command-line flags.
    pub fn policy_flags(&self, mrenclave: [u8; 32]) -> Vec<String> {
        vec![
            "--trust-root".to_owned(),
            self.root_path().to_string_lossy().into_owned(),
            "--expect-mrenclave".to_owned(),
            hex::encode(mrenclave),
        ]
    }
}

/// A strict policy trusting the root `root_der` and pinning `mrenclave`.
pub fn policy_trusting(root_der: Vec<u8>, mrenclave: [u8; 32]) -> AppraisalPolicy {
    AppraisalPolicy::strict()
        .with_trust_root(TrustRootPolicy::Der(root_der))
        .with_sgx_identity(SgxIdentityPolicy {
            mrenclave: Some(vec![Measurement::from_bytes(mrenclave)]),
            ..SgxIdentityPolicy::default()
        })
}

/// The MRENCLAVE the simulated platform gives a process running `exe`.
pub fn measurement_of(exe: &Path) -> [u8; 32] {
    let bytes = std::fs::read(exe).unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    cloak_crypto::hash::sha256(&bytes)
}

/// The MRENCLAVE the simulated platform gives this test process (an in-process server).
pub fn this_process() -> [u8; 32] {
    cloak_tee::sim::executable_measurement().expect("the test executable is readable")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
