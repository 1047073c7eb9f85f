//! A stand-in Azure Attestation instance: a P-256 signing key with a self-signed certificate,
//! published as a JWKS with `x5c` as MAA publishes its keys, minting ES256 tokens with MAA's SGX
//! claims. The real instance's tokens (in `cloak-attest/testdata/azure-maa`) test the verifier
//! against Microsoft's bytes; this one lets tests choose the enclave, its data and the times.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// A test issuer.
pub struct TestIssuer {
    issuer: String,
    kid: String,
    key: aws_lc_rs::signature::EcdsaKeyPair,
    jwks: String,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The SGX enclave a minted token describes.
#[derive(Clone, Debug)]
pub struct TokenEnclave {
    /// MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// Whether it is a debug enclave.
    pub debug: bool,
}

impl TestIssuer {
    /// A new key for `issuer` (an https URL).
    pub fn new(issuer: &str) -> Self {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .expect("a P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .expect("its own PKCS#8");
        let rcgen_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).expect("rcgen reads it");
        let mut params =
            rcgen::CertificateParams::new(vec!["test.attest.example".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2049, 1, 1);
        let cert = params.self_signed(&rcgen_key).expect("a certificate");
        let kid = STANDARD.encode(cloak_crypto::hash::sha256(cert.der()));
        let jwks =
            json!({ "keys": [{ "kid": kid, "kty": "EC", "x5c": [STANDARD.encode(cert.der())] }] })
                .to_string();
        Self {
            issuer: issuer.to_owned(),
            kid,
            key,
            jwks,
        }
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWKS (JSON), as the instance's `/certs` would answer.
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// MAA's claims for `enclave` with enclave-held data `ehd`, valid for an hour from `now`.
    pub fn claims(&self, enclave: &TokenEnclave, ehd: &[u8], now: u64) -> Value {
        let mut report_data = cloak_crypto::hash::sha256(ehd).to_vec();
        report_data.resize(64, 0);
        json!({
            "iss": self.issuer,
            "iat": now, "nbf": now, "exp": now + 3600,
            "x-ms-ver": "1.0",
            "x-ms-attestation-type": "sgx",
            "x-ms-sgx-mrenclave": hex::encode(enclave.mrenclave),
            "x-ms-sgx-mrsigner": hex::encode(enclave.mrsigner),
            "x-ms-sgx-product-id": enclave.isv_prod_id,
            "x-ms-sgx-svn": enclave.isv_svn,
            "x-ms-sgx-is-debuggable": enclave.debug,
            "x-ms-sgx-ehd": URL_SAFE_NO_PAD.encode(ehd),
            "x-ms-sgx-report-data": hex::encode(report_data),
        })
    }

    /// A token with `claims`, signed ES256 under this issuer's key.
    pub fn mint(&self, claims: &Value) -> Vec<u8> {
        let header = json!({ "alg": "ES256", "kid": self.kid, "typ": "JWT" });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), signed.as_bytes())
            .expect("signing");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())).into_bytes()
    }
}
