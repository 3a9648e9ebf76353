//! FL-10 (issue 17, security-catalog.md §4): the issuer's storage refuses
//! writes. The SQLite issuer's data dir on a small tmpfs filled to the last
//! byte, then on an ext4 volume that goes read-only under it (the kernel's
//! `errors=remount-ro`), and a PostgreSQL database switched to read-only.
//! Expected: writes answer 503 `issuer.storage_unavailable`, reads that
//! need no write go on, no 500, `/readyz` stays 200 (a balancer keeps
//! sending reads), nothing acknowledged is lost or unaudited, no refused
//! write leaves a trace, and service returns when the storage does.
//! docs/faults.md describes them; figures go to stderr.
#![cfg(all(feature = "cli", feature = "postgres", target_os = "linux"))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keybound::client::{Client, Scope};
use keybound::issuer::loopback::{DOMAIN, PROJECT, USER};
use keybound::key::{Algorithm, SigningKey};
use serde_json::{Value, json};

use crate::common::deployment::{
    PASSWORD, PgDatabase, Service, admin_call, admin_client, audit_entries, bootstrap, create_world, issuer_service,
    run_sql, user_client,
};
use crate::common::free_port;
use crate::common::history::{Model, Recorder, Report, check, now_ms};

const CODE: &str = "issuer.storage_unavailable";
const SERVICE: &str = "https://service.example";
/// Registered but never minted for before the fault: its first mint must
/// write its minute's audit entry, so it is refused while writes are.
const OTHER: &str = "https://other.example";

/// Mounting needs root: skipped with a reason otherwise, a failure under CI.
fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{test}: CI runs as root to mount");
    eprintln!("skipped {test}: needs root to mount a tmpfs or a loop device");
    false
}

fn sh(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn sh_ok(program: &str, args: &[&str]) {
    let out = sh(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mount at `path`, unmounted (lazily, so a failing test cannot leave it
/// busy) when dropped.
struct Mount {
    path: PathBuf,
}

impl Mount {
    fn tmpfs(path: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        sh_ok(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                path.to_str().unwrap(),
            ],
        );
        Mount { path: path.to_owned() }
    }

    /// ext4 in `image` on a loop device, which goes read-only on the first
    /// error (what a volume with a failing disk does under a running process).
    fn ext4(image: &Path, path: &Path) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        sh_ok("truncate", &["-s", "32M", image.to_str().unwrap()]);
        sh_ok("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        sh_ok(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                image.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        );
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Mount { path: path.to_owned() }
    }

    fn device(&self) -> String {
        let out = sh("findmnt", &["-n", "-o", "SOURCE", self.path.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn options(&self) -> String {
        let out = sh("findmnt", &["-n", "-o", "OPTIONS", self.path.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = sh("umount", &["-l", self.path.to_str().unwrap()]);
    }
}

/// Writes zeros to `path` until the volume is full: the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    // Bounded: a tmpfs of a few MiB fills in well under this many chunks.
    for _ in 0..100_000 {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
    }
    // Smaller writes take the last partial block.
    for size in [4096usize, 512, 1] {
        while file.write(&chunk[..size]).is_ok_and(|n| n > 0) {
            written += size as u64;
        }
    }
    let _ = file.sync_all();
    written
}

/// One scalar text answer of `sql` on `url`, on a runtime of its own.
fn query_text(url: &str, sql: &str) -> String {
    sqlx::any::install_default_drivers();
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Row;
            let pool = sqlx::AnyPool::connect(&url).await.expect("database reachable");
            let row = sqlx::query(&sql)
                .fetch_one(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let text: String = row.try_get(0).unwrap();
            pool.close().await;
            text
        })
    })
    .join()
    .unwrap()
}

/// The issuer under test and its clients, and every status it answered.
struct Probe {
    rec: Recorder,
    url: String,
    admin: Client,
    user: Client,
    http: reqwest::Client,
    statuses: Vec<(String, u16)>,
    next_role: usize,
    /// The minute (ms / 60,000) in which the last mint of SERVICE started.
    service_minute: u64,
}

/// What one phase (storage refusing writes) saw.
#[derive(Debug, Default)]
struct Refused {
    writes_refused: usize,
    logins_refused: usize,
    other_mint_refused: bool,
    repeat_mint: Option<u16>,
    reads_ok: usize,
    readyz: String,
}

impl Probe {
    async fn new(url: &str) -> Probe {
        let admin = admin_client(url).await;
        create_world(&admin, url, &[SERVICE, OTHER]).await;
        let user = user_client(url).await;
        Probe {
            rec: Recorder::new(),
            url: url.to_owned(),
            admin,
            user,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            statuses: Vec::new(),
            next_role: 0,
            service_minute: 0,
        }
    }

    fn scope(audience: &str) -> Scope {
        Scope::new(audience).project(PROJECT).domain(DOMAIN)
    }

    /// Creates one role, recorded as an `admin_write` (status, code).
    async fn create_role(&mut self, tag: &str) -> (u16, Option<String>) {
        let name = format!("fl10-{tag}-{}", self.next_role);
        self.next_role += 1;
        let start = now_ms();
        let (status, code, _) = admin_call(
            &self.admin,
            &self.url,
            reqwest::Method::POST,
            "/v1/admin/roles",
            Some(&json!({"name": name})),
        )
        .await;
        self.rec.record(
            json!({"kind": "admin_write", "client": "admin", "replica": "issuer", "name": name,
                               "action": "role.create", "start_ms": start, "end_ms": now_ms(),
                               "status": status, "code": code}),
        );
        self.statuses.push(("POST /v1/admin/roles".into(), status));
        (status, code)
    }

    /// A mint for `audience` with a fresh request (not the cached token):
    /// the status, 0 and the code when refused.
    async fn mint(&mut self, audience: &str) -> (u16, Option<String>) {
        let scope = Self::scope(audience);
        self.user.forget_token(&scope);
        let outcome = match self.user.service_token(&scope).await {
            Ok(_) => (200, None),
            Err(e) => (e.code().http_status(), Some(e.code().as_str().to_owned())),
        };
        self.statuses.push((format!("mint {audience}"), outcome.0));
        outcome
    }

    /// A password login with a new key.
    async fn login(&mut self) -> (u16, Option<String>) {
        let client = Client::new(&self.url, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
        let outcome = match client.login_password(USER, PASSWORD, None).await {
            Ok(_) => (200, None),
            Err(e) => (e.code().http_status(), Some(e.code().as_str().to_owned())),
        };
        self.statuses.push(("login".into(), outcome.0));
        outcome
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let (status, body) = match self.http.get(format!("{}{path}", self.url)).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        };
        self.statuses.push((format!("GET {path}"), status));
        (status, body)
    }

    /// Everything the storage fault must refuse (writes) and allow (reads).
    async fn while_refusing(&mut self, phase: &str) -> Refused {
        let mut seen = Refused::default();
        // The last mint of SERVICE was just before the fault: a repeat in the
        // same minute writes nothing (its minute's entry exists) and is served.
        // That minute is the one the mint started in (`before`), not now's:
        // the minute may have turned while the fault was being set up.
        let minute = self.service_minute;
        for _ in 0..5 {
            let (status, code) = self.create_role(phase).await;
            assert_eq!((status, code.as_deref()), (503, Some(CODE)), "{phase}: a write");
            seen.writes_refused += 1;
        }
        for _ in 0..3 {
            let (status, code) = self.login().await;
            assert_eq!((status, code.as_deref()), (503, Some(CODE)), "{phase}: a login");
            seen.logins_refused += 1;
        }
        let (status, code) = self.mint(OTHER).await;
        assert_eq!(
            (status, code.as_deref()),
            (503, Some(CODE)),
            "{phase}: a first mint of a minute"
        );
        seen.other_mint_refused = true;
        let (status, code) = self.mint(SERVICE).await;
        if now_ms() / 60_000 == minute {
            assert_eq!(status, 200, "{phase}: a mint that writes nothing: {code:?}");
        } else {
            // The minute turned: this mint had to write a new entry.
            assert!(
                status == 200 || code.as_deref() == Some(CODE),
                "{phase}: {status} {code:?}"
            );
        }
        seen.repeat_mint = Some(status);
        for path in ["/.well-known/keybound/keys", "/.well-known/keybound/issuer", "/healthz"] {
            let (status, _) = self.get(path).await;
            assert_eq!(status, 200, "{phase}: GET {path}");
            seen.reads_ok += 1;
        }
        // Reading the audit log first writes the coalesced mint counts
        // (spec/issuer.md §10.4), so it is a write here.
        let (status, code, _) = admin_call(
            &self.admin,
            &self.url,
            reqwest::Method::GET,
            "/v1/admin/audit?limit=10",
            None,
        )
        .await;
        assert_eq!((status, code.as_deref()), (503, Some(CODE)), "{phase}: the audit log");
        for path in ["/v1/admin/roles", "/v1/admin/users"] {
            let (status, code, _) = admin_call(&self.admin, &self.url, reqwest::Method::GET, path, None).await;
            self.statuses.push((format!("GET {path}"), status));
            assert_eq!(status, 200, "{phase}: GET {path}: {code:?}");
            seen.reads_ok += 1;
        }
        // Readiness results are reused for 1 s: wait for a fresh one.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = self.get("/readyz").await;
            assert_eq!(status, 200, "{phase}: /readyz stays ready: {body}");
            if body.contains(CODE) || Instant::now() > deadline {
                seen.readyz = body.trim().to_owned();
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(seen.readyz.contains(CODE), "{phase}: /readyz says writes are refused");
        seen
    }

    /// After the storage is back: writes, logins and mints work again
    /// without a restart. The time to the first acknowledged write.
    async fn recovered(&mut self, phase: &str) -> Duration {
        let back = Instant::now();
        let mut first = None;
        for _ in 0..50 {
            if self.create_role(phase).await.0 == 200 {
                first = Some(back.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let first = first.unwrap_or_else(|| panic!("{phase}: no write acknowledged within 5 s"));
        for _ in 0..3 {
            assert_eq!(self.create_role(phase).await.0, 200, "{phase}: writes after recovery");
        }
        assert_eq!(self.login().await, (200, None), "{phase}: login after recovery");
        assert_eq!(self.mint(OTHER).await, (200, None), "{phase}: mint after recovery");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.get("/readyz").await.1 != "ready\n" {
            assert!(Instant::now() < deadline, "{phase}: /readyz back to plain ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        first
    }

    /// The roles and the audit log, into the history; then the checker
    /// (I3: every acknowledged write read back and audited) and our own
    /// check that no refused write left a role or an audit entry.
    async fn verdict(&mut self, test: &str) -> Report {
        let start = now_ms();
        let (status, code, roles) =
            admin_call(&self.admin, &self.url, reqwest::Method::GET, "/v1/admin/roles", None).await;
        assert_eq!(status, 200, "{code:?}");
        let names: Vec<Value> = roles
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.get("name").cloned().unwrap_or_else(|| r.clone()))
            .collect();
        self.rec.record(
            json!({"kind": "readback", "client": "test", "source": "admin_api", "names": names,
                               "start_ms": start, "end_ms": now_ms()}),
        );
        let entries = audit_entries(&self.admin, &self.url).await;
        self.rec
            .record(json!({"kind": "audit", "client": "test", "entries": entries.clone(),
                               "start_ms": now_ms(), "end_ms": now_ms()}));
        self.rec.keep(test);
        let report = check(&self.rec.ops(), &Model::default());
        eprintln!("--- {test}\n{}", report.summary());
        let refused: Vec<String> = self
            .rec
            .ops()
            .iter()
            .filter(|op| op["kind"] == "admin_write" && op["status"] != 200)
            .map(|op| op["name"].as_str().unwrap().to_owned())
            .collect();
        assert!(!refused.is_empty());
        for name in &refused {
            assert!(!names.iter().any(|n| n == name.as_str()), "refused {name} was created");
            assert!(
                !entries.iter().any(|e| e["target"] == name.as_str()),
                "refused {name} left an audit entry"
            );
        }
        let five_hundreds: Vec<&(String, u16)> = self.statuses.iter().filter(|(_, s)| *s >= 500 && *s != 503).collect();
        assert!(
            five_hundreds.is_empty(),
            "answers other than 503 among 5xx: {five_hundreds:?}"
        );
        assert!(report.violations.is_empty(), "{}", report.summary());
        report
    }

    /// Writes acknowledged before the fault, and a mint of SERVICE right
    /// before it (so the repeat inside the fault can be served).
    async fn before(&mut self, writes: usize) {
        for _ in 0..writes {
            assert_eq!(self.create_role("before").await.0, 200);
        }
        self.service_minute = now_ms() / 60_000;
        assert_eq!(self.mint(SERVICE).await, (200, None));
    }
}

fn integrity(db: &Path) -> String {
    query_text(&format!("sqlite:{}", db.display()), "PRAGMA integrity_check")
}

/// FL-10, full: the SQLite issuer's data dir on an 8 MiB tmpfs, the WAL
/// checkpointed to nothing and the rest filled with a file, so the next
/// write needs a block the volume does not have. Writes, logins and first
/// mints of a minute answer 503 `issuer.storage_unavailable`; key set,
/// metadata, admin reads and a mint whose minute is audited are served;
/// `/readyz` stays 200 and says writes are refused. The filler removed,
/// writes work at once, no restart; `PRAGMA integrity_check` is `ok`
/// while running and after a stop; every acknowledged write is there and
/// audited, no refused one left a trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl10_sqlite_volume_full_refuses_writes_serves_reads_and_recovers() {
    let test = "fl10_full";
    if !root_or_skip(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sqlite-issuer");
    let mount = Mount::tmpfs(&data, "8m");
    let (port, metrics) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{port}");
    let mut issuer = issuer_service(dir.path(), "sqlite-issuer", &url, port, metrics, None, None, "");
    tokio::task::block_in_place(|| {
        bootstrap(&issuer);
        issuer.start();
    });
    let mut probe = Probe::new(&url).await;
    probe.before(20).await;
    let db = data.join("keybound.db");
    let db_url = format!("sqlite:{}", db.display());
    // An empty WAL: the next commit must allocate (SQLite reuses a WAL's
    // blocks after a checkpoint, which would hide the full volume for a while).
    // A checkpoint that a reader blocks leaves the WAL as it was, and the
    // next writer then rewrites its blocks from the start: writes would go
    // on on a full volume. So: until the WAL is really empty.
    let wal = data.join("keybound.db-wal");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::task::block_in_place(|| run_sql(&db_url, "PRAGMA wal_checkpoint(TRUNCATE)"));
        let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
        if len == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the WAL stays at {len} bytes after checkpoints"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let filler = data.join("filler");
    let filled = tokio::task::block_in_place(|| fill(&filler));
    probe.rec.fault("volume full");
    let seen = probe.while_refusing("full").await;
    let fault_end = Instant::now();
    std::fs::remove_file(&filler).unwrap();
    probe.rec.fault("space freed");
    let recovery = probe.recovered("after-full").await;
    let running = tokio::task::block_in_place(|| integrity(&db));
    let report = probe.verdict(test).await;
    tokio::task::block_in_place(|| issuer.stop());
    let stopped = tokio::task::block_in_place(|| integrity(&db));
    eprintln!(
        "{test}: filler {filled} bytes on {}; {seen:?}; first write {} ms after space was freed \
         (fault checks took {} ms); integrity running {running:?}, stopped {stopped:?}",
        mount.options(),
        recovery.as_millis(),
        fault_end.elapsed().as_millis() - recovery.as_millis(),
    );
    assert_eq!(running, "ok");
    assert_eq!(stopped, "ok");
    assert!(report.figure("writes_acknowledged") >= 24, "{}", report.summary());
    assert_eq!(report.figure("writes_lost"), 0);
}

/// FL-10, read-only: the data dir on ext4 (a loop device, `errors=remount-ro`)
/// and an fs error triggered under the running issuer, so the kernel makes
/// the volume read-only with the database open. (`mount -o remount,ro`
/// cannot do that: Linux refuses it, EBUSY, while a file is open for
/// writing, which SQLite's always are.) Same expectations as when full.
/// An ext4 forced read-only stays so until unmounted (`emergency_ro`), so
/// recovery is: stop the issuer, unmount, `e2fsck`, mount, start; then
/// everything acknowledged is there, `integrity_check` is `ok`, and writes
/// work. Skipped without loop devices or ext4's `trigger_fs_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl10_sqlite_volume_read_only_refuses_writes_serves_reads_and_recovers() {
    let test = "fl10_read_only";
    if !root_or_skip(test) {
        return;
    }
    if !Path::new("/dev/loop-control").exists() || !sh("which", &["mkfs.ext4"]).status.success() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: CI needs loop devices and mkfs.ext4"
        );
        eprintln!("skipped {test}: no loop devices or no mkfs.ext4");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sqlite-issuer");
    let image = dir.path().join("volume.img");
    let mut mount = Some(Mount::ext4(&image, &data));
    let device = mount.as_ref().unwrap().device();
    let trigger = PathBuf::from(format!(
        "/sys/fs/ext4/{}/trigger_fs_error",
        Path::new(&device).file_name().unwrap().to_string_lossy()
    ));
    if !trigger.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: {} missing",
            trigger.display()
        );
        eprintln!("skipped {test}: {} missing", trigger.display());
        return;
    }
    let (port, metrics) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{port}");
    let mut issuer: Service = issuer_service(dir.path(), "sqlite-issuer", &url, port, metrics, None, None, "");
    tokio::task::block_in_place(|| {
        bootstrap(&issuer);
        issuer.start();
    });
    let mut probe = Probe::new(&url).await;
    probe.before(20).await;
    std::fs::write(&trigger, "1").unwrap();
    let options = mount.as_ref().unwrap().options();
    assert!(
        options.starts_with("ro") || options.contains("emergency_ro"),
        "{options}"
    );
    probe.rec.fault("volume read-only");
    let seen = probe.while_refusing("ro").await;
    // Recovery of a volume the kernel made read-only: a remount.
    let back = Instant::now();
    tokio::task::block_in_place(|| issuer.stop());
    drop(mount.take());
    let fsck = sh("e2fsck", &["-f", "-y", image.to_str().unwrap()]);
    // 0: clean, 1: errors corrected (the triggered error's flag).
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let _remounted = Mount::ext4_existing(&image, &data);
    let integrity_before_start = integrity(&data.join("keybound.db"));
    tokio::task::block_in_place(|| issuer.start());
    probe.rec.fault("volume remounted read-write, issuer started");
    let restart = back.elapsed();
    let recovery = probe.recovered("after-ro").await;
    let report = probe.verdict(test).await;
    eprintln!(
        "{test}: mount options {options}; {seen:?}; stop, fsck, mount and start {} ms, then first write {} ms; \
         integrity {integrity_before_start:?}",
        restart.as_millis(),
        recovery.as_millis()
    );
    assert_eq!(integrity_before_start, "ok");
    assert!(report.figure("writes_acknowledged") >= 24, "{}", report.summary());
    assert_eq!(report.figure("writes_lost"), 0);
}

impl Mount {
    /// Mounts an existing ext4 image again (after `e2fsck`).
    fn ext4_existing(image: &Path, path: &Path) -> Mount {
        sh_ok(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                image.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        );
        Mount { path: path.to_owned() }
    }
}

/// FL-10 on PostgreSQL: the issuer's database switched read-only
/// (`ALTER DATABASE … SET default_transaction_read_only = on`, which new
/// connections see; the issuer's pooled connections are ended so that its
/// pool opens new ones). Same 503 code for writes, reads go on, `/readyz`
/// stays 200; switched back (and the connections ended again), writes work
/// with no restart of the issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl10_postgres_read_only_database_refuses_writes_serves_reads_and_recovers() {
    let test = "fl10_postgres";
    let Some(db) = PgDatabase::create(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    crate::common::write_secret(&dir.path().join("root.key"), &[7u8; 32]);
    let (port, metrics) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{port}");
    let mut issuer = issuer_service(dir.path(), "pg-issuer", &url, port, metrics, Some(&db.url), None, "");
    tokio::task::block_in_place(|| {
        bootstrap(&issuer);
        issuer.start();
    });
    let mut probe = Probe::new(&url).await;
    probe.before(20).await;
    let end_connections = format!(
        "SELECT COUNT(pg_terminate_backend(pid))::text FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name
    );
    let base = std::env::var("KEYBOUND_TEST_POSTGRES_URL").unwrap();
    tokio::task::block_in_place(|| {
        db.exec(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            db.name
        ));
        query_text(&base, &end_connections)
    });
    probe.rec.fault("database read-only");
    let seen = probe.while_refusing("pg-ro").await;
    tokio::task::block_in_place(|| {
        run_sql(
            &base,
            &format!("ALTER DATABASE {} SET default_transaction_read_only = off", db.name),
        );
        query_text(&base, &end_connections)
    });
    probe.rec.fault("database read-write");
    let recovery = probe.recovered("pg-after").await;
    let report = probe.verdict(test).await;
    eprintln!(
        "{test}: {seen:?}; first write {} ms after the switch back",
        recovery.as_millis()
    );
    assert!(report.figure("writes_acknowledged") >= 24, "{}", report.summary());
    assert_eq!(report.figure("writes_lost"), 0);
    tokio::task::block_in_place(|| issuer.stop());
}
