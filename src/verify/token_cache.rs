//! Tokens already verified, so that later requests pay only the proof check.
//!
//! Keyed by SHA-256 of the exact token bytes. Bounded: when full, the oldest
//! entry goes (a cache may forget; a miss only costs one token verification).
//! An entry is dropped once the token's `exp` + leeway has passed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::token::VerifiedToken;

const SHARDS: usize = 8;
/// Default number of cached tokens.
pub const DEFAULT_TOKEN_CACHE_CAPACITY: usize = 65_536;

#[derive(Default)]
struct Shard {
    map: HashMap<[u8; 32], Arc<VerifiedToken>>,
    order: VecDeque<[u8; 32]>,
}

pub(crate) struct TokenCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, hash: &[u8; 32]) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[usize::from(hash[0]) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The cached token, if present and not expired at `now`.
    pub(crate) fn get(&self, hash: &[u8; 32], now: u64, leeway: u64) -> Option<Arc<VerifiedToken>> {
        if self.per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(hash);
        let token = shard.map.get(hash)?.clone();
        if token.expires_at().saturating_add(leeway) < now {
            shard.map.remove(hash);
            return None;
        }
        Some(token)
    }

    pub(crate) fn insert(&self, hash: [u8; 32], token: Arc<VerifiedToken>) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(&hash);
        while shard.map.len() >= self.per_shard {
            match shard.order.pop_front() {
                Some(old) => {
                    shard.map.remove(&old);
                }
                None => break,
            }
        }
        if shard.map.insert(hash, token).is_none() {
            shard.order.push_back(hash);
        }
        // Keep the order queue from growing with entries `get` already dropped.
        if shard.order.len() > 2 * self.per_shard {
            let Shard { map, order } = &mut *shard;
            order.retain(|h| map.contains_key(h));
        }
    }

    pub(crate) fn remove(&self, hash: &[u8; 32]) {
        self.shard(hash).map.remove(hash);
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }
}
