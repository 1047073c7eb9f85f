//! How commands print what they found: JSON for scripts, aligned fields for people.

use serde::Serialize;
use serde_json::{Value, json};

use crate::Reported;
use crate::failure::{EXIT_VERIFICATION, Failure};

/// Prints `value` as pretty JSON on standard output.
pub(crate) fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::usage("json", format!("cannot render JSON: {e}")))?;
    say!("{text}")
}

/// Prints fields one per line, strings unquoted.
pub(crate) fn print_fields(fields: &serde_json::Map<String, Value>) -> Result<(), Failure> {
    for (name, value) in fields {
        let shown = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        say!("  {name:<16} {shown}")?;
    }
    Ok(())
}

/// One measurement of an accepted server (`mrenclave`, `mrsigner`, ...), or `?`.
pub(crate) fn measurement(server: &cloak_client::VerifiedServer, field: &str) -> String {
    serde_json::to_value(server.measurements())
        .ok()
        .and_then(|v| v.get(field)?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Reports a refused or unreachable server; attestation refusals exit 1, the rest 2.
pub(crate) fn refused(error: &cloak_client::Error, as_json: bool) -> Result<Reported, Failure> {
    if as_json && error.is_rejection() {
        let text = serde_json::to_string_pretty(&json!({
            "verdict": "rejected",
            "reason": error.code(),
            "message": error.to_string(),
        }))
        .map_err(|e| Failure::usage("json", e.to_string()))?;
        say!("{text}")?;
    }
    if error.is_rejection() {
        eprintln!("error: server REJECTED ({}): {error}", error.code());
        Ok(Reported(std::process::ExitCode::from(EXIT_VERIFICATION)))
    } else {
        Ok(Reported::from(Failure::usage(
            error.code(),
            error.to_string(),
        )))
    }
}
