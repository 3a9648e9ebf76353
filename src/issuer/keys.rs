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
//! Scheduled rotation (`keybound admin rotate`) moves the epoch boundary to
//! now: the database keeps a key-epoch offset, and the epoch of time t is
//! `⌊(t + offset(t)) / period⌋`. The next key, published a whole period
//! ahead, signs at once; the one it replaces stays published as a previous
//! key. Every replica reads the offsets from the database
//! ([`RotationSchedule`]), so they agree on the key without talking.
//!
//! Static mode: one key from a file, never rotated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use zeroize::Zeroizing;

use crate::delegation::slip::{Slip, SlipBuilder};
use crate::error::{Code, Error, Result, err};
use crate::key::{Algorithm, KeySet, SigningKey};
use crate::keyset::KeySource;
use crate::verify::Clock;

/// Shortest rotation period allowed: keys must outlive the tokens they sign.
pub const MIN_ROTATION_PERIOD: u64 = 600;
/// Longest rotation period allowed (366 days): keeps the epoch arithmetic
/// far from overflow and keys from living for years.
pub const MAX_ROTATION_PERIOD: u64 = 366 * 86_400;
/// Most scheduled rotations within one rotation period, forced or not:
/// each adds a key to every set, and a script looping `rotate --force`
/// must not grow the published set past what verifiers accept.
pub const MAX_ROTATIONS_PER_PERIOD: usize = 6;

/// How often each replica re-reads the rotation offsets, the root-secret
/// fingerprint and the retired kids from the database: a rotation or a
/// replacement made through another replica (or offline) takes effect here
/// within this bound (spec/issuer.md §7.2).
pub const KEY_STATE_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Added to the key-set cache max-age before a scheduled rotation is
/// allowed: the other replicas' poll ([`KEY_STATE_POLL`]) plus 5 s of clock
/// skew between replicas.
pub const ROTATION_SETTLE: u64 = KEY_STATE_POLL.as_secs() + 5;

/// The scheduled rotations: from each rotation's time on, its key-epoch
/// offset (seconds added to the time before it is divided into epochs).
/// Offsets only grow. Empty: offset 0, the epochs of the bare clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationSchedule {
    /// `(rotated_at, offset)`.
    rotations: Vec<(u64, u64)>,
}

impl RotationSchedule {
    /// A schedule of `(rotated_at, offset)` rows, in any order.
    pub fn new(mut rotations: Vec<(u64, u64)>) -> Self {
        rotations.sort_by_key(|&(_, offset)| offset);
        RotationSchedule { rotations }
    }

    /// The offset in effect at `t`: the largest of the rotations made by then.
    pub fn offset_at(&self, t: u64) -> u64 {
        self.rotations
            .iter()
            .filter(|&&(at, _)| at <= t)
            .map(|&(_, offset)| offset)
            .max()
            .unwrap_or(0)
    }

    /// The rotations, `(rotated_at, offset)`, by offset.
    pub fn rotations(&self) -> &[(u64, u64)] {
        &self.rotations
    }
}

/// The earliest time whose epoch a key set reaching `window` seconds back
/// must cover: whole periods back, so that rotations (which shorten epochs)
/// never drop a key that can still have signed a live token, with
/// [`ROTATION_SETTLE`] added for replicas that have not yet seen a rotation
/// and sign under the previous epoch meanwhile.
pub fn lookback_start(now: u64, period: u64, window: u64) -> u64 {
    let back = (window + ROTATION_SETTLE)
        .div_ceil(period.max(1))
        .saturating_mul(period);
    now.saturating_sub(back)
}

/// What a scheduled rotation changes (spec/issuer.md §7.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// When it takes effect (now).
    pub rotated_at: u64,
    /// The new key-epoch offset.
    pub offset: u64,
    /// The kid that signs from now on (the next key until now).
    pub kid: Vec<u8>,
    /// The kid published as next from now on.
    pub next_kid: Vec<u8>,
    /// The kid that signed until now; published while its tokens live.
    pub previous_kid: Vec<u8>,
    /// When the new key's epoch ends, if nothing rotates before.
    pub next_rotation_at: u64,
}

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

/// The key sets of one epoch and schedule.
#[derive(Clone)]
struct Sets {
    published: Arc<KeySet>,
    cbor: Arc<Vec<u8>>,
    internal: Arc<KeySet>,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<u64, Arc<SigningKey>>,
    /// Keyed by (current epoch, oldest published, oldest internal, sequence).
    sets: Option<((u64, u64, u64, u64), Sets)>,
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
    schedule: RwLock<RotationSchedule>,
    /// Set when the database records another root secret (an emergency
    /// replacement): this process stops signing, publishing and accepting.
    replaced: AtomicBool,
    /// When the database recorded the root secret in use (its replacement
    /// time after an emergency): the floor of the key-set sequence.
    root_since: AtomicU64,
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
        if !(MIN_ROTATION_PERIOD..=MAX_ROTATION_PERIOD).contains(&period) {
            return err(
                Code::IssuerConfig,
                format!("the rotation period must be {MIN_ROTATION_PERIOD} to {MAX_ROTATION_PERIOD} s"),
            );
        }
        Ok(IssuerKeys {
            mode: Mode::Derived { root, alg, period },
            clock,
            publish_back: max_service_window,
            verify_back: max_session_window,
            cache: Mutex::new(Cache::default()),
            schedule: RwLock::new(RotationSchedule::default()),
            replaced: AtomicBool::new(false),
            root_since: AtomicU64::new(0),
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
            schedule: RwLock::new(RotationSchedule::default()),
            replaced: AtomicBool::new(false),
            root_since: AtomicU64::new(0),
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

    /// Whether keys are derived (and so can rotate).
    pub fn is_derived(&self) -> bool {
        matches!(self.mode, Mode::Derived { .. })
    }

    /// Takes the rotation offsets read from the database.
    pub fn set_schedule(&self, schedule: RotationSchedule) {
        let mut current = self.schedule.write().unwrap_or_else(|p| p.into_inner());
        if *current != schedule {
            *current = schedule;
        }
    }

    /// The rotation offsets in use.
    pub fn schedule(&self) -> RotationSchedule {
        self.schedule.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops signing, publishing and accepting: the root secret was replaced
    /// (the database records another fingerprint). Only a restart with the
    /// new secret undoes it.
    pub fn mark_replaced(&self) {
        self.replaced.store(true, Ordering::SeqCst);
    }

    /// Takes the time the database recorded the root secret in use: the
    /// published key set's sequence is at least this, so the sets after an
    /// emergency replacement outrank every set of the old secret.
    pub fn set_root_since(&self, recorded_at: u64) {
        self.root_since.store(recorded_at, Ordering::SeqCst);
    }

    /// The sequence of the published key set (spec/issuer.md §7.1): with
    /// derived keys, the later of the time the current epoch began and the
    /// time the root secret was recorded. Both only grow, every replica
    /// computes the same value, and it changes whenever the set does (a new
    /// epoch adds a key; a new root secret changes them all). A fixed key:
    /// 0, the bare COSE_KeySet.
    pub fn sequence(&self) -> u64 {
        match &self.mode {
            Mode::Static { .. } => 0,
            Mode::Derived { period, .. } => {
                let now = self.clock.now();
                let offset = self.schedule.read().unwrap_or_else(|p| p.into_inner()).offset_at(now);
                let started = ((now + offset) / period * period).saturating_sub(offset);
                started.max(self.root_since.load(Ordering::SeqCst)).max(1)
            }
        }
    }

    /// With derived keys, when the current key began signing and when the
    /// next one takes over (Unix seconds), under the rotation schedule;
    /// `None` for a fixed key, which never rotates.
    pub fn current_epoch_bounds(&self) -> Option<(u64, u64)> {
        match &self.mode {
            Mode::Static { .. } => None,
            Mode::Derived { period, .. } => {
                let now = self.clock.now();
                let offset = self.schedule.read().unwrap_or_else(|p| p.into_inner()).offset_at(now);
                let epoch = (now + offset) / period;
                let started = (epoch * period).saturating_sub(offset);
                Some((started, ((epoch + 1) * period).saturating_sub(offset)))
            }
        }
    }

    /// Whether [`IssuerKeys::mark_replaced`] was called.
    pub fn is_replaced(&self) -> bool {
        self.replaced.load(Ordering::SeqCst)
    }

    fn replaced_error(&self) -> Error {
        Error::new(
            Code::IssuerRootSecretMismatch,
            "the root secret was replaced (the database records another fingerprint); restart this replica with the new secret",
        )
    }

    /// The epoch of time `t` under the rotation schedule (derived keys).
    fn epoch_at(&self, t: u64, period: u64) -> u64 {
        let offset = self.schedule.read().unwrap_or_else(|p| p.into_inner()).offset_at(t);
        (t + offset) / period
    }

    /// The key that signs now, with its kid.
    pub fn current(&self) -> Result<(Arc<SigningKey>, Vec<u8>)> {
        if self.is_replaced() {
            return Err(self.replaced_error());
        }
        match &self.mode {
            Mode::Static { key, kid } => Ok((key.clone(), kid.clone())),
            Mode::Derived { period, .. } => {
                let epoch = self.epoch_at(self.clock.now(), *period);
                let key = self.key_for_epoch(epoch)?;
                let kid = derived_kid(epoch, &key);
                Ok((key, kid))
            }
        }
    }

    /// Signs a routing slip with the key that signs tokens now, under its
    /// kid (spec/delegation.md §10.3): the issuer's one way to issue slips.
    /// Services accept it only while that key is published, so with
    /// derived keys for one to two rotation periods, whatever its expiry.
    pub fn sign_slip(&self, slip: SlipBuilder) -> Result<Slip> {
        let (key, kid) = self.current()?;
        slip.sign(&key, &kid)
    }

    /// A scheduled rotation at `now`: the offset that ends the current epoch
    /// now, so that the next key signs. Refused with
    /// `issuer.rotation_too_early`, unless `force`, while the next key has
    /// been published for less than the key-set cache max-age plus
    /// [`ROTATION_SETTLE`]: a verifier that fetched the set before it was
    /// published may not know it yet. Nothing changes until the caller
    /// records the offset and calls [`IssuerKeys::set_schedule`].
    pub fn plan_rotation(&self, now: u64, force: bool) -> Result<Rotation> {
        let Mode::Derived { period, .. } = &self.mode else {
            return err(
                Code::IssuerConflict,
                "the issuer signs with a fixed key (signing key file), which never rotates",
            );
        };
        let period = *period;
        if self.is_replaced() {
            return Err(self.replaced_error());
        }
        let (offset, recent) = {
            let schedule = self.schedule.read().unwrap_or_else(|p| p.into_inner());
            let since = now.saturating_sub(period);
            let recent = schedule.rotations().iter().filter(|&&(at, _)| at > since).count();
            (schedule.offset_at(now), recent)
        };
        if recent >= MAX_ROTATIONS_PER_PERIOD {
            return err(
                Code::IssuerRotationTooEarly,
                format!(
                    "{recent} rotations were made in the last rotation period ({period} s), the most allowed even \
                     with --force: every rotation adds a key to the published set. For a key believed \
                     compromised, replace the root secret (keybound admin rotate --emergency)"
                ),
            );
        }
        let epoch = (now + offset) / period;
        // The current epoch began (and its next key was first published) at
        // the last rotation or natural boundary.
        let started = (epoch * period).saturating_sub(offset);
        let published_for = now.saturating_sub(started);
        let wait = self.cache_max_age() + ROTATION_SETTLE;
        if published_for < wait && !force {
            return err(
                Code::IssuerRotationTooEarly,
                format!(
                    "the next key has been published for only {published_for} s; verifiers may cache the key set \
                     for {} s (plus {ROTATION_SETTLE} s for the other replicas to see it), so signing with it now \
                     could make them refuse new tokens until they refetch. Rotate again in {} s, or force it \
                     (--force) and accept refusals until verifiers refetch",
                    self.cache_max_age(),
                    wait - published_for
                ),
            );
        }
        let new_offset = (epoch + 1) * period - now;
        let kid_of = |e: u64| self.key_for_epoch(e).map(|key| derived_kid(e, &key));
        Ok(Rotation {
            rotated_at: now,
            offset: new_offset,
            kid: kid_of(epoch + 1)?,
            next_kid: kid_of(epoch + 2)?,
            previous_kid: kid_of(epoch)?,
            next_rotation_at: now + period,
        })
    }

    /// Published set, its CBOR, and the internal (session-verification) set, for now.
    fn sets(&self) -> Result<Sets> {
        if self.is_replaced() {
            return Err(self.replaced_error());
        }
        let period = match &self.mode {
            Mode::Static { key, kid } => {
                let set = Arc::new(KeySet::new().with(kid.clone(), key.public_key().clone())?);
                let cbor = Arc::new(set.to_cbor());
                return Ok(Sets {
                    published: set.clone(),
                    cbor,
                    internal: set,
                });
            }
            Mode::Derived { period, .. } => *period,
        };
        let now = self.clock.now();
        let epoch = self.epoch_at(now, period);
        // Every epoch that was current at some time in the window: whole
        // periods back in time, so that rotations (which shorten epochs)
        // never drop a key that can still have signed a live token.
        let oldest = |window: u64| self.epoch_at(lookback_start(now, period, window), period);
        let (oldest_published, oldest_internal) = (oldest(self.publish_back), oldest(self.verify_back));
        let sequence = self.sequence();
        let cache_key = (epoch, oldest_published, oldest_internal, sequence);
        if let Some((k, sets)) = &self.cache.lock().unwrap_or_else(|p| p.into_inner()).sets
            && *k == cache_key
        {
            return Ok(sets.clone());
        }
        let mut published = KeySet::new().with_sequence(sequence);
        let mut internal = KeySet::new();
        // Newest first: next, current, then older ones.
        for e in (oldest_internal..=epoch + 1).rev() {
            let key = self.key_for_epoch(e)?;
            let kid = derived_kid(e, &key);
            if e >= oldest_published {
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
        cache.keys.retain(|e, _| *e >= oldest_internal);
        cache.sets = Some((cache_key, sets.clone()));
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

    /// The kids of the internal set: every key the issuer accepts now.
    pub fn internal_kids(&self) -> Result<Vec<Vec<u8>>> {
        Ok(self.sets()?.internal.iter().map(|(kid, _)| kid.to_vec()).collect())
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
    if let Some(secret) = read_root(path)? {
        return Ok(secret);
    }
    let secret = Zeroizing::new(crate::random_array::<32>()?.to_vec());
    create_root(path, &secret)?;
    Ok(secret)
}

/// Reads the root secret file at `path` (`None` if there is none); refuses
/// a file that group or others may access.
pub fn read_root(path: &std::path::Path) -> Result<Option<Zeroizing<Vec<u8>>>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
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
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => err(Code::IssuerConfig, format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes a new root secret file (which must not exist yet), mode 0600,
/// synced to disk.
pub fn create_root(path: &std::path::Path, secret: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| Error::new(Code::IssuerConfig, format!("cannot create {}: {e}", path.display())))?;
    file.write_all(secret)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::new(Code::IssuerConfig, format!("cannot write {}: {e}", path.display())))
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

    #[test]
    fn the_key_set_sequence_grows_with_epochs_rotations_and_a_new_root_secret() {
        let start = 10_000 * 600 + 100;
        let clock = Arc::new(ManualClock::new(start));
        let keys = IssuerKeys::derived(
            Zeroizing::new(vec![1; 32]),
            Algorithm::EdDSA,
            600,
            330,
            43_230,
            clock.clone(),
        )
        .unwrap();
        let sequence_of_set =
            |keys: &IssuerKeys| KeySet::from_cbor(&keys.published_cbor().unwrap()).unwrap().sequence();
        assert_eq!(sequence_of_set(&keys), 10_000 * 600, "the epoch's start");
        clock.set(start + 400);
        assert_eq!(sequence_of_set(&keys), 10_000 * 600, "unchanged within an epoch");
        // A rotation at start + 400 begins the next epoch then.
        let rotation = keys.plan_rotation(start + 400, false).unwrap();
        keys.set_schedule(RotationSchedule::new(vec![(start + 400, rotation.offset)]));
        assert_eq!(sequence_of_set(&keys), start + 400);
        clock.set(start + 1000);
        assert_eq!(sequence_of_set(&keys), start + 1000, "the next natural boundary");
        // A root secret recorded later (an emergency replacement) outranks them.
        keys.set_root_since(start + 1200);
        clock.set(start + 1300);
        assert_eq!(sequence_of_set(&keys), start + 1200);
        let fixed = IssuerKeys::fixed(SigningKey::derive(Algorithm::EdDSA, b"s", b"f").unwrap(), clock);
        assert_eq!(
            fixed.published_cbor().unwrap()[0],
            0x81,
            "a fixed key publishes the bare COSE_KeySet"
        );
    }

    #[test]
    fn a_scheduled_rotation_signs_with_the_published_next_key_and_keeps_the_previous_one() {
        // Epoch 10,000 of 600 s began 100 s ago; the cache max-age is 150 s.
        let start = 10_000 * 600 + 100;
        let clock = Arc::new(ManualClock::new(start));
        let keys = Arc::new(
            IssuerKeys::derived(
                Zeroizing::new(vec![1; 32]),
                Algorithm::EdDSA,
                600,
                330,
                43_230,
                clock.clone(),
            )
            .unwrap(),
        );
        let kid = |e: u64| derived_kid(e, &keys.key_for_epoch(e).unwrap());
        let too_early = keys.plan_rotation(start, false).unwrap_err();
        assert_eq!(too_early.code(), Code::IssuerRotationTooEarly);
        assert!(too_early.message().contains("60 s"), "{}", too_early.message());
        assert!(keys.plan_rotation(start, true).is_ok(), "force");
        let now = start + 100; // published for 200 s > 150 + 10
        clock.set(now);
        let before = keys.published().unwrap();
        let rotation = keys.plan_rotation(now, false).unwrap();
        assert_eq!(rotation.kid, kid(10_001));
        assert_eq!(rotation.previous_kid, kid(10_000));
        assert_eq!(rotation.next_kid, kid(10_002));
        assert!(
            before.get(&rotation.kid).is_some(),
            "the new key was published before it signs"
        );
        keys.set_schedule(RotationSchedule::new(vec![(now, rotation.offset)]));
        assert_eq!(keys.current().unwrap().1, kid(10_001));
        let after = keys.published().unwrap();
        for e in [10_000, 10_001, 10_002] {
            assert!(after.get(&kid(e)).is_some(), "epoch {e} published");
        }
        // The new epoch lasts a whole period, and a second rotation waits.
        assert_eq!(
            keys.plan_rotation(now + 1, false).unwrap_err().code(),
            Code::IssuerRotationTooEarly
        );
        clock.set(now + 599);
        assert_eq!(keys.current().unwrap().1, kid(10_001));
        assert!(keys.published().unwrap().get(&kid(10_000)).is_some(), "previous kept");
        clock.set(now + 600);
        assert_eq!(keys.current().unwrap().1, kid(10_002));
        // Sessions signed before the rotation still verify at the issuer.
        let internal = keys.internal_source().key_set();
        assert!(internal.get(&kid(10_000)).is_some() && internal.get(&kid(9_950)).is_some());
        // A replaced secret stops everything.
        keys.mark_replaced();
        assert_eq!(keys.current().unwrap_err().code(), Code::IssuerRootSecretMismatch);
        assert!(keys.published_cbor().is_err());
        assert!(keys.internal_source().key_set().is_empty());
    }

    #[test]
    fn forced_rotations_are_capped_per_period_and_a_period_is_bounded() {
        let start = 10_000 * 600 + 100;
        let clock = Arc::new(ManualClock::new(start));
        let keys = IssuerKeys::derived(Zeroizing::new(vec![1; 32]), Algorithm::EdDSA, 600, 330, 43_230, clock).unwrap();
        let mut rows = Vec::new();
        for i in 0..MAX_ROTATIONS_PER_PERIOD as u64 {
            let rotation = keys.plan_rotation(start + i, true).unwrap();
            rows.push((start + i, rotation.offset));
            keys.set_schedule(RotationSchedule::new(rows.clone()));
        }
        let capped = keys
            .plan_rotation(start + MAX_ROTATIONS_PER_PERIOD as u64, true)
            .unwrap_err();
        assert_eq!(capped.code(), Code::IssuerRotationTooEarly);
        assert!(capped.message().contains("--emergency"), "{}", capped.message());
        // A period later the oldest rotations no longer count.
        assert!(keys.plan_rotation(start + 600 + 1, true).is_ok());
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(start));
        for period in [0, MIN_ROTATION_PERIOD - 1, MAX_ROTATION_PERIOD + 1, u64::MAX] {
            assert_eq!(
                IssuerKeys::derived(
                    Zeroizing::new(vec![1; 32]),
                    Algorithm::EdDSA,
                    period,
                    330,
                    0,
                    clock.clone()
                )
                .unwrap_err()
                .code(),
                Code::IssuerConfig,
                "period {period}"
            );
        }
        assert_eq!(lookback_start(5_000, 600, 330), 5_000 - 600);
        assert_eq!(lookback_start(5_000, 600, 595), 5_000 - 1_200, "settle margin");
        assert_eq!(lookback_start(10, 600, 43_230), 0);
    }

    #[test]
    fn the_offset_in_effect_is_the_last_rotations() {
        let schedule = RotationSchedule::new(vec![(2_000, 700), (1_000, 300)]);
        assert_eq!(schedule.offset_at(999), 0);
        assert_eq!(schedule.offset_at(1_000), 300);
        assert_eq!(schedule.offset_at(1_999), 300);
        assert_eq!(schedule.offset_at(5_000), 700);
    }
}
