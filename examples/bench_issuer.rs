//! Token-minting throughput of the issuer over HTTP on loopback, next to an
//! axum hello-world endpoint measured in the same run.
//!
//! `cargo run --release --example bench_issuer` prints one JSON object.
//! Requests are prepared before the clock starts (each mint request needs
//! its own proof: signing is the client's cost, not the issuer's); then
//! `BENCH_CONCURRENCY` (default 32) connections send them as fast as the
//! issuer answers. PostgreSQL is measured too when `KEYBOUND_TEST_POSTGRES_URL`
//! is set (in a schema of its own, dropped afterwards).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use keybound::client::{Client, Scope};
use keybound::issuer::{IssuerConfig, IssuerState};
use keybound::key::{Algorithm, SigningKey};
use keybound::proof::ProofBuilder;
use keybound::verify::{Clock, SystemClock};
use serde_json::json;

const PASSWORD: &str = "bench-admin-password";

struct Prepared {
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// Sends every request from `concurrency` tasks; returns requests per second.
async fn blast(requests: Vec<Prepared>, concurrency: usize) -> f64 {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, requests, next) = (http.clone(), requests.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(r) = requests.get(i) else { break };
                    let mut request = if r.body.is_empty() {
                        http.get(&r.url)
                    } else {
                        http.post(&r.url).body(r.body.clone())
                    };
                    for (name, value) in &r.headers {
                        request = request.header(*name, value);
                    }
                    let response = request.send().await.expect("request sent");
                    let status = response.status();
                    let _ = response.bytes().await;
                    assert!(status.is_success(), "status {status}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    requests.len() as f64 / start.elapsed().as_secs_f64()
}

async fn hello_world(n: usize, concurrency: usize) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::Router::new().route("/", axum::routing::get(|| async { "Hello, World!" })),
        )
        .await
    });
    let requests = (0..n)
        .map(|_| Prepared {
            url: url.clone(),
            headers: Vec::new(),
            body: Vec::new(),
        })
        .collect();
    blast(requests, concurrency).await
}

async fn mint_rate(database_url: Option<String>, n: usize, concurrency: usize) -> f64 {
    let dir = std::env::temp_dir().join(format!("keybound-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = IssuerConfig::new(&dir);
    config.listen = addr;
    config.issuer_id = format!("http://{addr}");
    config.database_url = database_url;
    keybound::issuer::bootstrap(&config, PASSWORD).await.unwrap();
    let state = IssuerState::open(config, Arc::new(SystemClock)).await.unwrap();
    let issuer = state.config.issuer_id.clone();
    let app = keybound::issuer::router(state).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let admin = Client::new(&issuer, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
    admin.login_password("admin@default", PASSWORD, None).await.unwrap();
    let scope = Scope::new(format!("{issuer}/admin")).project("admin").domain("default");
    for (method, path, body) in [
        ("POST", "/v1/admin/domains", json!({"name": "stoughton"})),
        (
            "POST",
            "/v1/admin/projects",
            json!({"name": "turing", "domain": "stoughton"}),
        ),
        ("POST", "/v1/admin/roles", json!({"name": "member"})),
        (
            "POST",
            "/v1/admin/users",
            json!({"user": "ayoung@stoughton", "password": "correct horse battery"}),
        ),
        (
            "POST",
            "/v1/admin/grants",
            json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "member"}),
        ),
        (
            "POST",
            "/v1/admin/services",
            json!({"audience": "https://nova.example"}),
        ),
    ] {
        let response = admin
            .request(method.parse().unwrap(), &format!("{issuer}{path}"), &scope)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    // Several clients, each with its own key and session.
    let mut sessions = Vec::new();
    for _ in 0..8 {
        let client = Client::new(&issuer, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
        client
            .login_password("ayoung@stoughton", "correct horse battery", None)
            .await
            .unwrap();
        sessions.push(client);
    }
    let url = format!("{issuer}/v1/tokens");
    let body = serde_json::to_vec(&json!({"audience": "https://nova.example", "project": "turing"})).unwrap();
    let now = SystemClock.now();
    let requests = (0..n)
        .map(|i| {
            let client = &sessions[i % sessions.len()];
            let session = client.session().unwrap();
            let proof = ProofBuilder::new("POST", &url, session.token.as_bytes(), &body, now)
                .unwrap()
                .sign(client.key())
                .unwrap();
            Prepared {
                url: url.clone(),
                headers: vec![
                    ("content-type", "application/json".into()),
                    ("authorization", format!("KB {}", session.token.to_base64url())),
                    ("kb-proof", proof.to_base64url()),
                ],
                body: body.clone(),
            }
        })
        .collect();
    let rate = blast(requests, concurrency).await;
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

async fn pg_schema(url: &str) -> (String, String) {
    sqlx::any::install_default_drivers();
    let schema = format!("kbbench_{}", std::process::id());
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{sep}options=-c%20search_path%3D{schema}"), schema)
}

fn main() {
    let n: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hello = hello_world(n * 2, concurrency).await;
        let sqlite = mint_rate(None, n, concurrency).await;
        let postgres = match std::env::var("KEYBOUND_TEST_POSTGRES_URL") {
            Ok(url) => {
                let (schema_url, schema) = pg_schema(&url).await;
                let rate = mint_rate(Some(schema_url), n, concurrency).await;
                let pool = sqlx::AnyPool::connect(&url).await.unwrap();
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&pool)
                    .await;
                Some(rate)
            }
            Err(_) => None,
        };
        let round = |x: f64| x.round() as u64;
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "hello_world_rps": round(hello),
                "mint_sqlite_tokens_per_s": round(sqlite),
                "mint_postgres_tokens_per_s": postgres.map(round),
                "mint_sqlite_over_hello": (sqlite / hello * 1000.0).round() / 1000.0,
                "mint_postgres_over_hello": postgres.map(|p| (p / hello * 1000.0).round() / 1000.0),
                "requests": n,
                "concurrency": concurrency,
                "target": "mint_sqlite_tokens_per_s >= 5000",
            }))
            .unwrap()
        );
    });
}
