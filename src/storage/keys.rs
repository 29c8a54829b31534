//! API keys: only a hash of the secret is stored.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::DomainError;

/// A key as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub tenant_id: String,
    /// `member`, `service` or `admin`.
    pub kind: String,
    pub member_id: Option<String>,
    pub allowed_cidrs: Vec<IpNet>,
    pub secret_hash: Vec<u8>,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A key to store; the secret itself never reaches storage.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: Uuid,
    pub tenant_id: String,
    pub kind: &'static str,
    pub member_id: Option<String>,
    pub allowed_cidrs: Vec<IpNet>,
    pub secret_hash: [u8; 32],
    pub label: String,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct ApiKeyStore {
    pool: PgPool,
}

impl ApiKeyStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn insert(&self, key: &NewApiKey) -> Result<(), DomainError> {
        sqlx::query(
            "insert into api_keys
                 (id, tenant_id, kind, member_id, allowed_cidrs, secret_hash, label, created_at, expires_at)
             values ($1, $2, $3, $4, $5, $6, $7, now(), $8)",
        )
        .bind(key.id)
        .bind(&key.tenant_id)
        .bind(key.kind)
        .bind(&key.member_id)
        .bind(&key.allowed_cidrs)
        .bind(&key.secret_hash[..])
        .bind(&key.label)
        .bind(key.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(
        name = "db.find_api_key",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub async fn find(&self, id: Uuid) -> Result<Option<ApiKeyRecord>, DomainError> {
        Ok(sqlx::query_as("select * from api_keys where id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Records a use of the key, at most once a minute per key so that busy
    /// keys do not turn every read into a write.
    pub async fn touch(&self, id: Uuid) -> Result<(), DomainError> {
        sqlx::query(
            "update api_keys set last_used_at = now()
             where id = $1 and (last_used_at is null or last_used_at < now() - interval '1 minute')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list(&self, tenant_id: Option<&str>) -> Result<Vec<ApiKeyRecord>, DomainError> {
        Ok(sqlx::query_as(
            "select * from api_keys where $1::text is null or tenant_id = $1
             order by tenant_id, created_at",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Makes a key expire at `at` (or keeps its earlier expiry); returns
    /// false when there is no such key.
    pub async fn expire(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, DomainError> {
        let updated = sqlx::query(
            "update api_keys set expires_at = least(coalesce(expires_at, $2), $2) where id = $1",
        )
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Revokes a key; returns false when there is no such key.
    pub async fn revoke(&self, id: Uuid) -> Result<bool, DomainError> {
        let updated = sqlx::query(
            "update api_keys set revoked_at = coalesce(revoked_at, now()) where id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }
}
