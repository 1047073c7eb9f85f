//! The model store: sealed `.cloak` containers decrypted into enclave memory, authenticated
//! chunk by chunk, and handed to the engine. Plaintext weights never touch disk.
//!
//! A container that cannot be loaded (no key, wrong key, tampered, over a limit, a model the
//! engine cannot run) is recorded with its reason and the others are still served.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use cloak_crypto::container;
use cloak_crypto::key::ModelKey;
use cloak_engine::{Engine, PreparedModel};
use cloak_proto::identity::ModelClaim;
use zeroize::Zeroizing;

use crate::limits::Limits;

/// A model that loaded.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// The prepared model.
    pub model: PreparedModel,
    /// What the identity claims state about it.
    pub claim: ModelClaim,
    /// The container it came from.
    pub path: PathBuf,
}

/// A container that did not load, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedModel {
    /// The model's name (from the container header, else the file name).
    pub name: String,
    /// The container.
    pub path: PathBuf,
    /// A stable code (`no-key`, `wrong-key`, `tampered`, `model-load-failed`, …).
    pub code: String,
    /// A sentence for operators and for `POST /v2/repository/index`.
    pub reason: String,
}

/// Every model found in the model directory.
#[derive(Debug, Default)]
pub struct ModelStore {
    ready: BTreeMap<String, LoadedModel>,
    failed: Vec<FailedModel>,
}

impl ModelStore {
    /// Loads every `*.cloak` file in `dir` (not recursively), in name order, with the key named
    /// for its model in `keys`.
    pub fn load_dir(
        dir: &Path,
        keys: &HashMap<String, ModelKey>,
        engine: &Engine,
        limits: &Limits,
    ) -> std::io::Result<Self> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "cloak"))
            .collect();
        paths.sort();
        let mut store = Self::default();
        let mut total: u64 = 0;
        for path in paths {
            let fallback_name = path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            match load_one(&path, keys, engine, limits, &store, total) {
                Ok(loaded) => {
                    total = total.saturating_add(loaded.claim.bytes);
                    tracing::info!(
                        model = %loaded.claim.name,
                        bytes = loaded.claim.bytes,
                        sha256 = %hex::encode(loaded.claim.sha256),
                        "model loaded"
                    );
                    store.ready.insert(loaded.claim.name.clone(), loaded);
                }
                Err((name, code, reason)) => {
                    let name = name.unwrap_or(fallback_name);
                    tracing::warn!(model = %name, path = %path.display(), code, %reason, "model not loaded");
                    store.failed.push(FailedModel {
                        name,
                        path,
                        code: code.to_owned(),
                        reason,
                    });
                }
            }
        }
        Ok(store)
    }

    /// The model ready under `name`.
    pub fn get(&self, name: &str) -> Option<&LoadedModel> {
        self.ready.get(name)
    }

    /// Every ready model, by name.
    pub fn ready(&self) -> impl Iterator<Item = &LoadedModel> {
        self.ready.values()
    }

    /// Every container that failed, in directory order.
    pub fn failed(&self) -> &[FailedModel] {
        &self.failed
    }

    /// The failure recorded for `name`, if its container did not load.
    pub fn failure(&self, name: &str) -> Option<&FailedModel> {
        self.failed.iter().find(|f| f.name == name)
    }

    /// The claims for every ready model.
    pub fn claims(&self) -> Vec<ModelClaim> {
        self.ready.values().map(|m| m.claim.clone()).collect()
    }
}

type LoadError = (Option<String>, &'static str, String);

fn load_one(
    path: &Path,
    keys: &HashMap<String, ModelKey>,
    engine: &Engine,
    limits: &Limits,
    store: &ModelStore,
    total: u64,
) -> Result<LoadedModel, LoadError> {
    let io = |e: std::io::Error| {
        (
            None,
            "unreadable",
            format!("cannot read the container: {e}"),
        )
    };
    // The header is read unauthenticated to find the key; opening authenticates it.
    let header = container::read_header(BufReader::new(File::open(path).map_err(io)?))
        .map_err(|e| (None, e.code(), format!("not a readable container: {e}")))?;
    let name = header.name().as_str().to_owned();
    let fail = |code: &'static str, reason: String| (Some(name.clone()), code, reason);
    if store.ready.contains_key(&name) {
        return Err(fail(
            "duplicate-model",
            format!("another container already provides model {name}"),
        ));
    }
    if store.ready.len() >= limits.max_models {
        return Err(fail(
            "too-many-models",
            format!("the server is limited to {} models", limits.max_models),
        ));
    }
    let Some(key) = keys.get(&name) else {
        return Err(fail(
            "no-key",
            format!("no key was given for model {name} (--model-key {name}=FILE)"),
        ));
    };
    let plaintext_len = header.plaintext_len();
    if total.saturating_add(plaintext_len) > limits.max_model_bytes {
        return Err(fail(
            "model-memory-limit",
            format!(
                "loading its {plaintext_len} bytes would exceed the {}-byte model memory limit",
                limits.max_model_bytes
            ),
        ));
    }
    // Reserve the whole plaintext up front: a growing Vec would leave unzeroized copies behind.
    let capacity = usize::try_from(plaintext_len).map_err(|_| {
        fail(
            "model-memory-limit",
            "the model does not fit in memory".into(),
        )
    })?;
    let mut plaintext = Zeroizing::new(Vec::with_capacity(capacity));
    let file = File::open(path).map_err(|e| fail("unreadable", format!("cannot read: {e}")))?;
    let verified = container::open(key, BufReader::new(file), &mut *plaintext).map_err(|e| {
        // The container's own reason (`chunk-authentication`, `wrong-key`, `truncated`, ...).
        fail(e.code(), format!("the container does not open: {e}"))
    })?;
    let prepared = engine
        .load(&name, &plaintext)
        .map_err(|e| fail(e.code(), e.to_string()))?;
    Ok(LoadedModel {
        model: prepared,
        claim: ModelClaim {
            name,
            bytes: plaintext_len,
            sha256: *verified.header().plaintext_sha256(),
        },
        path: path.to_path_buf(),
    })
}
