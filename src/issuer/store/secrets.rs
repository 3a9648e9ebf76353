//! The fingerprint of the issuer's root secret (never the secret).

use std::future::Future;

use super::{Conn, get_str, unavailable};
use crate::error::Result;

/// The root-secret aggregate: one row, the fingerprint every replica's
/// secret must have (spec/issuer.md §7.2).
pub trait RootSecrets {
    /// Records `fingerprint` if none is recorded yet; returns the recorded
    /// one (the first replica's).
    fn record_root_fingerprint(&mut self, fingerprint: &str, now: i64) -> impl Future<Output = Result<String>> + Send;
}

impl RootSecrets for Conn {
    async fn record_root_fingerprint(&mut self, fingerprint: &str, now: i64) -> Result<String> {
        sqlx::query(
            "INSERT INTO root_secret (id, fingerprint, recorded_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(fingerprint)
        .bind(now)
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        let row = sqlx::query("SELECT fingerprint FROM root_secret WHERE id = 1")
            .fetch_one(&mut *self)
            .await
            .map_err(unavailable)?;
        get_str(&row, "fingerprint")
    }
}
