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

use keybound::client::Client;
use keybound::issuer::IssuerConfig;
use keybound::issuer::loopback::{LoopbackIssuer, World};
use keybound::key::{Algorithm, SigningKey};
use keybound::proof::ProofBuilder;
use keybound::verify::{Clock, SystemClock};
use serde_json::json;

const PASSWORD: &str = "bench-admin-password";

/// One request, serialised as HTTP/1.1 bytes before the clock starts.
type Prepared = Vec<u8>;

fn prepare(addr: &str, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Prepared {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends every request over `concurrency` keep-alive connections with a
/// minimal HTTP/1.1 client (so the client's own cost stays small, as with
/// wrk); returns requests per second. Every answer must be 200.
async fn blast(addr: &str, requests: Vec<Prepared>, concurrency: usize) -> f64 {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (requests, next, addr) = (requests.clone(), next.clone(), addr.to_owned());
            tokio::spawn(async move {
                let mut stream = BufReader::new(tokio::net::TcpStream::connect(&addr).await.expect("connect"));
                let mut line = String::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else { break };
                    stream.get_mut().write_all(request).await.expect("write");
                    let mut length = 0usize;
                    let mut status = String::new();
                    loop {
                        line.clear();
                        stream.read_line(&mut line).await.expect("read");
                        if status.is_empty() {
                            status = line.clone();
                        } else if line == "\r\n" {
                            break;
                        } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().expect("content-length");
                        }
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.expect("body");
                    assert!(
                        status.starts_with("HTTP/1.1 200"),
                        "{status}{}",
                        String::from_utf8_lossy(&body)
                    );
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
    let addr = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "Hello, World!" }));
    tokio::spawn(keybound::http::serve(
        listener,
        app,
        keybound::http::ServeConfig::default(),
        std::future::pending(),
    ));
    let requests = (0..n).map(|_| prepare(&addr, "GET", "/", &[], b"")).collect();
    blast(&addr, requests, concurrency).await
}

async fn mint_rate(database_url: Option<String>, n: usize, concurrency: usize) -> f64 {
    let dir = std::env::temp_dir().join(format!("keybound-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = IssuerConfig::new(&dir);
    config.database_url = database_url;
    // Many logins from one address; the login rate limit has its own tests.
    config.login_rate_per_minute = 1_000_000;
    config.login_burst = 100_000;
    let loopback = LoopbackIssuer::start(config, PASSWORD, Arc::new(SystemClock))
        .await
        .unwrap();
    let issuer = loopback.url().to_owned();
    let addr = loopback.addr();
    let admin = loopback.admin(PASSWORD).await.unwrap();
    let world = World {
        password: "correct horse battery",
        services: &["https://nova.example"],
    };
    loopback.create_world(&admin, &world).await.unwrap();
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
            let headers = [
                ("content-type", "application/json".to_owned()),
                ("authorization", format!("KB {}", session.token.to_base64url())),
                ("kb-proof", proof.to_base64url()),
            ];
            prepare(&addr.to_string(), "POST", "/v1/tokens", &headers, &body)
        })
        .collect();
    let rate = blast(&addr.to_string(), requests, concurrency).await;
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
