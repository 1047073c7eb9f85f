//! Fixed-size values that appear in evidence and policies: measurements and report data.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A measurement register or hash of `N` bytes (32 for SGX MRENCLAVE/MRSIGNER, 48 for TDX
/// MRTD/RTMRs). Displayed and serialised as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Measurement<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> Measurement<N> {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }

    /// Whether every byte is zero (an unused register).
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
}

impl<const N: usize> AsRef<[u8]> for Measurement<N> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> fmt::Display for Measurement<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<const N: usize> fmt::Debug for Measurement<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Measurement({self})")
    }
}

impl<const N: usize> FromStr for Measurement<N> {
    type Err = HexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(Self)
    }
}

impl<const N: usize> Serialize for Measurement<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de, const N: usize> Deserialize<'de> for Measurement<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The 64 bytes of REPORTDATA an enclave or TD puts into its report: what binds evidence to a
/// key, a nonce or claims. Compared exactly, never padded or truncated.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportData(pub(crate) [u8; 64]);

impl ReportData {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// Constant-time equality, for comparing with an expected binding.
    pub fn ct_eq(&self, other: &Self) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]))
    }
}

impl fmt::Display for ReportData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ReportData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportData({self})")
    }
}

impl FromStr for ReportData {
    type Err = HexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(Self)
    }
}

impl Serialize for ReportData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// A hex string that is not exactly the expected number of bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} bytes of hex, got {found:?}")]
pub struct HexError {
    /// The expected length in bytes.
    pub expected: usize,
    /// What was given (truncated to 80 characters).
    pub found: String,
}

/// Parses exactly `N` bytes of hex, with or without a `0x` prefix.
pub fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let digits = text.trim();
    let digits = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
        .unwrap_or(digits);
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).map_err(|_| HexError {
        expected: N,
        found: text.chars().take(80).collect(),
    })?;
    Ok(out)
}
