//! The tower layer and axum extractor against real HTTP on loopback.
#![cfg(feature = "http")]

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use keybound::encoding::b64url_encode;
use keybound::http::{KeyboundLayer, ProofMode};
use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::policy::{MemoryRecords, Policy};
use keybound::proof::ProofBuilder;
use keybound::token::{Token, TokenBuilder};
use keybound::verify::{
    ManualClock, MemoryReplayStore, NonceService, ProvenOrBearer, TrustedIssuer, VerifiedRequest, Verifier,
    VerifierBuilder,
};
use serde_json::Value;

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "https://nova.example";
const NOW: u64 = 1_763_800_000;

struct World {
    issuer: SigningKey,
    kid: Vec<u8>,
    client: SigningKey,
    clock: Arc<ManualClock>,
}

impl World {
    fn new() -> Self {
        let issuer = SigningKey::derive(Algorithm::EdDSA, b"http-layer", b"issuer").unwrap();
        let kid = issuer.public_key().default_kid();
        World {
            issuer,
            kid,
            client: SigningKey::derive(Algorithm::EdDSA, b"http-layer", b"client").unwrap(),
            clock: Arc::new(ManualClock::new(NOW)),
        }
    }

    fn verifier(&self) -> VerifierBuilder {
        let keys = KeySet::new()
            .with(self.kid.clone(), self.issuer.public_key().clone())
            .unwrap();
        // A store that started before NOW: its fence lets the proofs through.
        let store = MemoryReplayStore::default().fenced_at(NOW - 3600);
        Verifier::builder(AUDIENCE, TrustedIssuer::with_keys(ISSUER, keys))
            .clock(self.clock.clone())
            .replay_store(Arc::new(store))
    }

    fn token_for(&self, audience: &str, roles: &[&str]) -> Token {
        TokenBuilder::service(
            ISSUER,
            "ayoung@stoughton",
            audience,
            self.client.public_key().clone(),
            NOW - 5,
        )
        .scope("stoughton", "turing")
        .roles(roles.iter().copied())
        .sign(&self.issuer, &self.kid)
        .unwrap()
    }

    fn token(&self) -> Token {
        self.token_for(AUDIENCE, &["member"])
    }
}

async fn whoami(request: VerifiedRequest) -> String {
    format!("{} {:?}", request.subject(), request.roles())
}

/// A route that opted in to requests admitted without a proof.
async fn either(request: ProvenOrBearer) -> String {
    let how = match &request {
        ProvenOrBearer::Proven(proven) => format!("proven jti={}", b64url_encode(proven.jti())),
        ProvenOrBearer::Bearer(_) => "bearer".to_owned(),
    };
    format!("{how} {} {:?}", request.subject(), request.roles())
}

/// Inner layers and handlers see the credentials marked sensitive.
async fn sensitive(headers: axum::http::HeaderMap) -> String {
    let marked = ["authorization", "kb-proof"]
        .iter()
        .all(|name| headers.get_all(*name).iter().all(|v| v.is_sensitive()));
    format!("sensitive={marked}")
}

async fn echo(request: VerifiedRequest, body: axum::body::Bytes) -> String {
    format!("{} sent {} bytes", request.subject(), body.len())
}

/// Serves `layer` on loopback; returns the base URL.
async fn serve(layer: KeyboundLayer) -> String {
    let app = Router::new()
        .route("/v2/servers", get(whoami).post(echo))
        .route("/v2/servers/{id}", get(whoami))
        .route("/either", get(either))
        .route("/unprotected", get(whoami))
        .route("/sensitive", get(sensitive))
        .layer(layer)
        .route("/misconfigured", get(whoami));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Reply {
    status: u16,
    code: Option<String>,
    www_authenticate: Option<String>,
    nonce: Option<String>,
    body: String,
}

async fn send(base: &str, method: &str, path: &str, headers: Vec<(&str, String)>, body: Vec<u8>) -> Reply {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (www_authenticate, nonce) = (header("www-authenticate"), header("kb-nonce"));
    let content_type = header("content-type");
    let body = response.text().await.unwrap();
    let code = if content_type.as_deref() == Some("application/problem+json") {
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], status, "{body}");
        assert_eq!(
            problem["type"],
            format!("urn:keybound:error:{}", problem["code"].as_str().unwrap())
        );
        Some(problem["code"].as_str().unwrap().to_owned())
    } else {
        None
    };
    Reply {
        status,
        code,
        www_authenticate,
        nonce,
        body,
    }
}

/// Sends a GET with exactly the given request target, bypassing client-side normalisation.
async fn raw_get(base: &str, path: &str, headers: &[(&str, String)]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn auth(token: &Token, proof: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("KB {}", token.to_base64url())),
        ("kb-proof", b64url_encode(proof)),
    ]
}

fn proof(world: &World, token: &Token, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    ProofBuilder::new(method, &format!("{AUDIENCE}{path}"), token.as_bytes(), body, NOW - 1)
        .unwrap()
        .sign(&world.client)
        .unwrap()
        .into_bytes()
}

#[tokio::test]
async fn accepts_signed_requests_and_refuses_every_kind_of_bad_one() {
    let world = World::new();
    let verifier = Arc::new(world.verifier().build().unwrap());
    let base = serve(KeyboundLayer::new(verifier, AUDIENCE).unwrap().max_body(1024)).await;
    let token = world.token();

    let p = proof(&world, &token, "GET", "/v2/servers", b"");
    let ok = send(&base, "GET", "/v2/servers", auth(&token, &p), vec![]).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ayoung@stoughton [\"member\"]"));

    let p = proof(&world, &token, "GET", "/sensitive", b"");
    let marked = send(&base, "GET", "/sensitive", auth(&token, &p), vec![]).await;
    assert_eq!((marked.status, marked.body.as_str()), (200, "sensitive=true"));

    let p = proof(&world, &token, "GET", "/v2/servers", b"");
    let _ = send(&base, "GET", "/v2/servers", auth(&token, &p), vec![]).await;
    let replay = send(&base, "GET", "/v2/servers", auth(&token, &p), vec![]).await;
    assert_eq!((replay.status, replay.code.as_deref()), (401, Some("replay.detected")));
    assert_eq!(replay.www_authenticate.as_deref(), Some("KB error=\"replay.detected\""));

    let body = br#"{"name":"vm1"}"#.to_vec();
    let p = proof(&world, &token, "POST", "/v2/servers", &body);
    let posted = send(&base, "POST", "/v2/servers", auth(&token, &p), body.clone()).await;
    assert_eq!(
        (posted.status, posted.body.as_str()),
        (200, "ayoung@stoughton sent 14 bytes")
    );

    let p = proof(&world, &token, "POST", "/v2/servers", &body);
    let tampered = send(
        &base,
        "POST",
        "/v2/servers",
        auth(&token, &p),
        br#"{"name":"vm2"}"#.to_vec(),
    )
    .await;
    assert_eq!(tampered.code.as_deref(), Some("proof.body_mismatch"));

    let p = proof(&world, &token, "GET", "/v2/servers/1", b"");
    let other_uri = send(&base, "GET", "/v2/servers/2", auth(&token, &p), vec![]).await;
    assert_eq!(other_uri.code.as_deref(), Some("proof.htu_mismatch"));

    let p = proof(&world, &token, "GET", "/v2/servers", b"");
    let wrong_method = send(&base, "DELETE", "/v2/servers", auth(&token, &p), vec![]).await;
    assert_eq!(wrong_method.code.as_deref(), Some("proof.htm_mismatch"));

    let no_proof = send(
        &base,
        "GET",
        "/v2/servers",
        vec![("authorization", format!("KB {}", token.to_base64url()))],
        vec![],
    )
    .await;
    assert_eq!(
        (no_proof.status, no_proof.code.as_deref()),
        (401, Some("proof.missing"))
    );

    let no_token = send(&base, "GET", "/v2/servers", vec![], vec![]).await;
    assert_eq!(no_token.code.as_deref(), Some("http.token_missing"));

    let p = proof(&world, &token, "GET", "/v2/servers", b"");
    let bearer = send(
        &base,
        "GET",
        "/v2/servers",
        vec![
            ("authorization", format!("Bearer {}", token.to_base64url())),
            ("kb-proof", b64url_encode(&p)),
        ],
        vec![],
    )
    .await;
    assert_eq!(bearer.code.as_deref(), Some("http.scheme"));
    assert!(
        bearer.body.contains("scheme \\\"Bearer\\\" is not KB"),
        "a scheme is named: {}",
        bearer.body
    );
    // A bare credential without a scheme is refused and never echoed, not
    // even its first characters.
    let bare = send(
        &base,
        "GET",
        "/v2/servers",
        vec![("authorization", token.to_base64url()), ("kb-proof", b64url_encode(&p))],
        vec![],
    )
    .await;
    assert_eq!(bare.code.as_deref(), Some("http.scheme"));
    // The token is checked before the body is read: a token for another
    // service with an oversized body is refused for the token.
    let foreign = world.token_for("https://glance.example", &["member"]);
    let p = proof(&world, &foreign, "POST", "/v2/servers", &[0; 4096]);
    let refused = send(&base, "POST", "/v2/servers", auth(&foreign, &p), vec![0; 4096]).await;
    assert_eq!(refused.code.as_deref(), Some("cwt.aud_mismatch"));
    // With a valid token the same body is refused for its size.
    let p = proof(&world, &token, "POST", "/v2/servers", &[0; 4096]);
    let large = send(&base, "POST", "/v2/servers", auth(&token, &p), vec![0; 4096]).await;
    assert_eq!(
        (large.status, large.code.as_deref()),
        (413, Some("http.body_too_large"))
    );
    assert!(!bare.body.contains(&token.to_base64url()[..8]), "{}", bare.body);

    let mut two = auth(&token, &p);
    two.push(("authorization", format!("KB {}", token.to_base64url())));
    assert_eq!(
        send(&base, "GET", "/v2/servers", two, vec![]).await.code.as_deref(),
        Some("http.token_multiple")
    );

    let mut two_proofs = auth(&token, &p);
    two_proofs.push(("kb-proof", b64url_encode(&p)));
    assert_eq!(
        send(&base, "GET", "/v2/servers", two_proofs, vec![])
            .await
            .code
            .as_deref(),
        Some("proof.multiple")
    );

    let garbled = vec![
        ("authorization", "KB not+base64url=".to_owned()),
        ("kb-proof", b64url_encode(&p)),
    ];
    assert_eq!(
        send(&base, "GET", "/v2/servers", garbled, vec![]).await.code.as_deref(),
        Some("http.token_malformed")
    );

    let huge = vec![
        ("authorization", format!("KB {}", "A".repeat(9000))),
        ("kb-proof", b64url_encode(&p)),
    ];
    let too_large = send(&base, "GET", "/v2/servers", huge, vec![]).await;
    assert_eq!(
        (too_large.status, too_large.code.as_deref()),
        (431, Some("http.header_too_large"))
    );

    let big_body = vec![b'x'; 2048];
    let p = proof(&world, &token, "POST", "/v2/servers", &big_body);
    let too_big = send(&base, "POST", "/v2/servers", auth(&token, &p), big_body).await;
    assert_eq!(
        (too_big.status, too_big.code.as_deref()),
        (413, Some("http.body_too_large"))
    );

    // HTTP clients normalise dot segments away, so this one is sent raw.
    let p = proof(&world, &token, "GET", "/v2/servers", b"");
    for path in ["/v2/x/../servers", "/v2/%2e%2E/v2/servers"] {
        let raw = raw_get(&base, path, &auth(&token, &p)).await;
        assert!(
            raw.starts_with("HTTP/1.1 400") && raw.contains("http.path_not_normalized"),
            "{path}: {raw}"
        );
    }

    let glance = world.token_for("https://glance.example", &["member"]);
    let p = proof(&world, &glance, "GET", "/v2/servers", b"");
    assert_eq!(
        send(&base, "GET", "/v2/servers", auth(&glance, &p), vec![])
            .await
            .code
            .as_deref(),
        Some("cwt.aud_mismatch")
    );

    world.clock.advance(120);
    let p = proof(&world, &token, "GET", "/v2/servers", b"");
    let stale = send(&base, "GET", "/v2/servers", auth(&token, &p), vec![]).await;
    assert_eq!(stale.code.as_deref(), Some("proof.stale"));
    assert!(stale.body.contains("old"), "the message says how old: {}", stale.body);

    // A route outside the layer that asks for a VerifiedRequest fails closed.
    let misconfigured = send(&base, "GET", "/misconfigured", vec![], vec![]).await;
    assert_eq!(misconfigured.status, 500);
    assert_eq!(misconfigured.code.as_deref(), Some("http.layer_missing"));
}

#[tokio::test]
async fn the_external_base_url_not_the_host_header_defines_the_target() {
    let world = World::new();
    let verifier = Arc::new(world.verifier().build().unwrap());
    for bad in [
        "https://api.example/compute?x=1",
        "ftp://api.example/",
        "https://user@api.example/",
    ] {
        let refused = KeyboundLayer::new(verifier.clone(), bad).unwrap_err();
        assert_eq!(refused.code(), keybound::Code::ConfigInvalid, "{bad}");
    }
    // Behind a proxy that strips /compute and terminates TLS.
    let base = serve(KeyboundLayer::new(verifier, "https://api.example/compute").unwrap()).await;
    let token = world.token();
    let signed_for = |uri: &str| {
        ProofBuilder::new("GET", uri, token.as_bytes(), b"", NOW - 1)
            .unwrap()
            .sign(&world.client)
            .unwrap()
            .into_bytes()
    };
    let p = signed_for("https://api.example/compute/v2/servers");
    assert_eq!(
        send(&base, "GET", "/v2/servers", auth(&token, &p), vec![]).await.status,
        200
    );
    // A proof for the internal address the server happens to see is refused,
    // whatever Host or X-Forwarded-Host say.
    let internal = signed_for(&format!("{base}/v2/servers"));
    let mut headers = auth(&token, &internal);
    headers.push(("x-forwarded-host", base.trim_start_matches("http://").to_owned()));
    assert_eq!(
        send(&base, "GET", "/v2/servers", headers, vec![]).await.code.as_deref(),
        Some("proof.htu_mismatch")
    );
}

#[tokio::test]
async fn nonce_challenge_then_retry() {
    let world = World::new();
    let nonces = Arc::new(NonceService::new(&[9; 32], AUDIENCE, 60).unwrap());
    let verifier = Arc::new(world.verifier().nonce_service(nonces.clone()).build().unwrap());
    let base = serve(KeyboundLayer::new(verifier, AUDIENCE).unwrap()).await;
    let token = world.token();
    let p = proof(&world, &token, "GET", "/v2/servers", b"");
    let challenge = send(&base, "GET", "/v2/servers", auth(&token, &p), vec![]).await;
    assert_eq!(
        (challenge.status, challenge.code.as_deref()),
        (401, Some("proof.nonce_required"))
    );
    let nonce = keybound::encoding::b64url_decode(challenge.nonce.as_deref().expect("a KB-Nonce header")).unwrap();
    let p = ProofBuilder::new("GET", &format!("{AUDIENCE}/v2/servers"), token.as_bytes(), b"", NOW - 1)
        .unwrap()
        .nonce(nonce.clone())
        .sign(&world.client)
        .unwrap();
    let retried = send(&base, "GET", "/v2/servers", auth(&token, p.as_bytes()), vec![]).await;
    assert_eq!(retried.status, 200);
    assert!(retried.nonce.is_some(), "successful answers carry the current nonce");
    // Two epochs later the nonce is refused, with a fresh one to retry with.
    world.clock.advance(125);
    let token_late = TokenBuilder::service(
        ISSUER,
        "ayoung@stoughton",
        AUDIENCE,
        world.client.public_key().clone(),
        NOW + 120,
    )
    .sign(&world.issuer, &world.kid)
    .unwrap();
    let late = ProofBuilder::new(
        "GET",
        &format!("{AUDIENCE}/v2/servers"),
        token_late.as_bytes(),
        b"",
        NOW + 124,
    )
    .unwrap()
    .nonce(nonce)
    .sign(&world.client)
    .unwrap();
    let expired = send(&base, "GET", "/v2/servers", auth(&token_late, late.as_bytes()), vec![]).await;
    assert_eq!(expired.code.as_deref(), Some("proof.nonce_invalid"));
    assert!(expired.nonce.is_some_and(|n| n != challenge.nonce.unwrap()));
}

const POLICY: &str = r#"
[[rule]]
name = "list servers"
method = "GET"
path = "/v2/servers"
roles = ["reader", "member"]
[[rule]]
method = "GET"
path = "/v2/servers/{id}"
roles = ["admin"]
"#;

#[tokio::test]
async fn policy_enforce_permissive_and_off() {
    let world = World::new();
    let token = world.token();
    // Enforce records the denial, permissive every decision, off nothing.
    for (mode, expected_status, expected_records) in [("enforce", 403, 1), ("permissive", 200, 2), ("off", 200, 0)] {
        let records = Arc::new(MemoryRecords::new());
        let policy = Policy::from_toml(&format!("mode = \"{mode}\"\n{POLICY}")).unwrap();
        let verifier = Arc::new(world.verifier().build().unwrap());
        let layer = KeyboundLayer::new(verifier, AUDIENCE)
            .unwrap()
            .policy(Arc::new(policy))
            .records(records.clone());
        let base = serve(layer).await;
        let p = proof(&world, &token, "GET", "/v2/servers", b"");
        assert_eq!(
            send(&base, "GET", "/v2/servers", auth(&token, &p), vec![]).await.status,
            200,
            "{mode}: allowed by rule"
        );
        let p = proof(&world, &token, "GET", "/v2/servers/42", b"");
        let reply = send(&base, "GET", "/v2/servers/42", auth(&token, &p), vec![]).await;
        assert_eq!(reply.status, expected_status, "{mode}");
        if expected_status == 403 {
            assert_eq!(reply.code.as_deref(), Some("policy.denied"));
        }
        let records = records.records();
        assert_eq!(records.len(), expected_records, "{mode}: {records:?}");
        if mode == "permissive" {
            let allowed = &records[0];
            assert_eq!(allowed["outcome"], "allow");
            assert_eq!(allowed["rule"], "list servers");
            assert_eq!(allowed["reason"], Value::Null);
            assert_eq!(allowed["roles_allowing"], serde_json::json!(["reader", "member"]));
        }
        if let Some(r) = records.last() {
            assert_eq!(r["event"], "policy_decision");
            assert_eq!(r["mode"], mode);
            assert_eq!(r["subject"], "ayoung@stoughton");
            assert_eq!(r["issuer"], ISSUER);
            assert_eq!(r["audience"], AUDIENCE);
            assert_eq!(
                r["action"],
                serde_json::json!({"method": "GET", "path": "/v2/servers/42"})
            );
            assert_eq!(r["roles_held"], serde_json::json!(["member"]));
            assert_eq!(r["rule"], "GET /v2/servers/{id}");
            assert_eq!(r["roles_allowing"], serde_json::json!(["admin"]));
            assert_eq!(r["actors"], serde_json::json!([]));
            assert_eq!(r["trust_id"], Value::Null);
            assert_eq!(r["reason"], "missing_role");
            assert_eq!(r["outcome"], if mode == "enforce" { "deny" } else { "would_deny" });
            assert_eq!(r["workflow"], Value::Null);
        }
    }
}

/// `record = "all"` makes an enforcing service record its allowing
/// decisions too; the workflow header labels them.
#[tokio::test]
async fn enforce_mode_records_every_decision_when_asked() {
    let world = World::new();
    let token = world.token();
    let records = Arc::new(MemoryRecords::new());
    let policy = Policy::from_toml(&format!("mode = \"enforce\"\nrecord = \"all\"\n{POLICY}")).unwrap();
    let layer = KeyboundLayer::new(Arc::new(world.verifier().build().unwrap()), AUDIENCE)
        .unwrap()
        .policy(Arc::new(policy))
        .records(records.clone());
    let base = serve(layer).await;
    let mut headers = auth(&token, &proof(&world, &token, "GET", "/v2/servers", b""));
    headers.push(("kb-workflow", "deploy-7".to_owned()));
    assert_eq!(send(&base, "GET", "/v2/servers", headers, vec![]).await.status, 200);
    let p = proof(&world, &token, "GET", "/v2/servers/42", b"");
    assert_eq!(
        send(&base, "GET", "/v2/servers/42", auth(&token, &p), vec![])
            .await
            .status,
        403
    );
    let records = records.records();
    let seen: Vec<(&Value, &Value, &Value)> = records
        .iter()
        .map(|r| (&r["outcome"], &r["reason"], &r["workflow"]))
        .collect();
    assert_eq!(
        seen,
        [
            (
                &serde_json::json!("allow"),
                &Value::Null,
                &serde_json::json!("deploy-7")
            ),
            (
                &serde_json::json!("deny"),
                &serde_json::json!("missing_role"),
                &Value::Null
            ),
        ]
    );
    // Without `record`, an enforcing service records only its denials.
    assert_eq!(
        Policy::from_toml("mode = \"enforce\"").unwrap().record_scope(),
        keybound::policy::RecordScope::Denials
    );
    assert_eq!(
        Policy::from_toml("mode = \"permissive\"\nrecord = \"denials\"")
            .unwrap()
            .record_scope(),
        keybound::policy::RecordScope::Denials
    );
}

fn bearer_header(token: &Token) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("KB {}", token.to_base64url()))]
}

#[tokio::test]
async fn bearer_rollout_admits_and_records_tokens_without_proof() {
    let world = World::new();
    let records = Arc::new(MemoryRecords::new());
    let verifier = Arc::new(world.verifier().build().unwrap());
    let layer = KeyboundLayer::new(verifier, AUDIENCE)
        .unwrap()
        .proof_mode(ProofMode::BearerAllowed)
        .records(records.clone());
    let base = serve(layer).await;
    let token = world.token();
    // A route that extracts ProvenOrBearer sees Bearer for a request without a proof…
    let bearer = send(&base, "GET", "/either", bearer_header(&token), vec![]).await;
    assert_eq!(
        (bearer.status, bearer.body.as_str()),
        (200, "bearer ayoung@stoughton [\"member\"]")
    );
    let records = records.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["event"], "bearer_use");
    assert_eq!(records[0]["path"], "/either");
    assert_eq!(records[0]["subject"], "ayoung@stoughton");
    // …and Proven, with its proof's jti, for one with a proof.
    let jti = [7; keybound::proof::JTI_LEN];
    let p = ProofBuilder::new("GET", &format!("{AUDIENCE}/either"), token.as_bytes(), b"", NOW - 1)
        .unwrap()
        .jti(jti)
        .sign(&world.client)
        .unwrap()
        .into_bytes();
    let proven = send(&base, "GET", "/either", auth(&token, &p), vec![]).await;
    assert_eq!(
        (proven.status, proven.body),
        (
            200,
            format!("proven jti={} ayoung@stoughton [\"member\"]", b64url_encode(&jti))
        )
    );
    // A proof that is present is still checked.
    let p = proof(&world, &token, "GET", "/v2/other", b"");
    assert_eq!(
        send(&base, "GET", "/either", auth(&token, &p), vec![])
            .await
            .code
            .as_deref(),
        Some("proof.htu_mismatch")
    );
    // The token itself is still fully verified.
    let glance = world.token_for("https://glance.example", &[]);
    let reply = send(&base, "GET", "/either", bearer_header(&glance), vec![]).await;
    assert_eq!(reply.code.as_deref(), Some("cwt.aud_mismatch"));
}

/// In bearer rollout mode a handler that takes a `VerifiedRequest` still
/// never runs without a proof: the extractor answers what the layer answers
/// a request without a proof in strict mode.
#[tokio::test]
async fn a_verified_request_handler_refuses_bearer_requests_in_bearer_mode() {
    let world = World::new();
    let token = world.token();
    let layer = |mode| {
        let verifier = Arc::new(world.verifier().build().unwrap());
        KeyboundLayer::new(verifier, AUDIENCE).unwrap().proof_mode(mode)
    };
    let rollout = serve(layer(ProofMode::BearerAllowed)).await;
    let strict = serve(layer(ProofMode::Required)).await;
    let refused = send(&rollout, "GET", "/v2/servers", bearer_header(&token), vec![]).await;
    assert_eq!((refused.status, refused.code.as_deref()), (401, Some("proof.missing")));
    let in_strict_mode = send(&strict, "GET", "/v2/servers", bearer_header(&token), vec![]).await;
    assert_eq!(
        (refused.status, &refused.code, &refused.www_authenticate, &refused.body),
        (
            in_strict_mode.status,
            &in_strict_mode.code,
            &in_strict_mode.www_authenticate,
            &in_strict_mode.body
        )
    );
    // A proven request is served by the same handler.
    let p = proof(&world, &token, "GET", "/v2/servers", b"");
    let served = send(&rollout, "GET", "/v2/servers", auth(&token, &p), vec![]).await;
    assert_eq!(
        (served.status, served.body.as_str()),
        (200, "ayoung@stoughton [\"member\"]")
    );
}

/// The layer's own policy check (A1) and a handler's named operation both
/// apply to bearer requests, through `authorize_bearer`.
#[tokio::test]
async fn bearer_requests_are_authorized_by_the_same_policy() {
    use axum::Extension;
    use axum::response::{IntoResponse, Response};
    use keybound::http::PolicyHandle;

    async fn resize(request: ProvenOrBearer, Extension(policy): Extension<PolicyHandle>) -> Response {
        let decision = match &request {
            ProvenOrBearer::Proven(proven) => policy.authorize(proven, "compute:resize"),
            ProvenOrBearer::Bearer(bearer) => policy.authorize_bearer(bearer, "compute:resize"),
        };
        match decision {
            Ok(()) => "resized".into_response(),
            Err(e) => keybound::http::error_response(&e, None),
        }
    }

    let world = World::new();
    let records = Arc::new(MemoryRecords::new());
    let policy = Policy::from_toml(&format!(
        "mode = \"enforce\"\n{POLICY}\n[[rule]]\nmethod = \"POST\"\npath = \"/v2/servers/*/action\"\nroles = []\n\
         [[rule]]\noperation = \"compute:resize\"\nroles = [\"admin\"]\n"
    ))
    .unwrap();
    let layer = KeyboundLayer::new(Arc::new(world.verifier().build().unwrap()), AUDIENCE)
        .unwrap()
        .proof_mode(ProofMode::BearerAllowed)
        .policy(Arc::new(policy))
        .records(records.clone());
    let app = Router::new()
        .route("/v2/servers", get(either))
        .route("/v2/servers/{id}", get(either))
        .route("/v2/servers/{id}/action", axum::routing::post(resize))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let member = world.token(); // roles: member
    let allowed = send(&base, "GET", "/v2/servers", bearer_header(&member), vec![]).await;
    assert_eq!(
        (allowed.status, allowed.body.as_str()),
        (200, "bearer ayoung@stoughton [\"member\"]")
    );
    let denied = send(&base, "GET", "/v2/servers/42", bearer_header(&member), vec![]).await;
    assert_eq!((denied.status, denied.code.as_deref()), (403, Some("policy.denied")));
    let resize_denied = send(&base, "POST", "/v2/servers/7/action", bearer_header(&member), vec![]).await;
    assert_eq!(
        (resize_denied.status, resize_denied.code.as_deref()),
        (403, Some("policy.denied"))
    );
    let admin = world.token_for(AUDIENCE, &["admin"]);
    let resized = send(&base, "POST", "/v2/servers/7/action", bearer_header(&admin), vec![]).await;
    assert_eq!((resized.status, resized.body.as_str()), (200, "resized"));

    let records = records.records();
    let events: Vec<_> = records.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "bearer_use",
            "bearer_use",
            "policy_decision",
            "bearer_use",
            "policy_decision",
            "bearer_use"
        ]
    );
    assert_eq!(
        records[2]["action"],
        serde_json::json!({"method": "GET", "path": "/v2/servers/42"})
    );
    assert_eq!(records[4]["action"], serde_json::json!({"operation": "compute:resize"}));
    assert_eq!(records[4]["outcome"], "deny");
}

#[tokio::test]
async fn handlers_check_named_operations_under_the_layers_policy() {
    use axum::Extension;
    use axum::response::{IntoResponse, Response};
    use keybound::http::PolicyHandle;

    async fn resize(request: VerifiedRequest, Extension(policy): Extension<PolicyHandle>) -> Response {
        match policy.authorize(&request, "compute:resize") {
            Ok(()) => "resized".into_response(),
            Err(e) => keybound::http::error_response(&e, None),
        }
    }

    let world = World::new();
    let token = world.token(); // roles: member
    // Permissive mode also records the layer's own (allowing) decision.
    for (mode, status, records_expected) in [("enforce", 403, 1), ("permissive", 200, 2)] {
        let policy = Policy::from_toml(&format!(
            "mode = \"{mode}\"\n[[rule]]\nmethod = \"POST\"\npath = \"/v2/servers/*/action\"\nroles = []\n\
             [[rule]]\noperation = \"compute:resize\"\nroles = [\"admin\"]\n"
        ))
        .unwrap();
        let records = Arc::new(MemoryRecords::new());
        let layer = KeyboundLayer::new(Arc::new(world.verifier().build().unwrap()), AUDIENCE)
            .unwrap()
            .policy(Arc::new(policy))
            .records(records.clone());
        let app = Router::new()
            .route("/v2/servers/{id}/action", axum::routing::post(resize))
            .layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let p = proof(&world, &token, "POST", "/v2/servers/7/action", b"");
        let reply = send(&base, "POST", "/v2/servers/7/action", auth(&token, &p), vec![]).await;
        assert_eq!(reply.status, status, "{mode}: {}", reply.body);
        let records = records.records();
        assert_eq!(records.len(), records_expected, "{mode}");
        let last = records.last().unwrap();
        assert_eq!(last["action"], serde_json::json!({"operation": "compute:resize"}));
        assert_eq!(last["roles_allowing"], serde_json::json!(["admin"]));
    }
}

/// `GET /v2/%73ervers` with a proof for `/v2/servers` used to pass P7 (whose
/// normalisation decodes `%73`) while the policy matched the raw path and the
/// router another route: H1 refuses percent-encoded unreserved characters, so
/// the proof, the route and the policy always see one path.
#[tokio::test]
async fn percent_encoded_unreserved_characters_in_the_path_are_refused() {
    let world = World::new();
    let token = world.token();
    let policy = Policy::from_toml(&format!("mode = \"enforce\"\n{POLICY}")).unwrap();
    let layer = KeyboundLayer::new(Arc::new(world.verifier().build().unwrap()), AUDIENCE)
        .unwrap()
        .policy(Arc::new(policy));
    let base = serve(layer).await;
    for path in [
        "/v2/%73ervers",
        "/v2/servers/%34%32",
        "/v2/servers/4%2D2",
        "/v2/servers/%7e",
    ] {
        // A proof for the decoded path: P7 alone would accept it.
        let decoded = path
            .replace("%73", "s")
            .replace("%34%32", "42")
            .replace("%2D", "-")
            .replace("%7e", "~");
        let p = proof(&world, &token, "GET", &decoded, b"");
        let raw = raw_get(&base, path, &auth(&token, &p)).await;
        assert!(
            raw.starts_with("HTTP/1.1 400") && raw.contains("http.path_not_normalized"),
            "{path}: {raw}"
        );
    }
    // Reserved and non-ASCII characters stay percent-encoded and are not refused.
    let p = proof(&world, &token, "GET", "/v2/servers/a%2Fb%C3%A9", b"");
    let raw = raw_get(&base, "/v2/servers/a%2Fb%C3%A9", &auth(&token, &p)).await;
    assert!(
        raw.starts_with("HTTP/1.1 403") && raw.contains("policy.denied"),
        "{raw}"
    );
}

/// `Authorization: KB<TAB>token` names the right scheme with a malformed
/// credential: `http.token_malformed`, not `http.scheme`.
#[tokio::test]
async fn kb_followed_by_a_tab_is_a_malformed_credential() {
    let world = World::new();
    let token = world.token();
    let base = serve(KeyboundLayer::new(Arc::new(world.verifier().build().unwrap()), AUDIENCE).unwrap()).await;
    let p = proof(&world, &token, "GET", "/v2/servers", b"");
    let mut headers = auth(&token, &p);
    headers[0].1 = format!("KB\t{}", token.to_base64url());
    let reply = send(&base, "GET", "/v2/servers", headers, vec![]).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.code.as_deref(), Some("http.token_malformed"), "{}", reply.body);
    assert!(reply.body.contains("not a tab"), "{}", reply.body);
}

/// The verification-metrics hook: every decision of the layer, admitted or
/// refused, reaches the observer with its code and the layer's time, and
/// `VerificationMetrics` renders them (issue 15: services get outcomes by
/// code, a latency histogram and the key-set age through one hook).
#[tokio::test]
async fn the_observer_sees_every_outcome_with_its_code() {
    use keybound::http::VerificationMetrics;
    let world = World::new();
    let verifier = Arc::new(world.verifier().build().unwrap());
    let metrics = Arc::new(VerificationMetrics::default());
    let base = serve(KeyboundLayer::new(verifier, AUDIENCE).unwrap().observe(metrics.clone())).await;
    let token = world.token();
    let p = proof(&world, &token, "GET", "/v2/servers", b"");
    assert_eq!(
        send(&base, "GET", "/v2/servers", auth(&token, &p), vec![]).await.status,
        200
    );
    assert_eq!(
        send(&base, "GET", "/v2/servers", auth(&token, &p), vec![]).await.status,
        401
    );
    assert_eq!(send(&base, "GET", "/v2/servers", vec![], vec![]).await.status, 401);
    let text = metrics.render();
    assert!(
        text.contains("keybound_verifications_total{outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("keybound_verifications_total{outcome=\"replay.detected\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("keybound_verifications_total{outcome=\"http.token_missing\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("keybound_verification_duration_seconds_count 3"),
        "{text}"
    );
    // Requests outside the layer are not counted.
    let _ = send(&base, "GET", "/misconfigured", vec![], vec![]).await;
    assert!(
        metrics
            .render()
            .contains("keybound_verification_duration_seconds_count 3")
    );
}
