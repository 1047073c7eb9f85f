#![doc = include_str!("../README.md")]
// A parser of untrusted bytes: no unwrap, expect, indexing or unchecked arithmetic outside tests
// (clippy.toml lets tests unwrap, expect and index).
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::arithmetic_side_effects))]

pub mod collateral;
pub mod endorsements;
pub mod evidence;
pub mod maa;
pub mod policy;
pub mod quote;
pub mod ratls;
pub mod types;
pub mod verify;
