//! `keybound serve` and the issuer options it shares with `keybound admin bootstrap`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use super::session::server_runtime;
use super::settings::{LogFormat, Settings, config_error};
use super::{CliError, EXIT_FAILURE, print_stdout};
use crate::error::{Code, Error};
use crate::issuer::store::Identities;
use crate::issuer::{IssuerConfig, IssuerState};
use crate::verify::SystemClock;

pub(crate) const SERVE_ABOUT: &str = "Run the issuer service (embedded SQLite by default, or PostgreSQL)";
pub(crate) const SERVE_LONG: &str = "\
Run the issuer service.

The issuer authenticates users and mints short tokens bound to their keys; it stores no tokens. State \
lives in the data directory (SQLite database, root secret for key derivation) or in PostgreSQL \
(--database-url postgres://…, for several replicas sharing one root secret). Every setting is a flag, a \
KEYBOUND_* environment variable (shown with each flag below) and a key of the TOML --config file (the \
flag's name with underscores, e.g. `max_body = 65536`); a flag wins over its variable, which wins over the \
file, which wins over the default. Relative paths in the file resolve against the file's directory. \
--check-config prints the effective configuration (passwords redacted) and exits.

A new data dir must be bootstrapped first (`keybound admin bootstrap`): `serve` refuses to start an issuer \
with no admin unless --init is given. One SQLite data dir is served by one process (a lock file); a second \
`serve` on it is refused. Connections get --header-read-timeout seconds (default 10) to send a request \
head, also between keep-alive requests; at most --max-connections (default 1024, lowered to the open-file \
limit) are open, the idlest closed first when full. Stops gracefully on Ctrl-C or SIGTERM; SIGHUP reloads \
the log filter (log_level) and nothing else. Logs go to stderr (--log-format json for JSON lines; colour \
only on a terminal); no secret is ever logged.

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
  keybound serve --config /etc/keybound/keybound.toml --check-config
  keybound serve --init --data-dir ./new-issuer --listen localhost:8080
  keybound serve --listen 0.0.0.0:8443 --issuer-id https://issuer.example \\
      --data-dir /var/lib/keybound
  KEYBOUND_ROOT_SECRET=$(xxd -p -c 64 keybound-data/root.key) keybound serve \\
      --database-url postgres://keybound@db/keybound
  keybound serve --root-secret-file /run/secrets/keybound-root \\
      --database-url postgres://keybound@db/keybound";

/// Settings shared by `serve` and `admin bootstrap`: a config file and
/// every setting as a flag or `KEYBOUND_*` variable over it.
#[derive(Debug, clap::Args)]
pub(crate) struct IssuerArgs {
    /// TOML configuration file (its keys are the flags' names with `_`; relative paths in it resolve against its directory)
    #[arg(long, env = "KEYBOUND_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

impl IssuerArgs {
    /// The layered settings: flags, then environment, then the file.
    pub(crate) fn settings(&self) -> Result<Settings, CliError> {
        self.settings.layered(self.config.as_deref())
    }

    /// The issuer configuration: [`IssuerArgs::settings`], then defaults.
    pub(crate) fn resolve(&self) -> Result<IssuerConfig, CliError> {
        self.settings()?.to_config()
    }

    /// [`IssuerArgs::resolve`], and whether the issuer id was given (flag,
    /// environment or file) rather than defaulted from the listen address.
    pub(crate) fn resolve_noting_issuer_id(&self) -> Result<(IssuerConfig, bool), CliError> {
        let settings = self.settings()?;
        Ok((settings.to_config()?, settings.issuer_id.is_some()))
    }
}

/// `keybound serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    issuer: IssuerArgs,
    /// Start on a data dir or database where no admin exists yet (a new issuer); without it such a start is refused
    #[arg(long)]
    init: bool,
    /// Print the effective configuration (secrets redacted) as TOML and exit
    #[arg(long)]
    check_config: bool,
}

/// Log filter directive in effect: the setting, else RUST_LOG, else `info`.
fn log_filter(settings: &Settings) -> String {
    log_directive(settings.log_level.as_deref())
}

/// `level` if set, else RUST_LOG, else `info`.
pub(crate) fn log_directive(level: Option<&str>) -> String {
    level
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "info".to_owned())
}

pub(crate) fn parse_filter(directive: &str) -> Result<tracing_subscriber::EnvFilter, CliError> {
    tracing_subscriber::EnvFilter::try_new(directive).map_err(|e| config_error(format!("log_level {directive:?}: {e}")))
}

/// Installs the log subscriber; returns the handle that swaps its filter.
pub(crate) fn init_logging(
    format: LogFormat,
    directive: &str,
) -> Result<tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>, CliError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(parse_filter(directive)?);
    // Colour only for a person at a terminal, never into a file or journal.
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    Ok(handle)
}

pub(crate) fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let settings = args.issuer.settings()?;
    let config = settings.to_config()?;
    let format = settings.log_format.unwrap_or_default();
    let directive = log_filter(&settings);
    if args.check_config {
        parse_filter(&directive)?;
        config.check().map_err(|e| CliError::with_exit(e, super::EXIT_USAGE))?;
        let mut text = String::from(
            "# keybound serve: effective configuration (flags, then KEYBOUND_* variables, then the file, then defaults)\n",
        );
        text.push_str(&format!(
            "# root secret: {}\n",
            crate::issuer::root_secret_source(&config)
        ));
        text.push_str(
            &toml::to_string(&Settings::effective(&config, format, &directive))
                .map_err(|e| CliError::new(super::CODE_INTERNAL, e.to_string(), EXIT_FAILURE))?,
        );
        print_stdout(text.trim_end())?;
        return Ok(ExitCode::SUCCESS);
    }
    let reload = init_logging(format, &directive)?;
    let config_file = args.issuer.config.clone();
    let flags = args.issuer.settings.clone();
    server_runtime()?.block_on(async {
        if !args.init && !crate::issuer::database_exists(&config) {
            return Err(Error::new(
                Code::IssuerNotInitialised,
                format!(
                    "no issuer database in {}: run `keybound admin bootstrap` with the same settings first, \
                     or `keybound serve --init` to start a new, empty issuer",
                    config.data_dir.display()
                ),
            ));
        }
        let state = IssuerState::open(config, Arc::new(SystemClock)).await?;
        if !state.store.conn().await?.is_bootstrapped().await? {
            if !args.init {
                return Err(Error::new(
                    Code::IssuerNotInitialised,
                    "no admin exists yet: run `keybound admin bootstrap` with the same settings first, \
                     or `keybound serve --init` to start anyway",
                ));
            }
            tracing::warn!(
                "no admin exists yet: run `keybound admin bootstrap` with the same --data-dir / --database-url"
            );
        }
        tokio::spawn(reload_on_hangup(reload, flags, config_file));
        crate::issuer::serve(state).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP re-reads the settings and applies what can change while running:
/// the log filter. Everything else needs a restart (docs/operations.md); a
/// bad file is logged and the old filter kept.
async fn reload_on_hangup(
    handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
    flags: Settings,
    config_file: Option<PathBuf>,
) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            let filter = flags
                .layered(config_file.as_deref())
                .and_then(|settings| parse_filter(&log_filter(&settings)).map(|f| (log_filter(&settings), f)));
            match filter {
                Ok((directive, filter)) => match handle.reload(filter) {
                    Ok(()) => {
                        tracing::info!(log_level = %directive, "SIGHUP: log filter reloaded; other settings need a restart")
                    }
                    Err(e) => tracing::warn!(error = %e, "SIGHUP: the log filter could not be replaced"),
                },
                Err(e) => {
                    tracing::warn!(error = %e.message(), "SIGHUP: settings not reloaded, keeping the old log filter")
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (handle, flags, config_file);
    }
}
