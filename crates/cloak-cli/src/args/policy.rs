//! The appraisal policy, as every command that appraises evidence takes it: a policy file or
//! the strict default, pins, and — under their own "Dangerous" heading in `--help` — the flags
//! that loosen it. Commands that send data to a server or trust its answers also require the
//! policy to name the enclave ([`AnyEnclaveArg`]).

use std::path::{Path, PathBuf};

use clap::Args;
use cloak_attest::policy::{AppraisalPolicy, DebugPolicy, TrustRootPolicy};
use cloak_attest::types::Measurement;
use cloak_attest::verify::{TcbStatus, TrustAnchor};

use super::hex_arg;
use crate::failure::Failure;
use crate::files;

/// Largest trust-root file read (a root certificate is about a kilobyte).
const MAX_TRUST_ROOT: u64 = 64 * 1024;

/// The appraisal policy flags.
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// Appraisal policy (TOML); the flags below add to it [default: the strict policy: Intel's
    /// root, UpToDate only, no advisories, no debug]
    #[arg(long = "policy", value_name = "FILE.toml", help_heading = "Policy")]
    policy_file: Option<PathBuf>,
    /// Require this MRENCLAVE (replaces the policy file's list)
    #[arg(long, value_name = "HEX", help_heading = "Policy")]
    expect_mrenclave: Option<String>,
    /// Require this MRSIGNER (replaces the policy file's list)
    #[arg(long, value_name = "HEX", help_heading = "Policy")]
    expect_mrsigner: Option<String>,
    /// Trust this root (DER) instead of the Intel SGX Root CA (or the policy's root): evidence
    /// that chains to it is believed, so give only a root you control (a simulated platform's)
    #[arg(
        long,
        value_name = "FILE.der",
        help_heading = "Dangerous (these weaken appraisal)"
    )]
    trust_root: Option<PathBuf>,
    /// Also accept this TCB status (e.g. SWHardeningNeeded): a platform missing updates;
    /// repeatable
    #[arg(
        long = "allow-status",
        value_name = "NAME",
        help_heading = "Dangerous (these weaken appraisal)"
    )]
    allow_status: Vec<String>,
    /// Also tolerate this advisory id, or '*' for any: a platform with known vulnerabilities;
    /// repeatable
    #[arg(
        long = "allow-advisory",
        value_name = "ID",
        help_heading = "Dangerous (these weaken appraisal)"
    )]
    allow_advisory: Vec<String>,
    /// Accept debug enclaves and TDs: their memory is open to the host (development only)
    #[arg(long, help_heading = "Dangerous (these weaken appraisal)")]
    allow_debug: bool,
}

/// An appraisal policy file (TOML; paths in it are relative to the file).
pub(crate) fn read_policy_file(path: &Path) -> Result<AppraisalPolicy, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::io("read policy", path, &e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    AppraisalPolicy::from_toml(&text, base)
        .map_err(|e| Failure::usage("invalid-policy", format!("{}: {e}", path.display())))
}

/// The policy file (or the strict policy) with the flags that apply to quotes and tokens alike:
/// the expected MRENCLAVE and MRSIGNER, and debug enclaves allowed.
fn base_policy(
    policy_file: Option<&Path>,
    expect_mrenclave: Option<&str>,
    expect_mrsigner: Option<&str>,
    allow_debug: bool,
) -> Result<AppraisalPolicy, Failure> {
    let mut policy = match policy_file {
        Some(path) => read_policy_file(path)?,
        None => AppraisalPolicy::strict(),
    };
    if allow_debug {
        policy = policy.with_debug(DebugPolicy::Allow);
    }
    if let Some(hex) = expect_mrenclave {
        let value = Measurement::from_bytes(hex_arg("--expect-mrenclave", hex)?);
        policy.sgx_identity_mut().mrenclave = Some(vec![value]);
    }
    if let Some(hex) = expect_mrsigner {
        let value = Measurement::from_bytes(hex_arg("--expect-mrsigner", hex)?);
        policy.sgx_identity_mut().mrsigner = Some(vec![value]);
    }
    Ok(policy)
}

impl PolicyArgs {
    /// The policy file (or the strict policy), with the flags applied.
    pub(crate) fn build(&self) -> Result<AppraisalPolicy, Failure> {
        let mut policy = base_policy(
            self.policy_file.as_deref(),
            self.expect_mrenclave.as_deref(),
            self.expect_mrsigner.as_deref(),
            self.allow_debug,
        )?;
        if let Some(path) = &self.trust_root {
            let der = files::read_limited(path, MAX_TRUST_ROOT, "trust root")?;
            TrustAnchor::custom(der.clone()).map_err(|e| {
                Failure::usage("invalid-trust-root", format!("{}: {e}", path.display()))
            })?;
            policy = policy.with_trust_root(TrustRootPolicy::Der(der));
        }
        for name in &self.allow_status {
            let status: TcbStatus = name
                .parse()
                .map_err(|e| Failure::usage("invalid-argument", format!("--allow-status: {e}")))?;
            policy = policy.allow_tcb_status(status);
        }
        for id in &self.allow_advisory {
            policy = policy.allow_advisory(id);
        }
        Ok(policy)
    }
}

/// The policy flags that mean something for an Azure Attestation token, which carries no quote
/// chain and no TCB status of its own (the attestation service appraised those).
#[derive(Debug, Args)]
pub(crate) struct TokenPolicyArgs {
    /// Appraisal policy (TOML): its debug, `[sgx]` and `report_data` rules apply to the token's
    /// enclave; its trust root and TCB rules do not [default: the strict policy: no debug]
    #[arg(long = "policy", value_name = "FILE.toml", help_heading = "Policy")]
    policy_file: Option<PathBuf>,
    /// Require this MRENCLAVE (replaces the policy file's list)
    #[arg(long, value_name = "HEX", help_heading = "Policy")]
    expect_mrenclave: Option<String>,
    /// Require this MRSIGNER (replaces the policy file's list)
    #[arg(long, value_name = "HEX", help_heading = "Policy")]
    expect_mrsigner: Option<String>,
    /// Accept debug enclaves: their memory is open to the host (development only)
    #[arg(long, help_heading = "Dangerous (these weaken appraisal)")]
    allow_debug: bool,
}

impl TokenPolicyArgs {
    /// The policy file (or the strict policy), with the flags applied.
    pub(crate) fn build(&self) -> Result<AppraisalPolicy, Failure> {
        base_policy(
            self.policy_file.as_deref(),
            self.expect_mrenclave.as_deref(),
            self.expect_mrsigner.as_deref(),
            self.allow_debug,
        )
    }
}

/// For commands that send data to a server or trust its answers (`infer`, `attest server`,
/// `proxy`, `receipt verify`): the policy must name the enclave, unless this flag says
/// otherwise.
#[derive(Debug, Args)]
pub(crate) struct AnyEnclaveArg {
    /// Go on with a policy that names no enclave (no --expect-mrenclave, no MRSIGNER with an
    /// ISV product id, no MRTD): any genuine enclave is then accepted, a rebuilt or hostile
    /// one included. Warns on every run
    #[arg(long, help_heading = "Dangerous (these weaken appraisal)")]
    allow_any_enclave: bool,
}

impl AnyEnclaveArg {
    /// Whether `policy` may be used: it names an enclave, or the flag was given (and a warning
    /// is printed). The error says how to pin one.
    pub(crate) fn check(&self, policy: &AppraisalPolicy) -> Result<(), Failure> {
        if policy.names_identity() {
            return Ok(());
        }
        if !self.allow_any_enclave {
            return Err(Failure::usage(
                "policy-pins-no-identity",
                "the appraisal policy names no enclave, so any genuine enclave would be \
                 accepted, a rebuilt or hostile one included: give --expect-mrenclave HEX (or \
                 a --policy file with [sgx] mrenclave, or mrsigner with isv_prod_id, or [tdx] \
                 mrtd), or --allow-any-enclave to go on regardless",
            ));
        }
        eprintln!(
            "warning: the appraisal policy names no enclave: any genuine enclave is accepted, \
             a rebuilt or hostile one included (--allow-any-enclave)"
        );
        Ok(())
    }

    /// Whether the flag was given.
    pub(crate) fn allowed(&self) -> bool {
        self.allow_any_enclave
    }
}
