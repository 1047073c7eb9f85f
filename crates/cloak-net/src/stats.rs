//! Counts of what happened to connections, for `/metrics`.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a new connection was closed as soon as it was accepted.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RefuseReason {
    /// The service had [`max_connections`](crate::ConnectionLimits::max_connections) open.
    Full,
    /// The client's address had
    /// [`max_per_address`](crate::ConnectionLimits::max_per_address) open.
    PerAddress,
}

/// Why the service closed a connection it had accepted.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CloseReason {
    /// The TLS handshake failed.
    HandshakeFailed,
    /// The TLS handshake took longer than its deadline.
    HandshakeTimeout,
    /// No request was in progress for the idle timeout.
    Idle,
    /// A request body arrived more slowly than the minimum rate.
    SlowBody,
}

impl RefuseReason {
    /// The reason as `/metrics` and the logs spell it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::PerAddress => "per-address",
        }
    }
}

impl EncodeLabelValue for RefuseReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.label())
    }
}

impl EncodeLabelValue for CloseReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.label())
    }
}

impl CloseReason {
    /// The reason as `/metrics` and the logs spell it.
    pub fn label(self) -> &'static str {
        match self {
            Self::HandshakeFailed => "handshake-failed",
            Self::HandshakeTimeout => "handshake-timeout",
            Self::Idle => "idle",
            Self::SlowBody => "slow-body",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: RefuseReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    reason: CloseReason,
}

/// Connection counts of one service. Cheap to update; [`register`](Self::register) exports
/// them.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    accepted: Counter,
    open: Gauge,
    refused: Family<RefusedLabels, Counter>,
    closed: Family<ClosedLabels, Counter>,
}

impl ConnectionStats {
    /// Empty counts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the counts to `registry` as `connections_accepted_total`, `connections_open`,
    /// `connections_refused_total{reason}` and `connections_closed_total{reason}` (under the
    /// registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_accepted",
            "Connections accepted (including those then refused)",
            self.accepted.clone(),
        );
        registry.register(
            "connections_open",
            "Connections open (in the TLS handshake or serving)",
            self.open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed on arrival because a connection cap was reached",
            self.refused.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections the service closed: handshake failed or too slow, idle, body too slow",
            self.closed.clone(),
        );
    }

    /// Connections refused for `reason` so far.
    pub fn refused_count(&self, reason: RefuseReason) -> u64 {
        self.refused.get_or_create(&RefusedLabels { reason }).get()
    }

    /// Connections closed for `reason` so far.
    pub fn closed_count(&self, reason: CloseReason) -> u64 {
        self.closed.get_or_create(&ClosedLabels { reason }).get()
    }

    /// Connections open now.
    pub fn open_count(&self) -> i64 {
        self.open.get()
    }

    pub(crate) fn accepted(&self) {
        self.accepted.inc();
    }

    pub(crate) fn refused(&self, reason: RefuseReason) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closed.get_or_create(&ClosedLabels { reason }).inc();
    }

    pub(crate) fn opened(&self) {
        self.open.inc();
    }

    pub(crate) fn released(&self) {
        self.open.dec();
    }
}
