//! Property tests: every wire type round-trips, no single-bit flip,
//! truncation or byte insertion of a valid token or proof is accepted, and
//! no input makes a decoder or verifier panic.

use std::sync::Arc;

use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::proof::{ProofBuilder, RequestInfo, normalize_uri};
use keybound::token::{Actor, TokenBuilder, TokenTagging};
use keybound::verify::{ManualClock, MemoryReplayStore, TrustedIssuer, Verifier};
use proptest::prelude::*;

const NOW: u64 = 1_763_800_000;
const URI: &str = "https://nova.example/v2/servers?limit=5";

struct Fixture {
    keys: KeySet,
    token: Vec<u8>,
    proof: Vec<u8>,
    body: Vec<u8>,
}

fn fixture(alg: Algorithm) -> Fixture {
    let issuer = SigningKey::derive(alg, b"properties", b"issuer").unwrap();
    let client = SigningKey::derive(alg, b"properties", b"client").unwrap();
    let kid = issuer.public_key().default_kid();
    let keys = KeySet::new().with(kid.clone(), issuer.public_key().clone()).unwrap();
    let token = TokenBuilder::service(
        "https://issuer.example",
        "ayoung@stoughton",
        "https://nova.example",
        client.public_key().clone(),
        NOW - 5,
    )
    .scope("stoughton", "turing")
    .roles(["member", "reader"])
    .trust_id("2Qf3mV0cZ8bq1Xo4yT6wUg")
    .actor_chain(vec![Actor {
        sub: "nova-compute@service".into(),
        iss: None,
    }])
    .tagging(TokenTagging::Cwt)
    .sign(&issuer, &kid)
    .unwrap();
    let body = b"{\"name\":\"vm\"}".to_vec();
    let proof = ProofBuilder::new("POST", URI, token.as_bytes(), &body, NOW - 1)
        .unwrap()
        .sign(&client)
        .unwrap();
    Fixture {
        keys,
        token: token.into_bytes(),
        proof: proof.into_bytes(),
        body,
    }
}

/// A fresh verifier (and replay store) trusting the fixture's issuer at NOW.
fn verifier(f: &Fixture) -> Verifier {
    Verifier::builder(
        "https://nova.example",
        TrustedIssuer::with_keys("https://issuer.example", f.keys.clone()),
    )
    .clock(Arc::new(ManualClock::new(NOW)))
    .replay_store(Arc::new(MemoryReplayStore::default().fenced_at(NOW - 3600)))
    .build()
    .unwrap()
}

fn verify(f: &Fixture, token: &[u8], proof: &[u8]) -> keybound::Result<()> {
    verifier(f)
        .verify_request(token, proof, &RequestInfo::new("POST", URI, &f.body))
        .map(|_| ())
}

/// The code a request with `proof` for `method`, `uri`, `body` is refused with.
fn verify_with(f: &Fixture, proof: &[u8], method: &str, uri: &str, body: &[u8]) -> Option<keybound::Code> {
    verifier(f)
        .verify_request(&f.token, proof, &RequestInfo::new(method, uri, body))
        .err()
        .map(|e| e.code())
}

/// Every single-bit flip, exhaustively: the sweep the catalog asks for (CO-18).
#[test]
fn no_single_bit_flip_is_accepted() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let f = fixture(alg);
        verify(&f, &f.token, &f.proof).expect("the unmodified request verifies");
        for bit in 0..f.token.len() * 8 {
            let mut token = f.token.clone();
            token[bit / 8] ^= 1 << (bit % 8);
            assert!(
                verify(&f, &token, &f.proof).is_err(),
                "{alg}: token bit {bit} flipped was accepted"
            );
        }
        for bit in 0..f.proof.len() * 8 {
            let mut proof = f.proof.clone();
            proof[bit / 8] ^= 1 << (bit % 8);
            assert!(
                verify(&f, &f.token, &proof).is_err(),
                "{alg}: proof bit {bit} flipped was accepted"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_tokens_and_proofs_never_verify(
        token_edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        proof_edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let f = fixture(Algorithm::EdDSA);
        let mut token = f.token.clone();
        let mut proof = f.proof.clone();
        for (i, b) in &token_edits { let i = i.index(token.len()); token[i] = *b; }
        for (i, b) in &proof_edits { let i = i.index(proof.len()); proof[i] = *b; }
        let changed = token != f.token || proof != f.proof;
        let result = verify(&f, &token, &proof);
        prop_assert!(!changed || result.is_err());
        // Truncations never verify either.
        let at = cut.index(token.len());
        prop_assert!(verify(&f, &token[..at], &proof).is_err());
        let at = cut.index(f.proof.len());
        prop_assert!(verify(&f, &f.token, &f.proof[..at]).is_err());
    }

    #[test]
    fn inserted_bytes_never_verify(
        at in any::<prop::sample::Index>(),
        inserted in prop::collection::vec(any::<u8>(), 1..4),
        in_proof in any::<bool>(),
    ) {
        let f = fixture(Algorithm::EdDSA);
        let (mut token, mut proof) = (f.token.clone(), f.proof.clone());
        let target = if in_proof { &mut proof } else { &mut token };
        let at = at.index(target.len() + 1);
        target.splice(at..at, inserted.iter().copied());
        prop_assert!(verify(&f, &token, &proof).is_err());
    }

    #[test]
    fn proofs_round_trip_through_the_verifier(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PURGE"]),
        path in prop::collection::vec("[a-zA-Z0-9._~-]{1,12}", 0..5),
        query in proptest::option::of("[a-z]{1,8}=[a-zA-Z0-9]{0,8}"),
        body in prop::collection::vec(any::<u8>(), 0..300),
        age in 0u64..60,
        jti in any::<[u8; 16]>(),
        tagged in any::<bool>(),
    ) {
        let f = fixture(Algorithm::EdDSA);
        let client = SigningKey::derive(Algorithm::EdDSA, b"properties", b"client").unwrap();
        let mut uri = format!("https://nova.example/{}", path.join("/"));
        if let Some(q) = &query { uri = format!("{uri}?{q}"); }
        let proof = ProofBuilder::new(method, &uri, &f.token, &body, NOW - age)
            .unwrap()
            .jti(jti)
            .tagged(tagged)
            .sign(&client)
            .unwrap();
        prop_assert!(keybound::cbor::validate(proof.as_bytes()).is_ok() || tagged);
        let verified = verifier(&f)
            .verify_request(&f.token, proof.as_bytes(), &RequestInfo::new(method, &uri, &body))
            .unwrap();
        prop_assert_eq!(verified.jti(), &jti);
        // The same proof for another method, URI or body is refused by code.
        let other = if method == "GET" { "POST" } else { "GET" };
        let e = verify_with(&f, proof.as_bytes(), other, &uri, &body);
        prop_assert_eq!(e, Some(keybound::Code::ProofHtmMismatch));
        let e = verify_with(&f, proof.as_bytes(), method, &format!("{uri}x"), &body);
        prop_assert_eq!(e, Some(keybound::Code::ProofHtuMismatch));
        let mut other_body = body.clone();
        other_body.push(0);
        let e = verify_with(&f, proof.as_bytes(), method, &uri, &other_body);
        prop_assert_eq!(e, Some(keybound::Code::ProofBodyMismatch));
    }

    #[test]
    fn cose_keys_round_trip(
        es256 in any::<bool>(),
        seed in prop::collection::vec(any::<u8>(), 1..40),
        kid in proptest::option::of(prop::collection::vec(any::<u8>(), 1..16)),
    ) {
        let alg = if es256 { Algorithm::ES256 } else { Algorithm::EdDSA };
        let key = SigningKey::derive(alg, &seed, b"round-trip").unwrap();
        let public = key.public_key().to_cose_key(kid.as_deref());
        let decoded = keybound::key::PublicKey::from_cose_key(&public).unwrap();
        prop_assert_eq!(&decoded, key.public_key());
        prop_assert_eq!(decoded.thumbprint(), key.public_key().thumbprint());
        prop_assert_eq!(&decoded.to_cose_key(kid.as_deref()), &public);
        let private = key.to_cose_key(kid.as_deref());
        let back = SigningKey::from_cose_key(&private).unwrap();
        prop_assert_eq!(back.public_key(), key.public_key());
        prop_assert_eq!(&*back.to_cose_key(kid.as_deref()), &*private);
        // Public and private encodings never cross.
        prop_assert!(SigningKey::from_cose_key(&public).is_err());
        prop_assert!(keybound::key::PublicKey::from_cose_key(&private).is_err());
    }

    #[test]
    fn key_sets_round_trip(seeds in prop::collection::btree_set(any::<u16>(), 1..8)) {
        let mut set = KeySet::new();
        for (i, seed) in seeds.iter().enumerate() {
            let alg = if i % 2 == 0 { Algorithm::EdDSA } else { Algorithm::ES256 };
            let key = SigningKey::derive(alg, &seed.to_be_bytes(), b"set").unwrap();
            set = set.with(format!("k{seed}").into_bytes(), key.public_key().clone()).unwrap();
        }
        let bytes = set.to_cbor();
        prop_assert!(keybound::cbor::validate(&bytes).is_ok());
        let decoded = KeySet::from_cbor(&bytes).unwrap();
        prop_assert_eq!(decoded.len(), set.len());
        for (kid, key) in set.iter() {
            prop_assert_eq!(decoded.get(kid), Some(key));
        }
        prop_assert_eq!(decoded.to_cbor(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let f = fixture(Algorithm::EdDSA);
        let _ = keybound::cbor::validate(&data);
        let _ = keybound::token::UnverifiedToken::from_slice(&data);
        let _ = keybound::key::PublicKey::from_cose_key(&data);
        let _ = keybound::key::SigningKey::from_cose_key(&data);
        let _ = keybound::key::KeySet::from_cbor(&data);
        let _ = keybound::danger::insecure_decode_token(&data);
        prop_assert!(verify(&f, &data, &f.proof).is_err());
        prop_assert!(verify(&f, &f.token, &data).is_err());
    }

    #[test]
    fn uri_normalisation_is_idempotent_and_total(s in "[a-zA-Z0-9:/?#\\[\\]@!$&'()*+,;=%._~-]{0,80}") {
        if let Ok(once) = normalize_uri(&s) {
            prop_assert_eq!(normalize_uri(&once).unwrap(), once);
        }
        let with_prefix = format!("https://nova.example/{s}");
        if let Ok(once) = normalize_uri(&with_prefix) {
            prop_assert_eq!(normalize_uri(&once).unwrap(), once);
        }
    }

    #[test]
    fn issued_claims_round_trip(
        sub in "[a-z]{1,12}@[a-z]{1,12}",
        project in proptest::option::of("[a-z]{1,16}"),
        roles in prop::collection::btree_set("[a-z]{1,10}", 0..6),
        lifetime in 1u64..=300,
        iat in 1_000_000_000u64..2_000_000_000,
    ) {
        let issuer = SigningKey::derive(Algorithm::EdDSA, b"properties", b"issuer").unwrap();
        let client = SigningKey::derive(Algorithm::EdDSA, b"properties", b"client").unwrap();
        let mut builder = TokenBuilder::service("https://issuer.example", &sub, "https://nova.example", client.public_key().clone(), iat)
            .lifetime(lifetime)
            .roles(roles.iter().cloned());
        if let Some(p) = &project { builder = builder.scope("stoughton", p); }
        let token = builder.sign(&issuer, b"k1").unwrap();
        let decoded = keybound::danger::insecure_decode_token(token.as_bytes()).unwrap().claims;
        prop_assert_eq!(&decoded.sub, &sub);
        prop_assert_eq!(decoded.exp - decoded.iat, lifetime);
        prop_assert_eq!(decoded.project, project);
        prop_assert_eq!(decoded.roles, roles.into_iter().collect::<Vec<_>>());
        // Everything we emit is in the strict deterministic profile.
        prop_assert!(keybound::cbor::validate(token.as_bytes()).is_ok());
    }
}
