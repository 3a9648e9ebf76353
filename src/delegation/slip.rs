//! Routing slips (spec/delegation.md §10): the issuer's signed list of the
//! trusts of one workflow run, carried with every request and queued
//! message of the workflow so that each service finds the trust for its
//! next hop.
//!
//! ```cddl
//! SlipSign1 = [
//!   protected: bstr .cbor TokenProtected,   ; {1: alg, 4: kid}, as tokens
//!   unprotected: Unprotected,
//!   payload: bstr .cbor SlipPayload,
//!   signature: Signature,                   ; external_aad = SlipAad
//! ]
//! SlipPayload = [issuer, workflow_id, workflow, trustor, iat, exp, hops]
//! Hop = [trustee, audience, trust_id]
//! ```
//!
//! One encoder ([`SlipBuilder`]); a parser ([`UnverifiedSlip`]) that
//! exposes only what chooses a key; and [`VerifiedSlip`], which only
//! verification (`Verifier::verify_slip`, the HTTP layer) creates.
//! A slip grants nothing: a trust id in it is usable only by its trustee,
//! logged in with its own key.

use std::fmt;

use crate::cbor::{self, Reader};
use crate::cose::{self, Sign1, Tagging};
use crate::encoding::{b64url_decode, b64url_encode};
use crate::error::{Code, Error, Result, err};
use crate::key::{Algorithm, SigningKey};
use crate::names::{Name, UserName, check_audience};

pub use crate::verify::slip::VerifiedSlip;

/// Largest slip accepted, in bytes, checked before any parsing (as tokens).
/// Its payload is further bounded by the strict profile's 2048-byte strings.
pub const MAX_SLIP_SIZE: usize = 4096;
/// Most hops in a slip.
pub const MAX_HOPS: usize = 32;
/// Longest slip lifetime (`exp − iat`): 30 days, the default ceiling of a
/// trust's lifetime (spec/delegation.md §1).
pub const MAX_SLIP_LIFETIME: u64 = 30 * 86_400;
/// Length of the workflow id.
pub const WORKFLOW_ID_LEN: usize = 16;
/// Longest issuer id in a slip.
pub const MAX_ISSUER_LEN: usize = 256;
/// Length of a trust id: 16 random bytes in base64url.
pub const TRUST_ID_LEN: usize = 22;
/// The context string of [`SLIP_AAD`].
pub const SLIP_CONTEXT: &str = "keybound-slip-v1";
/// The external AAD every slip signature covers: the CBOR text string
/// `"keybound-slip-v1"`. Tokens sign with an empty AAD and proofs with
/// their own, so no signature of one verifies as another.
pub const SLIP_AAD: &[u8] = b"\x70keybound-slip-v1";
/// Elements of the payload array.
const PAYLOAD_LEN: usize = 7;
/// Elements of a hop.
const HOP_LEN: usize = 3;

/// One hop of a workflow: the trustee that acts, the service it calls, and
/// the trust it mints that call's token from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hop {
    /// `name@domain` of the service user that acts (the trust's trustee).
    pub trustee: String,
    /// The audience of the service it calls.
    pub audience: String,
    /// The trust to mint from (22 base64url characters).
    pub trust_id: String,
}

/// What a slip says, checked for shape (S3) but not yet for its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlipContent {
    pub issuer: String,
    pub workflow_id: [u8; WORKFLOW_ID_LEN],
    pub workflow: String,
    pub trustor: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub hops: Vec<Hop>,
}

/// A signed slip as issued: its exact bytes, as carried in `KB-Slip` and in
/// queued messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Slip {
    bytes: Vec<u8>,
}

impl Slip {
    /// Wraps slip bytes (no checks: verify them with `Verifier::verify_slip`).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Slip { bytes }
    }

    /// Decodes the base64url form (the `KB-Slip` header value, a queued
    /// message's field); anything but canonical unpadded base64url of at
    /// most [`MAX_SLIP_SIZE`] bytes is `slip.malformed`.
    pub fn from_base64url(text: &str) -> Result<Self> {
        if text.len() > (MAX_SLIP_SIZE * 4).div_ceil(3) {
            return err(Code::SlipMalformed, format!("a slip is at most {MAX_SLIP_SIZE} bytes"));
        }
        b64url_decode(text)
            .map(Slip::from_bytes)
            .map_err(|_| Error::new(Code::SlipMalformed, "the slip is not unpadded base64url"))
    }

    /// The encoded slip.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded slip, consumed.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// base64url, as carried in `KB-Slip`.
    pub fn to_base64url(&self) -> String {
        b64url_encode(&self.bytes)
    }
}

impl AsRef<[u8]> for Slip {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for Slip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slip({} bytes)", self.bytes.len())
    }
}

/// The expiry of a slip issued at `now` for trusts expiring at
/// `trust_expiries` (`None`: no expiry): the earliest of them, and never
/// later than `now` + [`MAX_SLIP_LIFETIME`].
pub fn slip_expiry(now: u64, trust_expiries: impl IntoIterator<Item = Option<u64>>) -> u64 {
    let ceiling = now.saturating_add(MAX_SLIP_LIFETIME);
    trust_expiries.into_iter().flatten().fold(ceiling, u64::min)
}

/// Builds and signs a routing slip: the one encoder of the format, used by
/// the issuer and the vector generator.
///
/// ```
/// use keybound::delegation::slip::SlipBuilder;
/// use keybound::key::{Algorithm, SigningKey};
/// let issuer = SigningKey::generate(Algorithm::EdDSA)?;
/// let slip = SlipBuilder::new("https://issuer.example", "deploy-instance", "ayoung@stoughton", 1_700_000_000, 1_700_003_600)
///     .hop("nova-compute@service", "https://glance.example", "2Qf3mV0cZ8bq1Xo4yT6wUg")
///     .sign(&issuer, b"k1")?;
/// assert!(slip.as_bytes().len() < 300);
/// # Ok::<(), keybound::Error>(())
/// ```
#[must_use = "a builder does nothing until signed"]
#[derive(Clone, Debug)]
pub struct SlipBuilder {
    content: SlipContent,
    workflow_id: Option<[u8; WORKFLOW_ID_LEN]>,
}

impl SlipBuilder {
    /// A slip of `issuer` for one run of the workflow `workflow` (a name)
    /// by `trustor` (`name@domain`), valid from `issued_at` to `expires_at`
    /// (see [`slip_expiry`]). Add at least one hop.
    pub fn new(
        issuer: impl Into<String>,
        workflow: impl Into<String>,
        trustor: impl Into<String>,
        issued_at: u64,
        expires_at: u64,
    ) -> Self {
        SlipBuilder {
            content: SlipContent {
                issuer: issuer.into(),
                workflow_id: [0; WORKFLOW_ID_LEN],
                workflow: workflow.into(),
                trustor: trustor.into(),
                issued_at,
                expires_at,
                hops: Vec::new(),
            },
            workflow_id: None,
        }
    }

    /// Adds a hop: `trustee` calls `audience` with tokens minted from `trust_id`.
    pub fn hop(mut self, trustee: impl Into<String>, audience: impl Into<String>, trust_id: impl Into<String>) -> Self {
        self.content.hops.push(Hop {
            trustee: trustee.into(),
            audience: audience.into(),
            trust_id: trust_id.into(),
        });
        self
    }

    /// A fixed workflow id instead of a random one (for test vectors).
    pub fn workflow_id(mut self, id: [u8; WORKFLOW_ID_LEN]) -> Self {
        self.workflow_id = Some(id);
        self
    }

    /// Checks the content and signs it with the issuer's `key` under `kid`;
    /// what a verifier would refuse is refused here (`issue.invalid`).
    pub fn sign(self, key: &SigningKey, kid: &[u8]) -> Result<Slip> {
        let SlipBuilder {
            mut content,
            workflow_id,
        } = self;
        if kid.is_empty() {
            return err(Code::IssueInvalid, "the issuer key needs a non-empty kid");
        }
        content.workflow_id = match workflow_id {
            Some(id) => id,
            None => crate::random_array()?,
        };
        let payload = encode_payload(&content);
        decode_payload(&payload).map_err(|e| {
            Error::new(
                Code::IssueInvalid,
                format!("verifiers would refuse this slip: {}", e.message()),
            )
        })?;
        let bytes = cose::sign1(key, Some(kid), payload, SLIP_AAD);
        if bytes.len() > MAX_SLIP_SIZE {
            return err(
                Code::IssueInvalid,
                format!("the slip takes {} bytes; at most {MAX_SLIP_SIZE}", bytes.len()),
            );
        }
        // The whole COSE_Sign1 as a verifier parses it (S1–S2): the payload
        // is one byte string, so within the CBOR profile's string limit.
        UnverifiedSlip::parse(&bytes).map_err(|e| {
            Error::new(
                Code::IssueInvalid,
                format!("verifiers would refuse this slip: {}", e.message()),
            )
        })?;
        Ok(Slip::from_bytes(bytes))
    }
}

/// The payload array, deterministically encoded.
pub(crate) fn encode_payload(content: &SlipContent) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + 64 * content.hops.len());
    cbor::write_array(&mut out, PAYLOAD_LEN);
    cbor::write_text(&mut out, &content.issuer);
    cbor::write_bytes(&mut out, &content.workflow_id);
    cbor::write_text(&mut out, &content.workflow);
    cbor::write_text(&mut out, &content.trustor);
    cbor::write_uint(&mut out, content.issued_at);
    cbor::write_uint(&mut out, content.expires_at);
    cbor::write_array(&mut out, content.hops.len());
    for hop in &content.hops {
        cbor::write_array(&mut out, HOP_LEN);
        cbor::write_text(&mut out, &hop.trustee);
        cbor::write_text(&mut out, &hop.audience);
        cbor::write_text(&mut out, &hop.trust_id);
    }
    out
}

/// A slip that parsed (S1–S3) but whose signature is not checked: it tells
/// only which issuer and key to check it with.
#[derive(Debug)]
pub struct UnverifiedSlip<'a> {
    bytes: &'a [u8],
    pub(crate) sign1: Sign1<'a>,
    pub(crate) content: SlipContent,
}

impl<'a> UnverifiedSlip<'a> {
    /// Steps S1–S3: size, COSE_Sign1 structure and headers, payload. Every
    /// failure is `slip.malformed`, naming the rule in its message.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() > MAX_SLIP_SIZE {
            return err(
                Code::SlipMalformed,
                format!("the slip is {} bytes; the limit is {MAX_SLIP_SIZE}", bytes.len()),
            );
        }
        let sign1 = cose::parse_sign1(bytes, Tagging::Sign1).map_err(malformed)?;
        if sign1.kid.is_none() {
            return err(Code::SlipMalformed, "a slip must name its signing key with kid (4)");
        }
        let content = decode_payload(sign1.payload)?;
        Ok(UnverifiedSlip { bytes, sign1, content })
    }

    /// The slip's bytes as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The issuer it names (unauthenticated): which key set to consult.
    pub fn issuer(&self) -> &str {
        &self.content.issuer
    }

    /// The `kid` header (unauthenticated).
    pub fn kid(&self) -> &[u8] {
        self.sign1.kid.unwrap_or_default()
    }

    /// The `alg` header (unauthenticated).
    pub fn alg(&self) -> Algorithm {
        self.sign1.alg
    }
}

/// Any failure of S2 as `slip.malformed`, keeping the profile's code in the message.
fn malformed(e: Error) -> Error {
    Error::new(Code::SlipMalformed, format!("{}: {}", e.code(), e.message()))
}

fn shape(what: &str) -> Error {
    Error::new(Code::SlipMalformed, format!("the slip's {what}"))
}

fn read_text<'a>(r: &mut Reader<'a>, what: &str) -> Result<&'a str> {
    r.text()
        .ok_or_else(|| shape(&format!("{what} must be a text string, found {}", r.describe_next())))
}

fn read_time(r: &mut Reader<'_>, what: &str) -> Result<u64> {
    r.uint()
        .filter(|t| *t <= i64::MAX as u64)
        .ok_or_else(|| shape(&format!("{what} must be a NumericDate")))
}

fn user(text: &str, what: &str) -> Result<()> {
    UserName::parse(text)
        .map(drop)
        .map_err(|_| shape(&format!("{what} must be name@domain (issuer.md §3)")))
}

/// Step S3: the payload array of §10.2, in order; the first failure is reported.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<SlipContent> {
    cbor::validate(payload).map_err(malformed)?;
    let mut r = Reader::new(payload);
    if r.array() != Some(PAYLOAD_LEN) {
        return Err(shape(&format!(
            "payload must be an array of {PAYLOAD_LEN} items, found {}",
            Reader::new(payload).describe_next()
        )));
    }
    let issuer = read_text(&mut r, "issuer")?;
    if issuer.is_empty() || issuer.len() > MAX_ISSUER_LEN {
        return Err(shape(&format!("issuer must be 1 to {MAX_ISSUER_LEN} bytes")));
    }
    let workflow_id: [u8; WORKFLOW_ID_LEN] = r
        .bytes()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| shape(&format!("workflow id must be {WORKFLOW_ID_LEN} bytes")))?;
    let workflow = read_text(&mut r, "workflow name")?;
    Name::parse("workflow", workflow).map_err(|_| shape("workflow name must be a name (issuer.md §3)"))?;
    let trustor = read_text(&mut r, "trustor")?;
    user(trustor, "trustor")?;
    let issued_at = read_time(&mut r, "issued-at")?;
    let expires_at = read_time(&mut r, "expiry")?;
    if expires_at <= issued_at || expires_at - issued_at > MAX_SLIP_LIFETIME {
        return Err(shape(&format!(
            "expiry must be after its issued-at and at most {MAX_SLIP_LIFETIME} s later"
        )));
    }
    let Some(count) = r.array().filter(|n| (1..=MAX_HOPS).contains(n)) else {
        return Err(shape(&format!("hops must be an array of 1 to {MAX_HOPS} hops")));
    };
    let mut hops: Vec<Hop> = Vec::with_capacity(count);
    for i in 0..count {
        if r.array() != Some(HOP_LEN) {
            return Err(shape(&format!("hop {i} must be an array of {HOP_LEN} items")));
        }
        let trustee = read_text(&mut r, "hop trustee")?;
        user(trustee, "hop trustee")?;
        if trustee == trustor {
            return Err(shape(&format!("hop {i}'s trustee is the trustor")));
        }
        let audience = read_text(&mut r, "hop audience")?;
        check_audience(audience).map_err(|_| shape("hop audience must be 1 to 256 printable ASCII characters"))?;
        let trust_id = read_text(&mut r, "hop trust id")?;
        if trust_id.len() != TRUST_ID_LEN
            || !trust_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(shape(&format!(
                "hop trust id must be {TRUST_ID_LEN} base64url characters"
            )));
        }
        if hops.iter().any(|h| h.trustee == trustee && h.audience == audience) {
            return Err(shape(&format!(
                "hop {i} repeats the trustee and audience of an earlier hop"
            )));
        }
        hops.push(Hop {
            trustee: trustee.to_owned(),
            audience: audience.to_owned(),
            trust_id: trust_id.to_owned(),
        });
    }
    Ok(SlipContent {
        issuer: issuer.to_owned(),
        workflow_id,
        workflow: workflow.to_owned(),
        trustor: trustor.to_owned(),
        issued_at,
        expires_at,
        hops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Algorithm;

    const ISSUER: &str = "https://issuer.example";
    const NOW: u64 = 1_763_800_000;
    const TRUST: &str = "2Qf3mV0cZ8bq1Xo4yT6wUg";

    fn builder() -> SlipBuilder {
        SlipBuilder::new(ISSUER, "deploy-instance", "ayoung@stoughton", NOW, NOW + 3600)
            .workflow_id([7; WORKFLOW_ID_LEN])
            .hop("nova-compute@service", "https://glance.example", TRUST)
    }

    fn key() -> SigningKey {
        SigningKey::derive(Algorithm::EdDSA, b"slip tests", b"issuer").unwrap()
    }

    #[test]
    fn slip_payload_is_the_documented_array() {
        let slip = builder().sign(&key(), b"k1").unwrap();
        let parsed = UnverifiedSlip::parse(slip.as_bytes()).unwrap();
        assert_eq!(parsed.issuer(), ISSUER);
        assert_eq!(parsed.kid(), b"k1");
        // Independently decoded: [issuer, id, name, trustor, iat, exp, [[trustee, aud, trust]]].
        let value: ciborium::Value = ciborium::from_reader(parsed.sign1.payload).unwrap();
        let items = value.as_array().unwrap();
        assert_eq!(items.len(), 7);
        assert_eq!(items[0].as_text(), Some(ISSUER));
        assert_eq!(items[1].as_bytes().map(Vec::as_slice), Some(&[7u8; 16][..]));
        assert_eq!(items[2].as_text(), Some("deploy-instance"));
        assert_eq!(items[3].as_text(), Some("ayoung@stoughton"));
        let hop = items[6].as_array().unwrap()[0].as_array().unwrap();
        assert_eq!(hop[2].as_text(), Some(TRUST));
        assert_eq!(cbor::to_vec(&value), parsed.sign1.payload, "deterministic encoding");
        assert_eq!(SLIP_AAD, cbor::to_vec(&ciborium::Value::Text(SLIP_CONTEXT.into())));
    }

    #[test]
    fn slip_signature_covers_the_slip_aad() {
        let key = key();
        let slip = builder().sign(&key, b"k1").unwrap();
        let parsed = UnverifiedSlip::parse(slip.as_bytes()).unwrap();
        parsed
            .sign1
            .verify(
                key.public_key(),
                SLIP_AAD,
                Code::SlipBadSignature,
                Code::SlipBadSignature,
            )
            .unwrap();
        // The same bytes do not verify as a token's signature (empty AAD).
        let as_token = parsed
            .sign1
            .verify(key.public_key(), &[], Code::CoseAlgMismatch, Code::CoseBadSignature)
            .unwrap_err();
        assert_eq!(as_token.code(), Code::CoseBadSignature);
    }

    #[test]
    fn slip_builder_refuses_what_verifiers_refuse() {
        let key = key();
        let cases: Vec<(&str, SlipBuilder)> = vec![
            (
                "no hop",
                SlipBuilder::new(ISSUER, "w", "ayoung@stoughton", NOW, NOW + 1),
            ),
            (
                "expiry before issued-at",
                SlipBuilder::new(ISSUER, "w", "ayoung@stoughton", NOW, NOW).hop("a@b", "https://x", TRUST),
            ),
            (
                "lifetime over the ceiling",
                SlipBuilder::new(ISSUER, "w", "ayoung@stoughton", NOW, NOW + MAX_SLIP_LIFETIME + 1).hop(
                    "a@b",
                    "https://x",
                    TRUST,
                ),
            ),
            (
                "trustor not name@domain",
                SlipBuilder::new(ISSUER, "w", "ayoung", NOW, NOW + 1).hop("a@b", "https://x", TRUST),
            ),
            (
                "bad trust id",
                SlipBuilder::new(ISSUER, "w", "ayoung@stoughton", NOW, NOW + 1).hop("a@b", "https://x", "short"),
            ),
            (
                "repeated hop",
                builder().hop("nova-compute@service", "https://glance.example", TRUST),
            ),
            (
                "trustee is the trustor",
                SlipBuilder::new(ISSUER, "w", "ayoung@stoughton", NOW, NOW + 1).hop(
                    "ayoung@stoughton",
                    "https://x",
                    TRUST,
                ),
            ),
            (
                "empty issuer",
                SlipBuilder::new("", "w", "a@b", NOW, NOW + 1).hop("c@d", "https://x", TRUST),
            ),
            (
                "workflow not a name",
                SlipBuilder::new(ISSUER, "deploy instance", "a@b", NOW, NOW + 1).hop("c@d", "https://x", TRUST),
            ),
        ];
        for (what, builder) in cases {
            let refused = builder.sign(&key, b"k1").unwrap_err();
            assert_eq!(refused.code(), Code::IssueInvalid, "{what}");
        }
        let too_many = (0..=MAX_HOPS).fold(
            SlipBuilder::new(ISSUER, "w", "ayoung@stoughton", NOW, NOW + 1),
            |b, i| b.hop(format!("s{i}@service"), "https://x", TRUST),
        );
        assert_eq!(too_many.sign(&key, b"k1").unwrap_err().code(), Code::IssueInvalid);
        let most = (0..MAX_HOPS).fold(
            SlipBuilder::new(ISSUER, "w", "ayoung@stoughton", NOW, NOW + 1),
            |b, i| b.hop(format!("s{i}@service"), "https://x", TRUST),
        );
        assert!(most.sign(&key, b"k1").is_ok(), "32 short hops fit");
        // 32 ordinary hops pass every content rule but not the payload's
        // string limit (cbor.md): refused here, never issued unverifiable.
        let long = (0..MAX_HOPS).fold(
            SlipBuilder::new(ISSUER, "w", "ayoung@stoughton", NOW, NOW + 1),
            |b, i| b.hop(format!("nova-compute-{i:02}@service"), "https://glance.example", TRUST),
        );
        assert_eq!(long.sign(&key, b"k1").unwrap_err().code(), Code::IssueInvalid);
        assert_eq!(builder().sign(&key, b"").unwrap_err().code(), Code::IssueInvalid);
    }

    #[test]
    fn slip_parse_refuses_tokens_and_proofs() {
        let key = key();
        let client = SigningKey::derive(Algorithm::EdDSA, b"slip tests", b"client").unwrap();
        let token = crate::token::TokenBuilder::service(
            ISSUER,
            "ayoung@stoughton",
            "https://nova.example",
            client.public_key().clone(),
            NOW,
        )
        .sign(&key, b"k1")
        .unwrap();
        let refused = UnverifiedSlip::parse(token.as_bytes()).unwrap_err();
        assert_eq!(refused.code(), Code::SlipMalformed);
        let proof = crate::proof::ProofBuilder::new("GET", "https://nova.example/", token.as_bytes(), b"", NOW)
            .unwrap()
            .sign(&client)
            .unwrap();
        assert_eq!(
            UnverifiedSlip::parse(proof.as_bytes()).unwrap_err().code(),
            Code::SlipMalformed
        );
        // And the reverse: a slip is neither a token nor a proof.
        let slip = builder().sign(&key, b"k1").unwrap();
        let as_token = crate::token::UnverifiedToken::from_slice(slip.as_bytes()).unwrap_err();
        assert_eq!(as_token.code(), Code::CwtStructure);
    }

    #[test]
    fn slip_base64url_round_trips_and_is_bounded() {
        let slip = builder().sign(&key(), b"k1").unwrap();
        assert_eq!(Slip::from_base64url(&slip.to_base64url()).unwrap(), slip);
        for bad in ["a", "AAE=", "A+E", &"A".repeat(5463)] {
            assert_eq!(
                Slip::from_base64url(bad).unwrap_err().code(),
                Code::SlipMalformed,
                "{bad:.8}"
            );
        }
        assert!(format!("{slip:?}").starts_with("Slip("));
    }

    #[test]
    fn slip_expiry_is_the_earliest_trust_expiry_under_the_ceiling() {
        assert_eq!(slip_expiry(NOW, [None, None]), NOW + MAX_SLIP_LIFETIME);
        assert_eq!(slip_expiry(NOW, [Some(NOW + 50), None, Some(NOW + 40)]), NOW + 40);
        assert_eq!(
            slip_expiry(NOW, [Some(NOW + MAX_SLIP_LIFETIME * 2)]),
            NOW + MAX_SLIP_LIFETIME
        );
    }
}
