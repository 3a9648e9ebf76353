//! The client side: hold a key, log in, obtain and cache service tokens per
//! audience, and sign every request with a fresh proof.
//!
//! ```no_run
//! # async fn run() -> keybound::Result<()> {
//! use keybound::client::{Client, Scope};
//! use keybound::key::{Algorithm, SigningKey};
//!
//! let client = Client::new("https://issuer.example", SigningKey::generate(Algorithm::EdDSA)?)?;
//! client.login_password("ayoung@stoughton", "correct horse battery", None).await?;
//! let scope = Scope::new("https://nova.example").project("turing");
//! let response = client.get("https://nova.example/v2/servers", &scope).send().await?;
//! println!("{}", response.status());
//! # Ok(()) }
//! ```
//!
//! Tokens are cached per scope and replaced 30 s before they expire. A
//! service that answers `proof.nonce_required`/`proof.nonce_invalid` with a
//! `KB-Nonce` gets one retry with that nonce; nonces a service hands out on
//! other answers are remembered for its next request. A service or issuer
//! whose replay store started after a proof was made
//! (`replay.store_restarted`) gets one retry with a new proof, dated at least
//! a second after the refused one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use zeroize::Zeroizing;

use crate::delegation::slip::VerifiedSlip;
use crate::encoding::{b64url_decode, b64url_encode};
use crate::error::{Code, Error, Result, err};
use crate::key::SigningKey;
use crate::proof::ProofBuilder;
use crate::token::Token;
use crate::verify::{Clock, SystemClock};

/// Tokens are replaced this long before they expire.
pub const REFRESH_MARGIN: u64 = 30;

/// What a service token is for: one audience, optionally a project and a
/// subset of roles.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The service's audience.
    pub audience: String,
    /// Project name.
    pub project: Option<String>,
    /// Domain of the project (default: the user's).
    pub domain: Option<String>,
    /// Roles to request (default: all held on the project).
    pub roles: Option<Vec<String>>,
    /// Lifetime to request (default: the issuer's).
    pub lifetime: Option<u64>,
    /// A trust of which the client's user is the trustee: the token is then
    /// delegated (its subject the trustor) and on the trust's project.
    pub trust: Option<String>,
    /// A peer issuer (federation, spec/federation.md): the token is that
    /// issuer's, for a project of its own, obtained by exchanging a token
    /// this client's issuer mints for it.
    pub through: Option<String>,
    /// The one instance of the service (a VM, a host id) the token is
    /// restricted to; default: a token for every instance.
    pub instance: Option<String>,
}

impl Scope {
    /// A scope for `audience`.
    pub fn new(audience: impl Into<String>) -> Self {
        Scope {
            audience: audience.into(),
            project: None,
            domain: None,
            roles: None,
            lifetime: None,
            trust: None,
            through: None,
            instance: None,
        }
    }
    /// Scopes to a project.
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }
    /// The project's domain.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }
    /// Asks for only these roles (down-scoping).
    pub fn roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roles: I) -> Self {
        self.roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }
    /// Asks for a shorter lifetime.
    pub fn lifetime(mut self, seconds: u64) -> Self {
        self.lifetime = Some(seconds);
        self
    }
    /// Mints from the trust `id` (spec/delegation.md §4): the project and
    /// domain come from the trust, so give neither.
    pub fn trust(mut self, id: impl Into<String>) -> Self {
        self.trust = Some(id.into());
        self
    }
    /// Gets the token from the peer issuer `issuer` (spec/federation.md
    /// §4): this client's issuer mints a token for `issuer`, which
    /// exchanges it for one of its own for this scope (project and domain
    /// are the peer's, and both must be given), bound to the same key.
    pub fn through(mut self, issuer: impl Into<String>) -> Self {
        self.through = Some(issuer.into());
        self
    }
    /// Restricts the token to one instance of the service (its `instance`
    /// claim): only a verifier configured with that instance id accepts it.
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }
}

/// A trust to create (spec/delegation.md §3): the issuer's own request type.
pub use crate::delegation::trust_request::TrustRequest as NewTrust;
/// A workplan run to ask for (spec/delegation.md §11).
pub use crate::delegation::trust_request::{PlanDelegation, WorkplanRun};

/// A session: the token from login and when it expires.
#[derive(Clone)]
pub struct Session {
    /// The session token.
    pub token: Token,
    /// Unix seconds.
    pub expires_at: u64,
    /// `name@domain`.
    pub subject: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({}, expires {})", self.subject, self.expires_at)
    }
}

/// A keybound client.
pub struct Client {
    http: reqwest::Client,
    issuer: String,
    key: Arc<SigningKey>,
    clock: Arc<dyn Clock>,
    session: Mutex<Option<Session>>,
    tokens: Mutex<HashMap<Scope, (Token, u64)>>,
    nonces: Mutex<HashMap<String, Vec<u8>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({}, key {})", self.issuer, self.key.public_key().thumbprint())
    }
}

fn unreachable(e: reqwest::Error) -> Error {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let url = e.url().map(|u| u.as_str().to_owned()).unwrap_or_default();
    Error::new(Code::ClientUnreachable, format!("{url}: {what}"))
}

/// Turns an error answer (problem details) into an [`Error`] with the server's code.
pub async fn error_from_response(response: reqwest::Response) -> Error {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    error_from_problem(status, &body)
}

/// [`error_from_response`] for an answer whose body was already read: the
/// problem details' `code` and `detail`, or `client.refused` with the
/// status and the start of the body when it has no keybound code.
pub fn error_from_problem(status: reqwest::StatusCode, body: &[u8]) -> Error {
    let problem: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let code = problem
        .as_ref()
        .and_then(|p| p["code"].as_str())
        .and_then(Code::from_str_code);
    let detail = problem
        .as_ref()
        .and_then(|p| p["detail"].as_str())
        .unwrap_or("")
        .to_owned();
    match code {
        Some(code) => Error::new(
            code,
            if detail.is_empty() {
                format!("HTTP {status}")
            } else {
                detail
            },
        ),
        None => {
            let snippet: String = String::from_utf8_lossy(body).chars().take(120).collect();
            Error::new(Code::ClientRefused, format!("HTTP {status}: {snippet}"))
        }
    }
}

async fn json_answer(response: reqwest::Response) -> Result<serde_json::Value> {
    let bytes = response.bytes().await.map_err(unreachable)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::new(Code::ClientRefused, format!("the answer is not JSON: {e}")))
}

/// A trust id as a path segment: 22 base64url characters (nothing to escape).
fn trust_path(id: &str) -> Result<&str> {
    if id.len() != 22 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return err(Code::InputMalformed, "a trust id is 22 base64url characters");
    }
    Ok(id)
}

fn origin_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

const PROOF: HeaderName = HeaderName::from_static("kb-proof");
const NONCE: HeaderName = HeaderName::from_static("kb-nonce");
const SLIP: HeaderName = HeaderName::from_static("kb-slip");

impl Client {
    /// A client of the issuer at `issuer_url` (its issuer id), holding `key`.
    pub fn new(issuer_url: &str, key: SigningKey) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::new(Code::ClientUnreachable, format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            http,
            issuer: issuer_url.trim_end_matches('/').to_owned(),
            key: Arc::new(key),
            clock: Arc::new(SystemClock),
            session: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            nonces: Mutex::new(HashMap::new()),
        })
    }

    /// Uses `clock` instead of the system clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The key this client proves possession of.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The current session, if any.
    pub fn session(&self) -> Option<Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Resumes a stored session (it must have been issued for this key).
    pub fn set_session(&self, session: Session) {
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(session);
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Logs in with a password. The proof binds the session to this client's key.
    pub async fn login_password(&self, user: &str, password: &str, lifetime: Option<u64>) -> Result<Session> {
        let password = Zeroizing::new(password.to_owned());
        self.login(json!({"user": user, "password": *password, "key": self.public_key_b64(), "lifetime": lifetime}))
            .await
    }

    /// Logs in with the key alone; the issuer must have it registered for `user`.
    pub async fn login_key(&self, user: &str, lifetime: Option<u64>) -> Result<Session> {
        self.login(json!({"user": user, "key": self.public_key_b64(), "lifetime": lifetime}))
            .await
    }

    fn public_key_b64(&self) -> String {
        b64url_encode(&self.key.public_key().to_cose_key(None))
    }

    async fn login(&self, mut body: serde_json::Value) -> Result<Session> {
        if body["lifetime"].is_null() {
            body.as_object_mut().map(|o| o.remove("lifetime"));
        }
        let body = Zeroizing::new(serde_json::to_vec(&body).unwrap_or_default());
        // A login carries no token: the proof binds SHA-256 of nothing.
        let answer = match self.call_issuer(Method::POST, "/v1/login", body.to_vec(), None).await {
            Ok(answer) => answer,
            Err(e) if e.code() == Code::ProofHtuMismatch => return Err(self.explain_htu_mismatch(e).await),
            Err(e) => return Err(e),
        };
        let token = answer["session_token"]
            .as_str()
            .and_then(|t| b64url_decode(t).ok())
            .ok_or_else(|| Error::new(Code::ClientRefused, "the issuer's login answer has no session token"))?;
        let session = Session {
            token: Token::from_bytes(token),
            expires_at: answer["expires_at"].as_u64().unwrap_or(0),
            subject: answer["subject"].as_str().unwrap_or_default().to_owned(),
        };
        self.set_session(session.clone());
        Ok(session)
    }

    /// A login refused with `proof.htu_mismatch`: the proof was signed for
    /// the URL this client was given, and the issuer checks it against its
    /// own id. When the issuer's metadata names another id (`127.0.0.1`
    /// typed as `localhost`), the error says which one to use.
    async fn explain_htu_mismatch(&self, refusal: Error) -> Error {
        let Ok(metadata) = self.issuer_metadata().await else {
            return refusal;
        };
        match metadata["issuer"].as_str() {
            Some(id) if id.trim_end_matches('/') != self.issuer => Error::new(
                Code::ProofHtuMismatch,
                format!(
                    "the proof was signed for {}/v1/login, but the issuer's id is {id} and it checks every proof \
                     against that: use {id} as the issuer URL",
                    self.issuer
                ),
            ),
            _ => refusal,
        }
    }

    /// A service token for `scope`: from the cache, or minted now.
    pub async fn service_token(&self, scope: &Scope) -> Result<Token> {
        let now = self.clock.now();
        if let Some((token, expires)) = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(scope)
            && expires.saturating_sub(REFRESH_MARGIN) > now
        {
            return Ok(token.clone());
        }
        let (token, expires) = match &scope.through {
            None => self.mint(scope).await?,
            Some(peer) => self.exchange(peer, scope).await?,
        };
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(scope.clone(), (token.clone(), expires));
        Ok(token)
    }

    /// A token of the peer issuer `peer` for `scope` (spec/federation.md
    /// §4): a token for `peer` minted by this client's issuer, exchanged
    /// there with a proof by the client's key.
    async fn exchange(&self, peer: &str, scope: &Scope) -> Result<(Token, u64)> {
        let (Some(project), Some(domain)) = (&scope.project, &scope.domain) else {
            return err(
                Code::InputMalformed,
                "a token through a peer issuer needs the peer's project and its domain",
            );
        };
        if scope.trust.is_some() {
            return err(
                Code::InputMalformed,
                "a delegated token does not cross to a peer issuer",
            );
        }
        let (foreign, _) = self.mint(&Scope::new(peer)).await?;
        // The one encoder of the exchange body (spec/federation.md §4.1).
        let request = crate::federation::ExchangeRequest {
            audience: scope.audience.clone(),
            project: project.clone(),
            domain: domain.clone(),
            roles: scope.roles.clone(),
            lifetime: scope.lifetime,
            instance: scope.instance.clone(),
        };
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let url = format!("{}{}", peer.trim_end_matches('/'), crate::federation::EXCHANGE_PATH);
        let answer = self.call(Method::POST, &url, body, Some(&foreign)).await?;
        token_from(&answer, self.clock.now())
    }

    /// A token minted by this client's issuer for `scope`, with its expiry.
    async fn mint(&self, scope: &Scope) -> Result<(Token, u64)> {
        let now = self.clock.now();
        let session = self
            .session()
            .ok_or_else(|| Error::new(Code::ClientNoSession, "not logged in: run keybound login first"))?;
        if session.expires_at <= now {
            return err(
                Code::ClientSessionExpired,
                format!("the session expired at {}: log in again", session.expires_at),
            );
        }
        let mut body = json!({"audience": scope.audience});
        for (key, value) in [
            ("project", scope.project.as_ref().map(|p| json!(p))),
            ("domain", scope.domain.as_ref().map(|d| json!(d))),
            ("roles", scope.roles.as_ref().map(|r| json!(r))),
            ("lifetime", scope.lifetime.map(|l| json!(l))),
            ("trust", scope.trust.as_ref().map(|t| json!(t))),
            ("instance", scope.instance.as_ref().map(|i| json!(i))),
        ] {
            if let Some(value) = value {
                body[key] = value;
            }
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let answer = match self.call_issuer(Method::POST, "/v1/tokens", body, Some(&session)).await {
            Ok(answer) => answer,
            Err(e) if e.code() == Code::SessionKeyReplaced => {
                return err(
                    Code::SessionKeyReplaced,
                    "the issuer's keys were replaced since this session was issued: log in again",
                );
            }
            Err(e) => return Err(e),
        };
        token_from(&answer, now)
    }

    /// Creates a trust with the client's user as trustor (or, with
    /// `parent`, redelegates a trust of which it is the trustee); returns
    /// the trust as the issuer shows it (spec/delegation.md §3).
    pub async fn create_trust(&self, trust: &NewTrust) -> Result<serde_json::Value> {
        let body = serde_json::to_vec(trust).unwrap_or_default();
        self.session_call(Method::POST, "/v1/trusts", body).await
    }

    /// Runs a workplan (spec/delegation.md §11): creates every trust of
    /// it at once with the client's user as trustor, or none; the answer
    /// carries the trusts and the routing slip (`slip`, base64url).
    pub async fn run_workplan(&self, run: &WorkplanRun) -> Result<serde_json::Value> {
        let body = serde_json::to_vec(run).unwrap_or_default();
        self.session_call(Method::POST, "/v1/workplans/run", body).await
    }

    /// The trusts in which the client's user is trustor or trustee.
    pub async fn trusts(&self) -> Result<serde_json::Value> {
        self.session_call(Method::GET, "/v1/trusts", Vec::new()).await
    }

    /// One trust of the client's user.
    pub async fn trust(&self, id: &str) -> Result<serde_json::Value> {
        self.session_call(Method::GET, &format!("/v1/trusts/{}", trust_path(id)?), Vec::new())
            .await
    }

    /// Deletes a trust of which the client's user is the trustor (and every
    /// trust redelegated from it).
    pub async fn delete_trust(&self, id: &str) -> Result<serde_json::Value> {
        self.session_call(Method::DELETE, &format!("/v1/trusts/{}", trust_path(id)?), Vec::new())
            .await
    }

    /// A call to the issuer with the session token.
    async fn session_call(&self, method: Method, path: &str, body: Vec<u8>) -> Result<serde_json::Value> {
        let session = self
            .session()
            .ok_or_else(|| Error::new(Code::ClientNoSession, "not logged in: run keybound login first"))?;
        if session.expires_at <= self.clock.now() {
            return err(
                Code::ClientSessionExpired,
                format!("the session expired at {}: log in again", session.expires_at),
            );
        }
        self.call_issuer(method, path, body, Some(&session)).await
    }

    /// Sends a request to the issuer with a proof (and the session token,
    /// if given), with a JSON body unless it is empty; returns the JSON
    /// answer or the issuer's error. Retries once, with a new proof, when
    /// the issuer's replay store started after the proof was made.
    async fn call_issuer(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        session: Option<&Session>,
    ) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.issuer);
        self.call(method, &url, body, session.map(|s| &s.token)).await
    }

    /// [`Client::call_issuer`] to any issuer's `url`, with any token.
    async fn call(&self, method: Method, url: &str, body: Vec<u8>, token: Option<&Token>) -> Result<serde_json::Value> {
        let url = url.to_owned();
        let token_bytes: &[u8] = token.map_or(&[], |t| t.as_bytes());
        let mut not_before = None;
        loop {
            let iat = proof_time(self.clock.now(), not_before);
            let proof = ProofBuilder::new(method.as_str(), &url, token_bytes, &body, iat)?.sign(&self.key)?;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header(PROOF, proof.to_base64url());
            if !body.is_empty() {
                request = request.header(CONTENT_TYPE, "application/json");
            }
            if let Some(token) = token {
                request = request.header(AUTHORIZATION, format!("KB {}", token.to_base64url()));
            }
            let response = request.body(body.clone()).send().await.map_err(unreachable)?;
            if response.status().is_success() {
                return json_answer(response).await;
            }
            let refusal = error_from_response(response).await;
            if refusal.code() != Code::ReplayStoreRestarted || not_before.is_some() {
                return Err(refusal);
            }
            not_before = Some(iat + 1);
        }
    }

    /// The scope of this client's next hop to `audience` in the workflow of
    /// `slip` (spec/delegation.md §10.6): the hop whose trustee is the
    /// client's user and whose audience is `audience`, minted from that
    /// hop's trust. No such hop (or no session): `client.no_hop`
    /// (`client.no_session`); a slip of another issuer, whose trusts this
    /// client's issuer does not hold: `client.slip_issuer`.
    pub fn next_hop_scope(&self, slip: &VerifiedSlip, audience: &str) -> Result<Scope> {
        if slip.issuer() != self.issuer {
            return err(
                Code::ClientSlipIssuer,
                format!(
                    "the slip of workflow {:?} was signed by {}, but this client mints at {}",
                    slip.workflow(),
                    slip.issuer(),
                    self.issuer
                ),
            );
        }
        let session = self
            .session()
            .ok_or_else(|| Error::new(Code::ClientNoSession, "not logged in: run keybound login first"))?;
        let hop = slip.hop(&session.subject, audience).ok_or_else(|| {
            Error::new(
                Code::ClientNoHop,
                format!(
                    "the slip of workflow {:?} has no hop in which {} calls {audience:?}",
                    slip.workflow(),
                    session.subject
                ),
            )
        })?;
        Ok(Scope::new(&hop.audience).trust(&hop.trust_id))
    }

    /// The token for this client's next hop to `audience` in the workflow of
    /// `slip`: [`Client::next_hop_scope`], then [`Client::service_token`]
    /// (cached, and minted again from the trust once it runs out).
    pub async fn next_hop_token(&self, slip: &VerifiedSlip, audience: &str) -> Result<Token> {
        self.service_token(&self.next_hop_scope(slip, audience)?).await
    }

    /// Forgets the cached token for `scope` (after a service refused it).
    pub fn forget_token(&self, scope: &Scope) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(scope);
    }

    /// The token cached for `scope` and its expiry (Unix seconds), if any,
    /// for keeping it beyond this client (a file cache between runs).
    pub fn cached_token(&self, scope: &Scope) -> Option<(Token, u64)> {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(scope)
            .cloned()
    }

    /// Puts a token obtained earlier for `scope` (by another run of the same
    /// client, from a file) into the cache; it is used like a minted one
    /// until [`REFRESH_MARGIN`] before `expires_at`. Nothing about it is
    /// checked here, and nothing needs to be: it grants nothing by being
    /// cached, the service verifies it like any other. A caller that got it
    /// refused calls [`Client::forget_token`]. [`Client::set_session`]
    /// empties the cache, so seed it after the session.
    pub fn cache_token(&self, scope: &Scope, token: Token, expires_at: u64) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(scope.clone(), (token, expires_at));
    }

    /// The credentials of one request for sending it with another HTTP
    /// client (curl): the token for `scope` (cached or minted) and a fresh
    /// proof over `method`, `url`, `body` and the token, with the nonce the
    /// service last handed this client, if any. Like any proof it is good
    /// for one request, within the service's proof age.
    pub async fn credentials(&self, method: &str, url: &str, body: &[u8], scope: &Scope) -> Result<Credentials> {
        let token = self.service_token(scope).await?;
        let proof = self.service_proof(method, url, &token, body, self.clock.now())?;
        Ok(Credentials { token, proof })
    }

    /// A proof for `method url` with `body` under `token`, made at `iat`,
    /// carrying the nonce last received from the URL's origin, if any.
    fn service_proof(
        &self,
        method: &str,
        url: &str,
        token: &Token,
        body: &[u8],
        iat: u64,
    ) -> Result<crate::proof::Proof> {
        let nonce = self
            .nonces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&origin_of(url))
            .cloned();
        let mut proof = ProofBuilder::new(method, url, token.as_bytes(), body, iat)?;
        if let Some(nonce) = nonce {
            proof = proof.nonce(nonce);
        }
        proof.sign(&self.key)
    }

    /// The issuer's metadata (`/.well-known/keybound/issuer`, spec/issuer.md §4).
    pub async fn issuer_metadata(&self) -> Result<serde_json::Value> {
        let url = format!("{}/.well-known/keybound/issuer", self.issuer);
        let response = self.http.get(&url).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(error_from_response(response).await);
        }
        json_answer(response).await
    }

    /// A signed request.
    pub fn request<'a>(&'a self, method: Method, url: &str, scope: &'a Scope) -> SignedRequest<'a> {
        SignedRequest {
            client: self,
            method,
            url: url.to_owned(),
            headers: HeaderMap::new(),
            body: Vec::new(),
            scope,
            timeout: None,
        }
    }

    /// Signs and sends a request built with reqwest's own builder, so
    /// headers, bodies and timeouts are set the usual way:
    ///
    /// ```ignore
    /// let request = reqwest::Client::new()
    ///     .get("https://nova.example/v2/servers?limit=5")
    ///     .header("accept", "application/json")
    ///     .timeout(std::time::Duration::from_secs(10))
    ///     .build()?;
    /// let response = client.execute(request, &scope).await?;
    /// ```
    ///
    /// The proof covers the body's SHA-256, so the body must be in memory: a
    /// streaming body is refused (`input.malformed`). Like
    /// [`SignedRequest::send`], it retries once when the service asks for a
    /// nonce.
    pub async fn execute(&self, request: reqwest::Request, scope: &Scope) -> Result<reqwest::Response> {
        let body = match request.body() {
            None => Vec::new(),
            Some(body) => body
                .as_bytes()
                .ok_or_else(|| {
                    Error::new(
                        Code::InputMalformed,
                        "a streaming body cannot be signed (a proof covers the body's SHA-256); buffer it first",
                    )
                })?
                .to_vec(),
        };
        // keybound sets the credentials itself: a caller's Authorization or
        // KB-Proof would go out as a second, conflicting header.
        let mut headers = request.headers().clone();
        headers.remove(AUTHORIZATION);
        headers.remove(PROOF);
        SignedRequest {
            client: self,
            method: request.method().clone(),
            url: request.url().to_string(),
            headers,
            body,
            scope,
            timeout: request.timeout().copied(),
        }
        .send()
        .await
    }

    /// A signed GET.
    pub fn get<'a>(&'a self, url: &str, scope: &'a Scope) -> SignedRequest<'a> {
        self.request(Method::GET, url, scope)
    }

    /// A signed POST.
    pub fn post<'a>(&'a self, url: &str, scope: &'a Scope) -> SignedRequest<'a> {
        self.request(Method::POST, url, scope)
    }
}

/// The `Authorization` and `KB-Proof` of one request ([`Client::credentials`]).
#[derive(Clone)]
pub struct Credentials {
    /// The service token.
    pub token: Token,
    /// The proof, for exactly one request.
    pub proof: crate::proof::Proof,
}

impl Credentials {
    /// The `Authorization` field value: `KB <base64url(token)>` (spec/http.md §3.1).
    pub fn authorization(&self) -> String {
        format!("KB {}", self.token.to_base64url())
    }

    /// The `KB-Proof` field value: base64url of the proof (spec/http.md §3.2).
    pub fn proof_header(&self) -> String {
        self.proof.to_base64url()
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials({} token bytes, {} proof bytes)",
            self.token.as_bytes().len(),
            self.proof.as_bytes().len()
        )
    }
}

/// One attempt of a [`SignedRequest`] as it went out and the head of what
/// came back ([`SignedRequest::send_traced`]): a nonce challenge or a
/// restarted replay store makes a second one.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The method sent.
    pub method: Method,
    /// The URL sent (and signed).
    pub url: String,
    /// The header fields sent besides `Authorization` and `KB-Proof`.
    pub headers: HeaderMap,
    /// The credentials sent.
    pub credentials: Credentials,
    /// The length of the body sent.
    pub body_len: usize,
    /// The answer's status.
    pub status: reqwest::StatusCode,
    /// The answer's HTTP version.
    pub version: reqwest::Version,
    /// The answer's header fields.
    pub response_headers: HeaderMap,
}

/// A request that is signed when sent.
pub struct SignedRequest<'a> {
    client: &'a Client,
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Vec<u8>,
    scope: &'a Scope,
    timeout: Option<std::time::Duration>,
}

impl SignedRequest<'_> {
    /// Time allowed for this request (default: the client's).
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::new(Code::InputMalformed, format!("bad header name {name:?}")))?;
        let value = HeaderValue::from_str(value).map_err(|_| Error::new(Code::InputMalformed, "bad header value"))?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// Carries a routing slip on (`KB-Slip`): the slip exactly as the
    /// issuer signed it, a [`crate::delegation::slip::Slip`] or the
    /// [`VerifiedSlip`] of the request being served.
    pub fn slip(mut self, slip: impl AsRef<[u8]>) -> Self {
        if let Ok(value) = HeaderValue::from_str(&b64url_encode(slip.as_ref())) {
            self.headers.insert(SLIP, value);
        }
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body.
    pub fn json<T: serde::Serialize>(mut self, value: &T) -> Self {
        self.body = serde_json::to_vec(value).unwrap_or_default();
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self
    }

    /// Signs and sends; retries once when the service asks for a nonce.
    /// Any HTTP answer is returned; see [`error_from_response`].
    pub async fn send(self) -> Result<reqwest::Response> {
        self.send_inner(None).await
    }

    /// [`SignedRequest::send`], and every attempt as it was sent, with the
    /// head of its answer (the last one's is the response's): what a
    /// verbose client shows, and what `keybound verify` can check offline.
    pub async fn send_traced(self) -> Result<(reqwest::Response, Vec<Attempt>)> {
        let mut attempts = Vec::new();
        let response = self.send_inner(Some(&mut attempts)).await?;
        Ok((response, attempts))
    }

    async fn send_inner(self, mut trace: Option<&mut Vec<Attempt>>) -> Result<reqwest::Response> {
        let client = self.client;
        let token = client.service_token(self.scope).await?;
        let origin = origin_of(&self.url);
        let mut retried = false;
        let mut not_before = None;
        loop {
            let iat = proof_time(client.clock.now(), not_before);
            let proof = client.service_proof(self.method.as_str(), &self.url, &token, &self.body, iat)?;
            let sent = trace.as_ref().map(|_| Credentials {
                token: token.clone(),
                proof: proof.clone(),
            });
            let mut builder = client
                .http
                .request(self.method.clone(), &self.url)
                .headers(self.headers.clone())
                .header(AUTHORIZATION, format!("KB {}", token.to_base64url()))
                .header(PROOF, proof.to_base64url())
                .body(self.body.clone());
            if let Some(timeout) = self.timeout {
                builder = builder.timeout(timeout);
            }
            let response = builder.send().await.map_err(unreachable)?;
            if let (Some(trace), Some(credentials)) = (trace.as_deref_mut(), sent) {
                trace.push(Attempt {
                    method: self.method.clone(),
                    url: self.url.clone(),
                    headers: self.headers.clone(),
                    credentials,
                    body_len: self.body.len(),
                    status: response.status(),
                    version: response.version(),
                    response_headers: response.headers().clone(),
                });
            }
            let fresh_nonce = response
                .headers()
                .get(NONCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| b64url_decode(v).ok());
            if let Some(nonce) = &fresh_nonce {
                client
                    .nonces
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(origin.clone(), nonce.clone());
            }
            let challenged =
                refused_with(&response, "proof.nonce_required") || refused_with(&response, "proof.nonce_invalid");
            if challenged && fresh_nonce.is_some() && !retried {
                retried = true;
                continue;
            }
            if refused_with(&response, Code::ReplayStoreRestarted.as_str()) && not_before.is_none() {
                not_before = Some(iat + 1);
                continue;
            }
            return Ok(response);
        }
    }
}

/// The token and its expiry from an issuer's answer (a mint or an exchange).
fn token_from(answer: &serde_json::Value, now: u64) -> Result<(Token, u64)> {
    let token = answer["token"]
        .as_str()
        .and_then(|t| b64url_decode(t).ok())
        .map(Token::from_bytes)
        .ok_or_else(|| Error::new(Code::ClientRefused, "the issuer's answer has no token"))?;
    Ok((token, answer["expires_at"].as_u64().unwrap_or(now)))
}

/// True when `response` is a 401 whose challenge names `code`.
fn refused_with(response: &reqwest::Response, code: &str) -> bool {
    response.status() == reqwest::StatusCode::UNAUTHORIZED
        && response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(code))
}

/// A proof's `iat`: now, or after a `replay.store_restarted` refusal a
/// second after the refused proof's, so that the retry is never dated in
/// the second the store refused (at most a second ahead of this clock).
fn proof_time(now: u64, not_before: Option<u64>) -> u64 {
    not_before.map_or(now, |t| now.max(t))
}
