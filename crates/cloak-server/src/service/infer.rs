//! One inference: parse the KServe request, admit it, run it on a worker, encode the response
//! and sign its receipt.
//!
//! The receipt's input digest (of the salt and the request body as received: SHA-256, or BLAKE3
//! when the client asks for it) is computed off the critical path: with a worker free at once, the
//! request's own thread hashes the body while the worker runs the model; a request that has to
//! queue is hashed before it waits, so that it does not hold its body as well as its tensors while
//! queued. No extra thread is used per request, which matters inside Gramine (`sgx.max_threads`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cloak_proto::kserve::{EncodedBody, InferRequest, InferResponse, NamedTensor, TensorEncoding};
use cloak_proto::receipt::{BodyDigest, SALT_LEN, Salt};
use cloak_proto::tensor::Tensor;

use super::{MODEL_VERSION, Service, ServiceError};
use crate::metrics::Metrics;
use crate::store::LoadedModel;

/// A finished inference: the encoded response and its signed receipt.
#[derive(Debug)]
pub(crate) struct Inference {
    /// The response body (JSON, or a JSON header followed by binary tensors).
    pub(crate) body: Vec<u8>,
    /// Its media type.
    pub(crate) content_type: &'static str,
    /// The JSON header's length when binary tensors follow it.
    pub(crate) header_len: Option<usize>,
    /// The fresh request id the receipt names.
    pub(crate) request_id: String,
    /// The receipt (base64url text).
    pub(crate) receipt: String,
    /// The evidence digest the receipt names.
    pub(crate) evidence: [u8; 32],
    /// The salt of the receipt's digests.
    pub(crate) salt: Salt,
}

impl Service {
    /// Runs the KServe request `body` (`header_len`: the binary extension's JSON header length)
    /// on `model` under admission control, and signs the receipt of the answer, its body
    /// digests made as `digests` says under `salt`, naming the evidence the request was
    /// `accepted_under` where this process can stand by it.
    pub(crate) async fn infer(
        self: &Arc<Self>,
        model: Arc<LoadedModel>,
        body: Bytes,
        header_len: Option<usize>,
        accepted_under: Option<[u8; 32]>,
        salt: Option<Salt>,
        digests: BodyDigest,
    ) -> Result<Inference, ServiceError> {
        // The client's salt, or a fresh one: the receipt's digests are salted either way.
        let salt = salt.unwrap_or_else(random_salt);
        let codec = self.codec_limits();
        // A large body is hashed and parsed off the async workers, in one pass over memory
        // while it is warm; a small one is parsed here and hashed later, in parallel with the
        // model (see the module documentation).
        let (request, mut input) = if body.len() >= super::OFFLOAD_BYTES {
            let (request, digest) = self
                .prepare(body.len(), move || {
                    let digest = digests.of(&salt, &body);
                    (InferRequest::parse(&body, header_len, &codec), digest)
                })
                .await?;
            (request?, InputDigest::Done(digest))
        } else {
            let request = InferRequest::parse(&body, header_len, &codec)?;
            (request, InputDigest::Pending(body))
        };
        let outputs = model.model.outputs();
        if let Some(missing) = request
            .outputs()
            .iter()
            .find(|asked| !outputs.iter().any(|o| o.name() == asked.name()))
        {
            return Err(ServiceError::NoSuchOutput {
                model: model.claim.name.clone(),
                output: missing.name().to_owned(),
            });
        }

        let permit = match self.admission.try_admit() {
            Some(permit) => {
                self.metrics.queued(0.0);
                permit
            }
            None => {
                // Hashed before it waits, so that it does not hold its body as well as its
                // tensors while queued.
                input = InputDigest::Done(input.finish(digests, &salt));
                let queued = Instant::now();
                let permit = self
                    .admission
                    .admit()
                    .await
                    .map_err(ServiceError::Refused)?;
                self.metrics.queued(queued.elapsed().as_secs_f64());
                permit
            }
        };

        let job = Job::new(&model, request);
        let (service, worker_model) = (Arc::clone(self), Arc::clone(&model));
        let worker = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _in_flight = InFlight::enter(&service.metrics);
            job.run(&service.metrics, &worker_model, digests, &salt)
        });
        let input_sha256 = input.finish(digests, &salt);
        let (encoded, output_sha256) = match worker.await {
            Ok(result) => result?,
            Err(_) => {
                tracing::error!(model = %model.claim.name, "an inference worker failed");
                return Err(ServiceError::WorkerFailed);
            }
        };
        let request_id = request_id();
        let (receipt, evidence) = self
            .identity
            .receipt(
                &model.claim,
                request_id.clone(),
                digests,
                (input_sha256, output_sha256),
                accepted_under,
            )
            .map_err(|e| {
                tracing::error!(error = %e, "a receipt could not be signed");
                ServiceError::Receipt
            })?;
        Ok(Inference {
            content_type: encoded.content_type(),
            header_len: encoded.header_len(),
            // Moved, not copied, into the response.
            body: std::mem::take(&mut *encoded.into_body()),
            request_id,
            receipt,
            evidence,
            salt,
        })
    }
}

/// A fresh receipt salt.
fn random_salt() -> Salt {
    let mut salt = [0u8; SALT_LEN];
    // As for request ids: the OS random source does not fail on Linux; were it to, the salt
    // would be all zeros and the digests merely unsalted in effect.
    let _ = getrandom::fill(&mut salt);
    salt
}

/// Everything a worker needs from the request: its tensors, and what the response must hold.
struct Job {
    id: Option<String>,
    /// The outputs asked for by name (empty: all of them).
    requested: Vec<String>,
    /// Each output's encoding, JSON or binary, as the request asked.
    encodings: Vec<(String, TensorEncoding)>,
    inputs: Vec<(String, Tensor)>,
}

impl Job {
    fn new(model: &LoadedModel, request: InferRequest) -> Self {
        let id = request.id().map(str::to_owned);
        let requested = request
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        let encodings = model
            .model
            .outputs()
            .iter()
            .map(|o| (o.name().to_owned(), request.output_encoding(o.name())))
            .collect();
        let inputs = request
            .into_inputs()
            .into_iter()
            .map(NamedTensor::into_parts)
            .collect();
        Self {
            id,
            requested,
            encodings,
            inputs,
        }
    }

    /// Runs the model and encodes the response (blocking); returns it with its receipt digest.
    fn run(
        self,
        metrics: &Metrics,
        model: &LoadedModel,
        digests: BodyDigest,
        salt: &Salt,
    ) -> Result<(EncodedBody, [u8; 32]), ServiceError> {
        let compute = Instant::now();
        let outputs = model.model.session().run(self.inputs)?;
        metrics.compute(&model.claim.name, compute.elapsed().as_secs_f64());
        let requested = self.requested;
        let selected: Vec<NamedTensor> = outputs
            .into_iter()
            .filter(|(name, _)| requested.is_empty() || requested.contains(name))
            .map(|(name, tensor)| NamedTensor::new(name, tensor))
            .collect();
        let mut response = InferResponse::new(model.claim.name.clone(), selected)
            .with_model_version(MODEL_VERSION);
        if let Some(id) = self.id {
            response = response.with_id(id);
        }
        let encodings = self.encodings;
        let encoded = response.encode(|output| {
            encodings
                .iter()
                .find(|(name, _)| name == output)
                .map_or(TensorEncoding::Json, |(_, encoding)| *encoding)
        })?;
        let output_sha256 = digests.of(salt, encoded.body());
        Ok((encoded, output_sha256))
    }
}

/// The receipt's digest of the request body: computed, or still to compute from the body.
enum InputDigest {
    Done([u8; 32]),
    Pending(Bytes),
}

impl InputDigest {
    fn finish(self, digests: BodyDigest, salt: &Salt) -> [u8; 32] {
        match self {
            Self::Done(digest) => digest,
            Self::Pending(body) => digests.of(salt, &body),
        }
    }
}

/// A fresh request id: 128 random bits, hex.
fn request_id() -> String {
    let mut id = [0u8; 16];
    // The OS random source does not fail on Linux; were it to, the id would be all zeros,
    // which loses its uniqueness but nothing the signature covers.
    let _ = getrandom::fill(&mut id);
    hex::encode(id)
}

/// Counts a running inference in the in-flight gauge while alive.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a Metrics) -> Self {
        metrics.in_flight().inc();
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight().dec();
    }
}
