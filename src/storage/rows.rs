//! Rows as stored, kept apart from the domain types, and their conversion.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::body::Body;
use crate::domain::{
    Attachment, ChangeKind, EditPolicy, MemberId, Note, NoteId, Source, Subject, TenantId,
    Visibility,
};

/// A `notes` row. Also the shape of a revision's snapshot (`to_jsonb` of
/// the row), hence `Deserialize`.
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
pub struct NoteRow {
    pub tenant_id: String,
    pub id: Uuid,
    pub subject_type: String,
    pub subject_id: String,
    pub related_subjects: Json<Vec<Subject>>,
    pub owner_id: String,
    pub created_by: String,
    pub updated_by: String,
    pub visibility: i16,
    pub edit_policy: i16,
    pub body_text: String,
    pub body_html: Option<String>,
    pub title: String,
    pub mentions: Vec<String>,
    pub actions: Json<Vec<Map<String, Value>>>,
    pub attachments: Json<Vec<Attachment>>,
    pub pinned: bool,
    pub pinned_at: Option<DateTime<Utc>>,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub draft: bool,
    pub source_system: Option<String>,
    pub source_id: Option<String>,
    pub client_reference: String,
    pub revision: i64,
}

pub fn visibility_code(v: Visibility) -> i16 {
    match v {
        Visibility::Private => 1,
        Visibility::Team => 2,
    }
}

pub fn edit_policy_code(p: EditPolicy) -> i16 {
    match p {
        EditPolicy::OwnerOnly => 1,
        EditPolicy::Team => 2,
    }
}

pub fn change_kind_code(k: ChangeKind) -> i16 {
    match k {
        ChangeKind::Created => 1,
        ChangeKind::Updated => 2,
        ChangeKind::Deleted => 3,
        ChangeKind::Undeleted => 4,
    }
}

pub fn change_kind_from_code(code: i16) -> anyhow::Result<ChangeKind> {
    Ok(match code {
        1 => ChangeKind::Created,
        2 => ChangeKind::Updated,
        3 => ChangeKind::Deleted,
        4 => ChangeKind::Undeleted,
        other => anyhow::bail!("unknown change_kind {other} in the database"),
    })
}

impl TryFrom<NoteRow> for Note {
    type Error = anyhow::Error;

    /// Rows were validated before they were written; a row that no longer
    /// parses is corrupt and an internal error.
    fn try_from(row: NoteRow) -> anyhow::Result<Self> {
        let member = |field: &str, value: &str| {
            MemberId::parse(field, value).map_err(|e| anyhow::anyhow!("stored {field}: {e}"))
        };
        Ok(Note {
            tenant: TenantId::parse("tenant_id", &row.tenant_id)
                .map_err(|e| anyhow::anyhow!("stored tenant_id: {e}"))?,
            id: NoteId(row.id),
            subject: Subject {
                kind: row.subject_type,
                id: row.subject_id,
            },
            related_subjects: row.related_subjects.0,
            owner: member("owner_id", &row.owner_id)?,
            created_by: member("created_by", &row.created_by)?,
            updated_by: member("updated_by", &row.updated_by)?,
            visibility: match row.visibility {
                1 => Visibility::Private,
                2 => Visibility::Team,
                other => anyhow::bail!("unknown visibility {other} in the database"),
            },
            edit_policy: match row.edit_policy {
                1 => EditPolicy::OwnerOnly,
                2 => EditPolicy::Team,
                other => anyhow::bail!("unknown edit_policy {other} in the database"),
            },
            body: Body::from_stored(row.body_text, row.body_html),
            title: row.title,
            mentions: row.mentions,
            actions: row.actions.0,
            attachments: row.attachments.0,
            pinned: row.pinned,
            pinned_at: row.pinned_at,
            occurred_at: row.occurred_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            edited_at: row.edited_at,
            deleted_at: row.deleted_at,
            draft: row.draft,
            source: match (row.source_system, row.source_id) {
                (Some(system), Some(id)) => Some(Source { system, id }),
                _ => None,
            },
            client_reference: row.client_reference,
            revision: row.revision,
        })
    }
}
