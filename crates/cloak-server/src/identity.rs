//! The server's identity: keys made inside the enclave at start, the claims that describe them,
//! and the evidence that binds those claims to the enclave.
//!
//! At start the server generates a TLS key (ECDSA P-256), an HPKE key (X25519, HKDF-SHA256,
//! AES-256-GCM, as an RFC 9458 key configuration) and a receipt-signing key (ECDSA P-256). The
//! identity claims ([`cloak_proto::identity`]) name their public halves and every loaded model;
//! the platform quotes `SHA-512(claims)`; and the TLS certificate carries quote and claims in the
//! TCG DICE tagged-evidence extension, so a client appraises the enclave before it sends a byte.
//! `GET /v1/attestation?nonce=` answers with a fresh quote over the same claims plus the nonce.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use ciborium::Value;
use cloak_crypto::hpke::HpkeKeyPair;
use cloak_crypto::ohttp::{AeadId, Gateway, OhttpError, ServerResponse};
use cloak_crypto::sig::SigningKey as ReceiptKey;
use cloak_proto::attestation::AttestationDocument;
use cloak_proto::identity::{EngineClaim, IdentityClaims, ModelClaim};
use cloak_proto::receipt::{BodyDigest, Receipt};
use cloak_tee::{Platform, TeeError};
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SigningKey};
use zeroize::Zeroizing;

/// The TCG DICE tagged-evidence extension, 2.23.133.5.4.9.
const OID_DICE_TAGGED_EVIDENCE: &[u64] = &[2, 23, 133, 5, 4, 9];
/// CBOR tag for an Intel TEE quote in DICE tagged evidence (Interoperable RA-TLS).
const CBOR_TAG_INTEL_QUOTE: u64 = 60_000;
/// The HPKE key's id in its key configuration.
const HPKE_KEY_ID: u8 = 1;

/// Where relayed collateral comes from.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum CollateralSource {
    /// The platform's evidence carries it (the simulated platform).
    Platform,
    /// A file the host keeps fresh (dcap-qvl `QuoteCollateralV3` JSON), read on each request.
    /// It needs no trust: it is signed by Intel's PKI and the client verifies it.
    File(PathBuf),
    /// None: clients bring their own.
    None,
}

/// Earlier claims a receipt may still name (see [`ServerIdentity::receipt`]).
pub const EARLIER_CLAIMS: usize = 16;

/// The server's keys, claims and certificate.
///
/// The keys live as long as the process; the claims and the certificate are replaced when the
/// set of ready models changes ([`ServerIdentity::update_models`]), so new connections and fresh
/// attestations always describe what the server serves now.
pub struct ServerIdentity {
    platform: Arc<dyn Platform>,
    collateral: CollateralSource,
    hostnames: Vec<String>,
    current: Arc<RwLock<Arc<Attested>>>,
    /// Earlier claims of this process, most recent last (see [`ServerIdentity::receipt`]).
    earlier: Mutex<VecDeque<Arc<Attested>>>,
    tls_key: KeyPair,
    tls_signer: Arc<dyn SigningKey>,
    gateways: RwLock<Arc<Gateways>>,
    receipt_key: ReceiptKey,
    /// Held through each change of the claims, so that two changes made at once (a model's key
    /// and the fleet's key arriving together) both end up in the claims.
    changing: Mutex<()>,
}

/// The HPKE keys encrypted requests may be sealed to: this process's own, and in a fleet the
/// fleet's live generations (none until the broker has released one).
#[derive(Debug)]
struct Gateways {
    own: Arc<Gateway>,
    /// The fleet this server belongs to (`--fleet`), once it is configured.
    fleet: Option<String>,
    fleet_keys: Vec<Arc<Gateway>>,
}

/// Why an encrypted request was not opened.
#[non_exhaustive]
#[derive(Debug)]
pub enum DecapsulateError {
    /// The request is not usable (malformed, unknown key, not authentic).
    Ohttp(OhttpError),
    /// The request is sealed to a fleet key and this server holds none yet: another replica
    /// can answer it.
    FleetKeyPending,
}

/// Claims and the certificate that carries evidence over them.
#[derive(Debug)]
struct Attested {
    claims: Arc<IdentityClaims>,
    evidence_sha256: [u8; 32],
    certified: Arc<CertifiedKey>,
    /// The attestation document of these claims (no nonce), as JSON: what a client that
    /// appraised another replica of a fleet needs to check this one's receipts.
    document: Option<Arc<str>>,
}

impl ServerIdentity {
    /// Generates the keys, quotes the claims and issues the attested TLS certificate.
    pub fn create(
        platform: Arc<dyn Platform>,
        collateral: CollateralSource,
        models: Vec<ModelClaim>,
        engine: EngineClaim,
        hostnames: &[String],
    ) -> Result<Self, IdentityError> {
        let tls_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let receipt_key = ReceiptKey::generate().map_err(|e| IdentityError::Keys(e.to_string()))?;
        let gateway = Gateway::new(HPKE_KEY_ID, HpkeKeyPair::generate(), aeads());
        let claims = IdentityClaims {
            tls_spki_sha256: cloak_crypto::hash::sha256(&tls_key.subject_public_key_info()),
            hpke_key_config: gateway.config().encode(),
            receipt_public_key: receipt_key.public_key_spki().to_vec(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            platform: platform.kind().name().to_owned(),
            models,
            engine: Some(engine),
            fleet: None,
            nonce: None,
            nonces: Vec::new(),
        };
        let tls_key_der = Zeroizing::new(tls_key.serialize_der());
        let tls_signer = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(tls_key_der.as_slice()),
        ))?;
        let attested = attest_claims(
            platform.as_ref(),
            &collateral,
            claims,
            &tls_key,
            &tls_signer,
            hostnames,
        )?;
        Ok(Self {
            platform,
            collateral,
            hostnames: hostnames.to_vec(),
            current: Arc::new(RwLock::new(Arc::new(attested))),
            earlier: Mutex::new(VecDeque::new()),
            changing: Mutex::new(()),
            tls_key,
            tls_signer,
            gateways: RwLock::new(Arc::new(Gateways {
                own: Arc::new(gateway),
                fleet: None,
                fleet_keys: Vec::new(),
            })),
            receipt_key,
        })
    }

    /// The current claims (without a nonce).
    pub fn claims(&self) -> Arc<IdentityClaims> {
        Arc::clone(&self.current().claims)
    }

    /// The current attested TLS certificate (DER).
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current()
            .certified
            .cert
            .first()
            .cloned()
            .unwrap_or_else(|| CertificateDer::from(Vec::new()))
    }

    /// Replaces the models in the claims, quotes the new claims and issues a new certificate
    /// for the same TLS key (blocking: the platform signs a quote). Connections made from now on
    /// see the new certificate.
    pub fn update_models(&self, models: Vec<ModelClaim>) -> Result<(), IdentityError> {
        self.reattest(|claims| {
            claims.models = models;
            true
        })
    }

    /// Makes this server a replica of `fleet`: encrypted requests sealed to any of `keys`
    /// (the fleet's live generations: key id and private key) are opened, and the claims —
    /// re-attested — carry the fleet's name and the key configuration of `advertise` (one of
    /// `keys`' ids). With no keys the server waits for them: requests sealed to another key
    /// than its own are answered `fleet-key-pending`, and the claims carry its own key.
    pub fn set_fleet(
        &self,
        fleet: &str,
        keys: Vec<(u8, HpkeKeyPair)>,
        advertise: u8,
    ) -> Result<(), IdentityError> {
        let fleet_keys: Vec<Arc<Gateway>> = keys
            .into_iter()
            .map(|(id, key)| Arc::new(Gateway::new(id, key, aeads())))
            .collect();
        let advertised = fleet_keys
            .iter()
            .find(|g| g.config().key_id == advertise)
            .map(|g| g.config().encode());
        let own = Arc::clone(&self.lock_gateways().own);
        let (config, claimed_fleet) = match advertised {
            Some(config) => (config, Some(fleet.to_owned())),
            None => (own.config().encode(), None),
        };
        *self
            .gateways
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(Gateways {
            own,
            fleet: Some(fleet.to_owned()),
            fleet_keys,
        });
        self.reattest(|claims| {
            let changed = claims.hpke_key_config != config || claims.fleet != claimed_fleet;
            claims.hpke_key_config = config;
            claims.fleet = claimed_fleet;
            changed
        })
    }

    /// Whether this server is a fleet replica without a fleet key yet.
    pub fn fleet_key_pending(&self) -> bool {
        let gateways = self.lock_gateways();
        gateways.fleet.is_some() && gateways.fleet_keys.is_empty()
    }

    /// Opens an encrypted request sealed to this server's own key or to one of its fleet's, in
    /// place (see [`Gateway::decapsulate_in_place`]): the BHTTP request is `enc_request[range]`.
    pub fn decapsulate(
        &self,
        enc_request: &mut [u8],
    ) -> Result<(Range<usize>, ServerResponse), DecapsulateError> {
        let gateways = self.lock_gateways();
        let key_id = enc_request.first().copied();
        if let Some(fleet_key) = gateways
            .fleet_keys
            .iter()
            .find(|g| Some(g.config().key_id) == key_id)
        {
            return fleet_key
                .decapsulate_in_place(enc_request)
                .map_err(DecapsulateError::Ohttp);
        }
        if key_id != Some(HPKE_KEY_ID) && gateways.fleet.is_some() && gateways.fleet_keys.is_empty()
        {
            return Err(DecapsulateError::FleetKeyPending);
        }
        gateways
            .own
            .decapsulate_in_place(enc_request)
            .map_err(DecapsulateError::Ohttp)
    }

    fn lock_gateways(&self) -> Arc<Gateways> {
        Arc::clone(&self.gateways.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The attestation document (JSON, no nonce) of claims this process attested with evidence
    /// digest `digest`, now or among its last [`EARLIER_CLAIMS`].
    pub fn document(&self, digest: &[u8; 32]) -> Option<Arc<str>> {
        let current = self.current();
        if current.evidence_sha256 == *digest {
            return current.document.clone();
        }
        self.earlier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|a| a.evidence_sha256 == *digest)
            .and_then(|a| a.document.clone())
    }

    /// Replaces the claims with `change(claims)` — when it says it changed them — quotes them
    /// and issues a new certificate for the same TLS key (blocking), one change at a time.
    fn reattest(
        &self,
        change: impl FnOnce(&mut IdentityClaims) -> bool,
    ) -> Result<(), IdentityError> {
        let _one = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut claims = IdentityClaims::clone(&self.claims());
        if !change(&mut claims) {
            return Ok(());
        }
        let attested = attest_claims(
            self.platform.as_ref(),
            &self.collateral,
            claims,
            &self.tls_key,
            &self.tls_signer,
            &self.hostnames,
        )?;
        let replaced = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
            Arc::new(attested),
        );
        let mut earlier = self.earlier.lock().unwrap_or_else(PoisonError::into_inner);
        if earlier.len() >= EARLIER_CLAIMS {
            earlier.pop_front();
        }
        earlier.push_back(replaced);
        Ok(())
    }

    /// The evidence digest of the claims in force now: what a connection established now
    /// was accepted under.
    pub fn evidence_digest(&self) -> [u8; 32] {
        self.current().evidence_sha256
    }

    /// Signs a receipt for an inference over `model` (its body digests made as `digests` says),
    /// naming the evidence the request was accepted under: `accepted_under`, when it is the digest
    /// of claims this process attested (now or among its last [`EARLIER_CLAIMS`]) that list `model`
    /// with its digest — the certificate of the request's connection, or the claims an encrypted
    /// request's client appraised — else the evidence in force now. So a model becoming ready while
    /// a client's request runs does not make its correct answer fail verification: the keys are the
    /// process's own throughout, and the named claims are ones the client accepted.
    pub fn receipt(
        &self,
        model: &ModelClaim,
        request_id: String,
        digests: BodyDigest,
        (input_sha256, output_sha256): ([u8; 32], [u8; 32]),
        accepted_under: Option<[u8; 32]>,
    ) -> Result<(String, [u8; 32]), IdentityError> {
        let evidence_sha256 = accepted_under
            .filter(|digest| self.attested_with(digest, model))
            .unwrap_or_else(|| self.current().evidence_sha256);
        let receipt = Receipt {
            model: model.name.clone(),
            model_sha256: model.sha256,
            input_sha256,
            output_sha256,
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            request_id,
            evidence_sha256,
            digests,
        };
        let text = receipt
            .sign(&self.receipt_key)
            .map_err(|e| IdentityError::Keys(e.to_string()))?;
        Ok((text, evidence_sha256))
    }

    /// The platform the server runs on.
    pub fn platform(&self) -> &Arc<dyn Platform> {
        &self.platform
    }

    /// Where relayed collateral comes from.
    pub fn collateral_source(&self) -> &CollateralSource {
        &self.collateral
    }

    /// A rustls server configuration serving the current attested certificate: TLS 1.3 only,
    /// HTTP/2 and HTTP/1.1 by ALPN.
    pub fn tls_config(&self) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(CurrentCertificate(Arc::clone(&self.current))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// One fresh attestation over the current claims answering every one of `nonces`
    /// (blocking: the platform signs one quote): the claims carry a single nonce as `nonce`,
    /// several as `nonces`. Each client finds its own nonce among them; the quote binds them all.
    pub fn attest(&self, nonces: &[Vec<u8>]) -> Result<AttestationDocument, IdentityError> {
        let mut distinct = nonces.to_vec();
        distinct.sort();
        distinct.dedup();
        if distinct.is_empty() || distinct.len() > cloak_proto::identity::MAX_NONCES {
            return Err(IdentityError::Nonces(distinct.len()));
        }
        let mut claims = IdentityClaims::clone(&self.claims());
        if distinct.len() == 1 {
            claims.nonce = distinct.pop();
        } else {
            claims.nonces = distinct;
        }
        let claims_cbor = claims.to_cbor();
        let evidence = self
            .platform
            .evidence(&IdentityClaims::report_data(&claims_cbor))?;
        let collateral = self.collateral.resolve(evidence.collateral)?;
        AttestationDocument::new(
            self.platform.kind().name(),
            evidence.quote,
            claims_cbor,
            collateral.as_deref(),
        )
        .map_err(|e| IdentityError::Collateral(format!("not JSON: {e}")))
    }

    /// Whether this process attested claims with evidence digest `digest` that list `model`.
    fn attested_with(&self, digest: &[u8; 32], model: &ModelClaim) -> bool {
        let lists = |attested: &Attested| {
            attested.evidence_sha256 == *digest && attested.claims.models.contains(model)
        };
        lists(&self.current())
            || self
                .earlier
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|attested| lists(attested))
    }

    fn current(&self) -> Arc<Attested> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl CollateralSource {
    /// The collateral to send with evidence: the platform's own (`from_evidence`), the host's
    /// file, or none.
    pub fn resolve(
        &self,
        from_evidence: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, IdentityError> {
        match self {
            Self::Platform => Ok(from_evidence),
            Self::File(path) => std::fs::read(path)
                .map(Some)
                .map_err(|e| IdentityError::Collateral(format!("{}: {e}", path.display()))),
            Self::None => Ok(None),
        }
    }
}

/// Serves whichever certificate is current when a client connects.
#[derive(Debug)]
struct CurrentCertificate(Arc<RwLock<Arc<Attested>>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.0.read().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(&current.certified))
    }
}

/// The AEADs every key configuration offers: AES-256-GCM is Cloak's suite; AES-128-GCM is what
/// other RFC 9458 clients (the `ohttp` crate's pure-Rust backend) can speak.
fn aeads() -> Vec<AeadId> {
    vec![AeadId::Aes256Gcm, AeadId::Aes128Gcm]
}

/// Quotes `claims` and issues the certificate carrying the quote.
fn attest_claims(
    platform: &dyn Platform,
    collateral: &CollateralSource,
    claims: IdentityClaims,
    tls_key: &KeyPair,
    signer: &Arc<dyn SigningKey>,
    hostnames: &[String],
) -> Result<Attested, IdentityError> {
    let claims_cbor = claims.to_cbor();
    let evidence = platform.evidence(&IdentityClaims::report_data(&claims_cbor))?;
    let certificate = certificate(tls_key, hostnames, &evidence.quote, &claims_cbor)?;
    // The document is a convenience for clients of a fleet: without collateral to relay, or
    // if it is unreadable now, they fetch this replica's attestation instead.
    let document = collateral
        .resolve(evidence.collateral)
        .ok()
        .and_then(|collateral| {
            AttestationDocument::new(
                platform.kind().name(),
                evidence.quote.clone(),
                claims_cbor.clone(),
                collateral.as_deref(),
            )
            .ok()
        })
        .and_then(|document| serde_json::to_string(&document).ok())
        .map(Arc::from);
    Ok(Attested {
        evidence_sha256: claims.evidence_digest(),
        claims: Arc::new(claims),
        certified: Arc::new(CertifiedKey::new(vec![certificate], Arc::clone(signer))),
        document,
    })
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("claims", &self.claims())
            .finish_non_exhaustive()
    }
}

/// A self-signed certificate for `key` carrying `tag(60000)([quote, claims])` in the DICE
/// tagged-evidence extension (non-critical: rustls and webpki refuse unknown critical ones).
fn certificate(
    key: &KeyPair,
    hostnames: &[String],
    quote: &[u8],
    claims_cbor: &[u8],
) -> Result<CertificateDer<'static>, IdentityError> {
    let mut names = hostnames.to_vec();
    if names.is_empty() {
        names.push("localhost".to_owned());
    }
    let mut params = CertificateParams::new(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Cloak");
    dn.push(DnType::CommonName, "Cloak attested inference server");
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let evidence = Value::Tag(
        CBOR_TAG_INTEL_QUOTE,
        Box::new(Value::Array(vec![
            Value::Bytes(quote.to_vec()),
            Value::Bytes(claims_cbor.to_vec()),
        ])),
    );
    let mut encoded = Vec::new();
    ciborium::into_writer(&evidence, &mut encoded)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    let mut extension = CustomExtension::from_oid_content(OID_DICE_TAGGED_EVIDENCE, encoded);
    extension.set_criticality(false);
    params.custom_extensions.push(extension);
    Ok(params.self_signed(key)?.der().clone())
}

/// Why the server's identity could not be made.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The certificate could not be made.
    #[error("certificate: {0}")]
    Certificate(String),
    /// Relayed collateral could not be read.
    #[error("collateral: {0}")]
    Collateral(String),
    /// Key generation failed.
    #[error("key generation: {0}")]
    Keys(String),
    /// A fresh attestation was asked to answer no nonce, or more than one quote may.
    #[error("a fresh attestation answers 1 to {max} nonces, not {0}", max = cloak_proto::identity::MAX_NONCES)]
    Nonces(usize),
    /// The platform refused to produce evidence.
    #[error(transparent)]
    Platform(#[from] TeeError),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

impl From<rcgen::Error> for IdentityError {
    fn from(e: rcgen::Error) -> Self {
        Self::Certificate(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use cloak_proto::identity::EngineClaim;
    use cloak_proto::receipt::Receipt;
    use cloak_tee::sim::{SimConfig, SimPlatform};

    use super::*;

    fn model(name: &str, byte: u8) -> ModelClaim {
        ModelClaim {
            name: name.to_owned(),
            bytes: 1,
            sha256: [byte; 32],
        }
    }

    /// An identity on a simulated platform made in `dir`, serving `model` with tract.
    fn identity_with(dir: &std::path::Path, model: &ModelClaim) -> ServerIdentity {
        let platform = SimPlatform::init(dir, &SimConfig::up_to_date()).unwrap();
        let engine = EngineClaim {
            name: "tract".to_owned(),
            version: "test".to_owned(),
            library_sha256: None,
        };
        ServerIdentity::create(
            Arc::new(platform),
            CollateralSource::Platform,
            vec![model.clone()],
            engine,
            &[],
        )
        .unwrap()
    }

    /// The evidence digest a receipt for `model`, accepted under `under`, names.
    fn named(identity: &ServerIdentity, model: &ModelClaim, under: Option<[u8; 32]>) -> [u8; 32] {
        let (text, named) = identity
            .receipt(
                model,
                "id".to_owned(),
                BodyDigest::SaltedSha256,
                ([1; 32], [2; 32]),
                under,
            )
            .unwrap();
        let evidence = Receipt::open(&text, &identity.claims().receipt_public_key)
            .unwrap()
            .evidence_sha256;
        assert_eq!(evidence, named);
        evidence
    }

    #[test]
    fn a_receipt_names_the_claims_its_request_was_accepted_under_while_they_list_its_model() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (model("a", 1), model("b", 2));
        let identity = identity_with(dir.path(), &a);
        let before = identity.evidence_digest();
        // A model becomes ready: new claims, new evidence.
        identity.update_models(vec![a.clone(), b.clone()]).unwrap();
        let now = identity.evidence_digest();
        assert_ne!(before, now);
        // A request accepted under the earlier claims gets a receipt naming them...
        assert_eq!(named(&identity, &a, Some(before)), before);
        // ...unless they do not list its model, or this process never attested them.
        assert_eq!(named(&identity, &b, Some(before)), now);
        assert_eq!(named(&identity, &a, Some([9; 32])), now);
        assert_eq!(named(&identity, &a, None), now);
        // Earlier claims are remembered within a bound: after that many other changes, the
        // first claims are no longer named.
        for i in 0..EARLIER_CLAIMS {
            let other = model(&format!("c{i}"), 3);
            identity.update_models(vec![a.clone(), other]).unwrap();
        }
        let latest = identity.evidence_digest();
        assert_ne!(latest, before);
        assert_eq!(named(&identity, &a, Some(before)), latest);
    }

    /// A fleet replica opens requests sealed to its own key and to each live fleet generation,
    /// tells a request for a fleet key it does not hold yet to go elsewhere, refuses a retired
    /// generation as a stale key, and claims (with a fresh attestation document) the
    /// advertised generation and the fleet's name.
    #[test]
    fn a_fleet_replica_opens_requests_to_every_live_generation_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let identity = identity_with(dir.path(), &model("a", 1));
        let own =
            cloak_crypto::ohttp::KeyConfig::parse(&identity.claims().hpke_key_config).unwrap();
        // Generation `seed` of a fleet key, made from `seed` (the broker's 32 random bytes).
        let key = |seed: u8| HpkeKeyPair::from_private_bytes(&[seed; 32]).unwrap();
        let generation = |seed: u8| cloak_crypto::ohttp::KeyConfig {
            key_id: cloak_proto::kbs::fleet::fleet_key_id(u32::from(seed)),
            public_key: *key(seed).public_key(),
            aeads: aeads(),
        };
        let sealed = |config: &cloak_crypto::ohttp::KeyConfig| {
            cloak_crypto::ohttp::encapsulate_request(config, AeadId::Aes256Gcm, b"request")
                .unwrap()
                .0
        };
        let (one, two) = (generation(1), generation(2));

        // A replica waiting for its fleet key: its own key still opens; a fleet key is pending.
        identity.set_fleet("web", Vec::new(), 0).unwrap();
        assert!(identity.fleet_key_pending());
        assert!(identity.claims().fleet.is_none());
        assert!(identity.decapsulate(&mut sealed(&own)).is_ok());
        assert!(matches!(
            identity.decapsulate(&mut sealed(&one)),
            Err(DecapsulateError::FleetKeyPending)
        ));

        // Two live generations, the first advertised.
        identity
            .set_fleet(
                "web",
                vec![(one.key_id, key(1)), (two.key_id, key(2))],
                one.key_id,
            )
            .unwrap();
        let claims = identity.claims();
        assert_eq!(claims.fleet.as_deref(), Some("web"));
        assert_eq!(claims.hpke_key_config, one.encode());
        assert!(identity.document(&claims.evidence_digest()).is_some());
        for config in [&own, &one, &two] {
            let mut message = sealed(config);
            let (opened, _) = identity.decapsulate(&mut message).unwrap();
            assert_eq!(&message[opened], b"request");
        }

        // The first generation retired: a request sealed to it is a stale key, not pending.
        identity
            .set_fleet("web", vec![(two.key_id, key(2))], two.key_id)
            .unwrap();
        assert_eq!(identity.claims().hpke_key_config, two.encode());
        assert!(matches!(
            identity.decapsulate(&mut sealed(&one)),
            Err(DecapsulateError::Ohttp(OhttpError::Unsupported))
        ));
        assert!(identity.decapsulate(&mut sealed(&two)).is_ok());
    }
}
