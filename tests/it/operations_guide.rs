//! docs/operations.md, run: every `sh` block of the operator guide is
//! executed by one of the scenarios below (bash -euo pipefail, the built
//! `keybound` on PATH, the guide's variables set to temporary paths and
//! free loopback ports), the test playing systemd with the unit's own
//! `ExecStart`; every `console` block is listed here with how it is
//! covered; the files the guide shows are compared with `contrib/` and the
//! `Dockerfile`; the unit goes through `systemd-analyze`, the TLS example
//! through a real nginx, the image through a lint and its own settings.
#![cfg(all(feature = "cli", target_os = "linux"))]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{bin, free_port};
use keybound::http::KeyboundLayer;
use keybound::keyset::{HttpKeys, HttpKeysOptions};
use keybound::verify::{TrustedIssuer, VerifiedRequest, Verifier};

const GUIDE: &str = include_str!("../../docs/operations.md");
const UNIT: &str = include_str!("../../contrib/systemd/keybound.service");
const SYSUSERS: &str = include_str!("../../contrib/systemd/keybound.sysusers");
const NGINX: &str = include_str!("../../contrib/nginx/keybound.conf");
const EXAMPLE_CONFIG: &str = include_str!("../../contrib/keybound.toml");
const DOCKERFILE: &str = include_str!("../../Dockerfile");
const DOCKERIGNORE: &str = include_str!("../../.dockerignore");
const CARGO_TOML: &str = include_str!("../../Cargo.toml");

const ADMIN_PASSWORD: &str = "an operator's long admin password";
/// Longest a guide block may run: a few logins and curls.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest the issuer may take to answer /healthz after its start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

// The blocks each scenario runs. `every_block_is_run_or_covered` checks
// that together they are every `sh` block of the guide; each scenario
// checks at its end that it ran all of its own.
const INSTALL: &[&str] = &[
    "config",
    "bootstrap",
    "health",
    "login",
    "register-service",
    "check",
    "log-level",
    "metrics",
    "upgrade-check",
];
const BACKUP_SQLITE: &[&str] = &[
    "config",
    "bootstrap",
    "login",
    "register-service",
    "check",
    "backup-sqlite",
    "restore-sqlite",
];
const ROTATION: &[&str] = &[
    "config",
    "bootstrap",
    "login",
    "register-service",
    "check",
    "rotate",
    "emergency",
];
const TLS: &[&str] = &["config", "bootstrap", "tls-cert", "tls-check", "tls-client"];
const REPLICAS: &[&str] = &[
    "replica-secret",
    "replica-secret-hex",
    "replica-config",
    "bootstrap",
    "health",
    "login",
    "register-service",
    "check",
];
const BACKUP_POSTGRES: &[&str] = &[
    "replica-secret",
    "replica-config",
    "bootstrap",
    "login",
    "register-service",
    "check",
    "backup-postgres",
    "restore-postgres",
];
const SERVER_CONFIG: &[&str] = &["config"];
const SCENARIOS: [&[&str]; 7] = [
    INSTALL,
    BACKUP_SQLITE,
    ROTATION,
    TLS,
    REPLICAS,
    BACKUP_POSTGRES,
    SERVER_CONFIG,
];

/// The `console` blocks: commands for a real host, each with how the
/// tests cover it instead.
const COVERED: &[(&str, &[&str], &str)] = &[
    (
        "install",
        &[
            "cargo build --release --locked",
            "sudo install -m 0755 target/release/keybound /usr/local/bin/keybound",
            "sudo install -m 0644 contrib/systemd/keybound.sysusers /etc/sysusers.d/keybound.conf",
            "sudo systemd-sysusers",
            "sudo install -m 0644 contrib/systemd/keybound.service /etc/systemd/system/keybound.service",
            "sudo systemctl daemon-reload",
        ],
        "the scenarios run the keybound cargo built; systemd_unit_and_user runs systemd-sysusers --root on the \
         sysusers file and systemd-analyze verify on the unit",
    ),
    (
        "start",
        &["sudo systemctl enable --now keybound", "journalctl -u keybound -f"],
        "Issuer::start runs the unit's ExecStart in its WorkingDirectory and collects its log",
    ),
    (
        "reload",
        &["sudo systemctl reload keybound"],
        "Issuer::reload sends SIGHUP, as the unit's ExecReload",
    ),
    (
        "nginx",
        &[
            "sudo install -m 0644 contrib/nginx/keybound.conf /etc/nginx/conf.d/keybound.conf",
            "sudo nginx -t",
            "sudo systemctl reload nginx",
        ],
        "tls_termination_with_nginx runs nginx -t on the file and then a real nginx with it",
    ),
    (
        "replica-copy",
        &["scp root.key replica-b.example:"],
        "both replicas of replicas_share_postgres_redis_and_root_secret install root.key from one directory",
    ),
    (
        "stop",
        &["sudo systemctl stop keybound"],
        "Issuer::stop sends SIGTERM and waits for a clean exit",
    ),
    (
        "start-again",
        &["sudo systemctl start keybound"],
        "Issuer::start, on the restored data",
    ),
    (
        "createdb",
        &["sudo -u postgres createdb --owner=keybound keybound"],
        "backup_and_restore_postgres drops the database and creates an empty one",
    ),
    (
        "restart",
        &["sudo systemctl restart keybound"],
        "Issuer::stop, then Issuer::start",
    ),
    (
        "upgrade",
        &[
            "sudo install -m 0755 target/release/keybound /usr/local/bin/keybound",
            "sudo systemctl restart keybound",
        ],
        "install_start_reload_monitor_upgrade restarts the binary on its existing data dir",
    ),
    (
        "docker",
        &[
            "docker build -t keybound:0.1.0 .",
            "docker volume create keybound-data",
            "docker run --rm -e KEYBOUND_ADMIN_PASSWORD -v keybound-data:/var/lib/keybound keybound:0.1.0 admin bootstrap",
            "docker run -d --name keybound -p 127.0.0.1:8080:8080 -v keybound-data:/var/lib/keybound -e KEYBOUND_ISSUER_ID=https://issuer.example keybound:0.1.0",
        ],
        "dockerfile_lint_and_the_image_settings lints the Dockerfile and runs its ENTRYPOINT and CMD with its \
         ENV: admin bootstrap, then serve",
    ),
];

/// Files the guide shows in full: fence language, path.
const SHOWN_FILES: &[(&str, &str)] = &[
    ("ini", "contrib/systemd/keybound.service"),
    ("nginx", "contrib/nginx/keybound.conf"),
    ("dockerfile", "Dockerfile"),
];

// ---------------------------------------------------------------------------
// The guide

#[derive(Debug)]
struct Block {
    lang: String,
    name: String,
    body: String,
    line: usize,
}

/// The fenced blocks of the guide, in order.
fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in GUIDE.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                open = Some(Block {
                    lang: words.next().unwrap_or("").to_owned(),
                    name: words.next().unwrap_or("").to_owned(),
                    body: String::new(),
                    line: i + 1,
                });
                assert!(
                    words.next().is_none(),
                    "docs/operations.md:{}: one name per fence",
                    i + 1
                );
            }
            (Some(_), Some("")) => out.push(open.take().unwrap()),
            (Some(block), _) => {
                block.body.push_str(line);
                block.body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "docs/operations.md: a fence is not closed");
    out
}

fn block(name: &str) -> Block {
    let mut found = blocks().into_iter().filter(|b| b.name == name);
    let b = found
        .next()
        .unwrap_or_else(|| panic!("docs/operations.md has no block {name:?}"));
    assert!(found.next().is_none(), "two blocks named {name:?}");
    b
}

/// The production values of the guide's variables (§1's table).
fn production_values() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in GUIDE.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (names, values) = (cells[1], cells[2]);
        let names: Vec<&str> = names.split(", ").map(|n| n.trim_matches('`')).collect();
        let values: Vec<&str> = values.split(", ").map(|v| v.trim_matches('`')).collect();
        if names.len() == values.len()
            && names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        {
            for (n, v) in names.into_iter().zip(values) {
                out.insert(n.to_owned(), v.to_owned());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Tools, ports, processes

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Whether every tool is installed. A missing one skips the test with a
/// message, except under CI=true, which must install them: there it fails.
fn need(test: &str, tools: &[&str]) -> bool {
    for tool in tools {
        if find_tool(tool).is_none() {
            assert!(!under_ci(), "{test}: CI must install {tool}");
            eprintln!("skipped {test}: {tool} is not installed");
            return false;
        }
    }
    true
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The PATH of every process the tests start: the built keybound first.
fn test_path() -> String {
    let dir = bin().parent().unwrap().to_path_buf();
    let rest = std::env::var("PATH").unwrap_or_default();
    format!("{}:{rest}:/usr/sbin:/sbin", dir.display())
}

/// Collects a pipe into a string, in a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a process (or process group) this test started.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Waits for `child` until `deadline`; `None` on timeout.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Runs `command` with a deadline: status, stdout, stderr.
fn run_bounded(mut command: Command, timeout: Duration) -> (ExitStatus, String, String) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().unwrap();
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let status = wait_until(&mut child, Instant::now() + timeout);
    let Some(status) = status else {
        // SAFETY: kill(2) on the process group this command leads.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = child.wait();
        panic!(
            "{command:?} did not finish within {timeout:?}: {}{}",
            out.lock().unwrap(),
            err.lock().unwrap()
        );
    };
    // The pipes close when the last process holding them ends.
    std::thread::sleep(Duration::from_millis(20));
    let (out, err) = (out.lock().unwrap().clone(), err.lock().unwrap().clone());
    (status, out, err)
}

/// `GET path` on a loopback address: the status, or 0 when nothing answers.
fn http_status(addr: &str, path: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return 0;
    };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return 0;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn http_body(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned()
}

/// The value of an unlabelled metric line `name value`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// ---------------------------------------------------------------------------
// Scenarios: the guide's variables, its blocks, and the issuer as systemd
// runs it

/// One installation (a host): the guide's variables for it.
#[derive(Clone)]
struct Host {
    vars: BTreeMap<String, String>,
}

impl Host {
    fn get(&self, name: &str) -> &str {
        self.vars.get(name).unwrap_or_else(|| panic!("no variable {name}"))
    }

    fn set(&mut self, name: &str, value: impl Into<String>) {
        self.vars.insert(name.to_owned(), value.into());
    }
}

/// A run of some of the guide's blocks, in one temporary directory.
struct Scenario {
    name: &'static str,
    blocks: &'static [&'static str],
    ran: BTreeSet<String>,
    tmp: tempfile::TempDir,
}

impl Scenario {
    fn new(name: &'static str, blocks: &'static [&'static str]) -> Scenario {
        let tmp = tempfile::tempdir().unwrap();
        for dir in ["work", "home", "client", "backup"] {
            std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
        }
        Scenario {
            name,
            blocks,
            ran: BTreeSet::new(),
            tmp,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The directory the blocks run in (root.key, certificates, metrics.txt).
    fn work(&self) -> PathBuf {
        self.path("work")
    }

    /// A host named `name`: its own data dir, config file and ports; the
    /// issuer id its plain loopback URL unless set otherwise.
    fn host(&self, name: &str) -> Host {
        let base = self.path(name);
        let listen = format!("127.0.0.1:{}", free_port());
        let mut vars = BTreeMap::new();
        for (k, v) in [
            ("KEYBOUND_CONFIG", base.join("etc/keybound.toml").display().to_string()),
            ("DATA", base.join("data").display().to_string()),
            ("ISSUER", format!("http://{listen}")),
            ("METRICS_LISTEN", format!("127.0.0.1:{}", free_port())),
            ("LISTEN", listen),
            ("BACKUP", self.path("backup").display().to_string()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ] {
            vars.insert(k.to_owned(), v);
        }
        Host { vars }
    }

    fn base_env(&self, command: &mut Command) {
        command
            .env_clear()
            .env("PATH", test_path())
            .env("HOME", self.path("home"))
            .env("KEYBOUND_CONFIG_DIR", self.path("client"))
            .env("LC_ALL", "C");
    }

    /// Runs the guide's block `name` on `host`; its stdout. Fails the test
    /// when the block fails.
    fn sh(&mut self, host: &Host, name: &str) -> String {
        assert!(
            self.blocks.contains(&name),
            "{}: {name:?} is not in its list of blocks",
            self.name
        );
        let b = block(name);
        assert_eq!(b.lang, "sh", "block {name:?} is not an sh block");
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", &b.body])
            .current_dir(self.work());
        self.base_env(&mut command);
        command.envs(&host.vars);
        let (status, out, err) = run_bounded(command, BLOCK_TIMEOUT);
        assert!(
            status.success(),
            "{}: block {name:?} (docs/operations.md:{}) failed ({status}):\n{}\n--- stdout\n{out}--- stderr\n{err}",
            self.name,
            b.line,
            b.body
        );
        assert!(
            !out.contains(ADMIN_PASSWORD) && !err.contains(ADMIN_PASSWORD),
            "block {name:?} printed the password"
        );
        self.ran.insert(name.to_owned());
        out
    }

    /// Runs a `keybound` command as the guide's client does (not a guide
    /// block: a check of the test).
    fn keybound(&self, host: &Host, args: &[&str]) -> (bool, String, String) {
        let mut command = Command::new(bin());
        command.args(args).current_dir(self.work());
        self.base_env(&mut command);
        command.envs(&host.vars);
        let (status, out, err) = run_bounded(command, BLOCK_TIMEOUT);
        (status.success(), out, err)
    }

    fn session(&self) -> Vec<u8> {
        std::fs::read(self.path("client/session.json")).expect("a stored session")
    }

    /// Every block of the scenario's list ran.
    fn finish(self) {
        let missing: Vec<_> = self.blocks.iter().filter(|b| !self.ran.contains(**b)).collect();
        assert!(missing.is_empty(), "{}: blocks not run: {missing:?}", self.name);
    }
}

/// The unit's `ExecStart` words and `WorkingDirectory`.
fn unit_service() -> (Vec<String>, String) {
    let value = |key: &str| {
        UNIT.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("the unit has no {key}"))
            .to_owned()
    };
    let exec: Vec<String> = value("ExecStart").split_whitespace().map(str::to_owned).collect();
    (exec, value("WorkingDirectory"))
}

/// Gives a just-started issuer time to install its SIGTERM handler: it does
/// so on the first poll of its shutdown future, inside the accept loop, so a
/// SIGTERM right after the first answer can still kill it outright.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

/// `keybound serve` as the unit starts it, on `host`.
struct Issuer {
    child: Child,
    log: Arc<Mutex<String>>,
    listen: String,
}

impl Issuer {
    fn spawn(host: &Host, env: &[(&str, String)]) -> Issuer {
        let (exec, working_dir) = unit_service();
        assert_eq!(exec[0], "/usr/local/bin/keybound", "the unit runs the installed binary");
        let config_at = exec
            .iter()
            .position(|w| w == "--config")
            .expect("the unit gives --config");
        assert_eq!(exec[config_at + 1], "/etc/keybound/keybound.toml");
        let mut args: Vec<String> = exec[1..].to_vec();
        args[config_at] = host.get("KEYBOUND_CONFIG").to_owned();
        assert_eq!(
            working_dir, "/var/lib/keybound",
            "the working directory is the data dir"
        );
        // StateDirectory=: systemd creates the data dir, mode 0700.
        let data = PathBuf::from(host.get("DATA"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let mut command = Command::new(bin());
        command
            .args(&args)
            .current_dir(&data)
            .env_clear()
            .env("PATH", test_path())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let log = collect(child.stderr.take().unwrap());
        Issuer {
            child,
            log,
            listen: host.get("LISTEN").to_owned(),
        }
    }

    /// `systemctl start keybound`: runs and answers /healthz.
    fn start(host: &Host) -> Issuer {
        Self::start_with(host, &[])
    }

    fn start_with(host: &Host, env: &[(&str, String)]) -> Issuer {
        let mut issuer = Self::spawn(host, env);
        let deadline = Instant::now() + START_TIMEOUT;
        while http_status(&issuer.listen, "/healthz") != 200 {
            if let Ok(Some(status)) = issuer.child.try_wait() {
                panic!("keybound serve exited ({status}): {}", issuer.log());
            }
            assert!(Instant::now() < deadline, "the issuer did not start: {}", issuer.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        settle();
        issuer
    }

    /// A start that must fail: its log.
    fn refused(host: &Host) -> String {
        let mut issuer = Self::spawn(host, &[]);
        let status = wait_until(&mut issuer.child, Instant::now() + START_TIMEOUT).expect("serve should exit");
        assert!(
            !status.success(),
            "serve should have refused to start: {}",
            issuer.log()
        );
        std::thread::sleep(Duration::from_millis(20));
        issuer.log()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `systemctl reload keybound`.
    fn reload(&self) {
        signal(self.child.id(), libc::SIGHUP);
    }

    /// Waits until the log contains `needle`.
    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the log: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `systemctl stop keybound`: SIGTERM, a clean exit within
    /// TimeoutStopSec.
    fn stop(mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let status = wait_until(&mut self.child, Instant::now() + Duration::from_secs(30)).expect("stopped in 30 s");
        assert!(
            status.success(),
            "keybound serve did not stop cleanly ({status}): {}",
            self.log()
        );
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service that verifies keybound requests on 127.0.0.1:`port`, with
/// audience `audience` (its external URL), trusting `issuer` with the
/// key set at `keys`. It answers every path with "hello SUBJECT".
struct Service {
    _rt: tokio::runtime::Runtime,
}

impl Service {
    fn start(port: u16, audience: &str, issuer: &str, keys: &str) -> Service {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            let keys = HttpKeys::start(keys, HttpKeysOptions::default()).await.unwrap();
            let verifier = Verifier::builder(audience, TrustedIssuer::new(issuer, keys))
                .build()
                .unwrap();
            let app = axum::Router::new()
                .fallback(|r: VerifiedRequest| async move { format!("hello {}\n", r.subject()) })
                .layer(KeyboundLayer::new(Arc::new(verifier), audience).unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        });
        Service { _rt: rt }
    }

    /// On a free port, its URL the audience.
    fn local(host: &mut Host) -> (Service, u16) {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        host.set("SERVICE", url.clone());
        let keys = format!("http://{}/.well-known/keybound/keys", host.get("LISTEN"));
        (Service::start(port, &url, host.get("ISSUER"), &keys), port)
    }
}

// ---------------------------------------------------------------------------
// The guide as a whole

#[test]
fn every_block_is_run_or_covered() {
    let all = blocks();
    let mut names = BTreeSet::new();
    for b in &all {
        assert!(
            !b.name.is_empty(),
            "docs/operations.md:{}: a fence without a name",
            b.line
        );
        assert!(
            names.insert(b.name.clone()),
            "docs/operations.md:{}: {:?} twice",
            b.line,
            b.name
        );
    }
    // Every sh block is in some scenario, and every scenario's block exists.
    let run: BTreeSet<&str> = SCENARIOS.iter().flat_map(|s| s.iter().copied()).collect();
    let sh: BTreeSet<&str> = all.iter().filter(|b| b.lang == "sh").map(|b| b.name.as_str()).collect();
    assert_eq!(sh, run, "sh blocks of the guide vs the blocks the scenarios run");
    let covered: BTreeMap<&str, (&[&str], &str)> = COVERED.iter().map(|(n, c, how)| (*n, (*c, *how))).collect();
    let mut consoles = BTreeSet::new();
    for b in &all {
        match b.lang.as_str() {
            "sh" => {}
            "console" => {
                let (commands, how) = covered.get(b.name.as_str()).unwrap_or_else(|| {
                    panic!(
                        "docs/operations.md:{}: console block {:?} is not covered",
                        b.line, b.name
                    )
                });
                assert!(!how.is_empty());
                let lines: Vec<&str> = b
                    .body
                    .lines()
                    .map(|l| {
                        l.strip_prefix("$ ")
                            .unwrap_or_else(|| panic!("{:?}: {l:?} is not a command", b.name))
                    })
                    .collect();
                assert_eq!(
                    &lines, commands,
                    "console block {:?} changed: update its coverage",
                    b.name
                );
                consoles.insert(b.name.as_str());
            }
            lang => {
                let (_, path) = SHOWN_FILES
                    .iter()
                    .find(|(l, p)| *l == lang && *p == b.name)
                    .unwrap_or_else(|| panic!("docs/operations.md:{}: unknown fence {lang} {}", b.line, b.name));
                let file = std::fs::read_to_string(root().join(path)).unwrap();
                assert_eq!(b.body, file, "docs/operations.md:{} shows {path} as it is not", b.line);
            }
        }
    }
    assert_eq!(
        consoles,
        covered.keys().copied().collect(),
        "coverage listed for blocks the guide no longer has"
    );

    // The production values agree with the unit, the example config, nginx.
    let prod = production_values();
    let (exec, working_dir) = unit_service();
    assert_eq!(exec.last().unwrap(), &prod["KEYBOUND_CONFIG"]);
    assert_eq!(working_dir, prod["DATA"]);
    let example: toml::Table = toml::from_str(EXAMPLE_CONFIG).unwrap();
    assert_eq!(example["data_dir"].as_str(), Some(prod["DATA"].as_str()));
    assert_eq!(example["listen"].as_str(), Some(prod["LISTEN"].as_str()));
    assert_eq!(example["issuer_id"].as_str(), Some(prod["ISSUER"].as_str()));
    assert!(NGINX.contains(&format!("proxy_pass http://{};", prod["LISTEN"])));
    assert!(NGINX.contains(&format!("server_name {};", prod["TLS_NAME"])));
    assert!(NGINX.contains(&format!("{}/{}.crt", prod["TLS_DIR"], prod["TLS_NAME"])));
    let service_host = prod["SERVICE"].strip_prefix("https://").unwrap();
    assert!(NGINX.contains(&format!("server_name {service_host};")));
}

/// The example config is the guide's `config` block with a server's
/// values, and its commented settings are the defaults.
#[test]
fn example_config_is_the_guide_s_with_every_setting() {
    let mut s = Scenario::new("example_config", SERVER_CONFIG);
    let mut host = s.host("server");
    for (k, v) in production_values() {
        if k != "KEYBOUND_CONFIG" {
            host.set(&k, v);
        }
    }
    let effective = s.sh(&host, "config");
    let written: toml::Table = toml::from_str(&std::fs::read_to_string(host.get("KEYBOUND_CONFIG")).unwrap()).unwrap();
    let example: toml::Table = toml::from_str(EXAMPLE_CONFIG).unwrap();
    assert_eq!(
        written, example,
        "contrib/keybound.toml is not the config block with a server's values"
    );
    assert!(
        effective.contains("issuer_id = \"https://issuer.example\""),
        "{effective}"
    );

    // Every setting is in the file, set or commented out; commented ones
    // are the defaults, except the examples of optional settings.
    let optional = [
        "database_url",
        "replay_redis_url",
        "root_secret_file",
        "signing_key",
        "denial_log",
        "database_max_connections",
    ];
    let empty = s.path("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let (ok, defaults, err) = s.keybound(&host, &["serve", "--config", empty.to_str().unwrap(), "--check-config"]);
    assert!(ok, "{err}");
    let defaults: toml::Table = toml::from_str(&defaults).unwrap();
    let mut commented = toml::Table::new();
    for line in EXAMPLE_CONFIG.lines() {
        if let Some(setting) = line.strip_prefix("# ")
            && let Ok(table) = toml::from_str::<toml::Table>(setting)
        {
            commented.extend(table);
        }
    }
    for (key, value) in &commented {
        assert!(!example.contains_key(key), "{key} is both set and commented");
        if !optional.contains(&key.as_str()) {
            assert_eq!(
                Some(value),
                defaults.get(key),
                "contrib/keybound.toml: {key} is not the default"
            );
        }
    }
    // The settings are the flags of `serve` that have a KEYBOUND_ variable.
    let (ok, help, err) = s.keybound(&host, &["serve", "--help"]);
    assert!(ok, "{err}");
    let settings: BTreeSet<String> = help
        .split("[env: KEYBOUND_")
        .skip(1)
        .filter_map(|rest| rest.split_once('=').map(|(name, _)| name.to_ascii_lowercase()))
        // `--config` names the file; `--profile` is the client's global option.
        .filter(|key| key != "config" && key != "profile")
        .collect();
    assert!(settings.len() > 25, "{help}");
    let listed: BTreeSet<String> = example.keys().chain(commented.keys()).cloned().collect();
    assert_eq!(
        settings, listed,
        "contrib/keybound.toml lists other settings than `keybound serve`"
    );
    let (ok, _, err) = s.keybound(
        &host,
        &[
            "serve",
            "--config",
            root().join("contrib/keybound.toml").to_str().unwrap(),
            "--check-config",
        ],
    );
    assert!(ok, "contrib/keybound.toml: {err}");
    s.finish();
}

// ---------------------------------------------------------------------------
// Scenarios

/// §3–§5, §10, §11: configure, bootstrap, start as the unit does, check,
/// reload, monitor, restart as after an upgrade.
#[test]
fn install_start_reload_monitor_upgrade() {
    if !need("install_start_reload_monitor_upgrade", &["curl"]) {
        return;
    }
    let mut s = Scenario::new("install", INSTALL);
    let mut host = s.host("server");
    let effective = s.sh(&host, "config");
    assert!(
        effective.contains(&format!("issuer_id = \"{}\"", host.get("ISSUER"))),
        "{effective}"
    );
    assert!(effective.contains("# root secret: the file"), "{effective}");
    assert!(
        !Path::new(host.get("DATA")).exists(),
        "--check-config created the data dir"
    );

    // Not bootstrapped: serve refuses, as §4 says.
    let log = Issuer::refused(&host);
    assert!(log.contains("issuer.not_initialised"), "{log}");
    s.sh(&host, "bootstrap");
    let issuer = Issuer::start(&host);
    s.sh(&host, "health");
    // One process per SQLite data dir.
    let log = Issuer::refused(&host);
    assert!(log.contains("issuer.data_dir_in_use"), "{log}");

    let (_service, _) = Service::local(&mut host);
    s.sh(&host, "login");
    let audit = s.sh(&host, "register-service");
    assert!(audit.contains("bootstrap"), "{audit}");
    let checked = s.sh(&host, "check");
    assert!(checked.contains("hello admin@default"), "{checked}");

    // SIGHUP applies the new log level.
    s.sh(&host, "log-level");
    issuer.reload();
    issuer.wait_log("log filter reloaded");
    assert!(issuer.log().contains("keybound=debug,info"), "{}", issuer.log());

    // §11: a failed login, so that every labelled series exists, then the
    // metrics block; the table names exactly what the issuer exports.
    let (ok, _, _) = s.keybound(
        &host,
        &["login", "--issuer", host.get("ISSUER"), "--user", "admin@default"],
    );
    assert!(!ok, "a login without a password should fail");
    let shown = s.sh(&host, "metrics");
    let skew: i64 = shown
        .lines()
        .find_map(|l| l.strip_prefix("clock skew: ")?.strip_suffix(" s")?.parse().ok())
        .unwrap_or_else(|| panic!("no clock skew line: {shown}"));
    assert!(skew.abs() <= 5, "{shown}");
    let metrics = std::fs::read_to_string(s.work().join("metrics.txt")).unwrap();
    let exported: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(exported, issuer_metrics_in_the_guide(), "§11's table vs /metrics");
    assert_eq!(metric(&metrics, "keybound_root_secret_replaced"), Some(0.0));
    assert!(
        metrics.contains("keybound_logins_total{outcome=\"failure\"} 0"),
        "{metrics}"
    );

    // An upgrade: the (same) binary restarted on the data dir; the session
    // lives on.
    let session = s.session();
    issuer.stop();
    let issuer = Issuer::start(&host);
    let version = s.sh(&host, "upgrade-check");
    assert!(
        version.contains(&format!("keybound {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    s.sh(&host, "check");
    assert_eq!(s.session(), session, "the check logged in again");
    issuer.stop();
    s.finish();
}

/// The metric names of §11's "Issuer metrics" table.
fn issuer_metrics_in_the_guide() -> BTreeSet<String> {
    let table = GUIDE
        .split("### Issuer metrics")
        .nth(1)
        .and_then(|rest| rest.split("###").next())
        .expect("§11 has an issuer metrics table");
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" |").next())
        .flat_map(|cell| cell.split(", ").map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|name| {
            let name = name.trim_matches('`');
            let name = name.split('{').next().unwrap();
            name.starts_with("keybound_").then(|| name.to_owned())
        })
        .collect()
}

/// §8: an online SQLite backup, the data dir lost, the restore; the
/// session from before the backup mints and its request verifies.
/// Without root.key the restored database is refused.
#[test]
fn backup_and_restore_sqlite_keeps_sessions() {
    if !need("backup_and_restore_sqlite_keeps_sessions", &["sqlite3", "curl"]) {
        return;
    }
    let mut s = Scenario::new("backup_sqlite", BACKUP_SQLITE);
    let mut host = s.host("server");
    s.sh(&host, "config");
    s.sh(&host, "bootstrap");
    let issuer = Issuer::start(&host);
    let (_service, _) = Service::local(&mut host);
    s.sh(&host, "login");
    s.sh(&host, "register-service");
    s.sh(&host, "check");
    let session = s.session();

    s.sh(&host, "backup-sqlite");
    let backup = PathBuf::from(host.get("BACKUP"));
    for file in ["keybound.db", "root.key"] {
        let mode = std::fs::metadata(backup.join(file)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
            0,
            "{file} readable by others"
        );
    }
    // A change after the backup, which the restore loses.
    let (ok, _, err) = s.keybound(&host, &["admin", "role", "create", "after-backup"]);
    assert!(ok, "{err}");
    issuer.stop();
    std::fs::remove_dir_all(host.get("DATA")).unwrap();

    // The database without its root secret cannot be served.
    s.sh(&host, "restore-sqlite");
    std::fs::remove_file(Path::new(host.get("DATA")).join("root.key")).unwrap();
    let log = Issuer::refused(&host);
    assert!(log.contains("issuer.root_secret_mismatch"), "{log}");

    s.sh(&host, "restore-sqlite");
    let issuer = Issuer::start(&host);
    let checked = s.sh(&host, "check");
    assert!(checked.contains("hello admin@default"), "{checked}");
    assert_eq!(s.session(), session, "the check logged in again");
    let (ok, roles, err) = s.keybound(&host, &["admin", "role", "list"]);
    assert!(ok, "{err}");
    assert!(
        !roles.contains("after-backup"),
        "the restore is not the backup: {roles}"
    );
    issuer.stop();
    s.finish();
}

/// A rotation period that puts now in the middle of an epoch: a rotation
/// is refused in the first N + 10 s of one (N = period / 4 here), and the
/// scenario must rotate before the epoch ends.
fn period_for_a_rotation_now() -> u64 {
    let t = now();
    (600..=1800)
        .find(|p| {
            let into = t % p;
            into >= p / 4 + 10 + 60 && into + 300 <= *p
        })
        .expect("some period between 600 and 1800 s")
}

/// §9: a scheduled rotation (sessions live on), then an emergency
/// replacement (sessions end, users log in again).
#[test]
fn rotation_scheduled_then_emergency() {
    if !need("rotation_scheduled_then_emergency", &["curl"]) {
        return;
    }
    let mut s = Scenario::new("rotation", ROTATION);
    let mut host = s.host("server");
    // The period is a setting of serve and of the offline emergency
    // replacement alike (it decides which kids are retired).
    let period = [("KEYBOUND_ROTATION_PERIOD", period_for_a_rotation_now().to_string())];
    host.set(period[0].0, period[0].1.clone());
    s.sh(&host, "config");
    s.sh(&host, "bootstrap");
    let issuer = Issuer::start_with(&host, &period);
    let (service, service_port) = Service::local(&mut host);
    s.sh(&host, "login");
    s.sh(&host, "register-service");
    let session = s.session();
    let rotated = s.sh(&host, "rotate");
    assert!(rotated.contains("keybound_key_rotations_ordered 1"), "{rotated}");
    s.sh(&host, "check");
    assert_eq!(s.session(), session);

    // Emergency, with the issuer running: it stops being ready within 5 s.
    s.sh(&host, "emergency");
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_status(host.get("LISTEN"), "/readyz") == 200 {
        assert!(
            Instant::now() < deadline,
            "/readyz still passes after the replacement: {}",
            issuer.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let answer = http_body(host.get("LISTEN"), "/readyz");
    assert!(answer.contains("issuer.root_secret_mismatch"), "{answer}");
    issuer.stop();
    let issuer = Issuer::start_with(&host, &period);
    // The service restarts too, dropping the old keys (§9).
    drop(service);
    let keys = format!("http://{}/.well-known/keybound/keys", host.get("LISTEN"));
    let _service = Service::start(service_port, host.get("SERVICE"), host.get("ISSUER"), &keys);
    let (ok, _, err) = s.keybound(&host, &["token", "--audience", host.get("SERVICE")]);
    assert!(
        !ok && err.contains("session.key_replaced"),
        "an old session still mints: {err}"
    );
    s.sh(&host, "login");
    assert_ne!(s.session(), session);
    let checked = s.sh(&host, "check");
    assert!(checked.contains("hello admin@default"), "{checked}");
    issuer.stop();
    s.finish();
}

/// A private nginx with the guide's configuration, rendered for loopback.
struct Nginx {
    child: Child,
    error_log: PathBuf,
}

impl Nginx {
    /// The guide's nginx file with the test's names, ports and paths.
    fn render(issuer_port: u16, service_port: u16, tls_dir: &str, upstream: &str, service_upstream: &str) -> String {
        let mut text = NGINX.to_owned();
        let mut replace_n = |from: &str, to: &str, n: usize| {
            assert_eq!(
                text.matches(from).count(),
                n,
                "contrib/nginx/keybound.conf: {from:?} {n} times"
            );
            text = text.replacen(from, to, 1);
        };
        replace_n("listen 443 ssl;", &format!("listen 127.0.0.1:{issuer_port} ssl;"), 2);
        replace_n("listen 443 ssl;", &format!("listen 127.0.0.1:{service_port} ssl;"), 1);
        let mut replace_all = |from: &str, to: &str| {
            assert!(text.contains(from), "contrib/nginx/keybound.conf has no {from:?}");
            text = text.replace(from, to);
        };
        replace_all(
            "proxy_pass http://127.0.0.1:8080;",
            &format!("proxy_pass http://{upstream};"),
        );
        replace_all(
            "proxy_pass http://127.0.0.1:8081;",
            &format!("proxy_pass http://{service_upstream};"),
        );
        replace_all("/etc/ssl/keybound/", &format!("{tls_dir}/"));
        // One certificate for both servers in the test: `localhost`.
        replace_all("issuer.example", "localhost");
        replace_all("nova.example", "localhost");
        text
    }

    /// `nginx -t`, then nginx in the foreground with `site` in its http block.
    fn start(dir: &Path, site: &str, ports: &[u16]) -> Nginx {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::write(dir.join("keybound.conf"), site).unwrap();
        let error_log = dir.join("logs/error.log");
        let main = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {e} info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/logs/access.log;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
             scgi_temp_path {d}/scgi;\n  include {d}/keybound.conf;\n}}\n",
            d = dir.display(),
            e = error_log.display()
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, main).unwrap();
        let nginx = find_tool("nginx").unwrap();
        let mut test = Command::new(&nginx);
        test.arg("-t").arg("-p").arg(dir).arg("-c").arg(&conf);
        let (status, out, err) = run_bounded(test, Duration::from_secs(30));
        assert!(status.success(), "nginx -t: {out}{err}");
        let child = Command::new(&nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child, error_log };
        let deadline = Instant::now() + Duration::from_secs(15);
        for port in ports {
            while TcpStream::connect(("127.0.0.1", *port)).is_err() {
                if let Ok(Some(status)) = nginx.child.try_wait() {
                    panic!("nginx exited ({status}): {}", nginx.errors());
                }
                assert!(Instant::now() < deadline, "nginx did not listen: {}", nginx.errors());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        nginx
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful shutdown of the master and its worker.
        signal(self.child.id(), libc::SIGQUIT);
        if wait_until(&mut self.child, Instant::now() + Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// §6: nginx terminates TLS in front of a real issuer whose id is the
/// https URL, and of a service; the client logs in, registers the service
/// and calls it through the proxy, trusting the private CA.
#[test]
fn tls_termination_with_nginx() {
    if !need("tls_termination_with_nginx", &["nginx", "openssl", "curl"]) {
        return;
    }
    let mut s = Scenario::new("tls", TLS);
    let mut host = s.host("server");
    let (tls_issuer, tls_service, service_port) = (free_port(), free_port(), free_port());
    host.set("ISSUER", format!("https://localhost:{tls_issuer}"));
    host.set("SERVICE", format!("https://localhost:{tls_service}"));
    host.set("TLS_NAME", "localhost");
    host.set("TLS_DIR", s.path("tls").display().to_string());
    s.sh(&host, "config");
    s.sh(&host, "bootstrap");
    let issuer = Issuer::start(&host);
    // The service behind the proxy: its audience is its https URL, the key
    // set comes straight from the issuer on loopback.
    let keys = format!("http://{}/.well-known/keybound/keys", host.get("LISTEN"));
    let _service = Service::start(service_port, host.get("SERVICE"), host.get("ISSUER"), &keys);

    s.sh(&host, "tls-cert");
    let site = Nginx::render(
        tls_issuer,
        tls_service,
        host.get("TLS_DIR"),
        host.get("LISTEN"),
        &format!("127.0.0.1:{service_port}"),
    );
    let nginx = Nginx::start(&s.path("nginx"), &site, &[tls_issuer, tls_service]);
    let checked = s.sh(&host, "tls-check");
    assert!(
        checked.contains(&format!("\"issuer\":\"https://localhost:{tls_issuer}\"")),
        "{checked}"
    );
    let called = s.sh(&host, "tls-client");
    assert!(called.contains("hello admin@default"), "{called}\n{}", nginx.errors());
    // The login came through the proxy from a trusted address: the issuer
    // logged the client's address from X-Forwarded-For, not an error.
    assert!(!issuer.log().contains("\"level\":\"ERROR\""), "{}", issuer.log());
    drop(nginx);
    issuer.stop();
    s.finish();
}

/// A load balancer for the replica scenario: forwards each connection to
/// the replica it currently points at.
struct Balancer {
    port: u16,
    target: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    fn start(target: u16) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let stop = Arc::new(AtomicBool::new(false));
        let (to, stopped) = (target.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(backend) = TcpStream::connect(("127.0.0.1", to.load(Ordering::SeqCst))) else {
                    continue;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), backend.try_clone().unwrap()),
                    (backend, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Balancer { port, target, stop }
    }

    fn point_at(&self, listen: &str) {
        let port = listen.rsplit_once(':').unwrap().1.parse().unwrap();
        self.target.store(port, Ordering::SeqCst);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A fresh PostgreSQL database of its own (dropped by [`Database::drop`]);
/// `None` with a message when KEYBOUND_TEST_POSTGRES_URL is unset.
struct Database {
    base: String,
    name: String,
    url: String,
}

impl Database {
    fn create(test: &str) -> Option<Database> {
        let Ok(base) = std::env::var("KEYBOUND_TEST_POSTGRES_URL") else {
            eprintln!("skipped {test}: KEYBOUND_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!(
            "kbops_{}_{}",
            std::process::id(),
            now() % 1_000_000 * 100 + u64::from(free_port() % 100)
        );
        let (prefix, _) = base.split('?').next().unwrap().rsplit_once('/').unwrap();
        let db = Database {
            url: format!("{prefix}/{name}"),
            base,
            name,
        };
        db.exec(&format!("CREATE DATABASE {}", db.name));
        Some(db)
    }

    fn exec(&self, sql: &str) {
        sqlx::any::install_default_drivers();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = sqlx::AnyPool::connect(&self.base).await.expect("PostgreSQL reachable");
            sqlx::query(sql)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            pool.close().await;
        });
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.exec(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("KEYBOUND_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("skipped {test}: KEYBOUND_TEST_REDIS_URL is not set");
    }
    url
}

/// Two replicas on one host's worth of `replica-config`: one database,
/// one Redis, one root secret, one issuer id (the balancer's URL).
/// Without `issuer`, each host's own loopback URL.
fn replicas(s: &mut Scenario, db: &Database, redis: &str, issuer: Option<&str>, names: &[&str]) -> Vec<Host> {
    let hosts: Vec<Host> = names
        .iter()
        .map(|name| {
            let mut host = s.host(name);
            if let Some(issuer) = issuer {
                host.set("ISSUER", issuer);
            }
            host.set("DATABASE_URL", db.url.clone());
            host.set("REDIS_URL", redis);
            host
        })
        .collect();
    s.sh(&hosts[0], "replica-secret");
    for host in &hosts {
        let effective = s.sh(host, "replica-config");
        assert!(effective.contains("database_url = \"postgres://"), "{effective}");
    }
    hosts
}

/// §7: two replicas behind one load balancer share PostgreSQL, Redis and
/// the root secret; a session made at replica A mints at replica B, and
/// its request verifies.
#[test]
fn replicas_share_postgres_redis_and_root_secret() {
    let test = "replicas_share_postgres_redis_and_root_secret";
    let (Some(db), Some(redis)) = (Database::create(test), redis_url(test)) else {
        return;
    };
    if !need(test, &["curl"]) {
        return;
    }
    let mut s = Scenario::new("replicas", REPLICAS);
    let balancer = Balancer::start(0);
    let issuer_id = format!("http://127.0.0.1:{}", balancer.port);
    let mut hosts = replicas(
        &mut s,
        &db,
        &redis,
        Some(&issuer_id),
        &["replica-a", "replica-b", "replica-c"],
    );
    s.sh(&hosts[0], "bootstrap");
    let a = Issuer::start(&hosts[0]);
    let b = Issuer::start(&hosts[1]);
    for host in &hosts[..2] {
        s.sh(host, "health");
    }
    let (_service, _) = Service::local(&mut hosts[0]);
    let service = hosts[0].get("SERVICE").to_owned();
    hosts[1].set("SERVICE", service.clone());
    hosts[2].set("SERVICE", service);

    balancer.point_at(hosts[0].get("LISTEN"));
    s.sh(&hosts[0], "login");
    s.sh(&hosts[0], "register-service");
    let minted = |host: &Host| {
        metric(
            &http_body(host.get("METRICS_LISTEN"), "/metrics"),
            "keybound_tokens_minted_total",
        )
        .unwrap()
    };
    let (minted_a, minted_b) = (minted(&hosts[0]), minted(&hosts[1]));
    balancer.point_at(hosts[1].get("LISTEN"));
    let checked = s.sh(&hosts[1], "check");
    assert!(checked.contains("hello admin@default"), "{checked}");
    // The check's mints were B's (`keybound token` mints; whether the
    // `request` after it mints again depends on the CLI's token cache).
    assert_eq!(minted(&hosts[0]), minted_a, "replica A minted");
    assert!(minted(&hosts[1]) >= minted_b + 1.0, "replica B did not mint");
    // With A gone, B serves on.
    a.stop();
    s.sh(&hosts[1], "check");
    // Replica C has no root.key file: the secret's hex comes from the
    // environment, as from a secret store.
    let hex = s.sh(&hosts[2], "replica-secret-hex");
    let file = std::fs::read(s.work().join("root.key")).unwrap();
    assert_eq!(
        hex,
        keybound::encoding::hex_encode(&file),
        "the block prints the secret's hex"
    );
    std::fs::remove_file(Path::new(hosts[2].get("DATA")).join("root.key")).unwrap();
    let c = Issuer::start_with(&hosts[2], &[("KEYBOUND_ROOT_SECRET", hex)]);
    s.sh(&hosts[2], "health");
    balancer.point_at(hosts[2].get("LISTEN"));
    s.sh(&hosts[2], "check");
    assert!(c.log().contains("KEYBOUND_ROOT_SECRET"), "{}", c.log());
    c.stop();
    b.stop();
    s.finish();
}

/// §8 on PostgreSQL: pg_dump while the issuer runs, the database and the
/// data dir lost, pg_restore into an empty database; the old session
/// mints and its request verifies.
#[test]
fn backup_and_restore_postgres() {
    let test = "backup_and_restore_postgres";
    let (Some(db), Some(redis)) = (Database::create(test), redis_url(test)) else {
        return;
    };
    if !need(test, &["pg_dump", "pg_restore", "curl"]) {
        return;
    }
    let mut s = Scenario::new("backup_postgres", BACKUP_POSTGRES);
    let mut hosts = replicas(&mut s, &db, &redis, None, &["server"]);
    let host = &mut hosts[0];
    s.sh(host, "bootstrap");
    let issuer = Issuer::start(host);
    let (_service, _) = Service::local(host);
    s.sh(host, "login");
    s.sh(host, "register-service");
    s.sh(host, "check");
    let session = s.session();
    s.sh(host, "backup-postgres");
    let (ok, _, err) = s.keybound(host, &["admin", "role", "create", "after-backup"]);
    assert!(ok, "{err}");
    issuer.stop();

    // Disaster: the database, the data dir and the admin host's copy of
    // the secret are gone. An empty database takes the old one's place
    // (the guide's `createdb`); the configuration in /etc survived.
    db.exec(&format!("DROP DATABASE {} WITH (FORCE)", db.name));
    db.exec(&format!("CREATE DATABASE {}", db.name));
    std::fs::remove_dir_all(host.get("DATA")).unwrap();
    std::fs::remove_file(s.work().join("root.key")).unwrap();
    s.sh(host, "restore-postgres");
    let issuer = Issuer::start(host);
    let checked = s.sh(host, "check");
    assert!(checked.contains("hello admin@default"), "{checked}");
    assert_eq!(s.session(), session, "the check logged in again");
    let (ok, roles, err) = s.keybound(host, &["admin", "role", "list"]);
    assert!(ok, "{err}");
    assert!(
        !roles.contains("after-backup"),
        "the restore is not the backup: {roles}"
    );
    issuer.stop();
    s.finish();
}

/// §2, §4: the unit passes `systemd-analyze verify` without a warning and
/// `systemd-analyze security` at 2.0 or less, is hardened as the guide
/// says, and its user is the one `systemd-sysusers` creates.
#[test]
fn systemd_unit_and_user() {
    let test = "systemd_unit_and_user";
    if !need(test, &["systemd-analyze", "systemd-sysusers"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("etc")).unwrap();
    // verify checks that ExecStart's binary exists: the built one.
    let unit = tmp.path().join("keybound.service");
    let (exec, _) = unit_service();
    std::fs::write(&unit, UNIT.replace(&exec[0], bin().to_str().unwrap())).unwrap();
    let mut verify = Command::new(find_tool("systemd-analyze").unwrap());
    verify.arg("verify").arg(&unit);
    let (status, out, err) = run_bounded(verify, Duration::from_secs(60));
    // verify exits 0 on unknown keys and bad values: any output is a failure.
    assert!(
        status.success() && out.trim().is_empty() && err.trim().is_empty(),
        "systemd-analyze verify: {out}{err}"
    );
    let mut security = Command::new(find_tool("systemd-analyze").unwrap());
    security
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit);
    let (status, out, err) = run_bounded(security, Duration::from_secs(60));
    let overall = format!("{out}{err}");
    let level: f64 = overall
        .split("Overall exposure level for keybound.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {overall}"));
    assert!(status.success() && level <= 2.0, "exposure {level}: {overall}");

    let setting = |key: &str| -> Vec<&str> {
        UNIT.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    for (key, value) in [
        ("Type", "exec"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "keybound"),
        ("StateDirectoryMode", "0700"),
        ("WorkingDirectory", "/var/lib/keybound"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("UMask", "0077"),
    ] {
        assert_eq!(setting(key), [value], "{key}");
    }
    let user = setting("User");
    assert_eq!(user, ["keybound"], "a dedicated user");
    assert_eq!(setting("Group"), ["keybound"]);

    // The sysusers file creates that user, with the data dir as home.
    let mut sysusers = Command::new(find_tool("systemd-sysusers").unwrap());
    sysusers
        .arg(format!("--root={}", tmp.path().display()))
        .arg(root().join("contrib/systemd/keybound.sysusers"));
    let (status, out, err) = run_bounded(sysusers, Duration::from_secs(60));
    assert!(status.success(), "systemd-sysusers: {out}{err}");
    let passwd = std::fs::read_to_string(tmp.path().join("etc/passwd")).unwrap();
    let entry: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("keybound:"))
        .unwrap_or_else(|| panic!("no keybound user: {passwd}"))
        .split(':')
        .collect();
    assert_ne!(entry[2], "0", "the service user is not root");
    assert_eq!(entry[5], "/var/lib/keybound");
    assert_eq!(entry[6], "/usr/sbin/nologin");
    assert!(SYSUSERS.lines().any(|l| l.starts_with("u keybound ")));
}

/// One Dockerfile instruction: the keyword and its arguments, continuation
/// lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in DOCKERFILE.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part.trim());
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                let (keyword, args) = pending.split_once(' ').unwrap_or((&pending, ""));
                out.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
                pending.clear();
            }
        }
    }
    assert!(pending.is_empty(), "the Dockerfile ends in a continuation");
    out
}

fn json_words(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|_| panic!("{args:?} is not the exec (JSON) form"))
}

/// §12: the Dockerfile's lint (pinned bases matching rust-version, a
/// non-root user, no ADD, no secret, the data dir a volume owned by that
/// user, the ports exposed, the exec form), `.dockerignore` keeping
/// secrets out, and the image's own ENTRYPOINT, CMD and ENV run here:
/// `admin bootstrap`, then `serve` answering /healthz and stopping on
/// STOPSIGNAL. With a docker daemon, `docker build --check` too.
#[test]
fn dockerfile_lint_and_the_image_settings() {
    let instructions = dockerfile();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let rust_version = CARGO_TOML
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \"")?.strip_suffix('"'))
        .unwrap();
    let (build_from, run_from) = (&instructions[stages[0]].1, &instructions[stages[1]].1);
    let builder = build_from
        .strip_suffix(" AS build")
        .expect("the build stage is named build");
    let (image, tag) = builder.split_once(':').expect("a tag");
    assert_eq!(image, "rust");
    let (version, release) = tag.split_once('-').expect("rust:VERSION-RELEASE");
    assert_eq!(version, rust_version, "the builder is Cargo.toml's rust-version");
    let (image, tag) = run_from.split_once(':').expect("a tag");
    assert_eq!(image, "debian");
    assert_eq!(
        tag,
        format!("{release}-slim"),
        "the runtime is the builder's Debian release, slim"
    );
    for (keyword, args) in &instructions {
        assert_ne!(keyword, "ADD", "COPY only: nothing fetched at build time ({args})");
        if keyword == "ENV" || keyword == "ARG" {
            for word in args.split_whitespace() {
                let name = word.split('=').next().unwrap().to_ascii_uppercase();
                for secret in ["PASSWORD", "SECRET", "TOKEN", "SIGNING_KEY"] {
                    assert!(!name.contains(secret), "the image carries a secret setting: {word}");
                }
            }
        }
        if keyword == "RUN" && args.contains("cargo build") {
            assert!(args.contains("--release") && args.contains("--locked"), "{args}");
        }
        if keyword == "RUN" && args.contains("apt-get install") {
            assert!(
                args.contains("--no-install-recommends") && args.contains("rm -rf /var/lib/apt/lists"),
                "{args}"
            );
        }
    }
    let runtime = &instructions[stages[1]..];
    let last = |keyword: &str| -> &str {
        &runtime
            .iter()
            .rev()
            .find(|(k, _)| k == keyword)
            .unwrap_or_else(|| panic!("no {keyword}"))
            .1
    };
    let user = last("USER");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    assert!(
        uid.parse::<u32>().unwrap() > 0 && gid.parse::<u32>().unwrap() > 0,
        "USER {user} is root"
    );
    let setup = last("RUN");
    assert!(setup.contains(&format!("useradd --system --uid {uid} ")), "{setup}");
    let env: BTreeMap<String, String> = runtime
        .iter()
        .filter(|(k, _)| k == "ENV")
        .flat_map(|(_, args)| {
            args.split_whitespace()
                .map(|w| {
                    let (k, v) = w.split_once('=').expect("ENV NAME=value");
                    (k.to_owned(), v.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let data = &env["KEYBOUND_DATA_DIR"];
    assert_eq!(
        json_words(last("VOLUME")),
        [data.as_str()],
        "the data dir is the volume"
    );
    assert_eq!(last("WORKDIR"), data);
    assert!(
        setup.contains(&format!("install -d -o keybound -g keybound -m 0700 {data}")),
        "{setup}"
    );
    let exposed: BTreeSet<&str> = last("EXPOSE").split_whitespace().collect();
    for key in ["KEYBOUND_LISTEN", "KEYBOUND_METRICS_LISTEN"] {
        let port = env[key].rsplit_once(':').unwrap().1;
        assert!(exposed.contains(port), "{key} {} is not exposed", env[key]);
    }
    assert_eq!(last("STOPSIGNAL"), "SIGTERM");
    let entrypoint = json_words(last("ENTRYPOINT"));
    let cmd = json_words(last("CMD"));
    let copied = last("COPY");
    assert_eq!(
        copied,
        format!("--from=build /src/target/release/keybound {}", entrypoint[0])
    );
    assert_eq!(cmd, ["serve"]);
    for pattern in [
        ".git/",
        "target/",
        "keybound-data/",
        "**/*.db",
        "**/root.key",
        "**/*.key",
    ] {
        assert!(
            DOCKERIGNORE.lines().any(|l| l == pattern),
            ".dockerignore does not exclude {pattern}"
        );
    }

    // The image's settings, run with the built binary: a data dir in a
    // temporary directory (the volume) and loopback addresses for the
    // test, everything else as the image sets it.
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("volume");
    let listen = format!("127.0.0.1:{}", free_port());
    let image_command = |args: &[String], extra: &[(&str, &str)]| {
        let mut command = Command::new(bin());
        command
            .args(args)
            .env_clear()
            .env("PATH", test_path())
            .envs(&env)
            .env("KEYBOUND_ISSUER_ID", "https://issuer.example")
            .envs(extra.iter().copied())
            .current_dir(tmp.path());
        command
    };
    let mut check: Vec<String> = entrypoint[1..].iter().chain(&cmd).cloned().collect();
    check.push("--check-config".into());
    let (status, out, err) = run_bounded(image_command(&check, &[]), Duration::from_secs(30));
    assert!(status.success(), "{err}");
    let effective: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(effective["data_dir"].as_str(), Some(data.as_str()));
    assert_eq!(effective["listen"].as_str(), Some(env["KEYBOUND_LISTEN"].as_str()));
    assert_eq!(
        effective["metrics_listen"].as_str(),
        Some(env["KEYBOUND_METRICS_LISTEN"].as_str())
    );
    assert_eq!(effective["log_format"].as_str(), Some("json"));
    let here = [
        ("KEYBOUND_DATA_DIR", volume.to_str().unwrap()),
        ("KEYBOUND_LISTEN", listen.as_str()),
        ("KEYBOUND_METRICS_LISTEN", "127.0.0.1:0"),
    ];
    let bootstrap: Vec<String> = entrypoint[1..]
        .iter()
        .cloned()
        .chain(["admin".into(), "bootstrap".into()])
        .collect();
    let mut with_password = here.to_vec();
    with_password.push(("KEYBOUND_ADMIN_PASSWORD", ADMIN_PASSWORD));
    let (status, _, err) = run_bounded(image_command(&bootstrap, &with_password), Duration::from_secs(60));
    assert!(status.success(), "admin bootstrap in the image's settings: {err}");
    let serve: Vec<String> = entrypoint[1..].iter().chain(&cmd).cloned().collect();
    let mut serving = image_command(&serve, &here);
    serving
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = serving.spawn().unwrap();
    let log = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + START_TIMEOUT;
    while http_status(&listen, "/healthz") != 200 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "serve exited: {}",
            log.lock().unwrap()
        );
        assert!(
            Instant::now() < deadline,
            "serve did not start: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    settle();
    signal(child.id(), libc::SIGTERM);
    let status = wait_until(&mut child, Instant::now() + Duration::from_secs(30)).expect("stops on SIGTERM");
    assert!(status.success(), "serve on SIGTERM: {status}: {}", log.lock().unwrap());
    let mode = std::fs::metadata(volume.join("root.key")).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);

    // A docker daemon is rare on test machines; where one answers, its
    // own checks run too.
    let docker_works = find_tool("docker").is_some_and(|docker| {
        let mut info = Command::new(docker);
        info.arg("info");
        run_bounded(info, Duration::from_secs(20)).0.success()
    });
    if docker_works {
        let mut check = Command::new(find_tool("docker").unwrap());
        check.args(["build", "--check", "."]).current_dir(root());
        let (status, out, err) = run_bounded(check, Duration::from_secs(300));
        assert!(status.success(), "docker build --check: {out}{err}");
    } else {
        eprintln!("dockerfile_lint_and_the_image_settings: no docker daemon, `docker build --check` not run");
    }
}
