//! Release policies: the appraisal-policy TOML of `cloak-attest`, restricted to what makes
//! sense on a remote broker.
//!
//! * `trust_root` must be `"intel"` (the default) or `"sha256:HEX"`: a path names a file on
//!   the administrator's machine, not the broker's. [`policy_for_upload`] (used by
//!   `cloak kbs add-model` and `set-policy`) turns a path into the `sha256:` of that file.
//! * `report_data` must be absent: the broker requires it to be exactly
//!   `release_report_data(nonce, ephemeral_key)` for each release.
//! * `token_key = "HEX"` (optional): the model owner's access-token key (`cloak token keygen`);
//!   the enclave then serves the model only to requests with a token it signed.
//! * `lease = "24h"` (optional; 24 hours when absent, 2 s to 30 days): how long a server may
//!   use a released key without confirming it with the broker again.
//! * `[azure_attestation]` (optional): `issuer` (the instance's URL) and `jwks` (its signing
//!   keys, the JSON its `/certs` endpoint returns, pinned): the model's key is then also
//!   released to an Azure Attestation token from that issuer whose enclave the policy accepts
//!   and whose enclave-held data binds the release (`cloak_attest::maa`).
//!   [`policy_for_upload`] inlines a `jwks` that names a file.
//! * `evidence = ["dcap-quote", "maa-token"]` (optional): which release evidence the model
//!   accepts. Absent: quotes, and tokens too when `[azure_attestation]` is present. A policy
//!   that accepts tokens only must not set the TCB rules that apply to quotes alone
//!   (`trust_root`, `allowed_tcb_statuses`, `allowed_advisories`,
//!   `min_tcb_evaluation_data_number`): the attestation service applied its own, and rules
//!   written but never applied would mislead whoever reads the policy.
//! * The policy must name the enclave (`AppraisalPolicy::names_identity`): `[sgx] mrenclave`,
//!   or `mrsigner` with `isv_prod_id`, or `[tdx] mrtd`. A stored policy from before this rule
//!   that names none releases nothing until `set-policy` replaces it.

use std::path::Path;

use cloak_attest::maa::Jwks;
use cloak_attest::policy::AppraisalPolicy;
use cloak_proto::kbs::{EVIDENCE_DCAP_QUOTE, EVIDENCE_MAA_TOKEN};

use crate::BrokerError;

/// How long a released key may be used before the server must confirm it with the broker, when
/// the policy does not say.
pub const DEFAULT_LEASE: u64 = 24 * 3600;
/// The shortest lease a policy may set.
pub const MIN_LEASE: u64 = 2;
/// The longest lease a policy may set.
pub const MAX_LEASE: u64 = 30 * 24 * 3600;
/// The length of a P-256 SubjectPublicKeyInfo in DER.
const P256_SPKI_LEN: usize = 91;

/// A model's release policy: what evidence gets its key, and for how long a release holds.
#[derive(Clone, Debug)]
pub struct ReleasePolicy {
    /// The appraisal policy the release evidence must satisfy.
    pub appraisal: AppraisalPolicy,
    /// The lease, in seconds: a server may use a released key this long without confirming it
    /// with the broker again (`lease = "24h"` in the policy; [`DEFAULT_LEASE`] when absent).
    pub lease: u64,
    /// The model owner's access-token key (P-256 SubjectPublicKeyInfo DER; `token_key = "HEX"`
    /// in the policy): when set, the enclave serves the model only to requests carrying a
    /// token it signed (`cloak_proto::access`).
    pub token_key: Option<Vec<u8>>,
    /// The Azure Attestation instance whose tokens are accepted as release evidence
    /// (`[azure_attestation]`), if any.
    pub azure_attestation: Option<AzureAttestation>,
    /// Whether quotes with collateral are accepted as release evidence (`evidence`).
    pub accepts_quotes: bool,
}

/// The settings that govern quotes only: with tokens only, they would never be applied.
const QUOTE_ONLY_KEYS: [&str; 4] = [
    "trust_root",
    "allowed_tcb_statuses",
    "allowed_advisories",
    "min_tcb_evaluation_data_number",
];

/// An Azure Attestation instance a release policy trusts: its issuer and its pinned keys.
#[derive(Clone, Debug)]
pub struct AzureAttestation {
    /// `iss` of its tokens.
    pub issuer: String,
    /// Its signing keys.
    pub jwks: Jwks,
}

/// Reads `[azure_attestation]`: `issuer` (an https URL) and `jwks` (JSON text).
fn azure_attestation(value: toml::Value) -> Result<AzureAttestation, BrokerError> {
    let invalid = |why: &str| BrokerError::InvalidPolicy(format!("[azure_attestation]: {why}"));
    let toml::Value::Table(mut table) = value else {
        return Err(invalid("must be a table"));
    };
    let issuer = match table.remove("issuer") {
        Some(toml::Value::String(issuer)) if issuer.starts_with("https://") => issuer,
        _ => return Err(invalid("issuer must be the instance's https URL")),
    };
    let jwks = match table.remove("jwks") {
        Some(toml::Value::String(text)) => {
            Jwks::from_json(text.as_bytes()).map_err(|e| invalid(&format!("jwks: {e}")))?
        }
        _ => {
            return Err(invalid(
                "jwks must be the instance's signing keys (JWKS JSON)",
            ));
        }
    };
    if let Some(key) = table.keys().next() {
        return Err(invalid(&format!("unknown key {key:?}")));
    }
    Ok(AzureAttestation { issuer, jwks })
}

/// Parses a release policy (see the module documentation).
pub fn parse_release_policy(text: &str) -> Result<AppraisalPolicy, BrokerError> {
    parse_policy_and_lease(text).map(|policy| policy.appraisal)
}

/// Parses a release policy with its lease.
pub fn parse_policy_and_lease(text: &str) -> Result<ReleasePolicy, BrokerError> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| BrokerError::InvalidPolicy(format!("syntax: {e}")))?;
    let lease = match table.remove("lease") {
        None => DEFAULT_LEASE,
        Some(toml::Value::String(text)) => {
            let lease = humantime::parse_duration(&text)
                .map_err(|e| BrokerError::InvalidPolicy(format!("lease {text:?}: {e}")))?
                .as_secs();
            if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
                return Err(BrokerError::InvalidPolicy(format!(
                    "lease {text:?}: between {MIN_LEASE} s and 30 days"
                )));
            }
            lease
        }
        Some(_) => {
            return Err(BrokerError::InvalidPolicy(
                "lease is a duration such as \"24h\"".into(),
            ));
        }
    };
    let token_key = match table.remove("token_key") {
        None => None,
        Some(toml::Value::String(text)) => {
            let der = hex::decode(text.trim()).map_err(|_| {
                BrokerError::InvalidPolicy("token_key is the hex of a public key's DER".into())
            })?;
            // A P-256 SubjectPublicKeyInfo is 91 bytes; anything else is not a key of ours.
            if der.len() != P256_SPKI_LEN {
                return Err(BrokerError::InvalidPolicy(
                    "token_key is not a P-256 public key (SubjectPublicKeyInfo DER, as `cloak \
                     token keygen` prints it)"
                        .into(),
                ));
            }
            Some(der)
        }
        Some(_) => {
            return Err(BrokerError::InvalidPolicy(
                "token_key is a hex string".into(),
            ));
        }
    };
    let azure_attestation = table
        .remove("azure_attestation")
        .map(azure_attestation)
        .transpose()?;
    let (accepts_quotes, accepts_tokens) = match table.remove("evidence") {
        None => (true, azure_attestation.is_some()),
        Some(toml::Value::Array(kinds)) => {
            let mut accepted = (false, false);
            for kind in kinds {
                match kind.as_str() {
                    Some(EVIDENCE_DCAP_QUOTE) => accepted.0 = true,
                    Some(EVIDENCE_MAA_TOKEN) => accepted.1 = true,
                    _ => {
                        return Err(BrokerError::InvalidPolicy(format!(
                            "evidence: {kind} (known: \"{EVIDENCE_DCAP_QUOTE}\", \
                             \"{EVIDENCE_MAA_TOKEN}\")"
                        )));
                    }
                }
            }
            accepted
        }
        Some(_) => {
            return Err(BrokerError::InvalidPolicy(
                "evidence is a list such as [\"dcap-quote\"]".into(),
            ));
        }
    };
    if !accepts_quotes && !accepts_tokens {
        return Err(BrokerError::InvalidPolicy(
            "evidence accepts nothing: the key could never be released".into(),
        ));
    }
    if accepts_tokens && azure_attestation.is_none() {
        return Err(BrokerError::InvalidPolicy(
            "evidence includes maa-token, but no [azure_attestation] names the instance".into(),
        ));
    }
    let azure_attestation = azure_attestation.filter(|_| accepts_tokens);
    if !accepts_quotes
        && let Some(key) = QUOTE_ONLY_KEYS.iter().find(|key| table.contains_key(**key))
    {
        return Err(BrokerError::InvalidPolicy(format!(
            "{key} applies to quotes only, and this policy accepts tokens only: the attestation \
             service applies its own TCB rules"
        )));
    }
    let text = toml::to_string(&table).map_err(|e| BrokerError::InvalidPolicy(e.to_string()))?;
    let appraisal = parse_appraisal(&text)?;
    // Tokens describe SGX enclaves: a policy that pins none could never release on one.
    if azure_attestation.is_some() && !appraisal.names_sgx_enclave() {
        return Err(BrokerError::InvalidPolicy(
            "[azure_attestation] needs an SGX enclave named in [sgx] (mrenclave, or mrsigner \
             with isv_prod_id): tokens describe SGX enclaves"
                .into(),
        ));
    }
    Ok(ReleasePolicy {
        appraisal,
        lease,
        token_key,
        azure_attestation,
        accepts_quotes,
    })
}

fn parse_appraisal(text: &str) -> Result<AppraisalPolicy, BrokerError> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| BrokerError::InvalidPolicy(format!("syntax: {e}")))?;
    if table.contains_key("report_data") {
        return Err(BrokerError::InvalidPolicy(
            "a release policy must not set report_data: the broker requires the report data \
             to bind the release nonce and the ephemeral key"
                .into(),
        ));
    }
    match table.get("trust_root") {
        None => {}
        Some(toml::Value::String(root)) if root == "intel" || root.starts_with("sha256:") => {}
        Some(_) => {
            return Err(BrokerError::InvalidPolicy(
                "trust_root must be \"intel\" or \"sha256:HEX\" (a path means nothing to a \
                 remote broker; `cloak kbs add-model` converts one)"
                    .into(),
            ));
        }
    }
    // No path can be resolved: trust_root is `intel` or `sha256:` here.
    let policy = AppraisalPolicy::from_toml(text, Path::new("/nonexistent"))
        .map_err(|e| BrokerError::InvalidPolicy(e.to_string()))?;
    if !policy.names_identity() {
        return Err(BrokerError::PolicyPinsNoIdentity);
    }
    Ok(policy)
}

/// Reads a policy file for upload: a `trust_root` that is a path (relative to the policy
/// file) becomes `sha256:` of that DER certificate; the result is checked as the broker will
/// check it.
pub fn policy_for_upload(path: &Path) -> Result<String, BrokerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BrokerError::Io(format!("cannot read {}: {e}", path.display())))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| BrokerError::InvalidPolicy(format!("{}: syntax: {e}", path.display())))?;
    let root_path = match table.get("trust_root") {
        Some(toml::Value::String(root)) if root != "intel" && !root.starts_with("sha256:") => {
            Some(base_dir.join(root))
        }
        _ => None,
    };
    // A `jwks` that is not JSON names a file next to the policy: the broker gets its content.
    let jwks_path = table
        .get("azure_attestation")
        .and_then(|section| section.get("jwks"))
        .and_then(toml::Value::as_str)
        .filter(|jwks| !jwks.trim_start().starts_with('{'))
        .map(|jwks| base_dir.join(jwks));
    let text = match jwks_path {
        None => text,
        Some(jwks_path) => {
            let jwks = std::fs::read_to_string(&jwks_path).map_err(|e| {
                BrokerError::Io(format!("cannot read {}: {e}", jwks_path.display()))
            })?;
            if let Some(toml::Value::Table(section)) = table.get_mut("azure_attestation") {
                section.insert("jwks".into(), toml::Value::String(jwks));
            }
            toml::to_string(&table).map_err(|e| BrokerError::InvalidPolicy(e.to_string()))?
        }
    };
    let text = match root_path {
        None => text,
        Some(root_path) => {
            // Checks the certificate as the local appraisal would (the lease is the broker's,
            // not the appraisal's).
            let mut appraisal_only = table.clone();
            appraisal_only.remove("lease");
            appraisal_only.remove("token_key");
            appraisal_only.remove("azure_attestation");
            appraisal_only.remove("evidence");
            let appraisal_text = toml::to_string(&appraisal_only)
                .map_err(|e| BrokerError::InvalidPolicy(e.to_string()))?;
            AppraisalPolicy::from_toml(&appraisal_text, base_dir)
                .map_err(|e| BrokerError::InvalidPolicy(format!("{}: {e}", path.display())))?;
            let der = std::fs::read(&root_path).map_err(|e| {
                BrokerError::Io(format!("cannot read {}: {e}", root_path.display()))
            })?;
            table.insert(
                "trust_root".into(),
                toml::Value::String(format!(
                    "sha256:{}",
                    hex::encode(cloak_crypto::hash::sha256(&der))
                )),
            );
            toml::to_string(&table).map_err(|e| BrokerError::InvalidPolicy(e.to_string()))?
        }
    };
    parse_policy_and_lease(&text)
        .map_err(|e| BrokerError::InvalidPolicy(format!("{}: {e}", path.display())))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(text: &str) -> String {
        format!("{text}\n[sgx]\nmrenclave = [\"{}\"]\n", "cd".repeat(32))
    }

    #[test]
    fn an_azure_attestation_section_names_an_https_issuer_and_its_keys() {
        let jwks = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../cloak-attest/testdata/azure-maa/recorded/jwks.json"
        ))
        .unwrap();
        let section = |issuer: &str, jwks: &str, extra: &str| {
            pinned(&format!(
                "[azure_attestation]\nissuer = {issuer:?}\njwks = {jwks:?}\n{extra}"
            ))
        };
        let issuer = "https://sharedwus.wus.attest.azure.net";
        let parsed = parse_policy_and_lease(&section(issuer, &jwks, "")).unwrap();
        let trusted = parsed.azure_attestation.unwrap();
        assert_eq!(trusted.issuer, issuer);
        assert_eq!(trusted.jwks.keys().len(), 3);
        assert!(
            parse_policy_and_lease(&pinned(""))
                .unwrap()
                .azure_attestation
                .is_none()
        );
        let code = |text: String| parse_policy_and_lease(&text).unwrap_err().code();
        assert_eq!(
            code(section("http://plain.example", &jwks, "")),
            "invalid-policy"
        );
        assert_eq!(code(section(issuer, "{\"keys\": 1}", "")), "invalid-policy");
        assert_eq!(code(section(issuer, &jwks, "extra = 1")), "invalid-policy");
        // Tokens describe SGX enclaves: a policy that names only a TD cannot take them.
        let td_only = format!(
            "[azure_attestation]\nissuer = {issuer:?}\njwks = {jwks:?}\n[tdx]\nmrtd = [\"{}\"]\n",
            "ab".repeat(48)
        );
        assert_eq!(code(td_only), "invalid-policy");
        // Which evidence: tokens only, quotes only, and what makes no sense.
        let with = |evidence: &str, extra: &str| {
            format!(
                "evidence = {evidence}\n{extra}\n{}",
                section(issuer, &jwks, "")
            )
        };
        let tokens_only = parse_policy_and_lease(&with("[\"maa-token\"]", "")).unwrap();
        assert!(!tokens_only.accepts_quotes && tokens_only.azure_attestation.is_some());
        let quotes_only = parse_policy_and_lease(&with("[\"dcap-quote\"]", "")).unwrap();
        assert!(quotes_only.accepts_quotes && quotes_only.azure_attestation.is_none());
        for (evidence, extra) in [
            ("[]", ""),
            ("[\"sev-snp\"]", ""),
            ("\"maa-token\"", ""),
            // Rules for quotes in a policy that takes no quotes would never be applied.
            (
                "[\"maa-token\"]",
                "allowed_tcb_statuses = [\"UpToDate\", \"OutOfDate\"]",
            ),
            ("[\"maa-token\"]", "trust_root = \"intel\""),
        ] {
            assert_eq!(
                code(with(evidence, extra)),
                "invalid-policy",
                "{evidence} {extra}"
            );
        }
        assert_eq!(
            code(pinned("evidence = [\"maa-token\"]")),
            "invalid-policy",
            "tokens without an instance"
        );
    }

    #[test]
    fn only_remote_trust_roots_and_no_report_data_are_accepted() {
        assert!(parse_release_policy(&pinned("")).is_ok());
        assert!(parse_release_policy(&pinned("trust_root = \"intel\"")).is_ok());
        let pin = format!("trust_root = \"sha256:{}\"", "ab".repeat(32));
        assert!(parse_release_policy(&pinned(&pin)).is_ok());
        let code = |text: &str| parse_release_policy(&pinned(text)).unwrap_err().code();
        assert_eq!(code("trust_root = \"root.der\""), "invalid-policy");
        let rd = format!("report_data = \"{}\"", "00".repeat(64));
        assert_eq!(code(&rd), "invalid-policy");
        assert_eq!(code("allow_debug = \"yes\""), "invalid-policy");
        assert_eq!(code("unknown_key = 1"), "invalid-policy");
    }

    #[test]
    fn a_lease_is_a_bounded_duration_defaulting_to_a_day() {
        let lease = |extra: &str| parse_policy_and_lease(&pinned(extra)).map(|p| p.lease);
        assert_eq!(lease("").unwrap(), DEFAULT_LEASE);
        assert_eq!(lease("lease = \"90m\"").unwrap(), 5400);
        for bad in [
            "lease = \"1s\"",
            "lease = \"31days\"",
            "lease = 60",
            "lease = \"soon\"",
        ] {
            assert_eq!(lease(bad).unwrap_err().code(), "invalid-policy", "{bad}");
        }
    }

    #[test]
    fn a_policy_that_names_no_enclave_is_refused() {
        let code = |text: &str| parse_release_policy(text).unwrap_err().code();
        assert_eq!(code(""), "policy-pins-no-identity");
        let root_only = format!("trust_root = \"sha256:{}\"", "ab".repeat(32));
        assert_eq!(code(&root_only), "policy-pins-no-identity");
        let signer = format!("[sgx]\nmrsigner = [\"{}\"]", "ab".repeat(32));
        assert_eq!(code(&signer), "policy-pins-no-identity");
        assert!(parse_release_policy(&format!("{signer}\nisv_prod_id = 3")).is_ok());
        assert!(parse_release_policy(&format!("[tdx]\nmrtd = [\"{}\"]", "ab".repeat(48))).is_ok());
    }
}
