//! Fernand's conversation notes (seeds 001 and 004): `POST
//! /conversations/{id}/notes` and `PATCH /conversations/{id}/notes/{note_id}`,
//! authenticated with `X-API-Key`. See docs/compat/fernand.md, which maps
//! every field.
//!
//! A conversation is the notes.v1 subject `conversation/<id>`. Fernand
//! notes are internal team notes only their author edits, so the facade
//! creates them TEAM-visible with the OWNER_ONLY edit policy, and notesd's
//! own rules (NotesApi) then give Fernand's "only the author may edit".
//! A note's Fernand id is `n-<number>`, its number from `note_numbers`;
//! PATCH and `note_id` take the number alone, as Fernand's int64 `note_id`.

use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use chrono::SecondsFormat;
use prost_types::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::CompatState;
use super::common::{
    Caller, FieldName, KeySource, Rejection, Vendor, VendorPath, from_timestamp,
    method_not_allowed, read_body, update_as_read, vendor_field,
};
use crate::api::convert::{json_to_struct, struct_to_json_object};
use crate::api::{NoteField, update_of};
use crate::auth::API_KEY_HEADER;
use crate::domain::{DomainError, ErrorKind, Principal};
use crate::proto::notes::v1 as pb;

/// The subject type of a Fernand conversation.
pub(crate) const SUBJECT_TYPE: &str = "conversation";

/// Where Fernand's paths start.
pub(crate) const PATH_PREFIX: &str = "/conversations/";

/// Fernand's limit on `content`: "Maximum string length: 10485760".
pub(crate) const MAX_CONTENT_CHARS: usize = 10_485_760;

/// The largest request body read. A `content` of the largest size fits
/// even when every character is sent as a six-byte JSON escape (Go's
/// encoder writes `<` as `\u003c`, say), with room for the other fields.
const MAX_REQUEST_BYTES: usize = 6 * MAX_CONTENT_CHARS + 1024 * 1024;

/// Fernand's `type` of a note entry.
const ENTRY_TYPE: &str = "NOTE";

pub(crate) fn routes() -> Router<CompatState> {
    Router::new()
        .route(
            "/conversations/{id}/notes",
            post(add_note).fallback(method_not_allowed::<Fernand>),
        )
        .route(
            "/conversations/{id}/notes/{note_id}",
            patch(update_note).fallback(method_not_allowed::<Fernand>),
        )
}

/// The Fernand facade, for the shared refusals: Fernand's
/// `{"error", "code"}`. The body is read only after the key is checked,
/// and at most [`MAX_REQUEST_BYTES`] of it.
pub(crate) struct Fernand;

impl Vendor for Fernand {
    type Error = FernandError;

    fn reject(rejection: Rejection) -> FernandError {
        FernandError::new(rejection.status(), rejection.code(), rejection.message())
    }
}

// ---------------------------------------------------------------------------
// Fernand's JSON.
// ---------------------------------------------------------------------------

/// The body of `POST /conversations/{id}/notes`. Unknown fields are
/// refused (422): a misspelt field must not be dropped silently.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddNoteBody {
    /// HTML; required, at most 10485760 characters.
    pub content: Option<String>,
    /// Agent ids (strings, or integers) or `everyone`.
    pub mentions: Option<Vec<Mention>>,
    /// Opaque objects, kept and echoed.
    pub actions: Option<Vec<Map<String, Json>>>,
    /// The number of an existing note of this conversation to update (a
    /// draft is published) instead of creating one.
    pub note_id: Option<i64>,
    /// The caller's own id, echoed unchanged (notes.v1 `client_reference`).
    pub generated_id: Option<String>,
    /// notesd extension: `true` saves a draft, seen by its author only,
    /// until a POST naming it in `note_id` publishes it.
    pub draft: Option<bool>,
}

/// The body of `PATCH /conversations/{id}/notes/{note_id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditNoteBody {
    pub content: Option<String>,
    pub mentions: Option<Vec<Mention>>,
}

/// Fernand documents mentions as strings (`["42", "everyone"]`); agent ids
/// sent as JSON integers mean the same and are taken too.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum Mention {
    Text(String),
    Number(i64),
}

impl Mention {
    fn into_string(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Number(n) => n.to_string(),
        }
    }
}

/// A note as Fernand answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct NoteResponse {
    /// `n-<number>`.
    pub id: String,
    pub conversation_id: i64,
    /// The sanitized HTML.
    pub message: String,
    pub created: String,
    #[serde(rename = "type")]
    pub entry_type: &'static str,
    /// Fernand: "same as created".
    pub timestamp: String,
    /// The owner's member id when it is an integer, else null.
    pub agent_id: Option<i64>,
    pub actions: Vec<Json>,
    /// Null until the content is first edited.
    pub edited_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_id: Option<String>,
}

// ---------------------------------------------------------------------------
// Errors: an HTTP status and `{"error": message, "code": REASON, "field"?}`.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FernandError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl FernandError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn on_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    fn validation(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).on_field(field)
    }

    fn bad_path(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_FIELD", message).on_field(field)
    }

    fn not_found() -> Self {
        DomainError::NoteNotFound.into()
    }
}

/// Fernand's names for the notes.v1 fields its requests fill; longest
/// first, so `note.body.html` is matched before `note.body`.
const FIELD_NAMES: &[FieldName] = &[
    FieldName::new("note.body.html", "content", false),
    FieldName::new("note.body.text", "content", false),
    FieldName::new("note.body", "content", false),
    FieldName::new("note.mentions", "mentions", true),
    FieldName::new("note.actions", "actions", true),
    FieldName::new("note.client_reference", "generated_id", false),
];

impl From<DomainError> for FernandError {
    fn from(err: DomainError) -> Self {
        err.log_cause("fernand");
        let status = match err.kind() {
            ErrorKind::InvalidArgument | ErrorKind::OutOfRange => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            // A deleted note is gone for a Fernand client (it cannot
            // undelete); the code says why.
            ErrorKind::FailedPrecondition => match err {
                DomainError::NoteDeleted => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            },
            ErrorKind::Aborted | ErrorKind::AlreadyExists => StatusCode::CONFLICT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &err {
            DomainError::ApiKeyMissing => "no API key: send the `X-API-Key` header".to_owned(),
            DomainError::ActorMissing => {
                "a service key must name the acting agent in `X-Actor-Id`".to_owned()
            }
            other => match other.violation() {
                // The message names the field as the request did.
                Some(violation) => violation.description.replace(
                    &violation.field,
                    &vendor_field(&violation.field, FIELD_NAMES),
                ),
                None => other.to_string(),
            },
        };
        Self {
            status,
            code: err.reason(),
            message,
            field: err.violation().map(|v| vendor_field(&v.field, FIELD_NAMES)),
        }
    }
}

impl IntoResponse for FernandError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".to_owned(), Json::String(self.message));
        body.insert("code".to_owned(), Json::String(self.code.to_owned()));
        if let Some(field) = self.field {
            body.insert("field".to_owned(), Json::String(field));
        }
        (self.status, axum::Json(Json::Object(body))).into_response()
    }
}

// ---------------------------------------------------------------------------
// Fernand -> notes.v1.
// ---------------------------------------------------------------------------

/// A conversation id from the path: a positive int64.
pub(crate) fn parse_conversation_id(raw: &str) -> Result<i64, FernandError> {
    parse_path_id(raw).ok_or_else(|| {
        FernandError::bad_path("id", "the conversation id must be a positive integer")
    })
}

/// A note id from the path: the number of `n-<number>`, a positive int64.
pub(crate) fn parse_note_number(raw: &str) -> Result<i64, FernandError> {
    parse_path_id(raw).ok_or_else(|| {
        FernandError::bad_path(
            "note_id",
            "note_id must be the number of the note's id (123 for n-123)",
        )
    })
}

fn parse_path_id(raw: &str) -> Option<i64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|n| *n > 0)
}

/// Parses a JSON body: 400 when it is not JSON, 422 when it is JSON of the
/// wrong shape (an unknown field, a wrong type).
pub(crate) fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FernandError> {
    serde_json::from_slice(bytes).map_err(|err| {
        // serde_json appends "at line L column C": keep the message only.
        let message = err.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_owned();
        if err.is_data() {
            FernandError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_FIELD", message)
        } else {
            FernandError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_JSON",
                format!("the body is not a JSON object: {message}"),
            )
        }
    })
}

/// `content`: required, non-blank, at most Fernand's 10485760 characters.
pub(crate) fn check_content(content: Option<&str>) -> Result<&str, FernandError> {
    let content = content.unwrap_or_default();
    if content.trim().is_empty() {
        return Err(FernandError::validation(
            "MISSING_FIELDS",
            "content",
            "content is required",
        ));
    }
    // Counting stops at the first character past the limit.
    if content.chars().nth(MAX_CONTENT_CHARS).is_some() {
        return Err(FernandError::validation(
            "FIELD_TOO_LARGE",
            "content",
            format!("content is longer than {MAX_CONTENT_CHARS} characters"),
        ));
    }
    Ok(content)
}

fn conversation_subject(conversation: i64) -> pb::Subject {
    pb::Subject {
        r#type: SUBJECT_TYPE.to_owned(),
        id: conversation.to_string(),
    }
}

fn html_body(content: &str) -> pb::NoteBody {
    pb::NoteBody {
        text: String::new(),
        html: content.to_owned(),
    }
}

fn mentions(mentions: Option<Vec<Mention>>) -> Option<Vec<String>> {
    mentions.map(|m| m.into_iter().map(Mention::into_string).collect())
}

/// The AddNote request for a new Fernand note: TEAM-visible, editable by
/// its author only, owned by the caller.
pub(crate) fn add_request(
    conversation: i64,
    body: AddNoteBody,
    content: &str,
) -> pb::AddNoteRequest {
    pb::AddNoteRequest {
        request_id: String::new(),
        note: Some(pb::Note {
            subject: Some(conversation_subject(conversation)),
            visibility: pb::Visibility::Team as i32,
            edit_policy: pb::EditPolicy::OwnerOnly as i32,
            body: Some(html_body(content)),
            mentions: mentions(body.mentions).unwrap_or_default(),
            actions: body.actions.iter().flatten().map(json_to_struct).collect(),
            draft: body.draft.unwrap_or(false),
            client_reference: body.generated_id.unwrap_or_default(),
            ..Default::default()
        }),
    }
}

/// The UpdateNote request of a POST naming `note` in `note_id`: the
/// content, and what else the POST sends, replace the note's; a draft is
/// published unless the POST says `draft: true` again.
pub(crate) fn repost_request(
    note: &pb::Note,
    body: AddNoteBody,
    content: &str,
) -> Result<pb::UpdateNoteRequest, FernandError> {
    let mut fields = vec![NoteField::Body];
    let mut changes = pb::Note {
        id: note.id.clone(),
        body: Some(html_body(content)),
        ..Default::default()
    };
    if let Some(mentions) = mentions(body.mentions) {
        fields.push(NoteField::Mentions);
        changes.mentions = mentions;
    }
    if let Some(actions) = &body.actions {
        fields.push(NoteField::Actions);
        changes.actions = actions.iter().map(json_to_struct).collect();
    }
    if let Some(generated_id) = body.generated_id {
        fields.push(NoteField::ClientReference);
        changes.client_reference = generated_id;
    }
    let draft = body.draft.unwrap_or(false);
    if draft && !note.draft {
        return Err(FernandError::validation(
            "INVALID_FIELD",
            "draft",
            "note_id names a published note, which cannot become a draft again",
        ));
    }
    if draft != note.draft {
        fields.push(NoteField::Draft);
        changes.draft = draft;
    }
    Ok(update_of(changes, &fields))
}

/// The UpdateNote request of a PATCH: the content, and the mentions when
/// sent.
pub(crate) fn edit_request(
    note_id: &str,
    body: EditNoteBody,
    content: &str,
) -> pb::UpdateNoteRequest {
    let mut fields = vec![NoteField::Body];
    let mut changes = pb::Note {
        id: note_id.to_owned(),
        body: Some(html_body(content)),
        ..Default::default()
    };
    if let Some(mentions) = mentions(body.mentions) {
        fields.push(NoteField::Mentions);
        changes.mentions = mentions;
    }
    update_of(changes, &fields)
}

// ---------------------------------------------------------------------------
// notes.v1 -> Fernand.
// ---------------------------------------------------------------------------

/// A note as Fernand shows it. `generated_id` is the one the request sent,
/// or else the note's stored client reference, if any.
pub(crate) fn note_response(
    note: &pb::Note,
    number: i64,
    conversation: i64,
    generated_id: Option<String>,
) -> NoteResponse {
    let created = note
        .create_time
        .as_ref()
        .map(format_time)
        .unwrap_or_default();
    NoteResponse {
        id: format!("n-{number}"),
        conversation_id: conversation,
        message: note.body.as_ref().map(message_html).unwrap_or_default(),
        created: created.clone(),
        entry_type: ENTRY_TYPE,
        timestamp: created,
        agent_id: note.owner_id.parse::<i64>().ok(),
        actions: note
            .actions
            .iter()
            .map(|a| Json::Object(struct_to_json_object(a)))
            .collect(),
        edited_at: note.edit_time.as_ref().map(format_time),
        generated_id: generated_id
            .or_else(|| (!note.client_reference.is_empty()).then(|| note.client_reference.clone())),
    }
}

/// The note's HTML; a plain-text note (written over gRPC) as escaped text.
fn message_html(body: &pb::NoteBody) -> String {
    if !body.html.is_empty() || body.text.is_empty() {
        return body.html.clone();
    }
    let mut html = String::with_capacity(body.text.len());
    for c in body.text.chars() {
        match c {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            '\'' => html.push_str("&#39;"),
            c => html.push(c),
        }
    }
    html
}

/// ISO 8601 in UTC with `Z`, fractional seconds only when there are any.
fn format_time(t: &Timestamp) -> String {
    from_timestamp(Some(t))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Handlers.
// ---------------------------------------------------------------------------

/// The key from `X-API-Key` (and the actor of a service key from
/// `X-Actor-Id`, as everywhere).
impl KeySource for Fernand {
    fn key(headers: &HeaderMap) -> Result<Option<String>, DomainError> {
        Ok(headers
            .get(API_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    fn refuse(err: DomainError) -> FernandError {
        err.into()
    }
}

/// The note numbered `number`, if it is about `conversation` and the
/// caller can see it; otherwise NOT_FOUND.
async fn note_in_conversation(
    state: &CompatState,
    principal: &Principal,
    conversation: i64,
    number: i64,
) -> Result<pb::Note, FernandError> {
    let id = state.api.note_id_for_number(principal, number).await?;
    let note = state
        .api
        .get_note(principal, &pb::GetNoteRequest { id })
        .await?;
    if note.subject.as_ref() != Some(&conversation_subject(conversation)) {
        return Err(FernandError::not_found());
    }
    Ok(note)
}

/// The number of a note the caller has just written, given one if it has
/// none yet.
async fn number_of(
    state: &CompatState,
    principal: &Principal,
    note: &pb::Note,
) -> Result<i64, FernandError> {
    let numbers = state.api.note_numbers(principal, &[&note.id]).await?;
    Ok(numbers[0])
}

async fn add_note(
    State(state): State<CompatState>,
    Caller(principal, _): Caller<Fernand>,
    VendorPath(conversation, _): VendorPath<Fernand, String>,
    body: HttpBody,
) -> Result<axum::Json<NoteResponse>, FernandError> {
    let conversation = parse_conversation_id(&conversation)?;
    let body: AddNoteBody = parse_body(&read_body::<Fernand>(body, MAX_REQUEST_BYTES).await?)?;
    let content = check_content(body.content.as_deref())?.to_owned();
    let generated_id = body.generated_id.clone();
    let (note, number) = match body.note_id {
        Some(number) => {
            // Checked against the note as read, written only if it is
            // still that note.
            let (state, principal, body, content) = (&state, &principal, &body, &content);
            let note = update_as_read(&state.api, principal, || async move {
                let existing = note_in_conversation(state, principal, conversation, number).await?;
                let request = repost_request(&existing, body.clone(), content)?;
                Ok::<_, FernandError>((existing, Some(request)))
            })
            .await?;
            (note, number)
        }
        None => {
            let request = add_request(conversation, body, &content);
            let note = state.api.add_note(&principal, &request).await?;
            let number = number_of(&state, &principal, &note).await?;
            (note, number)
        }
    };
    Ok(axum::Json(note_response(
        &note,
        number,
        conversation,
        generated_id,
    )))
}

async fn update_note(
    State(state): State<CompatState>,
    Caller(principal, _): Caller<Fernand>,
    VendorPath((conversation, note_id), _): VendorPath<Fernand, (String, String)>,
    body: HttpBody,
) -> Result<axum::Json<NoteResponse>, FernandError> {
    let conversation = parse_conversation_id(&conversation)?;
    let number = parse_note_number(&note_id)?;
    let body: EditNoteBody = parse_body(&read_body::<Fernand>(body, MAX_REQUEST_BYTES).await?)?;
    let content = check_content(body.content.as_deref())?.to_owned();
    // As for a repost: the note checked is the note written.
    let (state, principal, body, content) = (&state, &principal, &body, &content);
    let note = update_as_read(&state.api, principal, || async move {
        let existing = note_in_conversation(state, principal, conversation, number).await?;
        let request = edit_request(&existing.id, body.clone(), content);
        Ok::<_, FernandError>((existing, Some(request)))
    })
    .await?;
    Ok(axum::Json(note_response(&note, number, conversation, None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_are_positive_integers_only() {
        assert_eq!(parse_conversation_id("12345"), Ok(12345));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "n-1",
            "1.0",
            " 1",
            "99999999999999999999",
        ] {
            assert!(parse_conversation_id(bad).is_err(), "{bad:?}");
            assert!(parse_note_number(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_limit_counts_characters_not_bytes() {
        let at_limit = "é".repeat(MAX_CONTENT_CHARS);
        assert!(check_content(Some(&at_limit)).is_ok());
        let over = "a".repeat(MAX_CONTENT_CHARS + 1);
        let err = check_content(Some(&over)).unwrap_err();
        assert_eq!(err.code, "FIELD_TOO_LARGE");
        assert_eq!(err.field.as_deref(), Some("content"));
        assert_eq!(
            check_content(Some("  ")).unwrap_err().code,
            "MISSING_FIELDS"
        );
    }

    #[test]
    fn whole_numbers_in_actions_come_back_as_integers() {
        let action: Map<String, Json> =
            serde_json::from_str(r#"{"n": 42, "f": 1.5, "l": [1, "x", null]}"#).unwrap();
        assert_eq!(struct_to_json_object(&json_to_struct(&action)), action);
    }

    #[test]
    fn grpc_field_paths_are_named_as_fernand_names_them() {
        let err: FernandError =
            DomainError::too_large("note.body.html", "note.body.html is too large").into();
        assert_eq!(err.field.as_deref(), Some("content"));
        assert_eq!(err.message, "content is too large");
        let err: FernandError = DomainError::invalid("note.mentions[1]", "bad").into();
        assert_eq!(err.field.as_deref(), Some("mentions[1]"));
    }
}
