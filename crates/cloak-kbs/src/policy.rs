//! Release policies: the appraisal-policy TOML of `cloak-attest`, restricted to what makes
//! sense on a remote broker.
//!
//! * `trust_root` must be `"intel"` (the default) or `"sha256:HEX"`: a path names a file on
//!   the administrator's machine, not the broker's. [`policy_for_upload`] (used by
//!   `cloak kbs add-model` and `set-policy`) turns a path into the `sha256:` of that file.
//! * `report_data` must be absent: the broker requires it to be exactly
//!   `release_report_data(nonce, ephemeral_key)` for each release.
//! * The policy must name the enclave (`AppraisalPolicy::names_identity`): `[sgx] mrenclave`,
//!   or `mrsigner` with `isv_prod_id`, or `[tdx] mrtd`. A stored policy from before this rule
//!   that names none releases nothing until `set-policy` replaces it.

use std::path::Path;

use cloak_attest::policy::AppraisalPolicy;

use crate::BrokerError;

/// Parses a release policy (see the module documentation).
pub fn parse_release_policy(text: &str) -> Result<AppraisalPolicy, BrokerError> {
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
    let text = match root_path {
        None => text,
        Some(root_path) => {
            // Checks the certificate as the local appraisal would.
            AppraisalPolicy::from_toml(&text, base_dir)
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
    parse_release_policy(&text)
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
