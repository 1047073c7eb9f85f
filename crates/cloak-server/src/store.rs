//! The model store: sealed `.cloak` containers decrypted into enclave memory, authenticated
//! chunk by chunk, and handed to the engine. Plaintext weights never touch disk.
//!
//! A container that cannot be loaded (no key yet, wrong key, tampered, over a limit, a model the
//! engine cannot run) is recorded with its reason and the others are still served. Models can
//! become ready after the server started (when the key broker releases their keys), so the store
//! is shared and internally synchronised; readers get cheap clones.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use cloak_crypto::container;
use cloak_crypto::key::{KeyId, ModelKey};
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

/// A container that is not served (yet), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedModel {
    /// The model's name (from the container header, else the file name).
    pub name: String,
    /// The container.
    pub path: PathBuf,
    /// A stable code (`no-key`, `key-pending`, `wrong-key`, `chunk-authentication`, …).
    pub code: String,
    /// A sentence for operators and for `POST /v2/repository/index`.
    pub reason: String,
}

impl FailedModel {
    /// `found` has no key.
    pub fn no_key(found: Found) -> Self {
        Self {
            reason: format!(
                "no key was given for model {} (--model-key {}=FILE, or --kbs URL)",
                found.name, found.name
            ),
            name: found.name,
            path: found.path,
            code: "no-key".to_owned(),
        }
    }
}

/// A container found in the model directory whose (unauthenticated) header could be read.
#[derive(Clone, Debug)]
pub struct Found {
    /// The container.
    pub path: PathBuf,
    /// The model name its header states.
    pub name: String,
    /// The id of the key its header names.
    pub key_id: KeyId,
    /// Its plaintext length.
    pub plaintext_len: u64,
}

/// Every model found in the model directory: ready, or not with a reason.
#[derive(Debug, Default)]
pub struct ModelStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    // Shared: a request takes its model with a reference-count increment, not a copy.
    ready: BTreeMap<String, Arc<LoadedModel>>,
    failed: Vec<FailedModel>,
    /// The owners' access-token keys, by model name (only for models whose policy sets one).
    token_keys: BTreeMap<String, Vec<u8>>,
}

impl ModelStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every `*.cloak` file in `dir` with the key named for its model in `keys` (models
    /// without a key are recorded as `no-key`).
    pub fn load_dir(
        dir: &Path,
        keys: &std::collections::HashMap<String, ModelKey>,
        engine: &Engine,
        limits: &Limits,
    ) -> std::io::Result<Self> {
        let store = Self::new();
        for item in store.scan(dir)? {
            match keys.get(&item.name) {
                Some(key) => {
                    // A failure is recorded in the store.
                    let _ = store.load(&item, key, engine, limits);
                }
                None => store.set_failed(FailedModel::no_key(item)),
            }
        }
        Ok(store)
    }

    /// Reads the header of every `*.cloak` file in `dir` (not recursively), in name order.
    /// Containers whose header cannot be read are recorded as failed; the rest are returned.
    pub fn scan(&self, dir: &Path) -> std::io::Result<Vec<Found>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "cloak"))
            .collect();
        paths.sort();
        let mut found = Vec::with_capacity(paths.len());
        for path in paths {
            let header = File::open(&path)
                .map_err(|e| ("unreadable", format!("cannot read the container: {e}")))
                .and_then(|file| {
                    container::read_header(BufReader::new(file))
                        .map_err(|e| (e.code(), format!("not a readable container: {e}")))
                });
            match header {
                Ok(header) => found.push(Found {
                    path,
                    name: header.name().as_str().to_owned(),
                    key_id: header.key_id(),
                    plaintext_len: header.plaintext_len(),
                }),
                Err((code, reason)) => {
                    let name = path
                        .file_stem()
                        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                    self.set_failed(FailedModel {
                        name,
                        path,
                        code: code.to_owned(),
                        reason,
                    });
                }
            }
        }
        Ok(found)
    }

    /// Decrypts `found` with `key` and loads it (blocking). On success the model is ready; on
    /// failure the reason is recorded and returned.
    pub fn load(
        &self,
        found: &Found,
        key: &ModelKey,
        engine: &Engine,
        limits: &Limits,
    ) -> Result<(), FailedModel> {
        match self.load_inner(found, key, engine, limits) {
            Ok(loaded) => {
                tracing::info!(
                    model = %loaded.claim.name,
                    bytes = loaded.claim.bytes,
                    sha256 = %hex::encode(loaded.claim.sha256),
                    "model loaded"
                );
                let mut inner = self.write();
                inner.failed.retain(|f| f.name != loaded.claim.name);
                inner
                    .ready
                    .insert(loaded.claim.name.clone(), Arc::new(loaded));
                Ok(())
            }
            Err((code, reason)) => {
                let failed = FailedModel {
                    name: found.name.clone(),
                    path: found.path.clone(),
                    code: code.to_owned(),
                    reason,
                };
                self.set_failed(failed.clone());
                Err(failed)
            }
        }
    }

    /// Records (or replaces) why `failed.name` is not served, and logs it.
    pub fn set_failed(&self, failed: FailedModel) {
        tracing::warn!(
            model = %failed.name,
            path = %failed.path.display(),
            code = %failed.code,
            reason = %failed.reason,
            "model not loaded"
        );
        let mut inner = self.write();
        // A name that is already served keeps being served (a duplicate container fails alone).
        if let Some(existing) = inner
            .failed
            .iter_mut()
            .find(|f| f.name == failed.name && f.path == failed.path)
        {
            *existing = failed;
        } else {
            inner.failed.push(failed);
        }
    }

    /// Stops serving `failed.name` (its key was revoked or its lease ended) and records why.
    /// Requests already running finish with the model they hold.
    pub fn unload(&self, failed: FailedModel) {
        self.write().ready.remove(&failed.name);
        self.set_failed(failed);
    }

    /// Sets (or clears) the model owner's access-token key for `name`: with one, the model is
    /// served only to requests carrying a token it signed.
    pub fn set_token_key(&self, name: &str, key: Option<Vec<u8>>) {
        let mut inner = self.write();
        match key {
            Some(key) => inner.token_keys.insert(name.to_owned(), key),
            None => inner.token_keys.remove(name),
        };
    }

    /// The access-token key `name` requires, if any.
    pub fn token_key(&self, name: &str) -> Option<Vec<u8>> {
        self.read().token_keys.get(name).cloned()
    }

    /// The model ready under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.read().ready.get(name).cloned()
    }

    /// Whether a model is ready under `name`.
    pub fn is_ready(&self, name: &str) -> bool {
        self.read().ready.contains_key(name)
    }

    /// Every ready model, by name.
    pub fn ready(&self) -> Vec<Arc<LoadedModel>> {
        self.read().ready.values().cloned().collect()
    }

    /// Every container not served, in the order they were found.
    pub fn failed(&self) -> Vec<FailedModel> {
        self.read().failed.clone()
    }

    /// How many models are ready and how many are not.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.read();
        (inner.ready.len(), inner.failed.len())
    }

    /// Why `name` is not served, if a container for it is known and not ready.
    pub fn failure(&self, name: &str) -> Option<FailedModel> {
        self.read().failed.iter().find(|f| f.name == name).cloned()
    }

    /// The claims for every ready model.
    pub fn claims(&self) -> Vec<ModelClaim> {
        self.read()
            .ready
            .values()
            .map(|m| m.claim.clone())
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn load_inner(
        &self,
        found: &Found,
        key: &ModelKey,
        engine: &Engine,
        limits: &Limits,
    ) -> Result<LoadedModel, (&'static str, String)> {
        let name = &found.name;
        let (count, total) = {
            let inner = self.read();
            if inner.ready.contains_key(name) {
                return Err((
                    "duplicate-model",
                    format!("another container already provides model {name}"),
                ));
            }
            let total = inner
                .ready
                .values()
                .fold(0u64, |sum, m| sum.saturating_add(m.claim.bytes));
            (inner.ready.len(), total)
        };
        if count >= limits.max_models {
            return Err((
                "too-many-models",
                format!("the server is limited to {} models", limits.max_models),
            ));
        }
        let plaintext_len = found.plaintext_len;
        if total.saturating_add(plaintext_len) > limits.max_model_bytes {
            return Err((
                "model-memory-limit",
                format!(
                    "loading its {plaintext_len} bytes would exceed the {}-byte model memory limit",
                    limits.max_model_bytes
                ),
            ));
        }
        // Reserve the whole plaintext up front: a growing Vec would leave unzeroized copies
        // behind.
        let capacity = usize::try_from(plaintext_len).map_err(|_| {
            (
                "model-memory-limit",
                "the model does not fit in memory".to_owned(),
            )
        })?;
        let mut plaintext = Zeroizing::new(Vec::with_capacity(capacity));
        let file =
            File::open(&found.path).map_err(|e| ("unreadable", format!("cannot read: {e}")))?;
        // Opening authenticates the header read unauthenticated by `scan`; the container's own
        // reason (`chunk-authentication`, `wrong-key`, `truncated`, ...) is reported.
        let verified = container::open(key, BufReader::new(file), &mut *plaintext)
            .map_err(|e| (e.code(), format!("the container does not open: {e}")))?;
        if verified.header().name().as_str() != name {
            return Err((
                "container-changed",
                "the container changed while it was being loaded".to_owned(),
            ));
        }
        let prepared = engine
            .load(name, &plaintext)
            .map_err(|e| (e.code(), e.to_string()))?;
        Ok(LoadedModel {
            model: prepared,
            claim: ModelClaim {
                name: name.clone(),
                bytes: verified.header().plaintext_len(),
                sha256: *verified.header().plaintext_sha256(),
            },
            path: found.path.clone(),
        })
    }
}
