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
//! plain mints on the same backend. Token exchanges (spec/federation.md
//! §4) are measured at a second issuer, Canton, which exchanges tokens of a
//! first, Stoughton, next to plain mints at Canton in the same run; with the
//! bytes of an exchanged token and of a local one of the same scope.
//! With PostgreSQL, plain mints are also measured through one replica and
//! through two replicas of one issuer on the same database (tokens/s, p50
//! and p99), the second as `keybound serve` replicas share it: one root
//! secret, and one Redis replay store when `KEYBOUND_TEST_REDIS_URL` is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use keybound::client::{Client, NewTrust, Scope};
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

/// What one [`blast`] measured.
struct Blasted {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Sends every request over `concurrency` keep-alive connections with a
/// minimal HTTP/1.1 client (so the client's own cost stays small, as with
/// wrk); returns requests per second. Every answer must be 200.
async fn blast(addr: &str, requests: Vec<Prepared>, concurrency: usize) -> f64 {
    blast_to(&[addr.to_owned()], requests, concurrency).await.per_s
}

/// [`blast`] with the connections spread evenly over `addrs` (as a
/// balancer with keep-alive spreads them over replicas), with each
/// request's latency.
async fn blast_to(addrs: &[String], requests: Vec<Prepared>, concurrency: usize) -> Blasted {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let (requests, next, addr) = (requests.clone(), next.clone(), addrs[c % addrs.len()].clone());
            tokio::spawn(async move {
                let mut stream = BufReader::new(tokio::net::TcpStream::connect(&addr).await.expect("connect"));
                let mut line = String::new();
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else { break };
                    let sent = Instant::now();
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
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    assert!(
                        status.starts_with("HTTP/1.1 200"),
                        "{status}{}",
                        String::from_utf8_lossy(&body)
                    );
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests.len());
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let per_s = requests.len() as f64 / start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    let round = |x: Option<&f64>| x.map_or(0.0, |x| (x * 100.0).round() / 100.0);
    Blasted {
        per_s,
        p50_ms: round(at(0.50)),
        p99_ms: round(at(0.99)),
    }
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

async fn post(issuer: &LoopbackIssuer, admin: &Client, path: &str, body: serde_json::Value) {
    issuer
        .admin_call(admin, reqwest::Method::POST, path, Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// What the exchange measurement found.
struct Exchange {
    exchanges_per_s: f64,
    mints_per_s: f64,
    federated_bytes: usize,
    local_bytes: usize,
    peer_token_bytes: usize,
}

/// Exchanges a second at Canton of tokens Stoughton minted for it, and
/// plain mints a second at Canton for the same audience and project.
async fn exchange_rate(n: usize, concurrency: usize) -> Exchange {
    let start = |name: &str| {
        let dir = std::env::temp_dir().join(format!("keybound-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = IssuerConfig::new(&dir);
        config.login_rate_per_minute = 1_000_000;
        config.login_burst = 100_000;
        async move {
            (
                LoopbackIssuer::start(config, PASSWORD, Arc::new(SystemClock))
                    .await
                    .unwrap(),
                dir,
            )
        }
    };
    let (stoughton, stoughton_dir) = start("stoughton").await;
    let (canton, canton_dir) = start("canton").await;
    let stoughton_admin = stoughton.admin(PASSWORD).await.unwrap();
    let canton_admin = canton.admin(PASSWORD).await.unwrap();
    let password = "correct horse battery";
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
        json!({"user": "ayoung@stoughton", "password": password}),
    )
    .await;
    for (path, body) in [
        ("/v1/admin/domains", json!({"name": "canton"})),
        ("/v1/admin/projects", json!({"name": "turing", "domain": "canton"})),
        ("/v1/admin/roles", json!({"name": "member"})),
        ("/v1/admin/services", json!({"audience": "https://nova.example"})),
        (
            "/v1/admin/users",
            json!({"user": "ayoung@canton", "password": password}),
        ),
        (
            "/v1/admin/grants",
            json!({"user": "ayoung@canton", "project": "turing@canton", "role": "member"}),
        ),
    ] {
        post(&canton, &canton_admin, path, body).await;
    }
    let peer = |issuer: &LoopbackIssuer, domain: &str| json!({"issuer": issuer.url(), "keys_url": format!("{}/.well-known/keybound/keys", issuer.url()), "domains": [domain]});
    post(&stoughton, &stoughton_admin, "/v1/admin/peers", peer(&canton, "canton")).await;
    post(&canton, &canton_admin, "/v1/admin/peers", peer(&stoughton, "stoughton")).await;
    post(
        &canton,
        &canton_admin,
        "/v1/admin/remote-grants",
        json!({"user": "ayoung@stoughton", "project": "turing@canton", "role": "member"}),
    )
    .await;
    let login = |issuer: String, user: &'static str| async move {
        let client = Client::new(&issuer, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
        client.login_password(user, password, None).await.unwrap();
        client
    };
    let addr = canton.addr().to_string();
    let scope = json!({"audience": "https://nova.example", "project": "turing", "domain": "canton"});
    let body = serde_json::to_vec(&scope).unwrap();
    // Both measured against Canton, each client with its own key: a peer
    // token per remote client (minted once, as a client would), a session
    // per local one; a fresh proof per request.
    let mut remote = Vec::new();
    let mut local = Vec::new();
    for _ in 0..8 {
        let client = login(stoughton.url().to_owned(), "ayoung@stoughton").await;
        let token = client.service_token(&Scope::new(canton.url())).await.unwrap();
        remote.push((client, token));
        let client = login(canton.url().to_owned(), "ayoung@canton").await;
        let session = client.session().unwrap().token;
        local.push((client, session));
    }
    let now = SystemClock.now();
    let prepared = |clients: &[(Client, keybound::token::Token)], path: &str| {
        let url = format!("{}{path}", canton.url());
        (0..n)
            .map(|i| {
                let (client, token) = &clients[i % clients.len()];
                let proof = ProofBuilder::new("POST", &url, token.as_bytes(), &body, now)
                    .unwrap()
                    .sign(client.key())
                    .unwrap();
                let headers = [
                    ("content-type", "application/json".to_owned()),
                    ("authorization", format!("KB {}", token.to_base64url())),
                    ("kb-proof", proof.to_base64url()),
                ];
                prepare(&addr, "POST", path, &headers, &body)
            })
            .collect::<Vec<_>>()
    };
    let exchanges = prepared(&remote, "/v1/exchange");
    let mints = prepared(&local, "/v1/tokens");
    let mints_per_s = blast(&addr, mints, concurrency).await;
    let exchanges_per_s = blast(&addr, exchanges, concurrency).await;
    // The bytes: one exchanged token and one local token of the same scope.
    let through = Scope::new("https://nova.example")
        .project("turing")
        .domain("canton")
        .through(canton.url());
    let federated = remote[0].0.service_token(&through).await.unwrap();
    let own = Scope::new("https://nova.example").project("turing");
    let local_token = local[0].0.service_token(&own).await.unwrap();
    let peer_token_bytes = remote[0].1.as_bytes().len();
    drop((stoughton, canton));
    let _ = std::fs::remove_dir_all(&stoughton_dir);
    let _ = std::fs::remove_dir_all(&canton_dir);
    Exchange {
        exchanges_per_s,
        mints_per_s,
        federated_bytes: federated.as_bytes().len(),
        local_bytes: local_token.as_bytes().len(),
        peer_token_bytes,
    }
}

/// Mints a second on PostgreSQL through one replica of an issuer and then
/// through two (one database, one root secret, and one Redis replay store
/// when `KEYBOUND_TEST_REDIS_URL` is set, as `keybound serve` replicas are
/// deployed), in the same run, the connections spread evenly over the
/// replicas as a keep-alive balancer spreads them.
async fn replica_rates(database_url: String, n: usize, concurrency: usize) -> (Blasted, Blasted) {
    let dir = std::env::temp_dir().join(format!("keybound-bench-replicas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = IssuerConfig::new(&dir);
    config.database_url = Some(database_url);
    let mut secret = zeroize::Zeroizing::new(vec![0u8; 32]);
    getrandom::fill(&mut secret[..]).unwrap();
    config.root_secret = Some(secret);
    config.replay_redis_url = std::env::var("KEYBOUND_TEST_REDIS_URL").ok();
    config.login_rate_per_minute = 1_000_000;
    config.login_burst = 100_000;
    let first = LoopbackIssuer::start(config.clone(), PASSWORD, Arc::new(SystemClock))
        .await
        .unwrap();
    // The second replica: the same settings and issuer id, its own listener.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_addr = listener.local_addr().unwrap();
    config.issuer_id = first.url().to_owned();
    config.listen = second_addr;
    let state = keybound::issuer::IssuerState::open(config, Arc::new(SystemClock))
        .await
        .unwrap();
    tokio::spawn(keybound::http::serve(
        listener,
        keybound::issuer::router(state).unwrap(),
        keybound::http::ServeConfig::default(),
        std::future::pending(),
    ));
    let admin = first.admin(PASSWORD).await.unwrap();
    let world = World {
        password: "correct horse battery",
        services: &["https://nova.example"],
    };
    first.create_world(&admin, &world).await.unwrap();
    let mut sessions = Vec::new();
    for _ in 0..8 {
        let client = Client::new(first.url(), SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
        client
            .login_password(keybound::issuer::loopback::USER, "correct horse battery", None)
            .await
            .unwrap();
        sessions.push(client);
    }
    let url = format!("{}/v1/tokens", first.url());
    let body = serde_json::to_vec(&json!({"audience": "https://nova.example", "project": "turing"})).unwrap();
    let prepared = || {
        let now = SystemClock.now();
        (0..n)
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
                prepare(&first.addr().to_string(), "POST", "/v1/tokens", &headers, &body)
            })
            .collect::<Vec<_>>()
    };
    // Each set signed just before its run: a proof is fresh for 60 s.
    let one = blast_to(&[first.addr().to_string()], prepared(), concurrency).await;
    let both = [first.addr().to_string(), second_addr.to_string()];
    let two = blast_to(&both, prepared(), concurrency).await;
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
    (one, two)
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
        let exchange = exchange_rate(n, concurrency).await;
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
                let (schema_url, schema) = pg_schema(&url).await;
                let replicas = replica_rates(schema_url, n, concurrency).await;
                let pool = sqlx::AnyPool::connect(&url).await.unwrap();
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&pool)
                    .await;
                Some((rates, replicas))
            }
            Err(_) => None,
        };
        let replicas = postgres.as_ref().map(|(_, (one, two))| {
            let shown = |b: &Blasted| json!({"tokens_per_s": b.per_s.round(), "p50_ms": b.p50_ms, "p99_ms": b.p99_ms});
            json!({
                "one_replica": shown(one),
                "two_replicas": shown(two),
                "two_over_one": (two.per_s / one.per_s * 1000.0).round() / 1000.0,
                "redis_replay_store": std::env::var("KEYBOUND_TEST_REDIS_URL").is_ok(),
                "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
            })
        });
        let postgres = postgres.map(|(rates, _)| rates);
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
                "exchange_sqlite_per_s": round(exchange.exchanges_per_s),
                "mint_same_issuer_sqlite_per_s": round(exchange.mints_per_s),
                "exchange_over_mint": ratio(exchange.exchanges_per_s, exchange.mints_per_s),
                "federated_token_bytes": exchange.federated_bytes,
                "local_token_bytes": exchange.local_bytes,
                "peer_token_bytes": exchange.peer_token_bytes,
                "mint_postgres_replicas": replicas,
                "requests": n,
                "concurrency": concurrency,
                "target": "mint_sqlite_tokens_per_s >= 5000",
            }))
            .unwrap()
        );
    });
}
