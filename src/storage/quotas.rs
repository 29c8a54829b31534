//! Quota overrides (`quota_overrides`): read by the server, written by
//! `notesd quotas`.

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::quota::Override;
use crate::domain::{DomainError, TenantId};

/// One stored override: a tenant's own (`key: None`) or one key's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuotaRow {
    pub(crate) tenant: TenantId,
    pub(crate) key: Option<Uuid>,
    pub(crate) limits: Override,
}

#[derive(sqlx::FromRow)]
struct Stored {
    tenant_id: String,
    key_id: Option<Uuid>,
    rate: Option<i32>,
    burst: Option<i32>,
    calls: Option<i32>,
    watchers: Option<i32>,
    connections: Option<i32>,
}

impl From<Stored> for QuotaRow {
    fn from(row: Stored) -> Self {
        // The table's checks keep every value at 0 or more.
        let limit = |value: Option<i32>| value.map(|v| u32::try_from(v).unwrap_or(0));
        Self {
            tenant: TenantId::from_stored(row.tenant_id),
            key: row.key_id,
            limits: Override {
                rate: limit(row.rate),
                burst: limit(row.burst),
                calls: limit(row.calls),
                watchers: limit(row.watchers),
                connections: limit(row.connections),
            },
        }
    }
}

/// Why an override cannot be stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QuotaStoreError {
    #[error("no key {0} of this tenant")]
    NoSuchKey(Uuid),
    #[error("{0} is more than 2147483647")]
    TooLarge(u32),
    #[error(transparent)]
    Database(#[from] DomainError),
}

#[derive(Debug, Clone)]
pub(crate) struct QuotaStore {
    pool: PgPool,
}

impl QuotaStore {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Every override (the server holds them all: operators write them,
    /// one per tenant or key that needs one).
    pub(crate) async fn all(&self) -> Result<Vec<QuotaRow>, DomainError> {
        self.list(None).await
    }

    /// The overrides of `tenant`, or of every tenant; tenants in order,
    /// each tenant's own first.
    pub(crate) async fn list(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<QuotaRow>, DomainError> {
        let rows: Vec<Stored> = sqlx::query_as(
            "select tenant_id, key_id, rate, burst, calls, watchers, connections
             from quota_overrides where $1::text is null or tenant_id = $1
             order by tenant_id, key_id nulls first",
        )
        .bind(tenant.map(TenantId::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(DomainError::from)?;
        Ok(rows.into_iter().map(QuotaRow::from).collect())
    }

    /// Stores `row`, replacing the override of its scope. A key must be
    /// one of the tenant's.
    pub(crate) async fn put(&self, row: &QuotaRow) -> Result<(), QuotaStoreError> {
        let value = |limit: Option<u32>| {
            limit
                .map(|v| i32::try_from(v).map_err(|_| QuotaStoreError::TooLarge(v)))
                .transpose()
        };
        let limits = &row.limits;
        let written = sqlx::query(
            "insert into quota_overrides
                 (tenant_id, key_id, rate, burst, calls, watchers, connections)
             select $1, $2, $3, $4, $5, $6, $7
             where $2::uuid is null
                or exists (select 1 from api_keys where id = $2 and tenant_id = $1)
             on conflict (tenant_id, coalesce(key_id, '00000000-0000-0000-0000-000000000000'::uuid))
             do update set rate = excluded.rate, burst = excluded.burst,
                 calls = excluded.calls, watchers = excluded.watchers,
                 connections = excluded.connections",
        )
        .bind(row.tenant.as_str())
        .bind(row.key)
        .bind(value(limits.rate)?)
        .bind(value(limits.burst)?)
        .bind(value(limits.calls)?)
        .bind(value(limits.watchers)?)
        .bind(value(limits.connections)?)
        .execute(&self.pool)
        .await
        .map_err(DomainError::from)?
        .rows_affected();
        match (written, row.key) {
            (0, Some(key)) => Err(QuotaStoreError::NoSuchKey(key)),
            _ => Ok(()),
        }
    }

    /// Drops the override of a scope; false when it had none.
    pub(crate) async fn remove(
        &self,
        tenant: &TenantId,
        key: Option<Uuid>,
    ) -> Result<bool, DomainError> {
        let removed = sqlx::query(
            "delete from quota_overrides
             where tenant_id = $1 and key_id is not distinct from $2",
        )
        .bind(tenant.as_str())
        .bind(key)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(removed > 0)
    }
}
