//! The issuer's settings: one typed definition ([`Settings`]) that is at
//! once the TOML config file's schema (serde), the `KEYBOUND_*` environment
//! variables and the flags (clap). Layering is generic: the file is read as
//! a TOML table, the flags and environment (clap already puts a flag over its
//! variable) are serialised to a table without their unset fields, the
//! second is laid over the first, and the result is deserialised back into
//! [`Settings`]. So the precedence is flag, then environment, then file, then
//! the defaults of [`IssuerConfig::new`], for every setting alike.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::CliError;
use crate::error::{Code, Error};
use crate::issuer::IssuerConfig;
use crate::key::Algorithm;

/// Keys of the config file whose values are paths: relative ones resolve
/// against the config file's directory, not the working directory (a
/// service manager starts the issuer in `/`).
const PATH_KEYS: [&str; 4] = ["data_dir", "signing_key", "root_secret_file", "denial_log"];

/// The default data directory, relative to the working directory. Service
/// managers should set `data_dir` (docs/operations.md).
pub(crate) const DEFAULT_DATA_DIR: &str = "keybound-data";

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines (colour only on a terminal)
    #[default]
    Text,
    /// One JSON object per line
    Json,
}

/// Every setting of `keybound serve` (and `keybound admin bootstrap`), as a
/// config file key, a `KEYBOUND_*` variable and a flag. Unset fields take the
/// next layer's value. Field doc comments are the flags' help.
#[derive(Clone, Debug, Default, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// The public URL of the issuer, the `iss` of its tokens [default: http://LISTEN]
    #[arg(long, env = "KEYBOUND_ISSUER_ID")]
    pub issuer_id: Option<String>,
    /// Address to listen on, HOST:PORT (a host name is resolved; port 0 picks a free one) [default: 127.0.0.1:8080]
    #[arg(long, env = "KEYBOUND_LISTEN")]
    pub listen: Option<String>,
    /// Serve /metrics on this HOST:PORT only, instead of on the main listener
    #[arg(long, env = "KEYBOUND_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Data directory: SQLite database, root secret, caches [default: ./keybound-data]
    #[arg(long, env = "KEYBOUND_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite:… or postgres:… [default: the SQLite file in the data dir]
    #[arg(long, env = "KEYBOUND_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Most database connections in the pool (1 to 1000) [default: sqlx's]
    #[arg(long, env = "KEYBOUND_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// Seconds to wait for a database connection (1 to 300) [default: 5]
    #[arg(long, env = "KEYBOUND_DATABASE_ACQUIRE_TIMEOUT")]
    pub database_acquire_timeout: Option<u64>,
    /// Signing algorithm: ed25519 or es256 [default: ed25519]
    #[arg(long, env = "KEYBOUND_ALGORITHM")]
    pub algorithm: Option<String>,
    /// Key rotation period in seconds (600 to 31622400, 366 days) [default: 3600]
    #[arg(long, env = "KEYBOUND_ROTATION_PERIOD")]
    pub rotation_period: Option<u64>,
    /// A fixed signing key file instead of rotating derived keys
    #[arg(long, env = "KEYBOUND_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Root secret file: 32 raw random bytes, mode 0600 [default: DATA_DIR/root.key]
    #[arg(long, env = "KEYBOUND_ROOT_SECRET_FILE")]
    pub root_secret_file: Option<PathBuf>,
    /// Default session lifetime in seconds [default: 3600]
    #[arg(long, env = "KEYBOUND_SESSION_LIFETIME")]
    pub session_lifetime: Option<u64>,
    /// Longest session a login may ask for, in seconds (at most 43200) [default: 43200]
    #[arg(long, env = "KEYBOUND_MAX_SESSION_LIFETIME")]
    pub max_session_lifetime: Option<u64>,
    /// Service-token lifetime in seconds (1 to 300) [default: 300]
    #[arg(long, env = "KEYBOUND_SERVICE_LIFETIME")]
    pub service_lifetime: Option<u64>,
    /// Clock leeway in seconds for tokens and proofs the issuer checks [default: 30]
    #[arg(long, env = "KEYBOUND_LEEWAY")]
    pub leeway: Option<u64>,
    /// Largest request body in bytes (1 KiB to 16 MiB) [default: 65536]
    #[arg(long, env = "KEYBOUND_MAX_BODY")]
    pub max_body: Option<u64>,
    /// Failed logins before a user is locked out (1 to 1000) [default: 5]
    #[arg(long, env = "KEYBOUND_LOGIN_MAX_FAILURES")]
    pub login_max_failures: Option<u64>,
    /// Lockout duration in seconds [default: 60]
    #[arg(long, env = "KEYBOUND_LOGIN_LOCKOUT")]
    pub login_lockout: Option<u64>,
    /// How long audit records are kept, in seconds (1 day to 10 years) [default: 90 days]
    #[arg(long, env = "KEYBOUND_AUDIT_RETENTION")]
    pub audit_retention: Option<u64>,
    /// Login attempts per minute from one client address [default: 60]
    #[arg(long, env = "KEYBOUND_LOGIN_RATE_PER_MINUTE")]
    pub login_rate_per_minute: Option<u32>,
    /// Login attempts one client address may burst [default: 10]
    #[arg(long, env = "KEYBOUND_LOGIN_BURST")]
    pub login_burst: Option<u32>,
    /// Proxies whose X-Forwarded-For is believed: IP addresses or CIDR networks, comma-separated
    #[arg(long, env = "KEYBOUND_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Redis URL of the replay store for login and mint proofs (needed by replicas)
    #[arg(long, alias = "replay-redis", env = "KEYBOUND_REPLAY_REDIS_URL")]
    pub replay_redis_url: Option<String>,
    /// File to append policy-denial records to (JSON lines)
    #[arg(long, env = "KEYBOUND_DENIAL_LOG")]
    pub denial_log: Option<PathBuf>,
    /// Seconds a connection has to send a request head, also the keep-alive idle timeout (1 to 300) [default: 10]
    #[arg(long, env = "KEYBOUND_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<u64>,
    /// Most connections open at once, lowered to the open-file limit [default: 1024]
    #[arg(long, env = "KEYBOUND_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most requests answered at once; the excess is answered 503 http.overloaded (1 to 1,000,000) [default: 128 per core]
    #[arg(long, env = "KEYBOUND_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Longest trust lifetime in seconds; 0 for no ceiling [default: 30 days]
    #[arg(long, env = "KEYBOUND_MAX_TRUST_LIFETIME")]
    pub max_trust_lifetime: Option<u64>,
    /// Most uses of one trust; 0 for no ceiling [default: 0]
    #[arg(long, env = "KEYBOUND_MAX_TRUST_USES")]
    pub max_trust_uses: Option<u64>,
    /// Log format
    #[arg(long, value_enum, env = "KEYBOUND_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. info or keybound=debug,info (reloaded on SIGHUP) [default: RUST_LOG, else info]
    #[arg(long, env = "KEYBOUND_LOG_LEVEL")]
    pub log_level: Option<String>,
}

pub(crate) fn config_error(message: String) -> CliError {
    CliError::with_exit(Error::new(Code::IssuerConfig, message), super::EXIT_USAGE)
}

impl Settings {
    /// The config file at `path` with `self` (flags and environment) laid
    /// over it. Relative paths in the file resolve against its directory.
    pub(crate) fn layered(&self, path: Option<&Path>) -> Result<Settings, CliError> {
        layered(self, path, &PATH_KEYS)
    }

    /// The issuer configuration these settings describe (ranges are checked
    /// later, by the issuer, with the rest).
    pub(crate) fn to_config(&self) -> Result<IssuerConfig, CliError> {
        let data_dir = self.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut c = IssuerConfig::new(data_dir);
        if let Some(listen) = &self.listen {
            c.listen = resolve("listen", listen)?;
        }
        c.metrics_listen = self
            .metrics_listen
            .as_deref()
            .map(|m| resolve("metrics_listen", m))
            .transpose()?;
        // The default issuer id keeps the host as typed (`localhost:8080`
        // stays localhost): clients sign that URL.
        c.issuer_id = match &self.issuer_id {
            Some(id) => id.clone(),
            None => format!("http://{}", self.listen.clone().unwrap_or_else(|| c.listen.to_string())),
        };
        c.database_url = self.database_url.clone();
        c.database_max_connections = self.database_max_connections;
        if let Some(alg) = &self.algorithm {
            c.algorithm = Algorithm::from_name(alg)
                .ok_or_else(|| config_error(format!("algorithm {alg:?} is not ed25519 or es256")))?;
        }
        c.signing_key_file = self.signing_key.clone();
        c.root_secret_file = self.root_secret_file.clone();
        c.replay_redis_url = self.replay_redis_url.clone();
        c.denial_log = self.denial_log.clone();
        for (value, field) in [
            (self.database_acquire_timeout, &mut c.database_acquire_timeout),
            (self.rotation_period, &mut c.rotation_period),
            (self.session_lifetime, &mut c.session_lifetime),
            (self.max_session_lifetime, &mut c.max_session_lifetime),
            (self.service_lifetime, &mut c.service_lifetime),
            (self.leeway, &mut c.leeway),
            (self.login_lockout, &mut c.login_lockout),
            (self.audit_retention, &mut c.audit_retention),
        ] {
            if let Some(v) = value {
                *field = v;
            }
        }
        for (value, field) in [
            (self.login_rate_per_minute, &mut c.login_rate_per_minute),
            (self.login_burst, &mut c.login_burst),
        ] {
            if let Some(v) = value {
                *field = v;
            }
        }
        if let Some(max_body) = self.max_body {
            c.max_body = usize::try_from(max_body).unwrap_or(usize::MAX);
        }
        if let Some(failures) = self.login_max_failures {
            c.login_max_failures = i64::try_from(failures).unwrap_or(i64::MAX);
        }
        for proxy in self.trusted_proxies.iter().flatten() {
            let net = crate::issuer::parse_trusted_proxy(proxy).ok_or_else(|| {
                config_error(format!(
                    "trusted_proxies: {proxy:?} is not an IP address or CIDR network"
                ))
            })?;
            c.trusted_proxies.push(net);
        }
        // 0: no ceiling (delegation.md §1).
        if let Some(seconds) = self.max_trust_lifetime {
            c.max_trust_lifetime = (seconds > 0).then_some(seconds);
        }
        if let Some(uses) = self.max_trust_uses {
            c.max_trust_uses = (uses > 0).then_some(uses);
        }
        if let Some(seconds) = self.header_read_timeout {
            c.serve.header_read_timeout = std::time::Duration::from_secs(seconds);
        }
        if let Some(max) = self.max_connections {
            c.serve.max_connections = max;
        }
        if let Some(max) = self.max_in_flight {
            c.serve.max_in_flight = max;
        }
        if let Ok(secret) = std::env::var("KEYBOUND_ROOT_SECRET") {
            let bytes = crate::encoding::decode_flexible(secret.trim().as_bytes())
                .map_err(|_| config_error("KEYBOUND_ROOT_SECRET is not hex or base64url".into()))?;
            c.root_secret = Some(Zeroizing::new(bytes));
        }
        Ok(c)
    }

    /// The effective settings of `config`, every one filled in, in the
    /// config file's format; URLs with their passwords redacted. The root
    /// secret is never a setting (only where it comes from is printed).
    pub(crate) fn effective(config: &IssuerConfig, log_format: LogFormat, log_level: &str) -> Settings {
        let redact = |url: &Option<String>| url.as_deref().map(crate::issuer::redact_url);
        Settings {
            issuer_id: Some(config.issuer_id.clone()),
            listen: Some(config.listen.to_string()),
            metrics_listen: config.metrics_listen.map(|a| a.to_string()),
            data_dir: Some(config.data_dir.clone()),
            database_url: Some(crate::issuer::redact_url(&config.database_url())),
            database_max_connections: config.database_max_connections,
            database_acquire_timeout: Some(config.database_acquire_timeout),
            algorithm: Some(config.algorithm.name().to_owned()),
            rotation_period: Some(config.rotation_period),
            signing_key: config.signing_key_file.clone(),
            root_secret_file: Some(config.root_secret_path()),
            session_lifetime: Some(config.session_lifetime),
            max_session_lifetime: Some(config.max_session_lifetime),
            service_lifetime: Some(config.service_lifetime),
            leeway: Some(config.leeway),
            max_body: Some(config.max_body as u64),
            login_max_failures: Some(u64::try_from(config.login_max_failures).unwrap_or(0)),
            login_lockout: Some(config.login_lockout),
            audit_retention: Some(config.audit_retention),
            login_rate_per_minute: Some(config.login_rate_per_minute),
            login_burst: Some(config.login_burst),
            trusted_proxies: Some(config.trusted_proxies.iter().map(ToString::to_string).collect()),
            replay_redis_url: redact(&config.replay_redis_url),
            denial_log: config.denial_log.clone(),
            header_read_timeout: Some(config.serve.header_read_timeout.as_secs()),
            max_connections: Some(config.serve.max_connections),
            max_in_flight: Some(config.serve.max_in_flight),
            max_trust_lifetime: Some(config.max_trust_lifetime.unwrap_or(0)),
            max_trust_uses: Some(config.max_trust_uses.unwrap_or(0)),
            log_format: Some(log_format),
            log_level: Some(log_level.to_owned()),
        }
    }
}

/// `over` (flags and environment, as clap parsed them) laid over the config
/// file at `path`: generic over the settings type, so every command with a
/// config file layers the same way. `path_keys` are the file's path-valued
/// keys, resolved against the file's directory.
pub(crate) fn layered<T: Serialize + serde::de::DeserializeOwned>(
    over: &T,
    path: Option<&Path>,
    path_keys: &[&str],
) -> Result<T, CliError> {
    let mut table = match path {
        Some(path) => read_file(path, path_keys)?,
        None => toml::Table::new(),
    };
    let over = toml::Table::try_from(over)
        .map_err(|e| CliError::new(super::CODE_INTERNAL, format!("settings: {e}"), super::EXIT_FAILURE))?;
    table.extend(over);
    table.try_into().map_err(|e: toml::de::Error| {
        config_error(match path {
            Some(path) => format!("{}: {}", path.display(), e.message()),
            None => e.message().to_owned(),
        })
    })
}

/// Reads a config file as a TOML table, resolving relative path values
/// against the file's directory.
fn read_file(path: &Path, path_keys: &[&str]) -> Result<toml::Table, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| config_error(format!("cannot read {}: {e}", path.display())))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| config_error(format!("{}: {}", path.display(), e.message())))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for &key in path_keys {
        if let Some(toml::Value::String(value)) = table.get_mut(key)
            && Path::new(value.as_str()).is_relative()
        {
            *value = base.join(&*value).to_string_lossy().into_owned();
        }
    }
    Ok(table)
}

/// `HOST:PORT` to a socket address: an IP literal as is, a host name
/// through the resolver (its first address).
pub(crate) fn resolve(what: &str, text: &str) -> Result<SocketAddr, CliError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |why: String| {
        config_error(format!(
            "{what} {text:?}: {why} (expected HOST:PORT, e.g. 127.0.0.1:8080)"
        ))
    };
    let mut addrs = text.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs.next().ok_or_else(|| bad("the host name has no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("keybound.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flags_lie_over_the_file_and_unset_flags_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "leeway = 10\nrotation_period = 7200\n");
        let flags = Settings {
            leeway: Some(20),
            ..Settings::default()
        };
        let merged = flags.layered(Some(&path)).unwrap();
        assert_eq!(merged.leeway, Some(20));
        assert_eq!(merged.rotation_period, Some(7200));
        assert_eq!(merged.max_body, None);
    }

    #[test]
    fn relative_paths_in_the_file_resolve_against_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "data_dir = \"data\"\nroot_secret_file = \"/run/secrets/root\"\n",
        );
        let merged = Settings::default().layered(Some(&path)).unwrap();
        assert_eq!(merged.data_dir, Some(dir.path().join("data")));
        assert_eq!(merged.root_secret_file, Some(PathBuf::from("/run/secrets/root")));
        // A flag's relative path stays relative to the working directory.
        let flags = Settings {
            data_dir: Some(PathBuf::from("here")),
            ..Settings::default()
        };
        assert_eq!(
            flags.layered(Some(&path)).unwrap().data_dir,
            Some(PathBuf::from("here"))
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = Settings::default()
            .layered(Some(&write(dir.path(), "leeway_s = 3\n")))
            .unwrap_err();
        assert_eq!(e.code(), "issuer.config");
        assert!(e.message().contains("leeway_s"), "{}", e.message());
        let e = Settings::default()
            .layered(Some(&write(dir.path(), "leeway = \"3\"\n")))
            .unwrap_err();
        assert_eq!(e.code(), "issuer.config");
        let e = Settings::default()
            .layered(Some(&write(dir.path(), "log_format = \"xml\"\n")))
            .unwrap_err();
        assert!(e.message().contains("xml"), "{}", e.message());
    }

    #[test]
    fn host_names_resolve_and_keep_the_issuer_id_as_typed() {
        let settings = Settings {
            listen: Some("localhost:0".into()),
            ..Settings::default()
        };
        let config = settings.to_config().unwrap();
        assert!(config.listen.ip().is_loopback(), "{}", config.listen);
        assert_eq!(config.issuer_id, "http://localhost:0");
        let bad = Settings {
            listen: Some("no-port".into()),
            ..Settings::default()
        };
        assert_eq!(bad.to_config().unwrap_err().code(), "issuer.config");
    }

    #[test]
    fn effective_settings_round_trip_and_hide_passwords() {
        let settings = Settings {
            database_url: Some("postgres://keybound:hunter2@db/keybound".into()),
            replay_redis_url: Some("redis://:sesame@cache:6379/".into()),
            ..Settings::default()
        };
        let config = settings.to_config().unwrap();
        let effective = Settings::effective(&config, LogFormat::Json, "info");
        let text = toml::to_string(&effective).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("sesame"), "{text}");
        let back: Settings = toml::from_str(&text).unwrap();
        assert_eq!(back.leeway, Some(config.leeway));
        assert_eq!(back.log_format, Some(LogFormat::Json));
    }
}
