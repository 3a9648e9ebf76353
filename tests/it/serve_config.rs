//! `keybound serve` as an operator starts it: layered settings (file,
//! environment, flags) and `--check-config`, the data-dir lock, the refusal
//! to serve a data dir that was never bootstrapped, host names and port 0
//! in `--listen`, plain logs into a pipe, SIGHUP, and `/metrics` on its own
//! listener (spec/issuer.md §2, §9).
#![cfg(all(feature = "cli", target_os = "linux"))]

use crate::common::{bin, free_port};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `keybound` command with none of the caller's KEYBOUND_* settings.
fn keybound(args: &[&str]) -> Command {
    let mut command = Command::new(bin());
    command.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYBOUND_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

/// A running `keybound serve`, its stderr collected, killed on drop.
struct Serve {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Serve {
    fn spawn(mut command: Command) -> Serve {
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Serve { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`; panics if the process exits first.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("keybound serve exited ({status}) before {needle:?}: {log}");
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the log: {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill with a pid this test owns.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:`port`: status and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned())
}

fn bootstrap(data: &Path) {
    let out = run(keybound(&["admin", "bootstrap", "--data-dir", data.to_str().unwrap()])
        .env("KEYBOUND_ADMIN_PASSWORD", "a long admin password"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_config_layers_flags_over_environment_over_file_and_redacts() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let config = etc.join("keybound.toml");
    std::fs::write(
        &config,
        "data_dir = \"data\"\nleeway = 10\nmax_body = 2048\nlogin_burst = 7\n\
         database_url = \"postgres://keybound:hunter2@db.invalid/keybound\"\nlog_format = \"json\"\n",
    )
    .unwrap();
    let out = run(keybound(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--check-config",
        "--leeway",
        "20",
    ])
    .env("KEYBOUND_MAX_BODY", "4096")
    .env("KEYBOUND_LEEWAY", "15"));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let effective: toml::Table = toml::from_str(&text).unwrap();
    // Flag over environment over file over default.
    assert_eq!(effective["leeway"].as_integer(), Some(20), "{text}");
    assert_eq!(effective["max_body"].as_integer(), Some(4096), "{text}");
    assert_eq!(effective["login_burst"].as_integer(), Some(7), "{text}");
    assert_eq!(effective["rotation_period"].as_integer(), Some(3600), "{text}");
    assert_eq!(effective["log_format"].as_str(), Some("json"), "{text}");
    // A relative path in the file is relative to the file, not to the cwd.
    assert_eq!(
        effective["data_dir"].as_str(),
        Some(etc.join("data").to_str().unwrap()),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("keybound:[redacted]@db.invalid"), "{text}");
    assert!(text.contains("# root secret: the file"), "{text}");
    // Nothing was created: --check-config only reads.
    assert!(!etc.join("data").exists());
}

#[test]
fn bad_settings_are_refused_with_their_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("keybound.toml");
    std::fs::write(&config, "leway = 10\n").unwrap();
    let out = run(&mut keybound(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--check-config",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("error: issuer.config: "), "{}", stderr(&out));
    assert!(stderr(&out).contains("leway"), "{}", stderr(&out));
    let out = run(&mut keybound(&["serve", "--log-format", "xml", "--check-config"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("error: cli.usage: "), "{}", stderr(&out));
    let out = run(&mut keybound(&["serve", "--listen", "127.0.0.1", "--check-config"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("HOST:PORT"), "{}", stderr(&out));
    let out = run(&mut keybound(&["serve", "--leeway", "600", "--check-config"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("leeway"), "{}", stderr(&out));
}

#[test]
fn serve_refuses_a_data_dir_that_was_never_bootstrapped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = run(&mut keybound(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: issuer.not_initialised: "),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--init"), "{}", stderr(&out));
    assert!(
        !data.join("keybound.db").exists(),
        "a refused start creates no database"
    );
    // A database with no admin (an --init issuer that was stopped) is refused too.
    let mut init = Serve::spawn(keybound(&[
        "serve",
        "--init",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
    ]));
    init.wait_for("no admin exists yet");
    init.wait_for("issuer started");
    drop(init);
    let out = run(&mut keybound(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
    ]));
    assert!(
        stderr(&out).contains("error: issuer.not_initialised: "),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("no admin"), "{}", stderr(&out));
    // Once bootstrapped it starts without --init.
    bootstrap(&data);
    let mut serve = Serve::spawn(keybound(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
    ]));
    serve.wait_for("issuer started");
}

#[test]
fn a_second_issuer_on_one_sqlite_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    bootstrap(&data);
    let first_listen = format!("127.0.0.1:{}", free_port());
    let mut first = Serve::spawn(keybound(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &first_listen,
    ]));
    first.wait_for("issuer started");
    let second_listen = format!("127.0.0.1:{}", free_port());
    let out = run(&mut keybound(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &second_listen,
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: issuer.data_dir_in_use: "),
        "{}",
        stderr(&out)
    );
    // The lock dies with its process, also with kill -9: no stale lock.
    first.signal(libc::SIGKILL);
    let _ = first.child.wait();
    let mut again = Serve::spawn(keybound(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &second_listen,
    ]));
    again.wait_for("issuer started");
}

#[test]
fn host_names_and_port_zero_in_listen_log_the_bound_address_without_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    bootstrap(&data);
    let mut serve = Serve::spawn(keybound(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "localhost:0",
        "--issuer-id",
        "http://localhost:8080",
    ]));
    let log = serve.wait_for("issuer started");
    let line = log.lines().find(|l| l.contains("issuer started")).unwrap();
    let bound = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .unwrap_or_else(|| panic!("no listen= in {line}"));
    let addr: std::net::SocketAddr = bound.parse().unwrap_or_else(|_| panic!("{bound} in {line}"));
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{line}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a pipe: {log:?}");
    assert_eq!(get(addr.port(), "/healthz").0, 200);
}

#[test]
fn sighup_reloads_the_log_level_and_survives_a_broken_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    bootstrap(&data);
    let config = tmp.path().join("keybound.toml");
    std::fs::write(&config, "log_level = \"warn\"\n").unwrap();
    let port = free_port();
    let mut serve = Serve::spawn(keybound(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]));
    // At warn, the info line "issuer started" is not logged: wait for the port.
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "not listening: {}", serve.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!serve.log().contains("issuer started"), "{}", serve.log());
    std::fs::write(&config, "log_level = \"info\"\n").unwrap();
    serve.signal(libc::SIGHUP);
    serve.wait_for("log filter reloaded");
    std::fs::write(&config, "log_level = [\n").unwrap();
    serve.signal(libc::SIGHUP);
    serve.wait_for("settings not reloaded");
    assert_eq!(get(port, "/healthz").0, 200, "{}", serve.log());
    assert!(serve.child.try_wait().unwrap().is_none());
}

#[test]
fn metrics_move_to_their_own_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    bootstrap(&data);
    let (port, metrics_port) = (free_port(), free_port());
    let mut serve = Serve::spawn(keybound(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ]));
    serve.wait_for("issuer started");
    assert_eq!(get(port, "/metrics").0, 404);
    assert_eq!(get(port, "/healthz").0, 200);
    let (status, body) = get(metrics_port, "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!(
            "keybound_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
    for metric in [
        "keybound_time_seconds ",
        "keybound_signing_key_started_seconds ",
        "keybound_signing_key_next_rotation_seconds ",
        "keybound_key_rotations_ordered 0",
        "keybound_root_secret_replaced 0",
        "keybound_tokens_minted_total",
    ] {
        assert!(body.contains(metric), "{metric} missing: {body}");
    }
    assert_eq!(
        get(metrics_port, "/healthz").0,
        404,
        "the metrics listener serves only /metrics"
    );
}
