//! Proto <-> domain. Requests are parsed here into domain values (every
//! error names its field path in the request); domain values are turned
//! into proto messages.

use chrono::{DateTime, Utc};
use prost::Message as _;
use prost_types::{Struct, Timestamp, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::domain::body::Body;
use crate::domain::list::{NoteFilter, TimeRange};
use crate::domain::time;
use crate::domain::watch::WatchFilter;
use crate::domain::{
    Action, Attachment, ChangeKind, DomainError, EditPolicy, MemberId, Note, NoteDraft, NoteId,
    NotePatch, Principal, RequestKey, Revision, Source, Subject, Visibility, check_list_len,
    parse_mentions, parse_text,
};
use crate::proto::notes::v1 as pb;

pub(crate) fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The instant a timestamp names, if it names one a note may hold
/// (nanoseconds in range, seconds within years 1 to 9999: `domain::time`).
pub(crate) fn instant(t: &Timestamp) -> Option<DateTime<Utc>> {
    u32::try_from(t.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .filter(|t| time::in_range(*t))
}

fn parse_timestamp(field: &str, t: &Timestamp) -> Result<DateTime<Utc>, DomainError> {
    instant(t).ok_or_else(|| {
        DomainError::invalid(
            field,
            format!("{field} must be a valid timestamp {}", time::RANGE),
        )
    })
}

pub(crate) fn parse_subject(
    field: &str,
    subject: Option<&pb::Subject>,
) -> Result<Subject, DomainError> {
    let subject = subject.ok_or_else(|| DomainError::missing(field))?;
    Subject::parse(field, &subject.r#type, &subject.id)
}

fn parse_related(field: &str, subjects: &[pb::Subject]) -> Result<Vec<Subject>, DomainError> {
    check_list_len(field, subjects)?;
    subjects
        .iter()
        .enumerate()
        .map(|(i, s)| Subject::parse(&format!("{field}[{i}]"), &s.r#type, &s.id))
        .collect()
}

fn parse_visibility(field: &str, value: i32) -> Result<Option<Visibility>, DomainError> {
    match pb::Visibility::try_from(value) {
        Ok(pb::Visibility::Unspecified) => Ok(None),
        Ok(pb::Visibility::Private) => Ok(Some(Visibility::Private)),
        Ok(pb::Visibility::Team) => Ok(Some(Visibility::Team)),
        Err(_) => Err(DomainError::invalid(
            field,
            format!("{field} must be VISIBILITY_PRIVATE or VISIBILITY_TEAM"),
        )),
    }
}

fn parse_edit_policy(field: &str, value: i32) -> Result<Option<EditPolicy>, DomainError> {
    match pb::EditPolicy::try_from(value) {
        Ok(pb::EditPolicy::Unspecified) => Ok(None),
        Ok(pb::EditPolicy::OwnerOnly) => Ok(Some(EditPolicy::OwnerOnly)),
        Ok(pb::EditPolicy::Team) => Ok(Some(EditPolicy::Team)),
        Err(_) => Err(DomainError::invalid(
            field,
            format!("{field} must be EDIT_POLICY_OWNER_ONLY or EDIT_POLICY_TEAM"),
        )),
    }
}

fn parse_body(field: &str, body: Option<&pb::NoteBody>) -> Result<Body, DomainError> {
    let body = body.ok_or_else(|| DomainError::missing(field))?;
    Body::parse(field, &body.text, &body.html)
}

fn parse_attachments(
    field: &str,
    attachments: &[pb::Attachment],
) -> Result<Vec<Attachment>, DomainError> {
    check_list_len(field, attachments)?;
    attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Attachment::parse(
                &format!("{field}[{i}]"),
                &a.url,
                &a.filename,
                &a.content_type,
                a.size_bytes,
                &a.thumbnail_url,
            )
        })
        .collect()
}

fn parse_actions(field: &str, actions: &[Struct]) -> Result<Vec<Action>, DomainError> {
    check_list_len(field, actions)?;
    actions
        .iter()
        .enumerate()
        .map(|(i, action)| struct_to_json(&format!("{field}[{i}]"), action))
        .collect()
}

pub(crate) fn parse_owner(field: &str, owner: &str) -> Result<Option<MemberId>, DomainError> {
    if owner.is_empty() {
        return Ok(None);
    }
    MemberId::parse(field, owner).map(Some)
}

pub(crate) fn parse_note_id(field: &str, id: &str) -> Result<NoteId, DomainError> {
    NoteId::parse(field, id)
}

/// The parsed AddNote request: the note to create and its request key.
/// The request key's fingerprint covers the whole request (without its
/// request id) and the caller, so a retry by someone else, or with other
/// content, is a different request.
pub(crate) fn parse_add_request(
    principal: &Principal,
    request: &pb::AddNoteRequest,
) -> Result<(NoteDraft, Option<RequestKey>), DomainError> {
    let request_key = if request.request_id.is_empty() {
        None
    } else {
        let id = Uuid::try_parse(&request.request_id).map_err(|_| {
            DomainError::invalid("request_id", "request_id must be a UUID".to_owned())
        })?;
        let mut content = request.clone();
        content.request_id.clear();
        let mut hasher = Sha256::new();
        hasher.update(principal.member.as_str().as_bytes());
        hasher.update([0]);
        hasher.update(content.encode_to_vec());
        Some(RequestKey {
            id,
            fingerprint: hasher.finalize().into(),
        })
    };
    let note = request
        .note
        .as_ref()
        .ok_or_else(|| DomainError::missing("note"))?;
    let draft = NoteDraft {
        subject: parse_subject("note.subject", note.subject.as_ref())?,
        related_subjects: parse_related("note.related_subjects", &note.related_subjects)?,
        owner: parse_owner("note.owner_id", &note.owner_id)?,
        visibility: parse_visibility("note.visibility", note.visibility)?
            .unwrap_or(Visibility::Team),
        edit_policy: parse_edit_policy("note.edit_policy", note.edit_policy)?
            .unwrap_or(EditPolicy::OwnerOnly),
        body: parse_body("note.body", note.body.as_ref())?,
        title: parse_text("note.title", &note.title, 1024)?,
        mentions: parse_mentions("note.mentions", &note.mentions)?,
        actions: parse_actions("note.actions", &note.actions)?,
        attachments: parse_attachments("note.attachments", &note.attachments)?,
        pinned: note.pinned,
        occurred_at: note
            .occur_time
            .as_ref()
            .map(|t| parse_timestamp("note.occur_time", t))
            .transpose()?,
        draft: note.draft,
        source: note
            .source
            .as_ref()
            .map(|s| Source::parse("note.source", &s.system, &s.id))
            .transpose()?,
        client_reference: parse_text("note.client_reference", &note.client_reference, 256)?,
    };
    Ok((draft, request_key))
}

/// A field of a note that UpdateNote may change: the paths of an update
/// mask, typed. Every edge builds its masks from these, and the API parses
/// a mask into them, so a path is spelt in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoteField {
    Subject,
    RelatedSubjects,
    OwnerId,
    Visibility,
    EditPolicy,
    Body,
    Title,
    Mentions,
    Actions,
    Attachments,
    Pinned,
    OccurTime,
    Draft,
    ClientReference,
}

impl NoteField {
    /// Every updatable field, in the order of `*` and of AIP-134's implied
    /// mask.
    pub(crate) const ALL: [Self; 14] = [
        Self::Subject,
        Self::RelatedSubjects,
        Self::OwnerId,
        Self::Visibility,
        Self::EditPolicy,
        Self::Body,
        Self::Title,
        Self::Mentions,
        Self::Actions,
        Self::Attachments,
        Self::Pinned,
        Self::OccurTime,
        Self::Draft,
        Self::ClientReference,
    ];

    /// The field's path in an update mask.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Subject => "subject",
            Self::RelatedSubjects => "related_subjects",
            Self::OwnerId => "owner_id",
            Self::Visibility => "visibility",
            Self::EditPolicy => "edit_policy",
            Self::Body => "body",
            Self::Title => "title",
            Self::Mentions => "mentions",
            Self::Actions => "actions",
            Self::Attachments => "attachments",
            Self::Pinned => "pinned",
            Self::OccurTime => "occur_time",
            Self::Draft => "draft",
            Self::ClientReference => "client_reference",
        }
    }

    fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| field.path() == path)
    }
}

/// The UpdateNote request that changes `fields` of the note `changes`
/// names by its id, to the values `changes` holds.
pub(crate) fn update_of(changes: pb::Note, fields: &[NoteField]) -> pb::UpdateNoteRequest {
    pb::UpdateNoteRequest {
        note: Some(changes),
        update_mask: Some(prost_types::FieldMask {
            paths: fields.iter().map(|f| f.path().to_owned()).collect(),
        }),
    }
}

/// The parsed UpdateNote request: which note, the patch, and the etag.
pub(crate) fn parse_update_request(
    request: &pb::UpdateNoteRequest,
) -> Result<(NoteId, NotePatch, Option<String>), DomainError> {
    let note = request
        .note
        .as_ref()
        .ok_or_else(|| DomainError::missing("note"))?;
    let id = parse_note_id("note.id", &note.id)?;
    let fields: Vec<NoteField> = match &request.update_mask {
        Some(mask) if !mask.paths.is_empty() => {
            if mask.paths.iter().any(|p| p == "*") {
                NoteField::ALL.to_vec()
            } else {
                mask.paths
                    .iter()
                    .map(|path| {
                        NoteField::from_path(path).ok_or_else(|| {
                            let updatable: Vec<&str> =
                                NoteField::ALL.iter().map(|f| f.path()).collect();
                            DomainError::invalid(
                                "update_mask",
                                format!(
                                    "update_mask names `{path}`, which cannot be updated; \
                                     updatable: {}",
                                    updatable.join(", ")
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        }
        _ => implied_mask(note),
    };
    let mut patch = NotePatch::default();
    for note_field in fields {
        let field = format!("note.{}", note_field.path());
        let field = field.as_str();
        match note_field {
            NoteField::Subject => {
                patch.subject = Some(parse_subject(field, note.subject.as_ref())?)
            }
            NoteField::RelatedSubjects => {
                patch.related_subjects = Some(parse_related(field, &note.related_subjects)?)
            }
            NoteField::OwnerId => {
                patch.owner = Some(
                    parse_owner(field, &note.owner_id)?
                        .ok_or_else(|| DomainError::missing(field))?,
                )
            }
            NoteField::Visibility => {
                patch.visibility =
                    Some(parse_visibility(field, note.visibility)?.ok_or_else(|| {
                        DomainError::invalid(field, format!("{field} must be set"))
                    })?)
            }
            NoteField::EditPolicy => {
                patch.edit_policy =
                    Some(parse_edit_policy(field, note.edit_policy)?.ok_or_else(|| {
                        DomainError::invalid(field, format!("{field} must be set"))
                    })?)
            }
            NoteField::Body => patch.body = Some(parse_body(field, note.body.as_ref())?),
            NoteField::Title => patch.title = Some(parse_text(field, &note.title, 1024)?),
            NoteField::Mentions => patch.mentions = Some(parse_mentions(field, &note.mentions)?),
            NoteField::Actions => patch.actions = Some(parse_actions(field, &note.actions)?),
            NoteField::Attachments => {
                patch.attachments = Some(parse_attachments(field, &note.attachments)?)
            }
            NoteField::Pinned => patch.pinned = Some(note.pinned),
            NoteField::OccurTime => {
                let t = note
                    .occur_time
                    .as_ref()
                    .ok_or_else(|| DomainError::missing(field))?;
                patch.occurred_at = Some(parse_timestamp(field, t)?)
            }
            NoteField::Draft => patch.draft = Some(note.draft),
            NoteField::ClientReference => {
                patch.client_reference = Some(parse_text(field, &note.client_reference, 256)?)
            }
        }
    }
    let etag = (!note.etag.is_empty()).then(|| note.etag.clone());
    Ok((id, patch, etag))
}

/// AIP-134: without a mask, every field set to a non-default value.
fn implied_mask(note: &pb::Note) -> Vec<NoteField> {
    let set = [
        note.subject.is_some(),
        !note.related_subjects.is_empty(),
        !note.owner_id.is_empty(),
        note.visibility != 0,
        note.edit_policy != 0,
        note.body.is_some(),
        !note.title.is_empty(),
        !note.mentions.is_empty(),
        !note.actions.is_empty(),
        !note.attachments.is_empty(),
        note.pinned,
        note.occur_time.is_some(),
        note.draft,
        !note.client_reference.is_empty(),
    ];
    NoteField::ALL
        .into_iter()
        .zip(set)
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
}

fn parse_range(field: &str, range: Option<&pb::TimeRange>) -> Result<TimeRange, DomainError> {
    let Some(range) = range else {
        return Ok(TimeRange::default());
    };
    let start = range
        .start_time
        .as_ref()
        .map(|t| parse_timestamp(&format!("{field}.start_time"), t))
        .transpose()?;
    let end = range
        .end_time
        .as_ref()
        .map(|t| parse_timestamp(&format!("{field}.end_time"), t))
        .transpose()?;
    TimeRange::parse(field, start, end)
}

pub(crate) fn parse_list_filter(request: &pb::ListNotesRequest) -> Result<NoteFilter, DomainError> {
    parse_note_filter(FilterFields {
        subject: request.subject.as_ref(),
        subject_type: &request.subject_type,
        related_subject: request.related_subject.as_ref(),
        owner_id: &request.owner_id,
        pinned: request.pinned,
        occur_time_range: request.occur_time_range.as_ref(),
        create_time_range: request.create_time_range.as_ref(),
        show_deleted: request.show_deleted,
    })
}

/// The filter fields of ListNotes, which SearchNotes carries too, under the
/// same names.
pub(crate) struct FilterFields<'a> {
    pub subject: Option<&'a pb::Subject>,
    pub subject_type: &'a str,
    pub related_subject: Option<&'a pb::Subject>,
    pub owner_id: &'a str,
    pub pinned: Option<bool>,
    pub occur_time_range: Option<&'a pb::TimeRange>,
    pub create_time_range: Option<&'a pb::TimeRange>,
    pub show_deleted: bool,
}

pub(crate) fn parse_note_filter(fields: FilterFields<'_>) -> Result<NoteFilter, DomainError> {
    let WatchFilter {
        subject,
        subject_type,
        related_subject,
        owner,
    } = parse_scope_filter(
        fields.subject,
        fields.subject_type,
        fields.related_subject,
        fields.owner_id,
    )?;
    Ok(NoteFilter {
        subject,
        subject_type,
        related_subject,
        about: None,
        owner,
        pinned: fields.pinned,
        occurred: parse_range("occur_time_range", fields.occur_time_range)?,
        created: parse_range("create_time_range", fields.create_time_range)?,
        show_deleted: fields.show_deleted,
    })
}

/// The filters ListNotes and WatchNotes share (the fields of the same names
/// in both requests): what a note is about and who owns it.
pub(crate) fn parse_scope_filter(
    subject: Option<&pb::Subject>,
    subject_type: &str,
    related_subject: Option<&pb::Subject>,
    owner_id: &str,
) -> Result<WatchFilter, DomainError> {
    Ok(WatchFilter {
        subject: subject
            .map(|s| parse_subject("subject", Some(s)))
            .transpose()?,
        subject_type: (!subject_type.is_empty())
            .then(|| Subject::parse_kind("subject_type", subject_type))
            .transpose()?,
        related_subject: related_subject
            .map(|s| parse_subject("related_subject", Some(s)))
            .transpose()?,
        owner: parse_owner("owner_id", owner_id)?,
    })
}

/// Moves the note into its message: a body can be megabytes, and a page
/// is hundreds of strings, none of which need copying.
pub(crate) fn note_to_proto(note: Note) -> pb::Note {
    let etag = note.etag();
    let (text, html) = note.body.into_parts();
    pb::Note {
        id: note.id.to_string(),
        subject: Some(subject_to_proto(note.subject)),
        related_subjects: note
            .related_subjects
            .into_iter()
            .map(subject_to_proto)
            .collect(),
        owner_id: note.owner.into_string(),
        creator_id: note.created_by.into_string(),
        updater_id: note.updated_by.into_string(),
        visibility: match note.visibility {
            Visibility::Private => pb::Visibility::Private,
            Visibility::Team => pb::Visibility::Team,
        } as i32,
        edit_policy: match note.edit_policy {
            EditPolicy::OwnerOnly => pb::EditPolicy::OwnerOnly,
            EditPolicy::Team => pb::EditPolicy::Team,
        } as i32,
        body: Some(pb::NoteBody {
            text,
            html: html.unwrap_or_default(),
        }),
        title: note.title,
        mentions: note.mentions,
        actions: note.actions.iter().map(json_to_struct).collect(),
        attachments: note
            .attachments
            .into_iter()
            .map(|a| pb::Attachment {
                url: a.url,
                filename: a.filename,
                content_type: a.content_type,
                size_bytes: a.size_bytes,
                thumbnail_url: a.thumbnail_url,
            })
            .collect(),
        pinned: note.pinned,
        pin_time: note.pinned_at.map(timestamp),
        occur_time: Some(timestamp(note.occurred_at)),
        create_time: Some(timestamp(note.created_at)),
        update_time: Some(timestamp(note.updated_at)),
        edit_time: note.edited_at.map(timestamp),
        delete_time: note.deleted_at.map(timestamp),
        draft: note.draft,
        source: note.source.map(|s| pb::Source {
            system: s.system,
            id: s.id,
        }),
        client_reference: note.client_reference,
        etag,
        revision: note.revision,
    }
}

fn subject_to_proto(subject: Subject) -> pb::Subject {
    pb::Subject {
        r#type: subject.kind,
        id: subject.id,
    }
}

pub(crate) fn revision_to_proto(revision: Revision) -> pb::NoteRevision {
    pb::NoteRevision {
        revision: revision.revision,
        change_kind: match revision.change_kind {
            ChangeKind::Created => pb::ChangeKind::Created,
            ChangeKind::Updated => pb::ChangeKind::Updated,
            ChangeKind::Deleted => pb::ChangeKind::Deleted,
            ChangeKind::Undeleted => pb::ChangeKind::Undeleted,
        } as i32,
        actor_id: revision.actor.into_string(),
        change_time: Some(timestamp(revision.changed_at)),
        note: Some(note_to_proto(revision.note)),
    }
}

/// Integers JavaScript holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A protobuf number (always a double) as JSON: a whole number becomes a
/// JSON integer (`42`, not `42.0`), as the client most likely sent it;
/// NaN and the infinities have no JSON form.
fn number_to_json(n: f64) -> Option<Json> {
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        return Some(Json::Number(Number::from(n as i64)));
    }
    Number::from_f64(n).map(Json::Number)
}

/// How deep an action's JSON may nest (objects and arrays, the action
/// itself counting one): each level is three protobuf messages (Struct,
/// Value, ListValue) on the wire, and decoders in other languages stop at
/// 100 (grpcio's, protobuf-go's), so deeper actions stored once would
/// break every read of the tenant's notes for those clients.
const MAX_ACTION_DEPTH: usize = 16;

/// google.protobuf.Struct -> JSON object, for input: numbers JSON cannot
/// hold (NaN, infinities), NUL characters and nesting deeper than
/// [`MAX_ACTION_DEPTH`] are refused, naming `field`.
fn struct_to_json(field: &str, value: &Struct) -> Result<Map<String, Json>, DomainError> {
    struct_to_json_at(field, value, 1)
}

fn struct_to_json_at(
    field: &str,
    value: &Struct,
    depth: usize,
) -> Result<Map<String, Json>, DomainError> {
    if depth > MAX_ACTION_DEPTH {
        return Err(too_deep(field));
    }
    value
        .fields
        .iter()
        .map(|(k, v)| Ok((k.clone(), value_to_json(field, v, depth)?)))
        .collect()
}

fn too_deep(field: &str) -> DomainError {
    DomainError::invalid(
        field,
        format!("{field} nests objects and arrays more than {MAX_ACTION_DEPTH} deep"),
    )
}

/// `value`, inside `depth` levels of objects and arrays.
fn value_to_json(field: &str, value: &Value, depth: usize) -> Result<Json, DomainError> {
    Ok(match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n).ok_or_else(|| {
            DomainError::invalid(
                field,
                format!("{field} holds a number JSON cannot represent"),
            )
        })?,
        Some(Kind::StringValue(s)) => Json::String(parse_text(field, s, usize::MAX)?),
        Some(Kind::ListValue(list)) => {
            if depth + 1 > MAX_ACTION_DEPTH {
                return Err(too_deep(field));
            }
            Json::Array(
                list.values
                    .iter()
                    .map(|v| value_to_json(field, v, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        Some(Kind::StructValue(s)) => Json::Object(struct_to_json_at(field, s, depth + 1)?),
    })
}

/// google.protobuf.Struct -> JSON object, for output of what the server
/// stored (already valid); a number without a JSON form becomes null.
pub(crate) fn struct_to_json_object(value: &Struct) -> Map<String, Json> {
    value
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), output_value_to_json(v)))
        .collect()
}

fn output_value_to_json(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n).unwrap_or(Json::Null),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            Json::Array(list.values.iter().map(output_value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => Json::Object(struct_to_json_object(s)),
    }
}

/// JSON object -> google.protobuf.Struct.
pub(crate) fn json_to_struct(map: &Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(value: &Json) -> Value {
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_note_field_is_a_path_the_api_takes_and_parses_back() {
        let note = pb::Note {
            id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        };
        for field in NoteField::ALL {
            assert_eq!(NoteField::from_path(field.path()), Some(field));
            let request = update_of(note.clone(), &[field]);
            // A field may be refused for its (empty) value, never as a
            // path the mask cannot name.
            if let Err(err) = parse_update_request(&request) {
                assert_ne!(
                    err.violation().map(|v| v.field.as_str()),
                    Some("update_mask"),
                    "{field:?}: {err}"
                );
            }
        }
        let unknown = pb::UpdateNoteRequest {
            note: Some(note),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["etag".to_owned()],
            }),
        };
        let err = parse_update_request(&unknown).unwrap_err();
        assert_eq!(err.violation().unwrap().field, "update_mask");
    }
}
