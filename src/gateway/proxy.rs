//! The gateway's routers: proxy and forward-auth modes, and the operations
//! listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use ipnet::IpNet;
use zeroize::Zeroizing;

use super::identity::{self, Identity};
use super::upstream::Upstream;
use crate::error::{Code, Error, Result, err};
use crate::http::{KeyboundLayer, ProofMode, VerificationMetrics, error_response};
use crate::keyset::HttpKeys;
use crate::policy::Policy;
use crate::verify::{AsyncReplayStore, Clock, ProvenOrBearer, SystemClock, Verifier};

/// How the gateway sits in front of the service.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Reverse proxy to `upstream` (`http://host:port`, no path).
    Proxy {
        /// The service's own base URL.
        upstream: reqwest::Url,
    },
    /// Forward-auth endpoint.
    Auth(AuthOptions),
}

/// Where a forward-auth request's original method and URI come from.
#[derive(Clone, Debug)]
pub struct AuthOptions {
    /// Headers that may carry the original method, first present wins
    /// (default `X-Forwarded-Method`, `X-Original-Method`).
    pub method_headers: Vec<HeaderName>,
    /// Headers that may carry the original path and query (default
    /// `X-Forwarded-Uri`, `X-Original-URI`).
    pub uri_headers: Vec<HeaderName>,
    /// Peers allowed to call the endpoint (default loopback only).
    pub trusted_forwarders: Vec<IpNet>,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            method_headers: vec![
                HeaderName::from_static("x-forwarded-method"),
                HeaderName::from_static("x-original-method"),
            ],
            uri_headers: vec![
                HeaderName::from_static("x-forwarded-uri"),
                HeaderName::from_static("x-original-uri"),
            ],
            trusted_forwarders: vec![
                "127.0.0.1/32".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ],
        }
    }
}

/// Everything a gateway needs.
pub struct GatewayConfig {
    /// Proxy or forward-auth.
    pub mode: Mode,
    /// The URL clients call the service at (what proofs name as `htu`
    /// base), e.g. `https://nova.example`.
    pub external_url: String,
    /// The verifier for the service's audience.
    pub verifier: Arc<Verifier<dyn AsyncReplayStore>>,
    /// The key sources, for `/readyz` and the key-set age metric.
    pub key_sources: Vec<(String, HttpKeys)>,
    /// Policy applied to every verified request (its mode inside).
    pub policy: Option<Arc<Policy>>,
    /// Proofs required (default) or bearer rollout.
    pub proof_mode: ProofMode,
    /// Largest request body buffered, hashed and forwarded (proxy mode).
    pub max_body: usize,
    /// Time the whole request body has to arrive (spec/http.md §3.4): a
    /// slower one is refused with 400 `http.body_unreadable`.
    pub body_timeout: Duration,
    /// The secret the identity assertion is keyed with (at least 32 bytes).
    pub identity_secret: Zeroizing<Vec<u8>>,
    /// Time the upstream has to send its status and headers, in all, and
    /// the longest pause while its body streams (proxy mode).
    pub upstream_timeout: Duration,
    /// The replay store the verifier records proofs in, checked by
    /// `/readyz` (a gateway whose Redis is down refuses every proof: it must
    /// not look ready). `None`: not checked.
    pub replay_store: Option<Arc<dyn AsyncReplayStore>>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("mode", &self.mode)
            .field("external_url", &self.external_url)
            .field("proof_mode", &self.proof_mode)
            .field("max_body", &self.max_body)
            .field("body_timeout", &self.body_timeout)
            .field("identity_secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

struct Shared {
    mode: Mode,
    identity_secret: Zeroizing<Vec<u8>>,
    /// Proxy mode's way to the service.
    upstream: Option<Upstream>,
    upstream_timeout: Duration,
    /// The forward-auth verification: the layer around the identity answer.
    auth_service: Option<Router>,
}

/// The gateway's two routers: the protected one (proxy or forward-auth) and
/// the operations one (`/healthz`, `/readyz`, `/metrics`).
pub struct Gateway {
    /// Serve on the main listener.
    pub app: Router,
    /// Serve on the operations listener.
    pub ops: Router,
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// never forwarded either way.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Credentials the gateway consumed; the upstream never sees them.
const CREDENTIALS: [&str; 3] = ["authorization", "kb-proof", "kb-slip"];

impl Gateway {
    /// Builds the routers of `config`.
    pub fn new(config: GatewayConfig) -> Result<Gateway> {
        if config.identity_secret.len() < identity::MIN_SECRET_LEN {
            return err(
                Code::GatewayConfig,
                format!("identity_secret must be at least {} bytes", identity::MIN_SECRET_LEN),
            );
        }
        let metrics = Arc::new(
            config
                .key_sources
                .iter()
                .fold(VerificationMetrics::default(), |m, (label, keys)| {
                    m.key_source(label.clone(), keys.clone())
                }),
        );
        let mut layer = KeyboundLayer::new(config.verifier.clone(), &config.external_url)?
            .max_body(config.max_body)
            .body_timeout(config.body_timeout)
            .proof_mode(config.proof_mode)
            .observe(metrics.clone());
        if let Some(policy) = &config.policy {
            layer = layer.policy(policy.clone());
        }
        let upstream = match &config.mode {
            Mode::Proxy { upstream } => {
                Some(Upstream::new(upstream, config.upstream_timeout).map_err(|e| Error::new(Code::GatewayConfig, e))?)
            }
            Mode::Auth(_) => None,
        };
        let auth_service =
            matches!(config.mode, Mode::Auth(_)).then(|| Router::new().fallback(auth_answer).layer(layer.clone()));
        let shared = Arc::new(Shared {
            mode: config.mode.clone(),
            identity_secret: config.identity_secret,
            upstream,
            upstream_timeout: config.upstream_timeout,
            auth_service,
        });
        let app = match &config.mode {
            Mode::Proxy { .. } => Router::new().fallback(proxy).layer(layer).with_state(shared.clone()),
            Mode::Auth(_) => Router::new().fallback(forward_auth).with_state(shared.clone()),
        };
        let readiness = Arc::new(Readiness {
            sources: config.key_sources.clone(),
            replay: config.replay_store.clone(),
            last: tokio::sync::Mutex::new(None),
        });
        let ops = Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let readiness = readiness.clone();
                    async move { readiness.answer().await }
                }),
            )
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let metrics = metrics.clone();
                    async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
                }),
            );
        Ok(Gateway { app, ops })
    }
}

/// What `/readyz` checks: every key source has loaded a key set, and the
/// replay store records a key. The store's answer is reused for a second,
/// so a flood of probes costs at most one store call per second.
struct Readiness {
    sources: Vec<(String, HttpKeys)>,
    replay: Option<Arc<dyn AsyncReplayStore>>,
    last: tokio::sync::Mutex<Option<(std::time::Instant, Option<Error>)>>,
}

/// How long the replay store's readiness check may take.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Readiness {
    async fn answer(&self) -> Response {
        let no_keys = |keys: &HttpKeys| {
            let stats = keys.stats();
            stats.last_success.is_none() && !stats.loaded_from_cache
        };
        if let Some((label, keys)) = self.sources.iter().find(|(_, keys)| no_keys(keys)) {
            let why = keys.stats().last_error.unwrap_or_else(|| "not fetched yet".to_owned());
            tracing::warn!(issuer = %label, detail = %why, "not ready: no key set");
            return error_response(
                &Error::new(Code::GatewayKeysUnavailable, format!("no key set from {label} yet")),
                None,
            );
        }
        match self.replay_store_failure().await {
            None => "ready\n".into_response(),
            Some(e) => crate::http::problem::problem_response(
                &Error::new(e.code(), "not ready: the replay store"),
                StatusCode::SERVICE_UNAVAILABLE,
                None,
            ),
        }
    }

    async fn replay_store_failure(&self) -> Option<Error> {
        let store = self.replay.as_ref()?;
        let mut last = self.last.lock().await;
        if let Some((at, outcome)) = &*last
            && at.elapsed() < Duration::from_secs(1)
        {
            return outcome.clone();
        }
        // A random key nobody else uses, kept for a second.
        let probe = async {
            let now = SystemClock.now();
            let entry = crate::verify::ReplayEntry {
                key: crate::verify::ReplayKey(crate::random_array::<32>()?),
                issued_at: now,
                expires_at: now + 1,
                now,
            };
            store.check_and_record_async(entry).await
        };
        let outcome = match tokio::time::timeout(READY_CHECK_TIMEOUT, probe).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(Error::new(
                Code::ReplayStoreUnavailable,
                format!("no answer within {} s", READY_CHECK_TIMEOUT.as_secs()),
            )),
        };
        if let Some(e) = &outcome {
            tracing::warn!(
                code = e.code().as_str(),
                detail = e.message(),
                "not ready: the replay store"
            );
        }
        *last = Some((std::time::Instant::now(), outcome.clone()));
        outcome
    }
}

/// The identity of a verified request as headers, keyed for `method target`.
fn identity_headers(shared: &Shared, request: &ProvenOrBearer, method: &str, target: &str) -> Result<HeaderMap> {
    let token = request.token();
    let identity = Identity {
        subject: request.subject().to_owned(),
        domain: request.domain().map(str::to_owned),
        project: request.project().map(str::to_owned),
        roles: request.roles().to_vec(),
        trust: request.trust_id().map(str::to_owned),
        actors: request.actor_chain().iter().map(|a| a.sub.clone()).collect(),
        issuer: request.issuer().to_owned(),
        expires_at: token.expires_at(),
        key_thumbprint: crate::encoding::hex_encode(request.key_thumbprint().as_bytes()),
        proven: matches!(request, ProvenOrBearer::Proven(_)),
    };
    identity.to_headers(&shared.identity_secret, method, target, SystemClock.now())
}

/// Proxy mode: the layer verified the request; forward it.
/// (The extractor refuses a request the layer did not verify: none is ever
/// forwarded unverified.)
async fn proxy(State(shared): State<Arc<Shared>>, verified: ProvenOrBearer, request: Request) -> Response {
    let Some(upstream) = &shared.upstream else {
        return internal("proxy handler in auth mode");
    };
    let (mut parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let identity = match identity_headers(&shared, &verified, parts.method.as_str(), target) {
        Ok(h) => h,
        Err(e) => return error_response(&e, None),
    };
    strip(&mut parts.headers);
    parts.headers.extend(identity);
    // The client's own X-Forwarded-For is never passed on: the upstream
    // gets the peer's address, or none.
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
    match peer.and_then(|ConnectInfo(peer)| HeaderValue::from_str(&peer.ip().to_string()).ok()) {
        Some(value) => parts.headers.insert(HeaderName::from_static("x-forwarded-for"), value),
        None => parts.headers.remove(HeaderName::from_static("x-forwarded-for")),
    };
    // Nothing of this request's own extensions goes upstream.
    parts.extensions = http::Extensions::new();
    // The layer buffered (and hashed) the body already; this does not copy it.
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return internal("the verified body could not be read"),
    };
    // The upstream has upstream_timeout to send its status and headers, and
    // at most as long between two pieces of its body.
    let answer = match tokio::time::timeout(shared.upstream_timeout, upstream.send(parts, body)).await {
        Ok(Ok(a)) => a,
        Err(_) => {
            tracing::warn!(code = Code::GatewayUpstreamTimeout.as_str(), "upstream timed out");
            return error_response(
                &Error::new(
                    Code::GatewayUpstreamTimeout,
                    "the service behind the gateway did not answer",
                ),
                None,
            );
        }
        Ok(Err(e)) => {
            let code = if e.timeout {
                Code::GatewayUpstreamTimeout
            } else {
                Code::GatewayUpstreamUnavailable
            };
            tracing::warn!(code = code.as_str(), detail = %e.detail, "upstream failed");
            return error_response(&Error::new(code, "the service behind the gateway did not answer"), None);
        }
    };
    let (mut head, body) = answer.into_parts();
    // The body passes through unchanged, so the upstream's length still
    // holds when it sent exactly one: keeping it spares the client a chunked
    // answer and the gateway a write per response (hyper checks the body
    // against it).
    // Not with Transfer-Encoding, which overrides it (RFC 9112 §6.3).
    let length = {
        let mut lengths = head.headers.get_all(header::CONTENT_LENGTH).iter();
        match (lengths.next(), lengths.next()) {
            (Some(length), None) if !head.headers.contains_key(header::TRANSFER_ENCODING) => Some(length.clone()),
            _ => None,
        }
    };
    strip(&mut head.headers);
    if let Some(length) = length {
        head.headers.insert(header::CONTENT_LENGTH, length);
    }
    head.extensions = http::Extensions::new();
    // The client gets HTTP/1.1 framing whatever the upstream spoke (an
    // HTTP/1.0 upstream would make hyper answer HTTP/1.0, close-delimited).
    head.version = http::Version::HTTP_11;
    Response::from_parts(head, body)
}

/// Removes from `headers` the hop-by-hop headers (and those `Connection`
/// names), credentials, `Host`, `Content-Length` (recomputed) and any
/// identity header: what is left may be forwarded.
fn strip(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&CREDENTIALS).chain(&["host", "content-length"]) {
        headers.remove(*name);
    }
    for name in &named {
        headers.remove(name.as_str());
    }
    let identities: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with(identity::PREFIX))
        .cloned()
        .collect();
    for name in identities {
        headers.remove(name);
    }
}

/// Forward-auth mode: rebuild the original request from trusted headers and
/// run it through the layer.
async fn forward_auth(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let Mode::Auth(options) = &shared.mode else {
        return internal("auth handler in proxy mode");
    };
    let Some(service) = shared.auth_service.clone() else {
        return internal("no auth service");
    };
    let (parts, _body) = request.into_parts();
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if !peer.is_some_and(|ip| options.trusted_forwarders.iter().any(|net| net.contains(&ip))) {
        return refuse(Error::new(
            Code::GatewayUntrustedForwarder,
            "this peer may not ask the forward-auth endpoint (trusted_forwarders)",
        ));
    }
    // The body is never forwarded to this endpoint: a request that has one
    // cannot be checked (P9, P12) and is refused. Without reading anything.
    if has_body(&parts.headers) {
        return refuse(Error::new(
            Code::GatewayBodyNotForwarded,
            "the request has a body, which forward-auth cannot check: route it through `keybound gateway proxy`",
        ));
    }
    let first = |names: &[HeaderName]| {
        names
            .iter()
            .find_map(|n| parts.headers.get(n))
            .and_then(|v| v.to_str().ok())
    };
    let (Some(method), Some(target)) = (first(&options.method_headers), first(&options.uri_headers)) else {
        return refuse(Error::new(
            Code::GatewayOriginalMissing,
            "the forward-auth request names no original method and URI (X-Forwarded-Method / X-Forwarded-Uri)",
        ));
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method.as_bytes()), target.parse::<Uri>()) else {
        return refuse(Error::new(
            Code::GatewayOriginalMissing,
            "the original method or URI is malformed",
        ));
    };
    if uri.scheme().is_some() || !target.starts_with('/') {
        return refuse(Error::new(
            Code::GatewayOriginalMissing,
            "the original URI must be a path and query (origin form)",
        ));
    }
    let mut original = http::Request::builder().method(method).uri(uri);
    if let Some(h) = original.headers_mut() {
        for name in CREDENTIALS {
            for value in parts.headers.get_all(name) {
                h.append(HeaderName::from_static(name), value.clone());
            }
        }
    }
    let Ok(mut original) = original.body(Body::empty()) else {
        return internal("original request");
    };
    original.extensions_mut().insert(shared.clone());
    use tower::ServiceExt;
    let Ok(response) = service.oneshot(original).await;
    if !response.status().is_success() {
        return with_error_header(response);
    }
    response
}

/// The answer behind the layer in forward-auth mode: the identity headers.
async fn auth_answer(
    Extension(shared): Extension<Arc<Shared>>,
    verified: ProvenOrBearer,
    request: Request,
) -> Response {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    match identity_headers(&shared, &verified, request.method().as_str(), target) {
        Ok(headers) => {
            let mut response = StatusCode::OK.into_response();
            response.headers_mut().extend(headers);
            response
        }
        Err(e) => error_response(&e, None),
    }
}

/// Whether the (forward-auth) request says its original has a body.
fn has_body(headers: &HeaderMap) -> bool {
    let length = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().parse::<u64>().map_or(!v.trim().is_empty(), |n| n > 0))
    };
    let present = |name: &str| headers.get(name).is_some_and(|v| !v.as_bytes().is_empty());
    length("content-length")
        || present("transfer-encoding")
        || length("x-original-content-length")
        || length("x-forwarded-content-length")
        || present("x-original-transfer-encoding")
}

/// A refusal, with `KB-Error` so a forwarder that replaces the body
/// (nginx) can still pass the code on.
fn refuse(e: Error) -> Response {
    with_error_header(error_response(&e, None))
}

fn with_error_header(mut response: Response) -> Response {
    // error_response records the code in the extensions; codes are always
    // valid header values.
    if let Some(code) = response.extensions().get::<Code>().copied() {
        response.headers_mut().insert(
            HeaderName::from_static("kb-error"),
            HeaderValue::from_static(code.as_str()),
        );
    }
    response
}

fn internal(what: &str) -> Response {
    tracing::error!(detail = what, "gateway bug");
    error_response(&Error::new(Code::GatewayConfig, what.to_owned()), None)
}
