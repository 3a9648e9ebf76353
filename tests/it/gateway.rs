//! `keybound gateway` (spec/gateway.md) with real components: a real
//! issuer on loopback, the real `keybound gateway` process, a Python WSGI
//! upstream that checks the identity with the code spec/gateway.md §4.2
//! shows (extracted from the spec, so the documented code is what runs),
//! and a real nginx doing `auth_request` against the forward-auth mode.
#![cfg(all(feature = "cli", feature = "gateway", target_os = "linux"))]

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keybound::client::{Client, Scope};
use keybound::encoding::b64url_encode;
use keybound::issuer::loopback::{LoopbackIssuer, PROJECT, USER, World};
use keybound::key::{Algorithm, SigningKey};
use keybound::proof::ProofBuilder;
use keybound::token::Token;
use keybound::verify::{Clock, SystemClock};
use serde_json::Value;

use crate::common;
use crate::common::deployment::http_get as get;
use crate::common::{bin, free_port};

const ADMIN_PASSWORD: &str = "gateway admin password";
const PASSWORD: &str = "gateway user password";
const SECRET: &[u8] = b"a shared identity secret of 32+ bytes";

fn wait_port(port: u16, child: &mut Child, log: &Arc<Mutex<String>>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited ({status}): {}", log.lock().unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "port {port} never opened: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process with its stderr collected; killed on drop.
struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(mut command: Command, port: u16) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        wait_port(port, &mut child, &log);
        Proc { child, log }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WSGI upstream on `port` (wsgiref): answers JSON with what it was sent
/// and the identity `keybound_identity` accepted, 401 when it refused it;
/// `/stream` answers in chunks.
fn python_upstream(dir: &Path, port: u16) -> Option<Proc> {
    let script = dir.join("upstream.py");
    let secret_file = dir.join("identity.secret");
    common::write_secret(&secret_file, SECRET);
    let program = r#"
import json, sys
from wsgiref.simple_server import make_server, WSGIRequestHandler
SECRET = open(SECRET_FILE, 'rb').read()

class Quiet(WSGIRequestHandler):
    def log_message(self, *a):
        pass

def app(environ, start):
    identity = keybound_identity(environ, SECRET)
    if environ['PATH_INFO'] == '/stream' and identity:
        start('200 OK', [('Content-Type', 'text/plain')])
        return (b'chunk%d;' % i for i in range(50))
    size = int(environ.get('CONTENT_LENGTH') or 0)
    body = environ['wsgi.input'].read(size) if size else b''
    seen = {k[5:].lower().replace('_', '-'): v for k, v in environ.items() if k.startswith('HTTP_')}
    answer = json.dumps({'identity': identity, 'headers': seen, 'method': environ['REQUEST_METHOD'], 'body': body.decode()}).encode()
    start('200 OK' if identity else '401 Unauthorized', [('Content-Type', 'application/json')])
    return [answer]

make_server('127.0.0.1', PORT, app, handler_class=Quiet).serve_forever()
"#;
    let program = program
        .replace("SECRET_FILE", &format!("{:?}", secret_file.to_str().unwrap()))
        .replace("PORT", &port.to_string());
    std::fs::write(&script, format!("{}\n{program}", common::documented_python_check())).unwrap();
    let mut command = Command::new("python3");
    command.arg(&script);
    match Command::new("python3").arg("--version").output() {
        Ok(_) => Some(Proc::spawn(command, port)),
        Err(e) if std::env::var_os("CI").is_some() => panic!("CI must have python3: {e}"),
        Err(e) => {
            eprintln!("skipped: no python3 ({e})");
            None
        }
    }
}

/// `keybound gateway MODE` with `args`, listening on `port` (ops on `ops`).
fn gateway(mode: &str, issuer: &str, secret_file: &Path, port: u16, ops: u16, args: &[&str]) -> Proc {
    let mut command = Command::new(bin());
    command
        .args(["gateway", mode, "--issuer", issuer, "--identity-secret-file"])
        .arg(secret_file)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ops-listen",
            &format!("127.0.0.1:{ops}"),
        ])
        .args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYBOUND_GATEWAY_") {
            command.env_remove(name);
        }
    }
    let proc = Proc::spawn(command, port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(ops, "/readyz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "gateway never ready: {}",
            proc.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    proc
}

/// An issuer with the loopback world whose service is `external`, and its
/// user logged in.
async fn issuer_and_user(external: &str) -> (LoopbackIssuer, tempfile::TempDir, Client) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (issuer, dir) = common::start_issuer(ADMIN_PASSWORD, clock, |_| {}).await;
    let admin = issuer.admin(ADMIN_PASSWORD).await.unwrap();
    issuer
        .create_world(
            &admin,
            &World {
                password: PASSWORD,
                services: &[external, "https://other.example"],
            },
        )
        .await
        .unwrap();
    let user = Client::new(issuer.url(), SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
    user.login_password(USER, PASSWORD, None).await.unwrap();
    (issuer, dir, user)
}

/// `Authorization` and `KB-Proof` for `method url` with `body`.
fn credentials(user: &Client, token: &Token, method: &str, url: &str, body: &[u8]) -> [(String, String); 2] {
    let proof = ProofBuilder::new(method, url, token.as_bytes(), body, SystemClock.now())
        .unwrap()
        .sign(user.key())
        .unwrap();
    [
        ("authorization".into(), format!("KB {}", token.to_base64url())),
        ("kb-proof".into(), b64url_encode(&proof.into_bytes())),
    ]
}

struct Answer {
    status: u16,
    code: Option<String>,
    json: Value,
    text: String,
    content_length: Option<String>,
    /// The answer's HTTP version and `Transfer-Encoding`.
    framing: (reqwest::Version, Option<String>),
}

async fn send(method: &str, url: &str, headers: &[(String, String)], body: &[u8]) -> Answer {
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (code, content_length) = (header("kb-error"), header("content-length"));
    let framing = (response.version(), header("transfer-encoding"));
    let text = response.text().await.unwrap();
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let code = code.or_else(|| json["code"].as_str().map(str::to_owned));
    Answer {
        status,
        code,
        json,
        text,
        content_length,
        framing,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_verified_requests_with_a_checked_identity_and_refuses_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, ops, upstream_port) = (free_port(), free_port(), free_port());
    let external = format!("http://127.0.0.1:{port}");
    let Some(_upstream) = python_upstream(tmp.path(), upstream_port) else {
        return;
    };
    let (issuer, _dir, user) = issuer_and_user(&external).await;
    let secret_file = tmp.path().join("identity.secret");
    let upstream_url = format!("http://127.0.0.1:{upstream_port}");
    let (issuer_url, external2) = (issuer.url().to_owned(), external.clone());
    let _gateway = tokio::task::spawn_blocking(move || {
        gateway(
            "proxy",
            &issuer_url,
            &secret_file,
            port,
            ops,
            &[
                "--external-url",
                &external2,
                "--upstream",
                &upstream_url,
                "--max-body",
                "4096",
            ],
        )
    })
    .await
    .unwrap();
    let scope = Scope::new(&external).project(PROJECT);
    let token = user.service_token(&scope).await.unwrap();

    // A verified request reaches the upstream, which checks the identity
    // with the documented Python code; credentials are not forwarded, and
    // identity headers the client sent are replaced.
    let url = format!("{external}/v2/servers?limit=2");
    let mut headers = credentials(&user, &token, "GET", &url, b"").to_vec();
    headers.push(("x-keybound-subject".into(), "admin@default".into()));
    headers.push(("x-keybound-roles".into(), "admin".into()));
    let ok = send("GET", &url, &headers, b"").await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let identity = &ok.json["identity"];
    assert_eq!(identity["subject"], USER, "{}", ok.text);
    assert_eq!(identity["roles"], "member");
    assert_eq!(identity["project"], PROJECT);
    assert_eq!(identity["proof"], "proof");
    assert_eq!(identity["issuer"], issuer.url());
    let seen = &ok.json["headers"];
    assert!(
        seen.get("authorization").is_none() && seen.get("kb-proof").is_none(),
        "{seen}"
    );
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    // The upstream's length passes back with its body (no chunked answer).
    assert_eq!(ok.content_length, Some(ok.text.len().to_string()));

    // The same proof again: a replay.
    let replay = send("GET", &url, &headers, b"").await;
    assert_eq!((replay.status, replay.code.as_deref()), (401, Some("replay.detected")));

    // A body goes through, hashed; another body under the same proof does not.
    let posted = format!("{external}/v2/servers");
    let body = br#"{"name":"vm1"}"#;
    let ok = send(
        "POST",
        &posted,
        &credentials(&user, &token, "POST", &posted, body),
        body,
    )
    .await;
    assert_eq!(
        (ok.status, ok.json["body"].as_str()),
        (200, Some(r#"{"name":"vm1"}"#)),
        "{}",
        ok.text
    );
    let tampered = send(
        "POST",
        &posted,
        &credentials(&user, &token, "POST", &posted, body),
        br#"{"name":"vm2"}"#,
    )
    .await;
    assert_eq!(
        (tampered.status, tampered.code.as_deref()),
        (401, Some("proof.body_mismatch"))
    );
    let big = vec![b'x'; 5000];
    let too_big = send(
        "POST",
        &posted,
        &credentials(&user, &token, "POST", &posted, &big),
        &big,
    )
    .await;
    assert_eq!(
        (too_big.status, too_big.code.as_deref()),
        (413, Some("http.body_too_large"))
    );

    // A proof for another URI, and no token at all.
    let other = send(
        "GET",
        &format!("{external}/v2/images"),
        &credentials(&user, &token, "GET", &url, b""),
        b"",
    )
    .await;
    assert_eq!((other.status, other.code.as_deref()), (401, Some("proof.htu_mismatch")));
    let anonymous = send("GET", &url, &[], b"").await;
    assert_eq!(
        (anonymous.status, anonymous.code.as_deref()),
        (401, Some("http.token_missing"))
    );

    // Streaming answers pass through whole.
    let stream = format!("{external}/stream");
    let streamed = send("GET", &stream, &credentials(&user, &token, "GET", &stream, b""), b"").await;
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.text, (0..50).map(|i| format!("chunk{i};")).collect::<String>());
    assert_eq!(streamed.content_length, None, "an answer of unknown length streams");
    // wsgiref speaks HTTP/1.0 and ends the body by closing; the client still
    // gets HTTP/1.1, chunked.
    assert_eq!(
        streamed.framing,
        (reqwest::Version::HTTP_11, Some("chunked".to_owned()))
    );

    // The upstream reached directly with forged identity headers refuses:
    // the documented check fails closed.
    let forged = send(
        "GET",
        &format!("http://127.0.0.1:{upstream_port}/v2/servers"),
        &[
            ("x-keybound-subject".into(), "admin@default".into()),
            ("x-keybound-identity".into(), "v1 t=1 mac=AAAA".into()),
        ],
        b"",
    )
    .await;
    assert_eq!(forged.status, 401);

    // The metrics count every outcome by code.
    let (status, metrics) = get(ops, "/metrics");
    assert_eq!(status, 200);
    for outcome in [
        "ok",
        "replay.detected",
        "proof.body_mismatch",
        "proof.htu_mismatch",
        "http.token_missing",
    ] {
        assert!(
            metrics.contains(&format!("keybound_verifications_total{{outcome=\"{outcome}\"}}")),
            "{outcome}: {metrics}"
        );
    }
    assert!(metrics.contains("keybound_key_set_age_seconds{issuer="), "{metrics}");
}

/// A proxy gateway in front of `upstream` (more flags in `args`), with its
/// issuer and the user's token for it.
struct ProxyFront {
    proc: Proc,
    external: String,
    user: Client,
    token: Token,
    _issuer: (LoopbackIssuer, tempfile::TempDir, tempfile::TempDir),
}

impl ProxyFront {
    async fn start(upstream: &str, args: &[&str]) -> ProxyFront {
        let tmp = tempfile::tempdir().unwrap();
        let (port, ops) = (free_port(), free_port());
        let external = format!("http://127.0.0.1:{port}");
        let (issuer, dir, user) = issuer_and_user(&external).await;
        let secret_file = tmp.path().join("identity.secret");
        common::write_secret(&secret_file, SECRET);
        let mut flags: Vec<String> = ["--external-url", &external, "--upstream", upstream]
            .iter()
            .map(|s| s.to_string())
            .collect();
        flags.extend(args.iter().map(|s| s.to_string()));
        let issuer_url = issuer.url().to_owned();
        let proc = tokio::task::spawn_blocking(move || {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            gateway("proxy", &issuer_url, &secret_file, port, ops, &flags)
        })
        .await
        .unwrap();
        let token = user
            .service_token(&Scope::new(&external).project(PROJECT))
            .await
            .unwrap();
        ProxyFront {
            proc,
            external,
            user,
            token,
            _issuer: (issuer, dir, tmp),
        }
    }

    /// `GET path` through the gateway with fresh credentials.
    async fn get(&self, path: &str) -> Answer {
        let url = format!("{}{path}", self.external);
        send(
            "GET",
            &url,
            &credentials(&self.user, &self.token, "GET", &url, b""),
            b"",
        )
        .await
    }

    fn log(&self) -> String {
        self.proc.log.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_answers_502_when_the_upstream_is_down() {
    let dead = free_port();
    let front = ProxyFront::start(&format!("http://127.0.0.1:{dead}"), &[]).await;
    let down = front.get("/v2/servers").await;
    assert_eq!(
        (down.status, down.code.as_deref()),
        (502, Some("gateway.upstream_unavailable"))
    );
}

/// An upstream that trickles its response head a byte at a time, never
/// pausing long enough for a read timeout, still gets only
/// `upstream_timeout` in all: 504 `gateway.upstream_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_answers_504_when_the_upstream_trickles() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let trickler = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trickle_addr = trickler.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = trickler.accept().await {
            tokio::spawn(async move {
                // Read the request head first, as a real server would.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(n @ 1..) => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ").await;
                // One byte every 200 ms, for at most 20 s.
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if stream.write_all(b"a").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let front = ProxyFront::start(&format!("http://{trickle_addr}"), &["--upstream-timeout", "1"]).await;
    let started = Instant::now();
    let slow = front.get("/v2/servers").await;
    assert_eq!(
        (slow.status, slow.code.as_deref()),
        (504, Some("gateway.upstream_timeout")),
        "{}",
        front.log()
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} for a 1 s upstream_timeout"
    );
}

/// What a [`raw_upstream`] does with one request: its head, and the stream
/// to answer on; the stream back to keep the connection, none to close it.
type Answerer = Arc<
    dyn Fn(
            String,
            tokio::net::TcpStream,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<tokio::net::TcpStream>> + Send>>
        + Send
        + Sync,
>;

/// A bare HTTP/1.1 upstream on loopback, for what a well-behaved server
/// library would not do: reads each request head (these requests have no
/// body) and lets `answer` write the answer by hand. Its address, and the
/// number of connections it accepted.
async fn raw_upstream(answer: Answerer) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut stream = stream;
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(n @ 1..) => head.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    head.clear();
                    match answer(text, stream).await {
                        Some(kept) => stream = kept,
                        None => return,
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// The proxy keeps its upstream connections alive and reuses them (spec/gateway.md
/// §5): ten requests in a row take one connection. An upstream that closes
/// each connection after its answer, without saying so (no `Connection:
/// close`), costs no request: a closed idle connection is never used, and
/// each request gets its answer on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reuses_upstream_connections_and_survives_an_upstream_closing_them() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::AsyncWriteExt;
    let close_after_answer = Arc::new(AtomicBool::new(false));
    let close = close_after_answer.clone();
    let (upstream_addr, accepted) = raw_upstream(Arc::new(move |_head, mut stream| {
        let close = close.load(Ordering::SeqCst);
        Box::pin(async move {
            let written = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            (written.is_ok() && !close).then_some(stream)
        })
    }))
    .await;
    let front = ProxyFront::start(&format!("http://{upstream_addr}"), &[]).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(front.get("/v2/servers").await.status);
    }
    assert_eq!(statuses, vec![200; 10], "{}", front.log());
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "ten requests in a row, one connection"
    );

    close_after_answer.store(true, Ordering::SeqCst);
    let before = accepted.load(Ordering::SeqCst);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let answer = front.get("/v2/servers").await;
        assert_eq!(answer.text, "ok");
        statuses.push(answer.status);
        // The upstream's close reaches the gateway before the next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(statuses, vec![200; 10], "{}", front.log());
    // The connection of the first phase answers once more, then closes; each
    // next request needs a new one.
    assert_eq!(accepted.load(Ordering::SeqCst) - before, 9);
}

/// A connection whose answer was not read to its end is never used again
/// (spec/gateway.md §5): its unread rest would be taken for the next
/// request's answer. An upstream that stops half way through a body is cut
/// after `upstream_timeout` (the client's body ends early, it never hangs),
/// one that pauses for less each time streams through whole, and a client
/// that drops an answer half way closes its connection; the next request
/// gets exactly its own answer, on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_never_reuses_a_connection_whose_answer_was_not_read_to_the_end() {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    let (upstream_addr, accepted) = raw_upstream(Arc::new(|head: String, mut stream| {
        Box::pin(async move {
            let written = if head.starts_with("GET /stall ") {
                // Half a body, then nothing for 3 s, then the rest.
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
                    .await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                stream.write_all(b"world").await
            } else if head.starts_with("GET /pauses ") {
                // Chunked, three pieces 600 ms apart: each pause under the
                // 1 s upstream_timeout, all of them together over it.
                let mut result = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                for piece in [&b"3\r\none\r\n"[..], b"3\r\ntwo\r\n", b"5\r\nthree\r\n0\r\n\r\n"] {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    result = result.and(stream.write_all(piece).await);
                }
                result
            } else if head.starts_with("GET /big ") {
                // 64 MiB: more than the sockets between here and the client
                // buffer, so the gateway cannot have read it all when the
                // client drops it.
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n")
                    .await;
                let chunk = vec![b'x'; 64 * 1024];
                let mut result = Ok(());
                for _ in 0..1024 {
                    result = stream.write_all(&chunk).await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            } else {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
            };
            written.is_ok().then_some(stream)
        })
    }))
    .await;
    let front = ProxyFront::start(&format!("http://{upstream_addr}"), &["--upstream-timeout", "1"]).await;
    let request = |path: &str| {
        let url = format!("{}{path}", front.external);
        let mut request = reqwest::Client::new().get(&url);
        for (name, value) in credentials(&front.user, &front.token, "GET", &url, b"") {
            request = request.header(name, value);
        }
        request
    };
    assert_eq!(front.get("/ok").await.text, "ok", "{}", front.log());
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // Stalled half way: the head and "hello" pass, then the body is cut.
    let started = Instant::now();
    let stalled = request("/stall").send().await.unwrap();
    assert_eq!(stalled.status(), 200);
    let body = stalled.bytes().await;
    let took = started.elapsed();
    assert!(body.is_err(), "a cut body must not look complete: {body:?}");
    assert!(
        took < Duration::from_millis(2800),
        "cut after {took:?}, upstream_timeout 1 s"
    );
    assert_eq!(front.get("/ok").await.text, "ok", "{}", front.log());
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the stalled connection is not reused"
    );

    // Pauses shorter than upstream_timeout, longer than it together: the
    // whole body streams through, and its connection is reused.
    let started = Instant::now();
    let paused = front.get("/pauses").await;
    assert_eq!(
        (paused.status, paused.text.as_str()),
        (200, "onetwothree"),
        "{}",
        front.log()
    );
    assert!(started.elapsed() >= Duration::from_millis(1800));
    assert_eq!(front.get("/ok").await.text, "ok");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the paused answer was read to its end"
    );

    // Dropped half way by the client.
    let mut big = request("/big").send().await.unwrap();
    assert_eq!(big.status(), 200);
    assert!(big.chunk().await.unwrap().is_some_and(|c| !c.is_empty()));
    drop(big);
    // The drop reaches the gateway, which drops its side.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let answer = front.get("/ok").await;
        assert_eq!((answer.status, answer.text.as_str()), (200, "ok"), "{}", front.log());
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "the dropped answer's connection is not reused: {}",
        front.log()
    );
}

#[test]
fn gateway_settings_are_refused_with_their_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let short = tmp.path().join("short.secret");
    common::write_secret(&short, b"too short");
    let readable = tmp.path().join("readable.secret");
    std::fs::write(&readable, SECRET).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let run = |args: &[&str]| {
        let out = Command::new(bin()).args(args).stdin(Stdio::null()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (status, stderr) = run(&[
        "gateway",
        "proxy",
        "--issuer",
        "http://127.0.0.1:1",
        "--upstream",
        "http://127.0.0.1:2",
    ]);
    assert_eq!(status, Some(2));
    assert!(
        stderr.contains("gateway.config") && stderr.contains("external_url"),
        "{stderr}"
    );
    let (status, stderr) = run(&[
        "gateway",
        "proxy",
        "--external-url",
        "http://127.0.0.1:3",
        "--issuer",
        "http://127.0.0.1:1",
        "--upstream",
        "http://127.0.0.1:2/prefix",
        "--identity-secret-file",
        short.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(2));
    assert!(stderr.contains("without a path"), "{stderr}");
    let (status, stderr) = run(&[
        "gateway",
        "proxy",
        "--external-url",
        "http://127.0.0.1:3",
        "--issuer",
        "http://127.0.0.1:1",
        "--upstream",
        "http://127.0.0.1:2",
        "--identity-secret-file",
        short.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(2));
    assert!(stderr.contains("at least 32"), "{stderr}");
    let (status, stderr) = run(&[
        "gateway",
        "proxy",
        "--external-url",
        "http://127.0.0.1:3",
        "--issuer",
        "http://127.0.0.1:1",
        "--upstream",
        "http://127.0.0.1:2",
        "--identity-secret-file",
        readable.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(2));
    assert!(
        stderr.contains("gateway.config") && stderr.contains("mode 644") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

/// nginx with `auth_request` against `keybound gateway auth`, as in spec/gateway.md §3.
fn nginx(dir: &Path, port: u16, auth_port: u16, upstream_port: u16) -> Option<Proc> {
    if Command::new("nginx").arg("-v").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have nginx (.ci/run installs it)"
        );
        eprintln!("skipped: no nginx");
        return None;
    }
    let names = [
        "subject", "domain", "project", "roles", "trust", "actors", "issuer", "expires", "key", "proof", "identity",
    ];
    let set: String = names
        .iter()
        .map(|n| format!("        auth_request_set $kb_{n} $upstream_http_x_keybound_{n};\n        proxy_set_header X-Keybound-{n} $kb_{n};\n"))
        .collect();
    let d = dir.display();
    let config = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
events {{ worker_connections 64; }}\n\
http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
    server {{\n        listen 127.0.0.1:{port};\n\
        location = /_keybound {{\n            internal;\n            proxy_pass http://127.0.0.1:{auth_port};\n\
            proxy_pass_request_body off;\n            proxy_set_header Content-Length \"\";\n\
            proxy_set_header X-Original-Method $request_method;\n            proxy_set_header X-Original-URI $request_uri;\n\
            proxy_set_header X-Original-Content-Length $content_length;\n\
            proxy_set_header X-Original-Transfer-Encoding $http_transfer_encoding;\n        }}\n\
        location / {{\n            auth_request /_keybound;\n            auth_request_set $kb_error $upstream_http_kb_error;\n\
            add_header KB-Error $kb_error always;\n\
            auth_request_set $kb_nonce $upstream_http_kb_nonce;\n            add_header KB-Nonce $kb_nonce always;\n{set}\
            proxy_set_header Authorization \"\";\n            proxy_set_header KB-Proof \"\";\n\
            proxy_pass http://127.0.0.1:{upstream_port};\n        }}\n    }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new("nginx");
    command
        .args(["-p"])
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .args(["-e"])
        .arg(dir.join("error.log"));
    Some(Proc::spawn(command, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_behind_a_real_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    let (nginx_port, auth_port, ops, upstream_port) = (free_port(), free_port(), free_port(), free_port());
    let external = format!("http://127.0.0.1:{nginx_port}");
    let Some(_upstream) = python_upstream(tmp.path(), upstream_port) else {
        return;
    };
    let (issuer, _dir, user) = issuer_and_user(&external).await;
    let secret_file = tmp.path().join("identity.secret");
    let (issuer_url, external2) = (issuer.url().to_owned(), external.clone());
    let _gateway = tokio::task::spawn_blocking(move || {
        gateway(
            "auth",
            &issuer_url,
            &secret_file,
            auth_port,
            ops,
            &["--external-url", &external2],
        )
    })
    .await
    .unwrap();
    let Some(_nginx) = nginx(tmp.path(), nginx_port, auth_port, upstream_port) else {
        return;
    };
    let token = user
        .service_token(&Scope::new(&external).project(PROJECT))
        .await
        .unwrap();

    let url = format!("{external}/v2/servers?limit=2");
    let headers = credentials(&user, &token, "GET", &url, b"");
    let ok = send("GET", &url, &headers, b"").await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json["identity"]["subject"], USER, "{}", ok.text);
    assert_eq!(ok.json["identity"]["roles"], "member");
    assert!(ok.json["headers"].get("kb-proof").is_none(), "{}", ok.text);

    let replay = send("GET", &url, &headers, b"").await;
    assert_eq!((replay.status, replay.code.as_deref()), (401, Some("replay.detected")));
    let wrong_uri = send(
        "GET",
        &format!("{external}/v2/images"),
        &credentials(&user, &token, "GET", &url, b""),
        b"",
    )
    .await;
    assert_eq!(
        (wrong_uri.status, wrong_uri.code.as_deref()),
        (401, Some("proof.htu_mismatch"))
    );
    let posted = format!("{external}/v2/servers");
    let body = br#"{"name":"vm1"}"#;
    let with_body = send(
        "POST",
        &posted,
        &credentials(&user, &token, "POST", &posted, body),
        body,
    )
    .await;
    assert_eq!(
        (with_body.status, with_body.code.as_deref()),
        (403, Some("gateway.body_not_forwarded"))
    );

    // The endpoint itself: headers it needs, and peers it trusts.
    let direct = send("GET", &format!("http://127.0.0.1:{auth_port}/"), &headers, b"").await;
    assert_eq!(
        (direct.status, direct.code.as_deref()),
        (400, Some("gateway.original_missing"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_refuses_peers_outside_trusted_forwarders() {
    let tmp = tempfile::tempdir().unwrap();
    let (auth_port, ops) = (free_port(), free_port());
    let external = "http://127.0.0.1:9".to_owned();
    let (issuer, _dir, user) = issuer_and_user(&external).await;
    let secret_file = tmp.path().join("identity.secret");
    common::write_secret(&secret_file, SECRET);
    let issuer_url = issuer.url().to_owned();
    let external2 = external.clone();
    let _gateway = tokio::task::spawn_blocking(move || {
        gateway(
            "auth",
            &issuer_url,
            &secret_file,
            auth_port,
            ops,
            &["--external-url", &external2, "--trusted-forwarders", "10.0.0.0/8"],
        )
    })
    .await
    .unwrap();
    let token = user
        .service_token(&Scope::new(&external).project(PROJECT))
        .await
        .unwrap();
    let url = format!("{external}/v2/servers");
    let mut headers = credentials(&user, &token, "GET", &url, b"").to_vec();
    headers.push(("x-original-method".into(), "GET".into()));
    headers.push(("x-original-uri".into(), "/v2/servers".into()));
    let refused = send("GET", &format!("http://127.0.0.1:{auth_port}/"), &headers, b"").await;
    assert_eq!(
        (refused.status, refused.code.as_deref()),
        (403, Some("gateway.untrusted_forwarder"))
    );
}

/// Two proxy replicas behind one external URL share a Redis replay store:
/// a proof accepted by one is a replay at the other (spec/gateway.md §7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_refuse_a_replay_sent_to_the_other() {
    let Ok(redis) = std::env::var("KEYBOUND_TEST_REDIS_URL") else {
        assert!(std::env::var_os("CI").is_none(), "CI sets KEYBOUND_TEST_REDIS_URL");
        eprintln!("skipped: KEYBOUND_TEST_REDIS_URL is not set");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, ops_one, ops_two, upstream_port) = (free_port(), free_port(), free_port(), free_port(), free_port());
    // The balancer's address: what clients sign; the replicas listen behind it.
    let external = "https://nova.example".to_owned();
    let Some(_upstream) = python_upstream(tmp.path(), upstream_port) else {
        return;
    };
    let (issuer, _dir, user) = issuer_and_user(&external).await;
    let secret_file = tmp.path().join("identity.secret");
    let mut replicas = Vec::new();
    for (port, ops) in [(one, ops_one), (two, ops_two)] {
        let (issuer_url, external, secret_file, redis) = (
            issuer.url().to_owned(),
            external.clone(),
            secret_file.clone(),
            redis.clone(),
        );
        let upstream = format!("http://127.0.0.1:{upstream_port}");
        replicas.push(
            tokio::task::spawn_blocking(move || {
                gateway(
                    "proxy",
                    &issuer_url,
                    &secret_file,
                    port,
                    ops,
                    &[
                        "--external-url",
                        &external,
                        "--upstream",
                        &upstream,
                        "--replay-redis-url",
                        &redis,
                    ],
                )
            })
            .await
            .unwrap(),
        );
    }
    let token = user
        .service_token(&Scope::new(&external).project(PROJECT))
        .await
        .unwrap();
    let signed = format!("{external}/v2/servers");
    let headers = credentials(&user, &token, "GET", &signed, b"");
    let first = send("GET", &format!("http://127.0.0.1:{one}/v2/servers"), &headers, b"").await;
    assert_eq!(first.status, 200, "{}", first.text);
    let again = send("GET", &format!("http://127.0.0.1:{two}/v2/servers"), &headers, b"").await;
    assert_eq!((again.status, again.code.as_deref()), (401, Some("replay.detected")));
}

/// Everything the library's layer accepts or refuses (the shared table,
/// tests/it/common/binding_cases.rs), the gateway accepts or refuses alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binding_table_holds_through_the_gateway() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, ops, upstream_port) = (free_port(), free_port(), free_port());
    let external = format!("http://127.0.0.1:{port}");
    let Some(_upstream) = python_upstream(tmp.path(), upstream_port) else {
        return;
    };
    let (issuer, _dir, user) = issuer_and_user(&external).await;
    let secret_file = tmp.path().join("identity.secret");
    let (issuer_url, external2) = (issuer.url().to_owned(), external.clone());
    let upstream = format!("http://127.0.0.1:{upstream_port}");
    let _gateway = tokio::task::spawn_blocking(move || {
        gateway(
            "proxy",
            &issuer_url,
            &secret_file,
            port,
            ops,
            &[
                "--external-url",
                &external2,
                "--upstream",
                &upstream,
                "--max-body",
                "1024",
            ],
        )
    })
    .await
    .unwrap();
    let token = user
        .service_token(&Scope::new(&external).project(PROJECT))
        .await
        .unwrap();
    let other = user
        .service_token(&Scope::new("https://other.example").project(PROJECT))
        .await
        .unwrap();
    let setting = crate::common::binding_cases::Setting {
        client: user.key(),
        token: &token,
        other_audience: &other,
        external: &external,
        now: SystemClock.now(),
        max_body: 1024,
    };
    let problems = crate::common::binding_cases::run(&external, crate::common::binding_cases::cases(&setting)).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A gateway trusting two issuers accepts the tokens of each, checked
/// against that issuer's own key set, and tells the upstream which one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_trusts_several_issuers_each_with_its_own_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, ops, upstream_port) = (free_port(), free_port(), free_port());
    let external = format!("http://127.0.0.1:{port}");
    let Some(_upstream) = python_upstream(tmp.path(), upstream_port) else {
        return;
    };
    let (first, _dir1, first_user) = issuer_and_user(&external).await;
    let (second, _dir2, second_user) = issuer_and_user(&external).await;
    let secret_file = tmp.path().join("identity.secret");
    let issuers = format!("{},{}", first.url(), second.url());
    let external2 = external.clone();
    let upstream = format!("http://127.0.0.1:{upstream_port}");
    let _gateway = tokio::task::spawn_blocking(move || {
        gateway(
            "proxy",
            &issuers,
            &secret_file,
            port,
            ops,
            &["--external-url", &external2, "--upstream", &upstream],
        )
    })
    .await
    .unwrap();
    let url = format!("{external}/v2/servers");
    for (issuer, user) in [(&first, &first_user), (&second, &second_user)] {
        let token = user
            .service_token(&Scope::new(&external).project(PROJECT))
            .await
            .unwrap();
        let ok = send("GET", &url, &credentials(user, &token, "GET", &url, b""), b"").await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        assert_eq!(ok.json["identity"]["issuer"], issuer.url(), "{}", ok.text);
    }
    let (status, metrics) = get(ops, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!("keybound_key_set_age_seconds{{issuer=\"{}\"}}", second.url())),
        "{metrics}"
    );
}

/// The gateway's policy (in enforce, then overridden to permissive) and its
/// bearer-rollout mode, end to end through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_modes_and_bearer_rollout_through_the_gateway() {
    let tmp = tempfile::tempdir().unwrap();
    let upstream_port = free_port();
    let Some(_upstream) = python_upstream(tmp.path(), upstream_port) else {
        return;
    };
    let policy = tmp.path().join("policy.toml");
    std::fs::write(
        &policy,
        "mode = \"enforce\"\n[[rule]]\nmethod = \"GET\"\npath = \"/v2/servers\"\nroles = [\"member\"]\n\
         [[rule]]\nmethod = \"GET\"\npath = \"/v2/admin\"\nroles = [\"admin\"]\n",
    )
    .unwrap();
    for (mode_args, admin_status, bearer) in [
        (vec![], 403, false),
        (vec!["--policy-mode", "permissive"], 200, false),
        (vec!["--bearer-rollout", "true"], 403, true),
    ] {
        let (port, ops) = (free_port(), free_port());
        let external = format!("http://127.0.0.1:{port}");
        let (issuer, _dir, user) = issuer_and_user(&external).await;
        let secret_file = tmp.path().join("identity.secret");
        let (issuer_url, external2, policy) = (issuer.url().to_owned(), external.clone(), policy.clone());
        let upstream = format!("http://127.0.0.1:{upstream_port}");
        let _gateway = tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "--external-url",
                &external2,
                "--upstream",
                &upstream,
                "--policy",
                policy.to_str().unwrap(),
            ];
            args.extend(mode_args.iter().copied());
            gateway("proxy", &issuer_url, &secret_file, port, ops, &args)
        })
        .await
        .unwrap();
        let token = user
            .service_token(&Scope::new(&external).project(PROJECT))
            .await
            .unwrap();
        let servers = format!("{external}/v2/servers");
        let ok = send("GET", &servers, &credentials(&user, &token, "GET", &servers, b""), b"").await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        let admin = format!("{external}/v2/admin");
        let denied = send("GET", &admin, &credentials(&user, &token, "GET", &admin, b""), b"").await;
        assert_eq!(denied.status, admin_status, "{}", denied.text);
        if admin_status == 403 {
            assert_eq!(denied.code.as_deref(), Some("policy.denied"));
        }
        let token_only = [("authorization".to_owned(), format!("KB {}", token.to_base64url()))];
        let without_proof = send("GET", &servers, &token_only, b"").await;
        if bearer {
            assert_eq!(without_proof.status, 200, "{}", without_proof.text);
            assert_eq!(without_proof.json["identity"]["proof"], "bearer");
        } else {
            assert_eq!(
                (without_proof.status, without_proof.code.as_deref()),
                (401, Some("proof.missing"))
            );
        }
    }
}

/// With `nonce_secret_file`, the gateway asks for a server nonce (http.md
/// §4): a proof without one is refused with `proof.nonce_required` and a
/// `KB-Nonce` to use; the keybound client retries once with it, gets
/// through, and keeps the nonce for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_through_the_gateway() {
    let tmp = tempfile::tempdir().unwrap();
    let upstream_port = free_port();
    let Some(_upstream) = python_upstream(tmp.path(), upstream_port) else {
        return;
    };
    let (port, ops) = (free_port(), free_port());
    let external = format!("http://127.0.0.1:{port}");
    let (issuer, _dir, user) = issuer_and_user(&external).await;
    let secret_file = tmp.path().join("identity.secret");
    let nonce_file = tmp.path().join("nonce.secret");
    common::write_secret(&nonce_file, &[9u8; 32]);
    let (issuer_url, external2, nonce_arg) = (
        issuer.url().to_owned(),
        external.clone(),
        nonce_file.to_str().unwrap().to_owned(),
    );
    let upstream = format!("http://127.0.0.1:{upstream_port}");
    let _gateway = tokio::task::spawn_blocking(move || {
        gateway(
            "proxy",
            &issuer_url,
            &secret_file,
            port,
            ops,
            &[
                "--external-url",
                &external2,
                "--upstream",
                &upstream,
                "--nonce-secret-file",
                &nonce_arg,
            ],
        )
    })
    .await
    .unwrap();
    let scope = Scope::new(&external).project(PROJECT);
    let token = user.service_token(&scope).await.unwrap();
    let url = format!("{external}/v2/servers");

    // A proof without a nonce: refused, with a nonce to use.
    let bare = send("GET", &url, &credentials(&user, &token, "GET", &url, b""), b"").await;
    assert_eq!(bare.status, 401, "{}", bare.text);
    assert_eq!(bare.code.as_deref(), Some("proof.nonce_required"));

    // The client retries once with the nonce and is let through; the
    // upstream saw a checked identity.
    let (response, attempts) = user.get(&url, &scope).send_traced().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(attempts.len(), 2, "one challenge, one retry");
    assert_eq!(attempts[0].status, 401);
    assert!(attempts[0].response_headers.contains_key("kb-nonce"));
    let seen: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(seen["identity"]["proof"], "proof", "{seen}");
    // The nonce is kept for the origin: the next request needs no challenge.
    let (response, attempts) = user.get(&url, &scope).send_traced().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(attempts.len(), 1);
}

/// Forward-auth with server nonces behind a real nginx: the challenge
/// (`WWW-Authenticate` and `KB-Nonce`) reaches the client through nginx as
/// spec/gateway.md §3 configures it, and the keybound client's one retry
/// with the nonce gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_passes_nonce_challenges_through_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    let (nginx_port, auth_port, ops, upstream_port) = (free_port(), free_port(), free_port(), free_port());
    let external = format!("http://127.0.0.1:{nginx_port}");
    let Some(_upstream) = python_upstream(tmp.path(), upstream_port) else {
        return;
    };
    let (issuer, _dir, user) = issuer_and_user(&external).await;
    let secret_file = tmp.path().join("identity.secret");
    let nonce_file = tmp.path().join("nonce.secret");
    common::write_secret(&nonce_file, &[5u8; 32]);
    let (issuer_url, external2, nonce_arg) = (
        issuer.url().to_owned(),
        external.clone(),
        nonce_file.to_str().unwrap().to_owned(),
    );
    let _gateway = tokio::task::spawn_blocking(move || {
        gateway(
            "auth",
            &issuer_url,
            &secret_file,
            auth_port,
            ops,
            &["--external-url", &external2, "--nonce-secret-file", &nonce_arg],
        )
    })
    .await
    .unwrap();
    let Some(_nginx) = nginx(tmp.path(), nginx_port, auth_port, upstream_port) else {
        return;
    };
    let scope = Scope::new(&external).project(PROJECT);
    let url = format!("{external}/v2/servers");
    let (response, attempts) = user.get(&url, &scope).send_traced().await.unwrap();
    assert_eq!(attempts.len(), 2, "one challenge through nginx, one retry");
    assert_eq!(attempts[0].status, 401);
    assert!(
        attempts[0].response_headers.contains_key("kb-nonce"),
        "{:?}",
        attempts[0].response_headers
    );
    assert_eq!(response.status(), 200);
    let seen: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(seen["identity"]["subject"], USER, "{seen}");
}
