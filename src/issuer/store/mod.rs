//! Issuer storage, one module per aggregate, each with all of its SQL:
//!
//! | module | aggregate | tables |
//! |---|---|---|
//! | [`identities`] | domains, projects, users, their keys (and removed keys), roles; deletes and what they take along | `domains`, `projects`, `users`, `user_keys`, `removed_user_keys`, `roles` |
//! | [`grants`] | role assignments, and the facts a mint re-checks | `assignments` |
//! | [`services`] | registered service audiences | `services` |
//! | [`logins`] | what a login reads, and the lockout | `users` (counters), `unknown_logins`, `unknown_login_totals`, `login_bucket_salt` |
//! | [`audit`] | the audit log, and the coalesced audit of token mints | `audit_log` |
//! | [`secrets`] | the issuer's keys: fingerprint of the root secret, scheduled rotations, retired kids | `root_secret`, `key_rotations`, `retired_kids` |
//! | [`trusts`] | trusts (delegation) and their roles | `trusts`, `trust_roles` |
//! | [`federation`] | peer issuers, and roles granted to their users | `peers`, `peer_domains`, `peer_projects`, `remote_assignments` |
//!
//! **The seam.** Each aggregate is a trait ([`Identities`], [`Grants`],
//! [`Services`], [`Logins`], [`Audit`], [`Trusts`], [`Federation`]) implemented for [`Conn`], the one
//! connection type of sqlx's `Any` driver: SQLite (the embedded default) and
//! PostgreSQL (several replicas) run the same statements, with parameters
//! only; names never reach SQL text. Callers reach a connection through
//! [`Store`]: [`Store::conn`] for a read or a single statement, or
//! [`Store::begin`] for a transaction, in which a change and its audit
//! record commit together or not at all. Another backend implements the
//! seven traits for its own connection and transaction types.
//!
//! **Migrations** are files, one directory per dialect (`migrations/sqlite/`,
//! `migrations/postgres/`, the same versions in both), applied at start-up
//! by sqlx's migrator, which records a checksum of each: a migration edited
//! after a database applied it, or one this build does not know, stops the
//! issuer with `issuer.config`. On PostgreSQL, replicas starting together
//! migrate one at a time (sqlx's advisory lock).
//!
//! SQLite runs in WAL mode with `synchronous=FULL` and foreign keys on: an
//! acknowledged write survives a crash or power loss. Its transactions
//! begin `IMMEDIATE`, so that two writers queue on the busy timeout instead
//! of failing when the second upgrades its read to a write.

pub mod audit;
pub mod federation;
pub mod grants;
pub mod identities;
pub mod logins;
mod migrations;
pub mod secrets;
pub mod services;
pub mod trusts;

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::error::ErrorKind;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Row};

pub use audit::{Audit, AuditEntry, AuditQuery, MINT_AUDIT_CAPACITY, MINT_AUDIT_FLUSH, MintAudit, MintKey, Origin};
pub use federation::{ExchangeFacts, Federation, Peer, RemoteGrant};
pub use grants::{Grant, Grants, MintFacts, SessionKey};
pub use identities::{Identities, ProjectRemoved, UserInfo, UserKey, UserRecord, UserRemoved, bootstrap_names};
pub use logins::{Logins, UNKNOWN_LOGIN_BUCKETS, UnknownLoginTotal, UserAuth};
pub use secrets::RootSecrets;
pub use services::Services;
pub use trusts::{Trust, Trusts};

use crate::error::{Code, Error, Result, err};

/// The connection every aggregate's statements run on: a pooled connection
/// or the connection of a [`Tx`] (both dereference to it).
pub type Conn = sqlx::AnyConnection;

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Connection pool settings (spec/issuer.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most connections open at once. `None`: 8 for SQLite, 16 for PostgreSQL.
    pub max_connections: Option<u32>,
    /// How long a request waits for a free connection before it is refused
    /// with `issuer.unavailable`.
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: None,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The issuer's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A transaction: the changes made through it are committed together by
/// [`Tx::commit`]; dropping it without committing rolls all of them back.
#[derive(Debug)]
pub struct Tx(sqlx::Transaction<'static, Any>);

impl Tx {
    /// Makes every change of the transaction durable at once.
    pub async fn commit(self) -> Result<()> {
        self.0.commit().await.map_err(unavailable)
    }
}

impl Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.0
    }
}

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`) and
    /// applies the migrations this database has not applied yet.
    pub async fn connect(url: &str, pool: PoolOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return err(
                Code::IssuerConfig,
                "the database URL must start with sqlite: or postgres:",
            );
        };
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| Error::new(Code::IssuerConfig, format!("database URL: {e}")))?;
        let max_connections = pool.max_connections.unwrap_or(match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        });
        // The pool retries a failing connection until its acquire timeout and
        // then says only "pool timed out": open one first, so a start-up
        // failure (an unwritable data dir, a refused password) says its cause.
        let mut first = AnyConnection::connect_with(&options)
            .await
            .map_err(|e| cannot_open(e, backend))?;
        prepare_connection(&mut first, backend)
            .await
            .map_err(|e| cannot_open(e, backend))?;
        let _ = first.close().await;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(pool.acquire_timeout)
            .after_connect(move |conn, _| Box::pin(prepare_connection(conn, backend)))
            // A connection still inside a transaction is closed, not handed
            // out: SQLite rolls a transaction back by itself when a write
            // fails with SQLITE_FULL or SQLITE_IOERR, so sqlx's ROLLBACK of
            // the dropped transaction then fails and its transaction depth
            // stays 1, and every later `BEGIN` on that connection would fail
            // ("non-zero transaction depth"): a full disk would leave the
            // pool unusable after space returns (FL-10).
            .before_acquire(|conn, _| Box::pin(async move { Ok(transaction_depth(conn) == 0) }))
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        migrations::run(&pool, backend).await?;
        Ok(Store { pool, backend })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A pooled connection, for reads and single statements (each commits
    /// on its own).
    pub async fn conn(&self) -> Result<PoolConnection<Any>> {
        self.pool.acquire().await.map_err(unavailable)
    }

    /// Begins a transaction.
    pub async fn begin(&self) -> Result<Tx> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        tx.map(Tx).map_err(unavailable)
    }

    /// Checks the database accepts a write, for readiness: inserts and
    /// deletes the probe row in one committed transaction, so nothing
    /// remains, but a full disk, a read-only file or a read-only server
    /// fails (a `SELECT` would still answer).
    pub async fn check_writable(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO readiness_probe (id) VALUES (1)")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("DELETE FROM readiness_probe WHERE id = 1")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await
    }

    /// Checks the database answers a read of a table (not only `SELECT 1`,
    /// which SQLite answers without its file), for readiness when writes
    /// are refused.
    pub async fn check_readable(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query("SELECT COUNT(*) FROM readiness_probe")
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// Transactions open on `conn`, as sqlx counts them.
fn transaction_depth(conn: &AnyConnection) -> usize {
    <<Any as sqlx::Database>::TransactionManager as sqlx::TransactionManager>::get_transaction_depth(conn)
}

/// Settings of every new connection.
async fn prepare_connection(conn: &mut AnyConnection, backend: Backend) -> sqlx::Result<()> {
    if backend == Backend::Sqlite {
        // Durable and consistent: WAL, fsync on every commit, foreign keys enforced.
        for pragma in [
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=5000",
        ] {
            sqlx::query(pragma).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// The first connection's failure, with a hint for SQLite's terse message.
fn cannot_open(e: sqlx::Error, backend: Backend) -> Error {
    let hint = match backend {
        Backend::Sqlite => {
            " (the database file and its directory must be writable: SQLite creates -wal and -shm files beside it)"
        }
        Backend::Postgres => "",
    };
    Error::new(Code::IssuerUnavailable, format!("cannot open the database: {e}{hint}"))
}

/// A database that cannot be reached or answers with an error. A database
/// that answers but refuses to write (its volume full or read-only, or a
/// read-only server) is `issuer.storage_unavailable`: reads go on, and the
/// operator is told to free space rather than look for a network fault.
fn unavailable(e: sqlx::Error) -> Error {
    if refuses_writes(&e) {
        return Error::new(
            Code::IssuerStorageUnavailable,
            format!("the database refuses writes: {e}"),
        );
    }
    Error::new(Code::IssuerUnavailable, format!("database error: {e}"))
}

/// The database cannot take the write of a refusal's audit record either:
/// such a refusal is answered unaudited (spec/issuer.md §10.4).
pub fn is_outage(code: Code) -> bool {
    matches!(code, Code::IssuerUnavailable | Code::IssuerStorageUnavailable)
}

/// SQLite's primary result codes (the low byte of the extended code sqlx
/// reports) and PostgreSQL's SQLSTATEs that mean the storage refuses writes.
fn refuses_writes(e: &sqlx::Error) -> bool {
    let Some(code) = e.as_database_error().and_then(|db| db.code()) else {
        return false;
    };
    // PostgreSQL: read_only_sql_transaction, disk_full, io_error.
    if matches!(&*code, "25006" | "53100" | "58030") {
        return true;
    }
    // SQLite: SQLITE_READONLY (8), SQLITE_IOERR (10: a write or fsync that
    // failed, ENOSPC or EROFS), SQLITE_FULL (13). A SQLSTATE is five
    // characters, so "10" or "778" cannot be one.
    match code.parse::<u32>() {
        Ok(extended) if code.len() < 5 => matches!(extended & 0xff, 8 | 10 | 13),
        _ => false,
    }
}

/// Maps write errors by their kind: uniqueness → conflict, a missing
/// referenced row → not found, anything else → unavailable.
fn write_error(e: sqlx::Error, what: &dyn std::fmt::Display) -> Error {
    match e.as_database_error().map(|db| db.kind()) {
        Some(ErrorKind::UniqueViolation) => Error::new(Code::IssuerConflict, format!("{what} already exists")),
        Some(ErrorKind::ForeignKeyViolation) => Error::new(
            Code::IssuerNotFound,
            format!("{what}: a referenced object does not exist"),
        ),
        _ => unavailable(e),
    }
}

/// `Ok` if a statement changed a row, else "`what` does not exist".
fn one_row(affected: u64, what: &dyn std::fmt::Display) -> Result<()> {
    if affected == 0 {
        return err(Code::IssuerNotFound, format!("{what} does not exist"));
    }
    Ok(())
}

fn get_str(row: &AnyRow, column: &str) -> Result<String> {
    row.try_get::<String, _>(column).map_err(unavailable)
}

/// Integers of every width (SQLite INTEGER, PostgreSQL INTEGER and BIGINT).
fn get_i64(row: &AnyRow, column: &str) -> Result<i64> {
    row.try_get::<i64, _>(column).map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pooled SQLite connection is in WAL mode with synchronous=FULL
    /// (2), so an acknowledged write survives a power loss, not just a crash.
    #[tokio::test]
    async fn sqlite_connections_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("d.db").display());
        let store = Store::connect(&url, PoolOptions::default()).await.unwrap();
        // Several connections at once, so more than the first one is checked.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = store.conn().await.unwrap();
            let mut read = Vec::new();
            for pragma in ["journal_mode", "synchronous", "foreign_keys"] {
                let row = sqlx::query(&format!("PRAGMA {pragma}"))
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                // journal_mode answers text, the others integers.
                let value = row
                    .try_get::<String, _>(0)
                    .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                    .unwrap();
                read.push(value);
            }
            assert_eq!(read, ["wal", "2", "1"]);
            held.push(conn);
        }
    }
}
