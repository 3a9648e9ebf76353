//! Replay detection: each (audience, client key, jti) is accepted once.
//!
//! An entry lives until its proof can no longer be fresh on any clock within
//! the leeway of the recorder's (`iat + max_age + leeway`, plus one second),
//! so an entry never expires while its proof would still be accepted, by
//! this verifier or a replica sharing the store (keycloak#43505 is the bug
//! this rules out).
//!
//! A store that starts empty cannot know which proofs were accepted before
//! it started (by the process before a restart, or before Redis lost its
//! data), so it refuses proofs made before its start: the start-up fence
//! (`replay.store_restarted`; the client retries once with a new proof).

use std::collections::VecDeque;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use hashbrown::HashTable;
use sha2::{Digest, Sha256};

use crate::error::{Code, Error, Result, err};
use crate::key::Thumbprint;
use crate::verify::{Clock, SystemClock};

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

/// One proof to record (P13).
#[derive(Clone, Copy, Debug)]
pub struct ReplayEntry {
    /// The proof's replay key.
    pub key: ReplayKey,
    /// The proof's `iat`: a store refuses proofs made before it started.
    pub issued_at: u64,
    /// Unix seconds until which the entry must be kept.
    pub expires_at: u64,
    /// The verifier's current time.
    pub now: u64,
}

/// How full a store is, for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayUsage {
    /// Entries held.
    pub entries: usize,
    /// Bytes of memory the entries' tables take.
    pub bytes: usize,
    /// The most the tables may take; at that point new proofs are refused.
    pub budget_bytes: usize,
}

/// A replay store that answers at once (in-process). `check_and_record`
/// must be atomic: of two concurrent calls with the same key, exactly one
/// succeeds. Stores fail closed: when they cannot answer, they answer an
/// error, never "not seen".
///
/// Stores that need I/O implement [`AsyncReplayStore`] instead; every
/// `ReplayStore` is also an `AsyncReplayStore`. Which one a verifier holds
/// decides, at compile time, which methods it has: the synchronous
/// [`Verifier::verify_request`](crate::verify::Verifier::verify_request)
/// needs a `ReplayStore`, so a network store can never be used where
/// nothing awaits it.
pub trait ReplayStore: Send + Sync {
    /// Records `entry.key` until `entry.expires_at`. Fails with
    /// `replay.detected` if it is already recorded and live, and with
    /// `replay.store_restarted` if the proof was made before the store's
    /// start-up fence.
    fn check_and_record(&self, entry: ReplayEntry) -> Result<()>;

    /// How full the store is, when it knows. Default: `None`.
    fn usage(&self) -> Option<ReplayUsage> {
        None
    }
}

/// A replay store that may need I/O to answer (Redis), with the same
/// contract as [`ReplayStore`]. Object safe: a verifier that picks its
/// store at run time holds an `Arc<dyn AsyncReplayStore>`.
pub trait AsyncReplayStore: Send + Sync {
    /// As [`ReplayStore::check_and_record`], answered by the future.
    fn check_and_record_async(&self, entry: ReplayEntry) -> ReplayFuture<'_>;

    /// How full the store is, when it knows. Default: `None`.
    fn usage(&self) -> Option<ReplayUsage> {
        None
    }
}

impl<T: ReplayStore + ?Sized> AsyncReplayStore for T {
    fn check_and_record_async(&self, entry: ReplayEntry) -> ReplayFuture<'_> {
        ReplayFuture::ready(self.check_and_record(entry))
    }

    fn usage(&self) -> Option<ReplayUsage> {
        ReplayStore::usage(self)
    }
}

/// The answer of an [`AsyncReplayStore`]: known already (an in-process
/// store, no allocation) or still to come (a boxed future).
#[must_use = "the proof is recorded only when the future is awaited"]
pub struct ReplayFuture<'a>(Answer<'a>);

enum Answer<'a> {
    Ready(Option<Result<()>>),
    Pending(Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>),
}

impl<'a> ReplayFuture<'a> {
    /// An answer known now.
    pub fn ready(result: Result<()>) -> Self {
        ReplayFuture(Answer::Ready(Some(result)))
    }

    /// An answer that needs I/O.
    pub fn new(future: impl Future<Output = Result<()>> + Send + 'a) -> Self {
        ReplayFuture(Answer::Pending(Box::pin(future)))
    }
}

impl Future for ReplayFuture<'_> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match &mut self.0 {
            Answer::Ready(result) => Poll::Ready(
                result
                    .take()
                    .unwrap_or_else(|| err(Code::ReplayStoreUnavailable, "the replay answer was already taken")),
            ),
            Answer::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl std::fmt::Debug for ReplayFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Answer::Ready(_) => f.write_str("ReplayFuture(ready)"),
            Answer::Pending(_) => f.write_str("ReplayFuture(pending)"),
        }
    }
}

/// The refusal of a proof made before a store's start-up fence.
pub(crate) fn restarted(fence: u64, issued_at: u64) -> Error {
    Error::new(
        Code::ReplayStoreRestarted,
        format!(
            "this proof was made at {issued_at}, before the replay store started (it refuses proofs made before {fence}, \
             which it cannot tell from replays); make a new proof"
        ),
    )
}

const SHARDS: usize = 16;
/// Entries whose expiries fall in the same 8-second window share a table
/// and are dropped together when the window has passed.
pub const BUCKET_SECONDS: u64 = 8;
/// The default memory budget of [`MemoryReplayStore`] per CPU core: enough
/// for the proofs one core can verify with the default proof max age and
/// leeway (spec/verification.md §1).
pub const DEFAULT_REPLAY_BUDGET_PER_CORE: usize = 96 << 20;
/// The share of the budget at which the store warns that it fills up.
const WARN_PERCENT: usize = 80;
/// Below this share the warning is re-armed.
const CALM_PERCENT: usize = 70;

/// The default budget: [`DEFAULT_REPLAY_BUDGET_PER_CORE`] times the cores
/// this process may run on (at most 64).
pub fn default_replay_budget() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(64));
    DEFAULT_REPLAY_BUDGET_PER_CORE * cores
}

/// What the store keeps of a replay key: its first 128 bits. Two live
/// entries sharing them (probability about n²/2¹²⁹) can only make a proof
/// refused, never accepted twice.
type Kept = [u8; 16];

struct Bucket {
    /// Every entry in `keys` expires at or before `end`.
    end: u64,
    keys: HashTable<Kept>,
}

#[derive(Default)]
struct Shard {
    /// Ordered by `end`.
    buckets: VecDeque<Bucket>,
}

/// Alarm states: below the warning share, warned, refused for lack of room.
const CALM: u8 = 0;
const WARNED: u8 = 1;
const FULL: u8 = 2;

/// The default in-process replay store: memory bounded by a budget in
/// bytes, entries of 16 bytes in tables per 8-second expiry window (a
/// window's table is dropped whole when it has passed, no per-entry sweep),
/// sharded, hash-flood resistant (a randomly keyed hash), fail-closed when
/// its budget is spent (`replay.store_full`; it never drops a live entry),
/// and fenced: it refuses proofs made before it started.
pub struct MemoryReplayStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    fence: u64,
    budget: usize,
    bytes: AtomicUsize,
    entries: AtomicUsize,
    alarm: AtomicU8,
}

impl std::fmt::Debug for MemoryReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let usage = self.usage();
        write!(
            f,
            "MemoryReplayStore({} entries, {}/{} bytes, fence {})",
            usage.entries, usage.bytes, usage.budget_bytes, self.fence
        )
    }
}

impl Default for MemoryReplayStore {
    /// [`default_replay_budget`], fenced at the system clock's current second.
    fn default() -> Self {
        Self::with_budget(default_replay_budget())
    }
}

impl MemoryReplayStore {
    /// A store whose tables take at most `budget_bytes`, refusing proofs
    /// made before the system clock's current second.
    pub fn with_budget(budget_bytes: usize) -> Self {
        MemoryReplayStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            fence: SystemClock.now(),
            budget: budget_bytes,
            bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            alarm: AtomicU8::new(CALM),
        }
    }

    /// Refuses proofs whose `iat` is before `fence` instead: a verifier with
    /// its own clock fences its store at that clock's start; 0 turns the
    /// fence off (for a store that only ever sees proofs once, as in an
    /// offline check, or that started before any proof it will see).
    pub fn fenced_at(mut self, fence: u64) -> Self {
        self.fence = fence;
        self
    }

    /// Proofs made before this time are refused (`replay.store_restarted`).
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Entries held (live, or expired and awaiting their table's drop).
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How full the store is.
    pub fn usage(&self) -> ReplayUsage {
        ReplayUsage {
            entries: self.len(),
            bytes: self.bytes.load(Ordering::Relaxed),
            budget_bytes: self.budget,
        }
    }

    fn record(&self, entry: ReplayEntry) -> Result<()> {
        if entry.issued_at < self.fence {
            return Err(restarted(self.fence, entry.issued_at));
        }
        let mut kept = [0; 16];
        kept.copy_from_slice(&entry.key.0[..16]);
        let hash = self.hasher.hash_one(kept);
        // The table uses the low bits and the top 7; the shard others.
        let index = (hash >> 32) as usize % SHARDS;
        // A poisoned lock means a panic elsewhere mid-update: fail closed.
        let Ok(mut shard) = self.shards[index].lock() else {
            return err(
                Code::ReplayStoreUnavailable,
                "the replay store is unusable after an internal failure",
            );
        };
        self.drop_passed_windows(&mut shard, entry.now);
        if shard
            .buckets
            .iter()
            .any(|b| b.keys.find(hash, |k| *k == kept).is_some())
        {
            return err(
                Code::ReplayDetected,
                "this proof (key and jti) was already used; make a new proof for each request",
            );
        }
        let end = entry.expires_at.div_ceil(BUCKET_SECONDS).saturating_mul(BUCKET_SECONDS);
        let position = match shard.buckets.binary_search_by_key(&end, |b| b.end) {
            Ok(found) => found,
            Err(slot) => {
                let keys = HashTable::new();
                shard.buckets.insert(slot, Bucket { end, keys });
                slot
            }
        };
        let keys = &mut shard.buckets[position].keys;
        if keys.len() == keys.capacity() {
            self.grow(keys)?;
        }
        keys.insert_unique(hash, kept, |k| self.hasher.hash_one(k));
        self.entries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Drops the tables of windows that have passed: every entry in them
    /// has expired.
    fn drop_passed_windows(&self, shard: &mut Shard, now: u64) {
        let mut dropped = false;
        while shard.buckets.front().is_some_and(|b| b.end <= now) {
            if let Some(bucket) = shard.buckets.pop_front() {
                self.entries.fetch_sub(bucket.keys.len(), Ordering::Relaxed);
                self.bytes.fetch_sub(bucket.keys.allocation_size(), Ordering::Relaxed);
                dropped = true;
            }
        }
        if dropped
            && self.bytes.load(Ordering::Relaxed).saturating_mul(100) < self.budget.saturating_mul(CALM_PERCENT)
            && self.alarm.swap(CALM, Ordering::Relaxed) != CALM
        {
            log_calm(self.usage());
        }
    }

    /// Doubles a full table if the budget has room for the new one, which
    /// takes at most twice the old one's bytes (its first allocation: 84).
    fn grow(&self, keys: &mut HashTable<Kept>) -> Result<()> {
        let old = keys.allocation_size();
        let reserved = old.saturating_mul(2).max(84) - old;
        let within_budget = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bytes| {
                bytes.checked_add(reserved).filter(|total| *total <= self.budget)
            })
            .is_ok();
        if !within_budget {
            if self.alarm.swap(FULL, Ordering::Relaxed) != FULL {
                log_full(self.usage());
            }
            return err(
                Code::ReplayStoreFull,
                format!(
                    "the replay store's tables take {} of their {} bytes and hold {} live entries; refusing rather than forgetting one",
                    self.bytes.load(Ordering::Relaxed),
                    self.budget,
                    self.len()
                ),
            );
        }
        keys.reserve(1, |k| self.hasher.hash_one(k));
        let grown = keys.allocation_size() - old;
        if grown < reserved {
            self.bytes.fetch_sub(reserved - grown, Ordering::Relaxed);
        } else {
            self.bytes.fetch_add(grown - reserved, Ordering::Relaxed);
        }
        let usage = self.usage();
        if usage.bytes.saturating_mul(100) >= self.budget.saturating_mul(WARN_PERCENT)
            && self
                .alarm
                .compare_exchange(CALM, WARNED, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log_filling(usage);
        }
        Ok(())
    }
}

#[cfg(feature = "http")]
fn log_filling(usage: ReplayUsage) {
    tracing::warn!(
        entries = usage.entries,
        bytes = usage.bytes,
        budget_bytes = usage.budget_bytes,
        "the replay store has used {WARN_PERCENT}% of its memory budget; when it is spent every new proof is refused \
         (replay.store_full): raise the budget or look for a flood"
    );
}

#[cfg(feature = "http")]
fn log_full(usage: ReplayUsage) {
    tracing::error!(
        entries = usage.entries,
        bytes = usage.bytes,
        budget_bytes = usage.budget_bytes,
        "the replay store's memory budget is spent: new proofs are refused (replay.store_full) until entries expire"
    );
}

#[cfg(feature = "http")]
fn log_calm(usage: ReplayUsage) {
    tracing::info!(
        entries = usage.entries,
        bytes = usage.bytes,
        budget_bytes = usage.budget_bytes,
        "the replay store is below {CALM_PERCENT}% of its memory budget again"
    );
}

#[cfg(not(feature = "http"))]
fn log_filling(_: ReplayUsage) {}
#[cfg(not(feature = "http"))]
fn log_full(_: ReplayUsage) {}
#[cfg(not(feature = "http"))]
fn log_calm(_: ReplayUsage) {}

impl ReplayStore for MemoryReplayStore {
    fn check_and_record(&self, entry: ReplayEntry) -> Result<()> {
        self.record(entry)
    }

    fn usage(&self) -> Option<ReplayUsage> {
        Some(MemoryReplayStore::usage(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> ReplayKey {
        ReplayKey::new("aud", &Thumbprint([7; 32]), &i.to_be_bytes())
    }

    fn record(store: &MemoryReplayStore, key: ReplayKey, expires_at: u64, now: u64) -> Result<()> {
        let entry = ReplayEntry {
            key,
            issued_at: now,
            expires_at,
            now,
        };
        store.check_and_record(entry)
    }

    fn store(budget: usize) -> MemoryReplayStore {
        MemoryReplayStore::with_budget(budget).fenced_at(0)
    }

    #[test]
    fn detects_replays_until_the_window_has_passed() {
        let store = store(1 << 20);
        assert!(record(&store, key(1), 100, 10).is_ok());
        assert_eq!(
            record(&store, key(1), 100, 99).unwrap_err().code(),
            Code::ReplayDetected
        );
        // Same jti under another key or audience is independent.
        let other_key = ReplayKey::new("aud", &Thumbprint([8; 32]), &1u32.to_be_bytes());
        assert!(record(&store, other_key, 100, 10).is_ok());
        let other_audience = ReplayKey::new("other", &Thumbprint([7; 32]), &1u32.to_be_bytes());
        assert!(record(&store, other_audience, 100, 10).is_ok());
        // Kept to the end of its 8-s window (104), never less than asked.
        assert_eq!(
            record(&store, key(1), 200, 103).unwrap_err().code(),
            Code::ReplayDetected
        );
        assert!(record(&store, key(1), 200, 104).is_ok());
    }

    #[test]
    fn a_window_is_dropped_whole_once_it_has_passed() {
        let store = store(1 << 20);
        for i in 0..1000 {
            record(&store, key(i), 50 + u64::from(i % 3), 10).unwrap();
        }
        assert_eq!(store.len(), 1000);
        let held = store.usage().bytes;
        assert!(held > 1000 * 17, "{held}");
        // Every shard drops its passed windows when it is next used.
        for i in 1000..1200 {
            record(&store, key(i), 100, 56).unwrap();
        }
        assert_eq!(store.len(), 200);
        assert!(store.usage().bytes < held);
    }

    #[test]
    fn fails_closed_when_the_budget_is_spent_and_recovers_after_expiry() {
        let store = store(16 * 1024);
        let mut accepted = 0;
        let refusal = loop {
            match record(&store, key(accepted), 50, 10) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted < 10_000, "a 16 KiB budget held {accepted} entries");
        };
        assert_eq!(refusal.code(), Code::ReplayStoreFull);
        let usage = store.usage();
        assert!(usage.bytes <= usage.budget_bytes, "{usage:?}");
        assert!(accepted >= 300, "only {accepted} entries in 16 KiB");
        // Live entries were not dropped to make room.
        for i in 0..accepted {
            assert_eq!(record(&store, key(i), 50, 11).unwrap_err().code(), Code::ReplayDetected);
        }
        // Once the window has passed, its tables are dropped and there is
        // room again (shards fill unevenly, so not exactly as much).
        for i in 0..accepted / 2 {
            record(&store, key(i + 100_000), 100, 56).unwrap();
        }
        assert_eq!(store.len(), accepted as usize / 2);
    }

    #[test]
    fn refuses_proofs_made_before_its_fence() {
        let store = MemoryReplayStore::with_budget(1 << 20).fenced_at(1000);
        let entry = |issued_at| ReplayEntry {
            key: key(issued_at as u32),
            issued_at,
            expires_at: issued_at + 91,
            now: 1000,
        };
        let refused = store.check_and_record(entry(999));
        assert_eq!(refused.unwrap_err().code(), Code::ReplayStoreRestarted);
        store.check_and_record(entry(1000)).unwrap();
        // A store made now on the system clock refuses earlier seconds' proofs.
        let before = SystemClock.now();
        let fence = MemoryReplayStore::default().fence();
        assert!(fence == before || fence == before + 1, "{fence} {before}");
    }

    #[test]
    fn concurrent_inserts_of_one_key_succeed_exactly_once() {
        let store = std::sync::Arc::new(store(1 << 20));
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
