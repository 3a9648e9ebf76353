//! Requests through `keybound gateway proxy` against the same upstream
//! called directly, in one run, with wrk as the load generator.
//!
//! `cargo run --release --example bench_gateway --features gateway,issuer,client`
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
use keybound::http::{ProofMode, ServeConfig};
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

    let upstream = serve(Router::new().route("/hello", get(|| async { "hello" }))).await;
    // The gateway's address must be known before the issuer registers it.
    let gateway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = gateway_listener.local_addr().unwrap();
    let external = format!("http://{gateway_addr}");

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
                services: &[&external],
            },
        )
        .await
        .unwrap();
    let user = Client::new(issuer.url(), SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
    user.login_password(USER, "bench-user-password", None).await.unwrap();
    let token = user
        .service_token(&Scope::new(&external).project(PROJECT))
        .await
        .unwrap();

    let keys = HttpKeys::start(
        &format!("{}/.well-known/keybound/keys", issuer.url()),
        Default::default(),
    )
    .await
    .unwrap();
    let replay: Arc<dyn AsyncReplayStore> = Arc::new(MemoryReplayStore::default().fenced_at(SystemClock.now() - 60));
    let verifier = Arc::new(
        Verifier::builder(&external, TrustedIssuer::new(issuer.url(), keys.clone()))
            .replay_store(replay)
            .build()
            .unwrap(),
    );
    let gateway = Gateway::new(GatewayConfig {
        mode: Mode::Proxy {
            upstream: format!("http://{upstream}").parse().unwrap(),
        },
        external_url: external.clone(),
        verifier,
        key_sources: vec![(issuer.url().to_owned(), keys)],
        policy: None,
        proof_mode: ProofMode::Required,
        max_body: 1024 * 1024,
        identity_secret: Zeroizing::new(vec![7u8; 32]),
        upstream_timeout: Duration::from_secs(30),
    })
    .unwrap();
    tokio::spawn(keybound::http::serve(
        gateway_listener,
        gateway.app,
        ServeConfig::default(),
        std::future::pending::<()>(),
    ));

    // Enough single-use proofs for the run at a generous rate.
    let count = (seconds as usize) * 20_000;
    let now = SystemClock.now();
    let auth = format!("KB {}", token.to_base64url());
    let signed = Instant::now();
    let mut lines = String::with_capacity(count * 400);
    for _ in 0..count {
        let proof = ProofBuilder::new("GET", &format!("{external}/hello"), token.as_bytes(), b"", now)
            .unwrap()
            .sign(user.key())
            .unwrap();
        lines.push_str(&auth);
        lines.push('\t');
        lines.push_str(&b64url_encode(&proof.into_bytes()));
        lines.push('\n');
    }
    let sign_us = signed.elapsed().as_secs_f64() * 1e6 / count as f64;
    let proofs = dir.path().join("proofs.tsv");
    std::fs::write(&proofs, lines).unwrap();
    let script = dir.path().join("proofs.lua");
    std::fs::File::create(&script)
        .unwrap()
        .write_all(LUA.as_bytes())
        .unwrap();

    // One signature check, as the gateway does it per request (the token is
    // verified once and cached; each proof is new).
    let key = user.key().public_key().clone();
    let message = b"a proof's Sig_structure is about this long, a hundred and some bytes of CBOR.....";
    let signature = user.key().sign(message);
    let checks = 20_000;
    let started = Instant::now();
    for _ in 0..checks {
        assert!(key.verify(message, &signature));
    }
    let verify_us = started.elapsed().as_secs_f64() * 1e6 / checks as f64;

    let run = |url: String| {
        let (script, proofs) = (script.clone(), proofs.clone());
        tokio::task::spawn_blocking(move || wrk(&url, &script, &proofs, seconds, connections))
    };
    let nginx_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    // BENCH_ONLY=gateway skips the other runs (to profile the gateway alone).
    let only_gateway = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "gateway");
    let mut nginx = if only_gateway {
        None
    } else {
        nginx_hop(&nginx_dir, nginx_port, upstream)
    };
    let direct = if only_gateway {
        None
    } else {
        Some(run(format!("http://{upstream}/hello")).await.unwrap())
    };
    let bare = if only_gateway {
        None
    } else {
        let bare = serve(bare_proxy(upstream)).await;
        Some(run(format!("http://{bare}/hello")).await.unwrap())
    };
    let hop = match nginx {
        Some(_) => Some(run(format!("http://127.0.0.1:{nginx_port}/hello")).await.unwrap()),
        None => None,
    };
    if let Some(child) = nginx.as_mut() {
        // SIGQUIT: nginx's graceful stop, which takes its workers with it.
        let _ = Command::new("kill").arg("-QUIT").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    let through = run(format!("{external}/hello")).await.unwrap();
    let Some(direct) = direct else {
        println!(
            "{}",
            json!({"gateway": {"rps": through.rps.round(), "p50_us": through.p50_us, "p99_us": through.p99_us, "non_2xx": through.non_2xx}})
        );
        return;
    };
    let valid = direct.non_2xx == 0
        && through.non_2xx == 0
        && hop.as_ref().is_none_or(|h| h.non_2xx == 0)
        && bare.as_ref().is_none_or(|b| b.non_2xx == 0);
    // CPU per request at saturation: the machine's cores over requests per
    // second (wrk, the upstream and the proxy share them). What a proxy adds
    // is its figure less the direct one.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu_us = |r: &Run| cores * 1e6 / r.rps;
    let gateway_adds = cpu_us(&through) - cpu_us(&direct);
    let bare_adds = bare.as_ref().map(|b| cpu_us(b) - cpu_us(&direct));
    let hop_adds = hop.as_ref().map(|h| cpu_us(h) - cpu_us(&direct));
    let budget = hop_adds.map(|h| h + verify_us);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "benchmark": "gateway proxy vs the upstream directly, wrk, same run",
            "valid": valid,
            "seconds": seconds,
            "connections": connections,
            "direct": {"rps": direct.rps.round(), "p50_us": direct.p50_us, "p99_us": direct.p99_us, "non_2xx": direct.non_2xx},
            "gateway": {"rps": through.rps.round(), "p50_us": through.p50_us, "p99_us": through.p99_us, "non_2xx": through.non_2xx},
            "nginx_hop": hop.as_ref().map(|h| json!({"rps": h.rps.round(), "p50_us": h.p50_us, "p99_us": h.p99_us, "non_2xx": h.non_2xx})),
            "rps_ratio_gateway_over_direct": (through.rps / direct.rps * 1000.0).round() / 1000.0,
            "cpu_us_per_request": {
                "direct": cpu_us(&direct).round(),
                "nginx_hop": hop.as_ref().map(|h| cpu_us(h).round()),
                "bare_rust_proxy": bare.as_ref().map(|b| cpu_us(b).round()),
                "gateway": cpu_us(&through).round(),
            },
            "bare_rust_proxy": bare.as_ref().map(|b| json!({"rps": b.rps.round(), "p50_us": b.p50_us, "p99_us": b.p99_us, "non_2xx": b.non_2xx})),
            "gateway_adds_cpu_us": gateway_adds.round(),
            "bare_rust_proxy_adds_cpu_us": bare_adds.map(f64::round),
            "verification_adds_cpu_us": bare_adds.map(|b| (gateway_adds - b).round()),
            "nginx_hop_adds_cpu_us": hop_adds.map(f64::round),
            "goal_budget_cpu_us": budget.map(f64::round),
            "goal_met": budget.map(|b| gateway_adds <= b),
            "added_p50_us": through.p50_us - direct.p50_us,
            "one_signature_check_us": (verify_us * 10.0).round() / 10.0,
            "one_proof_signing_us": (sign_us * 10.0).round() / 10.0,
        }))
        .unwrap()
    );
}
