//! Helpers shared by the integration tests: an issuer on loopback and a
//! private redis-server. Each area uses only some of them.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use keybound::issuer::IssuerConfig;
use keybound::issuer::loopback::LoopbackIssuer;
use keybound::verify::Clock;

/// The `keybound` binary the tests run.
#[cfg(feature = "cli")]
/// Held by the load and fault tests for their whole run, so that no two of
/// them share the machine at once: their bounds (a p99, a restart time, a
/// fail-closed delay) assume the cores are not taken by another flood.
/// Lighter tests still run beside them.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

pub fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin!("keybound").to_path_buf()
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    // Below the kernel's ephemeral range (32768–60999 by default), which
    // every outgoing connection takes its local port from: a port handed
    // out from that range could be taken by a client's connection before
    // the server binds it (seen: `Address already in use` under the full
    // suite). Never the same port twice in one test process.
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_768;
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    // A start that differs between processes (nextest runs each test in its own).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = ((nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % u32::from(HIGH - LOW)) as u16;
    for i in 0..(HIGH - LOW) {
        let port = LOW + (start + i) % (HIGH - LOW);
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {LOW}..{HIGH}");
}

/// A bootstrapped issuer on a free loopback port, with its data directory in
/// a temporary directory removed with it. `tweak` adjusts the configuration
/// (database URL, limits, …) before start-up.
pub async fn start_issuer(
    admin_password: &str,
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut IssuerConfig),
) -> (LoopbackIssuer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = IssuerConfig::new(dir.path());
    tweak(&mut config);
    let issuer = LoopbackIssuer::start(config, admin_password, clock).await.unwrap();
    (issuer, dir)
}

pub mod binding_cases;

/// A private redis-server on a free loopback port, killed on drop.
pub struct PrivateRedis {
    child: Child,
    pub port: u16,
}

impl PrivateRedis {
    /// Starts redis-server with `extra` arguments on `port` (a free one if
    /// `None`). Without a redis-server binary the test is skipped with a
    /// message, except under CI, which installs one: there it fails.
    pub fn start(extra: &[&str], port: Option<u16>) -> Option<Self> {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let port_text = port.to_string();
        let mut args = vec![
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--port",
            &port_text,
        ];
        args.extend(extra);
        let child = match Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if std::env::var_os("CI").is_some() => panic!("CI must run redis-server: {e}"),
            Err(e) => {
                eprintln!("skipped: cannot run redis-server ({e})");
                return None;
            }
        };
        let mut redis = PrivateRedis { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        redis.kill();
        panic!("redis-server did not start on port {port}");
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's process id (to pause it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server (a Redis outage, for the test).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Python check of spec/gateway.md §4.2, as the spec shows it (so the
/// documented code is what the tests run).
pub fn documented_python_check() -> &'static str {
    const SPEC: &str = include_str!("../../../spec/gateway.md");
    let start = SPEC.find("```python\n").expect("spec/gateway.md has a python block") + "```python\n".len();
    let end = start + SPEC[start..].find("```").unwrap();
    &SPEC[start..end]
}

/// Writes a secret file as an operator must: mode 0600 (keybound refuses
/// secret files that group or others may read).
pub fn write_secret(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
}

pub mod deployment;
pub mod history;
