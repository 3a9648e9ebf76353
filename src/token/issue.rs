//! Issuing tokens. Everything a token cannot do without is an argument of the
//! constructor; the rest has defaults.

use super::{
    Actor, CTI_LEN, Claims, DEFAULT_SESSION_LIFETIME, LABEL_KEYBOUND, MAX_ACTOR_CHAIN, MAX_SERVICE_LIFETIME, Token,
    TokenKind, label,
};
use crate::cbor;
use crate::cose::{self, TAG_CWT, TAG_SIGN1};
use crate::error::{Code, Result, err};
use crate::key::{PublicKey, SigningKey};

/// Which tags an issued token carries. Verifiers accept all four forms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenTagging {
    /// A bare COSE_Sign1 array (the default: smallest).
    #[default]
    Untagged,
    /// `18(COSE_Sign1)`.
    Sign1,
    /// `61(18(COSE_Sign1))`, the fully self-describing CWT.
    Cwt,
}

/// Builds and signs a token.
///
/// ```
/// use keybound::key::{Algorithm, SigningKey};
/// use keybound::token::TokenBuilder;
/// let issuer = SigningKey::generate(Algorithm::EdDSA)?;
/// let client = SigningKey::generate(Algorithm::EdDSA)?;
/// let token = TokenBuilder::service("https://issuer.example", "ayoung@stoughton", "https://nova.example",
///         client.public_key().clone(), 1_700_000_000)
///     .scope("stoughton", "turing")
///     .roles(["member"])
///     .sign(&issuer, b"k1")?;
/// assert!(token.as_bytes().len() < 300);
/// # Ok::<(), keybound::Error>(())
/// ```
#[must_use = "a builder does nothing until signed"]
#[derive(Clone, Debug)]
pub struct TokenBuilder {
    claims: Claims,
    lifetime: u64,
    cti: Option<[u8; CTI_LEN]>,
    tagging: TokenTagging,
}

impl TokenBuilder {
    /// A service token for one `audience`, valid from `issued_at` for 300 s.
    pub fn service(
        issuer: impl Into<String>,
        subject: impl Into<String>,
        audience: impl Into<String>,
        cnf: PublicKey,
        issued_at: u64,
    ) -> Self {
        Self::new(
            TokenKind::Service,
            issuer.into(),
            subject.into(),
            audience.into(),
            cnf,
            issued_at,
            MAX_SERVICE_LIFETIME,
        )
    }

    /// A session token: its audience is the issuer itself; valid for 1 h.
    pub fn session(issuer: impl Into<String>, subject: impl Into<String>, cnf: PublicKey, issued_at: u64) -> Self {
        let issuer = issuer.into();
        Self::new(
            TokenKind::Session,
            issuer.clone(),
            subject.into(),
            issuer,
            cnf,
            issued_at,
            DEFAULT_SESSION_LIFETIME,
        )
    }

    fn new(kind: TokenKind, iss: String, sub: String, aud: String, cnf: PublicKey, iat: u64, lifetime: u64) -> Self {
        TokenBuilder {
            claims: Claims {
                iss,
                sub,
                aud,
                exp: 0,
                nbf: None,
                iat,
                cti: [0; CTI_LEN],
                cnf,
                kind,
                domain: None,
                project: None,
                roles: Vec::new(),
                trust_id: None,
                actor_chain: Vec::new(),
                origin_issuer: None,
                instance: None,
            },
            lifetime,
            cti: None,
            tagging: TokenTagging::Untagged,
        }
    }

    /// Lifetime in seconds (`exp − iat`); at most the kind's maximum.
    pub fn lifetime(mut self, seconds: u64) -> Self {
        self.lifetime = seconds;
        self
    }

    /// Sets `nbf`.
    pub fn not_before(mut self, nbf: u64) -> Self {
        self.claims.nbf = Some(nbf);
        self
    }

    /// Scopes the token to `project` in `domain`.
    pub fn scope(mut self, domain: impl Into<String>, project: impl Into<String>) -> Self {
        self.claims.domain = Some(domain.into());
        self.claims.project = Some(project.into());
        self
    }

    /// Sets the domain without a project (a domain-scoped token).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.claims.domain = Some(domain.into());
        self
    }

    /// The roles held on the scope.
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.claims.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// The trust this token was minted from.
    pub fn trust_id(mut self, id: impl Into<String>) -> Self {
        self.claims.trust_id = Some(id.into());
        self
    }

    /// The actor chain, current actor first.
    pub fn actor_chain(mut self, chain: Vec<Actor>) -> Self {
        self.claims.actor_chain = chain;
        self
    }

    /// The issuer that first authenticated the subject.
    pub fn origin_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.claims.origin_issuer = Some(issuer.into());
        self
    }

    /// Restricts the token to one instance of its audience service (a VM,
    /// a host id): 1 to 255 bytes of visible ASCII, no spaces. Only for
    /// service tokens.
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.claims.instance = Some(id.into());
        self
    }

    /// A fixed `cti` instead of a random one (for test vectors).
    pub fn cti(mut self, cti: [u8; CTI_LEN]) -> Self {
        self.cti = Some(cti);
        self
    }

    /// The tags the token carries.
    pub fn tagging(mut self, tagging: TokenTagging) -> Self {
        self.tagging = tagging;
        self
    }

    /// Checks the claims and signs them with the issuer's `key` under `kid`.
    pub fn sign(self, key: &SigningKey, kid: &[u8]) -> Result<Token> {
        let TokenBuilder {
            mut claims,
            lifetime,
            cti,
            tagging,
        } = self;
        let max = claims.kind.max_lifetime();
        if lifetime == 0 || lifetime > max {
            return err(
                Code::IssueInvalid,
                format!(
                    "a {} token lives 1 to {max} seconds, not {lifetime}",
                    claims.kind.as_str()
                ),
            );
        }
        claims.exp = claims
            .iat
            .checked_add(lifetime)
            .filter(|exp| *exp <= i64::MAX as u64)
            .ok_or_else(|| crate::Error::new(Code::IssueInvalid, "iat + lifetime overflows"))?;
        if claims.kind == TokenKind::Session && claims.aud != claims.iss {
            return err(Code::IssueInvalid, "a session token's audience is its issuer");
        }
        for (what, value) in [
            ("issuer", &claims.iss),
            ("subject", &claims.sub),
            ("audience", &claims.aud),
        ] {
            if value.is_empty() {
                return err(Code::IssueInvalid, format!("the {what} must not be empty"));
            }
        }
        if claims.roles.iter().any(String::is_empty) {
            return err(Code::IssueInvalid, "a role name must not be empty");
        }
        if let Some(instance) = &claims.instance {
            // A session token's audience is the issuer, which has no instances.
            if claims.kind == TokenKind::Session {
                return err(Code::IssueInvalid, "only a service token is bound to an instance");
            }
            if let Some(problem) = super::instance_id_problem(instance) {
                return err(Code::IssueInvalid, problem);
            }
        }
        if claims.actor_chain.len() > MAX_ACTOR_CHAIN {
            return err(
                Code::IssueInvalid,
                format!("an actor chain holds at most {MAX_ACTOR_CHAIN} actors"),
            );
        }
        if kid.is_empty() {
            return err(Code::IssueInvalid, "the issuer key needs a non-empty kid");
        }
        claims.cti = match cti {
            Some(cti) => cti,
            None => crate::random_array()?,
        };
        let payload = encode_claims(&claims);
        // Never issue what a verifier would refuse (sizes, entry counts,
        // duplicate roles): run our own decoder over the result.
        crate::verify::token::decode_claims(&payload).map_err(|e| {
            crate::Error::new(
                Code::IssueInvalid,
                format!("the claims would be refused by verifiers: {e}"),
            )
        })?;
        if payload.len() + 128 > super::MAX_TOKEN_SIZE {
            return err(
                Code::IssueInvalid,
                format!(
                    "the claims take {} bytes; tokens are limited to {}",
                    payload.len(),
                    super::MAX_TOKEN_SIZE
                ),
            );
        }
        let sign1 = cose::sign1(key, Some(kid), payload, &[]);
        let prefix: &[u8] = match tagging {
            TokenTagging::Untagged => &[],
            TokenTagging::Sign1 => &[0xc0 | TAG_SIGN1 as u8],
            TokenTagging::Cwt => &[0xd8, TAG_CWT as u8, 0xc0 | TAG_SIGN1 as u8],
        };
        Ok(Token::from_bytes([prefix, &sign1].concat()))
    }
}

/// Encodes claims deterministically: registered claims in label order, then
/// `cnf`, then the keybound map (labels ascending in each map).
pub(crate) fn encode_claims(claims: &Claims) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    cbor::write_map(&mut out, 8 + usize::from(claims.nbf.is_some()));
    cbor::write_int(&mut out, label::ISS);
    cbor::write_text(&mut out, &claims.iss);
    cbor::write_int(&mut out, label::SUB);
    cbor::write_text(&mut out, &claims.sub);
    cbor::write_int(&mut out, label::AUD);
    cbor::write_text(&mut out, &claims.aud);
    cbor::write_int(&mut out, label::EXP);
    cbor::write_uint(&mut out, claims.exp);
    if let Some(nbf) = claims.nbf {
        cbor::write_int(&mut out, label::NBF);
        cbor::write_uint(&mut out, nbf);
    }
    cbor::write_int(&mut out, label::IAT);
    cbor::write_uint(&mut out, claims.iat);
    cbor::write_int(&mut out, label::CTI);
    cbor::write_bytes(&mut out, &claims.cti);
    // cnf = {1 (COSE_Key): key}
    cbor::write_int(&mut out, label::CNF);
    cbor::write_map(&mut out, 1);
    cbor::write_int(&mut out, 1);
    out.extend_from_slice(&claims.cnf.to_cose_key(None));

    cbor::write_int(&mut out, LABEL_KEYBOUND);
    let entries = 1
        + usize::from(claims.domain.is_some())
        + usize::from(claims.project.is_some())
        + usize::from(!claims.roles.is_empty())
        + usize::from(claims.trust_id.is_some())
        + usize::from(!claims.actor_chain.is_empty())
        + usize::from(claims.origin_issuer.is_some())
        + usize::from(claims.instance.is_some());
    cbor::write_map(&mut out, entries);
    cbor::write_int(&mut out, label::kb::KIND);
    cbor::write_uint(&mut out, claims.kind.wire());
    let text = |label: i64, value: &Option<String>, out: &mut Vec<u8>| {
        if let Some(value) = value {
            cbor::write_int(out, label);
            cbor::write_text(out, value);
        }
    };
    text(label::kb::DOMAIN, &claims.domain, &mut out);
    text(label::kb::PROJECT, &claims.project, &mut out);
    if !claims.roles.is_empty() {
        cbor::write_int(&mut out, label::kb::ROLES);
        cbor::write_array(&mut out, claims.roles.len());
        for role in &claims.roles {
            cbor::write_text(&mut out, role);
        }
    }
    text(label::kb::TRUST_ID, &claims.trust_id, &mut out);
    if !claims.actor_chain.is_empty() {
        cbor::write_int(&mut out, label::kb::ACTOR_CHAIN);
        cbor::write_array(&mut out, claims.actor_chain.len());
        for actor in &claims.actor_chain {
            cbor::write_map(&mut out, 1 + usize::from(actor.iss.is_some()));
            cbor::write_int(&mut out, 1);
            cbor::write_text(&mut out, &actor.sub);
            if let Some(iss) = &actor.iss {
                cbor::write_int(&mut out, 2);
                cbor::write_text(&mut out, iss);
            }
        }
    }
    text(label::kb::ORIGIN_ISSUER, &claims.origin_issuer, &mut out);
    text(label::kb::INSTANCE, &claims.instance, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use ciborium::Value;
    use coset::CborSerializable;
    use coset::cwt::{ClaimName, ClaimsSet, Timestamp};

    use super::*;
    use crate::key::Algorithm;

    /// The same claims encoded by coset and ciborium, independently of the
    /// canonical writer.
    fn coset_claims(claims: &Claims) -> Vec<u8> {
        let text = |s: &str| Value::Text(s.to_owned());
        let int = |i: i64| Value::Integer(i.into());
        let mut kb = vec![(int(label::kb::KIND), int(claims.kind.wire() as i64))];
        let optional = [
            (label::kb::DOMAIN, &claims.domain),
            (label::kb::PROJECT, &claims.project),
        ];
        for (l, v) in optional {
            if let Some(v) = v {
                kb.push((int(l), text(v)));
            }
        }
        if !claims.roles.is_empty() {
            kb.push((
                int(label::kb::ROLES),
                Value::Array(claims.roles.iter().map(|r| text(r)).collect()),
            ));
        }
        if let Some(trust) = &claims.trust_id {
            kb.push((int(label::kb::TRUST_ID), text(trust)));
        }
        if !claims.actor_chain.is_empty() {
            let actors = claims
                .actor_chain
                .iter()
                .map(|a| {
                    let mut m = vec![(int(1), text(&a.sub))];
                    if let Some(iss) = &a.iss {
                        m.push((int(2), text(iss)));
                    }
                    Value::Map(m)
                })
                .collect();
            kb.push((int(label::kb::ACTOR_CHAIN), Value::Array(actors)));
        }
        if let Some(origin) = &claims.origin_issuer {
            kb.push((int(label::kb::ORIGIN_ISSUER), text(origin)));
        }
        if let Some(instance) = &claims.instance {
            kb.push((int(label::kb::INSTANCE), text(instance)));
        }
        let cose_key: Value = ciborium::from_reader(claims.cnf.to_cose_key(None).as_slice()).unwrap();
        ClaimsSet {
            issuer: Some(claims.iss.clone()),
            subject: Some(claims.sub.clone()),
            audience: Some(claims.aud.clone()),
            expiration_time: Some(Timestamp::WholeSeconds(claims.exp as i64)),
            not_before: claims.nbf.map(|t| Timestamp::WholeSeconds(t as i64)),
            issued_at: Some(Timestamp::WholeSeconds(claims.iat as i64)),
            cwt_id: Some(claims.cti.to_vec()),
            rest: vec![
                (
                    ClaimName::Assigned(coset::iana::CwtClaimName::Cnf),
                    Value::Map(vec![(int(1), cose_key)]),
                ),
                (ClaimName::PrivateUse(LABEL_KEYBOUND), Value::Map(kb)),
            ],
        }
        .to_vec()
        .unwrap()
    }

    #[test]
    fn canonical_writer_agrees_with_coset() {
        let issuer = SigningKey::derive(Algorithm::ES256, b"oracle", b"issuer").unwrap();
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let client = SigningKey::derive(alg, b"oracle", b"client").unwrap();
            let cnf = client.public_key().clone();
            let now = 1_763_800_000;
            let builders = [
                TokenBuilder::session("https://issuer.example", "ayoung@stoughton", cnf.clone(), now),
                TokenBuilder::service(
                    "https://issuer.example",
                    "ayoung@stoughton",
                    "https://nova.example",
                    cnf,
                    now,
                )
                .scope("stoughton", "turing")
                .roles(["member", "reader"])
                .not_before(now - 5)
                .trust_id("t-1")
                .actor_chain(vec![
                    Actor {
                        sub: "svc@default".into(),
                        iss: None,
                    },
                    Actor {
                        sub: "peer@remote".into(),
                        iss: Some("https://peer.example".into()),
                    },
                ])
                .origin_issuer("https://origin.example")
                .instance("vm-7f3a@host-12")
                .tagging(TokenTagging::Cwt),
            ];
            for builder in builders {
                let token = builder.sign(&issuer, b"k1").unwrap();
                let claims = crate::danger::insecure_decode_token(token.as_bytes()).unwrap().claims;
                assert_eq!(encode_claims(&claims), coset_claims(&claims));
                // The COSE_Sign1 re-encoded by coset is the same bytes.
                let (_, untagged) = cbor::strip_tags(token.as_bytes(), 2).unwrap();
                let sign1 = coset::CoseSign1::from_slice(untagged).unwrap();
                assert_eq!(sign1.protected.header.key_id, b"k1");
                assert_eq!(sign1.payload.as_deref(), Some(encode_claims(&claims).as_slice()));
                assert_eq!(sign1.to_vec().unwrap(), untagged);
            }
        }
    }
}
