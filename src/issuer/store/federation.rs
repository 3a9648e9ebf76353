//! Federation peers, and the roles granted here to their users
//! (spec/federation.md §2).

use std::future::Future;

use sqlx::Row;

use super::identities::{require_project, require_role, stored};
use super::{Conn, get_i64, get_str, one_row, unavailable, write_error};
use crate::error::{Code, Result, err};
use crate::names::{Name, ProjectName, UserName};

/// A peer issuer: another domain's issuer whose exchange tokens this one accepts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The peer's issuer id (`iss` of its tokens).
    pub issuer: String,
    /// Where its key set is fetched from.
    pub keys_url: String,
    /// The domains it is authoritative for, sorted: it may speak only for
    /// users of these domains.
    pub domains: Vec<String>,
    /// The local projects its users may reach (`project@domain`), sorted;
    /// empty: any.
    #[schema(value_type = Vec<String>)]
    pub projects: Vec<ProjectName>,
    /// Longest lifetime of a token exchanged for its users, in seconds;
    /// null: the issuer's service-token lifetime.
    #[schema(required = true)]
    pub max_lifetime: Option<u64>,
}

/// A role granted to a user of a peer's domain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteGrant {
    /// The peer authoritative for the user's domain.
    pub origin: String,
    /// The remote user, `name@domain`.
    #[schema(value_type = String)]
    pub user: UserName,
    /// The local project, `project@domain`.
    #[schema(value_type = String)]
    pub project: ProjectName,
    /// Role name.
    pub role: String,
}

/// What an exchange re-checks, read in one query.
#[derive(Clone, Debug, Default)]
pub struct ExchangeFacts {
    /// The audience is a registered service.
    pub service_registered: bool,
    /// The project exists.
    pub project_exists: bool,
    /// The project and its domain are enabled.
    pub project_enabled: bool,
    /// Roles granted to the remote user on the project, sorted.
    pub roles: Vec<String>,
}

/// The federation aggregate.
pub trait Federation {
    /// Adds a peer; refuses a domain that is local or another peer's.
    fn create_peer(&mut self, peer: &Peer, now: i64) -> impl Future<Output = Result<()>> + Send;
    /// Removes a peer, its domains, projects and remote grants.
    fn delete_peer(&mut self, issuer: &str) -> impl Future<Output = Result<()>> + Send;
    /// All peers, by issuer id.
    fn list_peers(&mut self) -> impl Future<Output = Result<Vec<Peer>>> + Send;
    /// The peer authoritative for `domain`, if any.
    fn peer_for_domain(&mut self, domain: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Grants `role` on a local project to a user of `origin`'s domains.
    fn grant_remote(
        &mut self,
        origin: &str,
        user: &UserName,
        project: &ProjectName,
        role: &Name,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Revokes a remote grant.
    fn revoke_remote(
        &mut self,
        origin: &str,
        user: &UserName,
        project: &ProjectName,
        role: &Name,
    ) -> impl Future<Output = Result<()>> + Send;
    /// All remote grants.
    fn list_remote_grants(&mut self) -> impl Future<Output = Result<Vec<RemoteGrant>>> + Send;
    /// Everything an exchange re-checks about the audience, the project and
    /// the remote user's grants, in one query: revoking a grant takes effect
    /// at the next exchange.
    fn exchange_facts(
        &mut self,
        origin: &str,
        user: &UserName,
        project: &ProjectName,
        audience: &str,
    ) -> impl Future<Output = Result<ExchangeFacts>> + Send;
}

/// Whether `domain` is one of this issuer's own domains.
pub(crate) async fn is_local_domain(conn: &mut Conn, domain: &str) -> Result<bool> {
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM domains WHERE name = $1")
        .bind(domain)
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get("n"))
        .map_err(unavailable)?;
    Ok(n > 0)
}

impl Federation for Conn {
    async fn create_peer(&mut self, peer: &Peer, now: i64) -> Result<()> {
        for domain in &peer.domains {
            if is_local_domain(self, domain).await? {
                return err(
                    Code::IssuerConflict,
                    format!("domain {domain} is this issuer's own: a peer cannot be authoritative for it"),
                );
            }
        }
        sqlx::query("INSERT INTO peers (issuer_id, keys_url, max_lifetime, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&peer.issuer)
            .bind(&peer.keys_url)
            .bind(peer.max_lifetime.map(|s| s as i64))
            .bind(now)
            .execute(&mut *self)
            .await
            .map_err(|e| write_error(e, &format!("peer {}", peer.issuer)))?;
        for domain in &peer.domains {
            sqlx::query("INSERT INTO peer_domains (issuer_id, domain) VALUES ($1, $2)")
                .bind(&peer.issuer)
                .bind(domain)
                .execute(&mut *self)
                .await
                .map_err(|e| write_error(e, &format!("a peer authoritative for domain {domain}")))?;
        }
        for project in &peer.projects {
            require_project(self, project).await?;
            sqlx::query("INSERT INTO peer_projects (issuer_id, project_domain, project_name) VALUES ($1, $2, $3)")
                .bind(&peer.issuer)
                .bind(project.domain.as_str())
                .bind(project.name.as_str())
                .execute(&mut *self)
                .await
                .map_err(|e| write_error(e, &format!("project {project} of peer {}", peer.issuer)))?;
        }
        Ok(())
    }

    async fn delete_peer(&mut self, issuer: &str) -> Result<()> {
        // Children first: the cascade needs SQLite's foreign keys, and
        // deleting them here does not depend on it.
        for table in ["remote_assignments", "peer_projects", "peer_domains"] {
            let column = if table == "remote_assignments" {
                "origin_issuer"
            } else {
                "issuer_id"
            };
            sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
                .bind(issuer)
                .execute(&mut *self)
                .await
                .map_err(unavailable)?;
        }
        let done = sqlx::query("DELETE FROM peers WHERE issuer_id = $1")
            .bind(issuer)
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        one_row(done.rows_affected(), &format!("peer {issuer}"))
    }

    async fn list_peers(&mut self) -> Result<Vec<Peer>> {
        let rows = sqlx::query("SELECT issuer_id, keys_url, max_lifetime FROM peers ORDER BY issuer_id")
            .fetch_all(&mut *self)
            .await
            .map_err(unavailable)?;
        let mut peers = Vec::with_capacity(rows.len());
        for r in &rows {
            let max_lifetime: Option<i64> = r.try_get("max_lifetime").map_err(unavailable)?;
            peers.push(Peer {
                issuer: get_str(r, "issuer_id")?,
                keys_url: get_str(r, "keys_url")?,
                domains: Vec::new(),
                projects: Vec::new(),
                max_lifetime: max_lifetime.map(|s| s.max(0) as u64),
            });
        }
        let domains = sqlx::query("SELECT issuer_id, domain FROM peer_domains ORDER BY issuer_id, domain")
            .fetch_all(&mut *self)
            .await
            .map_err(unavailable)?;
        for r in &domains {
            let issuer = get_str(r, "issuer_id")?;
            if let Some(peer) = peers.iter_mut().find(|p| p.issuer == issuer) {
                peer.domains.push(get_str(r, "domain")?);
            }
        }
        let projects = sqlx::query(
            "SELECT issuer_id, project_domain, project_name FROM peer_projects
             ORDER BY issuer_id, project_domain, project_name",
        )
        .fetch_all(&mut *self)
        .await
        .map_err(unavailable)?;
        for r in &projects {
            let issuer = get_str(r, "issuer_id")?;
            let project = stored(
                ProjectName::parse,
                get_str(r, "project_name")?,
                get_str(r, "project_domain")?,
            )?;
            if let Some(peer) = peers.iter_mut().find(|p| p.issuer == issuer) {
                peer.projects.push(project);
            }
        }
        Ok(peers)
    }

    async fn peer_for_domain(&mut self, domain: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT issuer_id FROM peer_domains WHERE domain = $1")
            .bind(domain)
            .fetch_optional(&mut *self)
            .await
            .map_err(unavailable)?;
        row.map(|r| get_str(&r, "issuer_id")).transpose()
    }

    async fn grant_remote(
        &mut self,
        origin: &str,
        user: &UserName,
        project: &ProjectName,
        role: &Name,
        now: i64,
    ) -> Result<()> {
        require_project(self, project).await?;
        require_role(self, role).await?;
        sqlx::query(
            "INSERT INTO remote_assignments (origin_issuer, subject_domain, subject_name, project_domain,
             project_name, role, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(origin)
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .bind(project.domain.as_str())
        .bind(project.name.as_str())
        .bind(role.as_str())
        .bind(now)
        .execute(&mut *self)
        .await
        .map_err(|e| write_error(e, &"this remote grant"))?;
        Ok(())
    }

    async fn revoke_remote(&mut self, origin: &str, user: &UserName, project: &ProjectName, role: &Name) -> Result<()> {
        let done = sqlx::query(
            "DELETE FROM remote_assignments WHERE origin_issuer = $1 AND subject_domain = $2 AND subject_name = $3
             AND project_domain = $4 AND project_name = $5 AND role = $6",
        )
        .bind(origin)
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .bind(project.domain.as_str())
        .bind(project.name.as_str())
        .bind(role.as_str())
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        one_row(done.rows_affected(), &"this remote grant")
    }

    async fn list_remote_grants(&mut self) -> Result<Vec<RemoteGrant>> {
        let rows = sqlx::query(
            "SELECT origin_issuer, subject_domain, subject_name, project_domain, project_name, role
             FROM remote_assignments
             ORDER BY origin_issuer, subject_domain, subject_name, project_domain, project_name, role",
        )
        .fetch_all(&mut *self)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(RemoteGrant {
                    origin: get_str(r, "origin_issuer")?,
                    user: stored(
                        UserName::parse,
                        get_str(r, "subject_name")?,
                        get_str(r, "subject_domain")?,
                    )?,
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

    async fn exchange_facts(
        &mut self,
        origin: &str,
        user: &UserName,
        project: &ProjectName,
        audience: &str,
    ) -> Result<ExchangeFacts> {
        // Always one row at least (the one-row subquery), so the service
        // check holds for a project that does not exist.
        let rows = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM services WHERE audience = $6) AS svc,
                    p.enabled AS pe, pd.enabled AS pde, a.role AS role
             FROM (SELECT 1 AS one) base
             LEFT JOIN projects p ON p.domain = $4 AND p.name = $5
             LEFT JOIN domains pd ON pd.name = p.domain
             LEFT JOIN remote_assignments a ON a.origin_issuer = $1 AND a.subject_domain = $2
                AND a.subject_name = $3 AND a.project_domain = p.domain AND a.project_name = p.name",
        )
        .bind(origin)
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .bind(project.domain.as_str())
        .bind(project.name.as_str())
        .bind(audience)
        .fetch_all(&mut *self)
        .await
        .map_err(unavailable)?;
        let mut facts = ExchangeFacts::default();
        for r in &rows {
            facts.service_registered = get_i64(r, "svc")? > 0;
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
