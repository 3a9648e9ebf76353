//! Federation end to end (issue 14, spec/federation.md): two real issuers on
//! loopback, Stoughton and Canton, each with its own database, and a Nova
//! service that trusts Canton only. A user of Stoughton gets a token for
//! Canton from Stoughton, exchanges it at Canton with a proof by her key, and
//! calls Nova with Canton's token, bound to the same key. Then every refusal
//! of spec/federation.md §4 and catalog §2.9, each with its code, the
//! issuer-down cases, and the same flow with both issuers on PostgreSQL
//! (separate databases).

use crate::common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use keybound::client::{Client, Scope};
use keybound::http::KeyboundLayer;
use keybound::issuer::loopback::LoopbackIssuer;
use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::keyset::{HttpKeys, HttpKeysOptions};
use keybound::policy::Policy;
use keybound::proof::ProofBuilder;
use keybound::token::{Token, TokenBuilder, UnverifiedToken};
use keybound::verify::{ManualClock, TrustedIssuer, VerifiedRequest, Verifier};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const ADMIN_PASSWORD: &str = "admin password for federation";
const USER: &str = "ayoung@stoughton";
const NOW: u64 = 1_800_000_000;

/// Stoughton, Canton and Nova (trusting Canton), on one test clock.
struct Federation {
    stoughton: LoopbackIssuer,
    canton: LoopbackIssuer,
    stoughton_admin: Client,
    canton_admin: Client,
    /// ayoung@stoughton, logged in at Stoughton.
    user: Client,
    nova: String,
    clock: Arc<ManualClock>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn issuer(clock: &Arc<ManualClock>, database_url: Option<String>) -> (LoopbackIssuer, tempfile::TempDir) {
    common::start_issuer(ADMIN_PASSWORD, clock.clone(), |config| {
        config.database_url = database_url;
        config.login_rate_per_minute = 1_000_000;
        config.login_burst = 100_000;
    })
    .await
}

async fn admin(issuer: &LoopbackIssuer, clock: &Arc<ManualClock>) -> Client {
    let admin = Client::new(issuer.url(), SigningKey::generate(Algorithm::EdDSA).unwrap())
        .unwrap()
        .with_clock(clock.clone());
    admin
        .login_password("admin@default", ADMIN_PASSWORD, None)
        .await
        .unwrap();
    admin
}

async fn call(issuer: &LoopbackIssuer, admin: &Client, method: Method, path: &str, body: Value) -> Value {
    issuer
        .admin_call(admin, method, path, Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{path} {body}: {e}"))
}

async fn post(issuer: &LoopbackIssuer, admin: &Client, path: &str, body: Value) -> Value {
    call(issuer, admin, Method::POST, path, body).await
}

/// Nova: a service trusting Canton alone, its key set fetched over HTTP,
/// with `policy` (TOML) on its routes.
async fn nova(canton: &str, clock: &Arc<ManualClock>, policy: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let keys = HttpKeys::start(
        &format!("{canton}/.well-known/keybound/keys"),
        HttpKeysOptions::default(),
    )
    .await
    .unwrap();
    let verifier = Verifier::builder(&url, TrustedIssuer::new(canton, keys))
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/v2/servers",
            axum::routing::get(|request: VerifiedRequest| async move {
                let claims = request.token().claims();
                axum::Json(json!({
                    "subject": request.subject(),
                    "issuer": request.issuer(),
                    "origin": claims.origin_issuer,
                    "project": request.project(),
                    "roles": request.roles(),
                }))
            }),
        )
        .layer(
            KeyboundLayer::new(Arc::new(verifier), &url)
                .unwrap()
                .policy(Arc::new(Policy::from_toml(policy).unwrap())),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

const NOVA_POLICY: &str = "[[rule]]\npath = \"/v2/servers\"\nroles = [\"member\"]\n";

impl Federation {
    async fn start(databases: [Option<String>; 2]) -> Self {
        let clock = Arc::new(ManualClock::new(NOW));
        let [stoughton_db, canton_db] = databases;
        let (stoughton, d1) = issuer(&clock, stoughton_db).await;
        let (canton, d2) = issuer(&clock, canton_db).await;
        let stoughton_admin = admin(&stoughton, &clock).await;
        let canton_admin = admin(&canton, &clock).await;
        // Stoughton: the user's home.
        post(
            &stoughton,
            &stoughton_admin,
            "/v1/admin/domains",
            json!({"name": "stoughton"}),
        )
        .await;
        post(
            &stoughton,
            &stoughton_admin,
            "/v1/admin/users",
            json!({"user": USER, "password": PASSWORD}),
        )
        .await;
        // Canton: the project, its roles, and Nova.
        let nova = nova(canton.url(), &clock, NOVA_POLICY).await;
        post(&canton, &canton_admin, "/v1/admin/domains", json!({"name": "canton"})).await;
        post(
            &canton,
            &canton_admin,
            "/v1/admin/projects",
            json!({"name": "turing", "domain": "canton"}),
        )
        .await;
        for role in ["member", "reader"] {
            post(&canton, &canton_admin, "/v1/admin/roles", json!({"name": role})).await;
        }
        post(&canton, &canton_admin, "/v1/admin/services", json!({"audience": nova})).await;
        // Each issuer trusts the other for the other's domain.
        post(&stoughton, &stoughton_admin, "/v1/admin/peers", peer(&canton, "canton")).await;
        post(&canton, &canton_admin, "/v1/admin/peers", peer(&stoughton, "stoughton")).await;
        post(
            &canton,
            &canton_admin,
            "/v1/admin/remote-grants",
            json!({"user": USER, "project": "turing@canton", "role": "member"}),
        )
        .await;
        let user = Client::new(stoughton.url(), SigningKey::generate(Algorithm::EdDSA).unwrap())
            .unwrap()
            .with_clock(clock.clone());
        user.login_password(USER, PASSWORD, None).await.unwrap();
        Federation {
            stoughton,
            canton,
            stoughton_admin,
            canton_admin,
            user,
            nova,
            clock,
            _dirs: vec![d1, d2],
        }
    }

    /// The scope of a Canton token for Nova on turing@canton, through Canton.
    fn nova_scope(&self) -> Scope {
        Scope::new(&self.nova)
            .project("turing")
            .domain("canton")
            .through(self.canton.url())
    }

    /// A Stoughton token for Canton, minted for the user.
    async fn token_for_canton(&self) -> Token {
        self.user.service_token(&Scope::new(self.canton.url())).await.unwrap()
    }
}

fn peer(issuer: &LoopbackIssuer, domain: &str) -> Value {
    json!({
        "issuer": issuer.url(),
        "keys_url": format!("{}/.well-known/keybound/keys", issuer.url()),
        "domains": [domain],
    })
}

/// An exchange at `issuer` with `token`, a proof by `key` unless `proof` is
/// false, and `body`; the refusal's code, or the answer.
async fn exchange(
    issuer: &str,
    token: &Token,
    key: Option<&SigningKey>,
    body: &Value,
    iat: u64,
) -> std::result::Result<Value, String> {
    let url = format!("{issuer}/v1/exchange");
    let body = serde_json::to_vec(body).unwrap();
    let mut request = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("authorization", format!("KB {}", token.to_base64url()))
        .body(body.clone());
    if let Some(key) = key {
        let proof = ProofBuilder::new("POST", &url, token.as_bytes(), &body, iat)
            .unwrap()
            .sign(key)
            .unwrap();
        request = request.header("kb-proof", proof.to_base64url());
    }
    answer(request.send().await.unwrap()).await
}

async fn answer(response: reqwest::Response) -> std::result::Result<Value, String> {
    let ok = response.status().is_success();
    let value: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    if ok {
        Ok(value)
    } else {
        Err(value["code"].as_str().unwrap_or("?").to_owned())
    }
}

fn nova_body(nova: &str) -> Value {
    json!({"audience": nova, "project": "turing", "domain": "canton"})
}

fn code(result: std::result::Result<Value, String>) -> String {
    match result {
        Ok(v) => panic!("accepted: {v}"),
        Err(code) => code,
    }
}

/// A token signed with `issuer`'s own current key, for claims it would
/// never mint: a peer that misbehaves.
fn forged(issuer: &LoopbackIssuer, builder: TokenBuilder) -> Token {
    let (key, kid) = issuer.state().keys.current().unwrap();
    builder.sign(&key, &kid).unwrap()
}

async fn audit(issuer: &LoopbackIssuer, admin: &Client) -> Vec<Value> {
    issuer
        .admin_call(admin, Method::GET, "/v1/admin/audit?limit=200", None)
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

async fn the_seed_sequence(fed: &Federation) {
    // 1–2: a token for Canton from Stoughton, exchanged at Canton.
    let foreign = fed.token_for_canton().await;
    let foreign_claims = keybound::danger::insecure_decode_token(foreign.as_bytes())
        .unwrap()
        .claims;
    assert_eq!(foreign_claims.aud, fed.canton.url());
    assert!(foreign_claims.roles.is_empty() && foreign_claims.project.is_none());
    let scope = fed.nova_scope();
    let token = fed.user.service_token(&scope).await.unwrap();
    // 3–4: Canton's own token for the remote user, bound to the same key,
    // with Canton's grants and Stoughton as origin; never beyond the
    // foreign token's expiry.
    let claims = keybound::danger::insecure_decode_token(token.as_bytes())
        .unwrap()
        .claims;
    assert_eq!(claims.iss, fed.canton.url());
    assert_eq!(claims.sub, USER);
    assert_eq!(claims.aud, fed.nova);
    assert_eq!(claims.origin_issuer.as_deref(), Some(fed.stoughton.url()));
    assert_eq!(claims.roles, ["member"]);
    assert_eq!(
        (claims.domain.as_deref(), claims.project.as_deref()),
        (Some("canton"), Some("turing"))
    );
    assert_eq!(&claims.cnf, fed.user.key().public_key());
    assert!(
        claims.exp <= foreign_claims.exp,
        "{} > {}",
        claims.exp,
        foreign_claims.exp
    );
    // 5: Nova, trusting Canton, serves it.
    let response = fed
        .user
        .get(&format!("{}/v2/servers", fed.nova), &scope)
        .send()
        .await
        .unwrap();
    let served = answer(response).await.unwrap();
    assert_eq!(served["subject"], USER);
    assert_eq!(served["issuer"], fed.canton.url());
    assert_eq!(served["origin"], fed.stoughton.url());
    assert_eq!(served["roles"], json!(["member"]));
    // Audited at Canton, with the origin issuer.
    let entries = audit(&fed.canton, &fed.canton_admin).await;
    let exchanged = entries
        .iter()
        .find(|e| e["action"] == "federation.exchange" && e["outcome"] == "ok")
        .unwrap_or_else(|| panic!("no exchange audited: {entries:#?}"));
    assert_eq!(exchanged["actor"], format!("{USER} via {}", fed.stoughton.url()));
    assert!(
        exchanged["target"].as_str().unwrap().contains(fed.stoughton.url()),
        "{exchanged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stoughton_user_reaches_nova_in_canton_with_a_token_bound_to_the_same_key() {
    let fed = Federation::start([None, None]).await;
    the_seed_sequence(&fed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_issuers_on_postgresql_in_separate_databases() {
    let Ok(base) = std::env::var("KEYBOUND_TEST_POSTGRES_URL") else {
        eprintln!("PostgreSQL part skipped: KEYBOUND_TEST_POSTGRES_URL is not set");
        return;
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&base).await.expect("PostgreSQL reachable");
    let suffix = format!("{}_{}", std::process::id(), NOW % 100_000 + rand_u16() as u64);
    let names = [format!("kbfed_stoughton_{suffix}"), format!("kbfed_canton_{suffix}")];
    for name in &names {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let urls = names.clone().map(|name| Some(format!("{prefix}/{name}")));
    {
        let fed = Federation::start(urls).await;
        assert_eq!(
            fed.canton.state().store.backend(),
            keybound::issuer::store::Backend::Postgres
        );
        the_seed_sequence(&fed).await;
        // A refusal on PostgreSQL too: revoking the grant takes effect at the next exchange.
        call(
            &fed.canton,
            &fed.canton_admin,
            Method::DELETE,
            "/v1/admin/remote-grants",
            json!({"user": USER, "project": "turing@canton", "role": "member"}),
        )
        .await;
        let foreign = fed.token_for_canton().await;
        let refused = exchange(
            fed.canton.url(),
            &foreign,
            Some(fed.user.key()),
            &nova_body(&fed.nova),
            NOW,
        )
        .await;
        assert_eq!(code(refused), "fed.no_grants");
    }
    pool.close().await;
    let pool = sqlx::AnyPool::connect(&base).await.unwrap();
    for name in &names {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&pool)
            .await;
    }
}

fn rand_u16() -> u16 {
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let t = key.public_key().thumbprint();
    u16::from_be_bytes([t.as_bytes()[0], t.as_bytes()[1]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_token_for_canton_crosses_never_a_general_purpose_or_session_token() {
    let fed = Federation::start([None, None]).await;
    let body = nova_body(&fed.nova);
    let key = fed.user.key();
    // A Stoughton token for one of Stoughton's services (the "TGT to an
    // untrusted service" concern): refused.
    post(
        &fed.stoughton,
        &fed.stoughton_admin,
        "/v1/admin/services",
        json!({"audience": "https://swift.stoughton.example"}),
    )
    .await;
    let general = fed
        .user
        .service_token(&Scope::new("https://swift.stoughton.example"))
        .await
        .unwrap();
    assert_eq!(
        code(exchange(fed.canton.url(), &general, Some(key), &body, NOW).await),
        "fed.audience"
    );
    // The session token itself: refused.
    let session = fed.user.session().unwrap().token;
    assert_eq!(
        code(exchange(fed.canton.url(), &session, Some(key), &body, NOW).await),
        "fed.audience"
    );
    // Stoughton mints for Canton without a project, roles or trust only.
    let with_project = Scope::new(fed.canton.url()).project("turing");
    let refused = fed.user.service_token(&with_project).await.unwrap_err();
    assert_eq!(refused.code().as_str(), "issuer.bad_request");
    // And only while Canton is its peer.
    call(
        &fed.stoughton,
        &fed.stoughton_admin,
        Method::DELETE,
        "/v1/admin/peers",
        json!({"issuer": fed.canton.url()}),
    )
    .await;
    let refused = fed
        .user
        .service_token(&Scope::new(fed.canton.url()).lifetime(299))
        .await
        .unwrap_err();
    assert_eq!(refused.code().as_str(), "issuer.unknown_audience");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_needs_a_fresh_proof_by_the_key_the_token_is_bound_to() {
    let fed = Federation::start([None, None]).await;
    let foreign = fed.token_for_canton().await;
    let body = nova_body(&fed.nova);
    // No proof (FD-10).
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, None, &body, NOW).await),
        "fed.pop_missing"
    );
    // A proof by another key: the token is bound to the user's.
    let thief = SigningKey::generate(Algorithm::EdDSA).unwrap();
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, Some(&thief), &body, NOW).await),
        "proof.bad_signature"
    );
    // A replayed proof: the same request twice.
    let url = format!("{}/v1/exchange", fed.canton.url());
    let bytes = serde_json::to_vec(&body).unwrap();
    let proof = ProofBuilder::new("POST", &url, foreign.as_bytes(), &bytes, NOW)
        .unwrap()
        .sign(fed.user.key())
        .unwrap();
    let send = || {
        reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .header("authorization", format!("KB {}", foreign.to_base64url()))
            .header("kb-proof", proof.to_base64url())
            .body(bytes.clone())
            .send()
    };
    answer(send().await.unwrap()).await.unwrap();
    assert_eq!(code(answer(send().await.unwrap()).await), "replay.detected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_that_is_not_a_peer_and_a_peer_outside_its_domains_are_refused() {
    let fed = Federation::start([None, None]).await;
    let body = nova_body(&fed.nova);
    let key = fed.user.key().public_key().clone();
    // Hyde is no peer of Canton: its token for Canton is refused.
    let (hyde, _dir) = issuer(&fed.clock, None).await;
    let from_hyde = forged(
        &hyde,
        TokenBuilder::service(hyde.url(), "eve@hyde", fed.canton.url(), key.clone(), NOW),
    );
    assert_eq!(
        code(exchange(fed.canton.url(), &from_hyde, Some(fed.user.key()), &body, NOW).await),
        "fed.peer_unknown"
    );
    // Stoughton speaking for a user of Canton's own domain (bob@canton).
    let bob = forged(
        &fed.stoughton,
        TokenBuilder::service(fed.stoughton.url(), "bob@canton", fed.canton.url(), key.clone(), NOW),
    );
    assert_eq!(
        code(exchange(fed.canton.url(), &bob, Some(fed.user.key()), &body, NOW).await),
        "fed.domain"
    );
    // ... or for a domain it was not configured for.
    let carol = forged(
        &fed.stoughton,
        TokenBuilder::service(fed.stoughton.url(), "carol@hyde", fed.canton.url(), key.clone(), NOW),
    );
    assert_eq!(
        code(exchange(fed.canton.url(), &carol, Some(fed.user.key()), &body, NOW).await),
        "fed.domain"
    );
    // A token naming Stoughton but signed with Hyde's key, once Hyde is a
    // peer too: keys are never pooled (FD-01).
    post(&fed.canton, &fed.canton_admin, "/v1/admin/peers", peer(&hyde, "hyde")).await;
    let mixed = forged(
        &hyde,
        TokenBuilder::service(fed.stoughton.url(), USER, fed.canton.url(), key.clone(), NOW),
    );
    assert_eq!(
        code(exchange(fed.canton.url(), &mixed, Some(fed.user.key()), &body, NOW).await),
        "fed.key_issuer_mismatch"
    );
    // A peer removed by another replica (the row gone, this replica's
    // directory not yet refreshed) is refused by F1's re-read.
    {
        use keybound::issuer::store::Federation as _;
        let mut tx = fed.canton.state().store.begin().await.unwrap();
        tx.delete_peer(fed.stoughton.url()).await.unwrap();
        tx.commit().await.unwrap();
        let foreign = fed.token_for_canton().await;
        assert_eq!(
            code(exchange(fed.canton.url(), &foreign, Some(fed.user.key()), &body, NOW).await),
            "fed.peer_unknown"
        );
        fed.canton.state().refresh_peers().await.unwrap();
        post(
            &fed.canton,
            &fed.canton_admin,
            "/v1/admin/peers",
            peer(&fed.stoughton, "stoughton"),
        )
        .await;
    }
    // A removed peer is refused from the next exchange on.
    call(
        &fed.canton,
        &fed.canton_admin,
        Method::DELETE,
        "/v1/admin/peers",
        json!({"issuer": fed.stoughton.url()}),
    )
    .await;
    let foreign = fed.token_for_canton().await;
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, Some(fed.user.key()), &body, NOW).await),
        "fed.peer_unknown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_stop_at_one_hop() {
    let fed = Federation::start([None, None]).await;
    let body = nova_body(&fed.nova);
    let key = fed.user.key();
    let canton_token = fed.user.service_token(&fed.nova_scope()).await.unwrap();
    // Canton's token exchanged again at Canton.
    assert_eq!(
        code(exchange(fed.canton.url(), &canton_token, Some(key), &body, NOW).await),
        "fed.chain"
    );
    // ... or taken back to Stoughton (a peer of Canton there): not for Stoughton.
    let back = json!({"audience": "https://swift.stoughton.example", "project": "p", "domain": "stoughton"});
    assert_eq!(
        code(exchange(fed.stoughton.url(), &canton_token, Some(key), &back, NOW).await),
        "fed.audience"
    );
    // A token of Stoughton presented at Stoughton's own exchange.
    let own = fed.user.service_token(&Scope::new(fed.canton.url())).await.unwrap();
    assert_eq!(
        code(exchange(fed.stoughton.url(), &own, Some(key), &back, NOW).await),
        "fed.chain"
    );
    // A peer token that is itself federated or delegated: refused.
    let federated = forged(
        &fed.stoughton,
        TokenBuilder::service(
            fed.stoughton.url(),
            USER,
            fed.canton.url(),
            key.public_key().clone(),
            NOW,
        )
        .origin_issuer("https://hyde.example"),
    );
    assert_eq!(
        code(exchange(fed.canton.url(), &federated, Some(key), &body, NOW).await),
        "fed.chain"
    );
    // Canton does not mint a token for another issuer (a third one, or Stoughton).
    let foreign = fed.token_for_canton().await;
    let to_stoughton = json!({"audience": fed.stoughton.url(), "project": "turing", "domain": "canton"});
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, Some(key), &to_stoughton, NOW).await),
        "fed.invalid_target"
    );
    let to_admin = json!({"audience": format!("{}/admin", fed.canton.url()), "project": "turing", "domain": "canton"});
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, Some(key), &to_admin, NOW).await),
        "fed.invalid_target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_come_from_canton_grants_alone() {
    let fed = Federation::start([None, None]).await;
    let key = fed.user.key();
    let body = nova_body(&fed.nova);
    // Roles and a project in the foreign token pass nothing (FD-13).
    let claims_admin = forged(
        &fed.stoughton,
        TokenBuilder::service(
            fed.stoughton.url(),
            USER,
            fed.canton.url(),
            key.public_key().clone(),
            NOW,
        )
        .scope("canton", "turing")
        .roles(["admin"]),
    );
    let answer = exchange(fed.canton.url(), &claims_admin, Some(key), &body, NOW)
        .await
        .unwrap();
    assert_eq!(answer["roles"], json!(["member"]));
    // Asking for a role not granted here, or an empty set.
    let foreign = fed.token_for_canton().await;
    let mut greedy = body.clone();
    greedy["roles"] = json!(["admin"]);
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, Some(key), &greedy, NOW).await),
        "fed.no_grants"
    );
    // A project with no grant for her, and one that does not exist.
    post(
        &fed.canton,
        &fed.canton_admin,
        "/v1/admin/projects",
        json!({"name": "secret", "domain": "canton"}),
    )
    .await;
    let secret = json!({"audience": fed.nova, "project": "secret", "domain": "canton"});
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, Some(key), &secret, NOW).await),
        "fed.no_grants"
    );
    let missing = json!({"audience": fed.nova, "project": "nope", "domain": "canton"});
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, Some(key), &missing, NOW).await),
        "issuer.unknown_project"
    );
    let unknown_service = json!({"audience": "https://glance.canton.example", "project": "turing", "domain": "canton"});
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, Some(key), &unknown_service, NOW).await),
        "fed.invalid_target"
    );
    // A peer limited to some projects: turing is no longer among them.
    call(
        &fed.canton,
        &fed.canton_admin,
        Method::DELETE,
        "/v1/admin/peers",
        json!({"issuer": fed.stoughton.url()}),
    )
    .await;
    let mut limited = peer(&fed.stoughton, "stoughton");
    limited["projects"] = json!(["secret@canton"]);
    limited["max_lifetime"] = json!(60);
    post(&fed.canton, &fed.canton_admin, "/v1/admin/peers", limited).await;
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, Some(key), &body, NOW).await),
        "fed.invalid_target"
    );
    // Removing the peer removed its users' grants: none on secret either.
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, Some(key), &secret, NOW).await),
        "fed.no_grants"
    );
    post(
        &fed.canton,
        &fed.canton_admin,
        "/v1/admin/remote-grants",
        json!({"user": USER, "project": "secret@canton", "role": "reader"}),
    )
    .await;
    let answer = exchange(fed.canton.url(), &foreign, Some(key), &secret, NOW)
        .await
        .unwrap();
    assert_eq!(answer["roles"], json!(["reader"]));
    // The peer's max_lifetime holds.
    assert_eq!(answer["expires_at"], json!(NOW + 60));
    // Refusals after a valid token and proof are audited with their code.
    let entries = audit(&fed.canton, &fed.canton_admin).await;
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "federation.exchange" && e["outcome"] == "fed.no_grants"),
        "{entries:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchanged_token_never_outlives_the_foreign_token() {
    let fed = Federation::start([None, None]).await;
    let foreign = fed.token_for_canton().await;
    let foreign_exp = UnverifiedToken::from_slice(foreign.as_bytes()).map(|_| ()).ok();
    assert!(foreign_exp.is_some());
    let exp = keybound::danger::insecure_decode_token(foreign.as_bytes())
        .unwrap()
        .claims
        .exp;
    fed.clock.advance(200);
    let answer = exchange(
        fed.canton.url(),
        &foreign,
        Some(fed.user.key()),
        &nova_body(&fed.nova),
        NOW + 200,
    )
    .await
    .unwrap();
    assert_eq!(
        answer["expires_at"],
        json!(exp),
        "clamped to the foreign token's expiry (FD-11)"
    );
    // Past its expiry (and the leeway) the foreign token is refused.
    fed.clock.advance(200);
    assert_eq!(
        code(
            exchange(
                fed.canton.url(),
                &foreign,
                Some(fed.user.key()),
                &nova_body(&fed.nova),
                NOW + 400
            )
            .await
        ),
        "cwt.expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stoughton_down_canton_still_exchanges_its_tokens_and_with_canton_down_nova_still_verifies() {
    let Federation {
        stoughton,
        canton,
        user,
        nova,
        clock,
        _dirs,
        ..
    } = Federation::start([None, None]).await;
    let foreign = user.service_token(&Scope::new(canton.url())).await.unwrap();
    let body = nova_body(&nova);
    drop(stoughton);
    // Stoughton is gone: Canton still has its key set.
    let answer = exchange(canton.url(), &foreign, Some(user.key()), &body, NOW + 1)
        .await
        .unwrap();
    let canton_token = Token::from_bytes(keybound::encoding::b64url_decode(answer["token"].as_str().unwrap()).unwrap());
    // Canton goes too: Nova still verifies Canton's token from its cached set.
    drop(canton);
    let url = format!("{nova}/v2/servers");
    let proof = ProofBuilder::new("GET", &url, canton_token.as_bytes(), b"", NOW + 2)
        .unwrap()
        .sign(user.key())
        .unwrap();
    let served = reqwest::Client::new()
        .get(&url)
        .header("authorization", format!("KB {}", canton_token.to_base64url()))
        .header("kb-proof", proof.to_base64url())
        .send()
        .await
        .unwrap();
    assert!(served.status().is_success(), "{}", served.text().await.unwrap());
    // Until the tokens expire.
    clock.advance(400);
    let proof = ProofBuilder::new("GET", &url, canton_token.as_bytes(), b"", NOW + 400)
        .unwrap()
        .sign(user.key())
        .unwrap();
    let refused = reqwest::Client::new()
        .get(&url)
        .header("authorization", format!("KB {}", canton_token.to_base64url()))
        .header("kb-proof", proof.to_base64url())
        .send()
        .await
        .unwrap();
    assert_eq!(code(answer_of(refused).await), "cwt.expired");
}

async fn answer_of(response: reqwest::Response) -> std::result::Result<Value, String> {
    answer(response).await
}

/// A peer whose key set the test serves: sequenced documents it replaces.
struct ServedKeys {
    url: String,
    document: Arc<Mutex<Vec<u8>>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

async fn served_keys(set: &KeySet) -> ServedKeys {
    let document = Arc::new(Mutex::new(set.to_cbor()));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (shared, counted) = (document.clone(), fetches.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/keys",
        axum::routing::get(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = shared.lock().unwrap().clone();
            async move { ([("content-type", "application/cose-key-set")], Bytes::from(body)) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    ServedKeys { url, document, fetches }
}

/// Hyde (`https://hyde.example`), a peer of Canton whose key set the test
/// serves (`set` first), and a grant of member on turing to eve@hyde.
async fn hyde_serving(fed: &Federation, set: &KeySet) -> ServedKeys {
    let served = served_keys(set).await;
    post(
        &fed.canton,
        &fed.canton_admin,
        "/v1/admin/peers",
        json!({"issuer": "https://hyde.example", "keys_url": served.url, "domains": ["hyde"]}),
    )
    .await;
    post(
        &fed.canton,
        &fed.canton_admin,
        "/v1/admin/remote-grants",
        json!({"user": "eve@hyde", "project": "turing@canton", "role": "member"}),
    )
    .await;
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_withdrew_every_key_is_refused() {
    let fed = Federation::start([None, None]).await;
    let issuer = "https://hyde.example";
    let signer = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let set = KeySet::new()
        .with(b"h1".to_vec(), signer.public_key().clone())
        .unwrap()
        .with_sequence(1);
    let served = hyde_serving(&fed, &set).await;
    let eve = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let token = |kid: &[u8]| {
        TokenBuilder::service(issuer, "eve@hyde", fed.canton.url(), eve.public_key().clone(), NOW)
            .sign(&signer, kid)
            .unwrap()
    };
    let body = nova_body(&fed.nova);
    exchange(fed.canton.url(), &token(b"h1"), Some(&eve), &body, NOW)
        .await
        .unwrap();
    // Hyde withdraws every key (a sequenced empty set, FD-04); a token under
    // a kid Canton does not know makes it refetch.
    *served.document.lock().unwrap() = KeySet::new().with_sequence(2).to_cbor();
    assert_eq!(
        code(exchange(fed.canton.url(), &token(b"h2"), Some(&eve), &body, NOW).await),
        "fed.issuer_revoked"
    );
    assert_eq!(
        code(exchange(fed.canton.url(), &token(b"h1"), Some(&eve), &body, NOW).await),
        "fed.issuer_revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_checked_when_added() {
    let fed = Federation::start([None, None]).await;
    let add = |body: Value| {
        let (canton, admin) = (&fed.canton, &fed.canton_admin);
        async move {
            canton
                .admin_call(admin, Method::POST, "/v1/admin/peers", Some(&body))
                .await
                .map(|_| ())
                .map_err(|e| e.code().as_str().to_owned())
        }
    };
    let url = "https://hyde.example";
    // Plain http to a remote host, userinfo, another scheme (FD-07).
    for keys_url in [
        "http://hyde.example/keys",
        "https://u:p@hyde.example/keys",
        "ftp://hyde.example/keys",
    ] {
        assert_eq!(
            add(json!({"issuer": url, "keys_url": keys_url, "domains": ["hyde"]})).await,
            Err("issuer.bad_request".to_owned()),
            "{keys_url}"
        );
    }
    let keys_url = "https://hyde.example/keys";
    // No domain; Canton's own domain; a domain another peer has.
    assert_eq!(
        add(json!({"issuer": url, "keys_url": keys_url, "domains": []})).await,
        Err("issuer.bad_request".to_owned())
    );
    assert_eq!(
        add(json!({"issuer": url, "keys_url": keys_url, "domains": ["canton"]})).await,
        Err("issuer.conflict".to_owned())
    );
    assert_eq!(
        add(json!({"issuer": url, "keys_url": keys_url, "domains": ["stoughton"]})).await,
        Err("issuer.conflict".to_owned())
    );
    // Itself, a lifetime over 300 s, a project that does not exist.
    assert_eq!(
        add(json!({"issuer": fed.canton.url(), "keys_url": keys_url, "domains": ["hyde"]})).await,
        Err("issuer.bad_request".to_owned())
    );
    assert_eq!(
        add(json!({"issuer": url, "keys_url": keys_url, "domains": ["hyde"], "max_lifetime": 301})).await,
        Err("issuer.bad_request".to_owned())
    );
    assert_eq!(
        add(json!({"issuer": url, "keys_url": keys_url, "domains": ["hyde"], "projects": ["nope@canton"]})).await,
        Err("issuer.not_found".to_owned())
    );
    // This issuer's own key-set URL, another peer's, a service's audience as
    // a peer id, a peer's id as a service, a local domain with a peer's name.
    let own_keys = format!("{}/.well-known/keybound/keys", fed.canton.url());
    assert_eq!(
        add(json!({"issuer": url, "keys_url": own_keys, "domains": ["hyde"]})).await,
        Err("issuer.bad_request".to_owned())
    );
    let stoughton_keys = format!("{}/.well-known/keybound/keys", fed.stoughton.url());
    assert_eq!(
        add(json!({"issuer": url, "keys_url": stoughton_keys, "domains": ["hyde"]})).await,
        Err("issuer.conflict".to_owned())
    );
    assert_eq!(
        add(json!({"issuer": fed.nova, "keys_url": keys_url, "domains": ["hyde"]})).await,
        Err("issuer.conflict".to_owned())
    );
    for (path, body) in [
        ("/v1/admin/services", json!({"audience": fed.stoughton.url()})),
        ("/v1/admin/domains", json!({"name": "stoughton"})),
    ] {
        let refused = fed
            .canton
            .admin_call(&fed.canton_admin, Method::POST, path, Some(&body))
            .await
            .unwrap_err();
        assert_eq!(refused.code().as_str(), "issuer.conflict", "{path}");
    }
    // A local grant to a peer's user says to use --remote.
    let refused = fed
        .canton
        .admin_call(
            &fed.canton_admin,
            Method::POST,
            "/v1/admin/grants",
            Some(&json!({"user": USER, "project": "turing@canton", "role": "member"})),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code().as_str(), "issuer.not_found");
    assert!(refused.message().contains("--remote"), "{}", refused.message());
    // A remote grant needs a peer authoritative for the user's domain.
    let refused = fed
        .canton
        .admin_call(
            &fed.canton_admin,
            Method::POST,
            "/v1/admin/remote-grants",
            Some(&json!({"user": "eve@hyde", "project": "turing@canton", "role": "member"})),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code().as_str(), "issuer.not_found");
    // What was added is listed; each change is audited.
    let peers = fed
        .canton
        .admin_call(&fed.canton_admin, Method::GET, "/v1/admin/peers", None)
        .await
        .unwrap();
    assert_eq!(peers.as_array().unwrap().len(), 1, "{peers}");
    assert_eq!(peers[0]["issuer"], fed.stoughton.url());
    assert_eq!(peers[0]["domains"], json!(["stoughton"]));
    let grants = fed
        .canton
        .admin_call(&fed.canton_admin, Method::GET, "/v1/admin/remote-grants", None)
        .await
        .unwrap();
    assert_eq!(grants[0]["origin"], fed.stoughton.url());
    assert_eq!(grants[0]["user"], USER);
    let entries = audit(&fed.canton, &fed.canton_admin).await;
    for action in ["peer.create", "grant.remote"] {
        assert!(
            entries.iter().any(|e| e["action"] == action && e["outcome"] == "ok"),
            "{action}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "peer.create" && e["outcome"] == "issuer.conflict")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_policy_can_admit_the_users_of_some_origins_only() {
    let fed = Federation::start([None, None]).await;
    let only_canton = format!(
        "[[rule]]\npath = \"/v2/servers\"\nroles = [\"member\"]\norigins = [\"{}\"]\n",
        fed.canton.url()
    );
    let strict = nova(fed.canton.url(), &fed.clock, &only_canton).await;
    post(
        &fed.canton,
        &fed.canton_admin,
        "/v1/admin/services",
        json!({"audience": strict}),
    )
    .await;
    let scope = Scope::new(&strict)
        .project("turing")
        .domain("canton")
        .through(fed.canton.url());
    let refused = fed
        .user
        .get(&format!("{strict}/v2/servers"), &scope)
        .send()
        .await
        .unwrap();
    assert_eq!(code(answer(refused).await), "policy.denied");
    // Nova with the default policy (no `origins`) serves her.
    let served = fed
        .user
        .get(&format!("{}/v2/servers", fed.nova), &fed.nova_scope())
        .send()
        .await
        .unwrap();
    assert!(served.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchanged_token_can_be_bound_to_one_instance() {
    let fed = Federation::start([None, None]).await;
    let foreign = fed.token_for_canton().await;
    let mut body = nova_body(&fed.nova);
    body["instance"] = json!("vm-7f3a");
    let answer = exchange(fed.canton.url(), &foreign, Some(fed.user.key()), &body, NOW)
        .await
        .unwrap();
    assert_eq!(answer["instance"], "vm-7f3a");
    let token = Token::from_bytes(keybound::encoding::b64url_decode(answer["token"].as_str().unwrap()).unwrap());
    let claims = keybound::danger::insecure_decode_token(token.as_bytes())
        .unwrap()
        .claims;
    assert_eq!(claims.instance.as_deref(), Some("vm-7f3a"));
    body["instance"] = json!("has space");
    assert_eq!(
        code(exchange(fed.canton.url(), &foreign, Some(fed.user.key()), &body, NOW).await),
        "issuer.bad_request"
    );
}

/// `keybound demo federation --json`: every step as the spec says, checked
/// here against the codes of spec/federation.md, not the demo's own list.
#[cfg(feature = "cli")]
#[test]
fn the_federation_demo_shows_the_sequence_and_every_refusal() {
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin!("keybound"))
        .args(["demo", "federation", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let found: Value = serde_json::from_str(&stdout).unwrap();
    let steps = found["steps"].as_array().unwrap();
    for s in steps {
        assert_eq!(s["ok"], true, "{s:#}");
    }
    let refused: Vec<&str> = steps.iter().filter_map(|s| s["got"]["refused"].as_str()).collect();
    for code in [
        "fed.audience",
        "fed.pop_missing",
        "replay.detected",
        "fed.chain",
        "fed.domain",
        "fed.peer_unknown",
        "fed.no_grants",
    ] {
        assert!(refused.contains(&code), "{code} not shown: {refused:?}");
    }
    let exchanged = steps
        .iter()
        .find(|s| s["what"].as_str().unwrap().starts_with("Canton exchanges"))
        .unwrap();
    let text = exchanged["got"]["accepted"].as_str().unwrap();
    assert!(text.contains("origin") && text.contains("[\"member\"]"), "{text}");
    let after_down: Vec<&Value> = steps
        .iter()
        .filter(|s| s["what"].as_str().unwrap().contains("stopped"))
        .collect();
    assert_eq!(after_down.len(), 4, "{after_down:#?}");
}

/// A peer's key set served again at a lower sequence, with a retired key,
/// is ignored: Canton keeps the newer set (FD-05), the retired key stays
/// refused and the current one keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_key_set_rolled_back_to_a_retired_key_is_ignored() {
    let fed = Federation::start([None, None]).await;
    let issuer = "https://hyde.example";
    let retired = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let current = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let newer = KeySet::new()
        .with(b"h2".to_vec(), current.public_key().clone())
        .unwrap()
        .with_sequence(7);
    let served = hyde_serving(&fed, &newer).await;
    let eve = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let token = |key: &SigningKey, kid: &[u8]| {
        TokenBuilder::service(issuer, "eve@hyde", fed.canton.url(), eve.public_key().clone(), NOW)
            .sign(key, kid)
            .unwrap()
    };
    let body = nova_body(&fed.nova);
    exchange(fed.canton.url(), &token(&current, b"h2"), Some(&eve), &body, NOW)
        .await
        .unwrap();
    // An old document (sequence 6) with the retired key: the unknown kid
    // makes Canton refetch, and the older set is not installed.
    let old = KeySet::new()
        .with(b"h1".to_vec(), retired.public_key().clone())
        .unwrap()
        .with_sequence(6);
    *served.document.lock().unwrap() = old.to_cbor();
    let before = served.fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        code(exchange(fed.canton.url(), &token(&retired, b"h1"), Some(&eve), &body, NOW).await),
        "cose.key_unknown"
    );
    assert_eq!(
        served.fetches.load(std::sync::atomic::Ordering::SeqCst),
        before + 1,
        "Canton fetched the old document once and did not install it"
    );
    exchange(fed.canton.url(), &token(&current, b"h2"), Some(&eve), &body, NOW)
        .await
        .unwrap();
}

/// The same kid in the key sets of two peers (FD-02): a token naming
/// Stoughton is checked only with Stoughton's key under that kid, so one
/// signed by Hyde's key under it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kid_in_two_peers_sets_resolves_only_in_the_named_issuers() {
    let fed = Federation::start([None, None]).await;
    let (_, stoughton_kid) = fed.stoughton.state().keys.current().unwrap();
    let hyde_key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let set = KeySet::new()
        .with(stoughton_kid.clone(), hyde_key.public_key().clone())
        .unwrap()
        .with_sequence(1);
    let _served = hyde_serving(&fed, &set).await;
    let key = fed.user.key();
    let posing = TokenBuilder::service(
        fed.stoughton.url(),
        USER,
        fed.canton.url(),
        key.public_key().clone(),
        NOW,
    )
    .sign(&hyde_key, &stoughton_kid)
    .unwrap();
    assert_eq!(
        code(exchange(fed.canton.url(), &posing, Some(key), &nova_body(&fed.nova), NOW).await),
        "cose.bad_signature"
    );
    // The same kid under Hyde's own name verifies with Hyde's key.
    let eve = TokenBuilder::service(
        "https://hyde.example",
        "eve@hyde",
        fed.canton.url(),
        key.public_key().clone(),
        NOW,
    )
    .sign(&hyde_key, &stoughton_kid)
    .unwrap();
    exchange(fed.canton.url(), &eve, Some(key), &nova_body(&fed.nova), NOW)
        .await
        .unwrap();
}
