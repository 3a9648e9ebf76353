//! Issue 11 §5, the issuer's restart: its in-memory replay store is fenced
//! at its start, so a captured admin request replayed after a restart is
//! refused (`replay.store_restarted`) instead of executed again, and the
//! client library recovers from the fence with one retry. (A service's
//! memory store: RP-05 in tests/it/negative.rs; Redis losing its data:
//! tests/it/redis_replay.rs.)
#![cfg(all(feature = "issuer", feature = "client"))]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keybound::client::{Client, Scope};
use keybound::encoding::b64url_encode;
use keybound::issuer::{IssuerConfig, IssuerState};
use keybound::key::{Algorithm, SigningKey};
use keybound::proof::ProofBuilder;
use keybound::verify::{Clock, ManualClock, SystemClock};
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "bootstrap-password-1";
const BOB_PASSWORD: &str = "bob-password-for-tests-1";

/// Serves an issuer on `addr` (its previous process's port) until aborted.
async fn serve(config: IssuerConfig, clock: Arc<ManualClock>) -> tokio::task::JoinHandle<()> {
    let mut listener = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(config.listen).await {
            Ok(bound) => {
                listener = Some(bound);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let listener = listener.expect("the issuer's port is free again");
    let state = IssuerState::open(config, clock).await.unwrap();
    let app = keybound::issuer::router(state).unwrap();
    // Served like `keybound serve` (connect info for the login rate limit, deadlines).
    tokio::spawn(keybound::http::serve(
        listener,
        app,
        keybound::http::ServeConfig::default(),
        std::future::pending(),
    ))
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_captured_admin_request_replayed_after_an_issuer_restart_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let mut config = IssuerConfig::new(dir.path());
    config.listen = addr;
    config.issuer_id = url.clone();
    keybound::issuer::bootstrap(&config, ADMIN_PASSWORD).await.unwrap();
    let start = SystemClock.now();
    let clock = Arc::new(ManualClock::new(start));
    let server = serve(config.clone(), clock.clone()).await;

    let admin_key = || SigningKey::derive(Algorithm::EdDSA, b"restarts", b"admin").unwrap();
    let admin = Client::new(&url, admin_key()).unwrap().with_clock(clock.clone());
    admin
        .login_password("admin@default", ADMIN_PASSWORD, None)
        .await
        .unwrap();
    let scope = Scope::new(format!("{url}/admin")).project("admin").domain("default");
    let created = admin
        .post(&format!("{url}/v1/admin/users"), &scope)
        .json(&json!({"user": "bob@default", "password": BOB_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{:?}", json_of(created).await);

    // The request an attacker captures: disable bob.
    let disable_url = format!("{url}/v1/admin/users/bob@default/disable");
    let token = admin.service_token(&scope).await.unwrap();
    let proof = ProofBuilder::new("POST", &disable_url, token.as_bytes(), b"{}", clock.now())
        .unwrap()
        .sign(&admin_key())
        .unwrap();
    let captured = || {
        reqwest::Client::new()
            .post(&disable_url)
            .header("authorization", format!("KB {}", b64url_encode(token.as_bytes())))
            .header("kb-proof", proof.to_base64url())
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    let (status, answer) = json_of(captured().await.unwrap()).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({"user": "bob@default", "enabled": false}))
    );
    let (status, _) = json_of(captured().await.unwrap()).await;
    assert_eq!(status, 401, "a replay before the restart is refused too");
    let enabled = admin
        .post(&format!("{url}/v1/admin/users/bob@default/enable"), &scope)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), 200);

    // The issuer restarts five seconds later, with an empty replay store.
    server.abort();
    let _ = server.await;
    clock.advance(5);
    let server = serve(config, clock.clone()).await;
    let replayed = captured().await.unwrap();
    let challenge = replayed.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let (status, answer) = json_of(replayed).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["code"], "replay.store_restarted");
    assert_eq!(challenge, "KB error=\"replay.store_restarted\"");
    // Bob was not disabled again: he can log in.
    let bob = Client::new(&url, SigningKey::generate(Algorithm::EdDSA).unwrap())
        .unwrap()
        .with_clock(clock.clone());
    bob.login_password("bob@default", BOB_PASSWORD, None).await.unwrap();

    // A client whose clock is a second behind the issuer's makes its first
    // proof before the fence; its one retry, a second later, is accepted.
    let behind = Arc::new(ManualClock::new(clock.now() - 1));
    let late = Client::new(&url, SigningKey::generate(Algorithm::EdDSA).unwrap())
        .unwrap()
        .with_clock(behind);
    late.login_password("bob@default", BOB_PASSWORD, None).await.unwrap();
    // Three seconds behind, the retry is refused too, and the client stops.
    let far_behind = Arc::new(ManualClock::new(clock.now() - 3));
    let stale = Client::new(&url, SigningKey::generate(Algorithm::EdDSA).unwrap())
        .unwrap()
        .with_clock(far_behind);
    let refused = stale
        .login_password("bob@default", BOB_PASSWORD, None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), keybound::Code::ReplayStoreRestarted, "{refused}");
    server.abort();
}
