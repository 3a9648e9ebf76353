//! The client's state on disk: its key and its session, in the user's config
//! directory (`$KEYBOUND_CONFIG_DIR`, else `$XDG_CONFIG_HOME/keybound`, else
//! `~/.config/keybound`), both mode 0600 in a 0700 directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CliError;
use crate::client::{Client, Session};
use crate::encoding::{b64url_decode, b64url_encode};
use crate::error::{Code, Error};
use crate::key::{Algorithm, SigningKey, read_signing_key_file, write_signing_key_file};
use crate::token::Token;
use crate::verify::{Clock, SystemClock};

/// What `keybound login` stores.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSession {
    pub issuer: String,
    pub subject: String,
    pub session_token: String,
    pub expires_at: u64,
    pub key_file: PathBuf,
}

fn storage(message: String) -> CliError {
    CliError::from(Error::new(Code::ClientStorage, message))
}

/// The config directory, created (0700) if missing.
pub(crate) fn config_dir(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    let dir = match explicit {
        Some(dir) => dir.to_owned(),
        None => match std::env::var_os("KEYBOUND_CONFIG_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => match std::env::var_os("XDG_CONFIG_HOME") {
                Some(base) => PathBuf::from(base).join("keybound"),
                None => match std::env::var_os("HOME") {
                    Some(home) => PathBuf::from(home).join(".config").join("keybound"),
                    None => {
                        return Err(storage(
                            "no HOME: set KEYBOUND_CONFIG_DIR to a writable directory".into(),
                        ));
                    }
                },
            },
        },
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(|e| {
        storage(format!(
            "cannot create the config directory {}: {e}; set KEYBOUND_CONFIG_DIR to a writable directory",
            dir.display()
        ))
    })?;
    Ok(dir)
}

/// The client key at `path`, generated (Ed25519, 0600) if it does not exist.
pub(crate) fn load_or_create_key(path: &Path) -> Result<SigningKey, CliError> {
    if path.exists() {
        return Ok(read_signing_key_file(path)?);
    }
    let key = SigningKey::generate(Algorithm::EdDSA)?;
    write_signing_key_file(path, &key, None)
        .map_err(|e| storage(format!("cannot write the client key: {}", e.message())))?;
    Ok(key)
}

fn session_path(dir: &Path) -> PathBuf {
    dir.join("session.json")
}

/// Writes the session file (0600) atomically.
pub(crate) fn save(dir: &Path, session: &StoredSession) -> Result<(), CliError> {
    let path = session_path(dir);
    let tmp = dir.join(".session.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let text = serde_json::to_string_pretty(session).unwrap_or_default();
    let write = || -> std::io::Result<()> {
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        storage(format!(
            "cannot store the session in {}: {e}; set KEYBOUND_CONFIG_DIR to a writable directory",
            dir.display()
        ))
    })
}

/// Reads the stored session.
pub(crate) fn load(dir: &Path) -> Result<StoredSession, CliError> {
    let path = session_path(dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::from(Error::new(
                Code::ClientNoSession,
                "not logged in: run `keybound login --issuer URL --user NAME@DOMAIN`",
            ))
        } else {
            storage(format!("cannot read {}: {e}", path.display()))
        }
    })?;
    serde_json::from_str(&text).map_err(|e| storage(format!("{} is damaged ({e}); log in again", path.display())))
}

/// A client with the stored key and session; refuses an expired session.
pub(crate) fn client(dir: &Path) -> Result<Client, CliError> {
    let stored = load(dir)?;
    if stored.expires_at <= SystemClock.now() {
        return Err(Error::new(
            Code::ClientSessionExpired,
            format!("the session of {} expired; log in again", stored.subject),
        )
        .into());
    }
    let key = read_signing_key_file(&stored.key_file)?;
    let token = b64url_decode(&stored.session_token)
        .map_err(|_| storage("the stored session token is damaged; log in again".into()))?;
    let client = Client::new(&stored.issuer, key)?;
    client.set_session(Session {
        token: Token::from_bytes(token),
        expires_at: stored.expires_at,
        subject: stored.subject,
    });
    Ok(client)
}

/// Stores what a fresh login returned.
pub(crate) fn store_login(dir: &Path, client: &Client, key_file: &Path, session: &Session) -> Result<(), CliError> {
    save(
        dir,
        &StoredSession {
            issuer: client.issuer().to_owned(),
            subject: session.subject.clone(),
            session_token: b64url_encode(session.token.as_bytes()),
            expires_at: session.expires_at,
            key_file: std::fs::canonicalize(key_file).unwrap_or_else(|_| key_file.to_owned()),
        },
    )
}

/// A runtime for the async subcommands.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::io(format!("cannot start the async runtime: {e}")))
}
