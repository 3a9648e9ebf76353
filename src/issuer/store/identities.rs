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

/// What the store knows about one user besides its grants and keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// `person` or `service`.
    pub kind: String,
    /// The user's own flag.
    pub enabled: bool,
    /// Its domain's flag.
    pub domain_enabled: bool,
    /// Whether a password is set.
    pub has_password: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Consecutive failed password logins (spec/issuer.md §5.5).
    pub failed_logins: i64,
    /// Unix time until which password logins are refused; 0: never locked
    /// (a time in the past: a lock that has run out).
    pub locked_until: i64,
}

/// A key registered for key login.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserKey {
    /// The key's thumbprint (spec/formats.md §5.3), base64url.
    pub thumbprint: String,
    /// Unix seconds: when it was registered.
    pub added_at: i64,
}

/// What deleting a user removed with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRemoved {
    /// Its role assignments.
    pub grants: u64,
    /// The trusts it was trustor or trustee of (their redelegations went with them).
    pub trusts: u64,
    /// Its registered keys.
    pub keys: u64,
}

/// What deleting a project removed with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProjectRemoved {
    /// The role assignments on it.
    pub grants: u64,
    /// The roles granted on it to users of peer domains.
    pub remote_grants: u64,
    /// The trusts on it (their redelegations went with them).
    pub trusts: u64,
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
    /// A user's flags, creation time and lockout state, `None` if unknown.
    fn user_record(&mut self, user: &UserName) -> impl Future<Output = Result<Option<UserRecord>>> + Send;
    /// The keys registered for a user, oldest first (none for an unknown user).
    fn list_user_keys(&mut self, user: &UserName) -> impl Future<Output = Result<Vec<UserKey>>> + Send;
    /// Removes a registered key and remembers its removal at `now` (a
    /// session bound to it from before then mints nothing more), forgetting
    /// removals from before `forget_before`. `issuer.not_found` when the
    /// user has no such key.
    fn remove_user_key(
        &mut self,
        user: &UserName,
        thumbprint: &str,
        now: i64,
        forget_before: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Ends a lockout: the failure counter is 0 again.
    fn unlock_user(&mut self, user: &UserName) -> impl Future<Output = Result<()>> + Send;
    /// Deletes a domain without projects or users (`issuer.in_use`
    /// otherwise); `default` is `issuer.protected`.
    fn delete_domain(&mut self, name: &Name) -> impl Future<Output = Result<()>> + Send;
    /// Deletes a project with its role assignments, remote grants and
    /// trusts; refused (`issuer.in_use`) while a federation peer is limited
    /// to it; `admin@default` is `issuer.protected`.
    fn delete_project(&mut self, project: &ProjectName) -> impl Future<Output = Result<ProjectRemoved>> + Send;
    /// Deletes a user with its role assignments, keys and the trusts it is
    /// trustor or trustee of; `admin@default` is `issuer.protected`.
    fn delete_user(&mut self, user: &UserName) -> impl Future<Output = Result<UserRemoved>> + Send;
    /// Deletes a role that nothing grants or delegates (`issuer.in_use`
    /// otherwise); `admin` is `issuer.protected`.
    fn delete_role(&mut self, name: &Name) -> impl Future<Output = Result<()>> + Send;
}

/// Counts rows: `sql` selects `COUNT(*) AS n` with text parameters `args`.
async fn count(conn: &mut Conn, sql: &str, args: &[&str]) -> Result<i64> {
    let mut query = sqlx::query(sql);
    for arg in args {
        query = query.bind(*arg);
    }
    query
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get("n"))
        .map_err(unavailable)
}

/// Runs a statement with text parameters; returns the rows it changed.
async fn execute(conn: &mut Conn, sql: &str, args: &[&str]) -> Result<u64> {
    let mut query = sqlx::query(sql);
    for arg in args {
        query = query.bind(*arg);
    }
    Ok(query.execute(&mut *conn).await.map_err(unavailable)?.rows_affected())
}

/// "2 projects and 1 user" (parts with a zero count left out).
fn counted(parts: &[(i64, &str, &str)]) -> String {
    parts
        .iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
        .collect::<Vec<_>>()
        .join(" and ")
}

fn protected<T>(what: &str) -> Result<T> {
    err(
        Code::IssuerProtected,
        format!("{what} is made by the bootstrap and holds the admin API; it cannot be deleted"),
    )
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

    async fn user_record(&mut self, user: &UserName) -> Result<Option<UserRecord>> {
        let row = sqlx::query(
            "SELECT u.kind AS kind, u.enabled AS ue, d.enabled AS de, u.password_hash AS ph, u.created_at AS ca,
                    u.failed_logins AS fl, u.locked_until AS lu
             FROM users u JOIN domains d ON d.name = u.domain WHERE u.domain = $1 AND u.name = $2",
        )
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .fetch_optional(&mut *self)
        .await
        .map_err(unavailable)?;
        row.map(|r| {
            Ok(UserRecord {
                kind: get_str(&r, "kind")?,
                enabled: get_i64(&r, "ue")? != 0,
                domain_enabled: get_i64(&r, "de")? != 0,
                has_password: r.try_get::<Option<String>, _>("ph").map_err(unavailable)?.is_some(),
                created_at: get_i64(&r, "ca")?,
                failed_logins: get_i64(&r, "fl")?,
                locked_until: get_i64(&r, "lu")?,
            })
        })
        .transpose()
    }

    async fn list_user_keys(&mut self, user: &UserName) -> Result<Vec<UserKey>> {
        let rows = sqlx::query(
            "SELECT thumbprint, created_at FROM user_keys WHERE domain = $1 AND name = $2
             ORDER BY created_at, thumbprint",
        )
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .fetch_all(&mut *self)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(UserKey {
                    thumbprint: get_str(r, "thumbprint")?,
                    added_at: get_i64(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn remove_user_key(&mut self, user: &UserName, thumbprint: &str, now: i64, forget_before: i64) -> Result<()> {
        let (domain, name) = (user.domain.as_str(), user.name.as_str());
        let removed = execute(
            self,
            "DELETE FROM user_keys WHERE domain = $1 AND name = $2 AND thumbprint = $3",
            &[domain, name, thumbprint],
        )
        .await?;
        one_row(removed, &format!("a key {thumbprint} of user {user}"))?;
        sqlx::query(
            "INSERT INTO removed_user_keys (domain, name, thumbprint, removed_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (domain, name, thumbprint) DO UPDATE SET removed_at = excluded.removed_at",
        )
        .bind(domain)
        .bind(name)
        .bind(thumbprint)
        .bind(now)
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        // No session began before the longest session lifetime: older
        // removals can no longer refuse anything.
        sqlx::query("DELETE FROM removed_user_keys WHERE removed_at < $1")
            .bind(forget_before)
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn unlock_user(&mut self, user: &UserName) -> Result<()> {
        let done = execute(
            self,
            "UPDATE users SET failed_logins = 0, locked_until = 0 WHERE domain = $1 AND name = $2",
            &[user.domain.as_str(), user.name.as_str()],
        )
        .await?;
        one_row(done, &format!("user {user}"))
    }

    async fn delete_domain(&mut self, name: &Name) -> Result<()> {
        if name.as_str() == bootstrap_names::DOMAIN {
            return protected("domain default");
        }
        let projects = count(
            self,
            "SELECT COUNT(*) AS n FROM projects WHERE domain = $1",
            &[name.as_str()],
        )
        .await?;
        let users = count(
            self,
            "SELECT COUNT(*) AS n FROM users WHERE domain = $1",
            &[name.as_str()],
        )
        .await?;
        if projects + users > 0 {
            return err(
                Code::IssuerInUse,
                format!(
                    "domain {name} still has {}: delete them first",
                    counted(&[(projects, "project", "projects"), (users, "user", "users")])
                ),
            );
        }
        let done = execute(self, "DELETE FROM domains WHERE name = $1", &[name.as_str()]).await?;
        one_row(done, &format!("domain {name}"))
    }

    async fn delete_project(&mut self, project: &ProjectName) -> Result<ProjectRemoved> {
        use bootstrap_names::{DOMAIN, PROJECT};
        if project.domain.as_str() == DOMAIN && project.name.as_str() == PROJECT {
            return protected("project admin@default");
        }
        let args = [project.domain.as_str(), project.name.as_str()];
        require_project(self, project).await?;
        // Removing the project from a peer's list would widen that peer's
        // reach (an empty list means any project): the operator decides.
        let limits = count(
            self,
            "SELECT COUNT(*) AS n FROM peer_projects WHERE project_domain = $1 AND project_name = $2",
            &args,
        )
        .await?;
        if limits > 0 {
            return err(
                Code::IssuerInUse,
                format!(
                    "project {project} is in the project list of {} federation peer{}: remove the peer first \
                     (keybound admin peer remove)",
                    limits,
                    if limits == 1 { "" } else { "s" }
                ),
            );
        }
        let removed = ProjectRemoved {
            grants: execute(
                self,
                "DELETE FROM assignments WHERE project_domain = $1 AND project_name = $2",
                &args,
            )
            .await?,
            remote_grants: execute(
                self,
                "DELETE FROM remote_assignments WHERE project_domain = $1 AND project_name = $2",
                &args,
            )
            .await?,
            trusts: execute(
                self,
                "DELETE FROM trusts WHERE project_domain = $1 AND project_name = $2",
                &args,
            )
            .await?,
        };
        let done = execute(self, "DELETE FROM projects WHERE domain = $1 AND name = $2", &args).await?;
        one_row(done, &format!("project {project}"))?;
        Ok(removed)
    }

    async fn delete_user(&mut self, user: &UserName) -> Result<UserRemoved> {
        use bootstrap_names::{DOMAIN, USER};
        if user.domain.as_str() == DOMAIN && user.name.as_str() == USER {
            return protected("user admin@default");
        }
        let args = [user.domain.as_str(), user.name.as_str()];
        require_user(self, user).await?;
        let removed = UserRemoved {
            grants: execute(
                self,
                "DELETE FROM assignments WHERE user_domain = $1 AND user_name = $2",
                &args,
            )
            .await?,
            // Child trusts go with their parents (ON DELETE CASCADE).
            trusts: execute(
                self,
                "DELETE FROM trusts WHERE (trustor_domain = $1 AND trustor_name = $2)
                 OR (trustee_domain = $3 AND trustee_name = $4)",
                &[args[0], args[1], args[0], args[1]],
            )
            .await?,
            keys: execute(self, "DELETE FROM user_keys WHERE domain = $1 AND name = $2", &args).await?,
        };
        execute(
            self,
            "DELETE FROM removed_user_keys WHERE domain = $1 AND name = $2",
            &args,
        )
        .await?;
        let done = execute(self, "DELETE FROM users WHERE domain = $1 AND name = $2", &args).await?;
        one_row(done, &format!("user {user}"))?;
        Ok(removed)
    }

    async fn delete_role(&mut self, name: &Name) -> Result<()> {
        if name.as_str() == bootstrap_names::ROLE {
            return protected("role admin");
        }
        let role = [name.as_str()];
        require_role(self, name).await?;
        let grants = count(self, "SELECT COUNT(*) AS n FROM assignments WHERE role = $1", &role).await?;
        let remote = count(
            self,
            "SELECT COUNT(*) AS n FROM remote_assignments WHERE role = $1",
            &role,
        )
        .await?;
        let trusts = count(self, "SELECT COUNT(*) AS n FROM trust_roles WHERE role = $1", &role).await?;
        if grants + remote + trusts > 0 {
            return err(
                Code::IssuerInUse,
                format!(
                    "role {name} is still in {}: revoke or delete them first",
                    counted(&[
                        (grants, "grant", "grants"),
                        (remote, "remote grant", "remote grants"),
                        (trusts, "trust", "trusts"),
                    ])
                ),
            );
        }
        let done = execute(self, "DELETE FROM roles WHERE name = $1", &role).await?;
        one_row(done, &format!("role {name}"))
    }
}
