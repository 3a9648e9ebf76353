//! The fault suite (issue 17, security-catalog.md §4): traffic through the
//! loopback deployment of tests/it/common/deployment.rs, one fault
//! injected with real signals, every operation recorded, the history
//! checked offline against I1–I6 (tests/it/common/history.rs). Each
//! scenario is bounded in time; `KEYBOUND_FAULTS_LONG=1` runs the long
//! version, `KEYBOUND_FAULTS_KEEP=DIR` keeps the histories for
//! `cargo run --example check_history -- DIR/NAME.jsonl`. docs/faults.md
//! describes them. Figures go to stderr (`--no-capture` shows them).
#![cfg(all(feature = "cli", feature = "gateway", feature = "postgres", target_os = "linux"))]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keybound::client::{Client, NewTrust, Scope};
use keybound::encoding::{b64url_encode, hex_encode};
use keybound::issuer::loopback::{PROJECT, ROLE};
use keybound::proof::ProofBuilder;
use keybound::token::Token;
use keybound::verify::{Clock, SystemClock};
use serde_json::{Value, json};

use crate::common::PrivateRedis;
use crate::common::deployment::{
    self, Deployment, Options, admin_call, admin_client, audit_entries, bootstrap, create_world, http_get,
    issuer_service, long, user_client,
};
use crate::common::free_port;
use crate::common::history::{Model, Recorder, Report, check, now_ms};

/// The claims the checker needs, from a token we were given.
fn token_json(token: &Token) -> Value {
    let decoded = keybound::danger::insecure_decode_token(token.as_bytes()).expect("the issuer's token decodes");
    let claims = decoded.claims;
    json!({"cti": hex_encode(&claims.cti), "kid": hex_encode(&decoded.kid), "iat": claims.iat, "exp": claims.exp,
           "nbf": claims.nbf, "aud": [claims.aud]})
}

/// A fresh token for `scope`, recorded as a `mint`.
async fn mint(rec: &Recorder, who: &str, user: &Client, scope: &Scope) -> Option<Token> {
    user.forget_token(scope);
    let start = now_ms();
    let result = user.service_token(scope).await;
    let end = now_ms();
    match result {
        Ok(token) => {
            rec.record(
                json!({"kind": "mint", "client": who, "replica": "lb", "start_ms": start, "end_ms": end,
                              "status": 200, "token": token_json(&token)}),
            );
            Some(token)
        }
        Err(e) => {
            rec.record(
                json!({"kind": "mint", "client": who, "replica": "lb", "start_ms": start, "end_ms": end,
                              "status": 0, "code": e.code().as_str()}),
            );
            None
        }
    }
}

/// One signed request, ready to be sent (and sent again).
#[derive(Clone)]
struct Signed {
    id: String,
    iat: u64,
    headers: [(String, String); 2],
    token: Value,
}

static JTI: AtomicU64 = AtomicU64::new(1);

fn sign(user: &Client, token: &Token, url: &str) -> Signed {
    let mut jti = [0u8; 16];
    jti[..8].copy_from_slice(&JTI.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    jti[8..].copy_from_slice(&now_ms().to_be_bytes());
    let iat = SystemClock.now();
    let proof = ProofBuilder::new("GET", url, token.as_bytes(), b"", iat)
        .unwrap()
        .jti(jti)
        .sign(user.key())
        .unwrap();
    Signed {
        id: format!(
            "{}:{}",
            hex_encode(user.key().public_key().thumbprint().as_bytes()),
            hex_encode(&jti)
        ),
        iat,
        headers: [
            ("authorization".into(), format!("KB {}", token.to_base64url())),
            ("kb-proof".into(), b64url_encode(&proof.into_bytes())),
        ],
        token: token_json(token),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(4)
        .build()
        .unwrap()
}

/// Sends `signed` to `base` (a balancer or a replica, named `replica`) and
/// records it: `kind` `proof` for a first use, `replay` for a resend.
async fn send(
    rec: &Recorder,
    http: &reqwest::Client,
    who: &str,
    kind: &str,
    replica: &str,
    base: &str,
    signed: &Signed,
) -> (u16, Option<String>) {
    let start = now_ms();
    let mut request = http.get(format!("{base}/v2/servers"));
    for (name, value) in &signed.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let (status, code) = match request.send().await {
        Err(_) => (0, None),
        Ok(response) => {
            let status = response.status().as_u16();
            let header = response
                .headers()
                .get("kb-error")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.text().await.unwrap_or_default();
            let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            (status, header.or_else(|| json["code"].as_str().map(str::to_owned)))
        }
    };
    let end = now_ms();
    rec.record(
        json!({"kind": kind, "client": who, "replica": replica, "proof": signed.id, "token": signed.token,
                      "start_ms": start, "end_ms": end, "status": status, "code": code, "valid": kind == "proof"}),
    );
    (status, code)
}

/// Proof traffic: `clients` users, each calling the service balancer with
/// a new proof per request and resending every `replay_every`-th proof
/// to both gateway replicas directly (one of them is the other replica);
/// a new token every `remint_every` requests. Runs until `stop`; the
/// accepted proofs are returned for replays after the faults.
struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    accepted: Arc<Mutex<Vec<Signed>>>,
}

impl Traffic {
    async fn start(
        d: &Deployment,
        rec: &Recorder,
        clients: usize,
        replay_every: usize,
        remint_every: usize,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let user = user_client(&d.issuer_url).await;
            let (rec, stop, accepted) = (rec.clone(), stop.clone(), accepted.clone());
            let external = d.service_url.clone();
            let replicas: Vec<(String, String)> = (0..d.gateways.len())
                .map(|i| (d.gateways[i].name.clone(), d.gateway_url(i)))
                .collect();
            tasks.push(tokio::spawn(async move {
                let who = format!("prober-{c}");
                let scope = Scope::new(&external).project(PROJECT);
                let http = http();
                let url = format!("{external}/v2/servers");
                let mut token = None;
                // Bounded in count as well as by `stop`.
                for i in 0..100_000usize {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if token.is_none() || (remint_every > 0 && i % remint_every == 0) {
                        token = mint(&rec, &who, &user, &scope).await.or(token);
                    }
                    let Some(t) = &token else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let signed = sign(&user, t, &url);
                    let (status, _) = send(&rec, &http, &who, "proof", "lb", &external, &signed).await;
                    if status == 200 {
                        accepted.lock().unwrap().push(signed.clone());
                    }
                    if replay_every > 0 && i % replay_every == 0 {
                        for (name, base) in &replicas {
                            send(&rec, &http, &who, "replay", name, base, &signed).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        Traffic { stop, tasks, accepted }
    }

    async fn finish(self) -> Vec<Signed> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.accepted.lock().unwrap().clone()
    }
}

/// Resends each of `proofs` (at most `limit`) to every gateway replica.
async fn replay_all(d: &Deployment, rec: &Recorder, proofs: &[Signed], limit: usize) {
    let http = http();
    for signed in proofs.iter().rev().take(limit) {
        for i in 0..d.gateways.len() {
            send(
                rec,
                &http,
                "replayer",
                "replay",
                &d.gateways[i].name,
                &d.gateway_url(i),
                signed,
            )
            .await;
        }
    }
}

fn ops_of<'a>(history: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    history.iter().filter(move |op| op["kind"] == kind)
}

fn ms(op: &Value, key: &str) -> u64 {
    op[key].as_u64().unwrap_or(0)
}

/// The model of a scenario whose fault is not the replay store's: a valid
/// request may still meet a fail-closed `replay.store_unavailable` when
/// the loaded test machine delays the (healthy) Redis past the store's
/// 250 ms timeout. Such refusals are counted, and bounded by
/// [`assert_few_store_timeouts`]; any other refusal of a valid request is
/// a violation.
fn model_tolerating_store_timeouts() -> Model {
    Model {
        allowed_refusals: vec!["replay.store_unavailable".into()],
        ..Model::default()
    }
}

/// At most 1 % of the valid requests refused by a store timeout.
fn assert_few_store_timeouts(report: &Report) {
    let (refused, sent) = (report.figure("valid_refused_allowed"), report.figure("proofs_sent"));
    assert!(
        refused * 100 <= sent,
        "{refused} of {sent} valid requests refused with replay.store_unavailable: {}",
        report.summary()
    );
}

fn verdict(name: &str, rec: &Recorder, model: &Model) -> Report {
    rec.keep(name);
    let report = check(&rec.ops(), model);
    eprintln!("--- {name}\n{}", report.summary());
    report
}

/// Fail-closed and recovery figures of one outage [`from`, `to`) of the
/// replay store: the time to the first refusal, the slowest refusal, how
/// many requests started inside it were accepted, and the time from `to`
/// to the first accepted request.
struct Outage {
    first_refusal_ms: Option<u64>,
    slowest_refusal_ms: u64,
    accepted_inside: usize,
    recovery_ms: Option<u64>,
}

fn outage(history: &[Value], from: u64, to: u64) -> Outage {
    let proofs: Vec<&Value> = ops_of(history, "proof").collect();
    let refusals: Vec<&&Value> = proofs
        .iter()
        .filter(|op| ms(op, "end_ms") >= from && ms(op, "start_ms") < to && op["code"] == "replay.store_unavailable")
        .collect();
    Outage {
        first_refusal_ms: refusals.iter().map(|op| ms(op, "end_ms") - from).min(),
        slowest_refusal_ms: refusals
            .iter()
            .map(|op| ms(op, "end_ms") - ms(op, "start_ms"))
            .max()
            .unwrap_or(0),
        // A request begun 100 ms after the fault cannot have been checked
        // before it.
        accepted_inside: proofs
            .iter()
            .filter(|op| ms(op, "start_ms") >= from + 100 && ms(op, "end_ms") <= to && op["status"] == 200)
            .count(),
        recovery_ms: proofs
            .iter()
            .filter(|op| ms(op, "start_ms") >= to && op["status"] == 200)
            .map(|op| ms(op, "end_ms") - to)
            .min(),
    }
}

/// FL-07 and FL-08: the gateways' shared Redis killed (`SIGKILL`), started
/// again empty on its port, then paused (`SIGSTOP`) and resumed, under
/// proof traffic through the service balancer with replays sent to both
/// replicas. Both replicas fail closed (503 `replay.store_unavailable`)
/// within a bounded time and recover without a restart; over the whole
/// run, and for every accepted proof resent at the end, no proof is
/// accepted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl07_fl08_redis_killed_and_paused_fail_closed_and_no_replay_is_accepted() {
    let _heavy = crate::common::heavy().await;
    let test = "fl07_fl08";
    let Some(mut d) = Deployment::start(test, Options::default()).await else {
        return;
    };
    let rec = Recorder::new();
    let phase = Duration::from_secs(if long() { 20 } else { 2 });
    let traffic = Traffic::start(&d, &rec, 2, 3, 0).await;
    tokio::time::sleep(phase).await;

    // FL-07: killed.
    let port = d.gateway_redis.as_ref().unwrap().port;
    let killed = now_ms();
    rec.fault("gateway redis: SIGKILL");
    d.gateway_redis.as_mut().unwrap().kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let readyz_down: Vec<(u16, String)> = d.gateway_ops.iter().map(|ops| http_get(*ops, "/readyz")).collect();
    tokio::time::sleep(phase).await;
    let restarted = now_ms();
    rec.fault("gateway redis: started again, empty");
    d.gateway_redis = Some(tokio::task::block_in_place(|| PrivateRedis::start(&[], Some(port))).unwrap());
    tokio::time::sleep(phase).await;

    // FL-08: paused.
    let pid = d.gateway_redis.as_ref().unwrap().pid() as libc::pid_t;
    let paused = now_ms();
    rec.fault("gateway redis: SIGSTOP");
    // SAFETY: kill(2) on our own redis-server child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let readyz_paused: Vec<(u16, String)> = d.gateway_ops.iter().map(|ops| http_get(*ops, "/readyz")).collect();
    tokio::time::sleep(phase).await;
    let resumed = now_ms();
    rec.fault("gateway redis: SIGCONT");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    tokio::time::sleep(phase).await;
    let accepted = traffic.finish().await;
    replay_all(&d, &rec, &accepted, 300).await;

    let model = Model {
        // Fail-closed answers, and the fence of a Redis that came back
        // empty (a proof made before it).
        allowed_refusals: vec!["replay.store_unavailable".into(), "replay.store_restarted".into()],
        ..Model::default()
    };
    let report = verdict(test, &rec, &model);
    let history = rec.ops();
    let (kill, pause) = (outage(&history, killed, restarted), outage(&history, paused, resumed));
    for (name, o) in [("kill", &kill), ("pause", &pause)] {
        eprintln!(
            "{name}: first 503 after {:?} ms, slowest 503 {} ms, accepted during the outage {}, recovered {:?} ms after Redis returned",
            o.first_refusal_ms, o.slowest_refusal_ms, o.accepted_inside, o.recovery_ms
        );
    }
    eprintln!("readyz with Redis killed: {readyz_down:?}; paused: {readyz_paused:?}");
    // /readyz takes a replica whose replay store is down out of a balancer.
    for (status, body) in readyz_down.iter().chain(&readyz_paused) {
        assert_eq!(*status, 503, "{body}");
        assert!(body.contains("replay.store_unavailable"), "{body}");
    }
    assert!(report.violations.is_empty(), "{}\n{}", report.summary(), d.logs());
    assert_eq!(report.figure("proofs_accepted_twice"), 0);
    assert!(report.figure("replays_sent") > 100, "{}", report.summary());
    for (name, o) in [("kill", &kill), ("pause", &pause)] {
        assert_eq!(o.accepted_inside, 0, "{name}: accepted without a replay check");
        let first = o
            .first_refusal_ms
            .unwrap_or_else(|| panic!("{name}: never failed closed"));
        assert!(first < 2000, "{name}: failed closed only after {first} ms");
        assert!(
            o.slowest_refusal_ms < 2000,
            "{name}: a refusal took {} ms",
            o.slowest_refusal_ms
        );
        let recovery = o.recovery_ms.unwrap_or_else(|| panic!("{name}: never recovered"));
        assert!(recovery < 5000, "{name}: recovered after {recovery} ms");
    }
}

/// Admin writes (role creations by two administrators) and mints through
/// the issuer balancer, one recorded history.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    async fn start(issuer: &str, rec: &Recorder, writers: usize, mint_audience: Option<&str>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let admin = admin_client(issuer).await;
            let (rec, stop, issuer) = (rec.clone(), stop.clone(), issuer.to_owned());
            tasks.push(tokio::spawn(async move {
                for i in 0..100_000usize {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("fl01-w{w}-{i}");
                    let start = now_ms();
                    let (status, code, _) = admin_call(
                        &admin,
                        &issuer,
                        reqwest::Method::POST,
                        "/v1/admin/roles",
                        Some(&json!({"name": name})),
                    )
                    .await;
                    rec.record(
                        json!({"kind": "admin_write", "client": format!("admin-{w}"), "replica": "lb",
                                      "name": name, "action": "role.create", "start_ms": start, "end_ms": now_ms(),
                                      "status": status, "code": code}),
                    );
                    if status != 200 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        if let Some(audience) = mint_audience {
            // Trust writes: the user trusts TRUSTEE with its role, again
            // and again (a trust is named by the id the issuer answers).
            let user = user_client(issuer).await;
            let (rec2, stop2) = (rec.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..100_000usize {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    let start = now_ms();
                    let answer = user
                        .create_trust(&NewTrust {
                            trustee: TRUSTEE.into(),
                            project: Some(PROJECT.into()),
                            roles: vec![ROLE.into()],
                            ..Default::default()
                        })
                        .await;
                    let end = now_ms();
                    match answer {
                        Ok(trust) => rec2.record(json!({"kind": "trust_write", "client": "trustor", "replica": "lb",
                                                        "name": trust["id"], "action": "trust.create",
                                                        "start_ms": start, "end_ms": end, "status": 200})),
                        Err(e) => {
                            rec2.record(json!({"kind": "trust_write", "client": "trustor", "replica": "lb",
                                               "action": "trust.create", "start_ms": start, "end_ms": end,
                                               "status": 0, "code": e.code().as_str()}));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
            let user = user_client(issuer).await;
            let (rec, stop) = (rec.clone(), stop.clone());
            let scope = Scope::new(audience).project(PROJECT);
            tasks.push(tokio::spawn(async move {
                for _ in 0..100_000usize {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if mint(&rec, "minter", &user, &scope).await.is_none() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        Writers { stop, tasks }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// The trustee of the trust writes.
const TRUSTEE: &str = "trustee@stoughton";

/// Creates [`TRUSTEE`].
async fn create_trustee(issuer: &str) {
    let admin = admin_client(issuer).await;
    let (status, code, _) = admin_call(
        &admin,
        issuer,
        reqwest::Method::POST,
        "/v1/admin/users",
        Some(&json!({"user": TRUSTEE, "password": "trustee password 1"})),
    )
    .await;
    assert_eq!(status, 200, "{code:?}");
}

/// Reads back what the issuer holds after the faults: the roles, through
/// the admin API, and the whole audit log.
async fn read_back(rec: &Recorder, issuer: &str) {
    let admin = admin_client(issuer).await;
    let start = now_ms();
    let (status, code, roles) = admin_call(&admin, issuer, reqwest::Method::GET, "/v1/admin/roles", None).await;
    assert_eq!(status, 200, "{code:?}");
    let names: Vec<Value> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.get("name").cloned().unwrap_or_else(|| r.clone()))
        .collect();
    let (status, code, trusts) = admin_call(&admin, issuer, reqwest::Method::GET, "/v1/admin/trusts", None).await;
    assert_eq!(status, 200, "{code:?}");
    let mut names = names;
    names.extend(trusts.as_array().unwrap().iter().map(|t| t["id"].clone()));
    rec.record(
        json!({"kind": "readback", "client": "test", "source": "admin_api", "names": names,
                      "start_ms": start, "end_ms": now_ms()}),
    );
    let entries = audit_entries(&admin, issuer).await;
    rec.record(
        json!({"kind": "audit", "client": "test", "entries": entries, "start_ms": now_ms(), "end_ms": now_ms()}),
    );
}

/// FL-01 on PostgreSQL: `kill -9` of one issuer replica, then of the
/// other, each started again, during admin writes and mints through the
/// balancer. Every acknowledged write is there afterwards with its audit
/// entry, in real-time order, and every acknowledged mint's minute entry
/// exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl01_issuer_replica_killed_loses_no_acknowledged_write_postgres() {
    let _heavy = crate::common::heavy().await;
    let test = "fl01_postgres";
    let Some(mut d) = Deployment::start(test, Options::default()).await else {
        return;
    };
    let rec = Recorder::new();
    let service = d.service_url.clone();
    create_trustee(&d.issuer_url).await;
    let writers = Writers::start(&d.issuer_url, &rec, 2, Some(&service)).await;
    let cycles = if long() { 20 } else { 2 };
    let mut restarts = Vec::new();
    for cycle in 0..cycles {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let victim = cycle % 2;
        rec.fault(&format!("{}: SIGKILL", d.issuers[victim].name));
        d.issuers[victim].kill9();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let took = tokio::task::block_in_place(|| d.issuers[victim].start());
        rec.fault(&format!("{}: started again", d.issuers[victim].name));
        restarts.push(took.as_millis());
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    writers.finish().await;
    read_back(&rec, &d.issuer_url).await;
    let report = verdict(test, &rec, &Model::default());
    eprintln!("restart to /healthz: {restarts:?} ms");
    assert!(report.violations.is_empty(), "{}\n{}", report.summary(), d.logs());
    assert!(report.figure("writes_acknowledged") >= 20, "{}", report.summary());
    assert!(report.figure("mints_acknowledged") >= 10, "{}", report.summary());
    assert!(report.figure("trust_writes_sent") >= 10, "{}", report.summary());
    assert_eq!(report.figure("writes_lost"), 0);
}

/// FL-01 on SQLite: `kill -9` of the SQLite issuer during admin writes and
/// mints, twice, each time started again: no acknowledged write lost.
///
/// Mutation check. SQLite keeps a committed transaction across a process
/// kill whatever `synchronous` says (only a power loss or an OS crash can
/// take one back with `synchronous=NORMAL` or `OFF`), so weakening
/// durability cannot make this check fail under `kill -9`, and the issuer
/// has no setting for it anyway (WAL and `synchronous=FULL` are fixed).
/// The honest way to show the check can fail is to lose a write ourselves:
/// with the issuer down, one acknowledged role is deleted from the
/// database file, and the checker must name exactly that write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl01_sqlite_issuer_killed_loses_no_acknowledged_write_and_the_check_can_fail() {
    let _heavy = crate::common::heavy().await;
    let test = "fl01_sqlite";
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{port}");
    let mut issuer = issuer_service(dir.path(), "sqlite-issuer", &url, port, metrics, None, None, "");
    tokio::task::block_in_place(|| {
        bootstrap(&issuer);
        issuer.start();
    });
    let admin = admin_client(&url).await;
    let service = "https://service.example";
    create_world(&admin, &url, &[service]).await;
    let rec = Recorder::new();
    create_trustee(&url).await;
    let writers = Writers::start(&url, &rec, 2, Some(service)).await;
    let cycles = if long() { 20 } else { 2 };
    let mut restarts = Vec::new();
    for _ in 0..cycles {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        rec.fault("sqlite issuer: SIGKILL");
        issuer.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        restarts.push(tokio::task::block_in_place(|| issuer.start()).as_millis());
        rec.fault("sqlite issuer: started again");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    writers.finish().await;
    read_back(&rec, &url).await;
    let report = verdict(test, &rec, &Model::default());
    eprintln!("restart to /healthz: {restarts:?} ms");
    assert!(report.violations.is_empty(), "{}\n{}", report.summary(), issuer.log());
    assert!(report.figure("writes_acknowledged") >= 20, "{}", report.summary());
    // Ids are dense on SQLite but for one case: an upsert that finds the
    // row (`INSERT … ON CONFLICT DO UPDATE`) spends an AUTOINCREMENT id. A
    // process's first mint of a minute inserts its minute's entry, and
    // finds it already there only when an earlier process of the same
    // minute wrote it: at most one spent id per restart. Any other gap
    // would be a lost entry.
    assert!(
        report.figure("audit_id_gaps") <= restarts.len() as u64,
        "{}",
        report.summary()
    );

    // The mutation: one acknowledged write lost behind the issuer's back.
    let lost = rec
        .ops()
        .iter()
        .filter(|op| op["kind"] == "admin_write" && op["status"] == 200)
        .max_by_key(|op| ms(op, "end_ms"))
        .map(|op| op["name"].as_str().unwrap().to_owned())
        .unwrap();
    issuer.kill9();
    let db = format!("sqlite:{}", dir.path().join("sqlite-issuer/keybound.db").display());
    tokio::task::block_in_place(|| deployment::run_sql(&db, &format!("DELETE FROM roles WHERE name = '{lost}'")));
    tokio::task::block_in_place(|| issuer.start());
    read_back(&rec, &url).await;
    let report = check(&rec.ops(), &Model::default());
    assert_eq!(report.figure("writes_lost"), 1, "{}", report.summary());
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.starts_with("I3:") && v.contains(&format!(" {lost} "))),
        "{}",
        report.summary()
    );
}

/// FL-04: keys rotated under proof traffic with a new token every few
/// requests, through the issuer balancer: no request with a valid token
/// fails. The rotations are forced (`{"force": true}`): a scheduled one is
/// refused until the next key has been published for the key-set max-age
/// plus 10 s (910 s), and the shortest rotation period is 600 s, both too
/// long for a test; at most 6 rotations are allowed per period, forced or
/// not. A forced rotation may sign with a key a gateway has not fetched:
/// it refetches on an unknown kid at most once per 30 s, and through the
/// balancer the refetch may reach the replica that has not seen the
/// rotation yet (replicas follow within 5 s), which still publishes the
/// new key as its next one only if it saw the rotation before. So the
/// rotations are spaced by more than the replicas' 5 s (short: 2, 6 s
/// apart) and, long, by more than 30 s plus 5 s (6, 36 s apart). Faster
/// forced rotations do refuse valid requests: docs/faults.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl04_rotation_under_load_fails_no_valid_request() {
    let _heavy = crate::common::heavy().await;
    let test = "fl04";
    let Some(d) = Deployment::start(test, Options::default()).await else {
        return;
    };
    let rec = Recorder::new();
    let traffic = Traffic::start(&d, &rec, 2, 10, 5).await;
    let admin = admin_client(&d.issuer_url).await;
    let (rotations, every) = if long() { (6, 36) } else { (2, 6) };
    let mut rotated = 0;
    for _ in 0..rotations {
        tokio::time::sleep(Duration::from_secs(every)).await;
        let start = now_ms();
        let (status, code, answer) = admin_call(
            &admin,
            &d.issuer_url,
            reqwest::Method::POST,
            "/v1/admin/keys/rotate",
            Some(&json!({"force": true})),
        )
        .await;
        rec.record(
            json!({"kind": "rotation", "client": "admin", "replica": "lb", "start_ms": start, "end_ms": now_ms(),
                          "status": status, "code": code, "answer": answer}),
        );
        if status == 200 {
            rotated += 1;
        }
    }
    // The other replica follows a rotation within 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    traffic.finish().await;
    let report = verdict(test, &rec, &model_tolerating_store_timeouts());
    assert_few_store_timeouts(&report);
    let kids: std::collections::BTreeSet<String> = ops_of(&rec.ops(), "proof")
        .filter(|op| op["status"] == 200)
        .filter_map(|op| op["token"]["kid"].as_str().map(str::to_owned))
        .collect();
    eprintln!("rotations acknowledged: {rotated}/{rotations}; kids of accepted tokens: {kids:?}");
    assert_eq!(rotated, rotations, "{}", report.summary());
    assert!(report.violations.is_empty(), "{}\n{}", report.summary(), d.logs());
    assert!(report.figure("proofs_accepted") > 100, "{}", report.summary());
    assert!(kids.len() > rotations, "every key signed accepted tokens: {kids:?}");
}

/// FL-09: a gateway with the in-memory replay store killed and started
/// again mid-traffic. Every proof it accepted in the cycle before is sent
/// to it again after the restart (and a sample of older ones): what is
/// accepted again is the replay window of a restart. The spec's answer is
/// the start-up fence: a proof made before the start is refused with
/// `replay.store_restarted`. The fence is in whole seconds (`iat < F`,
/// `F` the start's Unix second), so a proof made in the second of the
/// restart, before it, passes it and finds an empty store: the window is
/// that second. The test bounds it: every replay accepted after a restart
/// was first accepted less than 1 s plus the restart's duration before
/// the restart was ready, and carries an `iat` equal to the fence.
/// Then, with every issuer stopped, the other gateway restarted: it starts
/// from the key sets it kept on disk (`key_cache_dir`) and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl09_gateway_restart_with_memory_store_bounds_the_replay_window() {
    let _heavy = crate::common::heavy().await;
    let test = "fl09";
    let Some(mut d) = Deployment::start(test, Options { gateway_redis: false }).await else {
        return;
    };
    let rec = Recorder::new();
    let user = user_client(&d.issuer_url).await;
    let scope = Scope::new(&d.service_url).project(PROJECT);
    let token = mint(&rec, "prober", &user, &scope).await.unwrap();
    let url = format!("{}/v2/servers", d.service_url);
    let http = http();
    let base = d.gateway_url(0);
    let name = d.gateways[0].name.clone();
    let cycles = if long() { 20 } else { 3 };
    let mut restarts = Vec::new(); // (kill_ms, ready_ms)
    let mut older: Vec<Signed> = Vec::new();
    let mut window_violations = Vec::new();
    for cycle in 0..cycles {
        // Traffic up to the moment of the kill.
        let mut this_cycle = Vec::new();
        let until = Instant::now() + Duration::from_millis(700);
        while Instant::now() < until {
            let signed = sign(&user, &token, &url);
            if send(&rec, &http, "prober", "proof", &name, &base, &signed).await.0 == 200 {
                this_cycle.push((signed, now_ms()));
            }
        }
        // Proofs signed now, sent only after the restart: first uses.
        let unsent: Vec<_> = (0..5).map(|_| sign(&user, &token, &url)).collect();
        rec.fault(&format!("{name}: SIGKILL ({cycle})"));
        let killed = now_ms();
        d.gateways[0].kill9();
        tokio::task::block_in_place(|| d.gateways[0].start());
        let ready = now_ms();
        restarts.push((killed, ready));
        rec.fault(&format!("{name}: started again"));
        let fence = ready / 1000; // at most: the store started before /readyz answered
        for (signed, accepted_at) in &this_cycle {
            let (status, _) = send(&rec, &http, "replayer", "replay", &name, &base, signed).await;
            if status == 200 && (ready - accepted_at >= 1000 + (ready - killed)) {
                window_violations.push(format!(
                    "{} accepted again {} ms after its first use, {} ms before the restart",
                    signed.id,
                    ready - accepted_at,
                    killed.saturating_sub(*accepted_at)
                ));
            }
            if status == 200 && signed.iat != fence && signed.iat + 1 != fence {
                window_violations.push(format!(
                    "{} (iat {}) accepted again past the fence {fence}",
                    signed.id, signed.iat
                ));
            }
        }
        for signed in older.iter().take(20) {
            send(&rec, &http, "replayer", "replay", &name, &base, signed).await;
        }
        for signed in &unsent {
            send(&rec, &http, "prober", "late", &name, &base, signed).await;
        }
        older.extend(this_cycle.into_iter().map(|(s, _)| s));
        // The fence passes within a second: new proofs are accepted again.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let signed = sign(&user, &token, &url);
            if send(&rec, &http, "prober", "proof", &name, &base, &signed).await.0 == 200 {
                older.push(signed);
                break;
            }
            assert!(Instant::now() < deadline, "no proof accepted after the restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let model = Model {
        allowed_refusals: vec!["replay.store_restarted".into()],
        ..Model::default()
    };
    let report = verdict(test, &rec, &model);
    let history = rec.ops();
    let late: Vec<&Value> = ops_of(&history, "late").collect();
    let late_accepted = late.iter().filter(|op| op["status"] == 200).count();
    let late_codes: std::collections::BTreeSet<String> = late
        .iter()
        .map(|op| format!("{} {}", op["status"], op["code"]))
        .collect();
    let replays_after: Vec<&Value> = ops_of(&history, "replay").collect();
    let replayed_ok = replays_after.iter().filter(|op| op["status"] == 200).count();
    let restart_ms: Vec<u64> = restarts.iter().map(|(k, r)| r - k).collect();
    eprintln!(
        "restart (SIGKILL to /readyz): {restart_ms:?} ms; replays accepted after restarts: {replayed_ok} of {} (all inside the fence's second: {}); \
         proofs signed before a restart and first sent after it: {late_accepted} accepted of {} ({late_codes:?})",
        replays_after.len(),
        window_violations.is_empty(),
        late.len()
    );
    // The checker sees the window as I1 violations; every one of them
    // must be a proof of the restart's second.
    assert!(window_violations.is_empty(), "{}", window_violations.join("\n"));
    assert!(
        report.violations.iter().all(|v| v.starts_with("I1:")),
        "{}\n{}",
        report.summary(),
        d.logs()
    );
    assert!(report.figure("replays_sent") >= 50, "{}", report.summary());
    assert!(
        report.figure("replays_refused.401.replay.store_restarted") > 0,
        "the fence refused nothing: {}",
        report.summary()
    );

    // Warm start from disk (`key_cache_dir`): with every issuer down, a
    // restarted gateway serves with the key sets it kept, and verifies.
    tokio::task::block_in_place(|| {
        for issuer in &mut d.issuers {
            issuer.stop();
        }
        d.gateways[1].kill9();
    });
    let started_at = Instant::now();
    d.gateways[1].spawn();
    let ops = d.gateway_ops[1];
    let mut ready = (0, String::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready.0 != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        ready = http_get(ops, "/readyz");
    }
    let warm_ms = started_at.elapsed().as_millis();
    let (name1, base1) = (d.gateways[1].name.clone(), d.gateway_url(1));
    let signed = sign(&user, &token, &url);
    let (status, code) = send(&rec, &http, "prober", "warm", &name1, &base1, &signed).await;
    eprintln!(
        "a gateway restarted with every issuer down: ready after {warm_ms} ms ({ready:?}); a valid request: {status} {code:?}"
    );
    assert_eq!(ready.0, 200, "{ready:?}\n{}", d.gateways[1].log());
    assert_eq!(status, 200, "{code:?}\n{}", d.gateways[1].log());
}

/// FL-03: every issuer replica stopped for a while. The gateways keep
/// verifying valid tokens from their cached key sets (every valid request
/// accepted), still refuse replays, minting fails visibly through the
/// balancer, and works again when the issuers return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl03_issuers_down_services_keep_verifying_and_minting_recovers() {
    let _heavy = crate::common::heavy().await;
    let test = "fl03";
    let Some(mut d) = Deployment::start(test, Options::default()).await else {
        return;
    };
    let rec = Recorder::new();
    let user = user_client(&d.issuer_url).await;
    let scope = Scope::new(&d.service_url).project(PROJECT);
    let traffic = Traffic::start(&d, &rec, 2, 5, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    rec.fault("every issuer: SIGTERM");
    tokio::task::block_in_place(|| {
        for issuer in &mut d.issuers {
            issuer.stop();
        }
    });
    let down = Duration::from_secs(if long() { 60 } else { 3 });
    let until = Instant::now() + down;
    let mut refused_mints = 0;
    while Instant::now() < until {
        if mint(&rec, "minter", &user, &scope).await.is_none() {
            refused_mints += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    rec.fault("every issuer: started again");
    tokio::task::block_in_place(|| {
        for issuer in &mut d.issuers {
            issuer.start();
        }
    });
    // The balancer skips a backend for 1 s after it failed: minting comes
    // back within that.
    let back = now_ms();
    let mut minted = None;
    while minted.is_none() && now_ms() - back < 10_000 {
        minted = mint(&rec, "minter", &user, &scope).await;
        if minted.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let recovered = now_ms() - back;
    tokio::time::sleep(Duration::from_secs(1)).await;
    traffic.finish().await;
    let report = verdict(test, &rec, &model_tolerating_store_timeouts());
    assert_few_store_timeouts(&report);
    let codes: std::collections::BTreeSet<String> = ops_of(&rec.ops(), "mint")
        .filter(|op| op["status"] != 200)
        .map(|op| op["code"].as_str().unwrap_or("none").to_owned())
        .collect();
    eprintln!("mints refused while down: {refused_mints} ({codes:?}); first mint after the return: {recovered} ms");
    assert!(report.violations.is_empty(), "{}\n{}", report.summary(), d.logs());
    assert!(refused_mints > 0 && report.figure("mints_acknowledged") > 0);
    assert!(minted.is_some(), "minting did not recover");
    assert!(report.figure("proofs_accepted") > 50, "{}", report.summary());
    assert_eq!(report.figure("replays_accepted"), 0);
}

/// Key-set fetches that reached the issuers through their balancer so far.
fn key_set_fetches(d: &Deployment) -> usize {
    std::fs::read_to_string(d.dir.path().join("issuer-lb/access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("/.well-known/keybound/keys "))
        .count()
}

/// FL-15: a flood of tokens whose kid no key set has (signed by the
/// attacker's own key, with a valid proof by it), and of tokens from an
/// unknown issuer, through the service balancer, next to valid traffic.
/// Every forged request is refused with its code (`cose.key_unknown`,
/// `cwt.iss_unknown`); the gateways refetch their key set at most once
/// per 30 s each however many unknown kids arrive (counted in the issuer
/// balancer's access log), never for an unknown issuer; and every valid
/// request is still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl15_unknown_kid_flood_refetches_at_most_once_per_interval() {
    let _heavy = crate::common::heavy().await;
    use keybound::key::{Algorithm, SigningKey};
    use keybound::token::TokenBuilder;
    let test = "fl15";
    let Some(d) = Deployment::start(test, Options::default()).await else {
        return;
    };
    let rec = Recorder::new();
    let traffic = Traffic::start(&d, &rec, 1, 0, 0).await;
    let before = key_set_fetches(&d);
    let seconds = if long() { 65 } else { 5 };
    let attacker = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let http = http();
    let url = format!("{}/v2/servers", d.service_url);
    let started = Instant::now();
    let mut codes: std::collections::BTreeMap<String, usize> = Default::default();
    let mut forged = 0usize;
    for i in 0u64..1_000_000 {
        if started.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
        // Every fifth an unknown issuer, the others an unknown kid each.
        let issuer = if i % 5 == 0 {
            "https://unknown-issuer.example".to_owned()
        } else {
            d.issuer_url.clone()
        };
        let mut kid = [0u8; 8];
        kid.copy_from_slice(&(i | 0xff00_0000_0000_0000).to_be_bytes());
        let token = TokenBuilder::service(
            issuer,
            "ayoung@stoughton",
            &d.service_url,
            attacker.public_key().clone(),
            SystemClock.now(),
        )
        .scope("stoughton", PROJECT)
        .roles(["member"])
        .sign(&attacker, &kid)
        .unwrap();
        let proof = ProofBuilder::new("GET", &url, token.as_bytes(), b"", SystemClock.now())
            .unwrap()
            .sign(&attacker)
            .unwrap();
        let answer = http
            .get(&url)
            .header("authorization", format!("KB {}", token.to_base64url()))
            .header("kb-proof", b64url_encode(&proof.into_bytes()))
            .send()
            .await;
        forged += 1;
        let key = match answer {
            Err(_) => "no answer".to_owned(),
            Ok(r) => {
                let status = r.status().as_u16();
                let header = r
                    .headers()
                    .get("kb-error")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body: Value = serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
                let code = header.or_else(|| body["code"].as_str().map(str::to_owned));
                format!("{status} {}", code.as_deref().unwrap_or("-"))
            }
        };
        *codes.entry(key).or_default() += 1;
    }
    let fetches = key_set_fetches(&d) - before;
    traffic.finish().await;
    let report = verdict(test, &rec, &model_tolerating_store_timeouts());
    assert_few_store_timeouts(&report);
    eprintln!("{forged} forged requests in {seconds} s: {codes:?}; key-set fetches meanwhile: {fetches} (2 gateways)");
    assert!(report.violations.is_empty(), "{}\n{}", report.summary(), d.logs());
    assert!(report.figure("proofs_accepted") > 50, "{}", report.summary());
    let expected: std::collections::BTreeSet<&str> = ["401 cose.key_unknown", "401 cwt.iss_unknown"].into();
    assert!(
        codes
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>()
            == expected,
        "forged requests answered otherwise: {codes:?}"
    );
    assert!(forged > 200, "{forged}");
    // At most one refetch per gateway per 30 s interval begun.
    let bound = 2 * (seconds as usize).div_ceil(30);
    assert!(
        fetches <= bound,
        "{fetches} key-set fetches in {seconds} s, over {bound}"
    );
}
