//! Cloak's wire formats, with no transport: the [`tensor`] type every other crate passes
//! around (a data type, a shape and little-endian bytes), and, as the server grows, the KServe v2
//! inference protocol and the identity claims an enclave binds into its evidence.
//!
//! Everything here parses bytes from untrusted peers, so the crate runs under the parser lints:
//! no `unwrap`, no indexing, no unchecked arithmetic.
// A parser of untrusted bytes: no unwrap, expect, indexing or unchecked arithmetic outside tests
// (clippy.toml lets tests unwrap, expect and index).
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::arithmetic_side_effects))]

pub mod access;
pub mod attestation;
mod base64_bytes;
pub mod freshness;
pub mod identity;
pub mod kbs;
pub mod kserve;
pub mod receipt;
mod signed;
pub mod tensor;
