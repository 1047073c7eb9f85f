//! Fresh attestations coalesced: requests that arrive while the platform is quoting share the
//! next quote.
//!
//! A fresh attestation costs the platform a quote, and on SGX hardware quoting is serialised
//! (Gramine asks one quoting enclave at a time), so a flood of `GET /v1/attestation` would
//! otherwise queue one quote per request. Here, when fewer than `quoters` quotes are in
//! progress, a request is quoted at once (no added latency when the server is quiet); while
//! they are busy, arriving nonces wait together, and the next free quoter answers up to
//! `max_batch` of them with one quote whose claims list them all (`nonces`). Each client checks
//! that its nonce is in the list the quote binds, which is as fresh as being alone in it: the
//! quote was made after the nonce arrived. At most `max_waiting` nonces wait; more are refused
//! at once, and a waiter gives up after `wait`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

/// One quote's outcome, shared by every nonce it answers.
type Outcome<T> = Option<Arc<T>>;

/// Why a nonce got no attestation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QuoteRefusal {
    /// Too many nonces are waiting already, or none was answered in time.
    Busy,
    /// The platform failed to quote.
    Failed,
}

/// Coalesces fresh attestations (see the module documentation).
#[derive(Debug)]
pub(crate) struct QuoteBatcher<T> {
    state: Mutex<State<T>>,
    quoters: usize,
    max_batch: usize,
    max_waiting: usize,
    wait: Duration,
}

#[derive(Debug)]
struct State<T> {
    waiting: Vec<Waiter<T>>,
    /// Quoters running now (each a task draining `waiting`).
    quoting: usize,
}

#[derive(Debug)]
struct Waiter<T> {
    nonce: Vec<u8>,
    reply: oneshot::Sender<Outcome<T>>,
}

impl<T: Send + Sync + 'static> QuoteBatcher<T> {
    /// `quoters` quotes at once, each answering up to `max_batch` nonces; at most `max_waiting`
    /// nonces waiting, each for at most `wait`.
    pub(crate) fn new(
        quoters: usize,
        max_batch: usize,
        max_waiting: usize,
        wait: Duration,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                waiting: Vec::new(),
                quoting: 0,
            }),
            quoters: quoters.max(1),
            max_batch: max_batch.max(1),
            max_waiting,
            wait,
        }
    }

    /// An attestation answering `nonce` (and perhaps others), made by `quote` on the blocking
    /// pool from the batch's nonces. `quote` returns `None` when the platform fails (it logs
    /// why).
    pub(crate) async fn attest<F>(
        self: &Arc<Self>,
        nonce: Vec<u8>,
        quote: F,
    ) -> Result<Arc<T>, QuoteRefusal>
    where
        F: Fn(Vec<Vec<u8>>) -> Option<T> + Clone + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let start_quoter = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            // Waiters that gave up still hold a place until a quoter drains them.
            state.waiting.retain(|w| !w.reply.is_closed());
            if state.waiting.len() >= self.max_waiting {
                return Err(QuoteRefusal::Busy);
            }
            state.waiting.push(Waiter { nonce, reply });
            let start = state.quoting < self.quoters;
            if start {
                state.quoting += 1;
            }
            start
        };
        if start_quoter {
            tokio::spawn(Arc::clone(self).quote_while_waiting(quote));
        }
        match tokio::time::timeout(self.wait, answer).await {
            Ok(Ok(Some(document))) => Ok(document),
            Ok(Ok(None)) => Err(QuoteRefusal::Failed),
            // Dropped unanswered (a quoter's task ended abnormally) or out of time.
            Ok(Err(_)) | Err(_) => Err(QuoteRefusal::Busy),
        }
    }

    /// One quoter: answers batches of waiting nonces until none wait.
    async fn quote_while_waiting<F>(self: Arc<Self>, quote: F)
    where
        F: Fn(Vec<Vec<u8>>) -> Option<T> + Clone + Send + 'static,
    {
        loop {
            let batch: Vec<Waiter<T>> = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.waiting.retain(|w| !w.reply.is_closed());
                if state.waiting.is_empty() {
                    state.quoting -= 1;
                    return;
                }
                let take = state.waiting.len().min(self.max_batch);
                state.waiting.drain(..take).collect()
            };
            let nonces = batch.iter().map(|w| w.nonce.clone()).collect();
            let quote = quote.clone();
            let outcome = tokio::task::spawn_blocking(move || quote(nonces))
                .await
                .ok()
                .flatten()
                .map(Arc::new);
            for waiter in batch {
                let _ = waiter.reply.send(outcome.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A "quote" that records its nonces, taking `delay`.
    fn slow_quote(
        calls: Arc<AtomicUsize>,
        delay: Duration,
    ) -> impl Fn(Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> + Clone + Send + 'static {
        move |nonces| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(delay);
            Some(nonces)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nonces_arriving_while_quoting_share_the_next_quote_and_each_is_answered() {
        let batcher = Arc::new(QuoteBatcher::new(1, 64, 256, Duration::from_secs(10)));
        let calls = Arc::new(AtomicUsize::new(0));
        let quote = slow_quote(Arc::clone(&calls), Duration::from_millis(100));
        let mut tasks = Vec::new();
        for i in 0..100u8 {
            let (batcher, quote) = (Arc::clone(&batcher), quote.clone());
            tasks.push(tokio::spawn(async move {
                let answered = batcher.attest(vec![i], quote).await.unwrap();
                assert!(answered.contains(&vec![i]), "nonce {i} not answered");
                assert!(answered.len() <= 64);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // One quote for the first arrival, then batches of at most 64: far fewer than 100.
        let quotes = calls.load(Ordering::SeqCst);
        assert!((2..=4).contains(&quotes), "{quotes} quotes for 100 nonces");
        // A quiet server quotes a lone request at once.
        let lone = batcher.attest(vec![200], quote).await.unwrap();
        assert_eq!(*lone, [vec![200]]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_at_once_and_a_failed_quote_fails_its_batch() {
        let batcher = Arc::new(QuoteBatcher::new(1, 2, 3, Duration::from_secs(10)));
        let calls = Arc::new(AtomicUsize::new(0));
        let quote = slow_quote(Arc::clone(&calls), Duration::from_millis(300));
        let mut held = Vec::new();
        // The first is being quoted; three more wait; the fifth finds the queue full.
        for i in 0..4u8 {
            let (b, q) = (Arc::clone(&batcher), quote.clone());
            held.push(tokio::spawn(async move { b.attest(vec![i], q).await }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            batcher.attest(vec![9], quote.clone()).await.unwrap_err(),
            QuoteRefusal::Busy
        );
        for task in held {
            task.await.unwrap().unwrap();
        }
        let failing = |_: Vec<Vec<u8>>| None::<Vec<Vec<u8>>>;
        assert_eq!(
            batcher.attest(vec![1], failing).await.unwrap_err(),
            QuoteRefusal::Failed
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_gives_up_after_its_wait() {
        let batcher = Arc::new(QuoteBatcher::new(1, 64, 256, Duration::from_millis(50)));
        let calls = Arc::new(AtomicUsize::new(0));
        let quote = slow_quote(Arc::clone(&calls), Duration::from_millis(400));
        assert_eq!(
            batcher.attest(vec![1], quote).await.unwrap_err(),
            QuoteRefusal::Busy
        );
    }
}
