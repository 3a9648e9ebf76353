//! `keybound gateway proxy|auth`: the gateway of spec/gateway.md, with its
//! settings from a TOML file, `KEYBOUND_GATEWAY_*` variables and flags,
//! layered like the issuer's (`super::settings::layered`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::server_cmds::{init_logging, log_directive};
use super::session::server_runtime;
use super::settings::{LogFormat, layered, resolve};
use super::{CliError, print_stdout};
use crate::error::{Code, Error};
use crate::gateway::{AuthOptions, Gateway, GatewayConfig, Mode};
use crate::http::ProofMode;
use crate::keyset::{HttpKeys, HttpKeysOptions};
use crate::policy::{Mode as PolicyMode, Policy};
use crate::verify::{AsyncReplayStore, MemoryReplayStore, NonceService, SystemClock, TrustedIssuer, Verifier};

pub(crate) const ABOUT: &str =
    "Protect any HTTP service: a verifying reverse proxy (proxy) or a forward-auth endpoint (auth)";
pub(crate) const LONG_ABOUT: &str = "\
Protect an HTTP service written in any language without changing its code (spec/gateway.md).

`keybound gateway proxy` listens, verifies every request (token, proof, body digest, replay, policy) for \
the service's audience against its external URL, and forwards accepted ones to the upstream with the \
verified identity in X-Keybound-* headers and an HMAC assertion over them (X-Keybound-Identity) keyed \
with identity_secret, which the upstream checks. Credentials and incoming X-Keybound-* headers are never \
forwarded. `keybound gateway auth` is the same check as an endpoint for nginx auth_request, Traefik \
forwardAuth or Envoy ext_authz (HTTP): the original method and URI come from X-Forwarded-Method / \
X-Forwarded-Uri (or X-Original-Method / X-Original-URI), only from trusted_forwarders, and a request with a \
body is refused (forward-auth is not given bodies, so it cannot check them). Refusals carry the same \
problem details as a service's, plus a KB-Error header with the code.

Every setting is a key of the TOML --config file, a KEYBOUND_GATEWAY_* variable and a flag (flag over \
variable over file over default). /healthz, /readyz and /metrics are served on ops_listen only. \
Stops gracefully on Ctrl-C or SIGTERM.";
pub(crate) const EXAMPLES: &str = "\
Examples:
  keybound gateway proxy --config gateway.toml
  keybound gateway proxy --external-url https://nova.example --upstream http://127.0.0.1:9000 \\
      --issuer https://issuer.example --identity-secret-file /run/secrets/kb-identity
  keybound gateway auth --config gateway.toml --listen 127.0.0.1:9191";

/// `keybound gateway`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    mode: ModeCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModeCommand {
    /// Reverse proxy: verify every request, forward accepted ones to the upstream with the identity
    #[command(
        after_help = "Examples:\n  keybound gateway proxy --config gateway.toml\n  keybound gateway proxy --config gateway.toml --check-config"
    )]
    Proxy(RunArgs),
    /// Forward-auth endpoint for nginx auth_request, Traefik forwardAuth, Envoy ext_authz (HTTP)
    #[command(
        after_help = "Examples:\n  keybound gateway auth --config gateway.toml\n  keybound gateway auth --config gateway.toml --trusted-forwarders 10.0.0.0/8"
    )]
    Auth(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// TOML configuration file (keys: the flags' names with `_`; relative paths resolve against its directory)
    #[arg(long, env = "KEYBOUND_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) as TOML and exit
    #[arg(long)]
    check_config: bool,
    #[command(flatten)]
    settings: GatewaySettings,
}

/// Path-valued keys of the gateway's config file.
const PATH_KEYS: [&str; 4] = ["identity_secret_file", "nonce_secret_file", "policy", "key_cache_dir"];

/// Every setting of the gateway (one definition: file key, variable, flag).
#[derive(Clone, Debug, Default, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
struct GatewaySettings {
    /// Address clients connect to, HOST:PORT [default: 127.0.0.1:8090]
    #[arg(long, env = "KEYBOUND_GATEWAY_LISTEN")]
    listen: Option<String>,
    /// Address of /healthz, /readyz and /metrics, HOST:PORT [default: 127.0.0.1:8091]
    #[arg(long, env = "KEYBOUND_GATEWAY_OPS_LISTEN")]
    ops_listen: Option<String>,
    /// The URL clients call the service at; proofs name it (required)
    #[arg(long, env = "KEYBOUND_GATEWAY_EXTERNAL_URL")]
    external_url: Option<String>,
    /// The service's audience [default: the external URL]
    #[arg(long, env = "KEYBOUND_GATEWAY_AUDIENCE")]
    audience: Option<String>,
    /// The upstream service's base URL, http://HOST:PORT (proxy mode; required there)
    #[arg(long, env = "KEYBOUND_GATEWAY_UPSTREAM")]
    upstream: Option<String>,
    /// The issuer ids whose tokens are accepted, comma-separated (at least one; each its own key set, never pooled)
    #[arg(long, env = "KEYBOUND_GATEWAY_ISSUER", value_delimiter = ',')]
    issuer: Option<Vec<String>>,
    /// The issuers' key-set URLs, in the order of `issuer` [default: ISSUER/.well-known/keybound/keys each]
    #[arg(long, env = "KEYBOUND_GATEWAY_KEYS_URL", value_delimiter = ',')]
    keys_url: Option<Vec<String>>,
    /// File with the identity secret shared with the upstream: at least 32 bytes (required)
    #[arg(long, env = "KEYBOUND_GATEWAY_IDENTITY_SECRET_FILE")]
    identity_secret_file: Option<PathBuf>,
    /// Redis URL of the replay store shared by gateway replicas [default: in memory]
    #[arg(long, env = "KEYBOUND_GATEWAY_REPLAY_REDIS_URL")]
    replay_redis_url: Option<String>,
    /// File with the server-nonce secret (replicas share it); nonces are required when set
    #[arg(long, env = "KEYBOUND_GATEWAY_NONCE_SECRET_FILE")]
    nonce_secret_file: Option<PathBuf>,
    /// Directory keeping each issuer's last key set, so a gateway restarted while the issuers are
    /// down still verifies [default: none]
    #[arg(long, env = "KEYBOUND_GATEWAY_KEY_CACHE_DIR")]
    key_cache_dir: Option<PathBuf>,
    /// Policy file (TOML rules); without one, every verified request passes
    #[arg(long, env = "KEYBOUND_GATEWAY_POLICY")]
    policy: Option<PathBuf>,
    /// Policy mode, overriding the file's: enforce, permissive or off
    #[arg(long, env = "KEYBOUND_GATEWAY_POLICY_MODE")]
    policy_mode: Option<String>,
    /// Admit requests without a proof on their token alone, recorded (bearer rollout)
    #[arg(long, env = "KEYBOUND_GATEWAY_BEARER_ROLLOUT")]
    bearer_rollout: Option<bool>,
    /// Largest request body in bytes, buffered and hashed before forwarding [default: 1048576]
    #[arg(long, env = "KEYBOUND_GATEWAY_MAX_BODY")]
    max_body: Option<u64>,
    /// Seconds the whole request body has to arrive (a slower one is refused, 400) [default: 30]
    #[arg(long, env = "KEYBOUND_GATEWAY_BODY_TIMEOUT")]
    body_timeout: Option<u64>,
    /// Clock leeway in seconds [default: 30]
    #[arg(long, env = "KEYBOUND_GATEWAY_LEEWAY")]
    leeway: Option<u64>,
    /// Seconds the upstream has to answer [default: 30]
    #[arg(long, env = "KEYBOUND_GATEWAY_UPSTREAM_TIMEOUT")]
    upstream_timeout: Option<u64>,
    /// Seconds a connection has to send a request head, also the keep-alive idle timeout [default: 10]
    #[arg(long, env = "KEYBOUND_GATEWAY_HEADER_READ_TIMEOUT")]
    header_read_timeout: Option<u64>,
    /// Most connections open at once [default: 1024]
    #[arg(long, env = "KEYBOUND_GATEWAY_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Most requests answered at once; the excess is answered 503 http.overloaded [default: 128 per core]
    #[arg(long, env = "KEYBOUND_GATEWAY_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Auth mode: peers allowed to call it, IP addresses or CIDR networks, comma-separated [default: loopback]
    #[arg(long, env = "KEYBOUND_GATEWAY_TRUSTED_FORWARDERS", value_delimiter = ',')]
    trusted_forwarders: Option<Vec<String>>,
    /// Auth mode: headers carrying the original method, first present wins [default: X-Forwarded-Method,X-Original-Method]
    #[arg(long, env = "KEYBOUND_GATEWAY_METHOD_HEADERS", value_delimiter = ',')]
    method_headers: Option<Vec<String>>,
    /// Auth mode: headers carrying the original path and query [default: X-Forwarded-Uri,X-Original-URI]
    #[arg(long, env = "KEYBOUND_GATEWAY_URI_HEADERS", value_delimiter = ',')]
    uri_headers: Option<Vec<String>>,
    /// Log format
    #[arg(long, value_enum, env = "KEYBOUND_GATEWAY_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. info or keybound=debug [default: RUST_LOG, else info]
    #[arg(long, env = "KEYBOUND_GATEWAY_LOG_LEVEL")]
    log_level: Option<String>,
}

/// A refused setting of the gateway: `gateway.config`, exit status 2.
fn config_error(message: String) -> CliError {
    CliError::with_exit(Error::new(Code::GatewayConfig, message), super::EXIT_USAGE)
}

fn required<'a>(value: &'a Option<String>, key: &str) -> Result<&'a str, CliError> {
    value.as_deref().ok_or_else(|| {
        config_error(format!(
            "{key} is required (--{}, or in the config file)",
            key.replace('_', "-")
        ))
    })
}

/// Reads a shared secret file: refused when group or others may read it (as
/// ssh refuses a key file: the secret may already be out), when it is
/// shorter than the format needs, or longer than a secret file would be.
fn read_secret(path: &std::path::Path, what: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let cannot = |e: std::io::Error| config_error(format!("{what} {}: {e}", path.display()));
    let metadata = std::fs::metadata(path).map_err(cannot)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(config_error(format!(
                "{what} {} has mode {mode:o}; a secret file must not be accessible by group or others (chmod 600)",
                path.display()
            )));
        }
    }
    if metadata.len() > 4096 {
        return Err(config_error(format!(
            "{what} {} is {} bytes; a secret file is at most 4096",
            path.display(),
            metadata.len()
        )));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(cannot)?);
    if bytes.len() < crate::gateway::identity::MIN_SECRET_LEN {
        return Err(config_error(format!(
            "{what} {} holds {} bytes; at least {} random bytes are needed (head -c 32 /dev/urandom > FILE)",
            path.display(),
            bytes.len(),
            crate::gateway::identity::MIN_SECRET_LEN
        )));
    }
    Ok(bytes)
}

pub(crate) fn run(args: Args) -> Result<ExitCode, CliError> {
    let (auth, run) = match args.mode {
        ModeCommand::Proxy(run) => (false, run),
        ModeCommand::Auth(run) => (true, run),
    };
    let s = layered(&run.settings, run.config.as_deref(), &PATH_KEYS).map_err(|e| config_error(e.message))?;
    let external_url = required(&s.external_url, "external_url")?.to_owned();
    crate::proof::normalize_uri(&external_url).map_err(|e| config_error(format!("external_url: {}", e.message())))?;
    let issuers: Vec<String> = s.issuer.clone().unwrap_or_default();
    if issuers.is_empty() {
        return Err(config_error(
            "issuer is required (--issuer, or in the config file)".into(),
        ));
    }
    let audience = s.audience.clone().unwrap_or_else(|| external_url.clone());
    let keys_urls: Vec<String> = match &s.keys_url {
        Some(urls) if urls.len() != issuers.len() => {
            return Err(config_error(format!(
                "keys_url names {} URLs for {} issuers: give one per issuer, in the same order",
                urls.len(),
                issuers.len()
            )));
        }
        Some(urls) => urls.clone(),
        None => issuers
            .iter()
            .map(|i| format!("{}/.well-known/keybound/keys", i.trim_end_matches('/')))
            .collect(),
    };
    let listen = resolve("listen", s.listen.as_deref().unwrap_or("127.0.0.1:8090"))?;
    let ops_listen = resolve("ops_listen", s.ops_listen.as_deref().unwrap_or("127.0.0.1:8091"))?;
    let mode = if auth {
        let mut options = AuthOptions::default();
        if let Some(nets) = &s.trusted_forwarders {
            options.trusted_forwarders = nets
                .iter()
                .map(|n| {
                    crate::issuer::parse_trusted_proxy(n).ok_or_else(|| {
                        config_error(format!(
                            "trusted_forwarders: {n:?} is not an IP address or CIDR network"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        let names = |list: &Option<Vec<String>>, key: &str| -> Result<Option<Vec<http::HeaderName>>, CliError> {
            list.as_ref()
                .map(|l| {
                    l.iter()
                        .map(|n| {
                            http::HeaderName::from_bytes(n.trim().as_bytes())
                                .map_err(|_| config_error(format!("{key}: {n:?} is not a header name")))
                        })
                        .collect()
                })
                .transpose()
        };
        if let Some(m) = names(&s.method_headers, "method_headers")? {
            options.method_headers = m;
        }
        if let Some(u) = names(&s.uri_headers, "uri_headers")? {
            options.uri_headers = u;
        }
        Mode::Auth(options)
    } else {
        let upstream = required(&s.upstream, "upstream")?;
        let url = reqwest::Url::parse(upstream).map_err(|e| config_error(format!("upstream {upstream:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.path() != "/" || url.query().is_some() {
            return Err(config_error(format!(
                "upstream {upstream:?} must be http(s)://HOST[:PORT] without a path or query"
            )));
        }
        Mode::Proxy { upstream: url }
    };
    // 0 s would refuse every body that is not in the first read.
    if s.body_timeout == Some(0) {
        return Err(config_error("body_timeout must be at least 1 second".into()));
    }
    let policy_mode = s
        .policy_mode
        .as_deref()
        .map(|m| match m {
            "enforce" => Ok(PolicyMode::Enforce),
            "permissive" => Ok(PolicyMode::Permissive),
            "off" => Ok(PolicyMode::Off),
            other => Err(config_error(format!(
                "policy_mode {other:?} is not enforce, permissive or off"
            ))),
        })
        .transpose()?;
    let identity_secret = match &s.identity_secret_file {
        Some(path) => read_secret(path, "identity_secret_file")?,
        None => {
            return Err(config_error(
                "identity_secret_file is required (--identity-secret-file)".into(),
            ));
        }
    };
    let format = s.log_format.unwrap_or_default();
    let directive = log_directive(s.log_level.as_deref());
    if run.check_config {
        let mut shown = s.clone();
        shown.replay_redis_url = shown.replay_redis_url.as_deref().map(crate::issuer::redact_url);
        shown.audience = Some(audience);
        shown.keys_url = Some(keys_urls);
        shown.listen = Some(listen.to_string());
        shown.ops_listen = Some(ops_listen.to_string());
        let text = toml::to_string(&shown).map_err(|e| CliError::io(e.to_string()))?;
        print_stdout(&format!(
            "# keybound gateway {}: effective configuration\n{}",
            if auth { "auth" } else { "proxy" },
            text.trim_end()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    init_logging(format, &directive)?;
    server_runtime()?.block_on(async move {
        let shutdown = crate::issuer::shutdown_signal();
        let mut sources = Vec::with_capacity(issuers.len());
        for (issuer, url) in issuers.iter().zip(&keys_urls) {
            let mut options = HttpKeysOptions::default();
            if let Some(dir) = &s.key_cache_dir {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::new(Code::GatewayConfig, format!("key_cache_dir {}: {e}", dir.display())))?;
                // One file per key-set URL (the file records its URL too).
                let name = crate::encoding::hex_encode(&<sha2::Sha256 as sha2::Digest>::digest(url.as_bytes())[..8]);
                options.cache_file = Some(dir.join(format!("keys-{name}.cbor")));
            }
            sources.push((issuer.clone(), HttpKeys::start(url, options).await?));
        }
        let replay: Arc<dyn AsyncReplayStore> = match &s.replay_redis_url {
            Some(url) => {
                let store = crate::verify::RedisReplayStore::connect(url, Default::default()).await?;
                store.fence_if_new(crate::verify::Clock::now(&SystemClock)).await?;
                Arc::new(store)
            }
            None => {
                use crate::verify::Clock;
                Arc::new(MemoryReplayStore::default().fenced_at(SystemClock.now()))
            }
        };
        let mut builder = Verifier::builder(&audience, TrustedIssuer::new(&sources[0].0, sources[0].1.clone()));
        for (issuer, keys) in &sources[1..] {
            builder = builder.issuer(TrustedIssuer::new(issuer, keys.clone()));
        }
        if let Some(leeway) = s.leeway {
            builder = builder.leeway(leeway);
        }
        if let Some(path) = &s.nonce_secret_file {
            let secret = read_secret(path, "nonce_secret_file")
                .map_err(|e| Error::new(Code::GatewayConfig, e.message().to_owned()))?;
            builder = builder.nonce_service(Arc::new(NonceService::new(&secret, &audience, 300)?));
        }
        let verifier = Arc::new(builder.replay_store(replay.clone()).build()?);
        let policy = match &s.policy {
            Some(path) => {
                let mut policy = Policy::from_file(path)?;
                if let Some(mode) = policy_mode {
                    policy = policy.with_mode(mode);
                }
                Some(Arc::new(policy))
            }
            None => None,
        };
        let gateway = Gateway::new(GatewayConfig {
            mode,
            external_url: external_url.clone(),
            verifier,
            key_sources: sources,
            policy,
            proof_mode: if s.bearer_rollout.unwrap_or(false) {
                ProofMode::BearerAllowed
            } else {
                ProofMode::Required
            },
            max_body: usize::try_from(s.max_body.unwrap_or(1024 * 1024)).unwrap_or(usize::MAX),
            body_timeout: Duration::from_secs(s.body_timeout.unwrap_or(30)),
            identity_secret,
            upstream_timeout: Duration::from_secs(s.upstream_timeout.unwrap_or(30)),
            replay_store: Some(replay),
        })?;
        let mut limits = crate::http::ServeConfig::default();
        if let Some(t) = s.header_read_timeout {
            limits = limits.header_read_timeout(Duration::from_secs(t));
        }
        if let Some(max) = s.max_connections {
            limits.max_connections = max;
        }
        if let Some(max) = s.max_in_flight {
            limits = limits.max_in_flight(max);
        }
        let bind = |addr: std::net::SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::new(Code::GatewayConfig, format!("cannot listen on {addr}: {e}")))
        };
        let listener = bind(listen).await?;
        let ops = bind(ops_listen).await?;
        tracing::info!(
            mode = if auth { "auth" } else { "proxy" },
            listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            ops_listen = %ops.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            external_url = %external_url,
            issuers = %issuers.join(","),
            "gateway started"
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let ops_task = {
            let mut rx = stop_rx.clone();
            tokio::spawn(crate::http::serve(ops, gateway.ops, limits.clone(), async move {
                let _ = rx.wait_for(|s| *s).await;
            }))
        };
        crate::http::serve(listener, gateway.app, limits, async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
        let _ = ops_task.await;
        tracing::info!("gateway stopped");
        Ok::<(), Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
