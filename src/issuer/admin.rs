//! The admin API. It sits behind `KeyboundLayer`: every call needs a service
//! token for the admin audience, scoped to project `admin@default`, with role
//! `admin`, and a proof. Every action is written to the audit log.

use std::future::Future;
use std::pin::Pin;
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
use super::api::{json_body, json_response, respond, verified};
use super::store::{
    Audit, AuditEntry, AuditQuery, Grant, Grants, Identities, Origin, RootSecrets, Services, SessionKey, Store, Tx,
    UserInfo, UserKey, bootstrap_names,
};
use crate::encoding::b64url_decode;
use crate::error::{Code, Error, Result, err};
use crate::key::PublicKey;
use crate::names::{Name, ProjectName, UserName, check_audience};
use crate::verify::VerifiedRequest;

pub(super) fn routes() -> OpenApiRouter<Arc<IssuerState>> {
    OpenApiRouter::new()
        .routes(routes!(list_domains, create_domain))
        .routes(routes!(delete_domain))
        .routes(routes!(toggle_domain))
        .routes(routes!(list_projects, create_project))
        .routes(routes!(delete_project))
        .routes(routes!(toggle_project))
        .routes(routes!(list_users, create_user))
        .routes(routes!(show_user, delete_user))
        .routes(routes!(set_password))
        .routes(routes!(list_keys, add_key))
        .routes(routes!(remove_key))
        .routes(routes!(unlock_user))
        .routes(routes!(toggle_user))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(delete_role))
        .routes(routes!(list_grants, grant, revoke))
        .routes(routes!(list_services, create_service, delete_service))
        .routes(routes!(list_audit))
        .routes(routes!(rotate_keys))
        .merge(super::trusts::admin_routes())
        .merge(super::federation::admin_routes())
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
    let thumbprint = request.key_thumbprint().to_string();
    let session = SessionKey {
        thumbprint: &thumbprint,
        issued_at: request.token().issued_at() as i64,
        leeway: state.config.leeway as i64,
    };
    let facts = state
        .store
        .conn()
        .await?
        .mint_facts_for(&admin, Some(&project), &state.config.admin_audience(), Some(session))
        .await?;
    if !facts.user_enabled || !facts.project_enabled || !facts.roles.iter().any(|r| r == ROLE) {
        return err(
            Code::IssuerForbidden,
            "the token's subject is no longer an enabled admin of admin@default",
        );
    }
    // A token of a user deleted and created again, or bound to a key
    // removed since, is not the admin's any more.
    if !facts.same_user(session) || facts.key_removed {
        return err(
            Code::IssuerForbidden,
            "the token's subject was deleted, or its key removed, after the token was issued",
        );
    }
    Ok(())
}

/// The changes of one admin action. Its transaction begins at the first
/// [`Change::tx`], so that checks and password hashing before it hold no
/// database lock; the action's audit record is written in the same
/// transaction, and nothing is committed unless both are.
pub(super) struct Change {
    store: Store,
    now: i64,
    tx: Option<Tx>,
    origin: Origin,
}

impl Change {
    /// The time of the change (Unix seconds), also its audit record's.
    pub(super) fn now(&self) -> i64 {
        self.now
    }

    pub(super) async fn tx(&mut self) -> Result<&mut Tx> {
        let tx = match self.tx.take() {
            Some(tx) => tx,
            None => self.store.begin().await?,
        };
        Ok(self.tx.insert(tx))
    }

    /// Writes the audit record and commits it with the changes.
    async fn commit(mut self, actor: &str, action: &str, target: &str) -> Result<()> {
        let (now, origin) = (self.now, self.origin.clone());
        self.tx()
            .await?
            .record_from(&origin, now, actor, action, target, "ok")
            .await?;
        match self.tx {
            Some(tx) => tx.commit().await,
            None => Ok(()),
        }
    }
}

pub(super) type Pending<'c, O> = Pin<Box<dyn Future<Output = Result<(String, O)>> + Send + 'c>>;

/// Runs an admin action: scope check, body, the change and its audit record
/// in one transaction, response.
pub(super) async fn action<T, O, F>(state: &IssuerState, request: Request, name: &'static str, run: F) -> Response
where
    T: serde::de::DeserializeOwned,
    O: Serialize,
    F: for<'c> FnOnce(T, &'c mut Change) -> Pending<'c, O>,
{
    let started = Instant::now();
    let result = async {
        let (parts, verified, body) = verified(request).await?;
        admin_scope(state, &verified).await?;
        let actor = verified.subject().to_owned();
        let origin = super::api::origin(state, &parts, Some(verified.key_thumbprint()));
        let input: T = json_body(&parts, &body)?;
        let mut change = Change {
            store: state.store.clone(),
            now: state.now() as i64,
            tx: None,
            origin: origin.clone(),
        };
        let now = change.now;
        match run(input, &mut change).await {
            Ok((target, output)) => {
                change.commit(&actor, name, &target).await?;
                Ok(json_response(StatusCode::OK, &output))
            }
            Err(e) => {
                // Whatever the action changed is rolled back. The refusal is
                // audited on its own; a database outage cannot be.
                drop(change);
                if !super::store::is_outage(e.code()) {
                    state
                        .store
                        .conn()
                        .await?
                        .record_from(&origin, now, &actor, name, "-", e.code().as_str())
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
pub(super) async fn read<O, F, Fut>(state: &IssuerState, verified: Option<VerifiedRequest>, run: F) -> Response
where
    F: FnOnce() -> Fut,
    O: Serialize,
    Fut: std::future::Future<Output = Result<O>>,
{
    let started = Instant::now();
    let result = async {
        admin_scope(
            state,
            &verified.ok_or_else(|| Error::new(Code::IssuerForbidden, "not verified"))?,
        )
        .await?;
        Ok(json_response(StatusCode::OK, &run().await?))
    }
    .await;
    respond(state, "admin", started, result)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Name)]
struct NameInput {
    name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Empty {}

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

#[utoipa::path(
    get,
    path = "/v1/admin/domains",
    operation_id = "listDomains",
    tag = "admin",
    summary = "List domains",
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "All domains, by name.", body = [Domain], content_type = "application/json")
    )
)]
async fn list_domains(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        let domains = state.store.conn().await?.list_domains().await?;
        Ok(domains
            .into_iter()
            .map(|(name, enabled)| Domain { name, enabled })
            .collect::<Vec<_>>())
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/domains",
    operation_id = "createDomain",
    tag = "admin",
    summary = "Create a domain",
    description = "Audited as `domain.create`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = NameInput, content_type = "application/json", example = json!({"name": "stoughton"})),
    responses(
        (status = 200, description = "The new domain (enabled).", body = Domain, content_type = "application/json")
    )
)]
async fn create_domain(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "domain.create", |input: NameInput, change| {
        Box::pin(async move {
            let name = Name::parse("domain", &input.name)?;
            let now = change.now;
            change.tx().await?.create_domain(&name, now).await?;
            Ok((
                name.to_string(),
                Domain {
                    name: name.as_str().to_owned(),
                    enabled: true,
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/domains/{name}/{action}",
    operation_id = "setDomainEnabled",
    tag = "admin",
    summary = "Enable or disable a domain (and with it its users and projects)",
    description = "Audited as `domain.set_enabled`.",
    params(
        ("name" = String, Path, description = "domain name", example = "stoughton"),
        ("action" = String, Path, description = "`enable` or `disable`; anything else: 404 `issuer.not_found`", example = "disable")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = Empty, content_type = "application/json", example = json!({})),
    responses(
        (status = 200, description = "The domain's new state.", body = Domain, content_type = "application/json")
    )
)]
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
            Ok((
                name.to_string(),
                Domain {
                    name: name.as_str().to_owned(),
                    enabled,
                },
            ))
        })
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProjectInput {
    name: String,
    domain: String,
}

#[utoipa::path(
    get,
    path = "/v1/admin/projects",
    operation_id = "listProjects",
    tag = "admin",
    summary = "List projects",
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "All projects, by domain and name.", body = [Project], content_type = "application/json")
    )
)]
async fn list_projects(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        let projects = state.store.conn().await?.list_projects().await?;
        Ok(projects
            .into_iter()
            .map(|(project, enabled)| Project { project, enabled })
            .collect::<Vec<_>>())
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/projects",
    operation_id = "createProject",
    tag = "admin",
    summary = "Create a project in an existing domain",
    description = "Audited as `project.create`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = ProjectInput, content_type = "application/json", example = json!({"name": "turing", "domain": "stoughton"})),
    responses(
        (status = 200, description = "The new project (enabled).", body = Project, content_type = "application/json")
    )
)]
async fn create_project(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "project.create", |input: ProjectInput, change| {
        Box::pin(async move {
            let project = ProjectName::new(
                Name::parse("project", &input.name)?,
                Name::parse("domain", &input.domain)?,
            );
            let now = change.now;
            change.tx().await?.create_project(&project, now).await?;
            Ok((
                project.to_string(),
                Project {
                    project: project.clone(),
                    enabled: true,
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/projects/{project}/{action}",
    operation_id = "setProjectEnabled",
    tag = "admin",
    summary = "Enable or disable a project",
    description = "Audited as `project.set_enabled`.",
    params(
        ("project" = String, Path, description = "`name@domain`", example = "turing@stoughton"),
        ("action" = String, Path, description = "`enable` or `disable`; anything else: 404 `issuer.not_found`", example = "disable")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = Empty, content_type = "application/json", example = json!({})),
    responses(
        (status = 200, description = "The project's new state.", body = Project, content_type = "application/json")
    )
)]
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
            Ok((
                project.to_string(),
                Project {
                    project: project.clone(),
                    enabled,
                },
            ))
        })
    })
    .await
}

#[derive(Deserialize, ToSchema)]
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

#[utoipa::path(
    get,
    path = "/v1/admin/users",
    operation_id = "listUsers",
    tag = "admin",
    summary = "List users",
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "All users, by domain and name.", body = [UserInfo], content_type = "application/json")
    )
)]
async fn list_users(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        state.store.conn().await?.list_users().await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/users",
    operation_id = "createUser",
    tag = "admin",
    summary = "Create a user",
    description = "`issuer.bad_request` also for a kind other than person/service and a password outside 8–1024 bytes. Audited as `user.create`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = UserInput, content_type = "application/json", example = json!({"user": "ayoung@stoughton", "kind": "person", "password": "correct horse battery"})),
    responses(
        (status = 200, description = "The new user (enabled).", body = UserInfo, content_type = "application/json")
    )
)]
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
                UserInfo {
                    user: user.clone(),
                    kind: input.kind,
                    enabled: true,
                    has_password: hash.is_some(),
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{user}/{action}",
    operation_id = "setUserEnabled",
    tag = "admin",
    summary = "Enable or disable a user",
    description = "Audited as `user.set_enabled`.",
    params(
        ("user" = String, Path, description = "`name@domain`", example = "ayoung@stoughton"),
        ("action" = String, Path, description = "`enable` or `disable`; anything else: 404 `issuer.not_found`", example = "disable")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = Empty, content_type = "application/json", example = json!({})),
    responses(
        (status = 200, description = "The user's new state.", body = UserEnabled, content_type = "application/json")
    )
)]
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
            Ok((
                user.to_string(),
                UserEnabled {
                    user: user.clone(),
                    enabled,
                },
            ))
        })
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordInput {
    password: String,
}

#[utoipa::path(
    put,
    path = "/v1/admin/users/{user}/password",
    operation_id = "setPassword",
    tag = "admin",
    summary = "Set a user's password (clears a lockout)",
    description = "Audited as `user.set_password`.",
    params(
        ("user" = String, Path, description = "`name@domain`", example = "ayoung@stoughton")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = PasswordInput, content_type = "application/json", example = json!({"password": "another horse battery"})),
    responses(
        (status = 200, description = "Done.", body = PasswordSet, content_type = "application/json")
    )
)]
async fn set_password(State(state): State<Arc<IssuerState>>, Path(user): Path<String>, request: Request) -> Response {
    action(&state, request, "user.set_password", |input: PasswordInput, change| {
        Box::pin(async move {
            let user = UserName::parse(&user)?;
            let hash = super::password::hash(zeroize::Zeroizing::new(input.password)).await?;
            change.tx().await?.set_password(&user, &hash).await?;
            Ok((
                user.to_string(),
                PasswordSet {
                    user: user.clone(),
                    has_password: true,
                },
            ))
        })
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyInput {
    key: String,
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{user}/keys",
    operation_id = "addUserKey",
    tag = "admin",
    summary = "Register a public key for key login",
    description = "Audited as `user.add_key`.",
    params(
        ("user" = String, Path, description = "`name@domain`", example = "nova-compute@stoughton")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = KeyInput, content_type = "application/json", example = json!({"key": "pAEBAycgBiFYINdamAGCsQq31Uv-08lkBzoO4XLz2qYjJa8CGmj3B1Ea"})),
    responses(
        (status = 200, description = "The key's thumbprint.", body = KeyAdded, content_type = "application/json")
    )
)]
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
            Ok((
                user.to_string(),
                KeyAdded {
                    user: user.clone(),
                    thumbprint,
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/admin/roles",
    operation_id = "listRoles",
    tag = "admin",
    summary = "List roles",
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "All role names, sorted.", body = [String], content_type = "application/json")
    )
)]
async fn list_roles(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        state.store.conn().await?.list_roles().await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/roles",
    operation_id = "createRole",
    tag = "admin",
    summary = "Create a role",
    description = "Audited as `role.create`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = NameInput, content_type = "application/json", example = json!({"name": "member"})),
    responses(
        (status = 200, description = "The new role.", body = Role, content_type = "application/json")
    )
)]
async fn create_role(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "role.create", |input: NameInput, change| {
        Box::pin(async move {
            let role = Name::parse("role", &input.name)?;
            let now = change.now;
            change.tx().await?.create_role(&role, now).await?;
            Ok((
                role.to_string(),
                Role {
                    name: role.as_str().to_owned(),
                },
            ))
        })
    })
    .await
}

#[derive(Deserialize, ToSchema)]
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

#[utoipa::path(
    get,
    path = "/v1/admin/grants",
    operation_id = "listGrants",
    tag = "admin",
    summary = "List role assignments",
    description = "Every filter given must match; without filters, all assignments. A `user` or `project` that is not `name@domain`, or a `role` that is not a name: 400 `issuer.invalid_name`; another parameter: 400 `issuer.bad_request`.",
    params(
        ("user" = Option<String>, Query, description = "only the grants of this user, `name@domain`", example = "ayoung@stoughton"),
        ("project" = Option<String>, Query, description = "only the grants on this project, `name@domain`", example = "turing@stoughton"),
        ("role" = Option<String>, Query, description = "only the grants of this role", example = "member")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "The assignments, sorted by user, project and role.", body = [Grant], content_type = "application/json")
    )
)]
async fn list_grants(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    let query = request.uri().query().map(str::to_owned);
    read(&state, verified, || async {
        let (mut user, mut project, mut role) = (None, None, None);
        for (key, value) in query_params(query.as_deref(), &["user", "project", "role"])? {
            match key.as_str() {
                "user" => user = Some(UserName::parse(&value)?),
                "project" => project = Some(ProjectName::parse(&value)?),
                _ => role = Some(Name::parse("role", &value)?),
            }
        }
        state
            .store
            .conn()
            .await?
            .list_grants_where(user.as_ref(), project.as_ref(), role.as_ref())
            .await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/grants",
    operation_id = "grant",
    tag = "admin",
    summary = "Grant a role on a project to a user",
    description = "Audited as `grant`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = GrantInput, content_type = "application/json", example = json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "member"})),
    responses(
        (status = 200, description = "The assignment.", body = Grant, content_type = "application/json")
    )
)]
async fn grant(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "grant", |input: GrantInput, change| {
        Box::pin(async move {
            let g = ParsedGrant::parse(&input)?;
            let now = change.now;
            let tx = change.tx().await?;
            // A user of a peer's domain is granted roles as a remote user.
            if let Some(peer) = super::store::Federation::peer_for_domain(&mut **tx, g.user.domain.as_str()).await? {
                return err(
                    Code::IssuerNotFound,
                    format!(
                        "{} is a user of the peer issuer {peer}, not of this issuer: grant remote users with \
                         --remote (POST /v1/admin/remote-grants)",
                        g.user
                    ),
                );
            }
            tx.grant(&g.user, &g.project, &g.role, now).await?;
            Ok((
                g.target(),
                Grant {
                    user: g.user,
                    project: g.project,
                    role: g.role.as_str().to_owned(),
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/admin/grants",
    operation_id = "revoke",
    tag = "admin",
    summary = "Revoke a role assignment",
    description = "Takes effect at the next mint; tokens already minted live out their lifetime. Audited as `revoke`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = GrantInput, content_type = "application/json", example = json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "member"})),
    responses(
        (status = 200, description = "The assignment is gone.", body = Revoked, content_type = "application/json")
    )
)]
async fn revoke(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    action(&state, request, "revoke", |input: GrantInput, change| {
        Box::pin(async move {
            let g = ParsedGrant::parse(&input)?;
            change.tx().await?.revoke(&g.user, &g.project, &g.role).await?;
            Ok((
                g.target(),
                Revoked {
                    user: g.user,
                    project: g.project,
                    role: g.role.as_str().to_owned(),
                    revoked: true,
                },
            ))
        })
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ServiceInput {
    audience: String,
}

#[utoipa::path(
    get,
    path = "/v1/admin/services",
    operation_id = "listServices",
    tag = "admin",
    summary = "List service audiences",
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "All registered audiences, sorted. The admin audience follows the issuer id and is not listed, unless an administrator registered it (spec/issuer.md §10.1).", body = [String], content_type = "application/json")
    )
)]
async fn list_services(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        state.store.conn().await?.list_services().await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/services",
    operation_id = "createService",
    tag = "admin",
    summary = "Register a service audience",
    description = "`issuer.bad_request` for the issuer's own id. Audited as `service.create`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = ServiceInput, content_type = "application/json", example = json!({"audience": "https://nova.example"})),
    responses(
        (status = 200, description = "The registered audience.", body = Service, content_type = "application/json")
    )
)]
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
            let tx = change.tx().await?;
            if super::store::Federation::list_peers(&mut **tx)
                .await?
                .iter()
                .any(|p| p.issuer == input.audience)
            {
                return err(
                    Code::IssuerConflict,
                    format!(
                        "{} is a federation peer: a peer's id is not a service audience",
                        input.audience
                    ),
                );
            }
            tx.create_service(&input.audience, now).await?;
            Ok((
                input.audience.clone(),
                Service {
                    audience: input.audience,
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/admin/services",
    operation_id = "deleteService",
    tag = "admin",
    summary = "Remove a service audience",
    description = "`issuer.bad_request` for the admin audience. Audited as `service.delete`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = ServiceInput, content_type = "application/json", example = json!({"audience": "https://nova.example"})),
    responses(
        (status = 200, description = "The audience is gone.", body = ServiceDeleted, content_type = "application/json")
    )
)]
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
                ServiceDeleted {
                    audience: input.audience,
                    deleted: true,
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    operation_id = "listAudit",
    tag = "admin",
    summary = "Audit-log entries, newest first, a page at a time",
    description = "At most `limit` entries with an id below `before`, newest first: the next page starts `before` the last id of this one. Every filter given must match exactly; times are inclusive. A parameter that is not one of these, given twice, an integer that is not one, or a value over 1024 bytes: 400 `issuer.bad_request`. Mints counted in memory since the last write are written first (spec/issuer.md §10.4).",
    params(
        ("limit" = Option<i64>, Query, description = "how many entries; default 100; values outside 1–1000 are clamped", example = 50),
        ("before" = Option<i64>, Query, description = "only entries with a smaller id (the cursor of the next page)", example = 1200),
        ("actor" = Option<String>, Query, description = "only entries of this actor", example = "admin@default"),
        ("action" = Option<String>, Query, description = "only entries of this action", example = "user.delete"),
        ("target" = Option<String>, Query, description = "only entries of this target", example = "ayoung@stoughton"),
        ("since" = Option<i64>, Query, description = "only entries at or after this Unix time", example = 1763800000),
        ("until" = Option<i64>, Query, description = "only entries at or before this Unix time", example = 1763900000)
    ),
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "Audit entries.", body = [AuditEntry], content_type = "application/json")
    )
)]
async fn list_audit(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    let query = request.uri().query().map(str::to_owned);
    read(&state, verified, || async {
        let mut filter = AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        };
        let allowed = ["limit", "before", "actor", "action", "target", "since", "until"];
        for (key, value) in query_params(query.as_deref(), &allowed)? {
            match key.as_str() {
                "limit" => filter.limit = integer_param("limit", &value)?.clamp(1, 1000),
                "before" => filter.before = Some(integer_param("before", &value)?),
                "since" => filter.since = Some(integer_param("since", &value)?),
                "until" => filter.until = Some(integer_param("until", &value)?),
                "actor" => filter.actor = Some(value),
                "action" => filter.action = Some(value),
                _ => filter.target = Some(value),
            }
        }
        // The counts of recent mints are in memory: written first, so the
        // log read is current on this replica.
        state.mint_audit.flush(&state.store, state.now() as i64).await?;
        state.store.conn().await?.query_audit(&filter).await
    })
    .await
}

/// spec/issuer.md §7.2
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateInput {
    /// Rotate even while the next key has been published for less than the
    /// key-set cache max-age plus 10 s (verifiers may refuse new tokens
    /// until they refetch). Default false.
    force: Option<bool>,
}

#[utoipa::path(
    post,
    path = "/v1/admin/keys/rotate",
    operation_id = "rotateKeys",
    tag = "admin",
    summary = "Scheduled key rotation now: the next key signs from now on",
    description = "Ends the current key epoch now (spec/issuer.md §7.2): the next key, already published, signs every token from now on on this replica, and on the others within 5 s; the key it replaces stays published while its tokens live. Refused with 409 `issuer.rotation_too_early` while the next key has been published for less than the key-set cache max-age plus 10 s, unless `force`; `issuer.conflict` with a fixed signing key. Audited as `keys.rotate`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = RotateInput, content_type = "application/json", example = json!({"force": false})),
    responses(
        (status = 200, description = "The rotation.", body = Rotated, content_type = "application/json")
    )
)]
async fn rotate_keys(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let shared = state.clone();
    let response = action(&state, request, "keys.rotate", move |input: RotateInput, change| {
        Box::pin(async move {
            let now = change.now;
            let period = shared.config.rotation_period;
            let window = shared.config.max_session_lifetime + shared.config.leeway;
            let since = super::keys::lookback_start(now as u64, period, window).saturating_sub(period);
            // The offsets as the database has them, in the rotation's own
            // transaction: a rotation another replica just made counts.
            let rotations = change.tx().await?.rotations_since(since as i64).await?;
            shared.keys.set_schedule(super::keys::RotationSchedule::new(rotations));
            let rotation = shared.keys.plan_rotation(now as u64, input.force.unwrap_or(false))?;
            change.tx().await?.record_rotation(now, rotation.offset as i64).await?;
            let hex = crate::encoding::hex_encode;
            Ok((
                hex(&rotation.kid),
                Rotated {
                    kid: hex(&rotation.kid),
                    next_kid: hex(&rotation.next_kid),
                    previous_kid: hex(&rotation.previous_kid),
                    rotated_at: rotation.rotated_at,
                    next_rotation_at: rotation.next_rotation_at,
                },
            ))
        })
    })
    .await;
    if response.status().is_success() {
        // This replica signs with the new key before it answers; the others
        // read the offset within KEY_STATE_POLL.
        if let Err(e) = state.refresh_key_state().await {
            tracing::warn!(error = %e, "re-reading the key state after a rotation failed; the next poll retries");
        }
    }
    response
}

/// A scheduled rotation (kids as hex).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Rotated {
    /// the kid that signs from now on (until now the next key)
    kid: String,
    /// the kid published as the next key from now on
    next_kid: String,
    /// the kid that signed until now; it stays published while its tokens live
    previous_kid: String,
    /// Unix seconds: when the rotation took effect
    rotated_at: u64,
    /// Unix seconds: when the new key's epoch ends, unless rotated before
    next_rotation_at: u64,
}

/// A domain and whether it is enabled.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Domain {
    name: String,
    enabled: bool,
}

/// A project and whether it is enabled.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Project {
    /// `project@domain`
    #[schema(value_type = String)]
    project: ProjectName,
    enabled: bool,
}

/// A user's new enabled flag.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UserEnabled {
    /// `name@domain`
    #[schema(value_type = String)]
    user: UserName,
    enabled: bool,
}

/// A password was set.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordSet {
    /// `name@domain`
    #[schema(value_type = String)]
    user: UserName,
    has_password: bool,
}

/// A key was registered.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyAdded {
    /// `name@domain`
    #[schema(value_type = String)]
    user: UserName,
    /// the key's thumbprint (spec/formats.md §5.3)
    thumbprint: String,
}

/// A role name.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Role {
    name: String,
}

/// A revoked grant.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Revoked {
    /// `name@domain`
    #[schema(value_type = String)]
    user: UserName,
    /// `project@domain`
    #[schema(value_type = String)]
    project: ProjectName,
    role: String,
    revoked: bool,
}

/// A registered audience.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Service {
    audience: String,
}

/// A deleted audience.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ServiceDeleted {
    audience: String,
    deleted: bool,
}

/// The longest a query parameter's value may be, in bytes once decoded.
const MAX_QUERY_VALUE: usize = 1024;

/// The parameters of a query string, percent-decoded (`+` is a space).
/// A parameter not in `allowed`, one given twice, a malformed escape, a
/// value that is not UTF-8 or longer than 1024 bytes: `issuer.bad_request`.
pub(super) fn query_params(query: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&key) {
            return err(
                Code::IssuerBadRequest,
                format!(
                    "unknown query parameter {:?}; this operation takes {}",
                    crate::verify::token::truncate(key),
                    allowed.join(", ")
                ),
            );
        }
        if out.iter().any(|(k, _)| k == key) {
            return err(Code::IssuerBadRequest, format!("query parameter {key} is given twice"));
        }
        out.push((key.to_owned(), percent_decode(key, value)?));
    }
    Ok(out)
}

fn percent_decode(name: &str, value: &str) -> Result<String> {
    let bad = |why: &str| Error::new(Code::IssuerBadRequest, format!("query parameter {name}: {why}"));
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("a % not followed by two hex digits"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
        if out.len() > MAX_QUERY_VALUE {
            return Err(bad("longer than 1024 bytes"));
        }
    }
    String::from_utf8(out).map_err(|_| bad("not UTF-8"))
}

/// An integer query parameter.
fn integer_param(name: &str, value: &str) -> Result<i64> {
    value
        .parse::<i64>()
        .map_err(|_| Error::new(Code::IssuerBadRequest, format!("{name} must be an integer")))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/domains/{name}",
    operation_id = "deleteDomain",
    tag = "admin",
    summary = "Delete a domain that has no projects and no users",
    description = "Refused with 409 `issuer.in_use` while projects or users are in the domain (delete them first), and with 409 `issuer.protected` for `default`. Audited as `domain.delete`.",
    params(
        ("name" = String, Path, description = "domain name", example = "stoughton")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = Empty, content_type = "application/json", example = json!({})),
    responses(
        (status = 200, description = "The domain is gone.", body = DomainDeleted, content_type = "application/json")
    )
)]
async fn delete_domain(State(state): State<Arc<IssuerState>>, Path(name): Path<String>, request: Request) -> Response {
    action(&state, request, "domain.delete", |_: Empty, change| {
        Box::pin(async move {
            let name = Name::parse("domain", &name)?;
            change.tx().await?.delete_domain(&name).await?;
            Ok((
                name.to_string(),
                DomainDeleted {
                    name: name.as_str().to_owned(),
                    deleted: true,
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/admin/projects/{project}",
    operation_id = "deleteProject",
    tag = "admin",
    summary = "Delete a project with its role assignments and trusts",
    description = "Deletes, in one transaction, the role assignments on the project (local and remote) and the trusts on it (with their redelegations), then the project. Refused with 409 `issuer.in_use` while a federation peer is limited to the project (removing it from the peer's list would widen the peer's reach), and with 409 `issuer.protected` for `admin@default`. Audited as `project.delete`.",
    params(
        ("project" = String, Path, description = "`name@domain`", example = "turing@stoughton")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = Empty, content_type = "application/json", example = json!({})),
    responses(
        (status = 200, description = "The project is gone; how many assignments and trusts went with it.", body = ProjectDeleted, content_type = "application/json")
    )
)]
async fn delete_project(
    State(state): State<Arc<IssuerState>>,
    Path(project): Path<String>,
    request: Request,
) -> Response {
    action(&state, request, "project.delete", |_: Empty, change| {
        Box::pin(async move {
            let project = ProjectName::parse(&project)?;
            let removed = change.tx().await?.delete_project(&project).await?;
            Ok((
                project.to_string(),
                ProjectDeleted {
                    project: project.clone(),
                    deleted: true,
                    grants: removed.grants,
                    remote_grants: removed.remote_grants,
                    trusts: removed.trusts,
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{user}",
    operation_id = "showUser",
    tag = "admin",
    summary = "Show a user: flags, grants, registered keys, lockout",
    params(
        ("user" = String, Path, description = "`name@domain`", example = "ayoung@stoughton")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "The user.", body = UserDetail, content_type = "application/json")
    )
)]
async fn show_user(State(state): State<Arc<IssuerState>>, Path(user): Path<String>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        let user = UserName::parse(&user)?;
        let mut conn = state.store.conn().await?;
        let Some(record) = conn.user_record(&user).await? else {
            return err(Code::IssuerNotFound, format!("user {user} does not exist"));
        };
        let grants = conn
            .list_grants_where(Some(&user), None, None)
            .await?
            .into_iter()
            .map(|g| UserGrant {
                project: g.project,
                role: g.role,
            })
            .collect();
        let keys = conn.list_user_keys(&user).await?;
        let now = state.now() as i64;
        let locked = record.locked_until > now;
        Ok(UserDetail {
            user,
            kind: record.kind,
            enabled: record.enabled,
            domain_enabled: record.domain_enabled,
            has_password: record.has_password,
            created_at: record.created_at,
            grants,
            keys,
            lockout: Lockout {
                failed_logins: record.failed_logins,
                locked,
                locked_until: locked.then_some(record.locked_until),
            },
        })
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{user}",
    operation_id = "deleteUser",
    tag = "admin",
    summary = "Delete a user with its grants, keys and trusts",
    description = "Deletes, in one transaction, the user's role assignments, its registered keys and the trusts it is trustor or trustee of (with their redelegations), then the user. Its sessions mint nothing more (`issuer.invalid_credentials`), also after a user of the same name is created again. Refused with 409 `issuer.protected` for `admin@default`. Audited as `user.delete`.",
    params(
        ("user" = String, Path, description = "`name@domain`", example = "ayoung@stoughton")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = Empty, content_type = "application/json", example = json!({})),
    responses(
        (status = 200, description = "The user is gone; how many grants, trusts and keys went with it.", body = UserDeleted, content_type = "application/json")
    )
)]
async fn delete_user(State(state): State<Arc<IssuerState>>, Path(user): Path<String>, request: Request) -> Response {
    action(&state, request, "user.delete", |_: Empty, change| {
        Box::pin(async move {
            let user = UserName::parse(&user)?;
            let removed = change.tx().await?.delete_user(&user).await?;
            Ok((
                user.to_string(),
                UserDeleted {
                    user: user.clone(),
                    deleted: true,
                    grants: removed.grants,
                    trusts: removed.trusts,
                    keys: removed.keys,
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{user}/keys",
    operation_id = "listUserKeys",
    tag = "admin",
    summary = "List the keys registered for a user's key login",
    params(
        ("user" = String, Path, description = "`name@domain`", example = "nova-compute@stoughton")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    responses(
        (status = 200, description = "The keys, oldest first.", body = [UserKey], content_type = "application/json")
    )
)]
async fn list_keys(State(state): State<Arc<IssuerState>>, Path(user): Path<String>, request: Request) -> Response {
    let verified = request.extensions().get::<VerifiedRequest>().cloned();
    read(&state, verified, || async {
        let user = UserName::parse(&user)?;
        let mut conn = state.store.conn().await?;
        if conn.user_record(&user).await?.is_none() {
            return err(Code::IssuerNotFound, format!("user {user} does not exist"));
        }
        conn.list_user_keys(&user).await
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{user}/keys/{thumbprint}",
    operation_id = "removeUserKey",
    tag = "admin",
    summary = "Remove a registered key (a compromised client key)",
    description = "Key login with the key stops at once, and every session and admin token bound to the key and issued before its removal is refused at its next mint (`issuer.key_removed`) or admin call (`issuer.forbidden`); service tokens already minted live out their lifetime (at most 300 s). `thumbprint` not 43 base64url characters of 32 bytes: 400 `issuer.bad_request`. Audited as `user.remove_key`.",
    params(
        ("user" = String, Path, description = "`name@domain`", example = "nova-compute@stoughton"),
        ("thumbprint" = String, Path, description = "the key's thumbprint (spec/formats.md §5.3), base64url", example = "bm92YS1jb21wdXRlLWtleS10aHVtYnByaW50LTAwMDA")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = Empty, content_type = "application/json", example = json!({})),
    responses(
        (status = 200, description = "The key is removed.", body = KeyRemoved, content_type = "application/json")
    )
)]
async fn remove_key(
    State(state): State<Arc<IssuerState>>,
    Path((user, thumbprint)): Path<(String, String)>,
    request: Request,
) -> Response {
    // A removal refuses sessions up to the leeway after it, and a session
    // is accepted up to the leeway past its exp: after the longest session
    // and twice the leeway, no session it refuses can be live.
    let longest_session = (state.config.max_session_lifetime + 2 * state.config.leeway) as i64;
    action(&state, request, "user.remove_key", |_: Empty, change| {
        Box::pin(async move {
            let user = UserName::parse(&user)?;
            if thumbprint.len() != 43 || b64url_decode(&thumbprint).ok().map(|b| b.len()) != Some(32) {
                return err(
                    Code::IssuerBadRequest,
                    "a thumbprint is 43 base64url characters (32 bytes)",
                );
            }
            let now = change.now;
            change
                .tx()
                .await?
                .remove_user_key(&user, &thumbprint, now, now - longest_session)
                .await?;
            Ok((
                format!("{user} {thumbprint}"),
                KeyRemoved {
                    user: user.clone(),
                    thumbprint,
                    removed: true,
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{user}/unlock",
    operation_id = "unlockUser",
    tag = "admin",
    summary = "End a user's lockout",
    description = "Sets the counter of failed password logins to 0 and ends a lockout (spec/issuer.md §5.5), without changing the password. Audited as `user.unlock`.",
    params(
        ("user" = String, Path, description = "`name@domain`", example = "ayoung@stoughton")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = Empty, content_type = "application/json", example = json!({})),
    responses(
        (status = 200, description = "The user is not locked.", body = Unlocked, content_type = "application/json")
    )
)]
async fn unlock_user(State(state): State<Arc<IssuerState>>, Path(user): Path<String>, request: Request) -> Response {
    action(&state, request, "user.unlock", |_: Empty, change| {
        Box::pin(async move {
            let user = UserName::parse(&user)?;
            change.tx().await?.unlock_user(&user).await?;
            Ok((
                user.to_string(),
                Unlocked {
                    user: user.clone(),
                    failed_logins: 0,
                    locked: false,
                },
            ))
        })
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/admin/roles/{name}",
    operation_id = "deleteRole",
    tag = "admin",
    summary = "Delete a role that nothing grants or delegates",
    description = "Refused with 409 `issuer.in_use` while the role is granted (locally or to users of peer domains) or delegated in a trust, and with 409 `issuer.protected` for `admin`. Audited as `role.delete`.",
    params(
        ("name" = String, Path, description = "role name", example = "member")
    ),
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = Empty, content_type = "application/json", example = json!({})),
    responses(
        (status = 200, description = "The role is gone.", body = RoleDeleted, content_type = "application/json")
    )
)]
async fn delete_role(State(state): State<Arc<IssuerState>>, Path(name): Path<String>, request: Request) -> Response {
    action(&state, request, "role.delete", |_: Empty, change| {
        Box::pin(async move {
            let role = Name::parse("role", &name)?;
            change.tx().await?.delete_role(&role).await?;
            Ok((
                role.to_string(),
                RoleDeleted {
                    name: role.as_str().to_owned(),
                    deleted: true,
                },
            ))
        })
    })
    .await
}

/// A deleted domain.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DomainDeleted {
    name: String,
    deleted: bool,
}

/// A deleted project, and what went with it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProjectDeleted {
    /// `project@domain`
    #[schema(value_type = String)]
    project: ProjectName,
    deleted: bool,
    /// role assignments on it that were deleted
    grants: u64,
    /// roles granted on it to users of peer domains that were deleted
    remote_grants: u64,
    /// trusts on it that were deleted (their redelegations with them)
    trusts: u64,
}

/// A deleted user, and what went with it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UserDeleted {
    /// `name@domain`
    #[schema(value_type = String)]
    user: UserName,
    deleted: bool,
    /// its role assignments that were deleted
    grants: u64,
    /// trusts it was trustor or trustee of that were deleted (their redelegations with them)
    trusts: u64,
    /// its registered keys that were deleted
    keys: u64,
}

/// A deleted role.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RoleDeleted {
    name: String,
    deleted: bool,
}

/// A removed key.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyRemoved {
    /// `name@domain`
    #[schema(value_type = String)]
    user: UserName,
    /// the removed key's thumbprint
    thumbprint: String,
    removed: bool,
}

/// A user whose lockout ended.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Unlocked {
    /// `name@domain`
    #[schema(value_type = String)]
    user: UserName,
    /// the counter of failed password logins: 0
    failed_logins: i64,
    locked: bool,
}

/// A role the user holds on a project.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UserGrant {
    /// `project@domain`
    #[schema(value_type = String)]
    project: ProjectName,
    role: String,
}

/// The password lockout of a user (spec/issuer.md §5.5).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Lockout {
    /// consecutive failed password logins
    #[schema(minimum = 0)]
    failed_logins: i64,
    /// password logins are refused now (`issuer.locked`)
    locked: bool,
    /// Unix seconds until which they are refused; null when not locked
    #[schema(required = true)]
    locked_until: Option<i64>,
}

/// One user, with its grants, keys and lockout.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UserDetail {
    /// `name@domain`
    #[schema(value_type = String)]
    user: UserName,
    /// `person` or `service`
    kind: String,
    /// the user's own flag
    enabled: bool,
    /// its domain's flag (a disabled domain disables its users)
    domain_enabled: bool,
    has_password: bool,
    /// Unix seconds
    created_at: i64,
    /// its role assignments, sorted
    grants: Vec<UserGrant>,
    /// the keys registered for its key login, oldest first
    keys: Vec<UserKey>,
    lockout: Lockout,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Query parameters are percent-decoded (`+` a space); what is not one
    /// of the operation's, twice, badly escaped, not UTF-8 or too long is
    /// `issuer.bad_request`.
    #[test]
    fn query_parameters_decode_strictly() {
        let allowed = ["actor", "target"];
        let parsed = query_params(Some("actor=a%40b&target=x+y%26z%3D1"), &allowed).unwrap();
        assert_eq!(
            parsed,
            [
                ("actor".to_owned(), "a@b".to_owned()),
                ("target".to_owned(), "x y&z=1".to_owned())
            ]
        );
        assert!(query_params(None, &allowed).unwrap().is_empty());
        assert_eq!(query_params(Some("&&"), &allowed).unwrap(), []);
        let long = format!("target={}", "a".repeat(1025));
        for bad in [
            "color=red",
            "actor=a&actor=b",
            "actor=%zz",
            "actor=%4",
            "actor=%ff",
            long.as_str(),
        ] {
            let refused = query_params(Some(bad), &allowed).unwrap_err();
            assert_eq!(refused.code(), Code::IssuerBadRequest, "{bad}");
        }
        assert_eq!(
            query_params(Some(&format!("target={}", "a".repeat(1024))), &allowed).unwrap()[0]
                .1
                .len(),
            1024
        );
    }
}
