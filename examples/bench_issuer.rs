//! Token-minting throughput of the issuer over HTTP on loopback, next to an
//! axum hello-world endpoint measured in the same run.
//!
//! `cargo run --release --example bench_issuer` prints one JSON object.
//! Requests are prepared before the clock starts (each mint request needs
//! its own proof: signing is the client's cost, not the issuer's); then
//! `BENCH_CONCURRENCY` (default 32) connections send them as fast as the
//! issuer answers. PostgreSQL is measured too when `KEYBOUND_TEST_POSTGRES_URL`
//! is set (in a schema of its own, dropped afterwards). Mints from a trust
//! (spec/delegation.md §4) are measured the same way, from a trust and from
//! the end of a chain of three (each mint re-checks every link), next to
//! plain mints on the same backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use keybound::client::{Client, NewTrust};
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

/// Mints a second for plain tokens (`depth` 0) or from the last trust of a
/// chain of `depth` trusts.
async fn mint_rate(database_url: Option<String>, n: usize, concurrency: usize, depth: usize) -> f64 {
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
    let login = |user: String| {
        let issuer = issuer.clone();
        async move {
            let client = Client::new(&issuer, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
            client
                .login_password(&user, "correct horse battery", None)
                .await
                .unwrap();
            client
        }
    };
    // A chain of `depth` trusts: ayoung → t1 → t2 → …, unlimited uses.
    let mut user = "ayoung@stoughton".to_owned();
    let mut trust: Option<String> = None;
    for level in 1..=depth {
        let trustee = format!("t{level}@stoughton");
        let response = admin
            .request(
                reqwest::Method::POST,
                &format!("{issuer}/v1/admin/users"),
                &loopback.admin_scope(),
            )
            .json(&json!({"user": trustee, "kind": "service", "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let request = NewTrust {
            trustee: trustee.clone(),
            project: trust.is_none().then(|| "turing".to_owned()),
            roles: vec!["member".into()],
            redelegation: Some((depth - level) as u64),
            parent: trust.clone(),
            ..Default::default()
        };
        let created = login(user).await.create_trust(&request).await.unwrap();
        trust = created["id"].as_str().map(str::to_owned);
        user = trustee;
    }
    // Several clients, each with its own key and session.
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(login(user.clone()).await);
    }
    let url = format!("{issuer}/v1/tokens");
    let body = match &trust {
        None => json!({"audience": "https://nova.example", "project": "turing"}),
        Some(id) => json!({"audience": "https://nova.example", "trust": id}),
    };
    let body = serde_json::to_vec(&body).unwrap();
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
        let sqlite = mint_rate(None, n, concurrency, 0).await;
        let sqlite_trust = mint_rate(None, n, concurrency, 1).await;
        let sqlite_chain = mint_rate(None, n, concurrency, 3).await;
        let postgres = match std::env::var("KEYBOUND_TEST_POSTGRES_URL") {
            Ok(url) => {
                let mut rates = Vec::new();
                for depth in [0, 1, 3] {
                    let (schema_url, schema) = pg_schema(&url).await;
                    rates.push(mint_rate(Some(schema_url), n, concurrency, depth).await);
                    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&pool)
                        .await;
                }
                Some(rates)
            }
            Err(_) => None,
        };
        let round = |x: f64| x.round() as u64;
        let ratio = |a: f64, b: f64| (a / b * 1000.0).round() / 1000.0;
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "hello_world_rps": round(hello),
                "mint_sqlite_tokens_per_s": round(sqlite),
                "mint_postgres_tokens_per_s": postgres.as_ref().map(|p| round(p[0])),
                "mint_sqlite_over_hello": ratio(sqlite, hello),
                "mint_postgres_over_hello": postgres.as_ref().map(|p| ratio(p[0], hello)),
                "trust_mint_sqlite_tokens_per_s": round(sqlite_trust),
                "trust_chain3_mint_sqlite_tokens_per_s": round(sqlite_chain),
                "trust_mint_sqlite_over_plain": ratio(sqlite_trust, sqlite),
                "trust_chain3_mint_sqlite_over_plain": ratio(sqlite_chain, sqlite),
                "trust_mint_postgres_tokens_per_s": postgres.as_ref().map(|p| round(p[1])),
                "trust_chain3_mint_postgres_tokens_per_s": postgres.as_ref().map(|p| round(p[2])),
                "trust_mint_postgres_over_plain": postgres.as_ref().map(|p| ratio(p[1], p[0])),
                "trust_chain3_mint_postgres_over_plain": postgres.as_ref().map(|p| ratio(p[2], p[0])),
                "requests": n,
                "concurrency": concurrency,
                "target": "mint_sqlite_tokens_per_s >= 5000",
            }))
            .unwrap()
        );
    });
}
