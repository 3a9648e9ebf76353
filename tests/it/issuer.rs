//! The issuer over real HTTP on loopback, against SQLite (always) and
//! PostgreSQL (when `KEYBOUND_TEST_POSTGRES_URL` is set; each run in a schema
//! of its own).
#![cfg(feature = "issuer")]

use std::sync::Arc;
use std::time::Duration;

use keybound::Code;
use keybound::client::{Client, Scope, error_from_response};
use keybound::encoding::b64url_encode;
use keybound::http::KeyboundLayer;
use keybound::issuer::loopback::LoopbackIssuer;
use keybound::issuer::store::Logins;
use keybound::issuer::{IssuerConfig, IssuerState};
use keybound::key::{Algorithm, SigningKey};
use keybound::keyset::{HttpKeys, HttpKeysOptions};
use keybound::proof::ProofBuilder;
use keybound::verify::{Clock, ManualClock, SystemClock, TrustedIssuer, VerifiedRequest, Verifier};
use serde_json::{Value, json};

use crate::common;

const ADMIN_PASSWORD: &str = "bootstrap-password-1";

/// A running issuer.
struct Issuer {
    url: String,
    state: Arc<IssuerState>,
    _server: LoopbackIssuer,
    _dir: tempfile::TempDir,
    backend: &'static str,
}

/// Drops the PostgreSQL schemas a test created (SQLite lives in a temp dir).
async fn cleanup(backends: &[(&'static str, Option<String>)]) {
    for (_, url) in backends {
        let Some(url) = url else { continue };
        let Some((base, schema)) = url
            .split_once("search_path%3D")
            .map(|(b, s)| (b.trim_end_matches(&['?', '&'][..]).trim_end_matches("options=-c%20"), s))
        else {
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

/// The backends to test: SQLite always, PostgreSQL when configured.
async fn backends() -> Vec<(&'static str, Option<String>)> {
    let mut out = vec![("sqlite", None)];
    match std::env::var("KEYBOUND_TEST_POSTGRES_URL") {
        Ok(url) => out.push(("postgres", Some(fresh_schema(&url).await))),
        Err(_) => eprintln!("PostgreSQL part skipped: KEYBOUND_TEST_POSTGRES_URL is not set"),
    }
    out
}

/// Creates a schema of its own and returns a URL that uses it.
async fn fresh_schema(url: &str) -> String {
    sqlx::any::install_default_drivers();
    let schema = format!("kbtest_{}_{}", std::process::id(), rand_suffix());
    let pool = sqlx::AnyPool::connect(url).await.expect("PostgreSQL reachable");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

fn rand_suffix() -> String {
    keybound::encoding::hex_encode(
        &std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            .to_be_bytes(),
    ) + &keybound::encoding::hex_encode(
        &SigningKey::generate(Algorithm::EdDSA)
            .unwrap()
            .public_key()
            .thumbprint()
            .as_bytes()[..4],
    )
}

async fn start(
    backend: &'static str,
    database_url: Option<String>,
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut IssuerConfig),
) -> Issuer {
    let (server, dir) = common::start_issuer(ADMIN_PASSWORD, clock, |config| {
        config.database_url = database_url;
        // Many logins from one address; the login rate limit has its own tests.
        config.login_rate_per_minute = 1_000_000;
        config.login_burst = 100_000;
        tweak(config);
    })
    .await;
    Issuer {
        url: server.url().to_owned(),
        state: server.state().clone(),
        _server: server,
        _dir: dir,
        backend,
    }
}

impl Issuer {
    fn client(&self) -> Client {
        Client::new(&self.url, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap()
    }

    async fn admin(&self) -> Admin {
        let client = self.client();
        client
            .login_password("admin@default", ADMIN_PASSWORD, None)
            .await
            .unwrap();
        Admin {
            client,
            url: self.url.clone(),
            scope: Scope::new(format!("{}/admin", self.url))
                .project("admin")
                .domain("default"),
        }
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

    /// Domain `stoughton`, project `turing`, roles `member`/`reader`, user
    /// `ayoung@stoughton` with `member` on turing, service `audience`.
    async fn setup_world(&self, audience: &str) {
        self.ok("POST", "/v1/admin/domains", json!({"name": "stoughton"})).await;
        self.ok(
            "POST",
            "/v1/admin/projects",
            json!({"name": "turing", "domain": "stoughton"}),
        )
        .await;
        for role in ["member", "reader"] {
            self.ok("POST", "/v1/admin/roles", json!({"name": role})).await;
        }
        self.ok(
            "POST",
            "/v1/admin/users",
            json!({"user": "ayoung@stoughton", "password": "correct horse battery"}),
        )
        .await;
        self.ok(
            "POST",
            "/v1/admin/grants",
            json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "member"}),
        )
        .await;
        self.ok(
            "POST",
            "/v1/admin/grants",
            json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "reader"}),
        )
        .await;
        self.ok("POST", "/v1/admin/services", json!({"audience": audience}))
            .await;
    }
}

/// A service protected by the verifier, trusting the issuer's published keys.
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
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/v2/servers",
            axum::routing::get(|r: VerifiedRequest| async move { format!("{} {:?}", r.subject(), r.roles()) }),
        )
        .layer(KeyboundLayer::new(Arc::new(verifier), &url).unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn client_flow_login_mint_call_revoke() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let service = protected_service(&issuer).await;
        let admin = issuer.admin().await;
        admin.setup_world(&service).await;

        let user = issuer.client();
        let session = user
            .login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap();
        assert_eq!(session.subject, "ayoung@stoughton");
        let scope = Scope::new(&service).project("turing");
        let response = user.get(&format!("{service}/v2/servers"), &scope).send().await.unwrap();
        assert_eq!(response.status(), 200, "{backend}");
        assert_eq!(
            response.text().await.unwrap(),
            "ayoung@stoughton [\"member\", \"reader\"]"
        );

        // A request built with reqwest's own builder (query, timeout, body).
        let built = reqwest::Client::new()
            .get(format!("{service}/v2/servers?limit=5&name=a%20b"))
            .header("accept", "text/plain")
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let response = user.execute(built, &scope).await.unwrap();
        assert_eq!(response.status(), 200, "{backend}");
        // A streaming body cannot be signed: refused before anything is sent.
        let mut streaming = reqwest::Client::new()
            .post(format!("{service}/v2/servers"))
            .build()
            .unwrap();
        *streaming.body_mut() = Some(reqwest::Body::wrap(http_body_util::Empty::<bytes::Bytes>::new()));
        assert_eq!(
            user.execute(streaming, &scope).await.unwrap_err().code(),
            Code::InputMalformed
        );

        // Down-scoping: a token with only `reader`.
        let reader = Scope::new(&service).project("turing").roles(["reader"]);
        let response = user
            .get(&format!("{service}/v2/servers"), &reader)
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "ayoung@stoughton [\"reader\"]");

        // Revoke `member`: the next mint asking for it is refused at once.
        admin
            .ok(
                "DELETE",
                "/v1/admin/grants",
                json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "member"}),
            )
            .await;
        let member = Scope::new(&service).project("turing").roles(["member"]);
        assert_eq!(
            user.service_token(&member).await.unwrap_err().code(),
            Code::IssuerRoleNotHeld,
            "{backend}"
        );
        // Revoke the last role: no token for the project at all.
        admin
            .ok(
                "DELETE",
                "/v1/admin/grants",
                json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "reader"}),
            )
            .await;
        user.forget_token(&scope);
        assert_eq!(
            user.service_token(&scope).await.unwrap_err().code(),
            Code::IssuerRoleNotHeld
        );

        // Every login and admin action is in the audit log.
        let audit = admin.ok("GET", "/v1/admin/audit?limit=50", json!({})).await;
        let actions: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        for expected in [
            "bootstrap",
            "login",
            "domain.create",
            "project.create",
            "user.create",
            "grant",
            "revoke",
            "service.create",
        ] {
            assert!(
                actions.contains(&expected),
                "{backend}: {expected} missing from {actions:?}"
            );
        }
    }
    cleanup(&all).await;
}

#[tokio::test]
async fn disabling_a_user_stops_new_tokens() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        let user = issuer.client();
        user.login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap();
        let scope = Scope::new("https://nova.example").project("turing");
        user.service_token(&scope).await.unwrap();
        admin
            .ok("POST", "/v1/admin/users/ayoung@stoughton/disable", json!({}))
            .await;
        user.forget_token(&scope);
        assert_eq!(
            user.service_token(&scope).await.unwrap_err().code(),
            Code::IssuerDisabled,
            "{backend}"
        );
        let again = issuer.client();
        assert_eq!(
            again
                .login_password("ayoung@stoughton", "correct horse battery", None)
                .await
                .unwrap_err()
                .code(),
            Code::IssuerDisabled
        );
        admin
            .ok("POST", "/v1/admin/users/ayoung@stoughton/enable", json!({}))
            .await;
        admin
            .ok("POST", "/v1/admin/projects/turing@stoughton/disable", json!({}))
            .await;
        assert_eq!(
            user.service_token(&scope).await.unwrap_err().code(),
            Code::IssuerDisabled
        );
        admin
            .ok("POST", "/v1/admin/projects/turing@stoughton/enable", json!({}))
            .await;
        admin.ok("POST", "/v1/admin/domains/stoughton/disable", json!({})).await;
        assert_eq!(
            user.service_token(&scope).await.unwrap_err().code(),
            Code::IssuerDisabled
        );
    }
    cleanup(&all).await;
}

/// Makes every insert into the issuer's audit log fail (a trigger that
/// raises), or lets it succeed again.
async fn set_audit_broken(issuer: &Issuer, broken: bool) {
    let pool = sqlx::AnyPool::connect(&issuer.state.config.database_url())
        .await
        .unwrap();
    let statements: &[&str] = match (issuer.backend, broken) {
        ("sqlite", true) => {
            &["CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit refused'); END"]
        }
        ("sqlite", false) => &["DROP TRIGGER audit_fails"],
        (_, true) => &[
            "CREATE FUNCTION audit_fails() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_fails()",
        ],
        (_, false) => &["DROP TRIGGER audit_fails ON audit_log", "DROP FUNCTION audit_fails()"],
    };
    for statement in statements {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

/// An admin change and its audit record commit together: when the audit
/// insert fails, the client is told `issuer.unavailable` and the change is
/// not made. A login whose audit record fails issues no session and does
/// not reset the failure counter.
#[tokio::test]
async fn a_change_whose_audit_record_fails_is_not_made() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        let wrong = issuer.client();
        let refused = wrong.login_password("ayoung@stoughton", "wrong password!", None).await;
        assert_eq!(refused.unwrap_err().code(), Code::IssuerInvalidCredentials);

        set_audit_broken(&issuer, true).await;
        for (method, path, body) in [
            ("POST", "/v1/admin/domains", json!({"name": "unaudited"})),
            ("POST", "/v1/admin/users/ayoung@stoughton/disable", json!({})),
            (
                "DELETE",
                "/v1/admin/grants",
                json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "member"}),
            ),
        ] {
            let refused = admin.call(method, path, body).await.unwrap_err();
            assert_eq!(refused.code(), Code::IssuerUnavailable, "{backend} {method} {path}");
        }
        let user = issuer.client();
        let refused = user
            .login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::IssuerUnavailable, "{backend}");
        set_audit_broken(&issuer, false).await;

        let domains = admin.ok("GET", "/v1/admin/domains", Value::Null).await;
        assert!(!domains.to_string().contains("unaudited"), "{backend}: {domains}");
        let grants = admin.ok("GET", "/v1/admin/grants", Value::Null).await;
        assert!(grants.to_string().contains("member"), "{backend}: {grants}");
        let users = admin.ok("GET", "/v1/admin/users", Value::Null).await;
        let ayoung = users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["user"] == "ayoung@stoughton")
            .unwrap();
        assert_eq!(ayoung["enabled"], true, "{backend}");
        // The wrong password and the unaudited login are both still counted.
        let auth = issuer
            .state
            .store
            .conn()
            .await
            .unwrap()
            .user_auth(&keybound::issuer::UserName::parse("ayoung@stoughton").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(auth.failed_logins, 2, "{backend}");
        user.login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap();
    }
    cleanup(&all).await;
}

/// Key logins with a key that is not registered neither count towards nor
/// are refused by the lockout of the user's password; a locked user still
/// logs in with a registered key. Key logins for names that are not users
/// add no row to the database: 300 random names leave the audit log and
/// the lockout counters as they were, and only bump a per-minute total.
#[tokio::test]
async fn key_logins_do_not_lock_passwords_and_unknown_names_stay_bounded() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        let registered = SigningKey::generate(Algorithm::EdDSA).unwrap();
        admin
            .ok(
                "POST",
                "/v1/admin/users/ayoung@stoughton/keys",
                json!({"key": b64url_encode(&registered.public_key().to_cose_key(None))}),
            )
            .await;
        for _ in 0..12 {
            let stranger = SigningKey::generate(Algorithm::EdDSA).unwrap();
            let public = b64url_encode(&stranger.public_key().to_cose_key(None));
            let (_, code, _) = raw_login(
                &issuer,
                &stranger,
                &stranger,
                json!({"user": "ayoung@stoughton", "key": public}),
                None,
            )
            .await;
            assert_eq!(code.as_deref(), Some("issuer.invalid_credentials"), "{backend}");
        }
        let user = issuer.client();
        user.login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap_or_else(|e| panic!("{backend}: unregistered keys locked the password: {e}"));

        // Locked by password guesses, the user still logs in with its key.
        for _ in 0..5 {
            let guesser = issuer.client();
            let _ = guesser
                .login_password("ayoung@stoughton", "wrong password!", None)
                .await;
        }
        let locked = issuer
            .client()
            .login_password("ayoung@stoughton", "correct horse battery", None)
            .await;
        assert_eq!(locked.unwrap_err().code(), Code::IssuerLocked, "{backend}");
        let public = b64url_encode(&registered.public_key().to_cose_key(None));
        let (status, code, _) = raw_login(
            &issuer,
            &registered,
            &registered,
            json!({"user": "ayoung@stoughton", "key": public}),
            None,
        )
        .await;
        assert_eq!((status, code), (200, None), "{backend}");

        let count = |table: &'static str| {
            let url = issuer.state.config.database_url();
            async move {
                let pool = sqlx::AnyPool::connect(&url).await.unwrap();
                let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                n
            }
        };
        let before = (count("audit_log").await, count("unknown_logins").await);
        let stranger = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let public = b64url_encode(&stranger.public_key().to_cose_key(None));
        for i in 0..300 {
            let (_, code, _) = raw_login(
                &issuer,
                &stranger,
                &stranger,
                json!({"user": format!("random{i}{}@stoughton", rand_suffix()), "key": public}),
                None,
            )
            .await;
            assert_eq!(code.as_deref(), Some("issuer.invalid_credentials"));
        }
        assert_eq!(
            (count("audit_log").await, count("unknown_logins").await),
            before,
            "{backend}"
        );
        assert!(
            count("unknown_login_totals").await <= 2,
            "{backend}: one row per minute and outcome"
        );
    }
    cleanup(&all).await;
}

/// Audit entries older than the retention horizon are pruned (the hourly
/// job runs `prune_old_records`); newer ones stay. The horizon's range is
/// checked at start-up.
#[tokio::test]
async fn audit_records_older_than_the_retention_are_pruned() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let issuer = start(backend, db, clock.clone(), |c| c.audit_retention = 86_400).await;
        let admin_now = || async {
            let client = Client::new(&issuer.url, SigningKey::generate(Algorithm::EdDSA).unwrap())
                .unwrap()
                .with_clock(clock.clone());
            client
                .login_password("admin@default", ADMIN_PASSWORD, None)
                .await
                .unwrap();
            Admin {
                client,
                url: issuer.url.clone(),
                scope: Scope::new(format!("{}/admin", issuer.url))
                    .project("admin")
                    .domain("default"),
            }
        };
        let admin = admin_now().await;
        admin.ok("POST", "/v1/admin/domains", json!({"name": "old"})).await;
        assert_eq!(issuer.state.prune_old_records().await.unwrap(), (0, 0), "{backend}");
        clock.advance(86_400 + 10);
        assert_eq!(
            issuer.state.prune_old_records().await.unwrap().0,
            4,
            "{backend}: bootstrap, login, the admin token's mint, domain"
        );
        let admin = admin_now().await;
        admin.ok("POST", "/v1/admin/domains", json!({"name": "new"})).await;
        assert_eq!(issuer.state.prune_old_records().await.unwrap(), (0, 0));
        let audit = admin.ok("GET", "/v1/admin/audit", Value::Null).await;
        let targets: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["target"].as_str().unwrap())
            .collect();
        let admin_audience = format!("{}/admin", issuer.url);
        assert_eq!(targets, ["new", admin_audience.as_str(), "admin@default"], "{backend}");
    }
    cleanup(&all).await;
    for retention in [3600, 3651 * 86_400] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = IssuerConfig::new(dir.path());
        config.audit_retention = retention;
        let refused = IssuerState::open(config, Arc::new(SystemClock)).await.unwrap_err();
        assert_eq!(refused.code(), Code::IssuerConfig);
    }
}

/// Sends a login with full control over body, proof and headers.
async fn raw_login(
    issuer: &Issuer,
    key: &SigningKey,
    prover: &SigningKey,
    body: Value,
    replay: Option<String>,
) -> (u16, Option<String>, String) {
    let body = serde_json::to_vec(&body).unwrap();
    let url = format!("{}/v1/login", issuer.url);
    let proof = replay.unwrap_or_else(|| {
        ProofBuilder::new("POST", &url, b"", &body, SystemClock.now())
            .unwrap()
            .sign(prover)
            .unwrap()
            .to_base64url()
    });
    let _ = key;
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("kb-proof", &proof)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let problem: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, problem["code"].as_str().map(str::to_owned), proof)
}

/// A login from 127.0.0.1 naming `forwarded_for` in `X-Forwarded-For`:
/// status, problem code and `Retry-After`. A real proof-carrying password
/// login of the admin, so that a request the limit lets through succeeds.
async fn login_from(
    issuer: &Issuer,
    forwarded_for: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Option<String>, Option<u64>) {
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let public = b64url_encode(&key.public_key().to_cose_key(None));
    let login =
        serde_json::to_vec(&json!({"user": "admin@default", "password": ADMIN_PASSWORD, "key": public})).unwrap();
    let body = body.map_or(login, <[u8]>::to_vec);
    let url = format!("{}/v1/login", issuer.url);
    let proof = ProofBuilder::new("POST", &url, b"", &body, SystemClock.now())
        .unwrap()
        .sign(&key)
        .unwrap()
        .to_base64url();
    let mut request = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("kb-proof", proof)
        .body(body);
    if let Some(addr) = forwarded_for {
        request = request.header("x-forwarded-for", addr);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().expect("Retry-After is whole seconds"));
    let problem: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, problem["code"].as_str().map(str::to_owned), retry_after)
}

#[tokio::test]
async fn logins_are_rate_limited_per_source_before_any_other_check() {
    let issuer = start("sqlite", None, Arc::new(SystemClock), |c| {
        c.login_rate_per_minute = 2;
        c.login_burst = 3;
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let first = Some("198.51.100.1");
    for _ in 0..3 {
        assert_eq!(login_from(&issuer, first, None).await, (200, None, None));
    }
    let (status, code, retry_after) = login_from(&issuer, first, None).await;
    assert_eq!((status, code.as_deref()), (429, Some("issuer.login_rate_limited")));
    // One login every 30 s: the next is allowed in at most 30 s.
    let retry_after = retry_after.expect("a Retry-After header");
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    // Refused before the body is even parsed, let alone a password hashed.
    let (status, code, _) = login_from(&issuer, first, Some(b"not json")).await;
    assert_eq!((status, code.as_deref()), (429, Some("issuer.login_rate_limited")));
    // The proxy appends the address it saw: a client cannot pick its own.
    let spoofed = Some("203.0.113.9, 198.51.100.1");
    assert_eq!(login_from(&issuer, spoofed, None).await.0, 429);

    // Another source, and the proxy itself, keep their own budgets.
    assert_eq!(login_from(&issuer, Some("198.51.100.2"), None).await, (200, None, None));
    assert_eq!(login_from(&issuer, Some("2001:db8::1"), None).await, (200, None, None));
    let (status, code, _) = login_from(&issuer, first, Some(b"not json")).await;
    assert_eq!((status, code.as_deref()), (429, Some("issuer.login_rate_limited")));
    let (status, code, _) = login_from(&issuer, None, Some(b"not json")).await;
    assert_eq!((status, code.as_deref()), (400, Some("issuer.bad_request")));
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_source_with_x_forwarded_for() {
    // No trusted proxies (the default): 127.0.0.1 is the source, whatever it forwards.
    let issuer = start("sqlite", None, Arc::new(SystemClock), |c| {
        c.login_rate_per_minute = 1;
        c.login_burst = 2;
    })
    .await;
    assert_eq!(login_from(&issuer, Some("198.51.100.1"), None).await.0, 200);
    assert_eq!(login_from(&issuer, Some("198.51.100.2"), None).await.0, 200);
    let (status, code, retry_after) = login_from(&issuer, Some("198.51.100.3"), None).await;
    assert_eq!((status, code.as_deref()), (429, Some("issuer.login_rate_limited")));
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)));
}

#[tokio::test]
async fn login_rate_settings_out_of_range_are_refused() {
    for (rate, burst) in [(0, 10), (60, 0), (1_000_001, 10), (60, 100_001)] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = IssuerConfig::new(dir.path());
        config.login_rate_per_minute = rate;
        config.login_burst = burst;
        let e = IssuerState::open(config, Arc::new(SystemClock)).await.unwrap_err();
        assert_eq!(e.code(), Code::IssuerConfig, "{rate}/{burst}");
    }
}

#[tokio::test]
async fn login_refuses_bad_credentials_keys_and_proofs() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let public = b64url_encode(&key.public_key().to_cose_key(None));
        let login = |user: &str, password: &str| json!({"user": user, "password": password, "key": public});

        let (status, code, proof) = raw_login(
            &issuer,
            &key,
            &key,
            login("ayoung@stoughton", "correct horse battery"),
            None,
        )
        .await;
        assert_eq!((status, code), (200, None), "{backend}");
        // The same proof (and body) again: a replayed login.
        let (status, code, _) = raw_login(
            &issuer,
            &key,
            &key,
            login("ayoung@stoughton", "correct horse battery"),
            Some(proof),
        )
        .await;
        assert_eq!((status, code.as_deref()), (401, Some("replay.detected")));
        // A proof by a key other than the one to bind.
        let other = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let (_, code, _) = raw_login(
            &issuer,
            &key,
            &other,
            login("ayoung@stoughton", "correct horse battery"),
            None,
        )
        .await;
        assert_eq!(code.as_deref(), Some("proof.bad_signature"));
        // Wrong password and unknown user look the same.
        let (status, code, _) =
            raw_login(&issuer, &key, &key, login("ayoung@stoughton", "wrong password!"), None).await;
        assert_eq!((status, code.as_deref()), (401, Some("issuer.invalid_credentials")));
        let (_, code, _) = raw_login(&issuer, &key, &key, login("nobody@stoughton", "wrong password!"), None).await;
        assert_eq!(code.as_deref(), Some("issuer.invalid_credentials"));
        // A weak key to bind.
        let weak = {
            let mut x = [0u8; 32];
            x[0] = 1;
            keybound::encoding::hex_decode(
                &format!("a3010120062158 20{}", keybound::encoding::hex_encode(&x)).replace(' ', ""),
            )
            .unwrap()
        };
        let (_, code, _) = raw_login(
            &issuer,
            &key,
            &key,
            json!({"user": "ayoung@stoughton", "password": "x", "key": b64url_encode(&weak)}),
            None,
        )
        .await;
        assert_eq!(code.as_deref(), Some("issuer.invalid_key"));
        // Over-long sessions, malformed bodies.
        let (_, code, _) = raw_login(
            &issuer,
            &key,
            &key,
            json!({"user": "ayoung@stoughton", "password": "correct horse battery", "key": public, "lifetime": 86_400}),
            None,
        )
        .await;
        assert_eq!(code.as_deref(), Some("issuer.lifetime_exceeded"));
        let (_, code, _) = raw_login(
            &issuer,
            &key,
            &key,
            json!({"user": "ayoung@stoughton", "key": public, "extra": 1}),
            None,
        )
        .await;
        assert_eq!(code.as_deref(), Some("issuer.bad_request"));
        let (_, code, _) = raw_login(
            &issuer,
            &key,
            &key,
            json!({"user": "ayoung'; DROP TABLE users;--@stoughton", "password": "x", "key": public}),
            None,
        )
        .await;
        assert_eq!(code.as_deref(), Some("issuer.invalid_name"));
        // No proof at all; an oversized body.
        let response = reqwest::Client::new()
            .post(format!("{}/v1/login", issuer.url))
            .header("content-type", "application/json")
            .body(login("ayoung@stoughton", "correct horse battery").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(error_from_response(response).await.code(), Code::ProofMissing);
        // (With a proof field: H1 comes before the body.)
        let response = reqwest::Client::new()
            .post(format!("{}/v1/login", issuer.url))
            .header("kb-proof", "AA")
            .body(vec![b'{'; 100_000])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        assert_eq!(error_from_response(response).await.code(), Code::HttpBodyTooLarge);
        // Lockout: after five failures even the right password is refused for a while.
        for _ in 0..5 {
            let (_, code, _) = raw_login(&issuer, &key, &key, login("ayoung@stoughton", "wrong password!"), None).await;
            assert!(matches!(
                code.as_deref(),
                Some("issuer.invalid_credentials") | Some("issuer.locked")
            ));
        }
        let (status, code, _) = raw_login(
            &issuer,
            &key,
            &key,
            login("ayoung@stoughton", "correct horse battery"),
            None,
        )
        .await;
        assert_eq!((status, code.as_deref()), (429, Some("issuer.locked")), "{backend}");
    }
    cleanup(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_unknown_names_and_revoked_admins() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        #[cfg(unix)]
        if backend == "sqlite" {
            // Password hashes and the audit log are for the owner only.
            use std::os::unix::fs::PermissionsExt;
            for file in ["keybound.db", "keybound.db-wal"] {
                let path = issuer._dir.path().join(file);
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o077, 0, "{file} is {:o}", mode & 0o777);
            }
        }
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let public = b64url_encode(&key.public_key().to_cose_key(None));
        let login = |user: &str, password: &str| json!({"user": user, "password": password, "key": public});

        // 20 wrong passwords at once: exactly five are checked (the limit),
        // the rest are refused as locked without a password check.
        let url = format!("{}/v1/login", issuer.url);
        let body = serde_json::to_vec(&login("ayoung@stoughton", "wrong password!")).unwrap();
        let guesses: Vec<_> = (0..20)
            .map(|_| {
                let proof = ProofBuilder::new("POST", &url, b"", &body, SystemClock.now())
                    .unwrap()
                    .sign(&key)
                    .unwrap()
                    .to_base64url();
                let (url, body) = (url.clone(), body.clone());
                tokio::spawn(async move {
                    let response = reqwest::Client::new()
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("kb-proof", proof)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    error_from_response(response).await.code().as_str().to_owned()
                })
            })
            .collect();
        let mut codes = Vec::new();
        for guess in guesses {
            codes.push(Some(guess.await.unwrap()));
        }
        let checked = codes
            .iter()
            .filter(|c| c.as_deref() == Some("issuer.invalid_credentials"))
            .count();
        let locked = codes.iter().filter(|c| c.as_deref() == Some("issuer.locked")).count();
        assert_eq!((checked, locked), (5, 15), "{backend}: {codes:?}");

        // A name that is not a user locks the same way, so the lockout does
        // not tell which names exist.
        for attempt in 0..6 {
            let (_, code, _) = raw_login(&issuer, &key, &key, login("nobody@stoughton", "wrong password!"), None).await;
            let expected = if attempt < 5 {
                "issuer.invalid_credentials"
            } else {
                "issuer.locked"
            };
            assert_eq!(code.as_deref(), Some(expected), "{backend}: attempt {attempt}");
        }

        // Failed logins of users are audited under the user's name; those
        // of names that are not users are totalled per minute instead.
        let audit = admin.ok("GET", "/v1/admin/audit?limit=100", Value::Null).await;
        let entries = audit.as_array().unwrap();
        assert!(
            entries
                .iter()
                .any(|e| e["action"] == "login" && e["actor"] == "ayoung@stoughton" && e["outcome"] == "issuer.locked"),
            "{backend}: {audit}"
        );
        assert!(!audit.to_string().contains("nobody"), "{backend}: {audit}");
        let totals = issuer
            .state
            .store
            .conn()
            .await
            .unwrap()
            .unknown_login_totals(0)
            .await
            .unwrap();
        let sum = |outcome: &str| -> i64 { totals.iter().filter(|t| t.outcome == outcome).map(|t| t.attempts).sum() };
        assert_eq!(
            (sum("issuer.invalid_credentials"), sum("issuer.locked")),
            (5, 1),
            "{backend}: {totals:?}"
        );

        // A second admin; disabled, its admin token stops working at once.
        admin
            .ok(
                "POST",
                "/v1/admin/users",
                json!({"user": "root2@default", "password": "second admin pw"}),
            )
            .await;
        admin
            .ok(
                "POST",
                "/v1/admin/grants",
                json!({"user": "root2@default", "project": "admin@default", "role": "admin"}),
            )
            .await;
        let second = Admin {
            client: issuer.client(),
            url: issuer.url.clone(),
            scope: admin.scope.clone(),
        };
        second
            .client
            .login_password("root2@default", "second admin pw", None)
            .await
            .unwrap();
        second.ok("GET", "/v1/admin/domains", Value::Null).await;
        admin
            .ok("POST", "/v1/admin/users/root2@default/disable", json!({}))
            .await;
        let refused = second.call("GET", "/v1/admin/domains", Value::Null).await.unwrap_err();
        assert_eq!(refused.code(), Code::IssuerForbidden, "{backend}: {refused}");
        let refused = second
            .call("POST", "/v1/admin/domains", json!({"name": "sneaky"}))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::IssuerForbidden, "{backend}");
    }
    cleanup(&all).await;
}

#[tokio::test]
async fn key_login_and_mint_refusals() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        admin
            .ok(
                "POST",
                "/v1/admin/users",
                json!({"user": "nova-compute@stoughton", "kind": "service"}),
            )
            .await;
        let service_user = issuer.client();
        assert_eq!(
            service_user
                .login_key("nova-compute@stoughton", None)
                .await
                .unwrap_err()
                .code(),
            Code::IssuerInvalidCredentials
        );
        let key = b64url_encode(&service_user.key().public_key().to_cose_key(None));
        admin
            .ok(
                "POST",
                "/v1/admin/users/nova-compute@stoughton/keys",
                json!({"key": key}),
            )
            .await;
        service_user
            .login_key("nova-compute@stoughton", Some(600))
            .await
            .unwrap();

        let user = issuer.client();
        user.login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap();
        let code = |scope: Scope| {
            let user = &user;
            async move { user.service_token(&scope).await.err().map(|e| e.code()) }
        };
        assert_eq!(
            code(Scope::new("https://glance.example").project("turing")).await,
            Some(Code::IssuerUnknownAudience),
            "{backend}"
        );
        assert_eq!(
            code(Scope::new("https://nova.example").project("turing").roles(["admin"])).await,
            Some(Code::IssuerRoleNotHeld)
        );
        assert_eq!(
            code(Scope::new("https://nova.example").project("nope")).await,
            Some(Code::IssuerUnknownProject)
        );
        assert_eq!(
            code(Scope::new("https://nova.example").project("turing").lifetime(301)).await,
            Some(Code::IssuerLifetimeExceeded)
        );
        assert_eq!(code(Scope::new(&issuer.url)).await, Some(Code::IssuerUnknownAudience));
        assert_eq!(
            code(Scope::new(format!("{}/admin", issuer.url)).project("turing")).await,
            Some(Code::IssuerForbidden)
        );
        assert_eq!(
            code(
                Scope::new(format!("{}/admin", issuer.url))
                    .project("admin")
                    .domain("default")
            )
            .await,
            Some(Code::IssuerRoleNotHeld)
        );
        assert_eq!(
            code(Scope::new("https://nova.example").project("turing").lifetime(120)).await,
            None
        );

        // A service token is not a session token.
        let token = user
            .service_token(&Scope::new("https://nova.example").project("turing"))
            .await
            .unwrap();
        let thief = Client::new(&issuer.url, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
        thief.set_session(keybound::client::Session {
            token: token.clone(),
            expires_at: u64::MAX,
            subject: "x".into(),
        });
        assert_eq!(
            thief
                .service_token(&Scope::new("https://nova.example"))
                .await
                .unwrap_err()
                .code(),
            Code::CwtAudMismatch
        );
        // The real session presented by someone without the key.
        let session = user.session().unwrap();
        thief.set_session(session);
        assert_eq!(
            thief
                .service_token(&Scope::new("https://nova.example"))
                .await
                .unwrap_err()
                .code(),
            Code::ProofBadSignature
        );
    }
    cleanup(&all).await;
}

#[tokio::test]
async fn admin_api_is_keybound_protected_and_names_are_strict() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        // Without a token; with a plain member's token.
        let response = reqwest::Client::new()
            .get(format!("{}/v1/admin/users", issuer.url))
            .send()
            .await
            .unwrap();
        assert_eq!(error_from_response(response).await.code(), Code::HttpTokenMissing);
        admin.ok("POST", "/v1/admin/roles", json!({"name": "admin-ish"})).await;
        admin
            .ok("POST", "/v1/admin/services", json!({"audience": "https://ops.example"}))
            .await;
        // SQL metacharacters in every name field: refused, nothing written.
        let before = admin.ok("GET", "/v1/admin/domains", json!({})).await;
        for (path, body) in [
            ("/v1/admin/domains", json!({"name": "x'; DROP TABLE users;--"})),
            ("/v1/admin/projects", json!({"name": "p\"--", "domain": "stoughton"})),
            (
                "/v1/admin/projects",
                json!({"name": "p", "domain": "stoughton' OR '1'='1"}),
            ),
            (
                "/v1/admin/users",
                json!({"user": "robert'); DROP TABLE students;--@stoughton", "password": "long enough"}),
            ),
            ("/v1/admin/roles", json!({"name": "r;DELETE FROM roles"})),
            (
                "/v1/admin/grants",
                json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "member' --"}),
            ),
            (
                "/v1/admin/services",
                json!({"audience": "https://x.example/ withspace"}),
            ),
        ] {
            let err = admin.call("POST", path, body).await.unwrap_err();
            assert_eq!(err.code(), Code::IssuerInvalidName, "{backend} {path}");
        }
        assert_eq!(admin.ok("GET", "/v1/admin/domains", json!({})).await, before);
        // The admin audience is not a service; a member sent twice is refused.
        let admin_aud = format!("{}/admin", issuer.url);
        assert_eq!(
            admin
                .call("POST", "/v1/admin/services", json!({"audience": admin_aud}))
                .await
                .unwrap_err()
                .code(),
            Code::IssuerBadRequest
        );
        let twice = admin
            .client
            .post(&format!("{}/v1/admin/roles", issuer.url), &admin.scope)
            .header("content-type", "application/json")
            .unwrap()
            .body(br#"{"name":"a","name":"b"}"#.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_from_response(twice).await.code(),
            Code::IssuerBadRequest,
            "{backend}"
        );
        // A quote inside a valid audience is stored literally, not interpreted.
        let odd = "https://odd.example/a'b;--";
        admin.ok("POST", "/v1/admin/services", json!({"audience": odd})).await;
        let services = admin.ok("GET", "/v1/admin/services", json!({})).await;
        assert!(services.as_array().unwrap().iter().any(|s| s == odd), "{services}");
        // Conflicts and missing objects.
        assert_eq!(
            admin
                .call("POST", "/v1/admin/domains", json!({"name": "stoughton"}))
                .await
                .unwrap_err()
                .code(),
            Code::IssuerConflict
        );
        assert_eq!(
            admin
                .call("POST", "/v1/admin/projects", json!({"name": "x", "domain": "nowhere"}))
                .await
                .unwrap_err()
                .code(),
            Code::IssuerNotFound
        );
        assert_eq!(
            admin
                .call(
                    "POST",
                    "/v1/admin/grants",
                    json!({"user": "ghost@stoughton", "project": "turing@stoughton", "role": "member"})
                )
                .await
                .unwrap_err()
                .code(),
            Code::IssuerNotFound
        );
        // A user with role admin-ish on turing is not an issuer admin.
        admin
            .ok(
                "POST",
                "/v1/admin/grants",
                json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "admin-ish"}),
            )
            .await;
        let user = issuer.client();
        user.login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap();
        let scope = Scope::new(format!("{}/admin", issuer.url))
            .project("admin")
            .domain("default");
        assert_eq!(
            user.service_token(&scope).await.unwrap_err().code(),
            Code::IssuerRoleNotHeld,
            "{backend}"
        );
        // A bootstrap cannot run twice.
        let mut config = issuer.state.config.clone();
        config.listen = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            keybound::issuer::bootstrap(&config, "another password")
                .await
                .unwrap_err()
                .code(),
            Code::IssuerConflict
        );
    }
    cleanup(&all).await;
}

#[tokio::test]
async fn health_metrics_and_key_publication() {
    let issuer = start("sqlite", None, Arc::new(SystemClock), |_| {}).await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{}/healthz", issuer.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/readyz", issuer.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let admin = issuer.admin().await;
    admin.ok("GET", "/v1/admin/users", json!({})).await;
    let metrics = http
        .get(format!("{}/metrics", issuer.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("keybound_logins_total{outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("keybound_tokens_minted_total 1"), "{metrics}");
    assert!(
        metrics.contains("keybound_request_duration_seconds_count{route=\"login\"} 1"),
        "{metrics}"
    );
    let keys = http
        .get(format!("{}/.well-known/keybound/keys", issuer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(keys.headers()["content-type"], "application/cbor");
    assert_eq!(keys.headers()["cache-control"], "public, max-age=900");
    let set = keybound::key::KeySet::from_cbor(&keys.bytes().await.unwrap()).unwrap();
    assert_eq!(set.len(), 3, "next, current and previous key");
    let meta: Value = serde_json::from_slice(
        &http
            .get(format!("{}/.well-known/keybound/issuer", issuer.url))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["issuer"], issuer.url);
    let _ = issuer.backend;
}

#[tokio::test]
async fn rotation_mints_and_verifies_across_rotations_without_a_failure() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let start_time = 1_800_000_010; // 10 s into a 600 s epoch
        let clock = Arc::new(ManualClock::new(start_time));
        let issuer = start(backend, db, clock.clone(), |c| c.rotation_period = 600).await;
        let admin = Admin {
            client: Client::new(&issuer.url, SigningKey::generate(Algorithm::EdDSA).unwrap())
                .unwrap()
                .with_clock(clock.clone()),
            url: issuer.url.clone(),
            scope: Scope::new(format!("{}/admin", issuer.url))
                .project("admin")
                .domain("default"),
        };
        admin
            .client
            .login_password("admin@default", ADMIN_PASSWORD, Some(43_200))
            .await
            .unwrap();
        admin.setup_world("https://nova.example").await;
        // The verifier's key set changes only when the test refreshes it: no
        // background refresh, no refetch for an unknown kid. So a token must
        // verify with a set fetched *before* its key began to sign (the next
        // key is published ahead), and an older token with a set fetched
        // *after* a rotation (the previous key stays published).
        let keys = HttpKeys::start(
            &format!("{}/.well-known/keybound/keys", issuer.url),
            HttpKeysOptions {
                min_refresh: Duration::from_secs(3600),
                max_refresh: Duration::from_secs(3600),
                unknown_kid_interval: Duration::from_secs(3600),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let verifier = Verifier::builder("https://nova.example", TrustedIssuer::new(&issuer.url, keys.clone()))
            .clock(clock.clone())
            .build()
            .unwrap();
        let user = Client::new(&issuer.url, SigningKey::generate(Algorithm::EdDSA).unwrap())
            .unwrap()
            .with_clock(clock.clone());
        user.login_password("ayoung@stoughton", "correct horse battery", Some(43_200))
            .await
            .unwrap();
        let request = |token: &keybound::token::Token| {
            let uri = "https://nova.example/v2/servers";
            let proof = ProofBuilder::new("GET", uri, token.as_bytes(), b"", clock.now())
                .unwrap()
                .sign(user.key())
                .unwrap();
            let verifier = &verifier;
            let token = token.clone();
            async move {
                verifier
                    .verify_request_async(
                        token.as_bytes(),
                        proof.as_bytes(),
                        &keybound::proof::RequestInfo::new("GET", uri, b""),
                    )
                    .await
                    .map(|_| ())
            }
        };
        let mut kids = std::collections::BTreeSet::new();
        let (mut ok, mut failures, mut refreshes) = (0, Vec::new(), 0);
        let mut previous: Option<keybound::token::Token> = None;
        // 4 rotations: every 50 s of issuer time, a new token verified with
        // the set of 50 s before, and the previous token with today's set.
        for step in 0..50u64 {
            keys.refresh().await.unwrap();
            refreshes += 1;
            clock.advance(50);
            let scope = Scope::new("https://nova.example")
                .project("turing")
                .lifetime(240 + step);
            let token = match user.service_token(&scope).await {
                Ok(t) => t,
                Err(e) => {
                    failures.push(format!("step {step}: mint {e}"));
                    continue;
                }
            };
            kids.insert(keybound::danger::insecure_decode_token(token.as_bytes()).unwrap().kid);
            match request(&token).await {
                Ok(()) => ok += 1,
                Err(e) => failures.push(format!("step {step}: new token, set fetched before: {e}")),
            }
            keys.refresh().await.unwrap();
            refreshes += 1;
            if let Some(old) = previous.replace(token) {
                match request(&old).await {
                    Ok(()) => ok += 1,
                    Err(e) => failures.push(format!("step {step}: previous token, set fetched after: {e}")),
                }
            }
        }
        assert!(failures.is_empty(), "{backend}: {failures:?}");
        assert_eq!(ok, 99);
        assert!(kids.len() >= 4, "{backend}: signed with {} keys", kids.len());
        assert_eq!(
            keys.stats().successes,
            1 + refreshes,
            "{backend}: no fetch beyond the test's own (no unknown-kid refetch)"
        );
    }
    cleanup(&all).await;
}

/// Under CI the PostgreSQL and Redis parts must run, never skip.
#[test]
fn ci_runs_the_database_and_redis_tests() {
    if std::env::var_os("CI").is_none() {
        return;
    }
    for var in ["KEYBOUND_TEST_POSTGRES_URL", "KEYBOUND_TEST_REDIS_URL"] {
        assert!(std::env::var_os(var).is_some(), "CI must set {var} (see .ci/run)");
    }
}

/// A service instance: the verifier of `audience` for `instance`, behind
/// the HTTP layer on a loopback port of its own; answers with the verified
/// instance.
async fn service_instance(issuer: &Issuer, audience: &str, instance: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let keys = HttpKeys::start(
        &format!("{}/.well-known/keybound/keys", issuer.url),
        HttpKeysOptions::default(),
    )
    .await
    .unwrap();
    let verifier = Verifier::builder(audience, TrustedIssuer::new(&issuer.url, keys))
        .instance(instance)
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/v2/servers",
            axum::routing::get(|r: VerifiedRequest| async move { format!("{:?}", r.instance()) }),
        )
        .layer(KeyboundLayer::new(Arc::new(verifier), &url).unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// `POST /v1/tokens` with `body`, signed with the session of `user`:
/// status and the JSON answer (the token, or the problem).
async fn raw_mint(issuer: &Issuer, user: &Client, body: Value) -> (u16, Value) {
    let session = user.session().unwrap();
    let body = serde_json::to_vec(&body).unwrap();
    let url = format!("{}/v1/tokens", issuer.url);
    let proof = ProofBuilder::new("POST", &url, session.token.as_bytes(), &body, SystemClock.now())
        .unwrap()
        .sign(user.key())
        .unwrap();
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("authorization", format!("KB {}", session.token.to_base64url()))
        .header("kb-proof", proof.to_base64url())
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

#[tokio::test]
async fn a_token_minted_for_an_instance_is_accepted_there_and_refused_at_another_instance() {
    const AUDIENCE: &str = "https://nova.example";
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin().await;
        admin.setup_world(AUDIENCE).await;
        // Two instances of one service (one audience), each its own verifier.
        let at_a = service_instance(&issuer, AUDIENCE, "vm-a@host-1").await;
        let at_b = service_instance(&issuer, AUDIENCE, "vm-b@host-2").await;
        let user = issuer.client();
        user.login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap();

        // The issuer puts the instance in the token and echoes it.
        let (status, answer) = raw_mint(
            &issuer,
            &user,
            json!({"audience": AUDIENCE, "project": "turing", "instance": "vm-a@host-1"}),
        )
        .await;
        assert_eq!(status, 200, "{backend}: {answer}");
        assert_eq!(answer["instance"], "vm-a@host-1");
        let token = keybound::token::Token::from_bytes(
            keybound::encoding::b64url_decode(answer["token"].as_str().unwrap()).unwrap(),
        );
        let claims = keybound::danger::insecure_decode_token(token.as_bytes())
            .unwrap()
            .claims;
        assert_eq!(claims.instance.as_deref(), Some("vm-a@host-1"));
        // Without the member: null, and a token without the claim.
        let (status, answer) = raw_mint(&issuer, &user, json!({"audience": AUDIENCE, "project": "turing"})).await;
        assert_eq!(status, 200);
        assert_eq!(answer["instance"], Value::Null);
        // A value no token could carry is refused while the body is parsed.
        for bad in [json!(""), json!("vm a"), json!("i".repeat(256)), json!(7)] {
            let (status, problem) = raw_mint(&issuer, &user, json!({"audience": AUDIENCE, "instance": bad})).await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (400, Some("issuer.bad_request")),
                "{bad}"
            );
            if bad.is_string() {
                let detail = problem["detail"].as_str().unwrap_or_default();
                assert!(detail.contains("`instance` (an instance id is"), "{detail}");
            }
        }

        // The client asks for the instance; instance A accepts the token.
        let for_a = Scope::new(AUDIENCE).project("turing").instance("vm-a@host-1");
        let response = user.get(&format!("{at_a}/v2/servers"), &for_a).send().await.unwrap();
        assert_eq!(response.status(), 200, "{backend}");
        assert_eq!(response.text().await.unwrap(), "Some(\"vm-a@host-1\")");
        // Instance B refuses the very same token.
        let response = user.get(&format!("{at_b}/v2/servers"), &for_a).send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            error_from_response(response).await.code(),
            Code::CwtInstance,
            "{backend}"
        );
        // An unbound token is good at both.
        let unbound = Scope::new(AUDIENCE).project("turing");
        for url in [&at_a, &at_b] {
            let response = user.get(&format!("{url}/v2/servers"), &unbound).send().await.unwrap();
            assert_eq!(response.text().await.unwrap(), "None");
        }
    }
    cleanup(&all).await;
}

/// The code of a refused admin call.
async fn refused(admin: &Admin, method: &str, path: &str, body: Value) -> Code {
    admin
        .call(method, path, body)
        .await
        .expect_err(&format!("{method} {path} should be refused"))
        .code()
}

/// A user client logged in with its password.
async fn logged_in(issuer: &Issuer, user: &str) -> Client {
    let client = issuer.client();
    client
        .login_password(user, "correct horse battery", None)
        .await
        .unwrap();
    client
}

/// The mint for `audience` on turing@stoughton: status and problem code
/// (`None` for a token).
async fn mint_code(issuer: &Issuer, user: &Client, audience: &str) -> (u16, Option<String>) {
    let (status, answer) = raw_mint(
        issuer,
        user,
        json!({"audience": audience, "project": "turing", "domain": "stoughton"}),
    )
    .await;
    (status, answer["code"].as_str().map(str::to_owned))
}

/// Deletes over HTTP: what still refers to a domain or role refuses its
/// delete (`issuer.in_use`), the bootstrap's objects are protected, a user
/// and a project take what refers to them along; a deleted user's session
/// mints nothing, also after a user of the same name is created again;
/// every delete and refusal is audited.
#[tokio::test]
async fn deletes_refuse_or_take_along_and_stop_old_sessions() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        // A leeway of 1 s: the comparisons with a creation or removal time
        // allow for it (replicas' clocks), so the test waits it out.
        let issuer = start(backend, db, Arc::new(SystemClock), |c| c.leeway = 1).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        admin
            .ok(
                "POST",
                "/v1/admin/users",
                json!({"user": "heat@stoughton", "kind": "service"}),
            )
            .await;
        let ayoung = logged_in(&issuer, "ayoung@stoughton").await;
        assert_eq!(mint_code(&issuer, &ayoung, "https://nova.example").await, (200, None));
        let delegated = ayoung
            .create_trust(&keybound::client::NewTrust {
                trustee: "heat@stoughton".into(),
                project: Some("turing".into()),
                roles: vec!["member".into()],
                ..Default::default()
            })
            .await
            .unwrap();

        for (path, code) in [
            ("/v1/admin/domains/stoughton", Code::IssuerInUse),
            ("/v1/admin/roles/member", Code::IssuerInUse),
            ("/v1/admin/domains/default", Code::IssuerProtected),
            ("/v1/admin/projects/admin@default", Code::IssuerProtected),
            ("/v1/admin/users/admin@default", Code::IssuerProtected),
            ("/v1/admin/roles/admin", Code::IssuerProtected),
            ("/v1/admin/users/ghost@stoughton", Code::IssuerNotFound),
            ("/v1/admin/domains/no%20such", Code::IssuerInvalidName),
        ] {
            assert_eq!(
                refused(&admin, "DELETE", path, json!({})).await,
                code,
                "{backend} {path}"
            );
        }
        let busy = admin
            .call("DELETE", "/v1/admin/domains/stoughton", json!({}))
            .await
            .unwrap_err();
        assert!(busy.message().contains("1 project and 2 users"), "{}", busy.message());

        // The user goes with its two grants and its trust.
        let gone = admin.ok("DELETE", "/v1/admin/users/ayoung@stoughton", json!({})).await;
        assert_eq!(
            gone,
            json!({"user": "ayoung@stoughton", "deleted": true, "grants": 2, "trusts": 1, "keys": 0}),
            "{backend}"
        );
        let trusts = admin.ok("GET", "/v1/admin/trusts", Value::Null).await;
        assert_eq!(trusts, json!([]), "{backend}: {delegated}");
        assert_eq!(
            mint_code(&issuer, &ayoung, "https://nova.example").await,
            (401, Some("issuer.invalid_credentials".into()))
        );
        // Created again, with a grant: the old session is still not its.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        admin
            .ok(
                "POST",
                "/v1/admin/users",
                json!({"user": "ayoung@stoughton", "password": "correct horse battery"}),
            )
            .await;
        admin
            .ok(
                "POST",
                "/v1/admin/grants",
                json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "member"}),
            )
            .await;
        assert_eq!(
            mint_code(&issuer, &ayoung, "https://nova.example").await,
            (401, Some("issuer.invalid_credentials".into())),
            "{backend}: a session of the user before"
        );
        let again = logged_in(&issuer, "ayoung@stoughton").await;
        assert_eq!(mint_code(&issuer, &again, "https://nova.example").await, (200, None));

        // The project goes with its grant; then the roles and the domain can go.
        let gone = admin
            .ok("DELETE", "/v1/admin/projects/turing@stoughton", json!({}))
            .await;
        assert_eq!(
            gone,
            json!({"project": "turing@stoughton", "deleted": true, "grants": 1, "remote_grants": 0, "trusts": 0})
        );
        assert_eq!(
            mint_code(&issuer, &again, "https://nova.example").await,
            (400, Some("issuer.unknown_project".into()))
        );
        for path in ["/v1/admin/roles/member", "/v1/admin/roles/reader"] {
            assert_eq!(admin.ok("DELETE", path, json!({})).await["deleted"], true);
        }
        assert_eq!(
            refused(&admin, "DELETE", "/v1/admin/roles/member", json!({})).await,
            Code::IssuerNotFound
        );
        for user in ["ayoung@stoughton", "heat@stoughton"] {
            admin.ok("DELETE", &format!("/v1/admin/users/{user}"), json!({})).await;
        }
        let gone = admin.ok("DELETE", "/v1/admin/domains/stoughton", json!({})).await;
        assert_eq!(gone, json!({"name": "stoughton", "deleted": true}));
        assert_eq!(
            admin.ok("GET", "/v1/admin/domains", Value::Null).await,
            json!([{"name": "default", "enabled": true}])
        );

        let audit = admin.ok("GET", "/v1/admin/audit?limit=1000", Value::Null).await;
        let had = |action: &str, target: &str, outcome: &str| {
            audit.as_array().unwrap().iter().any(|e| {
                e["action"] == action
                    && e["target"] == target
                    && e["outcome"] == outcome
                    && e["actor"] == "admin@default"
            })
        };
        for (action, target, outcome) in [
            ("user.delete", "ayoung@stoughton", "ok"),
            ("project.delete", "turing@stoughton", "ok"),
            ("role.delete", "member", "ok"),
            ("domain.delete", "stoughton", "ok"),
            ("domain.delete", "-", "issuer.in_use"),
            ("user.delete", "-", "issuer.protected"),
            ("role.delete", "-", "issuer.not_found"),
        ] {
            assert!(
                had(action, target, outcome),
                "{backend}: {action} {target} {outcome} not audited"
            );
        }
    }
    cleanup(&all).await;
}

/// Every create refuses what exists with one code, `issuer.conflict`,
/// changes nothing, and audits the refusal.
#[tokio::test]
async fn every_create_refuses_a_duplicate_with_issuer_conflict() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        let key = b64url_encode(
            &SigningKey::generate(Algorithm::EdDSA)
                .unwrap()
                .public_key()
                .to_cose_key(None),
        );
        admin
            .ok("POST", "/v1/admin/users/ayoung@stoughton/keys", json!({"key": key}))
            .await;
        for (path, body) in [
            ("/v1/admin/domains", json!({"name": "stoughton"})),
            ("/v1/admin/projects", json!({"name": "turing", "domain": "stoughton"})),
            (
                "/v1/admin/users",
                json!({"user": "ayoung@stoughton", "password": "another password"}),
            ),
            ("/v1/admin/roles", json!({"name": "member"})),
            ("/v1/admin/services", json!({"audience": "https://nova.example"})),
            (
                "/v1/admin/grants",
                json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "member"}),
            ),
            ("/v1/admin/users/ayoung@stoughton/keys", json!({"key": key})),
        ] {
            assert_eq!(
                refused(&admin, "POST", path, body).await,
                Code::IssuerConflict,
                "{backend} {path}"
            );
        }
        // The user's password is the first one: nothing was changed.
        logged_in(&issuer, "ayoung@stoughton").await;
        let audit = admin.ok("GET", "/v1/admin/audit?limit=1000", Value::Null).await;
        let conflicts = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"] == "issuer.conflict")
            .count();
        assert_eq!(conflicts, 7, "{backend}");
    }
    cleanup(&all).await;
}

/// A user's view: grants, keys, lockout; unlock ends a lockout without a
/// new password; unknown and malformed names are refused.
#[tokio::test]
async fn user_show_reports_grants_keys_and_lockout_and_unlock_ends_it() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let cose = b64url_encode(&key.public_key().to_cose_key(None));
        admin
            .ok("POST", "/v1/admin/users/ayoung@stoughton/keys", json!({"key": cose}))
            .await;
        for _ in 0..5 {
            let wrong = issuer
                .client()
                .login_password("ayoung@stoughton", "wrong password!", None)
                .await;
            assert!(wrong.is_err());
        }
        let shown = admin.ok("GET", "/v1/admin/users/ayoung@stoughton", Value::Null).await;
        assert_eq!(shown["user"], "ayoung@stoughton");
        assert_eq!(
            (&shown["kind"], &shown["enabled"], &shown["domain_enabled"]),
            (&json!("person"), &json!(true), &json!(true))
        );
        assert_eq!(
            shown["grants"],
            json!([{"project": "turing@stoughton", "role": "member"}, {"project": "turing@stoughton", "role": "reader"}])
        );
        assert_eq!(
            shown["keys"][0]["thumbprint"],
            key.public_key().thumbprint().to_string()
        );
        assert!(shown["keys"][0]["added_at"].as_i64().unwrap() >= shown["created_at"].as_i64().unwrap());
        assert_eq!(
            (&shown["lockout"]["failed_logins"], &shown["lockout"]["locked"]),
            (&json!(5), &json!(true)),
            "{backend}"
        );
        assert!(shown["lockout"]["locked_until"].as_i64().unwrap() > SystemClock.now() as i64);
        let locked = issuer
            .client()
            .login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap_err();
        assert_eq!(locked.code(), Code::IssuerLocked);
        let unlocked = admin
            .ok("POST", "/v1/admin/users/ayoung@stoughton/unlock", json!({}))
            .await;
        assert_eq!(
            unlocked,
            json!({"user": "ayoung@stoughton", "failed_logins": 0, "locked": false})
        );
        logged_in(&issuer, "ayoung@stoughton").await;
        let shown = admin.ok("GET", "/v1/admin/users/ayoung@stoughton", Value::Null).await;
        assert_eq!(
            shown["lockout"],
            json!({"failed_logins": 0, "locked": false, "locked_until": null})
        );
        let keys = admin
            .ok("GET", "/v1/admin/users/ayoung@stoughton/keys", Value::Null)
            .await;
        assert_eq!(keys, shown["keys"]);
        for (method, path, code) in [
            ("GET", "/v1/admin/users/ghost@stoughton", Code::IssuerNotFound),
            ("GET", "/v1/admin/users/ghost@stoughton/keys", Code::IssuerNotFound),
            ("POST", "/v1/admin/users/ghost@stoughton/unlock", Code::IssuerNotFound),
            ("GET", "/v1/admin/users/ayoung", Code::IssuerInvalidName),
        ] {
            assert_eq!(
                refused(&admin, method, path, json!({})).await,
                code,
                "{backend} {method} {path}"
            );
        }
        let audit = admin
            .ok(
                "GET",
                "/v1/admin/audit?action=user.unlock&target=ayoung@stoughton",
                Value::Null,
            )
            .await;
        assert_eq!(audit[0]["outcome"], "ok", "{backend}: {audit}");
    }
    cleanup(&all).await;
}

/// Removing a key: key login with it stops at once, every session bound to
/// it from before (a key login's, or a password login's that bound the
/// same key) mints nothing more (`issuer.key_removed`), an admin token
/// bound to it is refused, and sessions bound to other keys go on.
#[tokio::test]
async fn removing_a_key_stops_key_login_and_the_sessions_bound_to_it() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        // A leeway of 1 s: the comparisons with a creation or removal time
        // allow for it (replicas' clocks), so the test waits it out.
        let issuer = start(backend, db, Arc::new(SystemClock), |c| c.leeway = 1).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let private = key.to_cose_key(None);
        let same_key = || SigningKey::from_cose_key(&private).unwrap();
        let thumbprint = key.public_key().thumbprint().to_string();
        let cose = b64url_encode(&key.public_key().to_cose_key(None));
        admin
            .ok("POST", "/v1/admin/users/ayoung@stoughton/keys", json!({"key": cose}))
            .await;
        let keyed = Client::new(&issuer.url, same_key()).unwrap();
        keyed.login_key("ayoung@stoughton", None).await.unwrap();
        let by_password = Client::new(&issuer.url, same_key()).unwrap();
        by_password
            .login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap();
        let other = logged_in(&issuer, "ayoung@stoughton").await;
        for client in [&keyed, &by_password, &other] {
            assert_eq!(mint_code(&issuer, client, "https://nova.example").await, (200, None));
        }
        let path = format!("/v1/admin/users/ayoung@stoughton/keys/{thumbprint}");
        let removed = admin.ok("DELETE", &path, json!({})).await;
        assert_eq!(
            removed,
            json!({"user": "ayoung@stoughton", "thumbprint": thumbprint, "removed": true})
        );
        assert_eq!(refused(&admin, "DELETE", &path, json!({})).await, Code::IssuerNotFound);
        assert_eq!(
            refused(
                &admin,
                "DELETE",
                "/v1/admin/users/ayoung@stoughton/keys/short",
                json!({})
            )
            .await,
            Code::IssuerBadRequest
        );
        let login = Client::new(&issuer.url, same_key())
            .unwrap()
            .login_key("ayoung@stoughton", None)
            .await;
        assert_eq!(login.unwrap_err().code(), Code::IssuerInvalidCredentials, "{backend}");
        for client in [&keyed, &by_password] {
            assert_eq!(
                mint_code(&issuer, client, "https://nova.example").await,
                (401, Some("issuer.key_removed".into())),
                "{backend}"
            );
        }
        assert_eq!(mint_code(&issuer, &other, "https://nova.example").await, (200, None));
        // A password login after the removal (past the leeway: removals
        // refuse the sessions of that long after them too) may bind the key again.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let later = Client::new(&issuer.url, same_key()).unwrap();
        later
            .login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap();
        assert_eq!(mint_code(&issuer, &later, "https://nova.example").await, (200, None));
        let keys = admin
            .ok("GET", "/v1/admin/users/ayoung@stoughton/keys", Value::Null)
            .await;
        assert_eq!(keys, json!([]));

        // An administrator's own key: its admin token is refused at once.
        let admin_key = admin.client.key().public_key().clone();
        let admin_thumbprint = admin_key.thumbprint().to_string();
        admin
            .ok(
                "POST",
                "/v1/admin/users/admin@default/keys",
                json!({"key": b64url_encode(&admin_key.to_cose_key(None))}),
            )
            .await;
        admin
            .ok(
                "DELETE",
                &format!("/v1/admin/users/admin@default/keys/{admin_thumbprint}"),
                json!({}),
            )
            .await;
        assert_eq!(
            refused(&admin, "GET", "/v1/admin/users", Value::Null).await,
            Code::IssuerForbidden
        );
        let fresh = issuer.admin().await;
        let target = format!("ayoung@stoughton {thumbprint}");
        let audit = fresh
            .ok(
                "GET",
                &format!(
                    "/v1/admin/audit?action=user.remove_key&target={}",
                    target.replace(' ', "+")
                ),
                Value::Null,
            )
            .await;
        assert_eq!(audit.as_array().unwrap().len(), 1, "{backend}: {audit}");
        assert_eq!(audit[0]["outcome"], "ok");
    }
    cleanup(&all).await;
}

/// Grant listings filter by user, project and role; audit listings page
/// past 1000 entries by the id cursor and filter by actor, action, target
/// and time; entries name the client address and the request's key.
#[tokio::test]
async fn grant_filters_audit_pages_and_origins() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        admin
            .ok(
                "POST",
                "/v1/admin/users",
                json!({"user": "heat@stoughton", "kind": "service"}),
            )
            .await;
        admin
            .ok(
                "POST",
                "/v1/admin/grants",
                json!({"user": "heat@stoughton", "project": "turing@stoughton", "role": "reader"}),
            )
            .await;
        let listed = |query: &str| {
            let (admin, path) = (&admin, format!("/v1/admin/grants{query}"));
            async move { admin.ok("GET", &path, Value::Null).await }
        };
        let pairs = |v: Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|g| format!("{} {}", g["user"].as_str().unwrap(), g["role"].as_str().unwrap()))
                .collect()
        };
        assert_eq!(pairs(listed("").await).len(), 4, "with admin's own");
        assert_eq!(
            pairs(listed("?role=reader").await),
            ["ayoung@stoughton reader", "heat@stoughton reader"]
        );
        assert_eq!(
            pairs(listed("?user=ayoung%40stoughton&project=turing@stoughton").await),
            ["ayoung@stoughton member", "ayoung@stoughton reader"]
        );
        assert_eq!(
            pairs(listed("?user=heat@stoughton&role=member").await),
            Vec::<String>::new()
        );
        for (query, code) in [
            ("?user=heat", Code::IssuerInvalidName),
            ("?role=no%20such", Code::IssuerInvalidName),
            ("?owner=heat@stoughton", Code::IssuerBadRequest),
            ("?role=reader&role=member", Code::IssuerBadRequest),
        ] {
            let path = format!("/v1/admin/grants{query}");
            assert_eq!(
                refused(&admin, "GET", &path, Value::Null).await,
                code,
                "{backend} {query}"
            );
        }

        // 2,500 entries more, in bulk, then every page of 1000.
        let origin = keybound::issuer::store::Origin {
            client: "192.0.2.1".into(),
            key_thumbprint: "-".into(),
        };
        let mut tx = issuer.state.store.begin().await.unwrap();
        for i in 0..2500_i64 {
            keybound::issuer::store::Audit::record_from(
                &mut *tx,
                &origin,
                1_000_000 + i,
                &format!("bulk{}@stoughton", i % 5),
                "test.bulk",
                &format!("target {}", i % 2),
                "ok",
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let mut ids = Vec::new();
        let mut before: Option<i64> = None;
        let mut pages = 0;
        loop {
            let cursor = before.map(|b| format!("&before={b}")).unwrap_or_default();
            let page = admin
                .ok("GET", &format!("/v1/admin/audit?limit=1000{cursor}"), Value::Null)
                .await;
            let page = page.as_array().unwrap().clone();
            pages += 1;
            ids.extend(page.iter().map(|e| e["id"].as_i64().unwrap()));
            match page.last() {
                Some(last) if page.len() == 1000 => before = last["id"].as_i64(),
                _ => break,
            }
        }
        assert!(
            pages >= 3 && ids.len() > 2500,
            "{backend}: {pages} pages, {} entries",
            ids.len()
        );
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, each once");
        let count = |query: &'static str| {
            let admin = &admin;
            async move {
                admin
                    .ok("GET", &format!("/v1/admin/audit?limit=1000&{query}"), Value::Null)
                    .await
                    .as_array()
                    .unwrap()
                    .len()
            }
        };
        assert_eq!(count("actor=bulk3%40stoughton").await, 500, "{backend}");
        assert_eq!(
            count("action=test.bulk&target=target+1&since=1000100&until=1000199").await,
            50
        );
        assert_eq!(
            count("action=test.bulk&actor=bulk0@stoughton&target=target%200").await,
            250
        );
        for query in [
            "?before=x",
            "?since=yesterday",
            "?limit=1&limit=2",
            "?color=red",
            "?actor=%ff",
        ] {
            let path = format!("/v1/admin/audit{query}");
            assert_eq!(
                refused(&admin, "GET", &path, Value::Null).await,
                Code::IssuerBadRequest,
                "{query}"
            );
        }
        let long = format!("/v1/admin/audit?target={}", "a".repeat(1025));
        assert_eq!(refused(&admin, "GET", &long, Value::Null).await, Code::IssuerBadRequest);

        // Origins: the admin's actions name its address and key; a login
        // the key it bound.
        let key = admin.client.key().public_key().thumbprint().to_string();
        let grants = admin.ok("GET", "/v1/admin/audit?action=grant", Value::Null).await;
        assert_eq!(
            (&grants[0]["client"], &grants[0]["key_thumbprint"]),
            (&json!("127.0.0.1"), &json!(key))
        );
        let logins = admin
            .ok("GET", "/v1/admin/audit?action=login&actor=admin@default", Value::Null)
            .await;
        assert_eq!(
            (&logins[0]["client"], &logins[0]["key_thumbprint"]),
            (&json!("127.0.0.1"), &json!(key))
        );
        let boot = admin.ok("GET", "/v1/admin/audit?action=bootstrap", Value::Null).await;
        assert_eq!(
            (&boot[0]["client"], &boot[0]["key_thumbprint"]),
            (&json!("-"), &json!("-"))
        );
    }
    cleanup(&all).await;
}

/// Mints are audited as one `token.mint` entry per user, key, audience and
/// minute, whose count is the number of tokens; the entry of a minute is
/// written before its first token is answered, so with the audit log
/// broken a mint that would need a new entry is refused.
#[tokio::test]
async fn mints_are_audited_per_session_audience_and_minute() {
    let all = backends().await;
    for (backend, db) in all.clone() {
        let issuer = start(backend, db, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin().await;
        admin.setup_world("https://nova.example").await;
        admin
            .ok(
                "POST",
                "/v1/admin/services",
                json!({"audience": "https://glance.example"}),
            )
            .await;
        let ayoung = logged_in(&issuer, "ayoung@stoughton").await;
        for (audience, n) in [("https://nova.example", 5), ("https://glance.example", 3)] {
            for _ in 0..n {
                assert_eq!(mint_code(&issuer, &ayoung, audience).await, (200, None));
            }
        }
        // A refused mint is not audited.
        assert_eq!(mint_code(&issuer, &ayoung, "https://unknown.example").await.0, 400);
        let entries = admin
            .ok(
                "GET",
                "/v1/admin/audit?action=token.mint&actor=ayoung%40stoughton",
                Value::Null,
            )
            .await;
        let entries = entries.as_array().unwrap();
        let key = ayoung.key().public_key().thumbprint().to_string();
        for (audience, n) in [("https://nova.example", 5), ("https://glance.example", 3)] {
            let rows: Vec<&Value> = entries.iter().filter(|e| e["target"] == audience).collect();
            // Two rows only when the mints straddled a minute boundary.
            assert!((1..=2).contains(&rows.len()), "{backend}: {entries:?}");
            assert_eq!(
                rows.iter().map(|e| e["count"].as_i64().unwrap()).sum::<i64>(),
                n,
                "{backend} {audience}"
            );
            for row in rows {
                assert_eq!(row["time"].as_i64().unwrap() % 60, 0, "the minute's start");
                assert_eq!(
                    (&row["client"], &row["key_thumbprint"], &row["outcome"]),
                    (&json!("127.0.0.1"), &json!(key), &json!("ok"))
                );
            }
        }
        assert!(entries.iter().all(|e| e["target"] != "https://unknown.example"));
        let admin_mints = admin
            .ok(
                "GET",
                "/v1/admin/audit?action=token.mint&actor=admin@default",
                Value::Null,
            )
            .await;
        assert_eq!(admin_mints[0]["target"], format!("{}/admin", issuer.url));

        // No new minute row can be written: the mint is refused.
        admin
            .ok(
                "POST",
                "/v1/admin/services",
                json!({"audience": "https://cinder.example"}),
            )
            .await;
        set_audit_broken(&issuer, true).await;
        assert_eq!(
            mint_code(&issuer, &ayoung, "https://cinder.example").await,
            (503, Some("issuer.unavailable".into())),
            "{backend}"
        );
        set_audit_broken(&issuer, false).await;
        assert_eq!(mint_code(&issuer, &ayoung, "https://cinder.example").await, (200, None));
        issuer.state.flush_mint_audit().await.unwrap();
        assert_eq!(issuer.state.mint_audit.unwritten(), 0);
    }
    cleanup(&all).await;
}
