//! One module per `cloak` command. Commands never import each other: what two of them share
//! lives in [`crate::args`] (argument groups), [`crate::files`] (files in and out),
//! [`crate::report`] (printing verdicts) and [`crate::runtime`] (the process around them).

pub(crate) mod attest;
#[cfg(feature = "sim")]
pub(crate) mod bench;
#[cfg(all(feature = "sim", feature = "kbs"))]
pub(crate) mod demo;
pub(crate) mod infer;
#[cfg(feature = "kbs")]
pub(crate) mod kbs;
pub(crate) mod model;
pub(crate) mod proxy;
pub(crate) mod receipt;
pub(crate) mod serve;
#[cfg(feature = "sim")]
pub(crate) mod sim;
pub(crate) mod token;
