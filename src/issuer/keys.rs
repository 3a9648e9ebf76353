//! The issuer's signing keys and their rotation.
//!
//! Derived mode (the default): the key of epoch `e = ⌊now / period⌋` is
//! derived with HKDF from a root secret (`SigningKey::derive`, info
//! `"keybound issuer key v1" ‖ e`). Its kid is `e` as 4 big-endian bytes
//! followed by the first 4 bytes of the key's RFC 9679 thumbprint: unique
//! within a set by the epoch, and different whenever the key is, so a
//! verifier holding a cached set sees an unknown kid (and refetches) rather
//! than a known kid with another key (`cose.bad_signature`) when the root
//! secret changes. Replicas that share the root secret sign with the same
//! key at the same time without talking to each other.
//!
//! Published key set: the next epoch's key (published a whole period before
//! it signs, so verifiers have it before the first token it signs), the
//! current key, and enough previous keys to cover the longest service-token
//! lifetime plus leeway. The issuer itself also verifies session tokens, which
//! live up to 12 h: its internal set reaches back that far.
//!
//! Static mode: one key from a file, never rotated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::error::{Code, Error, Result, err};
use crate::key::{Algorithm, KeySet, SigningKey};
use crate::keyset::KeySource;
use crate::verify::Clock;

/// Shortest rotation period allowed: keys must outlive the tokens they sign.
pub const MIN_ROTATION_PERIOD: u64 = 600;

enum Mode {
    Derived {
        root: Zeroizing<Vec<u8>>,
        alg: Algorithm,
        period: u64,
    },
    Static {
        key: Arc<SigningKey>,
        kid: Vec<u8>,
    },
}

/// The key sets of one epoch.
#[derive(Clone)]
struct Sets {
    published: Arc<KeySet>,
    cbor: Arc<Vec<u8>>,
    internal: Arc<KeySet>,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<u64, Arc<SigningKey>>,
    sets: Option<(u64, Sets)>,
}

/// Signing keys of one issuer.
pub struct IssuerKeys {
    mode: Mode,
    clock: Arc<dyn Clock>,
    /// Longest service-token lifetime + leeway: how long a key stays published after its epoch.
    publish_back: u64,
    /// Longest session lifetime + leeway: how long the issuer itself keeps verifying.
    verify_back: u64,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Derived { alg, period, .. } => {
                write!(f, "IssuerKeys(derived {alg}, period {period} s, root [redacted])")
            }
            Mode::Static { kid, .. } => write!(f, "IssuerKeys(static, kid {})", crate::encoding::hex_encode(kid)),
        }
    }
}

/// `u32be(epoch) ‖ thumbprint[0..4]` (spec/issuer.md §7.2).
fn derived_kid(epoch: u64, key: &SigningKey) -> Vec<u8> {
    let mut kid = (epoch as u32).to_be_bytes().to_vec();
    kid.extend_from_slice(&key.public_key().thumbprint().as_bytes()[..4]);
    kid
}

impl IssuerKeys {
    /// Keys derived per epoch from `root` (at least 32 bytes).
    pub fn derived(
        root: Zeroizing<Vec<u8>>,
        alg: Algorithm,
        period: u64,
        max_service_window: u64,
        max_session_window: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        if root.len() < 32 {
            return err(Code::IssuerConfig, "the root secret must be at least 32 bytes");
        }
        if period < MIN_ROTATION_PERIOD {
            return err(
                Code::IssuerConfig,
                format!("the rotation period must be at least {MIN_ROTATION_PERIOD} s"),
            );
        }
        Ok(IssuerKeys {
            mode: Mode::Derived { root, alg, period },
            clock,
            publish_back: max_service_window,
            verify_back: max_session_window,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// One fixed key (no rotation).
    pub fn fixed(key: SigningKey, clock: Arc<dyn Clock>) -> Self {
        let kid = key.public_key().default_kid();
        IssuerKeys {
            mode: Mode::Static {
                key: Arc::new(key),
                kid,
            },
            clock,
            publish_back: 0,
            verify_back: 0,
            cache: Mutex::new(Cache::default()),
        }
    }

    fn key_for_epoch(&self, epoch: u64) -> Result<Arc<SigningKey>> {
        let Mode::Derived { root, alg, .. } = &self.mode else {
            return err(Code::IssuerConfig, "static keys have no epochs");
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = cache.keys.get(&epoch) {
            return Ok(key.clone());
        }
        let mut info = b"keybound issuer key v1".to_vec();
        info.extend_from_slice(&epoch.to_be_bytes());
        let key = Arc::new(SigningKey::derive(*alg, root, &info)?);
        cache.keys.insert(epoch, key.clone());
        Ok(key)
    }

    /// The key that signs now, with its kid.
    pub fn current(&self) -> Result<(Arc<SigningKey>, Vec<u8>)> {
        match &self.mode {
            Mode::Static { key, kid } => Ok((key.clone(), kid.clone())),
            Mode::Derived { period, .. } => {
                let epoch = self.clock.now() / period;
                let key = self.key_for_epoch(epoch)?;
                let kid = derived_kid(epoch, &key);
                Ok((key, kid))
            }
        }
    }

    /// Published set, its CBOR, and the internal (session-verification) set, for now.
    fn sets(&self) -> Result<Sets> {
        let (epoch, period) = match &self.mode {
            Mode::Static { key, kid } => {
                let set = Arc::new(KeySet::new().with(kid.clone(), key.public_key().clone())?);
                let cbor = Arc::new(set.to_cbor());
                return Ok(Sets {
                    published: set.clone(),
                    cbor,
                    internal: set,
                });
            }
            Mode::Derived { period, .. } => (self.clock.now() / period, *period),
        };
        if let Some((e, sets)) = &self.cache.lock().unwrap_or_else(|p| p.into_inner()).sets
            && *e == epoch
        {
            return Ok(sets.clone());
        }
        let back = |window: u64| window.div_ceil(period);
        let mut published = KeySet::new();
        let mut internal = KeySet::new();
        // Newest first: next, current, then older ones.
        for e in (epoch.saturating_sub(back(self.verify_back))..=epoch + 1).rev() {
            let key = self.key_for_epoch(e)?;
            let kid = derived_kid(e, &key);
            if e + back(self.publish_back) >= epoch {
                published.insert(kid.clone(), key.public_key().clone())?;
            }
            internal.insert(kid, key.public_key().clone())?;
        }
        let sets = Sets {
            cbor: Arc::new(published.to_cbor()),
            published: Arc::new(published),
            internal: Arc::new(internal),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Forget derived keys that can no longer be needed.
        let oldest = epoch.saturating_sub(back(self.verify_back));
        cache.keys.retain(|e, _| *e >= oldest);
        cache.sets = Some((epoch, sets.clone()));
        Ok(sets)
    }

    /// The COSE_KeySet to publish, as CBOR.
    pub fn published_cbor(&self) -> Result<Arc<Vec<u8>>> {
        self.sets().map(|s| s.cbor)
    }

    /// The published set.
    pub fn published(&self) -> Result<Arc<KeySet>> {
        self.sets().map(|s| s.published)
    }

    /// How long verifiers may cache the published set, in seconds.
    pub fn cache_max_age(&self) -> u64 {
        match &self.mode {
            Mode::Static { .. } => 3600,
            Mode::Derived { period, .. } => (period / 4).clamp(60, 3600),
        }
    }

    /// A key source over the issuer's internal set, for its own verifiers.
    pub fn internal_source(self: &Arc<Self>) -> InternalKeys {
        InternalKeys(self.clone())
    }
}

/// The issuer's own view of its keys (covers session-token lifetimes).
#[derive(Clone)]
pub struct InternalKeys(Arc<IssuerKeys>);

impl KeySource for InternalKeys {
    fn key_set(&self) -> Arc<KeySet> {
        match self.0.sets() {
            Ok(sets) => sets.internal,
            // Key derivation cannot fail for a valid configuration; an empty
            // set refuses every token rather than accepting any.
            Err(_) => Arc::new(KeySet::new()),
        }
    }
}

/// A one-way fingerprint of a root secret, safe to store and log:
/// HKDF-SHA256 (salt "keybound key derivation v1", IKM the secret, info
/// "keybound root fingerprint v1"), 16 bytes, hex. The secret cannot be
/// recovered from it, and it shares no output with the key derivation.
pub fn root_fingerprint(root: &[u8]) -> String {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"keybound key derivation v1"), root);
    let mut okm = [0u8; 16];
    hk.expand(b"keybound root fingerprint v1", &mut okm)
        .expect("16 bytes is a valid HKDF-SHA256 length");
    crate::encoding::hex_encode(&okm)
}

/// Reads the root secret from `path`, creating it (32 random bytes, mode
/// 0600) if it does not exist.
pub fn load_or_create_root(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>> {
    use std::io::Write;
    match std::fs::read(path) {
        Ok(bytes) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0);
                if mode & 0o077 != 0 {
                    return err(
                        Code::IssuerConfig,
                        format!("{} has mode {mode:o}; it must be 0600", path.display()),
                    );
                }
            }
            Ok(Zeroizing::new(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = Zeroizing::new(crate::random_array::<32>()?.to_vec());
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .map_err(|e| Error::new(Code::IssuerConfig, format!("cannot create {}: {e}", path.display())))?;
            file.write_all(&secret)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::new(Code::IssuerConfig, format!("cannot write {}: {e}", path.display())))?;
            Ok(secret)
        }
        Err(e) => err(Code::IssuerConfig, format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::ManualClock;

    #[test]
    fn next_key_is_published_before_it_signs_and_previous_stays_long_enough() {
        let clock = Arc::new(ManualClock::new(10_000 * 600));
        let keys = IssuerKeys::derived(
            Zeroizing::new(vec![1; 32]),
            Algorithm::EdDSA,
            600,
            330,
            43_230,
            clock.clone(),
        )
        .unwrap();
        let (key_now, kid_now) = keys.current().unwrap();
        assert_eq!(kid_now[..4], 10_000u32.to_be_bytes());
        assert_eq!(kid_now[4..], key_now.public_key().thumbprint().as_bytes()[..4]);
        let published = keys.published().unwrap();
        assert!(published.get(&kid_now).is_some());
        let epoch_kid = |e: u64| derived_kid(e, &keys.key_for_epoch(e).unwrap());
        assert!(
            published.get(&epoch_kid(10_001)).is_some(),
            "next key published a period ahead"
        );
        assert!(published.get(&epoch_kid(9_999)).is_some(), "previous key kept");
        assert!(published.get(&epoch_kid(9_998)).is_none());
        let keys = Arc::new(keys);
        assert_eq!(keys.internal_source().key_set().len(), 2 + 73);
        // Replicas with the same root derive the same key.
        let other = IssuerKeys::derived(
            Zeroizing::new(vec![1; 32]),
            Algorithm::EdDSA,
            600,
            330,
            43_230,
            clock.clone(),
        )
        .unwrap();
        let (mine, theirs) = (keys.current().unwrap(), other.current().unwrap());
        assert_eq!((mine.0.public_key(), mine.1), (theirs.0.public_key(), theirs.1));
        // Another root secret: other keys under other kids, never a known
        // kid with another key.
        let replaced = IssuerKeys::derived(
            Zeroizing::new(vec![2; 32]),
            Algorithm::EdDSA,
            600,
            330,
            43_230,
            clock.clone(),
        )
        .unwrap();
        let old_kids: Vec<Vec<u8>> = keys
            .internal_source()
            .key_set()
            .iter()
            .map(|(k, _)| k.to_vec())
            .collect();
        for (kid, _) in replaced.sets().unwrap().internal.iter() {
            assert!(!old_kids.iter().any(|k| k == kid), "kid reused across root secrets");
        }
        clock.advance(600);
        assert_eq!(
            keys.current().unwrap().1,
            derived_kid(10_001, &keys.key_for_epoch(10_001).unwrap())
        );
        assert!(
            IssuerKeys::derived(
                Zeroizing::new(vec![1; 16]),
                Algorithm::EdDSA,
                600,
                330,
                0,
                clock.clone()
            )
            .is_err()
        );
        assert!(IssuerKeys::derived(Zeroizing::new(vec![1; 32]), Algorithm::EdDSA, 60, 330, 0, clock).is_err());
    }
}
