//! `keybound demo federation`: the seed's two domains (spec/federation.md)
//! on loopback. Stoughton and Canton each run an issuer on a SQLite
//! database of its own, trust each other as peers for their own domain,
//! and Nova trusts Canton alone. A user of Stoughton reaches Nova with a
//! Canton token bound to her own key; then the refusals, and both issuers
//! going down.

use std::path::Path;
use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

use super::demo::{Step, listener_and_keys};
use crate::client::{Client, Scope};
use crate::encoding::b64url_decode;
use crate::error::{Code, Error, Result};
use crate::http::KeyboundLayer;
use crate::issuer::IssuerConfig;
use crate::issuer::loopback::LoopbackIssuer;
use crate::key::{Algorithm, SigningKey};
use crate::policy::Policy;
use crate::proof::ProofBuilder;
use crate::token::{Token, TokenBuilder};
use crate::verify::{Clock, SystemClock, TrustedIssuer, VerifiedRequest, Verifier};

const USER: &str = "ayoung@stoughton";
const USER_PASSWORD: &str = "ayoung's demo password";
const ADMIN_PASSWORD: &str = "the demo's admin password";
const NOVA_POLICY: &str = "[[rule]]\nname = \"list servers\"\npath = \"/v2/servers\"\nroles = [\"member\"]\n";

/// `keybound demo federation`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print the steps as one JSON document instead of text
    #[arg(long)]
    pub(super) json: bool,
}

pub(crate) const ABOUT: &str =
    "Run the federation story on loopback: two issuers of two domains, a token exchange that keeps the key";
pub(crate) const LONG_ABOUT: &str = "\
Run the seed's federation story (spec/federation.md) end to end on loopback.

Starts two issuers, Stoughton and Canton, each on its own SQLite database in a temporary directory, and a \
Nova service that trusts Canton only. Each issuer makes the other a peer for the other's domain, and \
Canton grants the remote user ayoung@stoughton the role member on its project turing. Then, each step \
printed with what was expected and what happened: ayoung logs in at Stoughton; Stoughton mints her a token \
whose audience is Canton; Canton exchanges it for a token of its own, bound to the same key, with \
Stoughton as origin issuer and Canton's roles only; Nova serves her. Then the refusals: a general-purpose \
Stoughton token and her session token (fed.audience); an exchange without a proof (fed.pop_missing); the \
same proof again (replay.detected); Canton's token exchanged again (fed.chain); Stoughton speaking for a \
user of Canton's domain (fed.domain); an issuer that is no peer (fed.peer_unknown); the remote grant \
revoked (fed.no_grants). Last, Stoughton stops and Canton still exchanges the token Stoughton minted \
before; Canton stops and Nova still verifies Canton's token. Exits 0 only if every step behaved as \
expected, and removes everything it created.";
pub(crate) const EXAMPLES: &str = "\
Examples:
  keybound demo federation
  keybound demo federation --json";

/// The two issuers, their administrators, the user and Nova.
struct Domains {
    stoughton: Option<LoopbackIssuer>,
    canton: Option<LoopbackIssuer>,
    stoughton_url: String,
    canton_url: String,
    canton_admin: Client,
    user: Client,
    nova: String,
}

async fn issuer(dir: &Path, name: &str, clock: &Arc<dyn Clock>) -> Result<(LoopbackIssuer, Client)> {
    let mut config = IssuerConfig::new(dir.join(name));
    config.login_rate_per_minute = 1_000;
    let issuer = LoopbackIssuer::start(config, ADMIN_PASSWORD, clock.clone()).await?;
    let admin = issuer.admin(ADMIN_PASSWORD).await?;
    Ok((issuer, admin))
}

async fn admin_post(issuer: &LoopbackIssuer, admin: &Client, path: &str, body: Value) -> Result<Value> {
    issuer.admin_call(admin, Method::POST, path, Some(&body)).await
}

fn peer(issuer: &str, domain: &str) -> Value {
    json!({"issuer": issuer, "keys_url": format!("{issuer}/.well-known/keybound/keys"), "domains": [domain]})
}

/// Nova: trusts Canton, with its key set fetched over HTTP.
async fn nova(canton: &str, clock: &Arc<dyn Clock>) -> Result<String> {
    let (listener, url, keys) = listener_and_keys(canton).await?;
    let verifier = Verifier::builder(&url, TrustedIssuer::new(canton, keys))
        .clock(clock.clone())
        .build()?;
    let app = axum::Router::new()
        .route(
            "/v2/servers",
            axum::routing::get(|request: VerifiedRequest| async move {
                format!(
                    "servers of {} for {} (token of {}, first authenticated by {})",
                    request.project().unwrap_or("-"),
                    request.subject(),
                    request.issuer(),
                    request.token().claims().origin_issuer.as_deref().unwrap_or("-"),
                )
            }),
        )
        .layer(KeyboundLayer::new(Arc::new(verifier), &url)?.policy(Arc::new(Policy::from_toml(NOVA_POLICY)?)));
    tokio::spawn(crate::http::serve(
        listener,
        app,
        crate::http::ServeConfig::default(),
        std::future::pending(),
    ));
    Ok(url)
}

impl Domains {
    async fn start(dir: &Path, clock: &Arc<dyn Clock>) -> Result<Self> {
        let (stoughton, stoughton_admin) = issuer(dir, "stoughton", clock).await?;
        let (canton, canton_admin) = issuer(dir, "canton", clock).await?;
        let nova = nova(canton.url(), clock).await?;
        admin_post(
            &stoughton,
            &stoughton_admin,
            "/v1/admin/domains",
            json!({"name": "stoughton"}),
        )
        .await?;
        admin_post(
            &stoughton,
            &stoughton_admin,
            "/v1/admin/users",
            json!({"user": USER, "password": USER_PASSWORD}),
        )
        .await?;
        admin_post(
            &stoughton,
            &stoughton_admin,
            "/v1/admin/services",
            json!({"audience": "https://swift.stoughton.example"}),
        )
        .await?;
        for (path, body) in [
            ("/v1/admin/domains", json!({"name": "canton"})),
            ("/v1/admin/projects", json!({"name": "turing", "domain": "canton"})),
            ("/v1/admin/roles", json!({"name": "member"})),
            ("/v1/admin/services", json!({"audience": nova})),
        ] {
            admin_post(&canton, &canton_admin, path, body).await?;
        }
        admin_post(
            &stoughton,
            &stoughton_admin,
            "/v1/admin/peers",
            peer(canton.url(), "canton"),
        )
        .await?;
        admin_post(
            &canton,
            &canton_admin,
            "/v1/admin/peers",
            peer(stoughton.url(), "stoughton"),
        )
        .await?;
        admin_post(
            &canton,
            &canton_admin,
            "/v1/admin/remote-grants",
            json!({"user": USER, "project": "turing@canton", "role": "member"}),
        )
        .await?;
        let user = Client::new(stoughton.url(), SigningKey::generate(Algorithm::EdDSA)?)?.with_clock(clock.clone());
        Ok(Domains {
            stoughton_url: stoughton.url().to_owned(),
            canton_url: canton.url().to_owned(),
            stoughton: Some(stoughton),
            canton: Some(canton),
            canton_admin,
            user,
            nova,
        })
    }

    /// The body of every exchange the demo sends, from the one encoder.
    fn exchange_body(&self) -> Vec<u8> {
        let request = crate::federation::ExchangeRequest {
            audience: self.nova.clone(),
            project: "turing".into(),
            domain: "canton".into(),
            ..Default::default()
        };
        serde_json::to_vec(&request).unwrap_or_default()
    }

    /// An exchange at Canton with `token`, signed by the user's key unless
    /// `proof` is `None`, or with exactly `proof`.
    async fn exchange(&self, token: &Token, proof: Option<&str>) -> Result<(Value, String)> {
        let url = format!("{}/v1/exchange", self.canton_url);
        let body = self.exchange_body();
        let mut request = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .header("authorization", format!("KB {}", token.to_base64url()))
            .body(body);
        if let Some(proof) = proof {
            request = request.header("kb-proof", proof);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::new(Code::ClientUnreachable, format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(crate::client::error_from_response(response).await);
        }
        let answer: Value = serde_json::from_slice(
            &response
                .bytes()
                .await
                .map_err(|e| Error::new(Code::ClientUnreachable, e.to_string()))?,
        )
        .map_err(|e| Error::new(Code::ClientRefused, e.to_string()))?;
        let proof = proof.unwrap_or_default().to_owned();
        Ok((answer, proof))
    }

    /// A fresh proof by the user's key for an exchange with `token`.
    fn proof(&self, token: &Token, now: u64) -> Result<String> {
        let url = format!("{}/v1/exchange", self.canton_url);
        let body = self.exchange_body();
        Ok(ProofBuilder::new("POST", &url, token.as_bytes(), &body, now)?
            .sign(self.user.key())?
            .to_base64url())
    }

    /// A GET of Nova's servers with `token` and a fresh proof.
    async fn call_nova(&self, token: &Token, now: u64) -> Result<String> {
        let url = format!("{}/v2/servers", self.nova);
        let proof = ProofBuilder::new("GET", &url, token.as_bytes(), b"", now)?.sign(self.user.key())?;
        let response = reqwest::Client::new()
            .get(&url)
            .header("authorization", format!("KB {}", token.to_base64url()))
            .header("kb-proof", proof.to_base64url())
            .send()
            .await
            .map_err(|e| Error::new(Code::ClientUnreachable, format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(crate::client::error_from_response(response).await);
        }
        response
            .text()
            .await
            .map_err(|e| Error::new(Code::ClientUnreachable, e.to_string()))
    }
}

fn token_of(answer: &Value) -> Result<Token> {
    answer["token"]
        .as_str()
        .and_then(|t| b64url_decode(t).ok())
        .map(Token::from_bytes)
        .ok_or_else(|| Error::new(Code::ClientRefused, "the answer has no token"))
}

/// Runs the story; returns the number of steps that did not behave as
/// expected and, for `--json`, the steps.
pub(super) async fn story(dir: &Path, args: &Args) -> Result<(usize, Value)> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut step = Step::new(args.json);
    step.say("keybound demo federation: two issuers, two domains, one key\n")?;
    let mut d = Domains::start(dir, &clock).await?;
    step.say(&format!(
        "Stoughton {}  Canton {}  Nova {} (trusts Canton)\n",
        d.stoughton_url, d.canton_url, d.nova
    ))?;

    // The seed's sequence.
    let login = d
        .user
        .login_password(USER, USER_PASSWORD, None)
        .await
        .map(|s| s.subject);
    step.check("ayoung logs in to Stoughton with her own key", "accepted", login)?;
    let foreign = d.user.service_token(&Scope::new(&d.canton_url)).await;
    let shown = foreign
        .as_ref()
        .map(|t| format!("{} bytes, audience Canton", t.as_bytes().len()));
    step.check(
        "Stoughton mints her a token for Canton (a peer)",
        "accepted",
        shown.map_err(Clone::clone),
    )?;
    let foreign = foreign?;
    let now = clock.now();
    let exchanged = d.exchange(&foreign, Some(&d.proof(&foreign, now)?)).await;
    let canton_token = match &exchanged {
        Ok((answer, _)) => Some(token_of(answer)?),
        Err(_) => None,
    };
    let summary = exchanged.as_ref().map(|(answer, _)| {
        format!(
            "a Canton token for {} on {}@{}, roles {}, origin {}, bound to her key",
            answer["subject"].as_str().unwrap_or("?"),
            answer["project"].as_str().unwrap_or("?"),
            answer["domain"].as_str().unwrap_or("?"),
            answer["roles"],
            answer["origin"].as_str().unwrap_or("?"),
        )
    });
    step.check(
        "Canton exchanges it, with a proof by the same key",
        "accepted",
        summary.map_err(Clone::clone),
    )?;
    let canton_token = canton_token.ok_or_else(|| Error::new(Code::ClientRefused, "no exchanged token"))?;
    let same_key = crate::danger::insecure_decode_token(canton_token.as_bytes())
        .map(|t| &t.claims.cnf == d.user.key().public_key())
        .unwrap_or(false);
    step.check(
        "the Canton token is bound to the key the Stoughton token was",
        "accepted",
        if same_key {
            Ok("same cnf".into())
        } else {
            Err(Error::new(Code::CwtCnfInvalid, "another key"))
        },
    )?;
    let served = d.call_nova(&canton_token, clock.now()).await;
    step.check("Nova, trusting Canton, serves her", "accepted", served)?;

    // The refusals.
    step.say("\nWhat must be refused:")?;
    let general = d
        .user
        .service_token(&Scope::new("https://swift.stoughton.example"))
        .await?;
    let refused = d.exchange(&general, Some(&d.proof(&general, clock.now())?)).await;
    step.check(
        "a general-purpose Stoughton token (for Swift) handed to Canton",
        "fed.audience",
        refused.map(|_| String::new()),
    )?;
    let session = d
        .user
        .session()
        .ok_or_else(|| Error::new(Code::ClientNoSession, "no session"))?
        .token;
    let refused = d.exchange(&session, Some(&d.proof(&session, clock.now())?)).await;
    step.check(
        "her Stoughton session token handed to Canton",
        "fed.audience",
        refused.map(|_| String::new()),
    )?;
    let refused = d.exchange(&foreign, None).await;
    step.check(
        "an exchange without a proof",
        "fed.pop_missing",
        refused.map(|_| String::new()),
    )?;
    let proof = d.proof(&foreign, clock.now())?;
    d.exchange(&foreign, Some(&proof)).await?;
    let refused = d.exchange(&foreign, Some(&proof)).await;
    step.check(
        "the same exchange replayed",
        "replay.detected",
        refused.map(|_| String::new()),
    )?;
    let refused = d
        .exchange(&canton_token, Some(&d.proof(&canton_token, clock.now())?))
        .await;
    step.check(
        "Canton's token exchanged again",
        "fed.chain",
        refused.map(|_| String::new()),
    )?;
    let stoughton = d
        .stoughton
        .as_ref()
        .ok_or_else(|| Error::new(Code::IssuerConfig, "stopped"))?;
    let (key, kid) = stoughton.state().keys.current()?;
    let bob = TokenBuilder::service(
        &d.stoughton_url,
        "bob@canton",
        &d.canton_url,
        d.user.key().public_key().clone(),
        clock.now(),
    )
    .sign(&key, &kid)?;
    let refused = d.exchange(&bob, Some(&d.proof(&bob, clock.now())?)).await;
    step.check(
        "Stoughton speaking for bob@canton (a domain it is not authoritative for)",
        "fed.domain",
        refused.map(|_| String::new()),
    )?;
    let hyde = SigningKey::generate(Algorithm::EdDSA)?;
    let stranger = TokenBuilder::service(
        "https://hyde.example",
        "eve@hyde",
        &d.canton_url,
        d.user.key().public_key().clone(),
        clock.now(),
    )
    .sign(&hyde, b"hyde-1")?;
    let refused = d.exchange(&stranger, Some(&d.proof(&stranger, clock.now())?)).await;
    step.check(
        "a token of an issuer that is no peer of Canton",
        "fed.peer_unknown",
        refused.map(|_| String::new()),
    )?;
    let canton = d
        .canton
        .as_ref()
        .ok_or_else(|| Error::new(Code::IssuerConfig, "stopped"))?;
    let grant = json!({"user": USER, "project": "turing@canton", "role": "member"});
    canton
        .admin_call(&d.canton_admin, Method::DELETE, "/v1/admin/remote-grants", Some(&grant))
        .await?;
    let refused = d.exchange(&foreign, Some(&d.proof(&foreign, clock.now())?)).await;
    step.check(
        "the remote grant revoked: the next exchange mints nothing",
        "fed.no_grants",
        refused.map(|_| String::new()),
    )?;
    canton
        .admin_call(&d.canton_admin, Method::POST, "/v1/admin/remote-grants", Some(&grant))
        .await?;

    // The issuers down.
    step.say("\nIssuers down:")?;
    d.stoughton = None;
    let keys_url = format!("{}/.well-known/keybound/keys", d.stoughton_url);
    let down = match reqwest::Client::new().get(&keys_url).send().await {
        Ok(response) => Ok(format!("it still answers {}", response.status())),
        Err(e) => Err(Error::new(Code::ClientUnreachable, format!("{keys_url}: {e}"))),
    };
    step.check(
        "Stoughton is stopped: its key set cannot be fetched",
        "client.unreachable",
        down,
    )?;
    let exchanged = d.exchange(&foreign, Some(&d.proof(&foreign, clock.now())?)).await;
    let canton_token = exchanged.as_ref().ok().map(|(a, _)| token_of(a)).transpose()?;
    step.check(
        "Stoughton stopped: Canton still exchanges the token Stoughton minted before",
        "accepted",
        exchanged.map(|_| "from its cached key set".to_owned()),
    )?;
    d.canton = None;
    let keys_url = format!("{}/.well-known/keybound/keys", d.canton_url);
    let down = match reqwest::Client::new().get(&keys_url).send().await {
        Ok(response) => Ok(format!("it still answers {}", response.status())),
        Err(e) => Err(Error::new(Code::ClientUnreachable, format!("{keys_url}: {e}"))),
    };
    step.check(
        "Canton is stopped: its key set cannot be fetched",
        "client.unreachable",
        down,
    )?;
    let served = match &canton_token {
        Some(token) => d.call_nova(token, clock.now()).await,
        None => Err(Error::new(Code::ClientRefused, "no token to try")),
    };
    step.check("Canton stopped: Nova still verifies Canton's token", "accepted", served)?;
    let found = json!({
        "issuers": {"stoughton": d.stoughton_url, "canton": d.canton_url},
        "nova": d.nova,
        "steps": step.entries,
    });
    Ok((step.failures, found))
}
