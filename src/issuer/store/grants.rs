//! Role assignments, and the one query a mint re-checks them with.

use std::future::Future;

use sqlx::Row;

use super::identities::{require_project, require_role, require_user, stored};
use super::{Conn, get_i64, get_str, one_row, unavailable, write_error};
use crate::error::Result;
use crate::names::{Name, ProjectName, UserName};

/// A role assignment.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `name@domain`.
    #[schema(value_type = String)]
    pub user: UserName,
    /// `project@domain`.
    #[schema(value_type = String)]
    pub project: ProjectName,
    /// Role name.
    pub role: String,
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
    /// When the user was created (Unix seconds; 0 when it does not exist).
    pub user_created_at: i64,
    /// The session's key was removed from the user at or after the
    /// session's start ([`SessionKey`]; false without one).
    pub key_removed: bool,
}

impl MintFacts {
    /// Whether the session (or token) `session` belongs to the user as it
    /// exists now, not to one deleted and created again since: issued no
    /// more than the leeway before the user's creation (replicas' clocks
    /// differ by up to that much).
    pub fn same_user(&self, session: SessionKey<'_>) -> bool {
        self.user_exists && session.issued_at.saturating_add(session.leeway) >= self.user_created_at
    }
}

/// The key and start of the session a mint comes from: a session bound to
/// a key removed from its user since it began (or up to the leeway after,
/// since replicas' clocks differ by up to that much) mints nothing.
#[derive(Clone, Copy, Debug)]
pub struct SessionKey<'a> {
    /// The thumbprint of the session's key (base64url).
    pub thumbprint: &'a str,
    /// The session token's `iat`.
    pub issued_at: i64,
    /// The clock leeway (seconds) the comparisons allow for.
    pub leeway: i64,
}

/// The grant aggregate.
pub trait Grants {
    /// Grants `role` to the user on the project.
    fn grant(
        &mut self,
        user: &UserName,
        project: &ProjectName,
        role: &Name,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Revokes a role assignment.
    fn revoke(
        &mut self,
        user: &UserName,
        project: &ProjectName,
        role: &Name,
    ) -> impl Future<Output = Result<()>> + Send;
    /// All role assignments.
    fn list_grants(&mut self) -> impl Future<Output = Result<Vec<Grant>>> + Send;
    /// The role assignments of the user, on the project and of the role
    /// that are given (all of them for `None`s), sorted.
    fn list_grants_where(
        &mut self,
        user: Option<&UserName>,
        project: Option<&ProjectName>,
        role: Option<&Name>,
    ) -> impl Future<Output = Result<Vec<Grant>>> + Send;
    /// Everything a mint re-checks about the user, the project (if any) and
    /// the audience, in one query: so disabling or revoking takes effect at
    /// the next mint.
    fn mint_facts(
        &mut self,
        user: &UserName,
        project: Option<&ProjectName>,
        audience: &str,
    ) -> impl Future<Output = Result<MintFacts>> + Send;
    /// [`Grants::mint_facts`], and in the same query whether the session's
    /// key was removed from the user since the session began.
    fn mint_facts_for(
        &mut self,
        user: &UserName,
        project: Option<&ProjectName>,
        audience: &str,
        session: Option<SessionKey<'_>>,
    ) -> impl Future<Output = Result<MintFacts>> + Send;
}

impl Grants for Conn {
    async fn grant(&mut self, user: &UserName, project: &ProjectName, role: &Name, now: i64) -> Result<()> {
        require_user(self, user).await?;
        require_project(self, project).await?;
        require_role(self, role).await?;
        sqlx::query(
            "INSERT INTO assignments (user_domain, user_name, project_domain, project_name, role, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .bind(project.domain.as_str())
        .bind(project.name.as_str())
        .bind(role.as_str())
        .bind(now)
        .execute(&mut *self)
        .await
        .map_err(|e| write_error(e, &"this grant"))?;
        Ok(())
    }

    async fn revoke(&mut self, user: &UserName, project: &ProjectName, role: &Name) -> Result<()> {
        let done = sqlx::query(
            "DELETE FROM assignments WHERE user_domain = $1 AND user_name = $2 AND project_domain = $3
             AND project_name = $4 AND role = $5",
        )
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .bind(project.domain.as_str())
        .bind(project.name.as_str())
        .bind(role.as_str())
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        one_row(done.rows_affected(), &"this grant")
    }

    async fn list_grants(&mut self) -> Result<Vec<Grant>> {
        self.list_grants_where(None, None, None).await
    }

    async fn list_grants_where(
        &mut self,
        user: Option<&UserName>,
        project: Option<&ProjectName>,
        role: Option<&Name>,
    ) -> Result<Vec<Grant>> {
        // Only the filters given become conditions, each a bound parameter.
        let mut columns: Vec<(&str, &str)> = Vec::new();
        if let Some(u) = user {
            columns.extend([("user_domain", u.domain.as_str()), ("user_name", u.name.as_str())]);
        }
        if let Some(p) = project {
            columns.extend([("project_domain", p.domain.as_str()), ("project_name", p.name.as_str())]);
        }
        if let Some(r) = role {
            columns.push(("role", r.as_str()));
        }
        let conditions: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (column, _))| format!("{column} = ${}", i + 1))
            .collect();
        let args: Vec<&str> = columns.iter().map(|(_, value)| *value).collect();
        let sql = format!(
            "SELECT user_domain, user_name, project_domain, project_name, role FROM assignments {}{}
             ORDER BY user_domain, user_name, project_domain, project_name, role",
            if conditions.is_empty() { "" } else { "WHERE " },
            conditions.join(" AND ")
        );
        let mut query = sqlx::query(&sql);
        for arg in args {
            query = query.bind(arg);
        }
        let rows = query.fetch_all(&mut *self).await.map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(Grant {
                    user: stored(UserName::parse, get_str(r, "user_name")?, get_str(r, "user_domain")?)?,
                    project: stored(
                        ProjectName::parse,
                        get_str(r, "project_name")?,
                        get_str(r, "project_domain")?,
                    )?,
                    role: get_str(r, "role")?,
                })
            })
            .collect()
    }

    async fn mint_facts(
        &mut self,
        user: &UserName,
        project: Option<&ProjectName>,
        audience: &str,
    ) -> Result<MintFacts> {
        self.mint_facts_for(user, project, audience, None).await
    }

    async fn mint_facts_for(
        &mut self,
        user: &UserName,
        project: Option<&ProjectName>,
        audience: &str,
        session: Option<SessionKey<'_>>,
    ) -> Result<MintFacts> {
        // Always at least one row (from the one-row subquery), so the
        // service check holds even for a user that no longer exists. No
        // project: empty names, which match none; no session: an empty
        // thumbprint, which matches no removed key.
        let (project_domain, project_name) = project.map_or(("", ""), |p| (p.domain.as_str(), p.name.as_str()));
        let (thumbprint, issued_before) =
            session.map_or(("", 0), |s| (s.thumbprint, s.issued_at.saturating_sub(s.leeway)));
        let rows = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM services WHERE audience = $5) AS svc,
                    (SELECT COUNT(*) FROM removed_user_keys WHERE domain = $6 AND name = $7 AND thumbprint = $8
                       AND removed_at >= $9) AS rk,
                    u.enabled AS ue, u.created_at AS uc, ud.enabled AS ude, p.enabled AS pe, pd.enabled AS pde,
                    a.role AS role
             FROM (SELECT 1 AS one) base
             LEFT JOIN users u ON u.domain = $1 AND u.name = $2
             LEFT JOIN domains ud ON ud.name = u.domain
             LEFT JOIN projects p ON u.name IS NOT NULL AND p.domain = $3 AND p.name = $4
             LEFT JOIN domains pd ON pd.name = p.domain
             LEFT JOIN assignments a ON a.user_domain = u.domain AND a.user_name = u.name
                AND a.project_domain = p.domain AND a.project_name = p.name",
        )
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .bind(project_domain)
        .bind(project_name)
        .bind(audience)
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .bind(thumbprint)
        .bind(issued_before)
        .fetch_all(&mut *self)
        .await
        .map_err(unavailable)?;
        let mut facts = MintFacts::default();
        for r in &rows {
            facts.service_registered = get_i64(r, "svc")? > 0;
            facts.key_removed = get_i64(r, "rk")? > 0;
            let user_enabled: Option<i64> = r.try_get("ue").map_err(unavailable)?;
            let Some(user_enabled) = user_enabled else { continue };
            facts.user_exists = true;
            facts.user_created_at = get_i64(r, "uc")?;
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
}
