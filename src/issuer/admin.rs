//! The admin API. It sits behind `KeyboundLayer`: every call needs a service
//! token for the admin audience, scoped to project `admin@default`, with role
//! `admin`, and a proof. Every action is written to the audit log.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post, put};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::api::{json_body, json_response, read_body, respond};
use super::store::bootstrap_names;
use super::{IssuerState, check_audience, check_name, split_qualified};
use crate::encoding::b64url_decode;
use crate::error::{Code, Error, Result, err};
use crate::key::PublicKey;
use crate::verify::VerifiedRequest;

pub(super) fn routes(state: Arc<IssuerState>) -> Router {
    Router::new()
        .route("/v1/admin/domains", get(list_domains).post(create_domain))
        .route("/v1/admin/domains/{name}/{action}", post(toggle_domain))
        .route("/v1/admin/projects", get(list_projects).post(create_project))
        .route("/v1/admin/projects/{project}/{action}", post(toggle_project))
        .route("/v1/admin/users", get(list_users).post(create_user))
        .route("/v1/admin/users/{user}/password", put(set_password))
        .route("/v1/admin/users/{user}/keys", post(add_key))
        .route("/v1/admin/users/{user}/{action}", post(toggle_user))
        .route("/v1/admin/roles", get(list_roles).post(create_role))
        .route("/v1/admin/grants", get(list_grants).post(grant).delete(revoke))
        .route(
            "/v1/admin/services",
            get(list_services).post(create_service).delete(delete_service),
        )
        .route("/v1/admin/audit", get(list_audit))
        .with_state(state)
}

/// Only tokens scoped to the admin project may use the admin API: a user who
/// holds a role called "admin" on some other project is not an issuer admin.
/// The issuer also re-reads its own database on every admin call, so that
/// disabling an admin or revoking its role stops admin tokens it already
/// holds at once instead of when they expire.
async fn admin_scope(state: &IssuerState, request: &VerifiedRequest) -> Result<()> {
    use bootstrap_names::{DOMAIN, PROJECT, ROLE};
    if request.domain() != Some(DOMAIN) || request.project() != Some(PROJECT) {
        return err(
            Code::IssuerForbidden,
            "the admin API needs a token scoped to project admin@default",
        );
    }
    let (name, domain) = split_qualified("user", request.subject())?;
    let facts = state
        .store
        .mint_facts((domain, name), (DOMAIN, PROJECT), &state.config.admin_audience())
        .await?;
    if !facts.user_enabled || !facts.project_enabled || !facts.roles.iter().any(|r| r == ROLE) {
        return err(
            Code::IssuerForbidden,
            "the token's subject is no longer an enabled admin of admin@default",
        );
    }
    Ok(())
}

/// Runs an admin action: scope check, body, audit record, response.
async fn action<T, F, Fut>(state: &IssuerState, request: Request, name: &'static str, run: F) -> Response
where
    T: serde::de::DeserializeOwned,
    F: FnOnce(T, String) -> Fut,
    Fut: std::future::Future<Output = Result<(String, serde_json::Value)>>,
{
    let started = Instant::now();
    let result = async {
        let verified = request
            .extensions()
            .get::<VerifiedRequest>()
            .cloned()
            .ok_or_else(|| Error::new(Code::IssuerForbidden, "not verified"))?;
        admin_scope(state, &verified).await?;
        let actor = verified.subject().to_owned();
        let (parts, body) = read_body(request, state.config.max_body).await?;
        let input: T = json_body(&parts, &body)?;
        let now = state.now() as i64;
        match run(input, actor.clone()).await {
            Ok((target, output)) => {
                state.store.audit(now, &actor, name, &target, "ok").await?;
                Ok(json_response(StatusCode::OK, output))
            }
            Err(e) => {
                // Refusals are audited too; a database outage cannot be.
                if e.code() != Code::IssuerUnavailable {
                    state.store.audit(now, &actor, name, "-", e.code().as_str()).await?;
                }
                Err(e)
            }
        }
    }
    .await;
    respond(state, "admin", started, result)
}

/// A read-only admin call: scope check, no body, no audit.
async fn read<F, Fut>(state: &IssuerState, verified: Option<VerifiedRequest>, run: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value>>,
{
    let started = Instant::now();
    let result = async {
        admin_scope(
            state,
            &verified.ok_or_else(|| Error::new(Code::IssuerForbidden, "not verified"))?,
        )
        .await?;
        Ok(json_response(StatusCode::OK, run().await?))
    }
    .await;
    respond(state, "admin", started, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Name {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn now_of(state: &IssuerState) -> i64 {
    state.now() as i64
}

fn enabled_from(action: &str) -> Result<bool> {
    match action {
        "enable" => Ok(true),
        "disable" => Ok(false),
        other => err(
            Code::IssuerNotFound,
            format!("no admin action {other:?}; use enable or disable"),
        ),
    }
}

async fn list_domains(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        let domains = state.store.list_domains().await?;
        Ok(json!(
            domains
                .into_iter()
                .map(|(name, enabled)| json!({"name": name, "enabled": enabled}))
                .collect::<Vec<_>>()
        ))
    })
    .await
}

async fn create_domain(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let s = state.clone();
    action(&state, request, "domain.create", |input: Name, _| async move {
        check_name("domain", &input.name)?;
        s.store.create_domain(&input.name, now_of(&s)).await?;
        Ok((input.name.clone(), json!({"name": input.name, "enabled": true})))
    })
    .await
}

async fn toggle_domain(
    State(state): State<Arc<IssuerState>>,
    Path((name, verb)): Path<(String, String)>,
    request: Request,
) -> Response {
    let s = state.clone();
    action(&state, request, "domain.set_enabled", |_: Empty, _| async move {
        check_name("domain", &name)?;
        let enabled = enabled_from(&verb)?;
        s.store.set_domain_enabled(&name, enabled).await?;
        Ok((name.clone(), json!({"name": name, "enabled": enabled})))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectInput {
    name: String,
    domain: String,
}

async fn list_projects(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        let projects = state.store.list_projects().await?;
        Ok(json!(
            projects
                .into_iter()
                .map(|(name, enabled)| json!({"project": name, "enabled": enabled}))
                .collect::<Vec<_>>()
        ))
    })
    .await
}

async fn create_project(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let s = state.clone();
    action(&state, request, "project.create", |input: ProjectInput, _| async move {
        check_name("project", &input.name)?;
        check_name("domain", &input.domain)?;
        s.store.create_project(&input.domain, &input.name, now_of(&s)).await?;
        let qualified = format!("{}@{}", input.name, input.domain);
        Ok((qualified.clone(), json!({"project": qualified, "enabled": true})))
    })
    .await
}

async fn toggle_project(
    State(state): State<Arc<IssuerState>>,
    Path((project, verb)): Path<(String, String)>,
    request: Request,
) -> Response {
    let s = state.clone();
    action(&state, request, "project.set_enabled", |_: Empty, _| async move {
        let (name, domain) = split_qualified("project", &project)?;
        let enabled = enabled_from(&verb)?;
        s.store.set_project_enabled(domain, name, enabled).await?;
        Ok((project.clone(), json!({"project": project, "enabled": enabled})))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserInput {
    user: String,
    #[serde(default = "person")]
    kind: String,
    password: Option<String>,
}

fn person() -> String {
    "person".into()
}

async fn list_users(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        Ok(json!(state.store.list_users().await?))
    })
    .await
}

async fn create_user(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let s = state.clone();
    action(&state, request, "user.create", |input: UserInput, _| async move {
        let (name, domain) = split_qualified("user", &input.user)?;
        if input.kind != "person" && input.kind != "service" {
            return err(Code::IssuerBadRequest, "kind is person or service");
        }
        let hash = match input.password {
            Some(password) => Some(super::password::hash(&zeroize::Zeroizing::new(password))?),
            None => None,
        };
        s.store
            .create_user(domain, name, &input.kind, hash.as_deref(), now_of(&s))
            .await?;
        Ok((
            input.user.clone(),
            json!({"user": input.user, "kind": input.kind, "enabled": true, "has_password": hash.is_some()}),
        ))
    })
    .await
}

async fn toggle_user(
    State(state): State<Arc<IssuerState>>,
    Path((user, verb)): Path<(String, String)>,
    request: Request,
) -> Response {
    let s = state.clone();
    action(&state, request, "user.set_enabled", |_: Empty, _| async move {
        let (name, domain) = split_qualified("user", &user)?;
        let enabled = enabled_from(&verb)?;
        s.store.set_user_enabled(domain, name, enabled).await?;
        Ok((user.clone(), json!({"user": user, "enabled": enabled})))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordInput {
    password: String,
}

async fn set_password(State(state): State<Arc<IssuerState>>, Path(user): Path<String>, request: Request) -> Response {
    let s = state.clone();
    action(
        &state,
        request,
        "user.set_password",
        |input: PasswordInput, _| async move {
            let (name, domain) = split_qualified("user", &user)?;
            let hash = super::password::hash(&zeroize::Zeroizing::new(input.password))?;
            s.store.set_password(domain, name, &hash).await?;
            Ok((user.clone(), json!({"user": user, "has_password": true})))
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyInput {
    key: String,
}

async fn add_key(State(state): State<Arc<IssuerState>>, Path(user): Path<String>, request: Request) -> Response {
    let s = state.clone();
    action(&state, request, "user.add_key", |input: KeyInput, _| async move {
        let (name, domain) = split_qualified("user", &user)?;
        let bytes =
            b64url_decode(&input.key).map_err(|_| Error::new(Code::IssuerInvalidKey, "key is not base64url"))?;
        let key = PublicKey::from_cose_key(&bytes)
            .map_err(|e| Error::new(Code::IssuerInvalidKey, format!("the key is refused: {e}")))?;
        let thumbprint = key.thumbprint().to_string();
        s.store
            .add_user_key(
                domain,
                name,
                &thumbprint,
                &super::api::b64(&key.to_cose_key(None)),
                now_of(&s),
            )
            .await?;
        Ok((user.clone(), json!({"user": user, "thumbprint": thumbprint})))
    })
    .await
}

async fn list_roles(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        Ok(json!(state.store.list_roles().await?))
    })
    .await
}

async fn create_role(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let s = state.clone();
    action(&state, request, "role.create", |input: Name, _| async move {
        check_name("role", &input.name)?;
        s.store.create_role(&input.name, now_of(&s)).await?;
        Ok((input.name.clone(), json!({"name": input.name})))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantInput {
    user: String,
    project: String,
    role: String,
}

async fn list_grants(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        Ok(json!(state.store.list_grants().await?))
    })
    .await
}

/// `(domain, name)` of a user or project.
type Qualified<'a> = (&'a str, &'a str);

fn parse_grant(input: &GrantInput) -> Result<(Qualified<'_>, Qualified<'_>)> {
    let (user, user_domain) = split_qualified("user", &input.user)?;
    let (project, project_domain) = split_qualified("project", &input.project)?;
    check_name("role", &input.role)?;
    Ok(((user_domain, user), (project_domain, project)))
}

async fn grant(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let s = state.clone();
    action(&state, request, "grant", |input: GrantInput, _| async move {
        let (user, project) = parse_grant(&input)?;
        s.store.grant(user, project, &input.role, now_of(&s)).await?;
        let target = format!("{} {} {}", input.user, input.role, input.project);
        Ok((
            target,
            json!({"user": input.user, "project": input.project, "role": input.role}),
        ))
    })
    .await
}

async fn revoke(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let s = state.clone();
    action(&state, request, "revoke", |input: GrantInput, _| async move {
        let (user, project) = parse_grant(&input)?;
        s.store.revoke(user, project, &input.role).await?;
        let target = format!("{} {} {}", input.user, input.role, input.project);
        Ok((
            target,
            json!({"user": input.user, "project": input.project, "role": input.role, "revoked": true}),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceInput {
    audience: String,
}

async fn list_services(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        Ok(json!(state.store.list_services().await?))
    })
    .await
}

async fn create_service(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let s = state.clone();
    action(&state, request, "service.create", |input: ServiceInput, _| async move {
        check_audience(&input.audience)?;
        if input.audience == s.config.issuer_id || input.audience == s.config.admin_audience() {
            return err(
                Code::IssuerBadRequest,
                "the issuer's own id and its admin audience are not service audiences",
            );
        }
        s.store.create_service(&input.audience, now_of(&s)).await?;
        Ok((input.audience.clone(), json!({"audience": input.audience})))
    })
    .await
}

async fn delete_service(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let s = state.clone();
    action(&state, request, "service.delete", |input: ServiceInput, _| async move {
        check_audience(&input.audience)?;
        if input.audience == s.config.admin_audience() {
            return err(Code::IssuerBadRequest, "the admin audience cannot be removed");
        }
        s.store.delete_service(&input.audience).await?;
        Ok((
            input.audience.clone(),
            json!({"audience": input.audience, "deleted": true}),
        ))
    })
    .await
}

async fn list_audit(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    let limit = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
        .map(str::parse::<i64>);
    read(&state, verified, || async {
        let limit = match limit {
            None => 100,
            Some(Ok(n)) => n.clamp(1, 1000),
            Some(Err(_)) => return err(Code::IssuerBadRequest, "limit must be a number"),
        };
        Ok(json!(state.store.list_audit(limit).await?))
    })
    .await
}
