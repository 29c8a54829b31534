//! PurgeNotes: `notesd_purge_notes` (see the `search_purge` migration)
//! erases notes with their revisions, events, request ids and numbers in
//! one statement, and records the purge without content.

use chrono::{SubsecRound as _, Utc};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{DomainError, MemberId, NoteId, Subject, TenantId};

/// What to erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PurgeTarget {
    /// Every note about this subject.
    Subject(Subject),
    /// These notes.
    Notes(Vec<NoteId>),
}

/// What a purge erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Purged {
    pub id: Uuid,
    pub notes: i64,
    pub revisions: i64,
}

pub(super) async fn purge(
    pool: &PgPool,
    tenant: &TenantId,
    actor: &MemberId,
    target: &PurgeTarget,
) -> Result<Purged, DomainError> {
    let id = Uuid::now_v7();
    let (subject, digest, ids) = match target {
        PurgeTarget::Subject(subject) => (Some(subject), Some(subject_digest(subject)), None),
        PurgeTarget::Notes(ids) => (
            None,
            None,
            Some(ids.iter().map(|id| id.0).collect::<Vec<Uuid>>()),
        ),
    };
    let (notes, revisions): (i64, i64) = sqlx::query_as(
        "select notes, revisions from notesd_purge_notes($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(actor.as_str())
    .bind(Utc::now().trunc_subsecs(6))
    .bind(subject.map(|s| s.kind.as_str()))
    .bind(subject.map(|s| s.id.as_str()))
    .bind(digest.as_ref().map(|d| &d[..]))
    .bind(ids)
    .fetch_one(pool)
    .await?;
    Ok(Purged {
        id,
        notes,
        revisions,
    })
}

/// The SHA-256 of the subject's type, a zero byte and its id: what the
/// audit record keeps of a purged subject.
fn subject_digest(subject: &Subject) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(subject.kind.as_bytes());
    hasher.update([0]);
    hasher.update(subject.id.as_bytes());
    hasher.finalize().into()
}
