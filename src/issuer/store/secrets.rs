//! The issuer's keys as the database knows them: the fingerprint of the
//! root secret (never the secret), the scheduled rotations (key-epoch
//! offsets) and the kids an emergency replacement retired (never keys).

use std::future::Future;

use super::{Conn, get_i64, get_str, unavailable, write_error};
use crate::error::Result;

/// The keys aggregate (spec/issuer.md §7.2).
pub trait RootSecrets {
    /// Records `fingerprint` if none is recorded yet; returns the recorded
    /// one (the first replica's).
    fn record_root_fingerprint(&mut self, fingerprint: &str, now: i64) -> impl Future<Output = Result<String>> + Send;
    /// When the recorded fingerprint was recorded (first start or last
    /// replacement), if any.
    fn root_recorded_at(&mut self) -> impl Future<Output = Result<Option<u64>>> + Send;
    /// The recorded fingerprint, if any.
    fn root_fingerprint(&mut self) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Replaces the recorded fingerprint (an emergency replacement) and
    /// records the kids of the keys it retires; forgets retired kids older
    /// than `forget_before`, whose tokens have all expired.
    fn replace_root_fingerprint(
        &mut self,
        fingerprint: &str,
        retired_kids: &[Vec<u8>],
        now: i64,
        forget_before: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The retired kids.
    fn retired_kids(&mut self) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;
    /// Records a scheduled rotation: from `rotated_at` on, the key-epoch
    /// offset is `offset`. `issuer.conflict` if another rotation recorded
    /// the same offset (two at once).
    fn record_rotation(&mut self, rotated_at: i64, offset: i64) -> impl Future<Output = Result<()>> + Send;
    /// The rotations made since `since`, and the last one before it (whose
    /// offset is in effect at `since`), as `(rotated_at, offset)`.
    fn rotations_since(&mut self, since: i64) -> impl Future<Output = Result<Vec<(u64, u64)>>> + Send;
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

    async fn root_recorded_at(&mut self) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT recorded_at FROM root_secret WHERE id = 1")
            .fetch_optional(&mut *self)
            .await
            .map_err(unavailable)?;
        row.map(|r| get_i64(&r, "recorded_at").map(|t| u64::try_from(t).unwrap_or(0)))
            .transpose()
    }

    async fn root_fingerprint(&mut self) -> Result<Option<String>> {
        let row = sqlx::query("SELECT fingerprint FROM root_secret WHERE id = 1")
            .fetch_optional(&mut *self)
            .await
            .map_err(unavailable)?;
        row.map(|r| get_str(&r, "fingerprint")).transpose()
    }

    async fn replace_root_fingerprint(
        &mut self,
        fingerprint: &str,
        retired_kids: &[Vec<u8>],
        now: i64,
        forget_before: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO root_secret (id, fingerprint, recorded_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint, recorded_at = excluded.recorded_at",
        )
        .bind(fingerprint)
        .bind(now)
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        sqlx::query("DELETE FROM retired_kids WHERE retired_at < $1")
            .bind(forget_before)
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        for kid in retired_kids {
            sqlx::query("INSERT INTO retired_kids (kid, retired_at) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING")
                .bind(crate::encoding::hex_encode(kid))
                .bind(now)
                .execute(&mut *self)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn retired_kids(&mut self) -> Result<Vec<Vec<u8>>> {
        let rows = sqlx::query("SELECT kid FROM retired_kids")
            .fetch_all(&mut *self)
            .await
            .map_err(unavailable)?;
        // A row that is not hex cannot name a kid: skipped, not fatal.
        Ok(rows
            .iter()
            .filter_map(|r| get_str(r, "kid").ok())
            .filter_map(|hex| crate::encoding::hex_decode(&hex).ok())
            .collect())
    }

    async fn record_rotation(&mut self, rotated_at: i64, offset: i64) -> Result<()> {
        sqlx::query("INSERT INTO key_rotations (epoch_offset, rotated_at) VALUES ($1, $2)")
            .bind(offset)
            .bind(rotated_at)
            .execute(&mut *self)
            .await
            .map_err(|e| write_error(e, &"a rotation to this key"))?;
        Ok(())
    }

    async fn rotations_since(&mut self, since: i64) -> Result<Vec<(u64, u64)>> {
        let rows = sqlx::query(
            "SELECT rotated_at, epoch_offset FROM key_rotations WHERE rotated_at >= $1 \
             OR epoch_offset = (SELECT MAX(epoch_offset) FROM key_rotations WHERE rotated_at < $1)",
        )
        .bind(since)
        .fetch_all(&mut *self)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    u64::try_from(get_i64(r, "rotated_at")?).unwrap_or(0),
                    u64::try_from(get_i64(r, "epoch_offset")?).unwrap_or(0),
                ))
            })
            .collect()
    }
}
