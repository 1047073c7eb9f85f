//! The connection layer of Cloak's network services: the inference server (inside the enclave)
//! and the key broker accept connections through [`serve`], which holds every connection to a
//! deadline so that a client that connects and then stalls cannot hold a slot for long.
//!
//! What an attacker who can open connections meets:
//!
//! | resource | bound | default |
//! |---|---|---|
//! | open connections | [`ConnectionLimits::max_connections`]; further ones are closed at once, counted | 1024 |
//! | connections from one client address (IPv6: one /64) | [`ConnectionLimits::max_per_address`] | 128 |
//! | TLS handshake | [`ConnectionLimits::handshake_timeout`] | 10 s |
//! | time with no request in progress (before the first request's headers are complete, between requests, HTTP/1 and HTTP/2 alike) | [`ConnectionLimits::idle_timeout`] | 30 s |
//! | request body upload | [`ConnectionLimits::min_body_rate`] bytes/s on average after [`ConnectionLimits::body_grace`]; a slower body fails and its connection closes | 32 KiB/s after 10 s |
//! | HTTP/2 streams | [`ConnectionLimits::max_h2_streams`] at once per connection; a peer that stops answering pings is dropped | 32 |
//!
//! A connection refused because the service or the address is full is accepted and closed at
//! once — never left in the kernel's backlog, where it would delay the legitimate connections
//! queued behind it — and counted in [`ConnectionStats`], which the server exports in
//! `/metrics`. Requests already in progress are never cut by a new connection's refusal.
//!
//! Idleness is measured from the moment a connection has no request in progress (it was
//! accepted, or its last handler returned), whatever bytes arrive meanwhile: a client that
//! drips a header one byte a second, or answers HTTP/2 pings forever, is as idle as one that
//! sends nothing.

mod body;
mod limits;
mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

pub use body::BodyTooSlow;
pub use limits::{ConnectionLimits, address_key};
pub use stats::{CloseReason, ConnectionStats, RefuseReason};

use limits::Addresses;

/// How long after the idle deadline hyper's own header deadline falls.
const HEADER_BACKSTOP: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` — over TLS when `tls` is set — within `limits`, counting into
/// `stats`, until `shutdown` completes; then stops accepting, lets requests in progress finish
/// (for up to [`ConnectionLimits::drain_timeout`]) and returns. Handlers see the peer address
/// as [`ConnectInfo<SocketAddr>`](ConnectInfo) in the request extensions.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with(listener, tls, router, limits, stats, None, shutdown).await;
}

/// Called once per connection when it is established (its TLS handshake done): the
/// extensions every request on that connection then carries — what the connection was
/// accepted under, say.
pub type OnEstablished = Arc<dyn Fn() -> axum::http::Extensions + Send + Sync>;

/// [`serve`], with `on_established`'s extensions added to every request of each connection.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    on_established: Option<OnEstablished>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let limits = Arc::new(limits);
    let acceptor = tls.map(TlsAcceptor::from);
    let addresses = Arc::new(Addresses::new(limits.max_per_address));
    let open = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stats.accepted();
        // Refused connections are closed here, at once: the client learns immediately, and
        // the backlog keeps moving for the ones behind it.
        let Some(slot) = Slot::take(&open, limits.max_connections) else {
            stats.refused(RefuseReason::Full);
            tracing::debug!(%peer, "connection refused: the service is at its connection cap");
            continue;
        };
        let Some(address_slot) = addresses.take(peer.ip()) else {
            stats.refused(RefuseReason::PerAddress);
            tracing::debug!(%peer, "connection refused: its address is at its connection cap");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let limits = Arc::clone(&limits);
        let stats = Arc::clone(&stats);
        let stopped = stopped.clone();
        let on_established = on_established.clone();
        tokio::spawn(async move {
            let _slots = (slot, address_slot);
            stats.opened();
            let connection = Connection {
                peer,
                router,
                limits,
                stats: Arc::clone(&stats),
                on_established,
            };
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(
                        connection.limits.handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => connection.run(tls, stopped).await,
                        Ok(Err(e)) => {
                            stats.closed(CloseReason::HandshakeFailed);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            stats.closed(CloseReason::HandshakeTimeout);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                }
                None => connection.run(stream, stopped).await,
            }
            stats.released();
        });
    }
    tracing::debug!("no new connections: draining");
    let _ = stop.send(true);
    let drained = async {
        while open.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(limits.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// One of the service's connection slots, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < max.max(1)).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(Arc::clone(open)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An accepted connection (TLS done, if any) and what serving it needs.
struct Connection {
    peer: SocketAddr,
    router: Router,
    limits: Arc<ConnectionLimits>,
    stats: Arc<ConnectionStats>,
    on_established: Option<OnEstablished>,
}

impl Connection {
    /// Serves HTTP/1.1 or HTTP/2 until the connection ends, idles past its deadline, sends a
    /// body too slowly, or `stopped` turns true (then its requests in progress finish first).
    async fn run<I>(self, io: I, mut stopped: watch::Receiver<bool>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            peer,
            router,
            limits,
            stats,
            on_established,
        } = self;
        let established = on_established.map(|hook| hook()).unwrap_or_default();
        let activity = Arc::new(Activity::new());
        let service = {
            let activity = Arc::clone(&activity);
            let limits = Arc::clone(&limits);
            let stats = Arc::clone(&stats);
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let busy = Busy::start(&activity);
                let mut router = router.clone();
                let activity = Arc::clone(&activity);
                let stats = Arc::clone(&stats);
                let mut request = request.map(|incoming| {
                    axum::body::Body::new(body::MinRate::new(
                        incoming,
                        limits.min_body_rate,
                        limits.body_grace,
                        move || {
                            // Counted here, once: the connection may end by itself (the
                            // handler answers the failed body) before the watch closes it.
                            stats.closed(CloseReason::SlowBody);
                            activity.doom();
                        },
                    ))
                });
                request.extensions_mut().extend(established.clone());
                request.extensions_mut().insert(ConnectInfo(peer));
                // A Router is always ready (its `poll_ready` returns at once).
                let response = router.call(request);
                async move {
                    let response = response.await;
                    drop(busy);
                    response
                }
            })
        };
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // The idle watch below covers slow headers too, and closes first; this is hyper's
            // own (which would otherwise default to 30 s), kept as a backstop just behind it.
            .header_read_timeout(limits.idle_timeout + HEADER_BACKSTOP);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_h2_streams)
            .keep_alive_interval(Some(limits.h2_keep_alive))
            .keep_alive_timeout(limits.h2_keep_alive);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let ended = tokio::select! {
            result = connection.as_mut() => Ended::Finished(result),
            reason = activity.expired(limits.idle_timeout) => Ended::Closed(reason),
            () = async {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            } => {
                connection.as_mut().graceful_shutdown();
                Ended::Finished(connection.await)
            }
        };
        match ended {
            Ended::Finished(Ok(())) => {}
            Ended::Finished(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            Ended::Closed(reason) => {
                // Dropping the connection closes it; nothing is in progress (idle) or what is in
                // progress has already failed (a body too slow, counted when it failed).
                if reason != CloseReason::SlowBody {
                    stats.closed(reason);
                }
                tracing::debug!(%peer, reason = reason.label(), "connection closed");
            }
        }
    }
}

enum Ended {
    Finished(Result<(), Box<dyn std::error::Error + Send + Sync>>),
    Closed(CloseReason),
}

/// What a connection is doing: how many requests are in progress, since when it has had none,
/// and whether one of its bodies failed the rate check.
struct Activity {
    in_progress: AtomicUsize,
    idle_since: Mutex<Instant>,
    doomed: AtomicBool,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_progress: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            doomed: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn idle_since(&self) -> Instant {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the connection for closing (a request body came too slowly).
    fn doom(&self) {
        self.doomed.store(true, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// Completes when the connection should be closed: idle for `timeout`, or doomed.
    async fn expired(&self, timeout: Duration) -> CloseReason {
        loop {
            // Registered before the state is read, so no change between the two is missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.doomed.load(Ordering::SeqCst) {
                return CloseReason::SlowBody;
            }
            if self.in_progress.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let deadline = self.idle_since() + timeout;
            if Instant::now() >= deadline {
                return CloseReason::Idle;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// One request in progress on a connection, from its headers until its handler returns.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_progress.fetch_add(1, Ordering::SeqCst);
        activity.changed.notify_one();
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut idle_since = self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.0.in_progress.fetch_sub(1, Ordering::SeqCst) == 1 {
            *idle_since = Instant::now();
        }
        drop(idle_since);
        self.0.changed.notify_one();
    }
}
