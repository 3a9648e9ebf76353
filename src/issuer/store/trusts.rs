//! Trusts (spec/delegation.md): rows of `trusts`, their roles in
//! `trust_roles`, the services they are restricted to in `trust_audiences`. A trust never changes after it is created, except its
//! remaining uses, which only a mint decrements.

use std::future::Future;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::identities::stored;
use super::{Conn, get_i64, get_str, unavailable, write_error};
use crate::error::Result;
use crate::names::{ProjectName, UserName};

/// A trust, as stored and as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// The trust id: 22 base64url characters (16 random bytes).
    pub id: String,
    /// Who delegates (`name@domain`); for a child trust, the parent's trustee.
    #[schema(value_type = String)]
    pub trustor: UserName,
    /// Who may use the trust (`name@domain`).
    #[schema(value_type = String)]
    pub trustee: UserName,
    /// `project@domain`.
    #[schema(value_type = String)]
    pub project: ProjectName,
    /// The delegated roles, sorted, distinct, never empty.
    pub roles: Vec<String>,
    /// The services tokens from the trust may name, sorted, distinct; empty: any registered service.
    pub audiences: Vec<String>,
    /// Unix seconds after which the trust yields nothing; null: no expiry.
    #[schema(required = true)]
    pub expires_at: Option<i64>,
    /// Mints left; null: unlimited.
    #[schema(required = true)]
    pub remaining_uses: Option<i64>,
    /// How many further levels of redelegation the trustee may create (0 to 3).
    #[schema(minimum = 0, maximum = 3)]
    pub redelegation: i64,
    /// The trust this one was redelegated from; null for a trust made by the trustor itself.
    #[schema(required = true)]
    pub parent: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// The trust aggregate.
pub trait Trusts {
    /// Stores a new trust with its roles.
    fn create_trust(&mut self, trust: &Trust) -> impl Future<Output = Result<()>> + Send;
    /// The trust `id`, if it exists.
    fn trust(&mut self, id: &str) -> impl Future<Output = Result<Option<Trust>>> + Send;
    /// The trust `id` and its ancestors, the trust first and the root last.
    /// Empty when `id` does not exist; when an ancestor is missing, the
    /// chain ends with the trust whose parent it was.
    fn trust_chain(&mut self, id: &str) -> impl Future<Output = Result<Vec<Trust>>> + Send;
    /// Trusts in which `user` is trustor or trustee, oldest first.
    fn trusts_of(&mut self, user: &UserName) -> impl Future<Output = Result<Vec<Trust>>> + Send;
    /// Trusts of `user` (as trustor or trustee) and/or on `project`; both
    /// `None`: every trust. Oldest first.
    fn list_trusts(
        &mut self,
        user: Option<&UserName>,
        project: Option<&ProjectName>,
    ) -> impl Future<Output = Result<Vec<Trust>>> + Send;
    /// Deletes the trust and (by cascade) every trust redelegated from it;
    /// false when it did not exist.
    fn delete_trust(&mut self, id: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Takes one use of the trust, locking its row until the transaction
    /// ends: false when it does not exist or has no use left. A trust with
    /// unlimited uses is locked and left as it is.
    fn consume_trust_use(&mut self, id: &str) -> impl Future<Output = Result<bool>> + Send;
}

const COLUMNS: &str = "id, trustor_domain, trustor_name, trustee_domain, trustee_name, project_domain, project_name,
    expires_at, remaining_uses, redelegation, parent_id, created_at";

async fn with_roles(conn: &mut Conn, rows: Vec<AnyRow>) -> Result<Vec<Trust>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id = get_str(r, "id")?;
        let roles = sqlx::query("SELECT role FROM trust_roles WHERE trust_id = $1 ORDER BY role")
            .bind(&id)
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?
            .iter()
            .map(|r| get_str(r, "role"))
            .collect::<Result<Vec<_>>>()?;
        let audiences = sqlx::query("SELECT audience FROM trust_audiences WHERE trust_id = $1 ORDER BY audience")
            .bind(&id)
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?
            .iter()
            .map(|r| get_str(r, "audience"))
            .collect::<Result<Vec<_>>>()?;
        out.push(Trust {
            id,
            trustor: stored(
                UserName::parse,
                get_str(r, "trustor_name")?,
                get_str(r, "trustor_domain")?,
            )?,
            trustee: stored(
                UserName::parse,
                get_str(r, "trustee_name")?,
                get_str(r, "trustee_domain")?,
            )?,
            project: stored(
                ProjectName::parse,
                get_str(r, "project_name")?,
                get_str(r, "project_domain")?,
            )?,
            roles,
            audiences,
            expires_at: r.try_get("expires_at").map_err(unavailable)?,
            remaining_uses: r.try_get("remaining_uses").map_err(unavailable)?,
            redelegation: get_i64(r, "redelegation")?,
            parent: r.try_get("parent_id").map_err(unavailable)?,
            created_at: get_i64(r, "created_at")?,
        });
    }
    Ok(out)
}

impl Trusts for Conn {
    async fn create_trust(&mut self, t: &Trust) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO trusts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&t.id)
        .bind(t.trustor.domain.as_str())
        .bind(t.trustor.name.as_str())
        .bind(t.trustee.domain.as_str())
        .bind(t.trustee.name.as_str())
        .bind(t.project.domain.as_str())
        .bind(t.project.name.as_str())
        .bind(t.expires_at)
        .bind(t.remaining_uses)
        .bind(t.redelegation)
        .bind(t.parent.as_deref())
        .bind(t.created_at)
        .execute(&mut *self)
        .await
        .map_err(|e| write_error(e, &"this trust"))?;
        for role in &t.roles {
            sqlx::query("INSERT INTO trust_roles (trust_id, role) VALUES ($1, $2)")
                .bind(&t.id)
                .bind(role)
                .execute(&mut *self)
                .await
                .map_err(|e| write_error(e, &format!("role {role} of this trust")))?;
        }
        for audience in &t.audiences {
            sqlx::query("INSERT INTO trust_audiences (trust_id, audience) VALUES ($1, $2)")
                .bind(&t.id)
                .bind(audience)
                .execute(&mut *self)
                .await
                .map_err(|e| write_error(e, &"an audience of this trust"))?;
        }
        Ok(())
    }

    async fn trust(&mut self, id: &str) -> Result<Option<Trust>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM trusts WHERE id = $1"))
            .bind(id)
            .fetch_all(&mut *self)
            .await
            .map_err(unavailable)?;
        Ok(with_roles(self, rows).await?.pop())
    }

    async fn trust_chain(&mut self, id: &str) -> Result<Vec<Trust>> {
        let mut chain: Vec<Trust> = Vec::new();
        let mut next = Some(id.to_owned());
        // Redelegation allowances shrink at every level (at most 3), so a
        // chain has at most 4 links; the bound also stops a cycle that a
        // corrupted database could hold.
        while let Some(id) = next.take() {
            if chain.len() > 4 {
                break;
            }
            let Some(trust) = self.trust(&id).await? else { break };
            next = trust.parent.clone();
            chain.push(trust);
        }
        Ok(chain)
    }

    async fn trusts_of(&mut self, user: &UserName) -> Result<Vec<Trust>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM trusts WHERE (trustor_domain = $1 AND trustor_name = $2)
             OR (trustee_domain = $1 AND trustee_name = $2) ORDER BY created_at, id"
        ))
        .bind(user.domain.as_str())
        .bind(user.name.as_str())
        .fetch_all(&mut *self)
        .await
        .map_err(unavailable)?;
        with_roles(self, rows).await
    }

    async fn list_trusts(&mut self, user: Option<&UserName>, project: Option<&ProjectName>) -> Result<Vec<Trust>> {
        // Empty strings match no name (names are never empty).
        let (ud, un) = user.map_or(("", ""), |u| (u.domain.as_str(), u.name.as_str()));
        let (pd, pn) = project.map_or(("", ""), |p| (p.domain.as_str(), p.name.as_str()));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM trusts
             WHERE ($1 = '' OR (trustor_domain = $1 AND trustor_name = $2) OR (trustee_domain = $1 AND trustee_name = $2))
             AND ($3 = '' OR (project_domain = $3 AND project_name = $4))
             ORDER BY created_at, id"
        ))
        .bind(ud)
        .bind(un)
        .bind(pd)
        .bind(pn)
        .fetch_all(&mut *self)
        .await
        .map_err(unavailable)?;
        with_roles(self, rows).await
    }

    async fn delete_trust(&mut self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM trusts WHERE id = $1")
            .bind(id)
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() > 0)
    }

    async fn consume_trust_use(&mut self, id: &str) -> Result<bool> {
        // One conditional statement: on PostgreSQL a concurrent mint waits
        // for this row and re-checks `remaining_uses > 0` on the value this
        // transaction commits, so replicas never hand out more uses than
        // there are; a concurrent delete waits until this mint commits.
        let done = sqlx::query(
            "UPDATE trusts SET remaining_uses = CASE WHEN remaining_uses IS NULL THEN NULL ELSE remaining_uses - 1 END
             WHERE id = $1 AND (remaining_uses IS NULL OR remaining_uses > 0)",
        )
        .bind(id)
        .execute(&mut *self)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }
}
