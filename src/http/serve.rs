//! Serving an app over HTTP/1.1 with deadlines and a connection cap: the
//! default way to run a [`KeyboundLayer`](super::KeyboundLayer) service, and
//! how the issuer serves itself (spec/http.md, "Serving").
//!
//! `axum::serve` keeps a connection that never finishes its request head, or
//! sits idle between keep-alive requests, open for ever; enough of them use
//! up the process's file descriptors and the server stops accepting anyone.
//! [`serve`] bounds both:
//!
//! - **Header deadline.** A connection has [`ServeConfig::header_read_timeout`]
//!   to deliver a complete request head, counted from the moment the server
//!   waits for one: after the accept, and again after each response. hyper
//!   1.x restarts this timer whenever it waits for a head, so the same
//!   deadline is the idle timeout of keep-alive connections.
//! - **Connection cap.** At most [`ServeConfig::max_connections`] are open at
//!   once, and never more than the open-file limit allows (minus a reserve for
//!   the database, Redis and files). When the cap is reached, the connection
//!   idle for longest (no request in flight: a half-open or keep-alive one) is
//!   closed to make room, so a flood of idle connections cannot lock out a
//!   fresh client; a connection idle for less than 250 ms (just accepted or
//!   just answered) is spared, so that its task can read a head that has
//!   arrived. Only when every connection has a request in flight (or is
//!   that young) does accepting wait.
//! - **Accept errors** (out of file descriptors, say) pause the accept loop
//!   with a doubling back-off (10 ms to 1 s) and a log line instead of
//!   spinning.
//! - **Graceful shutdown**: when `shutdown` completes, idle connections are
//!   closed, requests in flight get [`ServeConfig::shutdown_grace`] to finish.
//!
//! Request bodies have their own deadline in the layer
//! ([`KeyboundLayer::body_timeout`](super::KeyboundLayer::body_timeout)).
//! Handlers see the peer address as `axum::extract::ConnectInfo<SocketAddr>`.
//!
//! ```no_run
//! # async fn run(app: axum::Router) -> std::io::Result<()> {
//! use keybound::http::{ServeConfig, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! serve(listener, app, ServeConfig::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// Default [`ServeConfig::header_read_timeout`]: 10 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ServeConfig::max_connections`]: 1024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default [`ServeConfig::shutdown_grace`]: 30 s.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers): 64 KiB.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// File descriptors kept free of connections for the listener, database,
/// Redis, logs and key files.
const FD_RESERVE: u64 = 64;
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A connection idle for less than this (just accepted, or just answered)
/// is not evicted to make room. A new connection counts as idle until its
/// task has read its request head, although the head may be in its socket
/// already: at the cap, a burst of connections accepted faster than their
/// tasks ran evicted one another, and the complete requests they carried,
/// unanswered (FL-16: 800 of 1,000 at a cap of 200). The grace lets their
/// tasks read them; a connection that sends nothing is still evictable
/// after it, so a fresh client waits at most this long behind a flood of
/// idle connections (the half-open flood test: slowest `/healthz` 36 ms
/// without the grace, about 270 ms with it).
const EVICTION_GRACE: Duration = Duration::from_millis(250);
/// At most one "connection limit reached" warning per this interval.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Limits of [`serve`]. Every field has a default (see the constants).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Time a connection has to send a complete request head, from the
    /// accept and again after each response (so also the keep-alive idle
    /// timeout). Default 10 s.
    pub header_read_timeout: Duration,
    /// Most connections open at once; lowered to the open-file limit minus a
    /// reserve of 64. Default 1024.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight. Default 30 s.
    pub shutdown_grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

impl ServeConfig {
    /// Sets [`ServeConfig::header_read_timeout`].
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets [`ServeConfig::max_connections`].
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets [`ServeConfig::shutdown_grace`].
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The cap in effect: `max_connections`, at most the soft open-file
    /// limit minus the reserve, and at least 1.
    pub fn effective_max_connections(&self) -> usize {
        let by_fds = open_file_limit().map_or(usize::MAX, |limit| {
            usize::try_from(limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX)
        });
        self.max_connections.min(by_fds).max(1)
    }
}

#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

/// One open connection, as the accept loop sees it.
struct Connection {
    /// Requests being answered (0: half-open or idle keep-alive).
    in_flight: AtomicUsize,
    /// When `in_flight` last dropped to 0 (or the accept), in ms since `epoch`.
    idle_since: AtomicU64,
    /// Told to close when evicted to make room.
    evict: Notify,
}

#[derive(Default)]
struct Connections {
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Signalled whenever a connection goes away.
    closed: Notify,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        // A panic elsewhere cannot leave the map inconsistent: keep using it.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.closed.notify_one();
    }

    /// Closes the connection idle for longest, if it has been idle for at
    /// least [`EVICTION_GRACE`]; `now` in ms since the accept loop's epoch.
    fn evict_idlest(&self, now: u64) -> Eviction {
        let grace = u64::try_from(EVICTION_GRACE.as_millis()).unwrap_or(u64::MAX);
        let mut open = self.lock();
        let idlest = open
            .iter()
            .filter(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
            .map(|(id, c)| (*id, c.idle_since.load(Ordering::Acquire)))
            .min_by_key(|(_, since)| *since);
        match idlest {
            None => Eviction::Busy,
            Some((id, since)) if now.saturating_sub(since) >= grace => {
                if let Some(connection) = open.remove(&id) {
                    connection.evict.notify_one();
                }
                Eviction::Evicted
            }
            Some((_, since)) => Eviction::NotYet(Duration::from_millis(grace - now.saturating_sub(since))),
        }
    }
}

/// What [`Connections::evict_idlest`] did.
enum Eviction {
    /// Closed one.
    Evicted,
    /// The idlest connection becomes evictable after this long.
    NotYet(Duration),
    /// Every connection has a request in flight.
    Busy,
}

/// Counts a request in flight on its connection until dropped.
struct InFlight {
    connection: Arc<Connection>,
    epoch: Instant,
}

impl InFlight {
    fn new(connection: Arc<Connection>, epoch: Instant) -> Self {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { connection, epoch }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.connection
            .idle_since
            .store(millis_since(self.epoch), Ordering::Release);
        self.connection.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Accept errors that concern one connection only (retry at once).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

/// Serves `app` on `listener` with the limits of `config` until `shutdown`
/// completes, then shuts down gracefully (see the module documentation).
pub async fn serve(listener: TcpListener, app: Router, config: ServeConfig, shutdown: impl Future<Output = ()> + Send) {
    let max_connections = config.effective_max_connections();
    if max_connections < config.max_connections {
        tracing::warn!(
            max_connections,
            configured = config.max_connections,
            "connection cap lowered to fit the open-file limit (ulimit -n)"
        );
    }
    let connections = Arc::new(Connections::default());
    let epoch = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut backoff = MIN_BACKOFF;
    let mut last_cap_warning: Option<Instant> = None;
    let mut next_id: u64 = 0;
    'accept: loop {
        while connections.len() >= max_connections {
            if last_cap_warning.is_none_or(|t| t.elapsed() >= CAP_WARNING_INTERVAL) {
                tracing::warn!(max_connections, "connection limit reached: closing idle connections");
                last_cap_warning = Some(Instant::now());
            }
            match connections.evict_idlest(millis_since(epoch)) {
                Eviction::Evicted => {}
                // Every idle connection was accepted (or answered) a moment
                // ago: wait until the oldest may be evicted, or one closes.
                Eviction::NotYet(wait) => tokio::select! {
                    () = connections.closed.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                    () = &mut shutdown => break 'accept,
                },
                // Every connection has a request in flight: wait for one to end.
                Eviction::Busy => tokio::select! {
                    () = connections.closed.notified() => {}
                    () = &mut shutdown => break 'accept,
                },
            }
        }
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = MIN_BACKOFF;
                    accepted
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed; pausing");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut shutdown => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        let id = next_id;
        next_id += 1;
        let connection = Arc::new(Connection {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(millis_since(epoch)),
            evict: Notify::new(),
        });
        connections.lock().insert(id, connection.clone());
        let service = {
            let connection = connection.clone();
            let app = app.clone();
            hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                let in_flight = InFlight::new(connection.clone(), epoch);
                request.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move {
                    let response = app.oneshot(request.map(axum::body::Body::new)).await;
                    drop(in_flight);
                    response
                }
            })
        };
        let header_read_timeout = config.header_read_timeout;
        let mut stop = stop_rx.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_header_size(MAX_REQUEST_HEAD);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection closed");
                    }
                }
                // Evicted: dropping the connection closes the socket.
                () = connection.evict.notified() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            connections.remove(id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    while connections.len() > 0 {
        if tokio::time::timeout_at(deadline, connections.closed.notified())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                "shutdown grace elapsed with requests in flight"
            );
            break;
        }
    }
}
