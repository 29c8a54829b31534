//! Rows as stored, kept apart from the domain types, and their conversion;
//! the read of notes by id that the read and write batchers share.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use crate::domain::body::Body;
use crate::domain::{
    Attachment, ChangeKind, EditPolicy, MemberId, Note, NoteId, Source, Subject, TenantId,
    Visibility,
};

/// A `notes` row. Also the shape of a revision's snapshot (`to_jsonb` of
/// the row), hence `Deserialize`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct NoteRow {
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

/// The columns a [`NoteRow`] is read from, in the order its [`FromRow`]
/// reads them: every query that yields notes selects exactly this list, so
/// the order never depends on the table's.
macro_rules! note_columns {
    () => {
        "tenant_id, id, subject_type, subject_id, related_subjects,\
         owner_id, created_by, updated_by, visibility, edit_policy,\
         body_text, body_html, title, mentions, actions, attachments,\
         pinned, pinned_at, occurred_at, created_at, updated_at,\
         edited_at, deleted_at, draft, source_system, source_id,\
         client_reference, revision"
    };
}
pub(crate) use note_columns;

/// What a note's row weighs as read, in bytes, for bounding pages: the
/// lengths of its texts (known from a stored value's header, without
/// reading it) and of its JSON as text (small, and stored inline, for all
/// but a hostile note). An estimate of the encoded note, not its exact
/// size: pages are cut again, exactly, as they are encoded.
macro_rules! note_bytes {
    () => {
        "(octet_length(body_text)::int8 + coalesce(octet_length(body_html), 0) \
          + octet_length(title) + octet_length(subject_id) \
          + octet_length(related_subjects::text) + octet_length(actions::text) \
          + octet_length(attachments::text) \
          + octet_length(array_to_string(mentions, '')) + 256)"
    };
}
pub(crate) use note_bytes;

/// The columns that cut a page to what fits a budget of bytes, in the
/// page's own statement. They are computed over the page as fetched: at
/// most one row more than the page size, ordered by `$order`, each with
/// its size as `row_bytes` (for notes, [`note_bytes!`]), so that neither
/// the sizes nor these windows ever cover more than the page (window
/// functions run before a `limit` of their own level). They are each
/// row's running total of bytes (`page_bytes`), its place (`page_place`)
/// and how many rows were fetched (`page_fetched`). The rows kept are
/// those [`push_page_cut`] names; more follow them when fewer were kept
/// than fetched. Only the kept rows are sent, so a page of large notes is
/// never loaded whole.
macro_rules! page_cut_columns {
    ($order:literal) => {
        concat!(
            "sum(row_bytes) over (order by ",
            $order,
            " rows unbounded preceding) as page_bytes, row_number() over (order by ",
            $order,
            ") as page_place, count(*) over () as page_fetched"
        )
    };
}
pub(crate) use page_cut_columns;

/// The condition that keeps the rows of a page of `page_size` cut to
/// `budget_bytes` (see [`page_cut_columns!`]): its first row always, then
/// rows while they fit.
///
/// The numbers are written into the statement, not bound, as is the
/// page's `limit` ([`push_page_limit`]): PostgreSQL plans a statement
/// whose limit is a parameter for any number of rows, finds that generic
/// plan dearer than the one for 101 rows, and so plans every call anew
/// (ListNotes ran at half its rate). They are the server's own numbers,
/// and few (a statement per page size).
pub(crate) fn push_page_cut(
    query: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>,
    page_size: usize,
    budget_bytes: usize,
) {
    query.push(format_args!(
        "page_place <= {page_size} and (page_place = 1 or page_bytes <= {budget_bytes})"
    ));
}

/// ` limit <page_size + 1>`: the page as fetched (see [`push_page_cut`]).
pub(crate) fn push_page_limit(
    query: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>,
    page_size: usize,
) {
    query.push(format_args!(" limit {}", page_size + 1));
}

/// How many columns [`note_columns!`] names.
pub(crate) const NOTE_COLUMN_COUNT: usize = 28;

/// By position, in the order of [`note_columns!`], not by name: a page of
/// notes is thousands of columns, and a lookup by name hashes each one.
/// Unchecked, since the column list and the table's types are fixed here
/// and in the migrations; a mismatch fails every note test, not silently.
impl FromRow<'_, PgRow> for NoteRow {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(Self {
            tenant_id: row.try_get_unchecked(0)?,
            id: row.try_get_unchecked(1)?,
            subject_type: row.try_get_unchecked(2)?,
            subject_id: row.try_get_unchecked(3)?,
            related_subjects: row.try_get_unchecked(4)?,
            owner_id: row.try_get_unchecked(5)?,
            created_by: row.try_get_unchecked(6)?,
            updated_by: row.try_get_unchecked(7)?,
            visibility: row.try_get_unchecked(8)?,
            edit_policy: row.try_get_unchecked(9)?,
            body_text: row.try_get_unchecked(10)?,
            body_html: row.try_get_unchecked(11)?,
            title: row.try_get_unchecked(12)?,
            mentions: row.try_get_unchecked(13)?,
            actions: row.try_get_unchecked(14)?,
            attachments: row.try_get_unchecked(15)?,
            pinned: row.try_get_unchecked(16)?,
            pinned_at: row.try_get_unchecked(17)?,
            occurred_at: row.try_get_unchecked(18)?,
            created_at: row.try_get_unchecked(19)?,
            updated_at: row.try_get_unchecked(20)?,
            edited_at: row.try_get_unchecked(21)?,
            deleted_at: row.try_get_unchecked(22)?,
            draft: row.try_get_unchecked(23)?,
            source_system: row.try_get_unchecked(24)?,
            source_id: row.try_get_unchecked(25)?,
            client_reference: row.try_get_unchecked(26)?,
            revision: row.try_get_unchecked(27)?,
        })
    }
}

pub(super) fn visibility_code(v: Visibility) -> i16 {
    match v {
        Visibility::Private => 1,
        Visibility::Team => 2,
    }
}

pub(super) fn visibility_from_code(code: i16) -> anyhow::Result<Visibility> {
    Ok(match code {
        1 => Visibility::Private,
        2 => Visibility::Team,
        other => anyhow::bail!("unknown visibility {other} in the database"),
    })
}

pub(super) fn edit_policy_code(p: EditPolicy) -> i16 {
    match p {
        EditPolicy::OwnerOnly => 1,
        EditPolicy::Team => 2,
    }
}

pub(super) fn change_kind_code(k: ChangeKind) -> i16 {
    match k {
        ChangeKind::Created => 1,
        ChangeKind::Updated => 2,
        ChangeKind::Deleted => 3,
        ChangeKind::Undeleted => 4,
    }
}

pub(super) fn change_kind_from_code(code: i16) -> anyhow::Result<ChangeKind> {
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

    /// Rows were validated before they were written, so ids are taken as
    /// stored; an unknown code is corrupt data and an internal error.
    fn try_from(row: NoteRow) -> anyhow::Result<Self> {
        Ok(Note {
            tenant: TenantId::from_stored(row.tenant_id),
            id: NoteId(row.id),
            subject: Subject {
                kind: row.subject_type,
                id: row.subject_id,
            },
            related_subjects: row.related_subjects.0,
            owner: MemberId::from_stored(row.owner_id),
            created_by: MemberId::from_stored(row.created_by),
            updated_by: MemberId::from_stored(row.updated_by),
            visibility: visibility_from_code(row.visibility)?,
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

/// The notes of `tenant` with these ids (those that exist), in one round
/// trip: no transaction of its own to begin or commit.
pub(crate) async fn select_notes<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    tenant: &TenantId,
    ids: &[Uuid],
) -> Result<Vec<NoteRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "select ",
        note_columns!(),
        " from notesd_get_notes($1, $2)"
    ))
    .bind(tenant.as_str())
    .bind(ids)
    .fetch_all(executor)
    .await
}
