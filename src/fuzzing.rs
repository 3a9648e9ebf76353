//! Entry points for the cargo-fuzz targets in `fuzz/` (not a public API).
//!
//! Each function is the whole body of one fuzz target: it feeds arbitrary
//! bytes to one function of the library and checks the invariants that must
//! hold for every input. None of them may panic except through an
//! `assert!` that states such an invariant; a panic is a finding.
//!
//! Everything is deterministic: keys come from [`SigningKey::derive`], time
//! from a [`ManualClock`], and every call gets a fresh replay store, so a
//! crash reproduces from its input alone.

use std::sync::{Arc, OnceLock};

use crate::cbor;
use crate::cose::{self, Tagging};
use crate::danger;
use crate::error::Code;
use crate::key::{Algorithm, KeySet, PublicKey, SigningKey};
use crate::proof::{self, NonceValidator, RequestInfo, normalize_uri};
use crate::token::{TokenBuilder, TokenKind, TokenTagging, UnverifiedToken};
use crate::verify::{ManualClock, MemoryReplayStore, TrustedIssuer, Verifier};

/// The verification time of [`proof_verify`]: that of the test vectors.
pub const NOW: u64 = crate::vectors::NOW;
/// The trusted issuer of [`proof_verify`] (that of the test vectors).
pub const ISSUER: &str = "https://issuer.example";
/// The audience of [`proof_verify`] (that of the test vectors).
pub const AUDIENCE: &str = "https://nova.example";
/// The nonces [`proof_verify`] accepts when its input asks for nonces.
pub const NONCES: [&[u8]; 2] = [b"nonce-epoch-0", b"nonce-epoch-1"];
/// Flag bit of [`frame_request`]: the verifier requires a nonce.
pub const FLAG_REQUIRE_NONCE: u8 = 1;

/// The issuer keys of the test vectors (same seed and names as
/// `src/vectors.rs`), so that vector tokens verify in [`proof_verify`] and
/// the fuzzer starts deep inside the verification path.
fn vector_issuer_keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut set = KeySet::new();
        for (alg, name) in [
            (Algorithm::EdDSA, "issuer-ed25519"),
            (Algorithm::ES256, "issuer-es256"),
            (Algorithm::EdDSA, "issuer-ed25519-next"),
        ] {
            let key = SigningKey::derive(alg, b"keybound test vectors v1", name.as_bytes())
                .expect("fixed derivation succeeds");
            let public = key.public_key().clone();
            set.insert(public.default_kid(), public).expect("distinct kids");
        }
        set
    })
}

/// The key [`token_roundtrip`] re-issues tokens with.
fn reissue_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::derive(Algorithm::EdDSA, b"keybound fuzzing", b"reissue").expect("derivation"))
}

/// Target `cbor_validate`: the strict-profile validator and tag stripping
/// accept or refuse every input without panicking; what they accept can be
/// walked by the zero-copy [`cbor::Reader`].
pub fn cbor_validate(data: &[u8]) {
    if let Ok((tags, rest)) = cbor::strip_tags(data, 3) {
        assert!(tags.len() <= 3, "strip_tags returned more tags than asked for");
        assert!(rest.len() <= data.len());
    }
    if cbor::validate(data).is_ok() {
        // A valid item is exactly one item: skipping it consumes everything.
        let mut r = cbor::Reader::new(data);
        let raw = r.raw_item();
        assert_eq!(raw, Some(data), "a validated item is not one whole item to the reader");
        assert!(r.is_at_end());
    }
}

/// Target `cbor_roundtrip`: an item that passes [`cbor::validate`] decodes
/// with ciborium and, re-encoded by ciborium, gives back identical bytes.
/// The strict profile is deterministic encoding, so any difference means the
/// validator and the encoder disagree about what is canonical.
pub fn cbor_roundtrip(data: &[u8]) {
    if cbor::validate(data).is_err() {
        return;
    }
    let value: ciborium::Value = match ciborium::from_reader(data) {
        Ok(v) => v,
        Err(e) => panic!("cbor::validate accepted an item ciborium cannot decode: {e}"),
    };
    let mut encoded = Vec::with_capacity(data.len());
    ciborium::into_writer(&value, &mut encoded).expect("encoding into a Vec is infallible");
    assert_eq!(
        encoded, data,
        "ciborium re-encodes a strict-profile item to different bytes"
    );
}

/// Target `token_parse`: steps T1–T4 (and the cnf key of T8.2) on arbitrary bytes, differentially
/// against coset, an independent COSE/CWT decoder. The strict profile
/// refuses more than coset does, so only one direction must hold: whatever
/// keybound accepts, coset decodes to the same algorithm, kid and
/// registered claims. (A disagreement means the two read the same bytes
/// differently, which is how parser-differential attacks begin.)
pub fn token_parse(data: &[u8]) {
    // With the cnf key decoded (T8.2), as a verifier would after the signature.
    let (ours_sign1, ours) = match UnverifiedToken::from_slice(data).and_then(UnverifiedToken::into_parts) {
        Ok(parts) => parts,
        Err(e) => {
            // T1–T4 refuse only with codes of their own layers.
            let layer = e.code().as_str().split('.').next().unwrap_or_default();
            assert!(
                matches!(layer, "cbor" | "cose" | "cwt" | "key"),
                "T1–T4 refused with {}",
                e.code().as_str()
            );
            return;
        }
    };
    let (tags, untagged) = cbor::strip_tags(data, 2).expect("an accepted token has at most two tags");
    let sign1 = <coset::CoseSign1 as coset::CborSerializable>::from_slice(untagged)
        .unwrap_or_else(|e| panic!("keybound accepted a token (tags {tags:?}) coset cannot decode: {e:?}"));
    let alg = match ours_sign1.alg {
        Algorithm::EdDSA => coset::iana::Algorithm::EdDSA,
        Algorithm::ES256 => coset::iana::Algorithm::ES256,
    };
    assert_eq!(
        sign1.protected.header.alg,
        Some(coset::RegisteredLabelWithPrivate::Assigned(alg)),
        "alg"
    );
    let kid = if sign1.protected.header.key_id.is_empty() {
        &sign1.unprotected.key_id
    } else {
        &sign1.protected.header.key_id
    };
    assert_eq!(kid.as_slice(), ours_sign1.kid.unwrap_or_default(), "kid");
    let payload = sign1.payload.as_deref().expect("an accepted token has a payload");
    let claims = <coset::cwt::ClaimsSet as coset::CborSerializable>::from_slice(payload)
        .unwrap_or_else(|e| panic!("keybound accepted claims coset cannot decode: {e:?}"));
    let seconds = |t: Option<coset::cwt::Timestamp>| match t {
        Some(coset::cwt::Timestamp::WholeSeconds(s)) => u64::try_from(s).ok(),
        _ => None,
    };
    assert_eq!(claims.issuer.as_deref(), Some(ours.iss.as_str()), "iss");
    assert_eq!(claims.subject.as_deref(), Some(ours.sub.as_str()), "sub");
    assert_eq!(claims.audience.as_deref(), Some(ours.aud.as_str()), "aud");
    assert_eq!(seconds(claims.expiration_time), Some(ours.exp), "exp");
    assert_eq!(seconds(claims.issued_at), Some(ours.iat), "iat");
    assert_eq!(seconds(claims.not_before), ours.nbf, "nbf");
    assert_eq!(claims.cwt_id.as_deref(), Some(&ours.cti[..]), "cti");
}

/// Target `token_roundtrip`: claims that decode with
/// [`danger::insecure_decode_token`], re-issued through the public
/// [`TokenBuilder`], decode to equal claims. The builder may refuse claims
/// the parser accepts (a lifetime above the maximum, for instance), but only
/// with `issue.invalid`.
pub fn token_roundtrip(data: &[u8]) {
    let Ok(decoded) = danger::insecure_decode_token(data) else {
        return;
    };
    let claims = decoded.claims;
    let Some(lifetime) = claims.exp.checked_sub(claims.iat) else {
        return;
    };
    let mut builder = match claims.kind {
        TokenKind::Service => TokenBuilder::service(
            claims.iss.clone(),
            claims.sub.clone(),
            claims.aud.clone(),
            claims.cnf.clone(),
            claims.iat,
        ),
        TokenKind::Session => {
            if claims.aud != claims.iss {
                // The builder always makes a session token's audience its issuer.
                return;
            }
            TokenBuilder::session(claims.iss.clone(), claims.sub.clone(), claims.cnf.clone(), claims.iat)
        }
    };
    builder = builder.lifetime(lifetime).cti(claims.cti);
    if let Some(nbf) = claims.nbf {
        builder = builder.not_before(nbf);
    }
    match (&claims.domain, &claims.project) {
        (Some(domain), Some(project)) => builder = builder.scope(domain.clone(), project.clone()),
        (Some(domain), None) => builder = builder.domain(domain.clone()),
        // The builder has no project without a domain.
        (None, Some(_)) => return,
        (None, None) => {}
    }
    builder = builder
        .roles(claims.roles.clone())
        .actor_chain(claims.actor_chain.clone());
    if let Some(trust) = &claims.trust_id {
        builder = builder.trust_id(trust.clone());
    }
    if let Some(origin) = &claims.origin_issuer {
        builder = builder.origin_issuer(origin.clone());
    }
    if let Some(instance) = &claims.instance {
        builder = builder.instance(instance.clone());
    }
    let tagging = match data.first() {
        Some(0xd8) => TokenTagging::Cwt,
        Some(0xd2) => TokenTagging::Sign1,
        _ => TokenTagging::Untagged,
    };
    let kid = if decoded.kid.is_empty() {
        b"k".to_vec()
    } else {
        decoded.kid
    };
    let token = match builder.tagging(tagging).sign(reissue_key(), &kid) {
        Ok(token) => token,
        Err(e) => {
            assert_eq!(e.code(), Code::IssueInvalid, "the builder failed with {e}");
            return;
        }
    };
    let again = match danger::insecure_decode_token(token.as_bytes()) {
        Ok(again) => again,
        Err(e) => panic!("a re-issued token does not decode: {e}"),
    };
    assert_eq!(again.claims, claims, "re-issued claims differ from the decoded ones");
    assert_eq!(again.kid, kid);
    // What the builder writes is always in the strict profile.
    let (_, body) = cbor::strip_tags(token.as_bytes(), 3).expect("own tags");
    assert_eq!(cbor::validate(body), Ok(()));
}

/// Target `proof_parse`: steps P2–P4 (strict CBOR, COSE_Sign1 of a proof,
/// payload fields) on arbitrary bytes.
pub fn proof_parse(data: &[u8]) {
    let Ok(sign1) = cose::parse_sign1(data, Tagging::Sign1) else {
        return;
    };
    assert!(!sign1.payload.is_empty(), "an empty payload was accepted");
    if let Ok(claims) = crate::verify::proof::decode_payload(sign1.payload) {
        assert!(!claims.htm.is_empty() && claims.htm.len() <= proof::MAX_METHOD_LEN);
        assert_eq!(claims.tkh.len(), proof::HINT_LEN);
        assert_eq!(claims.bdh.len(), proof::HINT_LEN);
        assert!(
            claims
                .nonce
                .is_none_or(|n| !n.is_empty() && n.len() <= proof::MAX_NONCE_LEN)
        );
        assert!(claims.iat <= i64::MAX as u64);
    }
}

/// A request for [`proof_verify`], as framed in its input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FramedRequest<'a> {
    /// [`FLAG_REQUIRE_NONCE`] and future flags.
    pub flags: u8,
    /// Token bytes.
    pub token: &'a [u8],
    /// Proof bytes; empty means "verify the token alone".
    pub proof: &'a [u8],
    /// Request method (lossy UTF-8).
    pub method: &'a [u8],
    /// Request target URI (lossy UTF-8).
    pub uri: &'a [u8],
    /// Request body: everything after the URI.
    pub body: &'a [u8],
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (head, rest) = data.split_at(n);
    *data = rest;
    head
}

fn take_len(data: &mut &[u8], width: usize) -> usize {
    take(data, width)
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
}

/// Splits a [`proof_verify`] input:
/// `flags:u8 ‖ len:u16 ‖ token ‖ len:u16 ‖ proof ‖ len:u8 ‖ method ‖ len:u16 ‖ uri ‖ body`
/// (lengths big-endian). A short input leaves the remaining parts empty.
pub fn parse_frame(mut data: &[u8]) -> FramedRequest<'_> {
    let d = &mut data;
    let flags = take(d, 1).first().copied().unwrap_or(0);
    let n = take_len(d, 2);
    let token = take(d, n);
    let n = take_len(d, 2);
    let proof = take(d, n);
    let n = take_len(d, 1);
    let method = take(d, n);
    let n = take_len(d, 2);
    let uri = take(d, n);
    FramedRequest {
        flags,
        token,
        proof,
        method,
        uri,
        body: data,
    }
}

/// Builds a [`proof_verify`] input (the seed corpus is made with this).
/// Parts longer than their length field are truncated.
pub fn frame_request(flags: u8, token: &[u8], proof: &[u8], method: &str, uri: &str, body: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    for (part, width) in [(token, 2usize), (proof, 2), (method.as_bytes(), 1), (uri.as_bytes(), 2)] {
        let max = if width == 1 { 0xff } else { 0xffff };
        let part = &part[..part.len().min(max)];
        out.extend_from_slice(&(part.len() as u64).to_be_bytes()[8 - width..]);
        out.extend_from_slice(part);
    }
    out.extend_from_slice(body);
    out
}

struct FixedNonces;

impl NonceValidator for FixedNonces {
    fn is_valid(&self, nonce: &[u8], _now: u64) -> bool {
        NONCES.contains(&nonce)
    }
}

/// Target `proof_verify`: full request verification (T1–T12, P1–P13) by a
/// fixed verifier — the test vectors' issuer keys, audience and time, a fresh
/// in-memory replay store — of a request framed by [`parse_frame`]. An
/// accepted request is for this audience and issuer, within the lifetime
/// limit, and is refused as a replay when submitted again.
pub fn proof_verify(data: &[u8]) {
    let frame = parse_frame(data);
    let mut builder = Verifier::builder(AUDIENCE, TrustedIssuer::with_keys(ISSUER, vector_issuer_keys().clone()))
        .clock(Arc::new(ManualClock::new(NOW)))
        .leeway(30)
        .proof_max_age(60)
        .replay_store(Arc::new(MemoryReplayStore::with_budget(16 * 1024).fenced_at(0)));
    if frame.flags & FLAG_REQUIRE_NONCE != 0 {
        builder = builder.require_nonce(Arc::new(FixedNonces));
    }
    let verifier = builder.build().expect("a fixed verifier configuration");
    if frame.proof.is_empty() {
        if let Ok(token) = danger::verify_token_without_proof(&verifier, frame.token) {
            assert_eq!(token.audience(), AUDIENCE);
            assert_eq!(token.issuer(), ISSUER);
            assert!(token.expires_at() - token.issued_at() <= crate::token::MAX_SERVICE_LIFETIME);
            assert!(token.expires_at() + 30 >= NOW);
        }
        return;
    }
    let method = String::from_utf8_lossy(frame.method);
    let uri = String::from_utf8_lossy(frame.uri);
    let request = RequestInfo::new(&method, &uri, frame.body);
    let Ok(verified) = verifier.verify_request(frame.token, frame.proof, &request) else {
        return;
    };
    assert_eq!(verified.audience(), AUDIENCE);
    assert_eq!(verified.issuer(), ISSUER);
    let token = verified.token();
    assert!(token.expires_at() - token.issued_at() <= crate::token::MAX_SERVICE_LIFETIME);
    assert_eq!(token.kind(), TokenKind::Service);
    let again = verifier.verify_request(frame.token, frame.proof, &request);
    assert_eq!(
        again.map(|_| ()).map_err(|e| e.code()),
        Err(Code::ReplayDetected),
        "an accepted request was not refused as a replay"
    );
}

/// Target `identity_check`: the gateway's identity assertion
/// (spec/gateway.md §4). The input is header lines `name:value`, checked at
/// [`NOW`] for `GET /v2/servers?limit=10` under the vectors' secret. Every refusal is
/// `gateway.bad_identity`; an accepted identity re-encodes, at the
/// assertion's time, to exactly the values that were checked (the encoder
/// and the checker agree on the format), and what the encoder writes the
/// checker accepts.
pub fn identity_check(data: &[u8]) {
    // The secret, method and target of test-vectors/gateway-identities.json,
    // so that its cases are seeds that pass.
    use crate::gateway::identity::{ASSERTION, Identity};
    use crate::vectors::{IDENTITY_METHOD, IDENTITY_SECRET, IDENTITY_TARGET};
    let headers: Vec<(&str, &[u8])> = data
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            Some((std::str::from_utf8(&line[..colon]).ok()?, &line[colon + 1..]))
        })
        .collect();
    let identity = match Identity::check_fields(&headers, IDENTITY_SECRET, IDENTITY_METHOD, IDENTITY_TARGET, NOW, 30) {
        Ok(identity) => identity,
        Err(e) => {
            assert_eq!(e.code(), Code::GatewayBadIdentity, "refused with {}", e.code());
            return;
        }
    };
    let assertion = headers
        .iter()
        .find(|(n, _)| *n == ASSERTION)
        .expect("accepted with an assertion")
        .1;
    let t: u64 = std::str::from_utf8(assertion)
        .ok()
        .and_then(|a| a.split(' ').nth(1)?.strip_prefix("t=")?.parse().ok())
        .expect("an accepted assertion has a time");
    let fields = identity
        .to_fields(IDENTITY_SECRET, IDENTITY_METHOD, IDENTITY_TARGET, t)
        .expect("an accepted identity encodes");
    for (name, value) in &fields {
        if *name != ASSERTION {
            // A missing header was read as empty.
            let given = headers.iter().find(|(n, _)| n == name).map_or(&b""[..], |(_, v)| *v);
            assert_eq!(value.as_bytes(), given, "{name} re-encodes differently");
        }
    }
    let pairs: Vec<(&str, &[u8])> = fields.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    let again = Identity::check_fields(&pairs, IDENTITY_SECRET, IDENTITY_METHOD, IDENTITY_TARGET, NOW, 30)
        .expect("the encoder's output checks");
    assert_eq!(again, identity, "re-encoded identity reads differently");
}

/// Target `slip_parse`: routing-slip parsing (S1–S3) and verification
/// (S4–S6) against the test vectors' issuer keys at their time. Parsing
/// refuses only with `slip.malformed`, verification only with `slip.*`
/// codes; a slip that parses has exactly one encoding (its payload
/// re-encodes to the received bytes); one that verifies is within the
/// limits and is never also a token or a proof (domain separation).
pub fn slip_parse(data: &[u8]) {
    use crate::delegation::slip::{MAX_HOPS, MAX_SLIP_LIFETIME, UnverifiedSlip, encode_payload};
    let parsed = match UnverifiedSlip::parse(data) {
        Ok(parsed) => parsed,
        Err(e) => {
            assert_eq!(e.code(), Code::SlipMalformed, "S1–S3 refused with {}", e.code());
            return;
        }
    };
    assert_eq!(
        encode_payload(&parsed.content),
        parsed.sign1.payload,
        "a parsed slip payload has another encoding"
    );
    let verifier = Verifier::builder(AUDIENCE, TrustedIssuer::with_keys(ISSUER, vector_issuer_keys().clone()))
        .clock(Arc::new(ManualClock::new(NOW)))
        .build()
        .expect("a fixed verifier configuration");
    let slip = match verifier.verify_slip(data) {
        Ok(slip) => slip,
        Err(e) => {
            assert!(
                e.code().as_str().starts_with("slip."),
                "S4–S6 refused with {}",
                e.code()
            );
            return;
        }
    };
    assert_eq!(slip.issuer(), ISSUER);
    assert_eq!(slip.as_bytes(), data);
    assert!((1..=MAX_HOPS).contains(&slip.hops().len()));
    assert!(slip.expires_at() > slip.issued_at());
    assert!(slip.expires_at() - slip.issued_at() <= MAX_SLIP_LIFETIME);
    assert!(slip.expires_at() + crate::token::DEFAULT_LEEWAY >= NOW);
    for hop in slip.hops() {
        assert_eq!(slip.hop(&hop.trustee, &hop.audience), Some(hop), "hops are unique");
    }
    assert!(
        danger::verify_token_without_proof(&verifier, data).is_err(),
        "a verified slip also verifies as a token"
    );
    assert!(
        UnverifiedToken::from_slice(data).is_err(),
        "a verified slip also parses as a token"
    );
}

/// Target `cose_key_parse`: public and private COSE_Key decoding. A key that
/// decodes re-encodes and decodes to the same key; a private key signs what
/// its public key verifies.
pub fn cose_key_parse(data: &[u8]) {
    if let Ok(key) = PublicKey::from_cose_key(data) {
        for kid in [None, Some(&b"kid"[..])] {
            let encoded = key.to_cose_key(kid);
            let again = PublicKey::from_cose_key(&encoded).expect("a re-encoded public key decodes");
            assert_eq!(again, key);
            assert_eq!(again.thumbprint(), key.thumbprint());
        }
        // A public key never decodes as a private one.
        assert_eq!(
            SigningKey::from_cose_key(data).map(|_| ()).map_err(|e| e.code()),
            Err(Code::KeyWrongKind)
        );
    }
    if let Ok(secret) = SigningKey::from_cose_key(data) {
        let encoded = secret.to_cose_key(Some(b"kid"));
        let again = SigningKey::from_cose_key(&encoded).expect("a re-encoded private key decodes");
        assert_eq!(again.public_key(), secret.public_key());
        let signature = secret.sign(b"keybound fuzzing");
        assert!(secret.public_key().verify(b"keybound fuzzing", &signature));
        assert_eq!(
            PublicKey::from_cose_key(data).map(|_| ()).map_err(|e| e.code()),
            Err(Code::KeyWrongKind)
        );
    }
}

/// Target `keyset_parse`: COSE_KeySet decoding. A set that decodes
/// re-encodes with [`KeySet::to_cbor`] and decodes to the same keys under the
/// same kids, in the same order; its encoding is then stable.
pub fn keyset_parse(data: &[u8]) {
    let Ok(set) = KeySet::from_cbor(data) else {
        return;
    };
    // Only a sequenced document may withdraw every key (formats.md §6.1).
    assert!(
        !set.is_empty() || set.sequence() > 0,
        "an empty bare key set was accepted"
    );
    let encoded = set.to_cbor();
    let again = KeySet::from_cbor(&encoded).expect("a re-encoded key set decodes");
    let pairs = |s: &KeySet| {
        s.iter()
            .map(|(kid, key)| (kid.to_vec(), *key.thumbprint()))
            .collect::<Vec<_>>()
    };
    assert_eq!(pairs(&again), pairs(&set));
    assert_eq!(again.to_cbor(), encoded, "key-set encoding is not stable");
}

/// Target `uri_normalize`: `htu` normalisation is total on UTF-8 input and
/// idempotent; its output is ASCII without a fragment.
pub fn uri_normalize(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(once) = normalize_uri(text) else {
        return;
    };
    assert!(once.is_ascii());
    assert!(!once.contains('#'));
    assert!(once.starts_with("http://") || once.starts_with("https://"));
    match normalize_uri(&once) {
        Ok(twice) => assert_eq!(twice, once, "normalize_uri is not idempotent on {text:?}"),
        Err(e) => panic!("the normal form {once:?} of {text:?} is refused: {e}"),
    }
}

/// An absolute URI as another parser sees it (see [`uri_differential`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriView {
    /// Scheme, e.g. `https`.
    pub scheme: String,
    /// Host as written (an IPv6 literal with its brackets).
    pub host: String,
    /// Explicit port, if any.
    pub port: Option<u16>,
    /// Path.
    pub path: String,
    /// Query without the `?`, if there is a `?`.
    pub query: Option<String>,
}

/// Splits a normal form of [`normalize_uri`] into its parts.
fn own_view(normal: &str) -> UriView {
    let (scheme, rest) = normal.split_once("://").expect("a normal form has a scheme");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (path_and_query, None),
    };
    let (host, port) = match authority.rfind(']') {
        Some(close) => (&authority[..=close], authority[close + 1..].strip_prefix(':')),
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    UriView {
        scheme: scheme.to_owned(),
        host: host.to_owned(),
        port: port.map(|p| p.parse().expect("a normal form's port is a u16")),
        path: path.to_owned(),
        query,
    }
}

/// Target `uri_differential`: the normal form of [`normalize_uri`], read by
/// another URI parser — the fuzz target passes the `http` crate's, which is
/// the router's (axum's) view of a request target — names the same scheme,
/// host, port, path and query. `other` returns `None` when it refuses the
/// URI (being stricter is fine; reading it differently is not).
pub fn uri_differential(data: &[u8], other: impl Fn(&str) -> Option<UriView>) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normal) = normalize_uri(text) else {
        return;
    };
    let Some(theirs) = other(&normal) else {
        return;
    };
    let ours = own_view(&normal);
    assert_eq!(
        ours,
        UriView {
            host: theirs.host.to_ascii_lowercase(),
            ..theirs
        },
        "{normal:?} (from {text:?}) is read differently by the other parser"
    );
}

/// A trust request body (spec/delegation.md §3), or a workplan run (§11),
/// through the decoder and
/// TC1–TC3, as the test vectors' trustor at [`NOW`] with ceilings. A draft
/// that passes must keep every rule TC1–TC3 state, and the request, encoded
/// again by the one encoder (the client's), must give the same draft.
#[cfg(feature = "policy")]
pub fn trust_request(data: &[u8]) {
    use crate::delegation::trust_request::{
        Ceilings, MAX_AUDIENCES, MAX_REDELEGATION, MAX_ROLES, TrustBase, TrustRequest,
    };
    use crate::names::UserName;
    const LIFETIME: u64 = 2_592_000;
    const USES: u64 = 1000;
    let trustor = UserName::parse("ayoung@stoughton").expect("a valid name");
    let ceilings = Ceilings {
        max_lifetime: Some(LIFETIME),
        max_uses: Some(USES),
    };
    // The same bytes as a workplan run: its requests are trust requests.
    if let Ok(run) = crate::delegation::trust_request::WorkplanRun::from_json(data)
        && let Ok(requests) = run.trust_requests()
    {
        assert_eq!(requests.len(), run.delegations.len());
        for r in &requests {
            let _ = r.check(&trustor, NOW, ceilings);
        }
    }
    let Ok(request) = TrustRequest::from_json(data) else {
        return;
    };
    let Ok(draft) = request.check(&trustor, NOW, ceilings) else {
        return;
    };
    let sorted_distinct = |v: &[String]| v.windows(2).all(|w| w[0] < w[1]);
    assert!(!draft.roles.is_empty() && draft.roles.len() <= MAX_ROLES);
    assert!(sorted_distinct(&draft.roles));
    assert!(draft.audiences.len() <= MAX_AUDIENCES && sorted_distinct(&draft.audiences));
    assert!(draft.trustee != trustor);
    assert!((0..=MAX_REDELEGATION as i64).contains(&draft.redelegation));
    assert!(draft.uses.is_some_and(|u| (1..=USES as i64).contains(&u)));
    if let Some(e) = draft.expires_at {
        assert!(e > NOW as i64 && e <= (NOW + LIFETIME) as i64);
    }
    if let TrustBase::Parent(id) = &draft.base {
        assert_eq!(id.len(), 22);
    }
    let again = serde_json::to_vec(&request).expect("a request serialises");
    let reparsed = TrustRequest::from_json(&again).expect("the encoder's output decodes");
    assert_eq!(reparsed.check(&trustor, NOW, ceilings).ok(), Some(draft));
}

/// Target `workplan_parse`: any text is either a workplan or a non-empty
/// list of problems, each at a line of the text; a valid plan encodes
/// (the one encoder) and parses back to itself.
#[cfg(feature = "policy")]
pub fn workplan_parse(data: &[u8]) {
    use crate::delegation::workplan::Workplan;
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Workplan::check(text) {
        Ok(plan) => {
            let again = Workplan::parse(&plan.to_toml());
            assert_eq!(
                again.as_ref().ok(),
                Some(&plan),
                "the encoding of a valid plan does not parse back to it"
            );
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "an invalid plan without a problem");
            let lines = text.split('\n').count();
            for p in &problems {
                assert!(
                    p.line >= 1 && p.line <= lines && p.column >= 1,
                    "a problem outside the text: {p}"
                );
            }
        }
    }
}

/// Target `exchange_request`: any bytes are refused with a code or give a
/// draft whose names hold, whose roles are sorted, distinct and 1 to 16,
/// whose lifetime is 1 to 300 and whose instance is a valid id; the encoder's
/// output of a valid request decodes to the same draft; and the lifetime of
/// step F8 never exceeds any of its bounds.
#[cfg(feature = "policy")]
pub fn exchange_request(data: &[u8]) {
    use crate::federation::{ExchangeRequest, MAX_EXCHANGE_ROLES, exchanged_lifetime};
    let Ok(request) = ExchangeRequest::from_json(data) else {
        return;
    };
    let Ok(draft) = request.check(300) else {
        return;
    };
    if let Some(roles) = &draft.roles {
        assert!(!roles.is_empty() && roles.len() <= MAX_EXCHANGE_ROLES);
        assert!(roles.windows(2).all(|w| w[0] < w[1]));
    }
    assert!(draft.lifetime.is_none_or(|l| (1..=300).contains(&l)));
    if let Some(instance) = &draft.instance {
        assert!(crate::token::instance_id_problem(instance).is_none());
    }
    let again = serde_json::to_vec(&request).expect("a request serialises");
    let reparsed = ExchangeRequest::from_json(&again).expect("the encoder's output decodes");
    assert_eq!(reparsed.check(300).ok(), Some(draft.clone()));
    // F8 with bounds taken from the input itself.
    let exp = NOW + u64::from(data.first().copied().unwrap_or(0));
    if let Ok(lifetime) = exchanged_lifetime(draft.lifetime, 300, Some(120), exp, NOW) {
        assert!((1..=120).contains(&lifetime) && NOW + lifetime <= exp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let framed = frame_request(1, b"tok", b"proof", "GET", "https://a/", b"body");
        assert_eq!(
            parse_frame(&framed),
            FramedRequest {
                flags: 1,
                token: b"tok",
                proof: b"proof",
                method: b"GET",
                uri: b"https://a/",
                body: b"body",
            }
        );
        assert_eq!(parse_frame(&[]), FramedRequest::default());
        assert_eq!(parse_frame(&[0, 0xff, 0xff, 1]).token, &[1]);
    }

    #[test]
    fn own_view_splits_normal_forms() {
        assert_eq!(
            own_view("https://[::1]:8443/a?b"),
            UriView {
                scheme: "https".into(),
                host: "[::1]".into(),
                port: Some(8443),
                path: "/a".into(),
                query: Some("b".into()),
            }
        );
        assert_eq!(own_view("http://h/").port, None);
        // The identity parser agrees with itself.
        uri_differential(b"HTTPS://Nova.Example:443/a/../b?q#f", |u| Some(own_view(u)));
    }

    /// `identity_check` on every case of the identity vectors, in the seed
    /// format fuzz/examples/seed.rs writes (a missing header included).
    #[test]
    fn identity_check_holds_on_every_vector_case() {
        let doc: serde_json::Value = serde_json::from_str(&crate::vectors::gateway_identities()).unwrap();
        for case in doc["cases"].as_array().unwrap() {
            let mut lines = String::new();
            for pair in case["headers"].as_array().unwrap() {
                lines.push_str(&format!(
                    "{}:{}\n",
                    pair[0].as_str().unwrap(),
                    pair[1].as_str().unwrap()
                ));
            }
            identity_check(lines.as_bytes());
        }
        identity_check(b"");
    }

    /// `{1: 5, 2: []}`, a sequenced document withdrawing every key: valid,
    /// and once a crash of `keyset_parse`.
    #[test]
    fn keyset_parse_accepts_a_sequenced_empty_set() {
        keyset_parse(&[0xa2, 0x01, 0x05, 0x02, 0x80]);
    }

    #[test]
    fn every_target_accepts_empty_and_vector_inputs() {
        let targets: [fn(&[u8]); 9] = [
            cbor_validate,
            cbor_roundtrip,
            token_parse,
            token_roundtrip,
            proof_parse,
            proof_verify,
            cose_key_parse,
            keyset_parse,
            uri_normalize,
        ];
        let vectors = crate::vectors::generate();
        // The coset differential holds for every vector token, valid or not.
        for v in &vectors {
            token_parse(&v.token);
        }
        for target in targets {
            target(&[]);
            for v in vectors.iter().take(40) {
                target(&v.token);
            }
        }
        // Every valid vector signed by one of the fuzzing verifier's keys is
        // accepted (the fuzzer's starting points really are deep in the
        // path); the derived-key vector carries an issuer key of its own.
        let signed_by_vector_key = |token: &[u8]| {
            UnverifiedToken::from_slice(token).is_ok_and(|t| vector_issuer_keys().get(t.kid()).is_some())
        };
        for v in vectors
            .iter()
            .filter(|v| v.expected == "valid" && signed_by_vector_key(&v.token))
        {
            let flags = if v.nonces.is_some() { FLAG_REQUIRE_NONCE } else { 0 };
            let input = frame_request(
                flags,
                &v.token,
                v.proof.as_deref().unwrap_or_default(),
                &v.method,
                &v.uri,
                &v.body,
            );
            let frame = parse_frame(&input);
            let verifier = Verifier::builder(AUDIENCE, TrustedIssuer::with_keys(ISSUER, vector_issuer_keys().clone()))
                .clock(Arc::new(ManualClock::new(NOW)))
                .replay_store(Arc::new(MemoryReplayStore::with_budget(16 * 1024).fenced_at(0)));
            let verifier = if v.nonces.is_some() {
                verifier.require_nonce(Arc::new(FixedNonces))
            } else {
                verifier
            };
            // The instance vectors name the verifier's instance id (T9.2).
            let verifier = match &v.instance {
                Some(id) => verifier.instance(id),
                None => verifier,
            }
            .build()
            .unwrap();
            let result = if frame.proof.is_empty() {
                danger::verify_token_without_proof(&verifier, frame.token).map(|_| ())
            } else {
                let uri = String::from_utf8_lossy(frame.uri);
                let method = String::from_utf8_lossy(frame.method);
                verifier
                    .verify_request(frame.token, frame.proof, &RequestInfo::new(&method, &uri, frame.body))
                    .map(|_| ())
            };
            assert_eq!(result, Ok(()), "{}", v.name);
            proof_verify(&input);
        }
    }
}
