//! # keybound: holder-of-key tokens with per-request proofs
//!
//! An issuer hands out small CWTs (CBOR/COSE) that name exactly one service
//! and carry the client's public key. Every request carries a fresh proof
//! signed with that key for that very request: method, target URI, body and
//! token. A token without its key is worthless; a proof is good once.
//!
//! Issue → prove → verify, end to end:
//!
//! ```
//! use keybound::key::{Algorithm, KeySet, SigningKey};
//! use keybound::proof::{ProofBuilder, RequestInfo};
//! use keybound::token::TokenBuilder;
//! use keybound::verify::{ManualClock, MemoryReplayStore, TrustedIssuer, Verifier};
//! use std::sync::Arc;
//!
//! let now = 1_763_800_000;
//! // The issuer's signing key, published to services as a key set.
//! let issuer_key = SigningKey::generate(Algorithm::EdDSA)?;
//! let keys = KeySet::new().with(b"k1".to_vec(), issuer_key.public_key().clone())?;
//!
//! // The client's own key; the issuer binds the token to it.
//! let client_key = SigningKey::generate(Algorithm::EdDSA)?;
//! let token = TokenBuilder::service(
//!     "https://issuer.example", "ayoung@stoughton", "https://nova.example",
//!     client_key.public_key().clone(), now)
//!     .scope("stoughton", "turing")
//!     .roles(["member"])
//!     .sign(&issuer_key, b"k1")?;
//!
//! // For each request the client signs a proof.
//! let proof = ProofBuilder::new("GET", "https://nova.example/v2/servers", token.as_bytes(), b"", now)?
//!     .sign(&client_key)?;
//!
//! // The service verifies both.
//! let verifier = Verifier::builder("https://nova.example",
//!         TrustedIssuer::with_keys("https://issuer.example", keys))
//!     .clock(Arc::new(ManualClock::new(now + 2)))
//!     // A replay store that started before the proof was made (by
//!     // default a verifier's store refuses proofs made before it started).
//!     .replay_store(Arc::new(MemoryReplayStore::default().fenced_at(now - 60)))
//!     .build()?;
//! let request = RequestInfo::new("GET", "https://nova.example/v2/servers", b"");
//! let verified = verifier.verify_request(token.as_bytes(), proof.as_bytes(), &request)?;
//! assert_eq!(verified.subject(), "ayoung@stoughton");
//! assert_eq!(verified.project(), Some("turing"));
//! assert_eq!(verified.roles(), ["member"]);
//!
//! // The same proof a second time is a replay.
//! let again = verifier.verify_request(token.as_bytes(), proof.as_bytes(), &request).unwrap_err();
//! assert_eq!(again.code().as_str(), "replay.detected");
//!
//! // The same token with a proof for another URI is refused.
//! let wrong = ProofBuilder::new("GET", "https://nova.example/admin", token.as_bytes(), b"", now)?.sign(&client_key)?;
//! let refused = verifier.verify_request(token.as_bytes(), wrong.as_bytes(), &request).unwrap_err();
//! assert_eq!(refused.code().as_str(), "proof.htu_mismatch");
//! # Ok::<(), keybound::Error>(())
//! ```
//!
//! The wire formats and every verification step are specified in `spec/`;
//! `test-vectors/` holds generated vectors that any implementation can run.
//! Error codes are listed in [`Code`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cbor;
#[cfg(feature = "client")]
pub mod client;
pub(crate) mod cose;
pub mod danger;
pub mod delegation;
pub mod encoding;
pub mod error;
#[cfg(feature = "policy")]
pub mod federation;
/// Fuzz entry points for `fuzz/` (test tooling, feature `testkit`).
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod fuzzing;
/// The gateway (feature `gateway`); its identity format is in the core.
pub mod gateway;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "issuer")]
pub mod issuer;
#[cfg(feature = "policy")]
mod json;
pub mod key;
pub mod keyset;
pub mod names;
#[cfg(feature = "policy")]
pub mod policy;
pub mod proof;
pub mod token;
pub mod verify;

/// The test-vector generator (test tooling, feature `testkit`).
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod vectors;

pub use error::{Code, Error, Result};

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// N random bytes from the operating system.
pub(crate) fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| {
        Error::new(
            Code::SystemRandomnessUnavailable,
            format!("no randomness available: {e}"),
        )
        .with_source(e)
    })?;
    Ok(out)
}
