//! Password hashing with argon2id, and a login check whose cost does not
//! reveal whether the user exists.
//!
//! Every hash and every check runs on a blocking thread while holding one
//! of [`hash_slot_count`] hashing slots, in the argon2 work buffer of that
//! slot: buffers are made once, reused, zeroized after each use and never
//! freed, so memory for password hashing stays at most
//! `hash_slot_count() × 19 MiB` however many logins arrive (spec/issuer.md
//! §5.4). Letting argon2 allocate a fresh 19 MiB per check would not: the
//! allocator keeps the freed buffers, and a flood of logins grew the issuer
//! by hundreds of MiB that it never gave back.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Code, Error, Result, err};

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted (hashing cost is linear in it).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Most hashing slots, whatever the number of cores: with one 19 MiB
/// buffer each, at most 152 MiB for password hashing.
pub const MAX_HASH_SLOTS: usize = 8;

/// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;
const SALT_LEN: usize = 16;
const OUTPUT_LEN: usize = 32;

fn params() -> Params {
    Params::new(MEMORY_KIB, PASSES, LANES, Some(OUTPUT_LEN)).expect("valid argon2 parameters")
}

/// Checks a new password's length.
pub fn check_strength(password: &str) -> Result<()> {
    if password.len() < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return err(
            Code::IssuerBadRequest,
            format!("a password has {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} bytes"),
        );
    }
    Ok(())
}

/// How long a login or an admin password change waits for a free hashing
/// slot before the issuer answers `issuer.unavailable` (503): a flood of
/// password guesses queues here instead of piling up threads and buffers.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The number of hashing slots: one per core (argon2 with one lane keeps a
/// core busy; more at once adds memory, not throughput), at most
/// [`MAX_HASH_SLOTS`].
pub fn hash_slot_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(MAX_HASH_SLOTS)
}

/// The hashing slots and their work buffers. A buffer is made only by a slot
/// holder that finds none free, and each holder uses one at a time, so there
/// are never more buffers than slots.
struct Pool {
    slots: Arc<tokio::sync::Semaphore>,
    buffers: Mutex<Vec<Box<[Block]>>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        slots: Arc::new(tokio::sync::Semaphore::new(hash_slot_count())),
        buffers: Mutex::new(Vec::new()),
    })
}

/// Runs `f` with a work buffer of the pool. Only for holders of a slot.
fn with_buffer<R>(f: impl FnOnce(&mut [Block]) -> R) -> R {
    let pool = pool();
    let taken = pool.buffers.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let mut buffer = taken.unwrap_or_else(|| vec![Block::default(); params().block_count()].into_boxed_slice());
    let result = f(&mut buffer);
    // The blocks are derived from the password: a guess could be tested
    // against them without paying the memory-hard cost.
    buffer.iter_mut().for_each(Zeroize::zeroize);
    pool.buffers.lock().unwrap_or_else(|p| p.into_inner()).push(buffer);
    result
}

/// The right to run one password hash or check. Taken before a login
/// attempt is counted, so that a login the issuer is too busy to check never
/// counts towards a lockout.
#[derive(Debug)]
pub struct HashSlot {
    // Held, never read: dropping it frees the slot.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Waits (at most 2 s) for a hashing slot; `issuer.unavailable` when none
/// frees up in time.
pub async fn hash_slot() -> Result<HashSlot> {
    match tokio::time::timeout(HASH_QUEUE_WAIT, pool().slots.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(HashSlot { _permit: permit }),
        _ => err(
            Code::IssuerUnavailable,
            "the issuer is busy checking passwords; retry shortly",
        ),
    }
}

/// Runs `f` with a work buffer on a blocking thread that holds `slot`; the
/// slot is freed when `f` is done, even if the request that asked for it
/// has gone away.
async fn run_in_slot<R: Send + 'static>(
    slot: HashSlot,
    f: impl FnOnce(&mut [Block]) -> R + Send + 'static,
) -> Result<R> {
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        with_buffer(f)
    })
    .await
    .map_err(|e| Error::new(Code::IssuerUnavailable, format!("password hashing failed: {e}")))
}

/// Hashes `password` into a PHC string (argon2id, random salt), in a
/// hashing slot (waiting for one at most 2 s).
pub async fn hash(password: Zeroizing<String>) -> Result<String> {
    check_strength(&password)?;
    let salt = crate::random_array::<SALT_LEN>()?;
    let slot = hash_slot().await?;
    run_in_slot(slot, move |buffer| hash_with(buffer, &password, &salt)).await?
}

fn hash_with(buffer: &mut [Block], password: &str, salt: &[u8; SALT_LEN]) -> Result<String> {
    let failed = |e: &dyn std::fmt::Display| Error::new(Code::IssuerUnavailable, format!("hashing failed: {e}"));
    let params = params();
    let mut out = Zeroizing::new([0u8; OUTPUT_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out[..], buffer)
        .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(salt).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out[..]).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`. A stored hash that
/// is not argon2id or needs more memory than a work buffer never matches.
fn check_with(buffer: &mut [Block], password: &str, stored: &str) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    let version = phc.version.map_or(Ok(Version::V0x13), Version::try_from);
    if phc.algorithm != Algorithm::Argon2id.ident() || params.block_count() > buffer.len() {
        #[cfg(feature = "http")]
        tracing::error!(
            "a stored password hash is not argon2id within 19 MiB: that user cannot log in with a password until it is set again"
        );
        return false;
    }
    let Ok(version) = version else {
        return false;
    };
    let mut out = Zeroizing::new([0u8; Output::MAX_LENGTH]);
    let out = &mut out[..expected.len()];
    Argon2::new(Algorithm::Argon2id, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), out, buffer)
        .is_ok()
        // Output compares in constant time.
        && Output::new(out).is_ok_and(|computed| computed == *expected)
}

/// A hash of a password nobody knows, checked when the user does not exist
/// so that unknown users and wrong passwords take the same time. Made on
/// first use, in the buffer of the slot that needs it.
fn decoy(buffer: &mut [Block]) -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let secret = crate::random_array::<16>().unwrap_or([7; 16]);
        let password = Zeroizing::new(crate::encoding::hex_encode(&secret));
        let salt = crate::random_array::<SALT_LEN>().unwrap_or([9; SALT_LEN]);
        hash_with(buffer, &password, &salt).unwrap_or_default()
    })
}

/// Verifies `password` against `stored` (or against the decoy when the user
/// has no password hash) in `slot` (argon2 takes tens of ms).
pub async fn verify(slot: HashSlot, password: Zeroizing<String>, stored: Option<String>) -> bool {
    let known = stored.is_some();
    let ok = run_in_slot(slot, move |buffer| {
        let stored = match stored {
            Some(stored) => stored,
            None => decoy(buffer).to_owned(),
        };
        password.len() <= MAX_PASSWORD_LEN && check_with(buffer, &password, &stored)
    })
    .await
    .unwrap_or(false);
    ok && known
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    fn check(password: &str, stored: Option<String>) -> impl Future<Output = bool> {
        let password = Zeroizing::new(password.to_owned());
        async move { verify(hash_slot().await.unwrap(), password, stored).await }
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash(Zeroizing::new("correct horse".into())).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(check("correct horse", Some(h.clone())).await);
        assert!(!check("wrong horse!", Some(h)).await);
        assert!(!check("correct horse", None).await);
        let short = hash(Zeroizing::new("short".into())).await.unwrap_err();
        assert_eq!(short.code(), Code::IssuerBadRequest);
    }

    /// Hashes made before the pool (by argon2's own allocating API) still
    /// verify, and ours verify with it: the PHC strings are the same format.
    #[tokio::test]
    async fn agrees_with_the_argon2_crate() {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
        let theirs = argon2.hash_password(b"correct horse").unwrap().to_string();
        assert!(check("correct horse", Some(theirs.clone())).await);
        assert!(!check("correct horsf", Some(theirs)).await);
        let ours = hash(Zeroizing::new("correct horse".into())).await.unwrap();
        assert!(argon2.verify_password(b"correct horse", ours.as_str()).is_ok());
    }

    /// A stored hash needing more memory than a work buffer is refused
    /// without hashing (and without allocating for it).
    #[tokio::test]
    async fn a_hash_larger_than_the_buffer_never_matches() {
        let big = Params::new(2 * MEMORY_KIB, 1, 1, None).unwrap();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, big);
        let stored = argon2.hash_password(b"correct horse").unwrap().to_string();
        assert!(!check("correct horse", Some(stored)).await);
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, params());
        let stored = argon2i.hash_password(b"correct horse").unwrap().to_string();
        assert!(!check("correct horse", Some(stored)).await);
    }

    /// However many checks run at once, no more buffers exist than slots.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buffers_never_outnumber_slots() {
        let stored = hash(Zeroizing::new("correct horse".into())).await.unwrap();
        let checks: Vec<_> = (0..3 * hash_slot_count())
            .map(|_| tokio::spawn(check("wrong horse!", Some(stored.clone()))))
            .collect();
        for c in checks {
            assert!(!c.await.unwrap());
        }
        let buffers = pool().buffers.lock().unwrap().len();
        assert!((1..=hash_slot_count()).contains(&buffers), "{buffers} buffers");
    }
}
