//! Runs every vector in test-vectors/vectors.json through the verifier and
//! checks that the checked-in files are exactly what the generator writes.

use std::sync::Arc;

use keybound::encoding::hex_decode;
use keybound::key::KeySet;
use keybound::proof::{NonceValidator, RequestInfo};
use keybound::verify::{ManualClock, MemoryReplayStore, TrustedIssuer, VerifiedRequest, Verifier};
use keybound::{Code, cbor};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/test-vectors");

struct Nonces(Vec<Vec<u8>>);
impl NonceValidator for Nonces {
    fn is_valid(&self, nonce: &[u8], _now: u64) -> bool {
        self.0.iter().any(|n| n == nonce)
    }
}

fn hex(v: &Value) -> Vec<u8> {
    hex_decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn run(v: &Value) -> Result<(), keybound::Error> {
    let mut set = Vec::new();
    let keys = v["issuer_keys"].as_array().unwrap();
    cbor::write_array(&mut set, keys.len());
    for key in keys {
        set.extend(hex(key));
    }
    // K3 runs first: a vector may expect the key set itself to be refused.
    let keys = KeySet::from_cbor(&set)?;
    let config = &v["verifier"];
    let mut builder = Verifier::builder(
        config["audience"].as_str().unwrap(),
        TrustedIssuer::with_keys(config["issuer"].as_str().unwrap(), keys),
    )
    .clock(Arc::new(ManualClock::new(config["now"].as_u64().unwrap())))
    .leeway(config["leeway"].as_u64().unwrap())
    .proof_max_age(config["proof_max_age"].as_u64().unwrap())
    // The vectors' store started before their proofs were made: no fence.
    .replay_store(Arc::new(MemoryReplayStore::default().fenced_at(0)));
    if let Some(instance) = config.get("instance") {
        builder = builder.instance(instance.as_str().unwrap());
    }
    if let Some(nonces) = config.get("nonces") {
        builder = builder.require_nonce(Arc::new(Nonces(nonces.as_array().unwrap().iter().map(hex).collect())));
    }
    let verifier = builder.build().unwrap();
    let token = hex(&v["token"]);
    if v["proof"].is_null() {
        return keybound::danger::verify_token_without_proof(&verifier, &token).map(|_| ());
    }
    let proof = hex(&v["proof"]);
    let req = &v["request"];
    let body = hex(&req["body"]);
    let request = RequestInfo::new(req["method"].as_str().unwrap(), req["uri"].as_str().unwrap(), &body);
    let mut result = Ok(());
    for _ in 0..v["submissions"].as_u64().unwrap() {
        result = verifier
            .verify_request(&token, &proof, &request)
            .and_then(|verified| match config.get("policy") {
                Some(policy) => authorize(
                    policy.as_str().unwrap(),
                    &verified,
                    req,
                    config["now"].as_u64().unwrap(),
                )
                .map(|()| verified),
                None => Ok(verified),
            })
            .and_then(|verified| match v.get("slip") {
                // S1–S6, then S7–S8 against the verified request.
                Some(slip) => verifier.verify_slip(&hex(slip))?.check_for(verified.token()),
                None => Ok(()),
            });
    }
    result
}

/// A1: the vector's policy on the request's method and path (no query).
#[cfg(feature = "policy")]
fn authorize(policy: &str, verified: &VerifiedRequest, req: &Value, now: u64) -> Result<(), keybound::Error> {
    use keybound::policy::{Action, MemoryRecords, Policy};
    let policy = Policy::from_toml(policy).unwrap();
    let uri = req["uri"].as_str().unwrap();
    let after_authority = uri.split_once("://").unwrap().1;
    let path = &after_authority[after_authority.find('/').unwrap_or(after_authority.len())..];
    let path = path.split(['?', '#']).next().unwrap();
    let action = Action::Http {
        method: req["method"].as_str().unwrap(),
        path,
    };
    policy.authorize(verified, action, None, &MemoryRecords::new(), now)
}

#[cfg(not(feature = "policy"))]
fn authorize(_: &str, _: &VerifiedRequest, _: &Value, _: u64) -> Result<(), keybound::Error> {
    panic!("vectors with a policy need the `policy` feature")
}

#[test]
fn every_vector_gives_its_expected_result() {
    let text = std::fs::read_to_string(format!("{DIR}/vectors.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["version"], 1);
    let vectors = doc["vectors"].as_array().unwrap();
    let mut failures = Vec::new();
    for v in vectors {
        let expected = v["expected"].as_str().unwrap();
        let got = match run(v) {
            Ok(()) => "valid".to_owned(),
            Err(e) => e.code().as_str().to_owned(),
        };
        if got != expected {
            failures.push(format!("{}: expected {expected}, got {got}", v["name"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

/// The generator is test tooling behind the `testkit` feature; say so
/// instead of passing silently when it is off.
#[cfg(not(feature = "testkit"))]
#[test]
#[ignore = "the generator checks need `--features testkit` (the README's `cargo test --all-features` has it)"]
fn generator_checks_need_the_testkit_feature() {}

#[cfg(feature = "testkit")]
#[test]
fn vectors_cover_the_required_ground() {
    let vectors = keybound::vectors::generate();
    let valid = vectors.iter().filter(|v| v.expected == "valid").count();
    assert!(valid >= 20, "{valid} valid vectors");
    assert!(vectors.len() - valid >= 80, "{} invalid vectors", vectors.len() - valid);
    let mut names = std::collections::HashSet::new();
    for v in &vectors {
        assert!(names.insert(&v.name), "duplicate {}", v.name);
        assert!(
            v.expected == "valid" || Code::from_str_code(&v.expected).is_some(),
            "{}: unknown code {}",
            v.name,
            v.expected
        );
    }
    // Every layer is represented among the invalid vectors.
    for layer in [
        "cbor.",
        "cose.",
        "cwt.",
        "delegation.",
        "proof.",
        "replay.",
        "policy.",
        "slip.",
    ] {
        assert!(
            vectors.iter().any(|v| v.expected.starts_with(layer)),
            "no {layer} vector"
        );
    }
}

#[cfg(feature = "testkit")]
#[test]
fn checked_in_vectors_match_the_generator() {
    let vectors = keybound::vectors::generate();
    let json = std::fs::read_to_string(format!("{DIR}/vectors.json")).unwrap();
    let md = std::fs::read_to_string(format!("{DIR}/vectors.md")).unwrap();
    assert!(
        json == keybound::vectors::to_json(&vectors) && md == keybound::vectors::to_markdown(&vectors),
        "test-vectors/ is stale: run `cargo run --example gen_vectors --features testkit` and commit the result with the spec change"
    );
}

/// The published private keys give the published public keys, and the
/// annotated examples of spec/cbor.md name the same private keys.
#[test]
fn published_private_keys_rebuild_their_public_keys() {
    let text = std::fs::read_to_string(format!("{DIR}/vectors.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/cbor.md")).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert!(keys.len() >= 8);
    for key in keys {
        let alg = keybound::key::Algorithm::from_name(key["alg"].as_str().unwrap()).unwrap();
        let private = keybound::key::SigningKey::from_secret_bytes(alg, &hex(&key["d"])).unwrap();
        let kid = hex(&key["kid"]);
        assert_eq!(private.public_key().default_kid(), kid, "{}", key["name"]);
        assert_eq!(private.public_key().to_cose_key(Some(&kid)), hex(&key["public_key"]));
        if key["seed"] == "spec" {
            assert!(
                spec.contains(key["d"].as_str().unwrap()),
                "cbor.md lacks {}",
                key["name"]
            );
        }
    }
}

/// The issuer's own key derivation gives the key and kid of the derived-key vector.
#[cfg(all(feature = "issuer", feature = "testkit"))]
#[test]
fn issuer_derivation_matches_its_vector() {
    use keybound::issuer::keys::IssuerKeys;
    use keybound::vectors::{DERIVED_PERIOD, DERIVED_ROOT, NOW};
    let vector = keybound::vectors::generate()
        .into_iter()
        .find(|v| v.name == "valid/issuer-derived/ed25519-epoch-kid")
        .unwrap();
    let keys = IssuerKeys::derived(
        zeroize::Zeroizing::new(DERIVED_ROOT.to_vec()),
        keybound::key::Algorithm::EdDSA,
        DERIVED_PERIOD,
        330,
        330,
        Arc::new(ManualClock::new(NOW)),
    )
    .unwrap();
    let (key, kid) = keys.current().unwrap();
    assert_eq!(vec![key.public_key().to_cose_key(Some(&kid))], vector.issuer_keys);
}
