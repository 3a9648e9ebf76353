//! Request proofs: a COSE_Sign1 made with the token's `cnf` key for one
//! HTTP request (DPoP, RFC 9449, redone in CBOR with the body covered).
//!
//! ```cddl
//! ProofPayload = {
//!     1 => tstr,              ; htm: request method, case-sensitive
//!     2 => tstr,              ; htu: target URI, normalised (uri.rs), query included
//!     3 => uint,              ; iat: Unix seconds
//!     4 => bstr .size 16,     ; jti: random
//!     5 => bstr .size 4,      ; tkh: SHA-256(token)[0..4], diagnostic only
//!     6 => bstr .size 4,      ; bdh: SHA-256(body)[0..4], diagnostic only
//!   ? 7 => bstr .size (1..64) ; nonce from the service
//! }
//! ProofAad = [ "keybound-proof-v1", ath: bstr .size 32, bdy: bstr .size 32 ]
//! ```
//!
//! The signature covers the full SHA-256 of the token and of the body through
//! COSE external AAD (RFC 9052 §4.3): they are computed by the verifier from
//! the bytes it received and never travel. The 4-byte `tkh`/`bdh` prefixes
//! only let the verifier say *which* binding failed
//! (`proof.ath_mismatch` / `proof.body_mismatch`) instead of a bare
//! `proof.bad_signature`; acceptance never rests on them.

mod uri;

pub use uri::normalize_uri;

use std::fmt;

use sha2::{Digest, Sha256};

use crate::cbor::{self, Label, Reader};
use crate::cose::{self, Tagging};
use crate::encoding::b64url_encode;
use crate::error::{Code, Error, Result, err};
use crate::key::{PublicKey, SigningKey};
use crate::token::verify::truncate;

/// Largest proof accepted, in bytes, checked before any parsing.
pub const MAX_PROOF_SIZE: usize = 4096;
/// Length of `jti`.
pub const JTI_LEN: usize = 16;
/// Length of the `tkh` and `bdh` diagnostic prefixes.
pub const HINT_LEN: usize = 4;
/// Longest nonce accepted.
pub const MAX_NONCE_LEN: usize = 64;
/// Longest method accepted.
pub const MAX_METHOD_LEN: usize = 32;
/// Domain-separation string at the head of the proof's external AAD.
pub const AAD_CONTEXT: &str = "keybound-proof-v1";
/// Default freshness window: a proof may be this many seconds old.
pub const DEFAULT_MAX_AGE: u64 = 60;

/// Proof payload labels.
pub mod label {
    /// htm
    pub const HTM: i64 = 1;
    /// htu
    pub const HTU: i64 = 2;
    /// iat
    pub const IAT: i64 = 3;
    /// jti
    pub const JTI: i64 = 4;
    /// tkh
    pub const TKH: i64 = 5;
    /// bdh
    pub const BDH: i64 = 6;
    /// nonce
    pub const NONCE: i64 = 7;
}

/// SHA-256 of a request body, the form in which a body enters a proof.
pub fn body_sha256(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// The proof's external AAD: what the signature covers without it travelling.
pub(crate) fn external_aad(token_hash: &[u8; 32], body_hash: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(90);
    cbor::write_array(&mut out, 3);
    cbor::write_text(&mut out, AAD_CONTEXT);
    cbor::write_bytes(&mut out, token_hash);
    cbor::write_bytes(&mut out, body_hash);
    out
}

/// The request as the verifier sees it.
#[derive(Clone, Debug)]
pub struct RequestInfo<'a> {
    /// Method, exactly as received (`GET`).
    pub method: &'a str,
    /// Absolute target URI as the client addressed it (external base URL +
    /// path and query); normalised before comparison.
    pub uri: &'a str,
    /// SHA-256 of the body bytes as received.
    pub body_sha256: [u8; 32],
}

impl<'a> RequestInfo<'a> {
    /// Describes a request with its full body.
    pub fn new(method: &'a str, uri: &'a str, body: &[u8]) -> Self {
        RequestInfo {
            method,
            uri,
            body_sha256: body_sha256(body),
        }
    }
}

/// A signed proof: its exact bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Proof {
    bytes: Vec<u8>,
}

impl Proof {
    /// The encoded proof.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// base64url, as carried in the `KB-Proof` header.
    pub fn to_base64url(&self) -> String {
        b64url_encode(&self.bytes)
    }
    /// The encoded proof, consumed.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proof({} bytes)", self.bytes.len())
    }
}

/// Builds and signs a proof for one request.
#[must_use = "a builder does nothing until signed"]
#[derive(Clone, Debug)]
pub struct ProofBuilder {
    method: String,
    htu: String,
    token_hash: [u8; 32],
    body_hash: [u8; 32],
    iat: u64,
    jti: Option<[u8; JTI_LEN]>,
    nonce: Option<Vec<u8>>,
    tagged: bool,
}

impl ProofBuilder {
    /// A proof for `method uri` carrying `body`, accompanying `token`,
    /// created at `iat`. The URI is normalised here.
    pub fn new(method: &str, uri: &str, token: &[u8], body: &[u8], iat: u64) -> Result<Self> {
        Self::with_body_sha256(method, uri, token, body_sha256(body), iat)
    }

    /// As [`ProofBuilder::new`], with the body's SHA-256 computed elsewhere
    /// (streamed bodies).
    pub fn with_body_sha256(method: &str, uri: &str, token: &[u8], body_sha256: [u8; 32], iat: u64) -> Result<Self> {
        check_method(method).map_err(|e| Error::new(Code::IssueInvalid, e.message().to_owned()))?;
        Ok(ProofBuilder {
            method: method.to_owned(),
            htu: normalize_uri(uri)?,
            token_hash: Sha256::digest(token).into(),
            body_hash: body_sha256,
            iat,
            jti: None,
            nonce: None,
            tagged: false,
        })
    }

    /// Includes the service's nonce.
    pub fn nonce(mut self, nonce: impl Into<Vec<u8>>) -> Self {
        self.nonce = Some(nonce.into());
        self
    }

    /// A fixed jti instead of a random one (for test vectors).
    pub fn jti(mut self, jti: [u8; JTI_LEN]) -> Self {
        self.jti = Some(jti);
        self
    }

    /// Emits `18(COSE_Sign1)` instead of the bare array.
    pub fn tagged(mut self, tagged: bool) -> Self {
        self.tagged = tagged;
        self
    }

    /// Signs with the client key (the token's `cnf` key).
    pub fn sign(self, key: &SigningKey) -> Result<Proof> {
        if let Some(nonce) = &self.nonce
            && (nonce.is_empty() || nonce.len() > MAX_NONCE_LEN)
        {
            return err(Code::IssueInvalid, format!("a nonce is 1 to {MAX_NONCE_LEN} bytes"));
        }
        let jti = match self.jti {
            Some(jti) => jti,
            None => crate::random_array()?,
        };
        let payload = encode_payload(&self, &jti);
        // Never sign what a verifier would refuse (an over-long htu, …).
        decode_payload(&payload).map_err(|e| {
            Error::new(
                Code::IssueInvalid,
                format!("the proof would be refused by verifiers: {e}"),
            )
        })?;
        let aad = external_aad(&self.token_hash, &self.body_hash);
        let sign1 = cose::sign1(key, None, payload, &aad);
        let bytes = if self.tagged {
            [&[0xc0 | cose::TAG_SIGN1 as u8][..], &sign1].concat()
        } else {
            sign1
        };
        Ok(Proof { bytes })
    }
}

/// The proof payload, labels in ascending order.
fn encode_payload(b: &ProofBuilder, jti: &[u8; JTI_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + b.htu.len());
    cbor::write_map(&mut out, 6 + usize::from(b.nonce.is_some()));
    cbor::write_int(&mut out, label::HTM);
    cbor::write_text(&mut out, &b.method);
    cbor::write_int(&mut out, label::HTU);
    cbor::write_text(&mut out, &b.htu);
    cbor::write_int(&mut out, label::IAT);
    cbor::write_uint(&mut out, b.iat);
    cbor::write_int(&mut out, label::JTI);
    cbor::write_bytes(&mut out, jti);
    cbor::write_int(&mut out, label::TKH);
    cbor::write_bytes(&mut out, &b.token_hash[..HINT_LEN]);
    cbor::write_int(&mut out, label::BDH);
    cbor::write_bytes(&mut out, &b.body_hash[..HINT_LEN]);
    if let Some(nonce) = &b.nonce {
        cbor::write_int(&mut out, label::NONCE);
        cbor::write_bytes(&mut out, nonce);
    }
    out
}

/// An HTTP method token (RFC 9110 §9): 1–32 tchars.
fn check_method(method: &str) -> Result<()> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.is_empty() || method.len() > MAX_METHOD_LEN || !method.bytes().all(tchar) {
        return err(
            Code::ProofFieldType,
            format!("htm {:?} is not an HTTP method token", truncate(method)),
        );
    }
    Ok(())
}

/// The decoded payload of a proof.
#[derive(Clone, Debug)]
pub(crate) struct ProofClaims<'a> {
    pub htm: &'a str,
    pub htu: &'a str,
    pub iat: u64,
    pub jti: [u8; JTI_LEN],
    pub tkh: &'a [u8],
    pub bdh: &'a [u8],
    pub nonce: Option<&'a [u8]>,
}

/// Step P4: decodes the proof payload.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<ProofClaims<'_>> {
    cbor::validate(payload)?;
    let mut r = Reader::new(payload);
    let Some(entries) = r.map() else {
        return err(
            Code::ProofFieldType,
            format!("the proof payload must be a map, found {}", r.describe_next()),
        );
    };
    let field_type = |name: &str, expected: &str, r: &Reader<'_>| {
        Error::new(
            Code::ProofFieldType,
            format!("proof field {name} must be {expected}, found {}", r.describe_next()),
        )
    };
    let (mut htm, mut htu, mut iat, mut jti, mut tkh, mut bdh, mut nonce) = (None, None, None, None, None, None, None);
    for _ in 0..entries {
        match r.label() {
            Some(Label::Int(label::HTM)) => {
                htm = Some(r.text().ok_or_else(|| field_type("htm (1)", "a text string", &r))?)
            }
            Some(Label::Int(label::HTU)) => {
                htu = Some(r.text().ok_or_else(|| field_type("htu (2)", "a text string", &r))?)
            }
            Some(Label::Int(label::IAT)) => {
                let t = r
                    .uint()
                    .ok_or_else(|| field_type("iat (3)", "an unsigned integer", &r))?;
                if t > i64::MAX as u64 {
                    return err(Code::ProofFieldType, format!("proof iat {t} is out of range"));
                }
                iat = Some(t);
            }
            Some(Label::Int(label::JTI)) => {
                let bytes = r.bytes().ok_or_else(|| field_type("jti (4)", "a byte string", &r))?;
                jti = Some(<[u8; JTI_LEN]>::try_from(bytes).map_err(|_| {
                    Error::new(
                        Code::ProofJtiInvalid,
                        format!("jti (4) is {} bytes; it must be {JTI_LEN}", bytes.len()),
                    )
                })?);
            }
            Some(Label::Int(label::TKH)) => tkh = Some(read_hint(&mut r, "tkh (5)")?),
            Some(Label::Int(label::BDH)) => bdh = Some(read_hint(&mut r, "bdh (6)")?),
            Some(Label::Int(label::NONCE)) => {
                let n = r.bytes().ok_or_else(|| field_type("nonce (7)", "a byte string", &r))?;
                if n.is_empty() || n.len() > MAX_NONCE_LEN {
                    return err(
                        Code::ProofNonceInvalid,
                        format!("nonce (7) is {} bytes; a nonce is 1 to {MAX_NONCE_LEN}", n.len()),
                    );
                }
                nonce = Some(n);
            }
            Some(other) => {
                return err(
                    Code::ProofUnknownField,
                    format!("proof field {other} is not part of the profile"),
                );
            }
            None => {
                return err(
                    Code::ProofFieldType,
                    "a proof field label is neither an integer nor text",
                );
            }
        }
    }
    let missing = |name: &str| Error::new(Code::ProofMissingField, format!("the proof has no {name}"));
    let htm = htm.ok_or_else(|| missing("htm (1)"))?;
    check_method(htm)?;
    Ok(ProofClaims {
        htm,
        htu: htu.ok_or_else(|| missing("htu (2)"))?,
        iat: iat.ok_or_else(|| missing("iat (3)"))?,
        jti: jti.ok_or_else(|| missing("jti (4)"))?,
        tkh: tkh.ok_or_else(|| missing("tkh (5)"))?,
        bdh: bdh.ok_or_else(|| missing("bdh (6)"))?,
        nonce,
    })
}

fn read_hint<'a>(r: &mut Reader<'a>, name: &str) -> Result<&'a [u8]> {
    match r.bytes() {
        Some(b) if b.len() == HINT_LEN => Ok(b),
        Some(b) => err(
            Code::ProofFieldType,
            format!("{name} is {} bytes; it must be {HINT_LEN}", b.len()),
        ),
        None => err(
            Code::ProofFieldType,
            format!("{name} must be a byte string, found {}", r.describe_next()),
        ),
    }
}

/// Checks server nonces; implemented by the verifier's nonce service.
pub trait NonceValidator: Send + Sync {
    /// True if `nonce` was issued by this service and is still current.
    fn is_valid(&self, nonce: &[u8], now: u64) -> bool;
}

/// Freshness and nonce rules for proofs.
#[derive(Clone)]
pub struct ProofPolicy<'a> {
    /// A proof may be at most this old, in seconds (default 60).
    pub max_age: u64,
    /// A proof may be at most this far in the future, in seconds (default 30).
    pub leeway: u64,
    /// When set, every proof must carry a nonce this validator accepts.
    pub nonce: Option<&'a dyn NonceValidator>,
}

impl Default for ProofPolicy<'_> {
    fn default() -> Self {
        ProofPolicy {
            max_age: DEFAULT_MAX_AGE,
            leeway: crate::token::verify::DEFAULT_LEEWAY,
            nonce: None,
        }
    }
}

/// A proof that passed every check but the replay check.
#[derive(Clone, Debug)]
pub(crate) struct CheckedProof {
    pub jti: [u8; JTI_LEN],
    pub iat: u64,
}

/// Steps P1–P12 (everything but replay) for a proof made with `key`
/// accompanying a token whose SHA-256 is `token_hash` (SHA-256 of the empty
/// string when the request carries no token, as at login).
pub(crate) fn check_proof(
    bytes: &[u8],
    key: &PublicKey,
    token_hash: &[u8; 32],
    request: &RequestInfo<'_>,
    policy: &ProofPolicy<'_>,
    now: u64,
) -> Result<CheckedProof> {
    // P1
    if bytes.len() > MAX_PROOF_SIZE {
        return err(
            Code::CborTooLarge,
            format!("proof is {} bytes; the limit is {MAX_PROOF_SIZE}", bytes.len()),
        );
    }
    // P2, P3
    let sign1 = cose::parse_sign1(bytes, Tagging::Sign1)?;
    // P4
    let claims = decode_payload(sign1.payload)?;
    // P5
    if sign1.alg != key.algorithm() {
        return err(
            Code::ProofAlgMismatch,
            format!(
                "the proof says {} but the token is bound to a {} key",
                sign1.alg,
                key.algorithm()
            ),
        );
    }
    // P6
    if claims.htm != request.method {
        return err(
            Code::ProofHtmMismatch,
            format!(
                "the proof is for method {:?}; the request is {:?}",
                claims.htm,
                truncate(request.method)
            ),
        );
    }
    // P7: compare normalised forms; a keybound client sends htu normalised,
    // so normalising the proof's side is usually skipped.
    let request_uri = normalize_uri(request.uri).map_err(|e| {
        Error::new(
            Code::ProofHtuMismatch,
            format!("the request URI cannot be normalised: {}", e.message()),
        )
    })?;
    if claims.htu != request_uri {
        let proof_uri = normalize_uri(claims.htu)?;
        if proof_uri != request_uri {
            return err(
                Code::ProofHtuMismatch,
                format!(
                    "the proof is for {:?}; the request is for {:?}",
                    truncate(&proof_uri),
                    truncate(&request_uri)
                ),
            );
        }
    }
    // P8, P9
    if claims.tkh != &token_hash[..HINT_LEN] {
        return err(Code::ProofAthMismatch, "the proof was made for another token");
    }
    if claims.bdh != &request.body_sha256[..HINT_LEN] {
        return err(
            Code::ProofBodyMismatch,
            "the proof was made for another request body (was the body re-encoded on the way?)",
        );
    }
    // P10
    check_freshness(claims.iat, policy, now)?;
    // P11
    if let Some(validator) = policy.nonce {
        match claims.nonce {
            None => {
                return err(
                    Code::ProofNonceRequired,
                    "this service requires a server nonce in every proof; retry with the nonce it sent",
                );
            }
            Some(nonce) if !validator.is_valid(nonce, now) => {
                return err(
                    Code::ProofNonceInvalid,
                    "the proof's nonce is unknown or expired; retry with the nonce just sent",
                );
            }
            Some(_) => {}
        }
    }
    // P12
    let aad = external_aad(token_hash, &request.body_sha256);
    sign1.verify(key, &aad, Code::ProofAlgMismatch, Code::ProofBadSignature)?;
    Ok(CheckedProof {
        jti: claims.jti,
        iat: claims.iat,
    })
}

/// Step P10: `now − max_age ≤ iat ≤ now + leeway`.
pub(crate) fn check_freshness(iat: u64, policy: &ProofPolicy<'_>, now: u64) -> Result<()> {
    if iat.saturating_add(policy.max_age) < now {
        return err(
            Code::ProofStale,
            format!(
                "the proof was made at {iat} and it is now {now}: {}s old, the limit is {}s; make a new proof for each request",
                now - iat,
                policy.max_age
            ),
        );
    }
    if iat > now.saturating_add(policy.leeway) {
        return err(
            Code::ProofFuture,
            format!(
                "the proof was made at {iat} and it is now {now}: {}s in the future, leeway {}s; check the client clock",
                iat - now,
                policy.leeway
            ),
        );
    }
    Ok(())
}
