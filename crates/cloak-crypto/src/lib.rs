#![doc = include_str!("../README.md")]
// A parser of untrusted bytes: no unwrap, expect, indexing or unchecked arithmetic outside tests
// (clippy.toml lets tests unwrap, expect and index).
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::arithmetic_side_effects))]

pub mod aead;
pub mod container;
pub mod hash;
pub mod hpke;
mod hpke_aead;
mod hpke_kem;
pub mod kdf;
pub mod key;
pub mod mac;
pub mod ohttp;
pub mod secret;
pub mod sig;
