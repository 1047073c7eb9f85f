//! `cloak token`: the model owner's access tokens. `keygen` makes the owner's signing key (its
//! public half goes into the model's release policy as `token_key`); `issue` signs a token for
//! one model, with an expiry, a rate and a quota, which the enclave checks on every inference.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use cloak_crypto::sig::SigningKey;
use cloak_fs::AtomicFile;
use cloak_proto::access::AccessToken;

use crate::Reported;
use crate::args::parse_duration;
use crate::failure::Failure;
use crate::files::{self, Existing};

/// The largest signing-key file read.
const MAX_KEY_FILE: usize = 4096;

/// `cloak token` commands.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a model owner's token-signing key (P-256, PKCS#8 as hex, mode 0600) and print its
    /// public key: put it in the model's release policy as `token_key = "HEX"`
    Keygen(KeygenArgs),
    /// Sign an access token for one model (printed, or written with --out)
    Issue(IssueArgs),
}

/// Arguments of `cloak token keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the signing key
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Arguments of `cloak token issue`.
#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// The signing key (from `cloak token keygen`)
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The model the token opens
    #[arg(long, value_name = "NAME")]
    model: String,
    /// How long the token is valid (30d, 12h; plain numbers are seconds)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    expires_in: Duration,
    /// Inferences per second the token may make [default: no limit]
    #[arg(long, value_name = "N", default_value_t = 0)]
    rate: u32,
    /// Inferences the token may make in all, per server process [default: no limit]
    #[arg(long, value_name = "N", default_value_t = 0)]
    quota: u64,
    /// Write the token here (mode 0600) instead of printing it
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Runs a `cloak token` command.
pub(crate) fn run(command: TokenCommand) -> Result<(), Reported> {
    match command {
        TokenCommand::Keygen(args) => keygen(&args),
        TokenCommand::Issue(args) => issue(&args),
    }
}

fn keygen(args: &KeygenArgs) -> Result<(), Reported> {
    let (key, pkcs8) = SigningKey::generate_pkcs8()
        .map_err(|e| Failure::usage("key-generation", e.to_string()))?;
    let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(pkcs8.as_slice())));
    write_secret(&args.out, text.as_bytes(), "signing key")?;
    say!("{}", hex::encode(key.public_key_spki()))?;
    Ok(())
}

fn issue(args: &IssueArgs) -> Result<(), Reported> {
    let pkcs8 = cloak_fs::secret::read_secret(&args.key, MAX_KEY_FILE)
        .map_err(|e| Failure::usage(e.code(), format!("signing key {e}")))?;
    let pkcs8 = zeroize::Zeroizing::new(hex::decode(pkcs8.trim()).unwrap_or_default());
    let key = SigningKey::from_pkcs8(&pkcs8).map_err(|_| {
        Failure::usage(
            "invalid-key",
            format!("{} is not a token-signing key", args.key.display()),
        )
    })?;
    if args.model.is_empty() {
        return Err(Failure::usage("invalid-argument", "--model is empty").into());
    }
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| Failure::usage("random", e.to_string()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = AccessToken {
        model: args.model.clone(),
        id: hex::encode(id),
        expires: now.saturating_add(args.expires_in.as_secs()),
        rate: args.rate,
        quota: args.quota,
    }
    .sign(&key)
    .map_err(|e| Failure::usage(e.code(), e.to_string()))?;
    match &args.out {
        Some(path) => write_secret(path, format!("{token}\n").as_bytes(), "token")?,
        None => say!("{token}")?,
    }
    Ok(())
}

/// Writes a secret atomically with mode 0600, never over an existing file.
fn write_secret(path: &std::path::Path, bytes: &[u8], what: &str) -> Result<(), Failure> {
    files::check_output(path, what, Existing::Never)?;
    let mut file = AtomicFile::create(path, 0o600).map_err(|e| Failure::io("create", path, &e))?;
    file.file()
        .write_all(bytes)
        .map_err(|e| Failure::io("write", path, &e))?;
    files::commit_output(file, path, what, Existing::Never).map_err(|e| e.failure)
}
