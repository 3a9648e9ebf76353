//! FL-14 (issue 17, security-catalog.md §4): overload at several times the
//! measured capacity. A real `keybound gateway proxy` (the library layer,
//! `KeyboundLayer` behind `keybound::http::serve`) with its default
//! in-flight cap, in front of an upstream; the load comes from this test
//! process over real HTTP. Capacity is measured first in the same run,
//! then far more concurrent clients than the cap are offered. Expected:
//! the excess is shed with 503 `http.overloaded` and `Retry-After: 1`,
//! admitted requests keep a bounded p99, the process's memory stays
//! bounded, nothing answers 500, and service is normal afterwards. The
//! issuer's token endpoint on PostgreSQL gets the same treatment: its
//! database pool never makes a mint wait for ever or answer 500.
//! docs/faults.md describes them; figures go to stderr.
#![cfg(all(feature = "cli", feature = "gateway", feature = "postgres", target_os = "linux"))]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keybound::client::{Client, Scope};
use keybound::encoding::b64url_encode;
use keybound::issuer::loopback::{DOMAIN, PROJECT};
use keybound::proof::ProofBuilder;
use keybound::token::Token;
use keybound::verify::{Clock, SystemClock};

use crate::common::deployment::{
    PgDatabase, Service, Upstream, admin_client, bootstrap, create_world, gateway_service, issuer_service, long,
    user_client,
};
use crate::common::free_port;

/// What one closed-loop run saw.
#[derive(Debug, Default)]
struct Run {
    /// Latencies of the 200 answers, in µs.
    admitted_us: Vec<u64>,
    /// Answers by (status, code).
    answers: BTreeMap<(u16, String), u64>,
    /// 503 `http.overloaded` answers without `Retry-After: 1`.
    shed_without_retry_after: u64,
    elapsed: Duration,
}

impl Run {
    fn admitted_per_s(&self) -> f64 {
        self.admitted_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Every request sent, per second.
    fn offered_per_s(&self) -> f64 {
        self.answers.values().sum::<u64>() as f64 / self.elapsed.as_secs_f64()
    }

    fn shed(&self) -> u64 {
        self.answers
            .get(&(503, "http.overloaded".to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.admitted_us.is_empty() {
            return f64::NAN;
        }
        self.admitted_us.sort_unstable();
        let i = ((self.admitted_us.len() as f64 * p).ceil() as usize).clamp(1, self.admitted_us.len()) - 1;
        self.admitted_us[i] as f64 / 1000.0
    }

    /// Answers that are neither 200 nor a shed 503.
    fn others(&self) -> Vec<(&(u16, String), &u64)> {
        self.answers
            .iter()
            .filter(|((status, code), _)| *status != 200 && !(*status == 503 && code == "http.overloaded"))
            .collect()
    }
}

/// What a shed client waits before its next request: a client honouring the
/// overload a little (far less than `Retry-After: 1`, so the offered load
/// stays several times the capacity) and not spinning on 503s, which on 2
/// shared cores would be the load generator measuring itself.
const SHED_BACKOFF: Duration = Duration::from_millis(100);

static JTI: AtomicU64 = AtomicU64::new(1);

/// One request: what it sends to `url`, and the answer's status and code.
type Request = Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>;

/// `clients` connections, each sending one request after the other for
/// `duration` (a shed one waits `backoff` first, a client honouring the
/// overload a little, far less than `Retry-After`, so the offered load stays
/// high).
async fn closed_loop(request: Request, clients: usize, duration: Duration, backoff: Duration) -> Run {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    // One pool for all (a client per task would cost a TLS set-up each).
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    for _ in 0..clients {
        let (request, http) = (request.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            // Bounded by time and by count.
            for _ in 0..1_000_000 {
                if Instant::now() >= deadline {
                    break;
                }
                let start = Instant::now();
                let (status, code, retry_after) = match request(&http).send().await {
                    Err(e) => (0, format!("client error: {}", client_error(&e)), None),
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let retry_after = response
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = response.bytes().await.unwrap_or_default();
                        let code = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v["code"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        (status, code, retry_after)
                    }
                };
                let took = start.elapsed();
                if status == 200 {
                    run.admitted_us.push(took.as_micros() as u64);
                } else if status == 503 && code == "http.overloaded" {
                    if retry_after.as_deref() != Some("1") {
                        run.shed_without_retry_after += 1;
                    }
                    tokio::time::sleep(backoff).await;
                }
                *run.answers.entry((status, code)).or_default() += 1;
            }
            run
        }));
    }
    let mut total = Run::default();
    for task in tasks {
        let run = task.await.unwrap();
        total.admitted_us.extend(run.admitted_us);
        total.shed_without_retry_after += run.shed_without_retry_after;
        for (key, n) in run.answers {
            *total.answers.entry(key).or_default() += n;
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// The innermost cause of a failed request: connect, timeout or what the
/// connection said.
fn client_error(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connect"
    } else if e.is_timeout() {
        "timeout"
    } else {
        "request"
    };
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    format!("{kind}: {source}")
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the RSS of `pid` every 50 ms until told to stop: the peak.
fn rss_sampler(pid: u32) -> (Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut peak = 0;
        // Bounded: at most 10 minutes of samples.
        for _ in 0..12_000 {
            peak = peak.max(rss_kib(pid));
            if flag.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    (stop, thread)
}

/// The issuer, one upstream and a gateway for the loopback world; the
/// gateway's extra flags `extra`.
struct Stack {
    _dir: tempfile::TempDir,
    _issuer: Service,
    _upstream: Upstream,
    gateways: Vec<(Service, u16, String)>,
    user: Arc<Client>,
    token: Token,
}

impl Stack {
    /// Gateways with these `--max-in-flight` values (`None`: the default).
    async fn start(caps: &[Option<usize>]) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let (issuer_port, issuer_metrics) = (free_port(), free_port());
        let issuer_url = format!("http://127.0.0.1:{issuer_port}");
        let mut issuer = issuer_service(
            dir.path(),
            "issuer",
            &issuer_url,
            issuer_port,
            issuer_metrics,
            None,
            None,
            "",
        );
        let upstream_port = free_port();
        let upstream = Upstream::start(upstream_port);
        tokio::task::block_in_place(|| {
            bootstrap(&issuer);
            issuer.start();
        });
        let admin = admin_client(&issuer_url).await;
        // One audience for every gateway: they verify the same token.
        let port0 = free_port();
        let external = format!("http://127.0.0.1:{port0}");
        create_world(&admin, &issuer_url, &[&external]).await;
        let mut gateways = Vec::new();
        for (i, cap) in caps.iter().enumerate() {
            let (port, ops) = (if i == 0 { port0 } else { free_port() }, free_port());
            let mut gateway = gateway_service(
                dir.path(),
                &format!("gateway-{i}"),
                &issuer_url,
                &external,
                upstream_port,
                port,
                ops,
                None,
            );
            if let Some(cap) = cap {
                gateway.args.extend(["--max-in-flight".to_owned(), cap.to_string()]);
            }
            // The client pool may hold more connections than it has
            // clients; past the connection cap the gateway closes idle ones
            // (http.md §9), which a client sees as a reset, not a 503.
            gateway.args.extend(["--max-connections".to_owned(), "4096".to_owned()]);
            tokio::task::block_in_place(|| gateway.start());
            gateways.push((gateway, ops, format!("http://127.0.0.1:{port}/v2/servers")));
        }
        let user = Arc::new(user_client(&issuer_url).await);
        let token = user
            .service_token(&Scope::new(&external).project(PROJECT).domain(DOMAIN))
            .await
            .unwrap();
        Stack {
            _dir: dir,
            _issuer: issuer,
            _upstream: upstream,
            gateways,
            user,
            token,
        }
    }

    /// A request to gateway `i`, signed for the shared external URL (the
    /// proof's `htu`), sent to that gateway's own port.
    fn request(&self, i: usize) -> Request {
        let sent_to = self.gateways[i].2.clone();
        let htu = self.gateways[0].2.clone();
        let (user, token) = (self.user.clone(), self.token.clone());
        let authorization = format!("KB {}", token.to_base64url());
        Arc::new(move |http: &reqwest::Client| {
            let mut jti = [0u8; 16];
            jti[..8].copy_from_slice(&JTI.fetch_add(1, Ordering::Relaxed).to_be_bytes());
            jti[8..].copy_from_slice(&std::process::id().to_be_bytes().repeat(2));
            let proof = ProofBuilder::new("GET", &htu, token.as_bytes(), b"", SystemClock.now())
                .unwrap()
                .jti(jti)
                .sign(user.key())
                .unwrap();
            http.get(&sent_to)
                .header("authorization", &authorization)
                .header("kb-proof", b64url_encode(&proof.into_bytes()))
        })
    }
}

fn shed_metric(ops: u16) -> u64 {
    crate::common::deployment::http_get(ops, "/metrics")
        .1
        .lines()
        .find_map(|l| l.strip_prefix("keybound_http_overloaded_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// FL-14 at a protected service: a gateway with the default in-flight cap
/// (128 per core). A run with 2 clients gives the unloaded p99 and the
/// capacity (the machine saturates at a few clients); 64 clients, deep
/// saturation, must shed nothing (the default carries normal load); then
/// 3 × the cap of clients (768 on 2 cores). Asserts: requests shed with 503
/// `http.overloaded` and `Retry-After: 1`, nothing but 200 otherwise (no
/// 500, no connection error); the gateway's peak RSS below 256 MiB above
/// its unloaded RSS; the shed count in `keybound_http_overloaded_total`;
/// unloaded service afterwards with a p99 near the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl14_protected_service_sheds_overload_without_errors() {
    let _heavy = crate::common::heavy().await;
    let test = "fl14_service";
    let stack = Stack::start(&[None]).await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cap = keybound::http::serve::DEFAULT_IN_FLIGHT_PER_CORE * cores;
    let overload_clients = 3 * cap;
    let (warm, phase) = if long() {
        (Duration::from_secs(3), Duration::from_secs(30))
    } else {
        (Duration::from_millis(1500), Duration::from_secs(4))
    };
    let (gateway, ops, _) = &stack.gateways[0];
    let pid = gateway.pid();
    let mut unloaded = closed_loop(stack.request(0), 2, warm, Duration::ZERO).await;
    let rss_unloaded = rss_kib(pid);
    let mut saturated = closed_loop(stack.request(0), 64, warm, Duration::ZERO).await;
    let (stop, sampler) = rss_sampler(pid);
    let mut overload = closed_loop(stack.request(0), overload_clients, phase, SHED_BACKOFF).await;
    stop.store(true, Ordering::Relaxed);
    let rss_peak = sampler.join().unwrap();
    let mut after = closed_loop(stack.request(0), 2, warm, Duration::ZERO).await;
    let shed_metric = shed_metric(*ops);
    eprintln!(
        "{test}: cap {cap} in flight; unloaded (2) {:.0}/s p50 {:.2} ms p99 {:.2} ms; saturated (64) {:.0}/s \
         p99 {:.2} ms, shed {}; overload ({overload_clients} clients, {} s) admitted {:.0}/s p50 {:.2} ms p99 {:.2} ms, \
         shed {} ({:.0}/s), offered {:.0}/s, answers {:?}; after: {:.0}/s p99 {:.2} ms; RSS unloaded {} KiB, peak {} KiB; \
         keybound_http_overloaded_total {shed_metric}",
        unloaded.admitted_per_s(),
        unloaded.percentile_ms(0.5),
        unloaded.percentile_ms(0.99),
        saturated.admitted_per_s(),
        saturated.percentile_ms(0.99),
        saturated.shed(),
        phase.as_secs(),
        overload.admitted_per_s(),
        overload.percentile_ms(0.5),
        overload.percentile_ms(0.99),
        overload.shed(),
        overload.shed() as f64 / overload.elapsed.as_secs_f64(),
        overload.offered_per_s(),
        overload.answers,
        after.admitted_per_s(),
        after.percentile_ms(0.99),
        rss_unloaded,
        rss_peak,
    );
    for (name, run) in [("unloaded", &unloaded), ("saturated", &saturated), ("after", &after)] {
        assert!(run.others().is_empty(), "{name}: {:?}\n{}", run.answers, gateway.log());
        assert_eq!(run.shed(), 0, "{name}: the default cap sheds normal load");
        assert!(run.admitted_us.len() >= 10, "{name}: {:?}", run.answers);
    }
    assert!(overload.shed() > 0, "nothing shed: {:?}", overload.answers);
    assert_eq!(overload.shed_without_retry_after, 0);
    assert!(
        overload.others().is_empty(),
        "{:?}\n{}",
        overload.answers,
        gateway.log()
    );
    assert!(overload.admitted_us.len() >= 100, "{:?}", overload.answers);
    assert!(
        rss_peak < rss_unloaded + 256 * 1024,
        "RSS {rss_peak} KiB from {rss_unloaded} KiB"
    );
    assert!(
        shed_metric >= overload.shed(),
        "metric {shed_metric} < {}",
        overload.shed()
    );
    assert!(
        after.percentile_ms(0.99) <= 5.0 * unloaded.percentile_ms(0.99) + 20.0,
        "after {:.2} ms, before {:.2} ms",
        after.percentile_ms(0.99),
        unloaded.percentile_ms(0.99)
    );
}

/// FL-14, the p99 of admitted requests: the same 512 clients (hundreds of
/// times what saturates this machine: 2 clients do) against two gateways
/// of one deployment, one with a cap of 16 in flight, one that sheds
/// nothing (a cap of 1,000,000: the control, every client's request in its
/// queue); shed clients wait 250 ms. Shedding must bound the admitted p99 by the cap, not by the
/// clients: the admitted p90 below 0.85 × the control's (equal caps would
/// give equal p90s), and the admitted rate above a tenth of the capacity (no
/// collapse). The p99s are reported, and the absolute ones with the time to drain 16
/// requests at the measured capacity, not asserted: the load generator
/// runs on the same two cores, and its own queueing of hundreds of client
/// tasks (each shed request costs it a proof and a round trip too) is in
/// every latency it measures, so it varies with whatever else the machine
/// runs (seen: 330 ms to 1.3 s with the cap of 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl14_shedding_bounds_the_p99_of_admitted_requests() {
    let _heavy = crate::common::heavy().await;
    let test = "fl14_p99";
    let stack = Stack::start(&[Some(16), Some(1_000_000)]).await;
    let clients = 512;
    let phase = if long() {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(3)
    };
    let mut unloaded = closed_loop(stack.request(0), 2, Duration::from_millis(1500), Duration::ZERO).await;
    let capacity = unloaded.admitted_per_s();
    // Shed clients wait 250 ms here: every shed round trip costs the shared
    // cores (and the load generator) what it takes from admitted requests.
    let backoff = Duration::from_millis(250);
    let mut shedding = closed_loop(stack.request(0), clients, phase, backoff).await;
    let mut control = closed_loop(stack.request(1), clients, phase, backoff).await;
    let drain_ms = 16.0 / capacity * 1000.0;
    eprintln!(
        "{test}: capacity (2 clients) {capacity:.0}/s p99 {:.2} ms; {clients} clients, cap 16: admitted {:.0}/s \
         p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms (16 drain in {drain_ms:.1} ms), shed {}; no cap: admitted {:.0}/s \
         p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms, shed {}; offered {:.0}/s and {:.0}/s; answers {:?} / {:?}",
        unloaded.percentile_ms(0.99),
        shedding.admitted_per_s(),
        shedding.percentile_ms(0.5),
        shedding.percentile_ms(0.9),
        shedding.percentile_ms(0.99),
        shedding.shed(),
        control.admitted_per_s(),
        control.percentile_ms(0.5),
        control.percentile_ms(0.9),
        control.percentile_ms(0.99),
        control.shed(),
        shedding.offered_per_s(),
        control.offered_per_s(),
        shedding.answers,
        control.answers,
    );
    for (name, run) in [("unloaded", &unloaded), ("cap 16", &shedding), ("control", &control)] {
        assert!(run.others().is_empty(), "{name}: {:?}", run.answers);
        assert!(run.admitted_us.len() >= 50, "{name}: {:?}", run.answers);
    }
    assert!(shedding.shed() > 0);
    assert_eq!(shedding.shed_without_retry_after, 0);
    assert!(shedding.admitted_per_s() > capacity / 10.0, "collapse");
    // The p90, not the p99: the slowest admitted answers wait mostly in the
    // load generator (hundreds of client tasks on the same two cores), and
    // the faster the gateway, the less of the control's p99 is the
    // gateway's queue (seen: cap 442 ms, control 435 ms at p99, with the
    // p50s 48 against 214 ms).
    let (p90, control_p90) = (shedding.percentile_ms(0.9), control.percentile_ms(0.9));
    assert!(
        p90 < 0.85 * control_p90,
        "shedding p90 {p90:.1} ms, control {control_p90:.1} ms"
    );
}

/// FL-14 at the issuer's token endpoint on PostgreSQL: one issuer with a
/// pool of 4 database connections, a 2 s acquire timeout and 16 requests
/// in flight (4 mints contend for each connection), and 256 clients
/// minting in a closed loop with new proofs. Every mint reads the
/// database (the facts it re-checks, spec/issuer.md §6.5); only the first
/// of a minute writes its audit entry, the others are counted in memory.
/// Asserts: shed with `http.overloaded`, every other answer 200 or 503
/// `issuer.unavailable` (the pool's acquire timeout), never a 500 nor a
/// hang (the slowest answer under 7 s: the acquire timeout plus 5 s);
/// minting normal again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl14_issuer_token_endpoint_on_postgres_sheds_and_never_hangs() {
    let _heavy = crate::common::heavy().await;
    let test = "fl14_issuer";
    let Some(db) = PgDatabase::create(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    crate::common::write_secret(&dir.path().join("root.key"), &[9u8; 32]);
    let (port, metrics) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{port}");
    let mut issuer = issuer_service(
        dir.path(),
        "pg-issuer",
        &url,
        port,
        metrics,
        Some(&db.url),
        None,
        "database_max_connections = 4\ndatabase_acquire_timeout = 2\nmax_in_flight = 16\n",
    );
    tokio::task::block_in_place(|| {
        bootstrap(&issuer);
        issuer.start();
    });
    let audience = "https://service.example";
    let admin = admin_client(&url).await;
    create_world(&admin, &url, &[audience]).await;
    let user = Arc::new(user_client(&url).await);
    let session = user.session().unwrap().token;
    let mint_url = format!("{url}/v1/tokens");
    let body =
        serde_json::to_vec(&serde_json::json!({"audience": audience, "project": PROJECT, "domain": DOMAIN})).unwrap();
    let authorization = format!("KB {}", session.to_base64url());
    let mint: Request = {
        let user = user.clone();
        Arc::new(move |http: &reqwest::Client| {
            let proof = ProofBuilder::new("POST", &mint_url, session.as_bytes(), &body, SystemClock.now())
                .unwrap()
                .sign(user.key())
                .unwrap();
            http.post(&mint_url)
                .header("authorization", &authorization)
                .header("kb-proof", proof.to_base64url())
                .header("content-type", "application/json")
                .body(body.clone())
        })
    };
    let phase = if long() {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(3)
    };
    let mut unloaded = closed_loop(mint.clone(), 2, Duration::from_millis(1500), Duration::ZERO).await;
    let mut overload = closed_loop(mint.clone(), 256, phase, SHED_BACKOFF).await;
    let mut after = closed_loop(mint, 2, Duration::from_millis(1500), Duration::ZERO).await;
    let slowest_ms = overload.admitted_us.iter().max().copied().unwrap_or(0) as f64 / 1000.0;
    eprintln!(
        "{test}: unloaded {:.0} mints/s p99 {:.1} ms; 256 clients: admitted {:.0}/s p50 {:.1} ms p99 {:.1} ms, \
         slowest {slowest_ms:.0} ms, shed {}, offered {:.0}/s, answers {:?}; after {:.0}/s p99 {:.1} ms",
        unloaded.admitted_per_s(),
        unloaded.percentile_ms(0.99),
        overload.admitted_per_s(),
        overload.percentile_ms(0.5),
        overload.percentile_ms(0.99),
        overload.shed(),
        overload.offered_per_s(),
        overload.answers,
        after.admitted_per_s(),
        after.percentile_ms(0.99),
    );
    let allowed = |((status, code), _): &(&(u16, String), &u64)| *status == 503 && code == "issuer.unavailable";
    assert!(unloaded.others().is_empty(), "{:?}", unloaded.answers);
    assert!(after.others().is_empty(), "{:?}\n{}", after.answers, issuer.log());
    assert!(
        overload.others().iter().all(allowed),
        "{:?}\n{}",
        overload.answers,
        issuer.log()
    );
    assert!(overload.shed() > 0, "{:?}", overload.answers);
    assert!(overload.admitted_us.len() >= 20, "{:?}", overload.answers);
    assert!(slowest_ms < 7_000.0, "a mint took {slowest_ms} ms");
    tokio::task::block_in_place(|| issuer.stop());
}
