//! [`KeyboundLayer`]: verification before the handler, as tower middleware.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use serde_json::json;

use super::{AUTH_SCHEME, NONCE_HEADER, PROOF_HEADER, SLIP_HEADER, WORKFLOW_HEADER, error_response};
use crate::delegation::slip::VerifiedSlip;
use crate::encoding::{b64url_decode, b64url_encode};
use crate::error::{Code, Error, Result, err};
use crate::key::PublicKey;
use crate::policy::{Action, Policy, RecordSink, TracingRecords};
use crate::proof::{RequestInfo, body_sha256, normalize_uri};
use crate::verify::{AsyncReplayStore, BearerRequest, DynVerifier, VerifiedRequest, Verifier};

/// Default largest request body the layer buffers and hashes: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Default largest `Authorization` or `KB-Proof` header: 8 KiB.
pub const DEFAULT_MAX_HEADER: usize = 8 * 1024;
/// Default time allowed to receive the body: 30 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether requests must carry a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofMode {
    /// Every request needs a valid proof (the default).
    Required,
    /// Rollout phase: a request without a proof is admitted on its token
    /// alone (bearer use) and a `bearer_use` record is written for each one.
    /// A request that carries a proof is still fully verified. The layer
    /// hands handlers a [`VerifiedRequest`] for the one and a
    /// [`BearerRequest`] for the other; the `VerifiedRequest` extractor
    /// refuses a bearer request (401 `proof.missing`), so only routes that
    /// extract [`ProvenOrBearer`](crate::verify::ProvenOrBearer) serve it.
    BearerAllowed,
}

/// The request checks of the HTTP binding that need no verifier: H1 (headers
/// and path), H2 (the body) and the target URI a proof names. The layer runs
/// them for every route it wraps; the issuer's login, which has no token,
/// runs the same ones for its proof ([`Binding::proof_header`],
/// [`Binding::body`], [`Binding::verify_possession`]).
#[derive(Clone, Debug)]
pub(crate) struct Binding {
    base_url: String,
    max_body: usize,
    max_header: usize,
    body_timeout: Duration,
}

/// Called with every refusal of the layer (the issuer counts them in its metrics).
type RefusalObserver = Arc<dyn Fn(&Error) + Send + Sync>;

struct Config {
    verifier: Arc<dyn DynVerifier>,
    binding: Binding,
    proof_mode: ProofMode,
    policy: Option<Arc<Policy>>,
    records: Arc<dyn RecordSink>,
    on_refusal: Option<RefusalObserver>,
    observer: Option<Arc<dyn super::VerificationObserver>>,
}

/// Verifies every request (token, proof, replay, then policy) before the
/// inner service sees it, and puts the [`VerifiedRequest`] (or, in bearer
/// rollout mode for a request without a proof, the [`BearerRequest`]) into
/// the request extensions. The `Authorization` and `KB-Proof` headers are marked
/// sensitive first thing, so layers *inside* this one and handlers do not
/// print them. A trace layer *outside* it sees the request first: put
/// `tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer` (with
/// `authorization` and `kb-proof`) outermost, or add tracing inside.
#[derive(Clone)]
pub struct KeyboundLayer {
    config: Arc<Config>,
}

impl std::fmt::Debug for KeyboundLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyboundLayer({}, {:?})",
            self.config.binding.base_url, self.config.proof_mode
        )
    }
}

impl KeyboundLayer {
    /// A layer for a service reachable by clients at `external_base_url`
    /// (scheme, host, port and any path prefix a proxy strips, e.g.
    /// `https://api.example/compute`). The target URI a proof must name is
    /// this base URL followed by the request's path and query; the `Host`
    /// and `X-Forwarded-*` headers are never consulted. The verifier may hold
    /// any replay store; the layer always awaits it.
    pub fn new<R>(verifier: Arc<Verifier<R>>, external_base_url: &str) -> Result<Self>
    where
        R: AsyncReplayStore + ?Sized + 'static,
    {
        Ok(KeyboundLayer {
            config: Arc::new(Config {
                verifier,
                binding: Binding::new(external_base_url)?,
                proof_mode: ProofMode::Required,
                policy: None,
                records: Arc::new(TracingRecords),
                on_refusal: None,
                observer: None,
            }),
        })
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::get_mut(&mut self.config).expect("the layer is configured before it is cloned")
    }

    /// Largest body buffered and hashed (default 1 MiB); larger is 413.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.config_mut().binding.max_body = bytes;
        self
    }

    /// Largest `Authorization`/`KB-Proof` header (default 8 KiB); larger is 431.
    pub fn max_header(mut self, bytes: usize) -> Self {
        self.config_mut().binding.max_header = bytes;
        self
    }

    /// Time allowed to receive the body (default 30 s).
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().binding.body_timeout = timeout;
        self
    }

    /// Whether a proof is required (default) or bearer use is admitted and recorded.
    pub fn proof_mode(mut self, mode: ProofMode) -> Self {
        self.config_mut().proof_mode = mode;
        self
    }

    /// Applies `policy` to every verified request (method + path), and hands
    /// handlers a [`PolicyHandle`] for named operations. Without a policy the
    /// layer authenticates only: every verified request reaches the handler.
    pub fn policy(mut self, policy: Arc<Policy>) -> Self {
        self.config_mut().policy = Some(policy);
        self
    }

    /// Where policy-denial and bearer-use records go (default: one `tracing`
    /// event each, target `keybound::records`; a
    /// [`crate::policy::JsonLinesFile`] keeps them in a file of their own).
    pub fn records(mut self, sink: Arc<dyn RecordSink>) -> Self {
        self.config_mut().records = sink;
        self
    }

    /// Reports every request's outcome (admitted, or the refusal's code) and
    /// the time the layer spent on it to `observer`: the hook for a
    /// service's verification metrics ([`super::VerificationMetrics`]).
    pub fn observe(mut self, observer: Arc<dyn super::VerificationObserver>) -> Self {
        self.config_mut().observer = Some(observer);
        self
    }

    /// Calls `observer` with every request the layer refuses.
    pub(crate) fn on_refusal(mut self, observer: RefusalObserver) -> Self {
        self.config_mut().on_refusal = Some(observer);
        self
    }
}

impl<S> tower::Layer<S> for KeyboundLayer {
    type Service = KeyboundService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyboundService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service produced by [`KeyboundLayer`].
#[derive(Clone)]
pub struct KeyboundService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> std::fmt::Debug for KeyboundService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyboundService({})", self.config.binding.base_url)
    }
}

impl<S, B> tower::Service<Request<B>> for KeyboundService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone that was polled ready handles this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        Box::pin(async move { Ok(handle(config, inner, request).await) })
    }
}

async fn handle<S, B>(config: Arc<Config>, mut inner: S, request: Request<B>) -> Response<Body>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let core = config.verifier.core();
    let nonce = core.nonce_service().map(|s| b64url_encode(&s.current(core.now())));
    let (mut parts, body) = request.into_parts();
    // Timed only for an observer: the per-request path pays nothing otherwise.
    let started = config.observer.as_ref().map(|_| std::time::Instant::now());
    let result = verify(&config, &mut parts, body).await;
    if let (Some(observer), Some(started)) = (&config.observer, started) {
        observer.observe(&super::VerificationOutcome {
            refused: result.as_ref().err().map(Error::code),
            elapsed: started.elapsed(),
        });
    }
    let verified = match result {
        Ok(v) => v,
        Err(e) => {
            let status = super::status_for(e.code());
            if status.is_server_error() {
                tracing::error!(code = e.code().as_str(), detail = e.message(), method = %parts.method, path = parts.uri.path(), "request refused");
            } else {
                tracing::info!(code = e.code().as_str(), detail = e.message(), method = %parts.method, path = parts.uri.path(), "request refused");
            }
            if let Some(observer) = &config.on_refusal {
                observer(&e);
            }
            let challenge = matches!(e.code(), Code::ProofNonceRequired | Code::ProofNonceInvalid);
            return error_response(&e, nonce.as_deref().filter(|_| challenge));
        }
    };
    let (request, body) = verified;
    match request {
        Admitted::Proven(request) => {
            parts.extensions.insert(request);
        }
        Admitted::Bearer(request) => {
            parts.extensions.insert(request);
        }
    }
    if let Some(policy) = &config.policy {
        parts.extensions.insert(PolicyHandle {
            policy: policy.clone(),
            records: config.records.clone(),
            verifier: config.verifier.clone(),
            workflow: record_workflow(&parts.headers).map(Arc::from),
        });
    }
    let request = Request::from_parts(parts, Body::from(body));
    let Ok(mut response) = inner.call(request).await;
    // Hand out the current nonce with every answer, so clients rarely need
    // a challenge round trip.
    if let Some(value) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert(NONCE_HEADER, value);
    }
    response
}

/// The layer's policy, for handlers that check a named operation
/// (`[[rule]] operation = "compute:resize"`) under the same mode and record
/// sink as the layer's method + path checks. The layer puts it into the
/// request extensions when it has a policy; take it with
/// `axum::Extension<PolicyHandle>`.
///
/// ```
/// use axum::{Extension, response::Response};
/// use keybound::http::PolicyHandle;
/// use keybound::verify::{ProvenOrBearer, VerifiedRequest};
///
/// async fn resize(request: VerifiedRequest, Extension(policy): Extension<PolicyHandle>) -> Result<String, Response> {
///     policy.authorize(&request, "compute:resize").map_err(|e| keybound::http::error_response(&e, None))?;
///     Ok("resized".into())
/// }
///
/// // A route that also serves requests admitted without a proof (bearer rollout mode).
/// async fn status(request: ProvenOrBearer, Extension(policy): Extension<PolicyHandle>) -> Result<String, Response> {
///     match &request {
///         ProvenOrBearer::Proven(proven) => policy.authorize(proven, "compute:status"),
///         ProvenOrBearer::Bearer(bearer) => policy.authorize_bearer(bearer, "compute:status"),
///     }
///     .map_err(|e| keybound::http::error_response(&e, None))?;
///     Ok(format!("status for {}", request.subject()))
/// }
/// ```
#[derive(Clone)]
pub struct PolicyHandle {
    policy: Arc<Policy>,
    records: Arc<dyn RecordSink>,
    verifier: Arc<dyn DynVerifier>,
    /// The request's workflow, for its decision records only.
    workflow: Option<Arc<str>>,
}

impl std::fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PolicyHandle({:?})", self.policy.mode())
    }
}

impl PolicyHandle {
    /// Applies the policy to the named `operation` for `request`: `Ok` when
    /// allowed (or in permissive mode, after writing a denial record);
    /// `policy.denied` (403) in enforce mode when no rule allows it.
    pub fn authorize(&self, request: &VerifiedRequest, operation: &str) -> Result<()> {
        let now = self.verifier.core().now();
        let workflow = self.workflow.as_deref();
        self.policy.authorize(
            request,
            Action::Operation(operation),
            workflow,
            self.records.as_ref(),
            now,
        )
    }

    /// As [`PolicyHandle::authorize`], for a request admitted without a
    /// proof in bearer rollout mode.
    pub fn authorize_bearer(&self, request: &BearerRequest, operation: &str) -> Result<()> {
        let now = self.verifier.core().now();
        let workflow = self.workflow.as_deref();
        self.policy.authorize_bearer(
            request,
            Action::Operation(operation),
            workflow,
            self.records.as_ref(),
            now,
        )
    }
}

/// What the layer admitted.
enum Admitted {
    Proven(VerifiedRequest),
    Bearer(BearerRequest),
}

/// All checks; returns the admitted request and the buffered body.
async fn verify<B>(config: &Config, parts: &mut Parts, body: B) -> Result<(Admitted, Bytes)>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let binding = &config.binding;
    let Credentials { token, proof, slip } = binding.credentials(parts)?;
    if proof.is_none() && config.proof_mode == ProofMode::Required {
        return Err(proof_missing());
    }
    // T1–T12 before the body is read, so that only a client holding a valid
    // token can make the service buffer a body. The proof check below
    // reuses this result (re-checking only the expiry).
    let verifier = &config.verifier;
    let core = verifier.core();
    let token = core.verify_token_async(&token).await?;
    // S1–S8 on the verified token, before the body is read and the proof
    // consumed: a request whose slip fails never records its proof.
    let slip = match slip {
        Some(slip) => {
            let slip = core.slip_async(&slip).await?;
            slip.check_for(token.token())?;
            Some(Arc::new(slip))
        }
        None => None,
    };
    let workflow_id = slip.as_deref().map(VerifiedSlip::workflow_id_base64url);
    let body = binding.body(parts, body).await?;
    let admitted = match proof {
        Some(proof) => {
            let target = binding.target_uri(parts);
            let info = request_info(parts, &target, &body);
            Admitted::Proven(verifier.verify_proof_async(token, &proof, &info).await?.with_slip(slip))
        }
        None if config.proof_mode == ProofMode::BearerAllowed => {
            let bearer = core.admit_bearer(token)?.with_slip(slip);
            config.records.record(&json!({
                "event": "bearer_use",
                "time": core.now(),
                "issuer": bearer.issuer(),
                "subject": bearer.subject(),
                "trust_id": bearer.trust_id(),
                "actors": bearer.actor_chain().iter().map(|a| a.sub.as_str()).collect::<Vec<_>>(),
                "workflow_id": workflow_id,
                "audience": bearer.audience(),
                "key_thumbprint": bearer.key_thumbprint().to_string(),
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
            }));
            Admitted::Bearer(bearer)
        }
        None => return Err(proof_missing()),
    };
    if let Some(policy) = &config.policy {
        let action = Action::Http {
            method: parts.method.as_str(),
            path: parts.uri.path(),
        };
        let (records, now) = (config.records.as_ref(), core.now());
        let workflow = record_workflow(&parts.headers);
        match &admitted {
            Admitted::Proven(request) => policy.authorize(request, action, workflow, records, now)?,
            Admitted::Bearer(request) => policy.authorize_bearer(request, action, workflow, records, now)?,
        }
    }
    Ok((admitted, body))
}

/// The longest `KB-Workflow` value recorded.
const MAX_WORKFLOW: usize = 128;

/// The `workflow` of the request's decision records: the `KB-Workflow`
/// header when it is exactly one value of 1–128 of `A–Z a–z 0–9 . _ - :`,
/// else none. The header is unsigned: it labels records for learning and
/// reports and never takes part in a decision (spec/delegation.md §8.3).
/// A verified routing slip's workflow id goes into `workflow_id`.
fn record_workflow(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(WORKFLOW_HEADER).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    let fits = !text.is_empty()
        && text.len() <= MAX_WORKFLOW
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    fits.then_some(text)
}

/// The refusal of a request without a proof (H1 item 7), by the layer in
/// strict mode and by the `VerifiedRequest` extractor for a bearer request.
pub(crate) fn proof_missing() -> Error {
    Error::new(
        Code::ProofMissing,
        "a KB-Proof header is required with a keybound token",
    )
}

impl Binding {
    /// The binding of a service (or issuer) that clients reach at
    /// `external_base_url`, with the default limits.
    pub(crate) fn new(external_base_url: &str) -> Result<Self> {
        let normalized = normalize_uri(external_base_url)
            .map_err(|e| Error::new(Code::ConfigInvalid, format!("the external base URL: {}", e.message())))?;
        if normalized.contains(['?', '#']) {
            return err(
                Code::ConfigInvalid,
                "the external base URL must not have a query or fragment",
            );
        }
        Ok(Binding {
            base_url: normalized.trim_end_matches('/').to_owned(),
            max_body: DEFAULT_MAX_BODY,
            max_header: DEFAULT_MAX_HEADER,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        })
    }

    /// The largest body [`Binding::body`] reads.
    pub(crate) fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// H1 items 1–6 and 8: the token, the proof and the routing slip if
    /// there are any, and the path.
    fn credentials(&self, parts: &mut Parts) -> Result<Credentials> {
        // Before anything can fail: inner layers and handlers that log headers
        // must see the credentials as sensitive, whatever happens next.
        mark_sensitive(&mut parts.headers);
        let token = extract_token(&parts.headers, self.max_header)?;
        let proof = extract_proof(&parts.headers, self.max_header)?;
        check_path(parts.uri.path())?;
        let slip = extract_slip(&parts.headers, self.max_header)?;
        Ok(Credentials { token, proof, slip })
    }

    /// H1 items 4–7 for a request proven by a key it carries rather than by
    /// a token's (a login): the proof, which must be there, and the path.
    pub(crate) fn proof_header(&self, parts: &mut Parts) -> Result<Vec<u8>> {
        mark_sensitive(&mut parts.headers);
        let proof = extract_proof(&parts.headers, self.max_header)?;
        check_path(parts.uri.path())?;
        proof.ok_or_else(|| Error::new(Code::ProofMissing, "a KB-Proof header is required"))
    }

    /// H2 items 1–2: the whole body, bounded in size and time.
    pub(crate) async fn body<B>(&self, parts: &Parts, body: B) -> Result<Bytes>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let too_large = || {
            Error::new(
                Code::HttpBodyTooLarge,
                format!("the body is larger than {} bytes", self.max_body),
            )
        };
        if parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(too_large());
        }
        // The pieces are copied into one buffer as they arrive, not kept:
        // each piece hyper hands over pins the read buffer it was cut from
        // (kilobytes), so a body sent a byte at a time held thousands of
        // times its size until the timeout (FL-16: 67 MiB for 20 bodies of
        // 1,500 one-byte pieces). A body in one piece is kept as it is.
        let read = async {
            let mut body = std::pin::pin!(body);
            let mut first: Option<Bytes> = None;
            let mut rest = BytesMut::new();
            let mut len = 0usize;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                    let message = format!("the body could not be read: {e}");
                    Error::new(Code::HttpBodyUnreadable, message).with_source(e)
                })?;
                let Ok(data) = frame.into_data() else { continue };
                len = len.saturating_add(data.len());
                if len > self.max_body {
                    return Err(too_large());
                }
                match first.take() {
                    None if rest.is_empty() => first = Some(data),
                    None => rest.extend_from_slice(&data),
                    Some(piece) => {
                        rest.extend_from_slice(&piece);
                        rest.extend_from_slice(&data);
                    }
                }
            }
            Ok(first.unwrap_or_else(|| rest.freeze()))
        };
        match tokio::time::timeout(self.body_timeout, read).await {
            Err(_) => err(Code::HttpBodyUnreadable, "the body did not arrive in time"),
            Ok(result) => result,
        }
    }

    /// H2 item 3: the target URI a proof names, the external base URL
    /// followed by the request's path and query.
    fn target_uri(&self, parts: &Parts) -> String {
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        format!("{}{}", self.base_url, path_and_query)
    }

    /// P1–P13 for a proof made with `key` itself, over the empty token
    /// (formats.md §4.4): the proof step of a login.
    pub(crate) async fn verify_possession<R: AsyncReplayStore + ?Sized>(
        &self,
        verifier: &Verifier<R>,
        key: &PublicKey,
        proof: &[u8],
        parts: &Parts,
        body: &[u8],
    ) -> Result<()> {
        let target = self.target_uri(parts);
        verifier
            .verify_possession_async(key, proof, &request_info(parts, &target, body))
            .await
    }
}

/// The decoded `Authorization`, `KB-Proof` and `KB-Slip` values of a request.
struct Credentials {
    token: Vec<u8>,
    proof: Option<Vec<u8>>,
    slip: Option<Vec<u8>>,
}

/// What P7–P9 and P12 compare the proof with.
fn request_info<'a>(parts: &'a Parts, target: &'a str, body: &[u8]) -> RequestInfo<'a> {
    RequestInfo {
        method: parts.method.as_str(),
        uri: target,
        body_sha256: body_sha256(body),
    }
}

/// Marks every `Authorization`, `KB-Proof` and `KB-Slip` value sensitive,
/// so `Debug` of the headers and `tower-http`'s trace layers print
/// `Sensitive` (a slip names the trustor and every trust id of a workflow).
fn mark_sensitive(headers: &mut HeaderMap) {
    for name in [header::AUTHORIZATION, PROOF_HEADER, SLIP_HEADER] {
        if let header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

fn single<'a>(
    headers: &'a HeaderMap,
    name: &header::HeaderName,
    multiple: Code,
    malformed: Code,
    max: usize,
) -> Result<Option<&'a str>> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return err(multiple, format!("more than one {name} header"));
    }
    if value.len() > max {
        return err(
            Code::HttpHeaderTooLarge,
            format!("the {name} header is {} bytes; the limit is {max}", value.len()),
        );
    }
    let text = value
        .to_str()
        .map_err(|_| Error::new(malformed, format!("the {name} header is not ASCII")))?;
    Ok(Some(text.trim()))
}

fn extract_token(headers: &HeaderMap, max: usize) -> Result<Vec<u8>> {
    let Some(value) = single(
        headers,
        &header::AUTHORIZATION,
        Code::HttpTokenMultiple,
        Code::HttpTokenMalformed,
        max,
    )?
    else {
        return err(
            Code::HttpTokenMissing,
            "no Authorization header; send `Authorization: KB <token>`",
        );
    };
    // Split at the first space or tab, so that `KB<TAB>token` is read as the
    // KB scheme with a malformed separator, not as some other scheme.
    let (scheme, separator, credentials) = match value.find([' ', '\t']) {
        Some(at) => (&value[..at], value.as_bytes()[at], &value[at + 1..]),
        None => (value, b' ', ""),
    };
    if !scheme.eq_ignore_ascii_case(AUTH_SCHEME) {
        // Name the scheme only when it looks like one (`Bearer`, `DPoP`):
        // a bare credential without a scheme is never echoed, not even in part.
        let looks_like_scheme = !credentials.is_empty()
            && scheme.len() <= 16
            && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let message = if looks_like_scheme {
            format!("Authorization scheme {scheme:?} is not {AUTH_SCHEME}: keybound tokens are never bearer tokens")
        } else {
            format!("the Authorization header must be `{AUTH_SCHEME} <token>`")
        };
        return err(Code::HttpScheme, message);
    }
    if separator != b' ' {
        return err(
            Code::HttpTokenMalformed,
            "the Authorization header must separate KB and the token with a space, not a tab",
        );
    }
    if credentials.trim().is_empty() {
        return err(
            Code::HttpTokenMalformed,
            "the Authorization header has no token after KB",
        );
    }
    b64url_decode(credentials.trim()).map_err(|_| {
        Error::new(
            Code::HttpTokenMalformed,
            "the token in Authorization is not unpadded base64url",
        )
    })
}

fn extract_proof(headers: &HeaderMap, max: usize) -> Result<Option<Vec<u8>>> {
    let Some(value) = single(headers, &PROOF_HEADER, Code::ProofMultiple, Code::ProofMalformed, max)? else {
        return Ok(None);
    };
    if value.is_empty() {
        return err(Code::ProofMalformed, "the KB-Proof header is empty");
    }
    if value.contains(',') {
        return err(
            Code::ProofMultiple,
            "the KB-Proof header holds a list; send exactly one proof",
        );
    }
    b64url_decode(value)
        .map(Some)
        .map_err(|_| Error::new(Code::ProofMalformed, "the KB-Proof header is not unpadded base64url"))
}

/// H1 item 8: the `KB-Slip` header (http.md §3.5), if there is one.
fn extract_slip(headers: &HeaderMap, max: usize) -> Result<Option<Vec<u8>>> {
    let Some(value) = single(headers, &SLIP_HEADER, Code::SlipMalformed, Code::SlipMalformed, max)? else {
        return Ok(None);
    };
    if value.is_empty() || value.contains(',') {
        return err(
            Code::SlipMalformed,
            "the KB-Slip header must hold exactly one slip in base64url",
        );
    }
    b64url_decode(value)
        .map(Some)
        .map_err(|_| Error::new(Code::SlipMalformed, "the KB-Slip header is not unpadded base64url"))
}

/// Refuses paths that are not in normal form (RFC 3986 §6.2.2): dot
/// segments (also percent-encoded) and percent-encoded unreserved
/// characters, so that the path the proof names, the path the router matches
/// and the path the policy checks are the same string.
fn check_path(path: &str) -> Result<()> {
    for segment in path.split('/') {
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        if decoded == "." || decoded == ".." {
            return err(
                Code::HttpPathNotNormalized,
                "the request path has dot segments; send it normalised",
            );
        }
    }
    let bytes = path.as_bytes();
    for (at, _) in path.match_indices('%') {
        let decoded = match bytes.get(at + 1..at + 3) {
            Some(&[hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                u8::from_str_radix(&path[at + 1..at + 3], 16).ok()
            }
            _ => None,
        };
        if decoded.is_some_and(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
            return err(
                Code::HttpPathNotNormalized,
                format!(
                    "the request path percent-encodes the unreserved character {:?}; send it unencoded",
                    decoded.map(char::from).unwrap_or_default()
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        let mut h = HeaderMap::new();
        assert_eq!(extract_token(&h, 100).unwrap_err().code(), Code::HttpTokenMissing);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(extract_token(&h, 100).unwrap_err().code(), Code::HttpScheme);
        h.insert(header::AUTHORIZATION, "kb AAE".parse().unwrap());
        assert_eq!(extract_token(&h, 100).unwrap(), vec![0, 1]);
        h.insert(header::AUTHORIZATION, "KB\tAAE".parse().unwrap());
        assert_eq!(extract_token(&h, 100).unwrap_err().code(), Code::HttpTokenMalformed);
        h.insert(header::AUTHORIZATION, "KB AAE=".parse().unwrap());
        assert_eq!(extract_token(&h, 100).unwrap_err().code(), Code::HttpTokenMalformed);
        h.append(header::AUTHORIZATION, "KB AAE".parse().unwrap());
        assert_eq!(extract_token(&h, 100).unwrap_err().code(), Code::HttpTokenMultiple);
        let mut h = HeaderMap::new();
        h.insert(PROOF_HEADER, "AAE,AAE".parse().unwrap());
        assert_eq!(extract_proof(&h, 100).unwrap_err().code(), Code::ProofMultiple);
        h.insert(PROOF_HEADER, "A".repeat(101).parse().unwrap());
        assert_eq!(extract_proof(&h, 100).unwrap_err().code(), Code::HttpHeaderTooLarge);
        let mut h = HeaderMap::new();
        assert_eq!(extract_slip(&h, 100).unwrap(), None);
        h.insert(SLIP_HEADER, " AAE ".parse().unwrap());
        assert_eq!(extract_slip(&h, 100).unwrap(), Some(vec![0, 1]));
        for bad in ["", "AAE,AAE", "AAE=", "A+E"] {
            h.insert(SLIP_HEADER, bad.parse().unwrap());
            assert_eq!(extract_slip(&h, 100).unwrap_err().code(), Code::SlipMalformed, "{bad}");
        }
        h.insert(SLIP_HEADER, "A".repeat(101).parse().unwrap());
        assert_eq!(extract_slip(&h, 100).unwrap_err().code(), Code::HttpHeaderTooLarge);
        h.insert(SLIP_HEADER, "AAE".parse().unwrap());
        h.append(SLIP_HEADER, "AAE".parse().unwrap());
        assert_eq!(extract_slip(&h, 100).unwrap_err().code(), Code::SlipMalformed);
        assert!(check_path("/v2/servers").is_ok());
        assert!(check_path("/v2/a%2Fb%20c%C3%A9").is_ok());
        for bad in [
            "/a/../admin",
            "/a/./b",
            "/a/%2e%2E/b",
            "/..",
            "/v2/%73ervers",
            "/v2/a%2eb",
            "/v2/%7E",
            "/v2/x%2D",
        ] {
            assert_eq!(
                check_path(bad).unwrap_err().code(),
                Code::HttpPathNotNormalized,
                "{bad}"
            );
        }
    }
}
