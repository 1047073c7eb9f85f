//! `cloak kbs`: the model owner's key broker — create it, run it, and administer it.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use cloak_kbs::admin::{AdminClient, AdminError};
use cloak_kbs::http::{DEFAULT_RATE_BURST, DEFAULT_RATE_PER_SECOND, RateLimit};
use cloak_kbs::{
    AdminToken, Broker, BrokerConfig, BrokerError, Clock as _, Database, MASTER_KEY_ENV, MasterKey,
    MasterKeySource, SystemClock,
};
use cloak_proto::kbs::{AuditRecord, AuditVerification};

use crate::Reported;
use crate::args::parse_duration;
use crate::failure::{EXIT_VERIFICATION, Failure};
use crate::files::{self, read_key_file};

/// `cloak kbs` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum KbsCommand {
    /// Create a broker database, its master key (unless CLOAK_KBS_MASTER_KEY holds one) and an
    /// admin token
    Init(InitArgs),
    /// Run the broker: release model keys to enclaves whose evidence satisfies the model's
    /// policy, and audit every decision
    Serve(ServeArgs),
    /// Register a model's key and release policy on a running broker
    AddModel(AddModelArgs),
    /// Replace a model's release policy on a running broker
    SetPolicy(SetPolicyArgs),
    /// Remove a model and its key from a running broker
    RemoveModel(RemoveModelArgs),
    /// List a running broker's audit log, and with --verify check its hash chain (exit 1 when
    /// it is not intact)
    Audit(AuditArgs),
    /// Create a fleet on a running broker: the broker generates the HPKE key that every
    /// `cloak serve --fleet NAME` replica obtains under the policy, so any replica answers a
    /// client that appraised one; prints the fleet's status as JSON
    AddFleet(FleetPolicyArgs),
    /// Make a fleet's next key generation (kept beside the current one; older ones retired);
    /// replicas advertise it once the broker's --fleet-propagation has passed; prints the
    /// fleet's status as JSON
    RotateFleet(FleetArgs),
    /// Replace the release policy of every live generation of a fleet's key
    SetFleetPolicy(FleetPolicyArgs),
    /// Remove a fleet's keys from a running broker (replicas are refused at their next lease
    /// confirmation)
    RemoveFleet(FleetArgs),
    /// Convert an Azure Key Vault secure key release policy (JSON) into a release policy that
    /// trusts its Azure Attestation instance with a pinned JWKS; refuses what a release policy
    /// cannot say (exit 1); prints the policy, or writes it with --out
    ImportSkrPolicy(ImportSkrArgs),
}

/// Arguments of `cloak kbs import-skr-policy`.
#[derive(Debug, Args)]
pub(crate) struct ImportSkrArgs {
    /// The SKR policy (JSON, as given to Key Vault)
    skr_policy: PathBuf,
    /// The attestation instance's signing keys (its /certs response), pinned into the policy
    #[arg(long, value_name = "FILE")]
    jwks: PathBuf,
    /// Write the release policy here (never over an existing file unless --force)
    #[arg(long, value_name = "FILE.toml")]
    out: Option<PathBuf>,
    /// Replace --out if it exists
    #[arg(long)]
    force: bool,
}

/// Arguments naming a fleet.
#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The fleet name (1 to 128 characters of A-Z, a-z, 0-9, '.', '_', '-')
    #[arg(long, value_name = "NAME")]
    name: String,
}

/// Arguments naming a fleet and its release policy.
#[derive(Debug, Args)]
pub(crate) struct FleetPolicyArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// The release policy (appraisal-policy TOML, as for a model's key)
    #[arg(long, value_name = "POLICY.toml")]
    policy: PathBuf,
}

/// Arguments of `cloak kbs init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The broker database: a SQLite file to create, or postgres://USER:PASSWORD@HOST:PORT/DB
    /// (an existing, empty PostgreSQL database, for several broker replicas)
    #[arg(long, value_name = "FILE|URL", value_parser = parse_database)]
    db: Database,
    /// PEM certificates that sign the PostgreSQL server's TLS certificate [default: the Mozilla
    /// roots]; TLS is required for any host but a loopback one unless the URL sets sslmode
    #[arg(long, value_name = "FILE")]
    db_ca: Option<PathBuf>,
    /// Where to write the new admin token (mode 0600; never overwritten)
    #[arg(long, value_name = "FILE")]
    admin_token_out: PathBuf,
    /// Where to write the new master key (mode 0600; never overwritten), when
    /// CLOAK_KBS_MASTER_KEY is not set [default: DB.master-key for a SQLite file; required for
    /// PostgreSQL, whose replicas share the key through a file or the environment]
    #[arg(long, value_name = "FILE")]
    master_key_out: Option<PathBuf>,
}

/// Arguments of `cloak kbs serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The broker database (made by `cloak kbs init`): a SQLite file, or a postgres:// URL that
    /// several replicas share
    #[arg(long, value_name = "FILE|URL", value_parser = parse_database)]
    db: Database,
    /// PEM certificates that sign the PostgreSQL server's TLS certificate [default: the Mozilla
    /// roots]; TLS is required for any host but a loopback one unless the URL sets sslmode
    #[arg(long, value_name = "FILE")]
    db_ca: Option<PathBuf>,
    /// Address to listen on; plain HTTP only on loopback addresses, anything else needs TLS
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// TLS certificate chain (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The master-key file, when CLOAK_KBS_MASTER_KEY is not set [default: DB.master-key for a
    /// SQLite file; required for PostgreSQL]
    #[arg(long, value_name = "FILE")]
    master_key: Option<PathBuf>,
    /// How long a challenge nonce stays valid (whole seconds: 60, 60s, 2m)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    nonce_ttl: Duration,
    /// How long a new fleet key generation is held back from replicas' claims, so that every
    /// replica holds it before clients are sent to it: at least the replicas'
    /// --fleet-refresh plus a release
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    fleet_propagation: Duration,
    /// Challenge and release requests per second per client address
    #[arg(long, value_name = "N", default_value_t = NonZeroU32::new(DEFAULT_RATE_PER_SECOND).unwrap_or(NonZeroU32::MIN))]
    rate_limit_per_second: NonZeroU32,
    /// Challenge and release requests allowed in a burst per client address
    #[arg(long, value_name = "N", default_value_t = NonZeroU32::new(DEFAULT_RATE_BURST).unwrap_or(NonZeroU32::MIN))]
    rate_limit_burst: NonZeroU32,
    #[command(flatten)]
    connections: cloak_server::cli::ConnectionArgs,
}

/// How to reach a broker's admin API.
#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// The broker's URL (http://127.0.0.1:PORT or https://HOST:PORT)
    #[arg(long, value_name = "URL")]
    url: String,
    /// The admin token file written by `cloak kbs init`
    #[arg(long, value_name = "FILE")]
    admin_token_file: PathBuf,
    /// PEM CA certificates for an https broker [default: the Mozilla roots]
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// Arguments of `cloak kbs add-model`.
#[derive(Debug, Args)]
pub(crate) struct AddModelArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The model name (as in its container header)
    #[arg(long, value_name = "NAME")]
    name: String,
    /// The model key file
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// The release policy (appraisal-policy TOML; a trust_root path is sent as its sha256:)
    #[arg(long, value_name = "POLICY.toml")]
    policy: PathBuf,
}

/// Arguments of `cloak kbs set-policy`.
#[derive(Debug, Args)]
pub(crate) struct SetPolicyArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The model name
    #[arg(long, value_name = "NAME")]
    name: String,
    /// The new release policy (appraisal-policy TOML)
    #[arg(long, value_name = "POLICY.toml")]
    policy: PathBuf,
}

/// Arguments of `cloak kbs remove-model`.
#[derive(Debug, Args)]
pub(crate) struct RemoveModelArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The model name
    #[arg(long, value_name = "NAME")]
    name: String,
}

/// Arguments of `cloak kbs audit`.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Print the records (and verification) as JSON
    #[arg(long)]
    json: bool,
    /// Have the broker check the hash chain; exit 1 if it is not intact
    #[arg(long)]
    verify: bool,
}

pub(crate) fn run(command: KbsCommand) -> Result<(), Reported> {
    match command {
        KbsCommand::Init(args) => init(&args).map_err(Reported::from),
        KbsCommand::Serve(args) => serve(&args),
        KbsCommand::AddModel(args) => add_model(&args),
        KbsCommand::SetPolicy(args) => set_policy(&args),
        KbsCommand::RemoveModel(args) => remove_model(&args),
        KbsCommand::Audit(args) => audit(&args),
        KbsCommand::AddFleet(args) => add_fleet(&args),
        KbsCommand::RotateFleet(args) => rotate_fleet(&args),
        KbsCommand::SetFleetPolicy(args) => set_fleet_policy(&args),
        KbsCommand::RemoveFleet(args) => remove_fleet(&args),
        KbsCommand::ImportSkrPolicy(args) => import_skr_policy(&args),
    }
}

/// Largest SKR policy or JWKS read.
const MAX_SKR_INPUT: u64 = 1024 * 1024;

fn import_skr_policy(args: &ImportSkrArgs) -> Result<(), Reported> {
    let skr = files::read_limited(&args.skr_policy, MAX_SKR_INPUT, "SKR policy")?;
    let jwks = files::read_limited(&args.jwks, MAX_SKR_INPUT, "JWKS")?;
    cloak_attest::maa::Jwks::from_json(&jwks)
        .map_err(|e| Failure::usage(e.code(), format!("{}: {e}", args.jwks.display())))?;
    let jwks = String::from_utf8(jwks)
        .map_err(|_| Failure::usage("malformed-jwks", "the JWKS is not UTF-8".to_owned()))?;
    let policy = match cloak_kbs::skr::import_skr_policy(&skr, &jwks) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("cloak: {}: {} ({})", args.skr_policy.display(), e, e.code());
            return Err(Reported(ExitCode::from(EXIT_VERIFICATION)));
        }
    };
    // What the broker will be given must be what it accepts.
    cloak_kbs::policy::parse_policy_and_lease(&policy)
        .map_err(|e| Failure::usage(e.code(), e.to_string()))?;
    match &args.out {
        None => say!("{policy}")?,
        Some(path) if args.force => files::write_replacing(path, policy.as_bytes(), "policy")?,
        Some(path) => files::write_new(path, policy.as_bytes(), "policy")?,
    }
    Ok(())
}

fn init(args: &InitArgs) -> Result<(), Failure> {
    let master = match master_key_from_env()? {
        Some(key) => MasterKeySource::Given(key),
        None => MasterKeySource::CreateFile(
            args.master_key_out
                .clone()
                .or_else(|| args.db.default_master_key_path())
                .ok_or_else(|| no_master_key("--master-key-out"))?,
        ),
    };
    let master_file = match &master {
        MasterKeySource::CreateFile(path) => Some(path.clone()),
        _ => None,
    };
    let db = args.db.clone().with_ca(args.db_ca.clone());
    cloak_kbs::init(&db, &args.admin_token_out, master, SystemClock.now())
        .map_err(|e| broker_failure(&e))?;
    say!("initialised broker database {}", args.db)?;
    match master_file {
        Some(path) => say!(
            "master key: {} (mode 0600; back it up — without it the model keys are lost)",
            path.display()
        )?,
        None => say!("master key: from {MASTER_KEY_ENV} (not written)")?,
    }
    say!(
        "admin token: {} (mode 0600)",
        args.admin_token_out.display()
    )?;
    Ok(())
}

fn serve(args: &ServeArgs) -> Result<(), Reported> {
    crate::runtime::init_logging(crate::runtime::LogFormat::Text);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = std::fs::read(cert).map_err(|e| Failure::io("read", cert, &e))?;
            let key_pem = zeroize::Zeroizing::new(
                std::fs::read(key).map_err(|e| Failure::io("read", key, &e))?,
            );
            Some(cloak_kbs::http::tls_config(&cert, &key_pem).map_err(|e| broker_failure(&e))?)
        }
        _ => None,
    };
    if tls.is_none() && !cloak_kbs::http::plain_http_allowed(&args.listen) {
        return Err(Failure::usage(
            "plain-http-not-loopback",
            format!(
                "refusing to serve plain HTTP on {}: only loopback addresses may go without \
                 --tls-cert and --tls-key",
                args.listen
            ),
        )
        .into());
    }
    if let Database::Sqlite(path) = &args.db
        && std::fs::symlink_metadata(path).is_err()
    {
        return Err(Failure::usage(
            "not-initialised",
            format!(
                "{} does not exist (create it with `cloak kbs init`)",
                path.display()
            ),
        )
        .into());
    }
    let master = match master_key_from_env()? {
        Some(key) => key,
        None => {
            let path = args
                .master_key
                .clone()
                .or_else(|| args.db.default_master_key_path())
                .ok_or_else(|| no_master_key("--master-key"))?;
            MasterKey::read_file(&path).map_err(|e| broker_failure(&e))?
        }
    };
    let store = args
        .db
        .clone()
        .with_ca(args.db_ca.clone())
        .open()
        .map_err(|e| broker_failure(&e.into()))?;
    let broker = match Broker::open(
        store,
        &master,
        Arc::new(SystemClock),
        BrokerConfig {
            nonce_ttl: args.nonce_ttl.as_secs().max(1),
            fleet_propagation: args.fleet_propagation.as_secs(),
        },
    ) {
        Ok(broker) => broker,
        Err(e @ BrokerError::WrongMasterKey) => {
            eprintln!("error: {e} ({})", e.code());
            return Err(Reported(ExitCode::from(EXIT_VERIFICATION)));
        }
        Err(e) => return Err(broker_failure(&e).into()),
    };
    drop(master);
    let broker = Arc::new(broker);
    let router = cloak_kbs::http::router(
        Arc::clone(&broker),
        RateLimit {
            per_second: args.rate_limit_per_second,
            burst: args.rate_limit_burst,
        },
    );
    let limits = args
        .connections
        .limits()
        .map_err(|e| Failure::usage(e.code(), e.to_string()))?;
    let runtime = crate::runtime::multi_thread()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| {
                Failure::usage("listen", format!("cannot listen on {}: {e}", args.listen))
            })?;
        let local = listener
            .local_addr()
            .map_err(|e| Failure::usage("listen", e.to_string()))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        say!("cloak kbs: listening on {scheme}://{local}")?;
        tracing::info!(%local, tls = tls.is_some(), "key broker listening");
        // Unauthorized admin calls are summed per address; their records are written every
        // window and at shutdown.
        let flusher = {
            let broker = Arc::clone(&broker);
            tokio::spawn(async move {
                let window = Duration::from_secs(cloak_kbs::broker::REFUSAL_WINDOW);
                loop {
                    tokio::time::sleep(window).await;
                    let broker = Arc::clone(&broker);
                    let _ = tokio::task::spawn_blocking(move || broker.flush_refusals()).await;
                }
            })
        };
        cloak_kbs::http::serve(
            listener,
            tls,
            router,
            limits,
            crate::runtime::shutdown_signal(),
        )
        .await;
        flusher.abort();
        let broker = Arc::clone(&broker);
        let _ = tokio::task::spawn_blocking(move || broker.flush_refusals()).await;
        tracing::info!("key broker stopped");
        Ok::<(), Failure>(())
    })?;
    Ok(())
}

fn add_model(args: &AddModelArgs) -> Result<(), Reported> {
    let key = read_key_file(&args.key)?;
    let policy =
        cloak_kbs::policy::policy_for_upload(&args.policy).map_err(|e| broker_failure(&e))?;
    let client = admin_client(&args.admin)?;
    client
        .add_model(&args.name, &key, &policy)
        .map_err(|e| admin_failure(&e))?;
    say!("added model {} (key id {})", args.name, key.id())?;
    Ok(())
}

fn set_policy(args: &SetPolicyArgs) -> Result<(), Reported> {
    let policy =
        cloak_kbs::policy::policy_for_upload(&args.policy).map_err(|e| broker_failure(&e))?;
    let client = admin_client(&args.admin)?;
    client
        .set_policy(&args.name, &policy)
        .map_err(|e| admin_failure(&e))?;
    say!("replaced the policy of model {}", args.name)?;
    Ok(())
}

fn remove_model(args: &RemoveModelArgs) -> Result<(), Reported> {
    let client = admin_client(&args.admin)?;
    client
        .remove_model(&args.name)
        .map_err(|e| admin_failure(&e))?;
    say!("removed model {}", args.name)?;
    Ok(())
}

fn add_fleet(args: &FleetPolicyArgs) -> Result<(), Reported> {
    let policy =
        cloak_kbs::policy::policy_for_upload(&args.policy).map_err(|e| broker_failure(&e))?;
    let client = admin_client(&args.fleet.admin)?;
    let status = client
        .add_fleet(&args.fleet.name, &policy)
        .map_err(|e| admin_failure(&e))?;
    print_fleet(&status)
}

fn rotate_fleet(args: &FleetArgs) -> Result<(), Reported> {
    let client = admin_client(&args.admin)?;
    let status = client
        .rotate_fleet(&args.name)
        .map_err(|e| admin_failure(&e))?;
    print_fleet(&status)
}

fn set_fleet_policy(args: &FleetPolicyArgs) -> Result<(), Reported> {
    let policy =
        cloak_kbs::policy::policy_for_upload(&args.policy).map_err(|e| broker_failure(&e))?;
    let client = admin_client(&args.fleet.admin)?;
    client
        .set_fleet_policy(&args.fleet.name, &policy)
        .map_err(|e| admin_failure(&e))?;
    say!("replaced the policy of fleet {}", args.fleet.name)?;
    Ok(())
}

fn remove_fleet(args: &FleetArgs) -> Result<(), Reported> {
    let client = admin_client(&args.admin)?;
    client
        .remove_fleet(&args.name)
        .map_err(|e| admin_failure(&e))?;
    say!("removed fleet {}", args.name)?;
    Ok(())
}

/// A fleet's status as one line of JSON.
fn print_fleet(status: &cloak_proto::kbs::fleet::FleetStatus) -> Result<(), Reported> {
    let text = serde_json::to_string(status)
        .map_err(|e| Failure::usage("json", format!("the fleet status: {e}")))?;
    say!("{text}")?;
    Ok(())
}

fn audit(args: &AuditArgs) -> Result<(), Reported> {
    let client = admin_client(&args.admin)?;
    // The log is read and printed a page at a time, so its size does not matter.
    let mut verification: Option<AuditVerification> = None;
    let mut printed = 0u64;
    let mut output: Result<(), Failure> = if args.json {
        say!("{{\"records\": [")
    } else {
        print_header()
    };
    let read = client.audit_pages(args.verify, |page| {
        if page.verification.is_some() {
            verification = page.verification;
        }
        for record in &page.records {
            if output.is_err() {
                break;
            }
            output = if args.json {
                print_json_record(record, printed == 0)
            } else {
                print_row(record)
            };
            printed += 1;
        }
        Ok(())
    });
    read.map_err(|e| admin_failure(&e))?;
    output?;
    if args.json {
        let verification = serde_json::to_string(&verification)
            .map_err(|e| Failure::usage("json", e.to_string()))?;
        say!("], \"verification\": {verification}}}")?;
    } else {
        if printed == 0 {
            say!("(no records)")?;
        }
        if let Some(verification) = &verification {
            print_verification(verification)?;
        }
    }
    match &verification {
        Some(AuditVerification { intact: false, .. }) if args.json => {
            eprintln!("error: the audit log is NOT intact");
            Err(Reported(ExitCode::from(EXIT_VERIFICATION)))
        }
        Some(AuditVerification { intact: false, .. }) => {
            Err(Reported(ExitCode::from(EXIT_VERIFICATION)))
        }
        _ => Ok(()),
    }
}

/// One record as an element of the JSON `records` array.
fn print_json_record(record: &AuditRecord, first: bool) -> Result<(), Failure> {
    let text = serde_json::to_string(record).map_err(|e| Failure::usage("json", e.to_string()))?;
    say!("{}{text}", if first { "  " } else { ", " })
}

/// `text` as it is when it is printable ASCII, else escaped (`\n`, `\u{…}`).
fn printable(text: &str) -> String {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        text.to_owned()
    } else {
        text.escape_default().to_string()
    }
}

fn print_header() -> Result<(), Failure> {
    say!(
        "{:>6}  {:<20}  {:<12}  {:<24}  {:<8}  {:<24}  {:<21}  MRENCLAVE",
        "SEQ",
        "TIME",
        "EVENT",
        "MODEL",
        "DECISION",
        "REASON",
        "CLIENT"
    )
}

fn print_row(r: &AuditRecord) -> Result<(), Failure> {
    let time = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(r.time));
    let mrenclave: String = r
        .measurements
        .get("mrenclave")
        .map(|m| m.chars().take(16).collect())
        .unwrap_or_else(|| "-".into());
    // Every field as text that cannot break the table: a record from an older broker may hold
    // a model name with control characters.
    say!(
        "{:>6}  {:<20}  {:<12}  {:<24}  {:<8}  {:<24}  {:<21}  {}",
        r.seq,
        time,
        printable(&r.event),
        if r.model.is_empty() {
            "-".to_owned()
        } else {
            printable(&r.model)
        },
        printable(&r.decision),
        printable(&r.reason),
        printable(&r.client),
        printable(&mrenclave)
    )
}

fn print_verification(v: &AuditVerification) -> Result<(), Failure> {
    if v.intact {
        say!(
            "audit chain: intact ({} records, head {})",
            v.records,
            v.head
        )?;
    } else {
        say!(
            "audit chain: NOT intact: record {} {} ({} records, head {})",
            v.first_bad_seq
                .map_or_else(|| "?".into(), |s| s.to_string()),
            v.problem.as_deref().unwrap_or("broken"),
            v.records,
            v.head
        )?;
        eprintln!(
            "error: the audit log is NOT intact: the first bad record is {} ({})",
            v.first_bad_seq
                .map_or_else(|| "?".into(), |s| s.to_string()),
            v.problem.as_deref().unwrap_or("broken")
        );
    }
    Ok(())
}

fn admin_client(args: &AdminArgs) -> Result<AdminClient, Failure> {
    if AdminToken::file_is_private(&args.admin_token_file) == Some(false) {
        eprintln!(
            "warning: admin token file {} is accessible to other users; run `chmod 600 {}`",
            args.admin_token_file.display(),
            args.admin_token_file.display()
        );
    }
    let token = AdminToken::read_file(&args.admin_token_file).map_err(|e| broker_failure(&e))?;
    let ca = args
        .ca
        .as_deref()
        .map(|path| std::fs::read(path).map_err(|e| Failure::io("read", path, &e)))
        .transpose()?;
    AdminClient::new(&args.url, token, ca.as_deref())
        .map_err(|e| Failure::usage("invalid-argument", e.to_string()))
}

/// The master key from `CLOAK_KBS_MASTER_KEY`, if set.
fn master_key_from_env() -> Result<Option<MasterKey>, Failure> {
    match std::env::var(MASTER_KEY_ENV) {
        Ok(text) => MasterKey::from_hex(&text)
            .map(Some)
            .map_err(|e| Failure::usage("master-key", format!("{MASTER_KEY_ENV}: {e}"))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Failure::usage(
            "master-key",
            format!("{MASTER_KEY_ENV} is not 64 hexadecimal digits"),
        )),
    }
}

fn broker_failure(error: &BrokerError) -> Failure {
    Failure::usage(error.code(), error.to_string())
}

/// A refused admin call: a wrong token exits 1 (authentication failure), the rest 2.
fn admin_failure(error: &AdminError) -> Reported {
    if error.is_unauthorized() {
        eprintln!("error: {error}");
        Reported(ExitCode::from(EXIT_VERIFICATION))
    } else {
        // Stable codes from the broker are dynamic strings; the failure carries a generic one
        // and the message names the broker's.
        Reported::from(Failure::usage("broker-refused", error.to_string()))
    }
}

/// `--db`: a SQLite file or a PostgreSQL URL.
fn parse_database(db: &str) -> Result<Database, String> {
    if db.is_empty() {
        return Err("give a file or a postgres:// URL".into());
    }
    Ok(Database::parse(db))
}

/// With a PostgreSQL database there is no file beside it to keep the master key in.
fn no_master_key(flag: &str) -> Failure {
    Failure::usage(
        "master-key-missing",
        format!(
            "a PostgreSQL database has no master-key file beside it: give {flag} FILE or set \
             {MASTER_KEY_ENV}"
        ),
    )
}
