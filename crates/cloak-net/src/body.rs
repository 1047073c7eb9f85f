//! A request body held to a minimum average rate.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a request body fails with when it arrives more slowly than
/// [`ConnectionLimits::min_body_rate`](crate::ConnectionLimits::min_body_rate).
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the request body arrived more slowly than the server's minimum rate")]
pub struct BodyTooSlow;

/// `inner`, failing with [`BodyTooSlow`] once it has been waited on past its deadline: the time
/// of the first read plus the grace plus the bytes received so far at the minimum rate. The
/// clock starts at the first read, so time a handler spends before it reads (admission, say)
/// never counts against the client.
pub(crate) struct MinRate<B, F> {
    inner: B,
    rate: u64,
    grace: Duration,
    started: Option<Instant>,
    received: u64,
    deadline: Option<Pin<Box<Sleep>>>,
    on_slow: Option<F>,
}

impl<B, F: FnOnce()> MinRate<B, F> {
    /// Holds `inner` to `rate` bytes per second after `grace`; `on_slow` runs once, when it
    /// fails.
    pub(crate) fn new(inner: B, rate: u64, grace: Duration, on_slow: F) -> Self {
        Self {
            inner,
            rate: rate.max(1),
            grace,
            started: None,
            received: 0,
            deadline: None,
            on_slow: Some(on_slow),
        }
    }

    /// When the body must have made more progress.
    fn deadline(&self, started: Instant) -> Instant {
        let allowed = Duration::from_secs_f64(self.received as f64 / self.rate as f64);
        started + self.grace + allowed
    }
}

impl<B, F> Body for MinRate<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnOnce() + Unpin,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                    let deadline = this.deadline(started);
                    if let Some(sleep) = this.deadline.as_mut() {
                        sleep.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline(started);
                let sleep = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    if let Some(on_slow) = this.on_slow.take() {
                        on_slow();
                    }
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use http_body_util::BodyExt as _;
    use tokio::sync::mpsc;

    use super::*;

    /// A body whose chunks a test sends when it likes.
    struct Chunks(mpsc::Receiver<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
        }
    }

    type Held = MinRate<Chunks, Box<dyn FnOnce() + Send + Unpin>>;

    fn held(rate: u64, grace_ms: u64) -> (mpsc::Sender<Bytes>, Held, Arc<AtomicBool>) {
        let (send, receive) = mpsc::channel(64);
        let slow = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&slow);
        let body = MinRate::new(
            Chunks(receive),
            rate,
            Duration::from_millis(grace_ms),
            Box::new(move || flag.store(true, Ordering::SeqCst))
                as Box<dyn FnOnce() + Send + Unpin>,
        );
        (send, body, slow)
    }

    #[tokio::test]
    async fn a_body_that_keeps_the_rate_is_read_whole() {
        // 1000 B/s after 200 ms; 100 bytes every 50 ms is 2000 B/s.
        let (send, body, slow) = held(1000, 200);
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                send.send(Bytes::from(vec![7u8; 100])).await.unwrap();
            }
        });
        let whole = body.collect().await.map_err(|_| ()).unwrap().to_bytes();
        assert_eq!(whole.len(), 1000);
        assert!(!slow.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_body_that_drips_fails_as_too_slow_and_says_so_once() {
        // 10 bytes every 50 ms is 200 B/s, under 1000 B/s once the 100 ms grace is over.
        let (send, body, slow) = held(1000, 100);
        let sender = tokio::spawn(async move {
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if send.send(Bytes::from(vec![7u8; 10])).await.is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let error = body.collect().await.map(|_| ()).unwrap_err();
        assert!(error.is::<BodyTooSlow>(), "{error}");
        assert!(slow.load(Ordering::SeqCst));
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "failed late"
        );
        sender.abort();
    }

    #[tokio::test]
    async fn a_body_that_sends_nothing_fails_after_the_grace() {
        let (_send, body, slow) = held(1000, 100);
        let started = Instant::now();
        let error = body.collect().await.map(|_| ()).unwrap_err();
        assert!(error.is::<BodyTooSlow>());
        assert!(slow.load(Ordering::SeqCst));
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
