//! Domains, projects, users (with their registered keys) and roles.

use std::future::Future;

use sqlx::Row;

use super::{Conn, get_i64, get_str, one_row, unavailable, write_error};
use crate::error::{Code, Result, err};
use crate::names::{Name, ProjectName, UserName};

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

/// A user as listed by the admin API.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = User)]
pub struct UserInfo {
    /// `name@domain`.
    #[schema(value_type = String)]
    pub user: UserName,
    /// `person` or `service`.
    pub kind: String,
    /// Enabled flag.
    pub enabled: bool,
    /// Whether a password is set.
    pub has_password: bool,
}

/// The identity aggregate.
pub trait Identities {
    /// True once the first admin exists.
    fn is_bootstrapped(&mut self) -> impl Future<Output = Result<bool>> + Send;
    /// Creates the default domain, the admin project, role and user with
    /// `password_hash`, and the grant; refused when the admin exists. (The
    /// admin audience is not stored: it follows the issuer id.)
    fn bootstrap(&mut self, password_hash: &str, now: i64) -> impl Future<Output = Result<()>> + Send;
    /// Creates a domain.
    fn create_domain(&mut self, name: &Name, now: i64) -> impl Future<Output = Result<()>> + Send;
    /// Enables or disables a domain (and with it its users and projects).
    fn set_domain_enabled(&mut self, name: &Name, enabled: bool) -> impl Future<Output = Result<()>> + Send;
    /// All domains with their enabled flag.
    fn list_domains(&mut self) -> impl Future<Output = Result<Vec<(String, bool)>>> + Send;
    /// Creates a project in an existing domain.
    fn create_project(&mut self, project: &ProjectName, now: i64) -> impl Future<Output = Result<()>> + Send;
    /// Enables or disables a project.
    fn set_project_enabled(&mut self, project: &ProjectName, enabled: bool) -> impl Future<Output = Result<()>> + Send;
    /// Projects with their enabled flag.
    fn list_projects(&mut self) -> impl Future<Output = Result<Vec<(ProjectName, bool)>>> + Send;
    /// Creates a user (`kind` is `person` or `service`) in an existing domain.
    fn create_user(
        &mut self,
        user: &UserName,
        kind: &str,
        password_hash: Option<&str>,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Enables or disables a user.
    fn set_user_enabled(&mut self, user: &UserName, enabled: bool) -> impl Future<Output = Result<()>> + Send;
    /// Sets a user's password hash and clears the lockout.
    fn set_password(&mut self, user: &UserName, password_hash: &str) -> impl Future<Output = Result<()>> + Send;
    /// Registers a public key (thumbprint, COSE_Key in base64url) for key login.
    fn add_user_key(
        &mut self,
        user: &UserName,
        thumbprint: &str,
        cose_key: &str,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// True if the key is registered for the user.
    fn user_has_key(&mut self, user: &UserName, thumbprint: &str) -> impl Future<Output = Result<bool>> + Send;
    /// All users.
    fn list_users(&mut self) -> impl Future<Output = Result<Vec<UserInfo>>> + Send;
    /// Creates a role.
    fn create_role(&mut self, name: &Name, now: i64) -> impl Future<Output = Result<()>> + Send;
    /// All roles.
    fn list_roles(&mut self) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// Refuses with `issuer.not_found` unless `sql` counts at least one row.
async fn require(conn: &mut Conn, sql: &str, args: &[&str], what: &str) -> Result<()> {
    let mut query = sqlx::query(sql);
    for arg in args {
        query = query.bind(*arg);
    }
    let n: i64 = query
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get("n"))
        .map_err(unavailable)?;
    if n == 0 {
        return err(Code::IssuerNotFound, format!("{what} does not exist"));
    }
    Ok(())
}

pub(super) async fn require_domain(conn: &mut Conn, domain: &Name) -> Result<()> {
    let what = format!("domain {domain}");
    require(
        conn,
        "SELECT COUNT(*) AS n FROM domains WHERE name = $1",
        &[domain.as_str()],
        &what,
    )
    .await
}

pub(super) async fn require_user(conn: &mut Conn, user: &UserName) -> Result<()> {
    let what = format!("user {user}");
    require(
        conn,
        "SELECT COUNT(*) AS n FROM users WHERE domain = $1 AND name = $2",
        &[user.domain.as_str(), user.name.as_str()],
        &what,
    )
    .await
}

pub(super) async fn require_project(conn: &mut Conn, project: &ProjectName) -> Result<()> {
    let what = format!("project {project}");
    require(
        conn,
        "SELECT COUNT(*) AS n FROM projects WHERE domain = $1 AND name = $2",
        &[project.domain.as_str(), project.name.as_str()],
        &what,
    )
    .await
}

pub(super) async fn require_role(conn: &mut Conn, role: &Name) -> Result<()> {
    let what = format!("role {role}");
    require(
        conn,
        "SELECT COUNT(*) AS n FROM roles WHERE name = $1",
        &[role.as_str()],
        &what,
    )
    .await
}

/// A qualified name read back from the database.
pub(super) fn stored<T>(parse: fn(&str) -> Result<T>, name: String, domain: String) -> Result<T> {
    parse(&format!("{name}@{domain}"))
}

impl Identities for Conn {
    async fn is_bootstrapped(&mut self) -> Result<bool> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE domain = $1 AND name = $2")
            .bind(bootstrap_names::DOMAIN)
            .bind(bootstrap_names::USER)
            .fetch_one(&mut *self)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn bootstrap(&mut self, password_hash: &str, now: i64) -> Result<()> {
        use bootstrap_names::*;
        if self.is_bootstrapped().await? {
            return err(Code::IssuerConflict, "the issuer is already bootstrapped");
        }
        let statements: [(&str, Vec<&str>); 5] = [
            (
                "INSERT INTO domains (name, enabled, created_at) VALUES ($1, 1, $2) ON CONFLICT (name) DO NOTHING",
                vec![DOMAIN],
            ),
            (
                "INSERT INTO projects (domain, name, enabled, created_at) VALUES ($1, $2, 1, $3) ON CONFLICT (domain, name) DO NOTHING",
                vec![DOMAIN, PROJECT],
            ),
            (
                "INSERT INTO roles (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                vec![ROLE],
            ),
            (
                "INSERT INTO users (domain, name, kind, enabled, password_hash, created_at) VALUES ($1, $2, 'person', 1, $3, $4)",
                vec![DOMAIN, USER, password_hash],
            ),
            (
                "INSERT INTO assignments (user_domain, user_name, project_domain, project_name, role, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                vec![DOMAIN, USER, DOMAIN, PROJECT, ROLE],
            ),
        ];
        for (sql, args) in statements {
            let mut query = sqlx::query(sql);
            for arg in args {
                query = query.bind(arg);
            }
            query
                .bind(now)
                .execute(&mut *self)
                .await
                .map_err(|e| write_error(e, &"bootstrap object"))?;
        }
        Ok(())
    }

    async fn create_domain(&mut self, name: &Name, now: i64) -> Result<()> {
        // A domain is this issuer's or a peer's, never both (spec/federation.md §2).
        if let Some(peer) = super::federation::Federation::peer_for_domain(self, name.as_str()).await? {
            return crate::error::err(
                crate::error::Code::IssuerConflict,
                format!("domain {name} is the domain of the peer issuer {peer}: it cannot also be local"),
            );
        }
        sqlx::query("INSERT INTO domains (name, enabled, created_at) VALUES ($1, 1, $2)")
            .bind(name.as_str())
            .bind(now)
            .execute(&mut *self)
            .await
            .map_err(|e| write_error(e, &format!("domain {name}")))?;
        Ok(())
    }

    async fn set_domain_enabled(&mut self, name: &Name, enabled: bool) -> Result<()> {
        let done = sqlx::query("UPDATE domains SET enabled = $1 WHERE name = $2")
            .bind(i64::from(enabled))
            .bind(name.as_str())
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        one_row(done.rows_affected(), &format!("domain {name}"))
    }

    async fn list_domains(&mut self) -> Result<Vec<(String, bool)>> {
        let rows = sqlx::query("SELECT name, enabled FROM domains ORDER BY name")
            .fetch_all(&mut *self)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| Ok((get_str(r, "name")?, get_i64(r, "enabled")? != 0)))
            .collect()
    }

    async fn create_project(&mut self, project: &ProjectName, now: i64) -> Result<()> {
        require_domain(self, &project.domain).await?;
        sqlx::query("INSERT INTO projects (domain, name, enabled, created_at) VALUES ($1, $2, 1, $3)")
            .bind(project.domain.as_str())
            .bind(project.name.as_str())
            .bind(now)
            .execute(&mut *self)
            .await
            .map_err(|e| write_error(e, &format!("project {project}")))?;
        Ok(())
    }

    async fn set_project_enabled(&mut self, project: &ProjectName, enabled: bool) -> Result<()> {
        let done = sqlx::query("UPDATE projects SET enabled = $1 WHERE domain = $2 AND name = $3")
            .bind(i64::from(enabled))
            .bind(project.domain.as_str())
            .bind(project.name.as_str())
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        one_row(done.rows_affected(), &format!("project {project}"))
    }

    async fn list_projects(&mut self) -> Result<Vec<(ProjectName, bool)>> {
        let rows = sqlx::query("SELECT domain, name, enabled FROM projects ORDER BY domain, name")
            .fetch_all(&mut *self)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    stored(ProjectName::parse, get_str(r, "name")?, get_str(r, "domain")?)?,
                    get_i64(r, "enabled")? != 0,
                ))
            })
            .collect()
    }

    async fn create_user(&mut self, user: &UserName, kind: &str, password_hash: Option<&str>, now: i64) -> Result<()> {
        require_domain(self, &user.domain).await?;
        sqlx::query(
            "INSERT INTO users (domain, name, kind, enabled, password_hash, created_at) VALUES ($1, $2, $3, 1, $4, $5)",
        )
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .bind(kind)
        .bind(password_hash)
        .bind(now)
        .execute(&mut *self)
        .await
        .map_err(|e| write_error(e, &format!("user {user}")))?;
        Ok(())
    }

    async fn set_user_enabled(&mut self, user: &UserName, enabled: bool) -> Result<()> {
        let done = sqlx::query("UPDATE users SET enabled = $1 WHERE domain = $2 AND name = $3")
            .bind(i64::from(enabled))
            .bind(user.domain.as_str())
            .bind(user.name.as_str())
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        one_row(done.rows_affected(), &format!("user {user}"))
    }

    async fn set_password(&mut self, user: &UserName, password_hash: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = 0 WHERE domain = $2 AND name = $3",
        )
        .bind(password_hash)
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        one_row(done.rows_affected(), &format!("user {user}"))
    }

    async fn add_user_key(&mut self, user: &UserName, thumbprint: &str, cose_key: &str, now: i64) -> Result<()> {
        require_user(self, user).await?;
        sqlx::query(
            "INSERT INTO user_keys (domain, name, thumbprint, cose_key, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .bind(thumbprint)
        .bind(cose_key)
        .bind(now)
        .execute(&mut *self)
        .await
        .map_err(|e| write_error(e, &"this key"))?;
        Ok(())
    }

    async fn user_has_key(&mut self, user: &UserName, thumbprint: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM user_keys WHERE domain = $1 AND name = $2 AND thumbprint = $3")
                .bind(user.domain.as_str())
                .bind(user.name.as_str())
                .bind(thumbprint)
                .fetch_one(&mut *self)
                .await
                .and_then(|r| r.try_get("n"))
                .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn list_users(&mut self) -> Result<Vec<UserInfo>> {
        let rows = sqlx::query("SELECT domain, name, kind, enabled, password_hash FROM users ORDER BY domain, name")
            .fetch_all(&mut *self)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(UserInfo {
                    user: stored(UserName::parse, get_str(r, "name")?, get_str(r, "domain")?)?,
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

    async fn create_role(&mut self, name: &Name, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO roles (name, created_at) VALUES ($1, $2)")
            .bind(name.as_str())
            .bind(now)
            .execute(&mut *self)
            .await
            .map_err(|e| write_error(e, &format!("role {name}")))?;
        Ok(())
    }

    async fn list_roles(&mut self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM roles ORDER BY name")
            .fetch_all(&mut *self)
            .await
            .map_err(unavailable)?;
        rows.iter().map(|r| get_str(r, "name")).collect()
    }
}
