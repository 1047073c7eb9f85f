//! Argument groups that several commands share, defined once so every command spells them the
//! same way: the appraisal policy ([`PolicyArgs`]), the server a command talks to
//! ([`ServerArgs`]), and the one format of every duration flag ([`parse_duration`]).

mod policy;
mod server;

pub(crate) use cloak_server::cli::parse_duration;
pub(crate) use policy::{AnyEnclaveArg, PolicyArgs, TokenPolicyArgs, read_policy_file};
pub(crate) use server::{ReceiptDigestArg, ServerArgs};

use crate::failure::Failure;

/// A fixed-length hex flag value (`--expect-mrenclave HEX`, ...).
pub(crate) fn hex_arg<const N: usize>(flag: &str, text: &str) -> Result<[u8; N], Failure> {
    cloak_attest::types::parse_hex(text)
        .map_err(|e| Failure::usage("invalid-argument", format!("{flag}: {e}")))
}
