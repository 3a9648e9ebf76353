//! What a login reads about a user, and the lockout counters: of users (in
//! `users`) and of names that are not users (in `unknown_logins`), both in
//! the database, so that replicas share them and restarts keep them.

use std::future::Future;

use sqlx::Row;

use super::{Conn, get_i64, unavailable};
use crate::error::Result;
use crate::names::UserName;

/// What a login needs to know about a user.
#[derive(Clone, Debug)]
pub struct UserAuth {
    /// The user and its domain are enabled.
    pub enabled: bool,
    /// argon2id PHC string, if the user has a password.
    pub password_hash: Option<String>,
    /// Consecutive failed logins.
    pub failed_logins: i64,
    /// Unix time until which logins are refused.
    pub locked_until: i64,
}

/// How long the counter of a bucket of names that are not users is kept
/// after its last attempt (and after its lock has run out).
const UNKNOWN_LOGIN_RETENTION: i64 = 86_400;

/// Names that are not users share this many lockout counters: the table
/// holds at most this many rows, whatever the number of names tried.
pub const UNKNOWN_LOGIN_BUCKETS: u64 = 65_536;

/// Failed logins of names that are not users in one minute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownLoginTotal {
    /// Unix time of the minute's start.
    pub minute: i64,
    /// `issuer.invalid_credentials` or `issuer.locked`.
    pub outcome: String,
    /// Attempts in that minute with that outcome.
    pub attempts: i64,
}

/// The login and lockout aggregate.
pub trait Logins {
    /// Login facts for a user, `None` if unknown.
    fn user_auth(&mut self, user: &UserName) -> impl Future<Output = Result<Option<UserAuth>>> + Send;
    /// Reserves one login attempt, counted as a failure until the login
    /// succeeds (then [`Logins::reset_login_failures`] clears it). In one
    /// atomic statement: refused (`false`) while the user is locked; the
    /// attempt that reaches `max_failures` locks the user until
    /// `now + lockout`; a lock that has run out starts a new count. Counting
    /// before the credential check means parallel guesses cannot all pass a
    /// lock that a sequential check-then-count would only set afterwards.
    /// Run it outside a transaction: the count must be visible to the other
    /// attempts before the check.
    fn reserve_login_attempt(
        &mut self,
        user: &UserName,
        now: i64,
        max_failures: i64,
        lockout: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// [`Logins::reserve_login_attempt`] for a name that is not a user, so
    /// the lockout cannot tell which names exist. The counter is that of
    /// the name's bucket (HMAC-SHA-256 of the name under the database's
    /// random salt, modulo [`UNKNOWN_LOGIN_BUCKETS`]), so the table is
    /// bounded; without the salt nobody can pick names that share a
    /// bucket. Counters not used for a day (and not locked) are dropped.
    fn reserve_unknown_login_attempt(
        &mut self,
        user: &UserName,
        now: i64,
        max_failures: i64,
        lockout: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Clears the failure counter after a successful login.
    fn reset_login_failures(&mut self, user: &UserName) -> impl Future<Output = Result<()>> + Send;
    /// Adds a failed login of a name that is not a user to the total of
    /// its minute and outcome (instead of an audit row per attempt).
    fn count_unknown_login_failure(&mut self, now: i64, outcome: &str) -> impl Future<Output = Result<()>> + Send;
    /// The per-minute totals since `since`, oldest first.
    fn unknown_login_totals(&mut self, since: i64) -> impl Future<Output = Result<Vec<UnknownLoginTotal>>> + Send;
    /// Drops the totals of minutes before `before`; returns how many.
    fn prune_unknown_login_totals(&mut self, before: i64) -> impl Future<Output = Result<u64>> + Send;
}

/// The bucket of a name that is not a user.
fn bucket(salt: &str, user: &UserName) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(salt.as_bytes()).expect("HMAC takes any key length");
    mac.update(user.to_string().as_bytes());
    let digest = mac.finalize().into_bytes();
    let n = u64::from_be_bytes(digest[..8].try_into().expect("32-byte digest")) % UNKNOWN_LOGIN_BUCKETS;
    format!("bucket:{n}")
}

impl Logins for Conn {
    async fn user_auth(&mut self, user: &UserName) -> Result<Option<UserAuth>> {
        let row = sqlx::query(
            "SELECT u.enabled AS ue, d.enabled AS de, u.password_hash AS ph, u.failed_logins AS fl, u.locked_until AS lu
             FROM users u JOIN domains d ON d.name = u.domain WHERE u.domain = $1 AND u.name = $2",
        )
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .fetch_optional(&mut *self)
        .await
        .map_err(unavailable)?;
        row.map(|r| {
            Ok(UserAuth {
                enabled: get_i64(&r, "ue")? != 0 && get_i64(&r, "de")? != 0,
                password_hash: r.try_get::<Option<String>, _>("ph").map_err(unavailable)?,
                failed_logins: get_i64(&r, "fl")?,
                locked_until: get_i64(&r, "lu")?,
            })
        })
        .transpose()
    }

    async fn reserve_login_attempt(
        &mut self,
        user: &UserName,
        now: i64,
        max_failures: i64,
        lockout: i64,
    ) -> Result<bool> {
        // Right-hand sides read the row's old values (SQLite and PostgreSQL).
        let result = sqlx::query(
            "UPDATE users SET
                failed_logins = CASE WHEN locked_until <> 0 THEN 1 ELSE failed_logins + 1 END,
                locked_until = CASE
                    WHEN (CASE WHEN locked_until <> 0 THEN 1 ELSE failed_logins + 1 END) >= $1 THEN $2
                    ELSE 0 END
             WHERE domain = $3 AND name = $4 AND locked_until <= $5",
        )
        .bind(max_failures)
        .bind(now + lockout)
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .bind(now)
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        Ok(result.rows_affected() == 1)
    }

    async fn reserve_unknown_login_attempt(
        &mut self,
        user: &UserName,
        now: i64,
        max_failures: i64,
        lockout: i64,
    ) -> Result<bool> {
        let salt: String = sqlx::query_scalar("SELECT salt FROM login_bucket_salt WHERE id = 1")
            .fetch_one(&mut *self)
            .await
            .map_err(unavailable)?;
        let who = bucket(&salt, user);
        sqlx::query("DELETE FROM unknown_logins WHERE last_attempt < $1 AND locked_until < $2")
            .bind(now - UNKNOWN_LOGIN_RETENTION)
            .bind(now)
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO unknown_logins (who, failed_logins, locked_until, last_attempt) VALUES ($1, 0, 0, $2)
             ON CONFLICT (who) DO NOTHING",
        )
        .bind(&who)
        .bind(now)
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        let result = sqlx::query(
            "UPDATE unknown_logins SET
                failed_logins = CASE WHEN locked_until <> 0 THEN 1 ELSE failed_logins + 1 END,
                locked_until = CASE
                    WHEN (CASE WHEN locked_until <> 0 THEN 1 ELSE failed_logins + 1 END) >= $1 THEN $2
                    ELSE 0 END,
                last_attempt = $5
             WHERE who = $3 AND locked_until <= $4",
        )
        .bind(max_failures)
        .bind(now + lockout)
        .bind(&who)
        .bind(now)
        .bind(now)
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        Ok(result.rows_affected() == 1)
    }

    async fn reset_login_failures(&mut self, user: &UserName) -> Result<()> {
        sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = 0
             WHERE domain = $1 AND name = $2 AND (failed_logins <> 0 OR locked_until <> 0)",
        )
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn count_unknown_login_failure(&mut self, now: i64, outcome: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO unknown_login_totals (minute, outcome, attempts) VALUES ($1, $2, 1)
             ON CONFLICT (minute, outcome) DO UPDATE SET attempts = unknown_login_totals.attempts + 1",
        )
        .bind(now - now.rem_euclid(60))
        .bind(outcome)
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn unknown_login_totals(&mut self, since: i64) -> Result<Vec<UnknownLoginTotal>> {
        let rows = sqlx::query(
            "SELECT minute, outcome, attempts FROM unknown_login_totals WHERE minute >= $1 ORDER BY minute, outcome",
        )
        .bind(since)
        .fetch_all(&mut *self)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(UnknownLoginTotal {
                    minute: get_i64(r, "minute")?,
                    outcome: super::get_str(r, "outcome")?,
                    attempts: get_i64(r, "attempts")?,
                })
            })
            .collect()
    }

    async fn prune_unknown_login_totals(&mut self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM unknown_login_totals WHERE minute < $1")
            .bind(before)
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}
