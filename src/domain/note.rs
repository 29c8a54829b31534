//! The note and the values it is made of.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::body::Body;
use super::{DomainError, MemberId, TenantId};

/// Collections on a note (related subjects, mentions, actions, attachments)
/// hold at most this many items.
pub(crate) const MAX_LIST_ITEMS: usize = 100;

/// Server-assigned, time-ordered note id (UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NoteId(pub Uuid);

impl NoteId {
    pub(crate) fn parse(field: &str, value: &str) -> Result<Self, DomainError> {
        if value.is_empty() {
            return Err(DomainError::missing(field));
        }
        Uuid::try_parse(value)
            .map(Self)
            .map_err(|_| DomainError::invalid(field, format!("{field} is not a valid note id")))
    }
}

impl std::fmt::Display for NoteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visibility {
    Private,
    Team,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EditPolicy {
    OwnerOnly,
    Team,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Created,
    Updated,
    Deleted,
    Undeleted,
}

/// Checks a free-text field: at most `max_chars` characters, no NUL.
pub(crate) fn parse_text(
    field: &str,
    value: &str,
    max_chars: usize,
) -> Result<String, DomainError> {
    if value.contains('\0') {
        return Err(DomainError::invalid(
            field,
            format!("{field} must not contain NUL characters"),
        ));
    }
    if value.chars().count() > max_chars {
        return Err(DomainError::too_large(
            field,
            format!("{field} is longer than {max_chars} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// Checks the length of a repeated field.
pub(crate) fn check_list_len<T>(field: &str, items: &[T]) -> Result<(), DomainError> {
    if items.len() > MAX_LIST_ITEMS {
        return Err(DomainError::too_large(
            field,
            format!("{field} holds more than {MAX_LIST_ITEMS} items"),
        ));
    }
    Ok(())
}

/// What a note is about: a type of record and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) struct Subject {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl Subject {
    /// `kind` matches `[a-z][a-z0-9_.-]{0,63}`; `id` is 1 to 256 characters.
    pub(crate) fn parse(field: &str, kind: &str, id: &str) -> Result<Self, DomainError> {
        Self::parse_kind(&format!("{field}.type"), kind)?;
        let id_field = format!("{field}.id");
        if id.is_empty() {
            return Err(DomainError::missing(&id_field));
        }
        let id = parse_text(&id_field, id, 256)?;
        Ok(Self {
            kind: kind.to_owned(),
            id,
        })
    }

    /// A subject type alone (`field` names it): `[a-z][a-z0-9_.-]{0,63}`.
    pub(crate) fn parse_kind(field: &str, kind: &str) -> Result<String, DomainError> {
        if kind.is_empty() {
            return Err(DomainError::missing(field));
        }
        let mut chars = kind.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
            && kind.len() <= 64;
        if !well_formed {
            return Err(DomainError::invalid(
                field,
                format!("{field} must match [a-z][a-z0-9_.-]{{0,63}}"),
            ));
        }
        Ok(kind.to_owned())
    }
}

/// Metadata of an attached file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Attachment {
    pub url: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    #[serde(default)]
    pub thumbnail_url: String,
}

fn parse_https_url(field: &str, value: &str) -> Result<String, DomainError> {
    let value = parse_text(field, value, 2048)?;
    let rest = value.strip_prefix("https://").ok_or_else(|| {
        DomainError::invalid(field, format!("{field} must be an absolute https URL"))
    })?;
    if rest.is_empty() || rest.starts_with('/') || rest.chars().any(char::is_whitespace) {
        return Err(DomainError::invalid(
            field,
            format!("{field} must be an absolute https URL"),
        ));
    }
    Ok(value)
}

impl Attachment {
    pub(crate) fn parse(
        field: &str,
        url: &str,
        filename: &str,
        content_type: &str,
        size_bytes: i64,
        thumbnail_url: &str,
    ) -> Result<Self, DomainError> {
        let url_field = format!("{field}.url");
        if url.is_empty() {
            return Err(DomainError::missing(&url_field));
        }
        if size_bytes < 0 {
            let f = format!("{field}.size_bytes");
            return Err(DomainError::invalid(
                &f,
                format!("{f} must not be negative"),
            ));
        }
        let thumbnail_url = if thumbnail_url.is_empty() {
            String::new()
        } else {
            parse_https_url(&format!("{field}.thumbnail_url"), thumbnail_url)?
        };
        Ok(Self {
            url: parse_https_url(&url_field, url)?,
            filename: parse_text(&format!("{field}.filename"), filename, 255)?,
            content_type: parse_text(&format!("{field}.content_type"), content_type, 255)?,
            size_bytes,
            thumbnail_url,
        })
    }
}

/// The system a note came from and its id there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub system: String,
    pub id: String,
}

impl Source {
    pub(crate) fn parse(field: &str, system: &str, id: &str) -> Result<Self, DomainError> {
        let system_field = format!("{field}.system");
        if system.is_empty() {
            return Err(DomainError::missing(&system_field));
        }
        let id_field = format!("{field}.id");
        if id.is_empty() {
            return Err(DomainError::missing(&id_field));
        }
        Ok(Self {
            system: parse_text(&system_field, system, 64)?,
            id: parse_text(&id_field, id, 256)?,
        })
    }
}

/// A mention: a member id, or `everyone`.
pub(crate) fn parse_mentions(field: &str, mentions: &[String]) -> Result<Vec<String>, DomainError> {
    check_list_len(field, mentions)?;
    mentions
        .iter()
        .enumerate()
        .map(|(i, m)| MemberId::parse(&format!("{field}[{i}]"), m).map(|m| m.as_str().to_owned()))
        .collect()
}

/// Actions are opaque JSON objects kept and echoed.
pub(crate) type Action = Map<String, Value>;

/// A rough size in memory of a JSON value: its strings and keys, and a
/// fixed cost for each value.
fn json_bytes(value: &Value) -> usize {
    32 + match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(json_bytes).sum(),
        Value::Object(map) => object_bytes(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

fn object_bytes(map: &Map<String, Value>) -> usize {
    map.iter()
        .map(|(key, value)| key.len() + json_bytes(value))
        .sum()
}

/// A stored note.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Note {
    pub tenant: TenantId,
    pub id: NoteId,
    pub subject: Subject,
    pub related_subjects: Vec<Subject>,
    pub owner: MemberId,
    pub created_by: MemberId,
    pub updated_by: MemberId,
    pub visibility: Visibility,
    pub edit_policy: EditPolicy,
    pub body: Body,
    pub title: String,
    pub mentions: Vec<String>,
    pub actions: Vec<Action>,
    pub attachments: Vec<Attachment>,
    pub pinned: bool,
    pub pinned_at: Option<DateTime<Utc>>,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub draft: bool,
    pub source: Option<Source>,
    pub client_reference: String,
    pub revision: i64,
}

impl Note {
    /// A rough size in memory: its texts, subjects, mentions, actions and
    /// attachments, and a fixed cost for the rest.
    pub(crate) fn approximate_bytes(&self) -> usize {
        256 + self.body.text().len()
            + self.body.html().map_or(0, str::len)
            + self.title.len()
            + self.subject.kind.len()
            + self.subject.id.len()
            + self
                .related_subjects
                .iter()
                .map(|s| s.kind.len() + s.id.len() + 16)
                .sum::<usize>()
            + self.mentions.iter().map(|m| m.len() + 16).sum::<usize>()
            + self.actions.iter().map(object_bytes).sum::<usize>()
            + self
                .attachments
                .iter()
                .map(|a| {
                    a.url.len()
                        + a.filename.len()
                        + a.content_type.len()
                        + a.thumbnail_url.len()
                        + 64
                })
                .sum::<usize>()
    }

    /// The opaque etag of this state of the note: it changes on every write.
    pub(crate) fn etag(&self) -> String {
        self.revision.to_string()
    }

    /// This note's place in newest-first list order.
    pub(crate) fn cursor(&self) -> super::list::NoteCursor {
        super::list::NoteCursor {
            occurred_at: self.occurred_at,
            id: self.id,
        }
    }
}

/// The caller-supplied content of a new note, parsed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NoteDraft {
    pub subject: Subject,
    pub related_subjects: Vec<Subject>,
    pub owner: Option<MemberId>,
    pub visibility: Visibility,
    pub edit_policy: EditPolicy,
    pub body: Body,
    pub title: String,
    pub mentions: Vec<String>,
    pub actions: Vec<Action>,
    pub attachments: Vec<Attachment>,
    pub pinned: bool,
    pub occurred_at: Option<DateTime<Utc>>,
    pub draft: bool,
    pub source: Option<Source>,
    pub client_reference: String,
}

/// A client-chosen id that makes AddNote retries safe, with a fingerprint
/// of the request it was first used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestKey {
    pub id: Uuid,
    pub fingerprint: [u8; 32],
}

/// The field values an update sets; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct NotePatch {
    pub subject: Option<Subject>,
    pub related_subjects: Option<Vec<Subject>>,
    pub owner: Option<MemberId>,
    pub visibility: Option<Visibility>,
    pub edit_policy: Option<EditPolicy>,
    pub body: Option<Body>,
    pub title: Option<String>,
    pub mentions: Option<Vec<String>>,
    pub actions: Option<Vec<Action>>,
    pub attachments: Option<Vec<Attachment>>,
    pub pinned: Option<bool>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub draft: Option<bool>,
    pub client_reference: Option<String>,
}

impl NotePatch {
    /// Whether the patch changes fields only the owner may change: owner,
    /// visibility, edit policy and draft state. Setting one to the value it
    /// already has is no change.
    pub(crate) fn changes_owner_fields(&self, note: &Note) -> bool {
        self.owner.as_ref().is_some_and(|v| *v != note.owner)
            || self.visibility.is_some_and(|v| v != note.visibility)
            || self.edit_policy.is_some_and(|v| v != note.edit_policy)
            || self.draft.is_some_and(|v| v != note.draft)
    }

    /// Applies the patch at `now` by `actor`. Returns whether anything
    /// changed. A change of content (body, title, mentions, actions,
    /// attachments) sets the edit time; pinning sets the pin time.
    pub(crate) fn apply(self, note: &mut Note, actor: &MemberId, now: DateTime<Utc>) -> bool {
        let before = note.clone();
        let mut content_changed = false;
        macro_rules! set {
            ($field:ident) => {
                if let Some(v) = self.$field {
                    note.$field = v;
                }
            };
            ($field:ident, content) => {
                if let Some(v) = self.$field {
                    content_changed |= note.$field != v;
                    note.$field = v;
                }
            };
        }
        set!(subject);
        set!(related_subjects);
        set!(owner);
        set!(visibility);
        set!(edit_policy);
        set!(body, content);
        set!(title, content);
        set!(mentions, content);
        set!(actions, content);
        set!(attachments, content);
        set!(occurred_at);
        set!(draft);
        set!(client_reference);
        if let Some(pinned) = self.pinned
            && pinned != note.pinned
        {
            note.pinned = pinned;
            note.pinned_at = pinned.then_some(now);
        }
        if *note == before {
            return false;
        }
        if content_changed {
            note.edited_at = Some(now);
        }
        note.updated_by = actor.clone();
        note.updated_at = now;
        note.revision += 1;
        true
    }
}

/// One recorded state of a note: the note as it was after a change.
#[derive(Debug, Clone)]
pub(crate) struct Revision {
    pub revision: i64,
    pub change_kind: ChangeKind,
    pub actor: MemberId,
    pub changed_at: DateTime<Utc>,
    pub note: Note,
}
