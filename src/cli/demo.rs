//! `keybound demo`: the whole story on loopback, in one command, and
//! `keybound demo delegation`: the Heat story of trusts.

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;

use super::session::runtime;
use super::{CliError, EXIT_FAILURE, print_stdout};
use crate::client::{Client, NewTrust, Scope, error_from_response};
use crate::encoding::b64url_encode;
use crate::error::{Code, Error, Result};
use crate::http::KeyboundLayer;
use crate::issuer::IssuerConfig;
use crate::issuer::loopback::{DOMAIN, LoopbackIssuer, PROJECT, ROLE, USER, World};
use crate::key::{Algorithm, SigningKey};
use crate::keyset::{HttpKeys, HttpKeysOptions};
use crate::proof::ProofBuilder;
use crate::token::Token;
use crate::verify::{Clock, SystemClock, TrustedIssuer, VerifiedRequest, Verifier};

pub(crate) const ABOUT: &str = "Run the keybound story end to end on loopback: issuer, two services, one user";
pub(crate) const LONG_ABOUT: &str = "\
Run the keybound story end to end on loopback.

Starts an issuer on the embedded SQLite default in a temporary directory and two protected services \
(nova and glance) on 127.0.0.1, sets up a domain, a project, a user and roles, and walks through what \
holder-of-key tokens are for, printing each step and its outcome: log in; get a token for nova; a \
signed request succeeds; the same proof replayed is refused; the token sent to glance is refused (wrong \
audience); the token without the key (a stolen bearer token) is refused; a tampered token is refused; \
the role is revoked and the next token request is refused. Exits 0 only if every step behaved as \
expected, and removes everything it created.

`keybound demo delegation` walks through delegation (trusts, spec/delegation.md) the same way, and \
`keybound demo workflow` the seed's deploy-instance workflow (workplans and routing slips), and \
`keybound demo federation` two issuers of two domains and the token exchange between them.";
pub(crate) const EXAMPLES: &str = "\
Examples:
  keybound demo
  keybound demo delegation
  keybound demo workflow
  keybound demo federation
  cargo run --release -- demo";

const DELEGATION_ABOUT: &str = "Run the delegation story on loopback: a user trusts a service user to act for her";
const DELEGATION_LONG: &str = "\
Run the delegation story (spec/delegation.md) end to end on loopback.

Starts an issuer on the embedded SQLite default in a temporary directory and a protected service (nova) \
on 127.0.0.1, sets up ayoung@stoughton (member of turing) and the service user heat@service, and prints \
each step with what was expected and what happened: both log in with their own keys; ayoung creates a \
trust for heat@service (role member on turing, 1 h, no redelegation); heat@service mints a token from \
the trust and calls nova, which sees subject ayoung@stoughton acting through heat@service; ayoung \
cannot use the trust herself; the admin revokes her member role and the next mint from the trust is \
refused (trust.unusable); the role is granted again and minting works again; ayoung deletes the trust \
and the next mint is refused (trust.not_found), while the token minted before lives out its at most \
300 s. Exits 0 only if every step behaved as expected, and removes everything it created.";
const DELEGATION_EXAMPLES: &str = "\
Examples:
  keybound demo delegation";

/// `keybound demo [delegation]`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    story: Option<Story>,
}

/// The stories besides the default one.
#[derive(Debug, clap::Subcommand)]
enum Story {
    #[command(about = DELEGATION_ABOUT, long_about = DELEGATION_LONG, after_help = DELEGATION_EXAMPLES)]
    Delegation,
    #[command(
        about = super::demo_workflow::ABOUT,
        long_about = super::demo_workflow::LONG_ABOUT,
        after_help = super::demo_workflow::EXAMPLES
    )]
    Workflow(super::demo_workflow::Args),
    #[command(
        about = super::demo_federation::ABOUT,
        long_about = super::demo_federation::LONG_ABOUT,
        after_help = super::demo_federation::EXAMPLES
    )]
    Federation(super::demo_federation::Args),
}

/// The trustee of the delegation story.
const HEAT: &str = "heat@service";

/// The steps of a story: each printed as it happens (or, for `--json`,
/// kept for one document at the end).
#[derive(Default)]
pub(super) struct Step {
    number: usize,
    pub(super) failures: usize,
    /// Print nothing; keep the steps in `entries`.
    quiet: bool,
    /// Every step: what, expected, got, ok.
    pub(super) entries: Vec<serde_json::Value>,
}

impl Step {
    pub(super) fn new(quiet: bool) -> Self {
        Step {
            quiet,
            ..Step::default()
        }
    }

    /// Prints `text` unless quiet.
    pub(super) fn say(&self, text: &str) -> Result<()> {
        if self.quiet { Ok(()) } else { say(text) }
    }

    /// `expected` is "accepted" or the code of the refusal.
    pub(super) fn check(
        &mut self,
        what: &str,
        expected: &str,
        outcome: std::result::Result<String, Error>,
    ) -> Result<()> {
        let ok = match &outcome {
            Ok(_) => expected == "accepted",
            Err(e) => e.code().as_str() == expected,
        };
        self.record(what, expected, ok, &outcome)
    }

    /// Accepted, with exactly this answer.
    pub(super) fn check_answer(
        &mut self,
        what: &str,
        expected: &str,
        outcome: std::result::Result<String, Error>,
    ) -> Result<()> {
        let ok = matches!(&outcome, Ok(answer) if answer == expected);
        // The answer is long: show it once when it is the expected one.
        let shown = if ok {
            Ok("that answer".to_owned())
        } else {
            outcome.clone()
        };
        self.entries_push(what, expected, ok, &outcome);
        self.print(what, &format!("accepted ({expected})"), ok, &shown)
    }

    fn record(
        &mut self,
        what: &str,
        expected: &str,
        ok: bool,
        outcome: &std::result::Result<String, Error>,
    ) -> Result<()> {
        self.entries_push(what, expected, ok, outcome);
        self.print(what, expected, ok, outcome)
    }

    fn entries_push(&mut self, what: &str, expected: &str, ok: bool, outcome: &std::result::Result<String, Error>) {
        let got = match outcome {
            Ok(detail) => json!({"accepted": detail}),
            Err(e) => json!({"refused": e.code().as_str(), "message": e.message()}),
        };
        self.entries
            .push(json!({"what": what, "expected": expected, "got": got, "ok": ok}));
    }

    fn print(
        &mut self,
        what: &str,
        expected: &str,
        ok: bool,
        outcome: &std::result::Result<String, Error>,
    ) -> Result<()> {
        self.number += 1;
        let got = match outcome {
            Ok(detail) => format!("accepted ({detail})"),
            Err(e) => format!("refused: {}", e.code()),
        };
        if !ok {
            self.failures += 1;
        }
        let mark = if ok { "ok  " } else { "FAIL" };
        self.say(&format!(
            "{mark} {:>2}. {what}\n         expected {expected}, {got}",
            self.number
        ))
    }
}

fn say(text: &str) -> Result<()> {
    print_stdout(text).map_err(|e| Error::new(Code::ClientStorage, e.message().to_owned()))
}

/// A free 127.0.0.1 port for a demo service (its URL is its audience) and
/// the issuer's key set fetched over HTTP, as a deployed service has them.
pub(super) async fn listener_and_keys(issuer: &str) -> Result<(tokio::net::TcpListener, String, HttpKeys)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::new(Code::IssuerConfig, format!("bind: {e}")))?;
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| Error::new(Code::IssuerConfig, e.to_string()))?
    );
    let keys = HttpKeys::start(
        &format!("{issuer}/.well-known/keybound/keys"),
        HttpKeysOptions::default(),
    )
    .await?;
    Ok((listener, url, keys))
}

async fn service(name: &'static str, issuer: &str) -> Result<String> {
    let (listener, url, keys) = listener_and_keys(issuer).await?;
    let verifier = Verifier::builder(&url, TrustedIssuer::new(issuer, keys)).build()?;
    let app = axum::Router::new()
        .route(
            "/v2/servers",
            axum::routing::get(move |request: VerifiedRequest| async move {
                let mut answer = format!(
                    "{name}: servers of project {} for {}",
                    request.project().unwrap_or("-"),
                    request.subject()
                );
                // A delegated request names who acts (current actor first).
                let token = request.token();
                if let Some(trust) = token.trust_id() {
                    let actors: Vec<&str> = token.actor_chain().iter().map(|a| a.sub.as_str()).collect();
                    answer.push_str(&format!(", acting through {} (trust {trust})", actors.join(", ")));
                }
                answer
            }),
        )
        .layer(KeyboundLayer::new(Arc::new(verifier), &url)?);
    tokio::spawn(crate::http::serve(
        listener,
        app,
        crate::http::ServeConfig::default(),
        std::future::pending(),
    ));
    Ok(url)
}

/// Sends a request with exactly this token and proof (or none).
async fn send(url: &str, token: &Token, proof: Option<Vec<u8>>) -> std::result::Result<String, Error> {
    let mut request = reqwest::Client::new()
        .get(url)
        .header("authorization", format!("KB {}", token.to_base64url()));
    if let Some(proof) = proof {
        request = request.header("kb-proof", b64url_encode(&proof));
    }
    let response = request
        .send()
        .await
        .map_err(|e| Error::new(Code::ClientUnreachable, e.to_string()))?;
    if response.status().is_success() {
        return response
            .text()
            .await
            .map_err(|e| Error::new(Code::ClientUnreachable, e.to_string()));
    }
    Err(error_from_response(response).await)
}

pub(super) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| Error::new(Code::IssueInvalid, format!("no randomness available: {e}")))?;
    Ok(out)
}

fn proof(key: &SigningKey, url: &str, token: &Token) -> Result<Vec<u8>> {
    Ok(ProofBuilder::new("GET", url, token.as_bytes(), b"", SystemClock.now())?
        .sign(key)?
        .into_bytes())
}

async fn story(dir: &std::path::Path) -> Result<usize> {
    // The issuer, on the embedded SQLite default.
    let admin_password = b64url_encode(&random::<18>()?);
    let loopback = LoopbackIssuer::start(IssuerConfig::new(dir), &admin_password, Arc::new(SystemClock)).await?;
    let issuer = loopback.url().to_owned();
    let nova = service("nova", &issuer).await?;
    let glance = service("glance", &issuer).await?;
    say(&format!(
        "issuer  {issuer}  (SQLite in {})\nnova    {nova}\nglance  {glance}\n",
        dir.display()
    ))?;

    // The administrator sets up the world.
    let admin = loopback.admin(&admin_password).await?;
    let world = World {
        password: "correct horse battery staple",
        services: &[&nova, &glance],
    };
    loopback.create_world(&admin, &world).await?;
    say(
        "admin created domain stoughton, project turing, role member, user ayoung@stoughton (member of turing), services nova and glance\n",
    )?;

    let mut step = Step::default();
    let user = Client::new(&issuer, SigningKey::generate(Algorithm::EdDSA)?)?;
    let login = user
        .login_password("ayoung@stoughton", "correct horse battery staple", None)
        .await;
    step.check(
        "ayoung logs in; the session is bound to her key",
        "accepted",
        login.map(|s| {
            format!(
                "session for {} bound to key {}",
                s.subject,
                user.key().public_key().thumbprint()
            )
        }),
    )?;
    let scope = Scope::new(&nova).project("turing");
    let token = user.service_token(&scope).await;
    step.check(
        "she gets a token for nova, project turing",
        "accepted",
        token
            .as_ref()
            .map(|t| format!("{} bytes", t.as_bytes().len()))
            .map_err(Clone::clone),
    )?;
    let token = token?;
    let nova_url = format!("{nova}/v2/servers");
    let signed = proof(user.key(), &nova_url, &token)?;
    step.check(
        "a request to nova signed with her key",
        "accepted",
        send(&nova_url, &token, Some(signed.clone())).await,
    )?;
    step.check(
        "the same request and proof replayed",
        Code::ReplayDetected.as_str(),
        send(&nova_url, &token, Some(signed)).await,
    )?;
    let glance_url = format!("{glance}/v2/servers");
    let for_glance = proof(user.key(), &glance_url, &token)?;
    step.check(
        "her nova token sent to glance (properly signed)",
        Code::CwtAudMismatch.as_str(),
        send(&glance_url, &token, Some(for_glance)).await,
    )?;
    step.check(
        "a thief replays the token alone, as a bearer token",
        Code::ProofMissing.as_str(),
        send(&nova_url, &token, None).await,
    )?;
    let thief = SigningKey::generate(Algorithm::EdDSA)?;
    step.check(
        "the thief signs a proof with his own key",
        Code::ProofBadSignature.as_str(),
        send(&nova_url, &token, Some(proof(&thief, &nova_url, &token)?)).await,
    )?;
    let mut tampered = token.as_bytes().to_vec();
    if let Some(pos) = tampered.windows(6).position(|w| w == b"member") {
        tampered[pos..pos + 6].copy_from_slice(b"admin!");
    }
    let tampered = Token::from_bytes(tampered);
    step.check(
        "the token with its role edited to admin!",
        Code::CoseBadSignature.as_str(),
        send(&nova_url, &tampered, Some(proof(user.key(), &nova_url, &tampered)?)).await,
    )?;
    admin_call(
        &loopback,
        &admin,
        reqwest::Method::DELETE,
        "/v1/admin/grants",
        &her_grant(),
    )
    .await?;
    user.forget_token(&scope);
    let next = user
        .service_token(&scope)
        .await
        .map(|t| format!("{} bytes", t.as_bytes().len()));
    step.check(
        "the admin revokes member; she asks for a new token",
        Code::IssuerRoleNotHeld.as_str(),
        next,
    )?;
    Ok(step.failures)
}

/// ayoung's grant of [`ROLE`] on [`PROJECT`].
fn her_grant() -> serde_json::Value {
    json!({"user": USER, "project": format!("{PROJECT}@{DOMAIN}"), "role": ROLE})
}

/// One admin API call that must succeed.
pub(super) async fn admin_call(
    loopback: &LoopbackIssuer,
    admin: &Client,
    method: reqwest::Method,
    path: &str,
    body: &serde_json::Value,
) -> Result<()> {
    let response = admin
        .request(method, &format!("{}{path}", loopback.url()), &loopback.admin_scope())
        .json(body)
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(error_from_response(response).await);
    }
    Ok(())
}

/// A token from `scope`, described by its size.
async fn mint(client: &Client, scope: &Scope) -> std::result::Result<String, Error> {
    client.forget_token(scope);
    client
        .service_token(scope)
        .await
        .map(|t| format!("{} bytes", t.as_bytes().len()))
}

/// The Heat story of spec/delegation.md.
async fn delegation(dir: &std::path::Path) -> Result<usize> {
    let admin_password = b64url_encode(&random::<18>()?);
    let loopback = LoopbackIssuer::start(IssuerConfig::new(dir), &admin_password, Arc::new(SystemClock)).await?;
    let issuer = loopback.url().to_owned();
    let nova = service("nova", &issuer).await?;
    say(&format!(
        "issuer  {issuer}  (SQLite in {})\nnova    {nova}\n",
        dir.display()
    ))?;

    let admin = loopback.admin(&admin_password).await?;
    let password = "correct horse battery staple";
    loopback
        .create_world(
            &admin,
            &World {
                password,
                services: &[&nova],
            },
        )
        .await?;
    let heat_password = b64url_encode(&random::<18>()?);
    admin_call(
        &loopback,
        &admin,
        reqwest::Method::POST,
        "/v1/admin/domains",
        &json!({"name": "service"}),
    )
    .await?;
    admin_call(
        &loopback,
        &admin,
        reqwest::Method::POST,
        "/v1/admin/users",
        &json!({"user": HEAT, "kind": "service", "password": heat_password}),
    )
    .await?;
    say(
        "admin created domains stoughton and service, project turing, role member, user ayoung@stoughton (member of turing), service user heat@service, service nova\n",
    )?;

    let mut step = Step::default();
    let ayoung = Client::new(&issuer, SigningKey::generate(Algorithm::EdDSA)?)?;
    let login = ayoung.login_password(USER, password, None).await;
    step.check(
        "ayoung logs in with her key",
        "accepted",
        login.map(|s| format!("session for {}", s.subject)),
    )?;
    let heat = Client::new(&issuer, SigningKey::generate(Algorithm::EdDSA)?)?;
    let login = heat.login_password(HEAT, &heat_password, None).await;
    step.check(
        "heat@service logs in with its own key",
        "accepted",
        login.map(|s| {
            format!(
                "session for {} bound to key {}",
                s.subject,
                heat.key().public_key().thumbprint()
            )
        }),
    )?;
    let trust = ayoung
        .create_trust(&NewTrust {
            trustee: HEAT.into(),
            project: Some(PROJECT.into()),
            roles: vec![ROLE.into()],
            expires_at: Some(SystemClock.now() + 3600),
            redelegation: Some(0),
            ..Default::default()
        })
        .await;
    step.check(
        "ayoung trusts heat@service with member on turing, for 1 h, no redelegation",
        "accepted",
        trust
            .as_ref()
            .map(|t| format!("trust {}", t["id"].as_str().unwrap_or("?")))
            .map_err(Clone::clone),
    )?;
    let trust = trust?;
    let id = trust["id"]
        .as_str()
        .ok_or_else(|| Error::new(Code::ClientRefused, "the issuer answered a trust without an id"))?;
    let scope = Scope::new(&nova).trust(id);
    let token = heat.service_token(&scope).await;
    step.check(
        "heat@service gets a token for nova from the trust",
        "accepted",
        token
            .as_ref()
            .map(|t| format!("{} bytes, bound to heat's key", t.as_bytes().len()))
            .map_err(Clone::clone),
    )?;
    let token = token?;
    let nova_url = format!("{nova}/v2/servers");
    step.check_answer(
        "heat@service calls nova, signed with its key",
        &format!("nova: servers of project turing for {USER}, acting through {HEAT} (trust {id})"),
        send(&nova_url, &token, Some(proof(heat.key(), &nova_url, &token)?)).await,
    )?;
    step.check(
        "ayoung asks for a token from the trust herself",
        Code::TrustNotTrustee.as_str(),
        mint(&ayoung, &scope).await,
    )?;
    admin_call(
        &loopback,
        &admin,
        reqwest::Method::DELETE,
        "/v1/admin/grants",
        &her_grant(),
    )
    .await?;
    step.check(
        "the admin revokes ayoung's member role; heat@service asks for a new token",
        Code::TrustUnusable.as_str(),
        mint(&heat, &scope).await,
    )?;
    admin_call(
        &loopback,
        &admin,
        reqwest::Method::POST,
        "/v1/admin/grants",
        &her_grant(),
    )
    .await?;
    step.check(
        "the admin grants it again; heat@service asks again",
        "accepted",
        mint(&heat, &scope).await,
    )?;
    let last = heat.service_token(&scope).await?;
    step.check(
        "ayoung deletes the trust",
        "accepted",
        ayoung.delete_trust(id).await.map(|_| "deleted".to_owned()),
    )?;
    step.check(
        "heat@service asks for a new token",
        Code::TrustNotFound.as_str(),
        mint(&heat, &scope).await,
    )?;
    step.check_answer(
        "the token heat@service got before the delete, at nova (it dies within 300 s)",
        &format!("nova: servers of project turing for {USER}, acting through {HEAT} (trust {id})"),
        send(&nova_url, &last, Some(proof(heat.key(), &nova_url, &last)?)).await,
    )?;
    Ok(step.failures)
}

pub(crate) fn run(args: Args) -> std::result::Result<ExitCode, CliError> {
    let dir = std::env::temp_dir().join(format!(
        "keybound-demo-{}-{}",
        std::process::id(),
        crate::encoding::hex_encode(&random::<4>()?)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| CliError::io(format!("cannot create {}: {e}", dir.display())))?;
    let json = match &args.story {
        Some(Story::Workflow(a)) => a.json,
        Some(Story::Federation(a)) => a.json,
        _ => false,
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            match &args.story {
                None => story(&dir).await.map(|n| (n, None)),
                Some(Story::Delegation) => delegation(&dir).await.map(|n| (n, None)),
                Some(Story::Workflow(a)) => super::demo_workflow::story(&dir, a).await.map(|(n, v)| (n, Some(v))),
                Some(Story::Federation(a)) => super::demo_federation::story(&dir, a).await.map(|(n, v)| (n, Some(v))),
            }
        })
        .map_err(CliError::from)
    });
    // Everything the demo created goes, whatever happened.
    let _ = std::fs::remove_dir_all(&dir);
    let (failures, found) = result?;
    if json && let Some(found) = found {
        print_stdout(&serde_json::to_string_pretty(&found).unwrap_or_default())?;
    }
    match failures {
        0 => {
            if !json {
                print_stdout("\nevery step behaved as expected")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        // The demo checks the library against itself: a step that misbehaves is a bug.
        n => Err(CliError::new(
            super::CODE_INTERNAL,
            format!("{n} step(s) did not behave as expected"),
            EXIT_FAILURE,
        )),
    }
}
