//! The service side of delegation (spec/delegation.md §8): steps D1–D5 of
//! the verifier, what a verified request tells a handler, and the policy
//! keys `delegated` and `actors`, over real HTTP on loopback; and the
//! catalog's DL-05 to DL-07 (an edited chain, another issuer's key, a
//! proof by a key that is not the token's cnf).
#![cfg(feature = "http")]

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use keybound::Code;
use keybound::encoding::b64url_encode;
use keybound::http::{KeyboundLayer, ProofMode};
use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::policy::{MemoryRecords, Policy};
use keybound::proof::{ProofBuilder, RequestInfo};
use keybound::token::{Actor, Token, TokenBuilder};
use keybound::verify::{ManualClock, MemoryReplayStore, ProvenOrBearer, TrustedIssuer, VerifiedRequest, Verifier};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "https://cinder.example";
const NOW: u64 = 1_763_800_000;
const TRUST: &str = "2Qf3mV0cZ8bq1Xo4yT6wUg";
const SUBJECT: &str = "ayoung@stoughton";

struct World {
    issuer: SigningKey,
    kid: Vec<u8>,
    /// The trustee's key: a delegated token's cnf.
    client: SigningKey,
}

impl World {
    fn new() -> Self {
        let issuer = SigningKey::derive(Algorithm::EdDSA, b"delegation", b"issuer").unwrap();
        World {
            kid: issuer.public_key().default_kid(),
            issuer,
            client: SigningKey::derive(Algorithm::EdDSA, b"delegation", b"trustee").unwrap(),
        }
    }

    fn verifier(&self, session: bool) -> Verifier {
        let keys = KeySet::new()
            .with(self.kid.clone(), self.issuer.public_key().clone())
            .unwrap();
        let audience = if session { ISSUER } else { AUDIENCE };
        let builder = Verifier::builder(audience, TrustedIssuer::with_keys(ISSUER, keys))
            .clock(Arc::new(ManualClock::new(NOW)))
            .replay_store(Arc::new(MemoryReplayStore::default().fenced_at(NOW - 3600)));
        if session { builder.session_tokens() } else { builder }
            .build()
            .unwrap()
    }

    /// A service token for `roles`, with `trust` and `actors` as given.
    fn token(&self, roles: &[&str], trust: Option<&str>, actors: Vec<Actor>) -> Token {
        let mut builder = TokenBuilder::service(ISSUER, SUBJECT, AUDIENCE, self.client.public_key().clone(), NOW - 5)
            .scope("stoughton", "turing")
            .roles(roles.iter().copied())
            .actor_chain(actors);
        if let Some(trust) = trust {
            builder = builder.trust_id(trust);
        }
        builder.sign(&self.issuer, &self.kid).unwrap()
    }

    fn delegated(&self, roles: &[&str], actors: &[&str]) -> Token {
        self.token(roles, Some(TRUST), names(actors))
    }

    fn proof(&self, token: &Token, method: &str, uri: &str) -> Vec<u8> {
        ProofBuilder::new(method, uri, token.as_bytes(), b"", NOW - 1)
            .unwrap()
            .sign(&self.client)
            .unwrap()
            .into_bytes()
    }

    /// Verifies `token` with a fresh proof for GET on the service.
    fn verify(&self, verifier: &Verifier, token: &Token) -> keybound::Result<VerifiedRequest> {
        let uri = format!("{}/volumes", verifier.audience());
        let proof = self.proof(token, "GET", &uri);
        verifier.verify_request(token.as_bytes(), &proof, &RequestInfo::new("GET", &uri, b""))
    }
}

fn names(actors: &[&str]) -> Vec<Actor> {
    actors
        .iter()
        .map(|sub| Actor {
            sub: (*sub).to_owned(),
            iss: None,
        })
        .collect()
}

/// Verifies `token` and returns its refusal code; a refused token is never cached.
fn refusal(world: &World, token: &Token) -> Code {
    let verifier = world.verifier(false);
    let code = world.verify(&verifier, token).unwrap_err().code();
    assert_eq!(verifier.cached_tokens(), 0, "a token refused at D was cached");
    // The same steps without a proof.
    let alone = keybound::danger::verify_token_without_proof(&verifier, token.as_bytes()).unwrap_err();
    assert_eq!(alone.code(), code);
    code
}

#[test]
fn d1_trust_id_without_actor_chain_is_delegation_incomplete() {
    let world = World::new();
    let token = world.token(&["member"], Some(TRUST), Vec::new());
    assert_eq!(refusal(&world, &token), Code::DelegationIncomplete);
}

#[test]
fn d1_actor_chain_without_trust_id_is_delegation_incomplete() {
    let world = World::new();
    let token = world.token(&["member"], None, names(&["heat@service"]));
    assert_eq!(refusal(&world, &token), Code::DelegationIncomplete);
}

#[test]
fn d1_empty_trust_id_is_delegation_incomplete() {
    let world = World::new();
    let token = world.token(&["member"], Some(""), names(&["heat@service"]));
    assert_eq!(refusal(&world, &token), Code::DelegationIncomplete);
}

#[test]
fn d2_delegated_session_token_is_delegation_kind() {
    let world = World::new();
    let verifier = world.verifier(true);
    let session = |trust: Option<&str>, actors: &[&str]| {
        let mut builder = TokenBuilder::session(ISSUER, "heat@service", world.client.public_key().clone(), NOW - 5)
            .actor_chain(names(actors));
        if let Some(trust) = trust {
            builder = builder.trust_id(trust);
        }
        builder.sign(&world.issuer, &world.kid).unwrap()
    };
    // A plain session token passes, the verifier is right.
    world.verify(&verifier, &session(None, &[])).unwrap();
    let refused = world
        .verify(&verifier, &session(Some(TRUST), &["heat@service"]))
        .unwrap_err();
    assert_eq!(refused.code(), Code::DelegationKind, "{refused}");
}

#[test]
fn d3_more_than_four_actors_is_delegation_too_deep_dl_03() {
    let world = World::new();
    let chain = ["a@s", "b@s", "c@s", "d@s", "e@s", "f@s", "g@s", "h@s"];
    let verifier = world.verifier(false);
    let four = world.delegated(&["member"], &chain[..4]);
    assert_eq!(world.verify(&verifier, &four).unwrap().actor_chain().len(), 4);
    for n in [5, 8] {
        let token = world.delegated(&["member"], &chain[..n]);
        assert_eq!(refusal(&world, &token), Code::DelegationTooDeep, "{n} actors");
    }
}

#[test]
fn d4_actor_with_an_empty_name_is_delegation_actor_invalid() {
    let world = World::new();
    let token = world.delegated(&["member"], &["heat@service", ""]);
    assert_eq!(refusal(&world, &token), Code::DelegationActorInvalid);
}

#[test]
fn d4_actor_with_its_own_issuer_is_delegation_actor_invalid() {
    let world = World::new();
    // Otherwise `actors = ["nova-compute@service"]` would match a user of
    // some other issuer with that name.
    let token = world.token(
        &["member"],
        Some(TRUST),
        vec![Actor {
            sub: "nova-compute@service".into(),
            iss: Some("https://other.example".into()),
        }],
    );
    assert_eq!(refusal(&world, &token), Code::DelegationActorInvalid);
}

#[test]
fn d5_subject_as_actor_is_delegation_cycle_dl_04() {
    let world = World::new();
    // A trusts B, B redelegates to A: A would act for itself through B.
    let token = world.delegated(&["member"], &[SUBJECT, "heat@service"]);
    assert_eq!(refusal(&world, &token), Code::DelegationCycle);
}

#[test]
fn d5_repeated_actor_is_delegation_cycle_dl_04() {
    let world = World::new();
    let token = world.delegated(&["member"], &["heat@service", "nova-compute@service", "heat@service"]);
    assert_eq!(refusal(&world, &token), Code::DelegationCycle);
}

#[test]
fn a_verified_request_tells_who_acts_for_whom() {
    let world = World::new();
    let verifier = world.verifier(false);
    let token = world.delegated(&["member"], &["nova-compute@service", "heat@service"]);
    let request = world.verify(&verifier, &token).unwrap();
    assert!(request.is_delegated());
    assert_eq!(request.subject(), SUBJECT);
    assert_eq!(request.trust_id(), Some(TRUST));
    assert_eq!(request.current_actor(), Some("nova-compute@service"));
    let chain: Vec<&str> = request.actor_chain().iter().map(|a| a.sub.as_str()).collect();
    assert_eq!(chain, ["nova-compute@service", "heat@service"]);
    assert_eq!(request.roles(), ["member"]);

    let plain = world
        .verify(&verifier, &world.token(&["member"], None, Vec::new()))
        .unwrap();
    assert!(!plain.is_delegated());
    assert_eq!((plain.trust_id(), plain.current_actor()), (None, None));
    assert!(plain.actor_chain().is_empty());
}

// ---- Policy, over HTTP ----

const POLICY: &str = r#"
[[rule]]
method = "POST"
path = "/volumes"
roles = ["member"]
delegated = "allow"
actors = ["nova-compute@service"]

[[rule]]
method = "GET"
path = "/volumes"
roles = ["member", "admin"]

[[rule]]
method = "GET"
path = "/either"
roles = ["member"]
"#;

async fn who(request: VerifiedRequest) -> String {
    format!(
        "{} via {} ({})",
        request.subject(),
        request.current_actor().unwrap_or("-"),
        request.trust_id().unwrap_or("-")
    )
}

async fn either(request: ProvenOrBearer) -> String {
    format!("{} via {}", request.subject(), request.current_actor().unwrap_or("-"))
}

async fn serve(world: &World, policy: &str, records: Arc<MemoryRecords>, mode: ProofMode) -> String {
    let layer = KeyboundLayer::new(Arc::new(world.verifier(false)), AUDIENCE)
        .unwrap()
        .policy(Arc::new(Policy::from_toml(policy).unwrap()))
        .records(records)
        .proof_mode(mode);
    let app = Router::new()
        .route("/volumes", get(who).post(who))
        .route("/either", get(either))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Sends `method path` with `token` (and a proof unless `bearer`); returns
/// the status and the problem code or body.
async fn send(world: &World, base: &str, method: &str, path: &str, token: &Token, bearer: bool) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .header("authorization", format!("KB {}", token.to_base64url()));
    if !bearer {
        let proof = world.proof(token, method, &format!("{AUDIENCE}{path}"));
        request = request.header("kb-proof", b64url_encode(&proof));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    let shown = match serde_json::from_str::<Value>(&body) {
        Ok(problem) if problem.get("code").is_some() => problem["code"].as_str().unwrap().to_owned(),
        _ => body,
    };
    (status, shown)
}

#[tokio::test]
async fn only_nova_compute_may_use_delegated_member_on_post_volumes() {
    let world = World::new();
    let records = Arc::new(MemoryRecords::new());
    let base = serve(&world, POLICY, records.clone(), ProofMode::Required).await;

    let nova = world.delegated(&["member"], &["nova-compute@service", "heat@service"]);
    assert_eq!(
        send(&world, &base, "POST", "/volumes", &nova, false).await,
        (200, format!("{SUBJECT} via nova-compute@service ({TRUST})"))
    );
    // The subject's own token is not delegated: `actors` does not apply.
    let own = world.token(&["member"], None, Vec::new());
    assert_eq!(
        send(&world, &base, "POST", "/volumes", &own, false).await,
        (200, format!("{SUBJECT} via - (-)"))
    );
    assert!(records.records().is_empty(), "{:?}", records.records());

    // Another current actor, with the same delegated role.
    let heat = world.delegated(&["member"], &["heat@service"]);
    assert_eq!(
        send(&world, &base, "POST", "/volumes", &heat, false).await,
        (403, "policy.denied".to_owned())
    );
    // nova-compute@service as an inner actor only: inner actors decide
    // nothing (DL-10). Whatever rights it holds itself (admin, say), the
    // token carries only the roles the trustor delegated.
    let inner = world.delegated(&["member"], &["heat@service", "nova-compute@service"]);
    assert_eq!(
        send(&world, &base, "POST", "/volumes", &inner, false).await,
        (403, "policy.denied".to_owned())
    );
    // The right actor without the role.
    let reader = world.delegated(&["reader"], &["nova-compute@service"]);
    assert_eq!(
        send(&world, &base, "POST", "/volumes", &reader, false).await,
        (403, "policy.denied".to_owned())
    );

    let records = records.records();
    let seen: Vec<(&str, &Value, &str)> = records
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap(),
                &r["actors"],
                r["trust_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("actor_not_allowed", &json!(["heat@service"]), TRUST),
            (
                "actor_not_allowed",
                &json!(["heat@service", "nova-compute@service"]),
                TRUST
            ),
            ("missing_role", &json!(["nova-compute@service"]), TRUST),
        ]
    );
    for r in &records {
        assert_eq!(r["subject"], SUBJECT);
        assert_eq!(r["rule"], "POST /volumes");
        assert_eq!(r["outcome"], "deny");
    }
}

#[tokio::test]
async fn a_service_whose_policy_refuses_delegation_refuses_delegated_tokens() {
    let world = World::new();
    for (mode, status) in [("enforce", 403), ("permissive", 200)] {
        let records = Arc::new(MemoryRecords::new());
        let policy = format!("mode = \"{mode}\"\n{POLICY}");
        let base = serve(&world, &policy, records.clone(), ProofMode::Required).await;
        // GET /volumes: a rule without `delegated` (default deny). The
        // delegated `admin` role would match its roles; it does not help.
        let delegated = world.delegated(&["admin"], &["nova-compute@service"]);
        let (got, body) = send(&world, &base, "GET", "/volumes", &delegated, false).await;
        assert_eq!(got, status, "{mode}: {body}");
        if status == 403 {
            assert_eq!(body, "policy.denied");
        }
        // The same roles, not delegated: allowed (recorded in permissive mode only).
        let own = world.token(&["admin"], None, Vec::new());
        assert_eq!(send(&world, &base, "GET", "/volumes", &own, false).await.0, 200);
        let records = records.records();
        let expected = if mode == "enforce" { 1 } else { 2 };
        assert_eq!(records.len(), expected, "{mode}: {records:?}");
        if mode == "permissive" {
            assert_eq!(records[1]["outcome"], "allow");
            assert_eq!(records[1]["reason"], Value::Null);
            assert_eq!(records[1]["trust_id"], Value::Null);
        }
        let r = &records[0];
        assert_eq!(r["event"], "policy_decision");
        assert_eq!(r["mode"], mode);
        assert_eq!(r["reason"], "delegation_denied");
        assert_eq!(r["trust_id"], TRUST);
        assert_eq!(r["actors"], json!(["nova-compute@service"]));
        assert_eq!(r["subject"], SUBJECT);
        assert_eq!(r["rule"], "GET /volumes");
        assert_eq!(r["outcome"], if mode == "enforce" { "deny" } else { "would_deny" });
    }
    // A policy that allows delegated requests everywhere (Keystone's way).
    let records = Arc::new(MemoryRecords::new());
    let policy = format!("delegated = \"allow\"\n{POLICY}");
    let base = serve(&world, &policy, records.clone(), ProofMode::Required).await;
    let delegated = world.delegated(&["member"], &["heat@service"]);
    assert_eq!(
        send(&world, &base, "GET", "/volumes", &delegated, false).await,
        (200, format!("{SUBJECT} via heat@service ({TRUST})"))
    );
    assert!(records.records().is_empty());
}

#[tokio::test]
async fn bearer_use_records_carry_the_trust_and_actors() {
    let world = World::new();
    let records = Arc::new(MemoryRecords::new());
    let policy = format!("delegated = \"allow\"\n{POLICY}");
    let base = serve(&world, &policy, records.clone(), ProofMode::BearerAllowed).await;
    let delegated = world.delegated(&["member"], &["heat@service", "nova-compute@service"]);
    assert_eq!(
        send(&world, &base, "GET", "/either", &delegated, true).await,
        (200, format!("{SUBJECT} via heat@service"))
    );
    let records = records.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["event"], "bearer_use");
    assert_eq!(records[0]["trust_id"], TRUST);
    assert_eq!(records[0]["actors"], json!(["heat@service", "nova-compute@service"]));
    assert_eq!(records[0]["subject"], SUBJECT);
}

/// Rewrites the actor chain (claim 6) inside a signed token's payload and
/// keeps the issuer's signature: what a holder who edits the chain sends.
fn with_chain_edited(token: &Token, edit: impl FnOnce(&mut Vec<ciborium::Value>)) -> Vec<u8> {
    use ciborium::Value;
    let mut outer: Value = ciborium::from_reader(token.as_bytes()).expect("a token is CBOR");
    // Tags (CWT, COSE_Sign1) around the four-element array.
    let mut sign1 = &mut outer;
    while let Value::Tag(_, inner) = sign1 {
        sign1 = inner;
    }
    let Value::Array(parts) = sign1 else {
        panic!("COSE_Sign1 is an array")
    };
    let Value::Bytes(payload) = &parts[2] else {
        panic!("attached payload")
    };
    let mut claims: Value = ciborium::from_reader(payload.as_slice()).expect("claims are CBOR");
    // The actor chain is key 6 of the keybound claims (label -65537).
    let chain = claim(claim(&mut claims, -65537), 6);
    let Value::Array(actors) = chain else {
        panic!("the chain is an array")
    };
    edit(actors);
    let mut edited = Vec::new();
    ciborium::into_writer(&claims, &mut edited).unwrap();
    parts[2] = Value::Bytes(edited);
    let mut bytes = Vec::new();
    ciborium::into_writer(&outer, &mut bytes).unwrap();
    bytes
}

/// The value of integer key `label` in a CBOR map.
fn claim(map: &mut ciborium::Value, label: i64) -> &mut ciborium::Value {
    let ciborium::Value::Map(entries) = map else {
        panic!("a claims map")
    };
    entries
        .iter_mut()
        .find(|(k, _)| *k == ciborium::Value::Integer(label.into()))
        .map(|(_, v)| v)
        .expect("the claim is present")
}

/// Verifies raw token bytes with a proof by the trustee's key.
fn refusal_of_bytes(world: &World, token: &[u8]) -> Code {
    let verifier = world.verifier(false);
    let uri = format!("{AUDIENCE}/volumes");
    let proof = ProofBuilder::new("GET", &uri, token, b"", NOW - 1)
        .unwrap()
        .sign(&world.client)
        .unwrap()
        .into_bytes();
    verifier
        .verify_request(token, &proof, &RequestInfo::new("GET", &uri, b""))
        .unwrap_err()
        .code()
}

#[test]
fn dl_05_a_reordered_inserted_or_removed_link_breaks_the_signature() {
    let world = World::new();
    let token = world.delegated(&["member"], &["nova-compute@service", "heat@service"]);
    // Unchanged, the splice helper round-trips: the token still verifies.
    let same = with_chain_edited(&token, |_| {});
    assert_eq!(same, token.as_bytes(), "the helper re-encodes canonically");
    let reordered = with_chain_edited(&token, |actors| actors.reverse());
    let inserted = with_chain_edited(&token, |actors| {
        let link = actors[0].clone();
        let ciborium::Value::Map(mut entries) = link else {
            panic!("an actor is a map")
        };
        for (_, v) in entries.iter_mut() {
            if let ciborium::Value::Text(name) = v {
                *name = "mallory@service".into();
            }
        }
        actors.insert(1, ciborium::Value::Map(entries));
    });
    let removed = with_chain_edited(&token, |actors| {
        actors.remove(0);
    });
    for (what, bytes) in [("reordered", reordered), ("inserted", inserted), ("removed", removed)] {
        assert_ne!(bytes, token.as_bytes(), "{what}: the chain changed");
        assert_eq!(refusal_of_bytes(&world, &bytes), Code::CoseBadSignature, "{what}");
    }
}

#[test]
fn dl_06_a_delegated_token_signed_under_another_issuer_key_is_refused() {
    let world = World::new();
    let other = SigningKey::derive(Algorithm::EdDSA, b"delegation", b"another issuer").unwrap();
    let forged = |kid: &[u8]| {
        TokenBuilder::service(ISSUER, SUBJECT, AUDIENCE, world.client.public_key().clone(), NOW - 5)
            .scope("stoughton", "turing")
            .roles(["member"])
            .trust_id(TRUST)
            .actor_chain(names(&["heat@service"]))
            .sign(&other, kid)
            .unwrap()
    };
    // Under the trusted issuer's kid: the signature does not verify.
    assert_eq!(refusal(&world, &forged(&world.kid)), Code::CoseBadSignature);
    // Under its own kid: a key the verifier does not know.
    assert_eq!(
        refusal(&world, &forged(&other.public_key().default_kid())),
        Code::CoseKeyUnknown
    );
}

#[test]
fn dl_07_a_proof_by_any_key_but_the_delegated_tokens_cnf_is_refused() {
    let world = World::new();
    let token = world.delegated(&["member"], &["heat@service"]);
    let verifier = world.verifier(false);
    let uri = format!("{AUDIENCE}/volumes");
    // The trustor's own key, and the key of an inner actor: neither is the
    // cnf of the token the trustee holds.
    for who in [&b"trustor"[..], b"inner actor"] {
        let key = SigningKey::derive(Algorithm::EdDSA, b"delegation", who).unwrap();
        let proof = ProofBuilder::new("GET", &uri, token.as_bytes(), b"", NOW - 1)
            .unwrap()
            .sign(&key)
            .unwrap()
            .into_bytes();
        let refused = verifier
            .verify_request(token.as_bytes(), &proof, &RequestInfo::new("GET", &uri, b""))
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::ProofBadSignature,
            "{}",
            String::from_utf8_lossy(who)
        );
    }
    // The trustee's key (the cnf) is accepted.
    assert!(world.verify(&verifier, &token).is_ok());
}
