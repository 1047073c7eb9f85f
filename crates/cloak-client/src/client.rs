//! [`Client`]: an appraised server, and the one entry point of the SDK.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloak_attest::collateral::Collateral;
use cloak_attest::policy::{AppraisalPolicy, EvaluationFloor};
use cloak_proto::kserve::InferRequest;
use cloak_proto::receipt::{BodyDigest, Receipt, ReceiptError};

use crate::error::{AppraisalError, Error};
use crate::http::{Endpoint, Method, Response};
use crate::session::{Inference, Session, encode_inference, into_inference};
use crate::{Appraisal, Transport, attested, encapsulated};

/// Idle connections kept for reuse.
const POOL: usize = 64;
/// How often a client appraises its server again by default, to pick up fresh collateral and
/// TCB status even when nothing changed.
const DEFAULT_REAPPRAISE_EVERY: Duration = Duration::from_secs(300);

/// How requests reach the enclave.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Attested TLS straight to the server: each connection's certificate is appraised in its
    /// handshake.
    #[default]
    AttestedTls,
    /// Oblivious HTTP encapsulation to the attested HPKE key, over any transport (a
    /// TLS-terminating load balancer, an untrusted proxy).
    Encapsulated,
}

/// A server appraised under a policy, ready for requests: made by [`Client::builder`].
///
/// Cheap to clone (clones share the appraisal and the idle connections). Requests made on the
/// client itself ([`Client::infer`], [`Client::send_inference`], [`Client::send`]) take a pooled
/// connection, and the client keeps its appraisal current: when the server's identity changes
/// (it restarted, its models changed) it appraises the server again, once, before giving up, and
/// it appraises it again anyway every [`ClientBuilder::reappraise_every`]. Nothing is sent to a
/// server the policy rejects. For a dedicated connection, open a [`Session`].
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: Endpoint,
    settings: Settings,
    current: Mutex<Current>,
    /// Serialises appraisals: one at a time, and none redone by a waiter.
    appraising: tokio::sync::Mutex<()>,
    pool: Mutex<Vec<Session>>,
}

#[derive(Debug)]
struct Current {
    appraisal: Arc<Appraisal>,
    since: Instant,
}

/// What every appraisal of this client uses.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    policy: AppraisalPolicy,
    mode: Mode,
    collateral: Option<Collateral>,
    transport: Transport,
    reappraise_every: Duration,
    /// The highest TCB evaluation data number accepted so far: a re-appraisal on older
    /// collateral than an earlier one is refused (see [`EvaluationFloor`]).
    floor: Arc<EvaluationFloor>,
    /// The model owner's access token, sent with every request.
    pub(crate) token: Option<Arc<str>>,
    /// How receipts should digest the bodies.
    pub(crate) receipt_digest: BodyDigest,
}

/// A [`Client`] under construction: the policy is required ([`ClientBuilder::policy`]), the rest
/// has defaults — attested TLS, the collateral the server relays, the public Web PKI for an
/// `https://` transport, a fresh appraisal every 5 minutes.
///
/// Without a policy there is nothing to connect with:
///
/// ```compile_fail,E0599
/// # async fn no_policy() {
/// let client = cloak_client::Client::builder().connect("https://enclave.example").await;
/// # }
/// ```
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder<P> {
    policy: P,
    mode: Mode,
    collateral: Option<Collateral>,
    transport: Transport,
    reappraise_every: Duration,
    nonce: Option<Vec<u8>>,
    any_enclave: bool,
    token: Option<Arc<str>>,
    receipt_digest: BodyDigest,
}

/// A [`ClientBuilder`] still without its policy: there is no default policy to fall back on.
#[derive(Debug)]
pub struct NoPolicy(());

impl Client {
    /// Starts a client: give it a policy, then [`connect`](ClientBuilder::connect).
    pub fn builder() -> ClientBuilder<NoPolicy> {
        ClientBuilder {
            policy: NoPolicy(()),
            mode: Mode::default(),
            collateral: None,
            transport: Transport::default(),
            reappraise_every: DEFAULT_REAPPRAISE_EVERY,
            nonce: None,
            any_enclave: false,
            token: None,
            receipt_digest: BodyDigest::SaltedBlake3,
        }
    }

    /// The appraisal in force: the accepted server and the fresh attestation it came from.
    pub fn appraisal(&self) -> Arc<Appraisal> {
        Arc::clone(&self.inner.lock_current().appraisal)
    }

    /// Runs `request` on `model` and returns the parsed answer with its verified receipt; an
    /// error status is [`Error::Server`].
    pub async fn infer(&self, model: &str, request: &InferRequest) -> Result<Inference, Error> {
        let (path, body, header_len) = encode_inference(model, request)?;
        let (response, receipt) = self.call(&Call::inference(&path, body, header_len)).await?;
        into_inference(response, receipt)
    }

    /// Sends an inference request (a KServe v2 body, `header_len` as for
    /// [`Session::send_inference`]) and verifies the receipt of a successful answer: `Some` for
    /// a success, `None` for an error status.
    pub async fn send_inference(
        &self,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<(Response, Option<Receipt>), Error> {
        self.call(&Call::inference(path, body.into(), header_len))
            .await
    }

    /// Sends `GET path` and returns the answer whatever its status (health, metadata,
    /// `/metrics`).
    pub async fn get(&self, path: &str) -> Result<Response, Error> {
        self.send(Method::Get, path, Bytes::new(), None).await
    }

    /// Sends `method path` with `body` and returns the answer whatever its status; receipts
    /// are not checked (use [`Client::send_inference`] for inferences).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<Response, Error> {
        let call = Call {
            method,
            path,
            body: body.into(),
            header_len,
            inference: false,
        };
        Ok(self.call(&call).await?.0)
    }

    /// Opens a dedicated connection under the appraisal in force (renewed first if it is due).
    pub async fn session(&self) -> Result<Session, Error> {
        Session::open(self.current().await?, &self.inner.settings).await
    }

    /// Appraises the server again now, and makes that appraisal the one in force; idle
    /// connections made under the previous one are closed.
    pub async fn reappraise(&self) -> Result<Arc<Appraisal>, Error> {
        let _one = self.inner.appraising.lock().await;
        self.appraise_locked().await
    }

    async fn appraise_locked(&self) -> Result<Arc<Appraisal>, Error> {
        let appraisal = Arc::new(
            self.inner
                .settings
                .appraise(self.inner.endpoint.clone(), None)
                .await?,
        );
        *self.inner.lock_current() = Current {
            appraisal: Arc::clone(&appraisal),
            since: Instant::now(),
        };
        self.inner.lock_pool().clear();
        Ok(appraisal)
    }

    /// The appraisal in force, renewed when it is older than `reappraise_every`.
    async fn current(&self) -> Result<Arc<Appraisal>, Error> {
        if let Some(appraisal) = self.inner.fresh() {
            return Ok(appraisal);
        }
        let _one = self.inner.appraising.lock().await;
        // Another task may have renewed it while this one waited.
        if let Some(appraisal) = self.inner.fresh() {
            return Ok(appraisal);
        }
        tracing::info!("appraising the server again (periodic)");
        self.appraise_locked().await
    }

    /// Appraises again if `stale` is still the appraisal in force (another task may have done
    /// so already).
    async fn reappraise_after(&self, stale: &Arc<Appraisal>, error: &Error) -> Result<(), Error> {
        let _one = self.inner.appraising.lock().await;
        if Arc::ptr_eq(&self.inner.lock_current().appraisal, stale) {
            tracing::info!(
                reason = error.code(),
                "the server's identity changed; re-appraising"
            );
            self.appraise_locked().await?;
        }
        Ok(())
    }

    /// Sends `call` on a pooled connection; appraises the server again, once, when its identity
    /// changed.
    async fn call(&self, call: &Call<'_>) -> Result<(Response, Option<Receipt>), Error> {
        let mut reappraised = false;
        loop {
            let appraisal = self.current().await?;
            let (mut session, pooled) = self.take_session(&appraisal).await?;
            let result = attempt(&mut session, pooled, &appraisal, call).await;
            match result {
                // An idle connection the server has closed (it may have restarted): the other
                // idle ones are likely gone too; try a new connection.
                Err(Error::Transport(_)) if pooled => self.inner.lock_pool().clear(),
                Err(e) if !reappraised && identity_changed(&e) => {
                    reappraised = true;
                    self.reappraise_after(&appraisal, &e).await?;
                }
                Err(e) => return Err(e),
                Ok(answer) => {
                    self.give_back(session);
                    return Ok(answer);
                }
            }
        }
    }

    /// An idle connection made under `appraisal`, or a new one; says which.
    async fn take_session(&self, appraisal: &Arc<Appraisal>) -> Result<(Session, bool), Error> {
        let idle = {
            let mut pool = self.inner.lock_pool();
            let found = pool
                .iter()
                .rposition(|s| Arc::ptr_eq(s.appraisal(), appraisal));
            found.map(|i| pool.swap_remove(i))
        };
        match idle {
            Some(session) => Ok((session, true)),
            None => Ok((
                Session::open(Arc::clone(appraisal), &self.inner.settings).await?,
                false,
            )),
        }
    }

    fn give_back(&self, session: Session) {
        let mut pool = self.inner.lock_pool();
        if pool.len() < POOL
            && Arc::ptr_eq(session.appraisal(), &self.inner.lock_current().appraisal)
        {
            pool.push(session);
        }
    }
}

/// One request as the client sends it.
struct Call<'a> {
    method: Method,
    path: &'a str,
    body: Bytes,
    header_len: Option<usize>,
    /// Verify the receipt of a successful answer.
    inference: bool,
}

impl<'a> Call<'a> {
    fn inference(path: &'a str, body: Bytes, header_len: Option<usize>) -> Self {
        Self {
            method: Method::Post,
            path,
            body,
            header_len,
            inference: true,
        }
    }
}

/// Sends `call` on `session`. A new connection is first checked to show the server `appraisal`
/// accepted: over attested TLS, a new connection to a restarted server shows new claims (a
/// pooled one was checked when it was new; an encapsulated session shows the appraisal's own).
async fn attempt(
    session: &mut Session,
    pooled: bool,
    appraisal: &Appraisal,
    call: &Call<'_>,
) -> Result<(Response, Option<Receipt>), Error> {
    if !pooled
        && !std::ptr::eq(session.server(), appraisal.server())
        && session.server().claims().evidence_digest()
            != appraisal.server().claims().evidence_digest()
    {
        return Err(Error::IdentityChanged(
            "a new connection presented other claims".into(),
        ));
    }
    if call.inference {
        session
            .send_inference(call.path, call.body.clone(), call.header_len)
            .await
    } else {
        let response = session
            .send(call.method, call.path, call.body.clone(), call.header_len)
            .await?;
        Ok((response, None))
    }
}

/// Errors after which the server is appraised again before giving up.
fn identity_changed(error: &Error) -> bool {
    matches!(
        error,
        Error::IdentityChanged(_) | Error::Receipt(ReceiptError::Evidence)
    )
}

impl Inner {
    /// The appraisal in force, unless it is due for renewal.
    fn fresh(&self) -> Option<Arc<Appraisal>> {
        let current = self.lock_current();
        (current.since.elapsed() < self.settings.reappraise_every)
            .then(|| Arc::clone(&current.appraisal))
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Settings {
    /// A fresh appraisal of the server at `endpoint`, for `nonce` or a random one.
    async fn appraise(&self, endpoint: Endpoint, nonce: Option<&[u8]>) -> Result<Appraisal, Error> {
        let mut random = [0u8; 32];
        let nonce = match nonce {
            Some(nonce) => nonce,
            None => {
                getrandom::fill(&mut random)
                    .map_err(|e| Error::Config(format!("random nonce: {e}")))?;
                &random
            }
        };
        let appraisal = match self.mode {
            Mode::AttestedTls => {
                attested::appraise(
                    endpoint,
                    self.policy.clone(),
                    self.collateral.clone(),
                    nonce,
                )
                .await
            }
            Mode::Encapsulated => {
                encapsulated::appraise(
                    endpoint,
                    &self.policy,
                    self.collateral.clone(),
                    nonce,
                    &self.transport,
                )
                .await
            }
        }?;
        // The collateral of one appraisal is fixed for its life; across appraisals it must not
        // go back to before a TCB recovery this client has already seen.
        let verified = appraisal.server().accepted().verified();
        self.floor
            .check(verified)
            .map_err(|e| Error::Appraisal(AppraisalError::Policy(e)))?;
        self.floor.observe(verified);
        Ok(appraisal)
    }
}

impl<P> ClientBuilder<P> {
    /// How requests reach the enclave [default: [`Mode::AttestedTls`]].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Appraise with this collateral instead of the one the server relays; over attested TLS,
    /// nothing at all is then sent before the server is appraised.
    pub fn collateral(mut self, collateral: Collateral) -> Self {
        self.collateral = Some(collateral);
        self
    }

    /// The transport's trust for encapsulated requests over `https://` [default: the public
    /// Web PKI, and Cloak servers' own attested certificates].
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Appraise the server again after this long even when nothing changed, for fresh
    /// collateral and TCB status [default: 5 minutes].
    pub fn reappraise_every(mut self, every: Duration) -> Self {
        self.reappraise_every = every;
        self
    }

    /// The model owner's access token (`cloak token issue`), for models whose owner requires
    /// one: sent as `Authorization: Bearer` with every request, inside attested TLS or the
    /// encapsulation, never to anything the policy has not accepted.
    pub fn access_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Arc::from(token.into().trim()));
        self
    }

    /// How the receipts of this client's inferences should digest the request and response
    /// bodies [default: [`BodyDigest::SaltedBlake3`], version 3]. BLAKE3 hashes about 2.5
    /// times as fast as SHA-256 on one core, and both sides hash each body, so large requests
    /// answer sooner; ask for [`BodyDigest::SaltedSha256`] (version 2) where receipts must use
    /// FIPS-approved algorithms only. A server that does not know the digest asked for makes
    /// version 2 receipts, which are checked all the same; [`BodyDigest::Sha256`] asks for
    /// nothing, which gets version 2 as well.
    pub fn receipt_digest(mut self, digests: BodyDigest) -> Self {
        self.receipt_digest = digests;
        self
    }

    /// **Dangerous.** Accept a policy that names no enclave — no MRENCLAVE, no MRSIGNER with
    /// ISVPRODID, no MRTD ([`AppraisalPolicy::names_identity`]) — so that any genuine enclave
    /// is accepted, a rebuilt or hostile binary included. Without this,
    /// [`connect`](ClientBuilder::connect) refuses such a policy
    /// ([`Error::PolicyPinsNoIdentity`]); with it, every connect logs a warning.
    pub fn dangerously_accept_any_enclave(mut self) -> Self {
        self.any_enclave = true;
        self
    }

    /// The nonce of the first fresh attestation (1 to 64 bytes) [default: 32 random bytes],
    /// for callers that record it.
    pub fn nonce(mut self, nonce: impl Into<Vec<u8>>) -> Self {
        self.nonce = Some(nonce.into());
        self
    }
}

impl ClientBuilder<NoPolicy> {
    /// The appraisal policy: which trust root, TCB statuses, advisories, debug enclaves and
    /// measurements are acceptable. Required; [`AppraisalPolicy::strict`] trusts Intel's root
    /// and accepts only up-to-date, non-debug platforms, and should pin a measurement.
    pub fn policy(self, policy: AppraisalPolicy) -> ClientBuilder<AppraisalPolicy> {
        ClientBuilder {
            policy,
            mode: self.mode,
            collateral: self.collateral,
            transport: self.transport,
            reappraise_every: self.reappraise_every,
            nonce: self.nonce,
            any_enclave: self.any_enclave,
            token: self.token,
            receipt_digest: self.receipt_digest,
        }
    }
}

impl ClientBuilder<AppraisalPolicy> {
    /// Appraises the server at `url` — `https://host:port` over attested TLS; for encapsulated
    /// requests the URL of whatever is in front of it, `https://` or `http://` — and returns
    /// the client once the policy accepts it. Nothing but a nonce is sent before that.
    pub async fn connect(self, url: &str) -> Result<Client, Error> {
        if !self.policy.names_identity() {
            if !self.any_enclave {
                return Err(Error::PolicyPinsNoIdentity);
            }
            tracing::warn!(
                "the appraisal policy names no enclave: any genuine enclave is accepted, a \
                 rebuilt or hostile one included (dangerously_accept_any_enclave)"
            );
        }
        if let Some(nonce) = &self.nonce
            && (nonce.is_empty() || nonce.len() > cloak_proto::attestation::MAX_NONCE_LEN)
        {
            return Err(Error::Config(format!(
                "the nonce must be 1 to {} bytes",
                cloak_proto::attestation::MAX_NONCE_LEN
            )));
        }
        let endpoint = Endpoint::parse(url)?;
        let settings = Settings {
            policy: self.policy,
            mode: self.mode,
            collateral: self.collateral,
            transport: self.transport,
            reappraise_every: self.reappraise_every,
            floor: Arc::new(EvaluationFloor::new()),
            token: self.token,
            receipt_digest: self.receipt_digest,
        };
        let appraisal = settings
            .appraise(endpoint.clone(), self.nonce.as_deref())
            .await?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint,
                settings,
                current: Mutex::new(Current {
                    appraisal: Arc::new(appraisal),
                    since: Instant::now(),
                }),
                appraising: tokio::sync::Mutex::new(()),
                pool: Mutex::new(Vec::new()),
            }),
        })
    }
}
