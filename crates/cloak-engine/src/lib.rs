//! Inference for Cloak, with two backends behind one contract:
//!
//! - [tract](https://github.com/sonos/tract): pure Rust, compiled in, no native library to
//!   trust or to ship into an enclave ([`Engine::tract`], the default);
//! - [ONNX Runtime](https://onnxruntime.ai), through the `ort` crate, loaded at run time from
//!   a shared library the operator names ([`Engine::onnxruntime`]): several times faster on real
//!   models and with the widest operator coverage, at the price of a large native library in
//!   the trusted computing base. Its version and the SHA-256 of the library loaded are in
//!   [`EngineInfo`], for the server's identity claims.
//!
//! [`Engine`] → [`PreparedModel`] → [`Session`], the same for both:
//!
//! - [`Engine::load`] parses an ONNX model from bytes in memory (the server decrypts `.cloak`
//!   containers into memory; plaintext weights never touch disk), prepares it, and returns a
//!   [`PreparedModel`]: immutable, `Send + Sync`, shared by every request through an `Arc`.
//! - [`PreparedModel::session`] gives each request its own [`Session`]. Inputs are checked
//!   against the model's signature first, by the same code whatever the backend — names, exact
//!   data types (no silent casts), ranks, fixed dimensions, and dynamic dimensions that several
//!   inputs share (such as `batch`) — each with its own [`EngineError`].
//!
//! Tensors in and out are [`cloak_proto::tensor::Tensor`]s. A panic inside a backend is caught
//! and reported as [`EngineError::Panicked`]. Error messages name inputs, nodes and operators,
//! never tensor values or weights: the backends' own messages are cut where they start quoting
//! data.
//!
//! ```no_run
//! use cloak_engine::Engine;
//! use cloak_proto::tensor::Tensor;
//!
//! let onnx = std::fs::read("model.onnx")?;
//! let model = Engine::new().load("mlp", &onnx)?;
//! let input = Tensor::from_values(vec![1, 4], &[0.5f32, -1.0, 2.0, 0.0])?;
//! let outputs = model.session().run(vec![("input".to_owned(), input)])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Backend-neutral: `engine` (choosing and describing a backend), `model` and `session` (the
// contract), `signature` (specs and input checks) and `error`. Each backend in its own module:
// `tract` and `onnxruntime`.
mod engine;
mod error;
mod model;
mod onnxruntime;
mod session;
mod signature;
mod tract;

pub use engine::{
    DEFAULT_THREADS, Engine, EngineInfo, EngineKind, LoadedLibrary, default_onnxruntime_threads,
};
pub use error::EngineError;
pub use model::PreparedModel;
pub use session::Session;
pub use signature::{Dim, TensorSpec};
