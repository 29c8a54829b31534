//! Close CRM's note activities (`/api/v1/activity/note/`): see
//! docs/compat/close.md for every field, the id format, auth and errors.
//!
//! Requests are read as JSON objects field by field (so a wrong type names
//! its field), turned into notes.v1 requests and handed to [`NotesApi`];
//! notes come back in Close's `Note` activity shape.
//!
//! [`NotesApi`]: crate::api::NotesApi

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::CompatState;
use super::common::{
    Caller, FieldName, KeySource, Rejection, Vendor, VendorPath, from_timestamp,
    method_not_allowed, read_body, to_timestamp, update_as_read, vendor_field,
};
use crate::api::{NoteField, update_of};
use crate::domain::{DomainError, ErrorKind, Principal, time};
use crate::proto::notes::v1 as pb;

/// The source system of notes imported with their Close id.
const SOURCE_SYSTEM: &str = "close";
/// The subject type of a Close lead; a Close note is a note about a lead.
const LEAD: &str = "lead";
/// The related-subject type of a Close contact.
const CONTACT: &str = "contact";
/// Prefix of every Close activity id.
const ID_PREFIX: &str = "acti_";
/// `_limit` when not sent, and its largest accepted value.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 100;
/// The largest `_skip` (Close caps deep offsets too).
const MAX_SKIP: usize = 10_000;
/// The most ids an `id__in` filter may name.
const MAX_IDS: usize = 100;
/// The most notes read per ListNotes call of a listing (a deep `_skip`
/// takes several).
const SCAN_PAGE: i32 = 1000;
/// Request bodies up to this size (read after authentication): two 10 MiB
/// bodies (text and HTML) with JSON escaping.
const BODY_LIMIT: usize = 48 * 1024 * 1024;

/// Where Close's paths start.
pub(crate) const PATH_PREFIX: &str = "/api/v1/";

pub(crate) fn routes() -> Router<CompatState> {
    Router::new()
        .route(
            "/api/v1/activity/note/",
            get(list).post(create).fallback(method_not_allowed::<Close>),
        )
        .route(
            "/api/v1/activity/note/{id}/",
            get(get_one)
                .put(update)
                .delete(remove)
                .fallback(method_not_allowed::<Close>),
        )
}

/// The Close facade, for the shared refusals: Close's `{"error": …}`.
pub(crate) struct Close;

impl Vendor for Close {
    type Error = Failure;

    fn reject(rejection: Rejection) -> Failure {
        match rejection {
            Rejection::UnknownRoute => Failure::plain(StatusCode::NOT_FOUND, "Not found."),
            other => Failure::plain(other.status(), other.message()),
        }
    }
}

// ---------------------------------------------------------------------------
// Wire types.
// ---------------------------------------------------------------------------

/// Close's `Note` activity, as every endpoint answers it.
#[derive(Debug, Serialize)]
pub(crate) struct CloseNote {
    #[serde(rename = "_type")]
    pub kind: &'static str,
    pub id: String,
    pub lead_id: Option<String>,
    pub contact_id: Option<String>,
    pub organization_id: String,
    pub user_id: Option<String>,
    pub created_by: Option<String>,
    pub updated_by: Option<String>,
    pub date_created: Option<String>,
    pub date_updated: Option<String>,
    pub activity_at: Option<String>,
    pub note: String,
    pub note_html: Option<String>,
    pub title: Option<String>,
    pub pinned: bool,
    pub pinned_at: Option<String>,
    pub users: Vec<String>,
    pub created_by_name: Option<String>,
    pub updated_by_name: Option<String>,
    pub user_name: Option<String>,
    pub attachments: Vec<CloseAttachmentOut>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CloseAttachmentOut {
    pub url: String,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub thumbnail_url: Option<String>,
}

/// An attachment as a request sends it. `size` and `thumbnail_url` are
/// accepted so a note read from Close (or from here) can be sent back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CloseAttachmentIn {
    pub url: String,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub thumbnail_url: Option<String>,
}

/// Request fields that are written (POST and PUT).
const WRITABLE: &[&str] = &[
    "lead_id",
    "contact_id",
    "activity_at",
    "date_created",
    "created_by",
    "user_id",
    "organization_id",
    "note",
    "note_html",
    "title",
    "pinned",
    "attachments",
    "id",
];

/// Response-only fields: accepted and ignored, so a note read from the API
/// can be sent back as it is.
const READ_ONLY: &[&str] = &[
    "_type",
    "updated_by",
    "date_updated",
    "pinned_at",
    "users",
    "created_by_name",
    "updated_by_name",
    "user_name",
];

/// A POST or PUT body: each field absent, null, or a value.
struct Input {
    fields: Map<String, Value>,
}

impl Input {
    fn parse(body: &Bytes) -> Result<Self, Failure> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Failure::bad_request(format!("the body is not valid JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(Failure::bad_request("the body must be a JSON object"));
        };
        let mut unknown: Vec<&String> = fields
            .keys()
            .filter(|k| !WRITABLE.contains(&k.as_str()) && !READ_ONLY.contains(&k.as_str()))
            .collect();
        unknown.sort();
        if let Some(first) = unknown.first() {
            return Err(Failure::field(first, "unknown field"));
        }
        Ok(Self { fields })
    }

    fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// The field's value; `None` when absent or null.
    fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Failure> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value.clone())
                .map(Some)
                .map_err(|e| Failure::field(name, &format!("invalid value: {e}"))),
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>, Failure> {
        self.get::<String>(name)
    }

    /// A time field (ISO 8601).
    fn time(&self, name: &str) -> Result<Option<prost_types::Timestamp>, Failure> {
        self.string(name)?
            .map(|s| parse_time(name, &s).map(to_timestamp))
            .transpose()
    }

    fn attachments(&self) -> Result<Vec<pb::Attachment>, Failure> {
        Ok(self
            .get::<Vec<CloseAttachmentIn>>("attachments")?
            .unwrap_or_default()
            .into_iter()
            .map(|a| pb::Attachment {
                url: a.url,
                filename: a.filename.unwrap_or_default(),
                content_type: a.content_type.unwrap_or_default(),
                size_bytes: a.size.unwrap_or_default(),
                thumbnail_url: a.thumbnail_url.unwrap_or_default(),
            })
            .collect())
    }

    /// `organization_id`, when sent, must be the key's tenant.
    fn check_organization(&self, principal: &Principal) -> Result<(), Failure> {
        match self.string("organization_id")? {
            Some(org) if org != principal.tenant.as_str() => Err(Failure::field(
                "organization_id",
                "does not match the organization of the API key",
            )),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------

/// An error answered the Close way: a status and a JSON body.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    body: Value,
}

impl Failure {
    /// A validation error naming a request field (Close's `field-errors`).
    fn field(field: &str, message: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: json!({
                "error": format!("{field}: {message}"),
                "errors": [],
                "field-errors": { field: message },
            }),
        }
    }

    /// A 400 not tied to one field.
    fn bad_request(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": message, "errors": [message], "field-errors": {} }),
        }
    }

    fn plain(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    fn not_found() -> Self {
        Self::plain(
            StatusCode::NOT_FOUND,
            "Empty query: Note matching query does not exist.",
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, Json(self.body)).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"notesd\""),
            );
        }
        response
    }
}

impl From<DomainError> for Failure {
    fn from(err: DomainError) -> Self {
        if let Some(violation) = err.violation() {
            let field = close_field(&violation.field);
            let message = violation.description.replace(&violation.field, &field);
            return Self::field(&field, &message);
        }
        err.log_cause("close");
        match err.kind() {
            // Answered above, with the field.
            ErrorKind::InvalidArgument | ErrorKind::OutOfRange => {
                Self::bad_request(err.to_string())
            }
            // Close's own 429: the wait, and the limit, under `error`.
            ErrorKind::ResourceExhausted => match err.quota() {
                Some(refusal) => Self {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    body: json!({ "error": {
                        "message": refusal.describe(),
                        "rate_reset": refusal.retry_after.as_secs_f64(),
                        "rate_limit": refusal.allowed,
                        "rate_window": 1,
                        "rate_limit_type": refusal.limit.reason(),
                    }}),
                },
                None => Self::plain(StatusCode::TOO_MANY_REQUESTS, err.to_string()),
            },
            ErrorKind::Unauthenticated => match err {
                DomainError::ApiKeyMissing => Self::plain(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized: send the API key as the Basic user name (empty password) \
                     or as `Authorization: Bearer <key>`",
                ),
                err => Self::plain(StatusCode::UNAUTHORIZED, format!("Unauthorized: {err}")),
            },
            ErrorKind::PermissionDenied => Self::plain(StatusCode::FORBIDDEN, err.to_string()),
            ErrorKind::NotFound => Self::not_found(),
            // A deleted note is gone for a Close client (Close has no
            // undelete); undeleting one that is not deleted is a bad call.
            ErrorKind::FailedPrecondition => match err {
                DomainError::NoteDeleted => Self::not_found(),
                err => Self::bad_request(err.to_string()),
            },
            ErrorKind::Aborted => Self::plain(StatusCode::CONFLICT, err.to_string()),
            ErrorKind::AlreadyExists => match err {
                DomainError::SourceExists => {
                    Self::field("id", "a note with this id already exists")
                }
                err => Self::plain(StatusCode::CONFLICT, err.to_string()),
            },
            ErrorKind::Unavailable => Self::plain(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
            ErrorKind::DeadlineExceeded => {
                Self::plain(StatusCode::GATEWAY_TIMEOUT, err.to_string())
            }
            ErrorKind::Internal => Self::plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        }
    }
}

/// Close's names for the notes.v1 fields its requests fill.
const FIELD_NAMES: &[FieldName] = &[
    FieldName::new("note.subject", "lead_id", false),
    FieldName::new("note.related_subjects", "contact_id", false),
    FieldName::new("note.owner_id", "user_id", false),
    FieldName::new("note.body.html", "note_html", false),
    FieldName::new("note.body.text", "note", false),
    FieldName::new("note.body", "note", false),
    FieldName::new("note.title", "title", false),
    FieldName::new("note.attachments", "attachments", true),
    FieldName::new("note.occur_time", "activity_at", false),
    FieldName::new("note.source", "id", false),
    FieldName::new("note.id", "id", false),
    FieldName::new("related_subject", "contact_id", false),
    FieldName::new("subject", "lead_id", false),
    FieldName::new("owner_id", "user_id", false),
    FieldName::new("occur_time_range", "activity_at", false),
    FieldName::new("create_time_range", "date_created", false),
    FieldName::new("page_size", "_limit", false),
    FieldName::new("page_token", "_skip", false),
];

/// The Close request field behind a notes.v1 field path (an attachment's
/// `size_bytes` is Close's `size`).
fn close_field(path: &str) -> String {
    vendor_field(path, FIELD_NAMES).replace("size_bytes", "size")
}

// ---------------------------------------------------------------------------
// Auth.
// ---------------------------------------------------------------------------

/// The key from `Authorization: Basic base64(key:)` or `Bearer key`.
fn presented_key(headers: &HeaderMap) -> Result<Option<String>, DomainError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| DomainError::ApiKeyInvalid)?
        .trim();
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some(credentials.to_owned()).filter(|k| !k.is_empty()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(DomainError::ApiKeyInvalid)?;
        let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
        return Ok(Some(user.to_owned()).filter(|k| !k.is_empty()));
    }
    Err(DomainError::ApiKeyInvalid)
}

impl KeySource for Close {
    fn key(headers: &HeaderMap) -> Result<Option<String>, DomainError> {
        presented_key(headers)
    }

    fn refuse(err: DomainError) -> Failure {
        err.into()
    }
}

// ---------------------------------------------------------------------------
// Ids, times, conversion.
// ---------------------------------------------------------------------------

/// The UUID inside a derived id `acti_<32 hex>`.
fn derived_uuid(id: &str) -> Option<Uuid> {
    let hex = id.strip_prefix(ID_PREFIX)?;
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| Uuid::try_parse(hex).ok())
        .flatten()
}

/// The notes.v1 id of the note a Close id names: derived ids carry it;
/// any other `acti_` id is looked up as an imported Close id.
async fn note_id(state: &CompatState, principal: &Principal, id: &str) -> Result<String, Failure> {
    if let Some(uuid) = derived_uuid(id) {
        return Ok(uuid.to_string());
    }
    if !id.starts_with(ID_PREFIX) {
        return Err(Failure::not_found());
    }
    Ok(state
        .api
        .note_id_for_source(principal, SOURCE_SYSTEM, id)
        .await?)
}

/// The Close id of a note: its imported Close id, or `acti_` and the 32
/// hex digits of its UUID.
pub(crate) fn close_id(note: &pb::Note) -> String {
    if let Some(source) = note.source.as_ref().filter(|s| s.system == SOURCE_SYSTEM) {
        return source.id.clone();
    }
    match Uuid::try_parse(&note.id) {
        Ok(uuid) => format!("{ID_PREFIX}{}", uuid.simple()),
        Err(_) => format!("{ID_PREFIX}{}", note.id),
    }
}

/// ISO 8601 as Close accepts it: RFC 3339, a date-time without offset
/// (UTC), or a date (midnight UTC). A `+` decoded as a space from a query
/// string is taken back.
/// Times outside years 1 to 9999 are refused (`domain::time`).
fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>, Failure> {
    let value = value.trim().replace(' ', "+");
    let parsed = DateTime::parse_from_rfc3339(&value)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(&value, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
        })
        .or_else(|_| {
            NaiveDate::parse_from_str(&value, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        })
        .map_err(|_| Failure::field(field, "not a valid ISO 8601 date-time"))?;
    if !time::in_range(parsed) {
        return Err(Failure::field(
            field,
            &format!("must be a date-time {}", time::RANGE),
        ));
    }
    Ok(parsed)
}

/// Close's time format: `2013-02-20T06:39:57.266000+00:00`.
fn format_time(t: Option<&prost_types::Timestamp>) -> Option<String> {
    from_timestamp(t).map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string())
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn lead_subject(id: String) -> Option<pb::Subject> {
    Some(pb::Subject {
        r#type: LEAD.to_owned(),
        id,
    })
}

fn contact_subject(id: String) -> pb::Subject {
    pb::Subject {
        r#type: CONTACT.to_owned(),
        id,
    }
}

fn contact_of(note: &pb::Note) -> Option<&str> {
    note.related_subjects
        .iter()
        .find(|s| s.r#type == CONTACT)
        .map(|s| s.id.as_str())
}

/// A note in Close's shape.
pub(crate) fn to_close(note: &pb::Note, organization: &str) -> CloseNote {
    let body = note.body.clone().unwrap_or_default();
    CloseNote {
        kind: "Note",
        id: close_id(note),
        lead_id: note
            .subject
            .as_ref()
            .filter(|s| s.r#type == LEAD)
            .map(|s| s.id.clone()),
        contact_id: contact_of(note).map(str::to_owned),
        organization_id: organization.to_owned(),
        user_id: non_empty(&note.owner_id),
        created_by: non_empty(&note.creator_id),
        updated_by: non_empty(&note.updater_id),
        date_created: format_time(note.create_time.as_ref()),
        date_updated: format_time(note.update_time.as_ref()),
        activity_at: format_time(note.occur_time.as_ref()),
        note: body.text,
        note_html: non_empty(&body.html),
        title: non_empty(&note.title),
        pinned: note.pinned,
        pinned_at: format_time(note.pin_time.as_ref()),
        users: Vec::new(),
        created_by_name: None,
        updated_by_name: None,
        user_name: None,
        attachments: note
            .attachments
            .iter()
            .map(|a| CloseAttachmentOut {
                url: a.url.clone(),
                filename: a.filename.clone(),
                content_type: a.content_type.clone(),
                size: a.size_bytes,
                thumbnail_url: non_empty(&a.thumbnail_url),
            })
            .collect(),
    }
}

fn render(note: &pb::Note, principal: &Principal) -> Value {
    serde_json::to_value(to_close(note, principal.tenant.as_str())).expect("serializable")
}

/// The Close facade serves live notes about leads: anything else is 404.
fn as_close_note(note: pb::Note) -> Result<pb::Note, Failure> {
    let about_lead = note.subject.as_ref().is_some_and(|s| s.r#type == LEAD);
    if about_lead && note.delete_time.is_none() {
        Ok(note)
    } else {
        Err(Failure::not_found())
    }
}

async fn fetch(
    state: &CompatState,
    principal: &Principal,
    close_id: &str,
) -> Result<pb::Note, Failure> {
    let id = note_id(state, principal, close_id).await?;
    let note = state
        .api
        .get_note(principal, &pb::GetNoteRequest { id })
        .await?;
    as_close_note(note)
}

// ---------------------------------------------------------------------------
// Create, read, update, delete.
// ---------------------------------------------------------------------------

/// The AddNote request for a POST body.
pub(crate) fn add_request(
    input_body: &Bytes,
    principal: &Principal,
) -> Result<pb::AddNoteRequest, Failure> {
    let input = Input::parse(input_body)?;
    input.check_organization(principal)?;
    let source = match input.string("id")? {
        None => None,
        Some(id) if !id.starts_with(ID_PREFIX) || derived_uuid(&id).is_some() => {
            return Err(Failure::field(
                "id",
                "an imported id must be a Close activity id (acti_...) not issued by notesd",
            ));
        }
        Some(id) => Some(pb::Source {
            system: SOURCE_SYSTEM.to_owned(),
            id,
        }),
    };
    let note = pb::Note {
        subject: lead_subject(input.string("lead_id")?.unwrap_or_default()),
        related_subjects: input
            .string("contact_id")?
            .filter(|c| !c.is_empty())
            .map(contact_subject)
            .into_iter()
            .collect(),
        owner_id: input.string("user_id")?.unwrap_or_default(),
        body: Some(pb::NoteBody {
            text: input.string("note")?.unwrap_or_default(),
            html: input.string("note_html")?.unwrap_or_default(),
        }),
        title: input.string("title")?.unwrap_or_default(),
        attachments: input.attachments()?,
        pinned: input.get::<bool>("pinned")?.unwrap_or(false),
        occur_time: match input.time("activity_at")? {
            Some(t) => Some(t),
            None => input.time("date_created")?,
        },
        source,
        ..Default::default()
    };
    Ok(pb::AddNoteRequest {
        request_id: String::new(),
        note: Some(note),
    })
}

async fn create(
    State(state): State<CompatState>,
    Caller(principal, _): Caller<Close>,
    body: Body,
) -> Result<Json<Value>, Failure> {
    let body = read_body::<Close>(body, BODY_LIMIT).await?;
    let request = add_request(&body, &principal)?;
    let note = state.api.add_note(&principal, &request).await?;
    Ok(Json(render(&note, &principal)))
}

async fn get_one(
    State(state): State<CompatState>,
    Caller(principal, _): Caller<Close>,
    VendorPath(id, _): VendorPath<Close, String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Failure> {
    let fields = fields_param(query.as_deref())?;
    let note = fetch(&state, &principal, &id).await?;
    Ok(Json(select_fields(render(&note, &principal), &fields)))
}

/// The UpdateNote request for a PUT body against the current note: only
/// the fields the body sends change.
pub(crate) fn update_request(
    input_body: &Bytes,
    principal: &Principal,
    current: &pb::Note,
) -> Result<pb::UpdateNoteRequest, Failure> {
    let input = Input::parse(input_body)?;
    input.check_organization(principal)?;
    let mut note = pb::Note {
        id: current.id.clone(),
        ..Default::default()
    };
    let mut fields = Vec::new();
    if input.has("lead_id") {
        note.subject = lead_subject(input.string("lead_id")?.unwrap_or_default());
        fields.push(NoteField::Subject);
    }
    if input.has("contact_id") {
        // Other related subjects (written over gRPC) are kept.
        note.related_subjects = current
            .related_subjects
            .iter()
            .filter(|s| s.r#type != CONTACT)
            .cloned()
            .chain(
                input
                    .string("contact_id")?
                    .filter(|c| !c.is_empty())
                    .map(contact_subject),
            )
            .collect();
        fields.push(NoteField::RelatedSubjects);
    }
    if input.has("user_id") {
        note.owner_id = input.string("user_id")?.unwrap_or_default();
        fields.push(NoteField::OwnerId);
    }
    if input.has("note") || input.has("note_html") {
        note.body = Some(pb::NoteBody {
            text: input.string("note")?.unwrap_or_default(),
            html: input.string("note_html")?.unwrap_or_default(),
        });
        fields.push(NoteField::Body);
    }
    if input.has("title") {
        note.title = input.string("title")?.unwrap_or_default();
        fields.push(NoteField::Title);
    }
    if input.has("pinned") {
        note.pinned = input.get::<bool>("pinned")?.unwrap_or(false);
        fields.push(NoteField::Pinned);
    }
    if input.has("attachments") {
        note.attachments = input.attachments()?;
        fields.push(NoteField::Attachments);
    }
    if input.has("activity_at") {
        note.occur_time = Some(
            input
                .time("activity_at")?
                .ok_or_else(|| Failure::field("activity_at", "may not be null"))?,
        );
        fields.push(NoteField::OccurTime);
    }
    Ok(update_of(note, &fields))
}

async fn update(
    State(state): State<CompatState>,
    Caller(principal, _): Caller<Close>,
    VendorPath(id, _): VendorPath<Close, String>,
    body: Body,
) -> Result<Json<Value>, Failure> {
    let body = read_body::<Close>(body, BODY_LIMIT).await?;
    // The change is computed from the note as read: a PUT of `contact_id`
    // keeps the other related subjects.
    let (state, principal, id, body) = (&state, &principal, &id, &body);
    let note = update_as_read(&state.api, principal, || async move {
        let current = fetch(state, principal, id).await?;
        let request = update_request(body, principal, &current)?;
        let changes = request
            .update_mask
            .as_ref()
            .is_some_and(|mask| !mask.paths.is_empty());
        Ok::<_, Failure>((current, changes.then_some(request)))
    })
    .await?;
    Ok(Json(render(&note, principal)))
}

async fn remove(
    State(state): State<CompatState>,
    Caller(principal, _): Caller<Close>,
    VendorPath(id, _): VendorPath<Close, String>,
) -> Result<Json<Value>, Failure> {
    // Deleted only if it is still the note checked (a Close lead note);
    // a concurrent change makes it a 409, nothing deleted.
    let current = fetch(&state, &principal, &id).await?;
    state
        .api
        .delete_note(
            &principal,
            &pb::DeleteNoteRequest {
                id: current.id,
                etag: current.etag,
            },
        )
        .await?;
    Ok(Json(json!({})))
}

// ---------------------------------------------------------------------------
// Listing.
// ---------------------------------------------------------------------------

/// A half-open range [start, end) built from `__gt/__gte/__lt/__lte`.
#[derive(Debug, Default, Clone, Copy)]
struct Bounds {
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

impl Bounds {
    /// notesd keeps microseconds: `> t` is `>= t + 1µs`, `<= t` is
    /// `< t + 1µs`.
    fn add(&mut self, op: &str, t: DateTime<Utc>) {
        let micro = chrono::Duration::microseconds(1);
        let t = chrono::SubsecRound::trunc_subsecs(t, 6);
        match op {
            "gt" => self.raise(t + micro),
            "gte" => self.raise(t),
            "lt" => self.lower(t),
            _ => self.lower(t + micro),
        }
    }

    fn raise(&mut self, start: DateTime<Utc>) {
        self.start = Some(self.start.map_or(start, |s| s.max(start)));
    }

    fn lower(&mut self, end: DateTime<Utc>) {
        self.end = Some(self.end.map_or(end, |e| e.min(end)));
    }

    fn is_empty(&self) -> bool {
        matches!((self.start, self.end), (Some(s), Some(e)) if s >= e)
    }

    fn contains(&self, t: Option<&prost_types::Timestamp>) -> bool {
        let Some(t) = from_timestamp(t) else {
            return self.start.is_none() && self.end.is_none();
        };
        self.start.is_none_or(|s| t >= s) && self.end.is_none_or(|e| t < e)
    }

    fn to_proto(self) -> Option<pb::TimeRange> {
        (self.start.is_some() || self.end.is_some()).then(|| pb::TimeRange {
            start_time: self.start.map(to_timestamp),
            end_time: self.end.map(to_timestamp),
        })
    }
}

/// The query of a list call.
#[derive(Debug, Default)]
struct ListQuery {
    lead_id: Option<String>,
    contact_id: Option<String>,
    user_id: Option<String>,
    ids: Option<Vec<String>>,
    created: Bounds,
    activity: Bounds,
    skip: usize,
    limit: usize,
    fields: Option<Vec<String>>,
}

fn parse_count(name: &str, value: &str, max: usize) -> Result<usize, Failure> {
    let n: usize = value
        .trim()
        .parse()
        .map_err(|_| Failure::field(name, "must be a non-negative integer"))?;
    if n > max {
        return Err(Failure::field(name, &format!("must be at most {max}")));
    }
    Ok(n)
}

fn list_query(query: Option<&str>) -> Result<ListQuery, Failure> {
    let mut q = ListQuery {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        let non_empty = || Some(value.clone()).filter(|v| !v.is_empty());
        match name.as_ref() {
            "lead_id" => q.lead_id = non_empty(),
            "contact_id" => q.contact_id = non_empty(),
            "user_id" => q.user_id = non_empty(),
            "id__in" => {
                let ids: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if ids.len() > MAX_IDS {
                    return Err(Failure::field(
                        "id__in",
                        &format!("names more than {MAX_IDS} ids"),
                    ));
                }
                q.ids = Some(ids);
            }
            "_skip" => q.skip = parse_count("_skip", &value, MAX_SKIP)?,
            "_limit" => q.limit = parse_count("_limit", &value, MAX_LIMIT)?,
            "_fields" => q.fields = Some(split_fields(&value)),
            other => {
                let (field, op) = other.rsplit_once("__").unwrap_or((other, ""));
                let bounds = match field {
                    "date_created" => &mut q.created,
                    "activity_at" => &mut q.activity,
                    _ => return Err(Failure::field(other, "unknown filter")),
                };
                if !matches!(op, "gt" | "gte" | "lt" | "lte") {
                    return Err(Failure::field(other, "unknown filter"));
                }
                bounds.add(op, parse_time(other, &value)?);
            }
        }
    }
    if q.limit == 0 {
        q.limit = DEFAULT_LIMIT;
    }
    Ok(q)
}

fn split_fields(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `_fields` of a single-note GET (the only parameter it takes).
fn fields_param(query: Option<&str>) -> Result<Option<Vec<String>>, Failure> {
    let mut fields = None;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if name != "_fields" {
            return Err(Failure::field(&name, "unknown parameter"));
        }
        fields = Some(split_fields(&value));
    }
    Ok(fields)
}

/// Close's `_fields`: only these keys of the object.
fn select_fields(value: Value, fields: &Option<Vec<String>>) -> Value {
    match (value, fields) {
        (Value::Object(map), Some(fields)) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| fields.contains(k))
                .collect(),
        ),
        (value, _) => value,
    }
}

impl ListQuery {
    /// Whether a note belongs in the listing: every filter but `id__in`
    /// (whose notes are read one by one), checked again after the ones
    /// ListNotes applied.
    fn matches(&self, note: &pb::Note) -> bool {
        let Some(subject) = note.subject.as_ref().filter(|s| s.r#type == LEAD) else {
            return false;
        };
        note.delete_time.is_none()
            && self.lead_id.as_ref().is_none_or(|l| *l == subject.id)
            && self.contact_id.as_ref().is_none_or(|c| {
                note.related_subjects
                    .iter()
                    .any(|s| s.r#type == CONTACT && s.id == *c)
            })
            && self.user_id.as_ref().is_none_or(|u| *u == note.owner_id)
            && self.created.contains(note.create_time.as_ref())
            && self.activity.contains(note.occur_time.as_ref())
    }

    /// The ListNotes request applying every filter but `id__in`: Close
    /// notes are lead notes (`subject_type`), a contact is a related
    /// subject (`related_subject`).
    fn pushed_down(&self) -> pb::ListNotesRequest {
        pb::ListNotesRequest {
            page_size: i32::try_from(self.skip + self.limit + 1)
                .unwrap_or(SCAN_PAGE)
                .min(SCAN_PAGE),
            subject: self.lead_id.clone().and_then(lead_subject),
            subject_type: LEAD.to_owned(),
            related_subject: self.contact_id.clone().map(|id| pb::Subject {
                r#type: CONTACT.to_owned(),
                id,
            }),
            owner_id: self.user_id.clone().unwrap_or_default(),
            occur_time_range: self.activity.to_proto(),
            create_time_range: self.created.to_proto(),
            ..Default::default()
        }
    }
}

/// Newest `occur_time` first, then newest id, as ListNotes orders.
fn newest_first(a: &pb::Note, b: &pb::Note) -> std::cmp::Ordering {
    let key = |n: &pb::Note| (from_timestamp(n.occur_time.as_ref()), n.id.clone());
    key(b).cmp(&key(a))
}

/// The notes of one page: `skip` matches skipped, then up to `limit + 1`
/// (the extra one only tells `has_more`).
async fn matching_notes(
    state: &CompatState,
    principal: &Principal,
    query: &ListQuery,
) -> Result<Vec<pb::Note>, Failure> {
    if query.created.is_empty() || query.activity.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(ids) = &query.ids {
        // A few named notes: read each, then filter and order them here.
        let mut notes: Vec<pb::Note> = Vec::new();
        for id in ids {
            let note = match fetch(state, principal, id).await {
                Ok(note) => note,
                Err(failure) if failure.status == StatusCode::NOT_FOUND => continue,
                Err(failure) => return Err(failure),
            };
            if query.matches(&note) && !notes.iter().any(|n| n.id == note.id) {
                notes.push(note);
            }
        }
        notes.sort_by(newest_first);
        return Ok(notes
            .into_iter()
            .skip(query.skip)
            .take(query.limit + 1)
            .collect());
    }
    // Every filter runs in SQL; `matches` only guards the contract. Skipped
    // notes are counted, not kept.
    let mut request = query.pushed_down();
    let (mut skipped, mut matched) = (0, Vec::new());
    loop {
        let page = state.api.list_notes(principal, &request).await?;
        for note in page.notes.into_iter().filter(|n| query.matches(n)) {
            if skipped < query.skip {
                skipped += 1;
            } else {
                matched.push(note);
            }
        }
        if matched.len() > query.limit || page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    matched.truncate(query.limit + 1);
    Ok(matched)
}

async fn list(
    State(state): State<CompatState>,
    Caller(principal, _): Caller<Close>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Failure> {
    let query = list_query(query.as_deref())?;
    let mut notes = matching_notes(&state, &principal, &query).await?;
    let has_more = notes.len() > query.limit;
    notes.truncate(query.limit);
    let data: Vec<Value> = notes
        .iter()
        .map(|n| select_fields(render(n, &principal), &query.fields))
        .collect();
    Ok(Json(json!({ "has_more": has_more, "data": data })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notesd_field_paths_are_named_as_close_fields() {
        assert_eq!(close_field("note.subject.id"), "lead_id");
        assert_eq!(close_field("note.related_subjects[0].id"), "contact_id");
        assert_eq!(close_field("note.body.html"), "note_html");
        assert_eq!(close_field("note.body"), "note");
        assert_eq!(close_field("note.attachments[1].url"), "attachments[1].url");
        assert_eq!(
            close_field("note.attachments[0].size_bytes"),
            "attachments[0].size"
        );
        assert_eq!(close_field("occur_time_range"), "activity_at");
        assert_eq!(close_field("related_subject.id"), "contact_id");
        assert_eq!(close_field("note.titles"), "note.titles");
    }

    #[test]
    fn derived_ids_carry_the_uuid_and_imported_ids_do_not() {
        let uuid = Uuid::now_v7();
        assert_eq!(derived_uuid(&format!("acti_{}", uuid.simple())), Some(uuid));
        assert_eq!(
            derived_uuid("acti_kwWA3rOfy4BnaZ8QQk3RIIAz51dU9ayiluy1s961Oiw"),
            None
        );
        assert_eq!(derived_uuid(&uuid.simple().to_string()), None);
    }

    #[test]
    fn bounds_turn_inclusive_and_exclusive_operators_into_half_open_ranges() {
        let t = parse_time("t", "2024-01-01T00:00:00+00:00").unwrap();
        let micro = chrono::Duration::microseconds(1);
        let mut b = Bounds::default();
        b.add("gt", t);
        b.add("lte", t + chrono::Duration::minutes(1));
        assert_eq!(b.start, Some(t + micro));
        assert_eq!(b.end, Some(t + chrono::Duration::minutes(1) + micro));
        assert_eq!(
            parse_time("t", "2024-01-01 00:00:00.5 00:00").ok(),
            None,
            "a bare space-separated time is not taken for an offset"
        );
        assert_eq!(parse_time("t", "2024-01-01T00:00:00 00:00").unwrap(), t);
        assert_eq!(parse_time("t", "2024-01-01").unwrap(), t);
    }
}
