//! One error type for every rejection, each with a stable code.
//!
//! The code (`cwt.expired`, `proof.htu_mismatch`, …) is the contract: it is
//! documented in `spec/errors.md`, asserted by tests and test vectors, and the
//! only thing an HTTP client is told. The message is for the person reading a
//! log or the CLI; it may contain times, lengths and offsets, never key bytes
//! or whole tokens.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// The fixed `title`s of problem details (spec/errors.md). Related codes
/// share one; the `code` member tells them apart.
mod title {
    pub const MALFORMED: &str = "Malformed token or proof";
    pub const INVALID_TOKEN: &str = "Invalid token";
    pub const INVALID_PROOF: &str = "Invalid request proof";
    pub const NONCE_REQUIRED: &str = "Server nonce required";
    pub const REPLAYED: &str = "Replayed request";
    pub const OLDER_THAN_STORE: &str = "Proof older than the service's replay store";
    pub const UNAVAILABLE: &str = "Request verification unavailable";
    pub const AUTHENTICATION_REQUIRED: &str = "Authentication required";
    pub const INVALID_AUTHORIZATION: &str = "Invalid authorization header";
    pub const TOO_LARGE: &str = "Request too large";
    pub const BODY_UNREADABLE: &str = "Request body unreadable";
    pub const PATH_NOT_NORMALISED: &str = "Request path not normalised";
    pub const DENIED_BY_POLICY: &str = "Forbidden by policy";
    pub const ISSUER_REFUSED: &str = "Request refused by the issuer";
    pub const LOGIN_FAILED: &str = "Login failed";
    pub const LOCKED: &str = "Too many failed logins";
    pub const RATE_LIMITED: &str = "Too many logins";
    pub const KEYS_REPLACED: &str = "The issuer's keys were replaced; log in again";
    pub const TRUST_REFUSED: &str = "Delegation refused by the issuer";
    pub const SLIP_REFUSED: &str = "Routing slip refused";
    pub const EXCHANGE_REFUSED: &str = "Token exchange refused";
    pub const GATEWAY_REFUSED: &str = "Refused by the gateway";
    pub const REFUSED: &str = "Request refused";
    pub const OVERLOADED: &str = "Server overloaded";
}

/// The one table of codes: each row gives the variant, its string, the
/// verification step, the HTTP status and the problem title.
macro_rules! codes {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $code:literal, step $step:literal, status $status:literal, title $title:ident;
    )*) => {
        /// The stable reason code of an [`Error`].
        ///
        /// Variants mirror the numbered verification steps of `spec/`; `step()`
        /// returns that step ("-" for codes that are not a verification step).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, in spec order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The stable string form, e.g. `"cwt.expired"`.
            pub const fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $code, )* }
            }

            /// The verification step of `spec/verification.md` this code belongs to.
            pub const fn step(self) -> &'static str {
                match self { $( Code::$variant => $step, )* }
            }

            /// The HTTP status the HTTP binding answers with (spec/http.md §5).
            pub const fn http_status(self) -> u16 {
                match self { $( Code::$variant => $status, )* }
            }

            /// The fixed `title` of the problem details for this code.
            pub const fn title(self) -> &'static str {
                match self { $( Code::$variant => title::$title, )* }
            }

            /// Parses the string form back; `None` for unknown strings.
            pub fn from_str_code(s: &str) -> Option<Code> {
                match s { $( $code => Some(Code::$variant), )* _ => None }
            }
        }
    };
}

codes! {
    // ---- CBOR layer (strict profile, spec/cbor.md) ----
    /// Input is not well-formed CBOR: truncated, reserved bits, stray break.
    CborMalformed = "cbor.malformed", step "T2, P2", status 401, title MALFORMED;
    /// Bytes remain after the single top-level item.
    CborTrailingData = "cbor.trailing_data", step "T2, P2", status 401, title MALFORMED;
    /// Not in deterministic encoding: non-minimal head, indefinite length, unsorted map keys.
    CborNotDeterministic = "cbor.not_deterministic", step "T2, P2", status 401, title MALFORMED;
    /// The same key twice in one map.
    CborDuplicateKey = "cbor.duplicate_key", step "T2, P2", status 401, title MALFORMED;
    /// Nesting deeper than the profile allows.
    CborTooDeep = "cbor.too_deep", step "T2, P2", status 401, title MALFORMED;
    /// Input, string or container larger than the profile allows.
    CborTooLarge = "cbor.too_large", step "T1, P1, T2, P2", status 401, title MALFORMED;
    /// A text string that is not valid UTF-8.
    CborInvalidUtf8 = "cbor.invalid_utf8", step "T2, P2", status 401, title MALFORMED;
    /// A tag where none is allowed.
    CborUnexpectedTag = "cbor.unexpected_tag", step "T2, P2", status 401, title MALFORMED;
    /// A map key that is neither an integer nor a text string.
    CborKeyType = "cbor.key_type", step "T2, P2", status 401, title MALFORMED;
    /// Floats, `undefined` and simple values other than true/false/null.
    CborUnsupportedType = "cbor.unsupported_type", step "T2, P2", status 401, title MALFORMED;

    // ---- COSE layer ----
    /// Not a COSE_Sign1 of the profile: wrong tag, array shape or member types.
    CoseStructure = "cose.structure", step "T3, P3", status 401, title MALFORMED;
    /// No `alg` header parameter at all.
    CoseAlgMissing = "cose.alg_missing", step "T3, P3", status 401, title MALFORMED;
    /// `alg` only in the unprotected bucket.
    CoseAlgUnprotected = "cose.alg_unprotected", step "T3, P3", status 401, title MALFORMED;
    /// `alg` is not EdDSA (-8) or ES256 (-7).
    CoseAlgUnsupported = "cose.alg_unsupported", step "T3, P3", status 401, title MALFORMED;
    /// `alg` does not match the key that must verify the signature.
    CoseAlgMismatch = "cose.alg_mismatch", step "T7", status 401, title MALFORMED;
    /// `crit` in the unprotected bucket.
    CoseCritMisplaced = "cose.crit_misplaced", step "T3, P3", status 401, title MALFORMED;
    /// `crit` empty, not an array, with duplicates, or naming an absent label.
    CoseCritInvalid = "cose.crit_invalid", step "T3, P3", status 401, title MALFORMED;
    /// `crit` names a header parameter this implementation does not understand.
    CoseCritUnknown = "cose.crit_unknown", step "T3, P3", status 401, title MALFORMED;
    /// The same label in the protected and the unprotected bucket.
    CoseHeaderConflict = "cose.header_conflict", step "T3, P3", status 401, title MALFORMED;
    /// A header parameter with a value of the wrong type.
    CoseHeaderType = "cose.header_type", step "T3, P3", status 401, title MALFORMED;
    /// A header parameter the profile does not allow.
    CoseHeaderUnsupported = "cose.header_unsupported", step "T3, P3", status 401, title MALFORMED;
    /// A token without `kid`.
    CoseKidMissing = "cose.kid_missing", step "T3", status 401, title MALFORMED;
    /// No key with this `kid` in the key set of the token's issuer.
    CoseKeyUnknown = "cose.key_unknown", step "T6", status 401, title MALFORMED;
    /// The signature does not verify.
    CoseBadSignature = "cose.bad_signature", step "T8", status 401, title MALFORMED;

    // ---- Keys ----
    /// A COSE_Key that is not of the profile's shape.
    KeyMalformed = "key.malformed", step "K1", status 401, title INVALID_TOKEN;
    /// A key type, curve or algorithm the profile does not support.
    KeyUnsupported = "key.unsupported", step "K1", status 401, title INVALID_TOKEN;
    /// Key bytes that are not a valid point or scalar.
    KeyInvalid = "key.invalid", step "K2", status 401, title INVALID_TOKEN;
    /// A small-order (weak) Ed25519 public key.
    KeyWeak = "key.weak", step "K2", status 401, title INVALID_TOKEN;
    /// A private key where a public key belongs, or the reverse.
    KeyWrongKind = "key.wrong_kind", step "K1", status 401, title INVALID_TOKEN;
    /// A key file could not be read or written.
    KeyIo = "key.io", step "-", status 401, title INVALID_TOKEN;
    /// A key set with two keys under one `kid`, no keys, or a key without `kid`.
    KeySetInvalid = "keyset.invalid", step "K3", status 500, title REFUSED;
    /// A key set whose sequence is lower than that of a set already loaded
    /// from the same source: a rollback, ignored (the last good set stays).
    KeySetRollback = "keyset.rollback", step "K3", status 500, title REFUSED;

    // ---- CWT claims ----
    /// The payload is not a claims map.
    CwtStructure = "cwt.structure", step "T4", status 401, title INVALID_TOKEN;
    /// A required claim is absent.
    CwtMissingClaim = "cwt.missing_claim", step "T4", status 401, title INVALID_TOKEN;
    /// A claim with a value of the wrong type or out of range.
    CwtClaimType = "cwt.claim_type", step "T4", status 401, title INVALID_TOKEN;
    /// A claim label this profile does not define.
    CwtUnknownClaim = "cwt.unknown_claim", step "T4", status 401, title INVALID_TOKEN;
    /// `iss` is not a trusted issuer.
    CwtIssuerUnknown = "cwt.iss_unknown", step "T5", status 401, title INVALID_TOKEN;
    /// `aud` is not the verifier's own audience.
    CwtAudMismatch = "cwt.aud_mismatch", step "T9", status 401, title INVALID_TOKEN;
    /// `exp` + leeway is in the past.
    CwtExpired = "cwt.expired", step "T11", status 401, title INVALID_TOKEN;
    /// `nbf` − leeway is in the future.
    CwtNotYetValid = "cwt.not_yet_valid", step "T11", status 401, title INVALID_TOKEN;
    /// `iat` − leeway is in the future.
    CwtIatFuture = "cwt.iat_future", step "T11", status 401, title INVALID_TOKEN;
    /// `exp` − `iat` exceeds the maximum lifetime for the token kind.
    CwtLifetimeExceeded = "cwt.lifetime_exceeded", step "T12", status 401, title INVALID_TOKEN;
    /// `cnf` is absent.
    CwtCnfMissing = "cwt.cnf_missing", step "T4", status 401, title INVALID_TOKEN;
    /// `cnf` is not `{1: COSE_Key}` with a valid, non-weak public key.
    CwtCnfInvalid = "cwt.cnf_invalid", step "T4, T8", status 401, title INVALID_TOKEN;
    /// `cti` is not 16 bytes.
    CwtCtiInvalid = "cwt.cti_invalid", step "T4", status 401, title INVALID_TOKEN;
    /// A session token where a service token is expected, or the reverse.
    CwtKindMismatch = "cwt.kind_mismatch", step "T10", status 401, title INVALID_TOKEN;
    /// The token is bound to an instance that is not this verifier's, or to
    /// any instance at a verifier configured with none.
    CwtInstance = "cwt.instance", step "T9", status 401, title INVALID_TOKEN;

    // ---- Delegated tokens: steps D1–D5 (spec/verification.md §4a) ----
    /// A trust id without an actor chain, an actor chain without a trust id, or an empty trust id.
    DelegationIncomplete = "delegation.incomplete", step "D1", status 401, title INVALID_TOKEN;
    /// A session token with a trust id or an actor chain: only service tokens are delegated.
    DelegationKind = "delegation.kind", step "D2", status 401, title INVALID_TOKEN;
    /// More actors than a chain of trusts can have (4).
    DelegationTooDeep = "delegation.too_deep", step "D3", status 401, title INVALID_TOKEN;
    /// An actor with an empty name, or with an issuer of its own.
    DelegationActorInvalid = "delegation.actor_invalid", step "D4", status 401, title INVALID_TOKEN;
    /// An actor that is the subject, or an actor named twice: a cycle.
    DelegationCycle = "delegation.cycle", step "D5", status 401, title INVALID_TOKEN;

    // ---- Routing slips: steps S1–S8 (spec/delegation.md §10.4) ----
    /// A `KB-Slip` header or slip that is not a routing slip of the format: encoding, size, COSE structure, payload (a token or proof sent as a slip too).
    SlipMalformed = "slip.malformed", step "S1, S2, S3", status 400, title SLIP_REFUSED;
    /// The slip names an issuer this service does not trust.
    SlipIssuerUnknown = "slip.issuer_unknown", step "S4", status 403, title SLIP_REFUSED;
    /// The slip's issuer has no key with the slip's kid.
    SlipKeyUnknown = "slip.key_unknown", step "S5", status 403, title SLIP_REFUSED;
    /// The slip's signature does not verify (or its alg is not its key's).
    SlipBadSignature = "slip.bad_signature", step "S5", status 403, title SLIP_REFUSED;
    /// The slip's expiry plus the leeway is in the past.
    SlipExpired = "slip.expired", step "S6", status 403, title SLIP_REFUSED;
    /// The slip's issued-at is further in the future than the leeway.
    SlipNotYetValid = "slip.not_yet_valid", step "S6", status 403, title SLIP_REFUSED;
    /// The slip is for another trustor (or issuer) than the request's subject.
    SlipWrongTrustor = "slip.wrong_trustor", step "S7", status 403, title SLIP_REFUSED;
    /// A delegated request whose trust, current actor and audience are not one hop of its slip.
    SlipHopMismatch = "slip.hop_mismatch", step "S8", status 403, title SLIP_REFUSED;

    // ---- Federation: the exchange steps F1–F8 (spec/federation.md §4) ----
    /// The token presented for exchange is not signed by a configured peer (its `iss` is no peer of this issuer).
    FedPeerUnknown = "fed.peer_unknown", step "F1", status 403, title EXCHANGE_REFUSED;
    /// The token's kid is not in its issuer's key set but in another issuer's: keys are never pooled.
    FedKeyIssuerMismatch = "fed.key_issuer_mismatch", step "F1", status 403, title EXCHANGE_REFUSED;
    /// The peer's key set is empty: it withdrew every key, so none of its tokens is accepted.
    FedIssuerRevoked = "fed.issuer_revoked", step "F1", status 403, title EXCHANGE_REFUSED;
    /// The token's audience is not this issuer: only tokens minted for the exchange cross.
    FedAudience = "fed.audience", step "F2", status 403, title EXCHANGE_REFUSED;
    /// An exchange without a proof by the token's `cnf` key.
    FedPopMissing = "fed.pop_missing", step "F3", status 401, title EXCHANGE_REFUSED;
    /// The token is itself federated or delegated: exchanges stop at one hop.
    FedChain = "fed.chain", step "F4", status 403, title EXCHANGE_REFUSED;
    /// The peer is not authoritative for the subject's domain (or the domain is this issuer's own).
    FedDomain = "fed.domain", step "F5", status 403, title EXCHANGE_REFUSED;
    /// The audience or project asked for is outside what this issuer grants peers' users.
    FedInvalidTarget = "fed.invalid_target", step "F6", status 400, title EXCHANGE_REFUSED;
    /// The remote user holds no role here on the project, or not every role asked for.
    FedNoGrants = "fed.no_grants", step "F7", status 403, title EXCHANGE_REFUSED;
    /// A gateway setting is missing or out of range, or a gateway bug.
    GatewayConfig = "gateway.config", step "G0", status 500, title GATEWAY_REFUSED;
    /// The forward-auth endpoint was called by a peer outside `trusted_forwarders`.
    GatewayUntrustedForwarder = "gateway.untrusted_forwarder", step "G1", status 403, title GATEWAY_REFUSED;
    /// The forward-auth request names no original method and URI, or a malformed one.
    GatewayOriginalMissing = "gateway.original_missing", step "G3", status 400, title GATEWAY_REFUSED;
    /// The original request has a body, which forward-auth is not given and cannot check.
    GatewayBodyNotForwarded = "gateway.body_not_forwarded", step "G2", status 403, title GATEWAY_REFUSED;
    /// The service behind the proxy refused the connection or broke it.
    GatewayUpstreamUnavailable = "gateway.upstream_unavailable", step "G5", status 502, title GATEWAY_REFUSED;
    /// The service behind the proxy did not answer in time.
    GatewayUpstreamTimeout = "gateway.upstream_timeout", step "G5", status 504, title GATEWAY_REFUSED;
    /// Identity headers whose assertion does not check (at the service behind a gateway).
    GatewayBadIdentity = "gateway.bad_identity", step "G6", status 401, title GATEWAY_REFUSED;
    /// The gateway has no key set from an issuer yet (its `/readyz`).
    GatewayKeysUnavailable = "gateway.keys_unavailable", step "G0", status 503, title GATEWAY_REFUSED;

    // ---- Request proofs ----
    /// No proof accompanies a holder-of-key token.
    ProofMissing = "proof.missing", step "H1", status 401, title INVALID_PROOF;
    /// More than one proof in a request.
    ProofMultiple = "proof.multiple", step "H1", status 401, title INVALID_PROOF;
    /// The proof's transport encoding (base64url) is wrong.
    ProofMalformed = "proof.malformed", step "H1", status 401, title INVALID_PROOF;
    /// A required proof field is absent.
    ProofMissingField = "proof.missing_field", step "P4", status 401, title INVALID_PROOF;
    /// A proof field with a value of the wrong type.
    ProofFieldType = "proof.field_type", step "P4", status 401, title INVALID_PROOF;
    /// A proof field label this profile does not define.
    ProofUnknownField = "proof.unknown_field", step "P4", status 401, title INVALID_PROOF;
    /// The proof's `alg` does not match the token's `cnf` key.
    ProofAlgMismatch = "proof.alg_mismatch", step "P5", status 401, title INVALID_PROOF;
    /// `htm` differs from the request method.
    ProofHtmMismatch = "proof.htm_mismatch", step "P6", status 401, title INVALID_PROOF;
    /// `htu` is not an absolute http(s) URI of the profile.
    ProofHtuInvalid = "proof.htu_invalid", step "P7", status 401, title INVALID_PROOF;
    /// `htu` differs from the request's target URI after normalisation.
    ProofHtuMismatch = "proof.htu_mismatch", step "P7", status 401, title INVALID_PROOF;
    /// The proof was made for another token.
    ProofAthMismatch = "proof.ath_mismatch", step "P8", status 401, title INVALID_PROOF;
    /// The proof was made for another request body.
    ProofBodyMismatch = "proof.body_mismatch", step "P9", status 401, title INVALID_PROOF;
    /// `jti` is not 16 bytes.
    ProofJtiInvalid = "proof.jti_invalid", step "P4", status 401, title INVALID_PROOF;
    /// `iat` is older than the freshness window.
    ProofStale = "proof.stale", step "P10", status 401, title INVALID_PROOF;
    /// `iat` is further in the future than the leeway.
    ProofFuture = "proof.future", step "P10", status 401, title INVALID_PROOF;
    /// The service requires a server nonce and the proof has none.
    ProofNonceRequired = "proof.nonce_required", step "P11", status 401, title NONCE_REQUIRED;
    /// The proof's nonce is not one the service issued, or has expired.
    ProofNonceInvalid = "proof.nonce_invalid", step "P11", status 401, title NONCE_REQUIRED;
    /// The proof's signature does not verify with the token's `cnf` key.
    ProofBadSignature = "proof.bad_signature", step "P12", status 401, title INVALID_PROOF;

    // ---- Replay ----
    /// This (audience, key, jti) was seen before.
    ReplayDetected = "replay.detected", step "P13", status 401, title REPLAYED;
    /// The replay store cannot be reached; the request is refused (fail closed).
    ReplayStoreUnavailable = "replay.store_unavailable", step "P13", status 503, title UNAVAILABLE;
    /// The replay store is full of live entries; the request is refused (fail closed).
    ReplayStoreFull = "replay.store_full", step "P13", status 503, title UNAVAILABLE;
    /// The proof was made before the replay store started: it cannot tell it from a replay.
    ReplayStoreRestarted = "replay.store_restarted", step "P13", status 401, title OLDER_THAN_STORE;

    // ---- HTTP binding ----
    /// No `Authorization` header.
    HttpTokenMissing = "http.token_missing", step "H1", status 401, title AUTHENTICATION_REQUIRED;
    /// More than one `Authorization` header.
    HttpTokenMultiple = "http.token_multiple", step "H1", status 401, title INVALID_AUTHORIZATION;
    /// The token in `Authorization` is not unpadded base64url.
    HttpTokenMalformed = "http.token_malformed", step "H1", status 401, title INVALID_AUTHORIZATION;
    /// An `Authorization` scheme other than `KB` (for example a `Bearer` downgrade).
    HttpScheme = "http.scheme", step "H1", status 401, title INVALID_AUTHORIZATION;
    /// A keybound header is longer than the limit.
    HttpHeaderTooLarge = "http.header_too_large", step "H1", status 431, title TOO_LARGE;
    /// The request body is longer than the limit.
    HttpBodyTooLarge = "http.body_too_large", step "H2", status 413, title TOO_LARGE;
    /// The request body could not be read completely (timeout, broken connection).
    HttpBodyUnreadable = "http.body_unreadable", step "H2", status 400, title BODY_UNREADABLE;
    /// The request path has dot segments or is otherwise not in normal form.
    HttpPathNotNormalized = "http.path_not_normalized", step "H1", status 400, title PATH_NOT_NORMALISED;
    /// A handler asks for a verified request on a route the verifying layer does not cover.
    HttpLayerMissing = "http.layer_missing", step "-", status 500, title REFUSED;
    /// The listener has as many requests in flight as it admits; this one
    /// was refused before any verification or database work (load shedding).
    HttpOverloaded = "http.overloaded", step "-", status 503, title OVERLOADED;

    // ---- Authorization policy ----
    /// The policy denies this action to the caller's roles.
    PolicyDenied = "policy.denied", step "A1", status 403, title DENIED_BY_POLICY;
    /// A policy file that cannot be loaded.
    PolicyInvalid = "policy.invalid", step "-", status 500, title REFUSED;
    /// A decision-record line that cannot be read (`keybound policy report`, `learn`).
    PolicyRecordInvalid = "policy.record_invalid", step "-", status 500, title REFUSED;
    /// Beyond a bound of reading or learning from decision records.
    PolicyLimit = "policy.limit", step "-", status 500, title REFUSED;
    /// No decision record of the workflow to learn from.
    PolicyLearnEmpty = "policy.learn_empty", step "-", status 500, title REFUSED;
    /// Records that make no one workplan (one trustee and audience on several projects).
    PolicyLearnConflict = "policy.learn_conflict", step "-", status 500, title REFUSED;

    // ---- Workplans (spec/delegation.md §9) ----
    /// A workplan file that is not valid; the message names the line.
    WorkplanInvalid = "workplan.invalid", step "-", status 500, title REFUSED;

    // ---- Issuer service ----
    /// A malformed request to the issuer (body not JSON, fields missing or of the wrong type).
    IssuerBadRequest = "issuer.bad_request", step "I1", status 400, title ISSUER_REFUSED;
    /// A name that is not 1–64 of A–Z a–z 0–9 . _ - (starting alphanumeric), or `name@domain` for users.
    IssuerInvalidName = "issuer.invalid_name", step "I1", status 400, title ISSUER_REFUSED;
    /// Unknown user, wrong password, or a key not registered for the user (deliberately one code).
    IssuerInvalidCredentials = "issuer.invalid_credentials", step "I2", status 401, title LOGIN_FAILED;
    /// Too many failed logins: the user is locked for a while.
    IssuerLocked = "issuer.locked", step "I2", status 429, title LOCKED;
    /// The user, its domain, or the project is disabled.
    IssuerDisabled = "issuer.disabled", step "I3", status 403, title ISSUER_REFUSED;
    /// The key to bind is malformed, unsupported or weak.
    IssuerInvalidKey = "issuer.invalid_key", step "I2", status 400, title ISSUER_REFUSED;
    /// The audience is not a registered service.
    IssuerUnknownAudience = "issuer.unknown_audience", step "I4", status 400, title ISSUER_REFUSED;
    /// The project does not exist.
    IssuerUnknownProject = "issuer.unknown_project", step "I4", status 400, title ISSUER_REFUSED;
    /// The user holds no role, or not the requested roles, on the project.
    IssuerRoleNotHeld = "issuer.role_not_held", step "I4", status 403, title ISSUER_REFUSED;
    /// A requested lifetime above the maximum.
    IssuerLifetimeExceeded = "issuer.lifetime_exceeded", step "I1", status 400, title ISSUER_REFUSED;
    /// The admin API needs an admin token scoped to the admin project.
    IssuerForbidden = "issuer.forbidden", step "I5", status 403, title ISSUER_REFUSED;
    /// The named object does not exist.
    IssuerNotFound = "issuer.not_found", step "I5", status 404, title ISSUER_REFUSED;
    /// The object already exists.
    IssuerConflict = "issuer.conflict", step "I5", status 409, title ISSUER_REFUSED;
    /// The issuer's database cannot be reached; nothing was issued.
    IssuerUnavailable = "issuer.unavailable", step "-", status 503, title ISSUER_REFUSED;
    /// The issuer's storage refuses writes (its volume is full or read-only,
    /// or the database is read-only); nothing was written, reads go on.
    IssuerStorageUnavailable = "issuer.storage_unavailable", step "-", status 503, title ISSUER_REFUSED;
    /// Configuration or bootstrap state that prevents the issuer from running.
    IssuerConfig = "issuer.config", step "-", status 500, title ISSUER_REFUSED;
    /// The root secret is not the one the issuer's database records (another replica's).
    IssuerRootSecretMismatch = "issuer.root_secret_mismatch", step "-", status 500, title ISSUER_REFUSED;
    /// `serve` without `--init` on a data dir or database with no admin yet.
    IssuerNotInitialised = "issuer.not_initialised", step "-", status 500, title ISSUER_REFUSED;
    /// Another process serves this SQLite data dir (its lock is held).
    IssuerDataDirInUse = "issuer.data_dir_in_use", step "-", status 500, title ISSUER_REFUSED;
    /// Too many logins from one client address: refused before any other check.
    IssuerLoginRateLimited = "issuer.login_rate_limited", step "-", status 429, title RATE_LIMITED;
    /// A scheduled key rotation before verifiers can have fetched the next
    /// key (within the key-set cache max-age of the previous rotation or
    /// epoch boundary); `--force` overrides (spec/issuer.md §7.2).
    IssuerRotationTooEarly = "issuer.rotation_too_early", step "I5", status 409, title ISSUER_REFUSED;
    /// A delete refused while something still refers to the object (a
    /// domain with projects or users, a role still granted or delegated, a
    /// project a federation peer is limited to).
    IssuerInUse = "issuer.in_use", step "I5", status 409, title ISSUER_REFUSED;
    /// A delete of what the bootstrap made and the admin API needs: domain
    /// `default`, project `admin@default`, user `admin@default`, role `admin`.
    IssuerProtected = "issuer.protected", step "I5", status 409, title ISSUER_REFUSED;
    /// The key a session (or admin token) is bound to was removed from its
    /// user after the session began: it mints nothing more.
    IssuerKeyRemoved = "issuer.key_removed", step "I2", status 401, title ISSUER_REFUSED;

    // ---- Sessions ----
    /// A token signed under a key that an emergency replacement of the
    /// issuer's root secret retired: refused; the client logs in again.
    SessionKeyReplaced = "session.key_replaced", step "T6", status 401, title KEYS_REPLACED;

    // ---- Delegation: trusts at the issuer (spec/delegation.md) ----
    /// A trust that cannot be made as asked: no roles, trustee = trustor, an expiry not in the future, 0 uses, a redelegation allowance above 3.
    TrustInvalid = "trust.invalid", step "TC", status 400, title TRUST_REFUSED;
    /// A trust beyond the deployment's ceilings (lifetime, uses).
    TrustOverLimit = "trust.over_limit", step "TC", status 400, title TRUST_REFUSED;
    /// The trustee is not a user, or is disabled (or its domain).
    TrustTrusteeUnknown = "trust.trustee_unknown", step "TC", status 400, title TRUST_REFUSED;
    /// Redelegation from a trust whose allowance is 0.
    TrustTooDeep = "trust.too_deep", step "TC", status 403, title TRUST_REFUSED;
    /// More than the parent trust gives (roles, audiences, expiry, allowance), or a mint asking for roles the trust does not delegate.
    TrustEscalation = "trust.escalation", step "TC, TM", status 403, title TRUST_REFUSED;
    /// No such trust (or not one the caller may see), or a trust of its chain is gone.
    TrustNotFound = "trust.not_found", step "TC, TM", status 404, title TRUST_REFUSED;
    /// The caller is not the trust's trustee.
    TrustNotTrustee = "trust.not_trustee", step "TC, TM", status 403, title TRUST_REFUSED;
    /// The trust, or one of its chain, has expired.
    TrustExpired = "trust.expired", step "TC, TM", status 403, title TRUST_REFUSED;
    /// The trust, or one of its chain, has no use left.
    TrustExhausted = "trust.exhausted", step "TM", status 403, title TRUST_REFUSED;
    /// The trustor no longer holds every delegated role, or a user of the chain, the project or a domain is disabled.
    TrustUnusable = "trust.unusable", step "TC, TM", status 403, title TRUST_REFUSED;
    /// A mint for a service that a trust of the chain is not restricted to.
    TrustWrongAudience = "trust.wrong_audience", step "TM", status 403, title TRUST_REFUSED;

    // ---- Client ----
    /// The issuer or service could not be reached (connection, TLS, timeout).
    ClientUnreachable = "client.unreachable", step "-", status 500, title REFUSED;
    /// A server refused without a keybound error code (the HTTP status is in the message).
    ClientRefused = "client.refused", step "-", status 500, title REFUSED;
    /// No session: log in first.
    ClientNoSession = "client.no_session", step "-", status 500, title REFUSED;
    /// The session token has expired: log in again.
    ClientSessionExpired = "client.session_expired", step "-", status 500, title REFUSED;
    /// A stored session or configuration file cannot be read or written.
    ClientStorage = "client.storage", step "-", status 500, title REFUSED;
    /// The routing slip has no hop in which the client's user calls the audience asked for.
    ClientNoHop = "client.no_hop", step "-", status 500, title REFUSED;
    /// The routing slip was signed by another issuer than the client's, which does not hold its trusts.
    ClientSlipIssuer = "client.slip_issuer", step "-", status 500, title REFUSED;

    // ---- Issuing and local input ----
    /// A token or proof could not be built with the given parameters.
    IssueInvalid = "issue.invalid", step "-", status 500, title REFUSED;
    /// Input that is not CBOR, hex or base64url where one was expected.
    InputMalformed = "input.malformed", step "-", status 500, title REFUSED;

    // ---- Configuration and environment ----
    /// A verifier, HTTP layer or nonce service configured with values it refuses.
    ConfigInvalid = "config.invalid", step "-", status 500, title REFUSED;
    /// The operating system's random number source failed.
    SystemRandomnessUnavailable = "system.randomness_unavailable", step "-", status 500, title REFUSED;
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The underlying failure an [`Error`] keeps (an I/O, database or network error).
type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A rejection: a stable [`Code`], a message a person can act on, and the
/// underlying failure when there is one ([`std::error::Error::source`]).
#[derive(Clone)]
pub struct Error {
    code: Code,
    message: Cow<'static, str>,
    source: Option<Source>,
    /// What a remote client may be told, where the message is for the log
    /// only (a policy denial names the service's rules): see
    /// [`Error::client_detail`].
    #[cfg(feature = "policy")]
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // read by the HTTP binding
    client_detail: Option<Cow<'static, str>>,
}

impl Error {
    /// Creates an error. Messages must never contain key material or whole tokens.
    pub fn new(code: Code, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            code,
            message: message.into(),
            source: None,
            #[cfg(feature = "policy")]
            client_detail: None,
        }
    }

    /// Sets what the HTTP binding may tell the client for an error whose
    /// message stays in the service's log (`policy.denied`).
    #[cfg(feature = "policy")]
    pub(crate) fn with_client_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.client_detail = Some(detail.into());
        self
    }

    /// The detail the HTTP binding may show the client instead of a message
    /// meant for the log only, if one was set.
    #[cfg(feature = "http")]
    pub(crate) fn client_detail(&self) -> Option<&str> {
        self.client_detail.as_deref()
    }

    /// Keeps `source`, the failure that caused this error, for
    /// [`std::error::Error::source`]. The message still says what failed in
    /// words; the source is there to inspect (an `io::ErrorKind`, a driver
    /// error) and for error reporters that walk the chain.
    pub fn with_source(mut self, source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// The stable reason code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({}: {})", self.code.as_str(), self.message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// Two errors are equal when their code and message are; sources are not compared.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.message == other.message
    }
}

impl Eq for Error {}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn err<T>(code: Code, message: impl Into<Cow<'static, str>>) -> Result<T> {
    Err(Error::new(code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert_eq!(Code::from_str_code(code.as_str()), Some(*code));
            let (layer, reason) = code.as_str().split_once('.').unwrap();
            assert!(!layer.is_empty() && !reason.is_empty());
            assert!(
                (400..600).contains(&code.http_status()),
                "{code} is not a refusal status"
            );
            assert!(!code.title().is_empty());
        }
    }

    #[test]
    fn errors_keep_their_source() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::new(Code::KeyIo, "cannot read k.key: denied").with_source(io);
        let source = e.source().expect("the source is kept");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("as the io::Error it was");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(Error::new(Code::KeyIo, "x").source().is_none());
    }
}
