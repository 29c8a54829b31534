//! PostgreSQL: the pool, migrations, and the queries. Knows the domain, not
//! the wire.

mod database;
mod keys;
mod notes;
mod rows;
mod subjects;

pub use database::{APP_ROLE, Database, DatabaseOptions};
pub use keys::{ApiKeyRecord, ApiKeyStore, NewApiKey};
pub use notes::{InsertOutcome, NoteStore, Revision};
pub use subjects::SubjectStore;

use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::{DomainError, TenantId};

/// Begins a transaction that row-level security scopes to `tenant`: every
/// tenant table shows and accepts only that tenant's rows until it ends.
pub(crate) async fn begin_for(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Transaction<'static, Postgres>, DomainError> {
    let mut tx = pool.begin().await?;
    sqlx::query("select set_config('notesd.tenant_id', $1, true)")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Every database failure is an internal error to the caller; the cause is
/// kept for the log.
impl From<sqlx::Error> for DomainError {
    fn from(err: sqlx::Error) -> Self {
        DomainError::Internal(anyhow::Error::new(err).context("database error"))
    }
}
