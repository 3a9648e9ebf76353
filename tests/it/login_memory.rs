//! Memory of a real issuer process (`keybound serve`) under a login flood
//! (issue 11 §2, spec/issuer.md §5.4): password hashing holds at most one
//! 19 MiB buffer per hashing slot, however many logins arrive.
#![cfg(all(feature = "cli", target_os = "linux"))]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::bin;
use keybound::key::{Algorithm, SigningKey};

const ADMIN_PASSWORD: &str = "choose-a-long-admin-password";
const MIB: u64 = 1024 * 1024;

/// A field of /proc/PID/status, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

struct Issuer(Child);

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `count` password logins, `parallel` at a time; returns how many were
/// answered after a password check (accepted, or refused as wrong).
async fn flood(url: &str, count: usize, parallel: usize, user: impl Fn(usize) -> String, password: &str) -> usize {
    let mut checked = 0;
    for wave in 0..count.div_ceil(parallel) {
        let logins: Vec<_> = (wave * parallel..((wave + 1) * parallel).min(count))
            .map(|i| {
                let client =
                    keybound::client::Client::new(url, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
                let (user, password) = (user(i), password.to_owned());
                tokio::spawn(async move { client.login_password(&user, &password, None).await })
            })
            .collect();
        for login in logins {
            match login.await.unwrap() {
                Ok(_) => checked += 1,
                Err(e) if e.code() == keybound::Code::IssuerInvalidCredentials => checked += 1,
                // No free hashing slot within 2 s: queued, then refused (503).
                Err(e) => assert_eq!(e.code(), keybound::Code::IssuerUnavailable, "{e}"),
            }
        }
    }
    checked
}

#[test]
fn a_login_flood_keeps_the_issuer_within_its_hashing_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let bootstrap = Command::new(bin())
        .args(["admin", "bootstrap", "--data-dir", data.to_str().unwrap()])
        .env("KEYBOUND_CONFIG_DIR", tmp.path().join("config"))
        .env("KEYBOUND_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        bootstrap.status.success(),
        "{}",
        String::from_utf8_lossy(&bootstrap.stderr)
    );

    // The flood comes from one address: above the per-source login limit.
    let config = tmp.path().join("issuer.toml");
    std::fs::write(&config, "login_rate_per_minute = 1000000\nlogin_burst = 100000\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = Issuer(
        Command::new(bin())
            .args([
                "serve",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
                config.to_str().unwrap(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = issuer.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the issuer did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}");
    std::thread::sleep(Duration::from_millis(300));
    let start = status_bytes(pid, "VmRSS:");

    let rt = tokio::runtime::Runtime::new().unwrap();
    // The figures of issue 11 §2: 300 logins for unknown names, 100 at a
    // time (+590 MB before the pool), then 120 ordinary ones, 40 at a time.
    let unknown = rt.block_on(flood(
        &url,
        300,
        100,
        |i| format!("nobody{i}@default"),
        "wrong password!",
    ));
    let ordinary = rt.block_on(flood(&url, 120, 40, |_| "admin@default".to_owned(), ADMIN_PASSWORD));
    std::thread::sleep(Duration::from_millis(500));
    let (peak, after) = (status_bytes(pid, "VmHWM:"), status_bytes(pid, "VmRSS:"));

    let pool = keybound::issuer::password::hash_slot_count() as u64 * 19 * MIB;
    // Beyond the pool: threads, connections and buffers of 100 clients.
    let ceiling = start + pool + 64 * MIB;
    eprintln!(
        "RSS: start {} MiB, peak {} MiB, after {} MiB; pool {} MiB; {unknown}/300 unknown-name and {ordinary}/120 ordinary logins checked",
        start / MIB,
        peak / MIB,
        after / MIB,
        pool / MIB
    );
    assert!(
        unknown >= 30 && ordinary >= 12,
        "too few logins reached a password check"
    );
    assert!(
        peak <= ceiling,
        "peak RSS {} MiB over the ceiling {} MiB",
        peak / MIB,
        ceiling / MIB
    );
    assert!(
        after <= start + pool + 32 * MIB,
        "RSS stayed at {} MiB after the flood (start {} MiB, pool {} MiB)",
        after / MIB,
        start / MIB,
        pool / MIB
    );
}
