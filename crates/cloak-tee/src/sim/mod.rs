//! The simulated SGX platform: an SGX platform in miniature, for machines without SGX.
//!
//! It is not a mock. `SimPlatform::init` creates a simulation PKI (a root CA whose names say
//! SIMULATED, a PCK Processor CA, a PCK certificate with a real Intel SGX extension, a TCB signing
//! certificate), a quoting-enclave attestation key, an enclave signer key and a platform secret.
//! Quotes are real-format DCAP v3 quotes and collateral is real-format `QuoteCollateralV3` JSON,
//! so the same verifier (`cloak-attest`, or `dcap-qvl` directly) checks them — under the
//! simulation root, which no default policy trusts. Nothing sealed here is a real secret: the
//! platform secret is a file in the platform directory.
//!
//! Directory layout (`DIR`):
//!
//! | file | what |
//! |---|---|
//! | `platform.json` | public parameters: FMSPC, PCE-ID, SVNs, TCB status, revocation, QE identity, serials |
//! | `root.der` | the simulation root certificate — what clients pass to `--trust-root` |
//! | `collateral.json` | collateral as `QuoteCollateralV3` JSON, written at `init` and `revoke` (valid 30 days; `cloak sim quote --collateral-out` writes fresh copies) |
//! | `pck-ca.der`, `pck.der`, `tcb-signing.der` | the other certificates |
//! | `keys/*.key` | PKCS#8 private keys (root, pck-ca, pck, tcb-signing, attestation, signer), mode 0600 |
//! | `keys/platform-secret` | 32 random bytes from which sealing keys derive, mode 0600 |

mod collateral;
mod pki;
mod quote;

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    Evidence, Identity, KeyPolicy, KeyRequest, Platform, PlatformKind, SealingKey, TeeError,
};

pub use self::collateral::{COLLATERAL_LIFETIME, TCB_EVALUATION_DATA_NUMBER};

/// The simulated quoting enclave's ISVPRODID (Intel's QE3 uses 1).
const QE_ISV_PROD_ID: u16 = 1;
/// The simulated quoting enclave's ISVSVN.
const QE_ISV_SVN: u16 = 8;
const STATE_FILE: &str = "platform.json";
const STATE_VERSION: u32 = 1;
const KEY_NAMES: [&str; 6] = [
    "root",
    "pck-ca",
    "pck",
    "tcb-signing",
    "attestation",
    "signer",
];

/// TCB statuses an SGX platform can have (the TDX-only relaunch statuses are not among them).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TcbStatusName {
    /// `ConfigurationAndSWHardeningNeeded`.
    #[serde(rename = "ConfigurationAndSWHardeningNeeded")]
    ConfigurationAndSwHardeningNeeded,
    /// `ConfigurationNeeded`.
    ConfigurationNeeded,
    /// `OutOfDate`.
    OutOfDate,
    /// `OutOfDateConfigurationNeeded`.
    OutOfDateConfigurationNeeded,
    /// `Revoked`.
    Revoked,
    /// `SWHardeningNeeded`.
    #[serde(rename = "SWHardeningNeeded")]
    SwHardeningNeeded,
    /// `UpToDate`.
    UpToDate,
}

impl TcbStatusName {
    /// Every SGX status.
    pub const ALL: [Self; 7] = [
        Self::ConfigurationAndSwHardeningNeeded,
        Self::ConfigurationNeeded,
        Self::OutOfDate,
        Self::OutOfDateConfigurationNeeded,
        Self::Revoked,
        Self::SwHardeningNeeded,
        Self::UpToDate,
    ];

    /// Intel's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigurationAndSwHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            Self::ConfigurationNeeded => "ConfigurationNeeded",
            Self::OutOfDate => "OutOfDate",
            Self::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            Self::Revoked => "Revoked",
            Self::SwHardeningNeeded => "SWHardeningNeeded",
            Self::UpToDate => "UpToDate",
        }
    }
}

impl fmt::Display for TcbStatusName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TcbStatusName {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                SimError::Config(format!(
                    "unknown SGX TCB status {s:?} (known: {})",
                    Self::ALL.map(Self::as_str).join(", ")
                ))
            })
    }
}

/// What `SimPlatform::init` creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// The TCB status the platform's TCB info gives it.
    pub tcb_status: TcbStatusName,
    /// The platform model (FMSPC).
    pub fmspc: [u8; 6],
    /// Advisory ids attached to the platform's TCB level.
    pub advisories: Vec<String>,
}

impl SimConfig {
    /// An up-to-date platform, FMSPC `51AA00000001` (no real platform's), no advisories.
    pub fn up_to_date() -> Self {
        Self {
            tcb_status: TcbStatusName::UpToDate,
            fmspc: [0x51, 0xAA, 0x00, 0x00, 0x00, 0x01],
            advisories: Vec::new(),
        }
    }
}

/// Public, persistent platform parameters (`platform.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SimState {
    version: u32,
    #[serde(with = "hex_bytes")]
    fmspc: [u8; 6],
    #[serde(with = "hex_bytes")]
    pce_id: [u8; 2],
    #[serde(with = "hex_bytes")]
    cpu_svn: [u8; 16],
    pce_svn: u16,
    tcb_status: TcbStatusName,
    advisories: Vec<String>,
    revoked: bool,
    #[serde(with = "hex_bytes")]
    ppid: [u8; 16],
    #[serde(with = "hex_bytes")]
    qe_id: [u8; 16],
    #[serde(with = "hex_bytes")]
    qe_mrenclave: [u8; 32],
    #[serde(with = "hex_bytes")]
    qe_mrsigner: [u8; 32],
    #[serde(with = "hex_bytes")]
    root_serial: [u8; 16],
    #[serde(with = "hex_bytes")]
    pck_ca_serial: [u8; 16],
    #[serde(with = "hex_bytes")]
    pck_serial: [u8; 16],
    #[serde(with = "hex_bytes")]
    tcb_signing_serial: [u8; 16],
}

/// DER certificates.
#[derive(Clone, Debug)]
struct Certs {
    root: Vec<u8>,
    pck_ca: Vec<u8>,
    pck: Vec<u8>,
    tcb_signing: Vec<u8>,
}

/// Private keys (PKCS#8) and the platform secret, zeroized on drop.
struct Keys {
    pkcs8: Vec<(&'static str, Zeroizing<Vec<u8>>)>,
    platform_secret: Zeroizing<[u8; 32]>,
}

impl Keys {
    fn pkcs8(&self, name: &str) -> Result<&[u8], SimError> {
        self.pkcs8
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, der)| der.as_slice())
            .ok_or_else(|| SimError::State(format!("key {name} missing")))
    }

    fn rcgen(&self, name: &str) -> Result<rcgen::KeyPair, SimError> {
        Ok(rcgen::KeyPair::try_from(self.pkcs8(name)?)?)
    }

    fn signer(&self, name: &str) -> Result<RawSigner, SimError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, self.pkcs8(name)?)
            .map_err(|e| SimError::State(format!("key {name}: {e}")))?;
        Ok(RawSigner(pair))
    }
}

/// An ECDSA P-256 key that signs with raw `r ‖ s` signatures, as Intel's formats use.
struct RawSigner(EcdsaKeyPair);

impl RawSigner {
    fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, SimError> {
        self.0
            .sign(&SystemRandom::new(), message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| SimError::State("ECDSA signing failed".to_owned()))
    }

    /// The public key as `x ‖ y` (64 bytes, no SEC1 prefix).
    fn public_raw(&self) -> Vec<u8> {
        let point = self.0.public_key().as_ref();
        point.get(1..).unwrap_or_default().to_vec()
    }
}

/// A simulated SGX platform, loaded from its directory.
pub struct SimPlatform {
    dir: PathBuf,
    state: SimState,
    certs: Certs,
    keys: Keys,
    enclave: Identity,
}

impl fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimPlatform")
            .field("dir", &self.dir)
            .field("tcb_status", &self.state.tcb_status)
            .field("revoked", &self.state.revoked)
            .field("enclave", &self.enclave)
            .finish_non_exhaustive()
    }
}

impl SimPlatform {
    /// Creates a platform in `dir` (created if needed; it must not already hold one).
    pub fn init(dir: &Path, config: &SimConfig) -> Result<Self, SimError> {
        if dir.join(STATE_FILE).exists() {
            return Err(SimError::Config(format!(
                "{} already holds a simulated platform",
                dir.display()
            )));
        }
        fs::create_dir_all(dir)?;
        std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
            .create(dir.join("keys"))?;
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let mut pkcs8 = Vec::new();
        for name in KEY_NAMES {
            let key = rcgen::KeyPair::generate_for(alg)?;
            pkcs8.push((name, Zeroizing::new(key.serialize_der())));
        }
        let mut platform_secret = Zeroizing::new([0u8; 32]);
        random(platform_secret.as_mut_slice())?;
        let keys = Keys {
            pkcs8,
            platform_secret,
        };

        let mut state = SimState {
            version: STATE_VERSION,
            fmspc: config.fmspc,
            pce_id: [0, 0],
            cpu_svn: [4, 4, 3, 3, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            pce_svn: 13,
            tcb_status: config.tcb_status,
            advisories: config.advisories.clone(),
            revoked: false,
            ppid: [0; 16],
            qe_id: [0; 16],
            qe_mrenclave: cloak_crypto::hash::sha256(b"cloak SIMULATED quoting enclave"),
            qe_mrsigner: cloak_crypto::hash::sha256(b"cloak SIMULATED quoting enclave signer"),
            root_serial: [0; 16],
            pck_ca_serial: [0; 16],
            pck_serial: [0; 16],
            tcb_signing_serial: [0; 16],
        };
        for field in [
            &mut state.ppid,
            &mut state.qe_id,
            &mut state.root_serial,
            &mut state.pck_ca_serial,
            &mut state.pck_serial,
            &mut state.tcb_signing_serial,
        ] {
            random(field)?;
            // Positive, non-zero serial numbers: clear the top bit, set a low one.
            if let Some(first) = field.first_mut() {
                *first = (*first & 0x7F) | 0x01;
            }
        }

        let root = keys.rcgen("root")?;
        let root_der = pki::root_certificate(&root, &state.root_serial)?;
        let root_issuer = rcgen::Issuer::new(pki::root_params(&state.root_serial), &root);
        let pck_ca = keys.rcgen("pck-ca")?;
        let pck_ca_der = pki::pck_ca_certificate(&pck_ca, &state.pck_ca_serial, &root_issuer)?;
        let pck_ca_issuer = rcgen::Issuer::new(pki::pck_ca_params(&state.pck_ca_serial), &pck_ca);
        let facts = pki::PckFacts {
            ppid: &state.ppid,
            cpu_svn: &state.cpu_svn,
            pce_svn: state.pce_svn,
            pce_id: &state.pce_id,
            fmspc: &state.fmspc,
        };
        let pck_der = pki::pck_certificate(
            &keys.rcgen("pck")?,
            &state.pck_serial,
            &facts,
            &pck_ca_issuer,
        )?;
        let tcb_der = pki::tcb_signing_certificate(
            &keys.rcgen("tcb-signing")?,
            &state.tcb_signing_serial,
            &root_issuer,
        )?;
        let certs = Certs {
            root: root_der,
            pck_ca: pck_ca_der,
            pck: pck_der,
            tcb_signing: tcb_der,
        };

        for (name, der) in &keys.pkcs8 {
            write_new(&dir.join("keys").join(format!("{name}.key")), der, 0o600)?;
        }
        write_new(
            &dir.join("keys/platform-secret"),
            keys.platform_secret.as_slice(),
            0o600,
        )?;
        for (name, der) in [
            ("root.der", &certs.root),
            ("pck-ca.der", &certs.pck_ca),
            ("pck.der", &certs.pck),
            ("tcb-signing.der", &certs.tcb_signing),
        ] {
            write_new(&dir.join(name), der, 0o644)?;
        }
        let platform = Self {
            dir: dir.to_path_buf(),
            enclave: default_identity(&keys)?,
            state,
            certs,
            keys,
        };
        platform.save_state(cloak_fs::Commit::NoClobber)?;
        platform.write_collateral()?;
        Ok(platform)
    }

    /// Loads the platform in `dir`. The enclave identity is that of the running executable
    /// (MRENCLAVE = SHA-256 of its bytes, MRSIGNER = SHA-256 of the simulation signer's public
    /// key, ISVPRODID 0, ISVSVN 0, not debug) until [`SimPlatform::with_enclave`] sets another.
    pub fn open(dir: &Path) -> Result<Self, SimError> {
        let text = fs::read(dir.join(STATE_FILE)).map_err(|e| {
            SimError::State(format!(
                "{} is not a simulated platform ({e}); create one with `cloak sim init`",
                dir.display()
            ))
        })?;
        let state: SimState = serde_json::from_slice(&text)
            .map_err(|e| SimError::State(format!("{STATE_FILE}: {e}")))?;
        if state.version != STATE_VERSION {
            return Err(SimError::State(format!(
                "{STATE_FILE} has version {}, this build reads {STATE_VERSION}",
                state.version
            )));
        }
        let read = |name: &str| {
            fs::read(dir.join(name)).map_err(|e| SimError::State(format!("{name}: {e}")))
        };
        let certs = Certs {
            root: read("root.der")?,
            pck_ca: read("pck-ca.der")?,
            pck: read("pck.der")?,
            tcb_signing: read("tcb-signing.der")?,
        };
        let mut pkcs8 = Vec::new();
        for name in KEY_NAMES {
            pkcs8.push((name, Zeroizing::new(read(&format!("keys/{name}.key"))?)));
        }
        let secret = Zeroizing::new(read("keys/platform-secret")?);
        let mut platform_secret = Zeroizing::new([0u8; 32]);
        if secret.len() != 32 {
            return Err(SimError::State(
                "keys/platform-secret is not 32 bytes".to_owned(),
            ));
        }
        platform_secret.copy_from_slice(&secret);
        let keys = Keys {
            pkcs8,
            platform_secret,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            enclave: default_identity(&keys)?,
            state,
            certs,
            keys,
        })
    }

    /// The same platform, running another enclave (for tests and `cloak sim quote`).
    pub fn with_enclave(mut self, enclave: Identity) -> Self {
        self.enclave = enclave;
        self
    }

    /// The same platform, its enclave also running the shared libraries whose SHA-256s are
    /// `libraries` (in load order) as trusted files: its MRENCLAVE becomes
    /// [`enclave_measurement`] of the current one and these.
    pub fn with_libraries(mut self, libraries: &[[u8; 32]]) -> Self {
        self.enclave.mrenclave = enclave_measurement(&self.enclave.mrenclave, libraries);
        self
    }

    /// The MRSIGNER of enclaves signed with this platform's simulation signer key.
    pub fn signer_mrsigner(&self) -> Result<[u8; 32], SimError> {
        Ok(default_identity(&self.keys)?.mrsigner)
    }

    /// Puts the PCK certificate on the PCK CRL (persistently).
    pub fn revoke(&mut self) -> Result<(), SimError> {
        self.state.revoked = true;
        self.save_state(cloak_fs::Commit::Replace)?;
        self.write_collateral()
    }

    /// Writes fresh collateral (valid from now for [`COLLATERAL_LIFETIME`]) to
    /// `DIR/collateral.json`.
    pub fn write_collateral(&self) -> Result<(), SimError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let collateral = self.collateral(now)?;
        let path = self.dir.join("collateral.json");
        let mut file = cloak_fs::AtomicFile::create(&path, 0o644)?;
        file.file().write_all(&collateral)?;
        file.commit(cloak_fs::Commit::Replace)
            .map_err(|e| SimError::Io(e.error))
    }

    /// Whether the PCK certificate is revoked.
    pub fn is_revoked(&self) -> bool {
        self.state.revoked
    }

    /// The TCB status the platform was built with.
    pub fn tcb_status(&self) -> TcbStatusName {
        self.state.tcb_status
    }

    /// The simulation root certificate, DER (also `DIR/root.der`).
    pub fn root_der(&self) -> &[u8] {
        &self.certs.root
    }

    /// The platform directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A DCAP v3 quote for the current enclave identity with `report_data`.
    pub fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, SimError> {
        quote::quote(self, &self.enclave, report_data)
    }

    /// Fresh collateral, valid from a minute before `now` (Unix seconds) for
    /// [`COLLATERAL_LIFETIME`], as `QuoteCollateralV3` JSON.
    pub fn collateral(&self, now: u64) -> Result<Vec<u8>, SimError> {
        collateral::document(self, now, collateral::TcbInfoVersion::V3)
    }

    /// The same collateral with its TCB info in Intel's older version 2 format, as SGX
    /// collateral of 2019–2022 was: the verifier reads both (with two cores), and the tests hold
    /// them to one verdict.
    pub fn collateral_tcb_info_v2(&self, now: u64) -> Result<Vec<u8>, SimError> {
        collateral::document(self, now, collateral::TcbInfoVersion::V2)
    }

    fn save_state(&self, commit: cloak_fs::Commit) -> Result<(), SimError> {
        let text =
            serde_json::to_vec_pretty(&self.state).map_err(|e| SimError::State(e.to_string()))?;
        let path = self.dir.join(STATE_FILE);
        let mut file = cloak_fs::AtomicFile::create(&path, 0o644)?;
        file.file().write_all(&text)?;
        file.commit(commit).map_err(|e| SimError::Io(e.error))
    }
}

impl Platform for SimPlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Simulated
    }

    fn identity(&self) -> Result<Identity, TeeError> {
        Ok(self.enclave)
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Evidence {
            quote: self.quote(report_data).map_err(TeeError::from)?,
            collateral: Some(self.collateral(now).map_err(TeeError::from)?),
        })
    }

    /// HKDF-SHA256 over the platform secret and the fields of an SGX KEYREQUEST: KEYNAME (seal),
    /// KEYPOLICY, ISVSVN (the enclave's own for the measurement policy, the requested floor for
    /// the signer policy), CPUSVN, the debug attribute, ISVPRODID, MRENCLAVE or MRSIGNER as the
    /// policy selects, and the key id. As with EGETKEY, a key for a higher ISVSVN than the
    /// enclave's is refused.
    fn sealing_key(&self, request: &KeyRequest) -> Result<SealingKey, TeeError> {
        let id = &self.enclave;
        let (policy_bits, mrenclave, mrsigner, isv_prod_id, isv_svn) = match request.policy {
            KeyPolicy::Measurement => (
                0x0001u16,
                id.mrenclave,
                [0u8; 32],
                id.isv_prod_id,
                id.isv_svn,
            ),
            KeyPolicy::Signer { isv_svn } => {
                if isv_svn > id.isv_svn {
                    return Err(TeeError::SvnTooHigh {
                        requested: isv_svn,
                        current: id.isv_svn,
                    });
                }
                (0x0002u16, [0u8; 32], id.mrsigner, id.isv_prod_id, isv_svn)
            }
        };
        let mut info = Vec::with_capacity(160);
        info.extend_from_slice(b"cloak-sim/v1 EGETKEY");
        info.extend_from_slice(&0x0004u16.to_be_bytes()); // KEYNAME: SEAL
        info.extend_from_slice(&policy_bits.to_be_bytes());
        info.extend_from_slice(&isv_svn.to_be_bytes());
        info.extend_from_slice(&self.state.cpu_svn);
        info.push(u8::from(id.debug));
        info.extend_from_slice(&mrenclave);
        info.extend_from_slice(&mrsigner);
        info.extend_from_slice(&isv_prod_id.to_be_bytes());
        info.extend_from_slice(&request.key_id);
        let key = cloak_crypto::kdf::hkdf_sha256(
            b"cloak-sim seal",
            self.keys.platform_secret.as_slice(),
            &info,
        );
        Ok(SealingKey::new(*key))
    }
}

/// The identity of the running executable under this platform's signer.
fn default_identity(keys: &Keys) -> Result<Identity, SimError> {
    Ok(Identity {
        mrenclave: executable_measurement()?,
        mrsigner: cloak_crypto::hash::sha256(&keys.signer("signer")?.public_raw()),
        isv_prod_id: 0,
        isv_svn: 0,
        debug: false,
    })
}

/// SHA-256 of the running executable's bytes (computed once per process).
pub fn executable_measurement() -> Result<[u8; 32], SimError> {
    static MEASUREMENT: OnceLock<[u8; 32]> = OnceLock::new();
    if let Some(m) = MEASUREMENT.get() {
        return Ok(*m);
    }
    let exe = std::env::current_exe()?;
    let measurement = cloak_crypto::hash::sha256(&fs::read(exe)?);
    Ok(*MEASUREMENT.get_or_init(|| measurement))
}

/// The MRENCLAVE of an enclave running an executable whose SHA-256 is `executable`, with the
/// shared libraries whose SHA-256s are `libraries` (in load order) as trusted files: the
/// simulated counterpart of Gramine's, which covers the manifest and every trusted file's hash.
/// With no libraries it is the executable's SHA-256 alone, as it always was; with some, it is
/// `SHA-256("cloak-sim/v1 MRENCLAVE" ‖ executable ‖ count (u32, big-endian) ‖ libraries…)`,
/// so a library swapped for another changes it.
pub fn enclave_measurement(executable: &[u8; 32], libraries: &[[u8; 32]]) -> [u8; 32] {
    if libraries.is_empty() {
        return *executable;
    }
    let mut input = Vec::with_capacity(libraries.len().saturating_add(2).saturating_mul(32));
    input.extend_from_slice(b"cloak-sim/v1 MRENCLAVE");
    input.extend_from_slice(executable);
    input.extend_from_slice(
        &u32::try_from(libraries.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for library in libraries {
        input.extend_from_slice(library);
    }
    cloak_crypto::hash::sha256(&input)
}

fn random(out: &mut [u8]) -> Result<(), SimError> {
    getrandom::fill(out).map_err(|e| SimError::State(format!("random number generator: {e}")))
}

/// Writes a new file atomically with `mode`, refusing to replace one.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SimError> {
    let mut file = cloak_fs::AtomicFile::create(path, mode)?;
    file.file().write_all(bytes)?;
    file.commit(cloak_fs::Commit::NoClobber)
        .map_err(|e| SimError::Io(e.error))
}

/// Why the simulated platform could not be created, loaded or used.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Certificate or CRL generation failed.
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// File I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The platform directory is missing or malformed.
    #[error("{0}")]
    State(String),
}

impl From<SimError> for TeeError {
    fn from(e: SimError) -> Self {
        match e {
            SimError::Io(io) => Self::Io(io),
            other => Self::State(other.to_string()),
        }
    }
}

/// `[u8; N]` as a hex string in `platform.json`.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(&text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}
