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
//! - **Load shedding.** At most [`ServeConfig::max_in_flight`] requests are
//!   answered at once (default 128 per core). A request beyond it is answered
//!   at once, before the app sees it (so before any verification, replay
//!   store or database work), with `503`, `Retry-After: 1` and the problem
//!   `http.overloaded`, and counted in [`overloaded_total`]. Under overload
//!   the work in progress stays bounded, so admitted requests keep a bounded
//!   latency instead of every request waiting behind an ever longer queue,
//!   and memory stays bounded. `/healthz`, `/readyz` and `/metrics` are never
//!   shed: a balancer that saw a shed probe would take a replica out
//!   because it is busy and push its load onto the others, and monitoring
//!   needs `/metrics` most when the server is overloaded; they are cheap
//!   and not counted. A request whose body is still arriving is admitted if
//!   the cap has room at its head but counts only once its body is in: it
//!   does no work while it waits, and slow bodies are bounded by the
//!   connection cap and the body timeout, not by this cap (else a few
//!   hundred trickled bodies, even to a login, would shed everyone else).
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
/// Requests in flight per core admitted by default ([`ServeConfig::max_in_flight`]).
pub const DEFAULT_IN_FLIGHT_PER_CORE: usize = 128;
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
    /// Most requests answered at once; the excess is shed with `503`
    /// `http.overloaded`. Default [`default_max_in_flight`]: 128 per core.
    pub max_in_flight: usize,
}

/// 128 requests in flight per core ([`std::thread::available_parallelism`]).
///
/// A request that only computes (a signature check, a mint) needs a core for
/// well under a millisecond, so 128 per core queue at most tens of
/// milliseconds of work: enough to keep every core busy through the waits
/// for Redis, the database and the client, far below a collapse. Raise it
/// for a gateway whose upstream is slow (each request waiting on it is in
/// flight the whole time).
pub fn default_max_in_flight() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    DEFAULT_IN_FLIGHT_PER_CORE.saturating_mul(cores)
}

static OVERLOADED: AtomicU64 = AtomicU64::new(0);

/// Requests shed with `http.overloaded` by every [`serve`] of this process
/// since it started (the issuer and the gateway export it as
/// `keybound_http_overloaded_total`).
pub fn overloaded_total() -> u64 {
    OVERLOADED.load(Ordering::Relaxed)
}

/// [`overloaded_total`] in the Prometheus text format (no final line feed).
pub(crate) fn overloaded_metric() -> String {
    format!(
        "# HELP keybound_http_overloaded_total Requests shed with http.overloaded (503) because the listener had max_in_flight requests in flight.\n# TYPE keybound_http_overloaded_total counter\nkeybound_http_overloaded_total {}",
        overloaded_total()
    )
}

/// Paths answered whatever the load (module documentation).
fn never_shed(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// One admitted request's place in the listener's in-flight total: counted
/// from its head for a request without a body, from the end of its body
/// otherwise, until dropped. A request still waiting for its body does no
/// work, so it is not counted: a few hundred clients trickling bodies
/// (with a valid token, or to an endpoint that needs none, such as a
/// login) must not fill the cap and get every other request shed. Those
/// are bounded by the connection cap and the body timeout instead.
struct Admitted {
    total: Arc<AtomicUsize>,
    counted: std::sync::atomic::AtomicBool,
}

impl Admitted {
    /// `None` when `max` requests are already in flight; `has_body`: the
    /// request's body is still to come, and counts once it has arrived.
    fn try_new(total: &Arc<AtomicUsize>, max: usize, has_body: bool) -> Option<Arc<Admitted>> {
        // Built only once admitted: its drop gives back what it counted.
        if has_body {
            if total.load(Ordering::Acquire) >= max {
                return None;
            }
        } else if total.fetch_add(1, Ordering::AcqRel) >= max {
            total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Arc::new(Admitted {
            total: total.clone(),
            counted: std::sync::atomic::AtomicBool::new(!has_body),
        }))
    }

    /// Its body has arrived: from now on it counts.
    fn count(&self) {
        if !self.counted.swap(true, Ordering::AcqRel) {
            self.total.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if *self.counted.get_mut() {
            self.total.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A request body that counts its request in flight ([`Admitted::count`])
/// once it has been read to its end.
struct CountedBody {
    inner: hyper::body::Incoming,
    admitted: Arc<Admitted>,
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.admitted.count();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a shed request: 503, `Retry-After: 1`, `http.overloaded`.
fn overloaded_response() -> axum::response::Response {
    OVERLOADED.fetch_add(1, Ordering::Relaxed);
    crate::http::problem::error_response(
        &crate::Error::new(
            crate::Code::HttpOverloaded,
            "too many requests in flight; retry shortly",
        ),
        None,
    )
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_in_flight: default_max_in_flight(),
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

    /// Sets [`ServeConfig::max_in_flight`] (at least 1).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
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
    let max_in_flight = config.max_in_flight.max(1);
    let in_flight_total = Arc::new(AtomicUsize::new(0));
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
            let in_flight_total = in_flight_total.clone();
            hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                let in_flight = InFlight::new(connection.clone(), epoch);
                // Decided here, before the app: a shed request costs no
                // verification, replay-store or database work.
                use http_body::Body as _;
                let has_body = !request.body().is_end_stream();
                let admitted = if never_shed(request.uri().path()) {
                    Ok(None)
                } else {
                    Admitted::try_new(&in_flight_total, max_in_flight, has_body)
                        .map(Some)
                        .ok_or(())
                };
                request.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move {
                    let Ok(admitted) = admitted else {
                        drop(in_flight);
                        return Ok(overloaded_response());
                    };
                    let request = match &admitted {
                        Some(admitted) if has_body => request.map(|inner| {
                            axum::body::Body::new(CountedBody {
                                inner,
                                admitted: admitted.clone(),
                            })
                        }),
                        _ => request.map(axum::body::Body::new),
                    };
                    let response = app.oneshot(request).await;
                    drop(admitted);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One `GET path` on a new connection: the response head and body.
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Past `max_in_flight`, a request is answered 503 `http.overloaded`
    /// with `Retry-After: 1` without reaching the app, and counted; health
    /// paths are still answered; once the request in flight ends, the next
    /// one is admitted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_past_max_in_flight_are_shed_with_http_overloaded() {
        let (entered_tx, mut entered_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let release = Arc::new(Notify::new());
        let reached = Arc::new(AtomicUsize::new(0));
        let app = {
            let (release, reached) = (release.clone(), reached.clone());
            Router::new()
                .route(
                    "/slow",
                    axum::routing::get(move || {
                        let (release, reached, entered) = (release.clone(), reached.clone(), entered_tx.clone());
                        async move {
                            reached.fetch_add(1, Ordering::SeqCst);
                            let _ = entered.send(());
                            release.notified().await;
                            "done"
                        }
                    }),
                )
                .route("/healthz", axum::routing::get(|| async { "ok" }))
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, ServeConfig::default().max_in_flight(1), async {
            let _ = stop_rx.await;
        }));
        let first = tokio::spawn(get(addr, "/slow"));
        entered_rx.recv().await.unwrap();
        let before = overloaded_total();
        let shed = get(addr, "/slow").await;
        assert!(shed.starts_with("HTTP/1.1 503"), "{shed}");
        assert!(shed.to_ascii_lowercase().contains("retry-after: 1\r\n"), "{shed}");
        assert!(shed.contains("\"code\":\"http.overloaded\""), "{shed}");
        assert_eq!(reached.load(Ordering::SeqCst), 1, "the shed request reached the app");
        assert!(overloaded_total() > before);
        assert!(overloaded_metric().contains("keybound_http_overloaded_total "));
        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        release.notify_one();
        assert!(first.await.unwrap().starts_with("HTTP/1.1 200"));
        let next = tokio::spawn(get(addr, "/slow"));
        entered_rx.recv().await.unwrap();
        release.notify_one();
        assert!(next.await.unwrap().starts_with("HTTP/1.1 200"));
        let _ = stop_tx.send(());
        server.await.unwrap();
    }

    /// A request whose body is still arriving does not count against
    /// `max_in_flight` (it does no work while it waits): with a cap of 1,
    /// two stalled uploads leave room for a GET; once a body has arrived,
    /// its request counts, and the next request is shed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_waiting_for_their_body_do_not_fill_the_cap() {
        let release = Arc::new(Notify::new());
        let app = {
            let release = release.clone();
            Router::new()
                .route(
                    "/upload",
                    axum::routing::post(move |body: String| {
                        let release = release.clone();
                        async move {
                            release.notified().await;
                            body
                        }
                    }),
                )
                .route("/", axum::routing::get(|| async { "ok" }))
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, ServeConfig::default().max_in_flight(1), async {
            let _ = stop_rx.await;
        }));
        let head = "POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\n";
        let mut stalled = Vec::new();
        for _ in 0..2 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            stalled.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let served = get(addr, "/").await;
        assert!(
            served.starts_with("HTTP/1.1 200"),
            "stalled bodies filled the cap: {served}"
        );
        // One body arrives; its handler holds the only place until released.
        stalled[0].write_all(b"abcd").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let shed = get(addr, "/").await;
        assert!(shed.contains("\"code\":\"http.overloaded\""), "{shed}");
        release.notify_one();
        let mut answer = Vec::new();
        let mut first = stalled.remove(0);
        let _ = tokio::time::timeout(Duration::from_secs(5), first.read_buf(&mut answer)).await;
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
        drop(stalled);
        let _ = stop_tx.send(());
        server.await.unwrap();
    }

    #[test]
    fn the_default_cap_is_128_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(ServeConfig::default().max_in_flight, 128 * cores);
        assert_eq!(ServeConfig::default().max_in_flight(0).max_in_flight, 1);
    }
}
