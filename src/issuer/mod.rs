//! The issuer service: the Keystone of keybound.
//!
//! It knows domains, projects, users and role assignments, authenticates
//! users, and mints short tokens bound to the caller's key. It stores no
//! tokens. [`router`] builds the HTTP API (tests drive it directly);
//! [`serve`] binds it and shuts down gracefully.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/login` | password or registered-key login + proof of possession → session token |
//! | `POST /v1/tokens` | session token + proof → service token for one audience, or from a trust |
//! | `/v1/trusts…` | session token + proof: create, list, show, delete trusts (delegation) |
//! | `POST /v1/exchange` | a peer issuer's token for this issuer + proof → this issuer's token (federation) |
//! | `GET /.well-known/keybound/keys` | the COSE_KeySet (current, next, previous keys) |
//! | `GET /.well-known/keybound/issuer` | issuer metadata (JSON) |
//! | `/v1/admin/…` | admin API, protected by keybound itself (admin tokens + proofs) |
//! | `GET /healthz`, `/readyz`, `/metrics` | liveness, readiness (database writable, replay store reachable), Prometheus |

mod admin;
mod api;
mod federation;
mod health;
pub mod keys;
mod login_limit;
#[cfg(feature = "client")]
pub mod loopback;
pub use login_limit::parse_trusted_proxy;
mod metrics;
pub mod openapi;
pub mod password;
pub mod store;
mod trusts;
mod workplans;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use zeroize::Zeroizing;

pub use crate::names::{Name, ProjectName, UserName};
pub use keys::IssuerKeys;
pub use metrics::Metrics;
pub use store::Store;
use store::{Audit, Identities, Logins, RootSecrets};

pub use keys::Rotation;

use crate::error::{Code, Error, Result, err};
use crate::key::Algorithm;
use crate::policy::{JsonLinesFile, Policy, RecordSink, TracingRecords};
use crate::token::MAX_SERVICE_LIFETIME;
use crate::verify::{AsyncReplayStore, Clock, MemoryReplayStore, SystemClock, TrustedIssuer, Verifier};

/// The default ceiling of a trust's lifetime: 30 days.
pub const DEFAULT_MAX_TRUST_LIFETIME: u64 = 30 * 86_400;

/// Issuer configuration. Every field has a default (see [`IssuerConfig::new`]).
/// `Debug` hides the root secret and the database URL's password.
#[derive(Clone)]
pub struct IssuerConfig {
    /// The issuer id: the public base URL clients use (`iss` of every token,
    /// and the base of every target URI proofs name). Default `http://{listen}`.
    pub issuer_id: String,
    /// Address to bind. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Data directory: SQLite database, root secret. Default `./keybound-data`.
    pub data_dir: PathBuf,
    /// Database URL (`sqlite:` or `postgres:`). Default: SQLite in the data dir.
    pub database_url: Option<String>,
    /// Most database connections open at once, 1 to 1000. Default 8 for
    /// SQLite, 16 for PostgreSQL.
    pub database_max_connections: Option<u32>,
    /// Seconds a request waits for a free database connection before it is
    /// refused with `issuer.unavailable`, 1 to 300. Default 5.
    pub database_acquire_timeout: u64,
    /// Signature algorithm of derived keys. Default Ed25519.
    pub algorithm: Algorithm,
    /// Key rotation period in seconds (≥ 600). Default 3600.
    pub rotation_period: u64,
    /// A fixed signing key file instead of derived keys (no rotation).
    pub signing_key_file: Option<PathBuf>,
    /// Root secret for derived keys (replicas must share it); read from
    /// [`IssuerConfig::root_secret_path`] when not given.
    pub root_secret: Option<Zeroizing<Vec<u8>>>,
    /// The root secret file: 32 raw random bytes, mode 0600, created if
    /// missing. Default `data_dir/root.key`.
    pub root_secret_file: Option<PathBuf>,
    /// Default session lifetime. Default 3600 s.
    pub session_lifetime: u64,
    /// Largest session lifetime a client may ask for. Default and ceiling 12 h.
    pub max_session_lifetime: u64,
    /// Default (and largest) service-token lifetime. Default and ceiling 300 s.
    pub service_lifetime: u64,
    /// Clock leeway. Default 30 s.
    pub leeway: u64,
    /// Largest request body. Default 64 KiB.
    pub max_body: usize,
    /// Failed logins before a lockout. Default 5.
    pub login_max_failures: i64,
    /// Lockout duration in seconds. Default 60.
    pub login_lockout: u64,
    /// Seconds the audit log (and the per-minute totals of failed logins
    /// of names that are not users) are kept; older records are pruned
    /// hourly. 1 day to 10 years. Default 90 days.
    pub audit_retention: u64,
    /// Logins a minute from one source (an IPv4 address or an IPv6 /64)
    /// before `issuer.login_rate_limited`, 1 to 1,000,000. Default 60.
    pub login_rate_per_minute: u32,
    /// Logins one source may make at once, 1 to 100,000. Default 10.
    pub login_burst: u32,
    /// Peers whose `X-Forwarded-For` names the source of a login (addresses
    /// or CIDR networks). Default none: the source is the TCP peer.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Redis URL for the replay store of every proof the issuer checks
    /// (login, mint, admin), needed when
    /// several replicas serve one issuer id. Default: in memory.
    pub replay_redis_url: Option<String>,
    /// Where admin-API policy denials are recorded (JSON lines). Default: not kept.
    pub denial_log: Option<PathBuf>,
    /// Longest lifetime of a trust in seconds, 60 s to 10 years; a trust
    /// created without an expiry gets it. `None`: trusts may live forever.
    /// Default 30 days.
    pub max_trust_lifetime: Option<u64>,
    /// Most uses (mints) a trust may be given, 1 to 1,000,000,000; a trust
    /// created without a number of uses gets it. `None`: unlimited uses
    /// allowed. Default `None`.
    pub max_trust_uses: Option<u64>,
    /// Connection deadlines and cap (header read / keep-alive idle timeout,
    /// most open connections). Default [`crate::http::ServeConfig::default`].
    pub serve: crate::http::ServeConfig,
    /// A separate listener for `/metrics` only; then the main listener does
    /// not serve it. Default `None`: `/metrics` is on the main listener.
    pub metrics_listen: Option<SocketAddr>,
}

impl std::fmt::Debug for IssuerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerConfig")
            .field("issuer_id", &self.issuer_id)
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url()))
            .field("database_max_connections", &self.database_max_connections)
            .field("database_acquire_timeout", &self.database_acquire_timeout)
            .field("algorithm", &self.algorithm)
            .field("rotation_period", &self.rotation_period)
            .field("signing_key_file", &self.signing_key_file)
            .field("root_secret", &self.root_secret.as_ref().map(|_| "[redacted]"))
            .field("root_secret_file", &self.root_secret_file)
            .field("session_lifetime", &self.session_lifetime)
            .field("max_session_lifetime", &self.max_session_lifetime)
            .field("service_lifetime", &self.service_lifetime)
            .field("leeway", &self.leeway)
            .field("max_body", &self.max_body)
            .field("login_max_failures", &self.login_max_failures)
            .field("login_lockout", &self.login_lockout)
            .field("audit_retention", &self.audit_retention)
            .field("login_rate_per_minute", &self.login_rate_per_minute)
            .field("login_burst", &self.login_burst)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("replay_redis_url", &self.replay_redis_url.as_deref().map(redact_url))
            .field("denial_log", &self.denial_log)
            .field("max_trust_lifetime", &self.max_trust_lifetime)
            .field("max_trust_uses", &self.max_trust_uses)
            .field("serve", &self.serve)
            .field("metrics_listen", &self.metrics_listen)
            .finish()
    }
}

/// The data dir (owner only), the SQLite file when it is the default (0600),
/// and the migrated database.
async fn open_store(config: &IssuerConfig) -> Result<Store> {
    create_private_dir(&config.data_dir)?;
    if config.database_url.is_none() {
        // SQLite creates its -wal and -shm files with the database's mode.
        create_private_file(&config.data_dir.join("keybound.db"))?;
    }
    let pool = store::PoolOptions {
        max_connections: config.database_max_connections,
        acquire_timeout: std::time::Duration::from_secs(config.database_acquire_timeout),
    };
    Store::connect(&config.database_url(), pool).await
}

/// Creates `dir` (and missing parents) readable by the owner only. An
/// existing directory is kept as it is, with a warning when others can read it:
/// it holds the root secret, password hashes and the audit log.
fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    let cannot = |e: std::io::Error| {
        Error::new(
            Code::IssuerConfig,
            format!("cannot create the data dir {}: {e}", dir.display()),
        )
    };
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(cannot)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).map_err(cannot)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                data_dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the data dir is accessible by group or others; `chmod 700` it"
            );
        }
    }
    Ok(())
}

/// Creates an empty file with mode 0600 if it does not exist yet.
fn create_private_file(path: &std::path::Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => err(
            Code::IssuerConfig,
            format!("cannot create the database {}: {e}", path.display()),
        ),
    }
}

/// Where the root secret comes from, for logs and `serve --check-config`
/// (never the secret itself).
pub fn root_secret_source(config: &IssuerConfig) -> String {
    if config.signing_key_file.is_some() {
        "none: a fixed signing key file is used".to_owned()
    } else if config.root_secret.is_some() {
        "the configuration (KEYBOUND_ROOT_SECRET for the CLI)".to_owned()
    } else {
        format!("the file {}", config.root_secret_path().display())
    }
}

/// Whether the issuer's database exists: for the embedded SQLite default,
/// whether its file is in the data dir; a configured database URL is
/// assumed to exist (its server is asked when it is opened).
pub fn database_exists(config: &IssuerConfig) -> bool {
    config.database_url.is_some() || config.data_dir.join("keybound.db").exists()
}

/// One process per SQLite data dir: an exclusive lock on `keybound.lock` in
/// it, released when the process (or the state holding it) ends, so a
/// crashed issuer leaves no stale lock. PostgreSQL deployments run several
/// replicas and take no lock.
fn lock_data_dir(config: &IssuerConfig) -> Result<Option<std::fs::File>> {
    if config
        .database_url
        .as_deref()
        .is_some_and(|url| !url.starts_with("sqlite:"))
    {
        return Ok(None);
    }
    create_private_dir(&config.data_dir)?;
    let path = config.data_dir.join("keybound.lock");
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(|e| {
        Error::new(
            Code::IssuerConfig,
            format!("cannot open the data dir lock {}: {e}", path.display()),
        )
    })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => err(
            Code::IssuerDataDirInUse,
            format!(
                "another keybound issuer is serving the data dir {}: one SQLite data dir is served by one process \
                 (stop the other one, or use PostgreSQL for several replicas)",
                config.data_dir.display()
            ),
        ),
        Err(std::fs::TryLockError::Error(e)) => err(
            Code::IssuerConfig,
            format!("cannot lock the data dir {}: {e}", path.display()),
        ),
    }
}

/// `url` with its secrets replaced, for logs and output: the password of
/// `scheme://user:password@host/…` and the value of a `password=` query
/// parameter (both forms sqlx and Redis accept).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{user}:[redacted]@{host}")
        }
        _ => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=[redacted]"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl IssuerConfig {
    /// Defaults for a local issuer listening on 127.0.0.1:8080.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let listen: SocketAddr = ([127, 0, 0, 1], 8080).into();
        IssuerConfig {
            issuer_id: format!("http://{listen}"),
            listen,
            data_dir: data_dir.into(),
            database_url: None,
            database_max_connections: None,
            database_acquire_timeout: 5,
            algorithm: Algorithm::EdDSA,
            rotation_period: 3600,
            signing_key_file: None,
            root_secret: None,
            root_secret_file: None,
            session_lifetime: crate::token::DEFAULT_SESSION_LIFETIME,
            max_session_lifetime: crate::token::MAX_SESSION_LIFETIME,
            service_lifetime: MAX_SERVICE_LIFETIME,
            leeway: crate::token::DEFAULT_LEEWAY,
            max_body: 64 * 1024,
            login_max_failures: 5,
            login_lockout: 60,
            audit_retention: 90 * 86_400,
            login_rate_per_minute: 60,
            login_burst: 10,
            trusted_proxies: Vec::new(),
            replay_redis_url: None,
            denial_log: None,
            max_trust_lifetime: Some(DEFAULT_MAX_TRUST_LIFETIME),
            max_trust_uses: None,
            serve: crate::http::ServeConfig::default(),
            metrics_listen: None,
        }
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir.join("keybound.db").display()))
    }

    /// The root secret file in effect.
    pub fn root_secret_path(&self) -> PathBuf {
        self.root_secret_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("root.key"))
    }

    /// The audience of admin tokens: `{issuer_id}/admin`.
    pub fn admin_audience(&self) -> String {
        format!("{}/admin", self.issuer_id.trim_end_matches('/'))
    }

    /// Checks every setting's range; [`IssuerState::open`] calls it too.
    pub fn check(&self) -> Result<()> {
        crate::proof::normalize_uri(&self.issuer_id).map_err(|e| {
            Error::new(
                Code::IssuerConfig,
                format!("the issuer id must be an http(s) URL: {}", e.message()),
            )
        })?;
        if self.max_session_lifetime > crate::token::MAX_SESSION_LIFETIME
            || self.session_lifetime > self.max_session_lifetime
            || self.session_lifetime == 0
        {
            return err(
                Code::IssuerConfig,
                "session lifetimes must satisfy 0 < default ≤ max ≤ 12 h",
            );
        }
        if !(keys::MIN_ROTATION_PERIOD..=keys::MAX_ROTATION_PERIOD).contains(&self.rotation_period) {
            return err(
                Code::IssuerConfig,
                format!(
                    "rotation_period must be {} to {} s",
                    keys::MIN_ROTATION_PERIOD,
                    keys::MAX_ROTATION_PERIOD
                ),
            );
        }
        if self.leeway > crate::verify::MAX_LEEWAY {
            return err(
                Code::IssuerConfig,
                format!("the leeway must be at most {}s", crate::verify::MAX_LEEWAY),
            );
        }
        if !(1..=1000).contains(&self.login_max_failures) || self.login_lockout == 0 || self.login_lockout > 30 * 86_400
        {
            return err(
                Code::IssuerConfig,
                "login_max_failures must be 1 to 1000, and login_lockout 1 s to 30 days",
            );
        }
        if self.database_max_connections.is_some_and(|n| !(1..=1000).contains(&n))
            || !(1..=300).contains(&self.database_acquire_timeout)
        {
            return err(
                Code::IssuerConfig,
                "database_max_connections must be 1 to 1000, and database_acquire_timeout 1 to 300 s",
            );
        }
        if !(86_400..=3650 * 86_400).contains(&self.audit_retention) {
            return err(
                Code::IssuerConfig,
                "audit_retention must be 1 day to 10 years (in seconds)",
            );
        }
        if !(1..=1_000_000).contains(&self.login_rate_per_minute) || !(1..=100_000).contains(&self.login_burst) {
            return err(
                Code::IssuerConfig,
                "login_rate_per_minute must be 1 to 1000000, and login_burst 1 to 100000",
            );
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body) {
            return err(Code::IssuerConfig, "max_body must be 1 KiB to 16 MiB");
        }
        if self.service_lifetime == 0 || self.service_lifetime > MAX_SERVICE_LIFETIME {
            return err(Code::IssuerConfig, "the service-token lifetime is 1 to 300 s");
        }
        if self
            .max_trust_lifetime
            .is_some_and(|s| !(60..=3650 * 86_400).contains(&s))
            || self.max_trust_uses.is_some_and(|n| !(1..=1_000_000_000).contains(&n))
        {
            return err(
                Code::IssuerConfig,
                "max_trust_lifetime must be 60 s to 10 years, and max_trust_uses 1 to 1000000000",
            );
        }
        let header_timeout = self.serve.header_read_timeout;
        if header_timeout < std::time::Duration::from_secs(1) || header_timeout > std::time::Duration::from_secs(300) {
            return err(Code::IssuerConfig, "header_read_timeout must be 1 to 300 s");
        }
        if !(1..=1_000_000).contains(&self.serve.max_connections) {
            return err(Code::IssuerConfig, "max_connections must be 1 to 1,000,000");
        }
        if !(1..=1_000_000).contains(&self.serve.max_in_flight) {
            return err(Code::IssuerConfig, "max_in_flight must be 1 to 1,000,000");
        }
        Ok(())
    }
}

/// Everything the handlers share.
pub struct IssuerState {
    /// Configuration.
    pub config: IssuerConfig,
    /// Database.
    pub store: Store,
    /// Signing keys.
    pub keys: Arc<IssuerKeys>,
    /// Verifies session tokens and login proofs (audience: the issuer id).
    pub(crate) sessions: Arc<Verifier<dyn AsyncReplayStore>>,
    /// The HTTP binding's request checks, for login (the layers have their own).
    pub(crate) binding: crate::http::layer::Binding,
    /// The replay store of every proof the issuer checks (memory or Redis).
    pub(crate) replay: Arc<dyn AsyncReplayStore>,
    /// The per-source login budget (§5.5).
    pub(crate) login_limit: login_limit::LoginLimiter,
    /// Metrics.
    pub metrics: Metrics,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The last `/readyz` result.
    pub(crate) readiness: health::Readiness,
    /// The fingerprint of this process's root secret (derived keys only).
    root_fingerprint: Option<String>,
    /// Kids that an emergency replacement retired (spec/issuer.md §7.2).
    retired_kids: std::sync::RwLock<std::collections::HashSet<Vec<u8>>>,
    /// The peers' key sets: the issuers of the exchange (spec/federation.md).
    pub(crate) peer_keys: federation::PeerKeys,
    /// The exclusive lock on the SQLite data dir, held while the state lives.
    _data_dir_lock: Option<std::fs::File>,
    /// Mints counted for their audit rows and not yet written (§10.4).
    pub mint_audit: store::MintAudit,
}

impl std::fmt::Debug for IssuerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuerState({})", self.config.issuer_id)
    }
}

impl IssuerState {
    /// Opens the database (running migrations), loads or derives keys.
    pub async fn open(config: IssuerConfig, clock: Arc<dyn Clock>) -> Result<Arc<Self>> {
        config.check()?;
        let data_dir_lock = lock_data_dir(&config)?;
        let store = open_store(&config).await?;
        let mut root_fingerprint = None;
        let keys = Arc::new(match &config.signing_key_file {
            Some(path) => IssuerKeys::fixed(crate::key::read_signing_key_file(path)?, clock.clone()),
            None => {
                let source = root_secret_source(&config);
                let root = match &config.root_secret {
                    Some(root) => {
                        if config.root_secret_path().exists() {
                            tracing::warn!(
                                file = %config.root_secret_path().display(),
                                "the root secret given in the configuration overrides the root secret file"
                            );
                        }
                        root.clone()
                    }
                    None => keys::load_or_create_root(&config.root_secret_path())?,
                };
                let fingerprint = keys::root_fingerprint(&root);
                let recorded = store
                    .conn()
                    .await?
                    .record_root_fingerprint(&fingerprint, clock.now() as i64)
                    .await?;
                if recorded != fingerprint {
                    return err(
                        Code::IssuerRootSecretMismatch,
                        format!(
                            "the root secret from {source} has fingerprint {fingerprint}, but this issuer's database \
                             records {recorded}: every replica of one issuer must use the same root secret. Copy \
                             root.key (32 raw bytes, mode 0600) from a replica that runs to {}, or set \
                             KEYBOUND_ROOT_SECRET to its hex (xxd -p -c 64 root.key); after an emergency \
                             replacement (keybound admin rotate --emergency), copy the new root.key it wrote. To \
                             replace the secret on purpose, run keybound admin rotate --emergency with this \
                             issuer's settings (every session ends: users log in again)",
                            config.root_secret_path().display()
                        ),
                    );
                }
                tracing::info!(source = %source, fingerprint = %fingerprint, "root secret loaded");
                root_fingerprint = Some(fingerprint);
                IssuerKeys::derived(
                    root,
                    config.algorithm,
                    config.rotation_period,
                    config.service_lifetime + config.leeway,
                    config.max_session_lifetime + config.leeway,
                    clock.clone(),
                )?
            }
        });
        let replay: Arc<dyn AsyncReplayStore> = match &config.replay_redis_url {
            #[cfg(feature = "redis")]
            Some(url) => {
                let store = crate::verify::RedisReplayStore::connect(url, Default::default()).await?;
                store.fence_if_new(clock.now()).await?;
                Arc::new(store)
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => return err(Code::IssuerConfig, "this build has no Redis support"),
            // Fenced on the issuer's clock: a login, mint or admin proof made
            // before this start may have been accepted before it.
            None => Arc::new(MemoryReplayStore::default().fenced_at(clock.now())),
        };
        let sessions = Verifier::builder(
            &config.issuer_id,
            TrustedIssuer::new(&config.issuer_id, keys.internal_source()),
        )
        .session_tokens()
        .leeway(config.leeway)
        .replay_store(replay.clone())
        .clock(clock.clone())
        .build()?;
        let binding = crate::http::layer::Binding::new(&config.issuer_id)?.with_max_body(config.max_body);
        let login_limit = login_limit::LoginLimiter::new(
            config.login_rate_per_minute,
            config.login_burst,
            config.trusted_proxies.clone(),
        );
        let peer_keys = federation::PeerKeys::new(&config.data_dir);
        let state = Arc::new(IssuerState {
            _data_dir_lock: data_dir_lock,
            peer_keys,
            config,
            store,
            keys,
            sessions: Arc::new(sessions),
            binding,
            replay,
            login_limit,
            metrics: Metrics::default(),
            clock,
            readiness: Default::default(),
            root_fingerprint,
            retired_kids: Default::default(),
            mint_audit: Default::default(),
        });
        // Rotations and retired kids before the first request, then every few seconds.
        state.refresh_key_state().await?;
        tokio::spawn(watch_key_state(Arc::downgrade(&state)));
        // Peers load in their own task: a peer that does not answer never
        // delays start-up or the key-state poll.
        tokio::spawn(watch_peers(Arc::downgrade(&state)));
        tokio::spawn(prune_hourly(Arc::downgrade(&state)));
        tokio::spawn(forget_idle_login_sources(Arc::downgrade(&state)));
        tokio::spawn(write_mint_counts(Arc::downgrade(&state)));
        Ok(state)
    }

    /// Writes the mints counted in memory to their audit rows (§10.4).
    pub async fn flush_mint_audit(&self) -> Result<()> {
        self.mint_audit.flush(&self.store, self.now() as i64).await
    }

    /// Drops the audit entries and the totals of failed logins of unknown
    /// names older than the retention horizon, in one transaction; returns
    /// how many of each.
    pub async fn prune_old_records(&self) -> Result<(u64, u64)> {
        let before = self.now() as i64 - self.config.audit_retention as i64;
        let mut tx = self.store.begin().await?;
        let audit = tx.prune_audit(before).await?;
        let totals = tx.prune_unknown_login_totals(before).await?;
        tx.commit().await?;
        Ok((audit, totals))
    }

    /// Current time.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Re-reads what other replicas (or `keybound admin rotate --emergency`)
    /// may have changed: the rotation offsets, the retired kids, and the
    /// root-secret fingerprint. A fingerprint that is no longer this
    /// process's means its secret was replaced: it stops signing, publishing
    /// and accepting its keys (`issuer.root_secret_mismatch`) until it is
    /// restarted with the new secret. Runs at start-up and every
    /// [`keys::KEY_STATE_POLL`].
    pub async fn refresh_key_state(&self) -> Result<()> {
        let mut conn = self.store.conn().await?;
        if let Some(mine) = &self.root_fingerprint {
            let recorded = conn.root_fingerprint().await?;
            if recorded.as_deref() != Some(mine.as_str()) && !self.keys.is_replaced() {
                tracing::error!(
                    fingerprint = %mine,
                    recorded = recorded.as_deref().unwrap_or("-"),
                    "the database records another root secret (an emergency replacement): this replica stops \
                     signing and accepting its keys; restart it with the new root secret"
                );
                self.keys.mark_replaced();
            }
            if let Some(recorded_at) = conn.root_recorded_at().await? {
                self.keys.set_root_since(recorded_at);
            }
        }
        let period = self.config.rotation_period;
        let window = self.config.max_session_lifetime + self.config.leeway;
        // Far enough back for the oldest epoch the internal set covers (one
        // period more: the rotation that began it may be older).
        let since = keys::lookback_start(self.now(), period, window).saturating_sub(period);
        let rotations = conn.rotations_since(since as i64).await?;
        self.keys.set_schedule(keys::RotationSchedule::new(rotations));
        let retired = conn.retired_kids().await?;
        *self.retired_kids.write().unwrap_or_else(|p| p.into_inner()) = retired.into_iter().collect();
        Ok(())
    }

    /// Whether `kid` names a key retired by an emergency replacement.
    pub fn is_retired_kid(&self, kid: &[u8]) -> bool {
        self.retired_kids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(kid)
    }
}

/// Keeps the rotation schedule, the retired kids and the root-secret check
/// current, as long as the issuer lives.
async fn watch_key_state(state: std::sync::Weak<IssuerState>) {
    let mut every = tokio::time::interval(keys::KEY_STATE_POLL);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(state) = state.upgrade() else { return };
        if let Err(e) = state.refresh_key_state().await {
            tracing::warn!(error = %e, "reading the key state from the database failed; retrying");
        }
    }
}

/// Keeps the federation peers and their key sources current (at once, then
/// every [`keys::KEY_STATE_POLL`]), as long as the issuer lives.
async fn watch_peers(state: std::sync::Weak<IssuerState>) {
    let mut every = tokio::time::interval(keys::KEY_STATE_POLL);
    loop {
        every.tick().await;
        let Some(state) = state.upgrade() else { return };
        if let Err(e) = state.refresh_peers().await {
            tracing::warn!(error = %e, "reading the federation peers from the database failed; retrying");
        }
    }
}

/// A token refused at T6 (`cose.key_unknown`) whose kid an emergency
/// replacement retired is answered `session.key_replaced` instead: the
/// client is told to log in again rather than suspect tampering. Only the
/// (unauthenticated) kid is read; the token stays refused.
async fn explain_replaced_keys(
    axum::extract::State(state): axum::extract::State<Arc<IssuerState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let authorization = request.headers().get(http::header::AUTHORIZATION).cloned();
    let response = next.run(request).await;
    let refused_at_t6 = response.status() == http::StatusCode::UNAUTHORIZED
        && response
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .is_some_and(|v| v.as_bytes() == format!("KB error=\"{}\"", Code::CoseKeyUnknown).as_bytes());
    if !refused_at_t6 {
        return response;
    }
    let kid = authorization.as_ref().and_then(|value| {
        let token = value.to_str().ok()?.trim().split_once(' ')?.1.trim();
        let bytes = crate::encoding::b64url_decode(token).ok()?;
        let sign1 = crate::cose::parse_sign1(&bytes, crate::cose::Tagging::Cwt).ok()?;
        sign1.kid.map(<[u8]>::to_vec)
    });
    match kid {
        Some(kid) if state.is_retired_kid(&kid) => {
            state.metrics.failure(Code::SessionKeyReplaced.as_str());
            crate::http::error_response(
                &Error::new(
                    Code::SessionKeyReplaced,
                    "the issuer's keys were replaced after this token was issued; log in again",
                ),
                None,
            )
        }
        _ => response,
    }
}

/// Prunes old records at start and every hour, as long as the issuer lives.
async fn prune_hourly(state: std::sync::Weak<IssuerState>) {
    let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every_hour.tick().await;
        let Some(state) = state.upgrade() else { return };
        match state.prune_old_records().await {
            Ok((0, 0)) => {}
            Ok((audit, totals)) => tracing::info!(audit, totals, "pruned records older than the audit retention"),
            Err(e) => tracing::warn!(error = %e, "pruning old audit records failed; retrying in an hour"),
        }
    }
}

/// Writes the counted mints to their audit rows every few seconds, as long
/// as the issuer lives: a crash loses at most that many seconds of counts.
async fn write_mint_counts(state: std::sync::Weak<IssuerState>) {
    let mut every = tokio::time::interval(store::MINT_AUDIT_FLUSH);
    loop {
        every.tick().await;
        let Some(state) = state.upgrade() else { return };
        if let Err(e) = state.flush_mint_audit().await {
            tracing::warn!(error = %e, unwritten = state.mint_audit.unwritten(), "writing the counts of token mints to the audit log failed; retrying");
        }
    }
}

/// Keeps the login limiter's memory to the sources seen in about the last
/// minute (or burst / rate, if longer).
async fn forget_idle_login_sources(state: std::sync::Weak<IssuerState>) {
    let mut every_minute = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every_minute.tick().await;
        let Some(state) = state.upgrade() else { return };
        state.login_limit.retain_recent();
    }
}

/// The issuer's HTTP API. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: logins are
/// limited per client address and refused without one.
pub fn router(state: Arc<IssuerState>) -> Result<Router> {
    let admin_verifier = Verifier::builder(
        state.config.admin_audience(),
        TrustedIssuer::new(&state.config.issuer_id, state.keys.internal_source()),
    )
    .leeway(state.config.leeway)
    .replay_store(state.replay.clone())
    .clock(state.clock.clone())
    .build()?;
    let policy = Policy::from_toml(
        "mode = \"enforce\"\n[[rule]]\nname = \"admin API\"\npath = \"/v1/admin/**\"\nroles = [\"admin\"]\n",
    )?;
    let records: Arc<dyn RecordSink> = match &state.config.denial_log {
        Some(path) => {
            let file = JsonLinesFile::open(path)?;
            state.metrics.count_dropped_records(file.dropped_counter());
            Arc::new(file)
        }
        None => Arc::new(TracingRecords),
    };
    let admin_layer = protected(&state, Arc::new(admin_verifier))?
        .policy(Arc::new(policy))
        .records(records);
    let session_layer = protected(&state, state.sessions.clone())?;
    // The exchange trusts the peers only, each with its own key set; never
    // this issuer's own keys (spec/federation.md §4).
    let exchange_verifier = Verifier::builder_with_directory(&state.config.issuer_id, state.peer_keys.directory())
        .leeway(state.config.leeway)
        .replay_store(state.replay.clone())
        .clock(state.clock.clone())
        .build()?;
    let exchange_layer = protected(&state, Arc::new(exchange_verifier))?;
    let explain_exchange = axum::middleware::from_fn_with_state(state.clone(), federation::explain_exchange_refusals);
    let replaced = || axum::middleware::from_fn_with_state(state.clone(), explain_replaced_keys);
    // Every route that takes a token goes through one of these layers (H1,
    // T, H2, P and A1 of the HTTP binding, as for any service): session
    // tokens for minting, admin tokens for the admin API. route_layer: only
    // these routes are verified, so an unknown path is a plain 404 rather
    // than a demand for a token.
    let (router, _) = OpenApiRouter::new()
        .merge(if state.config.metrics_listen.is_some() {
            api::public_routes()
        } else {
            api::routes()
        })
        .merge(
            api::session_routes()
                .merge(trusts::session_routes())
                .route_layer(session_layer)
                .route_layer(replaced()),
        )
        .merge(
            federation::exchange_routes()
                .route_layer(exchange_layer)
                .route_layer(explain_exchange),
        )
        .merge(admin::routes().route_layer(admin_layer).route_layer(replaced()))
        .split_for_parts();
    Ok(router.with_state(state))
}

/// The verifying layer of the issuer's own routes: proofs name the issuer id
/// as base URL, bodies are bounded by the configured max body, and refusals
/// are counted in the issuer's metrics like the handlers' own.
fn protected(
    state: &Arc<IssuerState>,
    verifier: Arc<Verifier<dyn AsyncReplayStore>>,
) -> Result<crate::http::KeyboundLayer> {
    let counted = state.clone();
    Ok(crate::http::KeyboundLayer::new(verifier, &state.config.issuer_id)?
        .max_body(state.config.max_body)
        .on_refusal(Arc::new(move |e: &Error| counted.metrics.failure(e.code().as_str()))))
}

/// Serves the issuer until Ctrl-C or SIGTERM, then finishes in-flight
/// requests; with `metrics_listen`, `/metrics` on its own listener too.
pub async fn serve(state: Arc<IssuerState>) -> Result<()> {
    let shutdown = shutdown_signal();
    let app = router(state.clone())?;
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::new(Code::IssuerConfig, format!("cannot listen on {addr}: {e}")))
    };
    let listener = bind(state.config.listen).await?;
    let metrics_listener = match state.config.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let bound = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let limits = &state.config.serve;
    tracing::info!(
        issuer = %state.config.issuer_id,
        // The bound address: with port 0 in the settings, the port picked.
        listen = %bound(&listener),
        metrics_listen = %metrics_listener.as_ref().map_or_else(|| "the main listener".to_owned(), bound),
        database = ?state.store.backend(),
        header_read_timeout_s = limits.header_read_timeout.as_secs(),
        max_connections = limits.effective_max_connections(),
        max_in_flight = limits.max_in_flight,
        version = env!("CARGO_PKG_VERSION"),
        "issuer started"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let metrics_task = metrics_listener.map(|listener| {
        let app = Router::new()
            .route("/metrics", axum::routing::get(api::metrics))
            .with_state(state.clone());
        tokio::spawn(crate::http::serve(
            listener,
            app,
            limits.clone(),
            stopped(stop_rx.clone()),
        ))
    });
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    crate::http::serve(listener, app, limits.clone(), signal).await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    if let Err(e) = state.flush_mint_audit().await {
        tracing::warn!(error = %e, unwritten = state.mint_audit.unwritten(), "the last counts of token mints were not written to the audit log");
    }
    tracing::info!("issuer stopped");
    Ok(())
}

/// A future that ends at the first SIGINT (Ctrl-C) or SIGTERM. The handlers
/// are installed when this is called, not when the future is first polled:
/// a signal that arrives while the server is still starting ends it
/// gracefully instead of killing the process with the default action.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut i), Ok(mut t)) => {
                    tokio::select! { _ = i.recv() => {}, _ = t.recv() => {} }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Creates the first admin (`admin@default`, role `admin` on project
/// `admin@default`) on the database of `config`, with `password`. No server
/// is needed; refuses to run twice.
pub async fn bootstrap(config: &IssuerConfig, password: &str) -> Result<()> {
    config.check()?;
    let store = open_store(config).await?;
    let hash = password::hash(Zeroizing::new(password.to_owned())).await?;
    let now = SystemClock.now() as i64;
    let mut tx = store.begin().await?;
    tx.bootstrap(&hash, now).await?;
    tx.record(now, "-", "bootstrap", "admin@default", "ok").await?;
    tx.commit().await
}

/// What [`replace_root_secret`] did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Replacement {
    /// The fingerprint of the new secret, now recorded in the database.
    pub fingerprint: String,
    /// The fingerprint of the secret it replaced (`None` when an interrupted
    /// replacement was finished).
    pub previous_fingerprint: Option<String>,
    /// Where the new secret was written (32 raw bytes, mode 0600).
    pub root_secret_file: PathBuf,
    /// How many kids of the old keys were recorded as retired.
    pub retired_kids: usize,
}

/// Emergency replacement of the root secret (spec/issuer.md §7.2), offline
/// like [`bootstrap`]: reads the current secret (the file, or the
/// configured secret), records the kids of every key it still derives for
/// the issuer (never the keys), generates a new secret, writes it beside
/// the file as `{file}.new`, replaces the database's fingerprint and
/// records the retired kids and the audit entry `keys.replace` in one
/// transaction, then renames the new file over the old one. Running
/// replicas see the new fingerprint within [`keys::KEY_STATE_POLL`] and stop
/// signing and accepting the old keys; each must be restarted with the new
/// file. A replacement interrupted between its commit and the rename is
/// finished by running it again.
pub async fn replace_root_secret(config: &IssuerConfig) -> Result<Replacement> {
    config.check()?;
    if config.signing_key_file.is_some() {
        return err(
            Code::IssuerConfig,
            "the issuer signs with a fixed key file: replace that file instead (there is no root secret)",
        );
    }
    let store = open_store(config).await?;
    let path = config.root_secret_path();
    let mut pending = path.clone().into_os_string();
    pending.push(".new");
    let pending = PathBuf::from(pending);
    let recorded = store.conn().await?.root_fingerprint().await?;
    if let Some(new) = keys::read_root(&pending)? {
        let fingerprint = keys::root_fingerprint(&new);
        if recorded.as_deref() == Some(fingerprint.as_str()) {
            // Committed, not yet renamed.
            install_root(&pending, &path)?;
            return Ok(Replacement {
                fingerprint,
                previous_fingerprint: None,
                root_secret_file: path,
                retired_kids: 0,
            });
        }
        // Never committed: the old secret is still the one in force.
        std::fs::remove_file(&pending)
            .map_err(|e| Error::new(Code::IssuerConfig, format!("cannot remove {}: {e}", pending.display())))?;
    }
    let old = match &config.root_secret {
        Some(root) => root.clone(),
        None => keys::read_root(&path)?.ok_or_else(|| {
            Error::new(
                Code::IssuerConfig,
                format!(
                    "there is no root secret at {}: give the current one (root_secret_file, or \
                     KEYBOUND_ROOT_SECRET) so that its keys can be retired",
                    path.display()
                ),
            )
        })?,
    };
    let previous = keys::root_fingerprint(&old);
    if let Some(recorded) = &recorded
        && *recorded != previous
    {
        return err(
            Code::IssuerRootSecretMismatch,
            format!(
                "the current root secret has fingerprint {previous}, but the database records {recorded}: run \
                 the replacement with the secret the replicas use, so that its keys are retired"
            ),
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    // Every kid the issuer still accepts (sessions reach back 12 h).
    let old_keys = IssuerKeys::derived(
        old,
        config.algorithm,
        config.rotation_period,
        config.service_lifetime + config.leeway,
        config.max_session_lifetime + config.leeway,
        clock,
    )?;
    let period = config.rotation_period;
    let window = config.max_session_lifetime + config.leeway;
    let since = keys::lookback_start(now, period, window).saturating_sub(period);
    let rotations = store.conn().await?.rotations_since(since as i64).await?;
    old_keys.set_schedule(keys::RotationSchedule::new(rotations));
    let retired = old_keys.internal_kids()?;
    let new = Zeroizing::new(crate::random_array::<32>()?.to_vec());
    let fingerprint = keys::root_fingerprint(&new);
    keys::create_root(&pending, &new)?;
    let committed = async {
        let forget_before = now.saturating_sub(crate::token::MAX_SESSION_LIFETIME + crate::verify::MAX_LEEWAY);
        let mut tx = store.begin().await?;
        tx.replace_root_fingerprint(&fingerprint, &retired, now as i64, forget_before as i64)
            .await?;
        tx.record(now as i64, "-", "keys.replace", &fingerprint, "ok").await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = committed {
        // Keep the new secret: a commit whose answer was lost may have
        // happened, and then it is the only copy of the recorded secret.
        // Run again, this command installs it if the database records it
        // and discards it if not.
        return Err(Error::new(
            e.code(),
            format!(
                "{}; the new root secret is kept at {}: run this command again, it finishes or undoes the \
                 replacement",
                e.message(),
                pending.display()
            ),
        ));
    }
    install_root(&pending, &path)?;
    Ok(Replacement {
        fingerprint,
        previous_fingerprint: Some(previous),
        root_secret_file: path,
        retired_kids: retired.len(),
    })
}

/// Renames the new root secret over the old one and syncs the directory.
fn install_root(pending: &std::path::Path, path: &std::path::Path) -> Result<()> {
    std::fs::rename(pending, path).map_err(|e| {
        Error::new(
            Code::IssuerConfig,
            format!(
                "the database records the new secret, but {} could not be renamed to {}: {e}; rename it by hand",
                pending.display(),
                path.display()
            ),
        )
    })?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_period_out_of_range_is_refused_in_every_key_mode() {
        for period in [
            0,
            keys::MIN_ROTATION_PERIOD - 1,
            keys::MAX_ROTATION_PERIOD + 1,
            u64::MAX,
        ] {
            let mut config = IssuerConfig::new("/tmp/kb");
            config.rotation_period = period;
            let refused = config.check().unwrap_err();
            assert_eq!(refused.code(), Code::IssuerConfig, "period {period}");
            assert!(refused.message().contains("rotation_period"), "{}", refused.message());
        }
        let mut config = IssuerConfig::new("/tmp/kb");
        config.rotation_period = keys::MIN_ROTATION_PERIOD;
        assert!(config.check().is_ok());
    }

    #[test]
    fn urls_are_printed_without_their_secrets() {
        for (url, shown) in [
            ("postgres://kb:s3cret@db:5432/kb", "postgres://kb:[redacted]@db:5432/kb"),
            (
                "postgres://kb@db/kb?password=s3cret&sslmode=require",
                "postgres://kb@db/kb?password=[redacted]&sslmode=require",
            ),
            ("redis://:s3cret@cache:6379/0", "redis://:[redacted]@cache:6379/0"),
            (
                "sqlite:///var/lib/keybound/keybound.db?mode=rwc",
                "sqlite:///var/lib/keybound/keybound.db?mode=rwc",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
        }
        let mut config = IssuerConfig::new("/tmp/kb");
        config.database_url = Some("postgres://kb:s3cret@db/kb".into());
        config.root_secret = Some(Zeroizing::new(b"0123456789abcdef0123456789abcdef".to_vec()));
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("0123456789abcdef"),
            "{debug}"
        );
    }
}
