//! The verifier a service runs: token + proof → [`VerifiedRequest`].
//!
//! A [`Verifier`] is built with its two required parts (its own audience and
//! at least one trusted issuer) and options whose defaults are documented on
//! the builder. It performs every step of spec/verification.md; the result
//! type has no public constructor, so a handler that takes a
//! [`VerifiedRequest`] cannot run without the checks.

mod clock;
mod replay;

pub use clock::{Clock, ManualClock, SystemClock};
pub use replay::{DEFAULT_REPLAY_CAPACITY, MemoryReplayStore, ReplayKey, ReplayOutcome, ReplayStore};

use std::sync::Arc;

use crate::error::{Code, Result, err};
use crate::key::{KeySet, Thumbprint};
use crate::proof::{self, NonceValidator, ProofPolicy, RequestInfo};
use crate::token::verify::{DEFAULT_LEEWAY, IssuerKeys, verify_token_hashed};
use crate::token::{MAX_SERVICE_LIFETIME, TokenPolicy, VerifiedToken};

/// Where the keys of one issuer come from. Implementations return the
/// current set; refreshing (files, HTTP) happens behind this call.
pub trait KeySource: Send + Sync {
    /// The issuer's current key set.
    fn key_set(&self) -> Arc<KeySet>;
}

impl KeySource for KeySet {
    fn key_set(&self) -> Arc<KeySet> {
        Arc::new(self.clone())
    }
}

/// A fixed key set, configured once.
#[derive(Clone, Debug)]
pub struct StaticKeys(Arc<KeySet>);

impl StaticKeys {
    /// Wraps a key set.
    pub fn new(set: KeySet) -> Self {
        StaticKeys(Arc::new(set))
    }
}

impl KeySource for StaticKeys {
    fn key_set(&self) -> Arc<KeySet> {
        self.0.clone()
    }
}

/// An issuer the verifier trusts, with the source of its keys.
#[derive(Clone)]
pub struct TrustedIssuer {
    id: String,
    source: Arc<dyn KeySource>,
}

impl TrustedIssuer {
    /// Trusts tokens whose `iss` is exactly `id`, checked only with keys from `source`.
    pub fn new(id: impl Into<String>, source: impl KeySource + 'static) -> Self {
        TrustedIssuer {
            id: id.into(),
            source: Arc::new(source),
        }
    }

    /// Trusts `id` with a fixed key set.
    pub fn with_keys(id: impl Into<String>, keys: KeySet) -> Self {
        Self::new(id, StaticKeys::new(keys))
    }

    /// The issuer id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedIssuer({:?})", self.id)
    }
}

struct Issuers<'a>(&'a [TrustedIssuer]);

impl IssuerKeys for Issuers<'_> {
    fn key_set(&self, issuer: &str) -> Option<Arc<KeySet>> {
        self.0.iter().find(|t| t.id == issuer).map(|t| t.source.key_set())
    }
}

/// Builds a [`Verifier`].
#[must_use]
pub struct VerifierBuilder {
    audience: String,
    issuers: Vec<TrustedIssuer>,
    leeway: u64,
    max_token_lifetime: u64,
    proof_max_age: u64,
    replay: Arc<dyn ReplayStore>,
    clock: Arc<dyn Clock>,
    nonce: Option<Arc<dyn NonceValidator>>,
}

impl VerifierBuilder {
    /// Trusts one more issuer.
    pub fn issuer(mut self, issuer: TrustedIssuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// Clock leeway for token times and proofs from the future. Default 30 s.
    pub fn leeway(mut self, seconds: u64) -> Self {
        self.leeway = seconds;
        self
    }

    /// Longest service-token lifetime accepted. Default 300 s, which is also
    /// the ceiling: larger values are clamped.
    pub fn max_token_lifetime(mut self, seconds: u64) -> Self {
        self.max_token_lifetime = seconds.min(MAX_SERVICE_LIFETIME);
        self
    }

    /// How old a proof may be. Default 60 s.
    pub fn proof_max_age(mut self, seconds: u64) -> Self {
        self.proof_max_age = seconds;
        self
    }

    /// The replay store. Default: a [`MemoryReplayStore`] of
    /// [`DEFAULT_REPLAY_CAPACITY`] entries.
    pub fn replay_store(mut self, store: Arc<dyn ReplayStore>) -> Self {
        self.replay = store;
        self
    }

    /// The clock. Default: [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Requires a server nonce in every proof. Default: not required.
    pub fn require_nonce(mut self, validator: Arc<dyn NonceValidator>) -> Self {
        self.nonce = Some(validator);
        self
    }

    /// Builds the verifier; refuses duplicate issuer ids and an empty audience.
    pub fn build(self) -> Result<Verifier> {
        if self.audience.is_empty() {
            return err(Code::IssueInvalid, "the verifier's audience must not be empty");
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            if self.issuers[..i].iter().any(|other| other.id == issuer.id) {
                return err(Code::IssueInvalid, format!("issuer {:?} is configured twice", issuer.id));
            }
        }
        let mut policy = TokenPolicy::new(self.audience);
        policy.leeway = self.leeway;
        policy.max_service_lifetime = self.max_token_lifetime;
        Ok(Verifier {
            policy,
            issuers: self.issuers,
            proof_max_age: self.proof_max_age,
            replay: self.replay,
            clock: self.clock,
            nonce: self.nonce,
        })
    }
}

/// Verifies requests for one service (one audience).
pub struct Verifier {
    policy: TokenPolicy,
    issuers: Vec<TrustedIssuer>,
    proof_max_age: u64,
    replay: Arc<dyn ReplayStore>,
    clock: Arc<dyn Clock>,
    nonce: Option<Arc<dyn NonceValidator>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("audience", &self.policy.audience())
            .field("issuers", &self.issuers)
            .field("leeway", &self.policy.leeway)
            .finish_non_exhaustive()
    }
}

/// A request whose token and proof passed every check.
#[derive(Clone, Debug)]
pub struct VerifiedRequest {
    token: Arc<VerifiedToken>,
    jti: [u8; proof::JTI_LEN],
    proof_iat: u64,
}

impl VerifiedRequest {
    /// The verified token.
    pub fn token(&self) -> &VerifiedToken {
        &self.token
    }
    /// `sub` of the token.
    pub fn subject(&self) -> &str {
        self.token.subject()
    }
    /// Issuer of the token.
    pub fn issuer(&self) -> &str {
        self.token.issuer()
    }
    /// Domain of the scope.
    pub fn domain(&self) -> Option<&str> {
        self.token.domain()
    }
    /// Project of the scope.
    pub fn project(&self) -> Option<&str> {
        self.token.project()
    }
    /// Roles on the project.
    pub fn roles(&self) -> &[String] {
        self.token.roles()
    }
    /// The audience (this service).
    pub fn audience(&self) -> &str {
        self.token.audience()
    }
    /// Thumbprint of the client key that signed the proof.
    pub fn key_thumbprint(&self) -> &Thumbprint {
        self.token.key_thumbprint()
    }
    /// The proof's jti.
    pub fn jti(&self) -> &[u8; proof::JTI_LEN] {
        &self.jti
    }
    /// When the proof was made.
    pub fn proof_issued_at(&self) -> u64 {
        self.proof_iat
    }
}

/// The part of verification that is done and the replay record still to
/// make: separating them keeps a proof from being consumed before every
/// other check passed.
pub(crate) struct Unconsumed {
    token: Arc<VerifiedToken>,
    checked: proof::CheckedProof,
    replay_key: ReplayKey,
    expires_at: u64,
    now: u64,
}

impl Verifier {
    /// Starts a verifier for `audience` trusting `issuer`; add more issuers
    /// and options on the builder.
    pub fn builder(audience: impl Into<String>, issuer: TrustedIssuer) -> VerifierBuilder {
        VerifierBuilder {
            audience: audience.into(),
            issuers: vec![issuer],
            leeway: DEFAULT_LEEWAY,
            max_token_lifetime: MAX_SERVICE_LIFETIME,
            proof_max_age: proof::DEFAULT_MAX_AGE,
            replay: Arc::new(MemoryReplayStore::default()),
            clock: Arc::new(SystemClock),
            nonce: None,
        }
    }

    /// This verifier's audience.
    pub fn audience(&self) -> &str {
        self.policy.audience()
    }

    /// The configured clock's time.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Verifies a token alone (steps T1–T12), without a proof.
    pub fn verify_token(&self, token: &[u8]) -> Result<VerifiedToken> {
        crate::token::verify_token(token, &self.policy, &Issuers(&self.issuers), self.clock.now())
    }

    fn check(&self, token: &[u8], proof_bytes: &[u8], request: &RequestInfo<'_>) -> Result<Unconsumed> {
        let now = self.clock.now();
        let token_hash = crate::sha256(token);
        let token = Arc::new(verify_token_hashed(token, token_hash, &self.policy, &Issuers(&self.issuers), now)?);
        let policy = ProofPolicy {
            max_age: self.proof_max_age,
            leeway: self.policy.leeway,
            nonce: self.nonce.as_deref(),
        };
        let checked = proof::check_proof(proof_bytes, &token, request, &policy, now)?;
        let replay_key = ReplayKey::new(self.policy.audience(), token.key_thumbprint(), &checked.jti);
        // Fresh until iat + max_age inclusive; keep the entry one second more.
        let expires_at = checked.iat.saturating_add(self.proof_max_age).saturating_add(1).max(now + 1);
        Ok(Unconsumed {
            token,
            checked,
            replay_key,
            expires_at,
            now,
        })
    }

    /// Verifies `token` and `proof` for `request`: every step, including the
    /// replay record. Stores that need I/O must use
    /// [`Verifier::verify_request_async`].
    pub fn verify_request(&self, token: &[u8], proof: &[u8], request: &RequestInfo<'_>) -> Result<VerifiedRequest> {
        let pending = self.check(token, proof, request)?;
        match self.replay.check_and_record(pending.replay_key, pending.expires_at, pending.now) {
            ReplayOutcome::Ready(result) => result.map(|()| pending.finish()),
            ReplayOutcome::Pending(_) => err(
                Code::ReplayStoreUnavailable,
                "this replay store answers asynchronously; call verify_request_async",
            ),
        }
    }

    /// As [`Verifier::verify_request`], awaiting stores that need I/O.
    pub async fn verify_request_async(&self, token: &[u8], proof: &[u8], request: &RequestInfo<'_>) -> Result<VerifiedRequest> {
        let pending = self.check(token, proof, request)?;
        let outcome = match self.replay.check_and_record(pending.replay_key, pending.expires_at, pending.now) {
            ReplayOutcome::Ready(result) => result,
            ReplayOutcome::Pending(future) => future.await,
        };
        outcome.map(|()| pending.finish())
    }
}

impl Unconsumed {
    fn finish(self) -> VerifiedRequest {
        VerifiedRequest {
            token: self.token,
            jti: self.checked.jti,
            proof_iat: self.checked.iat,
        }
    }
}
