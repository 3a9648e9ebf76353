//! The issuer's OpenAPI document, generated from the routes themselves
//! (`#[utoipa::path]` on each handler, collected by the routers of `api` and
//! `admin`), plus the refusals each operation documents. `spec/openapi.json`
//! is this document; `tests/it/openapi_contract.rs` fails when they differ.

use std::sync::Arc;

use serde_json::{Value, json};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use super::{IssuerState, admin, api, federation, trusts};

/// The routes of the issuer, without the layers that `super::router` adds.
fn routes() -> OpenApiRouter<Arc<IssuerState>> {
    OpenApiRouter::with_openapi(Document::openapi())
        .merge(api::routes())
        .merge(api::session_routes())
        .merge(trusts::session_routes())
        .merge(federation::exchange_routes())
        .merge(admin::routes())
}

/// The issuer's OpenAPI 3.1 document, as committed in `spec/openapi.json`.
pub fn document() -> serde_json::Result<String> {
    let mut document = serde_json::to_value(routes().into_openapi())?;
    complete(&mut document);
    let mut text = serde_json::to_string_pretty(&document)?;
    text.push('\n');
    Ok(text)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "keybound issuer API",
        version = "1",
        description = "Normative text: spec/issuer.md. Every error answer is RFC 9457 problem details whose `code` (spec/errors.md) is the contract; `x-keybound-codes` lists the codes each error response can carry (`prefix.*` stands for every code of that layer). Every GET route also answers HEAD. A method a path does not serve is answered 405 with an `Allow` field and no body (on admin paths only after the admin token and proof are verified); a path the issuer does not serve is answered 404 with no body, without verification.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    servers((url = "{issuer_id}", description = "the issuer id: the public base URL, without trailing slash",
        variables(("issuer_id" = (default = "http://127.0.0.1:8080", description = "the issuer id"))))),
    tags(
        (name = "public", description = "unauthenticated or authenticated by login/session proofs"),
        (name = "trusts", description = "delegation (spec/delegation.md): session token + proof, like /v1/tokens"),
        (name = "admin", description = "admin API: admin token for `{issuer_id}/admin`, scoped to admin@default, role admin, plus a proof"),
    ),
    components(schemas(Problem)),
)]
struct Document;

/// RFC 9457 problem details (spec/http.md §5.2)
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // only its schema is used: problems are written by `crate::http`
struct Problem {
    /// `urn:keybound:error:` followed by the code
    r#type: String,
    /// fixed title of the code (spec/errors.md)
    title: String,
    /// the HTTP status
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// the stable error code (spec/errors.md)
    code: String,
    /// human-readable explanation; fixed text for 5xx and for policy.denied
    detail: String,
}

/// Every `action` of the audit log (the names `admin::action` and login write).
const AUDITED_ACTIONS: &[&str] = &[
    "bootstrap",
    "login",
    "domain.create",
    "domain.set_enabled",
    "project.create",
    "project.set_enabled",
    "user.create",
    "user.set_enabled",
    "user.set_password",
    "user.add_key",
    "user.remove_key",
    "user.unlock",
    "user.delete",
    "domain.delete",
    "project.delete",
    "role.create",
    "role.delete",
    "grant",
    "revoke",
    "service.create",
    "service.delete",
    "keys.rotate",
    "keys.replace",
    "trust.create",
    "trust.use",
    "trust.delete",
    "workplan.run",
    "peer.create",
    "peer.delete",
    "grant.remote",
    "revoke.remote",
    "federation.exchange",
    "token.mint",
];

/// The refusals of each operation: (operation id, status, description, the
/// problem codes it can carry; `prefix.*` stands for every code of a layer).
const REFUSALS: &[(&str, u16, &str, &[&str])] = &[
    (
        "readyz",
        503,
        "The database cannot be reached.",
        &["issuer.unavailable"],
    ),
    (
        "readyz",
        500,
        "The root secret was replaced (an emergency replacement): this replica must be restarted with the new secret.",
        &["issuer.root_secret_mismatch"],
    ),
    (
        "keys",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &[
            "issuer.config",
            "issuer.root_secret_mismatch",
            "issue.invalid",
            "keyset.invalid",
        ],
    ),
    (
        "login",
        400,
        "The request is malformed (I1), the body could not be read (H2), or the key to bind is unusable (I2).",
        &[
            "issuer.bad_request",
            "issuer.invalid_name",
            "issuer.invalid_key",
            "issuer.lifetime_exceeded",
            "http.body_unreadable",
        ],
    ),
    (
        "login",
        401,
        "No valid proof of possession (P1–P13), or unknown user, wrong password, unregistered key (I2).",
        &[
            "proof.*",
            "cbor.*",
            "cose.*",
            "replay.detected",
            "replay.store_restarted",
            "issuer.invalid_credentials",
        ],
    ),
    (
        "login",
        403,
        "The user or its domain is disabled (I3).",
        &["issuer.disabled"],
    ),
    (
        "login",
        413,
        "The body is larger than max_body (default 65536 bytes).",
        &["http.body_too_large"],
    ),
    (
        "login",
        429,
        "Too many failed logins: the user is locked (I2); or too many logins from one client address (§5.5), with `Retry-After`.",
        &["issuer.locked", "issuer.login_rate_limited"],
    ),
    (
        "login",
        431,
        "`KB-Proof` is longer than 8192 bytes.",
        &["http.header_too_large"],
    ),
    (
        "login",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); nothing was issued; `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "login",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &[
            "issuer.config",
            "issuer.root_secret_mismatch",
            "issue.invalid",
            "keyset.invalid",
        ],
    ),
    (
        "mint",
        400,
        "The request is malformed (I1), the body could not be read (H2), or names an unknown audience or project (I4).",
        &[
            "issuer.bad_request",
            "issuer.invalid_name",
            "issuer.lifetime_exceeded",
            "issuer.unknown_audience",
            "issuer.unknown_project",
            "http.body_unreadable",
        ],
    ),
    (
        "mint",
        401,
        "No valid session token and proof (H1, T1–T12, D1–D5, P1–P13); the session's user no longer exists, or the key the session is bound to was removed from it (I2).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
            "issuer.invalid_credentials",
            "issuer.key_removed",
        ],
    ),
    (
        "mint",
        403,
        "The user, project or a domain is disabled (I3); a role is not held (I4); an admin token not scoped to admin@default (I5); a mint from a trust refused (spec/delegation.md §4, TM2–TM7) or a trust named for the admin audience (TM0).",
        &[
            "issuer.disabled",
            "issuer.role_not_held",
            "issuer.forbidden",
            "trust.not_trustee",
            "trust.expired",
            "trust.unusable",
            "trust.escalation",
            "trust.exhausted",
            "trust.wrong_audience",
        ],
    ),
    (
        "mint",
        404,
        "The trust does not exist, or a trust of its chain is gone (spec/delegation.md §4, TM1).",
        &["trust.not_found"],
    ),
    (
        "mint",
        413,
        "The body is larger than max_body (default 65536 bytes).",
        &["http.body_too_large"],
    ),
    (
        "mint",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes.",
        &["http.header_too_large"],
    ),
    (
        "mint",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); nothing was issued; `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "mint",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &[
            "issuer.config",
            "issuer.root_secret_mismatch",
            "issue.invalid",
            "keyset.invalid",
        ],
    ),
    (
        "listDomains",
        400,
        "The body could not be read (H2).",
        &["http.body_unreadable"],
    ),
    (
        "listDomains",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "listDomains",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "listDomains",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "listDomains",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "listDomains",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "listDomains",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "createDomain",
        400,
        "The request is malformed (I1, H2).",
        &["issuer.bad_request", "issuer.invalid_name", "http.body_unreadable"],
    ),
    (
        "createDomain",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "createDomain",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    ("createDomain", 409, "The domain exists.", &["issuer.conflict"]),
    (
        "createDomain",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "createDomain",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "createDomain",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "createDomain",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "setDomainEnabled",
        400,
        "The request is malformed (I1, H1, H2).",
        &[
            "issuer.bad_request",
            "issuer.invalid_name",
            "http.body_unreadable",
            "http.path_not_normalized",
        ],
    ),
    (
        "setDomainEnabled",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "setDomainEnabled",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "setDomainEnabled",
        404,
        "No such domain, or an action other than enable/disable.",
        &["issuer.not_found"],
    ),
    (
        "setDomainEnabled",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "setDomainEnabled",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "setDomainEnabled",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "setDomainEnabled",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "listProjects",
        400,
        "The body could not be read (H2).",
        &["http.body_unreadable"],
    ),
    (
        "listProjects",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "listProjects",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "listProjects",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "listProjects",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "listProjects",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "listProjects",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "createProject",
        400,
        "The request is malformed (I1, H2).",
        &["issuer.bad_request", "issuer.invalid_name", "http.body_unreadable"],
    ),
    (
        "createProject",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "createProject",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "createProject",
        404,
        "The domain does not exist.",
        &["issuer.not_found"],
    ),
    ("createProject", 409, "The project exists.", &["issuer.conflict"]),
    (
        "createProject",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "createProject",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "createProject",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "createProject",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "setProjectEnabled",
        400,
        "The request is malformed (I1, H1, H2).",
        &[
            "issuer.bad_request",
            "issuer.invalid_name",
            "http.body_unreadable",
            "http.path_not_normalized",
        ],
    ),
    (
        "setProjectEnabled",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "setProjectEnabled",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "setProjectEnabled",
        404,
        "No such project, or an action other than enable/disable.",
        &["issuer.not_found"],
    ),
    (
        "setProjectEnabled",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "setProjectEnabled",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "setProjectEnabled",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "setProjectEnabled",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "listUsers",
        400,
        "The body could not be read (H2).",
        &["http.body_unreadable"],
    ),
    (
        "listUsers",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "listUsers",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "listUsers",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "listUsers",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "listUsers",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "listUsers",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "createUser",
        400,
        "The request is malformed (I1, H2).",
        &["issuer.bad_request", "issuer.invalid_name", "http.body_unreadable"],
    ),
    (
        "createUser",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "createUser",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    ("createUser", 404, "The domain does not exist.", &["issuer.not_found"]),
    ("createUser", 409, "The user exists.", &["issuer.conflict"]),
    (
        "createUser",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "createUser",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "createUser",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "createUser",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "setPassword",
        400,
        "The request is malformed (I1, H1, H2).",
        &[
            "issuer.bad_request",
            "issuer.invalid_name",
            "http.body_unreadable",
            "http.path_not_normalized",
        ],
    ),
    (
        "setPassword",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "setPassword",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    ("setPassword", 404, "No such user.", &["issuer.not_found"]),
    (
        "setPassword",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "setPassword",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "setPassword",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "setPassword",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "addUserKey",
        400,
        "The request is malformed (I1, H1, H2).",
        &[
            "issuer.bad_request",
            "issuer.invalid_name",
            "issuer.invalid_key",
            "http.body_unreadable",
            "http.path_not_normalized",
        ],
    ),
    (
        "addUserKey",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "addUserKey",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    ("addUserKey", 404, "No such user.", &["issuer.not_found"]),
    (
        "addUserKey",
        409,
        "The key is already registered for the user.",
        &["issuer.conflict"],
    ),
    (
        "addUserKey",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "addUserKey",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "addUserKey",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "addUserKey",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "setUserEnabled",
        400,
        "The request is malformed (I1, H1, H2).",
        &[
            "issuer.bad_request",
            "issuer.invalid_name",
            "http.body_unreadable",
            "http.path_not_normalized",
        ],
    ),
    (
        "setUserEnabled",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "setUserEnabled",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "setUserEnabled",
        404,
        "No such user, or an action other than enable/disable.",
        &["issuer.not_found"],
    ),
    (
        "setUserEnabled",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "setUserEnabled",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "setUserEnabled",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "setUserEnabled",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "listRoles",
        400,
        "The body could not be read (H2).",
        &["http.body_unreadable"],
    ),
    (
        "listRoles",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "listRoles",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "listRoles",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "listRoles",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "listRoles",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "listRoles",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "createRole",
        400,
        "The request is malformed (I1, H2).",
        &["issuer.bad_request", "issuer.invalid_name", "http.body_unreadable"],
    ),
    (
        "createRole",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "createRole",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    ("createRole", 409, "The role exists.", &["issuer.conflict"]),
    (
        "createRole",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "createRole",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "createRole",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "createRole",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "listGrants",
        400,
        "A filter that is not a valid name (`issuer.invalid_name`), another query parameter (`issuer.bad_request`), or the body could not be read (H2).",
        &["issuer.bad_request", "issuer.invalid_name", "http.body_unreadable"],
    ),
    (
        "listGrants",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "listGrants",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "listGrants",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "listGrants",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "listGrants",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "listGrants",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "grant",
        400,
        "The request is malformed (I1, H2).",
        &["issuer.bad_request", "issuer.invalid_name", "http.body_unreadable"],
    ),
    (
        "grant",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "grant",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "grant",
        404,
        "The user, the project or the role does not exist.",
        &["issuer.not_found"],
    ),
    ("grant", 409, "The assignment exists.", &["issuer.conflict"]),
    (
        "grant",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "grant",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "grant",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "grant",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "revoke",
        400,
        "The request is malformed (I1, H2).",
        &["issuer.bad_request", "issuer.invalid_name", "http.body_unreadable"],
    ),
    (
        "revoke",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "revoke",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    ("revoke", 404, "No such assignment.", &["issuer.not_found"]),
    (
        "revoke",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "revoke",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "revoke",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "revoke",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "listServices",
        400,
        "The body could not be read (H2).",
        &["http.body_unreadable"],
    ),
    (
        "listServices",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "listServices",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "listServices",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "listServices",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "listServices",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "listServices",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "createService",
        400,
        "The request is malformed (I1, H2).",
        &["issuer.bad_request", "issuer.invalid_name", "http.body_unreadable"],
    ),
    (
        "createService",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "createService",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "createService",
        409,
        "The audience is registered, or is a federation peer's issuer id.",
        &["issuer.conflict"],
    ),
    (
        "createService",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "createService",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "createService",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "createService",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "deleteService",
        400,
        "The request is malformed (I1, H2).",
        &["issuer.bad_request", "issuer.invalid_name", "http.body_unreadable"],
    ),
    (
        "deleteService",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "deleteService",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    ("deleteService", 404, "No such audience.", &["issuer.not_found"]),
    (
        "deleteService",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "deleteService",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "deleteService",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "deleteService",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "listAudit",
        400,
        "A query parameter that is unknown, given twice, not an integer where one is needed, or over 1024 bytes (I1); or the body could not be read (H2).",
        &["issuer.bad_request", "http.body_unreadable"],
    ),
    (
        "listAudit",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "listAudit",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "listAudit",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "listAudit",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "listAudit",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "listAudit",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        &["issuer.config", "issue.invalid", "keyset.invalid"],
    ),
    (
        "rotateKeys",
        400,
        "The request is malformed (I1), or the body could not be read (H2).",
        &["issuer.bad_request", "http.body_unreadable"],
    ),
    (
        "rotateKeys",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        &[
            "http.token_missing",
            "http.token_multiple",
            "http.token_malformed",
            "http.scheme",
            "cbor.*",
            "cose.*",
            "session.key_replaced",
            "cwt.*",
            "delegation.*",
            "proof.*",
            "replay.detected",
            "replay.store_restarted",
        ],
    ),
    (
        "rotateKeys",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        &["policy.denied", "issuer.forbidden"],
    ),
    (
        "rotateKeys",
        409,
        "Too early for a scheduled rotation without `force`: verifiers may not have the next key yet (`issuer.rotation_too_early`); the issuer signs with a fixed key, or another replica rotated at the same moment (`issuer.conflict`).",
        &["issuer.rotation_too_early", "issuer.conflict"],
    ),
    (
        "rotateKeys",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "rotateKeys",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "rotateKeys",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "rotateKeys",
        500,
        "An internal failure (a broken configuration), or the root secret was replaced (`issuer.root_secret_mismatch`). `detail` is fixed text.",
        &[
            "issuer.config",
            "issuer.root_secret_mismatch",
            "issue.invalid",
            "keyset.invalid",
        ],
    ),
];

/// The session verifier's refusals (H1, T1–T12, D1–D5, P1–P13) on the trust routes.
const SESSION_401: &[&str] = &[
    "http.token_missing",
    "http.token_multiple",
    "http.token_malformed",
    "http.scheme",
    "cbor.*",
    "cose.*",
    "cwt.*",
    "delegation.*",
    "proof.*",
    "replay.detected",
    "replay.store_restarted",
];
const ADMIN_401: &[&str] = SESSION_401;
const ADMIN_403: &[&str] = &["policy.denied", "issuer.forbidden"];
const SERVER_500: &[&str] = &["issuer.config", "issue.invalid", "keyset.invalid"];
const UNAVAILABLE_503: &[&str] = &[
    "issuer.unavailable",
    "issuer.storage_unavailable",
    "http.overloaded",
    "replay.store_unavailable",
    "replay.store_full",
];
const CREATE_400: &[&str] = &[
    "issuer.bad_request",
    "issuer.invalid_name",
    "http.body_unreadable",
    "trust.invalid",
    "trust.over_limit",
    "trust.trustee_unknown",
    "issuer.unknown_project",
    "issuer.unknown_audience",
];
const CREATE_403_SESSION: &[&str] = &[
    "issuer.disabled",
    "issuer.role_not_held",
    "trust.too_deep",
    "trust.escalation",
    "trust.not_trustee",
    "trust.expired",
    "trust.unusable",
];
const CREATE_403_ADMIN: &[&str] = &[
    "policy.denied",
    "issuer.forbidden",
    "issuer.disabled",
    "issuer.role_not_held",
    "trust.too_deep",
    "trust.escalation",
    "trust.not_trustee",
    "trust.expired",
    "trust.unusable",
];

/// The admin verifier's refusals, with the replaced-keys refinement of T6.
const ADMIN_401_ALL: &[&str] = &[
    "http.token_missing",
    "http.token_multiple",
    "http.token_malformed",
    "http.scheme",
    "cbor.*",
    "cose.*",
    "session.key_replaced",
    "cwt.*",
    "delegation.*",
    "proof.*",
    "replay.detected",
    "replay.store_restarted",
];
const PATH_400: &[&str] = &[
    "issuer.bad_request",
    "issuer.invalid_name",
    "http.body_unreadable",
    "http.path_not_normalized",
];

/// The refusals every admin operation of a user, project, domain or role
/// path has, after its own.
macro_rules! admin_path_refusals {
    ($id:literal) => {
        [
            ($id, 400, "The request is malformed (I1, H1, H2).", PATH_400),
            ($id, 401, ADMIN_401_TEXT, ADMIN_401_ALL),
            ($id, 403, ADMIN_403_TEXT, ADMIN_403),
            ($id, 413, BODY_413_TEXT, &["http.body_too_large"]),
            ($id, 431, HEADER_431_TEXT, &["http.header_too_large"]),
            ($id, 503, UNAVAILABLE_503_TEXT, UNAVAILABLE_503),
            ($id, 500, INTERNAL_500_TEXT, SERVER_500),
        ]
    };
}

/// The refusals of the deletes, the user view, its keys and the unlock.
const LIFECYCLE_REFUSALS: &[&[Refusal]] = &[
    &admin_path_refusals!("deleteDomain"),
    &admin_path_refusals!("deleteProject"),
    &admin_path_refusals!("deleteUser"),
    &admin_path_refusals!("deleteRole"),
    &admin_path_refusals!("showUser"),
    &admin_path_refusals!("listUserKeys"),
    &admin_path_refusals!("removeUserKey"),
    &admin_path_refusals!("unlockUser"),
    &[
        ("deleteDomain", 404, "No such domain.", &["issuer.not_found"]),
        (
            "deleteDomain",
            409,
            "The domain still has projects or users (`issuer.in_use`), or is `default` (`issuer.protected`).",
            &["issuer.in_use", "issuer.protected"],
        ),
        ("deleteProject", 404, "No such project.", &["issuer.not_found"]),
        (
            "deleteProject",
            409,
            "A federation peer is limited to the project (`issuer.in_use`), or it is `admin@default` (`issuer.protected`).",
            &["issuer.in_use", "issuer.protected"],
        ),
        ("deleteUser", 404, "No such user.", &["issuer.not_found"]),
        (
            "deleteUser",
            409,
            "The user is `admin@default` (`issuer.protected`).",
            &["issuer.protected"],
        ),
        ("deleteRole", 404, "No such role.", &["issuer.not_found"]),
        (
            "deleteRole",
            409,
            "The role is still granted or delegated (`issuer.in_use`), or is `admin` (`issuer.protected`).",
            &["issuer.in_use", "issuer.protected"],
        ),
        ("showUser", 404, "No such user.", &["issuer.not_found"]),
        ("listUserKeys", 404, "No such user.", &["issuer.not_found"]),
        (
            "removeUserKey",
            404,
            "The user has no key of this thumbprint (or does not exist).",
            &["issuer.not_found"],
        ),
        ("unlockUser", 404, "No such user.", &["issuer.not_found"]),
    ],
];

/// The refusals of the trust routes (spec/delegation.md).
const ADMIN_401_TEXT: &str = "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).";
const ADMIN_403_TEXT: &str = "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).";
const BODY_413_TEXT: &str = "The body is larger than the issuer's max_body (default 65536 bytes) (H2).";
const HEADER_431_TEXT: &str = "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).";
const UNAVAILABLE_503_TEXT: &str = "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.";
const INTERNAL_500_TEXT: &str = "An internal failure (a broken configuration). `detail` is fixed text.";
const MALFORMED_400: &[&str] = &["issuer.bad_request", "issuer.invalid_name", "http.body_unreadable"];

/// One documented refusal: (operation id, status, description, codes).
type Refusal = (&'static str, u16, &'static str, &'static [&'static str]);

/// The refusals every admin operation of federation has, after its own.
macro_rules! admin_refusals {
    ($id:literal) => {
        [
            ($id, 401, ADMIN_401_TEXT, ADMIN_401),
            ($id, 403, ADMIN_403_TEXT, ADMIN_403),
            ($id, 413, BODY_413_TEXT, &["http.body_too_large"]),
            ($id, 431, HEADER_431_TEXT, &["http.header_too_large"]),
            ($id, 503, UNAVAILABLE_503_TEXT, UNAVAILABLE_503),
            ($id, 500, INTERNAL_500_TEXT, SERVER_500),
        ]
    };
}

/// The refusals of the federation operations (spec/federation.md).
const FEDERATION_REFUSALS: &[&[Refusal]] = &[
    &[
        (
            "listPeers",
            400,
            "The body could not be read (H2).",
            &["http.body_unreadable"],
        ),
        (
            "listRemoteGrants",
            400,
            "The body could not be read (H2).",
            &["http.body_unreadable"],
        ),
        (
            "createPeer",
            400,
            "The request is malformed (I1, H2): its issuer id, key-set URL (plain http to a remote host, userinfo, another scheme), domains or max_lifetime.",
            MALFORMED_400,
        ),
        (
            "createPeer",
            404,
            "A project it is limited to does not exist.",
            &["issuer.not_found"],
        ),
        (
            "createPeer",
            409,
            "The peer exists; a domain is this issuer's own or another peer's; its key-set URL is another peer's; its id is a registered service; or there are 256 peers.",
            &["issuer.conflict"],
        ),
        ("deletePeer", 400, "The request is malformed (I1, H2).", MALFORMED_400),
        ("deletePeer", 404, "No such peer.", &["issuer.not_found"]),
        ("grantRemote", 400, "The request is malformed (I1, H2).", MALFORMED_400),
        (
            "grantRemote",
            404,
            "No peer is authoritative for the user's domain, or the project or role does not exist.",
            &["issuer.not_found"],
        ),
        ("grantRemote", 409, "The remote grant exists.", &["issuer.conflict"]),
        ("revokeRemote", 400, "The request is malformed (I1, H2).", MALFORMED_400),
        (
            "revokeRemote",
            404,
            "No such remote grant, or no peer is authoritative for the user's domain.",
            &["issuer.not_found"],
        ),
    ],
    &admin_refusals!("listPeers"),
    &admin_refusals!("createPeer"),
    &admin_refusals!("deletePeer"),
    &admin_refusals!("listRemoteGrants"),
    &admin_refusals!("grantRemote"),
    &admin_refusals!("revokeRemote"),
    &[
        (
            "exchange",
            400,
            "The request is malformed (F6, H2), asks for a lifetime out of range (F8), a project that does not exist, or a target outside the federation agreement (F6, `fed.invalid_target`).",
            &[
                "issuer.bad_request",
                "issuer.invalid_name",
                "issuer.lifetime_exceeded",
                "issuer.unknown_project",
                "fed.invalid_target",
                "http.body_unreadable",
            ],
        ),
        (
            "exchange",
            401,
            "No valid peer token and proof (H1, T1–T12, P1–P13), no proof at all (F3, `fed.pop_missing`), or a token that expires now (F8).",
            &[
                "http.token_missing",
                "http.token_multiple",
                "http.token_malformed",
                "http.scheme",
                "cbor.*",
                "cose.*",
                "cwt.*",
                "delegation.*",
                "proof.*",
                "replay.detected",
                "replay.store_restarted",
                "fed.pop_missing",
            ],
        ),
        (
            "exchange",
            403,
            "The token is not from a peer, not for this issuer, signed by another issuer's key, of a peer that withdrew its keys (F1, F2), already federated or delegated (F4), for a domain the peer does not speak for (F5), or the remote user has no grant (F7); or the project is disabled.",
            &[
                "fed.peer_unknown",
                "fed.key_issuer_mismatch",
                "fed.issuer_revoked",
                "fed.audience",
                "fed.chain",
                "fed.domain",
                "fed.no_grants",
                "issuer.disabled",
            ],
        ),
        ("exchange", 413, BODY_413_TEXT, &["http.body_too_large"]),
        ("exchange", 431, HEADER_431_TEXT, &["http.header_too_large"]),
        (
            "exchange",
            503,
            "The database or the replay store cannot answer, or the peer's key set was never fetched; nothing was issued.",
            UNAVAILABLE_503,
        ),
        ("exchange", 500, INTERNAL_500_TEXT, SERVER_500),
    ],
];

const TRUST_REFUSALS: &[(&str, u16, &str, &[&str])] = &[
    (
        "runWorkplan",
        400,
        "The request is malformed (I1, H2, WR1), or a delegation breaks the rules of a trust (TC1–TC4) or names an unknown project (TC5); the message names the delegation.",
        CREATE_400,
    ),
    (
        "runWorkplan",
        401,
        "No valid session token and proof (H1, T1–T12, D1–D5, P1–P13).",
        SESSION_401,
    ),
    (
        "runWorkplan",
        403,
        "The caller or project is disabled, or a role of a delegation is not held (TC5); nothing was created.",
        &["issuer.disabled", "issuer.role_not_held"],
    ),
    (
        "runWorkplan",
        413,
        "The body is larger than max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "runWorkplan",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "runWorkplan",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "runWorkplan",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        SERVER_500,
    ),
    (
        "createTrust",
        400,
        "The request is malformed (I1, H2, TC1), or the trust breaks its own rules (TC2), the deployment's ceilings (TC3), names an unusable trustee (TC4) or an unknown project (TC5).",
        CREATE_400,
    ),
    (
        "createTrust",
        401,
        "No valid session token and proof (H1, T1–T12, D1–D5, P1–P13).",
        SESSION_401,
    ),
    (
        "createTrust",
        403,
        "The trustor or project is disabled, or a role is not held (TC5); the redelegation is refused (TC6).",
        CREATE_403_SESSION,
    ),
    (
        "createTrust",
        404,
        "The parent trust does not exist, or a trust of its chain is gone (TC6).",
        &["trust.not_found"],
    ),
    (
        "createTrust",
        413,
        "The body is larger than max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "createTrust",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "createTrust",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "createTrust",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        SERVER_500,
    ),
    (
        "listTrusts",
        400,
        "The body could not be read (H2).",
        &["http.body_unreadable"],
    ),
    (
        "listTrusts",
        401,
        "No valid session token and proof (H1, T1–T12, D1–D5, P1–P13).",
        SESSION_401,
    ),
    (
        "listTrusts",
        413,
        "The body is larger than max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "listTrusts",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "listTrusts",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "listTrusts",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        SERVER_500,
    ),
    (
        "showTrust",
        400,
        "The body could not be read (H2), or the path is not normalised (H1).",
        &["http.body_unreadable", "http.path_not_normalized"],
    ),
    (
        "showTrust",
        401,
        "No valid session token and proof (H1, T1–T12, D1–D5, P1–P13).",
        SESSION_401,
    ),
    (
        "showTrust",
        404,
        "No such trust of which the caller is trustor or trustee.",
        &["trust.not_found"],
    ),
    (
        "showTrust",
        413,
        "The body is larger than max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "showTrust",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "showTrust",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "showTrust",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        SERVER_500,
    ),
    (
        "deleteTrust",
        400,
        "The body could not be read (H2), or the path is not normalised (H1).",
        &["http.body_unreadable", "http.path_not_normalized"],
    ),
    (
        "deleteTrust",
        401,
        "No valid session token and proof (H1, T1–T12, D1–D5, P1–P13).",
        SESSION_401,
    ),
    (
        "deleteTrust",
        403,
        "The caller is the trustee, not the trustor.",
        &["issuer.forbidden"],
    ),
    (
        "deleteTrust",
        404,
        "No such trust of which the caller is trustor or trustee.",
        &["trust.not_found"],
    ),
    (
        "deleteTrust",
        413,
        "The body is larger than max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "deleteTrust",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "deleteTrust",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "deleteTrust",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        SERVER_500,
    ),
    (
        "adminListTrusts",
        400,
        "An unknown query parameter, or a user or project that is not `name@domain` (I1); the body could not be read (H2).",
        &["issuer.bad_request", "issuer.invalid_name", "http.body_unreadable"],
    ),
    (
        "adminListTrusts",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        ADMIN_401,
    ),
    (
        "adminListTrusts",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        ADMIN_403,
    ),
    (
        "adminListTrusts",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "adminListTrusts",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "adminListTrusts",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "adminListTrusts",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        SERVER_500,
    ),
    ("adminCreateTrust", 400, "As createTrust.", CREATE_400),
    (
        "adminCreateTrust",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        ADMIN_401,
    ),
    (
        "adminCreateTrust",
        403,
        "Not an admin token (A1, I5); as createTrust.",
        CREATE_403_ADMIN,
    ),
    (
        "adminCreateTrust",
        404,
        "The trustor does not exist; the parent trust does not exist, or a trust of its chain is gone.",
        &["issuer.not_found", "trust.not_found"],
    ),
    (
        "adminCreateTrust",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "adminCreateTrust",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "adminCreateTrust",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "adminCreateTrust",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        SERVER_500,
    ),
    (
        "adminDeleteTrust",
        400,
        "The request is malformed (I1, H1, H2).",
        &["issuer.bad_request", "http.body_unreadable", "http.path_not_normalized"],
    ),
    (
        "adminDeleteTrust",
        401,
        "No valid admin token and proof (H1, T1–T12, D1–D5, P1–P13).",
        ADMIN_401,
    ),
    (
        "adminDeleteTrust",
        403,
        "The token has no role `admin` (A1, `policy.denied`) or is not scoped to project admin@default (I5, `issuer.forbidden`).",
        ADMIN_403,
    ),
    ("adminDeleteTrust", 404, "No such trust.", &["trust.not_found"]),
    (
        "adminDeleteTrust",
        413,
        "The body is larger than the issuer's max_body (default 65536 bytes) (H2).",
        &["http.body_too_large"],
    ),
    (
        "adminDeleteTrust",
        431,
        "`Authorization` or `KB-Proof` is longer than 8192 bytes (H1).",
        &["http.header_too_large"],
    ),
    (
        "adminDeleteTrust",
        503,
        "The database or the replay store cannot answer, the database refuses writes, or the issuer is overloaded (`http.overloaded`); `Retry-After: 1`.",
        UNAVAILABLE_503,
    ),
    (
        "adminDeleteTrust",
        500,
        "An internal failure (a broken configuration). `detail` is fixed text.",
        SERVER_500,
    ),
];

/// What the annotations cannot say: the `KB` scheme, the shared headers,
/// the refusals with their codes, the CBOR key set and the enabled/disabled
/// path parameters.
fn complete(document: &mut Value) {
    let components = &mut document["components"];
    components["securitySchemes"] = json!({
        "kbToken": {
            "type": "http",
            "scheme": "KB",
            "description": "`Authorization: KB <base64url(token)>` (spec/http.md §3.1). At /v1/tokens and /v1/trusts… a session token; at /v1/admin/… a service token for the admin audience. Never a bearer token: always together with kbProof."
        },
        "kbProof": {
            "type": "apiKey",
            "in": "header",
            "name": "KB-Proof",
            "description": "A fresh proof (spec/formats.md §4) for exactly this request: htm = method, htu = issuer id + path and query, bdh over the exact body bytes, tkh over the token (the empty byte string at /v1/login). One use only (replay store)."
        }
    });
    components["headers"] = json!({
        "NoStore": {"description": "`no-store`", "schema": {"type": "string", "enum": ["no-store"]}},
        "WWWAuthenticate": {"description": "`KB error=\"<code>\"` (spec/http.md §5.1)", "schema": {"type": "string"}},
        "RetryAfter": {"description": "seconds", "schema": {"type": "string", "enum": ["1"]}}
    });
    components["schemas"]["KeySet"] = json!({
        "description": "Key-set document (spec/formats.md §6.1): the COSE_KeySet under its sequence number, deterministic CBOR; CDDL rule `KeySetDocument` of spec/keybound.cddl",
        "contentMediaType": "application/cbor",
        "x-cddl-rule": "KeySetDocument"
    });
    // Closed sets of strings that the Rust types keep as `String`.
    let schemas = &mut components["schemas"];
    schemas["AuditEntry"]["properties"]["action"]["enum"] = json!(AUDITED_ACTIONS);
    schemas["User"]["properties"]["kind"]["enum"] = json!(["person", "service"]);
    schemas["UserInput"]["properties"]["kind"]["enum"] = json!(["person", "service"]);
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            let id = operation["operationId"].as_str().unwrap_or_default().to_owned();
            let public_read = operation.get("security").is_none();
            if public_read {
                operation["security"] = json!([]);
            }
            let parameters = operation.get_mut("parameters").and_then(Value::as_array_mut);
            for parameter in parameters.into_iter().flatten() {
                if parameter["name"] == "action" && parameter["in"] == "path" {
                    parameter["schema"]["enum"] = json!(["enable", "disable"]);
                }
            }
            if operation.get("requestBody").is_some() {
                operation["requestBody"]["required"] = json!(true);
            }
            let responses = &mut operation["responses"];
            if let Some(ok) = responses.get_mut("200") {
                if id == "keys" {
                    ok["content"]["application/cbor"]["schema"] = json!({"$ref": "#/components/schemas/KeySet"});
                    ok["headers"] =
                        json!({"Cache-Control": {"description": "`public, max-age=N`", "schema": {"type": "string"}}});
                } else if ok["content"].get("application/json").is_some() {
                    ok["headers"] = json!({"Cache-Control": {"$ref": "#/components/headers/NoStore"}});
                }
            }
            for (_, status, description, codes) in REFUSALS
                .iter()
                .chain(TRUST_REFUSALS)
                .chain(FEDERATION_REFUSALS.iter().copied().flatten())
                .chain(LIFECYCLE_REFUSALS.iter().copied().flatten())
                .filter(|r| r.0 == id)
            {
                let mut headers = json!({"Cache-Control": {"$ref": "#/components/headers/NoStore"}});
                if matches!(status, 401 | 403) {
                    headers["WWW-Authenticate"] = json!({"$ref": "#/components/headers/WWWAuthenticate"});
                }
                if *status == 503 {
                    headers["Retry-After"] = json!({"$ref": "#/components/headers/RetryAfter"});
                }
                responses[status.to_string()] = json!({
                    "description": description,
                    "x-keybound-codes": codes,
                    "headers": headers,
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                });
            }
        }
    }
}
