//! Service tokens kept between runs: one file per scope in the profile's
//! `tokens/` directory (0700), each 0600, so that consecutive `keybound
//! request` calls reuse one token instead of minting one each.
//!
//! A cached token is only a cache. It grants nothing by being here: the
//! service verifies it like any other, and a file that is unreadable, not
//! for this scope, issuer, user or key, or within [`REFRESH_MARGIN`] of its
//! expiry is deleted and a new token minted. `keybound login` and `keybound
//! logout` empty the directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::session::{read_capped, write_private};
use crate::client::{Client, REFRESH_MARGIN, Scope};
use crate::encoding::{b64url_decode, b64url_encode, hex_encode};
use crate::token::Token;

/// Largest token file read (a token is at most 4 KiB, 5.5 KiB in base64url).
const MAX_FILE: u64 = 16 * 1024;
/// Most files looked at in one scan of the directory.
const MAX_FILES: usize = 1000;

/// A scope as stored: every field of [`Scope`], so that a token is reused
/// only for exactly the scope it was minted for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredScope {
    pub audience: String,
    pub project: Option<String>,
    pub domain: Option<String>,
    pub roles: Option<Vec<String>>,
    pub lifetime: Option<u64>,
    pub trust: Option<String>,
    pub through: Option<String>,
    pub instance: Option<String>,
}

impl From<&Scope> for StoredScope {
    fn from(s: &Scope) -> Self {
        StoredScope {
            audience: s.audience.clone(),
            project: s.project.clone(),
            domain: s.domain.clone(),
            roles: s.roles.clone(),
            lifetime: s.lifetime,
            trust: s.trust.clone(),
            through: s.through.clone(),
            instance: s.instance.clone(),
        }
    }
}

/// One token file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CachedToken {
    pub scope: StoredScope,
    /// The issuer and user of the session that minted it.
    pub issuer: String,
    pub subject: String,
    /// The client key it is bound to (RFC 9679 thumbprint, base64url).
    pub key_thumbprint: String,
    /// Unix seconds, from the token itself.
    pub expires_at: u64,
    /// base64url.
    pub token: String,
}

/// The token files of one profile's session.
pub(crate) struct TokenCache {
    dir: PathBuf,
    issuer: String,
    subject: String,
    key_thumbprint: String,
}

/// The `tokens/` directory of the profile directory `profile`.
fn tokens_dir(profile: &Path) -> PathBuf {
    profile.join("tokens")
}

/// Deletes every cached token of the profile directory `profile`.
pub(crate) fn clear(profile: &Path) {
    let _ = std::fs::remove_dir_all(tokens_dir(profile));
}

impl TokenCache {
    /// The cache of the session of `subject` at `issuer` with the key of
    /// thumbprint `key_thumbprint`, in the profile directory `profile`.
    pub(crate) fn new(profile: &Path, issuer: &str, subject: &str, key_thumbprint: String) -> Self {
        TokenCache {
            dir: tokens_dir(profile),
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            key_thumbprint,
        }
    }

    /// The cache of `client`'s session (issuer, user and key).
    pub(crate) fn for_client(profile: &Path, client: &Client, subject: &str) -> Self {
        let thumbprint = client.key().public_key().thumbprint().to_string();
        Self::new(profile, client.issuer(), subject, thumbprint)
    }

    /// The file of `scope`: a hash of the whole scope, so that no scope
    /// field (a project name, a URL) becomes part of a path.
    fn path(&self, scope: &StoredScope) -> PathBuf {
        let canonical = serde_json::to_vec(scope).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        self.dir.join(format!("{}.json", hex_encode(&digest[..16])))
    }

    /// Why `cached` cannot be used for `scope` at `now`, if it cannot.
    fn unusable(&self, cached: &CachedToken, scope: Option<&StoredScope>, now: u64) -> Option<&'static str> {
        if scope.is_some_and(|s| *s != cached.scope) {
            return Some("another scope");
        }
        if cached.issuer != self.issuer || cached.subject != self.subject {
            return Some("another session");
        }
        if cached.key_thumbprint != self.key_thumbprint {
            return Some("another key");
        }
        if cached.expires_at.saturating_sub(REFRESH_MARGIN) <= now {
            return Some("expired");
        }
        // The token itself must say the same: its audience, expiry and key.
        let Ok(bytes) = b64url_decode(&cached.token) else {
            return Some("unreadable");
        };
        let Ok(decoded) = crate::danger::insecure_decode_token(&bytes) else {
            return Some("unreadable");
        };
        let claims = decoded.claims;
        if claims.aud != cached.scope.audience
            || claims.exp != cached.expires_at
            || claims.cnf.thumbprint().to_string() != self.key_thumbprint
        {
            return Some("inconsistent");
        }
        None
    }

    /// Reads one file; deletes it when it is unreadable, unusable (for
    /// `scope`, when given), or not named after its own scope (a copy).
    fn read(&self, path: &Path, scope: Option<&StoredScope>, now: u64) -> Option<CachedToken> {
        let cached = read_capped(path, MAX_FILE)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CachedToken>(&bytes).ok());
        let usable = cached.filter(|c| self.path(&c.scope) == path && self.unusable(c, scope, now).is_none());
        if usable.is_none() {
            let _ = std::fs::remove_file(path);
        }
        usable
    }

    /// The cached token for `scope`, if a usable one is on disk.
    pub(crate) fn load(&self, scope: &Scope, now: u64) -> Option<(Token, u64)> {
        let scope = StoredScope::from(scope);
        let cached = self.read(&self.path(&scope), Some(&scope), now)?;
        let bytes = b64url_decode(&cached.token).ok()?;
        Some((Token::from_bytes(bytes), cached.expires_at))
    }

    /// Puts `client`'s token for `scope` into the cache, and prunes the
    /// files that are no longer usable. A failure to write is not an
    /// error: the next run mints again.
    pub(crate) fn store(&self, client: &Client, scope: &Scope, now: u64) {
        let Some((token, _)) = client.cached_token(scope) else {
            return;
        };
        // The expiry from the token itself, not from the issuer's answer.
        let Ok(decoded) = crate::danger::insecure_decode_token(token.as_bytes()) else {
            return;
        };
        let stored = StoredScope::from(scope);
        let cached = CachedToken {
            scope: stored.clone(),
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            key_thumbprint: self.key_thumbprint.clone(),
            expires_at: decoded.claims.exp,
            token: b64url_encode(token.as_bytes()),
        };
        if self.unusable(&cached, Some(&stored), now).is_some() {
            return;
        }
        self.prune(now);
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        if builder.create(&self.dir).is_err() {
            return;
        }
        let text = serde_json::to_vec_pretty(&cached).unwrap_or_default();
        let _ = write_private(&self.path(&stored), &text);
    }

    /// Deletes the cached token for `scope` (after a service refused it).
    pub(crate) fn forget(&self, scope: &Scope) {
        let _ = std::fs::remove_file(self.path(&StoredScope::from(scope)));
    }

    /// Every usable cached token, soonest expiry first; deletes the rest.
    pub(crate) fn list(&self, now: u64) -> Vec<CachedToken> {
        let mut tokens: Vec<CachedToken> = self
            .files()
            .iter()
            .filter_map(|path| self.read(path, None, now))
            .collect();
        tokens.sort_by(|a, b| (a.expires_at, &a.scope.audience).cmp(&(b.expires_at, &b.scope.audience)));
        tokens
    }

    fn prune(&self, now: u64) {
        for path in self.files() {
            let _ = self.read(&path, None, now);
        }
    }

    /// The token files (at most [`MAX_FILES`]), not the temporary ones.
    fn files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .take(MAX_FILES)
            .map(|entry| entry.path())
            .filter(|path| {
                path.extension().is_some_and(|e| e == "json")
                    && !path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
            })
            .collect()
    }
}
