//! Fixtures shared by Cloak's tests (not published).
//!
//! | module | what it holds |
//! |---|---|
//! | [`cli`] | running a binary to completion and checking its output |
//! | [`process`] | long-running processes (servers, brokers, proxies): killed on drop, URL read from their output |
//! | [`sim`] | simulated platforms, measurements of executables, and the policies (library and flags) that trust a simulation root |
//! | [`models`] | the demo model, sealed containers, and real models with their onnxruntime reference outputs |
//! | [`server`] | a builder for an in-process server on the simulated platform |
//! | [`hostile`] | the attacker's side of a connection: a chosen source address, TLS without appraisal, slow bytes, timing the server's close |
//! | [`deps`] | optional test dependencies (Python packages, nginx, `script`): found, required by CI, or skipped out loud |
//! | [`nginx`] | nginx as an untrusted TLS-terminating load balancer |
//! | [`maa`] | a stand-in Azure Attestation instance: a JWKS and ES256 tokens with chosen SGX claims |
//! | [`postgres`] | a throwaway PostgreSQL cluster on a free port (skipped out loud without a PostgreSQL server) |

pub mod cli;
pub mod deps;
pub mod hostile;
pub mod maa;
pub mod models;
pub mod nginx;
pub mod postgres;
pub mod process;
pub mod server;
pub mod sim;

/// Runs `future` to completion on a new single-threaded runtime, for synchronous tests that
/// make a few requests.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}
