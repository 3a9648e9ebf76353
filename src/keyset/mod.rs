//! Where a verifier gets each issuer's keys: a fixed set, a file, or the
//! issuer's key-set URL (feature `http`).
//!
//! Sources hand out the current [`KeySet`] as an `Arc` snapshot, so the
//! per-request cost is a lock-free-ish read. A set that fails to parse never
//! replaces a good one; a source that cannot reach its issuer keeps serving
//! the last good set, so verification continues offline.

mod file;
#[cfg(feature = "http")]
mod http;
mod set;

pub use file::FileKeys;
#[cfg(feature = "http")]
pub use http::{HttpKeys, HttpKeysOptions};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use set::{KeySet, MAX_KEYSET_SIZE};

/// A future returned by [`KeySource::refresh_for_unknown_kid`].
pub type RefreshFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of one issuer's keys.
pub trait KeySource: Send + Sync {
    /// The issuer's current key set.
    fn key_set(&self) -> Arc<KeySet>;

    /// A token named a kid that is not in the set. A source that can
    /// refetch starts a (rate-limited) refetch and returns a future that
    /// completes when it is done; `None` means no refetch will happen now.
    /// Refetches must be limited so that a flood of unknown kids cannot make
    /// one fetch per request.
    fn refresh_for_unknown_kid(&self) -> Option<RefreshFuture<'_>> {
        None
    }
}

/// A fixed key set, configured once.
#[derive(Clone, Debug)]
pub struct StaticKeys(Arc<KeySet>);

impl StaticKeys {
    /// Wraps a key set.
    pub fn new(set: KeySet) -> Self {
        StaticKeys(Arc::new(set))
    }
}

impl KeySource for StaticKeys {
    fn key_set(&self) -> Arc<KeySet> {
        self.0.clone()
    }
}

impl KeySource for KeySet {
    fn key_set(&self) -> Arc<KeySet> {
        Arc::new(self.clone())
    }
}
