//! The verifier a service runs: token + proof → [`VerifiedRequest`].
//!
//! A [`Verifier`] is built with its two required parts (its own audience and
//! at least one trusted issuer) and options whose defaults are documented on
//! the builder. It performs every step of spec/verification.md; the result
//! type has no public constructor and always carries its proof, so a handler
//! that takes a [`VerifiedRequest`] cannot run without the checks. A request
//! the HTTP layer admits without a proof (bearer rollout mode) is a
//! [`BearerRequest`], another type, which only routes that opt in (with
//! [`ProvenOrBearer`]) see.
//!
//! The replay store is a type parameter: `Verifier<R>` holds an `Arc<R>`.
//! The synchronous [`Verifier::verify_request`] exists only when `R` is a
//! [`ReplayStore`] (answers at once, as [`MemoryReplayStore`], the default);
//! the `async` methods exist for every [`AsyncReplayStore`] (Redis too). So
//! a network store on the synchronous path is a compile error, and the
//! in-memory store is called directly, without a box or a vtable.
//!
//! The steps live in modules named after the groups of spec/verification.md:
//!
//! | steps | module |
//! |---|---|
//! | H1, H2, A1 (HTTP binding, policy) | `crate::http`, `crate::policy` |
//! | T1–T12 (token) | `token` |
//! | P1–P12 (proof) | `proof` |
//! | P13 (replay) | `replay` |
//! | K1–K3 (keys, key sets) | `crate::key`, `crate::keyset` |
//! | D1–D5 (delegated tokens, after T12) | `delegation` |
//! | S1–S8 (routing slips, after D5) | `crate::delegation::slip`, `slip` |
//! | F1–F8 (token exchange, at the issuer) | `crate::issuer` (`federation`), `crate::federation` |
//!
//! A service verifies a federated token (one an issuer exchanged for a
//! peer's user, spec/federation.md) with T and P like any other: its issuer
//! is the exchanging one, and the origin issuer is a claim the policy may
//! match (`origins`). Several trusted issuers, each with its own key source,
//! or an [`IssuerDirectory`] that changes at run time, are never merged.
//!
//! Cost per request: a token seen before comes from the verified-token cache
//! (one SHA-256 and a map lookup), so a warm request pays for parsing the
//! proof, one signature check and the replay record. The proof's signature is
//! checked on every request, always.

mod clock;
mod delegation;
mod nonce;
pub(crate) mod proof;
mod replay;
#[cfg(feature = "redis")]
mod replay_redis;
pub(crate) mod slip;
pub(crate) mod token;
mod token_cache;

pub use clock::{Clock, ManualClock, SystemClock};
pub use nonce::{DEFAULT_NONCE_EPOCH, DEFAULT_NONCE_SKEW, NONCE_LEN, NonceService};
pub use replay::{
    AsyncReplayStore, BUCKET_SECONDS, DEFAULT_REPLAY_BUDGET_PER_CORE, MemoryReplayStore, ReplayEntry, ReplayFuture,
    ReplayKey, ReplayStore, ReplayUsage, default_replay_budget,
};
#[cfg(feature = "redis")]
pub use replay_redis::{RedisReplayOptions, RedisReplayStore};
pub use token_cache::DEFAULT_TOKEN_CACHE_CAPACITY;

pub use crate::keyset::{KeySource, StaticKeys};

use std::sync::Arc;

use token_cache::TokenCache;

use crate::delegation::slip::VerifiedSlip;
use crate::error::{Code, Result, err};
use crate::key::{KeySet, PublicKey, Thumbprint};
use crate::proof::{JTI_LEN, NonceValidator, ProofPolicy, RequestInfo};
use crate::token::{MAX_SERVICE_LIFETIME, TokenKind, TokenPolicy, UnverifiedToken, VerifiedToken};
use token::{DEFAULT_LEEWAY, IssuerKeys, verify_token_hashed};

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

    /// Trusts `id` with a shared key source.
    pub fn from_arc(id: impl Into<String>, source: Arc<dyn KeySource>) -> Self {
        TrustedIssuer { id: id.into(), source }
    }

    /// Trusts `id` with a fixed key set.
    pub fn with_keys(id: impl Into<String>, keys: KeySet) -> Self {
        Self::new(id, StaticKeys::new(keys))
    }

    /// The issuer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The issuer's current key set, from its source.
    pub fn key_set(&self) -> Arc<KeySet> {
        self.source.key_set()
    }
}

impl std::fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedIssuer({:?})", self.id)
    }
}

/// A list of trusted issuers that can be replaced while verifiers use it:
/// for a verifier whose issuers are configuration that changes at run time
/// (an issuer's federation peers, spec/federation.md §3). Each verification
/// reads one snapshot; keys of different issuers are still never merged.
#[derive(Clone)]
pub struct IssuerDirectory(Arc<std::sync::RwLock<Arc<[TrustedIssuer]>>>);

impl IssuerDirectory {
    /// A directory of `issuers`; refuses an issuer id given twice.
    pub fn new(issuers: Vec<TrustedIssuer>) -> Result<Self> {
        check_distinct(&issuers)?;
        Ok(IssuerDirectory(Arc::new(std::sync::RwLock::new(issuers.into()))))
    }

    /// Replaces the whole list; verifications already running finish on the
    /// old one. Refuses an issuer id given twice (and keeps the old list).
    pub fn replace(&self, issuers: Vec<TrustedIssuer>) -> Result<()> {
        check_distinct(&issuers)?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = issuers.into();
        Ok(())
    }

    /// The current list.
    pub fn snapshot(&self) -> Arc<[TrustedIssuer]> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The trusted issuer `id`, if it is in the current list.
    pub fn get(&self, id: &str) -> Option<TrustedIssuer> {
        self.snapshot().iter().find(|t| t.id == id).cloned()
    }
}

impl std::fmt::Debug for IssuerDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot().iter()).finish()
    }
}

/// The issuers a verifier trusts: fixed when it was built (read at no
/// cost on every request), or a directory that may change (one snapshot per
/// verification).
enum TrustedIssuers {
    Fixed(Vec<TrustedIssuer>),
    Live(IssuerDirectory),
}

impl TrustedIssuers {
    /// `f` on the current list.
    fn with<T>(&self, f: impl FnOnce(&[TrustedIssuer]) -> T) -> T {
        match self {
            TrustedIssuers::Fixed(list) => f(list),
            TrustedIssuers::Live(directory) => f(&directory.snapshot()),
        }
    }

    /// The trusted issuer `id`.
    fn get(&self, id: &str) -> Option<TrustedIssuer> {
        self.with(|list| list.iter().find(|t| t.id == id).cloned())
    }
}

impl std::fmt::Debug for TrustedIssuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with(|list| f.debug_list().entries(list).finish())
    }
}

fn check_distinct(issuers: &[TrustedIssuer]) -> Result<()> {
    for (i, issuer) in issuers.iter().enumerate() {
        if issuers[..i].iter().any(|other| other.id == issuer.id) {
            return err(
                Code::ConfigInvalid,
                format!("issuer {:?} is configured twice", issuer.id),
            );
        }
    }
    Ok(())
}

struct Issuers<'a>(&'a [TrustedIssuer]);

impl IssuerKeys for Issuers<'_> {
    fn key_set(&self, issuer: &str) -> Option<Arc<KeySet>> {
        self.0.iter().find(|t| t.id == issuer).map(|t| t.source.key_set())
    }
}

/// Builds a [`Verifier`]; its type parameter is the replay store's type
/// (see [`VerifierBuilder::replay_store`]).
#[must_use]
pub struct VerifierBuilder<R: ?Sized = MemoryReplayStore> {
    audience: String,
    issuers: Vec<TrustedIssuer>,
    directory: Option<IssuerDirectory>,
    leeway: u64,
    max_token_lifetime: u64,
    proof_max_age: u64,
    replay: StoreChoice<R>,
    clock: Arc<dyn Clock>,
    nonce: Option<Arc<dyn NonceValidator>>,
    nonce_service: Option<Arc<NonceService>>,
    token_cache: usize,
    kind: TokenKind,
    instance: Option<String>,
}

/// The store given to the builder, or how to make the default one: it is
/// fenced at the verifier's clock, which is known only at `build`.
enum StoreChoice<R: ?Sized> {
    Given(Arc<R>),
    Default(fn(u64) -> Arc<R>),
}

/// Ceiling of the clock leeway: a verifier refuses to be built with more.
pub const MAX_LEEWAY: u64 = 60;
/// Ceiling of the proof max age (the longest a service token lives).
pub const MAX_PROOF_AGE: u64 = 300;

impl<R: ?Sized> VerifierBuilder<R> {
    /// Trusts one more issuer.
    pub fn issuer(mut self, issuer: TrustedIssuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// Clock leeway for token times and proofs from the future. Default 30 s,
    /// at most [`MAX_LEEWAY`] (larger is refused by [`Self::build`]).
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

    /// How old a proof may be. Default 60 s, at most [`MAX_PROOF_AGE`]
    /// (larger is refused by [`Self::build`]).
    pub fn proof_max_age(mut self, seconds: u64) -> Self {
        self.proof_max_age = seconds;
        self
    }

    /// The replay store, which becomes the verifier's type parameter: a
    /// [`ReplayStore`] (such as a shared [`MemoryReplayStore`], or an
    /// `Arc<dyn ReplayStore>`) gives a verifier with both the synchronous and
    /// the `async` methods; an [`AsyncReplayStore`] only (Redis, or an
    /// `Arc<dyn AsyncReplayStore>` chosen at run time) one with the `async`
    /// methods alone. Default: a [`MemoryReplayStore`] with the
    /// [`default_replay_budget`], fenced at the verifier's clock when the
    /// verifier is built: proofs made before are refused.
    pub fn replay_store<S: AsyncReplayStore + ?Sized>(self, store: Arc<S>) -> VerifierBuilder<S> {
        VerifierBuilder {
            audience: self.audience,
            issuers: self.issuers,
            directory: self.directory,
            leeway: self.leeway,
            max_token_lifetime: self.max_token_lifetime,
            proof_max_age: self.proof_max_age,
            replay: StoreChoice::Given(store),
            clock: self.clock,
            nonce: self.nonce,
            nonce_service: self.nonce_service,
            token_cache: self.token_cache,
            kind: self.kind,
            instance: self.instance,
        }
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

    /// Requires nonces issued by `service`; the HTTP layer then also sends
    /// them (`KB-Nonce`) in challenges and with every response.
    pub fn nonce_service(mut self, service: Arc<NonceService>) -> Self {
        self.nonce = Some(service.clone());
        self.nonce_service = Some(service);
        self
    }

    /// Accepts session tokens instead of service tokens: for the issuer,
    /// whose own audience session tokens name.
    pub fn session_tokens(mut self) -> Self {
        self.kind = TokenKind::Session;
        self
    }

    /// This service's instance id (a VM, a host id): 1 to 255 bytes of
    /// visible ASCII, no spaces. A token bound to an instance (its
    /// `instance` claim) is accepted only when it names this one; without
    /// an instance id, every bound token is refused (`cwt.instance`, step
    /// T9.2). Tokens without the claim are accepted either way. Default: none.
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// Capacity of the verified-token cache; 0 turns it off. Default
    /// [`DEFAULT_TOKEN_CACHE_CAPACITY`].
    pub fn token_cache_capacity(mut self, entries: usize) -> Self {
        self.token_cache = entries;
        self
    }

    /// Builds the verifier; refuses duplicate issuer ids, an empty audience,
    /// an instance id that no token could carry, and a leeway or proof age
    /// beyond their ceilings.
    pub fn build(self) -> Result<Verifier<R>> {
        if self.audience.is_empty() {
            return err(Code::ConfigInvalid, "the verifier's audience must not be empty");
        }
        if let Some(problem) = self.instance.as_deref().and_then(crate::token::instance_id_problem) {
            return err(Code::ConfigInvalid, format!("the verifier's instance id: {problem}"));
        }
        if self.leeway > MAX_LEEWAY {
            return err(
                Code::ConfigInvalid,
                format!(
                    "a leeway of {}s is over the ceiling of {MAX_LEEWAY}s: fix the clocks instead",
                    self.leeway
                ),
            );
        }
        if self.proof_max_age == 0 || self.proof_max_age > MAX_PROOF_AGE {
            return err(
                Code::ConfigInvalid,
                format!(
                    "the proof max age must be 1 to {MAX_PROOF_AGE}s, not {}s",
                    self.proof_max_age
                ),
            );
        }
        let issuers = match self.directory {
            Some(directory) => TrustedIssuers::Live(directory),
            None => {
                check_distinct(&self.issuers)?;
                TrustedIssuers::Fixed(self.issuers)
            }
        };
        let mut policy = TokenPolicy::new(self.audience);
        policy.leeway = self.leeway;
        policy.max_service_lifetime = self.max_token_lifetime;
        policy.kind = self.kind;
        policy.instance = self.instance;
        let replay = match self.replay {
            StoreChoice::Given(store) => store,
            StoreChoice::Default(make) => make(self.clock.now()),
        };
        Ok(Verifier {
            core: Core {
                policy,
                issuers,
                proof_max_age: self.proof_max_age,
                clock: self.clock,
                nonce: self.nonce,
                nonce_service: self.nonce_service,
                cache: TokenCache::new(self.token_cache),
            },
            replay,
        })
    }
}

/// Verifies requests for one service (one audience), recording proofs in a
/// replay store of type `R` (default [`MemoryReplayStore`]).
///
/// With a [`ReplayStore`] (answers at once) it has the synchronous
/// [`Verifier::verify_request`]; with any [`AsyncReplayStore`] it has
/// [`Verifier::verify_request_async`]. A Redis-backed verifier has no
/// synchronous method at all, so it cannot be called where nothing awaits
/// the store.
pub struct Verifier<R: ?Sized = MemoryReplayStore> {
    core: Core,
    replay: Arc<R>,
}

/// Everything of a verifier but its replay store: the steps that need no
/// store, shared by every store type (and by the HTTP layer, which holds
/// the verifier without its type parameter).
pub(crate) struct Core {
    policy: TokenPolicy,
    issuers: TrustedIssuers,
    proof_max_age: u64,
    clock: Arc<dyn Clock>,
    nonce: Option<Arc<dyn NonceValidator>>,
    nonce_service: Option<Arc<NonceService>>,
    cache: TokenCache,
}

impl<R: ?Sized> std::fmt::Debug for Verifier<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = &self.core;
        f.debug_struct("Verifier")
            .field("audience", &core.policy.audience())
            .field("instance", &core.policy.instance)
            .field("issuers", &core.issuers)
            .field("leeway", &core.policy.leeway)
            .field("proof_max_age", &core.proof_max_age)
            .field("nonce_required", &core.nonce.is_some())
            .finish_non_exhaustive()
    }
}

/// The accessors of a request with a verified token, from its `token()`.
macro_rules! token_accessors {
    () => {
        /// `sub` of the token: for a delegated request, the trustor, on
        /// whose behalf [`Self::current_actor`] acts.
        pub fn subject(&self) -> &str {
            self.token().subject()
        }
        /// True when the token was minted from a trust (spec/delegation.md
        /// §4.1): [`Self::subject`] is the trustor, [`Self::current_actor`]
        /// the trustee who holds the key, and [`Self::roles`] the delegated
        /// roles. Steps D1–D5 checked the chain's structure.
        pub fn is_delegated(&self) -> bool {
            self.token().is_delegated()
        }
        /// The trust the token was minted from, for a delegated request.
        pub fn trust_id(&self) -> Option<&str> {
            self.token().trust_id()
        }
        /// Every trustee of the trust's chain, current actor first; empty
        /// for a request that is not delegated. Only the first entry (with
        /// the subject) is meant for access decisions: the policy matches
        /// `actors` against it alone, and inner actors are history, for
        /// logs and audit (catalog DL-10).
        pub fn actor_chain(&self) -> &[crate::token::Actor] {
            self.token().actor_chain()
        }
        /// The current actor (the first of [`Self::actor_chain`]), `name@domain`,
        /// for a delegated request: the one who acts, for the subject.
        pub fn current_actor(&self) -> Option<&str> {
            self.token().current_actor()
        }
        /// Issuer of the token.
        pub fn issuer(&self) -> &str {
            self.token().issuer()
        }
        /// Domain of the scope.
        pub fn domain(&self) -> Option<&str> {
            self.token().domain()
        }
        /// Project of the scope.
        pub fn project(&self) -> Option<&str> {
            self.token().project()
        }
        /// Roles on the project.
        pub fn roles(&self) -> &[String] {
            self.token().roles()
        }
        /// The audience (this service).
        pub fn audience(&self) -> &str {
            self.token().audience()
        }
        /// The instance of this service the token is restricted to (step
        /// T9.2 checked it is this verifier's); `None` for an unbound token.
        pub fn instance(&self) -> Option<&str> {
            self.token().instance()
        }
        /// Thumbprint of the client key the token is bound to.
        pub fn key_thumbprint(&self) -> &Thumbprint {
            self.token().key_thumbprint()
        }
    };
}

/// The routing slip of a request the HTTP layer admitted, from its `slip` field.
macro_rules! slip_accessors {
    () => {
        /// The routing slip the request carried (`KB-Slip`), verified and
        /// bound to this request (steps S1–S8), if it carried one.
        pub fn slip(&self) -> Option<&VerifiedSlip> {
            self.slip.as_deref()
        }
        /// Attaches the slip the HTTP layer verified for this request.
        #[cfg(feature = "http")]
        pub(crate) fn with_slip(mut self, slip: Option<Arc<VerifiedSlip>>) -> Self {
            self.slip = slip;
            self
        }
    };
}

/// A request whose token and proof passed every check: the client proved
/// possession of the token's key for this very request. Made only by a
/// full verification ([`Verifier::verify_request`],
/// [`Verifier::verify_request_async`], the HTTP layer with a proof).
#[derive(Clone, Debug)]
pub struct VerifiedRequest {
    token: Arc<VerifiedToken>,
    jti: [u8; JTI_LEN],
    iat: u64,
    slip: Option<Arc<VerifiedSlip>>,
}

impl VerifiedRequest {
    /// The verified token.
    pub fn token(&self) -> &VerifiedToken {
        &self.token
    }
    token_accessors!();
    /// The proof's jti.
    pub fn jti(&self) -> &[u8; JTI_LEN] {
        &self.jti
    }
    /// When the proof was made.
    pub fn proof_issued_at(&self) -> u64 {
        self.iat
    }
    slip_accessors!();
}

/// A request admitted on its token alone, without a proof, by the HTTP
/// layer in bearer rollout mode (`http::ProofMode::BearerAllowed`): the
/// token passed T1–T12 and D1–D5, but nothing shows that the sender holds its key.
/// The `VerifiedRequest` extractor refuses such a request; a route that
/// accepts it extracts [`ProvenOrBearer`], and authorizes it with
/// `Policy::authorize_bearer`. No public constructor.
///
/// [`Policy::authorize`](crate::policy::Policy::authorize) takes only a
/// [`VerifiedRequest`]:
///
/// ```compile_fail,E0308
/// use keybound::policy::{Action, MemoryRecords, Policy};
/// fn check(policy: &Policy, request: &keybound::verify::BearerRequest) -> keybound::Result<()> {
///     policy.authorize(request, Action::Operation("compute:resize"), None, &MemoryRecords::new(), 0)
/// }
/// ```
///
/// ```
/// use keybound::policy::{Action, MemoryRecords, Policy};
/// fn check(policy: &Policy, request: &keybound::verify::BearerRequest) -> keybound::Result<()> {
///     policy.authorize_bearer(request, Action::Operation("compute:resize"), None, &MemoryRecords::new(), 0)
/// }
/// ```
#[derive(Clone, Debug)]
pub struct BearerRequest {
    token: Arc<VerifiedToken>,
    slip: Option<Arc<VerifiedSlip>>,
}

impl BearerRequest {
    /// The verified token.
    pub fn token(&self) -> &VerifiedToken {
        &self.token
    }
    token_accessors!();
    slip_accessors!();
}

/// What a route that admits bearer requests extracts: a fully verified
/// request, or (in bearer rollout mode only) one admitted on its token
/// alone. The accessors are those of the token either way.
#[derive(Clone, Debug)]
pub enum ProvenOrBearer {
    /// Token and proof verified.
    Proven(VerifiedRequest),
    /// Token verified, no proof (bearer rollout mode).
    Bearer(BearerRequest),
}

impl ProvenOrBearer {
    /// The verified token.
    pub fn token(&self) -> &VerifiedToken {
        match self {
            ProvenOrBearer::Proven(request) => request.token(),
            ProvenOrBearer::Bearer(request) => request.token(),
        }
    }
    token_accessors!();
    /// The routing slip the request carried, verified and bound to it.
    pub fn slip(&self) -> Option<&VerifiedSlip> {
        match self {
            ProvenOrBearer::Proven(request) => request.slip(),
            ProvenOrBearer::Bearer(request) => request.slip(),
        }
    }
}

/// A token verified (T1–T12, D1–D5) by the HTTP layer before it reads the body,
/// awaiting its proof: not a verified request of any kind yet.
#[cfg(feature = "http")]
pub(crate) struct TokenChecked(Arc<VerifiedToken>);

#[cfg(feature = "http")]
impl TokenChecked {
    /// The checked token.
    pub(crate) fn token(&self) -> &VerifiedToken {
        &self.0
    }
}

/// Everything checked but the replay record, which comes last so that a
/// proof is never consumed by a request that fails another check.
struct Unconsumed {
    token: Arc<VerifiedToken>,
    checked: proof::CheckedProof,
    entry: ReplayEntry,
}

impl Unconsumed {
    fn finish(self) -> VerifiedRequest {
        VerifiedRequest {
            token: self.token,
            jti: self.checked.jti,
            iat: self.checked.iat,
            slip: None,
        }
    }
}

impl Verifier {
    /// Starts a verifier for `audience` trusting `issuer`; add more issuers
    /// and options on the builder.
    pub fn builder(audience: impl Into<String>, issuer: TrustedIssuer) -> VerifierBuilder {
        Self::builder_of(audience.into(), vec![issuer], None)
    }

    /// Starts a verifier for `audience` trusting the issuers of `directory`,
    /// which may change while the verifier runs.
    pub fn builder_with_directory(audience: impl Into<String>, directory: IssuerDirectory) -> VerifierBuilder {
        Self::builder_of(audience.into(), Vec::new(), Some(directory))
    }

    fn builder_of(
        audience: String,
        issuers: Vec<TrustedIssuer>,
        directory: Option<IssuerDirectory>,
    ) -> VerifierBuilder {
        VerifierBuilder {
            audience,
            issuers,
            directory,
            leeway: DEFAULT_LEEWAY,
            max_token_lifetime: MAX_SERVICE_LIFETIME,
            proof_max_age: crate::proof::DEFAULT_MAX_AGE,
            replay: StoreChoice::Default(|fence| Arc::new(MemoryReplayStore::default().fenced_at(fence))),
            clock: Arc::new(SystemClock),
            nonce: None,
            nonce_service: None,
            token_cache: DEFAULT_TOKEN_CACHE_CAPACITY,
            kind: TokenKind::Service,
            instance: None,
        }
    }
}

impl<R: ?Sized> Verifier<R> {
    /// This verifier's audience.
    pub fn audience(&self) -> &str {
        self.core.policy.audience()
    }

    /// This verifier's instance id, if it has one.
    pub fn instance(&self) -> Option<&str> {
        self.core.policy.instance.as_deref()
    }

    /// The configured clock's time.
    pub fn now(&self) -> u64 {
        self.core.clock.now()
    }

    /// The nonce service, when nonces are issued by this verifier.
    pub fn nonce_service(&self) -> Option<&Arc<NonceService>> {
        self.core.nonce_service.as_ref()
    }

    /// True when proofs must carry a server nonce.
    pub fn requires_nonce(&self) -> bool {
        self.core.nonce.is_some()
    }

    /// Number of tokens in the verified-token cache.
    pub fn cached_tokens(&self) -> usize {
        self.core.cache.len()
    }

    /// Verifies a routing slip (spec/delegation.md §10.4, S1–S6) with this
    /// verifier's trusted issuers, key sources, clock and leeway: for a
    /// slip taken from a queued message, or one a handler got otherwise.
    /// Bind it to a request with [`VerifiedSlip::check_for`] (S7–S8); the
    /// HTTP layer does both for `KB-Slip`. An unknown kid starts a
    /// (rate-limited) key refetch in the background and fails this call.
    pub fn verify_slip(&self, slip: &[u8]) -> Result<VerifiedSlip> {
        let result = self.core.slip(slip);
        if let Err(e) = &result
            && e.code() == Code::SlipKeyUnknown
            && let Some(source) = self.core.slip_source(slip)
        {
            drop(source.refresh_for_unknown_kid());
        }
        result
    }

    /// As [`Verifier::verify_slip`], waiting for one rate-limited key
    /// refetch on an unknown kid and trying again.
    pub async fn verify_slip_async(&self, slip: &[u8]) -> Result<VerifiedSlip> {
        self.core.slip_async(slip).await
    }

    /// Steps T1–T12 and D1–D5 alone, without the cache; public only as
    /// [`crate::danger::verify_token_without_proof`].
    pub(crate) fn verify_token_only(&self, token: &[u8]) -> Result<VerifiedToken> {
        let core = &self.core;
        core.issuers
            .with(|list| token::verify_token(token, &core.policy, &Issuers(list), core.clock.now()))
    }
}

impl<R: ReplayStore + ?Sized> Verifier<R> {
    /// Verifies `token` and `proof` for `request`: every step, including the
    /// replay record. Only for stores that answer at once ([`ReplayStore`]);
    /// with any other, use [`Verifier::verify_request_async`] (this method
    /// does not exist for them). An unknown kid starts a (rate-limited) key
    /// refetch in the background and fails this request.
    pub fn verify_request(&self, token: &[u8], proof: &[u8], request: &RequestInfo<'_>) -> Result<VerifiedRequest> {
        let pending = match self.core.check(token, proof, request) {
            Err(e) if e.code() == Code::CoseKeyUnknown => {
                if let Some(source) = self.core.source_for(token) {
                    // Starting the refetch is enough; nobody waits for it here.
                    drop(source.refresh_for_unknown_kid());
                }
                return Err(e);
            }
            other => other?,
        };
        self.replay.check_and_record(pending.entry)?;
        Ok(pending.finish())
    }
}

impl<R: AsyncReplayStore + ?Sized> Verifier<R> {
    /// As [`Verifier::verify_request`], for every store, awaiting stores
    /// that need I/O. An unknown kid waits for one rate-limited key refetch
    /// and tries again.
    pub async fn verify_request_async(
        &self,
        token: &[u8],
        proof: &[u8],
        request: &RequestInfo<'_>,
    ) -> Result<VerifiedRequest> {
        let pending = match self.core.check(token, proof, request) {
            Err(e) if e.code() == Code::CoseKeyUnknown => {
                let source = self.core.source_for(token);
                let Some(refresh) = source.as_ref().and_then(|s| s.refresh_for_unknown_kid()) else {
                    return Err(e);
                };
                refresh.await;
                self.core.check(token, proof, request)?
            }
            other => other?,
        };
        self.replay.check_and_record_async(pending.entry).await?;
        Ok(pending.finish())
    }

    /// Verifies a proof made with `key` for a request that carries no token
    /// (proof of possession when a key is bound, as at login), including the
    /// replay record. The proof binds SHA-256 of the empty string as its
    /// token hash.
    pub async fn verify_possession_async(
        &self,
        key: &PublicKey,
        proof: &[u8],
        request: &RequestInfo<'_>,
    ) -> Result<()> {
        let now = self.core.clock.now();
        let (_, entry) = self.core.check_proof(key, &crate::sha256(b""), proof, request, now)?;
        self.replay.check_and_record_async(entry).await
    }
}

/// A verifier without its store type, as the HTTP layer holds it.
#[cfg(feature = "http")]
pub(crate) trait DynVerifier: Send + Sync {
    /// The steps that need no store.
    fn core(&self) -> &Core;
    /// P13.
    fn record(&self, entry: ReplayEntry) -> ReplayFuture<'_>;
}

#[cfg(feature = "http")]
impl<R: AsyncReplayStore + ?Sized> DynVerifier for Verifier<R> {
    fn core(&self) -> &Core {
        &self.core
    }

    fn record(&self, entry: ReplayEntry) -> ReplayFuture<'_> {
        self.replay.check_and_record_async(entry)
    }
}

#[cfg(feature = "http")]
impl dyn DynVerifier {
    /// P1–P13 for a token the layer checked earlier in the same request:
    /// its expiry is checked again, the rest of T is not repeated.
    pub(crate) async fn verify_proof_async(
        &self,
        token: TokenChecked,
        proof: &[u8],
        request: &RequestInfo<'_>,
    ) -> Result<VerifiedRequest> {
        let core = self.core();
        core.recheck_expiry(&token.0)?;
        let now = core.clock.now();
        let token = token.0;
        let (checked, entry) = core.check_proof(token.cnf(), token.token_hash(), proof, request, now)?;
        self.record(entry).await?;
        Ok(VerifiedRequest {
            token,
            jti: checked.jti,
            iat: checked.iat,
            slip: None,
        })
    }
}

impl Core {
    /// The verified token from the cache, or verified now and cached.
    fn token(&self, token: &[u8], now: u64) -> Result<Arc<VerifiedToken>> {
        self.issuers.with(|list| self.token_from(Issuers(list), token, now))
    }

    fn token_from(&self, issuers: Issuers<'_>, token: &[u8], now: u64) -> Result<Arc<VerifiedToken>> {
        let hash = crate::sha256(token);
        if let Some(cached) = self.cache.get(&hash, now, self.policy.leeway) {
            // The signing key must still be in its issuer's set: removing a
            // key from the set takes effect for cached tokens too.
            let still_trusted = issuers
                .key_set(cached.issuer())
                .and_then(|set| {
                    set.get(cached.kid())
                        .map(|k| k.thumbprint() == cached.issuer_key_thumbprint())
                })
                .unwrap_or(false);
            if still_trusted {
                return Ok(cached);
            }
            self.cache.remove(&hash);
        }
        let verified = Arc::new(verify_token_hashed(token, hash, &self.policy, &issuers, now)?);
        self.cache.insert(hash, verified.clone());
        Ok(verified)
    }

    /// Steps P1–P12 for a proof by `key`; returns it with its replay record.
    fn check_proof(
        &self,
        key: &PublicKey,
        token_hash: &[u8; 32],
        proof_bytes: &[u8],
        request: &RequestInfo<'_>,
        now: u64,
    ) -> Result<(proof::CheckedProof, ReplayEntry)> {
        let policy = ProofPolicy {
            max_age: self.proof_max_age,
            leeway: self.policy.leeway,
            nonce: self.nonce.as_deref(),
        };
        let checked = proof::check_proof(proof_bytes, key, token_hash, request, &policy, now)?;
        let replay_key = ReplayKey::new(self.policy.audience(), key.thumbprint(), &checked.jti);
        // Fresh until iat + max_age inclusive on this clock. Keep the entry a
        // leeway longer: a replica sharing the store whose clock is behind
        // ours (by up to the leeway) still finds it while it would accept.
        let expires_at = checked
            .iat
            .saturating_add(self.proof_max_age)
            .saturating_add(self.policy.leeway)
            .saturating_add(1)
            .max(now + 1);
        let entry = ReplayEntry {
            key: replay_key,
            issued_at: checked.iat,
            expires_at,
            now,
        };
        Ok((checked, entry))
    }

    fn check(&self, token: &[u8], proof_bytes: &[u8], request: &RequestInfo<'_>) -> Result<Unconsumed> {
        let now = self.clock.now();
        let token = self.token(token, now)?;
        let (checked, entry) = self.check_proof(token.cnf(), token.token_hash(), proof_bytes, request, now)?;
        Ok(Unconsumed { token, checked, entry })
    }

    /// S1–S6 for a slip, at the current time.
    fn slip(&self, slip: &[u8]) -> Result<VerifiedSlip> {
        self.issuers
            .with(|list| slip::verify_slip(slip, &Issuers(list), self.policy.leeway, self.clock.now()))
    }

    /// [`Core::slip`], waiting for one key refetch on an unknown kid.
    pub(crate) async fn slip_async(&self, slip: &[u8]) -> Result<VerifiedSlip> {
        match self.slip(slip) {
            Err(e) if e.code() == Code::SlipKeyUnknown => {
                let source = self.slip_source(slip);
                let Some(refresh) = source.as_ref().and_then(|s| s.refresh_for_unknown_kid()) else {
                    return Err(e);
                };
                refresh.await;
                self.slip(slip)
            }
            other => other,
        }
    }

    /// The key source of the issuer a slip claims, for an unknown-kid refetch.
    fn slip_source(&self, slip: &[u8]) -> Option<Arc<dyn KeySource>> {
        let slip = crate::delegation::slip::UnverifiedSlip::parse(slip).ok()?;
        self.issuers.get(slip.issuer()).map(|t| t.source)
    }

    /// The key source of the issuer a token claims, for an unknown-kid refetch.
    fn source_for(&self, token: &[u8]) -> Option<Arc<dyn KeySource>> {
        let issuer = UnverifiedToken::from_slice(token).ok()?.issuer().to_owned();
        self.issuers.get(&issuer).map(|t| t.source)
    }
}

/// The steps of the HTTP layer.
#[cfg(feature = "http")]
impl Core {
    /// The configured clock's time.
    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The nonce service, when nonces are issued by this verifier.
    pub(crate) fn nonce_service(&self) -> Option<&Arc<NonceService>> {
        self.nonce_service.as_ref()
    }

    /// For a token verified earlier in the same request (the HTTP layer
    /// checks the token before it reads the body): only its expiry is
    /// checked again, at the current time, so that a slow upload cannot
    /// outlive the token. The other T steps cannot change with time.
    fn recheck_expiry(&self, token: &VerifiedToken) -> Result<()> {
        let (now, exp, leeway) = (self.clock.now(), token.expires_at(), self.policy.leeway);
        if exp.saturating_add(leeway) < now {
            return err(
                Code::CwtExpired,
                format!(
                    "the token expired at {exp} and it is now {now} ({}s ago, leeway {leeway}s)",
                    now - exp
                ),
            );
        }
        Ok(())
    }

    /// T1–T12 and D1–D5 for the token of a request, before its body is read and its
    /// proof checked ([`DynVerifier::verify_proof_async`]) or, in bearer
    /// rollout mode, its absence accepted ([`Core::admit_bearer`]). An
    /// unknown kid waits for one rate-limited key refetch.
    pub(crate) async fn verify_token_async(&self, token: &[u8]) -> Result<TokenChecked> {
        let now = self.clock.now();
        let token = match self.token(token, now) {
            Err(e) if e.code() == Code::CoseKeyUnknown => {
                let source = self.source_for(token);
                let Some(refresh) = source.as_ref().and_then(|s| s.refresh_for_unknown_kid()) else {
                    return Err(e);
                };
                refresh.await;
                self.token(token, now)?
            }
            other => other?,
        };
        Ok(TokenChecked(token))
    }

    /// Admits a request without a proof on its checked token, for the
    /// bearer rollout mode only (see `http::ProofMode`): the token must
    /// still be valid now, not only before a slow upload.
    pub(crate) fn admit_bearer(&self, token: TokenChecked) -> Result<BearerRequest> {
        self.recheck_expiry(&token.0)?;
        Ok(BearerRequest {
            token: token.0,
            slip: None,
        })
    }
}
