//! Maps dcap-qvl's errors (anyhow chains of messages, some wrapping webpki errors) to typed
//! [`VerifyError`]s with stable codes.
//!
//! dcap-qvl is pinned to an exact version in the workspace manifest because this mapping reads
//! its messages; `verify/tests.rs` exercises every class with real vectors and mutations, so a
//! message that changes in an upgrade fails the tests instead of silently becoming
//! `verification-failed`.

use dcap_webpki::Error as WebPki;

use super::VerifyError;

/// Builds the error for a message.
type Make = fn(String) -> VerifyError;

/// Message fragments, in the order they are tried, and what each means.
const MESSAGES: &[(&str, Make)] = &[
    ("issue date is in the future", not_yet_valid),
    ("TCBInfo expired", expired),
    ("QE Identity expired", expired),
    ("Signature is invalid for", VerifyError::SignatureInvalid),
    (
        "ISV enclave report signature is invalid",
        VerifyError::SignatureInvalid,
    ),
    ("QE report hash mismatch", VerifyError::QeReportDataMismatch),
    (
        "Invalid QE auth data length",
        VerifyError::QeReportDataMismatch,
    ),
    ("No matching TCB level found", VerifyError::TcbNotSupported),
    ("TCB status is invalid: Revoked", VerifyError::Revoked),
    ("Fmspc mismatch", VerifyError::CollateralMismatch),
    ("quote with non-", VerifyError::CollateralMismatch),
    (
        "Unsupported QE Identity id/version",
        VerifyError::CollateralMismatch,
    ),
    ("QE MRSIGNER mismatch", VerifyError::QeIdentityMismatch),
    ("QE ISVPRODID mismatch", VerifyError::QeIdentityMismatch),
    ("QE MISCSELECT mismatch", VerifyError::QeIdentityMismatch),
    ("QE ATTRIBUTES mismatch", VerifyError::QeIdentityMismatch),
    (
        "QE report validation failed",
        VerifyError::QeIdentityMismatch,
    ),
    ("is below minimum required", VerifyError::TcbNotSupported),
    ("TDX module", VerifyError::TdxModuleMismatch),
    (
        "TD profiling is enabled",
        VerifyError::TdAttributesNotAllowed,
    ),
    (
        "Reserved bits in TD attributes",
        VerifyError::TdAttributesNotAllowed,
    ),
    (
        "TD migration is enabled",
        VerifyError::TdAttributesNotAllowed,
    ),
    ("SERVTD_EXT is enabled", VerifyError::TdAttributesNotAllowed),
    (
        "SEPT_VE_DISABLE is not enabled",
        VerifyError::TdAttributesNotAllowed,
    ),
    ("Invalid MR service TD", VerifyError::TdAttributesNotAllowed),
    (
        "Unsupported DCAP PCK cert format",
        VerifyError::PckChainMissing,
    ),
    ("Failed to decode", VerifyError::MalformedCollateral),
    ("Failed to parse", VerifyError::MalformedCollateral),
    (
        "Certificate chain is too short",
        VerifyError::MalformedCollateral,
    ),
    (
        "Too many intermediate certificates",
        VerifyError::MalformedCollateral,
    ),
    (
        "must be issued directly by the root CA",
        VerifyError::UntrustedRoot,
    ),
];

/// Classifies a dcap-qvl verification error.
pub(super) fn classify(error: &anyhow::Error) -> VerifyError {
    let message = format!("{error:#}");
    if let Some(webpki) = error.downcast_ref::<WebPki>() {
        return from_webpki(webpki, message);
    }
    MESSAGES
        .iter()
        .find(|(fragment, _)| message.contains(fragment))
        .map_or_else(
            || VerifyError::Unclassified(message.clone()),
            |(_, make)| make(message.clone()),
        )
}

pub(super) fn from_webpki(error: &WebPki, message: String) -> VerifyError {
    match error {
        WebPki::CertRevoked => VerifyError::Revoked(message),
        WebPki::CertExpired { .. } | WebPki::CrlExpired { .. } => expired(message),
        WebPki::CertNotValidYet { .. } => not_yet_valid(message),
        WebPki::UnknownIssuer => VerifyError::UntrustedRoot(message),
        WebPki::InvalidSignatureForPublicKey
        | WebPki::InvalidCrlSignatureForPublicKey
        | WebPki::SignatureAlgorithmMismatch => VerifyError::SignatureInvalid(message),
        // A chain whose certificates are in the wrong roles (a CA where a signing certificate
        // belongs, or the reverse) is collateral put together wrongly.
        WebPki::UnknownRevocationStatus
        | WebPki::IssuerNotCrlSigner
        | WebPki::CaUsedAsEndEntity
        | WebPki::EndEntityUsedAsCa => VerifyError::MalformedCollateral(message),
        WebPki::BadDer
        | WebPki::BadDerTime
        | WebPki::TrailingData(_)
        | WebPki::UnsupportedCertVersion
        | WebPki::UnsupportedCriticalExtension
        | WebPki::ExtensionValueInvalid
        | WebPki::MalformedExtensions
        | WebPki::InvalidSerialNumber
        | WebPki::InvalidCertValidity => VerifyError::MalformedCertificate(message),
        _ => VerifyError::Unclassified(message),
    }
}

fn expired(message: String) -> VerifyError {
    VerifyError::CollateralExpired(message)
}

fn not_yet_valid(message: String) -> VerifyError {
    VerifyError::CollateralNotYetValid(message)
}
