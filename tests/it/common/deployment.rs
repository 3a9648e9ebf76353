//! The deployment a large user runs, on loopback, with real processes
//! (issue 17): two `keybound serve` issuer replicas on one PostgreSQL
//! database of their own, sharing one root secret file and one Redis replay
//! store, behind an nginx balancer; two `keybound gateway proxy` replicas
//! sharing another Redis, in front of a tiny upstream, behind a second
//! nginx. Clients log in and mint through the issuer balancer (whose URL
//! is the issuer id) and call the service through the service balancer
//! (whose URL is the gateways' external URL and the tokens' audience).
//! `contrib/loopback-deployment.sh` starts the same by hand.
//!
//! Every process can be killed (`SIGKILL`), paused (`SIGSTOP`) and
//! restarted on its port; the Redis servers are private to the test.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keybound::client::{Client, Scope, error_from_response};
use keybound::issuer::loopback::{DOMAIN, PROJECT, ROLE, USER};
use keybound::key::{Algorithm, SigningKey};
use serde_json::{Value, json};

use super::{PrivateRedis, bin, free_port};

pub const ADMIN_PASSWORD: &str = "fault suite admin password";
pub const PASSWORD: &str = "fault suite user password";
const IDENTITY_SECRET: &[u8] = b"the fault suite's identity secret, 32+ bytes";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the long versions run (`KEYBOUND_FAULTS_LONG=1`).
pub fn long() -> bool {
    std::env::var("KEYBOUND_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// `true` when every tool is on the PATH; else a skip message (a failure
/// under CI, which installs them).
pub fn have_tools(test: &str, tools: &[&str]) -> bool {
    for tool in tools {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
            || Path::new("/usr/sbin").join(tool).is_file();
        if !found {
            assert!(std::env::var_os("CI").is_none(), "CI must have {tool}");
            eprintln!("skipped {test}: no {tool}");
            return false;
        }
    }
    true
}

fn tool(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.is_file() { sbin } else { PathBuf::from(name) }
}

/// Plain `GET path` on 127.0.0.1:`port`: status and body (0 when nothing
/// answers within 2 s).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)) else {
        return (0, String::new());
    };
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned())
}

/// How a [`Service`] shows it is up: a 200 at `path` on `port`, or (no
/// path) an open port.
#[derive(Clone)]
pub struct Ready {
    pub port: u16,
    pub path: Option<&'static str>,
}

impl Ready {
    pub fn is_ready(&self) -> bool {
        match self.path {
            Some(path) => http_get(self.port, path).0 == 200,
            None => TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
        }
    }
}

/// A real process that can be started again with the same command line;
/// its stderr collected; killed on drop.
pub struct Service {
    pub name: String,
    program: PathBuf,
    pub args: Vec<String>,
    env: Vec<(String, String)>,
    pub ready: Ready,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Service {
    pub fn new(name: &str, program: PathBuf, args: Vec<String>, env: Vec<(String, String)>, ready: Ready) -> Self {
        Service {
            name: name.to_owned(),
            program,
            args,
            env,
            ready,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
        }
    }

    /// Starts it and waits until it is ready: the time that took.
    pub fn start(&mut self) -> Duration {
        let started = Instant::now();
        self.spawn();
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.ready.is_ready() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("{} exited ({status}): {}", self.name, self.log());
            }
            assert!(Instant::now() < deadline, "{} never ready: {}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }

    /// Starts it without waiting.
    pub fn spawn(&mut self) {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYBOUND_") {
                command.env_remove(name);
            }
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.program.display()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = self.log.clone();
        sink.lock().unwrap().push_str(&format!("--- start of {}\n", self.name));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on a child of ours that has not been reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid} {signal}");
    }

    /// `kill -9`, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // A paused process does not die of SIGKILL until resumed on
            // some kernels' accounting; resume it first.
            // SAFETY: as in `signal`.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
        }
        self.kill9();
    }
}

/// An nginx `upstream` of `backends` on 127.0.0.1:`port`: round robin, a
/// failed backend skipped for 1 s, a request retried on the next backend
/// only when it could not be sent (nginx never resends a POST it sent).
/// Its access log, `DIR/NAME/access.log`, has one `URI STATUS` line per
/// request.
pub fn nginx_balancer(dir: &Path, name: &str, port: u16, backends: &[u16]) -> Service {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let servers: String = backends
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=1s;\n"))
        .collect();
    let dd = d.display();
    let config = format!(
        "daemon off;\nmaster_process off;\npid {dd}/nginx.pid;\nerror_log {dd}/error.log error;\n\
events {{ worker_connections 1024; }}\n\
http {{\n    log_format plain '$request_uri $status';\n    access_log {dd}/access.log plain;\n    client_body_temp_path {dd}/body;\n    proxy_temp_path {dd}/proxy;\n\
    fastcgi_temp_path {dd}/fastcgi;\n    uwsgi_temp_path {dd}/uwsgi;\n    scgi_temp_path {dd}/scgi;\n\
    upstream backends {{\n{servers}        keepalive 32;\n    }}\n\
    server {{\n        listen 127.0.0.1:{port};\n        location / {{\n\
            proxy_pass http://backends;\n            proxy_http_version 1.1;\n\
            proxy_set_header Connection \"\";\n            proxy_set_header Host $http_host;\n\
            proxy_set_header X-Forwarded-For $remote_addr;\n\
            proxy_next_upstream error timeout;\n            proxy_connect_timeout 1s;\n\
            proxy_read_timeout 10s;\n        }}\n    }}\n}}\n"
    );
    let path = d.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let args = vec![
        "-p".to_owned(),
        d.display().to_string(),
        "-c".to_owned(),
        path.display().to_string(),
        "-e".to_owned(),
        d.join("error.log").display().to_string(),
    ];
    Service::new(name, tool("nginx"), args, vec![], Ready { port, path: None })
}

/// A fresh PostgreSQL database of its own, dropped with it; `None` with a
/// message when KEYBOUND_TEST_POSTGRES_URL is unset.
pub struct PgDatabase {
    base: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create(test: &str) -> Option<PgDatabase> {
        let Ok(base) = std::env::var("KEYBOUND_TEST_POSTGRES_URL") else {
            assert!(std::env::var_os("CI").is_none(), "CI sets KEYBOUND_TEST_POSTGRES_URL");
            eprintln!("skipped {test}: KEYBOUND_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!(
            "kbfaults_{}_{}_{}",
            std::process::id(),
            super::history::now_ms() % 1_000_000,
            free_port()
        );
        let (prefix, _) = base.split('?').next().unwrap().rsplit_once('/').unwrap();
        let db = PgDatabase {
            url: format!("{prefix}/{name}"),
            base,
            name,
        };
        db.exec_base(&format!("CREATE DATABASE {}", db.name));
        Some(db)
    }

    fn exec_base(&self, sql: &str) {
        run_sql(&self.base, sql);
    }

    /// Runs `sql` in this database.
    pub fn exec(&self, sql: &str) {
        run_sql(&self.url, sql);
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.exec_base(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// Runs one statement on `url` (PostgreSQL or SQLite), on a runtime of its
/// own (callable from sync code and from `block_in_place`).
pub fn run_sql(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = sqlx::AnyPool::connect(&url).await.expect("database reachable");
            sqlx::query(&sql)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            pool.close().await;
        });
    })
    .join()
    .unwrap();
}

/// A tiny upstream on 127.0.0.1:`port`: answers every request `200 ok`.
/// In the test process (the gateway in front of it is the real one).
pub struct Upstream {
    _thread: std::thread::JoinHandle<()>,
}

impl Upstream {
    pub fn start(port: u16) -> Upstream {
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
                let app = axum::Router::new().fallback(|| async { "ok\n" });
                axum::serve(listener, app).await.unwrap();
            });
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "upstream never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Upstream { _thread: thread }
    }
}

/// A `keybound serve` issuer: its TOML file written in `dir`, bootstrapped
/// by the caller. `database_url` `None`: SQLite in its data dir.
#[allow(clippy::too_many_arguments)] // one per line of its TOML file
pub fn issuer_service(
    dir: &Path,
    name: &str,
    issuer_id: &str,
    port: u16,
    metrics: u16,
    database_url: Option<&str>,
    redis_url: Option<&str>,
    extra: &str,
) -> Service {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut config = format!(
        "issuer_id = \"{issuer_id}\"\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
         data_dir = \"{}\"\ntrusted_proxies = [\"127.0.0.1\"]\nlogin_rate_per_minute = 1000000\nlogin_burst = 100000\n\
         log_level = \"warn\"\n",
        data.display()
    );
    if let Some(url) = database_url {
        config.push_str(&format!("database_url = \"{url}\"\n"));
        config.push_str(&format!("root_secret_file = \"{}\"\n", dir.join("root.key").display()));
    }
    if let Some(url) = redis_url {
        config.push_str(&format!("replay_redis_url = \"{url}\"\n"));
    }
    config.push_str(extra);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    Service::new(
        name,
        bin(),
        vec!["serve".into(), "--config".into(), path.display().to_string()],
        vec![],
        Ready {
            port,
            path: Some("/healthz"),
        },
    )
}

/// `keybound admin bootstrap` with the configuration of `issuer`.
pub fn bootstrap(issuer: &Service) {
    let out = Command::new(bin())
        .arg("admin")
        .arg("bootstrap")
        .args(&issuer.args[1..])
        .env("KEYBOUND_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `keybound gateway proxy` replica.
#[allow(clippy::too_many_arguments)] // one per flag
pub fn gateway_service(
    dir: &Path,
    name: &str,
    issuer: &str,
    external: &str,
    upstream: u16,
    port: u16,
    ops: u16,
    redis_url: Option<&str>,
) -> Service {
    let secret = dir.join("identity.secret");
    super::write_secret(&secret, IDENTITY_SECRET);
    let mut args: Vec<String> = [
        "gateway",
        "proxy",
        "--issuer",
        issuer,
        "--external-url",
        external,
        "--upstream",
        &format!("http://127.0.0.1:{upstream}"),
        "--identity-secret-file",
        &secret.display().to_string(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--ops-listen",
        &format!("127.0.0.1:{ops}"),
        "--log-level",
        "error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(url) = redis_url {
        args.extend(["--replay-redis-url".to_owned(), url.to_owned()]);
    }
    // Each replica keeps its last key sets, to start while the issuers are down.
    args.extend([
        "--key-cache-dir".to_owned(),
        dir.join(format!("{name}-keys")).display().to_string(),
    ]);
    Service::new(
        name,
        bin(),
        args,
        vec![],
        Ready {
            port: ops,
            path: Some("/readyz"),
        },
    )
}

/// One admin-API call: status, code and JSON answer (status 0 when no
/// answer came).
pub async fn admin_call(
    admin: &Client,
    issuer: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Option<String>, Value) {
    let scope = admin_scope(issuer);
    let url = format!("{issuer}{path}");
    let mut request = admin.request(method, &url, &scope).timeout(Duration::from_secs(10));
    if let Some(body) = body {
        request = request.json(body);
    }
    match request.send().await {
        Err(e) => (0, Some(e.code().as_str().to_owned()), Value::Null),
        Ok(response) if response.status().is_success() => {
            let status = response.status().as_u16();
            let bytes = response.bytes().await.unwrap_or_default();
            let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, None, json)
        }
        Ok(response) => {
            let status = response.status().as_u16();
            let error = error_from_response(response).await;
            (status, Some(error.code().as_str().to_owned()), Value::Null)
        }
    }
}

pub fn admin_scope(issuer: &str) -> Scope {
    Scope::new(format!("{issuer}/admin")).project("admin").domain("default")
}

/// `admin@default` logged in at `issuer`.
pub async fn admin_client(issuer: &str) -> Client {
    let admin = Client::new(issuer, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
    admin
        .login_password("admin@default", ADMIN_PASSWORD, None)
        .await
        .unwrap();
    admin
}

/// The user of the loopback world, logged in at `issuer` with a new key.
pub async fn user_client(issuer: &str) -> Client {
    let user = Client::new(issuer, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
    user.login_password(USER, PASSWORD, None).await.unwrap();
    user
}

/// The loopback world (domain, project, role, user, grant) with the
/// services `audiences`.
pub async fn create_world(admin: &Client, issuer: &str, audiences: &[&str]) {
    let mut requests = vec![
        ("/v1/admin/domains", json!({"name": DOMAIN})),
        ("/v1/admin/projects", json!({"name": PROJECT, "domain": DOMAIN})),
        ("/v1/admin/roles", json!({"name": ROLE})),
        ("/v1/admin/users", json!({"user": USER, "password": PASSWORD})),
        (
            "/v1/admin/grants",
            json!({"user": USER, "project": format!("{PROJECT}@{DOMAIN}"), "role": ROLE}),
        ),
    ];
    for audience in audiences {
        requests.push(("/v1/admin/services", json!({"audience": audience})));
    }
    for (path, body) in requests {
        let (status, code, _) = admin_call(admin, issuer, reqwest::Method::POST, path, Some(&body)).await;
        assert_eq!(status, 200, "{path}: {code:?}");
    }
}

/// Every audit entry, read page by page through the admin API.
pub async fn audit_entries(admin: &Client, issuer: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before: Option<u64> = None;
    for _ in 0..1000 {
        let path = match before {
            None => "/v1/admin/audit?limit=1000".to_owned(),
            Some(b) => format!("/v1/admin/audit?limit=1000&before={b}"),
        };
        let (status, code, page) = admin_call(admin, issuer, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "audit: {code:?}");
        let page = page.as_array().cloned().unwrap_or_default();
        let Some(last) = page.last().and_then(|e| e["id"].as_u64()) else {
            break;
        };
        out.extend(page);
        before = Some(last);
    }
    out
}

/// What the deployment is made of.
#[derive(Clone, Copy)]
pub struct Options {
    /// The gateways share a Redis (else each has its in-memory store).
    pub gateway_redis: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { gateway_redis: true }
    }
}

/// The running deployment; everything stops when it is dropped.
pub struct Deployment {
    pub issuers: Vec<Service>,
    pub issuer_metrics: Vec<u16>,
    pub issuer_lb: Service,
    pub gateways: Vec<Service>,
    pub gateway_ports: Vec<u16>,
    pub gateway_ops: Vec<u16>,
    pub service_lb: Service,
    /// The issuer balancer's URL: the issuer id.
    pub issuer_url: String,
    /// The service balancer's URL: the gateways' external URL, the audience.
    pub service_url: String,
    pub issuer_redis: PrivateRedis,
    pub gateway_redis: Option<PrivateRedis>,
    pub db: PgDatabase,
    _upstream: Upstream,
    pub dir: tempfile::TempDir,
}

impl Deployment {
    /// Starts it all, or `None` (with a message) when PostgreSQL, Redis or
    /// nginx is missing. Blocks (call from a multi-threaded runtime).
    pub async fn start(test: &str, options: Options) -> Option<Deployment> {
        if !have_tools(test, &["nginx", "redis-server"]) {
            return None;
        }
        let db = PgDatabase::create(test)?;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.key");
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut secret)
            .unwrap();
        std::fs::write(&root, secret).unwrap();
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let issuer_redis = PrivateRedis::start(&[], None)?;
        let gateway_redis = if options.gateway_redis {
            Some(PrivateRedis::start(&[], None)?)
        } else {
            None
        };
        let (issuer_lb_port, service_lb_port, upstream_port) = (free_port(), free_port(), free_port());
        let issuer_url = format!("http://127.0.0.1:{issuer_lb_port}");
        let service_url = format!("http://127.0.0.1:{service_lb_port}");
        let path = dir.path().to_owned();
        let (iu, su, dburl, iredis, gredis) = (
            issuer_url.clone(),
            service_url.clone(),
            db.url.clone(),
            issuer_redis.url(),
            gateway_redis.as_ref().map(PrivateRedis::url),
        );
        let (issuers, issuer_metrics, issuer_lb) = tokio::task::block_in_place(|| {
            let mut issuers = Vec::new();
            let mut metrics = Vec::new();
            let mut ports = Vec::new();
            for name in ["issuer-a", "issuer-b"] {
                let (port, m) = (free_port(), free_port());
                issuers.push(issuer_service(
                    &path,
                    name,
                    &iu,
                    port,
                    m,
                    Some(&dburl),
                    Some(&iredis),
                    "",
                ));
                metrics.push(m);
                ports.push(port);
            }
            bootstrap(&issuers[0]);
            for issuer in &mut issuers {
                issuer.start();
            }
            let mut lb = nginx_balancer(&path, "issuer-lb", issuer_lb_port, &ports);
            lb.start();
            (issuers, metrics, lb)
        });
        let admin = admin_client(&issuer_url).await;
        create_world(&admin, &issuer_url, &[&service_url]).await;
        let upstream = Upstream::start(upstream_port);
        let (gateways, gateway_ports, gateway_ops, service_lb) = tokio::task::block_in_place(|| {
            let mut gateways = Vec::new();
            let (mut ports, mut opses) = (Vec::new(), Vec::new());
            for name in ["gateway-a", "gateway-b"] {
                let (port, ops) = (free_port(), free_port());
                let mut g = gateway_service(&path, name, &iu, &su, upstream_port, port, ops, gredis.as_deref());
                g.start();
                gateways.push(g);
                ports.push(port);
                opses.push(ops);
            }
            let mut lb = nginx_balancer(&path, "service-lb", service_lb_port, &ports);
            lb.start();
            (gateways, ports, opses, lb)
        });
        Some(Deployment {
            issuers,
            issuer_metrics,
            issuer_lb,
            gateways,
            gateway_ports,
            gateway_ops,
            service_lb,
            issuer_url,
            service_url,
            issuer_redis,
            gateway_redis,
            db,
            _upstream: upstream,
            dir,
        })
    }

    /// `http://127.0.0.1:PORT` of gateway replica `i` (behind the balancer).
    pub fn gateway_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.gateway_ports[i])
    }

    /// The logs of every process, for a failure message.
    pub fn logs(&self) -> String {
        self.issuers
            .iter()
            .chain(&self.gateways)
            .map(|s| format!("=== {}\n{}\n", s.name, s.log()))
            .collect()
    }
}
