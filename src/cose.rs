//! COSE_Sign1 (RFC 9052 §4.2) as the profile allows it.
//!
//! ```cddl
//! COSE_Sign1 = [
//!     protected : bstr .cbor { 1 => -8 / -7, ? 2 => [+ label], ? 4 => bstr },
//!     unprotected : { ? 4 => bstr },
//!     payload : bstr,            ; never nil: no detached payloads
//!     signature : bstr
//! ]
//! ```
//!
//! Parsing keeps the received protected-header and payload bytes: the
//! signature is always checked over exactly what arrived, never over a
//! re-encoding. The algorithm comes only from the protected bucket.

use crate::cbor::{self, Label, Reader};
use crate::error::{Code, Error, Result, err};
use crate::key::{Algorithm, PublicKey, SigningKey};

/// CWT tag (RFC 8392).
pub const TAG_CWT: u64 = 61;
/// COSE_Sign1 tag.
pub const TAG_SIGN1: u64 = 18;
/// Header label of the algorithm.
const HEADER_ALG: i64 = 1;
/// Header label of the key id.
const HEADER_KID: i64 = 4;

/// Which outer tags an object may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tagging {
    /// Tokens: untagged, `18(…)`, `61(…)` or `61(18(…))`.
    Cwt,
    /// Proofs: untagged or `18(…)`.
    Sign1,
}

/// A structurally valid COSE_Sign1 whose signature is not yet checked.
#[derive(Clone, Debug)]
pub(crate) struct Sign1<'a> {
    pub protected: &'a [u8],
    pub alg: Algorithm,
    pub kid: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub signature: &'a [u8],
}

/// Parses `input` into a [`Sign1`]: tags, strict CBOR, structure, headers.
pub(crate) fn parse_sign1(input: &[u8], tagging: Tagging) -> Result<Sign1<'_>> {
    let (tags, body) = cbor::strip_tags(input, 3)?;
    let allowed = matches!(
        (tagging, tags.as_slice()),
        (_, []) | (_, [TAG_SIGN1]) | (Tagging::Cwt, [TAG_CWT]) | (Tagging::Cwt, [TAG_CWT, TAG_SIGN1])
    );
    if !allowed {
        let expected = match tagging {
            Tagging::Cwt => "untagged, 18, 61 or 61(18(…))",
            Tagging::Sign1 => "untagged or 18",
        };
        return err(
            Code::CoseStructure,
            format!("outer tags {tags:?} are not allowed here (expected {expected})"),
        );
    }
    cbor::validate(body)?;
    let mut r = Reader::new(body);
    if r.array() != Some(4) {
        return err(Code::CoseStructure, "a COSE_Sign1 is an array of four items");
    }
    let Some(protected) = r.bytes() else {
        return err(
            Code::CoseStructure,
            format!(
                "the protected header must be a byte string, found {}",
                r.describe_next()
            ),
        );
    };
    let unprotected_start = r.position();
    let Some(unprotected_len) = r.map() else {
        return err(
            Code::CoseStructure,
            format!("the unprotected header must be a map, found {}", r.describe_next()),
        );
    };
    let mut unprotected = Reader::new(&body[unprotected_start..]);
    unprotected.map();
    for _ in 0..unprotected_len {
        r.raw_item();
        r.raw_item();
    }
    let Some(payload) = r.bytes() else {
        return err(
            Code::CoseStructure,
            format!(
                "the payload must be an embedded byte string, found {}",
                r.describe_next()
            ),
        );
    };
    if payload.is_empty() {
        return err(Code::CoseStructure, "the payload is empty");
    }
    let Some(signature) = r.bytes() else {
        return err(
            Code::CoseStructure,
            format!("the signature must be a byte string, found {}", r.describe_next()),
        );
    };
    let headers = parse_headers(protected, unprotected, unprotected_len)?;
    Ok(Sign1 {
        protected,
        alg: headers.0,
        kid: headers.1,
        payload,
        signature,
    })
}

/// Applies the header rules; returns (alg, kid).
fn parse_headers<'a>(
    protected: &'a [u8],
    mut unprotected: Reader<'a>,
    unprotected_len: usize,
) -> Result<(Algorithm, Option<&'a [u8]>)> {
    let mut alg: Option<Result<Algorithm>> = None;
    let mut kid: Option<&[u8]> = None;
    let mut crit: Option<&[u8]> = None;
    let mut unsupported: Option<String> = None;
    if !protected.is_empty() {
        cbor::validate(protected)?;
        let mut p = Reader::new(protected);
        let Some(len) = p.map() else {
            return err(Code::CoseStructure, "the protected header does not encode a map");
        };
        for _ in 0..len {
            match p.label() {
                Some(Label::Int(1)) => alg = Some(read_alg(&mut p)?),
                Some(Label::Int(2)) => crit = p.raw_item(),
                Some(Label::Int(4)) => kid = Some(read_kid(&mut p)?),
                other => {
                    unsupported.get_or_insert_with(|| format!("protected header parameter {}", label_text(other)));
                    if other.is_none() {
                        // A label the reader cannot represent (an integer
                        // beyond i64): skip the key too, to stay aligned.
                        p.raw_item();
                    }
                    p.raw_item();
                }
            }
        }
        if let Some(crit) = crit {
            check_crit(crit, protected)?;
        }
        if let Some(what) = unsupported {
            return err(
                Code::CoseHeaderUnsupported,
                format!("{what} is not part of the profile"),
            );
        }
    }
    for _ in 0..unprotected_len {
        let label = unprotected.label();
        let in_protected = match label {
            Some(Label::Int(1)) => alg.is_some(),
            Some(Label::Int(2)) => crit.is_some(),
            Some(Label::Int(4)) => kid.is_some(),
            _ => false,
        };
        if in_protected {
            return err(
                Code::CoseHeaderConflict,
                format!("header parameter {} is in both buckets", label_text(label)),
            );
        }
        match label {
            Some(Label::Int(1)) => {
                return err(
                    Code::CoseAlgUnprotected,
                    "alg (1) is only in the unprotected header; it must be protected",
                );
            }
            Some(Label::Int(2)) => return err(Code::CoseCritMisplaced, "crit (2) must be in the protected header"),
            Some(Label::Int(4)) => kid = Some(read_kid(&mut unprotected)?),
            other => {
                return err(
                    Code::CoseHeaderUnsupported,
                    format!(
                        "unprotected header parameter {} is not part of the profile",
                        label_text(other)
                    ),
                );
            }
        }
    }
    match alg {
        Some(alg) => Ok((alg?, kid)),
        None => err(Code::CoseAlgMissing, "the protected header has no alg (1)"),
    }
}

fn read_alg(p: &mut Reader<'_>) -> Result<Result<Algorithm>> {
    if let Some(id) = p.int() {
        return Ok(Algorithm::from_cose_id(id).ok_or_else(|| {
            Error::new(
                Code::CoseAlgUnsupported,
                format!("alg {id} is not supported (EdDSA -8, ES256 -7)"),
            )
        }));
    }
    if let Some(name) = p.text() {
        return Ok(Err(Error::new(
            Code::CoseAlgUnsupported,
            format!("alg {name:?} is not supported (EdDSA -8, ES256 -7)"),
        )));
    }
    Err(header_type("alg (1)"))
}

/// `crit` must be a non-empty array of distinct labels, each present in the
/// protected bucket and understood here (only alg and kid are).
fn check_crit(crit: &[u8], protected: &[u8]) -> Result<()> {
    let mut c = Reader::new(crit);
    let Some(n) = c.array().filter(|n| *n > 0) else {
        return err(Code::CoseCritInvalid, "crit (2) must be a non-empty array of labels");
    };
    let mut seen: Vec<Label<'_>> = Vec::with_capacity(n);
    for _ in 0..n {
        let Some(label) = c.label() else {
            return err(
                Code::CoseCritInvalid,
                "crit (2) contains something other than an integer or text label",
            );
        };
        if seen.contains(&label) {
            return err(Code::CoseCritInvalid, format!("crit (2) lists {label} twice"));
        }
        seen.push(label);
    }
    let mut present = Vec::new();
    let mut p = Reader::new(protected);
    for _ in 0..p.map().unwrap_or(0) {
        match p.label() {
            Some(label) => present.push(label),
            // A label outside the i64 range is not consumed by `label`.
            None => {
                p.raw_item();
            }
        }
        p.raw_item();
    }
    for label in &seen {
        if !present.contains(label) {
            return err(
                Code::CoseCritInvalid,
                format!("crit (2) lists {label}, which is not in the protected header"),
            );
        }
        if !matches!(label, Label::Int(1) | Label::Int(4)) {
            return err(
                Code::CoseCritUnknown,
                format!("crit (2) requires header parameter {label}, which is not understood"),
            );
        }
    }
    Ok(())
}

/// A kid names a key, and no key has an empty name (formats.md §6), so an
/// empty kid is refused here rather than left to fail the key lookup.
fn read_kid<'a>(r: &mut Reader<'a>) -> Result<&'a [u8]> {
    match r.bytes() {
        Some(kid) if !kid.is_empty() => Ok(kid),
        _ => Err(header_type("kid (4)")),
    }
}

fn header_type(what: &str) -> Error {
    Error::new(
        Code::CoseHeaderType,
        format!("header parameter {what} has the wrong type"),
    )
}

fn label_text(label: Option<Label<'_>>) -> String {
    label.map_or_else(|| "(not an integer or text)".to_owned(), |l| l.to_string())
}

/// Builds the `Sig_structure` for a COSE_Sign1 (RFC 9052 §4.4).
pub(crate) fn sig_structure(protected: &[u8], external_aad: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + protected.len() + external_aad.len() + payload.len());
    cbor::write_array(&mut out, 4);
    cbor::write_text(&mut out, "Signature1");
    cbor::write_bytes(&mut out, protected);
    cbor::write_bytes(&mut out, external_aad);
    cbor::write_bytes(&mut out, payload);
    out
}

impl Sign1<'_> {
    /// Checks the signature with `key` over the received bytes; the header
    /// `alg` must be the key's algorithm.
    pub(crate) fn verify(
        &self,
        key: &PublicKey,
        external_aad: &[u8],
        alg_mismatch: Code,
        bad_signature: Code,
    ) -> Result<()> {
        if self.alg != key.algorithm() {
            return err(
                alg_mismatch,
                format!("the header says {} but the key is {}", self.alg, key.algorithm()),
            );
        }
        let tbs = sig_structure(self.protected, external_aad, self.payload);
        if key.verify(&tbs, self.signature) {
            return Ok(());
        }
        let why = if bad_signature == Code::ProofBadSignature {
            "the proof's signature does not verify with the token's key: it was made with another key (a stolen token?) or over another token or body"
        } else {
            "the token's signature does not verify with the issuer key named by its kid"
        };
        err(bad_signature, why)
    }
}

/// Signs `payload` into a COSE_Sign1 whose protected header holds `alg` and
/// (if given) `kid`, with an empty unprotected header. Returns untagged bytes.
pub(crate) fn sign1(key: &SigningKey, kid: Option<&[u8]>, payload: Vec<u8>, external_aad: &[u8]) -> Vec<u8> {
    let mut protected = Vec::with_capacity(8 + kid.map_or(0, <[u8]>::len));
    cbor::write_map(&mut protected, 1 + usize::from(kid.is_some()));
    cbor::write_int(&mut protected, HEADER_ALG);
    cbor::write_int(&mut protected, key.algorithm().cose_id());
    if let Some(kid) = kid {
        cbor::write_int(&mut protected, HEADER_KID);
        cbor::write_bytes(&mut protected, kid);
    }
    let signature = key.sign(&sig_structure(&protected, external_aad, &payload));
    let mut out = Vec::with_capacity(protected.len() + payload.len() + signature.len() + 12);
    cbor::write_array(&mut out, 4);
    cbor::write_bytes(&mut out, &protected);
    cbor::write_map(&mut out, 0);
    cbor::write_bytes(&mut out, &payload);
    cbor::write_bytes(&mut out, &signature);
    out
}

#[cfg(test)]
mod tests {
    use coset::CborSerializable;

    use super::*;
    use crate::proof::ProofBuilder;

    /// Proofs (no kid, an external AAD) read and re-encoded by coset are the
    /// same bytes, and coset's Sig_structure is the one that was signed.
    #[test]
    fn sign1_and_proof_payload_agree_with_coset() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let key = SigningKey::derive(alg, b"oracle", b"client").unwrap();
            let proof = ProofBuilder::new(
                "POST",
                "https://nova.example/v2/servers?a=1",
                b"token",
                b"{}",
                1_763_800_000,
            )
            .unwrap()
            .nonce(b"nonce-1".to_vec())
            .sign(&key)
            .unwrap();
            let sign1 = coset::CoseSign1::from_slice(proof.as_bytes()).unwrap();
            assert_eq!(sign1.clone().to_vec().unwrap(), proof.as_bytes());
            assert!(sign1.protected.header.key_id.is_empty());
            let payload = sign1.payload.clone().unwrap();
            let value: ciborium::Value = ciborium::from_reader(payload.as_slice()).unwrap();
            assert_eq!(cbor::to_vec(&value), payload);
            let aad = crate::proof::external_aad(&crate::sha256(b"token"), &crate::sha256(b"{}"));
            sign1
                .verify_signature(&aad, |signature, tbs| {
                    key.public_key()
                        .verify(tbs, signature)
                        .then_some(())
                        .ok_or("bad signature")
                })
                .unwrap();
        }
    }
}
