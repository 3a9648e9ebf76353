//! The proxy's way to the upstream (spec/gateway.md §5).
//!
//! A plain `http://` upstream (the usual sidecar on loopback or in the same
//! pod) is reached over kept-alive HTTP/1.1 connections, hyper's client
//! connection driven by the request's own task: one request at a time on
//! each, a connection back in the idle list once its answer's body has been
//! read to the end.
//! A general-purpose client (URL parsing, header merging, a retry layer, a
//! pool keyed by host) cost about as much per request as the hop itself
//! (BENCHMARKS.md). An `https://` upstream goes through reqwest, which
//! brings TLS.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Response, Uri, header};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Why the upstream gave no answer head.
#[derive(Debug)]
pub struct UpstreamError {
    /// A timeout (504) rather than a refused or broken connection (502).
    pub timeout: bool,
    /// What went wrong, for the log.
    pub detail: String,
}

impl UpstreamError {
    fn broken(detail: impl std::fmt::Display) -> UpstreamError {
        UpstreamError {
            timeout: false,
            detail: detail.to_string(),
        }
    }
}

/// How long a connection may wait idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most idle connections kept; more than the listener's usual concurrency.
const MAX_IDLE: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The upstream of a proxy gateway.
pub enum Upstream {
    /// `http://`: kept-alive HTTP/1.1 connections of its own.
    Plain(Arc<Plain>),
    /// `https://`: through reqwest.
    Tls {
        /// The client, with the gateway's timeouts.
        client: reqwest::Client,
        /// The upstream's base URL.
        base: reqwest::Url,
    },
}

impl Upstream {
    /// For `base` (`http(s)://HOST[:PORT]`); `pause` bounds every wait for
    /// the next piece of an answer's body.
    pub fn new(base: &reqwest::Url, pause: Duration) -> Result<Upstream, String> {
        let host = base.host_str().ok_or("the upstream has no host")?;
        let port = base.port_or_known_default().ok_or("the upstream has no port")?;
        if base.scheme() == "https" {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(pause)
                .pool_idle_timeout(IDLE_TIMEOUT)
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?;
            return Ok(Upstream::Tls {
                client,
                base: base.clone(),
            });
        }
        // An IPv6 literal keeps its brackets in both.
        let authority = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Upstream::Plain(Arc::new(Plain {
            connect_to: format!("{host}:{port}"),
            host: HeaderValue::from_str(&authority).map_err(|_| "the upstream's host is not a header value")?,
            pause,
            idle: Mutex::new(VecDeque::new()),
        })))
    }

    /// Sends the request of `parts` (headers already as they must go
    /// upstream, without `Host` and `Content-Length`) with `body`; the answer
    /// head, its body streaming.
    pub async fn send(&self, mut parts: Parts, body: Bytes) -> Result<Response<Body>, UpstreamError> {
        match self {
            Upstream::Plain(plain) => {
                // Origin form: the path and query only, never an absolute
                // form that could name another host.
                parts.uri = match parts.uri.path_and_query() {
                    Some(pq) => Uri::from(pq.clone()),
                    None => Uri::from_static("/"),
                };
                parts.headers.insert(header::HOST, plain.host.clone());
                // HTTP/1.1 upstream whatever the client spoke.
                parts.version = http::Version::HTTP_11;
                plain.send(http::Request::from_parts(parts, Full::new(body))).await
            }
            Upstream::Tls { client, base } => {
                // Path and query set on the base URL, never joined.
                let mut url = base.clone();
                url.set_path(parts.uri.path());
                url.set_query(parts.uri.query());
                let answer = client
                    .request(parts.method, url)
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| UpstreamError {
                        timeout: e.is_timeout(),
                        detail: e.to_string(),
                    })?;
                let mut response = Response::builder().status(answer.status());
                if let Some(headers) = response.headers_mut() {
                    *headers = answer.headers().clone();
                }
                response
                    .body(Body::from_stream(answer.bytes_stream()))
                    .map_err(UpstreamError::broken)
            }
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;
type Connection = hyper::client::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>;

/// One kept-alive connection: the handle requests go in by, and the
/// connection itself, driven by whichever request task uses it (no task
/// of its own: a hop then costs no wake-up of another task, twice).
struct Link {
    sender: Sender,
    /// None once the connection future has completed: it is dropped then,
    /// which hands a request still queued on it back to its sender (unsent,
    /// so it can go on a new connection) and closes the socket.
    connection: Option<Pin<Box<Connection>>>,
}

impl Link {
    /// Drives the connection's reads and writes; true once it is closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(connection) = &mut self.connection
            && connection.as_mut().poll(cx).is_ready()
        {
            self.connection = None;
        }
        self.connection.is_none()
    }
}

/// Kept-alive plain HTTP/1.1 connections to one upstream.
pub struct Plain {
    connect_to: String,
    host: HeaderValue,
    pause: Duration,
    /// Idle connections, the most recently used at the back.
    idle: Mutex<VecDeque<(Instant, Link)>>,
}

impl Plain {
    async fn send(self: &Arc<Self>, request: http::Request<Full<Bytes>>) -> Result<Response<Body>, UpstreamError> {
        let mut request = request;
        // A kept-alive connection the upstream closed just now fails before
        // the request is written, and gives it back: then once more, on a
        // new connection.
        let mut fresh = false;
        loop {
            let idle = if fresh { None } else { self.checkout() };
            let mut link = match idle {
                Some(link) => link,
                None => {
                    fresh = true;
                    self.connect().await?
                }
            };
            let mut answer = std::pin::pin!(link.sender.try_send_request(request));
            let outcome = std::future::poll_fn(|cx| {
                if let Poll::Ready(outcome) = answer.as_mut().poll(cx) {
                    return Poll::Ready(outcome);
                }
                // Writes the request and reads the answer's head; once closed
                // (the connection dropped), the answer resolves with an error
                // that gives an unsent request back. Polled again at once: the
                // head usually arrived in this very drive.
                link.drive(cx);
                answer.as_mut().poll(cx)
            })
            .await;
            match outcome {
                Ok(answer) => {
                    let (parts, incoming) = answer.into_parts();
                    let body = PooledBody {
                        inner: incoming,
                        link: Some(link),
                        plain: self.clone(),
                        waiting: None,
                    };
                    return Ok(Response::from_parts(parts, Body::new(body)));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => {
                        request = unsent;
                        fresh = true;
                    }
                    _ => return Err(UpstreamError::broken(e.into_error())),
                },
            }
        }
    }

    /// An idle connection ready for a request now, if there is one. Its last
    /// answer was read to the end, so one drive makes it ready or shows it
    /// closed; one that is neither (the upstream answered before reading all
    /// of a request body, say) is dropped, never waited for.
    fn checkout(&self) -> Option<Link> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            let (since, mut link) = self.lock().pop_back()?;
            if since.elapsed() > IDLE_TIMEOUT || link.sender.is_closed() || link.drive(&mut cx) {
                continue;
            }
            if let Poll::Ready(Ok(())) = link.sender.poll_ready(&mut cx) {
                return Some(link);
            }
        }
    }

    async fn connect(&self) -> Result<Link, UpstreamError> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.connect_to)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(UpstreamError::broken(format!("connect to {}: {e}", self.connect_to))),
            Err(_) => {
                return Err(UpstreamError {
                    timeout: true,
                    detail: format!("connect to {}: no answer within {:?}", self.connect_to, CONNECT_TIMEOUT),
                });
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::broken)?;
        Ok(Link {
            sender,
            connection: Some(Box::pin(connection)),
        })
    }

    /// Back to the idle list, dropping those idle too long.
    fn checkin(&self, link: Link) {
        if link.connection.is_none() {
            return;
        }
        let mut idle = self.lock();
        while idle.front().is_some_and(|(since, _)| since.elapsed() > IDLE_TIMEOUT) || idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back((Instant::now(), link));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Link)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An answer's body from a kept-alive connection, which it drives: the
/// connection goes back to the idle list once the body is read to its end,
/// and is closed (dropped) when the body is abandoned or fails half way.
/// Each wait for the next piece is bounded by the upstream's `pause`; the timer is armed
/// only when a piece is not there yet, so a body that has already arrived
/// costs none.
struct PooledBody {
    inner: Incoming,
    link: Option<Link>,
    plain: Arc<Plain>,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some(link) = self.link.take() {
            self.plain.checkin(link);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Some(link) = &mut this.link {
            link.drive(cx);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                match &frame {
                    None => this.give_back(),
                    Some(Ok(_)) if this.inner.is_end_stream() => this.give_back(),
                    Some(Ok(_)) => {}
                    Some(Err(_)) => this.link = None,
                }
                Poll::Ready(frame.map(|f| f.map_err(axum::Error::new)))
            }
            Poll::Pending => {
                let pause = this.plain.pause;
                let waiting = this.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
                ready!(waiting.as_mut().poll(cx));
                this.link = None;
                tracing::warn!(
                    code = crate::error::Code::GatewayUpstreamTimeout.as_str(),
                    "the upstream paused its body too long"
                );
                Poll::Ready(Some(Err(axum::Error::new(format!(
                    "the upstream sent nothing for {pause:?}"
                )))))
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

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to the end without a last poll (a server stops at
        // `is_end_stream`): still reusable. Else the connection closes.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}
