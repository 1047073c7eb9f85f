//! `cloak model`: seal a model into a container, and open, verify or inspect containers.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use cloak_crypto::container::{
    self, ChunkSize, ContainerError, DigestCheck, Header, ModelName, SealError, SealOptions,
    VerifiedContainer,
};
use cloak_crypto::key::ModelKey;
use serde::Serialize;

use crate::Reported;
use crate::failure::Failure;
use crate::files::{
    Existing, check_output, commit_output, ensure_distinct, open_input, progress, read_key_file,
    write_key_file,
};
use crate::report;
use cloak_fs::AtomicFile;

/// `cloak model …`
#[derive(Debug, Subcommand)]
pub(crate) enum ModelCommand {
    /// Encrypt MODEL into a sealed container (AES-256-GCM, chunked), with a new or existing key
    Encrypt(EncryptArgs),
    /// Decrypt a container with its key; the output appears only if every chunk and the
    /// plaintext digest verify
    Decrypt(DecryptArgs),
    /// Authenticate every chunk of a container with its key, writing nothing; exit 0 if intact
    Verify(VerifyArgs),
    /// Print a container's header (unauthenticated; needs no key and shows no key material)
    Inspect(InspectArgs),
}

/// Arguments of `cloak model encrypt`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("key-source").required(true))]
pub(crate) struct EncryptArgs {
    /// The model file to seal (any bytes: ONNX, safetensors, ...)
    pub(crate) model: PathBuf,
    /// Where to write the container; it appears only once complete
    #[arg(long, value_name = "FILE.cloak")]
    pub(crate) out: PathBuf,
    /// Generate a new key and write it here (mode 0600; never overwrites an existing file)
    #[arg(long, value_name = "KEYFILE", group = "key-source")]
    pub(crate) key_out: Option<PathBuf>,
    /// Reuse the key in this key file
    #[arg(long, value_name = "KEYFILE", group = "key-source")]
    pub(crate) key: Option<PathBuf>,
    /// Model name recorded in the container [default: the model file's stem]
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Plaintext bytes per chunk (4096 to 16777216)
    #[arg(long, value_name = "BYTES", default_value_t = ChunkSize::DEFAULT.get())]
    pub(crate) chunk_size: u32,
    /// Replace --out if it exists (a regular file only; key files are never replaced)
    #[arg(long)]
    pub(crate) force: bool,
}

/// Arguments of `cloak model decrypt`.
#[derive(Debug, Args)]
pub(crate) struct DecryptArgs {
    /// The container to open
    pub(crate) container: PathBuf,
    /// The key file the container was sealed with
    #[arg(long, value_name = "KEYFILE")]
    pub(crate) key: PathBuf,
    /// Where to write the model (mode 0600); it appears only once everything verified
    #[arg(long, value_name = "MODEL")]
    pub(crate) out: PathBuf,
    /// Replace --out if it exists (a regular file only)
    #[arg(long)]
    pub(crate) force: bool,
}

/// Arguments of `cloak model verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The container to verify
    pub(crate) container: PathBuf,
    /// The key file the container was sealed with
    #[arg(long, value_name = "KEYFILE")]
    pub(crate) key: PathBuf,
    /// Also recompute the plaintext SHA-256 and compare it with the header (proves the digest
    /// the key holder recorded; slower)
    #[arg(long)]
    pub(crate) check_digest: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub(crate) json: bool,
}

/// Arguments of `cloak model inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The container to inspect
    pub(crate) container: PathBuf,
    /// Print the header as JSON
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs a `cloak model` command.
pub(crate) fn run(command: ModelCommand) -> Result<(), Reported> {
    match command {
        ModelCommand::Encrypt(args) => print_sealed(&encrypt(&args)?)?,
        ModelCommand::Decrypt(args) => {
            let verified = decrypt(&args)?;
            say!(
                "decrypted {} -> {} ({} bytes; every chunk authenticated; sha256 {} verified)",
                args.container.display(),
                args.out.display(),
                verified.header().plaintext_len(),
                hex::encode(verified.header().plaintext_sha256()),
            )?;
        }
        ModelCommand::Verify(args) => verify_command(&args)?,
        ModelCommand::Inspect(args) => inspect_command(&args)?,
    }
    Ok(())
}

/// What `encrypt` produced.
pub(crate) struct Sealed {
    pub(crate) header: Header,
    pub(crate) model: PathBuf,
    pub(crate) out: PathBuf,
    pub(crate) new_key_file: Option<PathBuf>,
}

/// Seals a model; writes the key file (if new) and the container only when all went well.
pub(crate) fn encrypt(args: &EncryptArgs) -> Result<Sealed, Failure> {
    let name = model_name(args)?;
    let chunk_size = ChunkSize::new(args.chunk_size).ok_or_else(|| {
        Failure::usage(
            "invalid-chunk-size",
            format!(
                "chunk size {} is outside {}..={}",
                args.chunk_size,
                ChunkSize::MIN.get(),
                ChunkSize::MAX.get()
            ),
        )
    })?;
    let mut paths = vec![
        ("model", args.model.as_path()),
        ("output", args.out.as_path()),
    ];
    if let Some(key) = args.key_out.as_ref().or(args.key.as_ref()) {
        paths.push(("key file", key.as_path()));
    }
    ensure_distinct(&paths)?;

    let existing = Existing::from_force(args.force);
    check_output(&args.out, "output", existing)?;
    let input = open_input(&args.model)?;
    let key = match (&args.key, &args.key_out) {
        (Some(path), _) => read_key_file(path)?,
        (None, Some(path)) => {
            check_output(path, "key file", Existing::Never)?;
            ModelKey::generate().map_err(|e| Failure::usage(e.code(), e.to_string()))?
        }
        (None, None) => {
            return Err(Failure::usage(
                "missing-key",
                "one of --key-out or --key is required",
            ));
        }
    };

    let mut out =
        AtomicFile::create(&args.out, 0o644).map_err(|e| Failure::io("create", &args.out, &e))?;
    let bar = progress(input.len, "sealing");
    let options = SealOptions::new(name).with_chunk_size(chunk_size);
    let header = container::seal(&key, &options, bar.wrap_read(input.file), out.file())
        .map_err(|e| seal_failure(&args.model, &args.out, &e))?;
    bar.finish_and_clear();

    // The key first: a container must never exist without its key.
    if let Some(path) = &args.key_out {
        write_key_file(path, &key)?;
    }
    if let Err(e) = commit_output(out, &args.out, "output", existing) {
        if let Some(path) = args.key_out.as_ref().filter(|_| !e.visible) {
            // No container was published with the new key: do not leave it behind.
            let _ = std::fs::remove_file(path);
        }
        return Err(e.failure);
    }
    Ok(Sealed {
        header,
        model: args.model.clone(),
        out: args.out.clone(),
        new_key_file: args.key_out.clone(),
    })
}

/// Opens a container into `--out`, which appears only if everything verified.
pub(crate) fn decrypt(args: &DecryptArgs) -> Result<VerifiedContainer, Failure> {
    ensure_distinct(&[
        ("container", args.container.as_path()),
        ("output", args.out.as_path()),
        ("key file", args.key.as_path()),
    ])?;
    let existing = Existing::from_force(args.force);
    check_output(&args.out, "output", existing)?;
    let key = read_key_file(&args.key)?;
    let input = open_input(&args.container)?;
    let mut out =
        AtomicFile::create(&args.out, 0o600).map_err(|e| Failure::io("create", &args.out, &e))?;
    let bar = progress(input.len, "decrypting");
    let mut sink = TrackedWriter::new(out.file());
    let opened = container::open(&key, bar.wrap_read(input.file), &mut sink);
    bar.finish_and_clear();
    let verified = match opened {
        Ok(verified) => verified,
        Err(ContainerError::Io(e)) if sink.failed => {
            return Err(Failure::io("write", &args.out, &e));
        }
        Err(e) => return Err(Failure::container(&args.container, &e)),
    };
    commit_output(out, &args.out, "output", existing).map_err(|e| e.failure)?;
    Ok(verified)
}

/// Authenticates a container without writing anything.
pub(crate) fn verify(
    path: &Path,
    key_path: &Path,
    digest: DigestCheck,
) -> Result<VerifiedContainer, Failure> {
    let key = read_key_file(key_path)?;
    let input = open_input(path)?;
    let bar = progress(input.len, "verifying");
    let verified = container::verify(&key, bar.wrap_read(input.file), digest)
        .map_err(|e| Failure::container(path, &e))?;
    bar.finish_and_clear();
    Ok(verified)
}

/// Reads a container's header without a key.
pub(crate) fn inspect(path: &Path) -> Result<(Header, u64), Failure> {
    let input = open_input(path)?;
    let header = container::read_header(input.file).map_err(|e| Failure::container(path, &e))?;
    Ok((header, input.len))
}

fn verify_command(args: &VerifyArgs) -> Result<(), Reported> {
    let digest = if args.check_digest {
        DigestCheck::Recompute
    } else {
        DigestCheck::Skip
    };
    match verify(&args.container, &args.key, digest) {
        Ok(verified) if args.json => {
            report::print_json(&VerifyReport {
                ok: true,
                header: Some(HeaderReport::authenticated(verified.header())),
                digest_checked: verified.digest_check() == DigestCheck::Recompute,
                error: None,
            })?;
            Ok(())
        }
        Ok(verified) => {
            let header = verified.header();
            let digest_note = if verified.digest_check() == DigestCheck::Recompute {
                "plaintext sha256 recomputed and matches"
            } else {
                "plaintext sha256 not recomputed; use --check-digest"
            };
            say!(
                "OK {}: model {:?}, {} bytes in {} chunks, key id {}; header and every chunk \
                 authenticated ({digest_note})",
                args.container.display(),
                header.name().as_str(),
                header.plaintext_len(),
                header.chunk_count(),
                header.key_id(),
            )?;
            Ok(())
        }
        Err(failure) if args.json => {
            report::print_json(&VerifyReport {
                ok: false,
                header: None,
                digest_checked: false,
                error: Some(ErrorReport::new(&failure)),
            })?;
            Err(Reported(failure.exit_code()))
        }
        Err(failure) => Err(failure.into()),
    }
}

fn inspect_command(args: &InspectArgs) -> Result<(), Reported> {
    match inspect(&args.container) {
        Ok((header, file_len)) if args.json => {
            report::print_json(&HeaderReport::unauthenticated(&header, file_len))?;
            Ok(())
        }
        Ok((header, file_len)) => {
            say!("{}", describe_header(&args.container, &header, file_len))?;
            Ok(())
        }
        Err(failure) if args.json => {
            report::print_json(&serde_json::json!({ "error": ErrorReport::new(&failure) }))?;
            Err(Reported(failure.exit_code()))
        }
        Err(failure) => Err(failure.into()),
    }
}

/// A writer that remembers whether writing to it failed, to tell output errors from input errors.
struct TrackedWriter<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> TrackedWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            failed: false,
        }
    }
}

impl<W: Write> Write for TrackedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// The text `cloak model inspect` prints.
pub(crate) fn describe_header(path: &Path, header: &Header, file_len: u64) -> String {
    let expected = header.container_len();
    let completeness = if file_len == expected {
        "complete".to_owned()
    } else {
        format!("expected {expected} bytes: the file is damaged")
    };
    format!(
        "container:         {}\n\
         format version:    {}\n\
         algorithm:         {}\n\
         model name:        {}\n\
         key id:            {}\n\
         file id:           {}\n\
         plaintext length:  {} bytes\n\
         plaintext sha256:  {}\n\
         chunk size:        {} bytes ({} chunks)\n\
         created at:        {} ({})\n\
         file length:       {file_len} bytes ({completeness})\n\
         authenticated:     no (inspect reads the header without the key; run `cloak model verify`)",
        path.display(),
        header.format_version(),
        header.algorithm().name(),
        header.name(),
        header.key_id(),
        hex::encode(header.file_id()),
        header.plaintext_len(),
        hex::encode(header.plaintext_sha256()),
        header.chunk_size().get(),
        header.chunk_count(),
        rfc3339(header.created_at()),
        header.created_at(),
    )
}

fn print_sealed(sealed: &Sealed) -> Result<(), Failure> {
    let header = &sealed.header;
    say!(
        "sealed {} -> {} (model {:?}, {} bytes, sha256 {}, key id {})",
        sealed.model.display(),
        sealed.out.display(),
        header.name().as_str(),
        header.plaintext_len(),
        hex::encode(header.plaintext_sha256()),
        header.key_id(),
    )?;
    if let Some(path) = &sealed.new_key_file {
        say!(
            "wrote new key {} (mode 0600): keep it secret; it is the only way to open the container",
            path.display()
        )?;
    }
    Ok(())
}

fn model_name(args: &EncryptArgs) -> Result<ModelName, Failure> {
    let (name, hint) = match &args.name {
        Some(name) => (name.clone(), ""),
        None => (
            args.model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            " (taken from the file name; pass --name to choose another)",
        ),
    };
    ModelName::new(&name)
        .map_err(|e| Failure::usage("invalid-model-name", format!("{e}: {name:?}{hint}")))
}

fn seal_failure(model: &Path, out: &Path, error: &SealError) -> Failure {
    Failure::usage(
        "seal-failed",
        format!(
            "cannot seal {} into {}: {error}",
            model.display(),
            out.display()
        ),
    )
}

/// RFC 3339 (UTC) for a Unix time; times RFC 3339 cannot express (year 10000 on) are "out of
/// range" — the value comes from an unauthenticated header and must not crash `inspect`.
fn rfc3339(unix_seconds: u64) -> String {
    /// 10000-01-01T00:00:00Z.
    const YEAR_10000: u64 = 253_402_300_800;
    if unix_seconds >= YEAR_10000 {
        return "out of range".to_owned();
    }
    UNIX_EPOCH
        .checked_add(Duration::from_secs(unix_seconds))
        .map_or_else(
            || "out of range".to_owned(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        )
}

/// The JSON form of a header.
#[derive(Serialize)]
struct HeaderReport {
    format_version: u16,
    algorithm: &'static str,
    name: String,
    key_id: String,
    file_id: String,
    plaintext_len: u64,
    plaintext_sha256: String,
    chunk_size: u32,
    chunk_count: u32,
    created_at: u64,
    created_at_rfc3339: String,
    container_len: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_len: Option<u64>,
    authenticated: bool,
}

impl HeaderReport {
    /// A header read by `inspect`, without the key, from a file of `file_len` bytes.
    fn unauthenticated(header: &Header, file_len: u64) -> Self {
        Self {
            file_len: Some(file_len),
            authenticated: false,
            ..Self::authenticated(header)
        }
    }

    /// A header authenticated by `verify`.
    fn authenticated(header: &Header) -> Self {
        Self {
            format_version: header.format_version(),
            algorithm: header.algorithm().name(),
            name: header.name().to_string(),
            key_id: header.key_id().to_string(),
            file_id: hex::encode(header.file_id()),
            plaintext_len: header.plaintext_len(),
            plaintext_sha256: hex::encode(header.plaintext_sha256()),
            chunk_size: header.chunk_size().get(),
            chunk_count: header.chunk_count(),
            created_at: header.created_at(),
            created_at_rfc3339: rfc3339(header.created_at()),
            container_len: header.container_len(),
            file_len: None,
            authenticated: true,
        }
    }
}

#[derive(Serialize)]
struct VerifyReport {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<HeaderReport>,
    digest_checked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorReport>,
}

#[derive(Serialize)]
struct ErrorReport {
    code: &'static str,
    message: String,
    exit_status: u8,
}

impl ErrorReport {
    fn new(failure: &Failure) -> Self {
        Self {
            code: failure.code(),
            message: failure.to_string(),
            exit_status: failure.exit_status(),
        }
    }
}
