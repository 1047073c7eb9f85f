//! Inference for Cloak, over [tract](https://github.com/sonos/tract): pure Rust, no native
//! libraries to trust or to ship into an enclave.
//!
//! [`Engine`] → [`PreparedModel`] → [`Session`]:
//!
//! - [`Engine::load`] parses an ONNX model from bytes in memory (the server decrypts `.cloak`
//!   containers into memory; plaintext weights never touch disk), optimizes it once, and returns a
//!   [`PreparedModel`]: immutable, `Send + Sync`, shared by every request through an `Arc`.
//! - [`PreparedModel::session`] gives each request its own [`Session`], holding the mutable
//!   state of one run. Inputs are checked against the model's signature first — names, exact data
//!   types (no silent casts), ranks, fixed dimensions, and dynamic dimensions that several inputs
//!   share (such as `batch`) — each with its own [`EngineError`].
//!
//! Tensors in and out are [`cloak_proto::tensor::Tensor`]s. A panic inside tract while running a
//! request is caught and reported as [`EngineError::Panicked`]; the session is then discarded.
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

// Modules by concept. Backend-neutral: `signature` (specs and input checks) and `error`.
// Tract-specific, what a second backend would replace: `load` (parsing ONNX), `convert` (element
// types, tensors and errors to and from tract's) and `plan` (compiled plans and run states).
// Backend-neutral logic over tract's types: `model` (the plan and run-state caches) and
// `session` (one run, with panics contained).
mod convert;
mod error;
mod load;
mod model;
mod plan;
mod session;
mod signature;

pub use error::EngineError;
pub use load::Engine;
pub use model::PreparedModel;
pub use session::Session;
pub use signature::{Dim, TensorSpec};
