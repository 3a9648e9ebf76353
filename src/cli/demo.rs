//! `keybound demo`: the whole story on loopback, in one command.

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;

use super::session::runtime;
use super::{CliError, EXIT_FAILURE, print_stdout};
use crate::client::{Client, Scope, error_from_response};
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
expected, and removes everything it created.";
pub(crate) const EXAMPLES: &str = "\
Examples:
  keybound demo
  cargo run --release -- demo";

/// `keybound demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

struct Step {
    number: usize,
    failures: usize,
}

impl Step {
    fn check(&mut self, what: &str, expected: &str, outcome: std::result::Result<String, Error>) -> Result<()> {
        self.number += 1;
        let got = match &outcome {
            Ok(detail) => format!("accepted ({detail})"),
            Err(e) => format!("refused: {}", e.code()),
        };
        let ok = match &outcome {
            Ok(_) => expected == "accepted",
            Err(e) => e.code().as_str() == expected,
        };
        if !ok {
            self.failures += 1;
        }
        let mark = if ok { "ok  " } else { "FAIL" };
        let line = format!("{mark} {:>2}. {what}\n         expected {expected}, {got}", self.number);
        print_stdout(&line).map_err(|e| Error::new(Code::ClientStorage, e.message().to_owned()))
    }
}

async fn service(name: &'static str, issuer: &str) -> Result<String> {
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
    let verifier = Verifier::builder(&url, TrustedIssuer::new(issuer, keys)).build()?;
    let app = axum::Router::new()
        .route(
            "/v2/servers",
            axum::routing::get(move |request: VerifiedRequest| async move {
                format!(
                    "{name}: servers of project {} for {}",
                    request.project().unwrap_or("-"),
                    request.subject()
                )
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

fn random<const N: usize>() -> Result<[u8; N]> {
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
    print_stdout(&format!(
        "issuer  {issuer}  (SQLite in {})\nnova    {nova}\nglance  {glance}\n",
        dir.display()
    ))
    .map_err(|e| Error::new(Code::ClientStorage, e.message().to_owned()))?;

    // The administrator sets up the world.
    let admin = loopback.admin(&admin_password).await?;
    let world = World {
        password: "correct horse battery staple",
        services: &[&nova, &glance],
    };
    loopback.create_world(&admin, &world).await?;
    print_stdout("admin created domain stoughton, project turing, role member, user ayoung@stoughton (member of turing), services nova and glance\n")
        .map_err(|e| Error::new(Code::ClientStorage, e.message().to_owned()))?;

    let mut step = Step { number: 0, failures: 0 };
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
    let revoke = admin
        .request(
            reqwest::Method::DELETE,
            &format!("{issuer}/v1/admin/grants"),
            &loopback.admin_scope(),
        )
        .json(&json!({"user": USER, "project": format!("{PROJECT}@{DOMAIN}"), "role": ROLE}))
        .send()
        .await?;
    if !revoke.status().is_success() {
        return Err(error_from_response(revoke).await);
    }
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

pub(crate) fn run(_args: Args) -> std::result::Result<ExitCode, CliError> {
    let dir = std::env::temp_dir().join(format!(
        "keybound-demo-{}-{}",
        std::process::id(),
        crate::encoding::hex_encode(&random::<4>()?)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| CliError::io(format!("cannot create {}: {e}", dir.display())))?;
    let result = runtime().and_then(|rt| rt.block_on(story(&dir)).map_err(CliError::from));
    // Everything the demo created goes, whatever happened.
    let _ = std::fs::remove_dir_all(&dir);
    match result? {
        0 => {
            print_stdout("\nevery step behaved as expected")?;
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
