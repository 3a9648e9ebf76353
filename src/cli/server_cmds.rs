//! `keybound serve` and the issuer options it shares with `keybound admin bootstrap`.

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::session::{self, runtime};
use super::{CliError, EXIT_FAILURE, print_stdout};
use crate::client::{Scope, error_from_response};
use crate::error::{Code, Error};
use crate::issuer::store::Identities;
use crate::issuer::{IssuerConfig, IssuerState};
use crate::key::Algorithm;
use crate::verify::SystemClock;

pub(crate) const SERVE_ABOUT: &str = "Run the issuer service (embedded SQLite by default, or PostgreSQL)";
pub(crate) const SERVE_LONG: &str = "\
Run the issuer service.

The issuer authenticates users and mints short tokens bound to their keys; it stores no tokens. State \
lives in the data directory (SQLite database, root secret for key derivation) or in PostgreSQL \
(--database-url postgres://…, for several replicas sharing one root secret). Settings come from flags, \
then KEYBOUND_* environment variables, then a TOML --config file (keys: issuer_id, listen, data_dir, \
database_url, database_max_connections, database_acquire_timeout, algorithm, rotation_period, root_secret_file, session_lifetime, max_session_lifetime, service_lifetime, \
leeway, max_body, login_max_failures, login_lockout, audit_retention, login_rate_per_minute, login_burst, trusted_proxies, replay_redis_url, denial_log, header_read_timeout, \
max_connections, max_trust_lifetime, max_trust_uses: 0 for no ceiling), then defaults. Connections get --header-read-timeout seconds (default 10) to send a \
request head, also between keep-alive requests; at most --max-connections (default 1024, lowered to the \
open-file limit) are open, the idlest closed first when full. Before first use, create the admin with \
`keybound admin bootstrap`. Stops gracefully on Ctrl-C or SIGTERM. Logs go to stderr (--log-format json \
for JSON lines; RUST_LOG sets the level); no secret is ever logged.

The root secret, from which the rotating signing keys are derived, is 32 random bytes stored raw in \
{data dir}/root.key (or root_secret_file / --root-secret-file), mode 0600, created on first start. \
KEYBOUND_ROOT_SECRET, the same bytes as hex or base64url, overrides the file. Every replica of one issuer \
needs the same secret: the database records its fingerprint (never the secret), and a replica with \
another secret refuses to start. The log says which source the secret came from. Keys rotate every \
rotation period; `keybound admin rotate` rotates now, and `keybound admin rotate --emergency` replaces a \
compromised secret (never edit the database for that).";
pub(crate) const SERVE_EXAMPLES: &str = "\
Examples:
  keybound serve --data-dir ./keybound-data
  keybound serve --listen 0.0.0.0:8443 --issuer-id https://issuer.example --data-dir /var/lib/keybound
  KEYBOUND_ROOT_SECRET=$(xxd -p -c 64 keybound-data/root.key) keybound serve --database-url postgres://keybound@db/keybound
  keybound serve --root-secret-file /run/secrets/keybound-root --database-url postgres://keybound@db/keybound";

/// Settings shared by `serve` and `admin bootstrap`.
#[derive(Debug, clap::Args)]
pub(crate) struct IssuerArgs {
    /// TOML configuration file
    #[arg(long, env = "KEYBOUND_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (SQLite database, root secret)
    #[arg(long, env = "KEYBOUND_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on
    #[arg(long, env = "KEYBOUND_LISTEN")]
    listen: Option<SocketAddr>,
    /// The public URL of the issuer (iss of its tokens)
    #[arg(long, env = "KEYBOUND_ISSUER_ID")]
    issuer_id: Option<String>,
    /// Database URL: sqlite:… or postgres:…
    #[arg(long, env = "KEYBOUND_DATABASE_URL")]
    database_url: Option<String>,
    /// Signing algorithm: ed25519 or es256
    #[arg(long, env = "KEYBOUND_ALGORITHM")]
    algorithm: Option<String>,
    /// Key rotation period in seconds (at least 600)
    #[arg(long, env = "KEYBOUND_ROTATION_PERIOD")]
    rotation_period: Option<u64>,
    /// A fixed signing key file instead of rotating derived keys
    #[arg(long, env = "KEYBOUND_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// Root secret file: 32 raw random bytes, mode 0600 (default {data dir}/root.key)
    #[arg(long, env = "KEYBOUND_ROOT_SECRET_FILE")]
    root_secret_file: Option<PathBuf>,
    /// Redis URL for the login/mint replay store (for replicas)
    #[arg(long, env = "KEYBOUND_REPLAY_REDIS")]
    replay_redis: Option<String>,
    /// Seconds a connection has to send a request head (also the keep-alive idle timeout); default 10
    #[arg(long, env = "KEYBOUND_HEADER_READ_TIMEOUT")]
    header_read_timeout: Option<u64>,
    /// Most connections open at once (lowered to the open-file limit); default 1024
    #[arg(long, env = "KEYBOUND_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    issuer_id: Option<String>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    database_max_connections: Option<u32>,
    database_acquire_timeout: Option<u64>,
    algorithm: Option<String>,
    rotation_period: Option<u64>,
    signing_key: Option<PathBuf>,
    root_secret_file: Option<PathBuf>,
    session_lifetime: Option<u64>,
    max_session_lifetime: Option<u64>,
    service_lifetime: Option<u64>,
    leeway: Option<u64>,
    max_body: Option<u64>,
    login_max_failures: Option<u64>,
    login_lockout: Option<u64>,
    audit_retention: Option<u64>,
    login_rate_per_minute: Option<u32>,
    login_burst: Option<u32>,
    trusted_proxies: Option<Vec<String>>,
    replay_redis_url: Option<String>,
    denial_log: Option<PathBuf>,
    header_read_timeout: Option<u64>,
    max_connections: Option<usize>,
    max_trust_lifetime: Option<u64>,
    max_trust_uses: Option<u64>,
}

fn config_error(message: String) -> CliError {
    CliError::with_exit(Error::new(Code::IssuerConfig, message), super::EXIT_USAGE)
}

impl IssuerArgs {
    /// Flags, then environment (through clap), then the file, then defaults.
    pub(crate) fn resolve(&self) -> Result<IssuerConfig, CliError> {
        self.resolve_noting_issuer_id().map(|(config, _)| config)
    }

    /// [`IssuerArgs::resolve`], and whether the issuer id was given (flag,
    /// environment or file) rather than defaulted from the listen address.
    fn resolve_noting_issuer_id(&self) -> Result<(IssuerConfig, bool), CliError> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| config_error(format!("cannot read {}: {e}", path.display())))?;
                toml::from_str(&text).map_err(|e| config_error(format!("{}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("keybound-data"));
        let mut config = IssuerConfig::new(data_dir);
        if let Some(listen) = self.listen.or(file.listen) {
            config.listen = listen;
        }
        let issuer_id = self.issuer_id.clone().or(file.issuer_id);
        let issuer_id_given = issuer_id.is_some();
        config.issuer_id = issuer_id.unwrap_or_else(|| format!("http://{}", config.listen));
        config.database_url = self.database_url.clone().or(file.database_url);
        config.database_max_connections = file.database_max_connections;
        if let Some(alg) = self.algorithm.clone().or(file.algorithm) {
            config.algorithm = Algorithm::from_name(&alg)
                .ok_or_else(|| config_error(format!("algorithm {alg:?} is not ed25519 or es256")))?;
        }
        if let Some(period) = self.rotation_period.or(file.rotation_period) {
            config.rotation_period = period;
        }
        config.signing_key_file = self.signing_key.clone().or(file.signing_key);
        config.root_secret_file = self.root_secret_file.clone().or(file.root_secret_file);
        config.replay_redis_url = self.replay_redis.clone().or(file.replay_redis_url);
        config.denial_log = file.denial_log;
        // Ranges are checked with the rest of the configuration (IssuerConfig::check).
        if let Some(seconds) = self.header_read_timeout.or(file.header_read_timeout) {
            config.serve.header_read_timeout = std::time::Duration::from_secs(seconds);
        }
        if let Some(max) = self.max_connections.or(file.max_connections) {
            config.serve.max_connections = max;
        }
        for (value, field) in [
            (file.session_lifetime, &mut config.session_lifetime),
            (file.max_session_lifetime, &mut config.max_session_lifetime),
            (file.service_lifetime, &mut config.service_lifetime),
            (file.leeway, &mut config.leeway),
            (file.login_lockout, &mut config.login_lockout),
            (file.database_acquire_timeout, &mut config.database_acquire_timeout),
            (file.audit_retention, &mut config.audit_retention),
        ] {
            if let Some(v) = value {
                *field = v;
            }
        }
        // Ranges are checked with the rest of the configuration (IssuerConfig::check).
        if let Some(max_body) = file.max_body {
            config.max_body = usize::try_from(max_body).unwrap_or(usize::MAX);
        }
        for (value, field) in [
            (file.login_rate_per_minute, &mut config.login_rate_per_minute),
            (file.login_burst, &mut config.login_burst),
        ] {
            if let Some(v) = value {
                *field = v;
            }
        }
        for proxy in file.trusted_proxies.iter().flatten() {
            let net = crate::issuer::parse_trusted_proxy(proxy).ok_or_else(|| {
                config_error(format!(
                    "trusted_proxies: {proxy:?} is not an IP address or CIDR network"
                ))
            })?;
            config.trusted_proxies.push(net);
        }
        // 0: no ceiling (delegation.md §1).
        if let Some(seconds) = file.max_trust_lifetime {
            config.max_trust_lifetime = (seconds > 0).then_some(seconds);
        }
        if let Some(uses) = file.max_trust_uses {
            config.max_trust_uses = (uses > 0).then_some(uses);
        }
        if let Some(failures) = file.login_max_failures {
            config.login_max_failures = i64::try_from(failures).unwrap_or(i64::MAX);
        }
        if let Ok(secret) = std::env::var("KEYBOUND_ROOT_SECRET") {
            let bytes = crate::encoding::decode_flexible(secret.trim().as_bytes())
                .map_err(|_| config_error("KEYBOUND_ROOT_SECRET is not hex or base64url".into()))?;
            config.root_secret = Some(Zeroizing::new(bytes));
        }
        Ok((config, issuer_id_given))
    }
}

/// `keybound serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    issuer: IssuerArgs,
    /// Log format: text or json
    #[arg(long, default_value = "text", env = "KEYBOUND_LOG_FORMAT")]
    log_format: String,
}

pub(crate) fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let config = args.issuer.resolve()?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if args.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    runtime()?.block_on(async {
        let state = IssuerState::open(config, Arc::new(SystemClock)).await?;
        if !state.store.conn().await?.is_bootstrapped().await? {
            tracing::warn!(
                "no admin exists yet: run `keybound admin bootstrap` with the same --data-dir / --database-url"
            );
        }
        crate::issuer::serve(state).await
    })?;
    Ok(ExitCode::SUCCESS)
}

