//! Password hashing with argon2id, and a login check whose cost does not
//! reveal whether the user exists.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::error::{Code, Error, Result, err};

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted (hashing cost is linear in it).
pub const MAX_PASSWORD_LEN: usize = 1024;

fn argon2() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
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

/// Hashes `password` into a PHC string (argon2id, random salt).
pub fn hash(password: &str) -> Result<String> {
    check_strength(password)?;
    let hash = argon2()
        .hash_password(password.as_bytes())
        .map_err(|e| Error::new(Code::IssuerUnavailable, format!("hashing failed: {e}")))?;
    Ok(hash.to_string())
}

/// A hash of a password nobody knows, checked when the user does not exist
/// so that unknown users and wrong passwords take the same time.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let random = Zeroizing::new(crate::encoding::hex_encode(
            &crate::random_array::<16>().unwrap_or([7; 16]),
        ));
        hash(&random).unwrap_or_default()
    })
}

/// How long a login waits for a free hashing slot before the issuer answers
/// `issuer.unavailable` (503): a flood of password guesses queues here
/// instead of piling up threads and 19 MiB buffers.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// At most two argon2 checks per core run at once.
fn hash_slots() -> &'static Arc<tokio::sync::Semaphore> {
    static SLOTS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(tokio::sync::Semaphore::new(2 * cores))
    })
}

/// The right to run one password check. Taken before the login attempt is
/// counted, so that a login the issuer is too busy to check never counts
/// towards a lockout.
#[derive(Debug)]
pub struct HashSlot {
    // Held, never read: dropping it frees the slot.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Waits (at most 2 s) for a hashing slot; `issuer.unavailable` when none
/// frees up in time.
pub async fn hash_slot() -> Result<HashSlot> {
    match tokio::time::timeout(HASH_QUEUE_WAIT, hash_slots().clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(HashSlot { _permit: permit }),
        _ => err(
            Code::IssuerUnavailable,
            "the issuer is busy checking passwords; retry shortly",
        ),
    }
}

/// Verifies `password` against `stored` (or against the decoy when the user
/// has no password hash) on a blocking thread (argon2 takes tens of ms).
/// The slot moves into that thread and is freed when the check is done, even
/// if the request that asked for it has gone away.
pub async fn verify(slot: HashSlot, password: Zeroizing<String>, stored: Option<String>) -> bool {
    let known = stored.is_some();
    let stored = stored.unwrap_or_else(|| decoy().to_owned());
    let ok = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        password.len() <= MAX_PASSWORD_LEN && argon2().verify_password(password.as_bytes(), stored.as_str()).is_ok()
    })
    .await
    .unwrap_or(false);
    ok && known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let check = |password: &str, stored: Option<String>| {
            let password = Zeroizing::new(password.to_owned());
            async move { verify(hash_slot().await.unwrap(), password, stored).await }
        };
        assert!(check("correct horse", Some(h.clone())).await);
        assert!(!check("wrong horse!", Some(h)).await);
        assert!(!check("correct horse", None).await);
        assert_eq!(hash("short").unwrap_err().code(), Code::IssuerBadRequest);
    }
}
