//! Routing slips (spec/delegation.md §10) at a service, over real HTTP on
//! loopback: steps S1–S8 in the HTTP layer with every refusal code, what a
//! handler sees, decision records, a slip carried in a queued message; and
//! the client's next-hop mint against a real issuer.
#![cfg(feature = "http")]

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use keybound::Code;
use keybound::delegation::slip::{Slip, SlipBuilder};
use keybound::encoding::b64url_encode;
use keybound::http::{KeyboundLayer, ProofMode};
use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::policy::{MemoryRecords, Policy};
use keybound::proof::ProofBuilder;
use keybound::token::{Actor, Token, TokenBuilder};
use keybound::verify::{ManualClock, MemoryReplayStore, ProvenOrBearer, TrustedIssuer, VerifiedRequest, Verifier};
use serde_json::{Value, json};

#[cfg(feature = "issuer")]
use crate::common;

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "https://glance.example";
const NOW: u64 = 1_763_800_000;
const TRUST: &str = "2Qf3mV0cZ8bq1Xo4yT6wUg";
const OTHER_TRUST: &str = "nEuTrOnTrUsT0123456789";
const SUBJECT: &str = "ayoung@stoughton";
const NOVA: &str = "nova-compute@service";

struct World {
    issuer: SigningKey,
    kid: Vec<u8>,
    /// The trustee's key: a delegated token's cnf.
    client: SigningKey,
}

impl World {
    fn new() -> Self {
        let issuer = SigningKey::derive(Algorithm::EdDSA, b"slips", b"issuer").unwrap();
        World {
            kid: issuer.public_key().default_kid(),
            issuer,
            client: SigningKey::derive(Algorithm::EdDSA, b"slips", b"trustee").unwrap(),
        }
    }

    fn verifier(&self) -> Verifier {
        let keys = KeySet::new()
            .with(self.kid.clone(), self.issuer.public_key().clone())
            .unwrap();
        Verifier::builder(AUDIENCE, TrustedIssuer::with_keys(ISSUER, keys))
            .clock(Arc::new(ManualClock::new(NOW)))
            .replay_store(Arc::new(MemoryReplayStore::default().fenced_at(NOW - 3600)))
            .build()
            .unwrap()
    }

    fn token(&self, trust: Option<&str>) -> Token {
        let mut builder = TokenBuilder::service(ISSUER, SUBJECT, AUDIENCE, self.client.public_key().clone(), NOW - 5)
            .scope("stoughton", "turing")
            .roles(["reader"]);
        if let Some(trust) = trust {
            builder = builder.trust_id(trust).actor_chain(vec![Actor {
                sub: NOVA.into(),
                iss: None,
            }]);
        }
        builder.sign(&self.issuer, &self.kid).unwrap()
    }

    /// The seed's workflow: nova-compute reads from glance (TRUST) and
    /// asks neutron for a port.
    fn slip_builder(&self) -> SlipBuilder {
        SlipBuilder::new(ISSUER, "deploy-instance", SUBJECT, NOW - 60, NOW + 3600)
            .hop(NOVA, AUDIENCE, TRUST)
            .hop(NOVA, "https://neutron.example", OTHER_TRUST)
    }

    fn slip(&self) -> Slip {
        self.slip_builder().sign(&self.issuer, &self.kid).unwrap()
    }
}

async fn images(request: VerifiedRequest) -> String {
    match request.slip() {
        Some(slip) => format!(
            "{} {} via {} hops={} id={}",
            slip.workflow(),
            slip.trustor(),
            request.current_actor().unwrap_or("-"),
            slip.hops().len(),
            slip.workflow_id_base64url()
        ),
        None => "no slip".into(),
    }
}

async fn either(request: ProvenOrBearer) -> String {
    request.slip().map_or("no slip".into(), |s| s.workflow().to_owned())
}

const POLICY: &str = r#"
mode = "permissive"
delegated = "allow"
[[rule]]
method = "GET"
path = "/images"
roles = ["writer"]
[[rule]]
method = "GET"
path = "/either"
roles = ["writer"]
"#;

async fn serve(world: &World, records: Arc<MemoryRecords>, mode: ProofMode) -> String {
    let layer = KeyboundLayer::new(Arc::new(world.verifier()), AUDIENCE)
        .unwrap()
        .policy(Arc::new(Policy::from_toml(POLICY).unwrap()))
        .records(records)
        .proof_mode(mode);
    let app = Router::new()
        .route("/images", get(images))
        .route("/either", get(either))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// What a request sends: the token, whether to prove it, the `KB-Slip` values.
struct Send<'a> {
    token: &'a Token,
    proof: Option<Vec<u8>>,
    slips: Vec<String>,
    path: &'a str,
}

impl<'a> Send<'a> {
    fn new(world: &World, token: &'a Token, slips: &[&str]) -> Self {
        Send {
            token,
            proof: Some(proof(world, token, "/images")),
            slips: slips.iter().map(|s| (*s).to_owned()).collect(),
            path: "/images",
        }
    }
}

fn proof(world: &World, token: &Token, path: &str) -> Vec<u8> {
    ProofBuilder::new("GET", &format!("{AUDIENCE}{path}"), token.as_bytes(), b"", NOW - 1)
        .unwrap()
        .sign(&world.client)
        .unwrap()
        .into_bytes()
}

/// Sends the request; returns the status and the problem code or the body.
async fn send(base: &str, request: &Send<'_>) -> (u16, String) {
    let mut builder = reqwest::Client::new()
        .get(format!("{base}{}", request.path))
        .header("authorization", format!("KB {}", request.token.to_base64url()));
    if let Some(proof) = &request.proof {
        builder = builder.header("kb-proof", b64url_encode(proof));
    }
    for slip in &request.slips {
        builder = builder.header("kb-slip", slip);
    }
    let response = builder.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    let shown = match serde_json::from_str::<Value>(&body) {
        Ok(problem) if problem.get("code").is_some() => problem["code"].as_str().unwrap().to_owned(),
        _ => body,
    };
    (status, shown)
}

/// The refusal of a delegated request (trust TRUST, actor nova-compute)
/// carrying `slip` in KB-Slip: its status and code. The proof was not
/// consumed: the same request without the slip then passes.
async fn refusal(world: &World, slip: &str) -> (u16, String) {
    let base = serve(world, Arc::new(MemoryRecords::new()), ProofMode::Required).await;
    let token = world.token(Some(TRUST));
    let request = Send::new(world, &token, &[slip]);
    let refused = send(&base, &request).await;
    let again = send(
        &base,
        &Send {
            slips: Vec::new(),
            ..request
        },
    )
    .await;
    assert_eq!(again, (200, "no slip".into()), "the refused slip consumed the proof");
    refused
}

fn signed(builder: SlipBuilder, key: &SigningKey, kid: &[u8]) -> String {
    builder.sign(key, kid).unwrap().to_base64url()
}

#[tokio::test]
async fn handler_sees_the_slip_of_a_request_by_its_trustor() {
    let world = World::new();
    let base = serve(&world, Arc::new(MemoryRecords::new()), ProofMode::Required).await;
    let token = world.token(None);
    let slip = world.slip();
    let (status, body) = send(&base, &Send::new(&world, &token, &[&slip.to_base64url()])).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("deploy-instance ayoung@stoughton via - hops=2 id="),
        "{body}"
    );
}

#[tokio::test]
async fn handler_sees_the_slip_of_a_delegated_request_matching_its_hop() {
    let world = World::new();
    let base = serve(&world, Arc::new(MemoryRecords::new()), ProofMode::Required).await;
    let token = world.token(Some(TRUST));
    let slip = world.slip().to_base64url();
    let (status, body) = send(&base, &Send::new(&world, &token, &[&slip])).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("deploy-instance ayoung@stoughton via nova-compute@service hops=2"),
        "{body}"
    );
}

#[tokio::test]
async fn request_without_a_slip_is_verified_as_before() {
    let world = World::new();
    let base = serve(&world, Arc::new(MemoryRecords::new()), ProofMode::Required).await;
    for trust in [None, Some(TRUST)] {
        let token = world.token(trust);
        assert_eq!(
            send(&base, &Send::new(&world, &token, &[])).await,
            (200, "no slip".into())
        );
    }
}

#[tokio::test]
async fn slip_malformed_for_bad_encoding_two_headers_a_list_and_a_token() {
    let world = World::new();
    let slip = world.slip().to_base64url();
    let token = world.token(Some(TRUST)).to_base64url();
    let list = format!("{slip},{slip}");
    for bad in ["", "not base64url!", &format!("{slip}="), &list, &token] {
        assert_eq!(refusal(&world, bad).await, (400, "slip.malformed".into()), "{bad:.12}");
    }
    // Two field lines.
    let base = serve(&world, Arc::new(MemoryRecords::new()), ProofMode::Required).await;
    let delegated = world.token(Some(TRUST));
    let two = send(&base, &Send::new(&world, &delegated, &[&slip, &slip])).await;
    assert_eq!(two, (400, "slip.malformed".into()));
}

#[tokio::test]
async fn slip_header_over_the_limit_is_http_header_too_large() {
    let world = World::new();
    assert_eq!(
        refusal(&world, &"A".repeat(8193)).await,
        (431, "http.header_too_large".into())
    );
}

#[tokio::test]
async fn slip_issuer_unknown_when_its_issuer_is_not_trusted() {
    let world = World::new();
    let slip = SlipBuilder::new(
        "https://other.example",
        "deploy-instance",
        SUBJECT,
        NOW - 60,
        NOW + 3600,
    )
    .hop(NOVA, AUDIENCE, TRUST);
    let slip = signed(slip, &world.issuer, &world.kid);
    assert_eq!(refusal(&world, &slip).await, (403, "slip.issuer_unknown".into()));
}

#[tokio::test]
async fn slip_key_unknown_when_its_kid_is_not_in_the_issuers_set() {
    let world = World::new();
    let slip = signed(world.slip_builder(), &world.issuer, b"another-kid");
    assert_eq!(refusal(&world, &slip).await, (403, "slip.key_unknown".into()));
}

#[tokio::test]
async fn slip_bad_signature_when_signed_by_another_key() {
    let world = World::new();
    let attacker = SigningKey::derive(Algorithm::EdDSA, b"slips", b"attacker").unwrap();
    let slip = signed(world.slip_builder(), &attacker, &world.kid);
    assert_eq!(refusal(&world, &slip).await, (403, "slip.bad_signature".into()));
    // An ES256 key under the Ed25519 kid: the algorithm is pinned to the key.
    let es = SigningKey::derive(Algorithm::ES256, b"slips", b"attacker").unwrap();
    let slip = signed(world.slip_builder(), &es, &world.kid);
    assert_eq!(refusal(&world, &slip).await, (403, "slip.bad_signature".into()));
}

#[tokio::test]
async fn slip_expired_past_the_leeway() {
    let world = World::new();
    let slip = SlipBuilder::new(ISSUER, "deploy-instance", SUBJECT, NOW - 7200, NOW - 31).hop(NOVA, AUDIENCE, TRUST);
    assert_eq!(
        refusal(&world, &signed(slip, &world.issuer, &world.kid)).await,
        (403, "slip.expired".into())
    );
}

#[tokio::test]
async fn slip_not_yet_valid_when_issued_in_the_future() {
    let world = World::new();
    let slip = SlipBuilder::new(ISSUER, "deploy-instance", SUBJECT, NOW + 31, NOW + 3600).hop(NOVA, AUDIENCE, TRUST);
    assert_eq!(
        refusal(&world, &signed(slip, &world.issuer, &world.kid)).await,
        (403, "slip.not_yet_valid".into())
    );
}

#[tokio::test]
async fn slip_wrong_trustor_for_another_users_slip() {
    let world = World::new();
    let slip =
        SlipBuilder::new(ISSUER, "deploy-instance", "bob@stoughton", NOW - 60, NOW + 3600).hop(NOVA, AUDIENCE, TRUST);
    assert_eq!(
        refusal(&world, &signed(slip, &world.issuer, &world.kid)).await,
        (403, "slip.wrong_trustor".into())
    );
}

#[tokio::test]
async fn slip_hop_mismatch_for_another_trust_actor_or_audience() {
    let world = World::new();
    for (trustee, audience, trust) in [
        (NOVA, AUDIENCE, OTHER_TRUST),
        ("heat@service", AUDIENCE, TRUST),
        (NOVA, "https://neutron.example", TRUST),
    ] {
        let slip =
            SlipBuilder::new(ISSUER, "deploy-instance", SUBJECT, NOW - 60, NOW + 3600).hop(trustee, audience, trust);
        assert_eq!(
            refusal(&world, &signed(slip, &world.issuer, &world.kid)).await,
            (403, "slip.hop_mismatch".into()),
            "{trustee} {audience} {trust}"
        );
    }
}

/// Permissive decision records and bearer-use records name the workflow.
#[tokio::test]
async fn records_carry_the_slips_workflow_id() {
    let world = World::new();
    let records = Arc::new(MemoryRecords::new());
    let base = serve(&world, records.clone(), ProofMode::BearerAllowed).await;
    let token = world.token(Some(TRUST));
    let slip = world.slip().to_base64url();
    let (status, body) = send(&base, &Send::new(&world, &token, &[&slip])).await;
    assert_eq!(status, 200, "{body}");
    let id = body.rsplit("id=").next().unwrap().to_owned();
    assert_eq!(id.len(), 22);
    // Without a proof, on the route that serves bearer requests.
    let bearer = Send {
        token: &token,
        proof: None,
        slips: vec![slip],
        path: "/either",
    };
    assert_eq!(send(&base, &bearer).await, (200, "deploy-instance".into()));
    // And a request without a slip.
    let (status, _) = send(&base, &Send::new(&world, &world.token(None), &[])).await;
    assert_eq!(status, 200);
    let all = records.records();
    let events: Vec<(&str, &Value)> = all
        .iter()
        .map(|r| (r["event"].as_str().unwrap(), &r["workflow_id"]))
        .collect();
    assert_eq!(
        events,
        vec![
            ("policy_decision", &json!(id)),
            ("bearer_use", &json!(id)),
            ("policy_decision", &json!(id)),
            ("policy_decision", &Value::Null),
        ]
    );
}

/// A worker takes the slip from a queued message and verifies it again
/// with its own verifier and clock.
#[tokio::test]
async fn slip_from_a_queued_message_is_verified_again_on_receipt() {
    let world = World::new();
    let verifier = world.verifier();
    let message = json!({"work": "boot vm1", "slip": world.slip().to_base64url()});
    let text = message.to_string();
    let received: Value = serde_json::from_str(&text).unwrap();
    let slip = Slip::from_base64url(received["slip"].as_str().unwrap()).unwrap();
    let verified = verifier.verify_slip_async(slip.as_bytes()).await.unwrap();
    assert_eq!(verified.trustor(), SUBJECT);
    assert_eq!(verified.hop(NOVA, AUDIENCE).unwrap().trust_id, TRUST);
    assert_eq!(verified.as_bytes(), slip.as_bytes(), "carried on as received");
    // Edited on the queue: one byte of the payload.
    let mut edited = slip.as_bytes().to_vec();
    let at = edited.windows(6).position(|w| w == b"deploy").unwrap();
    edited[at] = b'D';
    assert_eq!(
        verifier.verify_slip(&edited).unwrap_err().code(),
        Code::SlipBadSignature
    );
    // Taken off the queue after it expired, by the worker's clock.
    let late = Verifier::builder(
        AUDIENCE,
        TrustedIssuer::with_keys(
            ISSUER,
            KeySet::new()
                .with(world.kid.clone(), world.issuer.public_key().clone())
                .unwrap(),
        ),
    )
    .clock(Arc::new(ManualClock::new(NOW + 3600 + 31)))
    .build()
    .unwrap();
    assert_eq!(late.verify_slip(slip.as_bytes()).unwrap_err().code(), Code::SlipExpired);
    let not_a_slip = Slip::from_base64url("bm90IGEgc2xpcA").unwrap();
    assert_eq!(
        verifier.verify_slip(not_a_slip.as_bytes()).unwrap_err().code(),
        Code::SlipMalformed
    );
}

// ---------------------------------------------------------------------------
// The next hop, against a real issuer.

#[cfg(feature = "issuer")]
mod next_hop {
    use keybound::client::{Client, NewTrust, Scope, error_from_response};
    use keybound::delegation::slip::{SlipBuilder, slip_expiry};
    use keybound::keyset::{HttpKeys, HttpKeysOptions};
    use keybound::verify::{Clock, SystemClock};

    use super::*;

    const ADMIN_PASSWORD: &str = "bootstrap-password-1";
    const PASSWORD: &str = "correct horse battery";

    async fn admin_call(admin: &Client, scope: &Scope, url: &str, path: &str, body: Value) {
        let response = admin
            .post(&format!("{url}{path}"), scope)
            .json(&body)
            .send()
            .await
            .unwrap();
        if !response.status().is_success() {
            panic!("{path}: {}", error_from_response(response).await);
        }
    }

    /// glance, protected by the issuer's published keys, answering who
    /// calls for whom and with which slip.
    async fn glance(issuer_url: &str, clock: Arc<dyn Clock>) -> (String, Arc<Verifier>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let keys = HttpKeys::start(
            &format!("{issuer_url}/.well-known/keybound/keys"),
            HttpKeysOptions::default(),
        )
        .await
        .unwrap();
        let verifier = Arc::new(
            Verifier::builder(&url, TrustedIssuer::new(issuer_url, keys))
                .clock(clock)
                .build()
                .unwrap(),
        );
        let app = Router::new()
            .route("/images", get(images))
            .layer(KeyboundLayer::new(verifier.clone(), &url).unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, verifier)
    }

    /// ayoung trusts nova-compute with `reader` for glance; the issuer signs
    /// the workflow's slip; nova-compute, given the slip on its queue,
    /// verifies it, mints glance's token from the hop's trust and calls
    /// glance with the slip carried on; glance's handler sees ayoung acting
    /// through nova-compute in workflow deploy-instance. A hop the slip
    /// does not have is `client.no_hop`; a client of another issuer will
    /// not mint from the slip's trusts (`client.slip_issuer`).
    #[tokio::test]
    async fn client_mints_the_next_hop_from_the_slip_at_a_real_issuer() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(SystemClock.now()));
        let (issuer, _dir) = super::common::start_issuer(ADMIN_PASSWORD, clock.clone(), |config| {
            config.login_rate_per_minute = 1_000_000;
            config.login_burst = 100_000;
        })
        .await;
        let url = issuer.url().to_owned();
        let (glance_url, worker_verifier) = glance(&url, clock.clone()).await;
        let new_client = || {
            Client::new(&url, SigningKey::generate(Algorithm::EdDSA).unwrap())
                .unwrap()
                .with_clock(clock.clone())
        };
        let admin = new_client();
        admin
            .login_password("admin@default", ADMIN_PASSWORD, None)
            .await
            .unwrap();
        let scope = Scope::new(format!("{url}/admin")).project("admin").domain("default");
        for (path, body) in [
            ("/v1/admin/domains", json!({"name": "stoughton"})),
            ("/v1/admin/domains", json!({"name": "service"})),
            ("/v1/admin/projects", json!({"name": "turing", "domain": "stoughton"})),
            ("/v1/admin/roles", json!({"name": "reader"})),
            ("/v1/admin/users", json!({"user": SUBJECT, "password": PASSWORD})),
            (
                "/v1/admin/users",
                json!({"user": NOVA, "kind": "service", "password": PASSWORD}),
            ),
            (
                "/v1/admin/grants",
                json!({"user": SUBJECT, "project": "turing@stoughton", "role": "reader"}),
            ),
            ("/v1/admin/services", json!({"audience": glance_url})),
        ] {
            admin_call(&admin, &scope, &url, path, body).await;
        }
        let ayoung = new_client();
        ayoung.login_password(SUBJECT, PASSWORD, None).await.unwrap();
        let now = clock.now();
        let trust = ayoung
            .create_trust(&NewTrust {
                trustee: NOVA.into(),
                project: Some("turing".into()),
                roles: vec!["reader".into()],
                expires_at: Some(now + 1800),
                ..Default::default()
            })
            .await
            .unwrap();
        let trust_id = trust["id"].as_str().unwrap();
        let expires_at = trust["expires_at"].as_u64();
        let slip = issuer
            .state()
            .keys
            .sign_slip(
                SlipBuilder::new(&url, "deploy-instance", SUBJECT, now, slip_expiry(now, [expires_at])).hop(
                    NOVA,
                    &glance_url,
                    trust_id,
                ),
            )
            .unwrap();

        // nova-compute takes the work from its queue.
        let verified = worker_verifier
            .verify_slip_async(Slip::from_base64url(&slip.to_base64url()).unwrap().as_bytes())
            .await
            .unwrap();
        assert_eq!(verified.expires_at(), now + 1800, "the earliest trust expiry");
        let nova = new_client();
        nova.login_password(NOVA, PASSWORD, None).await.unwrap();
        let hop = nova.next_hop_scope(&verified, &glance_url).unwrap();
        assert_eq!(hop, Scope::new(&glance_url).trust(trust_id));
        let token = nova.next_hop_token(&verified, &glance_url).await.unwrap();
        let claims = keybound::danger::insecure_decode_token(token.as_bytes())
            .unwrap()
            .claims;
        assert_eq!(claims.trust_id.as_deref(), Some(trust_id));
        assert_eq!(claims.sub, SUBJECT);
        assert_eq!(claims.roles, ["reader"]);
        let response = nova
            .get(&format!("{glance_url}/images"), &hop)
            .slip(&verified)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        assert!(
            body.starts_with("deploy-instance ayoung@stoughton via nova-compute@service hops=1"),
            "{body}"
        );

        // No hop of nova-compute to cinder, and none for ayoung herself.
        let missing = nova.next_hop_scope(&verified, "https://cinder.example").unwrap_err();
        assert_eq!(missing.code(), Code::ClientNoHop);
        assert_eq!(
            ayoung.next_hop_scope(&verified, &glance_url).unwrap_err().code(),
            Code::ClientNoHop
        );
        let elsewhere = Client::new(
            "https://canton.example",
            SigningKey::generate(Algorithm::EdDSA).unwrap(),
        )
        .unwrap();
        let e = elsewhere.next_hop_scope(&verified, &glance_url).unwrap_err();
        assert_eq!(e.code(), Code::ClientSlipIssuer);
        assert!(e.message().contains(&url), "{}", e.message());
    }
}
