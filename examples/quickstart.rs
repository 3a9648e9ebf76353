//! Issue → prove → verify in one process, printing each step.
//!
//! `cargo run --example quickstart`
use std::sync::Arc;

use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::proof::{ProofBuilder, RequestInfo};
use keybound::token::TokenBuilder;
use keybound::verify::{SystemClock, TrustedIssuer, Verifier};

fn main() -> keybound::Result<()> {
    let now = keybound::verify::Clock::now(&SystemClock);
    let issuer_key = SigningKey::generate(Algorithm::EdDSA)?;
    let kid = issuer_key.public_key().default_kid();
    let keys = KeySet::new().with(kid.clone(), issuer_key.public_key().clone())?;
    let client_key = SigningKey::generate(Algorithm::EdDSA)?;
    println!("client key thumbprint: {}", client_key.public_key().thumbprint());

    let token = TokenBuilder::service(
        "https://issuer.example",
        "ayoung@stoughton",
        "https://nova.example",
        client_key.public_key().clone(),
        now,
    )
    .scope("stoughton", "turing")
    .roles(["member"])
    .sign(&issuer_key, &kid)?;
    println!("service token: {} bytes", token.as_bytes().len());

    let verifier = Verifier::builder(
        "https://nova.example",
        TrustedIssuer::with_keys("https://issuer.example", keys),
    )
    .clock(Arc::new(SystemClock))
    .build()?;
    let uri = "https://nova.example/v2/servers";
    let request = RequestInfo::new("GET", uri, b"");
    // Made after the verifier: its replay store refuses proofs made before it started.
    let proof_time = keybound::verify::Clock::now(&SystemClock);
    let proof = ProofBuilder::new("GET", uri, token.as_bytes(), b"", proof_time)?.sign(&client_key)?;
    println!("proof: {} bytes", proof.as_bytes().len());

    let verified = verifier.verify_request(token.as_bytes(), proof.as_bytes(), &request)?;
    println!(
        "1. signed request: accepted for {} with roles {:?}",
        verified.subject(),
        verified.roles()
    );
    let replay = verifier
        .verify_request(token.as_bytes(), proof.as_bytes(), &request)
        .unwrap_err();
    println!("2. same proof again: refused ({replay})");
    let thief = SigningKey::generate(Algorithm::EdDSA)?;
    let stolen = ProofBuilder::new("GET", uri, token.as_bytes(), b"", now)?.sign(&thief)?;
    let refused = verifier
        .verify_request(token.as_bytes(), stolen.as_bytes(), &request)
        .unwrap_err();
    println!("3. stolen token, thief's own key: refused ({refused})");
    Ok(())
}
