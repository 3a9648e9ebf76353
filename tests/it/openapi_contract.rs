//! `spec/openapi.json` against a real issuer on loopback.
//!
//! - The committed document is the one generated from the routes
//!   (`keybound::issuer::openapi::document`), and the live router serves
//!   every documented method of every documented path (every other method
//!   answers 405).
//! - Every documented operation is exercised with a valid request; its status
//!   must be documented for the operation and its body must validate against
//!   the documented schema (JSON Schema 2020-12, the `jsonschema` crate).
//! - Every documented error status that can be provoked cheaply is provoked,
//!   and the problem details are checked: schema, `code` among the codes the
//!   document lists for that response, `status`, `type`, the status the
//!   HTTP layer maps the code to, and the fixed headers.
//! - Request schemas and serde agree: each documented example is accepted,
//!   and an unknown field, a missing required field or a field of the wrong
//!   type is refused with `issuer.bad_request`.
//! - The issuer and client rows of spec/errors.md and the status table of
//!   spec/issuer.md §11 match `Code::step()`, `status_for` and the titles.
//!
//! The tests at the end pin behaviour that once was wrong (regressions).
#![cfg(feature = "issuer")]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keybound::Code;
use keybound::client::{Client, Scope};
use keybound::encoding::{b64url_decode, b64url_encode};
use keybound::issuer::loopback::LoopbackIssuer;
use keybound::issuer::{IssuerConfig, IssuerState};
use keybound::key::{Algorithm, SigningKey};
use keybound::proof::ProofBuilder;
use keybound::token::TokenBuilder;
use keybound::verify::{Clock, SystemClock};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common;
use common::PrivateRedis;

const OPENAPI: &str = include_str!("../../spec/openapi.json");
const CDDL: &str = include_str!("../../spec/keybound.cddl");
const ADMIN_PASSWORD: &str = "bootstrap-password-1";
const PASSWORD: &str = "correct horse battery";
const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"];

/// Documented statuses that this file does not provoke, and why.
const NOT_PROVOKED: &[(&str, u16, &str)] = &[
    ("*", 500, "an internal failure: a broken configuration"),
    ("*admin*", 503, "a database outage"),
    ("readyz", 503, "a database outage"),
    (
        "login",
        503,
        "covered by replay_store_outage_answers_503 (needs redis-server)",
    ),
    (
        "mint",
        503,
        "covered by replay_store_outage_answers_503 (needs redis-server)",
    ),
    ("createTrust", 503, "a database outage"),
    ("listTrusts", 503, "a database outage"),
    ("showTrust", 503, "a database outage"),
    ("deleteTrust", 503, "a database outage"),
    ("runWorkplan", 503, "a database outage"),
];

// ---------------------------------------------------------------------------
// A running issuer (the setup of tests/it/issuer.rs, SQLite only).

struct Issuer {
    url: String,
    addr: SocketAddr,
    state: Arc<IssuerState>,
    _server: LoopbackIssuer,
    _dir: tempfile::TempDir,
}

async fn start(tweak: impl FnOnce(&mut IssuerConfig)) -> Issuer {
    let (server, dir) = common::start_issuer(ADMIN_PASSWORD, Arc::new(SystemClock), |config| {
        // Many logins from one address; the login rate limit has its own tests.
        config.login_rate_per_minute = 1_000_000;
        config.login_burst = 100_000;
        tweak(config);
    })
    .await;
    Issuer {
        url: server.url().to_owned(),
        addr: server.addr(),
        state: server.state().clone(),
        _server: server,
        _dir: dir,
    }
}

impl Issuer {
    fn client(&self) -> Client {
        Client::new(&self.url, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap()
    }

    fn admin_scope(&self) -> Scope {
        Scope::new(format!("{}/admin", self.url))
            .project("admin")
            .domain("default")
    }

    async fn admin(&self) -> Client {
        let client = self.client();
        client
            .login_password("admin@default", ADMIN_PASSWORD, None)
            .await
            .unwrap();
        client
    }
}

// ---------------------------------------------------------------------------
// Answers and ways of sending requests.

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    async fn from_reqwest(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("<binary>").to_owned()))
            .collect();
        let body = response.bytes().await.unwrap().to_vec();
        Answer { status, headers, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A request over a plain TCP connection, for what an HTTP client library
/// would not send: dot segments in the path, a body cut short.
async fn raw_http(addr: SocketAddr, head: &str, body: &[u8], half_close: bool) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    if half_close {
        stream.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
        .await
        .expect("the issuer answers")
        .unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    let head = String::from_utf8(out[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Answer {
        status,
        headers,
        body: out[split + 4..].to_vec(),
    }
}

/// Dummy but well-formed keybound headers: the checks that come before
/// token verification (sizes, path; the body too on login and mint, which
/// read it first) are reached with them.
const DUMMY_AUTH: &str = "Authorization: KB AA\r\nKB-Proof: AA\r\n";

/// A body announced with 100 bytes, of which 7 arrive before the client
/// closes its side: `http.body_unreadable`. `auth` is the credential header
/// lines (the admin routes verify the token before reading the body, so
/// there it must be a token that passes T1–T12).
async fn cut_body(addr: SocketAddr, method: &str, path: &str, auth: &str) -> Answer {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    raw_http(addr, &head, b"{\"name\"", true).await
}

/// A request whose path has a `..` segment: `http.path_not_normalized`.
async fn dot_segment(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{DUMMY_AUTH}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    );
    raw_http(addr, &head, b"{}", false).await
}

/// A JSON body for a plain reqwest request (reqwest is built without its json feature).
trait JsonBody {
    fn json_body(self, value: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, value: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(value).unwrap())
    }
}

fn now() -> u64 {
    SystemClock.now()
}

/// How a login carries its proof.
enum LoginProof<'a> {
    /// A fresh proof by this key.
    By(&'a SigningKey),
    /// No KB-Proof at all.
    Missing,
    /// This KB-Proof value.
    Value(String),
}

/// POST /v1/login with full control; returns the answer and the proof sent.
async fn login_raw(
    issuer: &Issuer,
    body: &[u8],
    content_type: Option<&str>,
    proof: LoginProof<'_>,
) -> (Answer, String) {
    let url = format!("{}/v1/login", issuer.url);
    let proof = match proof {
        LoginProof::By(key) => Some(
            ProofBuilder::new("POST", &url, b"", body, now())
                .unwrap()
                .sign(key)
                .unwrap()
                .to_base64url(),
        ),
        LoginProof::Missing => None,
        LoginProof::Value(v) => Some(v),
    };
    let mut request = reqwest::Client::new().post(&url).body(body.to_vec());
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    if let Some(p) = &proof {
        request = request.header("kb-proof", p);
    }
    let answer = Answer::from_reqwest(request.send().await.unwrap()).await;
    (answer, proof.unwrap_or_default())
}

fn login_body(user: &str, password: Option<&str>, key: &SigningKey) -> Vec<u8> {
    let mut body = json!({"user": user, "key": b64url_encode(&key.public_key().to_cose_key(None))});
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    serde_json::to_vec(&body).unwrap()
}

/// A request signed with `token` and a fresh proof by `key`.
async fn signed_raw(url: &str, method: &str, token: &[u8], key: &SigningKey, body: Option<&[u8]>) -> Answer {
    let bytes = body.unwrap_or(b"");
    let proof = ProofBuilder::new(method, url, token, bytes, now())
        .unwrap()
        .sign(key)
        .unwrap();
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .header("authorization", format!("KB {}", b64url_encode(token)))
        .header("kb-proof", proof.to_base64url());
    if let Some(b) = body {
        request = request.header("content-type", "application/json").body(b.to_vec());
    }
    Answer::from_reqwest(request.send().await.unwrap()).await
}

/// The token bytes of an exchange's answer.
fn exchanged_bytes(answer: &Value) -> Vec<u8> {
    b64url_decode(answer["token"].as_str().unwrap()).unwrap()
}

/// An admin API call through the client library (token from /v1/tokens, fresh proof).
async fn admin_call(issuer: &Issuer, client: &Client, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let scope = issuer.admin_scope();
    let url = format!("{}{path}", issuer.url);
    let mut request = client.request(method.parse().unwrap(), &url, &scope);
    if let Some(b) = body {
        request = request.json(b);
    }
    Answer::from_reqwest(request.send().await.unwrap()).await
}

// ---------------------------------------------------------------------------
// The document and a checker for the JSON Schema subset it uses.

struct Contract {
    doc: Value,
    seen: Mutex<BTreeMap<(String, String), BTreeSet<u16>>>,
}

fn code_matches(pattern: &str, code: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => code.starts_with(prefix),
        None => pattern == code,
    }
}

impl Contract {
    fn load() -> Contract {
        Contract {
            doc: serde_json::from_str(OPENAPI).expect("spec/openapi.json is JSON"),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Follows `$ref`s (local JSON pointers only).
    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        while let Some(r) = value.get("$ref").and_then(Value::as_str) {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {r}"));
            value = self.doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}"));
        }
        value
    }

    /// Every (method, path template) of the document.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                assert!(
                    ["get", "post", "put", "delete", "patch", "head", "options"].contains(&method.as_str()),
                    "{path}: {method} is not a method"
                );
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    fn op(&self, method: &str, template: &str) -> &Value {
        self.doc["paths"]
            .get(template)
            .and_then(|item| item.get(method.to_lowercase()))
            .unwrap_or_else(|| panic!("{method} {template} is not in spec/openapi.json"))
    }

    fn op_id(&self, method: &str, template: &str) -> String {
        self.op(method, template)["operationId"].as_str().unwrap().to_owned()
    }

    fn is_admin(&self, method: &str, template: &str) -> bool {
        self.op(method, template)["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "admin"))
    }

    /// Where `value` breaks `schema` (a schema of the document, whose
    /// `$ref`s point into its components).
    fn violations(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator =
            jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{schema} is not a JSON Schema: {e}"));
        validator
            .iter_errors(value)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    fn assert_valid(&self, schema: &Value, value: &Value, what: &str) {
        let errors = self.violations(schema, value);
        assert!(
            errors.is_empty(),
            "{what}: {value} does not match the schema: {errors:?}"
        );
    }

    fn is_valid(&self, schema: &Value, value: &Value) -> bool {
        self.violations(schema, value).is_empty()
    }

    /// Checks an answer against the documented responses of the operation;
    /// returns its JSON body (Null for other media types).
    fn check(&self, method: &str, template: &str, answer: &Answer) -> Value {
        let what = format!("{method} {template} → {}", answer.status);
        let op = self.op(method, template);
        let Some(response) = op["responses"].get(answer.status.to_string()) else {
            panic!("{what}: status not documented; body {}", answer.text())
        };
        let response = self.resolve(response);
        self.seen
            .lock()
            .unwrap()
            .entry((method.to_owned(), template.to_owned()))
            .or_default()
            .insert(answer.status);
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            let header = self.resolve(header);
            let value = answer
                .header(name)
                .unwrap_or_else(|| panic!("{what}: documented header {name} is missing"));
            self.assert_valid(&header["schema"], &json!(value), &format!("{what}: header {name}"));
        }
        let Some(content) = response["content"].as_object() else {
            assert!(answer.body.is_empty(), "{what}: undocumented body");
            return Value::Null;
        };
        let content_type = answer
            .header("content-type")
            .unwrap_or_else(|| panic!("{what}: no Content-Type"));
        let Some(media) = content.get(content_type) else {
            panic!(
                "{what}: Content-Type {content_type} is not documented ({:?})",
                content.keys().collect::<Vec<_>>()
            )
        };
        let schema = &media["schema"];
        if content_type.contains("json") {
            let value = answer.json();
            self.assert_valid(schema, &value, &what);
            if content_type == "application/problem+json" {
                self.check_problem(&what, response, answer, &value);
            }
            value
        } else if content_type.starts_with("text/") {
            let value = Value::String(answer.text());
            self.assert_valid(schema, &value, &what);
            value
        } else {
            if let Some(rule) = self.resolve(schema)["x-cddl-rule"].as_str() {
                let cddl = format!("root = {rule}\n{CDDL}");
                if let Err(e) = cddl::validate_cbor_from_slice(&cddl, &answer.body, None) {
                    panic!("{what}: the body does not validate against CDDL {rule}: {e}");
                }
            }
            Value::Null
        }
    }

    fn check_problem(&self, what: &str, response: &Value, answer: &Answer, problem: &Value) {
        let code = problem["code"].as_str().unwrap();
        let listed: Vec<&str> = response["x-keybound-codes"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no x-keybound-codes"))
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(
            listed.iter().any(|p| code_matches(p, code)),
            "{what}: code {code} is not documented for this response ({listed:?}); detail {}",
            problem["detail"]
        );
        let parsed = Code::from_str_code(code).unwrap_or_else(|| panic!("{what}: unknown code {code}"));
        assert_eq!(
            keybound::http::status_for(parsed).as_u16(),
            answer.status,
            "{what}: {code}"
        );
        assert_eq!(problem["status"], answer.status, "{what}");
        assert_eq!(problem["type"], format!("urn:keybound:error:{code}"), "{what}");
        assert!(!problem["title"].as_str().unwrap().is_empty(), "{what}");
        if answer.status == 401 || answer.status == 403 {
            assert_eq!(
                answer.header("www-authenticate"),
                Some(format!("KB error=\"{code}\"").as_str()),
                "{what}"
            );
        }
        if let Some(nonce) = answer.header("kb-nonce") {
            assert!(b64url_decode(nonce).is_ok(), "{what}: KB-Nonce is not base64url");
        }
    }

    /// Checks an error answer and that it carries exactly `status` and `code`.
    fn expect(&self, method: &str, template: &str, answer: &Answer, status: u16, code: &str) {
        let body = self.check(method, template, answer);
        assert_eq!(
            (answer.status, body["code"].as_str()),
            (status, Some(code)),
            "{method} {template}: {}",
            answer.text()
        );
    }

    /// Checks a success answer: 200 and the documented schema.
    fn ok(&self, method: &str, template: &str, answer: &Answer) -> Value {
        assert_eq!(answer.status, 200, "{method} {template}: {}", answer.text());
        self.check(method, template, answer)
    }

    /// The documented example of an operation's request body.
    fn example(&self, method: &str, template: &str) -> Option<Value> {
        let media = self.op(method, template)["requestBody"]["content"].get("application/json")?;
        Some(media["example"].clone())
    }

    fn request_schema(&self, method: &str, template: &str) -> &Value {
        &self.op(method, template)["requestBody"]["content"]["application/json"]["schema"]
    }

    /// A concrete path from the template, with the parameters' examples.
    fn example_path(&self, method: &str, template: &str) -> String {
        let mut path = template.to_owned();
        for p in self.op(method, template)["parameters"].as_array().into_iter().flatten() {
            if p["in"] == "path" {
                let name = p["name"].as_str().unwrap();
                path = path.replace(&format!("{{{name}}}"), p["example"].as_str().unwrap());
            }
        }
        path
    }
}

/// `template` with every `{param}` replaced by `value`.
fn fill(template: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').unwrap() + open;
        out.push_str(&rest[..open]);
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// (a) The documented routes are the routes served.

/// `spec/openapi.json` is generated from the routes: a route, a request or an
/// answer that changes without it fails here.
#[test]
fn committed_document_is_the_generated_one() {
    let generated = keybound::issuer::openapi::document().expect("the document serialises");
    if std::env::var_os("KEYBOUND_REGENERATE").is_some() {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/openapi.json"), &generated).expect("writes");
        return;
    }
    assert!(
        OPENAPI == generated,
        "spec/openapi.json is not the document generated from the routes; regenerate it with \
         `KEYBOUND_REGENERATE=1 cargo test --all-features --test it openapi_contract::committed_document` \
         (or `cargo run --example openapi --features issuer > spec/openapi.json`) and review the diff"
    );
}

/// spec/issuer.md names every operation (§1 and the table of §10.3).
#[test]
fn spec_issuer_md_names_every_operation() {
    let contract = Contract::load();
    let issuer_md = include_str!("../../spec/issuer.md");
    let unnamed: Vec<_> = contract
        .operations()
        .into_iter()
        .filter(|(method, path)| !issuer_md.contains(&format!("`{method} {path}")))
        .collect();
    assert!(unnamed.is_empty(), "spec/issuer.md does not name {unnamed:?}");
}

/// The live router serves every documented method of every documented path
/// (HEAD wherever GET), and answers 405 to every other method.
#[tokio::test]
async fn the_router_serves_exactly_the_documented_methods() {
    let contract = Contract::load();
    let issuer = start(|_| {}).await;
    let admin = issuer.admin().await;
    let session_key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let login = login_body("admin@default", Some(ADMIN_PASSWORD), &session_key);
    let (login, _) = login_raw(&issuer, &login, Some("application/json"), LoginProof::By(&session_key)).await;
    let session = b64url_decode(login.json()["session_token"].as_str().unwrap()).unwrap();
    // The exchange verifies a peer's token: a second issuer, made a peer.
    let peer = start(|_| {}).await;
    let peer_input = json!({
        "issuer": peer.url,
        "keys_url": format!("{}/.well-known/keybound/keys", peer.url),
        "domains": ["hyde"],
    });
    let added = admin_call(&issuer, &admin, "POST", "/v1/admin/peers", Some(&peer_input)).await;
    assert_eq!(added.status, 200, "{}", added.text());
    let (peer_key, peer_kid) = peer.state.keys.current().unwrap();
    let peer_token = TokenBuilder::service(
        &peer.url,
        "eve@hyde",
        &issuer.url,
        session_key.public_key().clone(),
        now(),
    )
    .sign(&peer_key, &peer_kid)
    .unwrap();
    let documented = contract.operations();
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    let http = reqwest::Client::new();
    for template in paths {
        // Values no object has: documented calls answer 400/404 problems, never change anything.
        let path = fill(template, "probe-x@probe-y");
        let admin_path = template.starts_with("/v1/admin/");
        for method in METHODS {
            let documented_here = documented.contains(&(method.to_owned(), template.clone()))
                || (method == "HEAD" && documented.contains(&("GET".to_owned(), template.clone())));
            let body = (!matches!(method, "GET" | "HEAD")).then(|| json!({}));
            // Unauthenticated requests to paths that take a token never reach
            // the router's 405: the verifying layer refuses them first.
            let answer = if admin_path {
                admin_call(&issuer, &admin, method, &path, body.as_ref()).await
            } else if template == "/v1/tokens"
                || template.starts_with("/v1/trusts")
                || template.starts_with("/v1/workplans")
            {
                let url = format!("{}{path}", issuer.url);
                let bytes = body.as_ref().map(|b| serde_json::to_vec(b).unwrap());
                signed_raw(&url, method, &session, &session_key, bytes.as_deref()).await
            } else if template == "/v1/exchange" {
                let url = format!("{}{path}", issuer.url);
                let bytes = body.as_ref().map(|b| serde_json::to_vec(b).unwrap());
                signed_raw(&url, method, peer_token.as_bytes(), &session_key, bytes.as_deref()).await
            } else {
                let mut request = http.request(method.parse().unwrap(), format!("{}{path}", issuer.url));
                if let Some(b) = &body {
                    request = request.json_body(b);
                }
                Answer::from_reqwest(request.send().await.unwrap()).await
            };
            let routed = answer.status != 405
                && !(answer.status == 404 && answer.header("content-type") != Some("application/problem+json"));
            assert_eq!(
                routed,
                documented_here,
                "{method} {path} answered {} {}",
                answer.status,
                answer.text()
            );
            if !documented_here {
                assert!(answer.header("allow").is_some(), "405 without Allow: {method} {path}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The document itself.

#[test]
fn document_is_openapi_3_1_with_problem_codes_per_status() {
    let contract = Contract::load();
    let doc = &contract.doc;
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["kbToken"]["scheme"], "KB");
    assert_eq!(schemes["kbProof"]["name"], "KB-Proof");
    let mut ids = BTreeSet::new();
    for (method, template) in contract.operations() {
        let what = format!("{method} {template}");
        let op = contract.op(&method, &template);
        assert!(
            ids.insert(op["operationId"].as_str().unwrap().to_owned()),
            "{what}: duplicate operationId"
        );
        // Security: none for the public reads, a proof for login, token + proof otherwise.
        let security = op["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no security"));
        let expected = match template.as_str() {
            "/v1/login" => json!([{"kbProof": []}]),
            "/v1/tokens" => json!([{"kbToken": [], "kbProof": []}]),
            t if t.starts_with("/v1/admin/")
                || t.starts_with("/v1/trusts")
                || t.starts_with("/v1/workplans")
                || t == "/v1/exchange" =>
            {
                json!([{"kbToken": [], "kbProof": []}])
            }
            _ => json!([]),
        };
        assert_eq!(&Value::Array(security.clone()), &expected, "{what}");
        // Path parameters: each {name} declared, with an example of its schema.
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                contract.assert_valid(&p["schema"], &p["example"], &what);
                p["name"].as_str().unwrap().to_owned()
            })
            .collect();
        let in_template: BTreeSet<String> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        assert_eq!(declared, in_template, "{what}: path parameters");
        // Request body: JSON, within the subset, and its example validates.
        if let Some(example) = contract.example(&method, &template) {
            let schema = contract.request_schema(&method, &template);
            contract.assert_valid(schema, &example, &format!("{what}: request example"));
            assert_eq!(op["requestBody"]["required"], true, "{what}");
        }
        // Responses: 200 with content; every error is problem details listing its codes.
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("200"), "{what}: no 200");
        for (status, response) in responses {
            let response = contract.resolve(response);
            let status: u16 = status.parse().unwrap_or_else(|_| panic!("{what}: status {status}"));
            if status < 400 {
                continue;
            }
            assert!(
                response["content"].get("application/problem+json").is_some(),
                "{what} {status}: not problem details"
            );
            let codes = response["x-keybound-codes"]
                .as_array()
                .unwrap_or_else(|| panic!("{what} {status}: no x-keybound-codes"));
            for pattern in codes {
                let pattern = pattern.as_str().unwrap();
                let matching: Vec<&Code> = Code::ALL.iter().filter(|c| code_matches(pattern, c.as_str())).collect();
                assert!(!matching.is_empty(), "{what} {status}: {pattern} matches no code");
                for code in matching {
                    assert_eq!(
                        keybound::http::status_for(*code).as_u16(),
                        status,
                        "{what}: {code} is listed under {status}, but the HTTP layer answers it with another status"
                    );
                }
            }
        }
    }
    // Every key the examples carry is a public COSE_Key the issuer accepts.
    for example in contract.operations().iter().filter_map(|(m, t)| contract.example(m, t)) {
        if let Some(key) = example["key"].as_str() {
            keybound::key::PublicKey::from_cose_key(&b64url_decode(key).unwrap()).unwrap();
        }
    }
}

/// The document's schemas are strict: they refuse what the issuer never
/// sends (so the answers checked against them are checked for something).
#[test]
fn document_schemas_refuse_violations() {
    let contract = Contract::load();
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let good = json!({"type": "urn:keybound:error:issuer.conflict", "title": "t", "status": 409, "code": "issuer.conflict", "detail": "d"});
    assert!(contract.is_valid(&problem, &good));
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("code");
    assert!(!contract.is_valid(&problem, &missing));
    let mut extra = good.clone();
    extra["extra"] = json!(1);
    assert!(!contract.is_valid(&problem, &extra));
    let mut wrong_type = good.clone();
    wrong_type["status"] = json!("409");
    assert!(!contract.is_valid(&problem, &wrong_type));
    let mut below = good;
    below["status"] = json!(200);
    assert!(!contract.is_valid(&problem, &below));
    let users = json!({"type": "array", "items": {"$ref": "#/components/schemas/User"}});
    assert!(contract.is_valid(
        &users,
        &json!([{"user": "a@b", "kind": "person", "enabled": true, "has_password": false}])
    ));
    assert!(!contract.is_valid(&users, &json!([{"user": "a@b"}])));
    let nullable = json!({"type": ["string", "null"]});
    assert!(contract.is_valid(&nullable, &Value::Null));
    assert!(!contract.is_valid(&nullable, &json!(1)));
}

// ---------------------------------------------------------------------------
// (b) and (c): every operation, its success and its error answers.

/// A value of a type the property's schema does not allow.
fn wrong_type(contract: &Contract, schema: &Value) -> Value {
    [json!(true), json!("text"), json!(7), json!({})]
        .into_iter()
        .find(|candidate| !contract.is_valid(schema, candidate))
        .expect("some type is refused")
}

/// Each documented request example is refused with `issuer.bad_request`
/// once it carries an unknown field, lacks a required field, or has a field
/// of the wrong type; the document's schema refuses the same bodies.
async fn request_bodies_match_serde(
    contract: &Contract,
    issuer: &Issuer,
    admin: &Client,
    session: &[u8],
    key: &SigningKey,
    (peer_token, peer_key): (&[u8], &SigningKey),
) {
    for (method, template) in contract.operations() {
        let Some(example) = contract.example(&method, &template) else {
            continue;
        };
        let schema = contract.resolve(contract.request_schema(&method, &template));
        let mut bodies: Vec<(String, Value)> = Vec::new();
        let mut extra = example.clone();
        extra["unexpected"] = json!(1);
        bodies.push(("an unknown field".into(), extra));
        bodies.push(("a string instead of an object".into(), json!("not an object")));
        for name in schema["required"].as_array().into_iter().flatten() {
            let mut without = example.clone();
            without.as_object_mut().unwrap().remove(name.as_str().unwrap());
            bodies.push((format!("no {name}"), without));
        }
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            let mut wrong = example.clone();
            wrong[name] = wrong_type(contract, property);
            bodies.push((format!("{name} of the wrong type"), wrong));
            if let Some(items) = contract.resolve(property).get("items") {
                let mut wrong = example.clone();
                wrong[name] = json!([wrong_type(contract, items)]);
                bodies.push((format!("{name} with an item of the wrong type"), wrong));
            }
        }
        for (what, body) in bodies {
            assert!(
                !contract.is_valid(schema, &body),
                "{method} {template}: the schema accepts a body with {what}: {body}"
            );
            let bytes = serde_json::to_vec(&body).unwrap();
            let answer = match template.as_str() {
                "/v1/login" => {
                    login_raw(issuer, &bytes, Some("application/json"), LoginProof::By(key))
                        .await
                        .0
                }
                "/v1/tokens" | "/v1/trusts" | "/v1/workplans/run" => {
                    signed_raw(&format!("{}{template}", issuer.url), "POST", session, key, Some(&bytes)).await
                }
                "/v1/exchange" => {
                    let url = format!("{}{template}", issuer.url);
                    signed_raw(&url, "POST", peer_token, peer_key, Some(&bytes)).await
                }
                _ => {
                    let path = contract.example_path(&method, &template);
                    admin_call(issuer, admin, &method, &path, Some(&body)).await
                }
            };
            contract.expect(&method, &template, &answer, 400, "issuer.bad_request");
        }
    }
}

/// The checks every admin operation shares: no token, a token without role
/// admin, a token of another project, sizes, unreadable bodies, dot segments.
async fn admin_common_errors(
    contract: &Contract,
    issuer: &Issuer,
    reader: &Client,
    forged: (&SigningKey, &[u8]),
    session: (&SigningKey, &[u8]),
) {
    let http = reqwest::Client::new();
    let (forger_key, forged) = forged;
    let (session_key, session) = session;
    for (method, template) in contract.operations() {
        if !contract.is_admin(&method, &template) {
            continue;
        }
        let path = contract.example_path(&method, &template);
        let url = format!("{}{path}", issuer.url);
        let body = contract.example(&method, &template);
        let body_bytes = body.as_ref().map(|b| serde_json::to_vec(b).unwrap());
        // 401: no Authorization at all.
        let mut request = http.request(method.parse().unwrap(), &url);
        if let Some(b) = &body {
            request = request.json_body(b);
        }
        let answer = Answer::from_reqwest(request.send().await.unwrap()).await;
        contract.expect(&method, &template, &answer, 401, "http.token_missing");
        // 401: a session token is not an admin token (T9).
        let answer = signed_raw(&url, &method, session, session_key, body_bytes.as_deref()).await;
        contract.expect(&method, &template, &answer, 401, "cwt.aud_mismatch");
        // 403: an admin-audience token with role reader only (policy), and a
        // token with role admin on another project (scope).
        let answer = admin_call(issuer, reader, &method, &path, body.as_ref()).await;
        contract.expect(&method, &template, &answer, 403, "policy.denied");
        let answer = signed_raw(&url, &method, forged, forger_key, body_bytes.as_deref()).await;
        contract.expect(&method, &template, &answer, 403, "issuer.forbidden");
        // The token is verified before the body is read: a malformed token
        // with a huge body is refused for the token, a valid token for the
        // body (413).
        let big = vec![b' '; issuer.state.config.max_body + 1];
        let answer = Answer::from_reqwest(
            http.request(method.parse().unwrap(), &url)
                .header("authorization", "KB AA")
                .header("kb-proof", "AA")
                .header("content-type", "application/json")
                .body(big.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        contract.expect(&method, &template, &answer, 401, "cose.structure");
        let answer = signed_raw(&url, &method, forged, forger_key, Some(&big)).await;
        contract.expect(&method, &template, &answer, 413, "http.body_too_large");
        // 431: an Authorization header over 8192 bytes.
        let answer = Answer::from_reqwest(
            http.request(method.parse().unwrap(), &url)
                .header("authorization", format!("KB {}", "A".repeat(9000)))
                .header("kb-proof", "AA")
                .send()
                .await
                .unwrap(),
        )
        .await;
        contract.expect(&method, &template, &answer, 431, "http.header_too_large");
        // 400: a body that never arrives completely.
        let valid_token = format!("Authorization: KB {}\r\nKB-Proof: AA\r\n", b64url_encode(forged));
        let answer = cut_body(issuer.addr, &method, &path, &valid_token).await;
        contract.expect(&method, &template, &answer, 400, "http.body_unreadable");
        // 400: a dot segment where the template has a parameter.
        if template.contains('{') {
            let answer = dot_segment(issuer.addr, &method, &fill(&template, "..")).await;
            contract.expect(&method, &template, &answer, 400, "http.path_not_normalized");
        }
    }
}

/// The checks every trust route of the session layer shares: no token, a
/// service token where a session token belongs, sizes, unreadable bodies,
/// dot segments.
async fn trust_common_errors(
    contract: &Contract,
    issuer: &Issuer,
    session: (&SigningKey, &[u8]),
    service: (&SigningKey, &[u8]),
) {
    let http = reqwest::Client::new();
    let (key, session) = session;
    for (method, template) in contract.operations() {
        let tagged = contract.op(&method, &template)["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "trusts"));
        if !tagged {
            continue;
        }
        let path = contract.example_path(&method, &template);
        let url = format!("{}{path}", issuer.url);
        let body = contract
            .example(&method, &template)
            .map(|b| serde_json::to_vec(&b).unwrap());
        let mut request = http.request(method.parse().unwrap(), &url);
        if let Some(b) = &body {
            request = request.header("content-type", "application/json").body(b.clone());
        }
        let answer = Answer::from_reqwest(request.send().await.unwrap()).await;
        contract.expect(&method, &template, &answer, 401, "http.token_missing");
        let answer = signed_raw(&url, &method, service.1, service.0, body.as_deref()).await;
        contract.expect(&method, &template, &answer, 401, "cwt.aud_mismatch");
        let big = vec![b' '; issuer.state.config.max_body + 1];
        let answer = signed_raw(&url, &method, session, key, Some(&big)).await;
        contract.expect(&method, &template, &answer, 413, "http.body_too_large");
        let answer = Answer::from_reqwest(
            http.request(method.parse().unwrap(), &url)
                .header("authorization", format!("KB {}", "A".repeat(9000)))
                .header("kb-proof", "AA")
                .send()
                .await
                .unwrap(),
        )
        .await;
        contract.expect(&method, &template, &answer, 431, "http.header_too_large");
        let valid_token = format!("Authorization: KB {}\r\nKB-Proof: AA\r\n", b64url_encode(session));
        let answer = cut_body(issuer.addr, &method, &path, &valid_token).await;
        contract.expect(&method, &template, &answer, 400, "http.body_unreadable");
        if template.contains('{') {
            let answer = dot_segment(issuer.addr, &method, &fill(&template, "..")).await;
            contract.expect(&method, &template, &answer, 400, "http.path_not_normalized");
        }
    }
}

#[tokio::test]
async fn every_operation_answers_as_documented() {
    let c = Contract::load();
    let issuer = start(|_| {}).await;
    let url = issuer.url.clone();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{url}{path}"));
        async move { Answer::from_reqwest(request.send().await.unwrap()).await }
    };

    // ---- Public reads.
    let answer = get("/healthz").await;
    assert_eq!(c.ok("GET", "/healthz", &answer), "ok\n");
    assert_eq!(c.ok("GET", "/readyz", &get("/readyz").await), "ready\n");
    let answer = get("/.well-known/keybound/keys").await;
    c.ok("GET", "/.well-known/keybound/keys", &answer);
    assert_eq!(answer.header("cache-control"), Some("public, max-age=900"));
    let set = keybound::key::KeySet::from_cbor(&answer.body).unwrap();
    assert_eq!(set.len(), 3, "next, current and previous key");
    let (_, kid) = issuer.state.keys.current().unwrap();
    assert!(set.get(&kid).is_some(), "the current key is published");
    let epoch = u32::from_be_bytes(kid[..4].try_into().unwrap());
    assert_eq!(
        u64::from(epoch),
        now() / 3600,
        "kid = 4-byte big-endian epoch ‖ thumbprint[..4]"
    );
    for e in [epoch - 1, epoch + 1] {
        let published = set
            .iter()
            .any(|(k, key)| k[..4] == e.to_be_bytes() && k[4..] == key.thumbprint().as_bytes()[..4]);
        assert!(published, "epoch {e} published");
    }
    let meta = c.ok(
        "GET",
        "/.well-known/keybound/issuer",
        &get("/.well-known/keybound/issuer").await,
    );
    assert_eq!(
        meta,
        json!({
            "issuer": url,
            "keys": format!("{url}/.well-known/keybound/keys"),
            "login": format!("{url}/v1/login"),
            "tokens": format!("{url}/v1/tokens"),
            "admin_audience": format!("{url}/admin"),
            "max_session_lifetime": 43200,
            "max_service_lifetime": 300,
        })
    );

    // ---- Admin: every operation once with success.
    let admin = issuer.admin().await;
    let a = |method: &'static str, path: String, body: Option<Value>| {
        let (issuer, admin) = (&issuer, &admin);
        async move { admin_call(issuer, admin, method, &path, body.as_ref()).await }
    };
    let ok = |method: &str, template: &str, answer: Answer| c.ok(method, template, &answer);
    let service_key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let service_key_b64 = b64url_encode(&service_key.public_key().to_cose_key(None));
    let created = ok(
        "POST",
        "/v1/admin/domains",
        a("POST", "/v1/admin/domains".into(), Some(json!({"name": "stoughton"}))).await,
    );
    assert_eq!(created, json!({"name": "stoughton", "enabled": true}));
    ok(
        "POST",
        "/v1/admin/projects",
        a(
            "POST",
            "/v1/admin/projects".into(),
            Some(json!({"name": "turing", "domain": "stoughton"})),
        )
        .await,
    );
    for role in ["member", "reader"] {
        ok(
            "POST",
            "/v1/admin/roles",
            a("POST", "/v1/admin/roles".into(), Some(json!({"name": role}))).await,
        );
    }
    for (user, body) in [
        (
            "ayoung@stoughton",
            json!({"user": "ayoung@stoughton", "password": "first password"}),
        ),
        (
            "nova-compute@stoughton",
            json!({"user": "nova-compute@stoughton", "kind": "service"}),
        ),
        (
            "locked@stoughton",
            json!({"user": "locked@stoughton", "password": PASSWORD}),
        ),
        (
            "disabled@stoughton",
            json!({"user": "disabled@stoughton", "password": PASSWORD}),
        ),
        (
            "helper@default",
            json!({"user": "helper@default", "password": PASSWORD}),
        ),
    ] {
        let answer = ok(
            "POST",
            "/v1/admin/users",
            a("POST", "/v1/admin/users".into(), Some(body)).await,
        );
        assert_eq!(answer["user"], user);
    }
    let answer = ok(
        "PUT",
        "/v1/admin/users/{user}/password",
        a(
            "PUT",
            "/v1/admin/users/ayoung@stoughton/password".into(),
            Some(json!({"password": PASSWORD})),
        )
        .await,
    );
    assert_eq!(answer, json!({"user": "ayoung@stoughton", "has_password": true}));
    let answer = ok(
        "POST",
        "/v1/admin/users/{user}/keys",
        a(
            "POST",
            "/v1/admin/users/nova-compute@stoughton/keys".into(),
            Some(json!({"key": service_key_b64})),
        )
        .await,
    );
    assert_eq!(answer["thumbprint"], service_key.public_key().thumbprint().to_string());
    let answer = ok(
        "POST",
        "/v1/admin/users/{user}/{action}",
        a(
            "POST",
            "/v1/admin/users/disabled@stoughton/disable".into(),
            Some(json!({})),
        )
        .await,
    );
    assert_eq!(answer, json!({"user": "disabled@stoughton", "enabled": false}));
    ok(
        "POST",
        "/v1/admin/domains/{name}/{action}",
        a("POST", "/v1/admin/domains/stoughton/enable".into(), Some(json!({}))).await,
    );
    ok(
        "POST",
        "/v1/admin/projects/{project}/{action}",
        a(
            "POST",
            "/v1/admin/projects/turing@stoughton/enable".into(),
            Some(json!({})),
        )
        .await,
    );
    for (user, project, role) in [
        ("ayoung@stoughton", "turing@stoughton", "member"),
        ("ayoung@stoughton", "turing@stoughton", "reader"),
        ("helper@default", "admin@default", "reader"),
    ] {
        ok(
            "POST",
            "/v1/admin/grants",
            a(
                "POST",
                "/v1/admin/grants".into(),
                Some(json!({"user": user, "project": project, "role": role})),
            )
            .await,
        );
    }
    let answer = ok(
        "DELETE",
        "/v1/admin/grants",
        a(
            "DELETE",
            "/v1/admin/grants".into(),
            Some(json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": "member"})),
        )
        .await,
    );
    assert_eq!(answer["revoked"], true);
    for audience in ["https://nova.example", "https://gone.example"] {
        ok(
            "POST",
            "/v1/admin/services",
            a("POST", "/v1/admin/services".into(), Some(json!({"audience": audience}))).await,
        );
    }
    let answer = ok(
        "DELETE",
        "/v1/admin/services",
        a(
            "DELETE",
            "/v1/admin/services".into(),
            Some(json!({"audience": "https://gone.example"})),
        )
        .await,
    );
    assert_eq!(answer, json!({"audience": "https://gone.example", "deleted": true}));
    for template in [
        "/v1/admin/domains",
        "/v1/admin/projects",
        "/v1/admin/users",
        "/v1/admin/roles",
        "/v1/admin/grants",
        "/v1/admin/services",
        "/v1/admin/audit",
    ] {
        let listed = ok("GET", template, a("GET", template.into(), None).await);
        assert!(!listed.as_array().unwrap().is_empty(), "{template}");
    }
    let services = ok(
        "GET",
        "/v1/admin/services",
        a("GET", "/v1/admin/services".into(), None).await,
    );
    // The admin audience follows the issuer id: it is not a registered service.
    assert_eq!(services, json!(["https://nova.example"]));

    // ---- Login and mint with success.
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let (answer, _) = login_raw(
        &issuer,
        &login_body("ayoung@stoughton", Some(PASSWORD), &key),
        Some("application/json"),
        LoginProof::By(&key),
    )
    .await;
    let login = c.ok("POST", "/v1/login", &answer);
    assert_eq!(login["subject"], "ayoung@stoughton");
    assert_eq!(login["key_thumbprint"], key.public_key().thumbprint().to_string());
    let session = b64url_decode(login["session_token"].as_str().unwrap()).unwrap();
    let claims = keybound::danger::insecure_decode_token(&session).unwrap().claims;
    assert_eq!((claims.aud.as_str(), claims.iss.as_str()), (url.as_str(), url.as_str()));
    assert_eq!(claims.exp, login["expires_at"].as_u64().unwrap());
    assert_eq!(claims.exp - claims.iat, 3600, "default session lifetime");
    assert_eq!(claims.domain.as_deref(), Some("stoughton"));
    assert_eq!(&claims.cnf, key.public_key());
    // Key login: the registered key, no password, a shorter session.
    let body = serde_json::to_vec(&json!({"user": "nova-compute@stoughton", "key": service_key_b64, "lifetime": 600}))
        .unwrap();
    let (answer, _) = login_raw(&issuer, &body, Some("application/json"), LoginProof::By(&service_key)).await;
    let keyed = c.ok("POST", "/v1/login", &answer);
    let keyed_claims =
        keybound::danger::insecure_decode_token(&b64url_decode(keyed["session_token"].as_str().unwrap()).unwrap())
            .unwrap()
            .claims;
    assert_eq!(keyed_claims.exp - keyed_claims.iat, 600);

    let tokens = format!("{url}/v1/tokens");
    let mint = |body: Value| {
        let (tokens, session, key) = (&tokens, &session, &key);
        async move { signed_raw(tokens, "POST", session, key, Some(&serde_json::to_vec(&body).unwrap())).await }
    };
    let minted = c.ok(
        "POST",
        "/v1/tokens",
        &mint(json!({"audience": "https://nova.example", "project": "turing", "lifetime": 120})).await,
    );
    assert_eq!(
        (&minted["project"], &minted["domain"], &minted["roles"]),
        (&json!("turing"), &json!("stoughton"), &json!(["reader"]))
    );
    let token = keybound::danger::insecure_decode_token(&b64url_decode(minted["token"].as_str().unwrap()).unwrap())
        .unwrap()
        .claims;
    assert_eq!(token.exp - token.iat, 120);
    assert_eq!(token.aud, "https://nova.example");
    assert_eq!(
        &token.cnf,
        key.public_key(),
        "the service token is bound to the session's key"
    );
    let unscoped = c.ok(
        "POST",
        "/v1/tokens",
        &mint(json!({"audience": "https://nova.example", "project": null, "domain": null, "roles": null, "lifetime": null}))
            .await,
    );
    assert_eq!(
        (&unscoped["project"], &unscoped["domain"], &unscoped["roles"]),
        (&Value::Null, &Value::Null, &json!([]))
    );

    // ---- Login refusals.
    let login_as = |user: &str, password: Option<&str>, key: &SigningKey| login_body(user, password, key);
    let json_ct = Some("application/json");
    let by = || LoginProof::By(&key);
    let expect_login = |answer: Answer, status: u16, code: &str| c.expect("POST", "/v1/login", &answer, status, code);
    let (answer, _) = login_raw(&issuer, &login_as("ayoung@stoughton", Some(PASSWORD), &key), None, by()).await;
    expect_login(answer, 400, "issuer.bad_request");
    let (answer, _) = login_raw(&issuer, b"{\"user\":", json_ct, by()).await;
    expect_login(answer, 400, "issuer.bad_request");
    let (answer, _) = login_raw(&issuer, &login_as("ayoung", Some(PASSWORD), &key), json_ct, by()).await;
    expect_login(answer, 400, "issuer.invalid_name");
    let weak = {
        let mut x = [0u8; 32];
        x[0] = 1;
        keybound::encoding::hex_decode(
            &format!("a401010327200621 5820{}", keybound::encoding::hex_encode(&x)).replace(' ', ""),
        )
        .unwrap()
    };
    let body =
        serde_json::to_vec(&json!({"user": "ayoung@stoughton", "password": PASSWORD, "key": b64url_encode(&weak)}))
            .unwrap();
    let (answer, _) = login_raw(&issuer, &body, json_ct, by()).await;
    expect_login(answer, 400, "issuer.invalid_key");
    for lifetime in [0, 43_201] {
        let body = serde_json::to_vec(&json!({"user": "ayoung@stoughton", "password": PASSWORD, "key": b64url_encode(&key.public_key().to_cose_key(None)), "lifetime": lifetime})).unwrap();
        let (answer, _) = login_raw(&issuer, &body, json_ct, by()).await;
        expect_login(answer, 400, "issuer.lifetime_exceeded");
    }
    expect_login(
        cut_body(issuer.addr, "POST", "/v1/login", DUMMY_AUTH).await,
        400,
        "http.body_unreadable",
    );
    let good = login_as("ayoung@stoughton", Some(PASSWORD), &key);
    let (answer, _) = login_raw(&issuer, &good, json_ct, LoginProof::Missing).await;
    expect_login(answer, 401, "proof.missing");
    let other = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let (answer, _) = login_raw(&issuer, &good, json_ct, LoginProof::By(&other)).await;
    expect_login(answer, 401, "proof.bad_signature");
    let (answer, proof) = login_raw(&issuer, &good, json_ct, by()).await;
    c.ok("POST", "/v1/login", &answer);
    let (answer, _) = login_raw(&issuer, &good, json_ct, LoginProof::Value(proof)).await;
    expect_login(answer, 401, "replay.detected");
    for body in [
        login_as("ayoung@stoughton", Some("wrong password"), &key),
        login_as("nobody@stoughton", Some(PASSWORD), &key),
        login_as("nova-compute@stoughton", None, &key),
    ] {
        let (answer, _) = login_raw(&issuer, &body, json_ct, by()).await;
        expect_login(answer, 401, "issuer.invalid_credentials");
    }
    let (answer, _) = login_raw(
        &issuer,
        &login_as("disabled@stoughton", Some(PASSWORD), &key),
        json_ct,
        by(),
    )
    .await;
    expect_login(answer, 403, "issuer.disabled");
    let (answer, _) = login_raw(&issuer, &vec![b' '; 65_537], json_ct, by()).await;
    expect_login(answer, 413, "http.body_too_large");
    let (answer, _) = login_raw(&issuer, &good, json_ct, LoginProof::Value("A".repeat(9000))).await;
    expect_login(answer, 431, "http.header_too_large");
    for _ in 0..5 {
        let (answer, _) = login_raw(
            &issuer,
            &login_as("locked@stoughton", Some("wrong password"), &key),
            json_ct,
            by(),
        )
        .await;
        expect_login(answer, 401, "issuer.invalid_credentials");
    }
    let (answer, _) = login_raw(
        &issuer,
        &login_as("locked@stoughton", Some(PASSWORD), &key),
        json_ct,
        by(),
    )
    .await;
    expect_login(answer, 429, "issuer.locked");

    // ---- Mint refusals.
    let expect_mint = |answer: Answer, status: u16, code: &str| c.expect("POST", "/v1/tokens", &answer, status, code);
    for (body, status, code) in [
        (
            json!({"audience": "https://nova.example", "lifetime": 301}),
            400,
            "issuer.lifetime_exceeded",
        ),
        (
            json!({"audience": "https://nova.example", "lifetime": 0}),
            400,
            "issuer.lifetime_exceeded",
        ),
        (
            json!({"audience": "https://glance.example"}),
            400,
            "issuer.unknown_audience",
        ),
        (json!({"audience": url.clone()}), 400, "issuer.unknown_audience"),
        (json!({"audience": "with space"}), 400, "issuer.invalid_name"),
        (
            json!({"audience": "https://nova.example", "project": "no such"}),
            400,
            "issuer.invalid_name",
        ),
        (
            json!({"audience": "https://nova.example", "project": "nope"}),
            400,
            "issuer.unknown_project",
        ),
        (
            json!({"audience": "https://nova.example", "domain": "stoughton"}),
            400,
            "issuer.bad_request",
        ),
        (
            json!({"audience": "https://nova.example", "project": "turing", "roles": ["member"]}),
            403,
            "issuer.role_not_held",
        ),
        (
            json!({"audience": "https://nova.example", "project": "turing", "roles": []}),
            403,
            "issuer.role_not_held",
        ),
        (
            json!({"audience": format!("{url}/admin"), "project": "turing"}),
            403,
            "issuer.forbidden",
        ),
        (
            json!({"audience": format!("{url}/admin"), "project": "admin", "domain": "default"}),
            403,
            "issuer.role_not_held",
        ),
    ] {
        expect_mint(mint(body).await, status, code);
    }
    let answer = Answer::from_reqwest(
        http.post(&tokens)
            .json_body(&json!({"audience": "https://nova.example"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect_mint(answer, 401, "http.token_missing");
    let answer = Answer::from_reqwest(
        http.post(&tokens)
            .header("authorization", format!("Bearer {}", b64url_encode(&session)))
            .json_body(&json!({"audience": "https://nova.example"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect_mint(answer, 401, "http.scheme");
    let answer = Answer::from_reqwest(
        http.post(&tokens)
            .header("authorization", format!("KB {}", b64url_encode(&session)))
            .json_body(&json!({"audience": "https://nova.example"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect_mint(answer, 401, "proof.missing");
    // A service token where the session token belongs; a stranger with the session.
    let service_token = b64url_decode(minted["token"].as_str().unwrap()).unwrap();
    expect_mint(
        signed_raw(
            &tokens,
            "POST",
            &service_token,
            &key,
            Some(b"{\"audience\":\"https://nova.example\"}"),
        )
        .await,
        401,
        "cwt.aud_mismatch",
    );
    let stranger = SigningKey::generate(Algorithm::EdDSA).unwrap();
    expect_mint(
        signed_raw(
            &tokens,
            "POST",
            &session,
            &stranger,
            Some(b"{\"audience\":\"https://nova.example\"}"),
        )
        .await,
        401,
        "proof.bad_signature",
    );
    // The token is verified before the body is read: a valid session token
    // reaches the body limits.
    let session_auth = format!("KB {}", b64url_encode(&session));
    let answer = Answer::from_reqwest(
        http.post(&tokens)
            .header("authorization", &session_auth)
            .header("kb-proof", "AA")
            .body(vec![b' '; 65_537])
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect_mint(answer, 413, "http.body_too_large");
    let answer = Answer::from_reqwest(
        http.post(&tokens)
            .header("authorization", format!("KB {}", "A".repeat(9000)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect_mint(answer, 431, "http.header_too_large");
    expect_mint(
        cut_body(
            issuer.addr,
            "POST",
            "/v1/tokens",
            &format!("Authorization: {session_auth}\r\nKB-Proof: AA\r\n"),
        )
        .await,
        400,
        "http.body_unreadable",
    );
    // ---- Trusts: ayoung (reader on turing) delegates to nova-compute.
    let keyed_session = b64url_decode(keyed["session_token"].as_str().unwrap()).unwrap();
    let as_user = |who: &'static str, method: &'static str, path: String, body: Option<Value>| {
        let (url, session, key, keyed_session, service_key) = (&url, &session, &key, &keyed_session, &service_key);
        async move {
            let (token, signer) = match who {
                "ayoung" => (session, key),
                _ => (keyed_session, service_key),
            };
            let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
            signed_raw(&format!("{url}{path}"), method, token, signer, bytes.as_deref()).await
        }
    };
    let unknown_trust = "AAAAAAAAAAAAAAAAAAAAAA";
    let trust = c.ok(
        "POST",
        "/v1/trusts",
        &as_user(
            "ayoung",
            "POST",
            "/v1/trusts".into(),
            Some(json!({"trustee": "nova-compute@stoughton", "project": "turing", "roles": ["reader"], "uses": 5, "redelegation": 1})),
        )
        .await,
    );
    let trust_id = trust["id"].as_str().unwrap().to_owned();
    assert_eq!(trust["remaining_uses"], 5);
    for (body, status, code) in [
        (
            json!({"trustee": "nova-compute@stoughton", "project": "turing", "roles": []}),
            400,
            "trust.invalid",
        ),
        (
            json!({"trustee": "nova-compute@stoughton", "project": "turing", "roles": ["member"]}),
            403,
            "issuer.role_not_held",
        ),
    ] {
        let answer = as_user("ayoung", "POST", "/v1/trusts".into(), Some(body)).await;
        c.expect("POST", "/v1/trusts", &answer, status, code);
    }
    let answer = as_user(
        "nova",
        "POST",
        "/v1/trusts".into(),
        Some(json!({"trustee": "helper@default", "roles": ["reader"], "parent": unknown_trust})),
    )
    .await;
    c.expect("POST", "/v1/trusts", &answer, 404, "trust.not_found");
    let listed = c.ok(
        "GET",
        "/v1/trusts",
        &as_user("nova", "GET", "/v1/trusts".into(), None).await,
    );
    assert_eq!(listed, json!([trust.clone()]));
    let shown = c.ok(
        "GET",
        "/v1/trusts/{id}",
        &as_user("ayoung", "GET", format!("/v1/trusts/{trust_id}"), None).await,
    );
    assert_eq!(shown, trust);
    let answer = as_user("ayoung", "GET", format!("/v1/trusts/{unknown_trust}"), None).await;
    c.expect("GET", "/v1/trusts/{id}", &answer, 404, "trust.not_found");
    let delegated = c.ok(
        "POST",
        "/v1/tokens",
        &as_user(
            "nova",
            "POST",
            "/v1/tokens".into(),
            Some(json!({"audience": "https://nova.example", "trust": trust_id})),
        )
        .await,
    );
    assert_eq!(
        (
            &delegated["subject"],
            &delegated["trust"],
            &delegated["actors"],
            &delegated["roles"]
        ),
        (
            &json!("ayoung@stoughton"),
            &json!(trust_id),
            &json!(["nova-compute@stoughton"]),
            &json!(["reader"])
        )
    );
    assert_eq!(minted["subject"], "ayoung@stoughton");
    assert_eq!((&minted["trust"], &minted["actors"]), (&Value::Null, &json!([])));
    let answer = as_user(
        "ayoung",
        "POST",
        "/v1/tokens".into(),
        Some(json!({"audience": "https://nova.example", "trust": trust_id})),
    )
    .await;
    expect_mint(answer, 403, "trust.not_trustee");
    let answer = as_user(
        "nova",
        "POST",
        "/v1/tokens".into(),
        Some(json!({"audience": "https://nova.example", "trust": unknown_trust})),
    )
    .await;
    expect_mint(answer, 404, "trust.not_found");
    let answer = as_user("nova", "DELETE", format!("/v1/trusts/{trust_id}"), None).await;
    c.expect("DELETE", "/v1/trusts/{id}", &answer, 403, "issuer.forbidden");
    let answer = as_user("ayoung", "DELETE", format!("/v1/trusts/{unknown_trust}"), None).await;
    c.expect("DELETE", "/v1/trusts/{id}", &answer, 404, "trust.not_found");
    // The admin's trust routes.
    let admin_trust = json!({"trustor": "ayoung@stoughton", "trustee": "nova-compute@stoughton", "project": "turing", "domain": "stoughton", "roles": ["reader"]});
    let created = ok(
        "POST",
        "/v1/admin/trusts",
        a("POST", "/v1/admin/trusts".into(), Some(admin_trust.clone())).await,
    );
    for (field, value, status, code) in [
        ("roles", json!([]), 400, "trust.invalid"),
        ("roles", json!(["member"]), 403, "issuer.role_not_held"),
        ("trustor", json!("ghost@stoughton"), 404, "issuer.not_found"),
    ] {
        let mut body = admin_trust.clone();
        body[field] = value;
        let answer = a("POST", "/v1/admin/trusts".into(), Some(body)).await;
        c.expect("POST", "/v1/admin/trusts", &answer, status, code);
    }
    let by_user = ok(
        "GET",
        "/v1/admin/trusts",
        a(
            "GET",
            "/v1/admin/trusts?user=ayoung%40stoughton&project=turing@stoughton".into(),
            None,
        )
        .await,
    );
    assert_eq!(by_user.as_array().unwrap().len(), 2);
    // A workplan run: all trusts and a slip, or none.
    let plan = |roles: Value| {
        json!({"workflow": "deploy-instance", "project": "turing", "delegations": [
            {"trustee": "nova-compute@stoughton", "audience": "https://nova.example", "roles": roles}
        ]})
    };
    let run = c.ok(
        "POST",
        "/v1/workplans/run",
        &as_user(
            "ayoung",
            "POST",
            "/v1/workplans/run".into(),
            Some(plan(json!(["reader"]))),
        )
        .await,
    );
    assert_eq!(run["trusts"][0]["audiences"], json!(["https://nova.example"]));
    for (roles, status, code) in [
        (json!(["member"]), 403, "issuer.role_not_held"),
        (json!([]), 400, "trust.invalid"),
    ] {
        let answer = as_user("ayoung", "POST", "/v1/workplans/run".into(), Some(plan(roles))).await;
        c.expect("POST", "/v1/workplans/run", &answer, status, code);
    }
    let answer = a("GET", "/v1/admin/trusts?owner=ayoung@stoughton".into(), None).await;
    c.expect("GET", "/v1/admin/trusts", &answer, 400, "issuer.bad_request");

    // ---- Federation: a peer (another real issuer), a remote grant, an
    // exchange of the peer's token, and their refusals.
    let peer = start(|_| {}).await;
    let peer_input = json!({
        "issuer": peer.url,
        "keys_url": format!("{}/.well-known/keybound/keys", peer.url),
        "domains": ["hyde"],
    });
    let added = ok(
        "POST",
        "/v1/admin/peers",
        a("POST", "/v1/admin/peers".into(), Some(peer_input.clone())).await,
    );
    assert_eq!(added["domains"], json!(["hyde"]));
    let answer = a("POST", "/v1/admin/peers".into(), Some(peer_input.clone())).await;
    c.expect("POST", "/v1/admin/peers", &answer, 409, "issuer.conflict");
    let mut remote_url = peer_input.clone();
    remote_url["keys_url"] = json!("http://hyde.example/keys");
    let answer = a("POST", "/v1/admin/peers".into(), Some(remote_url)).await;
    c.expect("POST", "/v1/admin/peers", &answer, 400, "issuer.bad_request");
    let listed = ok("GET", "/v1/admin/peers", a("GET", "/v1/admin/peers".into(), None).await);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let remote = json!({"user": "eve@hyde", "project": "turing@stoughton", "role": "member"});
    let granted = ok(
        "POST",
        "/v1/admin/remote-grants",
        a("POST", "/v1/admin/remote-grants".into(), Some(remote.clone())).await,
    );
    assert_eq!(granted["origin"], json!(peer.url));
    let answer = a(
        "POST",
        "/v1/admin/remote-grants".into(),
        Some(json!({"user": "eve@nowhere", "project": "turing@stoughton", "role": "member"})),
    )
    .await;
    c.expect("POST", "/v1/admin/remote-grants", &answer, 404, "issuer.not_found");
    let answer = a("POST", "/v1/admin/remote-grants".into(), Some(remote.clone())).await;
    c.expect("POST", "/v1/admin/remote-grants", &answer, 409, "issuer.conflict");
    let mut unknown_project = peer_input.clone();
    unknown_project["issuer"] = json!("https://other.example");
    unknown_project["domains"] = json!(["other"]);
    unknown_project["keys_url"] = json!("https://other.example/keys");
    unknown_project["projects"] = json!(["nope@stoughton"]);
    let answer = a("POST", "/v1/admin/peers".into(), Some(unknown_project)).await;
    c.expect("POST", "/v1/admin/peers", &answer, 404, "issuer.not_found");
    ok(
        "GET",
        "/v1/admin/remote-grants",
        a("GET", "/v1/admin/remote-grants".into(), None).await,
    );
    let eve = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let (peer_key, peer_kid) = peer.state.keys.current().unwrap();
    let peer_token = TokenBuilder::service(&peer.url, "eve@hyde", &url, eve.public_key().clone(), now())
        .sign(&peer_key, &peer_kid)
        .unwrap();
    let exchange_url = format!("{url}/v1/exchange");
    let want = |audience: &str| {
        serde_json::to_vec(&json!({"audience": audience, "project": "turing", "domain": "stoughton"})).unwrap()
    };
    let exchanged = c.ok(
        "POST",
        "/v1/exchange",
        &signed_raw(
            &exchange_url,
            "POST",
            peer_token.as_bytes(),
            &eve,
            Some(&want("https://nova.example")),
        )
        .await,
    );
    assert_eq!(exchanged["origin"], json!(peer.url));
    assert_eq!(exchanged["roles"], json!(["member"]));
    // The binding's refusals, in federation terms where they are federation's.
    let no_proof = Answer::from_reqwest(
        reqwest::Client::new()
            .post(&exchange_url)
            .header("authorization", format!("KB {}", peer_token.to_base64url()))
            .header("content-type", "application/json")
            .body(want("https://nova.example"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    c.expect("POST", "/v1/exchange", &no_proof, 401, "fed.pop_missing");
    // A peer whose key set was never fetched (nothing listens there): 503.
    let unreachable =
        json!({"issuer": "https://down.example", "keys_url": "http://127.0.0.1:9/keys", "domains": ["down"]});
    ok(
        "POST",
        "/v1/admin/peers",
        a("POST", "/v1/admin/peers".into(), Some(unreachable)).await,
    );
    let down_token = TokenBuilder::service(
        "https://down.example",
        "eve@down",
        &url,
        eve.public_key().clone(),
        now(),
    )
    .sign(&peer_key, &peer_kid)
    .unwrap();
    let answer = signed_raw(
        &exchange_url,
        "POST",
        down_token.as_bytes(),
        &eve,
        Some(&want("https://nova.example")),
    )
    .await;
    c.expect("POST", "/v1/exchange", &answer, 503, "issuer.unavailable");
    let big = vec![b' '; issuer.state.config.max_body + 1];
    let answer = signed_raw(&exchange_url, "POST", peer_token.as_bytes(), &eve, Some(&big)).await;
    c.expect("POST", "/v1/exchange", &answer, 413, "http.body_too_large");
    let answer = Answer::from_reqwest(
        reqwest::Client::new()
            .post(&exchange_url)
            .header("authorization", format!("KB {}", "A".repeat(9000)))
            .header("kb-proof", "AA")
            .send()
            .await
            .unwrap(),
    )
    .await;
    c.expect("POST", "/v1/exchange", &answer, 431, "http.header_too_large");
    for (token, audience, status, code) in [
        (
            peer_token.as_bytes(),
            "https://elsewhere.example",
            400,
            "fed.invalid_target",
        ),
        (
            exchanged_bytes(&exchanged).as_slice(),
            "https://nova.example",
            403,
            "fed.chain",
        ),
    ] {
        let answer = signed_raw(&exchange_url, "POST", token, &eve, Some(&want(audience))).await;
        c.expect("POST", "/v1/exchange", &answer, status, code);
    }
    let answer = ok(
        "DELETE",
        "/v1/admin/remote-grants",
        a("DELETE", "/v1/admin/remote-grants".into(), Some(remote.clone())).await,
    );
    assert_eq!(answer["revoked"], true);
    let answer = signed_raw(
        &exchange_url,
        "POST",
        peer_token.as_bytes(),
        &eve,
        Some(&want("https://nova.example")),
    )
    .await;
    c.expect("POST", "/v1/exchange", &answer, 403, "fed.no_grants");
    let answer = a("DELETE", "/v1/admin/remote-grants".into(), Some(remote)).await;
    c.expect("DELETE", "/v1/admin/remote-grants", &answer, 404, "issuer.not_found");
    let deleted = ok(
        "DELETE",
        "/v1/admin/peers",
        a("DELETE", "/v1/admin/peers".into(), Some(json!({"issuer": peer.url}))).await,
    );
    assert_eq!(deleted["deleted"], true);
    let answer = a("DELETE", "/v1/admin/peers".into(), Some(json!({"issuer": peer.url}))).await;
    c.expect("DELETE", "/v1/admin/peers", &answer, 404, "issuer.not_found");
    let answer = signed_raw(
        &exchange_url,
        "POST",
        peer_token.as_bytes(),
        &eve,
        Some(&want("https://nova.example")),
    )
    .await;
    c.expect("POST", "/v1/exchange", &answer, 403, "fed.peer_unknown");
    // A peer again, for the request-body checks below.
    ok(
        "POST",
        "/v1/admin/peers",
        a("POST", "/v1/admin/peers".into(), Some(peer_input)).await,
    );
    let created_path = format!("/v1/admin/trusts/{}", created["id"].as_str().unwrap());
    let deleted = ok(
        "DELETE",
        "/v1/admin/trusts/{id}",
        a("DELETE", created_path.clone(), Some(json!({}))).await,
    );
    assert_eq!(deleted["deleted"], true);
    let answer = a("DELETE", created_path, Some(json!({}))).await;
    c.expect("DELETE", "/v1/admin/trusts/{id}", &answer, 404, "trust.not_found");
    let deleted = c.ok(
        "DELETE",
        "/v1/trusts/{id}",
        &as_user("ayoung", "DELETE", format!("/v1/trusts/{trust_id}"), None).await,
    );
    assert_eq!(deleted, json!({"id": trust_id, "deleted": true}));
    trust_common_errors(&c, &issuer, (&key, &session), (&key, &service_token)).await;

    // Every mint re-checks the user: disabled after the session was issued.
    ok(
        "POST",
        "/v1/admin/users/{user}/{action}",
        a(
            "POST",
            "/v1/admin/users/ayoung@stoughton/disable".into(),
            Some(json!({})),
        )
        .await,
    );
    expect_mint(
        mint(json!({"audience": "https://nova.example"})).await,
        403,
        "issuer.disabled",
    );
    ok(
        "POST",
        "/v1/admin/users/{user}/{action}",
        a(
            "POST",
            "/v1/admin/users/ayoung@stoughton/enable".into(),
            Some(json!({})),
        )
        .await,
    );

    // ---- Admin refusals specific to operations.
    let e = |method: &'static str,
             template: &'static str,
             path: String,
             body: Option<Value>,
             status: u16,
             code: &'static str| {
        let (c, a) = (&c, &a);
        async move { c.expect(method, template, &a(method, path, body).await, status, code) }
    };
    e(
        "POST",
        "/v1/admin/domains",
        "/v1/admin/domains".into(),
        Some(json!({"name": "stoughton"})),
        409,
        "issuer.conflict",
    )
    .await;
    e(
        "POST",
        "/v1/admin/domains",
        "/v1/admin/domains".into(),
        Some(json!({"name": "-x"})),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "POST",
        "/v1/admin/domains/{name}/{action}",
        "/v1/admin/domains/nowhere/disable".into(),
        Some(json!({})),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "POST",
        "/v1/admin/domains/{name}/{action}",
        "/v1/admin/domains/stoughton/frobnicate".into(),
        Some(json!({})),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "POST",
        "/v1/admin/domains/{name}/{action}",
        "/v1/admin/domains/bad%20name/disable".into(),
        Some(json!({})),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "POST",
        "/v1/admin/projects",
        "/v1/admin/projects".into(),
        Some(json!({"name": "turing", "domain": "stoughton"})),
        409,
        "issuer.conflict",
    )
    .await;
    e(
        "POST",
        "/v1/admin/projects",
        "/v1/admin/projects".into(),
        Some(json!({"name": "x", "domain": "nowhere"})),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "POST",
        "/v1/admin/projects",
        "/v1/admin/projects".into(),
        Some(json!({"name": "x y", "domain": "stoughton"})),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "POST",
        "/v1/admin/projects/{project}/{action}",
        "/v1/admin/projects/ghost@stoughton/enable".into(),
        Some(json!({})),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "POST",
        "/v1/admin/projects/{project}/{action}",
        "/v1/admin/projects/turing/enable".into(),
        Some(json!({})),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users",
        "/v1/admin/users".into(),
        Some(json!({"user": "ayoung@stoughton"})),
        409,
        "issuer.conflict",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users",
        "/v1/admin/users".into(),
        Some(json!({"user": "x@nowhere"})),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users",
        "/v1/admin/users".into(),
        Some(json!({"user": "x@stoughton", "kind": "robot"})),
        400,
        "issuer.bad_request",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users",
        "/v1/admin/users".into(),
        Some(json!({"user": "x@stoughton", "password": "short"})),
        400,
        "issuer.bad_request",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users",
        "/v1/admin/users".into(),
        Some(json!({"user": "x"})),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "PUT",
        "/v1/admin/users/{user}/password",
        "/v1/admin/users/ghost@stoughton/password".into(),
        Some(json!({"password": PASSWORD})),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "PUT",
        "/v1/admin/users/{user}/password",
        "/v1/admin/users/ayoung@stoughton/password".into(),
        Some(json!({"password": "short"})),
        400,
        "issuer.bad_request",
    )
    .await;
    e(
        "PUT",
        "/v1/admin/users/{user}/password",
        "/v1/admin/users/ayoung/password".into(),
        Some(json!({"password": PASSWORD})),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users/{user}/keys",
        "/v1/admin/users/nova-compute@stoughton/keys".into(),
        Some(json!({"key": service_key_b64})),
        409,
        "issuer.conflict",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users/{user}/keys",
        "/v1/admin/users/ghost@stoughton/keys".into(),
        Some(json!({"key": service_key_b64})),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users/{user}/keys",
        "/v1/admin/users/nova-compute@stoughton/keys".into(),
        Some(json!({"key": b64url_encode(&weak)})),
        400,
        "issuer.invalid_key",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users/{user}/keys",
        "/v1/admin/users/nova-compute@stoughton/keys".into(),
        Some(json!({"key": "not base64url!"})),
        400,
        "issuer.invalid_key",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users/{user}/keys",
        "/v1/admin/users/nova/keys".into(),
        Some(json!({"key": service_key_b64})),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users/{user}/{action}",
        "/v1/admin/users/ghost@stoughton/disable".into(),
        Some(json!({})),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users/{user}/{action}",
        "/v1/admin/users/ayoung@stoughton/delete".into(),
        Some(json!({})),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "POST",
        "/v1/admin/users/{user}/{action}",
        "/v1/admin/users/ayoung/disable".into(),
        Some(json!({})),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "POST",
        "/v1/admin/roles",
        "/v1/admin/roles".into(),
        Some(json!({"name": "member"})),
        409,
        "issuer.conflict",
    )
    .await;
    e(
        "POST",
        "/v1/admin/roles",
        "/v1/admin/roles".into(),
        Some(json!({"name": "a".repeat(65)})),
        400,
        "issuer.invalid_name",
    )
    .await;
    let grant = |role: &str| json!({"user": "ayoung@stoughton", "project": "turing@stoughton", "role": role});
    e(
        "POST",
        "/v1/admin/grants",
        "/v1/admin/grants".into(),
        Some(grant("reader")),
        409,
        "issuer.conflict",
    )
    .await;
    e(
        "POST",
        "/v1/admin/grants",
        "/v1/admin/grants".into(),
        Some(grant("ghost")),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "POST",
        "/v1/admin/grants",
        "/v1/admin/grants".into(),
        Some(json!({"user": "ayoung@stoughton", "project": "turing", "role": "reader"})),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "DELETE",
        "/v1/admin/grants",
        "/v1/admin/grants".into(),
        Some(grant("member")),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "DELETE",
        "/v1/admin/grants",
        "/v1/admin/grants".into(),
        Some(grant("not a role")),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "POST",
        "/v1/admin/services",
        "/v1/admin/services".into(),
        Some(json!({"audience": "https://nova.example"})),
        409,
        "issuer.conflict",
    )
    .await;
    e(
        "POST",
        "/v1/admin/services",
        "/v1/admin/services".into(),
        Some(json!({"audience": url.clone()})),
        400,
        "issuer.bad_request",
    )
    .await;
    e(
        "POST",
        "/v1/admin/services",
        "/v1/admin/services".into(),
        Some(json!({"audience": "a".repeat(257)})),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "DELETE",
        "/v1/admin/services",
        "/v1/admin/services".into(),
        Some(json!({"audience": "https://gone.example"})),
        404,
        "issuer.not_found",
    )
    .await;
    e(
        "DELETE",
        "/v1/admin/services",
        "/v1/admin/services".into(),
        Some(json!({"audience": format!("{url}/admin")})),
        400,
        "issuer.bad_request",
    )
    .await;
    e(
        "DELETE",
        "/v1/admin/services",
        "/v1/admin/services".into(),
        Some(json!({"audience": ""})),
        400,
        "issuer.invalid_name",
    )
    .await;
    e(
        "GET",
        "/v1/admin/audit",
        "/v1/admin/audit?limit=many".into(),
        None,
        400,
        "issuer.bad_request",
    )
    .await;
    // A scheduled rotation (forced: a fresh issuer's epoch may have begun
    // less than the cache max-age ago), then one too early after it.
    let (_, before) = issuer.state.keys.current().unwrap();
    let rotated = ok(
        "POST",
        "/v1/admin/keys/rotate",
        a("POST", "/v1/admin/keys/rotate".into(), Some(json!({"force": true}))).await,
    );
    let (_, after) = issuer.state.keys.current().unwrap();
    assert_eq!(rotated["previous_kid"], keybound::encoding::hex_encode(&before));
    assert_eq!(rotated["kid"], keybound::encoding::hex_encode(&after));
    assert_ne!(before, after, "the next key signs");
    e(
        "POST",
        "/v1/admin/keys/rotate",
        "/v1/admin/keys/rotate".into(),
        Some(json!({})),
        409,
        "issuer.rotation_too_early",
    )
    .await;
    e(
        "POST",
        "/v1/admin/keys/rotate",
        "/v1/admin/keys/rotate".into(),
        Some(json!({"force": "yes"})),
        400,
        "issuer.bad_request",
    )
    .await;

    // ---- Deletes, the user view, its keys, the unlock, filtered grants.
    for (path, body) in [
        ("/v1/admin/domains", json!({"name": "doomed"})),
        ("/v1/admin/projects", json!({"name": "p", "domain": "doomed"})),
        ("/v1/admin/users", json!({"user": "u@doomed", "kind": "service"})),
        ("/v1/admin/roles", json!({"name": "doomed-role"})),
    ] {
        ok("POST", path, a("POST", path.into(), Some(body)).await);
    }
    let shown = ok(
        "GET",
        "/v1/admin/users/{user}",
        a("GET", "/v1/admin/users/ayoung@stoughton".into(), None).await,
    );
    assert_eq!(
        shown["grants"],
        json!([{"project": "turing@stoughton", "role": "reader"}])
    );
    let keys = ok(
        "GET",
        "/v1/admin/users/{user}/keys",
        a("GET", "/v1/admin/users/nova-compute@stoughton/keys".into(), None).await,
    );
    assert_eq!(keys[0]["thumbprint"], service_key.public_key().thumbprint().to_string());
    let unlocked = ok(
        "POST",
        "/v1/admin/users/{user}/unlock",
        a(
            "POST",
            "/v1/admin/users/locked@stoughton/unlock".into(),
            Some(json!({})),
        )
        .await,
    );
    assert_eq!(unlocked["locked"], false);
    let spare = SigningKey::generate(Algorithm::EdDSA).unwrap();
    ok(
        "POST",
        "/v1/admin/users/{user}/keys",
        a(
            "POST",
            "/v1/admin/users/u@doomed/keys".into(),
            Some(json!({"key": b64url_encode(&spare.public_key().to_cose_key(None))})),
        )
        .await,
    );
    let spare_path = format!("/v1/admin/users/u@doomed/keys/{}", spare.public_key().thumbprint());
    let removed = ok(
        "DELETE",
        "/v1/admin/users/{user}/keys/{thumbprint}",
        a("DELETE", spare_path.clone(), Some(json!({}))).await,
    );
    assert_eq!(removed["removed"], true);
    let filtered = ok(
        "GET",
        "/v1/admin/grants",
        a("GET", "/v1/admin/grants?user=ayoung@stoughton&role=reader".into(), None).await,
    );
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    for (method, template, path, status, code) in [
        (
            "GET",
            "/v1/admin/users/{user}",
            "/v1/admin/users/ghost@stoughton",
            404,
            "issuer.not_found",
        ),
        (
            "GET",
            "/v1/admin/users/{user}",
            "/v1/admin/users/ghost",
            400,
            "issuer.invalid_name",
        ),
        (
            "GET",
            "/v1/admin/users/{user}/keys",
            "/v1/admin/users/ghost@stoughton/keys",
            404,
            "issuer.not_found",
        ),
        (
            "GET",
            "/v1/admin/grants",
            "/v1/admin/grants?user=ghost",
            400,
            "issuer.invalid_name",
        ),
        (
            "GET",
            "/v1/admin/grants",
            "/v1/admin/grants?owner=x",
            400,
            "issuer.bad_request",
        ),
        (
            "GET",
            "/v1/admin/audit",
            "/v1/admin/audit?before=x",
            400,
            "issuer.bad_request",
        ),
        (
            "POST",
            "/v1/admin/users/{user}/unlock",
            "/v1/admin/users/ghost@stoughton/unlock",
            404,
            "issuer.not_found",
        ),
        (
            "DELETE",
            "/v1/admin/users/{user}/keys/{thumbprint}",
            spare_path.as_str(),
            404,
            "issuer.not_found",
        ),
        (
            "DELETE",
            "/v1/admin/users/{user}/keys/{thumbprint}",
            "/v1/admin/users/u@doomed/keys/short",
            400,
            "issuer.bad_request",
        ),
        (
            "DELETE",
            "/v1/admin/roles/{name}",
            "/v1/admin/roles/reader",
            409,
            "issuer.in_use",
        ),
        (
            "DELETE",
            "/v1/admin/roles/{name}",
            "/v1/admin/roles/admin",
            409,
            "issuer.protected",
        ),
        (
            "DELETE",
            "/v1/admin/roles/{name}",
            "/v1/admin/roles/ghost",
            404,
            "issuer.not_found",
        ),
        (
            "DELETE",
            "/v1/admin/domains/{name}",
            "/v1/admin/domains/doomed",
            409,
            "issuer.in_use",
        ),
        (
            "DELETE",
            "/v1/admin/domains/{name}",
            "/v1/admin/domains/default",
            409,
            "issuer.protected",
        ),
        (
            "DELETE",
            "/v1/admin/domains/{name}",
            "/v1/admin/domains/ghost",
            404,
            "issuer.not_found",
        ),
        (
            "DELETE",
            "/v1/admin/projects/{project}",
            "/v1/admin/projects/admin@default",
            409,
            "issuer.protected",
        ),
        (
            "DELETE",
            "/v1/admin/projects/{project}",
            "/v1/admin/projects/ghost@doomed",
            404,
            "issuer.not_found",
        ),
        (
            "DELETE",
            "/v1/admin/users/{user}",
            "/v1/admin/users/admin@default",
            409,
            "issuer.protected",
        ),
        (
            "DELETE",
            "/v1/admin/users/{user}",
            "/v1/admin/users/ghost@doomed",
            404,
            "issuer.not_found",
        ),
    ] {
        let body = (method != "GET").then(|| json!({}));
        c.expect(method, template, &a(method, path.to_owned(), body).await, status, code);
    }
    // A project a peer is limited to is in use.
    let limited = json!({"issuer": "https://limited.example", "keys_url": "https://limited.example/keys", "domains": ["limited"], "projects": ["p@doomed"]});
    ok(
        "POST",
        "/v1/admin/peers",
        a("POST", "/v1/admin/peers".into(), Some(limited)).await,
    );
    e(
        "DELETE",
        "/v1/admin/projects/{project}",
        "/v1/admin/projects/p@doomed".into(),
        Some(json!({})),
        409,
        "issuer.in_use",
    )
    .await;
    ok(
        "DELETE",
        "/v1/admin/peers",
        a(
            "DELETE",
            "/v1/admin/peers".into(),
            Some(json!({"issuer": "https://limited.example"})),
        )
        .await,
    );
    for (template, path) in [
        ("/v1/admin/projects/{project}", "/v1/admin/projects/p@doomed"),
        ("/v1/admin/users/{user}", "/v1/admin/users/u@doomed"),
        ("/v1/admin/roles/{name}", "/v1/admin/roles/doomed-role"),
        ("/v1/admin/domains/{name}", "/v1/admin/domains/doomed"),
    ] {
        let gone = ok("DELETE", template, a("DELETE", path.into(), Some(json!({}))).await);
        assert_eq!(gone["deleted"], true, "{path}");
    }

    // ---- What every admin operation shares.
    let helper_key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let helper = Client::new(&url, helper_key).unwrap();
    helper.login_password("helper@default", PASSWORD, None).await.unwrap();
    let forger = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let (signing, kid) = issuer.state.keys.current().unwrap();
    let forged = TokenBuilder::service(
        &url,
        "admin@default",
        format!("{url}/admin"),
        forger.public_key().clone(),
        now(),
    )
    .scope("stoughton", "turing")
    .roles(["admin"])
    .sign(&signing, &kid)
    .unwrap();
    admin_common_errors(&c, &issuer, &helper, (&forger, forged.as_bytes()), (&key, &session)).await;

    // ---- Request schemas and serde agree.
    let fresh = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let (answer, _) = login_raw(
        &issuer,
        &login_as("ayoung@stoughton", Some(PASSWORD), &fresh),
        json_ct,
        LoginProof::By(&fresh),
    )
    .await;
    let fresh_session = b64url_decode(c.ok("POST", "/v1/login", &answer)["session_token"].as_str().unwrap()).unwrap();
    request_bodies_match_serde(
        &c,
        &issuer,
        &admin,
        &fresh_session,
        &fresh,
        (peer_token.as_bytes(), &eve),
    )
    .await;

    // ---- The audit log: every action of the document's enum happened and was recorded.
    let audit = c.ok(
        "GET",
        "/v1/admin/audit",
        &a("GET", "/v1/admin/audit?limit=1000".into(), None).await,
    );
    let entries = audit.as_array().unwrap();
    let actions: BTreeSet<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    let documented: BTreeSet<&str> = c.doc["components"]["schemas"]["AuditEntry"]["properties"]["action"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // keys.replace is written offline (keybound admin rotate --emergency), never through the API.
    let online: BTreeSet<&str> = documented.iter().copied().filter(|a| *a != "keys.replace").collect();
    assert_eq!(actions, online, "audit actions");
    let login_outcomes: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e["action"] == "login")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    for outcome in ["ok", "issuer.invalid_credentials", "issuer.disabled", "issuer.locked"] {
        assert!(
            login_outcomes.contains(outcome),
            "login outcome {outcome} not audited: {login_outcomes:?}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "domain.create" && e["outcome"] == "issuer.conflict" && e["target"] == "-"),
        "refused admin actions are audited"
    );
    assert!(
        entries.windows(2).all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64()),
        "newest first"
    );
    let short = c.ok(
        "GET",
        "/v1/admin/audit",
        &a("GET", "/v1/admin/audit?limit=2".into(), None).await,
    );
    assert_eq!(short.as_array().unwrap().len(), 2);

    // ---- Metrics reflect what happened.
    let metrics = c.ok("GET", "/metrics", &get("/metrics").await);
    let metrics = metrics.as_str().unwrap();
    for line in [
        "# TYPE keybound_tokens_minted_total counter",
        "keybound_failures_total{code=\"issuer.locked\"} 1",
        "keybound_request_duration_seconds_count{route=\"admin\"}",
        "keybound_request_duration_seconds_count{route=\"tokens\"}",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }

    // ---- Coverage: every operation succeeded once; every documented status was seen.
    let seen = c.seen.lock().unwrap().clone();
    let mut missing = Vec::new();
    for (method, template) in c.operations() {
        let id = c.op_id(&method, &template);
        let got = seen
            .get(&(method.clone(), template.clone()))
            .cloned()
            .unwrap_or_default();
        for status in c.op(&method, &template)["responses"].as_object().unwrap().keys() {
            let status: u16 = status.parse().unwrap();
            let skipped = NOT_PROVOKED.iter().any(|(op, s, _)| {
                *s == status && (*op == "*" || *op == id || (*op == "*admin*" && c.is_admin(&method, &template)))
            });
            if !got.contains(&status) && !skipped {
                missing.push(format!("{method} {template} ({id}) {status}"));
            }
        }
        eprintln!("{id:<20} {method:<6} {template:<40} seen {got:?}");
    }
    assert!(missing.is_empty(), "documented statuses never provoked: {missing:#?}");
}

// ---------------------------------------------------------------------------
// 503 from the replay store, with a private redis-server.

#[tokio::test]
async fn replay_store_outage_answers_503() {
    let Some(mut redis) = PrivateRedis::start(&[], None) else {
        return;
    };
    let c = Contract::load();
    let redis_url = redis.url();
    let issuer = start(|config| config.replay_redis_url = Some(redis_url)).await;
    // A new Redis is fenced at its first use (P13): let /readyz make that
    // use, so that the login's proof, made after it, is not older than the
    // fence (when a second began between the two, it was).
    let ready = reqwest::get(format!("{}/readyz", issuer.url)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let body = login_body("admin@default", Some(ADMIN_PASSWORD), &key);
    let (answer, _) = login_raw(&issuer, &body, Some("application/json"), LoginProof::By(&key)).await;
    let session = b64url_decode(c.ok("POST", "/v1/login", &answer)["session_token"].as_str().unwrap()).unwrap();
    redis.kill();
    let (answer, _) = login_raw(&issuer, &body, Some("application/json"), LoginProof::By(&key)).await;
    c.expect("POST", "/v1/login", &answer, 503, "replay.store_unavailable");
    assert_eq!(answer.header("retry-after"), Some("1"));
    let answer = signed_raw(
        &format!("{}/v1/tokens", issuer.url),
        "POST",
        &session,
        &key,
        Some(b"{\"audience\":\"x\"}"),
    )
    .await;
    c.expect("POST", "/v1/tokens", &answer, 503, "replay.store_unavailable");
}

// ---------------------------------------------------------------------------
// Regressions: behaviour the document describes that the issuer once got wrong.

/// The admin API's KeyboundLayer also wraps the router's fallback, so a path
/// the issuer does not serve is answered as an admin request: 401
/// `http.token_missing` (with `WWW-Authenticate: KB`) for everyone, 403
/// `policy.denied` for an admin outside /v1/admin/, never 404.
#[tokio::test]
async fn unknown_paths_answer_404() {
    let issuer = start(|_| {}).await;
    let http = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/v1/login/"),
        ("POST", "/v1/token"),
        ("GET", "/favicon.ico"),
    ] {
        let answer = Answer::from_reqwest(
            http.request(method.parse().unwrap(), format!("{}{path}", issuer.url))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            answer.status,
            404,
            "{method} {path}: {} {}",
            answer.status,
            answer.text()
        );
    }
}

/// (method, path template, security schemes) of every documented operation
/// that needs a keybound credential (`kbToken` and/or `kbProof`).
fn protected_operations() -> Vec<(String, String, BTreeSet<String>)> {
    let document: Value = serde_json::from_str(OPENAPI).unwrap();
    let mut out = Vec::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let schemes: BTreeSet<String> = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|requirement| requirement.as_object().unwrap().keys().cloned())
                .collect();
            if !schemes.is_empty() {
                out.push((method.to_uppercase(), template.clone(), schemes));
            }
        }
    }
    out
}

/// The headers of a request announcing a 60,000-byte body that never comes,
/// without `Authorization` or `KB-Proof`: a route that waited for the body
/// before looking at the credentials would hold the connection for the body
/// timeout (30 s) and then answer `http.body_unreadable`.
async fn announced_body_without_credentials(addr: SocketAddr, method: &str, path: &str) -> (Answer, Duration) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 60000\r\nConnection: close\r\n\r\n"
    );
    let started = std::time::Instant::now();
    let answer = raw_http(addr, &head, b"", false).await;
    (answer, started.elapsed())
}

/// Every route that takes a token refuses a request without one at once,
/// before it waits for the body: `401 http.token_missing` in well under a
/// second. Login, which takes no token, refuses a missing proof the same way.
#[tokio::test]
async fn every_protected_route_refuses_missing_credentials_before_the_body() {
    let c = Contract::load();
    let issuer = start(|_| {}).await;
    let operations = protected_operations();
    assert!(operations.len() > 20, "the document lists the protected routes");
    for (method, template, schemes) in operations {
        let path = fill(&template, "example");
        let (answer, took) = announced_body_without_credentials(issuer.addr, &method, &path).await;
        let code = if schemes.contains("kbToken") {
            "http.token_missing"
        } else {
            "proof.missing"
        };
        c.expect(&method, &template, &answer, 401, code);
        assert!(
            took < Duration::from_secs(1),
            "{method} {path} took {took:?} to refuse a request without credentials"
        );
    }
}

/// Every keybound route of the issuer runs H1's path check, as services do:
/// a path parameter that is a dot segment (literal or percent-encoded) or that
/// percent-encodes an unreserved character reaches the route (the router
/// decodes it) but is refused with `http.path_not_normalized` before any
/// credential is verified. Routes without a parameter cannot be reached with
/// such a path at all (404).
#[tokio::test]
async fn issuer_routes_refuse_unnormalised_paths() {
    let c = Contract::load();
    let issuer = start(|_| {}).await;
    let mut checked = 0;
    for (method, template, _) in protected_operations() {
        if !template.contains('{') {
            let answer = dot_segment(issuer.addr, &method, &format!("{template}/..")).await;
            // `/v1/trusts/..` is the path of `/v1/trusts/{id}` with a dot
            // segment: refused by H1 like any other.
            let has_child = protected_operations().iter().any(|(_, t, _)| {
                t.strip_prefix(template.as_str())
                    .is_some_and(|rest| rest.starts_with("/{") && rest.matches('/').count() == 1)
            });
            let expected = if has_child { 400 } else { 404 };
            assert_eq!(answer.status, expected, "{method} {template}/..: {}", answer.text());
            continue;
        }
        for value in ["..", "%2e%2E", "%61dmin@default"] {
            let path = fill(&template, value);
            let answer = dot_segment(issuer.addr, &method, &path).await;
            c.expect(&method, &template, &answer, 400, "http.path_not_normalized");
            checked += 1;
        }
    }
    assert!(checked >= 9, "parameterised routes were checked");
}

/// RFC 9110 §8.3.1: media types are case-insensitive; the issuer compares
/// `Content-Type` with `application/json` byte for byte.
#[tokio::test]
async fn json_media_type_is_case_insensitive() {
    let issuer = start(|_| {}).await;
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let body = login_body("admin@default", Some(ADMIN_PASSWORD), &key);
    let (answer, _) = login_raw(&issuer, &body, Some("Application/JSON"), LoginProof::By(&key)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// Replicas sharing a root secret, a database and a Redis replay store
/// refuse a replayed login proof (the store is shared), but the admin
/// API's verifier keeps its own in-memory replay store: an admin request
/// captured at one replica is accepted again at another within the proof's
/// lifetime.
#[tokio::test]
async fn admin_proofs_are_replay_checked_across_replicas() {
    let Some(redis) = PrivateRedis::start(&[], None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = vec![42u8; 32];
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("shared.db").display());
    let mut replicas = Vec::new();
    let mut issuer_id = String::new();
    for i in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        if i == 0 {
            issuer_id = format!("http://{addr}");
        }
        let mut config = IssuerConfig::new(dir.path().join(format!("replica{i}")));
        config.listen = addr;
        config.issuer_id = issuer_id.clone();
        config.login_rate_per_minute = 1_000_000;
        config.login_burst = 100_000;
        config.database_url = Some(database.clone());
        config.root_secret = Some(zeroize::Zeroizing::new(root.clone()));
        config.replay_redis_url = Some(redis.url());
        if i == 0 {
            keybound::issuer::bootstrap(&config, ADMIN_PASSWORD).await.unwrap();
        }
        let state = IssuerState::open(config, Arc::new(SystemClock)).await.unwrap();
        let app = keybound::issuer::router(state).unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
            .unwrap()
        });
        replicas.push(format!("http://{addr}"));
    }
    // The login proofs of both replicas share the Redis store: a replay is refused.
    let probe = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let body = login_body("admin@default", Some(ADMIN_PASSWORD), &probe);
    let login_url = format!("{issuer_id}/v1/login");
    let login_proof = ProofBuilder::new("POST", &login_url, b"", &body, now())
        .unwrap()
        .sign(&probe)
        .unwrap()
        .to_base64url();
    let mut login_statuses = Vec::new();
    for replica in &replicas {
        let response = reqwest::Client::new()
            .post(format!("{replica}/v1/login"))
            .header("content-type", "application/json")
            .header("kb-proof", &login_proof)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        login_statuses.push(response.status().as_u16());
    }
    assert_eq!(
        login_statuses,
        [200, 401],
        "a login proof is replay-checked across replicas"
    );
    let client = Client::new(&issuer_id, SigningKey::generate(Algorithm::EdDSA).unwrap()).unwrap();
    let key = client.key();
    client
        .login_password("admin@default", ADMIN_PASSWORD, None)
        .await
        .unwrap();
    let scope = Scope::new(format!("{issuer_id}/admin"))
        .project("admin")
        .domain("default");
    let token = client.service_token(&scope).await.unwrap();
    let target = format!("{issuer_id}/v1/admin/users");
    let proof = ProofBuilder::new("GET", &target, token.as_bytes(), b"", now())
        .unwrap()
        .sign(key)
        .unwrap()
        .to_base64url();
    let mut statuses = Vec::new();
    for replica in &replicas {
        let response = reqwest::Client::new()
            .get(format!("{replica}/v1/admin/users"))
            .header("authorization", format!("KB {}", token.to_base64url()))
            .header("kb-proof", &proof)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 401],
        "the second replica accepted a replayed admin proof"
    );
}

/// serde accepts a JSON array for a struct (its fields in order), so every
/// request body documented as an object is also accepted as an array:
/// `["name"]` creates a role, `[]` toggles a domain.
#[tokio::test]
async fn array_bodies_are_refused() {
    let c = Contract::load();
    let issuer = start(|_| {}).await;
    let admin = issuer.admin().await;
    for (method, template, path, body) in [
        ("POST", "/v1/admin/roles", "/v1/admin/roles", json!(["via-array"])),
        (
            "POST",
            "/v1/admin/domains/{name}/{action}",
            "/v1/admin/domains/default/enable",
            json!([]),
        ),
    ] {
        assert!(!c.is_valid(c.request_schema(method, template), &body));
        let answer = admin_call(&issuer, &admin, method, path, Some(&body)).await;
        assert_eq!(answer.status, 400, "{method} {path} {body}: {}", answer.text());
    }
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let body = json!([
        "admin@default",
        ADMIN_PASSWORD,
        b64url_encode(&key.public_key().to_cose_key(None)),
        null
    ]);
    let (answer, _) = login_raw(
        &issuer,
        &serde_json::to_vec(&body).unwrap(),
        Some("application/json"),
        LoginProof::By(&key),
    )
    .await;
    assert_eq!(answer.status, 400, "login with an array body: {}", answer.text());
}

// ---------------------------------------------------------------------------
// The issuer rows of spec/errors.md and the table of spec/issuer.md §11.

/// `(step, status, title)` of each `| `code` | step | status | title |` row of `markdown`.
fn error_rows(markdown: &str) -> BTreeMap<String, (String, String, String)> {
    markdown
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            // Only rows whose third column is an HTTP status (not the "what a client does" tables).
            cells.get(3)?.trim_end_matches('†').parse::<u16>().ok()?;
            Some((
                code.to_owned(),
                (
                    cells.get(2)?.to_string(),
                    cells.get(3)?.trim_end_matches('†').to_string(),
                    cells.get(4)?.to_string(),
                ),
            ))
        })
        .collect()
}

#[tokio::test]
async fn issuer_and_client_error_rows_match_the_code() {
    use http_body_util::BodyExt;
    let errors_md = error_rows(include_str!("../../spec/errors.md"));
    let issuer_md = error_rows(include_str!("../../spec/issuer.md"));
    for code in Code::ALL {
        let name = code.as_str();
        if !(name.starts_with("issuer.") || name.starts_with("client.")) {
            continue;
        }
        let response = keybound::http::error_response(&keybound::Error::new(*code, "x"), None);
        let status = response.status().as_u16().to_string();
        let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let expected = (
            code.step().to_owned(),
            status,
            body["title"].as_str().unwrap().to_owned(),
        );
        assert_eq!(errors_md.get(name), Some(&expected), "spec/errors.md row of {name}");
        if name.starts_with("issuer.") {
            assert_eq!(issuer_md.get(name), Some(&expected), "spec/issuer.md §11 row of {name}");
        }
    }
}
