//! The audit log: append-only, written in the transaction of the change it
//! records, pruned by age (the retention horizon of spec/issuer.md §10.4).
//! Token mints are audited as one row per (user, key, audience, minute)
//! whose count grows ([`MintAudit`]), so that minting stays a read.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use super::{Conn, Store, get_i64, get_str, unavailable};
use crate::error::Result;

/// One row of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// Unix seconds (for `token.mint`, the start of the minute).
    pub time: i64,
    /// Who acted (`name@domain`, or `-` for anonymous login attempts).
    pub actor: String,
    /// What was done (`login`, `user.create`, `grant`, …).
    pub action: String,
    /// On what.
    pub target: String,
    /// `ok` or an error code.
    pub outcome: String,
    /// The client address the request came from (spec/issuer.md §5.5), `-` for none.
    pub client: String,
    /// Thumbprint of the key the request's token or login proof is bound to, `-` for none.
    pub key_thumbprint: String,
    /// How many occurrences the row stands for: 1, except for `token.mint`
    /// (every mint of the row's user, key and audience in its minute).
    #[schema(minimum = 1)]
    pub count: i64,
}

/// Where a request came from, as the audit log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The client address (the login limiter's source: the TCP peer, or
    /// from `X-Forwarded-For` behind a trusted proxy), or `-`.
    pub client: String,
    /// The base64url thumbprint of the key the token or proof is bound to, or `-`.
    pub key_thumbprint: String,
}

impl Origin {
    /// No request: offline commands (bootstrap, emergency rotation).
    pub fn none() -> Self {
        Origin {
            client: "-".into(),
            key_thumbprint: "-".into(),
        }
    }
}

/// The filters of an audit listing: newest first, at most `limit` rows,
/// only ids below `before`, and each given member matched exactly (times
/// inclusive).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// At most this many entries (the caller clamps it).
    pub limit: i64,
    /// Only entries with a smaller id: the cursor of the next page.
    pub before: Option<i64>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only entries at or after this Unix time.
    pub since: Option<i64>,
    /// Only entries at or before this Unix time.
    pub until: Option<i64>,
}

/// Mints of one user with one key for one audience in one minute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MintKey {
    /// The minute's start (Unix seconds).
    pub minute: i64,
    /// The user (`name@domain`).
    pub actor: String,
    /// The session key's thumbprint.
    pub key_thumbprint: String,
    /// The token's audience.
    pub audience: String,
}

/// The audit aggregate.
pub trait Audit {
    /// Appends an entry of no request ([`Origin::none`]).
    fn record(
        &mut self,
        now: i64,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Appends an entry of a request from `origin`.
    fn record_from(
        &mut self,
        origin: &Origin,
        now: i64,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Adds `count` mints to the `token.mint` row of `key` (creating it).
    fn add_mints(&mut self, key: &MintKey, client: &str, count: i64) -> impl Future<Output = Result<()>> + Send;
    /// The newest `limit` entries, newest first.
    fn list_audit(&mut self, limit: i64) -> impl Future<Output = Result<Vec<AuditEntry>>> + Send;
    /// The entries `query` selects, newest first.
    fn query_audit(&mut self, query: &AuditQuery) -> impl Future<Output = Result<Vec<AuditEntry>>> + Send;
    /// Drops the entries older than `before` (Unix seconds); returns how many.
    fn prune_audit(&mut self, before: i64) -> impl Future<Output = Result<u64>> + Send;
}

const COLUMNS: &str = "id, time, actor, action, target, outcome, client, key_thumbprint, events";

impl Audit for Conn {
    async fn record(&mut self, now: i64, actor: &str, action: &str, target: &str, outcome: &str) -> Result<()> {
        self.record_from(&Origin::none(), now, actor, action, target, outcome)
            .await
    }

    async fn record_from(
        &mut self,
        origin: &Origin,
        now: i64,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (time, actor, action, target, outcome, client, key_thumbprint)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(now)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(outcome)
        .bind(&origin.client)
        .bind(&origin.key_thumbprint)
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn add_mints(&mut self, key: &MintKey, client: &str, count: i64) -> Result<()> {
        // The conflict target names the partial unique index of migration
        // 11, on SQLite and PostgreSQL alike.
        sqlx::query(
            "INSERT INTO audit_log (time, actor, action, target, outcome, client, key_thumbprint, events)
             VALUES ($1, $2, 'token.mint', $3, 'ok', $4, $5, $6)
             ON CONFLICT (time, actor, key_thumbprint, target) WHERE action = 'token.mint'
             DO UPDATE SET events = audit_log.events + excluded.events",
        )
        .bind(key.minute)
        .bind(&key.actor)
        .bind(&key.audience)
        .bind(client)
        .bind(&key.key_thumbprint)
        .bind(count)
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn list_audit(&mut self, limit: i64) -> Result<Vec<AuditEntry>> {
        self.query_audit(&AuditQuery {
            limit,
            ..AuditQuery::default()
        })
        .await
    }

    async fn query_audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        // Only the filters given become conditions, each with a bound
        // parameter; no value ever reaches the SQL text.
        let mut conditions = Vec::new();
        let mut texts: Vec<&str> = Vec::new();
        let mut numbers: Vec<i64> = Vec::new();
        for (column, value) in [
            ("actor", &query.actor),
            ("action", &query.action),
            ("target", &query.target),
        ] {
            if let Some(value) = value {
                texts.push(value);
                conditions.push(format!("{column} = ${}", texts.len()));
            }
        }
        for (condition, value) in [
            ("id <", query.before),
            ("time >=", query.since),
            ("time <=", query.until),
        ] {
            if let Some(value) = value {
                numbers.push(value);
                conditions.push(format!("{condition} ${}", texts.len() + numbers.len()));
            }
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log {}{} ORDER BY id DESC LIMIT ${}",
            if conditions.is_empty() { "" } else { "WHERE " },
            conditions.join(" AND "),
            texts.len() + numbers.len() + 1
        );
        let mut statement = sqlx::query(&sql);
        for text in texts {
            statement = statement.bind(text);
        }
        for number in numbers {
            statement = statement.bind(number);
        }
        let rows = statement
            .bind(query.limit)
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
                    client: get_str(r, "client")?,
                    key_thumbprint: get_str(r, "key_thumbprint")?,
                    count: get_i64(r, "events")?,
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

/// How often the issuer writes the mints counted in memory.
pub const MINT_AUDIT_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// How many (user, key, audience, minute) rows one replica coalesces in
/// memory; beyond that, every mint of a further one writes its own update.
pub const MINT_AUDIT_CAPACITY: usize = 16_384;

/// The mints of this replica not yet added to their audit rows. The first
/// mint of a (user, key, audience, minute) writes its row before the token
/// is answered, so every minute in which a session got tokens for an
/// audience is durable; the later mints of that minute are counted here and
/// added by [`MintAudit::flush`] (every few seconds, when the audit log is
/// read, and at shutdown). A crash loses at most the counts since the last
/// flush, never a row.
#[derive(Debug, Default)]
pub struct MintAudit {
    pending: Mutex<HashMap<MintKey, Pending>>,
}

#[derive(Debug)]
struct Pending {
    count: i64,
    client: String,
}

impl MintAudit {
    /// Audits one mint: the row's first mint on this replica is written at
    /// once (an error refuses the mint), later ones are counted.
    pub async fn note(&self, store: &Store, key: MintKey, client: &str) -> Result<()> {
        {
            let mut pending = self.lock();
            if let Some(entry) = pending.get_mut(&key) {
                entry.count += 1;
                return Ok(());
            }
        }
        store.conn().await?.add_mints(&key, client, 1).await?;
        let mut pending = self.lock();
        if pending.len() < MINT_AUDIT_CAPACITY {
            pending.entry(key).or_insert_with(|| Pending {
                count: 0,
                client: client.to_owned(),
            });
        }
        Ok(())
    }

    /// Adds the counted mints to their rows in one transaction and forgets
    /// the rows of minutes before `now`'s. On failure the counts are kept
    /// for the next flush.
    pub async fn flush(&self, store: &Store, now: i64) -> Result<()> {
        let minute = now - now.rem_euclid(60);
        let due: Vec<(MintKey, Pending)> = {
            let mut pending = self.lock();
            pending.retain(|key, entry| entry.count > 0 || key.minute >= minute);
            pending
                .iter_mut()
                .filter(|(_, entry)| entry.count > 0)
                .map(|(key, entry)| {
                    let count = std::mem::take(&mut entry.count);
                    (
                        key.clone(),
                        Pending {
                            count,
                            client: entry.client.clone(),
                        },
                    )
                })
                .collect()
        };
        if due.is_empty() {
            return Ok(());
        }
        let written = async {
            let mut tx = store.begin().await?;
            for (key, entry) in &due {
                tx.add_mints(key, &entry.client, entry.count).await?;
            }
            tx.commit().await
        }
        .await;
        let mut pending = self.lock();
        match written {
            Ok(()) => {
                pending.retain(|key, entry| entry.count > 0 || key.minute >= minute);
                Ok(())
            }
            Err(e) => {
                for (key, entry) in due {
                    pending
                        .entry(key)
                        .or_insert_with(|| Pending {
                            count: 0,
                            client: entry.client.clone(),
                        })
                        .count += entry.count;
                }
                Err(e)
            }
        }
    }

    /// Mints counted and not yet written.
    pub fn unwritten(&self) -> i64 {
        self.lock().values().map(|e| e.count).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MintKey, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}
