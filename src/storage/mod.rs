//! PostgreSQL: the pool, migrations, and the queries. Knows the domain, not
//! the wire.

mod database;
mod keys;
mod notes;
mod rows;

pub use database::{Database, DatabaseOptions};
pub use keys::{ApiKeyRecord, ApiKeyStore, NewApiKey};
pub use notes::{InsertOutcome, NoteStore, Revision};

use crate::domain::DomainError;

/// Every database failure is an internal error to the caller; the cause is
/// kept for the log.
impl From<sqlx::Error> for DomainError {
    fn from(err: sqlx::Error) -> Self {
        DomainError::Internal(anyhow::Error::new(err).context("database error"))
    }
}
