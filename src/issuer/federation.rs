//! Federation (spec/federation.md): the peer issuers this one trusts, the
//! roles it grants their users, and the token exchange. A peer's token
//! crosses only when it was minted for this issuer (its audience), by a peer
//! authoritative for the subject's domain, with a proof by its key; what
//! comes back is this issuer's own token, bound to the same key, with roles
//! from this issuer's grants alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::IssuerState;
use super::admin::{action, read};
use super::api::{json_body, json_response, respond, verified};
use super::store::federation::is_local_domain;
use super::store::{Audit, Federation, Peer, RemoteGrant, Services};
use crate::error::{Code, Error, Result, err};
use crate::federation::{ExchangeRequest, exchanged_lifetime};
use crate::keyset::{HttpKeys, HttpKeysOptions};
use crate::names::{Name, ProjectName, UserName};
use crate::token::{MAX_SERVICE_LIFETIME, TokenBuilder};
use crate::verify::{IssuerDirectory, TrustedIssuer, VerifiedRequest};

/// Most peers one issuer keeps (each has a key source that refreshes).
pub const MAX_PEERS: usize = 256;
/// Most domains one peer may be authoritative for, and most projects it may be limited to.
pub const MAX_PEER_NAMES: usize = 256;

/// The route of the exchange; it sits behind its own verifying layer
/// (`super::router`), whose issuers are the peers.
pub(super) fn exchange_routes() -> OpenApiRouter<Arc<IssuerState>> {
    OpenApiRouter::new().routes(routes!(exchange))
}

/// The admin routes of peers and remote grants.
pub(super) fn admin_routes() -> OpenApiRouter<Arc<IssuerState>> {
    OpenApiRouter::new()
        .routes(routes!(list_peers, create_peer, delete_peer))
        .routes(routes!(list_remote_grants, grant_remote, revoke_remote))
}

/// The peers' key sets, each fetched from its own URL and kept apart: the
/// exchange verifier's issuers. Refreshed from the database at start-up,
/// after a peer is added or removed here, and every few seconds (another
/// replica may have changed them).
pub(crate) struct PeerKeys {
    directory: IssuerDirectory,
    sources: tokio::sync::Mutex<Sources>,
    // The peers as last read from the database, with the key-set URL of
    // each one's live source: what refusals are explained with, without a
    // database query on an unauthenticated path.
    known: std::sync::RwLock<Arc<Known>>,
    data_dir: std::path::PathBuf,
}

#[derive(Default)]
struct Known {
    // issuer id → key-set URL in the database
    configured: HashMap<String, String>,
    // issuer id → key-set URL of the source in the directory
    live: HashMap<String, String>,
}

/// How long a peer whose key set could not be fetched waits before the
/// poll tries again (an administrator's change on this replica tries at once).
const PEER_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Default)]
struct Sources {
    // issuer id → (key-set URL, its source); a peer re-added with another
    // URL gets a new source.
    live: HashMap<String, (String, HttpKeys)>,
    // issuer id → when its key set last failed to load.
    failed: HashMap<String, std::time::Instant>,
}

impl PeerKeys {
    pub(crate) fn new(data_dir: &std::path::Path) -> Self {
        PeerKeys {
            directory: IssuerDirectory::new(Vec::new()).expect("an empty list has no duplicates"),
            sources: Default::default(),
            known: Default::default(),
            data_dir: data_dir.join("peer-keys"),
        }
    }

    /// The directory the exchange verifier reads.
    pub(crate) fn directory(&self) -> IssuerDirectory {
        self.directory.clone()
    }

    /// Re-reads the peers and starts a key source for each new one. A peer
    /// whose key set cannot be fetched (and was never cached) is left out
    /// until a later refresh; its tokens are refused with
    /// `issuer.unavailable` meanwhile.
    /// Whether `issuer` was a peer when the peers were last read.
    pub(crate) fn is_configured(&self, issuer: &str) -> bool {
        self.known().configured.contains_key(issuer)
    }

    /// The key-set URL of the source the directory holds for `issuer`.
    pub(crate) fn live_url(&self, issuer: &str) -> Option<String> {
        self.known().live.get(issuer).cloned()
    }

    fn known(&self) -> Arc<Known> {
        self.known.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the peers from `store` and starts a key source for each new
    /// one, all under one lock, so a slower refresh never installs an older
    /// reading after a newer one.
    pub(crate) async fn refresh(&self, store: &super::Store, retry_now: bool) -> Result<()> {
        let mut sources = self.sources.lock().await;
        let peers = store.conn().await?.list_peers().await?;
        let peers = peers.as_slice();
        let Sources { live, failed } = &mut *sources;
        live.retain(|issuer, (url, _)| peers.iter().any(|p| &p.issuer == issuer && &p.keys_url == url));
        failed.retain(|issuer, _| peers.iter().any(|p| &p.issuer == issuer));
        for peer in peers {
            if live.contains_key(&peer.issuer) {
                continue;
            }
            if !retry_now && failed.get(&peer.issuer).is_some_and(|at| at.elapsed() < PEER_RETRY) {
                continue;
            }
            if let Err(e) = std::fs::create_dir_all(&self.data_dir) {
                tracing::warn!(dir = %self.data_dir.display(), error = %e, "cannot create the peer key cache directory");
            }
            let options = HttpKeysOptions {
                cache_file: Some(self.data_dir.join(format!(
                    "{}.cbor",
                    crate::encoding::hex_encode(&crate::sha256(peer.issuer.as_bytes())[..16])
                ))),
                ..HttpKeysOptions::default()
            };
            match HttpKeys::start(&peer.keys_url, options).await {
                Ok(keys) => {
                    failed.remove(&peer.issuer);
                    live.insert(peer.issuer.clone(), (peer.keys_url.clone(), keys));
                }
                Err(e) => {
                    failed.insert(peer.issuer.clone(), std::time::Instant::now());
                    tracing::warn!(
                        peer = %peer.issuer,
                        url = %peer.keys_url,
                        error = %e,
                        retry_s = PEER_RETRY.as_secs(),
                        "the peer's key set cannot be fetched; its tokens are refused until it can"
                    );
                }
            }
        }
        let issuers = live
            .iter()
            .map(|(issuer, (_, keys))| TrustedIssuer::new(issuer.clone(), keys.clone()))
            .collect();
        if let Err(e) = self.directory.replace(issuers) {
            tracing::error!(error = %e, "the peer directory was not replaced");
        }
        let known = Known {
            configured: peers.iter().map(|p| (p.issuer.clone(), p.keys_url.clone())).collect(),
            live: live
                .iter()
                .map(|(issuer, (url, _))| (issuer.clone(), url.clone()))
                .collect(),
        };
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(known);
        Ok(())
    }
}

impl IssuerState {
    /// Re-reads the peers from the database into the exchange verifier.
    pub async fn refresh_peers(&self) -> Result<()> {
        self.reload_peers(false).await
    }

    /// [`IssuerState::refresh_peers`]; `retry_now` also tries at once the
    /// peers whose key set failed to load less than 30 s ago.
    pub(crate) async fn reload_peers(&self, retry_now: bool) -> Result<()> {
        self.peer_keys.refresh(&self.store, retry_now).await
    }
}

/// The answers the exchange's verifying layer gives are told in the
/// federation's terms (spec/federation.md §4): a missing proof is
/// `fed.pop_missing`, a token for another audience `fed.audience`, one of
/// an issuer that is not a peer `fed.peer_unknown`, and an unknown kid is
/// explained when the peer withdrew its keys or the kid is another issuer's.
/// Only codes change: the request stays refused, and the unsigned header
/// and claims read here choose among refusals, never towards acceptance.
pub(super) async fn explain_exchange_refusals(
    State(state): State<Arc<IssuerState>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let authorization = request.headers().get(http::header::AUTHORIZATION).cloned();
    let response = next.run(request).await;
    if response.status() != StatusCode::UNAUTHORIZED {
        return response;
    }
    let Some(code) = response
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("KB error=\""))
        .and_then(|v| v.split('"').next())
        .map(str::to_owned)
    else {
        return response;
    };
    let token = authorization.as_ref().and_then(|value| {
        let token = value.to_str().ok()?.trim().split_once(' ')?.1.trim();
        crate::encoding::b64url_decode(token).ok()
    });
    let claimed = token
        .as_deref()
        .and_then(|t| crate::token::UnverifiedToken::from_slice(t).ok());
    let explained = match code.as_str() {
        "proof.missing" => Some(Error::new(
            Code::FedPopMissing,
            "an exchange needs a proof made with the key the token is bound to",
        )),
        "cwt.aud_mismatch" | "cwt.kind_mismatch" => Some(Error::new(
            Code::FedAudience,
            format!(
                "only a token whose audience is this issuer ({}) is exchanged: ask your issuer for one",
                state.config.issuer_id
            ),
        )),
        "cwt.iss_unknown" => Some(match &claimed {
            Some(t) if t.claims_origin_issuer().is_some() || t.issuer() == state.config.issuer_id => Error::new(
                Code::FedChain,
                "a token this issuer or an exchange issued is not exchanged again: exchanges stop at one hop",
            ),
            Some(t) if state.peer_keys.is_configured(t.issuer()) => Error::new(
                Code::IssuerUnavailable,
                "the key set of this peer has not been fetched yet; try again later",
            ),
            _ => Error::new(Code::FedPeerUnknown, "the token's issuer is not a peer of this issuer"),
        }),
        "cose.key_unknown" => claimed.as_ref().and_then(|t| {
            let issuer = t.issuer();
            let kid = t.kid();
            let own = state.directory_key_set(issuer)?;
            if own.is_empty() {
                return Some(Error::new(
                    Code::FedIssuerRevoked,
                    "the peer withdrew every key (its key set is empty): none of its tokens is accepted",
                ));
            }
            let elsewhere = state.keys.published().is_ok_and(|set| set.get(kid).is_some())
                || state
                    .peer_keys
                    .directory
                    .snapshot()
                    .iter()
                    .any(|other| other.id() != issuer && other.key_set().get(kid).is_some());
            elsewhere.then(|| {
                Error::new(
                    Code::FedKeyIssuerMismatch,
                    "the token is signed with a key of another issuer than the one it names",
                )
            })
        }),
        _ => None,
    };
    // The binding counted the refusal already (under its own code).
    match explained {
        Some(e) => crate::http::error_response(&e, None),
        None => response,
    }
}

/// Whether `issuer` is a configured peer (read from the database).
pub(super) async fn is_peer(state: &IssuerState, issuer: &str) -> Result<bool> {
    Ok(state
        .store
        .conn()
        .await?
        .list_peers()
        .await?
        .iter()
        .any(|p| p.issuer == issuer))
}

impl IssuerState {
    /// A peer's current key set, if the peer is in the exchange directory.
    fn directory_key_set(&self, issuer: &str) -> Option<Arc<crate::key::KeySet>> {
        self.peer_keys.directory.get(issuer).map(|t| t.key_set())
    }
}

/// The answer to an exchange.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ExchangeResponse {
    /// this issuer's token, base64url without padding
    token: String,
    /// Unix seconds: the token's exp (at most the exchanged token's)
    expires_at: u64,
    /// the audience, as requested
    audience: String,
    /// project name
    project: String,
    /// the project's domain
    domain: String,
    /// the roles granted here, sorted
    roles: Vec<String>,
    /// the remote user, `name@domain`
    subject: String,
    /// the peer that authenticated the subject: the token's origin issuer
    origin: String,
    /// the instance the token is restricted to; null for every instance
    #[schema(required = true)]
    instance: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/exchange",
    operation_id = "exchange",
    tag = "public",
    summary = "Exchange a peer's token for one of this issuer's",
    description = "Needs a token minted by a configured peer for this issuer (`Authorization: KB`) and a proof made with its key, htu = issuer id + `/v1/exchange`. After the steps F1–F8 of spec/federation.md §4, answers a service token of this issuer for the remote user, bound to the same key, with the roles granted here to (peer, user) and the peer as origin issuer. Every exchange and every refusal after the token and proof hold is audited as `federation.exchange`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = ExchangeRequest, content_type = "application/json", example = json!({"audience": "https://nova.canton.example", "project": "turing", "domain": "canton", "roles": ["member"]})),
    responses(
        (status = 200, description = "A service token of this issuer.", body = ExchangeResponse, content_type = "application/json")
    )
)]
async fn exchange(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let started = Instant::now();
    let result = async {
        let (parts, verified, body) = verified(request).await?;
        let now = state.now();
        let outcome = do_exchange(&state, &verified, &parts, &body, now).await;
        let origin = verified.issuer().to_owned();
        let (target, code) = match &outcome {
            Ok(answer) => (
                format!(
                    "{} for {} on {}@{} from {origin}",
                    answer.audience, answer.subject, answer.project, answer.domain
                ),
                "ok",
            ),
            Err(e) => (format!("{} from {origin}", verified.subject()), e.code().as_str()),
        };
        if outcome
            .as_ref()
            .err()
            .is_none_or(|e| !super::store::is_outage(e.code()))
        {
            // The token is answered only once its audit record is written.
            state
                .store
                .conn()
                .await?
                .record_from(
                    &super::api::origin(&state, &parts, Some(verified.key_thumbprint())),
                    now as i64,
                    &format!("{} via {origin}", verified.subject()),
                    "federation.exchange",
                    &target,
                    code,
                )
                .await?;
        }
        outcome.map(|answer| json_response(StatusCode::OK, &answer))
    }
    .await;
    respond(&state, "exchange", started, result)
}

/// F1 (the peer, re-read) and F4–F8, on a token and proof the layer verified.
async fn do_exchange(
    state: &IssuerState,
    verified: &VerifiedRequest,
    parts: &http::request::Parts,
    body: &[u8],
    now: u64,
) -> Result<ExchangeResponse> {
    let origin = verified.issuer();
    let mut conn = state.store.conn().await?;
    // F1: still a peer (it may have been removed since the directory was read).
    let peers = conn.list_peers().await?;
    let Some(peer) = peers.iter().find(|p| p.issuer == origin) else {
        return err(
            Code::FedPeerUnknown,
            "the token's issuer is no longer a peer of this issuer",
        );
    };
    // The token was checked with the keys of the source this replica holds:
    // after the peer's key-set URL changed, only the new source's count.
    if state.peer_keys.live_url(origin).as_deref() != Some(peer.keys_url.as_str()) {
        return err(
            Code::IssuerUnavailable,
            "the peer's key-set URL changed and its new key set is not loaded yet; try again in a few seconds",
        );
    }
    // F4: one hop only.
    let claims = verified.token().claims();
    if claims.origin_issuer.is_some() || claims.trust_id.is_some() || !claims.actor_chain.is_empty() {
        return err(
            Code::FedChain,
            "a federated or delegated token is not exchanged: exchanges stop at one hop",
        );
    }
    // F5: the peer speaks only for its own domains, never for ours.
    let user = UserName::parse(verified.subject())?;
    if !peer.domains.iter().any(|d| d == user.domain.as_str())
        || is_local_domain(&mut conn, user.domain.as_str()).await?
    {
        return err(
            Code::FedDomain,
            format!("{origin} is not authoritative for domain {} here", user.domain),
        );
    }
    // F6: the target is one of our services and projects, within the peer's limits.
    let input: ExchangeRequest = json_body(parts, body)?;
    let draft = input.check(state.config.service_lifetime)?;
    if input.audience == state.config.issuer_id
        || input.audience == state.config.admin_audience()
        || peers.iter().any(|p| p.issuer == input.audience)
    {
        return err(
            Code::FedInvalidTarget,
            "an exchange mints service tokens only: not for this issuer, its admin API or another issuer",
        );
    }
    let project = draft.project.clone();
    if !peer.projects.is_empty() && !peer.projects.contains(&project) {
        return err(
            Code::FedInvalidTarget,
            format!("users of {origin} may not reach project {project}"),
        );
    }
    let facts = conn.exchange_facts(origin, &user, &project, &input.audience).await?;
    drop(conn);
    if !facts.service_registered {
        return err(
            Code::FedInvalidTarget,
            format!(
                "{:?} is not a registered service of this issuer",
                crate::verify::token::truncate(&input.audience)
            ),
        );
    }
    if !facts.project_exists {
        return err(Code::IssuerUnknownProject, format!("project {project} does not exist"));
    }
    if !facts.project_enabled {
        return err(
            Code::IssuerDisabled,
            format!("project {project} or its domain is disabled"),
        );
    }
    // F7: roles from our grants alone; nothing of the peer's token passes.
    if facts.roles.is_empty() {
        return err(
            Code::FedNoGrants,
            format!("{user} of {origin} holds no role on {project} here"),
        );
    }
    let roles = match draft.roles {
        None => facts.roles.clone(),
        Some(wanted) => {
            let missing: Vec<&String> = wanted.iter().filter(|r| !facts.roles.contains(r)).collect();
            if !missing.is_empty() {
                return err(
                    Code::FedNoGrants,
                    format!("{user} of {origin} does not hold {missing:?} on {project} here"),
                );
            }
            wanted
        }
    };
    // F8: the lifetime, clamped to the peer's limit and the token's own expiry.
    let lifetime = exchanged_lifetime(
        draft.lifetime,
        state.config.service_lifetime,
        peer.max_lifetime,
        verified.token().expires_at(),
        now,
    )?;
    let (signing_key, kid) = state.keys.current()?;
    let mut builder = TokenBuilder::service(
        &state.config.issuer_id,
        verified.subject(),
        &input.audience,
        verified.token().cnf().clone(),
        now,
    )
    .lifetime(lifetime)
    .roles(roles.iter().cloned())
    .scope(project.domain.as_str(), project.name.as_str())
    .origin_issuer(origin);
    if let Some(instance) = &draft.instance {
        builder = builder.instance(instance.as_str());
    }
    let token = builder.sign(&signing_key, &kid)?;
    state.metrics.minted();
    Ok(ExchangeResponse {
        token: token.to_base64url(),
        expires_at: now + lifetime,
        audience: input.audience,
        project: project.name.as_str().to_owned(),
        domain: project.domain.as_str().to_owned(),
        roles,
        subject: verified.subject().to_owned(),
        origin: origin.to_owned(),
        instance: draft.instance,
    })
}

// ---- Administration ----

/// A peer to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PeerInput {
    /// the peer's issuer id
    issuer: String,
    /// its key-set URL: https, or http to a loopback address
    keys_url: String,
    /// the domains it is authoritative for (at least one; none of this issuer's)
    domains: Vec<String>,
    /// the local projects its users may reach (`project@domain`); default any
    #[serde(default)]
    projects: Vec<String>,
    /// longest lifetime of an exchanged token, 1 to 300 s; default the service-token lifetime
    max_lifetime: Option<u64>,
}

/// The peer to remove.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PeerId {
    /// the peer's issuer id
    issuer: String,
}

/// A removed peer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PeerDeleted {
    /// the peer's issuer id
    issuer: String,
    /// always true
    deleted: bool,
}

/// A remote grant to make or revoke.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoteGrantInput {
    /// the remote user, `name@domain` (a domain a peer is authoritative for)
    user: String,
    /// a local project, `project@domain`
    project: String,
    /// a role
    role: String,
}

/// A revoked remote grant.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoteRevoked {
    /// the peer authoritative for the user's domain
    origin: String,
    /// the remote user
    user: String,
    /// the project
    project: String,
    /// the role
    role: String,
    /// always true
    revoked: bool,
}

fn parse_peer(state: &IssuerState, input: PeerInput) -> Result<Peer> {
    crate::proof::normalize_uri(&input.issuer).map_err(|e| {
        Error::new(
            Code::IssuerBadRequest,
            format!("a peer's issuer id is an http(s) URL: {}", e.message()),
        )
    })?;
    if input.issuer.len() > 256 {
        return err(Code::IssuerBadRequest, "a peer's issuer id is at most 256 bytes");
    }
    let own = crate::proof::normalize_uri(&state.config.issuer_id)?;
    if crate::proof::normalize_uri(&input.issuer).ok().as_ref() == Some(&own) {
        return err(Code::IssuerBadRequest, "this issuer is not its own peer");
    }
    // Keys are never pooled, not even by configuration (catalog FD-01).
    let own_keys = format!(
        "{}/.well-known/keybound/keys",
        state.config.issuer_id.trim_end_matches('/')
    );
    if crate::proof::normalize_uri(&input.keys_url).ok() == crate::proof::normalize_uri(&own_keys).ok() {
        return err(Code::IssuerBadRequest, "a peer's key-set URL is not this issuer's own");
    }
    HttpKeys::check_url(&input.keys_url, &HttpKeysOptions::default())
        .map_err(|e| Error::new(Code::IssuerBadRequest, e.message().to_owned()))?;
    if input.keys_url.len() > 2048 {
        return err(Code::IssuerBadRequest, "a key-set URL is at most 2048 bytes");
    }
    if input.domains.is_empty() || input.domains.len() > MAX_PEER_NAMES || input.projects.len() > MAX_PEER_NAMES {
        return err(
            Code::IssuerBadRequest,
            format!(
                "a peer is authoritative for 1 to {MAX_PEER_NAMES} domains and limited to at most {MAX_PEER_NAMES} projects"
            ),
        );
    }
    let mut domains = input
        .domains
        .iter()
        .map(|d| Name::parse("domain", d).map(|n| n.as_str().to_owned()))
        .collect::<Result<Vec<_>>>()?;
    domains.sort();
    domains.dedup();
    let mut projects = input
        .projects
        .iter()
        .map(|p| ProjectName::parse(p))
        .collect::<Result<Vec<_>>>()?;
    projects.sort_by_key(|p| p.to_string());
    projects.dedup();
    if input.max_lifetime.is_some_and(|s| s == 0 || s > MAX_SERVICE_LIFETIME) {
        return err(Code::IssuerBadRequest, "a peer's max_lifetime is 1 to 300 s");
    }
    Ok(Peer {
        issuer: input.issuer,
        keys_url: input.keys_url,
        domains,
        projects,
        max_lifetime: input.max_lifetime,
    })
}

#[utoipa::path(
    get,
    path = "/v1/admin/peers",
    operation_id = "listPeers",
    tag = "admin",
    summary = "List the peer issuers",
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "Every peer, by issuer id.", body = Vec<Peer>, content_type = "application/json")
    )
)]
async fn list_peers(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        state.store.conn().await?.list_peers().await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/peers",
    operation_id = "createPeer",
    tag = "admin",
    summary = "Add a peer issuer",
    description = "Its tokens for this issuer can then be exchanged (spec/federation.md §2). `issuer.bad_request` for this issuer's own id, a key-set URL over plain http to a remote host, with userinfo or not http(s), no domain, or a max_lifetime outside 1–300 s; `issuer.bad_request` also for this issuer's own key-set URL; `issuer.conflict` for a peer that exists, a domain that is this issuer's own or another peer's, another peer's key-set URL, or a registered service's audience as its id. Audited as `peer.create`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = PeerInput, content_type = "application/json", example = json!({"issuer": "https://stoughton.example", "keys_url": "https://stoughton.example/.well-known/keybound/keys", "domains": ["stoughton"], "projects": ["turing@canton"], "max_lifetime": 300})),
    responses(
        (status = 200, description = "The peer.", body = Peer, content_type = "application/json")
    )
)]
async fn create_peer(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let s = state.clone();
    let response = action(&state, request, "peer.create", |input: PeerInput, change| {
        Box::pin(async move {
            let peer = parse_peer(&s, input)?;
            let now = change.now();
            let tx = change.tx().await?;
            let peers = tx.list_peers().await?;
            if peers.len() >= MAX_PEERS {
                return err(
                    Code::IssuerConflict,
                    format!("this issuer has {MAX_PEERS} peers already"),
                );
            }
            if peers.iter().any(|p| p.keys_url == peer.keys_url) {
                return err(
                    Code::IssuerConflict,
                    "another peer has this key-set URL: keys of two issuers are never pooled",
                );
            }
            // A peer's id is a token audience at mint time: never also a service's.
            if tx.list_services().await?.contains(&peer.issuer) {
                return err(
                    Code::IssuerConflict,
                    format!("{} is a registered service: remove it first", peer.issuer),
                );
            }
            tx.create_peer(&peer, now).await?;
            Ok((peer.issuer.clone(), peer))
        })
    })
    .await;
    refresh_after(&state).await;
    response
}

#[utoipa::path(
    delete,
    path = "/v1/admin/peers",
    operation_id = "deletePeer",
    tag = "admin",
    summary = "Remove a peer issuer and its users' grants",
    description = "Its tokens are refused from the next exchange on (`fed.peer_unknown`); the roles granted to its users go with it. Tokens already exchanged live out their lifetime. Audited as `peer.delete`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = PeerId, content_type = "application/json", example = json!({"issuer": "https://stoughton.example"})),
    responses(
        (status = 200, description = "The peer is gone.", body = PeerDeleted, content_type = "application/json")
    )
)]
async fn delete_peer(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let response = action(&state, request, "peer.delete", |input: PeerId, change| {
        Box::pin(async move {
            change.tx().await?.delete_peer(&input.issuer).await?;
            Ok((
                input.issuer.clone(),
                PeerDeleted {
                    issuer: input.issuer,
                    deleted: true,
                },
            ))
        })
    })
    .await;
    refresh_after(&state).await;
    response
}

/// Peers changed here are used (or refused) at once on this replica.
async fn refresh_after(state: &IssuerState) {
    if let Err(e) = state.reload_peers(true).await {
        tracing::warn!(error = %e, "re-reading the peers failed; the next poll retries");
    }
}

/// The parts of a remote grant, with the peer authoritative for its user.
async fn parse_remote_grant(
    tx: &mut super::store::Conn,
    input: &RemoteGrantInput,
) -> Result<(String, UserName, ProjectName, Name)> {
    let user = UserName::parse(&input.user)?;
    let project = ProjectName::parse(&input.project)?;
    let role = Name::parse("role", &input.role)?;
    let Some(origin) = tx.peer_for_domain(user.domain.as_str()).await? else {
        return err(
            Code::IssuerNotFound,
            format!(
                "no peer is authoritative for domain {}: add one first (keybound admin peer add)",
                user.domain
            ),
        );
    };
    Ok((origin, user, project, role))
}

#[utoipa::path(
    get,
    path = "/v1/admin/remote-grants",
    operation_id = "listRemoteGrants",
    tag = "admin",
    summary = "List the roles granted to users of peer domains",
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "Every remote grant.", body = Vec<RemoteGrant>, content_type = "application/json")
    )
)]
async fn list_remote_grants(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        state.store.conn().await?.list_remote_grants().await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/remote-grants",
    operation_id = "grantRemote",
    tag = "admin",
    summary = "Grant a role on a local project to a user of a peer's domain",
    description = "Stored keyed by (origin issuer, subject): the origin is the peer authoritative for the user's domain (`issuer.not_found` when none is). Used at the next exchange. Audited as `grant.remote`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = RemoteGrantInput, content_type = "application/json", example = json!({"user": "ayoung@stoughton", "project": "turing@canton", "role": "member"})),
    responses(
        (status = 200, description = "The remote grant.", body = RemoteGrant, content_type = "application/json")
    )
)]
async fn grant_remote(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "grant.remote", |input: RemoteGrantInput, change| {
        Box::pin(async move {
            let now = change.now();
            let tx = change.tx().await?;
            let (origin, user, project, role) = parse_remote_grant(tx, &input).await?;
            tx.grant_remote(&origin, &user, &project, &role, now).await?;
            Ok((
                format!("{user} of {origin} {project} {role}"),
                RemoteGrant {
                    origin,
                    user,
                    project,
                    role: role.as_str().to_owned(),
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/admin/remote-grants",
    operation_id = "revokeRemote",
    tag = "admin",
    summary = "Revoke a role granted to a user of a peer's domain",
    description = "Takes effect at the next exchange; tokens already exchanged live out their lifetime. Audited as `revoke.remote`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = RemoteGrantInput, content_type = "application/json", example = json!({"user": "ayoung@stoughton", "project": "turing@canton", "role": "member"})),
    responses(
        (status = 200, description = "The remote grant is gone.", body = RemoteRevoked, content_type = "application/json")
    )
)]
async fn revoke_remote(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "revoke.remote", |input: RemoteGrantInput, change| {
        Box::pin(async move {
            let tx = change.tx().await?;
            let (origin, user, project, role) = parse_remote_grant(tx, &input).await?;
            tx.revoke_remote(&origin, &user, &project, &role).await?;
            Ok((
                format!("{user} of {origin} {project} {role}"),
                RemoteRevoked {
                    origin,
                    user: user.to_string(),
                    project: project.to_string(),
                    role: role.as_str().to_owned(),
                    revoked: true,
                },
            ))
        })
    })
    .await
}
