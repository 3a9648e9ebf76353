//! Decoding and checks short of a full verification. Named so that they are
//! never used by accident on a request path: the callers are `keybound
//! inspect`, `keybound verify` without a proof, test vectors and debugging.

use crate::error::Result;
use crate::key::Algorithm;
use crate::token::{Claims, UnverifiedToken, VerifiedToken};
use crate::verify::Verifier;

/// A token's headers and claims, decoded under the strict profile but with
/// **no** signature, issuer, audience or time check.
#[derive(Clone, Debug)]
pub struct InsecureToken {
    /// `alg` from the protected header.
    pub alg: Algorithm,
    /// `kid`.
    pub kid: Vec<u8>,
    /// The claims, unchecked.
    pub claims: Claims,
}

/// Decodes a token without verifying it. Never base a decision on the result.
pub fn insecure_decode_token(bytes: &[u8]) -> Result<InsecureToken> {
    let (sign1, claims) = UnverifiedToken::from_slice(bytes)?.into_parts()?;
    Ok(InsecureToken {
        alg: sign1.alg,
        kid: sign1.kid.unwrap_or_default().to_vec(),
        claims,
    })
}

/// Checks only the signature of a token (empty external AAD) with `key`.
pub fn check_token_signature(bytes: &[u8], key: &crate::key::PublicKey) -> Result<()> {
    let sign1 = crate::cose::parse_sign1(bytes, crate::cose::Tagging::Cwt)?;
    sign1.verify(key, &[], crate::Code::CoseAlgMismatch, crate::Code::CoseBadSignature)
}

/// Verifies a token alone (steps T1–T12 and D1–D5) with `verifier`'s issuers, audience
/// and clock: **no** proof of possession and **no** replay check, so the
/// result says nothing about who sent it. For diagnostics (`keybound verify`
/// without a proof); requests go through [`Verifier::verify_request`], whose
/// result is the only one the HTTP extractor and the policy accept.
pub fn verify_token_without_proof<R: ?Sized>(verifier: &Verifier<R>, token: &[u8]) -> Result<VerifiedToken> {
    verifier.verify_token_only(token)
}
