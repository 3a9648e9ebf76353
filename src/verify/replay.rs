//! Replay detection: each (audience, client key, jti) is accepted once.
//!
//! An entry lives until its proof can no longer be fresh on any clock within
//! the leeway of the recorder's (`iat + max_age + leeway`, plus one second),
//! so an entry never expires while its proof would still be accepted, by
//! this verifier or a replica sharing the store (keycloak#43505 is the bug
//! this rules out).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{Code, Result, err};
use crate::key::Thumbprint;

/// The identity of a proof for replay purposes: SHA-256 over the audience,
/// the client key's thumbprint and the jti. Never the proof or signature
/// bytes, which an ECDSA signer can vary.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey(pub [u8; 32]);

impl ReplayKey {
    /// Derives the key for one proof.
    pub fn new(audience: &str, thumbprint: &Thumbprint, jti: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"keybound-replay-v1");
        h.update((audience.len() as u64).to_be_bytes());
        h.update(audience.as_bytes());
        h.update(thumbprint.as_bytes());
        h.update(jti);
        ReplayKey(h.finalize().into())
    }
}

impl std::fmt::Debug for ReplayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplayKey({})", crate::encoding::hex_encode(&self.0[..8]))
    }
}

/// What a store answers: at once (in-memory) or later (network stores).
pub enum ReplayOutcome<'a> {
    /// The answer is known now.
    Ready(Result<()>),
    /// The answer needs I/O; await it.
    Pending(Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>),
}

/// A replay store. `check_and_record` must be atomic: of two concurrent
/// calls with the same key, exactly one succeeds. Stores fail closed: when
/// they cannot answer, they answer an error, never "not seen".
pub trait ReplayStore: Send + Sync {
    /// Records `key` until `expires_at` (Unix seconds). Fails with
    /// `replay.detected` if it is already recorded and unexpired.
    fn check_and_record(&self, key: ReplayKey, expires_at: u64, now: u64) -> ReplayOutcome<'_>;
}

const SHARDS: usize = 16;
/// Default capacity of [`MemoryReplayStore`]: about 2,800 proofs/s sustained
/// over the 91 s an entry lives with the defaults (60 s max age + 30 s leeway + 1).
pub const DEFAULT_REPLAY_CAPACITY: usize = 262_144;

#[derive(Default)]
struct Shard {
    entries: HashMap<[u8; 32], u64>,
    // Insertion order; expiries are nearly monotonic, so popping the front
    // while it has expired reclaims almost everything in O(1) per entry.
    order: VecDeque<(u64, [u8; 32])>,
    last_sweep: u64,
}

/// The default in-process replay store: bounded, sharded, hash-flood
/// resistant (SipHash with a random key), and fail-closed when full of live
/// entries (`replay.store_full`); it never evicts an unexpired entry.
pub struct MemoryReplayStore {
    shards: Vec<Mutex<Shard>>,
    len: AtomicUsize,
    capacity: usize,
}

impl std::fmt::Debug for MemoryReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryReplayStore({}/{})", self.len(), self.capacity)
    }
}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY_CAPACITY)
    }
}

impl MemoryReplayStore {
    /// A store holding at most `capacity` live entries.
    pub fn new(capacity: usize) -> Self {
        MemoryReplayStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            len: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Entries currently held (live or awaiting reclamation).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn record(&self, key: ReplayKey, expires_at: u64, now: u64) -> Result<()> {
        let index = usize::from(key.0[0]) % SHARDS;
        // A poisoned lock means a panic elsewhere mid-update: fail closed.
        let Ok(mut shard) = self.shards[index].lock() else {
            return err(
                Code::ReplayStoreUnavailable,
                "the replay store is unusable after an internal failure",
            );
        };
        let removed = reclaim_front(&mut shard, now);
        self.len.fetch_sub(removed, Ordering::Relaxed);
        if let Some(existing) = shard.entries.get(&key.0)
            && *existing > now
        {
            return err(
                Code::ReplayDetected,
                "this proof (key and jti) was already used; make a new proof for each request",
            );
        }
        if self.len.load(Ordering::Relaxed) >= self.capacity && shard.last_sweep != now {
            // Full: reclaim expired entries hidden behind live ones, at most
            // once a second per shard so a flood cannot make every call O(n).
            shard.last_sweep = now;
            let before = shard.entries.len();
            shard.entries.retain(|_, exp| *exp > now);
            let swept = before - shard.entries.len();
            shard.order.retain(|(exp, _)| *exp > now);
            self.len.fetch_sub(swept, Ordering::Relaxed);
        }
        if self.len.load(Ordering::Relaxed) >= self.capacity {
            return err(
                Code::ReplayStoreFull,
                format!(
                    "the replay store holds {} live entries (its capacity); refusing rather than forgetting one",
                    self.capacity
                ),
            );
        }
        if shard.entries.insert(key.0, expires_at).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        shard.order.push_back((expires_at, key.0));
        Ok(())
    }
}

fn reclaim_front(shard: &mut Shard, now: u64) -> usize {
    let mut removed = 0;
    while let Some((exp, key)) = shard.order.front().copied() {
        if exp > now {
            break;
        }
        shard.order.pop_front();
        // Only remove if the map still holds this (expired) entry.
        if shard.entries.get(&key).is_some_and(|e| *e <= now) {
            shard.entries.remove(&key);
            removed += 1;
        }
    }
    removed
}

impl ReplayStore for MemoryReplayStore {
    fn check_and_record(&self, key: ReplayKey, expires_at: u64, now: u64) -> ReplayOutcome<'_> {
        ReplayOutcome::Ready(self.record(key, expires_at, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> ReplayKey {
        ReplayKey::new("aud", &Thumbprint([7; 32]), &i.to_be_bytes())
    }

    fn record(store: &MemoryReplayStore, k: ReplayKey, exp: u64, now: u64) -> Result<()> {
        match store.check_and_record(k, exp, now) {
            ReplayOutcome::Ready(r) => r,
            ReplayOutcome::Pending(_) => unreachable!(),
        }
    }

    #[test]
    fn detects_replays_until_expiry() {
        let store = MemoryReplayStore::new(10);
        assert!(record(&store, key(1), 100, 10).is_ok());
        assert_eq!(
            record(&store, key(1), 100, 99).unwrap_err().code(),
            Code::ReplayDetected
        );
        // Same jti under another key or audience is independent.
        assert!(
            record(
                &store,
                ReplayKey::new("aud", &Thumbprint([8; 32]), &1u32.to_be_bytes()),
                100,
                10
            )
            .is_ok()
        );
        assert!(
            record(
                &store,
                ReplayKey::new("other", &Thumbprint([7; 32]), &1u32.to_be_bytes()),
                100,
                10
            )
            .is_ok()
        );
        // After expiry the proof is stale anyway; the slot is reusable.
        assert!(record(&store, key(1), 200, 100).is_ok());
    }

    #[test]
    fn fails_closed_when_full_and_recovers_after_expiry() {
        let store = MemoryReplayStore::new(4);
        for i in 0..4 {
            record(&store, key(i), 50, 10).unwrap();
        }
        assert_eq!(
            record(&store, key(9), 50, 10).unwrap_err().code(),
            Code::ReplayStoreFull
        );
        // Live entries were not evicted to make room.
        assert_eq!(record(&store, key(0), 50, 11).unwrap_err().code(), Code::ReplayDetected);
        assert!(record(&store, key(9), 100, 50).is_ok());
        assert!(store.len() <= 4);
    }

    #[test]
    fn concurrent_inserts_of_one_key_succeed_exactly_once() {
        let store = std::sync::Arc::new(MemoryReplayStore::new(1000));
        let wins: usize = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || usize::from(record(&store, key(42), 100, 1).is_ok()))
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(wins, 1);
    }
}
