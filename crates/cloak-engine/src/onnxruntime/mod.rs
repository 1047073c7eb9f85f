//! The ONNX Runtime backend, through the `ort` crate, with the runtime loaded at run time from a
//! shared library the operator names (nothing is downloaded or linked at build time).
//!
//! ONNX Runtime allows one environment per process, so the library is loaded once, into a
//! process-wide [`Runtime`]; every engine over the same library shares it. The library's bytes
//! are hashed as they are loaded: the digest goes into the server's identity claims and the
//! simulated platform's measurement. `convert` maps types, tensors and errors; `sys` reads the
//! library's version string, the one native call made here rather than in `ort`.

mod convert;
mod sys;

use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use cloak_proto::tensor::Tensor;
use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::Session as OrtSession;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::ValueType;

use self::convert::{from_ort, load_error, redact, run_error, spec, to_ort};
use crate::{EngineError, LoadedLibrary, TensorSpec};

/// The ONNX Runtime loaded into this process.
pub(crate) struct Runtime {
    environment: Environment,
    library: LoadedLibrary,
    version: String,
}

/// The runtime, once loaded: every later engine over the same library shares it.
static LOADED: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

impl Runtime {
    /// The runtime from the library at `path`, loading it if this process has not.
    pub(crate) fn open(path: &Path) -> Result<Arc<Self>, EngineError> {
        let failure = |why: String| EngineError::Library(format!("{}: {why}", path.display()));
        let canonical = path.canonicalize().map_err(|e| failure(e.to_string()))?;
        let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(runtime) = loaded.as_ref() {
            if runtime.library.path == canonical {
                return Ok(Arc::clone(runtime));
            }
            return Err(failure(format!(
                "this process already runs ONNX Runtime from {} (one library per process)",
                runtime.library.path.display()
            )));
        }
        let (library, before) = digest(&canonical).map_err(failure)?;
        // `ort` loads and checks the library (its `OrtGetApiBase`, and a version no older than
        // the API level this build uses); a panic inside it is a failure to load, not a crash.
        let environment = catch_unwind(|| -> Result<Environment, String> {
            let environment = ort::init_from(&canonical)
                .map_err(|e| e.to_string())?
                .with_name("cloak")
                .with_telemetry(false)
                .with_logger(Arc::new(log))
                .build()
                .map_err(|e| e.to_string())?;
            environment.set_log_level(LogLevel::Warning);
            Ok(environment)
        })
        .map_err(|_| failure("ONNX Runtime failed while loading (internal error)".to_owned()))?
        .map_err(failure)?;
        // The loader opened the path again: it must still be the file that was hashed.
        match identify(&canonical) {
            Ok(after) if after == before => {}
            _ => {
                return Err(failure(
                    "the file changed while it was being loaded".to_owned(),
                ));
            }
        }
        let version = sys::version(&canonical).map_err(failure)?;
        let runtime = Arc::new(Self {
            environment,
            library,
            version,
        });
        *loaded = Some(Arc::clone(&runtime));
        Ok(runtime)
    }

    /// The library's own version string.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    /// The library loaded.
    pub(crate) fn library(&self) -> &LoadedLibrary {
        &self.library
    }

    /// Compiles an ONNX model held in memory, with `threads` intra-op threads per request.
    pub(crate) fn load(
        &self,
        onnx: &[u8],
        threads: NonZeroUsize,
    ) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>, Model), EngineError> {
        let session = catch_unwind(AssertUnwindSafe(|| -> ort::Result<OrtSession> {
            let mut builder = OrtSession::builder(&self.environment)?
                .with_optimization_level(GraphOptimizationLevel::All)?
                .with_intra_threads(threads.get())?
                // ONNX Runtime's pool threads spin between and after runs by default. In the
                // server they share the cores with the request path (TLS, HPKE, receipt
                // digests) of this request and others, which the spinning holds off: measured
                // with `cloak bench --engine onnxruntime --engine-threads 2` on the 2-core build
                // machine, not spinning halves the end-to-end latency (EfficientNet-Lite0
                // 13–20 ms → 8–11 ms over attested TLS, all-MiniLM-L6-v2 41–46 → 22–28 ms).
                // With one thread there is no pool, and nothing changes.
                .with_intra_op_spinning(false)?
                .with_inter_threads(1)?;
            builder.commit_from_memory(onnx)
        }))
        .map_err(|_| {
            EngineError::Load("ONNX Runtime failed on this model (internal error)".into())
        })?
        .map_err(load_error)?;
        let signature = |outlets: &[ort::value::Outlet]| {
            outlets
                .iter()
                .map(|outlet| match outlet.dtype() {
                    ValueType::Tensor {
                        ty,
                        shape,
                        dimension_symbols,
                    } => spec(outlet.name(), *ty, shape, dimension_symbols),
                    other => Err(EngineError::UnsupportedType {
                        tensor: outlet.name().to_owned(),
                        datum: other.to_string(),
                    }),
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let inputs = signature(session.inputs())?;
        let outputs = signature(session.outputs())?;
        Ok((
            inputs,
            outputs,
            Model {
                session: Mutex::new(session),
            },
        ))
    }
}

/// A model compiled by ONNX Runtime.
///
/// `ort` runs a session through `&mut` (some of ONNX Runtime's allocators are not thread-safe),
/// so requests to one model take turns; each uses the engine's intra-op threads.
pub(crate) struct Model {
    session: Mutex<OrtSession>,
}

impl Model {
    /// Runs a request whose inputs passed the signature checks, in the model's input order.
    pub(crate) fn run(
        &self,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
        tensors: Vec<Tensor>,
    ) -> Result<Vec<Tensor>, EngineError> {
        let values = inputs
            .iter()
            .zip(&tensors)
            .map(|(spec, tensor)| to_ort(spec, tensor))
            .collect::<Result<Vec<_>, _>>()?;
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let run = catch_unwind(AssertUnwindSafe(|| {
            let results = session.run(values.as_slice()).map_err(run_error)?;
            outputs
                .iter()
                .map(|spec| {
                    let value = results.get(spec.name()).ok_or_else(|| {
                        EngineError::Run(format!("output {} is missing", spec.name()))
                    })?;
                    from_ort(spec, value)
                })
                .collect::<Result<Vec<_>, _>>()
        }));
        run.unwrap_or(Err(EngineError::Panicked))
    }
}

/// ONNX Runtime's own log, into the server's: its default logger writes to standard error and
/// quotes the data a kernel failed on (`idx=…` for an index out of range, a client's input), so
/// every message goes through the same redaction as its errors.
fn log(level: LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    let message = redact(message);
    match level {
        LogLevel::Fatal | LogLevel::Error => {
            tracing::error!(target: "onnxruntime", %category, %location, "{message}");
        }
        LogLevel::Warning => {
            tracing::warn!(target: "onnxruntime", %category, %location, "{message}");
        }
        LogLevel::Info | LogLevel::Verbose => {
            tracing::debug!(target: "onnxruntime", %category, %location, "{message}");
        }
    }
}

/// What identifies a file's contents on disk without reading it: device, inode, size and
/// modification time.
type FileIdentity = (u64, u64, u64, Option<std::time::SystemTime>);

fn identify(path: &Path) -> std::io::Result<FileIdentity> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino(), meta.size(), meta.modified().ok()))
}

/// Hashes the library at `path`, returning what identifies the file hashed.
fn digest(path: &Path) -> Result<(LoadedLibrary, FileIdentity), String> {
    let before = identify(path).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if identify(path).map_err(|e| e.to_string())? != before {
        return Err("the file changed while it was being read".to_owned());
    }
    let library = LoadedLibrary {
        path: PathBuf::from(path),
        sha256: cloak_crypto::hash::sha256(&bytes),
        bytes: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
    };
    Ok((library, before))
}
