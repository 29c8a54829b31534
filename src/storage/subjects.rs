//! The subject registry.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::begin_for;
use crate::domain::{DomainError, MemberId, Subject, SubjectRegistration, TenantId};

#[derive(Debug, sqlx::FromRow)]
struct SubjectRow {
    subject_type: String,
    subject_id: String,
    owner_id: String,
    owner_only_notes: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<SubjectRow> for SubjectRegistration {
    fn from(row: SubjectRow) -> Self {
        Self {
            subject: Subject {
                kind: row.subject_type,
                id: row.subject_id,
            },
            owner: MemberId::from_stored(row.owner_id),
            owner_only_notes: row.owner_only_notes,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A subject's registration, read in the caller's transaction.
pub(crate) async fn fetch_registration(
    conn: &mut PgConnection,
    tenant: &TenantId,
    subject: &Subject,
) -> Result<Option<SubjectRegistration>, DomainError> {
    let row: Option<SubjectRow> = sqlx::query_as(
        "select * from subjects where tenant_id = $1 and subject_type = $2 and subject_id = $3",
    )
    .bind(tenant.as_str())
    .bind(&subject.kind)
    .bind(&subject.id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(SubjectRegistration::from))
}

#[derive(Debug, Clone)]
pub(crate) struct SubjectStore {
    pool: PgPool,
}

impl SubjectStore {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    #[tracing::instrument(
        name = "db.get_subject",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn get(
        &self,
        tenant: &TenantId,
        subject: &Subject,
    ) -> Result<Option<SubjectRegistration>, DomainError> {
        let mut tx = begin_for(&self.pool, tenant).await?;
        let registration = fetch_registration(&mut tx, tenant, subject).await?;
        tx.commit().await?;
        Ok(registration)
    }

    /// Whether another tenant has registered `subject` (yes or no only;
    /// see the `notesd_subject_registered_elsewhere` migration).
    #[tracing::instrument(
        name = "db.subject_registered_elsewhere",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn registered_elsewhere(
        &self,
        tenant: &TenantId,
        subject: &Subject,
    ) -> Result<bool, DomainError> {
        let mut tx = begin_for(&self.pool, tenant).await?;
        let elsewhere: bool =
            sqlx::query_scalar("select notesd_subject_registered_elsewhere($1, $2, $3)")
                .bind(tenant.as_str())
                .bind(&subject.kind)
                .bind(&subject.id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(elsewhere)
    }

    /// Creates or replaces a registration, in one transaction with the
    /// current one locked; `decide` sees the current registration (if any)
    /// and may refuse the change.
    #[tracing::instrument(
        name = "db.upsert_subject",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn upsert<F>(
        &self,
        tenant: &TenantId,
        subject: &Subject,
        owner: &MemberId,
        owner_only_notes: bool,
        now: DateTime<Utc>,
        decide: F,
    ) -> Result<SubjectRegistration, DomainError>
    where
        F: FnOnce(Option<&SubjectRegistration>) -> Result<(), DomainError>,
    {
        let mut tx = begin_for(&self.pool, tenant).await?;
        let current: Option<SubjectRow> = sqlx::query_as(
            "select * from subjects
             where tenant_id = $1 and subject_type = $2 and subject_id = $3
             for update",
        )
        .bind(tenant.as_str())
        .bind(&subject.kind)
        .bind(&subject.id)
        .fetch_optional(&mut *tx)
        .await?;
        let current = current.map(SubjectRegistration::from);
        decide(current.as_ref())?;
        let row: SubjectRow = sqlx::query_as(
            "insert into subjects
                 (tenant_id, subject_type, subject_id, owner_id, owner_only_notes, created_at, updated_at)
             values ($1, $2, $3, $4, $5, $6, $6)
             on conflict (tenant_id, subject_type, subject_id) do update set
                 owner_id = excluded.owner_id,
                 owner_only_notes = excluded.owner_only_notes,
                 updated_at = excluded.updated_at
             returning *",
        )
        .bind(tenant.as_str())
        .bind(&subject.kind)
        .bind(&subject.id)
        .bind(owner.as_str())
        .bind(owner_only_notes)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SubjectRegistration::from(row))
    }
}
