//! The server a command talks to, spelled the same way by `cloak infer`, `cloak attest server`
//! and `cloak proxy`: where it is, how requests reach it, what appraises it, and where the
//! accepted attestation is kept.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use cloak_attest::collateral::Collateral;
use cloak_attest::policy::AppraisalPolicy;
use cloak_client::{BodyDigest, Client, ClientBuilder, Mode, Transport};

use super::{AnyEnclaveArg, PolicyArgs};
use crate::failure::Failure;
use crate::files::{self, Existing};

/// Largest collateral or CA file read.
const MAX_INPUT: u64 = 4 * 1024 * 1024;

/// How requests reach the enclave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Attested TLS to the server itself
    Atls,
    /// Encapsulated requests (Oblivious HTTP) to the attested key, through any proxy or load
    /// balancer
    Ohttp,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Atls => Self::AttestedTls,
            ModeArg::Ohttp => Self::Encapsulated,
        }
    }
}

/// How receipts digest the bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReceiptDigestArg {
    /// Salted BLAKE3 (receipt version 3): about 2.5 times as fast on both sides
    Blake3,
    /// Salted SHA-256 (receipt version 2), where FIPS-approved algorithms are required
    Sha256,
}

impl From<ReceiptDigestArg> for BodyDigest {
    fn from(digest: ReceiptDigestArg) -> Self {
        match digest {
            ReceiptDigestArg::Blake3 => Self::SaltedBlake3,
            ReceiptDigestArg::Sha256 => Self::SaltedSha256,
        }
    }
}

/// The server flags.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The Cloak server (https://host:port), or with --mode ohttp the proxy or load balancer in
    /// front of it (https:// or http://); also accepted as the first argument
    #[arg(
        long = "server",
        visible_alias = "upstream",
        value_name = "URL",
        required_unless_present = "url"
    )]
    server: Option<String>,
    /// The server, as the first argument (the earlier spelling)
    #[arg(value_name = "URL", hide = true, conflicts_with = "server")]
    url: Option<String>,
    /// How requests reach the enclave: attested TLS, or encapsulated (Oblivious HTTP) to the
    /// attested HPKE key through whatever is in between
    #[arg(long, value_enum, default_value = "atls")]
    mode: ModeArg,
    /// With --mode ohttp over https: trust these CA certificates (PEM) for the transport's TLS
    /// instead of the public Web PKI (nothing confidential depends on it)
    #[arg(long, value_name = "FILE.pem")]
    ca: Option<PathBuf>,
    /// Appraise with this collateral (dcap-qvl QuoteCollateralV3 JSON) instead of the one the
    /// server relays; then nothing at all is sent before the server is appraised
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    /// Save the attestation the server was accepted on (JSON) here, for checking receipts
    /// offline (`cloak receipt verify --attestation`)
    #[arg(long, value_name = "FILE", alias = "out")]
    attestation_out: Option<PathBuf>,
    /// Replace an --attestation-out file (and `cloak infer`'s --receipt-out) that exists
    /// (`cloak proxy` keeps its --attestation-out current regardless)
    #[arg(long)]
    force: bool,
    /// The model owner's access token (from `cloak token issue`), for models whose owner
    /// requires one: sent inside attested TLS or the encapsulation, never to a server the
    /// policy rejects
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// How the receipts of inferences digest the request and response bodies (a server that
    /// does not know BLAKE3 answers with SHA-256, which is accepted too)
    #[arg(long, value_enum, default_value = "blake3")]
    receipt_digest: ReceiptDigestArg,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    any_enclave: AnyEnclaveArg,
}

impl ServerArgs {
    /// The server's URL.
    pub(crate) fn url(&self) -> &str {
        self.server
            .as_deref()
            .or(self.url.as_deref())
            .unwrap_or_default()
    }

    /// How requests reach the enclave.
    pub(crate) fn mode(&self) -> Mode {
        self.mode.into()
    }

    /// Where to save the accepted attestation.
    pub(crate) fn attestation_out(&self) -> Option<&PathBuf> {
        self.attestation_out.as_ref()
    }

    /// What to do with output files that exist (`--force`).
    pub(crate) fn existing(&self) -> Existing {
        Existing::from_force(self.force)
    }

    /// Checks, before anything is sent, that `--attestation-out` can be written.
    pub(crate) fn check_outputs(&self) -> Result<(), Failure> {
        match &self.attestation_out {
            Some(path) => files::check_output(path, "attestation", self.existing()),
            None => Ok(()),
        }
    }

    /// A client builder with the policy, mode, transport and collateral these flags give.
    /// The policy must name the enclave unless `--allow-any-enclave` says otherwise.
    pub(crate) fn client(&self) -> Result<ClientBuilder<AppraisalPolicy>, Failure> {
        let policy = self.policy.build()?;
        self.any_enclave.check(&policy)?;
        let mut builder = Client::builder()
            .policy(policy)
            .mode(self.mode.into())
            .transport(self.transport()?)
            .receipt_digest(self.receipt_digest.into());
        if self.any_enclave.allowed() {
            builder = builder.dangerously_accept_any_enclave();
        }
        if let Some(path) = &self.token_file {
            let token = cloak_fs::secret::read_secret(path, cloak_proto::access::MAX_TOKEN_LEN + 2)
                .map_err(|e| Failure::usage(e.code(), format!("token file {e}")))?;
            builder = builder.access_token(token.trim());
        }
        if let Some(collateral) = self.collateral()? {
            builder = builder.collateral(collateral);
        }
        Ok(builder)
    }

    fn collateral(&self) -> Result<Option<Collateral>, Failure> {
        let Some(path) = &self.collateral else {
            return Ok(None);
        };
        let bytes = files::read_limited(path, MAX_INPUT, "collateral")?;
        Collateral::from_json(&bytes)
            .map(Some)
            .map_err(|e| Failure::usage("unreadable-input", format!("{}: {e}", path.display())))
    }

    /// The transport's trust for encapsulated requests over https.
    fn transport(&self) -> Result<Transport, Failure> {
        let Some(path) = &self.ca else {
            return Ok(Transport::default());
        };
        let pem = files::read_limited(path, MAX_INPUT, "CA certificates")?;
        Transport::with_ca_pem(&pem)
            .map_err(|e| Failure::usage("unreadable-input", format!("{}: {e}", path.display())))
    }
}
