//! The issuer process under connection floods and broken dependencies:
//! header and idle deadlines, the connection cap under a low open-file
//! limit, readiness when the database cannot write or Redis is gone, a
//! database that cannot be opened, and what bootstrap prints.
#![cfg(all(feature = "cli", target_os = "linux"))]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin, free_port};
use serde_json::Value;

/// Sets the soft limit `resource` of process `pid` to `value` (the hard
/// limit stays, so the soft one can be raised again).
fn set_limit(pid: i32, resource: libc::__rlimit_resource_t, value: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit writes only the struct it is given.
    let rc = unsafe { libc::prlimit(pid, resource, std::ptr::null(), &mut limit) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    limit.rlim_cur = value;
    // SAFETY: prlimit reads the struct it is given and writes nothing (null).
    let rc = unsafe { libc::prlimit(pid, resource, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A `keybound serve` process on a free loopback port, killed on drop.
struct Issuer {
    child: Child,
    port: u16,
    /// The issuer's stderr, read through a pipe (a log file would be under
    /// the file-size limit a test sets).
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Issuer {
    /// Starts `keybound serve` on data dir `dir` with `args`, its open-file
    /// limit set to `nofile` and SIGXFSZ ignored (so a file-size limit makes
    /// writes fail instead of killing it), and waits for `/healthz`.
    fn start(dir: &Path, nofile: libc::rlim_t, args: &[&str]) -> Issuer {
        let port = free_port();
        let mut command = Command::new(bin());
        command
            .args(["serve", "--init", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env_remove("KEYBOUND_ROOT_SECRET")
            .env_remove("KEYBOUND_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut issuer = Issuer { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = issuer.get("/healthz", Duration::from_secs(1)) {
                return issuer;
            }
            if let Ok(Some(status)) = issuer.child.try_wait() {
                panic!("the issuer exited ({status}): {}", issuer.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the issuer did not start: {}",
                issuer.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `GET path` on a fresh connection: status and body.
    fn get(&self, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))?;
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        Ok((status, body))
    }

    /// Polls `/readyz` until it answers `status` (readiness results are
    /// reused for 1 s); returns the body.
    fn readyz_becomes(&self, status: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self.get("/readyz", Duration::from_secs(5));
            if let Ok((s, body)) = &answer
                && *s == status
            {
                return body.clone();
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never answered {status}: last {answer:?}; log: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True once the server has closed `stream` (end of file or reset).
fn closed_by_server(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (408 or the like) before the close
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true, // reset
        }
    }
}

const HALF_OPEN: usize = 2000;
const FD_LIMIT: libc::rlim_t = 256;

/// Issue 11 §1: 2,000 connections that never finish their headers, against
/// an issuer limited to 256 open files and a 1-s header deadline. A fresh
/// client keeps getting `/healthz` answers during the flood, every half-open
/// connection is closed by the server within the deadline, and so is an
/// idle keep-alive connection.
#[test]
fn half_open_flood_under_a_low_fd_limit() {
    // The test itself holds 2,000 sockets.
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut own), 0);
        own.rlim_cur = own.rlim_max.min(8192);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &own), 0);
    }
    assert!(
        own.rlim_cur >= 2200,
        "the test needs 2,200 open files, the hard limit is {}",
        own.rlim_max
    );

    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(dir.path(), FD_LIMIT, &["--header-read-timeout", "1"]);
    let rss_before = issuer.rss_kib();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], issuer.port));

    // An idle keep-alive connection: one full request, then nothing.
    let mut keep_alive = TcpStream::connect(target).unwrap();
    write!(keep_alive, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut first = [0u8; 256];
    keep_alive.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = keep_alive.read(&mut first).unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    let keep_alive_idle_from = Instant::now();

    // The flood, with a fresh /healthz every 250 connections.
    let started = Instant::now();
    let mut half_open = Vec::with_capacity(HALF_OPEN);
    let mut healthz_worst = Duration::ZERO;
    for i in 0..HALF_OPEN {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap();
        // A request head that never ends.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .unwrap();
        half_open.push(stream);
        if i % 250 == 249 {
            let asked = Instant::now();
            let answer = issuer.get("/healthz", Duration::from_secs(3));
            assert!(
                matches!(&answer, Ok((200, body)) if body == "ok\n"),
                "/healthz after {} half-open connections: {answer:?}",
                i + 1
            );
            healthz_worst = healthz_worst.max(asked.elapsed());
        }
    }
    let flood_time = started.elapsed();
    assert!(issuer.open_fds() <= FD_LIMIT as usize, "{} fds open", issuer.open_fds());

    // Every one is closed by the server: the newest within the 1-s header
    // deadline (plus scheduling slack), the older ones earlier, to make room.
    let deadline = Instant::now() + Duration::from_secs(3);
    let still_open = half_open
        .iter_mut()
        .map(|s| closed_by_server(s, deadline))
        .filter(|closed| !closed)
        .count();
    assert_eq!(
        still_open, 0,
        "{still_open} half-open connections still open after the deadline"
    );
    assert!(
        closed_by_server(&mut keep_alive, Instant::now() + Duration::from_secs(1)),
        "the idle keep-alive connection is still open"
    );
    let keep_alive_closed_after = keep_alive_idle_from.elapsed();
    let answer = issuer.get("/healthz", Duration::from_secs(3));
    assert!(matches!(&answer, Ok((200, _))), "/healthz after the flood: {answer:?}");
    let log = issuer.log_text();
    assert!(
        log.contains("connection limit reached"),
        "the cap was reached and logged: {log}"
    );
    eprintln!(
        "{HALF_OPEN} half-open connections in {flood_time:?}, fd limit {FD_LIMIT}: slowest /healthz {healthz_worst:?}; \
         RSS {rss_before} kB before, {} kB after; idle keep-alive closed after {keep_alive_closed_after:?}",
        issuer.rss_kib()
    );
}

/// Accept errors (out of file descriptors) pause the accept loop instead of
/// spinning, and service resumes when descriptors free up.
#[test]
fn accept_errors_back_off() {
    let dir = tempfile::tempdir().unwrap();
    // The cap is computed from the limit at start (256 - 64); lowering the
    // limit afterwards makes accept itself fail with EMFILE.
    let issuer = Issuer::start(dir.path(), FD_LIMIT, &["--header-read-timeout", "1"]);
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], issuer.port));
    set_limit(
        issuer.pid(),
        libc::RLIMIT_NOFILE,
        issuer.open_fds() as libc::rlim_t + 20,
    );
    let started = Instant::now();
    let mut half_open: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.1\r\n");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let answer = issuer.get("/healthz", Duration::from_secs(5));
    assert!(
        matches!(&answer, Ok((200, _))),
        "/healthz once descriptors free up: {answer:?}"
    );
    let failures = issuer.log_text().matches("accept failed").count();
    let elapsed = started.elapsed().as_secs_f64();
    // A hot loop logs thousands of lines a second; the back-off at most
    // one per 10 ms at first, then about one a second.
    assert!(failures >= 1, "accept never failed: {}", issuer.log_text());
    assert!(
        (failures as f64) < 20.0 * elapsed,
        "{failures} accept failures logged in {elapsed:.1} s"
    );
    half_open.clear();
}

/// Issue 11 §7, then FL-10: with every file write failing (file-size
/// limit 0, as on a full disk) `/readyz` says so, but stays 200: the
/// database still serves reads, and every replica shares it, so taking the
/// replicas out would stop those too (spec/issuer.md §9). Once writes
/// succeed again it says plain `ready` without a restart (a pooled SQLite
/// connection whose commit failed used to stay inside its transaction and
/// keep the store failing until a restart).
#[test]
fn readyz_says_writes_refused_while_the_database_cannot_write_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(dir.path(), 1024, &[]);
    assert_eq!(issuer.readyz_becomes(200), "ready\n");
    set_limit(issuer.pid(), libc::RLIMIT_FSIZE, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = issuer.readyz_becomes(200);
        if body == "ready, writes refused: issuer.storage_unavailable\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said writes are refused: {body:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    set_limit(issuer.pid(), libc::RLIMIT_FSIZE, libc::RLIM_INFINITY);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = issuer.readyz_becomes(200);
        if body == "ready\n" {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never recovered: {body:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 11 §7: `/readyz` said ready with the Redis replay store down.
#[test]
fn readyz_fails_while_the_replay_store_is_down() {
    let port = free_port();
    let spawned = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", &port.to_string(), "--maxmemory-policy", "noeviction"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut redis = match spawned {
        Ok(child) => child,
        Err(e) if std::env::var_os("CI").is_some() => panic!("CI must run redis-server: {e}"),
        Err(e) => {
            eprintln!("skipped: cannot run redis-server ({e})");
            return;
        }
    };
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "redis-server did not start");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://127.0.0.1:{port}/");
    let issuer = Issuer::start(dir.path(), 1024, &["--replay-redis", &url]);
    assert_eq!(issuer.readyz_becomes(200), "ready\n");
    let _ = redis.kill();
    let _ = redis.wait();
    let problem: Value = serde_json::from_str(&issuer.readyz_becomes(503)).unwrap();
    assert_eq!(problem["code"], "replay.store_unavailable", "{problem}");
    assert_eq!(problem["status"], 503, "{problem}");
    // The log arrives through a pipe read by another thread: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !issuer.log_text().contains("the replay store") {
        assert!(Instant::now() < deadline, "{}", issuer.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 11 §7: a database SQLite cannot open made `serve` wait 5 s and
/// say "pool timed out"; it now fails at once with the cause.
#[test]
fn an_unopenable_database_fails_fast_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("keybound.db");
    let mut cases = vec![format!("sqlite://{}?mode=rwc", missing.display())];
    // A read-only data dir (unless running as root, which writes anyway).
    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    std::fs::write(read_only.join("keybound.db"), b"").unwrap();
    std::fs::set_permissions(&read_only, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
    if std::fs::write(read_only.join("probe"), b"").is_err() {
        cases.push(format!("sqlite://{}?mode=rwc", read_only.join("keybound.db").display()));
    } else {
        eprintln!("running as root: the read-only directory case is not checked");
    }
    for url in cases {
        let started = Instant::now();
        let output = Command::new(bin())
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--database-url",
                &url,
            ])
            .env_remove("KEYBOUND_ROOT_SECRET")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url}: {stderr}");
        assert!(stderr.contains("unable to open database file"), "{url}: {stderr}");
        assert!(!stderr.contains("pool timed out"), "{url}: {stderr}");
        assert!(elapsed < Duration::from_secs(3), "{url}: took {elapsed:?}");
    }
    std::fs::set_permissions(&read_only, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
}

/// Issue 11 §7: bootstrap printed the admin audience of the default issuer
/// id whatever issuer id `serve` used later.
#[test]
fn bootstrap_prints_the_admin_audience_of_its_issuer_id() {
    let bootstrap = |dir: &Path, extra: &[&str]| -> Value {
        let output = Command::new(bin())
            .args(["admin", "bootstrap", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("KEYBOUND_ADMIN_PASSWORD", "choose-a-long-admin-password")
            .env_remove("KEYBOUND_ISSUER_ID")
            .env_remove("KEYBOUND_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let given = bootstrap(&dir.path().join("a"), &["--issuer-id", "https://issuer.example/"]);
    assert_eq!(given["issuer_id"], "https://issuer.example/");
    assert_eq!(given["admin_audience"], "https://issuer.example/admin");

    let config = dir.path().join("issuer.toml");
    std::fs::write(&config, "issuer_id = \"https://id.example\"\n").unwrap();
    let from_file = bootstrap(&dir.path().join("b"), &["--config", config.to_str().unwrap()]);
    assert_eq!(from_file["admin_audience"], "https://id.example/admin");

    let unknown = bootstrap(&dir.path().join("c"), &[]);
    assert_eq!(unknown["issuer_id"], Value::Null);
    assert_eq!(unknown["admin_audience"], Value::Null);
    assert!(
        unknown["admin_audience_rule"].as_str().unwrap().contains("/admin"),
        "{unknown}"
    );
}
