//! Zyntro: `POST /apis/v2/public/crm/addNotestoContact` adds a note to a
//! contact, or updates one when `note_id` is sent. See
//! docs/compat/zyntro.md for every field, the credentials and the codes.
//!
//! A Zyntro contact is the subject `contact/<contact_id>` of the subject
//! registry; its registered owner is Zyntro's "contact owner", the only
//! member who may write notes on it through this facade. Every answer is
//! HTTP 200 (internal failures aside) in Zyntro's envelope:
//! `{"data": …, "status": "success" | "error"}`.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CompatState;
use super::common::{
    Rejection, Vendor, admit, admit_under_quotas, method_not_allowed, read_body, update_as_read,
};
use crate::api::{NoteField, update_of};
use crate::domain::{DomainError, ErrorKind, Principal, Subject};
use crate::proto::notes::v1 as pb;

/// Zyntro's path for adding (or updating) a note on a contact.
pub(crate) const PATH: &str = "/apis/v2/public/crm/addNotestoContact";

/// Where Zyntro's paths start.
pub(crate) const PATH_PREFIX: &str = "/apis/";

/// The subject type Zyntro contacts are registered under.
pub(crate) const CONTACT_SUBJECT_TYPE: &str = "contact";

/// The largest request body read: a note is at most 10 MiB; JSON escaping
/// can double it.
const BODY_LIMIT: usize = 21 * 1024 * 1024;

pub(crate) fn routes() -> Router<CompatState> {
    Router::new().route(
        PATH,
        post(add_notes_to_contact).fallback(method_not_allowed::<Zyntro>),
    )
}

/// The Zyntro facade, for the shared refusals: Zyntro's envelope. A body
/// that cannot be read is answered HTTP 200 with `status: error`, as
/// Zyntro answers every error about a request; a path or method it does
/// not serve gets that HTTP status.
pub(crate) struct Zyntro;

impl Vendor for Zyntro {
    type Error = ZyntroError;

    fn reject(rejection: Rejection) -> ZyntroError {
        let http = match rejection {
            Rejection::UnknownRoute | Rejection::MethodNotAllowed | Rejection::Overloaded => {
                rejection.status()
            }
            Rejection::BadPathSegment
            | Rejection::BodyTooLarge(_)
            | Rejection::BodyUnreadable
            | Rejection::BodyTooSlow => StatusCode::OK,
        };
        ZyntroError {
            code: rejection.code(),
            messages: vec![rejection.message()],
            http,
        }
    }
}

// ---------------------------------------------------------------------------
// The wire: Zyntro's request and response shapes.
// ---------------------------------------------------------------------------

/// The request body, field for field as Zyntro documents it. Every field
/// is optional here so that a missing one is answered with Zyntro's own
/// message rather than a serde error; unknown fields are refused (a
/// misspelt `note_visiblity` must not silently make a private note).
/// No `Debug`: it holds the developer secret.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddNotesToContactRequest {
    pub api_key: Option<String>,
    pub developer_secret: Option<String>,
    pub org_id: Option<String>,
    pub member_id: Option<String>,
    pub contact_id: Option<String>,
    pub note: Option<String>,
    /// Present and non-empty: update that note instead of adding one.
    pub note_id: Option<String>,
    /// 0 private (default), 1 visible to the team.
    pub note_visibility: Option<i64>,
    /// 0 read-only for the team (default), 1 editable by the team.
    pub note_editable: Option<i64>,
}

/// The `data` of a success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct NoteData {
    pub note_id: String,
    pub contact_id: String,
    pub note_content: String,
    pub note_editable: u8,
    pub note_visibility: u8,
}

#[derive(Serialize)]
struct Success {
    data: NoteData,
    status: &'static str,
}

/// Zyntro's error envelope. `code` is notesd's addition: Zyntro clients
/// read `data` and `status`; `code` gives the machine-readable code of
/// Zyntro's error table (or a notesd reason for what Zyntro never names).
#[derive(Serialize)]
struct ErrorBody<'a> {
    data: &'a [String],
    status: &'static str,
    code: &'static str,
}

// ---------------------------------------------------------------------------
// Errors: Zyntro's codes and messages.
// ---------------------------------------------------------------------------

/// An answer with `status: error`.
#[derive(Debug)]
pub(crate) struct ZyntroError {
    pub code: &'static str,
    pub messages: Vec<String>,
    pub http: StatusCode,
}

impl ZyntroError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            messages: vec![message.into()],
            http: StatusCode::OK,
        }
    }

    fn missing_api_key() -> Self {
        Self::new("MISSING_API_KEY", "Missing service instance")
    }

    fn invalid_api_key() -> Self {
        Self::new("INVALID_API_KEY", "Invalid API Key")
    }

    fn ip_not_whitelisted() -> Self {
        Self::new("IP_NOT_WHITELISTED", "IP address not whitelisted")
    }

    fn invalid_developer_secret() -> Self {
        Self::new("INVALID_DEVELOPER_SECRET", "Invalid developer_secret")
    }

    fn missing_developer_secret() -> Self {
        Self::new("MISSING_DEVELOPER_SECRET", "Missing developer_secret")
    }

    /// One message per missing field, in Zyntro's order.
    fn missing_fields(messages: Vec<String>) -> Self {
        Self {
            code: "MISSING_FIELDS",
            messages,
            http: StatusCode::OK,
        }
    }

    fn contact_not_found() -> Self {
        Self::new("NOT_FOUND", "Contact does not exist")
    }

    fn note_not_found() -> Self {
        Self::new("NOT_FOUND", "Note does not exist")
    }

    fn wrong_org() -> Self {
        Self::new(
            "WRONG_ORG",
            "You are trying to add a note to a contact that does not belong to your organization",
        )
    }

    fn not_contact_owner() -> Self {
        Self::new(
            "NOT_OWNER",
            "The API only supports notes being added by the member that owns the contact.",
        )
    }

    fn invalid_field(message: impl Into<String>) -> Self {
        Self::new("INVALID_FIELD", message)
    }

    fn internal() -> Self {
        Self {
            code: "INTERNAL",
            messages: vec!["Internal error".to_owned()],
            http: StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What the note use cases answer, in Zyntro's terms. Authentication
/// errors are mapped where the credentials are checked, not here.
impl From<DomainError> for ZyntroError {
    fn from(err: DomainError) -> Self {
        err.log_cause("zyntro");
        match err.kind() {
            ErrorKind::NotFound => match err {
                DomainError::SubjectNotFound => Self::contact_not_found(),
                _ => Self::note_not_found(),
            },
            // A deleted note cannot be written through Zyntro, which has
            // no undelete: for Zyntro it does not exist.
            ErrorKind::FailedPrecondition => match err {
                DomainError::NoteDeleted => Self::note_not_found(),
                err => Self::new(err.reason(), err.to_string()),
            },
            ErrorKind::PermissionDenied => match err {
                DomainError::NotOwner(message) => Self::new("NOT_OWNER", message),
                err => Self::new(err.reason(), err.to_string()),
            },
            // A quota's refusal is the one error besides the server's own
            // failures that is not HTTP 200: 429, as every HTTP client's
            // retry logic expects (with Retry-After), in Zyntro's
            // envelope.
            ErrorKind::ResourceExhausted if err.quota().is_some() => Self {
                code: err.reason(),
                messages: vec![err.to_string()],
                http: StatusCode::TOO_MANY_REQUESTS,
            },
            // Validation (a note too large, a NUL character) and what Zyntro
            // never names: notesd's own reason and message.
            ErrorKind::InvalidArgument
            | ErrorKind::Unauthenticated
            | ErrorKind::Aborted
            | ErrorKind::AlreadyExists
            | ErrorKind::OutOfRange
            | ErrorKind::ResourceExhausted => Self::new(err.reason(), err.to_string()),
            // (A deadline is gRPC's: a facade request has none.)
            ErrorKind::Unavailable | ErrorKind::DeadlineExceeded => Self {
                code: err.reason(),
                messages: vec![err.to_string()],
                http: StatusCode::SERVICE_UNAVAILABLE,
            },
            ErrorKind::Internal => Self::internal(),
        }
    }
}

impl IntoResponse for ZyntroError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            data: &self.messages,
            status: "error",
            code: self.code,
        };
        (self.http, Json(body)).into_response()
    }
}

// ---------------------------------------------------------------------------
// The request, parsed.
// ---------------------------------------------------------------------------

/// A field's value, unless it is absent, null or blank.
fn present(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// A 0/1 flag; `None` when not sent.
fn flag(field: &str, value: Option<i64>) -> Result<Option<bool>, ZyntroError> {
    match value {
        None => Ok(None),
        Some(0) => Ok(Some(false)),
        Some(1) => Ok(Some(true)),
        Some(other) => Err(ZyntroError::invalid_field(format!(
            "{field} must be 0 or 1, not {other}"
        ))),
    }
}

/// The body's note fields once Zyntro's checks passed: all required
/// fields present, flags 0 or 1.
#[derive(Debug)]
pub(crate) struct ContactNote<'a> {
    pub org_id: &'a str,
    pub contact_id: &'a str,
    pub note: &'a str,
    /// Update this note instead of adding one.
    pub note_id: Option<&'a str>,
    /// `Some(true)`: visible to the team.
    pub visible: Option<bool>,
    /// `Some(true)`: editable by the team.
    pub editable: Option<bool>,
}

impl AddNotesToContactRequest {
    /// Zyntro's messages for the missing required fields, in its order.
    fn missing_fields(&self) -> Vec<String> {
        [
            (&self.org_id, "Missing org ID"),
            (&self.member_id, "Missing member ID"),
            (&self.contact_id, "Missing contact ID"),
            (&self.note, "Missing note"),
        ]
        .into_iter()
        .filter(|(value, _)| present(value).is_none())
        .map(|(_, message)| message.to_owned())
        .collect()
    }

    /// The note fields, or MISSING_FIELDS naming every missing one.
    pub(crate) fn contact_note(&self) -> Result<ContactNote<'_>, ZyntroError> {
        let missing = self.missing_fields();
        // `member_id` is required here; it was read as the actor already.
        let (Some(org_id), Some(_), Some(contact_id), Some(_)) = (
            present(&self.org_id),
            present(&self.member_id),
            present(&self.contact_id),
            present(&self.note),
        ) else {
            return Err(ZyntroError::missing_fields(missing));
        };
        Ok(ContactNote {
            org_id,
            contact_id,
            // The content as sent: leading and trailing space are the
            // writer's; only a blank note counts as missing.
            note: self.note.as_deref().unwrap_or_default(),
            note_id: present(&self.note_id),
            visible: flag("note_visibility", self.note_visibility)?,
            editable: flag("note_editable", self.note_editable)?,
        })
    }
}

// ---------------------------------------------------------------------------
// Zyntro <-> notes.v1.
// ---------------------------------------------------------------------------

fn contact_subject(contact_id: &str) -> pb::Subject {
    pb::Subject {
        r#type: CONTACT_SUBJECT_TYPE.to_owned(),
        id: contact_id.to_owned(),
    }
}

fn visibility(visible: bool) -> pb::Visibility {
    if visible {
        pb::Visibility::Team
    } else {
        pb::Visibility::Private
    }
}

fn edit_policy(editable: bool) -> pb::EditPolicy {
    if editable {
        pb::EditPolicy::Team
    } else {
        pb::EditPolicy::OwnerOnly
    }
}

fn text_body(text: &str) -> pb::NoteBody {
    pb::NoteBody {
        text: text.to_owned(),
        html: String::new(),
    }
}

/// A new note on the contact; the flags default to Zyntro's defaults
/// (private, read-only), not notesd's (team-visible).
pub(crate) fn add_request(note: &ContactNote<'_>) -> pb::AddNoteRequest {
    pb::AddNoteRequest {
        request_id: String::new(),
        note: Some(pb::Note {
            subject: Some(contact_subject(note.contact_id)),
            visibility: visibility(note.visible.unwrap_or(false)) as i32,
            edit_policy: edit_policy(note.editable.unwrap_or(false)) as i32,
            body: Some(text_body(note.note)),
            ..Default::default()
        }),
    }
}

/// An update of note `id`: its content, and the flags that were sent
/// (a flag left out keeps its value).
pub(crate) fn update_request(id: &str, note: &ContactNote<'_>) -> pb::UpdateNoteRequest {
    let mut fields = vec![NoteField::Body];
    let mut changes = pb::Note {
        id: id.to_owned(),
        body: Some(text_body(note.note)),
        ..Default::default()
    };
    if let Some(visible) = note.visible {
        changes.visibility = visibility(visible) as i32;
        fields.push(NoteField::Visibility);
    }
    if let Some(editable) = note.editable {
        changes.edit_policy = edit_policy(editable) as i32;
        fields.push(NoteField::EditPolicy);
    }
    update_of(changes, &fields)
}

/// A note as Zyntro returns it.
pub(crate) fn note_data(note: &pb::Note) -> NoteData {
    NoteData {
        note_id: note.id.clone(),
        contact_id: note
            .subject
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default(),
        note_content: note
            .body
            .as_ref()
            .map(|b| b.text.clone())
            .unwrap_or_default(),
        note_editable: u8::from(note.edit_policy == pb::EditPolicy::Team as i32),
        note_visibility: u8::from(note.visibility == pb::Visibility::Team as i32),
    }
}

// ---------------------------------------------------------------------------
// The handler.
// ---------------------------------------------------------------------------

async fn add_notes_to_contact(
    State(state): State<CompatState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&state, peer, &headers, body).await {
        Ok(data) => Json(Success {
            data,
            status: "success",
        })
        .into_response(),
        Err(err) => err.into_response(),
    }
}

/// Zyntro's credentials are in the body, so the body is read first, under
/// the budget of bodies whose caller is not known (`common::PreAuth`): at
/// most [`BODY_LIMIT`] bytes, then parsed, then the caller authenticated;
/// only then does the request take a permit of the budget of calls in
/// flight that authenticated calls share.
async fn handle(
    state: &CompatState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<NoteData, ZyntroError> {
    let _unknown = state
        .pre_auth
        .admit::<Zyntro>(peer.ip(), headers, BODY_LIMIT)?;
    let body = read_body::<Zyntro>(body, BODY_LIMIT).await?;
    let request: AddNotesToContactRequest = serde_json::from_slice(&body)
        .map_err(|err| ZyntroError::invalid_field(format!("Invalid request body: {err}")))?;

    let principal = authenticate(state, peer, headers, &request).await?;
    let _in_flight = admit::<Zyntro>(state)?;
    // Its quotas, once its caller is known: after its body, which holds
    // its credentials.
    let _admitted = admit_under_quotas::<Zyntro>(state, &principal)
        .await
        .map_err(ZyntroError::from)?;
    let note = request.contact_note()?;
    // The key's tenant is its organization: another org's id is a key
    // that no user of that org holds.
    if note.org_id != principal.tenant.as_str() {
        return Err(ZyntroError::invalid_api_key());
    }
    let contact = contact_of(state, &principal, note.contact_id).await?;
    if contact.owner != principal.member {
        return Err(ZyntroError::not_contact_owner());
    }

    let written = match note.note_id {
        None => state.api.add_note(&principal, &add_request(&note)).await?,
        Some(note_id) => {
            // The note must be one of this contact's: Zyntro updates a
            // note on the contact named, never moves one across. It is
            // written only if it is still the note checked.
            let (principal, note) = (&principal, &note);
            update_as_read(&state.api, principal, || async move {
                let current = state
                    .api
                    .get_note(
                        principal,
                        &pb::GetNoteRequest {
                            id: note_id.to_owned(),
                        },
                    )
                    .await
                    .map_err(|err| match err {
                        DomainError::InvalidField(_) => ZyntroError::note_not_found(),
                        other => other.into(),
                    })?;
                if current.subject.as_ref() != Some(&contact_subject(note.contact_id)) {
                    return Err(ZyntroError::note_not_found());
                }
                let request = update_request(&current.id, note);
                Ok((current, Some(request)))
            })
            .await?
        }
    };
    Ok(note_data(&written))
}

/// Zyntro's credentials: `api_key` is the `nk_<id>` part of a notesd key,
/// `developer_secret` what follows the next `_`. `member_id` is the
/// acting member (a service key's actor; a member key's own member).
async fn authenticate(
    state: &CompatState,
    peer: SocketAddr,
    headers: &HeaderMap,
    request: &AddNotesToContactRequest,
) -> Result<Principal, ZyntroError> {
    let api_key = present(&request.api_key).ok_or_else(ZyntroError::missing_api_key)?;
    let secret =
        present(&request.developer_secret).ok_or_else(ZyntroError::missing_developer_secret)?;
    if !state.callers.keys().key_is_live(api_key).await? {
        return Err(ZyntroError::invalid_api_key());
    }
    let key = format!("{api_key}_{secret}");
    state
        .callers
        .authenticate(
            Some(&key),
            present(&request.member_id),
            headers,
            Some(peer.ip()),
            // The facades keep their vendor's keys.
            None,
        )
        .await
        .map_err(|err| match err {
            // The key id is live, so it is the secret that is wrong.
            DomainError::ApiKeyMissing | DomainError::ApiKeyInvalid => {
                ZyntroError::invalid_developer_secret()
            }
            DomainError::IpNotAllowed => ZyntroError::ip_not_whitelisted(),
            // A service key needs member_id to know who acts.
            DomainError::ActorMissing => ZyntroError::missing_fields(request.missing_fields()),
            // A member key acting as someone else: no user of the key
            // matches member_id.
            DomainError::ActorMismatch => ZyntroError::invalid_api_key(),
            DomainError::MissingField(_)
            | DomainError::InvalidField(_)
            | DomainError::FieldTooLarge(_) => {
                ZyntroError::invalid_field(format!("Invalid member ID: {err}"))
            }
            other => other.into(),
        })
}

/// The contact's registration in the caller's tenant: NOT_FOUND when no
/// tenant registered it, WRONG_ORG when another did.
async fn contact_of(
    state: &CompatState,
    principal: &Principal,
    contact_id: &str,
) -> Result<crate::domain::SubjectRegistration, ZyntroError> {
    // Zyntro contact ids are UUIDs: anything else names no contact.
    if Uuid::try_parse(contact_id).is_err() {
        return Err(ZyntroError::contact_not_found());
    }
    let subject = Subject::parse("contact_id", CONTACT_SUBJECT_TYPE, contact_id)?;
    match state.subjects.get(principal, &subject).await {
        Err(DomainError::SubjectNotFound) => {
            if state
                .subjects
                .registered_elsewhere(principal, &subject)
                .await?
            {
                Err(ZyntroError::wrong_org())
            } else {
                Err(ZyntroError::contact_not_found())
            }
        }
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> AddNotesToContactRequest {
        serde_json::from_value(json).expect("a Zyntro request")
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<AddNotesToContactRequest>(
            serde_json::json!({"note": "x", "note_visiblity": 1}),
        )
        .err()
        .expect("refused");
        assert!(err.to_string().contains("note_visiblity"), "{err}");
    }

    #[test]
    fn every_missing_field_gets_zyntros_message() {
        let err = request(serde_json::json!({"note": "  ", "org_id": "o"}))
            .contact_note()
            .expect_err("missing fields");
        assert_eq!(err.code, "MISSING_FIELDS");
        assert_eq!(
            err.messages,
            ["Missing member ID", "Missing contact ID", "Missing note"]
        );
    }

    #[test]
    fn flags_default_to_private_and_read_only() {
        let body = request(serde_json::json!({
            "org_id": "o", "member_id": "m",
            "contact_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "note": "hi",
        }));
        let note = add_request(&body.contact_note().unwrap()).note.unwrap();
        assert_eq!(note.visibility, pb::Visibility::Private as i32);
        assert_eq!(note.edit_policy, pb::EditPolicy::OwnerOnly as i32);
    }

    #[test]
    fn a_flag_other_than_0_or_1_is_invalid() {
        let body = request(serde_json::json!({
            "org_id": "o", "member_id": "m", "contact_id": "c", "note": "hi",
            "note_editable": 2,
        }));
        assert_eq!(body.contact_note().unwrap_err().code, "INVALID_FIELD");
    }

    #[test]
    fn an_update_changes_only_the_flags_sent() {
        let body = request(serde_json::json!({
            "org_id": "o", "member_id": "m", "contact_id": "c", "note": "hi",
            "note_visibility": 1,
        }));
        let update = update_request("id", &body.contact_note().unwrap());
        assert_eq!(update.update_mask.unwrap().paths, ["body", "visibility"]);
    }
}
