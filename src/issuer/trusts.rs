//! Trusts (spec/delegation.md): creation by the trustor (with its session)
//! or an administrator, listing, deletion, and the checks of a mint from a
//! trust, which run again at every mint.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::IssuerState;
use super::api::{MintResponse, json_body, json_response, respond, verified};
use super::store::{Audit, Grants, Origin, SessionKey, Trust, Trusts, Tx};
use crate::delegation::trust_request::{AdminTrustRequest, Ceilings, TrustBase, TrustRequest, check_trust_id};
use crate::encoding::b64url_encode;
use crate::error::{Code, Result, err};
use crate::names::{ProjectName, UserName};
use crate::token::{Actor, TokenBuilder};
use crate::verify::VerifiedRequest;

/// The trust routes that take a session token (behind the session layer).
pub(super) fn session_routes() -> OpenApiRouter<Arc<IssuerState>> {
    OpenApiRouter::new()
        .routes(routes!(list_trusts, create_trust))
        .routes(routes!(show_trust, delete_trust))
        .routes(routes!(super::workplans::run_workplan))
}

/// The trust routes of the admin API (behind the admin layer).
pub(super) fn admin_routes() -> OpenApiRouter<Arc<IssuerState>> {
    OpenApiRouter::new()
        .routes(routes!(admin_list_trusts, admin_create_trust))
        .routes(routes!(admin_delete_trust))
}

/// The checks of spec/delegation.md §3 and the new trust, inserted in `tx`
/// (the caller commits it with its audit record).
pub(super) async fn create(state: &IssuerState, tx: &mut Tx, trustor: &UserName, input: TrustRequest) -> Result<Trust> {
    let now = state.now() as i64;
    let ceilings = Ceilings {
        max_lifetime: state.config.max_trust_lifetime,
        max_uses: state.config.max_trust_uses,
    };
    // TC1–TC3, which need no database.
    let draft = input.check(trustor, state.now(), ceilings)?;
    let (trustee, roles, redelegation) = (draft.trustee, draft.roles, draft.redelegation);
    let (asked_expiry, latest, uses) = (draft.expires_at, draft.latest_expiry, draft.uses);
    // TC4 the trustee, and the services the trust is restricted to.
    let trustee_facts = tx.mint_facts(&trustee, None, "").await?;
    if !trustee_facts.user_exists || !trustee_facts.user_enabled {
        return err(Code::TrustTrusteeUnknown, format!("{trustee} is not an enabled user"));
    }
    for audience in &draft.audiences {
        if !tx.mint_facts(&trustee, None, audience).await?.service_registered {
            return err(
                Code::IssuerUnknownAudience,
                format!(
                    "{:?} is not a registered service",
                    crate::verify::token::truncate(audience)
                ),
            );
        }
    }
    let parent_id = match &draft.base {
        TrustBase::Parent(id) => Some(id.clone()),
        TrustBase::Project(_) => None,
    };
    let mut audiences = draft.audiences;
    let (project, expires_at) = match draft.base {
        // TC5 a trust of the trustor's own roles.
        TrustBase::Project(project) => {
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
        TrustBase::Parent(parent_id) => {
            let chain = usable_chain(tx, &parent_id, trustor, now).await?;
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
            if redelegation >= parent.redelegation {
                return err(
                    Code::TrustEscalation,
                    format!(
                        "the redelegation allowance must be below the parent's ({})",
                        parent.redelegation
                    ),
                );
            }
            // A child of a restricted chain is restricted to (a subset of)
            // the services every restricted link allows; it inherits them.
            if let Some(allowed) = chain_audiences(&chain) {
                if allowed.is_empty() {
                    // Restricted links with no service in common: the chain
                    // mints for none, and an empty list would mean "any".
                    return err(
                        Code::TrustEscalation,
                        "the parent trust's chain allows no service in common",
                    );
                }
                if audiences.is_empty() {
                    audiences = allowed;
                } else if let Some(extra) = audiences.iter().find(|a| !allowed.contains(a)) {
                    return err(
                        Code::TrustEscalation,
                        format!(
                            "the parent trust does not delegate audience {:?}",
                            crate::verify::token::truncate(extra)
                        ),
                    );
                }
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
        audiences,
        expires_at,
        remaining_uses: uses,
        redelegation,
        parent: parent_id,
        created_at: now,
    };
    tx.create_trust(&trust).await?;
    Ok(trust)
}

/// The audiences every restricted trust of `chain` allows (sorted), or
/// `None` when no trust of it is restricted.
fn chain_audiences(chain: &[Trust]) -> Option<Vec<String>> {
    let mut allowed: Option<Vec<String>> = None;
    for trust in chain.iter().filter(|t| !t.audiences.is_empty()) {
        allowed = Some(match allowed {
            None => trust.audiences.clone(),
            Some(so_far) => so_far.into_iter().filter(|a| trust.audiences.contains(a)).collect(),
        });
    }
    allowed
}

/// The trust `id` and its ancestors (the trust first), checked as at a mint
/// except for uses and audience (spec/delegation.md §4, TM1–TM4): it
/// exists with every ancestor, `caller` is its trustee, no link has
/// expired, the root's trustor still holds every delegated role on an
/// enabled project, and every user on the chain is enabled.
async fn usable_chain(tx: &mut Tx, id: &str, caller: &UserName, now: i64) -> Result<Vec<Trust>> {
    check_trust_id(id)?;
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
    /// The instance of the audience the token is restricted to.
    pub instance: Option<&'a str>,
}

/// A mint from a trust (spec/delegation.md §4): every check in one
/// transaction with the use it takes and its audit record; a refusal is
/// audited on its own.
pub(super) async fn mint(
    state: &IssuerState,
    verified: &VerifiedRequest,
    origin: &Origin,
    asked: TrustMint<'_>,
) -> Result<Response> {
    let now = state.now() as i64;
    let caller = UserName::parse(verified.subject())?;
    let target = if check_trust_id(asked.trust).is_ok() {
        asked.trust
    } else {
        "-"
    };
    let result = mint_checked(state, verified, origin, &caller, &asked, now).await;
    match &result {
        Ok(_) => state.metrics.trust_minted(),
        Err(e) if !super::store::is_outage(e.code()) => {
            state
                .store
                .conn()
                .await?
                .record_from(origin, now, &caller.to_string(), "trust.use", target, e.code().as_str())
                .await?;
        }
        Err(_) => {}
    }
    result
}

async fn mint_checked(
    state: &IssuerState,
    verified: &VerifiedRequest,
    origin: &Origin,
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
    // TM5 the audience; and the caller's session, as at every mint
    // (spec/issuer.md §6.3): its user not created again, its key not removed.
    let thumbprint = verified.key_thumbprint().to_string();
    let session = SessionKey {
        thumbprint: &thumbprint,
        issued_at: verified.token().issued_at() as i64,
        leeway: state.config.leeway as i64,
    };
    let facts = tx.mint_facts_for(caller, None, asked.audience, Some(session)).await?;
    if !facts.same_user(session) {
        return err(Code::IssuerInvalidCredentials, "the session's user no longer exists");
    }
    if facts.key_removed {
        return err(
            Code::IssuerKeyRemoved,
            "the key this session is bound to was removed from the user: log in again with another key",
        );
    }
    if !facts.service_registered {
        return err(
            Code::IssuerUnknownAudience,
            format!(
                "{:?} is not a registered service",
                crate::verify::token::truncate(asked.audience)
            ),
        );
    }
    // ... and one every restricted trust of the chain allows.
    if chain_audiences(&chain).is_some_and(|allowed| !allowed.iter().any(|a| a == asked.audience)) {
        return err(
            Code::TrustWrongAudience,
            format!(
                "the trust does not delegate tokens for {:?}",
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
    // TM7 one use of every link that has a limit, and a row lock on every
    // link (unlimited ones too, so a concurrent delete waits for this mint
    // and every later mint sees it gone); root first, the order every mint
    // and every cascading delete lock rows in, so they never deadlock.
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
    let mut builder = TokenBuilder::service(
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
    .actor_chain(actors.clone());
    if let Some(instance) = asked.instance {
        builder = builder.instance(instance);
    }
    let token = builder.sign(&signing_key, &kid)?;
    tx.record_from(origin, now, &caller.to_string(), "trust.use", &trust.id, "ok")
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
            instance: asked.instance.map(str::to_owned),
        },
    ))
}

/// Ends a trust write for `actor`: on success the audit record commits
/// with the change in `tx`; a refusal (other than an outage) rolls the
/// change back and is audited on its own.
pub(super) async fn finish<T>(
    state: &IssuerState,
    tx: Tx,
    origin: &Origin,
    actor: &str,
    action: &str,
    result: Result<(String, T)>,
) -> Result<T> {
    let now = state.now() as i64;
    match result {
        Ok((target, value)) => {
            let mut tx = tx;
            tx.record_from(origin, now, actor, action, &target, "ok").await?;
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            drop(tx);
            if !super::store::is_outage(e.code()) {
                state
                    .store
                    .conn()
                    .await?
                    .record_from(origin, now, actor, action, "-", e.code().as_str())
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
        let origin = super::api::origin(&state, &parts, Some(verified.key_thumbprint()));
        let trust = finish(
            &state,
            tx,
            &origin,
            &actor,
            "trust.create",
            created.map(|t| (t.id.clone(), t)),
        )
        .await?;
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
    check_trust_id(id)?;
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
    check_trust_id(id)?;
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
        let (parts, verified, _) = verified(request).await?;
        let user = UserName::parse(verified.subject())?;
        let actor = user.to_string();
        let origin = super::api::origin(&state, &parts, Some(verified.key_thumbprint()));
        let mut tx = state.store.begin().await?;
        let deleted = delete_own(&mut tx, &id, &user).await.map(|()| (id.clone(), ()));
        finish(&state, tx, &origin, &actor, "trust.delete", deleted).await?;
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
            let (trustor, input) = input.split();
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
            check_trust_id(&id)?;
            if !change.tx().await?.delete_trust(&id).await? {
                return err(Code::TrustNotFound, "no such trust");
            }
            Ok((id.clone(), TrustDeleted { id, deleted: true }))
        })
    })
    .await
}
