//! Issuer storage: one implementation over sqlx's `Any` driver, so SQLite
//! (the embedded default) and PostgreSQL (several replicas) run the same
//! queries. Only the DDL differs, in two places. All statements are
//! parameterised; names never reach SQL text.
//!
//! SQLite runs in WAL mode with `synchronous=FULL` and foreign keys on: an
//! acknowledged write survives a crash or power loss.

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::{Code, Error, Result, err};

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Names of the objects the bootstrap creates.
pub mod bootstrap_names {
    /// The domain of the first admin.
    pub const DOMAIN: &str = "default";
    /// The project admin tokens are scoped to.
    pub const PROJECT: &str = "admin";
    /// The first admin user (`admin@default`).
    pub const USER: &str = "admin";
    /// The admin role.
    pub const ROLE: &str = "admin";
}

/// One row of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
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

/// What minting a token needs to know, read in one query.
#[derive(Clone, Debug, Default)]
pub struct MintFacts {
    /// The audience is a registered service.
    pub service_registered: bool,
    /// The user exists.
    pub user_exists: bool,
    /// The user and its domain are enabled.
    pub user_enabled: bool,
    /// The project exists.
    pub project_exists: bool,
    /// The project and its domain are enabled.
    pub project_enabled: bool,
    /// Roles of the user on the project.
    pub roles: Vec<String>,
}

/// A user as listed by the admin API.
#[derive(Clone, Debug, serde::Serialize)]
pub struct UserInfo {
    /// `name@domain`.
    pub user: String,
    /// `person` or `service`.
    pub kind: String,
    /// Enabled flag.
    pub enabled: bool,
    /// Whether a password is set.
    pub has_password: bool,
}

/// A role assignment.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct Grant {
    /// `name@domain`.
    pub user: String,
    /// `project@domain`.
    pub project: String,
    /// Role name.
    pub role: String,
}

/// The issuer's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::new(Code::IssuerUnavailable, format!("database error: {e}"))
}

/// Maps write errors: uniqueness → conflict, foreign keys → not found.
fn write_error(e: sqlx::Error, what: &str) -> Error {
    if let sqlx::Error::Database(db) = &e {
        let message = db.message().to_ascii_lowercase();
        if db.is_unique_violation() || message.contains("unique") || message.contains("duplicate key") {
            return Error::new(Code::IssuerConflict, format!("{what} already exists"));
        }
        if db.is_foreign_key_violation() || message.contains("foreign key") {
            return Error::new(
                Code::IssuerNotFound,
                format!("{what}: a referenced object does not exist"),
            );
        }
    }
    unavailable(e)
}

const MIGRATIONS: &[&str] = &[
    // 1: identity model and audit log.
    "CREATE TABLE domains (name TEXT PRIMARY KEY, enabled INTEGER NOT NULL, created_at BIGINT NOT NULL);
     CREATE TABLE projects (domain TEXT NOT NULL REFERENCES domains(name), name TEXT NOT NULL, enabled INTEGER NOT NULL,
        created_at BIGINT NOT NULL, PRIMARY KEY (domain, name));
     CREATE TABLE users (domain TEXT NOT NULL REFERENCES domains(name), name TEXT NOT NULL, kind TEXT NOT NULL,
        enabled INTEGER NOT NULL, password_hash TEXT, failed_logins BIGINT NOT NULL DEFAULT 0,
        locked_until BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, PRIMARY KEY (domain, name));
     CREATE TABLE user_keys (domain TEXT NOT NULL, name TEXT NOT NULL, thumbprint TEXT NOT NULL, cose_key TEXT NOT NULL,
        created_at BIGINT NOT NULL, PRIMARY KEY (domain, name, thumbprint),
        FOREIGN KEY (domain, name) REFERENCES users(domain, name));
     CREATE TABLE roles (name TEXT PRIMARY KEY, created_at BIGINT NOT NULL);
     CREATE TABLE assignments (user_domain TEXT NOT NULL, user_name TEXT NOT NULL, project_domain TEXT NOT NULL,
        project_name TEXT NOT NULL, role TEXT NOT NULL REFERENCES roles(name), created_at BIGINT NOT NULL,
        PRIMARY KEY (user_domain, user_name, project_domain, project_name, role),
        FOREIGN KEY (user_domain, user_name) REFERENCES users(domain, name),
        FOREIGN KEY (project_domain, project_name) REFERENCES projects(domain, name));
     CREATE TABLE services (audience TEXT PRIMARY KEY, created_at BIGINT NOT NULL);
     CREATE TABLE audit_log (id {AUTO_ID}, time BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        target TEXT NOT NULL, outcome TEXT NOT NULL);",
    // 2: failed-login counters of names that are not users, so the lockout
    // answers for them as for users (shared by replicas, kept over restarts).
    "CREATE TABLE unknown_logins (who TEXT PRIMARY KEY, failed_logins BIGINT NOT NULL DEFAULT 0,
        locked_until BIGINT NOT NULL DEFAULT 0, last_attempt BIGINT NOT NULL);
     CREATE INDEX unknown_logins_last_attempt ON unknown_logins (last_attempt);",
];

/// How long the counter of a name that is not a user is kept after its last
/// attempt (and after its lock has run out).
const UNKNOWN_LOGIN_RETENTION: i64 = 86_400;

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`) and
    /// applies migrations.
    pub async fn connect(url: &str) -> Result<Self> {
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
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(std::time::Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
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
                })
            })
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY)")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if self.backend == Backend::Postgres {
            // Replicas starting together migrate one at a time.
            sqlx::query("LOCK TABLE schema_version IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get::<i64, _>("v"))
            .map_err(unavailable)?;
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let auto_id = match self.backend {
                Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
                Backend::Postgres => "BIGSERIAL PRIMARY KEY",
            };
            for statement in migration
                .replace("{AUTO_ID}", auto_id)
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                sqlx::query(statement).execute(&mut *tx).await.map_err(unavailable)?;
            }
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(index as i64 + 1)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// True once the first admin exists.
    pub async fn is_bootstrapped(&self) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE domain = $1 AND name = $2")
            .bind(bootstrap_names::DOMAIN)
            .bind(bootstrap_names::USER)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.try_get::<i64, _>("n").map_err(unavailable)? > 0)
    }

    /// Creates the default domain, the admin project, role and user with
    /// `password_hash`, and the grant, in one transaction, and only once.
    /// (The admin audience is not stored: it follows the issuer id.)
    pub async fn bootstrap(&self, password_hash: &str, now: i64) -> Result<()> {
        use bootstrap_names::*;
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let exists: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE domain = $1 AND name = $2")
            .bind(DOMAIN)
            .bind(USER)
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(unavailable)?;
        if exists > 0 {
            return err(Code::IssuerConflict, "the issuer is already bootstrapped");
        }
        let statements: [(&str, Vec<String>); 5] = [
            (
                "INSERT INTO domains (name, enabled, created_at) VALUES ($1, 1, $2) ON CONFLICT (name) DO NOTHING",
                vec![DOMAIN.into()],
            ),
            (
                "INSERT INTO projects (domain, name, enabled, created_at) VALUES ($1, $2, 1, $3) ON CONFLICT (domain, name) DO NOTHING",
                vec![DOMAIN.into(), PROJECT.into()],
            ),
            (
                "INSERT INTO roles (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                vec![ROLE.into()],
            ),
            (
                "INSERT INTO users (domain, name, kind, enabled, password_hash, created_at) VALUES ($1, $2, 'person', 1, $3, $4)",
                vec![DOMAIN.into(), USER.into(), password_hash.into()],
            ),
            (
                "INSERT INTO assignments (user_domain, user_name, project_domain, project_name, role, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                vec![DOMAIN.into(), USER.into(), DOMAIN.into(), PROJECT.into(), ROLE.into()],
            ),
        ];
        for (sql, args) in statements {
            let mut query = sqlx::query(sql);
            for arg in args {
                query = query.bind(arg);
            }
            query
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| write_error(e, "bootstrap object"))?;
        }
        audit_in(&mut tx, now, "-", "bootstrap", "admin@default", "ok").await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn exec(&self, sql: &str, args: &[&str], now: Option<i64>, what: &str) -> Result<u64> {
        let mut query = sqlx::query(sql);
        for arg in args {
            query = query.bind(*arg);
        }
        if let Some(now) = now {
            query = query.bind(now);
        }
        query
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| write_error(e, what))
    }

    fn one_row(affected: u64, what: &str) -> Result<()> {
        if affected == 0 {
            return err(Code::IssuerNotFound, format!("{what} does not exist"));
        }
        Ok(())
    }

    /// Creates a domain.
    pub async fn create_domain(&self, name: &str, now: i64) -> Result<()> {
        self.exec(
            "INSERT INTO domains (name, enabled, created_at) VALUES ($1, 1, $2)",
            &[name],
            Some(now),
            &format!("domain {name}"),
        )
        .await
        .map(|_| ())
    }

    /// Enables or disables a domain (and with it its users and projects).
    pub async fn set_domain_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        let n = self
            .exec(
                &format!("UPDATE domains SET enabled = {} WHERE name = $1", i32::from(enabled)),
                &[name],
                None,
                "domain",
            )
            .await?;
        Self::one_row(n, &format!("domain {name}"))
    }

    /// All domains with their enabled flag.
    pub async fn list_domains(&self) -> Result<Vec<(String, bool)>> {
        let rows = sqlx::query("SELECT name, enabled FROM domains ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| Ok((get_str(r, "name")?, get_i64(r, "enabled")? != 0)))
            .collect()
    }

    /// Creates a project in an existing domain.
    pub async fn create_project(&self, domain: &str, name: &str, now: i64) -> Result<()> {
        self.require(
            "SELECT COUNT(*) AS n FROM domains WHERE name = $1",
            &[domain],
            &format!("domain {domain}"),
        )
        .await?;
        self.exec(
            "INSERT INTO projects (domain, name, enabled, created_at) VALUES ($1, $2, 1, $3)",
            &[domain, name],
            Some(now),
            &format!("project {name}@{domain}"),
        )
        .await
        .map(|_| ())
    }

    /// Enables or disables a project.
    pub async fn set_project_enabled(&self, domain: &str, name: &str, enabled: bool) -> Result<()> {
        let sql = format!(
            "UPDATE projects SET enabled = {} WHERE domain = $1 AND name = $2",
            i32::from(enabled)
        );
        let n = self.exec(&sql, &[domain, name], None, "project").await?;
        Self::one_row(n, &format!("project {name}@{domain}"))
    }

    /// Projects as `name@domain` with their enabled flag.
    pub async fn list_projects(&self) -> Result<Vec<(String, bool)>> {
        let rows = sqlx::query("SELECT domain, name, enabled FROM projects ORDER BY domain, name")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    format!("{}@{}", get_str(r, "name")?, get_str(r, "domain")?),
                    get_i64(r, "enabled")? != 0,
                ))
            })
            .collect()
    }

    async fn require(&self, sql: &str, args: &[&str], what: &str) -> Result<()> {
        let mut query = sqlx::query(sql);
        for arg in args {
            query = query.bind(*arg);
        }
        let n: i64 = query
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(unavailable)?;
        if n == 0 {
            return err(Code::IssuerNotFound, format!("{what} does not exist"));
        }
        Ok(())
    }

    /// Creates a user (`kind` is `person` or `service`).
    pub async fn create_user(
        &self,
        domain: &str,
        name: &str,
        kind: &str,
        password_hash: Option<&str>,
        now: i64,
    ) -> Result<()> {
        self.require(
            "SELECT COUNT(*) AS n FROM domains WHERE name = $1",
            &[domain],
            &format!("domain {domain}"),
        )
        .await?;
        sqlx::query(
            "INSERT INTO users (domain, name, kind, enabled, password_hash, created_at) VALUES ($1, $2, $3, 1, $4, $5)",
        )
        .bind(domain)
        .bind(name)
        .bind(kind)
        .bind(password_hash.map(str::to_owned))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| write_error(e, &format!("user {name}@{domain}")))?;
        Ok(())
    }

    /// Enables or disables a user.
    pub async fn set_user_enabled(&self, domain: &str, name: &str, enabled: bool) -> Result<()> {
        let sql = format!(
            "UPDATE users SET enabled = {} WHERE domain = $1 AND name = $2",
            i32::from(enabled)
        );
        let n = self.exec(&sql, &[domain, name], None, "user").await?;
        Self::one_row(n, &format!("user {name}@{domain}"))
    }

    /// Sets a user's password hash and clears the lockout.
    pub async fn set_password(&self, domain: &str, name: &str, password_hash: &str) -> Result<()> {
        let n = self
            .exec("UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = 0 WHERE domain = $2 AND name = $3", &[password_hash, domain, name], None, "user")
            .await?;
        Self::one_row(n, &format!("user {name}@{domain}"))
    }

    /// Registers a public key (thumbprint, COSE_Key in base64url) for key login.
    pub async fn add_user_key(
        &self,
        domain: &str,
        name: &str,
        thumbprint: &str,
        cose_key: &str,
        now: i64,
    ) -> Result<()> {
        self.require(
            "SELECT COUNT(*) AS n FROM users WHERE domain = $1 AND name = $2",
            &[domain, name],
            &format!("user {name}@{domain}"),
        )
        .await?;
        self.exec(
            "INSERT INTO user_keys (domain, name, thumbprint, cose_key, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[domain, name, thumbprint, cose_key],
            Some(now),
            "this key",
        )
        .await
        .map(|_| ())
    }

    /// True if the key is registered for the user.
    pub async fn user_has_key(&self, domain: &str, name: &str, thumbprint: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM user_keys WHERE domain = $1 AND name = $2 AND thumbprint = $3")
                .bind(domain)
                .bind(name)
                .bind(thumbprint)
                .fetch_one(&self.pool)
                .await
                .and_then(|r| r.try_get("n"))
                .map_err(unavailable)?;
        Ok(n > 0)
    }

    /// All users.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        let rows = sqlx::query("SELECT domain, name, kind, enabled, password_hash FROM users ORDER BY domain, name")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(UserInfo {
                    user: format!("{}@{}", get_str(r, "name")?, get_str(r, "domain")?),
                    kind: get_str(r, "kind")?,
                    enabled: get_i64(r, "enabled")? != 0,
                    has_password: r
                        .try_get::<Option<String>, _>("password_hash")
                        .map_err(unavailable)?
                        .is_some(),
                })
            })
            .collect()
    }

    /// Login facts for a user, `None` if unknown.
    pub async fn user_auth(&self, domain: &str, name: &str) -> Result<Option<UserAuth>> {
        let row = sqlx::query(
            "SELECT u.enabled AS ue, d.enabled AS de, u.password_hash AS ph, u.failed_logins AS fl, u.locked_until AS lu
             FROM users u JOIN domains d ON d.name = u.domain WHERE u.domain = $1 AND u.name = $2",
        )
        .bind(domain)
        .bind(name)
        .fetch_optional(&self.pool)
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

    /// Reserves one login attempt, counted as a failure until the login
    /// succeeds (then [`Self::reset_login_failures`] clears it). In one
    /// atomic statement: refused (`false`) while the user is locked; the
    /// attempt that reaches `max_failures` locks the user until
    /// `now + lockout`; a lock that has run out starts a new count. Counting
    /// before the password check means parallel guesses cannot all pass a
    /// lock that a sequential check-then-count would only set afterwards.
    pub async fn reserve_login_attempt(
        &self,
        domain: &str,
        name: &str,
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
        .bind(domain)
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(result.rows_affected() == 1)
    }

    /// [`Self::reserve_login_attempt`] for a name that is not a user, in a
    /// table of its own, so the lockout cannot tell which names exist.
    /// Counters of names not tried for a day (and not locked) are dropped.
    pub async fn reserve_unknown_login_attempt(
        &self,
        who: &str,
        now: i64,
        max_failures: i64,
        lockout: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("DELETE FROM unknown_logins WHERE last_attempt < $1 AND locked_until < $2")
            .bind(now - UNKNOWN_LOGIN_RETENTION)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO unknown_logins (who, failed_logins, locked_until, last_attempt) VALUES ($1, 0, 0, $2)
             ON CONFLICT (who) DO NOTHING",
        )
        .bind(who)
        .bind(now)
        .execute(&mut *tx)
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
        .bind(who)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(result.rows_affected() == 1)
    }

    /// Clears the failure counter after a successful login.
    pub async fn reset_login_failures(&self, domain: &str, name: &str) -> Result<()> {
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = 0 WHERE domain = $1 AND name = $2 AND (failed_logins <> 0 OR locked_until <> 0)")
            .bind(domain)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Creates a role.
    pub async fn create_role(&self, name: &str, now: i64) -> Result<()> {
        self.exec(
            "INSERT INTO roles (name, created_at) VALUES ($1, $2)",
            &[name],
            Some(now),
            &format!("role {name}"),
        )
        .await
        .map(|_| ())
    }

    /// All roles.
    pub async fn list_roles(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM roles ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(|r| get_str(r, "name")).collect()
    }

    /// Grants `role` to the user on the project.
    pub async fn grant(&self, user: (&str, &str), project: (&str, &str), role: &str, now: i64) -> Result<()> {
        self.require(
            "SELECT COUNT(*) AS n FROM users WHERE domain = $1 AND name = $2",
            &[user.0, user.1],
            &format!("user {}@{}", user.1, user.0),
        )
        .await?;
        self.require(
            "SELECT COUNT(*) AS n FROM projects WHERE domain = $1 AND name = $2",
            &[project.0, project.1],
            &format!("project {}@{}", project.1, project.0),
        )
        .await?;
        self.require(
            "SELECT COUNT(*) AS n FROM roles WHERE name = $1",
            &[role],
            &format!("role {role}"),
        )
        .await?;
        self.exec(
            "INSERT INTO assignments (user_domain, user_name, project_domain, project_name, role, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[user.0, user.1, project.0, project.1, role],
            Some(now),
            "this grant",
        )
        .await
        .map(|_| ())
    }

    /// Revokes a role assignment.
    pub async fn revoke(&self, user: (&str, &str), project: (&str, &str), role: &str) -> Result<()> {
        let n = self
            .exec(
                "DELETE FROM assignments WHERE user_domain = $1 AND user_name = $2 AND project_domain = $3 AND project_name = $4 AND role = $5",
                &[user.0, user.1, project.0, project.1, role],
                None,
                "grant",
            )
            .await?;
        Self::one_row(n, "this grant")
    }

    /// All role assignments.
    pub async fn list_grants(&self) -> Result<Vec<Grant>> {
        let rows = sqlx::query(
            "SELECT user_domain, user_name, project_domain, project_name, role FROM assignments
             ORDER BY user_domain, user_name, project_domain, project_name, role",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(Grant {
                    user: format!("{}@{}", get_str(r, "user_name")?, get_str(r, "user_domain")?),
                    project: format!("{}@{}", get_str(r, "project_name")?, get_str(r, "project_domain")?),
                    role: get_str(r, "role")?,
                })
            })
            .collect()
    }

    /// Registers a service audience.
    pub async fn create_service(&self, audience: &str, now: i64) -> Result<()> {
        self.exec(
            "INSERT INTO services (audience, created_at) VALUES ($1, $2)",
            &[audience],
            Some(now),
            &format!("service {audience}"),
        )
        .await
        .map(|_| ())
    }

    /// Removes a service audience.
    pub async fn delete_service(&self, audience: &str) -> Result<()> {
        let n = self
            .exec("DELETE FROM services WHERE audience = $1", &[audience], None, "service")
            .await?;
        Self::one_row(n, &format!("service {audience}"))
    }

    /// All service audiences.
    pub async fn list_services(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT audience FROM services ORDER BY audience")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(|r| get_str(r, "audience")).collect()
    }

    /// True if `audience` is registered.
    pub async fn service_exists(&self, audience: &str) -> Result<bool> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM services WHERE audience = $1")
            .bind(audience)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    /// Everything a mint re-checks about the user and the project, in one
    /// query: so disabling or revoking takes effect at the next mint.
    pub async fn mint_facts(&self, user: (&str, &str), project: (&str, &str), audience: &str) -> Result<MintFacts> {
        // Always at least one row (from the one-row subquery), so the
        // service check holds even for a user that no longer exists.
        let rows = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM services WHERE audience = $5) AS svc,
                    u.enabled AS ue, ud.enabled AS ude, p.enabled AS pe, pd.enabled AS pde, a.role AS role
             FROM (SELECT 1 AS one) base
             LEFT JOIN users u ON u.domain = $1 AND u.name = $2
             LEFT JOIN domains ud ON ud.name = u.domain
             LEFT JOIN projects p ON u.name IS NOT NULL AND p.domain = $3 AND p.name = $4
             LEFT JOIN domains pd ON pd.name = p.domain
             LEFT JOIN assignments a ON a.user_domain = u.domain AND a.user_name = u.name
                AND a.project_domain = p.domain AND a.project_name = p.name",
        )
        .bind(user.0)
        .bind(user.1)
        .bind(project.0)
        .bind(project.1)
        .bind(audience)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut facts = MintFacts::default();
        for r in &rows {
            facts.service_registered = get_i64(r, "svc")? > 0;
            let user_enabled: Option<i64> = r.try_get("ue").map_err(unavailable)?;
            let Some(user_enabled) = user_enabled else { continue };
            facts.user_exists = true;
            facts.user_enabled = user_enabled != 0 && get_i64(r, "ude")? != 0;
            let project_enabled: Option<i64> = r.try_get("pe").map_err(unavailable)?;
            let domain_enabled: Option<i64> = r.try_get("pde").map_err(unavailable)?;
            facts.project_exists = project_enabled.is_some();
            facts.project_enabled = project_enabled.unwrap_or(0) != 0 && domain_enabled.unwrap_or(0) != 0;
            if let Some(role) = r.try_get::<Option<String>, _>("role").map_err(unavailable)? {
                facts.roles.push(role);
            }
        }
        facts.roles.sort();
        Ok(facts)
    }

    /// Appends to the audit log.
    pub async fn audit(&self, now: i64, actor: &str, action: &str, target: &str, outcome: &str) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        audit_in(&mut conn, now, actor, action, target, outcome).await
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn list_audit(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows =
            sqlx::query("SELECT id, time, actor, action, target, outcome FROM audit_log ORDER BY id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
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
}

async fn audit_in(
    conn: &mut sqlx::AnyConnection,
    now: i64,
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO audit_log (time, actor, action, target, outcome) VALUES ($1, $2, $3, $4, $5)")
        .bind(now)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(outcome)
        .execute(conn)
        .await
        .map_err(unavailable)?;
    Ok(())
}

fn get_str(row: &AnyRow, column: &str) -> Result<String> {
    row.try_get::<String, _>(column).map_err(unavailable)
}

fn get_i64(row: &AnyRow, column: &str) -> Result<i64> {
    // SQLite INTEGER and PostgreSQL BIGINT/INTEGER both arrive as i64 or i32.
    row.try_get::<i64, _>(column)
        .or_else(|_| row.try_get::<i32, _>(column).map(i64::from))
        .map_err(unavailable)
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
        let store = Store::connect(&url).await.unwrap();
        // Several connections at once, so more than the first one is checked.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = store.pool.acquire().await.unwrap();
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
