//! The verifier's token cache and its interplay with key sets and time.

use std::sync::{Arc, RwLock};

use keybound::Code;
use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::keyset::KeySource;
use keybound::proof::{ProofBuilder, RequestInfo};
use keybound::token::{Token, TokenBuilder};
use keybound::verify::{Clock, ManualClock, MemoryReplayStore, TrustedIssuer, Verifier};

const NOW: u64 = 1_763_800_000;
const URI: &str = "https://nova.example/v2/servers";

struct Swappable(RwLock<Arc<KeySet>>);
impl KeySource for Swappable {
    fn key_set(&self) -> Arc<KeySet> {
        self.0.read().unwrap().clone()
    }
}

struct Setup {
    issuer: SigningKey,
    client: SigningKey,
    keys: Arc<Swappable>,
    clock: Arc<ManualClock>,
    verifier: Verifier,
}

fn setup() -> Setup {
    let issuer = SigningKey::derive(Algorithm::EdDSA, b"verifier", b"issuer").unwrap();
    let set = KeySet::new()
        .with(issuer.public_key().default_kid(), issuer.public_key().clone())
        .unwrap();
    let keys = Arc::new(Swappable(RwLock::new(Arc::new(set))));
    let clock = Arc::new(ManualClock::new(NOW));
    let verifier = Verifier::builder(
        "https://nova.example",
        TrustedIssuer::from_arc("https://issuer.example", keys.clone()),
    )
    .clock(clock.clone())
    .replay_store(Arc::new(MemoryReplayStore::default().fenced_at(NOW - 3600)))
    .build()
    .unwrap();
    Setup {
        issuer,
        client: SigningKey::derive(Algorithm::EdDSA, b"verifier", b"client").unwrap(),
        keys,
        clock,
        verifier,
    }
}

impl Setup {
    fn token(&self) -> Token {
        TokenBuilder::service(
            "https://issuer.example",
            "ayoung@stoughton",
            "https://nova.example",
            self.client.public_key().clone(),
            NOW,
        )
        .lifetime(120)
        .sign(&self.issuer, &self.issuer.public_key().default_kid())
        .unwrap()
    }

    fn request(&self, token: &Token) -> keybound::Result<()> {
        let proof = ProofBuilder::new("GET", URI, token.as_bytes(), b"", self.clock.now())
            .unwrap()
            .sign(&self.client)
            .unwrap();
        self.verifier
            .verify_request(token.as_bytes(), proof.as_bytes(), &RequestInfo::new("GET", URI, b""))
            .map(|_| ())
    }
}

#[test]
fn cached_tokens_still_expire() {
    let s = setup();
    let token = s.token();
    s.request(&token).unwrap();
    assert_eq!(s.verifier.cached_tokens(), 1);
    s.clock.advance(100);
    s.request(&token).unwrap();
    // exp (NOW + 120) + leeway (30) has passed: the cache does not extend a token.
    s.clock.advance(51);
    assert_eq!(s.request(&token).unwrap_err().code(), Code::CwtExpired);
}

#[test]
fn removing_a_key_from_the_set_applies_to_cached_tokens() {
    let s = setup();
    let token = s.token();
    s.request(&token).unwrap();
    let other = SigningKey::derive(Algorithm::EdDSA, b"verifier", b"next").unwrap();
    *s.keys.0.write().unwrap() = Arc::new(
        KeySet::new()
            .with(other.public_key().default_kid(), other.public_key().clone())
            .unwrap(),
    );
    assert_eq!(s.request(&token).unwrap_err().code(), Code::CoseKeyUnknown);
}

#[test]
fn a_cached_token_still_needs_a_fresh_valid_proof_every_time() {
    let s = setup();
    let token = s.token();
    s.request(&token).unwrap();
    let thief = SigningKey::derive(Algorithm::EdDSA, b"verifier", b"thief").unwrap();
    let stolen = ProofBuilder::new("GET", URI, token.as_bytes(), b"", NOW)
        .unwrap()
        .sign(&thief)
        .unwrap();
    let err = s
        .verifier
        .verify_request(token.as_bytes(), stolen.as_bytes(), &RequestInfo::new("GET", URI, b""))
        .unwrap_err();
    assert_eq!(err.code(), Code::ProofBadSignature);
}

/// A verifier or nonce service built with values it refuses says so with
/// `config.invalid`, not with a code about tokens or proofs.
#[test]
fn refused_configuration_is_config_invalid() {
    use keybound::verify::NonceService;
    let s = setup();
    let issuer = || TrustedIssuer::with_keys("https://issuer.example", s.keys.key_set().as_ref().clone());
    let refused = [
        Verifier::builder("", issuer()).build().map(drop),
        Verifier::builder("https://nova.example", issuer())
            .leeway(61)
            .build()
            .map(drop),
        Verifier::builder("https://nova.example", issuer())
            .proof_max_age(0)
            .build()
            .map(drop),
        Verifier::builder("https://nova.example", issuer())
            .proof_max_age(301)
            .build()
            .map(drop),
        Verifier::builder("https://nova.example", issuer())
            .issuer(issuer())
            .build()
            .map(drop),
        NonceService::new(&[7; 31], "https://nova.example", 60).map(drop),
        NonceService::new(&[7; 32], "https://nova.example", 0).map(drop),
    ];
    for (i, result) in refused.into_iter().enumerate() {
        assert_eq!(result.unwrap_err().code(), Code::ConfigInvalid, "case {i}");
    }
}
