//! Prometheus metrics (text exposition format at `/metrics`).
//!
//! Labels are model names and outcome classes only: no request ids, no tensor shapes or values,
//! nothing a client sent.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How an inference request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Outcome {
    /// Answered.
    success,
    /// Refused for the request's own fault (4xx).
    client_error,
    /// Turned away by admission control (429/503).
    rejected,
    /// Failed inside the server (5xx).
    server_error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    outcome: Outcome,
}

/// Why an encapsulated request was refused before it ran.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum ReplayReason {
    stale,
    replayed,
    cache_full,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplayLabel {
    reason: ReplayReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

/// The server's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<ModelLabel, Histogram>,
    compute_seconds: Family<ModelLabel, Histogram>,
    queue_seconds: Histogram,
    in_flight: Gauge,
    queue_depth: Gauge,
    models_loaded: Gauge,
    models_failed: Gauge,
    attestations: Counter,
    attestation_quotes: Counter,
    replays_refused: Family<ReplayLabel, Counter>,
    plans_compiled: Family<ModelLabel, Counter>,
    connections: std::sync::Arc<cloak_net::ConnectionStats>,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    pub(crate) fn new(engine: &cloak_engine::EngineInfo) -> Self {
        let mut registry = Registry::with_prefix("cloak");
        // What runs the models, for dashboards that compare replicas (the claims carry the
        // library's digest; this names the engine, its version and threads).
        registry.register(
            "engine",
            "The inference engine",
            prometheus_client::metrics::info::Info::new(vec![
                ("engine".to_owned(), engine.kind().name().to_owned()),
                ("version".to_owned(), engine.version().to_owned()),
                ("threads".to_owned(), engine.threads().to_string()),
            ]),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<ModelLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let compute_seconds =
            Family::<ModelLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let queue_seconds = latency_histogram();
        let in_flight = Gauge::default();
        let queue_depth = Gauge::default();
        let models_loaded = Gauge::default();
        let models_failed = Gauge::default();
        let attestations = Counter::default();
        let attestation_quotes = Counter::default();
        registry.register(
            "inference_requests",
            "Inference requests by model and outcome",
            requests.clone(),
        );
        registry.register(
            "inference_request_duration_seconds",
            "Inference request latency, from admission to response, by model",
            request_seconds.clone(),
        );
        registry.register(
            "inference_compute_duration_seconds",
            "Time spent in the inference engine, by model",
            compute_seconds.clone(),
        );
        registry.register(
            "inference_queue_duration_seconds",
            "Time requests waited for a worker",
            queue_seconds.clone(),
        );
        registry.register(
            "inference_in_flight",
            "Inference requests running now",
            in_flight.clone(),
        );
        registry.register(
            "inference_queue_depth",
            "Inference requests waiting for a worker now",
            queue_depth.clone(),
        );
        registry.register(
            "models_loaded",
            "Models ready to serve",
            models_loaded.clone(),
        );
        registry.register(
            "models_failed",
            "Models that failed to load",
            models_failed.clone(),
        );
        registry.register(
            "attestations",
            "Fresh attestations served",
            attestations.clone(),
        );
        registry.register(
            "attestation_quotes",
            "Quotes made for fresh attestations (attestations requested while the platform \
             quotes share the next quote)",
            attestation_quotes.clone(),
        );
        let replays_refused = Family::<ReplayLabel, Counter>::default();
        registry.register(
            "encapsulated_refused",
            "Encapsulated requests refused for freshness: stale, replayed, or the replay cache full",
            replays_refused.clone(),
        );
        let plans_compiled = Family::<ModelLabel, Counter>::default();
        registry.register(
            "plan_compilations",
            "Execution plans the engine compiled, by model (tract: one per distinct set of input \
             shapes; many means clients cycle shapes)",
            plans_compiled.clone(),
        );
        let connections = std::sync::Arc::new(cloak_net::ConnectionStats::new());
        connections.register(&mut registry);
        Self {
            registry,
            requests,
            request_seconds,
            compute_seconds,
            queue_seconds,
            in_flight,
            queue_depth,
            models_loaded,
            models_failed,
            attestations,
            attestation_quotes,
            replays_refused,
            plans_compiled,
            connections,
        }
    }

    /// The attested listener's connection counts (caps reached, deadlines hit).
    pub(crate) fn connections(&self) -> std::sync::Arc<cloak_net::ConnectionStats> {
        std::sync::Arc::clone(&self.connections)
    }

    pub(crate) fn request(&self, model: &str, outcome: Outcome, seconds: Option<f64>) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_owned(),
                outcome,
            })
            .inc();
        if let Some(seconds) = seconds {
            self.request_seconds
                .get_or_create(&ModelLabel {
                    model: model.to_owned(),
                })
                .observe(seconds);
        }
    }

    pub(crate) fn compute(&self, model: &str, seconds: f64) {
        self.compute_seconds
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .observe(seconds);
    }

    pub(crate) fn queued(&self, seconds: f64) {
        self.queue_seconds.observe(seconds);
    }

    pub(crate) fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    pub(crate) fn replay_refused(&self, refusal: crate::service::ReplayRefusal) {
        let reason = match refusal {
            crate::service::ReplayRefusal::Stale => ReplayReason::stale,
            crate::service::ReplayRefusal::Replayed => ReplayReason::replayed,
            crate::service::ReplayRefusal::Full => ReplayReason::cache_full,
        };
        self.replays_refused
            .get_or_create(&ReplayLabel { reason })
            .inc();
    }

    pub(crate) fn attestation(&self) {
        self.attestations.inc();
    }

    pub(crate) fn attestation_quote(&self) {
        self.attestation_quotes.inc();
    }

    pub(crate) fn set_models(&self, loaded: usize, failed: usize) {
        self.models_loaded
            .set(i64::try_from(loaded).unwrap_or(i64::MAX));
        self.models_failed
            .set(i64::try_from(failed).unwrap_or(i64::MAX));
    }

    /// The text exposition, with the queue depth and each model's plan compilations sampled
    /// now.
    pub(crate) fn render(&self, queue_depth: usize, plans: &[(String, u64)]) -> String {
        self.queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        for (model, compiled) in plans {
            let counter = self.plans_compiled.get_or_create(&ModelLabel {
                model: model.clone(),
            });
            // The engine counts since the model loaded; the counter only ever grows.
            counter.inc_by(compiled.saturating_sub(counter.get()));
        }
        let mut text = String::new();
        // Encoding into a String cannot fail.
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
