//! The admin API. It sits behind `KeyboundLayer`: every call needs a service
//! token for the admin audience, scoped to project `admin@default`, with role
//! `admin`, and a proof. Every action is written to the audit log.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post, put};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::IssuerState;
use super::api::{json_body, json_response, respond, verified};
use super::names::{Name, ProjectName, UserName, check_audience};
use super::store::{Audit, Grants, Identities, Services, Store, Tx, bootstrap_names};
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
    let admin = UserName::parse(request.subject())?;
    let project = ProjectName::new(Name::parse("project", PROJECT)?, Name::parse("domain", DOMAIN)?);
    let facts = state
        .store
        .conn()
        .await?
        .mint_facts(&admin, Some(&project), &state.config.admin_audience())
        .await?;
    if !facts.user_enabled || !facts.project_enabled || !facts.roles.iter().any(|r| r == ROLE) {
        return err(
            Code::IssuerForbidden,
            "the token's subject is no longer an enabled admin of admin@default",
        );
    }
    Ok(())
}

/// The changes of one admin action. Its transaction begins at the first
/// [`Change::tx`], so that checks and password hashing before it hold no
/// database lock; the action's audit record is written in the same
/// transaction, and nothing is committed unless both are.
struct Change {
    store: Store,
    now: i64,
    tx: Option<Tx>,
}

impl Change {
    async fn tx(&mut self) -> Result<&mut Tx> {
        let tx = match self.tx.take() {
            Some(tx) => tx,
            None => self.store.begin().await?,
        };
        Ok(self.tx.insert(tx))
    }

    /// Writes the audit record and commits it with the changes.
    async fn commit(mut self, actor: &str, action: &str, target: &str) -> Result<()> {
        let now = self.now;
        self.tx().await?.record(now, actor, action, target, "ok").await?;
        match self.tx {
            Some(tx) => tx.commit().await,
            None => Ok(()),
        }
    }
}

type Pending<'c> = Pin<Box<dyn Future<Output = Result<(String, serde_json::Value)>> + Send + 'c>>;

/// Runs an admin action: scope check, body, the change and its audit record
/// in one transaction, response.
async fn action<T, F>(state: &IssuerState, request: Request, name: &'static str, run: F) -> Response
where
    T: serde::de::DeserializeOwned,
    F: for<'c> FnOnce(T, &'c mut Change) -> Pending<'c>,
{
    let started = Instant::now();
    let result = async {
        let (parts, verified, body) = verified(request).await?;
        admin_scope(state, &verified).await?;
        let actor = verified.subject().to_owned();
        let input: T = json_body(&parts, &body)?;
        let mut change = Change {
            store: state.store.clone(),
            now: state.now() as i64,
            tx: None,
        };
        let now = change.now;
        match run(input, &mut change).await {
            Ok((target, output)) => {
                change.commit(&actor, name, &target).await?;
                Ok(json_response(StatusCode::OK, output))
            }
            Err(e) => {
                // Whatever the action changed is rolled back. The refusal is
                // audited on its own; a database outage cannot be.
                drop(change);
                if e.code() != Code::IssuerUnavailable {
                    state
                        .store
                        .conn()
                        .await?
                        .record(now, &actor, name, "-", e.code().as_str())
                        .await?;
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
struct NameInput {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

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
        let domains = state.store.conn().await?.list_domains().await?;
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
    action(&state, request, "domain.create", |input: NameInput, change| {
        Box::pin(async move {
            let name = Name::parse("domain", &input.name)?;
            let now = change.now;
            change.tx().await?.create_domain(&name, now).await?;
            Ok((name.to_string(), json!({"name": name.as_str(), "enabled": true})))
        })
    })
    .await
}

async fn toggle_domain(
    State(state): State<Arc<IssuerState>>,
    Path((name, verb)): Path<(String, String)>,
    request: Request,
) -> Response {
    action(&state, request, "domain.set_enabled", |_: Empty, change| {
        Box::pin(async move {
            let name = Name::parse("domain", &name)?;
            let enabled = enabled_from(&verb)?;
            change.tx().await?.set_domain_enabled(&name, enabled).await?;
            Ok((name.to_string(), json!({"name": name.as_str(), "enabled": enabled})))
        })
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
        let projects = state.store.conn().await?.list_projects().await?;
        Ok(json!(
            projects
                .into_iter()
                .map(|(project, enabled)| json!({"project": project, "enabled": enabled}))
                .collect::<Vec<_>>()
        ))
    })
    .await
}

async fn create_project(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "project.create", |input: ProjectInput, change| {
        Box::pin(async move {
            let project = ProjectName::new(
                Name::parse("project", &input.name)?,
                Name::parse("domain", &input.domain)?,
            );
            let now = change.now;
            change.tx().await?.create_project(&project, now).await?;
            Ok((project.to_string(), json!({"project": project, "enabled": true})))
        })
    })
    .await
}

async fn toggle_project(
    State(state): State<Arc<IssuerState>>,
    Path((project, verb)): Path<(String, String)>,
    request: Request,
) -> Response {
    action(&state, request, "project.set_enabled", |_: Empty, change| {
        Box::pin(async move {
            let project = ProjectName::parse(&project)?;
            let enabled = enabled_from(&verb)?;
            change.tx().await?.set_project_enabled(&project, enabled).await?;
            Ok((project.to_string(), json!({"project": project, "enabled": enabled})))
        })
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
        Ok(json!(state.store.conn().await?.list_users().await?))
    })
    .await
}

async fn create_user(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "user.create", |input: UserInput, change| {
        Box::pin(async move {
            let user = UserName::parse(&input.user)?;
            if input.kind != "person" && input.kind != "service" {
                return err(Code::IssuerBadRequest, "kind is person or service");
            }
            let hash = match input.password {
                Some(password) => Some(super::password::hash(zeroize::Zeroizing::new(password)).await?),
                None => None,
            };
            let now = change.now;
            change
                .tx()
                .await?
                .create_user(&user, &input.kind, hash.as_deref(), now)
                .await?;
            Ok((
                user.to_string(),
                json!({"user": user, "kind": input.kind, "enabled": true, "has_password": hash.is_some()}),
            ))
        })
    })
    .await
}

async fn toggle_user(
    State(state): State<Arc<IssuerState>>,
    Path((user, verb)): Path<(String, String)>,
    request: Request,
) -> Response {
    action(&state, request, "user.set_enabled", |_: Empty, change| {
        Box::pin(async move {
            let user = UserName::parse(&user)?;
            let enabled = enabled_from(&verb)?;
            change.tx().await?.set_user_enabled(&user, enabled).await?;
            Ok((user.to_string(), json!({"user": user, "enabled": enabled})))
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordInput {
    password: String,
}

async fn set_password(State(state): State<Arc<IssuerState>>, Path(user): Path<String>, request: Request) -> Response {
    action(&state, request, "user.set_password", |input: PasswordInput, change| {
        Box::pin(async move {
            let user = UserName::parse(&user)?;
            let hash = super::password::hash(zeroize::Zeroizing::new(input.password)).await?;
            change.tx().await?.set_password(&user, &hash).await?;
            Ok((user.to_string(), json!({"user": user, "has_password": true})))
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyInput {
    key: String,
}

async fn add_key(State(state): State<Arc<IssuerState>>, Path(user): Path<String>, request: Request) -> Response {
    action(&state, request, "user.add_key", |input: KeyInput, change| {
        Box::pin(async move {
            let user = UserName::parse(&user)?;
            let bytes =
                b64url_decode(&input.key).map_err(|_| Error::new(Code::IssuerInvalidKey, "key is not base64url"))?;
            let key = PublicKey::from_cose_key(&bytes)
                .map_err(|e| Error::new(Code::IssuerInvalidKey, format!("the key is refused: {e}")))?;
            let thumbprint = key.thumbprint().to_string();
            let now = change.now;
            change
                .tx()
                .await?
                .add_user_key(&user, &thumbprint, &super::api::b64(&key.to_cose_key(None)), now)
                .await?;
            Ok((user.to_string(), json!({"user": user, "thumbprint": thumbprint})))
        })
    })
    .await
}

async fn list_roles(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        Ok(json!(state.store.conn().await?.list_roles().await?))
    })
    .await
}

async fn create_role(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "role.create", |input: NameInput, change| {
        Box::pin(async move {
            let role = Name::parse("role", &input.name)?;
            let now = change.now;
            change.tx().await?.create_role(&role, now).await?;
            Ok((role.to_string(), json!({"name": role.as_str()})))
        })
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

/// A role assignment, its names checked.
struct ParsedGrant {
    user: UserName,
    project: ProjectName,
    role: Name,
}

impl ParsedGrant {
    fn parse(input: &GrantInput) -> Result<Self> {
        Ok(ParsedGrant {
            user: UserName::parse(&input.user)?,
            project: ProjectName::parse(&input.project)?,
            role: Name::parse("role", &input.role)?,
        })
    }

    /// The audit target: `user role project`.
    fn target(&self) -> String {
        format!("{} {} {}", self.user, self.role, self.project)
    }
}

async fn list_grants(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        Ok(json!(state.store.conn().await?.list_grants().await?))
    })
    .await
}

async fn grant(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "grant", |input: GrantInput, change| {
        Box::pin(async move {
            let g = ParsedGrant::parse(&input)?;
            let now = change.now;
            change.tx().await?.grant(&g.user, &g.project, &g.role, now).await?;
            Ok((
                g.target(),
                json!({"user": g.user, "project": g.project, "role": g.role.as_str()}),
            ))
        })
    })
    .await
}

async fn revoke(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "revoke", |input: GrantInput, change| {
        Box::pin(async move {
            let g = ParsedGrant::parse(&input)?;
            change.tx().await?.revoke(&g.user, &g.project, &g.role).await?;
            Ok((
                g.target(),
                json!({"user": g.user, "project": g.project, "role": g.role.as_str(), "revoked": true}),
            ))
        })
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
        Ok(json!(state.store.conn().await?.list_services().await?))
    })
    .await
}

async fn create_service(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let s = state.clone();
    action(&state, request, "service.create", |input: ServiceInput, change| {
        Box::pin(async move {
            check_audience(&input.audience)?;
            if input.audience == s.config.issuer_id || input.audience == s.config.admin_audience() {
                return err(
                    Code::IssuerBadRequest,
                    "the issuer's own id and its admin audience are not service audiences",
                );
            }
            let now = change.now;
            change.tx().await?.create_service(&input.audience, now).await?;
            Ok((input.audience.clone(), json!({"audience": input.audience})))
        })
    })
    .await
}

async fn delete_service(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let s = state.clone();
    action(&state, request, "service.delete", |input: ServiceInput, change| {
        Box::pin(async move {
            check_audience(&input.audience)?;
            if input.audience == s.config.admin_audience() {
                return err(Code::IssuerBadRequest, "the admin audience cannot be removed");
            }
            change.tx().await?.delete_service(&input.audience).await?;
            Ok((
                input.audience.clone(),
                json!({"audience": input.audience, "deleted": true}),
            ))
        })
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
        Ok(json!(state.store.conn().await?.list_audit(limit).await?))
    })
    .await
}
