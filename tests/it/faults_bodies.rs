//! FL-16 (issue 17, security-catalog.md §4): slow-body and big-body
//! attacks against the real `keybound gateway proxy` process in front of a
//! real upstream that counts what it receives, and against a library-layer
//! service (axum behind `KeyboundLayer`, served by `keybound::http::serve`)
//! whose handler counts its runs. Requests are written byte by byte on raw
//! TCP connections from 127.0.0.1, so the test controls the framing
//! (`Content-Length` or chunked) and the pace; valid traffic meanwhile goes
//! through reqwest on a fresh connection each time. docs/faults.md has the
//! figures; they go to stderr (`--no-capture` shows them).
#![cfg(all(feature = "cli", feature = "gateway", target_os = "linux"))]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keybound::client::{Client, Scope};
use keybound::encoding::b64url_encode;
use keybound::http::{KeyboundLayer, ServeConfig};
use keybound::issuer::loopback::{LoopbackIssuer, PROJECT, USER, World};
use keybound::key::{Algorithm, SigningKey};
use keybound::keyset::{HttpKeys, HttpKeysOptions};
use keybound::proof::ProofBuilder;
use keybound::token::Token;
use keybound::verify::{Clock, SystemClock, TrustedIssuer, VerifiedRequest, Verifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::deployment::{Ready, Service, http_get, long};
use crate::common::{bin, free_port, start_issuer, write_secret};

const ADMIN_PASSWORD: &str = "slow bodies admin password";
const PASSWORD: &str = "slow bodies user password";
const SECRET: &[u8] = b"the slow-body test's identity secret, 32+ bytes";
/// The body cap under test: the default of the gateway and the layer.
const CAP: usize = 1024 * 1024;
/// The body timeout the test configures, in seconds: 3 s, or the default
/// 30 s in the long version (`KEYBOUND_FAULTS_LONG=1`).
fn body_timeout_s() -> u64 {
    if long() { 30 } else { 3 }
}

/// The longest any answer is waited for: the waves of a flood beyond the
/// cap (five body timeouts) and slack.
fn answer_wait() -> Duration {
    Duration::from_secs(7 * body_timeout_s() + 20)
}
const PATH: &str = "/v2/upload";

/// Raises the soft open-file limit to the hard one (the gateway, a child,
/// inherits it) and returns it: each slow connection takes one descriptor
/// here and one in the server.
fn raise_open_files() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write only the struct given.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur
    }
}

/// `VmRSS` or `VmHWM` (peak) of process `pid`, in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A real upstream on loopback (its own thread and runtime, like the one of
/// the deployment) that counts the requests it receives and keeps the size
/// of each body.
struct Upstream {
    port: u16,
    bodies: Arc<Mutex<Vec<usize>>>,
}

impl Upstream {
    fn start() -> Upstream {
        let port = free_port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
                let app = axum::Router::new()
                    .fallback(move |body: Bytes| {
                        let seen = seen.clone();
                        async move {
                            seen.lock().unwrap().push(body.len());
                            "ok\n"
                        }
                    })
                    .layer(axum::extract::DefaultBodyLimit::disable());
                axum::serve(listener, app).await.unwrap();
            });
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "upstream never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Upstream { port, bodies }
    }

    fn received(&self) -> Vec<usize> {
        self.bodies.lock().unwrap().clone()
    }
}

/// What is being attacked: its address, the URL proofs name, how many
/// requests got past it (to the upstream or the handler) and the process
/// to watch (the gateway; the layer runs in the test process).
struct Target {
    name: &'static str,
    port: u16,
    external: String,
    passed: Box<dyn Fn() -> Vec<usize> + Send + Sync>,
    pid: Option<u32>,
}

/// The world both targets verify against: an issuer on loopback, the
/// user's client and a token for each target's audience.
struct Setup {
    issuer: LoopbackIssuer,
    _issuer_dir: tempfile::TempDir,
    user: Client,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start(audiences: &[&str]) -> Setup {
        let (issuer, issuer_dir) = start_issuer(ADMIN_PASSWORD, Arc::new(SystemClock), |_| {}).await;
        let admin = issuer.admin(ADMIN_PASSWORD).await.unwrap();
        issuer
            .create_world(
                &admin,
                &World {
                    password: PASSWORD,
                    services: audiences,
                },
            )
            .await
            .unwrap();
        let user = Client::new(issuer.url(), SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
        user.login_password(USER, PASSWORD, None).await.unwrap();
        Setup {
            issuer,
            _issuer_dir: issuer_dir,
            user,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn token(&self, target: &Target) -> Token {
        self.user
            .service_token(&Scope::new(&target.external).project(PROJECT))
            .await
            .unwrap()
    }

    /// `keybound gateway proxy` on `port` in front of `upstream`, with the
    /// test's body timeout and `extra` flags; ready when `/readyz` is.
    fn gateway(&self, port: u16, upstream: &Upstream, extra: &[&str]) -> Service {
        let secret = self.dir.path().join("identity.secret");
        write_secret(&secret, SECRET);
        let ops = free_port();
        let mut args: Vec<String> = [
            "gateway",
            "proxy",
            "--issuer",
            self.issuer.url(),
            "--external-url",
            &format!("http://127.0.0.1:{port}"),
            "--upstream",
            &format!("http://127.0.0.1:{}", upstream.port),
            "--identity-secret-file",
            &secret.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ops-listen",
            &format!("127.0.0.1:{ops}"),
            "--body-timeout",
            &body_timeout_s().to_string(),
            "--log-level",
            "error",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut gateway = Service::new(
            "gateway",
            bin(),
            args,
            vec![],
            Ready {
                port: ops,
                path: Some("/readyz"),
            },
        );
        gateway.start();
        gateway
    }
}

/// The gateway as a [`Target`].
fn gateway_target(gateway: &Service, port: u16, upstream: &Arc<Upstream>) -> Target {
    let upstream = upstream.clone();
    Target {
        name: "gateway",
        port,
        external: format!("http://127.0.0.1:{port}"),
        passed: Box::new(move || upstream.received()),
        pid: Some(gateway.pid()),
    }
}

/// A library-layer service on `listener` (its own thread and runtime, so
/// the test's connections do not share its workers): the layer with the
/// test's body timeout and the default cap, a handler that keeps the size
/// of each body it is given.
fn layer_target(listener: std::net::TcpListener, issuer: &str) -> Target {
    // std binds with a listen queue of 128; tokio (and so the gateway)
    // with 1,024. A second listen(2) sets it: 1,000 connections at once
    // overflow 128, and a dropped SYN costs a client a second.
    // SAFETY: listen(2) on a socket we own.
    assert_eq!(
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 1024) },
        0
    );
    let port = listener.local_addr().unwrap().port();
    let external = format!("http://127.0.0.1:{port}");
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (seen, url, issuer) = (bodies.clone(), external.clone(), issuer.to_owned());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let keys = HttpKeys::start(
                &format!("{issuer}/.well-known/keybound/keys"),
                HttpKeysOptions::default(),
            )
            .await
            .unwrap();
            let verifier = Verifier::builder(&url, TrustedIssuer::new(&issuer, keys))
                .build()
                .unwrap();
            let layer = KeyboundLayer::new(Arc::new(verifier), &url)
                .unwrap()
                .body_timeout(Duration::from_secs(body_timeout_s()));
            let app = axum::Router::new()
                .fallback(move |_: VerifiedRequest, body: Bytes| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(body.len());
                        "ok\n"
                    }
                })
                .layer(layer);
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            ready_tx.send(()).unwrap();
            keybound::http::serve(listener, app, ServeConfig::default(), std::future::pending()).await;
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    Target {
        name: "layer",
        port,
        external,
        passed: Box::new(move || bodies.lock().unwrap().clone()),
        pid: None,
    }
}

/// How the body goes out.
#[derive(Clone, Copy, Debug)]
enum Framing {
    ContentLength,
    Chunked,
}

/// The request head of `POST PATH` to `target` with `token` and a proof
/// over `body`, framed as `framing` (`Content-Length: announced`).
fn head(target: &Target, token: &Token, key: &SigningKey, body: &[u8], framing: Framing, announced: usize) -> Vec<u8> {
    let url = format!("{}{PATH}", target.external);
    let proof = ProofBuilder::new("POST", &url, token.as_bytes(), body, SystemClock.now())
        .unwrap()
        .sign(key)
        .unwrap();
    let framing = match framing {
        Framing::ContentLength => format!("Content-Length: {announced}\r\n"),
        Framing::Chunked => "Transfer-Encoding: chunked\r\n".to_owned(),
    };
    format!(
        "POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: KB {}\r\nKB-Proof: {}\r\n\
         Content-Type: application/octet-stream\r\n{framing}\r\n",
        target.port,
        token.to_base64url(),
        b64url_encode(&proof.into_bytes())
    )
    .into_bytes()
}

/// An answer read off a raw connection: status, keybound code (`KB-Error`,
/// else the problem's `code`), and whether the server closed the
/// connection after it.
#[derive(Debug, Default)]
struct Answer {
    status: u16,
    code: Option<String>,
    closed: bool,
}

/// Reads one response (head, then a `Content-Length` body) from `reader`,
/// then waits up to `linger` for the server to close the connection.
async fn read_answer(reader: &mut (impl AsyncReadExt + Unpin), linger: Duration) -> Result<Answer, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 65536 {
            return Err("an endless head".into());
        }
        match reader.read(&mut chunk).await {
            Ok(0) => return Err("closed without an answer".into()),
            Err(e) => return Err(format!("{:?} before an answer", e.kind())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length.min(1 << 20) {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let code = header("kb-error").or_else(|| json["code"].as_str().map(str::to_owned));
    // A refused body is not drained: the server must not read what
    // follows as the next request, so it closes.
    let closed = matches!(
        tokio::time::timeout(linger, reader.read(&mut chunk)).await,
        Ok(Ok(0) | Err(_))
    );
    Ok(Answer { status, code, closed })
}

/// One whole request on a raw connection: `head`, then `body` as framed,
/// written in 64 KiB pieces while the answer is read (a server that
/// refuses early may stop reading; write errors are ignored).
async fn raw_request(port: u16, head: Vec<u8>, body: Vec<u8>, framing: Framing) -> Answer {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        writer.write_all(&head).await?;
        for piece in body.chunks(64 * 1024) {
            match framing {
                Framing::ContentLength => writer.write_all(piece).await?,
                Framing::Chunked => {
                    writer.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
                    writer.write_all(piece).await?;
                    writer.write_all(b"\r\n").await?;
                }
            }
        }
        if let Framing::Chunked = framing {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        // Keep the write half open until the answer is read.
        tokio::time::sleep(Duration::from_secs(5)).await;
        std::io::Result::Ok(())
    });
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        read_answer(&mut reader, Duration::from_secs(2)),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    write.abort();
    answer
}

/// A slow-body connection's outcome.
#[derive(Debug)]
struct Slow {
    /// The answer, or why there was none.
    answer: Result<Answer, String>,
    /// Whether it trickled its body (else it stalled).
    trickle: bool,
    /// From the end of the head to the answer.
    after_ms: u64,
}

/// Opens a connection, sends a valid head announcing a body of
/// `body.len()` bytes, then sends nothing more (`trickle` false) or one
/// byte every 250 ms, and waits (at most [`answer_wait`]) for the answer.
async fn slow_body(port: u16, head: Vec<u8>, body_len: usize, trickle: bool) -> Slow {
    slow_body_paced(port, head, body_len, trickle.then_some(Duration::from_millis(250))).await
}

/// [`slow_body`] with a byte every `pace` (none: stalled).
async fn slow_body_paced(port: u16, head: Vec<u8>, body_len: usize, pace: Option<Duration>) -> Slow {
    let trickle = pace.is_some();
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return Slow {
            answer: Err("cannot connect".into()),
            trickle,
            after_ms: 0,
        };
    };
    let (mut reader, mut writer) = stream.into_split();
    let _ = writer.write_all(&head).await;
    let sent = Instant::now();
    let dripping = tokio::spawn(async move {
        // Bounded: never the whole body, whatever the server does.
        for _ in 0..body_len.saturating_sub(1).min(100_000) {
            let Some(pace) = pace else { break };
            tokio::time::sleep(pace).await;
            if writer.write_all(b"x").await.is_err() {
                break;
            }
        }
        // Keep the connection's write side open until aborted.
        tokio::time::sleep(answer_wait()).await;
        drop(writer);
    });
    let answer = match tokio::time::timeout(answer_wait(), read_answer(&mut reader, Duration::from_secs(2))).await {
        Err(_) => Err("no answer in time".to_owned()),
        Ok(answer) => answer,
    };
    let after_ms = sent.elapsed().as_millis() as u64;
    dripping.abort();
    Slow {
        answer,
        trickle,
        after_ms,
    }
}

/// Valid requests, one at a time on a fresh connection each, until `stop`:
/// (start offset from `t0` in ms, latency in ms, status).
async fn valid_traffic(
    target_external: &str,
    token: &Token,
    user: &SigningKey,
    t0: Instant,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<(u64, u64, u16)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(answer_wait())
        .build()
        .unwrap();
    let url = format!("{target_external}{PATH}");
    let mut out = Vec::new();
    for _ in 0..2000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let body = b"a valid request's body".to_vec();
        let proof = ProofBuilder::new("POST", &url, token.as_bytes(), &body, SystemClock.now())
            .unwrap()
            .sign(user)
            .unwrap();
        let started = Instant::now();
        let status = http
            .post(&url)
            .header("authorization", format!("KB {}", token.to_base64url()))
            .header("kb-proof", b64url_encode(&proof.into_bytes()))
            .body(body)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        out.push((
            (started - t0).as_millis() as u64,
            started.elapsed().as_millis() as u64,
            status,
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

/// The flood's figures.
struct Flood {
    slow: Vec<Slow>,
    valid: Vec<(u64, u64, u16)>,
    /// KiB: RSS before, the peak (VmHWM) during, RSS after.
    rss: Option<(u64, u64, u64)>,
    took_ms: u64,
}

/// `connections` slow-body connections opened at once against `target`
/// (half stalled after the head, half trickling a byte every 250 ms), with
/// valid requests on fresh connections meanwhile, until every slow one has
/// its answer.
async fn flood(target: &Target, setup: &Setup, connections: usize) -> Flood {
    let token = setup.token(target).await;
    let key = setup.user.key();
    let body = vec![b'x'; 1024];
    let heads: Vec<Vec<u8>> = (0..connections)
        .map(|_| head(target, &token, key, &body, Framing::ContentLength, body.len()))
        .collect();
    let rss_before = target.pid.map(|p| {
        // Resets the peak (VmHWM) to the current RSS, so the peak read
        // after is the flood's (root only; else it is the process's).
        let _ = std::fs::write(format!("/proc/{p}/clear_refs"), "5");
        memory_kib(p, "VmRSS")
    });
    let t0 = Instant::now();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let tasks: Vec<_> = heads
        .into_iter()
        .enumerate()
        .map(|(i, head)| tokio::spawn(slow_body(target.port, head, 1024, i % 2 == 1)))
        .collect();
    let slow_done = async {
        let mut slow = Vec::new();
        for task in tasks {
            slow.push(task.await.unwrap());
        }
        stop.store(true, Ordering::Relaxed);
        slow
    };
    let (slow, valid) = tokio::join!(slow_done, valid_traffic(&target.external, &token, key, t0, &stop));
    let took_ms = t0.elapsed().as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = target
        .pid
        .map(|p| (rss_before.unwrap_or(0), memory_kib(p, "VmHWM"), memory_kib(p, "VmRSS")));
    Flood {
        slow,
        valid,
        rss,
        took_ms,
    }
}

/// Percentile `p` (0–100) of `values` (sorted here).
fn percentile(values: &mut [u64], p: usize) -> u64 {
    values.sort_unstable();
    values
        .get((values.len().saturating_sub(1)) * p / 100)
        .copied()
        .unwrap_or(0)
}

/// Everything a flood must show: every slow connection cut at the body
/// timeout with 400 `http.body_unreadable` and closed, nothing of it past
/// the target, every valid request served. `shed` (a flood beyond the
/// connection cap) also allows a slow connection, or a valid one, to be
/// closed unanswered by the cap's eviction, at most that fraction of them
/// (in percent). Returns the problems and a summary line.
fn judge(
    target: &Target,
    flood: &Flood,
    passed_before: usize,
    bound_ms: u64,
    shed: Option<usize>,
) -> (Vec<String>, String) {
    let mut problems = Vec::new();
    let timeout_ms = body_timeout_s() * 1000;
    let mut codes: std::collections::BTreeMap<String, usize> = Default::default();
    let (mut early, mut late, mut open, mut cut, mut unanswered) = (0, 0, 0, 0, 0);
    let mut after: Vec<u64> = Vec::new();
    let expected = "400 http.body_unreadable";
    for slow in &flood.slow {
        let key = match &slow.answer {
            Err(why) => format!("{} ({})", why, if slow.trickle { "trickling" } else { "stalled" }),
            Ok(a) => format!("{} {}", a.status, a.code.as_deref().unwrap_or("-")),
        };
        if key == expected {
            cut += 1;
            after.push(slow.after_ms);
            // The timer starts when the layer begins reading the body,
            // after the head was read and the token verified: never before
            // the head was sent. 100 ms of slack for the timer's granularity.
            if slow.after_ms + 100 < timeout_ms {
                early += 1;
            }
        } else if key.starts_with("closed without an answer") || key.starts_with("ConnectionReset before an answer") {
            // Evicted: closed (a reset when the trickled bytes were unread).
            unanswered += 1;
        }
        *codes.entry(key).or_default() += 1;
        if slow.answer.as_ref().is_ok_and(|a| !a.closed) {
            open += 1;
        }
        late += usize::from(slow.after_ms > bound_ms);
    }
    let allowed_unanswered = shed.map_or(0, |percent| flood.slow.len() * percent / 100);
    if cut + unanswered != flood.slow.len() || unanswered > allowed_unanswered {
        problems.push(format!(
            "{}: slow bodies answered {codes:?}, expected {expected} (and at most {allowed_unanswered} closed \
             unanswered)",
            target.name
        ));
    }
    if early > 0 {
        problems.push(format!(
            "{}: {early} slow bodies cut before the {timeout_ms} ms body timeout",
            target.name
        ));
    }
    if late > 0 {
        problems.push(format!(
            "{}: {late} slow bodies answered after {bound_ms} ms",
            target.name
        ));
    }
    if open > 0 {
        problems.push(format!("{}: {open} connections left open after the 400", target.name));
    }
    let passed = (target.passed)();
    let valid_ok = flood.valid.iter().filter(|(_, _, s)| *s == 200).count();
    // Exactly the valid requests got past the target, and none of them is
    // a slow body (1024 bytes).
    if passed.len() - passed_before != valid_ok || passed[passed_before..].contains(&1024) {
        problems.push(format!(
            "{}: {} requests got past it during the flood, {valid_ok} valid ones accepted (sizes {:?})",
            target.name,
            passed.len() - passed_before,
            &passed[passed_before..]
        ));
    }
    // A valid request closed unanswered (status 0) is the cap's shedding;
    // any other answer than 200 is a failure.
    let valid_unanswered = flood.valid.iter().filter(|(_, _, s)| *s == 0).count();
    let valid_allowed = shed.map_or(0, |percent| flood.valid.len() * percent / 100);
    if valid_ok + valid_unanswered != flood.valid.len() || valid_unanswered > valid_allowed || valid_ok < 5 {
        let refused: Vec<_> = flood.valid.iter().filter(|(_, _, s)| *s != 200).collect();
        problems.push(format!(
            "{}: {valid_ok} of {} valid requests served; refused (start ms, latency ms, status): {refused:?}",
            target.name,
            flood.valid.len()
        ));
    }
    let mut latencies: Vec<u64> = flood.valid.iter().map(|(_, l, _)| *l).collect();
    let (p50, max) = (percentile(&mut latencies, 50), percentile(&mut latencies, 100));
    if max > bound_ms {
        problems.push(format!(
            "{}: a valid request took {max} ms, over {bound_ms} ms",
            target.name
        ));
    }
    let rss = flood.rss.map_or(String::new(), |(b, p, a)| {
        format!(
            "; RSS before {} MiB, peak during {} MiB, after {} MiB",
            b / 1024,
            p / 1024,
            a / 1024
        )
    });
    let summary = format!(
        "{}: {} slow-body connections answered in {} ms ({codes:?}; the 400s after the head: min {} ms, p50 {} ms, max {} ms); \
         {} valid requests meanwhile, {valid_ok} served, {valid_unanswered} closed unanswered, latency p50 {p50} ms, max {max} ms{rss}",
        target.name,
        flood.slow.len(),
        flood.took_ms,
        percentile(&mut after, 0),
        percentile(&mut after, 50),
        percentile(&mut after, 100),
        flood.valid.len(),
    );
    (problems, summary)
}

/// How many slow connections the open-file limit allows: one descriptor
/// each in the test process, and one more for the in-process layer's side.
fn sized_flood(wanted: usize) -> usize {
    let limit = raise_open_files();
    let fits = usize::try_from(limit.saturating_sub(300) / 2).unwrap_or(usize::MAX);
    if fits < wanted {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs an open-file limit of {} (ulimit -n is {limit})",
            wanted * 2 + 300
        );
        eprintln!("open-file limit {limit}: {fits} slow connections instead of {wanted}");
    }
    wanted.min(fits)
}

/// FL-16, slow bodies: 1,000 connections opened at once, each with a valid
/// token and proof and `Content-Length: 1024`, then stalled (half of them)
/// or trickling a byte every 250 ms, against the gateway (body timeout 3 s,
/// the default cap of 1,024 connections) and then the library layer. Every
/// one is cut at the body timeout with 400 `http.body_unreadable` and its
/// connection closed; nothing of them reaches the upstream or the handler;
/// valid requests on fresh connections meanwhile are all served, each
/// faster than the body timeout (a connection waiting for its body is in
/// flight, not idle, but 1,000 stay under the cap). The gateway gets the
/// flood three times: its memory before, at its peak and after each is
/// reported, and the third adds at most half of what the first did (no
/// leak per connection). Then 100 connections with a
/// forged token and a stalled body: refused at once (401, the token is
/// verified before the body is read), without waiting for the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl16_slow_bodies_cut_at_the_body_timeout_while_valid_requests_are_served() {
    let _heavy = crate::common::heavy().await;
    let connections = sized_flood(1000);
    let started = Instant::now();
    let gateway_port = free_port();
    let layer_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let layer_external = format!("http://127.0.0.1:{}", layer_listener.local_addr().unwrap().port());
    let gateway_external = format!("http://127.0.0.1:{gateway_port}");
    let setup = Setup::start(&[&gateway_external, &layer_external]).await;
    let upstream = Arc::new(Upstream::start());
    let gateway = tokio::task::block_in_place(|| setup.gateway(gateway_port, &upstream, &[]));
    let targets = [
        gateway_target(&gateway, gateway_port, &upstream),
        layer_target(layer_listener, setup.issuer.url()),
    ];
    let mut problems = Vec::new();
    let mut lines = Vec::new();
    // (RSS before, peak) of each gateway flood, KiB.
    let mut gateway_rss = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let before = (target.passed)().len();
        let flood = flood(target, &setup, connections).await;
        // Cut at the body timeout (3 s); 5 s of slack for 1,000 answers on
        // two shared cores. Valid requests never wait for it.
        let (p, line) = judge(target, &flood, before, body_timeout_s() * 1000 + 5000, None);
        let mut valid: Vec<u64> = flood.valid.iter().map(|(_, l, _)| *l).collect();
        let max_valid = percentile(&mut valid, 100);
        if max_valid >= body_timeout_s() * 1000 {
            problems.push(format!(
                "{}: a valid request waited {max_valid} ms, as long as the body timeout",
                target.name
            ));
        }
        if let Some((before, peak, _)) = flood.rss {
            // Measured: about 20 MiB for the first 1,000 connections (hyper's
            // buffers and tasks); 128 MiB would mean far more per connection
            // (40 MiB while each trickled byte pinned a read buffer).
            if peak.saturating_sub(before) > 128 * 1024 {
                problems.push(format!(
                    "{}: RSS grew by {} KiB during the flood",
                    target.name,
                    peak - before
                ));
            }
        }
        problems.extend(p);
        lines.push(line);
        if let Some((before, peak, _)) = flood.rss {
            gateway_rss.push((before, peak));
        }
        // The gateway twice more: a leak would grow its peak by as much
        // each time.
        for _ in 0..if i == 0 { 2 } else { 0 } {
            let before = (target.passed)().len();
            let again = self::flood(target, &setup, connections).await;
            let (p, line) = judge(target, &again, before, body_timeout_s() * 1000 + 5000, None);
            problems.extend(p);
            lines.push(format!("again: {line}"));
            if let Some((before, peak, _)) = again.rss {
                gateway_rss.push((before, peak));
            }
        }
    }
    // Bounded: the peak grows less and less (measured: +20, +6, +4 MiB in
    // three floods: the allocator's arenas filling, not a leak), so the
    // third flood adds at most half of what the first did.
    if let [(first_before, first), (_, second), (_, third)] = gateway_rss[..] {
        let (grew_first, grew_third) = (first.saturating_sub(first_before), third.saturating_sub(second));
        if 2 * grew_third > grew_first || third > 256 * 1024 {
            problems.push(format!(
                "gateway: peak RSS {} MiB, then {} MiB, then {} MiB in three floods (from {} MiB)",
                first / 1024,
                second / 1024,
                third / 1024,
                first_before / 1024
            ));
        }
    } else {
        problems.push(format!("gateway: no RSS figures {gateway_rss:?}"));
    }
    // The gateway serves on after the flood.
    let (ready, body) = http_get(gateway.ready.port, "/readyz");
    if ready != 200 {
        problems.push(format!("gateway not ready after the flood: {ready} {body}"));
    }

    // A forged token with a stalled body: refused before the body.
    for target in &targets {
        let before = (target.passed)().len();
        let forged = format!(
            "POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: KB {}\r\nKB-Proof: {}\r\n\
             Content-Length: 1024\r\n\r\n",
            target.port,
            b64url_encode(&[0xa5; 200]),
            b64url_encode(&[0x5a; 100])
        );
        let tasks: Vec<_> = (0..100)
            .map(|_| tokio::spawn(slow_body(target.port, forged.clone().into_bytes(), 1024, false)))
            .collect();
        let mut codes: std::collections::BTreeMap<String, usize> = Default::default();
        let mut slowest = 0;
        for task in tasks {
            let slow = task.await.unwrap();
            slowest = slowest.max(slow.after_ms);
            let key = match slow.answer {
                Err(why) => why,
                Ok(a) => format!("{} {}", a.status, a.code.unwrap_or_default()),
            };
            *codes.entry(key).or_default() += 1;
        }
        lines.push(format!(
            "{}: 100 forged tokens with a stalled body: {codes:?}, slowest answer {slowest} ms",
            target.name
        ));
        if codes.keys().any(|k| !k.starts_with("401 ")) || slowest >= body_timeout_s() * 1000 {
            problems.push(format!(
                "{}: forged tokens with a stalled body answered {codes:?}, slowest {slowest} ms",
                target.name
            ));
        }
        if (target.passed)().len() != before {
            problems.push(format!("{}: a forged request got past it", target.name));
        }
    }
    eprintln!(
        "--- fl16 slow bodies ({} ms)\n{}",
        started.elapsed().as_millis(),
        lines.join("\n")
    );
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), gateway.log());
}

/// FL-16, slow bodies beyond the connection cap: the gateway capped at 200
/// connections, 1,000 slow-body connections. A connection waiting for its
/// body has a request in flight, so the cap cannot evict it: the server
/// holds 200 of them until the body timeout cuts them, and the rest wait in
/// the listen queue, in order, with any valid request behind them. Asserted:
/// every slow body refused — cut with 400 `http.body_unreadable`, or (at
/// most a quarter of them) closed unanswered by the cap's eviction when a
/// wave's burst outran the tasks reading their heads — and nothing of them
/// forwarded; every valid request served (at most a quarter closed
/// unanswered the same way), each within twice ⌈1,000 / 200⌉ body
/// timeouts plus slack. The measured wait is reported (docs/faults.md). Before the
/// eviction spared connections younger than 250 ms (src/http/serve.rs),
/// 800 of the 1,000 and 6 of 15 valid requests were closed unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl16_slow_bodies_beyond_the_connection_cap_delay_valid_requests_by_whole_body_timeouts() {
    let _heavy = crate::common::heavy().await;
    let connections = sized_flood(1000);
    let cap = 200;
    let started = Instant::now();
    let port = free_port();
    let external = format!("http://127.0.0.1:{port}");
    let setup = Setup::start(&[&external]).await;
    let upstream = Arc::new(Upstream::start());
    let gateway =
        tokio::task::block_in_place(|| setup.gateway(port, &upstream, &["--max-connections", &cap.to_string()]));
    let target = gateway_target(&gateway, port, &upstream);
    let before = (target.passed)().len();
    let flood = flood(&target, &setup, connections).await;
    let waves = connections.div_ceil(cap) as u64;
    // Twice the waves: admission past the cap is not first come, first
    // served (a run of the full suite on the 2 shared cores answered 10 of
    // the 1,000 after 20 s, the last at 29.6 s, with ⌈1,000 / 200⌉ = 5
    // waves of 3 s); the bound says every slow body is answered, none hangs.
    let bound = 2 * waves * body_timeout_s() * 1000 + 5000;
    // The cap's eviction may shed a burst's tail (a connection whose head
    // its task had not read in 250 ms): measured 2–12 % of the slow ones,
    // no valid one; 80 % of the slow ones and 6 of 15 valid requests
    // before the eviction spared young connections.
    let (problems, line) = judge(&target, &flood, before, bound, Some(25));
    let starved: Vec<(u64, u64)> = flood
        .valid
        .iter()
        .filter(|(_, l, _)| *l >= body_timeout_s() * 1000)
        .map(|(s, l, _)| (*s, *l))
        .collect();
    eprintln!(
        "--- fl16 beyond the cap ({} ms)\ncap {cap}: {line}\nvalid requests that waited a body timeout or more \
         (start ms, latency ms): {starved:?}",
        started.elapsed().as_millis()
    );
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), gateway.log());
}

/// FL-16, big bodies, against the gateway and the library layer (both at
/// the default cap of 1 MiB): a body of exactly the cap is accepted and
/// reaches the upstream (the handler) whole; one byte more is refused with
/// 413 `http.body_too_large` and never reaches it — announced by
/// `Content-Length` (refused before the body is read) and sent chunked
/// without a length (refused when the read passes the cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl16_bodies_at_the_cap_accepted_one_byte_over_refused_with_413() {
    let _heavy = crate::common::heavy().await;
    let gateway_port = free_port();
    let layer_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let layer_external = format!("http://127.0.0.1:{}", layer_listener.local_addr().unwrap().port());
    let gateway_external = format!("http://127.0.0.1:{gateway_port}");
    let setup = Setup::start(&[&gateway_external, &layer_external]).await;
    let upstream = Arc::new(Upstream::start());
    let gateway = tokio::task::block_in_place(|| setup.gateway(gateway_port, &upstream, &[]));
    let targets = [
        gateway_target(&gateway, gateway_port, &upstream),
        layer_target(layer_listener, setup.issuer.url()),
    ];
    let mut problems = Vec::new();
    let mut lines = Vec::new();
    for target in &targets {
        let token = setup.token(target).await;
        for framing in [Framing::ContentLength, Framing::Chunked] {
            for (size, expect) in [(CAP, (200, None)), (CAP + 1, (413, Some("http.body_too_large")))] {
                let body = vec![b'b'; size];
                let head = head(target, &token, setup.user.key(), &body, framing, size);
                let before = (target.passed)();
                let t = Instant::now();
                let answer = raw_request(target.port, head, body, framing).await;
                let took = t.elapsed().as_millis();
                let after = (target.passed)();
                let new: Vec<usize> = after[before.len()..].to_vec();
                lines.push(format!(
                    "{} {framing:?} {size} bytes: {} {:?}, connection closed after: {} ({took} ms with a 2 s wait for \
                     the close); past it: {new:?}",
                    target.name, answer.status, answer.code, answer.closed
                ));
                let got = (answer.status, answer.code.as_deref());
                if got != expect {
                    problems.push(format!(
                        "{} {framing:?} {size}: expected {expect:?}, got {got:?}",
                        target.name
                    ));
                }
                let expected_past: Vec<usize> = if expect.0 == 200 { vec![size] } else { vec![] };
                if new != expected_past {
                    problems.push(format!(
                        "{} {framing:?} {size}: {new:?} got past it, expected {expected_past:?}",
                        target.name
                    ));
                }
            }
        }
    }
    eprintln!("--- fl16 big bodies\n{}", lines.join("\n"));
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), gateway.log());
}

/// `--body-timeout 0` would refuse every body not in the first read: the
/// gateway refuses the setting (`gateway.config`, exit status 2).
#[test]
fn gateway_refuses_a_body_timeout_of_zero() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("identity.secret");
    write_secret(&secret, SECRET);
    let out = std::process::Command::new(bin())
        .args([
            "gateway",
            "proxy",
            "--issuer",
            "http://127.0.0.1:9",
            "--external-url",
            "http://127.0.0.1:8",
            "--upstream",
            "http://127.0.0.1:7",
            "--identity-secret-file",
        ])
        .arg(&secret)
        .args(["--body-timeout", "0", "--check-config"])
        .env_remove("KEYBOUND_GATEWAY_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("gateway.config") && stderr.contains("body_timeout"),
        "{stderr}"
    );
}

/// FL-16, many small pieces: 20 connections each announcing a 1 MiB body
/// and sending it a byte at a time, a byte every 2 ms, until the body
/// timeout cuts them (some 1,500 pieces each, 30 KB in all). What a server
/// holds for a body must be bounded by its bytes, not by the number of
/// pieces it arrived in: the gateway's peak RSS grows by at most 32 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fl16_a_body_in_many_small_pieces_costs_its_bytes_not_its_pieces() {
    let _heavy = crate::common::heavy().await;
    raise_open_files();
    let port = free_port();
    let external = format!("http://127.0.0.1:{port}");
    let setup = Setup::start(&[&external]).await;
    let upstream = Arc::new(Upstream::start());
    let gateway = tokio::task::block_in_place(|| setup.gateway(port, &upstream, &[]));
    let target = gateway_target(&gateway, port, &upstream);
    let token = setup.token(&target).await;
    let pid = gateway.pid();
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let before = memory_kib(pid, "VmRSS");
    let body = vec![b'x'; CAP];
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let head = head(&target, &token, setup.user.key(), &body, Framing::ContentLength, CAP);
            tokio::spawn(slow_body_paced(port, head, CAP, Some(Duration::from_millis(2))))
        })
        .collect();
    let mut codes: std::collections::BTreeMap<String, usize> = Default::default();
    for task in tasks {
        let slow = task.await.unwrap();
        let key = match slow.answer {
            Err(why) => why,
            Ok(a) => format!("{} {}", a.status, a.code.unwrap_or_default()),
        };
        *codes.entry(key).or_default() += 1;
    }
    let peak = memory_kib(pid, "VmHWM");
    eprintln!(
        "--- fl16 small pieces\n20 bodies a byte every 2 ms: {codes:?}; gateway RSS before {} MiB, peak {} MiB",
        before / 1024,
        peak / 1024
    );
    assert_eq!(codes.get("400 http.body_unreadable"), Some(&20), "{codes:?}");
    assert!(upstream.received().is_empty());
    assert!(
        peak.saturating_sub(before) <= 32 * 1024,
        "peak RSS {} MiB from {} MiB for 30 KB of body pieces",
        peak / 1024,
        before / 1024
    );
}
