//! Registered service audiences.

use std::future::Future;

use super::{Conn, get_str, one_row, unavailable, write_error};
use crate::error::Result;

/// The service aggregate. (Whether an audience is registered is read by
/// [`super::Grants::mint_facts`], with the rest of what a mint re-checks.)
pub trait Services {
    /// Registers a service audience.
    fn create_service(&mut self, audience: &str, now: i64) -> impl Future<Output = Result<()>> + Send;
    /// Removes a service audience.
    fn delete_service(&mut self, audience: &str) -> impl Future<Output = Result<()>> + Send;
    /// All service audiences.
    fn list_services(&mut self) -> impl Future<Output = Result<Vec<String>>> + Send;
}

impl Services for Conn {
    async fn create_service(&mut self, audience: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO services (audience, created_at) VALUES ($1, $2)")
            .bind(audience)
            .bind(now)
            .execute(&mut *self)
            .await
            .map_err(|e| write_error(e, &format!("service {audience}")))?;
        Ok(())
    }

    async fn delete_service(&mut self, audience: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM services WHERE audience = $1")
            .bind(audience)
            .execute(&mut *self)
            .await
            .map_err(unavailable)?;
        one_row(done.rows_affected(), &format!("service {audience}"))
    }

    async fn list_services(&mut self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT audience FROM services ORDER BY audience")
            .fetch_all(&mut *self)
            .await
            .map_err(unavailable)?;
        rows.iter().map(|r| get_str(r, "audience")).collect()
    }
}
