//! Trusts (spec/delegation.md): creation by the trustor (with its session)
//! or an administrator, listing, deletion, and the checks of a mint from a
//! trust, which run again at every mint.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::IssuerState;
use super::api::{MintResponse, json_body, json_response, respond, verified};
use crate::names::{Name, ProjectName, UserName};
use super::store::{Audit, Grants, Trust, Trusts, Tx};
use crate::encoding::b64url_encode;
use crate::error::{Code, Error, Result, err};
use crate::token::{Actor, TokenBuilder};
use crate::verify::VerifiedRequest;

/// The largest redelegation allowance (Keystone's `max_redelegation_count`).
pub const MAX_REDELEGATION: u64 = 3;
// A chain has at most 1 + MAX_REDELEGATION trusts, one actor each; services
// refuse longer actor chains (step D3).
const _: () = assert!(MAX_REDELEGATION as usize + 1 == crate::token::MAX_DELEGATION_CHAIN);

/// The trust routes that take a session token (behind the session layer).
pub(super) fn session_routes() -> OpenApiRouter<Arc<IssuerState>> {
    OpenApiRouter::new()
        .routes(routes!(list_trusts, create_trust))
        .routes(routes!(show_trust, delete_trust))
}

/// The trust routes of the admin API (behind the admin layer).
pub(super) fn admin_routes() -> OpenApiRouter<Arc<IssuerState>> {
    OpenApiRouter::new()
        .routes(routes!(admin_list_trusts, admin_create_trust))
        .routes(routes!(admin_delete_trust))
}

/// A trust id: 22 base64url characters. Anything else names no trust, and
/// is refused before the database is asked.
fn check_id(id: &str) -> Result<()> {
    if id.len() != 22 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return err(Code::TrustNotFound, "a trust id is 22 base64url characters");
    }
    Ok(())
}

/// spec/delegation.md §3
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TrustRequest {
    /// `name@domain` of the user who may use the trust
    trustee: String,
    /// the project's name; absent with `parent` (a child is on its parent's project)
    project: Option<String>,
    /// the project's domain; default the trustor's
    domain: Option<String>,
    /// the roles to delegate, at least one
    roles: Vec<String>,
    /// Unix seconds; default now + the issuer's max trust lifetime (or none)
    expires_at: Option<u64>,
    /// how many mints; default the issuer's max trust uses (or unlimited)
    uses: Option<u64>,
    /// further levels of redelegation the trustee may create, 0 (default) to 3
    redelegation: Option<u64>,
    /// the trust this one is redelegated from (the caller must be its trustee)
    parent: Option<String>,
}

/// spec/delegation.md §3, with the trustor named by an administrator.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminTrustRequest {
    /// `name@domain` of the user who delegates
    trustor: String,
    trustee: String,
    project: Option<String>,
    domain: Option<String>,
    roles: Vec<String>,
    expires_at: Option<u64>,
    uses: Option<u64>,
    redelegation: Option<u64>,
    parent: Option<String>,
}

impl From<AdminTrustRequest> for (String, TrustRequest) {
    fn from(a: AdminTrustRequest) -> Self {
        (
            a.trustor,
            TrustRequest {
                trustee: a.trustee,
                project: a.project,
                domain: a.domain,
                roles: a.roles,
                expires_at: a.expires_at,
                uses: a.uses,
                redelegation: a.redelegation,
                parent: a.parent,
            },
        )
    }
}

/// An integer of the request as stored (the database keeps i64).
fn stored_int(n: u64, what: &str) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::new(Code::TrustOverLimit, format!("{what} is too large")))
}

/// The checks of spec/delegation.md §3 and the new trust, inserted in `tx`
/// (the caller commits it with its audit record).
async fn create(state: &IssuerState, tx: &mut Tx, trustor: &UserName, input: TrustRequest) -> Result<Trust> {
    let now = state.now() as i64;
    // TC1 names.
    let trustee = UserName::parse(&input.trustee)?;
    let roles = {
        let mut roles = Vec::with_capacity(input.roles.len());
        for role in &input.roles {
            roles.push(Name::parse("role", role)?.as_str().to_owned());
        }
        roles.sort();
        roles.dedup();
        roles
    };
    let project = match (&input.project, &input.parent) {
        (Some(p), None) => {
            let domain = match &input.domain {
                Some(d) => Name::parse("domain", d)?,
                None => trustor.domain.clone(),
            };
            Some(ProjectName::new(Name::parse("project", p)?, domain))
        }
        (None, None) => return err(Code::TrustInvalid, "a trust needs a project (or a parent)"),
        (_, Some(parent)) => {
            if input.project.is_some() || input.domain.is_some() {
                return err(
                    Code::TrustInvalid,
                    "a redelegated trust is on its parent's project: give no project or domain",
                );
            }
            check_id(parent)?;
            None
        }
    };
    // TC2 the trust's own rules.
    if roles.is_empty() {
        return err(Code::TrustInvalid, "a trust delegates at least one role");
    }
    if &trustee == trustor {
        return err(Code::TrustInvalid, "the trustee is the trustor");
    }
    let redelegation = input.redelegation.unwrap_or(0);
    if redelegation > MAX_REDELEGATION {
        return err(
            Code::TrustInvalid,
            format!("the redelegation allowance is 0 to {MAX_REDELEGATION}, not {redelegation}"),
        );
    }
    if input.uses == Some(0) {
        return err(Code::TrustInvalid, "a trust has at least one use");
    }
    let asked_expiry = input.expires_at.map(|e| stored_int(e, "expires_at")).transpose()?;
    if asked_expiry.is_some_and(|e| e <= now) {
        return err(Code::TrustInvalid, "expires_at is not in the future");
    }
    // TC3 the deployment's ceilings: refused, never clamped.
    let latest = state.config.max_trust_lifetime.map(|s| now.saturating_add(s as i64));
    if let (Some(asked), Some(latest)) = (asked_expiry, latest)
        && asked > latest
    {
        return err(
            Code::TrustOverLimit,
            format!(
                "a trust lives at most {} s: expires_at is at most {latest}",
                latest - now
            ),
        );
    }
    if let (Some(asked), Some(max)) = (input.uses, state.config.max_trust_uses)
        && asked > max
    {
        return err(Code::TrustOverLimit, format!("a trust has at most {max} uses"));
    }
    let uses = input
        .uses
        .or(state.config.max_trust_uses)
        .map(|n| stored_int(n, "uses"))
        .transpose()?;
    // TC4 the trustee.
    let trustee_facts = tx.mint_facts(&trustee, None, "").await?;
    if !trustee_facts.user_exists || !trustee_facts.user_enabled {
        return err(Code::TrustTrusteeUnknown, format!("{trustee} is not an enabled user"));
    }
    let (project, expires_at) = match project {
        // TC5 a trust of the trustor's own roles.
        Some(project) => {
            let facts = tx.mint_facts(trustor, Some(&project), "").await?;
            if !facts.user_exists {
                return err(Code::IssuerNotFound, format!("user {trustor} does not exist"));
            }
            if !facts.user_enabled {
                return err(Code::IssuerDisabled, format!("{trustor} or its domain is disabled"));
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
            let missing: Vec<&String> = roles.iter().filter(|r| !facts.roles.contains(r)).collect();
            if !missing.is_empty() {
                return err(
                    Code::IssuerRoleNotHeld,
                    format!("{trustor} does not hold {missing:?} on {project}"),
                );
            }
            (project, asked_expiry.or(latest))
        }
        // TC6 a redelegation: the parent's chain must be usable now, and the
        // child asks for no more than the parent gives.
        None => {
            let parent_id = input.parent.as_deref().unwrap_or_default();
            let chain = usable_chain(tx, parent_id, trustor, now).await?;
            let parent = &chain[0];
            if parent.redelegation == 0 {
                return err(Code::TrustTooDeep, "the parent trust does not allow redelegation");
            }
            if chain.iter().any(|t| t.trustee == trustee) || chain.last().is_some_and(|root| root.trustor == trustee) {
                return err(
                    Code::TrustInvalid,
                    format!("{trustee} is already on this trust's chain (a cycle)"),
                );
            }
            let extra: Vec<&String> = roles.iter().filter(|r| !parent.roles.contains(r)).collect();
            if !extra.is_empty() {
                return err(
                    Code::TrustEscalation,
                    format!("the parent trust does not delegate {extra:?}"),
                );
            }
            if redelegation as i64 >= parent.redelegation {
                return err(
                    Code::TrustEscalation,
                    format!(
                        "the redelegation allowance must be below the parent's ({})",
                        parent.redelegation
                    ),
                );
            }
            let parent_expiry = chain.iter().filter_map(|t| t.expires_at).min();
            if let (Some(asked), Some(limit)) = (asked_expiry, parent_expiry)
                && asked > limit
            {
                return err(
                    Code::TrustEscalation,
                    format!("expires_at is after the parent trust's expiry ({limit})"),
                );
            }
            let default = match (latest, parent_expiry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            (parent.project.clone(), asked_expiry.or(default))
        }
    };
    let trust = Trust {
        id: b64url_encode(&crate::random_array::<16>()?),
        trustor: trustor.clone(),
        trustee,
        project,
        roles,
        expires_at,
        remaining_uses: uses,
        redelegation: redelegation as i64,
        parent: input.parent,
        created_at: now,
    };
    tx.create_trust(&trust).await?;
    Ok(trust)
}

/// The trust `id` and its ancestors (the trust first), checked as at a mint
/// except for uses and audience (spec/delegation.md §4, TM1–TM4): it
/// exists with every ancestor, `caller` is its trustee, no link has
/// expired, the root's trustor still holds every delegated role on an
/// enabled project, and every user on the chain is enabled.
async fn usable_chain(tx: &mut Tx, id: &str, caller: &UserName, now: i64) -> Result<Vec<Trust>> {
    check_id(id)?;
    let chain = tx.trust_chain(id).await?;
    let Some(root) = chain.last() else {
        return err(Code::TrustNotFound, "no such trust");
    };
    if root.parent.is_some() {
        return err(Code::TrustNotFound, "a trust this one was redelegated from is gone");
    }
    if &chain[0].trustee != caller {
        return err(Code::TrustNotTrustee, format!("{caller} is not this trust's trustee"));
    }
    if let Some(expired) = chain.iter().find(|t| t.expires_at.is_some_and(|e| e <= now)) {
        return err(
            Code::TrustExpired,
            format!(
                "trust {} expired at {}",
                expired.id,
                expired.expires_at.unwrap_or_default()
            ),
        );
    }
    let facts = tx.mint_facts(&root.trustor, Some(&root.project), "").await?;
    if !facts.user_exists || !facts.user_enabled {
        return err(
            Code::TrustUnusable,
            format!("the trustor {} is disabled or gone", root.trustor),
        );
    }
    if !facts.project_exists || !facts.project_enabled {
        return err(
            Code::TrustUnusable,
            format!("project {} is disabled or gone", root.project),
        );
    }
    let lost: Vec<&String> = root.roles.iter().filter(|r| !facts.roles.contains(r)).collect();
    if !lost.is_empty() {
        return err(
            Code::TrustUnusable,
            format!(
                "the trustor {} no longer holds {lost:?} on {}",
                root.trustor, root.project
            ),
        );
    }
    for pair in chain.windows(2) {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.trustor != parent.trustee || child.roles.iter().any(|r| !parent.roles.contains(r)) {
            return err(
                Code::TrustUnusable,
                format!("trust {} is not a subset of its parent", child.id),
            );
        }
    }
    for trust in &chain {
        let facts = tx.mint_facts(&trust.trustee, None, "").await?;
        if !facts.user_exists || !facts.user_enabled {
            return err(
                Code::TrustUnusable,
                format!("{} on this trust's chain is disabled or gone", trust.trustee),
            );
        }
    }
    Ok(chain)
}

/// What a mint from a trust was asked for (spec/issuer.md §6.1).
pub(super) struct TrustMint<'a> {
    pub trust: &'a str,
    pub audience: &'a str,
    pub roles: Option<&'a [String]>,
    pub lifetime: u64,
}

/// A mint from a trust (spec/delegation.md §4): every check in one
/// transaction with the use it takes and its audit record; a refusal is
/// audited on its own.
pub(super) async fn mint(state: &IssuerState, verified: &VerifiedRequest, asked: TrustMint<'_>) -> Result<Response> {
    let now = state.now() as i64;
    let caller = UserName::parse(verified.subject())?;
    let target = if check_id(asked.trust).is_ok() {
        asked.trust
    } else {
        "-"
    };
    let result = mint_checked(state, verified, &caller, &asked, now).await;
    match &result {
        Ok(_) => state.metrics.trust_minted(),
        Err(e) if e.code() != Code::IssuerUnavailable => {
            state
                .store
                .conn()
                .await?
                .record(now, &caller.to_string(), "trust.use", target, e.code().as_str())
                .await?;
        }
        Err(_) => {}
    }
    result
}

async fn mint_checked(
    state: &IssuerState,
    verified: &VerifiedRequest,
    caller: &UserName,
    asked: &TrustMint<'_>,
    now: i64,
) -> Result<Response> {
    // TM0.
    if asked.audience == state.config.admin_audience() {
        return err(Code::IssuerForbidden, "admin tokens are never delegated");
    }
    let mut tx = state.store.begin().await?;
    // TM1–TM4.
    let chain = usable_chain(&mut tx, asked.trust, caller, now).await?;
    let (trust, root) = (&chain[0], &chain[chain.len() - 1]);
    // TM5 the audience.
    let facts = tx.mint_facts(caller, None, asked.audience).await?;
    if !facts.service_registered {
        return err(
            Code::IssuerUnknownAudience,
            format!(
                "{:?} is not a registered service",
                crate::verify::token::truncate(asked.audience)
            ),
        );
    }
    // TM6 roles: the trust's, or a subset of them.
    let roles = match asked.roles {
        None => trust.roles.clone(),
        Some(wanted) => {
            let extra: Vec<&String> = wanted.iter().filter(|r| !trust.roles.contains(r)).collect();
            if !extra.is_empty() {
                return err(Code::TrustEscalation, format!("the trust does not delegate {extra:?}"));
            }
            let mut roles = wanted.to_vec();
            roles.sort();
            roles.dedup();
            if roles.is_empty() {
                return err(Code::TrustEscalation, "a token from a trust carries at least one role");
            }
            roles
        }
    };
    // TM7 one use of every link with a limit, root first (the order every
    // mint and every cascading delete lock rows in, so they never deadlock).
    for link in chain.iter().rev() {
        if !tx.consume_trust_use(&link.id).await? {
            return match tx.trust(&link.id).await? {
                Some(_) => err(Code::TrustExhausted, format!("trust {} has no use left", link.id)),
                None => err(Code::TrustNotFound, format!("trust {} was deleted", link.id)),
            };
        }
    }
    // Never past the earliest expiry of the chain.
    let expiry = chain.iter().filter_map(|t| t.expires_at).min();
    let lifetime = match expiry {
        Some(e) => asked.lifetime.min((e - now) as u64),
        None => asked.lifetime,
    };
    let actors: Vec<Actor> = chain
        .iter()
        .map(|t| Actor {
            sub: t.trustee.to_string(),
            iss: None,
        })
        .collect();
    let (signing_key, kid) = state.keys.current()?;
    let token = TokenBuilder::service(
        &state.config.issuer_id,
        root.trustor.to_string(),
        asked.audience,
        verified.token().cnf().clone(),
        now as u64,
    )
    .lifetime(lifetime)
    .roles(roles.iter().cloned())
    .scope(root.project.domain.as_str(), root.project.name.as_str())
    .trust_id(&trust.id)
    .actor_chain(actors.clone())
    .sign(&signing_key, &kid)?;
    tx.record(now, &caller.to_string(), "trust.use", &trust.id, "ok")
        .await?;
    tx.commit().await?;
    state.metrics.minted();
    Ok(json_response(
        StatusCode::OK,
        &MintResponse {
            token: token.to_base64url(),
            expires_at: now as u64 + lifetime,
            audience: asked.audience.to_owned(),
            project: Some(root.project.name.as_str().to_owned()),
            domain: Some(root.project.domain.as_str().to_owned()),
            roles,
            subject: root.trustor.to_string(),
            trust: Some(trust.id.clone()),
            actors: actors.into_iter().map(|a| a.sub).collect(),
        },
    ))
}

/// Ends a trust write for `actor`: on success the audit record commits
/// with the change in `tx`; a refusal (other than an outage) rolls the
/// change back and is audited on its own.
async fn finish<T>(state: &IssuerState, tx: Tx, actor: &str, action: &str, result: Result<(String, T)>) -> Result<T> {
    let now = state.now() as i64;
    match result {
        Ok((target, value)) => {
            let mut tx = tx;
            tx.record(now, actor, action, &target, "ok").await?;
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            drop(tx);
            if e.code() != Code::IssuerUnavailable {
                state
                    .store
                    .conn()
                    .await?
                    .record(now, actor, action, "-", e.code().as_str())
                    .await?;
            }
            Err(e)
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/trusts",
    operation_id = "createTrust",
    tag = "trusts",
    summary = "Create a trust: delegate roles on a project to a trustee",
    description = "The caller (the session's user) is the trustor; with `parent`, the caller redelegates a trust of which it is the trustee. Checks TC1–TC6 of spec/delegation.md §3, refused rather than clamped. Audited as `trust.create`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = TrustRequest, content_type = "application/json", example = json!({"trustee": "heat@service", "project": "turing", "roles": ["member"], "expires_at": 1763803600_u64, "uses": 10, "redelegation": 1})),
    responses(
        (status = 200, description = "The trust.", body = Trust, content_type = "application/json")
    )
)]
async fn create_trust(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let started = Instant::now();
    let result = async {
        let (parts, verified, body) = verified(request).await?;
        let input: TrustRequest = json_body(&parts, &body)?;
        let trustor = UserName::parse(verified.subject())?;
        let actor = trustor.to_string();
        let mut tx = state.store.begin().await?;
        let created = create(&state, &mut tx, &trustor, input).await;
        let trust = finish(&state, tx, &actor, "trust.create", created.map(|t| (t.id.clone(), t))).await?;
        Ok(json_response(StatusCode::OK, &trust))
    }
    .await;
    respond(&state, "trusts", started, result)
}

#[utoipa::path(
    get,
    path = "/v1/trusts",
    operation_id = "listTrusts",
    tag = "trusts",
    summary = "The caller's trusts, as trustor or trustee",
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "Trusts, oldest first.", body = [Trust], content_type = "application/json")
    )
)]
async fn list_trusts(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let started = Instant::now();
    let result = async {
        let (_, verified, _) = verified(request).await?;
        let user = UserName::parse(verified.subject())?;
        let trusts = state.store.conn().await?.trusts_of(&user).await?;
        Ok(json_response(StatusCode::OK, &trusts))
    }
    .await;
    respond(&state, "trusts", started, result)
}

/// The trust `id` if `user` is its trustor or trustee; else not found.
async fn own_trust(state: &IssuerState, id: &str, user: &UserName) -> Result<Trust> {
    check_id(id)?;
    match state.store.conn().await?.trust(id).await? {
        Some(t) if &t.trustor == user || &t.trustee == user => Ok(t),
        _ => err(Code::TrustNotFound, "no such trust of yours"),
    }
}

#[utoipa::path(
    get,
    path = "/v1/trusts/{id}",
    operation_id = "showTrust",
    tag = "trusts",
    summary = "One trust of the caller (as trustor or trustee)",
    params(
        ("id" = String, Path, description = "the trust id", example = "2Qf3mV0cZ8bq1Xo4yT6wUg")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "The trust.", body = Trust, content_type = "application/json")
    )
)]
async fn show_trust(State(state): State<Arc<IssuerState>>, Path(id): Path<String>, request: Request) -> Response {
    let started = Instant::now();
    let result = async {
        let (_, verified, _) = verified(request).await?;
        let user = UserName::parse(verified.subject())?;
        Ok(json_response(StatusCode::OK, &own_trust(&state, &id, &user).await?))
    }
    .await;
    respond(&state, "trusts", started, result)
}

/// Deletes the trust `id` of which `user` is the trustor.
async fn delete_own(tx: &mut Tx, id: &str, user: &UserName) -> Result<()> {
    check_id(id)?;
    match tx.trust(id).await? {
        Some(t) if &t.trustor == user => {}
        Some(t) if &t.trustee == user => {
            return err(
                Code::IssuerForbidden,
                "only the trustor or an administrator deletes a trust",
            );
        }
        _ => return err(Code::TrustNotFound, "no such trust of yours"),
    }
    tx.delete_trust(id).await?;
    Ok(())
}

/// The answer to a delete.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TrustDeleted {
    /// the trust id
    id: String,
    /// always true: the trust and every trust redelegated from it are gone
    deleted: bool,
}

#[utoipa::path(
    delete,
    path = "/v1/trusts/{id}",
    operation_id = "deleteTrust",
    tag = "trusts",
    summary = "Delete a trust of which the caller is the trustor",
    description = "Deletes the trust and every trust redelegated from it: once answered, no replica mints from them. A trustee cannot delete (`issuer.forbidden`). Audited as `trust.delete`.",
    params(
        ("id" = String, Path, description = "the trust id", example = "2Qf3mV0cZ8bq1Xo4yT6wUg")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "Deleted.", body = TrustDeleted, content_type = "application/json")
    )
)]
async fn delete_trust(State(state): State<Arc<IssuerState>>, Path(id): Path<String>, request: Request) -> Response {
    let started = Instant::now();
    let result = async {
        let (_, verified, _) = verified(request).await?;
        let user = UserName::parse(verified.subject())?;
        let actor = user.to_string();
        let mut tx = state.store.begin().await?;
        let deleted = delete_own(&mut tx, &id, &user).await.map(|()| (id.clone(), ()));
        finish(&state, tx, &actor, "trust.delete", deleted).await?;
        Ok(json_response(StatusCode::OK, &TrustDeleted { id, deleted: true }))
    }
    .await;
    respond(&state, "trusts", started, result)
}

#[utoipa::path(
    get,
    path = "/v1/admin/trusts",
    operation_id = "adminListTrusts",
    tag = "admin",
    summary = "Trusts by user (as trustor or trustee) and/or project",
    params(
        ("user" = Option<String>, Query, description = "`name@domain`: trusts in which the user is trustor or trustee", example = "ayoung@stoughton"),
        ("project" = Option<String>, Query, description = "`project@domain`: trusts on the project", example = "turing@stoughton")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "Trusts, oldest first; every trust when neither is given.", body = [Trust], content_type = "application/json")
    )
)]
async fn admin_list_trusts(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    super::admin::read(&state, verified, || async {
        let (mut user, mut project) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // Names hold no character that needs escaping but `@`.
            let value = value.replace("%40", "@");
            match key {
                "user" => user = Some(UserName::parse(&value)?),
                "project" => project = Some(ProjectName::parse(&value)?),
                other => {
                    return err(
                        Code::IssuerBadRequest,
                        format!("unknown query parameter {:?}", crate::verify::token::truncate(other)),
                    );
                }
            }
        }
        state
            .store
            .conn()
            .await?
            .list_trusts(user.as_ref(), project.as_ref())
            .await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/trusts",
    operation_id = "adminCreateTrust",
    tag = "admin",
    summary = "Create a trust for a trustor",
    description = "As `POST /v1/trusts` with the trustor named in `trustor` (spec/delegation.md §3). Audited as `trust.create`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = AdminTrustRequest, content_type = "application/json", example = json!({"trustor": "ayoung@stoughton", "trustee": "heat@service", "project": "turing", "domain": "stoughton", "roles": ["member"], "uses": 10})),
    responses(
        (status = 200, description = "The trust.", body = Trust, content_type = "application/json")
    )
)]
async fn admin_create_trust(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let shared = state.clone();
    super::admin::action(&state, request, "trust.create", |input: AdminTrustRequest, change| {
        Box::pin(async move {
            let (trustor, input): (String, TrustRequest) = input.into();
            let trustor = UserName::parse(&trustor)?;
            let trust = create(&shared, change.tx().await?, &trustor, input).await?;
            Ok((trust.id.clone(), trust))
        })
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/admin/trusts/{id}",
    operation_id = "adminDeleteTrust",
    tag = "admin",
    summary = "Delete any trust",
    description = "Deletes the trust and every trust redelegated from it. Takes `{}`. Audited as `trust.delete`.",
    params(
        ("id" = String, Path, description = "the trust id", example = "2Qf3mV0cZ8bq1Xo4yT6wUg")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = super::admin::Empty, content_type = "application/json", example = json!({})),
    responses(
        (status = 200, description = "Deleted.", body = TrustDeleted, content_type = "application/json")
    )
)]
async fn admin_delete_trust(
    State(state): State<Arc<IssuerState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    super::admin::action(&state, request, "trust.delete", |_: super::admin::Empty, change| {
        Box::pin(async move {
            check_id(&id)?;
            if !change.tx().await?.delete_trust(&id).await? {
                return err(Code::TrustNotFound, "no such trust");
            }
            Ok((id.clone(), TrustDeleted { id, deleted: true }))
        })
    })
    .await
}
