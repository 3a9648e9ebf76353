//! Tokens: CWTs (RFC 8392) in a COSE_Sign1, bound to the client's key (RFC 8747).
//!
//! ```cddl
//! Claims = {
//!     1 => tstr,                 ; iss
//!     2 => tstr,                 ; sub, "name@domain"
//!     3 => tstr,                 ; aud: exactly one audience, never an array
//!     4 => uint,                 ; exp
//!   ? 5 => uint,                 ; nbf
//!     6 => uint,                 ; iat
//!     7 => bstr .size 16,        ; cti
//!     8 => { 1 => COSE_Key },    ; cnf: the client's public key
//!     -65537 => KeyboundClaims,
//! }
//! KeyboundClaims = {
//!     1 => 1 / 2,                ; kind: 1 session, 2 service
//!   ? 2 => tstr,                 ; domain of the scope
//!   ? 3 => tstr,                 ; project
//!   ? 4 => [* tstr],             ; roles on the project
//!   ? 5 => tstr,                 ; trust id (delegation)
//!   ? 6 => [+ Actor],            ; actor chain, current actor first
//!   ? 7 => tstr,                 ; origin issuer (federation)
//!   ? 8 => tstr,                 ; instance of the audience (1..255 visible ASCII)
//! }
//! Actor = { 1 => tstr, ? 2 => tstr }   ; sub, iss
//! ```

pub(crate) mod issue;

pub use crate::verify::token::{DEFAULT_LEEWAY, IssuerKeys, TokenPolicy, UnverifiedToken, VerifiedToken};
pub use issue::{TokenBuilder, TokenTagging};

use std::fmt;

use sha2::{Digest, Sha256};

use crate::encoding::b64url_encode;
use crate::key::PublicKey;

/// Largest token accepted, in bytes, checked before any parsing.
pub const MAX_TOKEN_SIZE: usize = 4096;
/// Longest lifetime (`exp − iat`) of a service token, in seconds.
pub const MAX_SERVICE_LIFETIME: u64 = 300;
/// Longest lifetime of a session token, in seconds (12 h).
pub const MAX_SESSION_LIFETIME: u64 = 12 * 3600;
/// Default lifetime of a session token (1 h).
pub const DEFAULT_SESSION_LIFETIME: u64 = 3600;
/// The private claim label holding [`KeyboundClaims`](self) (private-use range).
pub const LABEL_KEYBOUND: i64 = -65537;
/// Length of `cti`.
pub const CTI_LEN: usize = 16;
/// Most entries in an actor chain.
pub const MAX_ACTOR_CHAIN: usize = 8;
/// Most actors in a delegated token: a root trust and three redelegations
/// (spec/delegation.md §5). Longer chains fit the wire format but no
/// keybound issuer mints them; step D3 refuses them.
pub const MAX_DELEGATION_CHAIN: usize = 4;
/// Longest `instance` claim, in bytes.
pub const MAX_INSTANCE_LEN: usize = 255;

/// Why `id` cannot be an instance id (1 to [`MAX_INSTANCE_LEN`] bytes of
/// visible ASCII, no spaces), or `None` when it can. One rule for the
/// token claim, the verifier's configuration and the mint request.
pub fn instance_id_problem(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > MAX_INSTANCE_LEN {
        return Some(format!(
            "an instance id is 1 to {MAX_INSTANCE_LEN} bytes, not {}",
            id.len()
        ));
    }
    // Visible ASCII only: no spaces, controls or look-alike Unicode.
    if let Some(at) = id.bytes().position(|b| !b.is_ascii_graphic()) {
        return Some(format!(
            "an instance id is visible ASCII without spaces; byte {at} is not"
        ));
    }
    None
}

/// Registered claim labels (RFC 8392, RFC 8747).
pub mod label {
    /// iss
    pub const ISS: i64 = 1;
    /// sub
    pub const SUB: i64 = 2;
    /// aud
    pub const AUD: i64 = 3;
    /// exp
    pub const EXP: i64 = 4;
    /// nbf
    pub const NBF: i64 = 5;
    /// iat
    pub const IAT: i64 = 6;
    /// cti
    pub const CTI: i64 = 7;
    /// cnf
    pub const CNF: i64 = 8;
    /// Keybound private claims, inside the map at [`super::LABEL_KEYBOUND`].
    pub mod kb {
        /// kind
        pub const KIND: i64 = 1;
        /// domain
        pub const DOMAIN: i64 = 2;
        /// project
        pub const PROJECT: i64 = 3;
        /// roles
        pub const ROLES: i64 = 4;
        /// trust id
        pub const TRUST_ID: i64 = 5;
        /// actor chain
        pub const ACTOR_CHAIN: i64 = 6;
        /// origin issuer
        pub const ORIGIN_ISSUER: i64 = 7;
        /// instance of the audience service
        pub const INSTANCE: i64 = 8;
    }
}

/// What a token may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenKind {
    /// Audience is the issuer itself; used only to obtain service tokens.
    Session,
    /// Audience is one service; lives at most [`MAX_SERVICE_LIFETIME`].
    Service,
}

impl TokenKind {
    pub(crate) fn wire(self) -> u64 {
        match self {
            TokenKind::Session => 1,
            TokenKind::Service => 2,
        }
    }

    pub(crate) fn from_wire(v: u64) -> Option<Self> {
        match v {
            1 => Some(TokenKind::Session),
            2 => Some(TokenKind::Service),
            _ => None,
        }
    }

    /// `"session"` or `"service"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Session => "session",
            TokenKind::Service => "service",
        }
    }

    /// The longest lifetime allowed for this kind.
    pub fn max_lifetime(self) -> u64 {
        match self {
            TokenKind::Session => MAX_SESSION_LIFETIME,
            TokenKind::Service => MAX_SERVICE_LIFETIME,
        }
    }
}

/// One link of an actor chain: who acts (and which issuer vouches for them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The acting principal, `name@domain`.
    pub sub: String,
    /// The issuer that authenticated the actor, when not the token's issuer.
    pub iss: Option<String>,
}

/// The claims of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Issuer (1).
    pub iss: String,
    /// Subject (2), `name@domain`.
    pub sub: String,
    /// Audience (3): exactly one.
    pub aud: String,
    /// Expiry (4), Unix seconds.
    pub exp: u64,
    /// Not before (5), Unix seconds.
    pub nbf: Option<u64>,
    /// Issued at (6), Unix seconds.
    pub iat: u64,
    /// Token id (7), 16 random bytes.
    pub cti: [u8; CTI_LEN],
    /// The client key the token is bound to (8).
    pub cnf: PublicKey,
    /// Session or service token.
    pub kind: TokenKind,
    /// Domain of the scope.
    pub domain: Option<String>,
    /// Project the roles apply to.
    pub project: Option<String>,
    /// Roles held on the project.
    pub roles: Vec<String>,
    /// Trust that this token was minted from (delegation).
    pub trust_id: Option<String>,
    /// Who acts on the subject's behalf, current actor first.
    pub actor_chain: Vec<Actor>,
    /// The issuer that first authenticated the subject (federation).
    pub origin_issuer: Option<String>,
    /// The one instance of the audience service (a VM, a host id) the
    /// token is restricted to; `None`: any instance.
    pub instance: Option<String>,
}

/// A signed token as issued: its exact bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    bytes: Vec<u8>,
}

impl Token {
    /// Wraps token bytes (no checks: see [`crate::verify::Verifier`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Token { bytes }
    }

    /// The encoded token.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded token, consumed.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// base64url, as carried in the `Authorization: KB` header.
    pub fn to_base64url(&self) -> String {
        b64url_encode(&self.bytes)
    }

    /// SHA-256 of the token bytes: what a proof binds to.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }
}

impl fmt::Debug for Token {
    // A token is only useful with its key, but it still stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({} bytes)", self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::key::{Algorithm, KeySet, SigningKey, decoded_keys};
    use crate::verify::token::verify_token;

    const ISSUER: &str = "https://issuer.example";
    const NOW: u64 = 1_700_000_000;

    fn claims_for(client: &PublicKey) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "ayoung@stoughton".into(),
            aud: "https://nova.example".into(),
            exp: NOW + 300,
            nbf: None,
            iat: NOW,
            cti: [9; CTI_LEN],
            cnf: client.clone(),
            kind: TokenKind::Service,
            domain: None,
            project: None,
            roles: Vec::new(),
            trust_id: None,
            actor_chain: Vec::new(),
            origin_issuer: None,
            instance: None,
        }
    }

    /// The 32 bytes of an Ed25519 key, as a token's `cnf` carries them.
    fn encoded_x(key: &PublicKey) -> [u8; 32] {
        let cose = key.to_cose_key(None);
        cose[cose.len() - 32..].try_into().unwrap()
    }

    #[test]
    fn cnf_is_decoded_only_after_the_signature_holds() {
        let issuer = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let set = KeySet::new().with(b"k1".to_vec(), issuer.public_key().clone()).unwrap();
        let issuers = vec![(ISSUER.to_owned(), Arc::new(set))];
        let policy = TokenPolicy::new("https://nova.example");
        // Generated keys never pass through the cache; decoding does.
        let client = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let x = encoded_x(client.public_key());
        let payload = issue::encode_claims(&claims_for(client.public_key()));

        // Signed by a key the verifier does not trust, under a kid it knows.
        let forger = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let forged = crate::cose::sign1(&forger, Some(b"k1"), payload.clone(), &[]);
        UnverifiedToken::from_slice(&forged).unwrap();
        let refused = verify_token(&forged, &policy, &issuers, NOW).unwrap_err();
        assert_eq!(refused.code(), crate::Code::CoseBadSignature);
        assert!(
            !decoded_keys::contains(&x),
            "a forged token put its cnf key in the cache"
        );

        // The same claims signed by the issuer: the key is decoded and cached.
        let genuine = crate::cose::sign1(&issuer, Some(b"k1"), payload, &[]);
        let verified = verify_token(&genuine, &policy, &issuers, NOW).unwrap();
        assert_eq!(verified.cnf(), client.public_key());
        assert!(decoded_keys::contains(&x));
    }
}
