//! The client's state on disk: its key, its session and its cached service
//! tokens, in the user's config directory (`$KEYBOUND_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME/keybound`, else `~/.config/keybound`), files mode 0600
//! in 0700 directories.
//!
//! A profile (`--profile NAME`, `KEYBOUND_PROFILE`) is one identity at one
//! issuer. The default profile lives in the config directory itself
//! (`key.cbor`, `session.json`, `tokens/`), the layout of every session
//! stored before profiles existed; profile NAME lives in `profiles/NAME/`
//! with the same files, so an admin and a user stay logged in side by side.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::CliError;
use super::render::utc;
use crate::client::{Client, Session};
use crate::encoding::{b64url_decode, b64url_encode};
use crate::error::{Code, Error};
use crate::key::{Algorithm, SigningKey, read_signing_key_file, write_signing_key_file};
use crate::token::Token;
use crate::verify::{Clock, SystemClock};

/// The name of the profile kept in the config directory itself.
pub(crate) const DEFAULT_PROFILE: &str = "default";
/// Longest profile name.
const MAX_PROFILE_NAME: usize = 64;
/// Largest session file read (a session token is at most 4 KiB).
const MAX_SESSION_FILE: u64 = 64 * 1024;

/// The profile this run uses, set once by [`select_profile`] from the
/// global `--profile` option before any subcommand runs; every subcommand
/// (the admin ones too) finds its files through [`config_dir`].
static PROFILE: Mutex<Option<String>> = Mutex::new(None);

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

/// Checks a profile name (the value parser of `--profile`): 1 to 64 ASCII
/// letters, digits, `.`, `_` or `-`, not starting with `.` or `-`, so that
/// it is one plain directory name.
pub(crate) fn parse_profile(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PROFILE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "a profile name is 1 to {MAX_PROFILE_NAME} letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        ))
    }
}

/// Chooses the profile of this run (`None`: the default profile).
pub(crate) fn select_profile(name: Option<&str>) {
    let name = name.filter(|n| *n != DEFAULT_PROFILE).map(str::to_owned);
    *PROFILE.lock().unwrap_or_else(|p| p.into_inner()) = name;
}

/// The name of this run's profile (`default` for the default one).
pub(crate) fn profile_name() -> String {
    PROFILE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| DEFAULT_PROFILE.to_owned())
}

/// `keybound --profile NAME ` for messages that say what to type (empty
/// for the default profile).
pub(crate) fn profile_flag() -> String {
    match PROFILE.lock().unwrap_or_else(|p| p.into_inner()).as_deref() {
        Some(name) => format!("--profile {name} "),
        None => String::new(),
    }
}

/// Creates `dir` (and its parents) with mode 0700 where it is created.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The config directory itself (every profile's parent), created (0700)
/// if missing.
pub(crate) fn base_dir(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
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
    create_private_dir(&dir).map_err(|e| {
        storage(format!(
            "cannot create the config directory {}: {e}; set KEYBOUND_CONFIG_DIR to a writable directory",
            dir.display()
        ))
    })?;
    Ok(dir)
}

/// The directory of profile `name` under the config directory `base`.
pub(crate) fn profile_path(base: &Path, name: &str) -> PathBuf {
    if name == DEFAULT_PROFILE {
        base.to_owned()
    } else {
        base.join("profiles").join(name)
    }
}

/// The directory of this run's profile, created (0700) if missing: the
/// config directory for the default profile, `profiles/NAME` for another.
pub(crate) fn config_dir(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    let base = base_dir(explicit)?;
    let dir = profile_path(&base, &profile_name());
    if dir != base {
        create_private_dir(&dir)
            .map_err(|e| storage(format!("cannot create the profile directory {}: {e}", dir.display())))?;
    }
    Ok(dir)
}

/// Every profile under `base` that has a session, the default one first.
pub(crate) fn profiles(base: &Path) -> Vec<String> {
    let mut names = Vec::new();
    if session_path(base).exists() {
        names.push(DEFAULT_PROFILE.to_owned());
    }
    let mut named: Vec<String> = std::fs::read_dir(base.join("profiles"))
        .into_iter()
        .flatten()
        .flatten()
        .take(10_000)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| parse_profile(name).is_ok() && name != DEFAULT_PROFILE)
        .filter(|name| session_path(&profile_path(base, name)).exists())
        .collect();
    named.sort();
    names.extend(named);
    names
}

/// The key file a profile uses unless `--key` names another.
pub(crate) fn default_key_path(dir: &Path) -> PathBuf {
    dir.join("key.cbor")
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

pub(crate) fn session_path(dir: &Path) -> PathBuf {
    dir.join("session.json")
}

/// Writes `text` to `path` (0600) atomically: a new temporary file in the
/// same directory, synced, then renamed over `path`.
pub(crate) fn write_private(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let write = || -> std::io::Result<()> {
        let mut file = options.open(&tmp)?;
        file.write_all(text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Reads at most `cap` bytes of `path`; a larger file is an error.
pub(crate) fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(bytes)
}

/// Writes the session file (0600) atomically.
pub(crate) fn save(dir: &Path, session: &StoredSession) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(session).unwrap_or_default();
    write_private(&session_path(dir), text.as_bytes()).map_err(|e| {
        storage(format!(
            "cannot store the session in {}: {e}; set KEYBOUND_CONFIG_DIR to a writable directory",
            dir.display()
        ))
    })
}

/// The error of a profile without a session: what to type to log in.
pub(crate) fn no_session() -> CliError {
    let profile = profile_name();
    let which = if profile == DEFAULT_PROFILE {
        String::new()
    } else {
        format!(" (profile {profile})")
    };
    CliError::from(Error::new(
        Code::ClientNoSession,
        format!(
            "not logged in{which}: run `keybound {}login --issuer URL --user NAME@DOMAIN`",
            profile_flag()
        ),
    ))
}

/// Reads the stored session, if there is one.
pub(crate) fn load_optional(dir: &Path) -> Result<Option<StoredSession>, CliError> {
    let path = session_path(dir);
    let bytes = match read_capped(&path, MAX_SESSION_FILE) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(storage(format!("cannot read {}: {e}", path.display()))),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| storage(format!("{} is damaged ({e}); log in again", path.display())))
}

/// Reads the stored session.
pub(crate) fn load(dir: &Path) -> Result<StoredSession, CliError> {
    load_optional(dir)?.ok_or_else(no_session)
}

/// A client with the stored key and session, and that session; refuses an
/// expired session.
pub(crate) fn client_and_session(dir: &Path) -> Result<(Client, StoredSession), CliError> {
    let stored = load(dir)?;
    if stored.expires_at <= SystemClock.now() {
        return Err(Error::new(
            Code::ClientSessionExpired,
            format!(
                "the session of {} expired at {}; run `keybound {}login` again",
                stored.subject,
                utc(i64::try_from(stored.expires_at).unwrap_or(i64::MAX)),
                profile_flag()
            ),
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
        subject: stored.subject.clone(),
    });
    Ok((client, stored))
}

/// A client with the stored key and session; refuses an expired session.
pub(crate) fn client(dir: &Path) -> Result<Client, CliError> {
    client_and_session(dir).map(|(client, _)| client)
}

/// Stores what a fresh login returned, and forgets the service tokens of
/// the session it replaces.
pub(crate) fn store_login(dir: &Path, client: &Client, key_file: &Path, session: &Session) -> Result<(), CliError> {
    super::token_cache::clear(dir);
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
/// The runtime of a long-running server (`serve`, `gateway`): one worker
/// per core, so a server verifies at the rate the machine can.
pub(crate) fn server_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io(format!("cannot start the async runtime: {e}")))
}

/// The runtime of a command that does a few requests and ends: two workers
/// are plenty.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::io(format!("cannot start the async runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_are_plain_directory_names() {
        for good in ["admin", "ayoung-at-canton", "a.b_c", "x", &"p".repeat(64)] {
            assert_eq!(parse_profile(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "é",
            &"p".repeat(65),
            "a\\b",
        ] {
            assert!(parse_profile(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_default_profile_keeps_the_old_layout() {
        let base = Path::new("/cfg");
        assert_eq!(profile_path(base, DEFAULT_PROFILE), base);
        assert_eq!(profile_path(base, "admin"), Path::new("/cfg/profiles/admin"));
    }
}
