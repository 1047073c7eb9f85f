//! The engine: which backend runs models, with how many threads, and what it says about itself
//! in the server's identity claims.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cloak_proto::identity::EngineClaim;

use crate::{EngineError, PreparedModel, onnxruntime, tract};

/// The version of tract this build links (checked against `Cargo.lock` by a test).
pub(crate) const TRACT_VERSION: &str = "0.23.9";

/// The intra-op threads one tract request uses when none are configured: one. Measured on this
/// project's 2-core build machine, a second thread buys tract up to 1.4× on one request's latency
/// on some models and costs up to 1.5× on others, while sessions of one model already run in
/// parallel on the server's workers, one per core (see `ARCHITECTURE.md`, "Engines").
pub const DEFAULT_THREADS: NonZeroUsize = NonZeroUsize::MIN;

/// The intra-op threads one ONNX Runtime request uses when none are configured: one per CPU
/// this process may use (as onnxruntime's own default). Requests to one model take turns on its
/// session, so its threads are what parallelism a model gets; measured on the 2-core build
/// machine, two threads run a request 1.4–1.7× faster than one (models above a few
/// milliseconds).
pub fn default_onnxruntime_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// The inference backends.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// ONNX Runtime, loaded at run time from a shared library the operator names: fast, with
    /// the widest operator coverage, and a large native library inside the enclave.
    OnnxRuntime,
    /// tract: pure Rust, compiled in, a small trusted computing base.
    Tract,
}

impl EngineKind {
    /// The name used on command lines and in identity claims: `onnxruntime` or `tract`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OnnxRuntime => "onnxruntime",
            Self::Tract => "tract",
        }
    }

    /// The platform KServe model metadata names for an ONNX model this engine runs, as Triton
    /// names its backends' (`onnxruntime_onnx`); tract has no Triton backend, so its own name.
    pub fn platform(self) -> &'static str {
        match self {
            Self::OnnxRuntime => "onnxruntime_onnx",
            Self::Tract => "tract_onnx",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "onnxruntime" => Ok(Self::OnnxRuntime),
            "tract" => Ok(Self::Tract),
            other => Err(EngineError::Library(format!(
                "unknown engine {other:?} (tract or onnxruntime)"
            ))),
        }
    }
}

/// A shared library an engine loaded: where from, and a digest of exactly the bytes loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedLibrary {
    pub(crate) path: PathBuf,
    pub(crate) sha256: [u8; 32],
    pub(crate) bytes: u64,
}

impl LoadedLibrary {
    /// The path it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of its bytes.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// What an engine is: its backend, the backend's version, the library it loaded (for ONNX
/// Runtime) and its threads per request. The server puts the first three in its claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    kind: EngineKind,
    version: String,
    library: Option<LoadedLibrary>,
    threads: NonZeroUsize,
}

impl EngineInfo {
    /// The backend.
    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    /// The backend's version (`0.23.9` for tract, the library's own `1.32.0` for ONNX Runtime).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The shared library the backend runs in, if it is not compiled in.
    pub fn library(&self) -> Option<&LoadedLibrary> {
        self.library.as_ref()
    }

    /// The SHA-256s of the libraries the engine loaded, in load order: what a measurement
    /// covering the engine's trusted files covers (empty for tract).
    pub fn library_digests(&self) -> Vec<[u8; 32]> {
        self.library.iter().map(|l| l.sha256).collect()
    }

    /// Intra-op threads per request.
    pub fn threads(&self) -> NonZeroUsize {
        self.threads
    }

    /// The engine as identity claims state it.
    pub fn claim(&self) -> EngineClaim {
        EngineClaim {
            name: self.kind.name().to_owned(),
            version: self.version.clone(),
            library_sha256: self.library.as_ref().map(|l| l.sha256),
        }
    }
}

/// Loads models with one backend. Cheap to clone; holds configuration and, for ONNX Runtime,
/// the loaded library.
#[derive(Clone)]
pub struct Engine {
    backend: Backend,
    info: Arc<EngineInfo>,
}

#[derive(Clone)]
enum Backend {
    OnnxRuntime(Arc<onnxruntime::Runtime>),
    Tract(tract::Runtime),
}

impl Default for Engine {
    fn default() -> Self {
        Self::tract()
    }
}

impl Engine {
    /// tract with [`DEFAULT_THREADS`].
    pub fn new() -> Self {
        Self::tract()
    }

    /// tract with [`DEFAULT_THREADS`]: pure Rust, nothing to load.
    pub fn tract() -> Self {
        Self {
            backend: Backend::Tract(tract::Runtime::new(DEFAULT_THREADS)),
            info: Arc::new(EngineInfo {
                kind: EngineKind::Tract,
                version: TRACT_VERSION.to_owned(),
                library: None,
                threads: DEFAULT_THREADS,
            }),
        }
    }

    /// ONNX Runtime from the shared library at `library` (`libonnxruntime.so.1.*`, as the
    /// `onnxruntime` wheel ships it in `onnxruntime/capi/`), with
    /// [`default_onnxruntime_threads`].
    ///
    /// The library is hashed and loaded once per process; asking for another library after one
    /// is loaded is an error (ONNX Runtime allows one environment per process). A missing file,
    /// a file that is not ONNX Runtime, or a version older than this build's API level
    /// (ONNX Runtime 1.31) is an [`EngineError::Library`], never a crash.
    pub fn onnxruntime(library: impl AsRef<Path>) -> Result<Self, EngineError> {
        let runtime = onnxruntime::Runtime::open(library.as_ref())?;
        let info = EngineInfo {
            kind: EngineKind::OnnxRuntime,
            version: runtime.version().to_owned(),
            library: Some(runtime.library().clone()),
            threads: default_onnxruntime_threads(),
        };
        Ok(Self {
            backend: Backend::OnnxRuntime(runtime),
            info: Arc::new(info),
        })
    }

    /// The same engine with `threads` intra-op threads per request.
    #[must_use]
    pub fn with_threads(mut self, threads: NonZeroUsize) -> Self {
        if let Backend::Tract(_) = self.backend {
            self.backend = Backend::Tract(tract::Runtime::new(threads));
        }
        Arc::make_mut(&mut self.info).threads = threads;
        self
    }

    /// What this engine is (for claims, metrics and logs).
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// Parses an ONNX model held in memory and prepares it for requests.
    ///
    /// With tract, a plan is compiled per distinct set of input shapes and kept (up to 16 per
    /// model): tract optimizes for concrete shapes far more reliably than for symbolic ones. A
    /// model with only fixed dimensions is compiled here, once; one with dynamic dimensions
    /// compiles on the first request of each shape. With ONNX Runtime the model is compiled
    /// once, here, for every shape. Either way, errors name the failing node and operator,
    /// never the model's weights.
    pub fn load(&self, name: &str, onnx: &[u8]) -> Result<PreparedModel, EngineError> {
        let (inputs, outputs, backend) = match &self.backend {
            Backend::Tract(runtime) => {
                let (inputs, outputs, model) = tract::load(runtime, onnx)?;
                (
                    inputs,
                    outputs,
                    crate::model::Backend::Tract(Box::new(model)),
                )
            }
            Backend::OnnxRuntime(runtime) => {
                let (inputs, outputs, model) = runtime.load(onnx, self.info.threads)?;
                (inputs, outputs, crate::model::Backend::OnnxRuntime(model))
            }
        };
        PreparedModel::new(
            name.to_owned(),
            onnx.len(),
            inputs,
            outputs,
            Arc::clone(&self.info),
            backend,
        )
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("info", &self.info).finish()
    }
}
