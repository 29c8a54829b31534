//! PostgreSQL: the pool, migrations, and the queries. Knows the domain, not
//! the wire.

mod batch;
mod calls;
mod database;
mod gather;
mod keys;
mod notes;
mod purge;
mod quotas;
mod reads;
mod replicas;
mod retention;
mod rows;
mod search;
mod subjects;
mod transaction;
mod watch;

pub use batch::BatchSettings;
pub(crate) use batch::{InsertOutcome, NewNote};
pub(crate) use calls::{CallScope, Canceller, remaining as deadline_left, share_connections};
pub use database::{APP_ROLE, DatabaseOptions};
pub(crate) use database::{Database, check_server, redact_url};
pub(crate) use gather::BatchObserver;
pub use keys::ApiKeyStore;
pub(crate) use keys::{ApiKeyRecord, NewApiKey};
pub(crate) use notes::NoteStore;
pub(crate) use purge::{PurgeTarget, Purged};
pub(crate) use quotas::{QuotaRow, QuotaStore};
pub(crate) use replicas::ReadRouter;
pub use replicas::ReplicaSettings;
pub use retention::RetentionSettings;
pub(crate) use retention::run as run_retention;
pub(crate) use search::Search;
pub(crate) use subjects::SubjectStore;
pub use watch::WatchSettings;
pub(crate) use watch::{ChangeFeeds, Watch, WatchEvent};

use std::time::Duration;

use sqlx::PgPool;

use self::transaction::Tx;

use crate::domain::{DomainError, TenantId};

/// Begins a transaction that row-level security scopes to `tenant`: every
/// tenant table shows and accepts only that tenant's rows until it ends.
///
/// `BEGIN` and the setting go in one round trip, as one simple query; the
/// tenant id travels hex-encoded, so no character of it is ever SQL. So do
/// the settings of the call the transaction is for: its name and what is
/// left of its deadline (`calls`). A connection whose begin fails is
/// closed, never handed to another call (`transaction`).
pub(crate) async fn begin_for(pool: &PgPool, tenant: &TenantId) -> Result<Tx, DomainError> {
    begin_bounded(pool, tenant, None).await
}

/// [`begin_for`], each statement of the transaction cancelled after
/// `at_most` when that comes before the call's deadline.
pub(crate) async fn begin_bounded(
    pool: &PgPool,
    tenant: &TenantId,
    at_most: Option<Duration>,
) -> Result<Tx, DomainError> {
    let mut sql = begin_statement(tenant);
    calls::push_call_settings(&mut sql, at_most)?;
    Ok(Tx::begin(pool, sql).await?)
}

fn begin_statement(tenant: &TenantId) -> String {
    use std::fmt::Write as _;
    let mut sql =
        String::from("begin; select set_config('notesd.tenant_id', convert_from(decode('");
    for byte in tenant.as_str().bytes() {
        let _ = write!(sql, "{byte:02x}");
    }
    sql.push_str("', 'hex'), 'UTF8'), true)");
    sql
}

/// A database failure is `DatabaseUnavailable` when the database could not
/// be reached or dropped the connection (a retry may succeed), else an
/// internal error; the cause is kept for the log.
impl From<sqlx::Error> for DomainError {
    fn from(err: sqlx::Error) -> Self {
        if is_cancelled(&err) {
            // By the call's deadline; else by someone else (an operator's
            // pg_cancel_backend, or one meant for the call that used the
            // connection before): a retry may succeed.
            return if calls::has_deadline() {
                DomainError::DeadlineExceeded
            } else {
                DomainError::DatabaseUnavailable(
                    anyhow::Error::new(err).context("the statement was cancelled"),
                )
            };
        }
        if is_unavailable(&err) {
            DomainError::DatabaseUnavailable(anyhow::Error::new(err).context("database error"))
        } else {
            DomainError::Internal(anyhow::Error::new(err).context("database error"))
        }
    }
}

/// Whether `err` is a statement cancelled (57014, query_canceled): by a
/// statement timeout, or by `pg_cancel_backend`.
pub(super) fn is_cancelled(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

/// Whether `err` says the database is out of reach rather than that the
/// statement failed: a broken or refused connection, a pool that found no
/// connection in time, or a server shutting down, starting up or out of
/// connection slots (SQLSTATE class 08, 57P01-57P03, 53300).
fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_reaches_sql_only_as_hex() {
        let tenant = TenantId::parse("tenant_id", "o'brien;drop").unwrap();
        let sql = begin_statement(&tenant);
        assert!(sql.contains("decode('6f27627269656e3b64726f70', 'hex')"));
        assert!(!sql.contains("brien"));
    }
}
