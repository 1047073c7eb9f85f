//! `cloak demo`: Cloak end to end on embedded defaults, through the same code paths as the real
//! commands.
//!
//! Today it covers what Cloak can do so far: a model owner seals a model; the untrusted host
//! stores the container and can read only its header; tampering and a wrong key are detected;
//! the owner opens it again bit for bit.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use cloak_crypto::container::{ChunkSize, DigestCheck, HEADER_LEN};
use cloak_crypto::key::ModelKey;

use crate::Reported;
use crate::failure::{EXIT_VERIFICATION, Failure};
use crate::files::write_key_file;
use crate::model::{self, DecryptArgs, EncryptArgs};

/// The model the demo seals: a small ONNX classifier (see `scripts/make-demo-model.py`).
const DEMO_MODEL: &[u8] = include_bytes!("../assets/demo-mlp.onnx");
const DEMO_MODEL_NAME: &str = "demo-mlp";

/// Arguments of `cloak demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Keep the demo's files in DIR (created if needed; must be empty) instead of a temporary
    /// directory that is removed at the end
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Runs the demo.
pub(crate) fn run(args: &DemoArgs) -> Result<(), Reported> {
    let workspace = Workspace::new(args.dir.as_deref())?;
    say!("Cloak demo — working in {}\n", workspace.root.display())?;
    let result = steps(&workspace.root);
    if let Err(failure) = &result {
        eprintln!("\ndemo failed: {failure}");
    }
    result.map_err(|f| Reported(f.exit_code()))
}

fn steps(root: &Path) -> Result<(), Failure> {
    let owner = root.join("model-owner");
    let host = root.join("host");
    for dir in [&owner, &host] {
        fs::create_dir(dir).map_err(|e| Failure::io("create directory", dir, &e))?;
    }
    let model_path = owner.join("demo-mlp.onnx");
    let key_path = owner.join("demo-mlp.key");
    let container = host.join("demo-mlp.cloak");
    fs::write(&model_path, DEMO_MODEL).map_err(|e| Failure::io("write", &model_path, &e))?;

    say!("1. The model owner seals {DEMO_MODEL_NAME} with a fresh 256-bit key")?;
    let sealed = model::encrypt(&EncryptArgs {
        model: model_path.clone(),
        out: container.clone(),
        key_out: Some(key_path.clone()),
        key: None,
        name: None,
        chunk_size: ChunkSize::DEFAULT.get(),
        force: false,
    })?;
    say!(
        "   model-owner/demo-mlp.onnx ({} bytes) -> host/demo-mlp.cloak\n   \
         key -> model-owner/demo-mlp.key (mode 0600, key id {})\n",
        DEMO_MODEL.len(),
        sealed.header.key_id(),
    )?;

    say!("2. The host stores the container. Without the key it can read only the header:")?;
    let (header, file_len) = model::inspect(&container)?;
    let shown = Path::new("host/demo-mlp.cloak");
    for line in model::describe_header(shown, &header, file_len).lines() {
        say!("   {line}")?;
    }
    let stored = fs::read(&container).map_err(|e| Failure::io("read", &container, &e))?;
    if let Some(window) = DEMO_MODEL
        .windows(16)
        .find(|w| stored.windows(16).any(|s| s == *w))
    {
        return Err(Failure::verification_in_demo(format!(
            "the container holds a run of the model's bytes in clear: {}",
            hex::encode(window)
        )));
    }
    say!("   (no 16-byte run of the model appears anywhere in the container)\n")?;

    say!("3. The owner verifies the stored container with the key:")?;
    let verified = model::verify(&container, &key_path, DigestCheck::Recompute)?;
    say!(
        "   OK: header and all {} chunk(s) authenticated; plaintext sha256 recomputed and matches\n",
        verified.header().chunk_count()
    )?;

    say!("4. The host flips one bit of the ciphertext:")?;
    let tampered = host.join("tampered.cloak");
    let mut bytes = stored.clone();
    let target = HEADER_LEN + 64;
    if let Some(byte) = bytes.get_mut(target) {
        *byte ^= 0x01;
    }
    fs::write(&tampered, &bytes).map_err(|e| Failure::io("write", &tampered, &e))?;
    expect_rejection(&tampered, &key_path, "chunk-authentication")?;

    say!("5. Someone tries another key:")?;
    let other_key = owner.join("other.key");
    let key = ModelKey::generate().map_err(|e| Failure::usage(e.code(), e.to_string()))?;
    write_key_file(&other_key, &key)?;
    expect_rejection(&container, &other_key, "wrong-key")?;

    say!("6. The owner decrypts the container again:")?;
    let roundtrip = owner.join("roundtrip.onnx");
    model::decrypt(&DecryptArgs {
        container: container.clone(),
        key: key_path.clone(),
        out: roundtrip.clone(),
        force: false,
    })?;
    let back = fs::read(&roundtrip).map_err(|e| Failure::io("read", &roundtrip, &e))?;
    if back != DEMO_MODEL {
        return Err(Failure::verification_in_demo(
            "the decrypted model differs from the original",
        ));
    }
    say!(
        "   model-owner/roundtrip.onnx is identical to the original ({} bytes)\n",
        back.len()
    )?;

    say!("What each party saw:")?;
    say!(
        "   model owner: the model and its key (key id {})",
        sealed.header.key_id()
    )?;
    say!(
        "   host:        {} bytes of container; in clear only the name {:?}, the size, the \
         sha256 and the key id",
        stored.len(),
        DEMO_MODEL_NAME
    )?;
    say!("   attacker:    a flipped bit and a wrong key, both rejected before any plaintext")?;
    Ok(())
}

/// Verifies `container` with `key` and requires the failure `code`.
fn expect_rejection(container: &Path, key: &Path, code: &str) -> Result<(), Failure> {
    match model::verify(container, key, DigestCheck::Skip) {
        Err(failure) if failure.code() == code && failure.exit_status() == EXIT_VERIFICATION => {
            let reason = failure.to_string();
            let reason = reason.split_once(": ").map_or(reason.as_str(), |(_, r)| r);
            say!("   rejected ({}): {reason}\n", failure.code())?;
            Ok(())
        }
        Err(failure) => Err(Failure::verification_in_demo(format!(
            "expected a `{code}` rejection, got: {failure}"
        ))),
        Ok(_) => Err(Failure::verification_in_demo(format!(
            "{} verified, but it must fail with `{code}`",
            container.display()
        ))),
    }
}

/// The directory the demo works in; a temporary one is removed on drop.
struct Workspace {
    root: PathBuf,
    temporary: bool,
}

impl Workspace {
    fn new(dir: Option<&Path>) -> Result<Self, Failure> {
        if let Some(dir) = dir {
            fs::create_dir_all(dir).map_err(|e| Failure::io("create directory", dir, &e))?;
            let mut entries =
                fs::read_dir(dir).map_err(|e| Failure::io("read directory", dir, &e))?;
            if entries.next().is_some() {
                return Err(Failure::usage(
                    "directory-not-empty",
                    format!("--dir {} must be empty", dir.display()),
                ));
            }
            return Ok(Self {
                root: dir.to_path_buf(),
                temporary: false,
            });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let root = std::env::temp_dir().join(format!("cloak-demo-{}-{nanos}", std::process::id()));
        DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(|e| Failure::io("create directory", &root, &e))?;
        Ok(Self {
            root,
            temporary: true,
        })
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.temporary {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
