//! The audit log: append-only, written in the transaction of the change it
//! records, pruned by age (the retention horizon of spec/issuer.md §10.4).

use std::future::Future;

use super::{Conn, get_i64, get_str, unavailable};
use crate::error::Result;

/// One row of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// Unix seconds.
    pub time: i64,
    /// Who acted (`name@domain`, or `-` for anonymous login attempts).
    pub actor: String,
    /// What was done (`login`, `user.create`, `grant`, …).
    pub action: String,
    /// On what.
    pub target: String,
    /// `ok` or an error code.
    pub outcome: String,
}

/// The audit aggregate.
pub trait Audit {
    /// Appends an entry.
    fn record(
        &mut self,
        now: i64,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The newest `limit` entries, newest first.
    fn list_audit(&mut self, limit: i64) -> impl Future<Output = Result<Vec<AuditEntry>>> + Send;
    /// Drops the entries older than `before` (Unix seconds); returns how many.
    fn prune_audit(&mut self, before: i64) -> impl Future<Output = Result<u64>> + Send;
}

impl Audit for Conn {
    async fn record(&mut self, now: i64, actor: &str, action: &str, target: &str, outcome: &str) -> Result<()> {
        sqlx::query("INSERT INTO audit_log (time, actor, action, target, outcome) VALUES ($1, $2, $3, $4, $5)")
            .bind(now)
            .bind(actor)
            .bind(action)
            .bind(target)
            .bind(outcome)
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn list_audit(&mut self, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows =
            sqlx::query("SELECT id, time, actor, action, target, outcome FROM audit_log ORDER BY id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&mut *self)
                .await
                .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: get_i64(r, "id")?,
                    time: get_i64(r, "time")?,
                    actor: get_str(r, "actor")?,
                    action: get_str(r, "action")?,
                    target: get_str(r, "target")?,
                    outcome: get_str(r, "outcome")?,
                })
            })
            .collect()
    }

    async fn prune_audit(&mut self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM audit_log WHERE time < $1")
            .bind(before)
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}
