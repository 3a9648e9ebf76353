//! `keybound verify`: check a token and proof offline, exactly as a service would.

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;

use super::session::runtime;
use super::{CliError, EXIT_FAILURE, EXIT_USAGE, print_stdout};
use crate::cbor;
use crate::encoding::decode_flexible;
use crate::error::{Code, Error};
use crate::key::{KeySet, MAX_KEYSET_SIZE, PublicKey};
use crate::keyset::{HttpKeys, HttpKeysOptions, KeySource};
use crate::proof::RequestInfo;
use crate::verify::{ManualClock, MemoryReplayStore, TrustedIssuer, Verifier};

pub(crate) const ABOUT: &str = "Check a token and its proof offline, exactly as a service would (why was I refused?)";
pub(crate) const LONG_ABOUT: &str = "\
Check a token and its proof offline, exactly as a service would.

Runs every verification step of spec/verification.md with the given issuer keys, audience, time and \
request, and prints one JSON object: {\"result\":\"valid\", …claims} or {\"result\":\"invalid\", \
\"error\":\"<code>\", \"step\":…, \"message\":…}. Exit status 0 when valid, 1 when invalid, 2 when the \
arguments cannot be used. KEYSET is a COSE_KeySet file (a CBOR array of COSE_Keys, in binary, hex or \
base64url), a single public COSE_Key, or the issuer's key-set URL. TOKEN and PROOF are hex, base64url, \
or a file path. Replay is not checked: a single request is never a replay.";
pub(crate) const EXAMPLES: &str = "\
Examples:
  keybound verify --keys issuer-keys.cbor --issuer https://issuer.example \\
      --audience https://nova.example --method GET --uri https://nova.example/v2/servers \\
      --token token.b64 --proof proof.b64 --now 1763800000
  keybound verify --keys http://127.0.0.1:8080/.well-known/keybound/keys \\
      --issuer http://127.0.0.1:8080 --audience https://nova.example \\
      --method POST --uri https://nova.example/v2/servers --body body.json \\
      --token \"$TOKEN\" --proof \"$PROOF\"
  keybound verify --keys issuer-keys.cbor --issuer https://issuer.example \\
      --audience https://nova.example --instance vm-7f3a@host-12 \\
      --method GET --uri https://nova.example/v2/servers --token token.b64";

/// `keybound verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The issuer's keys: a COSE_KeySet file, a COSE_Key file, or a key-set URL
    #[arg(long)]
    keys: String,
    /// The service's own audience
    #[arg(long)]
    audience: String,
    /// The trusted issuer id
    #[arg(long)]
    issuer: String,
    /// Verification time, Unix seconds (default: now)
    #[arg(long)]
    now: Option<u64>,
    /// Request method
    #[arg(long)]
    method: String,
    /// Target URI as the client addressed it (with its scheme: http:// or https://)
    #[arg(long, value_parser = super::input::http_url)]
    uri: String,
    /// File holding the request body (default: empty)
    #[arg(long)]
    body: Option<std::path::PathBuf>,
    /// The token: hex, base64url or a file path
    #[arg(long)]
    token: String,
    /// The proof: hex, base64url or a file path; without it only the token is checked
    #[arg(long)]
    proof: Option<String>,
    /// Clock leeway in seconds
    #[arg(long, default_value_t = crate::token::DEFAULT_LEEWAY)]
    leeway: u64,
    /// How old a proof may be, in seconds
    #[arg(long, default_value_t = crate::proof::DEFAULT_MAX_AGE)]
    proof_max_age: u64,
    /// The service's instance id (a VM or host id): a token bound to another instance, or to any
    /// instance when this is absent, is refused (cwt.instance)
    #[arg(long, value_name = "ID")]
    instance: Option<String>,
}

/// A literal or a file: the file when it exists, else the text itself when
/// it can be hex or base64url, else "file not found".
fn literal_or_file(value: &str, what: &str, option: &str, cap: usize) -> Result<Vec<u8>, CliError> {
    let raw = super::input::file_or_literal(value, cap, option, false)?;
    decode_flexible(&raw).map_err(|e| {
        CliError::with_exit(
            Error::new(Code::InputMalformed, format!("{what}: {}", e.message())),
            EXIT_USAGE,
        )
    })
}

fn load_keys(spec: &str) -> Result<Arc<dyn KeySource>, CliError> {
    if spec.starts_with("http://") || spec.starts_with("https://") {
        let options = HttpKeysOptions {
            allow_insecure_http: true,
            ..HttpKeysOptions::default()
        };
        let keys = runtime()?
            .block_on(HttpKeys::start(spec, options))
            .map_err(|e| CliError::with_exit(e, EXIT_USAGE))?;
        // Take a snapshot: this command verifies once, offline.
        return Ok(Arc::new(crate::keyset::StaticKeys::new(KeySet::clone(&keys.key_set()))));
    }
    let bytes = literal_or_file(spec, "key set", "--keys", MAX_KEYSET_SIZE * 2)?;
    let set = match cbor::validate(&bytes)
        .ok()
        .and_then(|()| (bytes.first().map(|b| b >> 5) == Some(5)).then_some(()))
    {
        // A single public COSE_Key (a map): trusted under its default kid.
        Some(()) => {
            let key = PublicKey::from_cose_key(&bytes).map_err(|e| CliError::with_exit(e, EXIT_USAGE))?;
            KeySet::new()
                .with(key.default_kid(), key)
                .map_err(|e| CliError::with_exit(e, EXIT_USAGE))?
        }
        None => KeySet::from_cbor(&bytes).map_err(|e| CliError::with_exit(e, EXIT_USAGE))?,
    };
    Ok(Arc::new(crate::keyset::StaticKeys::new(set)))
}

pub(crate) fn run(args: Args) -> Result<ExitCode, CliError> {
    let keys = load_keys(&args.keys)?;
    let token = literal_or_file(&args.token, "token", "--token", super::input::MAX_INPUT)?;
    let proof = args
        .proof
        .as_deref()
        .map(|p| literal_or_file(p, "proof", "--proof", super::input::MAX_INPUT))
        .transpose()?;
    let body = match &args.body {
        Some(path) => std::fs::read(path).map_err(|e| super::input::open_error(path, &e).context("--body"))?,
        None => Vec::new(),
    };
    let now = args
        .now
        .unwrap_or_else(|| crate::verify::Clock::now(&crate::verify::SystemClock));
    let mut builder = Verifier::builder(&args.audience, TrustedIssuer::from_arc(&args.issuer, keys))
        .clock(Arc::new(ManualClock::new(now)))
        .leeway(args.leeway)
        .proof_max_age(args.proof_max_age);
    if let Some(instance) = &args.instance {
        builder = builder.instance(instance);
    }
    let verifier = builder
        // One proof, checked once: no replay to detect, no fence to apply.
        .replay_store(Arc::new(MemoryReplayStore::with_budget(64 * 1024).fenced_at(0)))
        .build()
        .map_err(|e| CliError::with_exit(e, EXIT_USAGE))?;
    let result = match &proof {
        Some(proof) => verifier
            .verify_request(&token, proof, &RequestInfo::new(&args.method, &args.uri, &body))
            .map(|v| (v.token().clone(), true)),
        None => crate::danger::verify_token_without_proof(&verifier, &token).map(|t| (t, false)),
    };
    match result {
        Ok((token, proof_checked)) => {
            let c = token.claims();
            print_stdout(
                &json!({
                    "result": "valid",
                    "proof_checked": proof_checked,
                    "iss": c.iss, "sub": c.sub, "aud": c.aud, "exp": c.exp, "nbf": c.nbf, "iat": c.iat,
                    "cti": crate::encoding::hex_encode(&c.cti),
                    "kind": c.kind.as_str(), "domain": c.domain, "project": c.project, "roles": c.roles,
                    "trust_id": c.trust_id, "origin_issuer": c.origin_issuer, "instance": c.instance,
                    "actor_chain": c.actor_chain.iter().map(|a| json!({"sub": a.sub, "iss": a.iss})).collect::<Vec<_>>(),
                    "key_thumbprint": c.cnf.thumbprint().to_string(),
                    "issuer_kid": crate::encoding::hex_encode(token.kid()),
                })
                .to_string(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print_stdout(&json!({"result": "invalid", "error": e.code().as_str(), "step": e.code().step(), "message": e.message()}).to_string())?;
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}
