//! Verified HTTP requests, in one run, with wrk as the load generator: a
//! hello-world server unauthenticated (the floor), the same handler behind
//! the library's `KeyboundLayer`, `keybound gateway proxy` in front of the
//! floor, and two proxy hops that verify nothing (a bare Rust proxy on the
//! gateway's stack, and nginx) to tell the hop from the verification.
//!
//! `cargo run --release --example bench_http --features gateway,issuer,client`
//! (wrk from Debian's `wrk` package must be on PATH). An issuer, a hello-world
//! upstream and the gateway run in this process on loopback; every request
//! through the gateway needs its own proof, so proofs are signed before the
//! clock starts and wrk's Lua script hands each request the next one
//! (`BENCH_SECONDS`, default 5, `BENCH_CONNECTIONS`, default 32). A run with
//! any non-2xx answer is reported as invalid. A third run goes through nginx
//! as a plain reverse proxy (when nginx is installed): the cost of one proxy
//! hop. Prints one JSON object: each run's requests per second and p50/p99
//! latency, the CPU each request costs at saturation, and the cost of one
//! proof's signature check measured here, for the goal "the gateway adds no
//! more than one signature check plus one proxy hop".

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use keybound::client::{Client, Scope};
use keybound::encoding::b64url_encode;
use keybound::gateway::{Gateway, GatewayConfig, Mode};
use keybound::http::{KeyboundLayer, ProofMode, ServeConfig};
use keybound::issuer::IssuerConfig;
use keybound::issuer::loopback::{LoopbackIssuer, PROJECT, USER, World};
use keybound::key::{Algorithm, SigningKey};
use keybound::keyset::HttpKeys;
use keybound::proof::ProofBuilder;
use keybound::verify::{AsyncReplayStore, Clock, MemoryReplayStore, SystemClock, TrustedIssuer, Verifier};
use serde_json::json;
use zeroize::Zeroizing;

const PASSWORD: &str = "bench-gateway-password";

/// wrk's script: each thread takes every Nth line of the proofs file and
/// sends each line's credentials once; `done` prints the percentiles.
const LUA: &str = r#"
local threads = {}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  local total = tonumber(args[2])
  lines = {}
  local n = 0
  for line in io.lines(args[1]) do
    if n % total == id then table.insert(lines, line) end
    n = n + 1
  end
  next_line = 1
end
function request()
  local line = lines[next_line] or lines[#lines]
  next_line = next_line + 1
  local auth, proof = line:match("([^\t]*)\t([^\t]*)")
  return wrk.format("GET", "/hello", { ["Authorization"] = auth, ["KB-Proof"] = proof })
end
function done(summary, latency, requests)
  io.write(string.format("p50_us=%d p99_us=%d\n", latency:percentile(50), latency:percentile(99)))
end
"#;

struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    non_2xx: u64,
}

fn wrk(url: &str, script: &std::path::Path, proofs: &std::path::Path, seconds: u64, connections: usize) -> Run {
    let threads = 2usize;
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
        ])
        .arg("-s")
        .arg(script)
        .arg(url)
        .arg("--")
        .arg(proofs)
        .arg(threads.to_string())
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let number = |key: &str| -> f64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Run {
        rps,
        p50_us: number("p50_us="),
        p99_us: number("p99_us="),
        non_2xx,
    }
}

/// nginx (Debian's package) as a plain reverse proxy to `upstream`, with
/// keep-alive to it and two workers: the cost of one well-made proxy hop,
/// for the goal's "plus one proxy hop". `None` when nginx is missing.
fn nginx_hop(dir: &std::path::Path, port: u16, upstream: std::net::SocketAddr) -> Option<std::process::Child> {
    let d = dir.display();
    let config = format!(
        "daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
events {{ worker_connections 1024; }}\n\
http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
  upstream up {{ server {upstream}; keepalive 64; }}\n\
  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://up;\n\
      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child)
}

/// A bare reverse proxy on the gateway's own stack (axum, the same
/// `keybound::http::serve` listener, a reqwest client as the gateway builds
/// it) that verifies nothing: what a proxy hop costs in Rust here, so that
/// gateway less bare proxy is what keybound's verification adds.
fn bare_proxy(upstream: std::net::SocketAddr) -> Router {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Router::new().fallback(move |request: axum::extract::Request| {
        let client = client.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut headers = parts.headers.clone();
            headers.remove(axum::http::header::HOST);
            match client
                .request(parts.method, format!("http://{upstream}{path}"))
                .headers(headers)
                .body(body)
                .send()
                .await
            {
                Ok(answer) => {
                    let mut response = axum::response::Response::builder().status(answer.status());
                    *response.headers_mut().unwrap() = answer.headers().clone();
                    response
                        .body(axum::body::Body::from_stream(answer.bytes_stream()))
                        .unwrap()
                }
                Err(_) => axum::response::Response::builder()
                    .status(502)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            }
        }
    })
}

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(keybound::http::serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending::<()>(),
    ));
    addr
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let connections: usize = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let dir = tempfile::tempdir().unwrap();
    // BENCH_ONLY=gateway (or layer) runs that case alone, to profile it.
    let only = std::env::var("BENCH_ONLY").ok();
    let wanted = |case: &str| only.as_deref().is_none_or(|o| o == case);

    let upstream = serve(Router::new().route("/hello", get(|| async { "hello" }))).await;
    // The services' addresses must be known before the issuer registers them.
    let gateway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let external = format!("http://{}", gateway_listener.local_addr().unwrap());
    let layer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let layer_url = format!("http://{}", layer_listener.local_addr().unwrap());

    let issuer = LoopbackIssuer::start(
        IssuerConfig::new(dir.path().join("issuer")),
        PASSWORD,
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let admin = issuer.admin(PASSWORD).await.unwrap();
    issuer
        .create_world(
            &admin,
            &World {
                password: "bench-user-password",
                services: &[&external, &layer_url],
            },
        )
        .await
        .unwrap();
    let user = Client::new(issuer.url(), SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
    user.login_password(USER, "bench-user-password", None).await.unwrap();
    let keys = HttpKeys::start(
        &format!("{}/.well-known/keybound/keys", issuer.url()),
        Default::default(),
    )
    .await
    .unwrap();
    let verifier_for = |audience: &str| {
        let replay: Arc<dyn AsyncReplayStore> =
            Arc::new(MemoryReplayStore::default().fenced_at(SystemClock.now() - 60));
        Arc::new(
            Verifier::builder(audience, TrustedIssuer::new(issuer.url(), keys.clone()))
                .replay_store(replay)
                .build()
                .unwrap(),
        )
    };

    // The gateway in front of the upstream.
    let gateway = Gateway::new(GatewayConfig {
        mode: Mode::Proxy {
            upstream: format!("http://{upstream}").parse().unwrap(),
        },
        external_url: external.clone(),
        verifier: verifier_for(&external),
        key_sources: vec![(issuer.url().to_owned(), keys.clone())],
        policy: None,
        proof_mode: ProofMode::Required,
        max_body: 1024 * 1024,
        body_timeout: Duration::from_secs(30),
        identity_secret: Zeroizing::new(vec![7u8; 32]),
        upstream_timeout: Duration::from_secs(30),
        replay_store: None,
    })
    .unwrap();
    tokio::spawn(keybound::http::serve(
        gateway_listener,
        gateway.app,
        ServeConfig::default(),
        std::future::pending::<()>(),
    ));
    // The same hello handler as the upstream, behind the library's layer
    // (the HTTP binding every keybound service uses), on the same listener.
    let layer_app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(KeyboundLayer::new(verifier_for(&layer_url), &layer_url).unwrap());
    tokio::spawn(keybound::http::serve(
        layer_listener,
        layer_app,
        ServeConfig::default(),
        std::future::pending::<()>(),
    ));

    // Enough single-use proofs for each run at a generous rate, signed
    // before any clock starts.
    let count = (seconds as usize) * 20_000;
    let now = SystemClock.now();
    let mut sign_us = 0.0;
    let gateway_token = user
        .service_token(&Scope::new(&external).project(PROJECT))
        .await
        .unwrap();
    let layer_token = user
        .service_token(&Scope::new(&layer_url).project(PROJECT))
        .await
        .unwrap();
    let mut proofs_for = |service: &str, token: &keybound::token::Token, name: &str| -> std::path::PathBuf {
        let auth = format!("KB {}", token.to_base64url());
        let signed = Instant::now();
        let mut lines = String::with_capacity(count * 400);
        for _ in 0..count {
            let proof = ProofBuilder::new("GET", &format!("{service}/hello"), token.as_bytes(), b"", now)
                .unwrap()
                .sign(user.key())
                .unwrap();
            lines.push_str(&auth);
            lines.push('\t');
            lines.push_str(&b64url_encode(&proof.into_bytes()));
            lines.push('\n');
        }
        sign_us = signed.elapsed().as_secs_f64() * 1e6 / count as f64;
        let path = dir.path().join(name);
        std::fs::write(&path, lines).unwrap();
        path
    };
    let gateway_proofs = proofs_for(&external, &gateway_token, "gateway-proofs.tsv");
    let layer_proofs = proofs_for(&layer_url, &layer_token, "layer-proofs.tsv");
    let script = dir.path().join("proofs.lua");
    std::fs::File::create(&script)
        .unwrap()
        .write_all(LUA.as_bytes())
        .unwrap();

    // One signature check, as a service does it per request (the token is
    // verified once and cached; each proof is new), and verify_strict's
    // rate on every core at once: the ceiling of any verifying server here.
    let key = user.key().public_key().clone();
    let message = b"a proof's Sig_structure is about this long, a hundred and some bytes of CBOR.....";
    let signature = user.key().sign(message);
    let checks = 20_000;
    let started = Instant::now();
    for _ in 0..checks {
        assert!(key.verify(message, &signature));
    }
    let verify_us = started.elapsed().as_secs_f64() * 1e6 / checks as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let raw_verify_per_s = {
        let started = Instant::now();
        let per_thread = 20_000;
        std::thread::scope(|scope| {
            for _ in 0..cores {
                scope.spawn(|| {
                    for _ in 0..per_thread {
                        assert!(key.verify(message, &signature));
                    }
                });
            }
        });
        (cores * per_thread) as f64 / started.elapsed().as_secs_f64()
    };

    let run = |url: String, proofs: &std::path::Path| {
        let (script, proofs) = (script.clone(), proofs.to_owned());
        tokio::task::spawn_blocking(move || wrk(&url, &script, &proofs, seconds, connections))
    };
    let nginx_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();

    // The runs, one after the other, all with the same script and proofs
    // (the floor and the proxies ignore them).
    let direct = if wanted("direct") {
        Some(run(format!("http://{upstream}/hello"), &gateway_proofs).await.unwrap())
    } else {
        None
    };
    let layer = if wanted("layer") {
        Some(run(format!("{layer_url}/hello"), &layer_proofs).await.unwrap())
    } else {
        None
    };
    let bare = if wanted("bare") {
        let bare = serve(bare_proxy(upstream)).await;
        Some(run(format!("http://{bare}/hello"), &gateway_proofs).await.unwrap())
    } else {
        None
    };
    let mut nginx = if wanted("nginx") {
        nginx_hop(&nginx_dir, nginx_port, upstream)
    } else {
        None
    };
    let hop = match nginx {
        Some(_) => Some(
            run(format!("http://127.0.0.1:{nginx_port}/hello"), &gateway_proofs)
                .await
                .unwrap(),
        ),
        None => None,
    };
    if let Some(child) = nginx.as_mut() {
        // SIGQUIT: nginx's graceful stop, which takes its workers with it.
        let _ = Command::new("kill").arg("-QUIT").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    let through = if wanted("gateway") {
        Some(run(format!("{external}/hello"), &gateway_proofs).await.unwrap())
    } else {
        None
    };

    let all = [&direct, &layer, &bare, &hop, &through];
    let valid = all.iter().all(|r| r.as_ref().is_none_or(|r| r.non_2xx == 0));
    // CPU per request at saturation: the machine's cores over requests per
    // second (wrk and the servers share them). What a server adds over the
    // floor is its figure less the floor's.
    let cpu_us = |r: &Run| cores as f64 * 1e6 / r.rps;
    let adds = |r: &Option<Run>| match (r, &direct) {
        (Some(r), Some(d)) => Some((cpu_us(r) - cpu_us(d)).round()),
        _ => None,
    };
    let shown = |r: &Option<Run>| {
        r.as_ref().map(|r| {
            json!({"rps": r.rps.round(), "p50_us": r.p50_us, "p99_us": r.p99_us, "non_2xx": r.non_2xx, "cpu_us_per_request": cpu_us(r).round()})
        })
    };
    let ratio = |a: &Option<Run>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some((a.rps / b * 1000.0).round() / 1000.0),
        _ => None,
    };
    let budget = adds(&hop).map(|h| (h + verify_us).round());
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "benchmark": "verified HTTP requests, wrk, one run: floor, library layer, gateway, proxy hops",
            "valid": valid,
            "seconds": seconds,
            "connections": connections,
            "cores": cores,
            "floor_unauthenticated": shown(&direct),
            "library_layer": shown(&layer),
            "bare_rust_proxy": shown(&bare),
            "nginx_hop": shown(&hop),
            "gateway": shown(&through),
            "raw_verify_strict_per_s_all_cores": raw_verify_per_s.round(),
            "one_signature_check_us": (verify_us * 10.0).round() / 10.0,
            "one_proof_signing_us": (sign_us * 10.0).round() / 10.0,
            "library_layer_over_floor": ratio(&layer, direct.as_ref().map(|d| d.rps)),
            "library_layer_over_raw_verify": ratio(&layer, Some(raw_verify_per_s)),
            "gateway_over_floor": ratio(&through, direct.as_ref().map(|d| d.rps)),
            "adds_cpu_us_per_request": {
                "library_layer": adds(&layer),
                "bare_rust_proxy": adds(&bare),
                "nginx_hop": adds(&hop),
                "gateway": adds(&through),
            },
            "gateway_goal_budget_cpu_us": budget,
            "gateway_goal_met": budget.zip(adds(&through)).map(|(b, g)| g <= b),
        }))
        .unwrap()
    );
}
