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

// ---- Instance binding (verification.md T9.2) ----

const INSTANCE_A: &str = "vm-7f3a@host-12";
const INSTANCE_B: &str = "vm-0001@host-03";

impl Setup {
    /// A verifier of the same audience, issuer and clock, for `instance`.
    fn verifier_for(&self, instance: Option<&str>) -> Verifier {
        let mut builder = Verifier::builder(
            "https://nova.example",
            TrustedIssuer::from_arc("https://issuer.example", self.keys.clone()),
        )
        .clock(self.clock.clone())
        .replay_store(Arc::new(MemoryReplayStore::default().fenced_at(NOW - 3600)));
        if let Some(instance) = instance {
            builder = builder.instance(instance);
        }
        builder.build().unwrap()
    }

    fn token_for_instance(&self, instance: &str) -> Token {
        TokenBuilder::service(
            "https://issuer.example",
            "ayoung@stoughton",
            "https://nova.example",
            self.client.public_key().clone(),
            NOW,
        )
        .lifetime(120)
        .instance(instance)
        .sign(&self.issuer, &self.issuer.public_key().default_kid())
        .unwrap()
    }

    fn request_at(&self, verifier: &Verifier, token: &Token) -> keybound::Result<Option<String>> {
        let proof = ProofBuilder::new("GET", URI, token.as_bytes(), b"", self.clock.now())
            .unwrap()
            .sign(&self.client)
            .unwrap();
        verifier
            .verify_request(token.as_bytes(), proof.as_bytes(), &RequestInfo::new("GET", URI, b""))
            .map(|verified| verified.instance().map(str::to_owned))
    }
}

#[test]
fn a_token_bound_to_an_instance_is_accepted_by_that_instance() {
    let s = setup();
    let at_a = s.verifier_for(Some(INSTANCE_A));
    assert_eq!(at_a.instance(), Some(INSTANCE_A));
    let token = s.token_for_instance(INSTANCE_A);
    assert_eq!(s.request_at(&at_a, &token).unwrap().as_deref(), Some(INSTANCE_A));
    // From the verified-token cache too.
    assert_eq!(at_a.cached_tokens(), 1);
    assert_eq!(s.request_at(&at_a, &token).unwrap().as_deref(), Some(INSTANCE_A));
}

#[test]
fn a_token_bound_to_another_instance_is_refused_cwt_instance() {
    let s = setup();
    let token = s.token_for_instance(INSTANCE_A);
    let at_b = s.verifier_for(Some(INSTANCE_B));
    assert_eq!(s.request_at(&at_b, &token).unwrap_err().code(), Code::CwtInstance);
    // Nothing was cached, and asking again gives the same answer.
    assert_eq!(at_b.cached_tokens(), 0);
    assert_eq!(s.request_at(&at_b, &token).unwrap_err().code(), Code::CwtInstance);
    // Compared byte for byte: case matters.
    let upper = s.token_for_instance(&INSTANCE_A.to_uppercase());
    let at_a = s.verifier_for(Some(INSTANCE_A));
    assert_eq!(s.request_at(&at_a, &upper).unwrap_err().code(), Code::CwtInstance);
}

#[test]
fn a_bound_token_is_refused_by_a_verifier_without_an_instance_id() {
    let s = setup();
    let token = s.token_for_instance(INSTANCE_A);
    let unbound = s.verifier_for(None);
    assert_eq!(unbound.instance(), None);
    assert_eq!(s.request_at(&unbound, &token).unwrap_err().code(), Code::CwtInstance);
    let refused = keybound::danger::verify_token_without_proof(&unbound, token.as_bytes()).unwrap_err();
    assert_eq!(refused.code(), Code::CwtInstance);
}

#[test]
fn a_token_without_an_instance_is_accepted_by_every_verifier() {
    let s = setup();
    let token = s.token();
    for instance in [None, Some(INSTANCE_A), Some(INSTANCE_B)] {
        let verifier = s.verifier_for(instance);
        assert_eq!(s.request_at(&verifier, &token).unwrap(), None, "{instance:?}");
    }
}

#[test]
fn a_verifier_refuses_an_instance_id_no_token_could_carry() {
    let s = setup();
    for bad in [
        String::new(),
        "vm 1".into(),
        "vm-\u{e9}".into(),
        "i".repeat(256),
        "vm\t1".into(),
    ] {
        let result = Verifier::builder(
            "https://nova.example",
            TrustedIssuer::from_arc("https://issuer.example", s.keys.clone()),
        )
        .instance(bad.clone())
        .build();
        assert_eq!(result.unwrap_err().code(), Code::ConfigInvalid, "{bad:?}");
    }
    // 255 visible ASCII bytes are the longest id.
    let longest = "i".repeat(255);
    let verifier = s.verifier_for(Some(&longest));
    let token = s.token_for_instance(&longest);
    assert_eq!(
        s.request_at(&verifier, &token).unwrap().as_deref(),
        Some(longest.as_str())
    );
}

#[test]
fn the_token_builder_refuses_a_malformed_instance_and_a_bound_session_token() {
    let s = setup();
    let kid = s.issuer.public_key().default_kid();
    for bad in ["", "vm 1", "vm-\u{e9}"] {
        let refused = TokenBuilder::service(
            "https://issuer.example",
            "ayoung@stoughton",
            "https://nova.example",
            s.client.public_key().clone(),
            NOW,
        )
        .instance(bad)
        .sign(&s.issuer, &kid)
        .unwrap_err();
        assert_eq!(refused.code(), Code::IssueInvalid, "{bad:?}");
    }
    let session = TokenBuilder::session(
        "https://issuer.example",
        "ayoung@stoughton",
        s.client.public_key().clone(),
        NOW,
    )
    .instance(INSTANCE_A)
    .sign(&s.issuer, &kid)
    .unwrap_err();
    assert_eq!(session.code(), Code::IssueInvalid);
}
