//! A service protected by keybound, and a client calling it.
//!
//! ```sh
//! cargo run --example protected_service                 # self-contained walk-through
//! cargo run --example protected_service -- serve KEYS ISSUER_ID [LISTEN [EXTERNAL_URL]] [--key-cache FILE]   # serve for real
//! ```
//!
//! `EXTERNAL_URL` is the URL clients use (behind a proxy, or when `LISTEN` is
//! `0.0.0.0:…`); it is also the service's audience. Default `http://LISTEN`.
//! `--key-cache FILE` keeps the last key set fetched from a `KEYS` URL
//! ([`HttpKeysOptions::cache_file`]), so the service starts even while the
//! issuer is down, with the keys it had.
//!
//! Both modes serve with [`keybound::http::serve`]: a deadline for request
//! heads and idle keep-alive connections, a cap on open connections, back-off
//! on accept errors, and (in `serve` mode) a graceful stop on Ctrl-C.
//!
//! The walk-through generates an issuer key with the core issuing API, starts
//! the service on 127.0.0.1, mints a token for a client key, and sends a few
//! requests: signed (accepted), replayed (refused), for another URI
//! (refused), and a POST the policy only allows to `member`.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use keybound::encoding::b64url_encode;
use keybound::http::{KeyboundLayer, ServeConfig};
use keybound::key::{Algorithm, KeySet, SigningKey};
use keybound::keyset::{FileKeys, HttpKeys, HttpKeysOptions};
use keybound::policy::{JsonLinesFile, Policy};
use keybound::proof::ProofBuilder;
use keybound::token::TokenBuilder;
use keybound::verify::{Clock, SystemClock, TrustedIssuer, VerifiedRequest, Verifier};

const ISSUER: &str = "https://issuer.example";
const POLICY: &str = r#"
mode = "enforce"
[[rule]]
name = "list servers"
method = "GET"
path = "/v2/servers"
roles = ["reader", "member"]
[[rule]]
name = "create server"
method = "POST"
path = "/v2/servers"
roles = ["member"]
"#;

async fn list(request: VerifiedRequest) -> String {
    format!(
        "servers of project {:?}, for {} ({:?})\n",
        request.project(),
        request.subject(),
        request.roles()
    )
}

async fn create(request: VerifiedRequest, body: String) -> String {
    format!("{} created a server: {body}\n", request.subject())
}

fn app(verifier: Verifier, external_url: &str, records: &std::path::Path) -> keybound::Result<Router> {
    let layer = KeyboundLayer::new(Arc::new(verifier), external_url)?
        .policy(Arc::new(Policy::from_toml(POLICY)?))
        .records(Arc::new(JsonLinesFile::open(records)?));
    Ok(Router::new().route("/v2/servers", get(list).post(create)).layer(layer))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        let usage = "usage: protected_service serve KEYS ISSUER_ID [LISTEN [EXTERNAL_URL]] [--key-cache FILE]  (KEYS: the issuer's key-set URL or a COSE_KeySet file; EXTERNAL_URL: what clients call, also the audience; FILE: where the last key set fetched from KEYS is kept)";
        let mut args = args;
        let key_cache = match args.iter().position(|a| a == "--key-cache") {
            Some(i) => {
                let file = args.get(i + 1).cloned().ok_or(usage)?;
                args.drain(i..i + 2);
                Some(std::path::PathBuf::from(file))
            }
            None => None,
        };
        let keys = args.get(1).ok_or(usage)?;
        let issuer = args.get(2).ok_or(usage)?;
        let listen = args.get(3).map_or("127.0.0.1:8081", String::as_str);
        let url = args.get(4).cloned().unwrap_or_else(|| format!("http://{listen}"));
        let trusted = if keys.starts_with("http") {
            let options = HttpKeysOptions {
                cache_file: key_cache,
                ..HttpKeysOptions::default()
            };
            TrustedIssuer::new(issuer, HttpKeys::start(keys, options).await?)
        } else {
            TrustedIssuer::new(issuer, FileKeys::open(keys)?)
        };
        let verifier = Verifier::builder(&url, trusted).build()?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!(
            "listening on {listen} as {url} (audience {url}, trusting {issuer}); policy denials go to denials.jsonl"
        );
        let app = app(verifier, &url, std::path::Path::new("denials.jsonl"))?;
        keybound::http::serve(listener, app, ServeConfig::default(), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        return Ok(());
    }

    // The issuer side: a signing key and its published key set.
    let issuer_key = SigningKey::generate(Algorithm::EdDSA)?;
    let kid = issuer_key.public_key().default_kid();
    let keys = KeySet::new().with(kid.clone(), issuer_key.public_key().clone())?;

    // The service: trusts that issuer, checks every request.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let records = std::env::temp_dir().join(format!("keybound-example-denials-{}.jsonl", std::process::id()));
    let verifier = Verifier::builder(&url, TrustedIssuer::with_keys(ISSUER, keys)).build()?;
    let router = app(verifier, &url, &records)?;
    tokio::spawn(keybound::http::serve(
        listener,
        router,
        ServeConfig::default(),
        std::future::pending(),
    ));
    println!("service listening on {url}");

    // The client: its own key, and a token the issuer binds to it.
    let client_key = SigningKey::generate(Algorithm::EdDSA)?;
    let now = SystemClock.now();
    let issue = |roles: &[&str]| {
        TokenBuilder::service(ISSUER, "ayoung@stoughton", &url, client_key.public_key().clone(), now)
            .scope("stoughton", "turing")
            .roles(roles.iter().copied())
            .sign(&issuer_key, &kid)
    };
    let http = reqwest::Client::new();
    let send = |method: &'static str,
                path: &'static str,
                token: keybound::token::Token,
                body: &'static str,
                proof_path: &'static str| {
        let proof = ProofBuilder::new(
            method,
            &format!("{url}{proof_path}"),
            token.as_bytes(),
            body.as_bytes(),
            now,
        )
        .and_then(|p| p.sign(&client_key))
        .map(|p| b64url_encode(p.as_bytes()));
        let request = http
            .request(method.parse().unwrap(), format!("{url}{path}"))
            .header("authorization", format!("KB {}", token.to_base64url()))
            .body(body);
        async move {
            let proof = proof?;
            let response = request.header("kb-proof", &proof).send().await?;
            let status = response.status();
            let text = response.text().await?;
            println!("{method} {path} -> {status}: {}", text.trim());
            Ok::<String, Box<dyn std::error::Error>>(proof)
        }
    };
    let reader = issue(&["reader"])?;
    println!("\n1. a signed GET with a reader token");
    let proof = send("GET", "/v2/servers", reader.clone(), "", "/v2/servers").await?;
    println!("\n2. the same proof replayed");
    let replay = http
        .get(format!("{url}/v2/servers"))
        .header("authorization", format!("KB {}", reader.to_base64url()))
        .header("kb-proof", proof)
        .send()
        .await?;
    println!(
        "GET /v2/servers -> {}: {}",
        replay.status(),
        replay.text().await?.trim()
    );
    println!("\n3. a proof made for another path");
    send("GET", "/v2/servers", reader.clone(), "", "/v2/flavors").await?;
    println!("\n4. POST as a reader: the policy requires member");
    send("POST", "/v2/servers", reader, "{\"name\":\"vm1\"}", "/v2/servers").await?;
    println!("\n5. POST as a member");
    send(
        "POST",
        "/v2/servers",
        issue(&["member"])?,
        "{\"name\":\"vm1\"}",
        "/v2/servers",
    )
    .await?;
    println!("\ndecision records written to {}:", records.display());
    print!("{}", std::fs::read_to_string(&records).unwrap_or_default());
    let _ = std::fs::remove_file(records);
    Ok(())
}
