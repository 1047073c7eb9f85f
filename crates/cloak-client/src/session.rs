//! One connection to an appraised server, reused request after request.

use std::sync::Arc;

use bytes::Bytes;
use cloak_proto::kserve::{self, InferRequest, InferResponse, TensorEncoding};
use cloak_proto::receipt::{BodyDigest, Receipt, ReceiptError, SALT_LEN, Salt};

use crate::appraise::VerifiedServer;
use crate::client::Settings;
use crate::error::{Error, ServerStatus};
use crate::http::{self, Connection, Method, Response};
use crate::{Appraisal, Route, attested, encapsulated};

/// One connection to an appraised server, for many requests (HTTP/1.1 keep-alive): the
/// connection and, over attested TLS, its handshake's appraisal are paid once.
///
/// Made by [`Client::session`](crate::Client::session). Over attested TLS each connection's
/// certificate is appraised in its own handshake; behind a load balancer it may reach another
/// replica, which the policy must then accept as well ([`Session::server`] says which one it
/// reached, and receipts are checked against it). A session does not re-appraise: when the
/// server's identity changes it fails with [`Error::IdentityChanged`], and a new session from
/// the client carries on.
#[derive(Debug)]
pub struct Session {
    appraisal: Arc<Appraisal>,
    connection: Connection,
    /// The model owner's access token, sent with every request.
    token: Option<Arc<str>>,
    /// How receipts should digest the bodies.
    receipt_digest: BodyDigest,
    /// Over attested TLS: the server this connection's certificate showed.
    reached: Option<VerifiedServer>,
}

/// A verified inference: the parsed response and its receipt.
#[non_exhaustive]
#[derive(Debug)]
pub struct Inference {
    /// The KServe v2 response.
    pub response: InferResponse,
    /// The receipt, verified against the appraised claims and the exact bodies.
    pub receipt: Receipt,
    /// The receipt as the server sent it (the `Cloak-Receipt` header value), for keeping.
    pub receipt_text: String,
    /// The salt of the receipt's digests, to keep with it: checking the receipt against the
    /// bodies later takes it (`cloak receipt verify --salt`).
    pub receipt_salt: Option<Salt>,
}

impl Session {
    /// Opens a connection under `appraisal`, for requests made as `settings` say.
    pub(crate) async fn open(
        appraisal: Arc<Appraisal>,
        settings: &Settings,
    ) -> Result<Self, Error> {
        let (connection, reached) = match &appraisal.route {
            Route::AttestedTls { endpoint, tls } => {
                let (connection, server) = attested::connect(endpoint, tls).await?;
                (connection, Some(server))
            }
            Route::Encapsulated { endpoint, tls, .. } => {
                (encapsulated::open(endpoint, tls.as_ref()).await?, None)
            }
        };
        Ok(Self {
            appraisal,
            connection,
            token: settings.token.clone(),
            receipt_digest: settings.receipt_digest,
            reached,
        })
    }

    /// The server this session talks to, as appraised.
    pub fn server(&self) -> &VerifiedServer {
        self.reached
            .as_ref()
            .unwrap_or_else(|| self.appraisal.server())
    }

    /// The other fleet replica that answered `response`, if it was not the appraised server:
    /// the receipt is checked against that replica's claims, appraised under the same policy.
    fn answered_by(&self, response: &Response) -> Result<Option<Arc<VerifiedServer>>, Error> {
        let Route::Encapsulated { peers, .. } = &self.appraisal.route else {
            return Ok(None);
        };
        match response.peer.evidence {
            Some(digest) if digest != self.server().claims().evidence_digest() => peers
                .server(&digest, response.peer.attestation.as_deref())
                .map(Some),
            _ => Ok(None),
        }
    }

    /// The appraisal this session was opened under.
    pub(crate) fn appraisal(&self) -> &Arc<Appraisal> {
        &self.appraisal
    }

    /// Runs `request` on `model`: encodes it (binary tensors), sends it, requires success,
    /// verifies the receipt against this session's appraised claims and the exact bodies, and
    /// parses the response. An error status is [`Error::Server`].
    pub async fn infer(&mut self, model: &str, request: &InferRequest) -> Result<Inference, Error> {
        let (path, body, header_len) = encode_inference(model, request)?;
        let (response, receipt) = self.send_inference(&path, body, header_len).await?;
        into_inference(response, receipt)
    }

    /// Sends an inference request, `POST path` with `body` (`header_len`: the KServe binary
    /// extension's `Inference-Header-Content-Length`, when binary tensors follow the JSON), and
    /// verifies the receipt of a successful answer against this session's appraised claims and
    /// the exact bodies: the receipt is `Some` for a success and `None` otherwise (the response
    /// then carries the server's error), and a success without a valid receipt is an error.
    ///
    /// The request body's digest, as the client asked receipts to make it, is computed on the
    /// blocking pool while the request is in flight, so checking the receipt adds only the
    /// response's digest and one signature verification to the latency.
    pub async fn send_inference(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<(Response, Option<Receipt>), Error> {
        let body = body.into();
        // A fresh salt for the receipt's digests, sent with the request and kept with the
        // receipt: without it, nobody holding the receipt can test guesses of the bodies.
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| Error::Config(format!("random salt: {e}")))?;
        let hashed = body.clone();
        let digests = self.receipt_digest;
        let digest = tokio::task::spawn_blocking(move || digests.of(&salt, &hashed));
        let (response, digest) = tokio::join!(
            self.send_salted(Method::Post, path, body.clone(), header_len, Some(&salt)),
            digest
        );
        let response = response?;
        if !response.is_success() {
            return Ok((response, None));
        }
        if response.receipt_salt != Some(salt) {
            return Err(ReceiptError::Malformed(
                "the server did not return the receipt salt it was sent".into(),
            )
            .into());
        }
        // The task cannot fail (hashing does not panic); if it somehow did, the receipt is
        // checked against the body itself.
        let sent = SentBody {
            body: &body,
            asked: Some(digests),
            digest: digest.ok(),
        };
        let receipt = match self.answered_by(&response)? {
            Some(peer) => verify_receipt(&response, &peer, &sent)?,
            None => verify_receipt(&response, self.server(), &sent)?,
        };
        Ok((response, Some(receipt)))
    }

    /// Sends `GET path` and returns the answer whatever its status.
    pub async fn get(&mut self, path: &str) -> Result<Response, Error> {
        self.send(Method::Get, path, Bytes::new(), None).await
    }

    /// Sends `method path` with `body` (`header_len` as for [`Session::send_inference`]) and
    /// returns the answer as it is, whatever its status; receipts are not checked.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<Response, Error> {
        self.send_salted(method, path, body.into(), header_len, None)
            .await
    }

    /// [`Session::send`], with the receipt salt to send, if any.
    async fn send_salted(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        header_len: Option<usize>,
        salt: Option<&Salt>,
    ) -> Result<Response, Error> {
        let extras = http::Extras {
            salt,
            // Asked for with the salt: only inferences carry receipts.
            receipt_digest: salt.and(self.receipt_digest.name()),
            token: self.token.as_deref(),
        };
        match &self.appraisal.route {
            Route::AttestedTls { endpoint, .. } => {
                http::request(
                    &mut self.connection,
                    endpoint,
                    method,
                    path,
                    body,
                    header_len,
                    extras,
                )
                .await
            }
            Route::Encapsulated {
                endpoint,
                key_config,
                peers,
                ..
            } => {
                let target = encapsulated::Target {
                    endpoint,
                    key_config,
                    evidence: self.appraisal.server.claims().evidence_digest(),
                    known: peers.known(),
                };
                encapsulated::send(
                    &mut self.connection,
                    target,
                    method,
                    path,
                    &body,
                    header_len,
                    extras,
                )
                .await
            }
        }
    }
}

/// The path, binary-encoded body and header length of an inference of `request` on `model`.
pub(crate) fn encode_inference(
    model: &str,
    request: &InferRequest,
) -> Result<(String, Bytes, Option<usize>), Error> {
    let encoded = request
        .encode(|_| TensorEncoding::Binary)
        .map_err(|e| Error::Protocol(format!("the request: {e}")))?;
    let header_len = encoded.header_len();
    let body = std::mem::take(&mut *encoded.into_body());
    Ok((format!("/v2/models/{model}/infer"), body.into(), header_len))
}

/// A verified answer as an [`Inference`], or the server's error.
pub(crate) fn into_inference(
    response: Response,
    receipt: Option<Receipt>,
) -> Result<Inference, Error> {
    let Some(receipt) = receipt else {
        return Err(
            ServerStatus::from_body(response.status, &response.body, response.retry_after).into(),
        );
    };
    let parsed = InferResponse::parse(
        &response.body,
        response.header_len,
        &kserve::Limits::default(),
    )
    .map_err(|e| Error::Protocol(format!("the response: {e}")))?;
    Ok(Inference {
        response: parsed,
        receipt,
        receipt_text: response.receipt.unwrap_or_default(),
        receipt_salt: response.receipt_salt,
    })
}

/// A request body as sent: the receipt digests asked for with it, if any, and the body's
/// digest made that way while it was in flight.
pub(crate) struct SentBody<'a> {
    pub(crate) body: &'a [u8],
    pub(crate) asked: Option<BodyDigest>,
    pub(crate) digest: Option<[u8; 32]>,
}

/// Verifies `response`'s receipt against `server`'s claims and the request body `sent` (its
/// digest salted with the response's salt for a salted receipt, made as the receipt's version
/// says: the digest computed in flight when the server made the one asked for, else the body's
/// hashed now): signed by the attested receipt key, over the evidence and a model the claims
/// state, for exactly this request and this response, its digests those asked for or the
/// server's default ([`Receipt::check_digests_asked`]).
pub(crate) fn verify_receipt(
    response: &Response,
    server: &VerifiedServer,
    sent: &SentBody<'_>,
) -> Result<Receipt, Error> {
    let text = response
        .receipt
        .as_deref()
        .ok_or_else(|| ReceiptError::Malformed("the response carries no receipt".into()))?;
    let receipt = Receipt::verify(text, server.claims())?;
    check_bodies(&receipt, response, sent)?;
    Ok(receipt)
}

/// Checks a receipt (its signature and claims verified) against the bodies of its exchange:
/// its digests those asked for, if any, or the server's default; the request's digest, the
/// one computed in flight when it is of the receipt's kind; the response's.
fn check_bodies(
    receipt: &Receipt,
    response: &Response,
    sent: &SentBody<'_>,
) -> Result<(), ReceiptError> {
    if let Some(asked) = sent.asked {
        receipt.check_digests_asked(asked)?;
    }
    match sent.digest {
        Some(digest) if sent.asked == Some(receipt.digests) => {
            receipt.check_request_digest(&digest)?;
        }
        _ => receipt.check_request(response.receipt_salt.as_ref(), sent.body)?,
    }
    receipt.check_response(response.receipt_salt.as_ref(), &response.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::PeerEvidence;

    const SALT: Salt = [0x33; SALT_LEN];

    /// A receipt for `request` and `response` with digests made as `digests` says, and the
    /// response it came with.
    fn exchange(digests: BodyDigest, request: &[u8], response: &[u8]) -> (Receipt, Response) {
        let receipt = Receipt {
            model: "m".into(),
            model_sha256: [0; 32],
            input_sha256: digests.of(&SALT, request),
            output_sha256: digests.of(&SALT, response),
            time_ms: 0,
            request_id: "r".into(),
            evidence_sha256: [0; 32],
            digests,
        };
        let response = Response {
            status: 200,
            header_len: None,
            receipt: None,
            receipt_salt: Some(SALT),
            retry_after: None,
            peer: PeerEvidence::default(),
            body: response.to_vec(),
        };
        (receipt, response)
    }

    fn sent<'a>(body: &'a [u8], asked: BodyDigest, digest: [u8; 32]) -> SentBody<'a> {
        SentBody {
            body,
            asked: Some(asked),
            digest: Some(digest),
        }
    }

    #[test]
    fn a_receipt_is_checked_with_the_digest_of_its_own_kind() {
        let blake3 = BodyDigest::SaltedBlake3;
        // Sent `body`, BLAKE3 asked for and computed in flight over `in_flight`.
        let check = |(receipt, response): &(Receipt, Response), body: &[u8], in_flight: &[u8]| {
            check_bodies(
                receipt,
                response,
                &sent(body, blake3, blake3.of(&SALT, in_flight)),
            )
        };
        // The digest computed in flight is used when the receipt is of the kind asked for...
        let asked = exchange(blake3, b"request", b"response");
        check(&asked, b"request", b"request").unwrap();
        assert_eq!(
            check(&asked, b"request", b"requesT"),
            Err(ReceiptError::Input)
        );
        // ... and the body itself when the server made its default instead.
        let default = exchange(BodyDigest::SaltedSha256, b"request", b"response");
        check(&default, b"request", b"request").unwrap();
        assert_eq!(
            check(&default, b"requesT", b"requesT"),
            Err(ReceiptError::Input)
        );
        let (receipt, mut changed) = default;
        changed.body.push(b' ');
        assert_eq!(
            check(&(receipt, changed), b"request", b"request"),
            Err(ReceiptError::Output)
        );
    }

    #[test]
    fn a_client_held_to_sha256_refuses_a_blake3_receipt() {
        let (receipt, response) = exchange(BodyDigest::SaltedBlake3, b"request", b"response");
        let sha256 = BodyDigest::SaltedSha256;
        assert_eq!(
            check_bodies(
                &receipt,
                &response,
                &sent(b"request", sha256, sha256.of(&SALT, b"request")),
            ),
            Err(ReceiptError::DigestNotAsked(3))
        );
        // A raw answer's check (nothing asked) takes any version its bodies match.
        let raw = SentBody {
            body: b"request",
            asked: None,
            digest: None,
        };
        check_bodies(&receipt, &response, &raw).unwrap();
    }
}
