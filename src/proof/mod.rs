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

pub use crate::verify::proof::{NonceValidator, ProofPolicy};

use std::fmt;

use sha2::{Digest, Sha256};

use crate::cbor;
use crate::cose;
use crate::encoding::b64url_encode;
use crate::error::{Code, Error, Result, err};
use crate::key::SigningKey;
use crate::verify::token::truncate;

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
        crate::verify::proof::decode_payload(&payload).map_err(|e| {
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
pub(crate) fn check_method(method: &str) -> Result<()> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.is_empty() || method.len() > MAX_METHOD_LEN || !method.bytes().all(tchar) {
        return err(
            Code::ProofFieldType,
            format!("htm {:?} is not an HTTP method token", truncate(method)),
        );
    }
    Ok(())
}
