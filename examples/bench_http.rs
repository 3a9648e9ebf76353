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
//!
//! With `KEYBOUND_TEST_REDIS_URL` set (and nginx installed), two more runs
//! measure the deployment of docs/scaling.md: one replica of the layer's
//! service on a Redis replay store alone, and two such replicas (each its
//! own verifier and Redis connection, one shared store) behind nginx as a
//! round-robin balancer. A run of the layer where every proof is signed by
//! a key the token does not bind measures what a refusal costs.
//! Each case runs twice: saturating (requests per second, latency) and
//! paced to about `BENCH_RATE` requests per second (default 8,000), where
//! every server's CPU per request is compared at the same rate.
//! `BENCH_ONLY=direct|layer|refused|bare|nginx|gateway|replica|balanced`
//! runs one case alone, to profile it.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use keybound::client::{Client, Scope};
use keybound::encoding::b64url_encode;
use keybound::gateway::{Gateway, GatewayConfig, Mode, Upstream};
use keybound::http::{KeyboundLayer, ProofMode, ServeConfig};
use keybound::issuer::IssuerConfig;
use keybound::issuer::loopback::{LoopbackIssuer, PROJECT, USER, World};
use keybound::key::{Algorithm, SigningKey};
use keybound::keyset::HttpKeys;
use keybound::proof::ProofBuilder;
use keybound::verify::{
    AsyncReplayStore, Clock, MemoryReplayStore, RedisReplayOptions, RedisReplayStore, SystemClock, TrustedIssuer,
    Verifier,
};
use serde_json::json;
use zeroize::Zeroizing;

const PASSWORD: &str = "bench-gateway-password";

/// wrk's script: each thread takes every Nth line of the proofs file and
/// sends each line's credentials once; `done` prints the percentiles. A
/// paced run (see [`script_text`]) takes the lines from the end, so that it
/// never replays a proof of the saturating run before it.
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
  local line
  if PACED then
    line = lines[#lines - next_line + 1] or lines[1]
  else
    line = lines[next_line] or lines[#lines]
  end
  next_line = next_line + 1
  local auth, proof = line:match("([^\t]*)\t([^\t]*)")
  return wrk.format("GET", "/hello", { ["Authorization"] = auth, ["KB-Proof"] = proof })
end
function done(summary, latency, requests)
  io.write(string.format("p50_us=%d p99_us=%d\n", latency:percentile(50), latency:percentile(99)))
end
"#;

/// The script, saturating (`pause_ms` none: each connection sends its next
/// request as soon as the answer is in) or paced (each connection waits
/// `pause_ms` before each request: all servers then answer about the same
/// rate, and their CPU per request is compared at that rate, not at rates
/// that differ by 5 times, where the faster server also batches its
/// wake-ups and system calls better).
fn script_text(pause_ms: Option<u64>) -> String {
    match pause_ms {
        None => format!("PACED = false\n{LUA}"),
        Some(ms) => format!("PACED = true\n{LUA}\nfunction delay()\n  return {ms}\nend\n"),
    }
}

struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    non_2xx: u64,
    requests: u64,
    /// CPU the servers of this run used (this process, and nginx's and
    /// Redis's when they take part), per request: wrk's own CPU is not in it.
    server_cpu_us: f64,
    /// The same run paced (see [`script_text`]): its requests per second and
    /// the servers' CPU per request.
    paced_rps: f64,
    paced_server_cpu_us: f64,
}

/// User + system CPU seconds of process `pid` so far, and of its direct
/// children too with `children` (nginx's workers), from /proc.
fn cpu_seconds(pid: u32, children: bool) -> f64 {
    let ticks: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    // Fields after the command name's closing parenthesis: state is [0],
    // ppid [1], utime [11], stime [12] (proc(5) fields 3, 4, 14, 15).
    let fields = |stat: &str| -> Vec<String> {
        stat.rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let used = |f: &[String]| -> f64 {
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (tick(11) + tick(12)) / ticks
    };
    let mut total = used(&fields(
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
    ));
    if children {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let f = fields(&stat);
            if f.get(1).is_some_and(|ppid| ppid == &pid.to_string()) {
                total += used(&f);
            }
        }
    }
    total
}

/// Redis's own CPU seconds so far (`INFO cpu`), when it takes part.
fn redis_cpu_seconds(url: &str) -> f64 {
    let Ok(client) = redis::Client::open(url) else {
        return 0.0;
    };
    let Ok(mut connection) = client.get_connection() else {
        return 0.0;
    };
    let info: String = redis::cmd("INFO").arg("cpu").query(&mut connection).unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_sys:")
                .or_else(|| l.strip_prefix("used_cpu_user:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
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
    let requests = text
        .split_whitespace()
        .zip(text.split_whitespace().skip(1))
        .find_map(|(n, w)| (w == "requests").then(|| n.parse().ok()).flatten())
        .unwrap_or(0);
    Run {
        rps,
        p50_us: number("p50_us="),
        p99_us: number("p99_us="),
        non_2xx,
        requests,
        server_cpu_us: 0.0,
        paced_rps: 0.0,
        paced_server_cpu_us: 0.0,
    }
}

/// nginx (Debian's package) as a plain reverse proxy to `upstream`, with
/// keep-alive to it and two workers: the cost of one well-made proxy hop,
/// for the goal's "plus one proxy hop". `None` when nginx is missing.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nginx_hop(dir: &std::path::Path, port: u16, upstreams: &[std::net::SocketAddr]) -> Option<std::process::Child> {
    let d = dir.display();
    let servers: String = upstreams.iter().map(|u| format!("server {u}; ")).collect();
    let config = format!(
        "daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
events {{ worker_connections 1024; }}\n\
http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
  upstream up {{ {servers}keepalive 64; }}\n\
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
/// `keybound::http::serve` listener, the gateway's own `Upstream`) that
/// verifies nothing: what a proxy hop costs in Rust here, so that gateway
/// less bare proxy is what keybound's verification adds.
fn bare_proxy(upstream: std::net::SocketAddr) -> Router {
    let base = format!("http://{upstream}").parse().unwrap();
    let upstream = Arc::new(Upstream::new(&base, Duration::from_secs(30)).unwrap());
    Router::new().fallback(move |request: axum::extract::Request| {
        let upstream = upstream.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            parts.headers.remove(axum::http::header::HOST);
            parts.extensions = Default::default();
            upstream.send(parts, body).await.unwrap_or_else(|_| {
                axum::response::Response::builder()
                    .status(502)
                    .body(axum::body::Body::empty())
                    .unwrap()
            })
        }
    })
}

/// A run's `figure` less the floor's (`direct`), when both ran.
fn over_floor<'a>(
    direct: &'a Option<Run>,
    figure: impl Fn(&Run) -> f64 + 'a,
) -> impl Fn(&Option<Run>) -> Option<f64> + 'a {
    move |r| match (r, direct) {
        (Some(r), Some(d)) => Some((figure(r) - figure(d)).round()),
        _ => None,
    }
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
    // BENCH_ONLY=<case> runs that case alone, to profile it.
    let only = std::env::var("BENCH_ONLY").ok();
    let wanted = |case: &str| only.as_deref().is_none_or(|o| o == case);

    let upstream = serve(Router::new().route("/hello", get(|| async { "hello" }))).await;
    // The services' addresses must be known before the issuer registers them.
    let gateway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let external = format!("http://{}", gateway_listener.local_addr().unwrap());
    let layer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let layer_url = format!("http://{}", layer_listener.local_addr().unwrap());
    // Two replicas of the layer's service sharing one Redis replay store,
    // behind nginx, when Redis and nginx are there: the balancer's URL is
    // the service's external URL and audience.
    let redis_url = std::env::var("KEYBOUND_TEST_REDIS_URL").ok();
    let balancer_port = free_port();
    let balancer_url = format!("http://127.0.0.1:{balancer_port}");

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
                services: &[&external, &layer_url, &balancer_url],
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

    let balanced_wanted = wanted("balanced") || wanted("replica");
    let mut replicas = Vec::new();
    if let (Some(redis_url), true) = (&redis_url, balanced_wanted) {
        for _ in 0..2 {
            // Each replica its own verifier and connection, as two processes would have.
            let store = Arc::new(
                RedisReplayStore::connect(redis_url, RedisReplayOptions::default())
                    .await
                    .unwrap(),
            );
            store.fence_if_new(SystemClock.now()).await.unwrap();
            let verifier = Arc::new(
                Verifier::builder(&balancer_url, TrustedIssuer::new(issuer.url(), keys.clone()))
                    .replay_store(store)
                    .build()
                    .unwrap(),
            );
            let app = Router::new()
                .route("/hello", get(|| async { "hello" }))
                .layer(KeyboundLayer::new(verifier, &balancer_url).unwrap());
            replicas.push(serve(app).await);
        }
    }

    // Enough single-use proofs for each run at a generous rate, signed
    // before any clock starts.
    let count = (seconds as usize) * 50_000;
    let mut sign_us = 0.0;
    let gateway_token = user
        .service_token(&Scope::new(&external).project(PROJECT))
        .await
        .unwrap();
    let layer_token = user
        .service_token(&Scope::new(&layer_url).project(PROJECT))
        .await
        .unwrap();
    let mut signed_by =
        |key: &SigningKey, service: &str, token: &keybound::token::Token, name: &str| -> std::path::PathBuf {
            let auth = format!("KB {}", token.to_base64url());
            let now = SystemClock.now();
            let signed = Instant::now();
            let mut lines = String::with_capacity(count * 400);
            for _ in 0..count {
                let proof = ProofBuilder::new("GET", &format!("{service}/hello"), token.as_bytes(), b"", now)
                    .unwrap()
                    .sign(key)
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
    // Each run's proofs are signed just before it: a proof is fresh for
    // 60 s (verification.md), fewer than all runs take.
    let balanced_token = if replicas.is_empty() {
        None
    } else {
        Some(
            user.service_token(&Scope::new(&balancer_url).project(PROJECT))
                .await
                .unwrap(),
        )
    };
    // Proofs by a key the token does not bind (a stolen token without its
    // key): each is refused after its signature check, with a problem body.
    let thief = SigningKey::generate(Algorithm::EdDSA).unwrap();
    // The floor and the bare proxies ignore the credentials: a line for
    // each wrk thread does.
    let ignored_proofs = dir.path().join("ignored-proofs.tsv");
    std::fs::write(&ignored_proofs, "KB x\tx\n".repeat(16)).unwrap();
    let script = dir.path().join("proofs.lua");
    std::fs::write(&script, script_text(None)).unwrap();
    // Paced: every connection waits before each request, so that together
    // they send about BENCH_RATE requests per second (default 8,000, below
    // what the slowest verifying server here answers).
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(8_000);
    let paced_script = dir.path().join("proofs-paced.lua");
    std::fs::write(
        &paced_script,
        script_text(Some((connections as u64 * 1000 / rate).max(1))),
    )
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

    // Each run also counts the CPU its servers use: this process (the
    // servers under test and the upstream), nginx's workers when `nginx`
    // names its master, Redis when `redis` is set.
    let me = std::process::id();
    let run_with = |url: String, proofs: &std::path::Path, nginx: Option<u32>, redis: Option<String>| {
        let (script, paced_script, proofs) = (script.clone(), paced_script.clone(), proofs.to_owned());
        tokio::task::spawn_blocking(move || {
            let servers = || {
                cpu_seconds(me, false)
                    + nginx.map_or(0.0, |pid| cpu_seconds(pid, true))
                    + redis.as_deref().map_or(0.0, redis_cpu_seconds)
            };
            let before = servers();
            let mut run = wrk(&url, &script, &proofs, seconds, connections);
            run.server_cpu_us = (servers() - before) * 1e6 / run.requests.max(1) as f64;
            let before = servers();
            let paced = wrk(&url, &paced_script, &proofs, seconds, connections);
            run.paced_server_cpu_us = (servers() - before) * 1e6 / paced.requests.max(1) as f64;
            run.paced_rps = paced.rps;
            run.non_2xx += paced.non_2xx;
            run
        })
    };
    let run = |url: String, proofs: &std::path::Path| run_with(url, proofs, None, None);
    let nginx_port = free_port();
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();

    // The runs, one after the other, all with the same script and proofs
    // (the floor and the proxies ignore them).
    let direct = if wanted("direct") {
        Some(run(format!("http://{upstream}/hello"), &ignored_proofs).await.unwrap())
    } else {
        None
    };
    let layer = if wanted("layer") {
        let proofs = signed_by(user.key(), &layer_url, &layer_token, "layer-proofs.tsv");
        Some(run(format!("{layer_url}/hello"), &proofs).await.unwrap())
    } else {
        None
    };
    let refused = if wanted("refused") {
        let proofs = signed_by(&thief, &layer_url, &layer_token, "refused-proofs.tsv");
        Some(run(format!("{layer_url}/hello"), &proofs).await.unwrap())
    } else {
        None
    };
    let bare = if wanted("bare") {
        let bare = serve(bare_proxy(upstream)).await;
        Some(run(format!("http://{bare}/hello"), &ignored_proofs).await.unwrap())
    } else {
        None
    };
    let mut nginx = if wanted("nginx") {
        nginx_hop(&nginx_dir, nginx_port, &[upstream])
    } else {
        None
    };
    let hop = match &nginx {
        Some(child) => Some(
            run_with(
                format!("http://127.0.0.1:{nginx_port}/hello"),
                &ignored_proofs,
                Some(child.id()),
                None,
            )
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
        let proofs = signed_by(user.key(), &external, &gateway_token, "gateway-proofs.tsv");
        Some(run(format!("{external}/hello"), &proofs).await.unwrap())
    } else {
        None
    };

    // One replica on Redis alone (what the shared store costs), then both
    // behind nginx (what the deployment serves).
    // Two sets: the proofs are single-use across the replicas' shared store.
    let replica = match (&balanced_token, wanted("replica")) {
        (Some(token), true) => {
            let proofs = signed_by(user.key(), &balancer_url, token, "replica-proofs.tsv");
            Some(
                run_with(
                    format!("http://{}/hello", replicas[0]),
                    &proofs,
                    None,
                    redis_url.clone(),
                )
                .await
                .unwrap(),
            )
        }
        _ => None,
    };
    let balanced = match (&balanced_token, wanted("balanced")) {
        (Some(token), true) => {
            let proofs = signed_by(user.key(), &balancer_url, token, "balanced-proofs.tsv");
            let dir = dir.path().join("balancer");
            std::fs::create_dir_all(&dir).unwrap();
            let mut nginx = nginx_hop(&dir, balancer_port, &replicas);
            let result = match &nginx {
                Some(child) => Some(
                    run_with(
                        format!("{balancer_url}/hello"),
                        &proofs,
                        Some(child.id()),
                        redis_url.clone(),
                    )
                    .await
                    .unwrap(),
                ),
                None => None,
            };
            if let Some(child) = nginx.as_mut() {
                let _ = Command::new("kill").arg("-QUIT").arg(child.id().to_string()).status();
                let _ = child.wait();
            }
            result
        }
        _ => None,
    };

    let all = [&direct, &layer, &bare, &hop, &through, &replica, &balanced];
    let valid = all.iter().all(|r| r.as_ref().is_none_or(|r| r.non_2xx == 0));
    // CPU per request at saturation: the machine's cores over requests per
    // second (wrk and the servers share them). What a server adds over the
    // floor is its figure less the floor's.
    let cpu_us = |r: &Run| cores as f64 * 1e6 / r.rps;
    // What a run's `figure` is over the floor's. The figures: `cpu_us`
    // (saturated, wrk's share included); the servers' own CPU time per
    // request (wrk's excluded); the same at one (paced) rate for every server.
    let adds = over_floor(&direct, cpu_us);
    let server_adds = over_floor(&direct, |r| r.server_cpu_us);
    let paced_adds = over_floor(&direct, |r| r.paced_server_cpu_us);
    // Every case's figure over the floor, by name.
    let by_case = |adds: &dyn Fn(&Option<Run>) -> Option<f64>| {
        json!({
            "library_layer": adds(&layer),
            "library_layer_refusing": adds(&refused),
            "bare_rust_proxy": adds(&bare),
            "nginx_hop": adds(&hop),
            "gateway": adds(&through),
            "one_replica_redis_store": adds(&replica),
            "nginx_two_replicas_redis_store": adds(&balanced),
        })
    };
    // The goal, "one signature check plus one proxy hop", on one figure.
    let goal = |adds: &dyn Fn(&Option<Run>) -> Option<f64>| {
        let nginx = adds(&hop).map(|h| (h + verify_us).round());
        let rust = adds(&bare).map(|h| (h + verify_us).round());
        let gateway = adds(&through);
        json!({
            "budget_signature_plus_nginx_hop_us": nginx,
            "budget_signature_plus_rust_hop_us": rust,
            "gateway_adds_us": gateway,
            "met_with_nginx_hop": nginx.zip(gateway).map(|(b, g)| g <= b),
            "met_with_rust_hop": rust.zip(gateway).map(|(b, g)| g <= b),
        })
    };
    let shown = |r: &Option<Run>| {
        r.as_ref().map(|r| {
            json!({"rps": r.rps.round(), "p50_us": r.p50_us, "p99_us": r.p99_us, "non_2xx": r.non_2xx,
                   "cpu_us_per_request": cpu_us(r).round(), "server_cpu_us_per_request": r.server_cpu_us.round(),
                   "paced_rps": r.paced_rps.round(), "paced_server_cpu_us_per_request": r.paced_server_cpu_us.round()})
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
            "library_layer_refusing_every_request": shown(&refused),
            "refused_all": refused.as_ref().map(|r| r.non_2xx == r.requests),
            "one_replica_redis_store": shown(&replica),
            "nginx_two_replicas_redis_store": shown(&balanced),
            "balanced_over_library_layer": ratio(&balanced, layer.as_ref().map(|l| l.rps)),
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
                "one_replica_redis_store": adds(&replica),
                "nginx_two_replicas_redis_store": adds(&balanced),
            },
            "gateway_goal_budget_cpu_us": budget,
            "gateway_goal_met": budget.zip(adds(&through)).map(|(b, g)| g <= b),
            "server_cpu_adds_us_per_request": by_case(&server_adds),
            "gateway_goal_server_cpu": goal(&server_adds),
            "paced_rate_per_s": rate,
            "paced_server_cpu_adds_us_per_request": by_case(&paced_adds),
            "gateway_goal_paced_server_cpu": goal(&paced_adds),
        }))
        .unwrap()
    );
}
