//! Login, minting, key publication, health and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use super::IssuerState;
use super::store::{Audit, Grants, Identities, Logins, MintKey, Origin, SessionKey, bootstrap_names};
use crate::encoding::{b64url_decode, b64url_encode};
use crate::error::{Code, Error, Result, err};
use crate::key::{PublicKey, Thumbprint};
use crate::names::{Name, ProjectName, UserName, check_audience};
use crate::token::TokenBuilder;
use crate::verify::VerifiedRequest;

/// The routes without a token: public reads and login (whose proof the
/// handler checks with the binding's own steps).
pub(super) fn routes() -> OpenApiRouter<Arc<IssuerState>> {
    public_routes().routes(routes!(metrics))
}

/// [`routes`] without `/metrics`, for an issuer that serves it on its own
/// listener (`metrics_listen`).
pub(super) fn public_routes() -> OpenApiRouter<Arc<IssuerState>> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(keys))
        .routes(routes!(metadata))
        .routes(routes!(login))
}

/// The routes that take a session token; they sit behind the session layer
/// (`super::router`).
pub(super) fn session_routes() -> OpenApiRouter<Arc<IssuerState>> {
    OpenApiRouter::new().routes(routes!(mint))
}

/// Turns a handler result into a response, counting failures.
pub(super) fn respond(
    state: &IssuerState,
    route: &'static str,
    started: Instant,
    result: Result<Response>,
) -> Response {
    state.metrics.observe(route, started.elapsed());
    match result {
        Ok(response) => response,
        Err(e) => {
            state.metrics.failure(e.code().as_str());
            if crate::http::status_for(e.code()).is_server_error() {
                tracing::error!(route, code = e.code().as_str(), detail = e.message(), "request failed");
            } else {
                tracing::info!(route, code = e.code().as_str(), detail = e.message(), "request refused");
            }
            crate::http::error_response(&e, None)
        }
    }
}

/// The request that the verifying layer passed, and its body, which the
/// layer has read whole (H2). A route without the layer fails closed here.
pub(super) async fn verified(request: Request) -> Result<(Parts, VerifiedRequest, Bytes)> {
    let (parts, body) = request.into_parts();
    let Some(verified) = parts.extensions.get::<VerifiedRequest>().cloned() else {
        tracing::error!(path = %parts.uri.path(), "an issuer route that needs a token has no verifying layer");
        return err(Code::HttpLayerMissing, "server misconfiguration");
    };
    let body = body
        .collect()
        .await
        .map_err(|e| Error::new(Code::HttpBodyUnreadable, format!("the body could not be read: {e}")))?
        .to_bytes();
    Ok((parts, verified, body))
}

/// Where a request came from, for its audit record: the client address as
/// the login limit sees it (the TCP peer, or from `X-Forwarded-For` behind
/// a trusted proxy, spec/issuer.md §5.5) and the thumbprint of the key its
/// token or proof is bound to; `-` for what is not known.
pub(super) fn origin(state: &IssuerState, parts: &Parts, key: Option<&Thumbprint>) -> Origin {
    Origin {
        client: client_address(state, parts),
        key_thumbprint: key.map_or_else(|| "-".to_owned(), ToString::to_string),
    }
}

/// The client address of a request (`-` when served without connect info).
pub(super) fn client_address(state: &IssuerState, parts: &Parts) -> String {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or_else(
        || "-".to_owned(),
        |ConnectInfo(peer)| state.login_limit.source(*peer, &parts.headers).to_string(),
    )
}

/// Parses a JSON body, refusing unknown fields.
pub(super) fn json_body<T: DeserializeOwned>(parts: &Parts, body: &[u8]) -> Result<T> {
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Media types are case-insensitive (RFC 9110 §8.3.1); parameters may follow.
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return err(
            Code::IssuerBadRequest,
            "the body must be JSON (Content-Type: application/json)",
        );
    }
    crate::json::decode_object(body)
}

pub(super) fn json_response(status: StatusCode, answer: &impl Serialize) -> Response {
    let body = match serde_json::to_string(answer) {
        Ok(body) => body,
        Err(e) => {
            return crate::http::error_response(
                &Error::new(Code::IssuerConfig, format!("an answer does not serialise: {e}")),
                None,
            );
        }
    };
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "public",
    summary = "Liveness",
    description = "Answers while the process runs; does not touch the database. Also answers HEAD.",
    responses(
        (status = 200, description = "Alive: the body is `ok` and a line feed.", body = String, content_type = "text/plain; charset=utf-8")
    )
)]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "public",
    summary = "Readiness",
    description = "Ready when the database answers a trivial query.",
    responses(
        (status = 200, description = "Ready: the body is `ready` and a line feed.", body = String, content_type = "text/plain; charset=utf-8")
    )
)]
async fn readyz(state: State<Arc<IssuerState>>) -> Response {
    super::health::readyz(state).await
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "public",
    summary = "Prometheus metrics",
    description = "Text exposition format 0.0.4 (spec/issuer.md §9).",
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain; version=0.0.4")
    )
)]
pub(super) async fn metrics(State(state): State<Arc<IssuerState>>) -> Response {
    let mut body = state.metrics.render();
    body.push_str(&super::metrics::replay_gauges(state.replay.usage()));
    body.push_str(&super::metrics::key_gauges(&state.keys, state.now()));
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

#[utoipa::path(
    get,
    path = "/.well-known/keybound/keys",
    operation_id = "keys",
    tag = "public",
    summary = "The issuer's key set",
    description = "The COSE_KeySet with the next, the current and the previous keys (spec/issuer.md §7).",
    responses(
        (status = 200, description = "The key set. `Cache-Control: public, max-age=N` with N = rotation period / 4 clamped to 60…3600 (3600 for a fixed key).", body = Vec<u8>, content_type = "application/cbor")
    )
)]
async fn keys(State(state): State<Arc<IssuerState>>) -> Response {
    match state.keys.published_cbor() {
        Ok(cbor) => {
            let mut response = Response::new(Body::from(cbor.as_ref().clone()));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/cbor"));
            if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={}", state.keys.cache_max_age())) {
                headers.insert(header::CACHE_CONTROL, value);
            }
            response
        }
        Err(e) => crate::http::error_response(&e, None),
    }
}

#[utoipa::path(
    get,
    path = "/.well-known/keybound/issuer",
    operation_id = "metadata",
    tag = "public",
    summary = "Issuer metadata",
    responses(
        (status = 200, description = "The metadata.", body = Metadata, content_type = "application/json")
    )
)]
async fn metadata(State(state): State<Arc<IssuerState>>) -> Response {
    let base = state.config.issuer_id.trim_end_matches('/');
    json_response(
        StatusCode::OK,
        &Metadata {
            issuer: state.config.issuer_id.clone(),
            keys: format!("{base}/.well-known/keybound/keys"),
            login: format!("{base}/v1/login"),
            tokens: format!("{base}/v1/tokens"),
            admin_audience: state.config.admin_audience(),
            max_session_lifetime: state.config.max_session_lifetime,
            max_service_lifetime: state.config.service_lifetime,
        },
    )
}

/// The issuer's metadata (spec/issuer.md §4).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Metadata {
    /// the issuer id (iss of every token, base of every proof's htu)
    issuer: String,
    /// URL of the key set
    keys: String,
    /// URL of the login endpoint
    login: String,
    /// URL of the token endpoint
    tokens: String,
    /// audience of admin tokens: `{issuer}/admin`
    admin_audience: String,
    /// seconds
    #[schema(minimum = 1)]
    max_session_lifetime: u64,
    /// seconds
    #[schema(minimum = 1)]
    max_service_lifetime: u64,
}

/// spec/issuer.md §5.1
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    user: String,
    password: Option<String>,
    /// The public COSE_Key to bind, base64url.
    key: String,
    lifetime: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/v1/login",
    operation_id = "login",
    tag = "public",
    summary = "Log in: a session token bound to the caller's key",
    description = "Password login (`password` present) or registered-key login (`password` absent). The `KB-Proof` is made with the private half of `key`, for this request, with the empty byte string as the token (tkh = SHA-256(\"\")[0..4]) and htu = issuer id + `/v1/login` (spec/issuer.md §5).",
    security(("kbProof" = [])),
    request_body(content = LoginRequest, content_type = "application/json", example = json!({"user": "ayoung@stoughton", "password": "correct horse battery", "key": "pAEBAycgBiFYINdamAGCsQq31Uv-08lkBzoO4XLz2qYjJa8CGmj3B1Ea", "lifetime": 3600})),
    responses(
        (status = 200, description = "A session token.", body = LoginResponse, content_type = "application/json")
    )
)]
async fn login(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let started = Instant::now();
    // The per-source budget comes before any other work (§5.5).
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        tracing::error!("the issuer is served without connect info; logins are refused");
        return respond(
            &state,
            "login",
            started,
            err(
                Code::ConfigInvalid,
                "server misconfiguration: served without connect info",
            ),
        );
    };
    let source = state.login_limit.source(peer, request.headers());
    if let Err(wait) = state.login_limit.check(source) {
        let refused = Error::new(
            Code::IssuerLoginRateLimited,
            format!("too many logins from {source}; try again later"),
        );
        let mut response = respond(&state, "login", started, Err(refused));
        // Whole seconds, rounded up: never an invitation to retry too early.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, seconds.max(1).into());
        return response;
    }
    let mut named = None;
    let result = do_login(&state, request, source, &mut named).await;
    // Refusals before step 8 (malformed requests, bad or replayed proofs)
    // cost an attacker almost nothing to repeat: they are counted in the
    // metrics, never written to the audit log, so they cannot flood it.
    // Every refusal is logged once, with the name tried and the source.
    state.metrics.observe("login", started.elapsed());
    match result {
        Ok(response) => response,
        Err(e) => {
            state.metrics.failure(e.code().as_str());
            let user = named.as_deref().unwrap_or("-");
            if crate::http::status_for(e.code()).is_server_error() {
                tracing::error!(route = "login", code = e.code().as_str(), user, client = %source, detail = e.message(), "login failed");
            } else {
                tracing::info!(route = "login", code = e.code().as_str(), user, client = %source, detail = e.message(), "login refused");
            }
            crate::http::error_response(&e, None)
        }
    }
}

/// The longest user name a log line repeats (a valid one is at most 129 bytes).
const LOGGED_NAME: usize = 140;

async fn do_login(
    state: &IssuerState,
    request: Request,
    source: std::net::IpAddr,
    named: &mut Option<String>,
) -> Result<Response> {
    let (mut parts, body) = request.into_parts();
    // H1 and H2 of the binding: the proof and the path before the body.
    let proof = state.binding.proof_header(&mut parts)?;
    let body = state.binding.body(&parts, body).await?;
    let login: LoginRequest = json_body(&parts, &body)?;
    let password = login.password.map(Zeroizing::new);
    // Logged as given (escaped, bounded) even when it is not a valid name.
    *named = Some(format!(
        "{:?}",
        login.user.chars().take(LOGGED_NAME).collect::<String>()
    ));
    let user = UserName::parse(&login.user)?;
    *named = Some(user.to_string());
    let key_bytes =
        b64url_decode(&login.key).map_err(|_| Error::new(Code::IssuerInvalidKey, "key is not base64url"))?;
    let key = PublicKey::from_cose_key(&key_bytes)
        .map_err(|e| Error::new(Code::IssuerInvalidKey, format!("the key to bind is refused: {e}")))?;
    let lifetime = login.lifetime.unwrap_or(state.config.session_lifetime);
    if lifetime == 0 || lifetime > state.config.max_session_lifetime {
        return err(
            Code::IssuerLifetimeExceeded,
            format!(
                "a session lives 1 to {} s, not {lifetime}",
                state.config.max_session_lifetime
            ),
        );
    }
    // Proof of possession of the key to bind, for exactly this request.
    state
        .binding
        .verify_possession(&state.sessions, &key, &proof, &parts, &body)
        .await?;

    let now = state.now() as i64;
    let who = user.to_string();
    let origin = Origin {
        client: source.to_string(),
        key_thumbprint: key.thumbprint().to_string(),
    };
    let auth = state.store.conn().await?.user_auth(&user).await?;
    let (who_ref, origin_ref) = (&who, &origin);
    let fail = |code: Code, why: &'static str| async move {
        let who = who_ref;
        state.metrics.login(false);
        state
            .store
            .conn()
            .await?
            .record_from(origin_ref, now, who, "login", who, code.as_str())
            .await?;
        err::<Response>(code, why)
    };
    let (max_failures, lockout) = (state.config.login_max_failures, state.config.login_lockout as i64);
    // A hashing slot first: a login the issuer is too busy to check is
    // refused (503) before it can count towards a lockout.
    let slot = match &password {
        Some(_) => Some(super::password::hash_slot().await?),
        None => None,
    };
    let is_password_login = password.is_some();
    let Some(auth) = auth else {
        // Names that are not users: password logins are counted and locked
        // like users' (in the database, in a bounded set of buckets), and
        // the password is checked against a decoy, so that neither the
        // answers nor their cost tell the two apart. Their failures are
        // totalled per minute rather than audited one by one (§5.7), so
        // random names cannot grow the database.
        let outcome = match (slot, password) {
            (Some(slot), Some(password)) => {
                let mut tx = state.store.begin().await?;
                let reserved = tx
                    .reserve_unknown_login_attempt(&user, now, max_failures, lockout)
                    .await?;
                tx.commit().await?;
                if reserved {
                    super::password::verify(slot, password, None).await;
                    Code::IssuerInvalidCredentials
                } else {
                    Code::IssuerLocked
                }
            }
            _ => Code::IssuerInvalidCredentials,
        };
        state.metrics.login(false);
        state
            .store
            .conn()
            .await?
            .count_unknown_login_failure(now, outcome.as_str())
            .await?;
        return match outcome {
            Code::IssuerLocked => err(outcome, "too many failed logins; try again later"),
            _ => err(outcome, "unknown user or wrong credentials"),
        };
    };
    // A password login counts as a failure from here until it succeeds, so
    // that parallel guesses cannot all pass the lock. Key logins are
    // neither counted nor refused by the lockout: a key that is not
    // registered guesses nothing, and must not lock out the password (§5.5).
    if is_password_login
        && !state
            .store
            .conn()
            .await?
            .reserve_login_attempt(&user, now, max_failures, lockout)
            .await?
    {
        return fail(Code::IssuerLocked, "too many failed logins; try again later").await;
    }
    let credentials_ok = match (slot, password) {
        (Some(slot), Some(password)) => super::password::verify(slot, password, auth.password_hash.clone()).await,
        _ => {
            state
                .store
                .conn()
                .await?
                .user_has_key(&user, &key.thumbprint().to_string())
                .await?
        }
    };
    if !credentials_ok {
        return fail(Code::IssuerInvalidCredentials, "unknown user or wrong credentials").await;
    }
    if !auth.enabled {
        return fail(Code::IssuerDisabled, "the user or its domain is disabled").await;
    }
    let (signing_key, kid) = state.keys.current()?;
    let token = TokenBuilder::session(&state.config.issuer_id, &who, key.clone(), now as u64)
        .lifetime(lifetime)
        .domain(user.domain.as_str())
        .sign(&signing_key, &kid)?;
    // The counter's reset and the audit record commit together, before
    // the token is handed out.
    let mut tx = state.store.begin().await?;
    if is_password_login {
        tx.reset_login_failures(&user).await?;
    }
    tx.record_from(&origin, now, &who, "login", &who, "ok").await?;
    tx.commit().await?;
    state.metrics.login(true);
    Ok(json_response(
        StatusCode::OK,
        &LoginResponse {
            session_token: token.to_base64url(),
            expires_at: now as u64 + lifetime,
            subject: who,
            key_thumbprint: key.thumbprint().to_string(),
        },
    ))
}

/// The answer to a login.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginResponse {
    /// the session token, base64url without padding
    session_token: String,
    /// Unix seconds: the token's exp
    expires_at: u64,
    /// `name@domain` of the user
    subject: String,
    /// the bound key's thumbprint (spec/formats.md §5.3): base64url of its 32 bytes, 43 characters
    key_thumbprint: String,
}

/// spec/issuer.md §5.2
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    audience: String,
    project: Option<String>,
    domain: Option<String>,
    roles: Option<Vec<String>>,
    lifetime: Option<u64>,
    /// A trust of which the caller is the trustee: a delegated token
    /// (spec/delegation.md §4); project and domain then come from the trust.
    trust: Option<String>,
    /// Restricts the token to this instance of the audience service (a VM,
    /// a host id): 1 to 255 visible ASCII characters, no spaces.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")]
    instance: Option<InstanceId>,
}

/// An instance id of a mint request, refused while the body is parsed
/// (`issuer.bad_request`) when no token could carry it.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct InstanceId(String);

impl InstanceId {
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceId {
    type Error = String;

    fn try_from(id: String) -> std::result::Result<Self, String> {
        match crate::token::instance_id_problem(&id) {
            None => Ok(InstanceId(id)),
            Some(problem) => Err(format!("{}instance`: {problem}", crate::json::INVALID_FIELD)),
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    operation_id = "mint",
    tag = "public",
    summary = "Mint a service token for one audience",
    description = "Needs the session token (`Authorization: KB`) and a proof made with the session's key, htu = issuer id + `/v1/tokens`. Every mint re-checks the user, the project and the role assignments (spec/issuer.md §6). With `trust`, a delegated token for the trust's trustor, bound to the caller's key, after the checks TM0–TM7 of spec/delegation.md §4.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = MintRequest, content_type = "application/json", example = json!({"audience": "https://nova.example", "project": "turing", "domain": "stoughton", "roles": ["reader"], "lifetime": 120, "instance": "vm-7f3a@host-12"})),
    responses(
        (status = 200, description = "A service token.", body = MintResponse, content_type = "application/json")
    )
)]
async fn mint(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let started = Instant::now();
    let result = do_mint(&state, request).await;
    respond(&state, "tokens", started, result)
}

async fn do_mint(state: &IssuerState, request: Request) -> Result<Response> {
    let (parts, verified, body) = verified(request).await?;
    let request: MintRequest = json_body(&parts, &body)?;
    let lifetime = request.lifetime.unwrap_or(state.config.service_lifetime);
    if lifetime == 0 || lifetime > state.config.service_lifetime {
        return err(
            Code::IssuerLifetimeExceeded,
            format!(
                "a service token lives 1 to {} s, not {lifetime}",
                state.config.service_lifetime
            ),
        );
    }
    check_audience(&request.audience)?;
    if request.audience == state.config.issuer_id {
        return err(
            Code::IssuerUnknownAudience,
            "session tokens come from login, not from /v1/tokens",
        );
    }
    if let Some(trust) = &request.trust {
        if request.project.is_some() || request.domain.is_some() {
            return err(
                Code::IssuerBadRequest,
                "a token from a trust is on the trust's project: give no project or domain",
            );
        }
        let origin = origin(state, &parts, Some(verified.key_thumbprint()));
        return super::trusts::mint(
            state,
            &verified,
            &origin,
            super::trusts::TrustMint {
                trust,
                audience: &request.audience,
                roles: request.roles.as_deref(),
                lifetime,
                instance: request.instance.as_ref().map(InstanceId::as_str),
            },
        )
        .await;
    }
    let user = UserName::parse(verified.subject())?;
    let project = match &request.project {
        Some(p) => {
            let name = Name::parse("project", p)?;
            let domain = match &request.domain {
                Some(d) => Name::parse("domain", d)?,
                None => user.domain.clone(),
            };
            Some(ProjectName::new(name, domain))
        }
        None if request.domain.is_some() || request.roles.is_some() => {
            return err(
                Code::IssuerBadRequest,
                "domain and roles are only meaningful with a project",
            );
        }
        None => None,
    };
    if request.audience == state.config.admin_audience()
        && project
            .as_ref()
            .is_none_or(|p| p.domain.as_str() != bootstrap_names::DOMAIN || p.name.as_str() != bootstrap_names::PROJECT)
    {
        return err(
            Code::IssuerForbidden,
            "admin tokens are scoped to project admin@default",
        );
    }
    // Re-check everything now: a disabled user, a revoked role or a removed
    // key stops at once.
    let thumbprint = verified.key_thumbprint().to_string();
    let session = SessionKey {
        thumbprint: &thumbprint,
        issued_at: verified.token().issued_at() as i64,
        leeway: state.config.leeway as i64,
    };
    let facts = state
        .store
        .conn()
        .await?
        .mint_facts_for(&user, project.as_ref(), &request.audience, Some(session))
        .await?;
    let client = client_address(state, &parts);
    // The admin audience follows the issuer id; every other audience is
    // registered, or a peer issuer (a token to exchange there).
    if request.audience != state.config.admin_audience() && !facts.service_registered {
        if super::federation::is_peer(state, &request.audience).await? {
            return mint_for_peer(state, &verified, &request, &facts, lifetime, session, &client).await;
        }
        return err(
            Code::IssuerUnknownAudience,
            format!(
                "{:?} is not a registered service",
                crate::verify::token::truncate(&request.audience)
            ),
        );
    }
    session_still_holds(&facts, session)?;
    let roles = match &project {
        None => Vec::new(),
        Some(p) => {
            if !facts.project_exists {
                return err(Code::IssuerUnknownProject, format!("project {p} does not exist"));
            }
            if !facts.project_enabled {
                return err(Code::IssuerDisabled, format!("project {p} or its domain is disabled"));
            }
            let roles = match &request.roles {
                None => facts.roles.clone(),
                Some(wanted) => {
                    let missing: Vec<&String> = wanted.iter().filter(|r| !facts.roles.contains(r)).collect();
                    if !missing.is_empty() {
                        return err(Code::IssuerRoleNotHeld, format!("you do not hold {missing:?} on {p}"));
                    }
                    let mut roles = wanted.clone();
                    roles.sort();
                    roles.dedup();
                    roles
                }
            };
            if roles.is_empty() {
                return err(Code::IssuerRoleNotHeld, format!("you hold no role on {p}"));
            }
            roles
        }
    };
    let now = state.now();
    let (signing_key, kid) = state.keys.current()?;
    let mut builder = TokenBuilder::service(
        &state.config.issuer_id,
        verified.subject(),
        &request.audience,
        verified.token().cnf().clone(),
        now,
    )
    .lifetime(lifetime)
    .roles(roles.iter().cloned());
    if let Some(p) = &project {
        builder = builder.scope(p.domain.as_str(), p.name.as_str());
    }
    if let Some(instance) = &request.instance {
        builder = builder.instance(instance.as_str());
    }
    let token = builder.sign(&signing_key, &kid)?;
    audit_mint(state, verified.subject(), session, &request.audience, &client).await?;
    state.metrics.minted();
    Ok(json_response(
        StatusCode::OK,
        &MintResponse {
            token: token.to_base64url(),
            expires_at: now + lifetime,
            audience: request.audience,
            project: project.as_ref().map(|p| p.name.as_str().to_owned()),
            domain: project.as_ref().map(|p| p.domain.as_str().to_owned()),
            roles,
            subject: verified.subject().to_owned(),
            trust: None,
            actors: Vec::new(),
            instance: request.instance.map(|i| i.0),
        },
    ))
}

/// The user of the session still exists (the same one: not deleted and
/// created again since the session began), its key was not removed since,
/// and it and its domain are enabled (spec/issuer.md §6.3 steps 11, 12).
fn session_still_holds(facts: &super::store::MintFacts, session: SessionKey<'_>) -> Result<()> {
    if !facts.same_user(session) {
        return err(Code::IssuerInvalidCredentials, "the session's user no longer exists");
    }
    if facts.key_removed {
        return err(
            Code::IssuerKeyRemoved,
            "the key this session is bound to was removed from the user: log in again with another key",
        );
    }
    if !facts.user_enabled {
        return err(Code::IssuerDisabled, "the user or its domain is disabled");
    }
    Ok(())
}

/// Audits a mint in the `token.mint` row of its user, key, audience and
/// minute (spec/issuer.md §10.4): the row's first mint waits for the
/// database, so no token is answered unless its minute's row is durable.
async fn audit_mint(
    state: &IssuerState,
    subject: &str,
    session: SessionKey<'_>,
    audience: &str,
    client: &str,
) -> Result<()> {
    let now = state.now() as i64;
    let key = MintKey {
        minute: now - now.rem_euclid(60),
        actor: subject.to_owned(),
        key_thumbprint: session.thumbprint.to_owned(),
        audience: audience.to_owned(),
    };
    state.mint_audit.note(&state.store, key, client).await
}

/// A token whose audience is a peer issuer, to be exchanged there
/// (spec/federation.md §3): unscoped, no roles, never from a trust; the peer
/// grants roles of its own. A general-purpose token never crosses.
async fn mint_for_peer(
    state: &IssuerState,
    verified: &VerifiedRequest,
    request: &MintRequest,
    facts: &super::store::MintFacts,
    lifetime: u64,
    session: SessionKey<'_>,
    client: &str,
) -> Result<Response> {
    if request.project.is_some() || request.domain.is_some() || request.roles.is_some() {
        return err(
            Code::IssuerBadRequest,
            "a token for a peer issuer carries no project, domain or roles: the peer grants its own",
        );
    }
    // A peer issuer has no instances: its exchange would refuse the token (cwt.instance).
    if request.instance.is_some() {
        return err(
            Code::IssuerBadRequest,
            "a token for a peer issuer is not bound to an instance",
        );
    }
    session_still_holds(facts, session)?;
    let now = state.now();
    let (signing_key, kid) = state.keys.current()?;
    let token = TokenBuilder::service(
        &state.config.issuer_id,
        verified.subject(),
        &request.audience,
        verified.token().cnf().clone(),
        now,
    )
    .lifetime(lifetime)
    .sign(&signing_key, &kid)?;
    audit_mint(state, verified.subject(), session, &request.audience, client).await?;
    state.metrics.minted();
    Ok(json_response(
        StatusCode::OK,
        &MintResponse {
            token: token.to_base64url(),
            expires_at: now + lifetime,
            audience: request.audience.clone(),
            project: None,
            domain: None,
            roles: Vec::new(),
            subject: verified.subject().to_owned(),
            trust: None,
            actors: Vec::new(),
            instance: None,
        },
    ))
}

/// The answer to a token request.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MintResponse {
    /// the service token, base64url without padding
    pub token: String,
    /// Unix seconds: the token's exp
    pub expires_at: u64,
    /// the audience, as requested
    pub audience: String,
    /// project name, null for an unscoped token
    #[schema(required = true)]
    pub project: Option<String>,
    /// the project's domain, null for an unscoped token
    #[schema(required = true)]
    pub domain: Option<String>,
    /// roles in the token, sorted, distinct; empty for an unscoped token
    pub roles: Vec<String>,
    /// the token's `sub`: the caller, or the trustor of a delegated token
    pub subject: String,
    /// the trust a delegated token was minted from; null otherwise
    #[schema(required = true)]
    pub trust: Option<String>,
    /// the actor chain of a delegated token, current actor (the caller) first; empty otherwise
    pub actors: Vec<String>,
    /// the instance of the audience the token is restricted to, as requested; null for a token valid at every instance
    #[schema(required = true)]
    pub instance: Option<String>,
}

/// base64url of raw bytes (used by the admin API for keys).
pub(super) fn b64(bytes: &[u8]) -> String {
    b64url_encode(bytes)
}
