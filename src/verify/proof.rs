//! Proof verification: steps P1–P12 of spec/verification.md (P13, the
//! replay record, is the verifier's last step: `super::replay`).

use super::token::truncate;
use crate::cbor::{self, Label, Reader};
use crate::cose::{self, Tagging};
use crate::error::{Code, Error, Result, err};
use crate::key::PublicKey;
use crate::proof::{
    DEFAULT_MAX_AGE, HINT_LEN, JTI_LEN, MAX_NONCE_LEN, MAX_PROOF_SIZE, RequestInfo, check_method, external_aad, label,
    normalize_uri,
};

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
            leeway: crate::verify::token::DEFAULT_LEEWAY,
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
