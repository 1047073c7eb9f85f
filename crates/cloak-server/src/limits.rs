//! Limits on what a client can ask of the server, and admission control for inference: a
//! bounded number of requests run at once, a bounded number wait, and the rest are turned away
//! at once (429) instead of piling up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
            connections: cloak_net::ConnectionLimits::default(),
        }
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
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            workers: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            max_queue: limits.max_queue,
            queue_timeout: limits.queue_timeout,
        }
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
        Admission::new(&Limits {
            max_concurrent: workers,
            max_queue: queue,
            queue_timeout: Duration::from_millis(timeout_ms),
            ..Limits::default()
        })
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

    #[tokio::test]
    async fn a_waiter_gets_the_worker_when_it_frees() {
        let admission = Arc::new(admission(1, 4, 5_000));
        let running = admission.admit().await.unwrap();
        let waiter = waiter(&admission).await;
        drop(running);
        assert!(waiter.await.unwrap().is_ok());
    }
}
