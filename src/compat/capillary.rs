//! Capillary customer API v1.1 notes, served at Capillary's paths and in
//! its JSON shapes (docs/compat/capillary.md maps every field):
//!
//! - `POST /v1.1/customer/notes`: adds a note (no `id`) or updates one (with
//!   the `id` this facade returned), for one or several customers, each with
//!   one or several notes. Every note is its own AddNote or UpdateNote, so a
//!   bad note fails alone and is never half-written.
//! - `GET /v1.1/customer/notes?{identifier}={value}`: the customer's notes.
//!
//! A customer becomes the subject `customer` / `<kind>:<value>` (say
//! `mobile:44700900999`): the first identifier sent in the order mobile,
//! email, external_id, user_id, loyalty_id is the subject, the others are
//! related subjects. Note ids are the notes' numbers (`note_numbers`).

use std::collections::HashSet;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::CompatState;
use super::common::{
    Caller, KeySource, Rejection, Vendor, from_timestamp, method_not_allowed, read_body,
    to_timestamp,
};
use crate::api::{NoteField, update_of};
use crate::auth::API_KEY_HEADER;
use crate::domain::list::MAX_PAGE_SIZE;
use crate::domain::{DomainError, ErrorKind, Principal, Subject};
use crate::proto::notes::v1 as pb;

/// Where Capillary's paths start.
pub(crate) const PATH_PREFIX: &str = "/v1.1/";

pub(crate) const NOTES_PATH: &str = "/v1.1/customer/notes";

/// Capillary's limit on a note's description, in characters.
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 255;

/// The subject type of every Capillary customer.
pub(crate) const SUBJECT_TYPE: &str = "customer";

pub(crate) fn routes() -> Router<CompatState> {
    Router::new().route(
        NOTES_PATH,
        get(list_notes)
            .post(add_or_update_notes)
            .fallback(method_not_allowed::<Capillary>),
    )
}

/// The largest request body read, after authentication. Capillary
/// documents none; descriptions are at most 255 characters, so 2 MiB holds
/// thousands of notes.
pub(crate) const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The Capillary facade, for the shared refusals: Capillary's
/// request-level `response.status`.
pub(crate) struct Capillary;

impl Vendor for Capillary {
    type Error = Response;

    fn reject(rejection: Rejection) -> Response {
        request_error(rejection.status(), rejection.message())
    }
}

// ---------------------------------------------------------------------------
// Item codes (item_status.code). Capillary publishes no item codes for notes
// besides 1000, so the error codes are notesd's own; see the docs.
// ---------------------------------------------------------------------------

pub(crate) const CODE_SUCCESS: u32 = 1000;
pub(crate) const CODE_IDENTIFIER_MISSING: u32 = 1101;
pub(crate) const CODE_INVALID_CUSTOMER: u32 = 1102;
pub(crate) const CODE_NOTES_MISSING: u32 = 1103;
pub(crate) const CODE_DESCRIPTION_MISSING: u32 = 1201;
pub(crate) const CODE_DESCRIPTION_TOO_LONG: u32 = 1202;
pub(crate) const CODE_INVALID_DATE: u32 = 1203;
pub(crate) const CODE_INVALID_NOTE_ID: u32 = 1204;
pub(crate) const CODE_NOTE_NOT_FOUND: u32 = 1205;
pub(crate) const CODE_NOT_ALLOWED: u32 = 1206;
pub(crate) const CODE_NOTE_DELETED: u32 = 1207;
pub(crate) const CODE_INVALID_NOTE: u32 = 1208;
pub(crate) const CODE_CONFLICT: u32 = 1209;
pub(crate) const CODE_UNAVAILABLE: u32 = 1298;
pub(crate) const CODE_INTERNAL: u32 = 1299;

/// Why one customer or one note was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ItemError {
    code: u32,
    message: String,
}

impl ItemError {
    fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<DomainError> for ItemError {
    fn from(err: DomainError) -> Self {
        err.log_cause("capillary");
        let code = match err.kind() {
            ErrorKind::NotFound => CODE_NOTE_NOT_FOUND,
            ErrorKind::PermissionDenied | ErrorKind::Unauthenticated => CODE_NOT_ALLOWED,
            ErrorKind::FailedPrecondition => CODE_NOTE_DELETED,
            ErrorKind::Aborted | ErrorKind::AlreadyExists => CODE_CONFLICT,
            ErrorKind::InvalidArgument | ErrorKind::OutOfRange => CODE_INVALID_NOTE,
            ErrorKind::Unavailable | ErrorKind::ResourceExhausted | ErrorKind::DeadlineExceeded => {
                CODE_UNAVAILABLE
            }
            ErrorKind::Internal => return Self::new(CODE_INTERNAL, "internal error"),
        };
        Self::new(code, err.to_string())
    }
}

/// A failure of the whole request (authentication, listing), in
/// Capillary's request-level shape.
fn request_failure(err: DomainError) -> Response {
    err.log_cause("capillary");
    let http = match err.kind() {
        ErrorKind::Unauthenticated => {
            return request_error(
                StatusCode::UNAUTHORIZED,
                format!(
                    "Please check your username/password or authentication token: {} ({})",
                    err,
                    err.reason()
                ),
            );
        }
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::InvalidArgument | ErrorKind::OutOfRange => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Aborted | ErrorKind::FailedPrecondition | ErrorKind::AlreadyExists => {
            StatusCode::CONFLICT
        }
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Internal => {
            return request_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    request_error(http, format!("{err} ({})", err.reason()))
}

// ---------------------------------------------------------------------------
// The request, shaped like Capillary's JSON.
// ---------------------------------------------------------------------------

/// A value Capillary sends as a string or as a bare number (`"15"` or `15`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
}

impl Scalar {
    fn into_text(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Integer(n) => n.to_string(),
        }
    }
}

/// Capillary's JSON mirrors XML: a single item is often not wrapped in an
/// array.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::Many(items) => items,
            Self::One(item) => vec![item],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    root: Root,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Root {
    customer: OneOrMany<Value>,
}

/// One customer of the request. Parsed per customer, so a bad customer
/// fails alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerIn {
    mobile: Option<Scalar>,
    email: Option<Scalar>,
    external_id: Option<Scalar>,
    user_id: Option<Scalar>,
    loyalty_id: Option<Scalar>,
    /// Ignored: the store associate acting; notesd takes the actor from the
    /// key (or `x-actor-id`). Echoed back.
    #[serde(rename = "associate_id")]
    _associate_id: Option<Scalar>,
    /// Ignored: profile fields belong to Capillary's customer API; notesd
    /// keeps no customer profiles.
    #[serde(rename = "firstname")]
    _firstname: Option<Value>,
    #[serde(rename = "lastname")]
    _lastname: Option<Value>,
    /// Checked here for its shape; its notes are parsed one by one.
    #[serde(rename = "notes")]
    _notes: Option<NotesIn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotesIn {
    #[serde(rename = "note")]
    _note: Option<OneOrMany<Value>>,
}

/// One note of a customer. Parsed per note, so a bad note fails alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteIn {
    id: Option<Scalar>,
    date: Option<String>,
    description: Option<String>,
}

// ---------------------------------------------------------------------------
// Customers and their identifiers.
// ---------------------------------------------------------------------------

/// The identifiers a customer may carry, in the order that picks the
/// subject among several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentifierKind {
    Mobile,
    Email,
    ExternalId,
    UserId,
    LoyaltyId,
}

impl IdentifierKind {
    const PRIORITY: [Self; 5] = [
        Self::Mobile,
        Self::Email,
        Self::ExternalId,
        Self::UserId,
        Self::LoyaltyId,
    ];

    /// The field name, also the prefix of the subject id.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Mobile => "mobile",
            Self::Email => "email",
            Self::ExternalId => "external_id",
            Self::UserId => "user_id",
            Self::LoyaltyId => "loyalty_id",
        }
    }

    /// A GET query parameter naming an identifier (`id` is the user id).
    fn from_query(name: &str) -> Option<Self> {
        match name {
            "mobile" => Some(Self::Mobile),
            "email" => Some(Self::Email),
            "external_id" => Some(Self::ExternalId),
            "id" | "user_id" => Some(Self::UserId),
            "loyalty_id" => Some(Self::LoyaltyId),
            _ => None,
        }
    }

    /// The value as kept in the subject id: trimmed, emails lowercased
    /// (Capillary matches them without case).
    fn normalize(self, value: &str) -> String {
        let value = value.trim();
        match self {
            Self::Email => value.to_lowercase(),
            _ => value.to_owned(),
        }
    }

    /// The subject of the customer with this identifier.
    pub(crate) fn subject(self, value: &str) -> Result<Subject, DomainError> {
        Subject::parse(
            self.key(),
            SUBJECT_TYPE,
            &format!("{}:{}", self.key(), self.normalize(value)),
        )
    }
}

/// A customer as a set of subjects: the first is the note's subject, the
/// others its related subjects.
#[derive(Debug)]
struct Customer {
    subjects: Vec<Subject>,
}

impl Customer {
    fn parse(customer: &CustomerIn) -> Result<Self, ItemError> {
        let mut subjects = Vec::new();
        for kind in IdentifierKind::PRIORITY {
            let value = match kind {
                IdentifierKind::Mobile => &customer.mobile,
                IdentifierKind::Email => &customer.email,
                IdentifierKind::ExternalId => &customer.external_id,
                IdentifierKind::UserId => &customer.user_id,
                IdentifierKind::LoyaltyId => &customer.loyalty_id,
            };
            let Some(value) = value.clone().map(Scalar::into_text) else {
                continue;
            };
            if value.trim().is_empty() {
                continue;
            }
            let subject = kind
                .subject(&value)
                .map_err(|err| ItemError::new(CODE_INVALID_CUSTOMER, err.to_string()))?;
            subjects.push(subject);
        }
        if subjects.is_empty() {
            return Err(ItemError::new(
                CODE_IDENTIFIER_MISSING,
                "customer identifier missing: send mobile, email, external_id or user_id",
            ));
        }
        Ok(Self { subjects })
    }

    fn owns(&self, note: &pb::Note) -> bool {
        std::iter::once(note.subject.as_ref())
            .flatten()
            .chain(note.related_subjects.iter())
            .any(|s| {
                self.subjects
                    .iter()
                    .any(|mine| mine.kind == s.r#type && mine.id == s.id)
            })
    }

    fn subject(&self) -> pb::Subject {
        subject_to_proto(&self.subjects[0])
    }

    fn related_subjects(&self) -> Vec<pb::Subject> {
        self.subjects[1..].iter().map(subject_to_proto).collect()
    }
}

fn subject_to_proto(subject: &Subject) -> pb::Subject {
    pb::Subject {
        r#type: subject.kind.clone(),
        id: subject.id.clone(),
    }
}

// ---------------------------------------------------------------------------
// Notes.
// ---------------------------------------------------------------------------

/// The Capillary date format, in UTC.
const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// `YYYY-MM-DD HH:MM:SS`, or `YYYY-MM-DD` (midnight), read as UTC; years 1
/// to 9999 (`domain::time`).
pub(crate) fn parse_date(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    NaiveDateTime::parse_from_str(value, DATE_FORMAT)
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .map(|t| t.and_utc())
        .filter(|t| crate::domain::time::in_range(*t))
}

pub(crate) fn format_date(time: DateTime<Utc>) -> String {
    time.format(DATE_FORMAT).to_string()
}

/// What a valid note asks for.
#[derive(Debug)]
struct NoteChange {
    /// The note's number: an update. None: an add.
    number: Option<i64>,
    description: String,
    occurred_at: Option<DateTime<Utc>>,
}

impl NoteChange {
    fn parse(note: NoteIn) -> Result<Self, ItemError> {
        let description = note.description.unwrap_or_default();
        if description.trim().is_empty() {
            return Err(ItemError::new(
                CODE_DESCRIPTION_MISSING,
                "note description is required",
            ));
        }
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ItemError::new(
                CODE_DESCRIPTION_TOO_LONG,
                format!("note description is longer than {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        let occurred_at = match note.date.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(date) => Some(parse_date(date).ok_or_else(|| {
                ItemError::new(
                    CODE_INVALID_DATE,
                    format!("note date `{date}` is not YYYY-MM-DD HH:MM:SS"),
                )
            })?),
        };
        let number = match note.id.map(Scalar::into_text) {
            None => None,
            Some(id) if id.trim().is_empty() => None,
            Some(id) => Some(
                id.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        ItemError::new(
                            CODE_INVALID_NOTE_ID,
                            format!("note id `{id}` is not a positive integer"),
                        )
                    })?,
            ),
        };
        Ok(Self {
            number,
            description,
            occurred_at,
        })
    }
}

/// A note written: its number and state after the write.
struct Written {
    number: i64,
    note: pb::Note,
    updated: bool,
}

/// Adds or updates one note of `customer` through [`crate::api::NotesApi`].
async fn write_note(
    state: &CompatState,
    principal: &Principal,
    customer: &Customer,
    change: NoteChange,
) -> Result<Written, ItemError> {
    let body = Some(pb::NoteBody {
        text: change.description,
        html: String::new(),
    });
    let occur_time = change.occurred_at.map(to_timestamp);
    let (note, updated) = match change.number {
        None => {
            let request = pb::AddNoteRequest {
                request_id: String::new(),
                note: Some(pb::Note {
                    subject: Some(customer.subject()),
                    related_subjects: customer.related_subjects(),
                    visibility: pb::Visibility::Team as i32,
                    // Capillary has no author-only notes: anyone of the org
                    // updates any note by its id.
                    edit_policy: pb::EditPolicy::Team as i32,
                    body,
                    occur_time,
                    ..Default::default()
                }),
            };
            (state.api.add_note(principal, &request).await?, false)
        }
        Some(number) => {
            let id = state.api.note_id_for_number(principal, number).await?;
            let current = state
                .api
                .get_note(principal, &pb::GetNoteRequest { id })
                .await?;
            // A note of another customer is not this customer's note.
            if !customer.owns(&current) {
                return Err(DomainError::NoteNotFound.into());
            }
            let mut fields = vec![NoteField::Body];
            if occur_time.is_some() {
                fields.push(NoteField::OccurTime);
            }
            let request = update_of(
                pb::Note {
                    id: current.id,
                    // Nobody changed it between the check and the update.
                    etag: current.etag,
                    body,
                    occur_time,
                    ..Default::default()
                },
                &fields,
            );
            (state.api.update_note(principal, &request).await?, true)
        }
    };
    let number = number_of(state, principal, &note.id).await?;
    Ok(Written {
        number,
        note,
        updated,
    })
}

/// The number (Capillary id) of a note the caller has just read or written.
async fn number_of(
    state: &CompatState,
    principal: &Principal,
    id: &str,
) -> Result<i64, DomainError> {
    Ok(state.api.note_numbers(principal, &[id]).await?[0])
}

// ---------------------------------------------------------------------------
// Responses.
// ---------------------------------------------------------------------------

fn item_status(result: Result<&str, &ItemError>) -> Value {
    match result {
        Ok(message) => json!({
            "success": "true",
            "code": CODE_SUCCESS.to_string(),
            "message": message,
            "warnings": {"warning": []},
        }),
        Err(err) => json!({
            "success": "false",
            "code": err.code.to_string(),
            "message": err.message,
            "warnings": {"warning": []},
        }),
    }
}

/// One item as an object, several as an array, as Capillary's XML-born JSON
/// does; none as an empty array.
fn one_or_many(mut items: Vec<Value>) -> Value {
    if items.len() == 1 {
        items.remove(0)
    } else {
        Value::Array(items)
    }
}

fn text_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// A customer's identifiers as Capillary echoes them: the four usual ones
/// always (empty when not sent), loyalty_id and associate_id when sent.
fn echo_identifiers(raw: &Value) -> Map<String, Value> {
    let mut echo = Map::new();
    for key in ["user_id", "mobile", "email", "external_id"] {
        echo.insert(key.to_owned(), Value::String(text_of(raw.get(key))));
    }
    for key in ["loyalty_id", "associate_id"] {
        if let Some(value) = raw.get(key) {
            echo.insert(key.to_owned(), Value::String(text_of(Some(value))));
        }
    }
    echo
}

/// A response with Capillary's envelope.
fn capillary_response(http: StatusCode, body: Value) -> Response {
    (
        http,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A request-level failure: no customer was looked at.
fn request_error(http: StatusCode, message: impl Into<String>) -> Response {
    capillary_response(
        http,
        json!({"response": {"status": {
            "success": "false",
            "code": http.as_u16().to_string(),
            "message": message.into(),
        }}}),
    )
}

fn bad_request(detail: impl std::fmt::Display) -> Response {
    request_error(
        StatusCode::BAD_REQUEST,
        format!("Input is invalid, Please check request parameters or input xml/json: {detail}"),
    )
}

// ---------------------------------------------------------------------------
// Authentication and the query string.
// ---------------------------------------------------------------------------

/// The notesd key: `X-API-Key`, else `Authorization: Bearer <key>`, else
/// `Authorization: Basic` with the key as user name (or, with an empty
/// user name, as password).
fn presented_key(headers: &HeaderMap) -> Option<String> {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(key) = header_text(API_KEY_HEADER) {
        return Some(key.to_owned());
    }
    let authorization = header_text(header::AUTHORIZATION.as_str())?;
    let (scheme, credentials) = authorization.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(STANDARD.decode(credentials).ok()?).ok()?;
        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        let key = if user.is_empty() { password } else { user };
        return Some(key.to_owned());
    }
    None
}

impl KeySource for Capillary {
    fn key(headers: &HeaderMap) -> Result<Option<String>, DomainError> {
        Ok(presented_key(headers))
    }

    fn refuse(err: DomainError) -> Response {
        request_failure(err)
    }
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `format=json` is accepted (and is the default); XML is not served: the
/// refusal for any other format.
fn format_refusal(value: &str) -> Option<Response> {
    (!value.eq_ignore_ascii_case("json")).then(|| {
        bad_request(format!(
            "format={value} is not supported: notesd answers format=json only"
        ))
    })
}

// ---------------------------------------------------------------------------
// Handlers.
// ---------------------------------------------------------------------------

/// `POST /v1.1/customer/notes`: adds and updates notes.
async fn add_or_update_notes(
    State(state): State<CompatState>,
    Caller(principal, _): Caller<Capillary>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let body = match read_body::<Capillary>(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    for (name, value) in query_pairs(query.as_deref()) {
        if name != "format" {
            return bad_request(format!("unknown query parameter `{name}`"));
        }
        if let Some(refusal) = format_refusal(&value) {
            return refusal;
        }
    }
    let envelope: Envelope = match serde_json::from_slice(&body) {
        Ok(envelope) => envelope,
        Err(err) => return bad_request(err),
    };
    let customers = envelope.root.customer.into_vec();
    if customers.is_empty() {
        return bad_request("root.customer holds no customer");
    }

    let total = customers.len();
    let mut succeeded = 0;
    let (mut written, mut failed) = (0, 0);
    let mut unavailable = 0;
    let mut echoes = Vec::with_capacity(total);
    for raw in customers {
        let outcome = handle_customer(&state, &principal, raw).await;
        succeeded += usize::from(outcome.failed == 0);
        written += outcome.written;
        failed += outcome.failed;
        unavailable += outcome.unavailable;
        echoes.push(outcome.echo);
    }

    // The request's status counts notes: one bad note does not make its
    // written neighbours look failed. `total` and `success_count` count
    // customers, as Capillary's samples do.
    let (http, code, success, message) = if failed == 0 {
        (StatusCode::OK, 200, "true", "Success")
    } else if written == 0 && unavailable == failed {
        // Nothing written, and only because the database is out of reach:
        // the same request, sent again, may succeed whole.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            503,
            "false",
            "The service is unavailable, please retry later",
        )
    } else if written > 0 {
        (
            StatusCode::OK,
            201,
            "false",
            "Some requests have failed due to errors",
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            500,
            "false",
            "All requests have failed due to errors",
        )
    };
    capillary_response(
        http,
        json!({"response": {
            "status": {
                "success": success,
                "code": code.to_string(),
                "message": message,
                "total": total.to_string(),
                "success_count": succeeded.to_string(),
            },
            "customer": one_or_many(echoes),
        }}),
    )
}

/// One customer's part of the response, and how many of its notes were
/// written and not written (a customer that fails as a whole counts one).
struct CustomerOutcome {
    echo: Value,
    written: usize,
    failed: usize,
    /// How many notes failed because the database was unavailable.
    unavailable: usize,
}

impl CustomerOutcome {
    fn failed(echo: Map<String, Value>, notes: usize) -> Self {
        Self {
            echo: Value::Object(echo),
            written: 0,
            failed: notes.max(1),
            unavailable: 0,
        }
    }
}

/// Writes one customer's notes, each on its own.
async fn handle_customer(
    state: &CompatState,
    principal: &Principal,
    raw: Value,
) -> CustomerOutcome {
    let mut echo = echo_identifiers(&raw);
    if !raw.is_object() {
        let err = ItemError::new(CODE_INVALID_CUSTOMER, "a customer must be a JSON object");
        echo.insert("notes".to_owned(), json!({"note": []}));
        echo.insert("item_status".to_owned(), item_status(Err(&err)));
        return CustomerOutcome::failed(echo, 0);
    }
    let raw_notes: Vec<Value> = raw
        .get("notes")
        .and_then(|n| n.get("note"))
        .cloned()
        .map(|n| match n {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            one => vec![one],
        })
        .unwrap_or_default();

    let customer = serde_json::from_value::<CustomerIn>(raw)
        .map_err(|err| ItemError::new(CODE_INVALID_CUSTOMER, format!("customer: {err}")))
        .and_then(|customer| Customer::parse(&customer))
        .and_then(|customer| {
            if raw_notes.is_empty() {
                Err(ItemError::new(
                    CODE_NOTES_MISSING,
                    "customer has no notes.note",
                ))
            } else {
                Ok(customer)
            }
        });
    let customer = match customer {
        Ok(customer) => customer,
        Err(err) => {
            // Nothing of this customer is written; each note says why.
            let notes = raw_notes
                .iter()
                .map(|note| note_echo(note, Err(&err)))
                .collect();
            echo.insert("notes".to_owned(), json!({"note": one_or_many(notes)}));
            echo.insert("item_status".to_owned(), item_status(Err(&err)));
            return CustomerOutcome::failed(echo, raw_notes.len());
        }
    };

    let mut notes = Vec::with_capacity(raw_notes.len());
    let mut first_error: Option<ItemError> = None;
    let mut failed = 0;
    let mut unavailable = 0;
    let (mut added, mut updated) = (0, 0);
    for raw_note in raw_notes {
        let result = match serde_json::from_value::<NoteIn>(raw_note.clone()) {
            Err(err) => Err(ItemError::new(CODE_INVALID_NOTE, format!("note: {err}"))),
            Ok(note) => match NoteChange::parse(note) {
                Err(err) => Err(err),
                Ok(change) => write_note(state, principal, &customer, change).await,
            },
        };
        match result {
            Ok(written) => {
                if written.updated {
                    updated += 1;
                } else {
                    added += 1;
                }
                notes.push(written_echo(&written));
            }
            Err(err) => {
                failed += 1;
                unavailable += usize::from(err.code == CODE_UNAVAILABLE);
                notes.push(note_echo(&raw_note, Err(&err)));
                first_error.get_or_insert(err);
            }
        }
    }
    let total = notes.len();
    echo.insert("notes".to_owned(), json!({"note": one_or_many(notes)}));
    let status = match first_error {
        None => {
            let message = match (added, updated) {
                (_, 0) => "Customer note added successfully",
                (0, _) => "Customer note updated successfully",
                _ => "Customer note added/updated successfully",
            };
            item_status(Ok(message))
        }
        Some(first) => item_status(Err(&ItemError::new(
            first.code,
            format!("{failed} of {total} notes failed: {}", first.message),
        ))),
    };
    echo.insert("item_status".to_owned(), status);
    CustomerOutcome {
        echo: Value::Object(echo),
        written: total - failed,
        failed,
        unavailable,
    }
}

/// A note that was not written, echoed as sent.
fn note_echo(raw: &Value, result: Result<&str, &ItemError>) -> Value {
    json!({
        "id": text_of(raw.get("id")),
        "date": text_of(raw.get("date")),
        "description": text_of(raw.get("description")),
        "item_status": item_status(result),
    })
}

fn written_echo(written: &Written) -> Value {
    let message = if written.updated {
        "Customer note updated successfully"
    } else {
        "Customer note added successfully"
    };
    json!({
        "id": written.number.to_string(),
        "date": from_timestamp(written.note.occur_time.as_ref()).map(format_date).unwrap_or_default(),
        "description": written.note.body.as_ref().map(|b| b.text.clone()).unwrap_or_default(),
        "item_status": item_status(Ok(message)),
    })
}

/// `GET /v1.1/customer/notes?{identifier}={value}`: the customer's notes,
/// newest first (at most [`MAX_PAGE_SIZE`]).
async fn list_notes(
    State(state): State<CompatState>,
    Caller(principal, _): Caller<Capillary>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut identifiers = Vec::new();
    let mut seen = HashSet::new();
    for (name, value) in query_pairs(query.as_deref()) {
        if !seen.insert(name.clone()) {
            return bad_request(format!("query parameter `{name}` is repeated"));
        }
        if name == "format" {
            if let Some(refusal) = format_refusal(&value) {
                return refusal;
            }
            continue;
        }
        match IdentifierKind::from_query(&name) {
            Some(kind) => identifiers.push((kind, value)),
            None => return bad_request(format!("unknown query parameter `{name}`")),
        }
    }
    let [(kind, value)] = identifiers.as_slice() else {
        return bad_request(
            "send exactly one customer identifier: mobile, email, external_id or id",
        );
    };
    if value.trim().is_empty() {
        return bad_request(format!("{} is empty", kind.key()));
    }
    let subject = match kind.subject(value) {
        Ok(subject) => subject,
        Err(err) => return bad_request(err),
    };
    // A customer's notes are those about any of its identifiers: the
    // identifier a note was written with first is its subject, the others
    // its related subjects. The page keeps gRPC's response budget:
    // descriptions written over gRPC may be megabytes each.
    let subject = subject_to_proto(&subject);
    let listed = async {
        let notes = state
            .api
            .list_notes_about(&principal, &subject, MAX_PAGE_SIZE)
            .await?;
        let ids: Vec<&str> = notes.iter().map(|note| note.id.as_str()).collect();
        let numbers = state.api.note_numbers(&principal, &ids).await?;
        Ok::<_, DomainError>((notes, numbers))
    }
    .await;
    let (notes, numbers) = match listed {
        Ok(listed) => listed,
        Err(err) => return request_failure(err),
    };
    let notes = notes
        .into_iter()
        .zip(numbers)
        .map(|(note, number)| {
            json!({
                "id": number.to_string(),
                "description": note.body.map(|body| body.text).unwrap_or_default(),
                "added_on": from_timestamp(note.occur_time.as_ref())
                    .map(format_date)
                    .unwrap_or_default(),
            })
        })
        .collect();
    let mut customer = Map::new();
    for key in ["user_id", "mobile", "email", "external_id"] {
        customer.insert(key.to_owned(), Value::String(String::new()));
    }
    customer.insert(
        kind.key().to_owned(),
        Value::String(value.trim().to_owned()),
    );
    customer.insert("notes".to_owned(), json!({"note": one_or_many(notes)}));
    customer.insert(
        "item_status".to_owned(),
        item_status(Ok("Customer note retrieved successfully")),
    );
    capillary_response(
        StatusCode::OK,
        json!({"response": {
            "status": {"success": "true", "code": "200", "message": "Success"},
            "customer": customer,
        }}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_in_capillary_format_and_as_plain_days() {
        assert_eq!(
            parse_date("2016-05-05 15:15:00")
                .map(format_date)
                .as_deref(),
            Some("2016-05-05 15:15:00")
        );
        assert_eq!(
            parse_date("2016-05-05").map(format_date).as_deref(),
            Some("2016-05-05 00:00:00")
        );
        assert_eq!(parse_date("05/05/2016"), None);
        assert_eq!(parse_date("2016-02-30 10:00:00"), None);
        assert_eq!(parse_date("+10000-01-01 00:00:00"), None);
        assert_eq!(parse_date("-0001-01-01"), None);
    }

    #[test]
    fn the_first_identifier_in_priority_order_is_the_subject() {
        let customer: CustomerIn = serde_json::from_value(json!({
            "user_id": 15, "email": "Cat@Example.com", "mobile": "44700900999",
            "notes": {"note": {"description": "x"}}
        }))
        .unwrap();
        let customer = Customer::parse(&customer).unwrap();
        let ids: Vec<&str> = customer.subjects.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["mobile:44700900999", "email:cat@example.com", "user_id:15"]
        );
    }

    #[test]
    fn basic_auth_carries_the_key_as_user_name() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("nk_key:");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().unwrap(),
        );
        assert_eq!(presented_key(&headers).as_deref(), Some("nk_key"));
    }
}
