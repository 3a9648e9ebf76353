//! `keybound admin rotate` (issue 11 §3), over real HTTP on loopback: a
//! scheduled rotation under load with a service that holds a cached key
//! set, the refusal of a too-early one, and the emergency replacement of
//! the root secret with its "log in again" answer.
#![cfg(all(feature = "issuer", feature = "client"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keybound::Code;
use keybound::client::{Client, Scope, error_from_response};
use keybound::encoding::hex_encode;
use keybound::http::{KeyboundLayer, ServeConfig};
use keybound::issuer::loopback::{LoopbackIssuer, PROJECT, USER, World};
use keybound::issuer::{IssuerConfig, IssuerState};
use keybound::key::{Algorithm, SigningKey};
use keybound::keyset::{HttpKeys, HttpKeysOptions};
use keybound::verify::{Clock, SystemClock, TrustedIssuer, Verifier};
use serde_json::{Value, json};

use crate::common;

const ADMIN_PASSWORD: &str = "bootstrap-password-1";
const PASSWORD: &str = "correct horse battery";

/// The system clock moved by a fixed number of seconds, so that a test
/// starts at a chosen point of a key epoch. Issuer, clients and service
/// share it.
struct ShiftedClock(u64);

impl Clock for ShiftedClock {
    fn now(&self) -> u64 {
        SystemClock.now() + self.0
    }
}

/// A clock standing `into` seconds into an epoch of the default period
/// (3600 s), with the rest of the epoch ahead.
fn clock_into_epoch(into: u64) -> Arc<ShiftedClock> {
    let now = SystemClock.now();
    let target = (now / 3600 + 1) * 3600 + into;
    Arc::new(ShiftedClock(target - now))
}

/// A service on loopback that trusts the issuer's published keys, fetched
/// over HTTP and cached (the issuer's max-age is 900 s: no refresh during a
/// test, only a refetch on an unknown kid).
struct Service {
    keys: HttpKeys,
}

async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

async fn serve_service(listener: tokio::net::TcpListener, url: String, issuer: &str, clock: Arc<dyn Clock>) -> Service {
    let keys = HttpKeys::start(
        &format!("{issuer}/.well-known/keybound/keys"),
        HttpKeysOptions::default(),
    )
    .await
    .unwrap();
    let verifier = Verifier::builder(&url, TrustedIssuer::new(issuer, keys.clone()))
        .clock(clock)
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route("/v2/servers", axum::routing::get(|| async { "ok" }))
        .layer(KeyboundLayer::new(Arc::new(verifier), &url).unwrap());
    tokio::spawn(keybound::http::serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending(),
    ));
    Service { keys }
}

/// A bootstrapped issuer with the loopback world, its user's service being
/// the one `service_url` names.
async fn issuer_with_world(clock: Arc<dyn Clock>, service_url: &str) -> (LoopbackIssuer, tempfile::TempDir, Client) {
    let (issuer, dir) = common::start_issuer(ADMIN_PASSWORD, clock.clone(), |_| {}).await;
    // On the test's clock: the issuer checks proofs against it.
    let admin = Client::new(issuer.url(), SigningKey::generate(Algorithm::EdDSA).unwrap())
        .unwrap()
        .with_clock(clock);
    admin
        .login_password("admin@default", ADMIN_PASSWORD, None)
        .await
        .unwrap();
    issuer
        .create_world(
            &admin,
            &World {
                password: PASSWORD,
                services: &[service_url],
            },
        )
        .await
        .unwrap();
    (issuer, dir, admin)
}

async fn rotate(issuer: &LoopbackIssuer, admin: &Client, body: Value) -> (u16, Value) {
    let response = admin
        .request(
            reqwest::Method::POST,
            &format!("{}/v1/admin/keys/rotate", issuer.url()),
            &issuer.admin_scope(),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
    )
}

fn kid_of(token: &[u8]) -> Vec<u8> {
    keybound::danger::insecure_decode_token(token).unwrap().kid
}

/// A scheduled rotation in the middle of steady traffic: clients mint a
/// fresh token for every call and call a service whose key set was fetched
/// once, before the rotation. Not one request is refused, tokens minted
/// after the rotation carry the new kid, and the service never refetches.
#[tokio::test]
async fn a_scheduled_rotation_under_load_refuses_nothing() {
    // 1200 s into the epoch: the next key has been published for longer
    // than the cache max-age (900 s) + 10 s, so no --force is needed.
    let clock = clock_into_epoch(1200);
    let (listener, service_url) = bind().await;
    let (issuer, _dir, admin) = issuer_with_world(clock.clone(), &service_url).await;
    let service = serve_service(listener, service_url.clone(), issuer.url(), clock.clone()).await;
    let (_, old_kid) = issuer.state().keys.current().unwrap();

    let rotated = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut workers = Vec::new();
    for _ in 0..2 {
        let client = Client::new(issuer.url(), SigningKey::generate(Algorithm::EdDSA).unwrap())
            .unwrap()
            .with_clock(clock.clone());
        client.login_password(USER, PASSWORD, None).await.unwrap();
        let (rotated, url) = (rotated.clone(), service_url.clone());
        workers.push(tokio::spawn(async move {
            let scope = Scope::new(&url).project(PROJECT);
            // (minted after the rotation answered, kid, status)
            let mut calls: Vec<(bool, Vec<u8>, u16)> = Vec::new();
            let mut after = 0;
            // Bounded: 60 calls after the rotation, 2000 in all, or 20 s.
            while after < 60 && calls.len() < 2000 && Instant::now() < deadline {
                let is_after = rotated.load(Ordering::SeqCst);
                client.forget_token(&scope);
                let token = client.service_token(&scope).await.unwrap();
                let response = client.get(&format!("{url}/v2/servers"), &scope).send().await.unwrap();
                calls.push((is_after, kid_of(token.as_bytes()), response.status().as_u16()));
                after += usize::from(is_after);
            }
            calls
        }));
    }
    // Let the traffic run, then rotate in its middle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, answer) = rotate(&issuer, &admin, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    rotated.store(true, Ordering::SeqCst);
    let new_kid = issuer.state().keys.current().unwrap().1;
    assert_eq!(answer["kid"], hex_encode(&new_kid));
    assert_eq!(answer["previous_kid"], hex_encode(&old_kid));
    assert_ne!(new_kid, old_kid);

    let mut calls = Vec::new();
    for worker in workers {
        calls.extend(worker.await.unwrap());
    }
    let before: Vec<_> = calls.iter().filter(|c| !c.0).collect();
    let after: Vec<_> = calls.iter().filter(|c| c.0).collect();
    let refused: Vec<_> = calls.iter().filter(|c| c.2 != 200).collect();
    eprintln!(
        "{} calls before the rotation, {} after, {} refused",
        before.len(),
        after.len(),
        refused.len()
    );
    assert!(!before.is_empty() && after.len() >= 100, "traffic on both sides");
    assert_eq!(refused.len(), 0, "refused: {refused:?}");
    assert!(
        after.iter().all(|c| c.1 == new_kid),
        "tokens minted after carry the new kid"
    );
    assert!(before.iter().any(|c| c.1 == old_kid));
    // The new key came from the cached set: the service fetched once.
    assert_eq!(service.keys.stats().successes, 1, "{:?}", service.keys.stats());
}

/// A second scheduled rotation before verifiers can have fetched the new
/// next key is refused, with the reason and the wait, unless forced; a
/// replica on the same database signs with the new key within the poll.
#[tokio::test]
async fn a_rotation_too_early_is_refused_and_other_replicas_follow() {
    // 100 s into the epoch: its next key is only 100 s old.
    let clock = clock_into_epoch(100);
    let (issuer, _dir, admin) = issuer_with_world(clock.clone(), "https://nova.example").await;
    let (status, answer) = rotate(&issuer, &admin, json!({})).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("issuer.rotation_too_early"))
    );
    let detail = answer["detail"].as_str().unwrap();
    // "published for only N s … Rotate again in M s": N + M = 900 + 10.
    let number_after = |prefix: &str| -> u64 {
        let rest = &detail[detail.find(prefix).unwrap_or_else(|| panic!("{detail}")) + prefix.len()..];
        rest.split(' ').next().unwrap().parse().unwrap()
    };
    let (published, wait) = (number_after("published for only "), number_after("Rotate again in "));
    assert!((100..110).contains(&published), "{detail}");
    assert_eq!(published + wait, 910, "{detail}");
    assert!(detail.contains("--force"), "{detail}");
    let before = issuer.state().keys.current().unwrap().1;
    let (status, forced) = rotate(&issuer, &admin, json!({"force": true})).await;
    assert_eq!(status, 200, "{forced}");
    let after = issuer.state().keys.current().unwrap().1;
    assert_ne!(before, after);
    // At once again: the key just published as next is 0 s old.
    let (status, again) = rotate(&issuer, &admin, json!({"force": null})).await;
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("issuer.rotation_too_early"))
    );
    assert_eq!(issuer.state().keys.current().unwrap().1, after);

    // A second replica on the same database: it starts with the offset and
    // follows the next rotation within the poll interval (5 s).
    // (The SQLite data dir is locked to one issuer, so the replica has its
    // own data dir and names the first one's database and root secret.)
    let replica_dir = tempfile::tempdir().unwrap();
    let mut replica_config = issuer.state().config.clone();
    replica_config.database_url = Some(replica_config.database_url());
    replica_config.root_secret_file = Some(replica_config.root_secret_path());
    replica_config.data_dir = replica_dir.path().to_owned();
    let replica = IssuerState::open(replica_config, clock.clone()).await.unwrap();
    assert_eq!(replica.keys.current().unwrap().1, after);
    let (status, third) = rotate(&issuer, &admin, json!({"force": true})).await;
    assert_eq!(status, 200, "{third}");
    let third_kid = issuer.state().keys.current().unwrap().1;
    let waited = Instant::now();
    while replica.keys.current().unwrap().1 != third_kid {
        assert!(waited.elapsed() < Duration::from_secs(12), "the replica did not follow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the other replica followed after {:?}", waited.elapsed());
    // Both publish the previous keys: tokens signed before stay valid.
    let published = replica.keys.published().unwrap();
    for kid in [&before, &after, &third_kid] {
        assert!(published.get(kid).is_some());
    }
}

/// Serves an issuer state on `listener` (the restart of a replica).
fn serve_issuer(state: Arc<IssuerState>, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    let app = keybound::issuer::router(state).unwrap();
    tokio::spawn(keybound::http::serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending(),
    ))
}

/// An emergency replacement while the issuer runs: the running replica
/// stops signing within the poll; restarted with the new secret, it answers
/// sessions from before with `session.key_replaced` ("log in again"), a new
/// login works, and a token signed under an old key is refused by a service
/// once the service has met a token under a new key.
#[tokio::test]
async fn an_emergency_replacement_tells_old_sessions_to_log_in_again() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (listener, service_url) = bind().await;
    let (issuer, _dir, _admin) = issuer_with_world(clock.clone(), &service_url).await;
    let service = serve_service(listener, service_url.clone(), issuer.url(), clock.clone()).await;
    let config: IssuerConfig = issuer.state().config.clone();
    let scope = Scope::new(&service_url).project(PROJECT);
    let calls = format!("{service_url}/v2/servers");

    let old = Client::new(issuer.url(), SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
    old.login_password(USER, PASSWORD, None).await.unwrap();
    let old_token = old.service_token(&scope).await.unwrap();
    assert_eq!(old.get(&calls, &scope).send().await.unwrap().status(), 200);

    let root_before = std::fs::read(config.root_secret_path()).unwrap();
    let replaced = keybound::issuer::replace_root_secret(&config).await.unwrap();
    let root_after = std::fs::read(config.root_secret_path()).unwrap();
    assert_ne!(root_before, root_after, "a new secret in the root secret file");
    assert_eq!(root_after.len(), 32);
    assert_eq!(
        replaced.fingerprint,
        keybound::issuer::keys::root_fingerprint(&root_after)
    );
    assert!(replaced.retired_kids >= 3, "{replaced:?}");

    // The running replica sees the new fingerprint within the poll (5 s).
    let http = reqwest::Client::new();
    let waited = Instant::now();
    loop {
        let ready = http.get(format!("{}/readyz", issuer.url())).send().await.unwrap();
        if ready.status() != 200 {
            let problem: Value = serde_json::from_slice(&ready.bytes().await.unwrap()).unwrap();
            assert_eq!(problem["code"], "issuer.root_secret_mismatch");
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(12),
            "the replica kept its old keys"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys = http
        .get(format!("{}/.well-known/keybound/keys", issuer.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(keys.status(), 500, "old keys are no longer published");
    old.forget_token(&scope);
    let refused = old.service_token(&scope).await.unwrap_err();
    assert_eq!(refused.code(), Code::SessionKeyReplaced, "{refused}");

    // Restart the replica with the new secret (the file), on the same address.
    let addr = issuer.addr();
    drop(issuer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let state = IssuerState::open(config.clone(), clock.clone()).await.unwrap();
    let _server = serve_issuer(state.clone(), tokio::net::TcpListener::bind(addr).await.unwrap());

    // A session from before: "log in again", never cose.bad_signature.
    let refused = old.service_token(&scope).await.unwrap_err();
    assert_eq!(refused.code(), Code::SessionKeyReplaced, "{refused}");
    assert!(refused.message().contains("log in again"), "{refused}");
    let session = old.session().unwrap();
    let raw = raw_mint(&config.issuer_id, &old, session.token.as_bytes(), &service_url).await;
    assert_eq!(raw.status(), 401);
    assert_eq!(raw.headers()["www-authenticate"], "KB error=\"session.key_replaced\"");
    let problem: Value = serde_json::from_slice(&raw.bytes().await.unwrap()).unwrap();
    assert_eq!(problem["title"], "The issuer's keys were replaced; log in again");
    // A token signed by someone else under an unknown kid is still cose.key_unknown.
    let stranger = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let forged = keybound::token::TokenBuilder::session(
        &config.issuer_id,
        USER,
        old.key().public_key().clone(),
        SystemClock.now(),
    )
    .domain("stoughton")
    .sign(&stranger, b"unknown!")
    .unwrap();
    let raw = raw_mint(&config.issuer_id, &old, forged.as_bytes(), &service_url).await;
    assert_eq!(raw.headers()["www-authenticate"], "KB error=\"cose.key_unknown\"");

    // Logging in again works, and so does the service with the new token.
    old.login_password(USER, PASSWORD, None).await.unwrap();
    let new_token = old.service_token(&scope).await.unwrap();
    assert_ne!(kid_of(new_token.as_bytes()), kid_of(old_token.as_bytes()));
    let answer = old.get(&calls, &scope).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    // The service refetched on the new kid and no longer holds the old keys:
    // the old token (still within its lifetime) is refused.
    let response = signed_call(&calls, &old, old_token.as_bytes()).await;
    assert_eq!(response.status(), 401);
    let refusal = error_from_response(response).await;
    assert_eq!(refusal.code(), Code::CoseKeyUnknown, "{refusal}");
    assert_eq!(service.keys.stats().successes, 2, "one refetch, on the new kid");
}

/// `POST /v1/tokens` with `token` and a fresh proof by `client`'s key.
async fn raw_mint(issuer: &str, client: &Client, token: &[u8], audience: &str) -> reqwest::Response {
    let url = format!("{issuer}/v1/tokens");
    let body = serde_json::to_vec(&json!({"audience": audience})).unwrap();
    let proof = keybound::proof::ProofBuilder::new("POST", &url, token, &body, SystemClock.now())
        .unwrap()
        .sign(client.key())
        .unwrap();
    reqwest::Client::new()
        .post(&url)
        .header(
            "authorization",
            format!("KB {}", keybound::encoding::b64url_encode(token)),
        )
        .header("kb-proof", proof.to_base64url())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A GET of `url` with `token` and a fresh proof by `client`'s key.
async fn signed_call(url: &str, client: &Client, token: &[u8]) -> reqwest::Response {
    let proof = keybound::proof::ProofBuilder::new("GET", url, token, b"", SystemClock.now())
        .unwrap()
        .sign(client.key())
        .unwrap();
    reqwest::Client::new()
        .get(url)
        .header(
            "authorization",
            format!("KB {}", keybound::encoding::b64url_encode(token)),
        )
        .header("kb-proof", proof.to_base64url())
        .send()
        .await
        .unwrap()
}

/// The spec describes the command, not the manual procedure it replaces.
#[test]
fn the_spec_documents_the_rotation_command() {
    let issuer_md = include_str!("../../spec/issuer.md");
    for needle in [
        "keybound admin rotate --emergency",
        "`POST /v1/admin/keys/rotate`",
        "`session.key_replaced`",
        "`issuer.rotation_too_early`",
        "every **5 s**",
    ] {
        assert!(issuer_md.contains(needle), "spec/issuer.md lacks {needle:?}");
    }
    for gone in ["delete the one row", "is not built yet"] {
        assert!(!issuer_md.contains(gone), "spec/issuer.md still says {gone:?}");
    }
    let errors_md = include_str!("../../spec/errors.md");
    assert!(!errors_md.contains("delete the `root_secret` row"));
}
