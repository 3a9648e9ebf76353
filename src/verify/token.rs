//! Token verification: steps T1–T12 of spec/verification.md.
//!
//! Parse is not trust: [`UnverifiedToken`] exposes only what is needed to
//! choose a key; [`VerifiedToken`] has no public constructor and is returned
//! only by [`verify_token`], whose public entries are the verifier (with a
//! proof) and `danger::verify_token_without_proof` (without one).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::cbor::{self, Label, Reader};
use crate::cose::{self, Sign1, Tagging};
use crate::error::{Code, Error, Result, err};
use crate::key::{Algorithm, CoseKeyParts, KeySet, PublicKey, Thumbprint};
use crate::token::{
    Actor, CTI_LEN, Claims, LABEL_KEYBOUND, MAX_ACTOR_CHAIN, MAX_SERVICE_LIFETIME, MAX_TOKEN_SIZE, TokenKind, label,
};

/// Default clock leeway, in seconds, for every time comparison.
pub const DEFAULT_LEEWAY: u64 = 30;

/// What a verifier requires of a token beyond a good signature.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    audience: String,
    /// Clock leeway in seconds for exp, nbf and iat. Default 30.
    pub leeway: u64,
    /// Longest accepted service-token lifetime; default and ceiling 300.
    pub max_service_lifetime: u64,
    /// Longest accepted session-token lifetime; default and ceiling 12 h.
    pub max_session_lifetime: u64,
    /// The kind of token accepted. Default: service tokens.
    pub kind: TokenKind,
    /// This service's instance id (T9.2): a token bound to an instance is
    /// accepted only when it names this one; `None` refuses every bound
    /// token. Default `None`.
    pub instance: Option<String>,
}

impl TokenPolicy {
    /// Accept service tokens whose audience is `audience`.
    pub fn new(audience: impl Into<String>) -> Self {
        TokenPolicy {
            audience: audience.into(),
            leeway: DEFAULT_LEEWAY,
            max_service_lifetime: MAX_SERVICE_LIFETIME,
            max_session_lifetime: crate::token::MAX_SESSION_LIFETIME,
            kind: TokenKind::Service,
            instance: None,
        }
    }

    /// Accept session tokens of `issuer` (used by the issuer itself).
    pub fn session(issuer: impl Into<String>) -> Self {
        TokenPolicy {
            kind: TokenKind::Session,
            ..Self::new(issuer)
        }
    }

    /// The audience this policy accepts.
    pub fn audience(&self) -> &str {
        &self.audience
    }
}

/// Where a verifier finds the key set of each trusted issuer. Key sets of
/// different issuers are never merged: a token is checked only against the
/// set of the issuer it names.
pub trait IssuerKeys {
    /// The current key set of `issuer`, or `None` if it is not trusted.
    fn key_set(&self, issuer: &str) -> Option<Arc<KeySet>>;
}

impl IssuerKeys for [(String, Arc<KeySet>)] {
    fn key_set(&self, issuer: &str) -> Option<Arc<KeySet>> {
        self.iter().find(|(name, _)| name == issuer).map(|(_, set)| set.clone())
    }
}

impl IssuerKeys for Vec<(String, Arc<KeySet>)> {
    fn key_set(&self, issuer: &str) -> Option<Arc<KeySet>> {
        self.as_slice().key_set(issuer)
    }
}

/// A token that parsed (steps T1–T4) but whose signature is not checked.
/// Its `cnf` key is still encoded: decoding it (a point decompression, and an
/// entry in the process-wide key cache) waits until the signature holds.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    bytes: &'a [u8],
    sign1: Sign1<'a>,
    claims: PendingClaims<'a>,
}

impl<'a> UnverifiedToken<'a> {
    /// Steps T1–T4: size, strict CBOR, COSE_Sign1 structure and headers, claims.
    pub fn from_slice(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() > MAX_TOKEN_SIZE {
            return err(
                Code::CborTooLarge,
                format!("token is {} bytes; the limit is {MAX_TOKEN_SIZE}", bytes.len()),
            );
        }
        let sign1 = cose::parse_sign1(bytes, Tagging::Cwt)?;
        if sign1.kid.is_none() {
            return err(Code::CoseKidMissing, "a token must name its signing key with kid (4)");
        }
        let claims = decode_pending_claims(sign1.payload)?;
        Ok(UnverifiedToken { bytes, sign1, claims })
    }

    /// The token's bytes as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The `kid` header (unauthenticated).
    pub fn kid(&self) -> &[u8] {
        self.sign1.kid.unwrap_or_default()
    }

    /// The `alg` header (unauthenticated).
    pub fn alg(&self) -> Algorithm {
        self.sign1.alg
    }

    /// The `iss` claim (unauthenticated): which issuer's key set to consult.
    pub fn issuer(&self) -> &str {
        &self.claims.iss
    }

    /// The origin issuer claim (unauthenticated): only to explain a refusal.
    pub fn claims_origin_issuer(&self) -> Option<&str> {
        self.claims.kb.origin_issuer.as_deref()
    }

    /// Steps T5–T8: finds the key and checks the signature; returns the
    /// thumbprint of the issuer key. Time, audience and kind are checked by
    /// [`verify_token`].
    fn check_signature(&self, issuers: &dyn IssuerKeys) -> Result<Thumbprint> {
        let Some(set) = issuers.key_set(&self.claims.iss) else {
            return err(
                Code::CwtIssuerUnknown,
                format!("issuer {:?} is not trusted here", truncate(&self.claims.iss)),
            );
        };
        let Some(key) = set.get(self.kid()) else {
            return err(
                Code::CoseKeyUnknown,
                format!(
                    "issuer {:?} has no key with kid {}",
                    truncate(&self.claims.iss),
                    crate::encoding::hex_encode(&self.kid()[..self.kid().len().min(32)])
                ),
            );
        };
        self.sign1
            .verify(key, &[], Code::CoseAlgMismatch, Code::CoseBadSignature)?;
        Ok(*key.thumbprint())
    }

    /// Exposes the claims without any signature check, decoding `cnf`.
    /// Only for [`crate::danger`] and the fuzz targets.
    pub(crate) fn into_parts(self) -> Result<(Sign1<'a>, Claims)> {
        Ok((self.sign1, self.claims.into_claims()?))
    }
}

/// A token whose signature, issuer, audience, kind and times were checked
/// (T1–T12), and the structure of its delegation (D1–D5).
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    claims: Claims,
    token_hash: [u8; 32],
    kid: Vec<u8>,
    alg: Algorithm,
    issuer_key: Thumbprint,
}

impl VerifiedToken {
    /// All claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
    /// `iss`.
    pub fn issuer(&self) -> &str {
        &self.claims.iss
    }
    /// `sub`, `name@domain`.
    pub fn subject(&self) -> &str {
        &self.claims.sub
    }
    /// `aud`.
    pub fn audience(&self) -> &str {
        &self.claims.aud
    }
    /// `exp`.
    pub fn expires_at(&self) -> u64 {
        self.claims.exp
    }
    /// `iat`.
    pub fn issued_at(&self) -> u64 {
        self.claims.iat
    }
    /// `cti`.
    pub fn cti(&self) -> &[u8; CTI_LEN] {
        &self.claims.cti
    }
    /// The bound client key.
    pub fn cnf(&self) -> &PublicKey {
        &self.claims.cnf
    }
    /// Thumbprint of the bound client key.
    pub fn key_thumbprint(&self) -> &Thumbprint {
        self.claims.cnf.thumbprint()
    }
    /// Session or service.
    pub fn kind(&self) -> TokenKind {
        self.claims.kind
    }
    /// Domain of the scope.
    pub fn domain(&self) -> Option<&str> {
        self.claims.domain.as_deref()
    }
    /// Project of the scope.
    pub fn project(&self) -> Option<&str> {
        self.claims.project.as_deref()
    }
    /// Roles on the project.
    pub fn roles(&self) -> &[String] {
        &self.claims.roles
    }
    /// Trust id, for delegated tokens.
    pub fn trust_id(&self) -> Option<&str> {
        self.claims.trust_id.as_deref()
    }
    /// Actor chain, current actor first.
    pub fn actor_chain(&self) -> &[Actor] {
        &self.claims.actor_chain
    }
    /// True for a token minted from a trust: it has a trust id and an actor
    /// chain (D1 refuses one without the other).
    pub fn is_delegated(&self) -> bool {
        self.claims.trust_id.is_some()
    }
    /// The current actor (the first of the chain) of a delegated token: the
    /// trustee who holds the key and acts for the subject.
    pub fn current_actor(&self) -> Option<&str> {
        self.claims.actor_chain.first().map(|a| a.sub.as_str())
    }
    /// Origin issuer, for federated tokens.
    pub fn origin_issuer(&self) -> Option<&str> {
        self.claims.origin_issuer.as_deref()
    }
    /// The instance of the audience the token is restricted to; T9.2
    /// checked it is this verifier's. `None`: an unbound token.
    pub fn instance(&self) -> Option<&str> {
        self.claims.instance.as_deref()
    }
    /// SHA-256 of the exact token bytes.
    pub fn token_hash(&self) -> &[u8; 32] {
        &self.token_hash
    }
    /// The issuer key id that signed the token.
    pub fn kid(&self) -> &[u8] {
        &self.kid
    }
    /// The issuer's signature algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }
    /// Thumbprint of the issuer key that signed the token.
    pub fn issuer_key_thumbprint(&self) -> &Thumbprint {
        &self.issuer_key
    }
}

/// Verifies a token (steps T1–T12, then D1–D5) at time `now` (Unix seconds).
pub(crate) fn verify_token(
    bytes: &[u8],
    policy: &TokenPolicy,
    issuers: &dyn IssuerKeys,
    now: u64,
) -> Result<VerifiedToken> {
    let token_hash: [u8; 32] = Sha256::digest(bytes).into();
    verify_token_hashed(bytes, token_hash, policy, issuers, now)
}

/// [`verify_token`] with the token's SHA-256 already computed.
pub(crate) fn verify_token_hashed(
    bytes: &[u8],
    token_hash: [u8; 32],
    policy: &TokenPolicy,
    issuers: &dyn IssuerKeys,
    now: u64,
) -> Result<VerifiedToken> {
    let unverified = UnverifiedToken::from_slice(bytes)?;
    let issuer_key = unverified.check_signature(issuers)?;
    let UnverifiedToken { sign1, claims, .. } = unverified;
    // T8.2: the cnf key, now that the issuer vouches for it.
    let claims = claims.into_claims()?;
    check_claims(&claims, policy, now)?;
    super::delegation::check(&claims)?;
    Ok(VerifiedToken {
        token_hash,
        kid: sign1.kid.unwrap_or_default().to_vec(),
        alg: sign1.alg,
        issuer_key,
        claims,
    })
}

/// Steps T9–T12 on claims whose signature was checked.
pub(crate) fn check_claims(claims: &Claims, policy: &TokenPolicy, now: u64) -> Result<()> {
    // T9.1
    if claims.aud != policy.audience {
        return err(
            Code::CwtAudMismatch,
            format!(
                "the token is for audience {:?}; this service is {:?}",
                truncate(&claims.aud),
                policy.audience
            ),
        );
    }
    // T9.2
    match (&claims.instance, &policy.instance) {
        (None, _) => {}
        (Some(bound), Some(ours)) if bound == ours => {}
        (Some(bound), Some(ours)) => {
            return err(
                Code::CwtInstance,
                format!(
                    "the token is for instance {:?}; this is instance {ours:?}",
                    truncate(bound)
                ),
            );
        }
        (Some(bound), None) => {
            return err(
                Code::CwtInstance,
                format!(
                    "the token is for instance {:?}; this service is configured with no instance id",
                    truncate(bound)
                ),
            );
        }
    }
    // T10
    if claims.kind != policy.kind {
        return err(
            Code::CwtKindMismatch,
            format!(
                "a {} token was presented where a {} token is required",
                claims.kind.as_str(),
                policy.kind.as_str()
            ),
        );
    }
    // T11
    let leeway = policy.leeway;
    if claims.exp.saturating_add(leeway) < now {
        return err(
            Code::CwtExpired,
            format!(
                "the token expired at {} and it is now {now} ({}s ago, leeway {leeway}s)",
                claims.exp,
                now - claims.exp
            ),
        );
    }
    if let Some(nbf) = claims.nbf
        && nbf > now.saturating_add(leeway)
    {
        return err(
            Code::CwtNotYetValid,
            format!(
                "the token is not valid before {nbf} and it is now {now} ({}s early, leeway {leeway}s); check the clocks",
                nbf - now
            ),
        );
    }
    if claims.iat > now.saturating_add(leeway) {
        return err(
            Code::CwtIatFuture,
            format!(
                "the token was issued at {} and it is now {now} ({}s in the future, leeway {leeway}s); check the clocks",
                claims.iat,
                claims.iat - now
            ),
        );
    }
    // T12
    let max = match claims.kind {
        TokenKind::Service => policy.max_service_lifetime.min(MAX_SERVICE_LIFETIME),
        TokenKind::Session => policy.max_session_lifetime.min(crate::token::MAX_SESSION_LIFETIME),
    };
    let lifetime = claims.exp.checked_sub(claims.iat);
    if lifetime.is_none_or(|l| l > max) {
        return err(
            Code::CwtLifetimeExceeded,
            format!(
                "exp − iat is {} s; a {} token may live at most {max} s",
                claims.exp as i128 - claims.iat as i128,
                claims.kind.as_str()
            ),
        );
    }
    Ok(())
}

/// Shortens attacker-controlled text before it goes into a message.
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn claim_type(name: &str, expected: &str, r: &Reader<'_>) -> Error {
    Error::new(
        Code::CwtClaimType,
        format!("claim {name} must be {expected}, found {}", r.describe_next()),
    )
}

fn read_time(r: &mut Reader<'_>, name: &str) -> Result<u64> {
    match r.uint() {
        Some(t) if t <= i64::MAX as u64 => Ok(t),
        Some(t) => err(Code::CwtClaimType, format!("claim {name} = {t} is out of range")),
        None => Err(claim_type(name, "an unsigned integer (NumericDate)", r)),
    }
}

fn read_text<'a>(r: &mut Reader<'a>, name: &str) -> Result<&'a str> {
    r.text().ok_or_else(|| claim_type(name, "a text string", r))
}

/// Step T4, then the `cnf` key (T8.2): decodes the claims map of the profile.
pub(crate) fn decode_claims(payload: &[u8]) -> Result<Claims> {
    decode_pending_claims(payload)?.into_claims()
}

/// Claims that passed T4, with the `cnf` COSE_Key not yet decoded.
#[derive(Debug)]
struct PendingClaims<'a> {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: Option<u64>,
    iat: u64,
    cti: [u8; CTI_LEN],
    /// The encoded COSE_Key under `cnf` label 1.
    cnf: &'a [u8],
    kb: KeyboundClaims,
}

impl PendingClaims<'_> {
    /// Decodes the `cnf` key (K1, K2): done only for a token whose
    /// signature holds (T8.2), or on an explicitly unverified path.
    fn into_claims(self) -> Result<Claims> {
        let PendingClaims {
            iss,
            sub,
            aud,
            exp,
            nbf,
            iat,
            cti,
            cnf,
            kb,
        } = self;
        Ok(Claims {
            iss,
            sub,
            aud,
            exp,
            nbf,
            iat,
            cti,
            cnf: read_cnf_key(cnf)?,
            kind: kb.kind,
            domain: kb.domain,
            project: kb.project,
            roles: kb.roles,
            trust_id: kb.trust_id,
            actor_chain: kb.actor_chain,
            origin_issuer: kb.origin_issuer,
            instance: kb.instance,
        })
    }
}

/// Step T4: the claims map of the profile, `cnf` checked only for its shape.
fn decode_pending_claims(payload: &[u8]) -> Result<PendingClaims<'_>> {
    cbor::validate(payload)?;
    let mut r = Reader::new(payload);
    let Some(entries) = r.map() else {
        return err(
            Code::CwtStructure,
            format!("the payload must be a claims map, found {}", r.describe_next()),
        );
    };
    let (mut iss, mut sub, mut aud, mut exp, mut nbf, mut iat, mut cti, mut cnf, mut kb) =
        (None, None, None, None, None, None, None, None, None);
    for _ in 0..entries {
        match r.label() {
            Some(Label::Int(label::ISS)) => iss = Some(read_text(&mut r, "iss (1)")?.to_owned()),
            Some(Label::Int(label::SUB)) => sub = Some(read_text(&mut r, "sub (2)")?.to_owned()),
            Some(Label::Int(label::AUD)) => {
                if r.array().is_some() {
                    return err(
                        Code::CwtClaimType,
                        "aud (3) is an array; a keybound token names exactly one audience",
                    );
                }
                aud = Some(read_text(&mut r, "aud (3)")?.to_owned())
            }
            Some(Label::Int(label::EXP)) => exp = Some(read_time(&mut r, "exp (4)")?),
            Some(Label::Int(label::NBF)) => nbf = Some(read_time(&mut r, "nbf (5)")?),
            Some(Label::Int(label::IAT)) => iat = Some(read_time(&mut r, "iat (6)")?),
            Some(Label::Int(label::CTI)) => {
                let bytes = r.bytes().ok_or_else(|| claim_type("cti (7)", "a byte string", &r))?;
                cti = Some(<[u8; CTI_LEN]>::try_from(bytes).map_err(|_| {
                    Error::new(
                        Code::CwtCtiInvalid,
                        format!("cti (7) is {} bytes; it must be {CTI_LEN}", bytes.len()),
                    )
                })?);
            }
            Some(Label::Int(label::CNF)) => cnf = Some(read_cnf_shape(&mut r)?),
            Some(Label::Int(LABEL_KEYBOUND)) => kb = Some(read_keybound(&mut r)?),
            Some(other) => {
                return err(
                    Code::CwtUnknownClaim,
                    format!("claim {other} is not part of the profile"),
                );
            }
            None => return err(Code::CwtStructure, "a claim label is neither an integer nor text"),
        }
    }
    let missing = |name: &str| Error::new(Code::CwtMissingClaim, format!("the required claim {name} is absent"));
    let sub = sub.ok_or_else(|| missing("sub (2)"))?;
    if sub.is_empty() {
        return err(Code::CwtClaimType, "sub (2) is empty");
    }
    let kb = kb.ok_or_else(|| missing("keybound claims (-65537)"))?;
    Ok(PendingClaims {
        iss: iss.ok_or_else(|| missing("iss (1)"))?,
        sub,
        aud: aud.ok_or_else(|| missing("aud (3)"))?,
        exp: exp.ok_or_else(|| missing("exp (4)"))?,
        nbf,
        iat: iat.ok_or_else(|| missing("iat (6)"))?,
        cti: cti.ok_or_else(|| missing("cti (7)"))?,
        cnf: cnf.ok_or_else(|| {
            Error::new(
                Code::CwtCnfMissing,
                "the token has no cnf (8): a keybound token is always bound to a key",
            )
        })?,
        kb,
    })
}

/// T4 for `cnf`: a map of one entry under label 1; returns that entry's
/// encoded value.
fn read_cnf_shape<'a>(r: &mut Reader<'a>) -> Result<&'a [u8]> {
    if r.map() != Some(1) || r.int() != Some(1) {
        return err(
            Code::CwtCnfInvalid,
            "cnf (8) must be a map holding exactly one COSE_Key under label 1",
        );
    }
    // The payload passed the strict profile, so the item is complete.
    r.raw_item()
        .ok_or_else(|| Error::new(Code::CwtCnfInvalid, "cnf (8) holds no COSE_Key"))
}

/// T8.2: the `cnf` COSE_Key passes K1 and K2 as a public key.
fn read_cnf_key(encoded: &[u8]) -> Result<PublicKey> {
    let invalid = |e: Error| Error::new(Code::CwtCnfInvalid, format!("cnf (8) key: {e}"));
    let parts = CoseKeyParts::read(&mut Reader::new(encoded)).map_err(invalid)?;
    parts.into_public().map_err(invalid)
}

#[derive(Debug)]
struct KeyboundClaims {
    kind: TokenKind,
    domain: Option<String>,
    project: Option<String>,
    roles: Vec<String>,
    trust_id: Option<String>,
    actor_chain: Vec<Actor>,
    origin_issuer: Option<String>,
    instance: Option<String>,
}

fn read_keybound(r: &mut Reader<'_>) -> Result<KeyboundClaims> {
    let Some(entries) = r.map() else {
        return Err(claim_type("keybound claims (-65537)", "a map", r));
    };
    let mut kind = None;
    let mut claims = KeyboundClaims {
        kind: TokenKind::Service,
        domain: None,
        project: None,
        roles: Vec::new(),
        trust_id: None,
        actor_chain: Vec::new(),
        origin_issuer: None,
        instance: None,
    };
    for _ in 0..entries {
        match r.label() {
            Some(Label::Int(label::kb::KIND)) => {
                let v = r
                    .uint()
                    .ok_or_else(|| claim_type("kind", "1 (session) or 2 (service)", r))?;
                kind = Some(TokenKind::from_wire(v).ok_or_else(|| {
                    Error::new(
                        Code::CwtClaimType,
                        format!("kind {v} is neither 1 (session) nor 2 (service)"),
                    )
                })?);
            }
            Some(Label::Int(label::kb::DOMAIN)) => claims.domain = Some(read_text(r, "domain")?.to_owned()),
            Some(Label::Int(label::kb::PROJECT)) => claims.project = Some(read_text(r, "project")?.to_owned()),
            Some(Label::Int(label::kb::ROLES)) => {
                let n = r
                    .array()
                    .ok_or_else(|| claim_type("roles", "an array of text strings", r))?;
                for _ in 0..n {
                    let role = read_text(r, "roles[]")?;
                    if role.is_empty() || claims.roles.iter().any(|x| x == role) {
                        return err(Code::CwtClaimType, "roles must be distinct, non-empty names");
                    }
                    claims.roles.push(role.to_owned());
                }
            }
            Some(Label::Int(label::kb::TRUST_ID)) => claims.trust_id = Some(read_text(r, "trust id")?.to_owned()),
            Some(Label::Int(label::kb::ACTOR_CHAIN)) => {
                let n = r
                    .array()
                    .ok_or_else(|| claim_type("actor chain", "an array of actors", r))?;
                if n == 0 || n > MAX_ACTOR_CHAIN {
                    return err(
                        Code::CwtClaimType,
                        format!("an actor chain holds 1 to {MAX_ACTOR_CHAIN} actors, not {n}"),
                    );
                }
                for _ in 0..n {
                    claims.actor_chain.push(read_actor(r)?);
                }
            }
            Some(Label::Int(label::kb::ORIGIN_ISSUER)) => {
                claims.origin_issuer = Some(read_text(r, "origin issuer")?.to_owned())
            }
            Some(Label::Int(label::kb::INSTANCE)) => {
                let instance = read_text(r, "instance")?;
                if let Some(problem) = crate::token::instance_id_problem(instance) {
                    return err(Code::CwtClaimType, format!("claim instance (8): {problem}"));
                }
                claims.instance = Some(instance.to_owned());
            }
            Some(other) => {
                return err(
                    Code::CwtUnknownClaim,
                    format!("keybound claim {other} is not part of the profile"),
                );
            }
            None => {
                return err(
                    Code::CwtStructure,
                    "a keybound claim label is neither an integer nor text",
                );
            }
        }
    }
    claims.kind =
        kind.ok_or_else(|| Error::new(Code::CwtMissingClaim, "the required keybound claim kind (1) is absent"))?;
    Ok(claims)
}

fn read_actor(r: &mut Reader<'_>) -> Result<Actor> {
    let n = r.map().ok_or_else(|| claim_type("actor", "a map", r))?;
    let (mut sub, mut iss) = (None, None);
    for _ in 0..n {
        match r.label() {
            Some(Label::Int(1)) => sub = Some(read_text(r, "actor sub (1)")?.to_owned()),
            Some(Label::Int(2)) => iss = Some(read_text(r, "actor iss (2)")?.to_owned()),
            _ => return err(Code::CwtUnknownClaim, "an actor has only sub (1) and iss (2)"),
        }
    }
    Ok(Actor {
        sub: sub.ok_or_else(|| Error::new(Code::CwtMissingClaim, "an actor has no sub (1)"))?,
        iss,
    })
}
