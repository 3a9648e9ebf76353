//! A key set read from a file and re-read when the file changes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::KeySource;
use crate::error::{Code, Error, Result};
use crate::key::{KeySet, MAX_KEYSET_SIZE};

/// How often, at most, the file's modification time is checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Keys from a file holding a key-set document (CBOR, hex or base64url). The file
/// is checked for changes at most every 5 s; a changed file that does not
/// parse is ignored and the previous set kept.
pub struct FileKeys {
    path: PathBuf,
    state: RwLock<(Arc<KeySet>, Option<SystemTime>)>,
    last_check_ms: AtomicU64,
}

impl std::fmt::Debug for FileKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileKeys({})", self.path.display())
    }
}

fn read_set(path: &Path) -> Result<(KeySet, Option<SystemTime>)> {
    let io = |e: std::io::Error| {
        Error::new(Code::KeyIo, format!("cannot read key set {}: {e}", path.display())).with_source(e)
    };
    let metadata = std::fs::metadata(path).map_err(io)?;
    if metadata.len() > (MAX_KEYSET_SIZE * 2 + 16) as u64 {
        return Err(Error::new(
            Code::CborTooLarge,
            format!("key set file {} is {} bytes", path.display(), metadata.len()),
        ));
    }
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = crate::encoding::decode_flexible(&raw)?;
    Ok((KeySet::from_cbor(&bytes)?, metadata.modified().ok()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl FileKeys {
    /// Loads the key set at `path`; fails if it cannot be read or parsed.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let (set, modified) = read_set(&path)?;
        Ok(FileKeys {
            path,
            state: RwLock::new((Arc::new(set), modified)),
            last_check_ms: AtomicU64::new(now_ms()),
        })
    }

    fn maybe_reload(&self) {
        let now = now_ms();
        let last = self.last_check_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < CHECK_INTERVAL.as_millis() as u64
            || self
                .last_check_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let current = self.state.read().map(|s| s.1).unwrap_or(None);
        if modified == current {
            return;
        }
        // A set that fails to parse never replaces a good one, nor does
        // one with a lower sequence (a rollback, spec/verification.md K3).
        if let Ok((set, modified)) = read_set(&self.path)
            && let Ok(mut state) = self.state.write()
        {
            if set.may_replace(&state.0).is_err() {
                state.1 = modified;
            } else {
                *state = (Arc::new(set), modified);
            }
        }
    }
}

impl KeySource for FileKeys {
    fn key_set(&self) -> Arc<KeySet> {
        self.maybe_reload();
        match self.state.read() {
            Ok(state) => state.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Algorithm, SigningKey};

    #[test]
    fn reloads_changes_and_keeps_the_last_good_set() {
        let dir = tempfile_dir();
        let path = dir.join("keys.cbor");
        let a = SigningKey::derive(Algorithm::EdDSA, b"file", b"a").unwrap();
        let b = SigningKey::derive(Algorithm::EdDSA, b"file", b"b").unwrap();
        std::fs::write(
            &path,
            KeySet::new()
                .with(b"a".to_vec(), a.public_key().clone())
                .unwrap()
                .to_cbor(),
        )
        .unwrap();
        let keys = FileKeys::open(&path).unwrap();
        assert!(keys.key_set().get(b"a").is_some());
        // Garbage replaces the file: the good set stays.
        std::fs::write(&path, b"garbage").unwrap();
        keys.last_check_ms.store(0, Ordering::Relaxed);
        assert!(keys.key_set().get(b"a").is_some());
        // A new valid set is picked up.
        std::fs::write(
            &path,
            KeySet::new()
                .with(b"b".to_vec(), b.public_key().clone())
                .unwrap()
                .to_cbor(),
        )
        .unwrap();
        let later = SystemTime::now() + Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        keys.last_check_ms.store(0, Ordering::Relaxed);
        assert!(keys.key_set().get(b"b").is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keybound-filekeys-{}-{}", std::process::id(), now_ms()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
