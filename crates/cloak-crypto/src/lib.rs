#![doc = include_str!("../README.md")]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod aead;
pub mod container;
pub mod hash;
pub mod hpke;
mod hpke_aead;
pub mod kdf;
pub mod key;
pub mod mac;
pub mod ohttp;
pub mod secret;
pub mod sig;
