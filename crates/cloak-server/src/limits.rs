//! Limits on what a client can ask of the server, and admission control: a bounded number of
//! inference requests run at once, a bounded number wait, and the rest are turned away at once
//! (429) instead of piling up; request bodies reserve their bytes from one budget before they
//! are read; fresh attestations are rate-limited per client address and bounded in number at
//! once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Resource limits. Every one has a default sized for a small server and a flag in `cloak serve`.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body, in bytes (JSON header and binary tensors together).
    pub max_request_bytes: usize,
    /// Most tensor elements in one request, over all inputs.
    pub max_elements: usize,
    /// Most inputs in one request.
    pub max_inputs: usize,
    /// Inference requests running at once.
    pub max_concurrent: usize,
    /// Inference requests waiting for a worker; more are refused with 429.
    pub max_queue: usize,
    /// Longest a request waits for a worker before it is refused with 503.
    pub queue_timeout: Duration,
    /// Most models loaded.
    pub max_models: usize,
    /// Most plaintext model bytes loaded, over all models.
    pub max_model_bytes: u64,
    /// Request-body bytes held at once, over all requests (reserved before a body is read;
    /// when the budget is spent, new requests get 503 instead of the server growing).
    pub max_inflight_bytes: u64,
    /// Fresh attestations per second per client address (sustained); more get 429.
    pub attestation_rate: u32,
    /// Fresh attestations a client address may make in a burst.
    pub attestation_burst: u32,
    /// Quotes made at once for fresh attestations (quoting is serialised on SGX hardware);
    /// requests that arrive meanwhile share the next quote, or get 503 after a wait.
    pub max_concurrent_attestations: usize,
    /// Encapsulated-request ids remembered for replay protection (two minutes' worth); when
    /// full, new encapsulated requests get 503.
    pub max_replay_ids: usize,
    /// What each connection is held to: caps (in all and per client address), handshake and
    /// idle deadlines, the minimum request-body rate, HTTP/2 streams.
    pub connections: cloak_net::ConnectionLimits,
}

impl Default for Limits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            max_request_bytes: 64 << 20,
            max_elements: 16 << 20,
            max_inputs: 64,
            max_concurrent: cores,
            max_queue: 64,
            queue_timeout: Duration::from_secs(30),
            max_models: 64,
            max_model_bytes: 4 << 30,
            max_replay_ids: 128 * 1024,
            max_inflight_bytes: 512 << 20,
            attestation_rate: 20,
            attestation_burst: 40,
            max_concurrent_attestations: 2,
            connections: cloak_net::ConnectionLimits::default(),
        }
    }
}

/// The request-body budget: bytes are reserved, in KiB, before a body is read, and given back
/// when the request is done.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    kib: Arc<Semaphore>,
}

/// Bytes a request holds from the [`BodyBudget`], given back on drop.
#[derive(Debug)]
pub(crate) struct BodyReservation {
    _held: OwnedSemaphorePermit,
}

impl BodyBudget {
    pub(crate) fn new(limits: &Limits) -> Self {
        let kib = usize::try_from(limits.max_inflight_bytes / 1024)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            kib: Arc::new(Semaphore::new(kib)),
        }
    }

    /// Reserves `bytes` now, or `None` when the budget cannot hold them at the moment.
    pub(crate) fn reserve(&self, bytes: u64) -> Option<BodyReservation> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).ok()?;
        Arc::clone(&self.kib)
            .try_acquire_many_owned(kib)
            .ok()
            .map(|held| BodyReservation { _held: held })
    }
}

/// Token buckets per client address (an IPv6 client: its /64): `rate` per second sustained,
/// `burst` at once. Bounded: past [`MAX_TRACKED_ADDRESSES`], addresses not yet tracked share one
/// bucket, so many addresses cannot grow the table or escape the limit.
#[derive(Debug)]
pub(crate) struct AddressRate {
    rate: f64,
    burst: f64,
    state: std::sync::Mutex<RateState>,
}

#[derive(Debug, Default)]
struct RateState {
    buckets: HashMap<IpAddr, Bucket>,
    shared: Option<Bucket>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Addresses the attestation rate limit tracks one by one.
const MAX_TRACKED_ADDRESSES: usize = 16 * 1024;

impl AddressRate {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            state: std::sync::Mutex::new(RateState::default()),
        }
    }

    /// Whether `ip` may make one more request now (and counts it if so).
    pub(crate) fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let key = cloak_net::address_key(ip);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.buckets.contains_key(&key) && state.buckets.len() >= MAX_TRACKED_ADDRESSES {
            // Forget the addresses whose buckets have refilled: they are owed nothing.
            let (rate, burst) = (self.rate, self.burst);
            state
                .buckets
                .retain(|_, b| refill(*b, now, rate, burst).tokens < burst);
        }
        let (rate, burst) = (self.rate, self.burst);
        let full = Bucket {
            tokens: burst,
            at: now,
        };
        let bucket =
            if state.buckets.len() < MAX_TRACKED_ADDRESSES || state.buckets.contains_key(&key) {
                state.buckets.entry(key).or_insert(full)
            } else {
                state.shared.get_or_insert(full)
            };
        *bucket = refill(*bucket, now, rate, burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn refill(bucket: Bucket, now: Instant, rate: f64, burst: f64) -> Bucket {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    Bucket {
        tokens: (bucket.tokens + elapsed * rate).min(burst),
        at: now,
    }
}

/// Admission control for inference requests.
#[derive(Debug)]
pub(crate) struct Admission {
    workers: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queue: usize,
    queue_timeout: Duration,
}

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The queue is full.
    QueueFull,
    /// No worker became free in time.
    TimedOut,
}

impl Admission {
    /// `workers` at once, at most `max_queue` waiting, each for at most `queue_timeout`.
    pub(crate) fn new(workers: usize, max_queue: usize, queue_timeout: Duration) -> Self {
        Self {
            workers: Arc::new(Semaphore::new(workers.max(1))),
            waiting: AtomicUsize::new(0),
            max_queue,
            queue_timeout,
        }
    }

    /// Inference admission under `limits`.
    pub(crate) fn inference(limits: &Limits) -> Self {
        Self::new(
            limits.max_concurrent,
            limits.max_queue,
            limits.queue_timeout,
        )
    }

    /// A worker if one is free now, without queueing.
    pub(crate) fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.workers).try_acquire_owned().ok()
    }

    /// Waits for a worker, or refuses at once when too many requests are already waiting.
    pub(crate) async fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        if let Some(permit) = self.try_admit() {
            return Ok(permit);
        }
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&self.waiting);
        if queued >= self.max_queue {
            return Err(Refusal::QueueFull);
        }
        match tokio::time::timeout(
            self.queue_timeout,
            Arc::clone(&self.workers).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it as a timeout if it were.
            Ok(Err(_)) | Err(_) => Err(Refusal::TimedOut),
        }
    }

    /// Requests waiting for a worker.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Leaves the queue when dropped (admitted, refused, timed out or cancelled).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(workers: usize, queue: usize, timeout_ms: u64) -> Admission {
        Admission::new(workers, queue, Duration::from_millis(timeout_ms))
    }

    /// A request that waits for a worker, once it is in the queue.
    async fn waiter(admission: &Arc<Admission>) -> tokio::task::JoinHandle<Result<(), Refusal>> {
        let queued = {
            let admission = Arc::clone(admission);
            tokio::spawn(async move { admission.admit().await.map(drop) })
        };
        while admission.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        queued
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_slow_one_times_out() {
        let admission = Arc::new(admission(1, 1, 50));
        let running = admission.admit().await.unwrap();
        // One may wait...
        let waiter = waiter(&admission).await;
        // ...a second is refused without waiting.
        assert_eq!(admission.admit().await.unwrap_err(), Refusal::QueueFull);
        // The waiter times out while the worker stays busy.
        assert_eq!(waiter.await.unwrap().unwrap_err(), Refusal::TimedOut);
        assert_eq!(admission.waiting(), 0);
        drop(running);
        assert!(admission.admit().await.is_ok());
    }

    #[test]
    fn the_body_budget_holds_what_it_was_given_and_no_more() {
        let budget = BodyBudget::new(&Limits {
            max_inflight_bytes: 10 * 1024,
            ..Limits::default()
        });
        let big = budget.reserve(8 * 1024).unwrap();
        assert!(budget.reserve(3 * 1024).is_none(), "over the budget");
        let small = budget.reserve(1).unwrap();
        assert!(budget.reserve(1024).is_some(), "one KiB left");
        drop((big, small));
        assert!(budget.reserve(10 * 1024).is_some(), "given back");
        assert!(
            budget.reserve(11 * 1024).is_none(),
            "never more than all of it"
        );
    }

    #[test]
    fn each_address_gets_its_burst_then_its_rate() {
        let rate = AddressRate::new(1, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..5).filter(|_| rate.allow(a)).count(), 3);
        assert!(rate.allow(b), "another address has its own bucket");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(rate.allow(a), "a token came back after a second");
        assert!(!rate.allow(a));
    }

    #[tokio::test]
    async fn a_waiter_gets_the_worker_when_it_frees() {
        let admission = Arc::new(admission(1, 4, 5_000));
        let running = admission.admit().await.unwrap();
        let waiter = waiter(&admission).await;
        drop(running);
        assert!(waiter.await.unwrap().is_ok());
    }
}
