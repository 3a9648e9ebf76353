//! Trusts (spec/delegation.md) over real HTTP on loopback, against SQLite
//! (always) and PostgreSQL (when `KEYBOUND_TEST_POSTGRES_URL` is set; each
//! run in a schema of its own). Tests named `dl_NN_…` are the delegation
//! cases of the security catalog (§2.8) that concern the issuer.
#![cfg(feature = "issuer")]

use std::sync::Arc;

use keybound::Code;
use keybound::client::{Client, NewTrust, Scope, error_from_response};
use keybound::encoding::{b64url_decode, b64url_encode};
use keybound::http::KeyboundLayer;
use keybound::issuer::loopback::LoopbackIssuer;
use keybound::issuer::{IssuerConfig, IssuerState};
use keybound::key::{Algorithm, SigningKey};
use keybound::keyset::{HttpKeys, HttpKeysOptions};
use keybound::proof::ProofBuilder;
use keybound::token::Token;
use keybound::verify::{Clock, ManualClock, SystemClock, TrustedIssuer, VerifiedRequest, Verifier};
use serde_json::{Value, json};

use crate::common;

const ADMIN_PASSWORD: &str = "bootstrap-password-1";
const PASSWORD: &str = "correct horse battery";
const AYOUNG: &str = "ayoung@stoughton";
const HEAT: &str = "heat@service";
const NOVA: &str = "nova-compute@service";
const CINDER: &str = "cinder@service";
const AUDIENCE: &str = "https://nova.example";

// ---------------------------------------------------------------------------
// Set-up (as tests/it/issuer.rs).

struct Issuer {
    url: String,
    /// The issuer's clock, also the clients' and the protected service's.
    clock: Arc<dyn Clock>,
    server: LoopbackIssuer,
    dir: tempfile::TempDir,
    database_url: Option<String>,
}

async fn backends() -> Vec<(&'static str, Option<String>)> {
    let mut out = vec![("sqlite", None)];
    match std::env::var("KEYBOUND_TEST_POSTGRES_URL") {
        Ok(url) => out.push(("postgres", Some(fresh_schema(&url).await))),
        Err(_) => eprintln!("PostgreSQL part skipped: KEYBOUND_TEST_POSTGRES_URL is not set"),
    }
    out
}

async fn fresh_schema(url: &str) -> String {
    sqlx::any::install_default_drivers();
    let suffix = keybound::encoding::hex_encode(
        &SigningKey::generate(Algorithm::EdDSA)
            .unwrap()
            .public_key()
            .thumbprint()
            .as_bytes()[..6],
    );
    let schema = format!("kbtrust_{}_{suffix}", std::process::id());
    let pool = sqlx::AnyPool::connect(url).await.expect("PostgreSQL reachable");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

async fn cleanup(backends: &[(&'static str, Option<String>)]) {
    for (_, url) in backends {
        let Some(url) = url else { continue };
        let Some((base, schema)) = url.split_once("options=-c%20search_path%3D") else {
            continue;
        };
        let base = base.trim_end_matches(&['?', '&'][..]);
        if let Ok(pool) = sqlx::AnyPool::connect(base).await {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await;
        }
    }
}

async fn start(
    _backend: &'static str,
    database_url: Option<String>,
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut IssuerConfig),
) -> Issuer {
    let url = database_url.clone();
    let (server, dir) = common::start_issuer(ADMIN_PASSWORD, clock.clone(), |config| {
        config.database_url = url;
        config.login_rate_per_minute = 1_000_000;
        config.login_burst = 100_000;
        tweak(config);
    })
    .await;
    Issuer {
        url: server.url().to_owned(),
        clock,
        server,
        dir,
        database_url,
    }
}

struct Admin {
    client: Client,
    url: String,
    scope: Scope,
}

impl Admin {
    async fn call(&self, method: &str, path: &str, body: Value) -> Result<Value, keybound::Error> {
        let request = self
            .client
            .request(method.parse().unwrap(), &format!("{}{path}", self.url), &self.scope);
        let request = if method == "GET" { request } else { request.json(&body) };
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(error_from_response(response).await);
        }
        Ok(serde_json::from_slice(&response.bytes().await.unwrap()).unwrap())
    }

    async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn grant(&self, user: &str, role: &str) {
        self.ok(
            "POST",
            "/v1/admin/grants",
            json!({"user": user, "project": "turing@stoughton", "role": role}),
        )
        .await;
    }

    async fn revoke(&self, user: &str, role: &str) {
        self.ok(
            "DELETE",
            "/v1/admin/grants",
            json!({"user": user, "project": "turing@stoughton", "role": role}),
        )
        .await;
    }
}

impl Issuer {
    fn client(&self) -> Client {
        Client::new(&self.url, SigningKey::generate(Algorithm::EdDSA).unwrap())
            .unwrap()
            .with_clock(self.clock.clone())
    }

    async fn login(&self, user: &str) -> Client {
        let client = self.client();
        client.login_password(user, PASSWORD, None).await.unwrap();
        client
    }

    /// Domains `stoughton` and `service`, project `turing@stoughton`, roles
    /// `member`, `reader` and `admin`... held by ayoung (member, reader);
    /// service users heat, nova-compute and cinder; the service AUDIENCE and
    /// `service` (the protected service's URL, if given).
    async fn world(&self, service: Option<&str>) -> Admin {
        let client = self.client();
        client
            .login_password("admin@default", ADMIN_PASSWORD, None)
            .await
            .unwrap();
        let admin = Admin {
            client,
            url: self.url.clone(),
            scope: Scope::new(format!("{}/admin", self.url))
                .project("admin")
                .domain("default"),
        };
        for domain in ["stoughton", "service"] {
            admin.ok("POST", "/v1/admin/domains", json!({"name": domain})).await;
        }
        admin
            .ok(
                "POST",
                "/v1/admin/projects",
                json!({"name": "turing", "domain": "stoughton"}),
            )
            .await;
        for role in ["member", "reader", "writer"] {
            admin.ok("POST", "/v1/admin/roles", json!({"name": role})).await;
        }
        admin
            .ok("POST", "/v1/admin/users", json!({"user": AYOUNG, "password": PASSWORD}))
            .await;
        for user in [HEAT, NOVA, CINDER] {
            admin
                .ok(
                    "POST",
                    "/v1/admin/users",
                    json!({"user": user, "kind": "service", "password": PASSWORD}),
                )
                .await;
        }
        admin.grant(AYOUNG, "member").await;
        admin.grant(AYOUNG, "reader").await;
        for audience in [Some(AUDIENCE), service].into_iter().flatten() {
            admin
                .ok("POST", "/v1/admin/services", json!({"audience": audience}))
                .await;
        }
        admin
    }
}

fn trust_for(trustee: &str, roles: &[&str]) -> NewTrust {
    NewTrust {
        trustee: trustee.into(),
        project: Some("turing".into()),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    }
}

fn child_of(parent: &str, trustee: &str, roles: &[&str]) -> NewTrust {
    NewTrust {
        trustee: trustee.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        parent: Some(parent.into()),
        ..Default::default()
    }
}

fn id_of(trust: &Value) -> String {
    trust["id"].as_str().unwrap().to_owned()
}

fn claims_of(token: &Token) -> keybound::token::Claims {
    keybound::danger::insecure_decode_token(token.as_bytes())
        .unwrap()
        .claims
}

fn actors(claims: &keybound::token::Claims) -> Vec<&str> {
    claims.actor_chain.iter().map(|a| a.sub.as_str()).collect()
}

async fn code(result: Result<impl Sized, keybound::Error>) -> Code {
    match result {
        Ok(_) => panic!("expected a refusal"),
        Err(e) => e.code(),
    }
}

/// A service protected by the verifier, answering the subject and roles of
/// each request.
async fn protected_service(issuer: &Issuer) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let keys = HttpKeys::start(
        &format!("{}/.well-known/keybound/keys", issuer.url),
        HttpKeysOptions::default(),
    )
    .await
    .unwrap();
    let verifier = Verifier::builder(&url, TrustedIssuer::new(&issuer.url, keys))
        .clock(issuer.clock.clone())
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/v2/servers",
            axum::routing::get(|r: VerifiedRequest| async move {
                let token = r.token();
                format!(
                    "{} {:?} trust={:?} actors={:?}",
                    r.subject(),
                    r.roles(),
                    token.trust_id(),
                    token.actor_chain().iter().map(|a| a.sub.clone()).collect::<Vec<_>>()
                )
            }),
        )
        .layer(KeyboundLayer::new(Arc::new(verifier), &url).unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn audit_outcomes(admin: &Admin, action: &str) -> Vec<String> {
    let audit = admin.ok("GET", "/v1/admin/audit?limit=1000", json!({})).await;
    audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .map(|e| e["outcome"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// The seed's Heat story.

/// ayoung creates a trust for heat (member on turing, 1 h, no
/// redelegation); heat mints and calls the service, which sees ayoung acting
/// through heat; her session expires and her password changes: her session
/// and old password are refused while heat keeps minting and calling;
/// revoking her role stops the next mint with the trust code, granting it
/// again restores it; deleting the trust stops it for good. Every step is
/// audited.
#[tokio::test]
async fn heat_story_mints_until_the_role_is_revoked_and_the_trust_deleted() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        // One manual clock for the issuer, the service and every client: her
        // session expires without the test waiting.
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let issuer = start(backend, db, clock.clone(), |_| {}).await;
        let service = protected_service(&issuer).await;
        let admin = issuer.world(Some(&service)).await;
        let ayoung = issuer.client();
        ayoung.login_password(AYOUNG, PASSWORD, Some(600)).await.unwrap();
        let now = clock.now();
        let trust = ayoung
            .create_trust(&NewTrust {
                expires_at: Some(now + 3600),
                ..trust_for(HEAT, &["member"])
            })
            .await
            .unwrap();
        let id = id_of(&trust);
        assert_eq!(b64url_decode(&id).unwrap().len(), 16, "{backend}: 128-bit id");
        assert_eq!(trust["trustor"], AYOUNG);
        assert_eq!(trust["trustee"], HEAT);
        assert_eq!(trust["project"], "turing@stoughton");
        assert_eq!(trust["roles"], json!(["member"]));
        assert_eq!(trust["redelegation"], 0);
        assert_eq!(trust["remaining_uses"], Value::Null);
        assert_eq!(trust["parent"], Value::Null);
        // The trustor and the trustee both see it; nobody else does.
        assert_eq!(ayoung.trusts().await.unwrap(), json!([trust.clone()]));
        let heat = issuer.login(HEAT).await;
        assert_eq!(heat.trust(&id).await.unwrap(), trust);
        let nova = issuer.login(NOVA).await;
        assert_eq!(code(nova.trust(&id).await).await, Code::TrustNotFound);
        assert_eq!(nova.trusts().await.unwrap(), json!([]));

        let scope = Scope::new(&service).trust(&id);
        let servers = format!("{service}/v2/servers");
        let seen = format!("{AYOUNG} [\"member\"] trust=Some({id:?}) actors=[\"{HEAT}\"]");
        let token = heat.service_token(&scope).await.unwrap();
        let claims = claims_of(&token);
        assert_eq!(claims.sub, AYOUNG, "{backend}");
        assert_eq!(actors(&claims), [HEAT]);
        assert_eq!(claims.trust_id.as_deref(), Some(id.as_str()));
        assert_eq!(claims.roles, ["member"]);
        assert_eq!(
            (claims.domain.as_deref(), claims.project.as_deref()),
            (Some("stoughton"), Some("turing"))
        );
        assert_eq!(
            claims.cnf.thumbprint(),
            heat.key().public_key().thumbprint(),
            "bound to the trustee's key"
        );
        assert!(claims.exp - claims.iat <= 300);
        let answer = heat.get(&servers, &scope).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{backend}");
        assert_eq!(answer.text().await.unwrap(), seen);

        // Her 600 s session expires, past the issuer's leeway (heat's and
        // the trust's hour has not), and her password changes.
        let expired = 600 + keybound::token::DEFAULT_LEEWAY + 1;
        clock.advance(expired);
        admin
            .ok(
                "PUT",
                "/v1/admin/users/ayoung@stoughton/password",
                json!({"password": "another horse battery"}),
            )
            .await;
        assert_eq!(code(ayoung.trusts().await).await, Code::ClientSessionExpired);
        // A client that does not stop her is refused by the issuer.
        let mut stale = ayoung.session().unwrap();
        stale.expires_at = u64::MAX;
        ayoung.set_session(stale);
        assert_eq!(code(ayoung.trusts().await).await, Code::CwtExpired, "{backend}");
        let old_password = issuer.client().login_password(AYOUNG, PASSWORD, None).await;
        assert_eq!(code(old_password).await, Code::IssuerInvalidCredentials);
        // Heat keeps minting (its cached token has expired: a new mint) and
        // calling, still as ayoung.
        let later = heat.service_token(&scope).await.unwrap();
        assert!(later != token, "{backend}: minted again");
        let claims = claims_of(&later);
        assert!(claims.iat >= now + expired, "{backend}");
        assert_eq!((claims.sub.as_str(), actors(&claims)), (AYOUNG, vec![HEAT]));
        let answer = heat.get(&servers, &scope).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{backend}");
        assert_eq!(answer.text().await.unwrap(), seen);

        // With her new password she is back; she cannot use the trust
        // herself: its tokens are bound to heat's key.
        ayoung
            .login_password(AYOUNG, "another horse battery", None)
            .await
            .unwrap();
        assert_eq!(code(ayoung.service_token(&scope).await).await, Code::TrustNotTrustee);

        // Revoking her role makes the trust yield nothing at once.
        admin.revoke(AYOUNG, "member").await;
        heat.forget_token(&scope);
        assert_eq!(code(heat.service_token(&scope).await).await, Code::TrustUnusable);
        admin.grant(AYOUNG, "member").await;
        heat.service_token(&scope).await.unwrap();

        // Deleted: refused, at the next mint.
        assert_eq!(
            ayoung.delete_trust(&id).await.unwrap(),
            json!({"id": id, "deleted": true})
        );
        heat.forget_token(&scope);
        assert_eq!(code(heat.service_token(&scope).await).await, Code::TrustNotFound);

        let uses = audit_outcomes(&admin, "trust.use").await;
        for expected in ["ok", "trust.not_trustee", "trust.unusable", "trust.not_found"] {
            assert!(
                uses.iter().any(|o| o == expected),
                "{backend}: {expected} not in {uses:?}"
            );
        }
        assert_eq!(audit_outcomes(&admin, "trust.create").await, ["ok"]);
        assert_eq!(audit_outcomes(&admin, "trust.delete").await, ["ok"]);
        let metrics = reqwest::get(format!("{}/metrics", issuer.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("keybound_trust_tokens_minted_total 3"), "{metrics}");
        assert!(metrics.contains("keybound_failures_total{code=\"trust.unusable\"} 1"));
    }
    cleanup(&all).await;
}

// ---------------------------------------------------------------------------
// Creation.

/// Every creation refusal, each with its code, and each audited.
#[tokio::test]
async fn trust_creation_refusals_have_stable_codes() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |config| {
            config.max_trust_lifetime = Some(7 * 86_400);
            config.max_trust_uses = Some(100);
        })
        .await;
        let admin = issuer.world(None).await;
        let ayoung = issuer.login(AYOUNG).await;
        let now = SystemClock.now();
        let base = trust_for(HEAT, &["member"]);
        let cases: Vec<(&str, NewTrust, Code)> = vec![
            ("no roles", trust_for(HEAT, &[]), Code::TrustInvalid),
            ("trustee = trustor", trust_for(AYOUNG, &["member"]), Code::TrustInvalid),
            (
                "redelegation 4",
                NewTrust {
                    redelegation: Some(4),
                    ..base.clone()
                },
                Code::TrustInvalid,
            ),
            (
                "0 uses",
                NewTrust {
                    uses: Some(0),
                    ..base.clone()
                },
                Code::TrustInvalid,
            ),
            (
                "expired already",
                NewTrust {
                    expires_at: Some(now - 1),
                    ..base.clone()
                },
                Code::TrustInvalid,
            ),
            (
                "no project",
                NewTrust {
                    project: None,
                    ..base.clone()
                },
                Code::TrustInvalid,
            ),
            (
                "past the lifetime ceiling",
                NewTrust {
                    expires_at: Some(now + 8 * 86_400),
                    ..base.clone()
                },
                Code::TrustOverLimit,
            ),
            (
                "above the uses ceiling",
                NewTrust {
                    uses: Some(101),
                    ..base.clone()
                },
                Code::TrustOverLimit,
            ),
            (
                "unknown trustee",
                trust_for("ghost@service", &["member"]),
                Code::TrustTrusteeUnknown,
            ),
            (
                "role not held",
                trust_for(HEAT, &["member", "writer"]),
                Code::IssuerRoleNotHeld,
            ),
            (
                "unknown role",
                trust_for(HEAT, &["nosuchrole"]),
                Code::IssuerRoleNotHeld,
            ),
            (
                "unknown project",
                NewTrust {
                    project: Some("nope".into()),
                    ..base.clone()
                },
                Code::IssuerUnknownProject,
            ),
            (
                "bad name",
                trust_for("not a user", &["member"]),
                Code::IssuerInvalidName,
            ),
        ];
        for (what, request, expected) in &cases {
            assert_eq!(
                code(ayoung.create_trust(request).await).await,
                *expected,
                "{backend}: {what}"
            );
        }
        admin
            .ok("POST", "/v1/admin/users/cinder@service/disable", json!({}))
            .await;
        assert_eq!(
            code(ayoung.create_trust(&trust_for(CINDER, &["member"])).await).await,
            Code::TrustTrusteeUnknown,
            "{backend}: disabled trustee"
        );
        // Defaults: the ceilings, not unlimited.
        let trust = ayoung.create_trust(&base).await.unwrap();
        assert_eq!(trust["remaining_uses"], 100);
        let expires = trust["expires_at"].as_u64().unwrap();
        assert!((now + 7 * 86_400..=now + 7 * 86_400 + 5).contains(&expires));
        let refusals = audit_outcomes(&admin, "trust.create").await;
        assert_eq!(refusals.len(), cases.len() + 2, "{backend}: {refusals:?}");
        assert_eq!(refusals[0], "ok", "newest first");
    }
    cleanup(&all).await;
}

/// DL-13: expiry and use counts near the integer limits are refused, never
/// wrapped; a trust may live at most the ceiling.
#[tokio::test]
async fn dl_13_integer_limits_are_refused_not_wrapped() {
    let issuer = start("sqlite", None, Arc::new(SystemClock), |config| {
        config.max_trust_lifetime = None;
    })
    .await;
    issuer.world(None).await;
    let ayoung = issuer.login(AYOUNG).await;
    let base = trust_for(HEAT, &["member"]);
    for request in [
        NewTrust {
            expires_at: Some(u64::MAX),
            ..base.clone()
        },
        NewTrust {
            expires_at: Some(i64::MAX as u64 + 1),
            ..base.clone()
        },
        NewTrust {
            uses: Some(u64::MAX),
            ..base.clone()
        },
    ] {
        assert_eq!(code(ayoung.create_trust(&request).await).await, Code::TrustOverLimit);
    }
    // Without a lifetime ceiling, i64::MAX − 1 is a valid expiry, and the
    // delegated token still lives at most the service lifetime.
    let trust = ayoung
        .create_trust(&NewTrust {
            expires_at: Some(i64::MAX as u64 - 1),
            ..base.clone()
        })
        .await
        .unwrap();
    let heat = issuer.login(HEAT).await;
    let token = heat
        .service_token(&Scope::new(AUDIENCE).trust(id_of(&trust)))
        .await
        .unwrap();
    let claims = claims_of(&token);
    assert_eq!(claims.exp - claims.iat, 300);
}

/// An administrator creates a trust in a trustor's name, with the same checks.
#[tokio::test]
async fn admins_create_trusts_for_a_trustor() {
    let issuer = start("sqlite", None, Arc::new(SystemClock), |_| {}).await;
    let admin = issuer.world(None).await;
    let body =
        json!({"trustor": AYOUNG, "trustee": HEAT, "project": "turing", "domain": "stoughton", "roles": ["reader"]});
    let trust = admin.ok("POST", "/v1/admin/trusts", body.clone()).await;
    assert_eq!(
        (trust["trustor"].as_str(), trust["trustee"].as_str()),
        (Some(AYOUNG), Some(HEAT))
    );
    let mut writer = body.clone();
    writer["roles"] = json!(["writer"]);
    assert_eq!(
        admin.call("POST", "/v1/admin/trusts", writer).await.unwrap_err().code(),
        Code::IssuerRoleNotHeld
    );
    let mut ghost = body;
    ghost["trustor"] = json!("ghost@stoughton");
    assert_eq!(
        admin.call("POST", "/v1/admin/trusts", ghost).await.unwrap_err().code(),
        Code::IssuerNotFound
    );
    let by_user = admin.ok("GET", "/v1/admin/trusts?user=heat%40service", json!({})).await;
    assert_eq!(by_user, json!([trust.clone()]));
    let by_project = admin
        .ok("GET", "/v1/admin/trusts?project=turing@stoughton", json!({}))
        .await;
    assert_eq!(by_project, json!([trust.clone()]));
    let none = admin
        .ok("GET", "/v1/admin/trusts?user=nova-compute@service", json!({}))
        .await;
    assert_eq!(none, json!([]));
    assert_eq!(
        admin
            .call("GET", "/v1/admin/trusts?owner=x", json!({}))
            .await
            .unwrap_err()
            .code(),
        Code::IssuerBadRequest
    );
    let id = id_of(&trust);
    admin.ok("DELETE", &format!("/v1/admin/trusts/{id}"), json!({})).await;
    assert_eq!(
        admin
            .call("DELETE", &format!("/v1/admin/trusts/{id}"), json!({}))
            .await
            .unwrap_err()
            .code(),
        Code::TrustNotFound
    );
    assert_eq!(admin.ok("GET", "/v1/admin/trusts", json!({})).await, json!([]));
}

// ---------------------------------------------------------------------------
// Redelegation.

/// DL-01, DL-02 (for expiry), DL-12: a child that asks for more than its
/// parent — a role, a later expiry, an allowance not below the parent's — is
/// refused, not clamped; a trust with allowance 0 cannot be redelegated.
#[tokio::test]
async fn dl_01_dl_12_redelegation_asking_more_is_refused_not_clamped() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        issuer.world(None).await;
        let ayoung = issuer.login(AYOUNG).await;
        let now = SystemClock.now();
        let parent = ayoung
            .create_trust(&NewTrust {
                redelegation: Some(1),
                expires_at: Some(now + 3600),
                ..trust_for(NOVA, &["member", "reader"])
            })
            .await
            .unwrap();
        let pid = id_of(&parent);
        let nova = issuer.login(NOVA).await;
        let asks = [
            ("a role the parent lacks", child_of(&pid, CINDER, &["member", "writer"])),
            (
                "a later expiry",
                NewTrust {
                    expires_at: Some(now + 3601),
                    ..child_of(&pid, CINDER, &["reader"])
                },
            ),
            (
                "the same allowance",
                NewTrust {
                    redelegation: Some(1),
                    ..child_of(&pid, CINDER, &["reader"])
                },
            ),
        ];
        for (what, ask) in &asks {
            assert_eq!(
                code(nova.create_trust(ask).await).await,
                Code::TrustEscalation,
                "{backend}: {what}"
            );
        }
        // Not the parent's trustee: refused; with a project: refused.
        assert_eq!(
            code(ayoung.create_trust(&child_of(&pid, CINDER, &["reader"])).await).await,
            Code::TrustNotTrustee
        );
        assert_eq!(
            code(
                nova.create_trust(&NewTrust {
                    project: Some("turing".into()),
                    ..child_of(&pid, CINDER, &["reader"])
                })
                .await
            )
            .await,
            Code::TrustInvalid
        );
        let child = nova.create_trust(&child_of(&pid, CINDER, &["reader"])).await.unwrap();
        assert_eq!(child["trustor"], NOVA, "{backend}");
        assert_eq!(child["parent"], pid);
        assert_eq!(child["project"], "turing@stoughton");
        assert_eq!(
            child["expires_at"].as_u64(),
            Some(now + 3600),
            "the chain's expiry by default"
        );
        assert_eq!(child["redelegation"], 0);
        // DL-12: the child's allowance is 0.
        let cinder = issuer.login(CINDER).await;
        assert_eq!(
            code(cinder.create_trust(&child_of(&id_of(&child), HEAT, &["reader"])).await).await,
            Code::TrustTooDeep,
            "{backend}"
        );
        // The child mints for ayoung, through nova and cinder, current actor first.
        let token = cinder
            .service_token(&Scope::new(AUDIENCE).trust(id_of(&child)))
            .await
            .unwrap();
        let claims = claims_of(&token);
        assert_eq!(claims.sub, AYOUNG);
        assert_eq!(actors(&claims), [CINDER, NOVA]);
        assert_eq!(claims.roles, ["reader"]);
        assert_eq!(claims.trust_id, Some(id_of(&child)));
    }
    cleanup(&all).await;
}

/// A trust restricted to some services mints only for them (TM5,
/// `trust.wrong_audience`); it names registered services only; a child of a
/// restricted trust inherits the restriction and cannot widen it.
#[tokio::test]
async fn trusts_restricted_to_audiences_mint_only_for_them() {
    const GLANCE: &str = "https://glance.example";
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.world(None).await;
        admin
            .ok("POST", "/v1/admin/services", json!({"audience": GLANCE}))
            .await;
        let ayoung = issuer.login(AYOUNG).await;
        let restricted = |audiences: &[&str]| NewTrust {
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            redelegation: Some(1),
            ..trust_for(NOVA, &["reader"])
        };
        assert_eq!(
            code(ayoung.create_trust(&restricted(&["https://unknown.example"])).await).await,
            Code::IssuerUnknownAudience,
            "{backend}"
        );
        let trust = ayoung.create_trust(&restricted(&[GLANCE])).await.unwrap();
        assert_eq!(trust["audiences"], json!([GLANCE]), "{backend}");
        let nova = issuer.login(NOVA).await;
        let token = nova
            .service_token(&Scope::new(GLANCE).trust(id_of(&trust)))
            .await
            .unwrap();
        assert_eq!(claims_of(&token).aud, GLANCE);
        assert_eq!(
            code(nova.service_token(&Scope::new(AUDIENCE).trust(id_of(&trust))).await).await,
            Code::TrustWrongAudience,
            "{backend}"
        );
        // A child cannot widen the restriction; without audiences it inherits it.
        assert_eq!(
            code(
                nova.create_trust(&NewTrust {
                    audiences: Some(vec![AUDIENCE.into()]),
                    ..child_of(&id_of(&trust), CINDER, &["reader"])
                })
                .await
            )
            .await,
            Code::TrustEscalation,
            "{backend}"
        );
        let child = nova
            .create_trust(&child_of(&id_of(&trust), CINDER, &["reader"]))
            .await
            .unwrap();
        assert_eq!(child["audiences"], json!([GLANCE]), "{backend}");
        let cinder = issuer.login(CINDER).await;
        assert_eq!(
            code(cinder.service_token(&Scope::new(AUDIENCE).trust(id_of(&child))).await).await,
            Code::TrustWrongAudience,
            "{backend}"
        );
        // An unrestricted trust mints for any registered service.
        let open = ayoung.create_trust(&trust_for(HEAT, &["member"])).await.unwrap();
        assert_eq!(open["audiences"], json!([]));
        let heat = issuer.login(HEAT).await;
        for audience in [AUDIENCE, GLANCE] {
            heat.service_token(&Scope::new(audience).trust(id_of(&open)))
                .await
                .unwrap();
        }
    }
    cleanup(&all).await;
}

/// DL-03, DL-04: allowances fall at every level (3, 2, 1, 0), so chains
/// hold at most 4 trusts; a trustee already on the chain is refused.
#[tokio::test]
async fn dl_03_dl_04_chains_are_bounded_and_acyclic() {
    let issuer = start("sqlite", None, Arc::new(SystemClock), |_| {}).await;
    let admin = issuer.world(None).await;
    admin
        .ok(
            "POST",
            "/v1/admin/users",
            json!({"user": "keystone@service", "kind": "service", "password": PASSWORD}),
        )
        .await;
    let ayoung = issuer.login(AYOUNG).await;
    let root = ayoung
        .create_trust(&NewTrust {
            redelegation: Some(3),
            ..trust_for(HEAT, &["member"])
        })
        .await
        .unwrap();
    let heat = issuer.login(HEAT).await;
    // DL-04: back to the trustor, or to a trustee already on the chain.
    assert_eq!(
        code(heat.create_trust(&child_of(&id_of(&root), AYOUNG, &["member"])).await).await,
        Code::TrustInvalid
    );
    let mut parent = root;
    let mut holder = heat;
    let chain = [NOVA, CINDER, "keystone@service"];
    for (level, next) in chain.iter().enumerate() {
        let allowance = 2 - level as u64;
        let child = holder
            .create_trust(&NewTrust {
                redelegation: Some(allowance),
                ..child_of(&id_of(&parent), next, &["member"])
            })
            .await
            .unwrap();
        let next_client = issuer.login(next).await;
        if level == 1 {
            assert_eq!(
                code(
                    next_client
                        .create_trust(&child_of(&id_of(&child), HEAT, &["member"]))
                        .await
                )
                .await,
                Code::TrustInvalid,
                "heat is on the chain already"
            );
        }
        parent = child;
        holder = next_client;
    }
    // The fourth trust has allowance 0 (DL-03: no deeper chain).
    assert_eq!(parent["redelegation"], 0);
    assert_eq!(
        code(holder.create_trust(&child_of(&id_of(&parent), HEAT, &["member"])).await).await,
        Code::TrustTooDeep
    );
    let token = holder
        .service_token(&Scope::new(AUDIENCE).trust(id_of(&parent)))
        .await
        .unwrap();
    assert_eq!(actors(&claims_of(&token)), ["keystone@service", CINDER, NOVA, HEAT]);
}

// ---------------------------------------------------------------------------
// Minting.

/// DL-11 (only the trustee), DL-14 (an audience that is not a registered
/// service, or the admin audience), DL-01 at the mint (roles outside the
/// trust), and the request's own rules.
#[tokio::test]
async fn dl_11_dl_14_mint_checks_refuse_with_their_codes() {
    let issuer = start("sqlite", None, Arc::new(SystemClock), |_| {}).await;
    issuer.world(None).await;
    let ayoung = issuer.login(AYOUNG).await;
    let trust = ayoung
        .create_trust(&trust_for(HEAT, &["member", "reader"]))
        .await
        .unwrap();
    let id = id_of(&trust);
    let heat = issuer.login(HEAT).await;
    let nova = issuer.login(NOVA).await;
    let scope = Scope::new(AUDIENCE).trust(&id);
    assert_eq!(code(nova.service_token(&scope).await).await, Code::TrustNotTrustee);
    assert_eq!(
        code(
            heat.service_token(&Scope::new("https://unregistered.example").trust(&id))
                .await
        )
        .await,
        Code::IssuerUnknownAudience
    );
    assert_eq!(
        code(
            heat.service_token(&Scope::new(format!("{}/admin", issuer.url)).trust(&id))
                .await
        )
        .await,
        Code::IssuerForbidden
    );
    assert_eq!(
        code(heat.service_token(&scope.clone().roles(["writer"])).await).await,
        Code::TrustEscalation
    );
    assert_eq!(
        code(heat.service_token(&scope.clone().roles(Vec::<String>::new())).await).await,
        Code::TrustEscalation
    );
    assert_eq!(
        code(heat.service_token(&scope.clone().project("turing")).await).await,
        Code::IssuerBadRequest
    );
    for bad in ["AAAAAAAAAAAAAAAAAAAAAA", "short", "../../v1/admin/xxxxxxxx"] {
        assert_eq!(
            code(heat.service_token(&Scope::new(AUDIENCE).trust(bad)).await).await,
            Code::TrustNotFound,
            "{bad}"
        );
    }
    let down = heat.service_token(&scope.clone().roles(["reader"])).await.unwrap();
    assert_eq!(claims_of(&down).roles, ["reader"]);
    let all = heat.service_token(&scope).await.unwrap();
    assert_eq!(claims_of(&all).roles, ["member", "reader"]);
    // A plain mint answers its subject and no trust.
    let plain = ayoung
        .service_token(&Scope::new(AUDIENCE).project("turing"))
        .await
        .unwrap();
    assert!(claims_of(&plain).trust_id.is_none() && claims_of(&plain).actor_chain.is_empty());
}

/// DL-02: a delegated token never outlives its trust (its lifetime is
/// shortened to the trust's expiry); an expired trust yields nothing; a
/// disabled trustor or trustee makes the trust unusable; uses run out.
#[tokio::test]
async fn dl_02_tokens_never_outlive_the_trust_and_uses_run_out() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = start("sqlite", None, clock.clone(), |_| {}).await;
    let admin = issuer.world(None).await;
    let ayoung = issuer.client().with_clock(clock.clone());
    ayoung.login_password(AYOUNG, PASSWORD, None).await.unwrap();
    let now = clock.now();
    let trust = ayoung
        .create_trust(&NewTrust {
            expires_at: Some(now + 100),
            uses: Some(3),
            ..trust_for(HEAT, &["member"])
        })
        .await
        .unwrap();
    let heat = issuer.client().with_clock(clock.clone());
    heat.login_password(HEAT, PASSWORD, None).await.unwrap();
    let scope = Scope::new(AUDIENCE).trust(id_of(&trust));
    let token = heat.service_token(&scope).await.unwrap();
    let claims = claims_of(&token);
    assert_eq!(claims.exp, now + 100, "shortened to the trust's expiry");
    // Disabled trustee, then disabled trustor: unusable (no use is taken).
    for user in [HEAT, AYOUNG] {
        admin
            .ok("POST", &format!("/v1/admin/users/{user}/disable"), json!({}))
            .await;
        heat.forget_token(&scope);
        assert_eq!(
            code(heat.service_token(&scope).await).await,
            Code::TrustUnusable,
            "{user}"
        );
        admin
            .ok("POST", &format!("/v1/admin/users/{user}/enable"), json!({}))
            .await;
    }
    for _ in 0..2 {
        heat.forget_token(&scope);
        heat.service_token(&scope).await.unwrap();
    }
    heat.forget_token(&scope);
    assert_eq!(code(heat.service_token(&scope).await).await, Code::TrustExhausted);
    let shown = heat.trust(&id_of(&trust)).await.unwrap();
    assert_eq!(shown["remaining_uses"], 0);
    // Expired.
    let fresh = ayoung
        .create_trust(&NewTrust {
            expires_at: Some(now + 100),
            ..trust_for(HEAT, &["member"])
        })
        .await
        .unwrap();
    clock.advance(100);
    let scope = Scope::new(AUDIENCE).trust(id_of(&fresh));
    assert_eq!(code(heat.service_token(&scope).await).await, Code::TrustExpired);
}

/// DL-08: deleting a trust stops every mint from it and from the trusts
/// redelegated from it, at once; only the trustor or an administrator
/// deletes.
#[tokio::test]
async fn dl_08_delete_stops_mints_and_cascades() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.world(None).await;
        let ayoung = issuer.login(AYOUNG).await;
        let parent = ayoung
            .create_trust(&NewTrust {
                redelegation: Some(1),
                ..trust_for(NOVA, &["member"])
            })
            .await
            .unwrap();
        let nova = issuer.login(NOVA).await;
        let child = nova
            .create_trust(&child_of(&id_of(&parent), CINDER, &["member"]))
            .await
            .unwrap();
        let cinder = issuer.login(CINDER).await;
        let scope = Scope::new(AUDIENCE).trust(id_of(&child));
        cinder.service_token(&scope).await.unwrap();
        // The trustee cannot delete; a stranger is told there is no such trust.
        assert_eq!(
            code(nova.delete_trust(&id_of(&parent)).await).await,
            Code::IssuerForbidden
        );
        assert_eq!(
            code(cinder.delete_trust(&id_of(&parent)).await).await,
            Code::TrustNotFound
        );
        ayoung.delete_trust(&id_of(&parent)).await.unwrap();
        cinder.forget_token(&scope);
        assert_eq!(
            code(cinder.service_token(&scope).await).await,
            Code::TrustNotFound,
            "{backend}"
        );
        assert_eq!(
            code(cinder.trust(&id_of(&child)).await).await,
            Code::TrustNotFound,
            "cascaded"
        );
        assert_eq!(admin.ok("GET", "/v1/admin/trusts", json!({})).await, json!([]));
        let deletes = audit_outcomes(&admin, "trust.delete").await;
        assert_eq!(deletes, ["ok", "trust.not_found", "issuer.forbidden"], "{backend}");
    }
    cleanup(&all).await;
}

// ---------------------------------------------------------------------------
// Uses under concurrency.

/// A mint sent straight to `base` (a replica's own address) with a proof
/// for the issuer id.
async fn mint_at(base: &str, issuer_id: &str, session: &Token, key: &SigningKey, body: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let htu = format!("{issuer_id}/v1/tokens");
    let proof = ProofBuilder::new("POST", &htu, session.as_bytes(), &body, SystemClock.now())
        .unwrap()
        .sign(key)
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/tokens"))
        .header("authorization", format!("KB {}", b64url_encode(session.as_bytes())))
        .header("kb-proof", proof.to_base64url())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
    )
}

/// A second replica of `issuer` on the same database, the same issuer id
/// and root secret, on its own port.
async fn second_replica(issuer: &Issuer) -> (String, Arc<IssuerState>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let dir = issuer.dir.path().join("replica-2");
    let mut config = IssuerConfig::new(&dir);
    config.issuer_id = issuer.url.clone();
    config.database_url = issuer.database_url.clone();
    config.root_secret = Some(zeroize::Zeroizing::new(
        std::fs::read(issuer.dir.path().join("root.key")).unwrap(),
    ));
    config.listen = listener.local_addr().unwrap();
    let state = IssuerState::open(config, Arc::new(SystemClock)).await.unwrap();
    let app = keybound::issuer::router(state.clone()).unwrap();
    tokio::spawn(keybound::http::serve(
        listener,
        app,
        keybound::http::ServeConfig::default(),
        std::future::pending(),
    ));
    (base, state)
}

/// 50 parallel mints from a trust with 10 uses: exactly 10 tokens. On
/// PostgreSQL the mints alternate between two replicas of one issuer.
#[tokio::test]
async fn fifty_parallel_mints_on_ten_uses_mint_exactly_ten() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        issuer.world(None).await;
        let ayoung = issuer.login(AYOUNG).await;
        let trust = ayoung
            .create_trust(&NewTrust {
                uses: Some(10),
                ..trust_for(HEAT, &["member"])
            })
            .await
            .unwrap();
        // The tasks sign with a copy of heat's key.
        let secret = [0x5a_u8; 32];
        let heat = Client::new(
            &issuer.url,
            SigningKey::from_secret_bytes(Algorithm::EdDSA, &secret).unwrap(),
        )
        .unwrap();
        heat.login_password(HEAT, PASSWORD, None).await.unwrap();
        let session = heat.session().unwrap().token;
        let key = Arc::new(SigningKey::from_secret_bytes(Algorithm::EdDSA, &secret).unwrap());
        let mut bases = vec![issuer.url.clone()];
        let mut _replica = None;
        if backend == "postgres" {
            let (base, state) = second_replica(&issuer).await;
            bases.push(base);
            _replica = Some(state);
        }
        let body = json!({"audience": AUDIENCE, "trust": id_of(&trust)});
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let (base, id, session, key, body) = (
                bases[i % bases.len()].clone(),
                issuer.url.clone(),
                session.clone(),
                key.clone(),
                body.clone(),
            );
            tasks.spawn(async move { mint_at(&base, &id, &session, &key, &body).await });
        }
        let mut minted = 0;
        let mut refused = Vec::new();
        while let Some(result) = tasks.join_next().await {
            let (status, answer) = result.unwrap();
            if status == 200 {
                minted += 1;
            } else {
                refused.push(answer["code"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(minted, 10, "{backend}: {refused:?}");
        assert!(refused.iter().all(|c| c == "trust.exhausted"), "{backend}: {refused:?}");
        assert_eq!(heat.trust(&id_of(&trust)).await.unwrap()["remaining_uses"], 0);
        let _ = &issuer.server;
    }
    cleanup(&all).await;
}

/// DL-09 (the Bronze Bit, CVE-2020-17049): whether a token is delegated, and
/// by whom, is read from the signed claims only. A holder that puts a trust
/// id or an actor chain where nothing is signed — the unprotected header —
/// is refused (`cose.header_unsupported`); one that edits the signed
/// claims breaks the signature.
#[tokio::test]
async fn dl_09_delegation_is_never_read_from_anything_unsigned() {
    use coset::CborSerializable;
    let issuer = start("sqlite", None, Arc::new(SystemClock), |_| {}).await;
    let service = protected_service(&issuer).await;
    issuer.world(Some(&service)).await;
    let ayoung = issuer.login(AYOUNG).await;
    let heat = issuer.login(HEAT).await;
    let trust = ayoung.create_trust(&trust_for(HEAT, &["member"])).await.unwrap();
    let plain = heat.service_token(&Scope::new(&service)).await.unwrap();
    let delegated = heat
        .service_token(&Scope::new(&service).trust(id_of(&trust)))
        .await
        .unwrap();
    let call = |token: Vec<u8>| {
        let (service, heat) = (&service, &heat);
        async move {
            let url = format!("{service}/v2/servers");
            let proof = ProofBuilder::new("GET", &url, &token, b"", SystemClock.now())
                .unwrap()
                .sign(heat.key())
                .unwrap();
            let response = reqwest::Client::new()
                .get(&url)
                .header("authorization", format!("KB {}", b64url_encode(&token)))
                .header("kb-proof", proof.to_base64url())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (status, text) = call(plain.as_bytes().to_vec()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("trust=None"), "{text}");
    // A trust id and an actor chain in the unprotected bucket.
    for (label, value) in [
        (5, ciborium::Value::Text(id_of(&trust))),
        (6, ciborium::Value::Array(vec![ciborium::Value::Text(HEAT.into())])),
    ] {
        let mut sign1 = coset::CoseSign1::from_slice(plain.as_bytes()).unwrap();
        sign1.unprotected.rest.push((coset::Label::Int(label), value));
        let (status, text) = call(sign1.to_vec().unwrap()).await;
        assert_eq!(status, 401, "{text}");
        assert!(text.contains("cose.header_unsupported"), "{text}");
    }
    // The delegated token with its trust id removed from the signed claims.
    let mut sign1 = coset::CoseSign1::from_slice(delegated.as_bytes()).unwrap();
    let payload = sign1.payload.take().unwrap();
    let mut claims: ciborium::Value = ciborium::from_reader(payload.as_slice()).unwrap();
    let kb = claims
        .as_map_mut()
        .unwrap()
        .iter_mut()
        .find(|(k, _)| k.as_integer() == Some((-65537).into()))
        .unwrap();
    kb.1.as_map_mut()
        .unwrap()
        .retain(|(k, _)| k.as_integer() != Some(5.into()));
    let mut edited = Vec::new();
    ciborium::into_writer(&claims, &mut edited).unwrap();
    sign1.payload = Some(edited);
    let (status, text) = call(sign1.to_vec().unwrap()).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("cose.bad_signature"), "{text}");
}

// ---------------------------------------------------------------------------
// Workplan runs (spec/delegation.md §11).

/// A workplan run creates every trust of the plan, each restricted to its
/// hop's audience, and a routing slip naming them that verifies with the
/// issuer's keys; a plan with a role the user does not hold, a repeated hop
/// or no delegation creates nothing and names what is wrong.
#[tokio::test]
async fn workplan_runs_create_all_trusts_or_none_and_return_a_slip() {
    use keybound::client::{PlanDelegation, WorkplanRun};
    use keybound::delegation::slip::{Slip, UnverifiedSlip};
    use keybound::verify::Clock as _;
    const GLANCE: &str = "https://glance.example";
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.world(None).await;
        admin
            .ok("POST", "/v1/admin/services", json!({"audience": GLANCE}))
            .await;
        let ayoung = issuer.login(AYOUNG).await;
        let hop = |trustee: &str, audience: &str, roles: &[&str]| PlanDelegation {
            trustee: trustee.into(),
            audience: audience.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            uses: Some(10),
            ..Default::default()
        };
        let plan = |delegations: Vec<PlanDelegation>| WorkplanRun {
            workflow: "deploy-instance".into(),
            project: "turing".into(),
            domain: None,
            delegations,
        };
        // A role ayoung does not hold, in the second delegation: nothing is created.
        let e = ayoung
            .run_workplan(&plan(vec![
                hop(NOVA, GLANCE, &["reader"]),
                hop(NOVA, AUDIENCE, &["writer"]),
            ]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::IssuerRoleNotHeld, "{backend}");
        assert!(
            e.message().contains("delegation 2") && e.message().contains("writer"),
            "{e}"
        );
        assert_eq!(ayoung.trusts().await.unwrap(), json!([]), "{backend}: nothing created");
        for (what, delegations, expected) in [
            ("no delegation", vec![], Code::TrustInvalid),
            (
                "a repeated hop",
                vec![hop(NOVA, GLANCE, &["reader"]), hop(NOVA, GLANCE, &["member"])],
                Code::TrustInvalid,
            ),
            (
                "an unregistered service",
                vec![hop(NOVA, "https://unknown.example", &["reader"])],
                Code::IssuerUnknownAudience,
            ),
        ] {
            assert_eq!(
                code(ayoung.run_workplan(&plan(delegations)).await).await,
                expected,
                "{backend}: {what}"
            );
        }
        // The learned plan: nova-compute reads glance and acts as member on nova.
        let run = ayoung
            .run_workplan(&plan(vec![
                hop(NOVA, GLANCE, &["reader"]),
                hop(NOVA, AUDIENCE, &["member"]),
            ]))
            .await
            .unwrap();
        let trusts = run["trusts"].as_array().unwrap();
        assert_eq!(trusts.len(), 2, "{backend}");
        assert_eq!(trusts[0]["audiences"], json!([GLANCE]));
        assert_eq!(trusts[0]["roles"], json!(["reader"]));
        assert_eq!(trusts[1]["audiences"], json!([AUDIENCE]));
        assert_eq!(run["trustor"], AYOUNG);
        assert_eq!(run["workflow"], "deploy-instance");
        let slip = Slip::from_base64url(run["slip"].as_str().unwrap()).unwrap();
        assert_eq!(UnverifiedSlip::parse(slip.as_bytes()).unwrap().issuer(), issuer.url);
        // A service verifies it with the issuer's published keys.
        let keys = HttpKeys::start(
            &format!("{}/.well-known/keybound/keys", issuer.url),
            HttpKeysOptions::default(),
        )
        .await
        .unwrap();
        let verifier = Verifier::builder(GLANCE, TrustedIssuer::new(&issuer.url, keys))
            .build()
            .unwrap();
        let verified = verifier.verify_slip_async(slip.as_bytes()).await.unwrap();
        assert_eq!(verified.workflow(), "deploy-instance");
        assert_eq!(verified.workflow_id_base64url(), run["workflow_id"].as_str().unwrap());
        assert_eq!(verified.trustor(), AYOUNG);
        let hops: Vec<(&str, &str, &str)> = verified
            .hops()
            .iter()
            .map(|h| (h.trustee.as_str(), h.audience.as_str(), h.trust_id.as_str()))
            .collect();
        let (t0, t1) = (id_of(&trusts[0]), id_of(&trusts[1]));
        assert_eq!(hops, [(NOVA, GLANCE, t0.as_str()), (NOVA, AUDIENCE, t1.as_str())]);
        assert!(
            run["expires_at"].as_u64().unwrap() <= SystemClock.now() + 3600,
            "within a rotation period"
        );
        // The trust of each hop mints only for its service.
        let nova = issuer.login(NOVA).await;
        let glance_trust = id_of(&trusts[0]);
        nova.service_token(&Scope::new(GLANCE).trust(glance_trust.clone()))
            .await
            .unwrap();
        assert_eq!(
            code(nova.service_token(&Scope::new(AUDIENCE).trust(glance_trust)).await).await,
            Code::TrustWrongAudience
        );
        assert_eq!(
            audit_outcomes(&admin, "workplan.run").await,
            [
                "ok",
                "issuer.unknown_audience",
                "trust.invalid",
                "trust.invalid",
                "issuer.role_not_held"
            ],
            "{backend}: newest first"
        );
        assert_eq!(audit_outcomes(&admin, "trust.create").await, ["ok", "ok"], "{backend}");
    }
    cleanup(&all).await;
}

/// A token minted from a trust can be restricted to one instance of its
/// audience, like any other (spec/issuer.md §6.1 `instance`).
#[tokio::test]
async fn a_token_from_a_trust_carries_the_instance_asked_for() {
    let issuer = start("sqlite", None, Arc::new(SystemClock), |_| {}).await;
    let _admin = issuer.world(None).await;
    let ayoung = issuer.login(AYOUNG).await;
    let trust = ayoung.create_trust(&trust_for(NOVA, &["reader"])).await.unwrap();
    let nova = issuer.login(NOVA).await;
    let bound = nova
        .service_token(&Scope::new(AUDIENCE).trust(id_of(&trust)).instance("vm-7f3a@host-12"))
        .await
        .unwrap();
    let claims = claims_of(&bound);
    assert_eq!(claims.instance.as_deref(), Some("vm-7f3a@host-12"));
    assert_eq!(claims.trust_id.as_deref(), Some(id_of(&trust).as_str()));
    assert_eq!(actors(&claims), [NOVA]);
    // Without it, the delegated token is for every instance.
    let unbound = nova
        .service_token(&Scope::new(AUDIENCE).trust(id_of(&trust)))
        .await
        .unwrap();
    assert_eq!(claims_of(&unbound).instance, None);
    // A malformed instance is refused before the trust is looked at.
    assert_eq!(
        code(
            nova.service_token(&Scope::new(AUDIENCE).trust(id_of(&trust)).instance("vm 1"))
                .await
        )
        .await,
        Code::IssuerBadRequest
    );
}
