//! The one error vocabulary of notesd. Every variant has a stable
//! UPPER_SNAKE reason (see `docs/errors.md`) and one [`ErrorKind`]: the
//! classification each edge renders (gRPC as a status code, each vendor
//! facade as its own status and body). Edges match on the kind with no
//! catch-all arm, so a new kind does not compile until every edge says what
//! it means.

/// What sort of failure an error is, whatever the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed; it names the field.
    InvalidArgument,
    /// No usable credentials.
    Unauthenticated,
    /// The caller is known but may not do this.
    PermissionDenied,
    /// The thing named does not exist for this caller.
    NotFound,
    /// The caller's view is stale (an etag): read again, then retry.
    Aborted,
    /// The thing is in the wrong state for this call (deleted, not deleted).
    FailedPrecondition,
    /// The thing to create exists already (a request id, a source id).
    AlreadyExists,
    /// A position the caller sent lies before what the server still keeps
    /// (a change-stream token older than the retention).
    OutOfRange,
    /// A bound on what the caller may hold was reached (a stream's backlog,
    /// the number of streams): resume or retry later.
    ResourceExhausted,
    /// A dependency (the database) cannot be reached: retry later.
    Unavailable,
    /// The call's deadline passed before its work was done; the work
    /// was stopped (it may have been done, for a change already committed).
    DeadlineExceeded,
    /// A failure the caller cannot fix; logged with its cause.
    Internal,
}

/// A field that failed validation, by its path in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// A required field is missing or empty.
    #[error("{}", .0.description)]
    MissingField(FieldViolation),
    /// A field is present but malformed or out of range.
    #[error("{}", .0.description)]
    InvalidField(FieldViolation),
    /// A field is larger than its limit.
    #[error("{}", .0.description)]
    FieldTooLarge(FieldViolation),
    /// A page token that is malformed or belongs to other filters.
    #[error("{}", .0.description)]
    InvalidPageToken(FieldViolation),
    /// A change-stream token that is malformed or names a position the
    /// stream has not reached.
    #[error("{}", .0.description)]
    InvalidWatchToken(FieldViolation),
    #[error(
        "the resume token is older than the change retention; list the notes again and watch from the list's watch_token"
    )]
    WatchTokenExpired,
    #[error(
        "the stream was read too slowly and its backlog passed the bound; resume from the last resume_token processed"
    )]
    WatchTooSlow,
    #[error("the server has as many watches open as it allows; retry later")]
    TooManyWatchers,
    #[error("{}", .0.describe())]
    QuotaExceeded(Box<super::QuotaExceeded>),
    #[error("the server is shutting down; resume from the last resume_token")]
    ShuttingDown,
    #[error("no API key: send `x-api-key` or `authorization: Bearer <key>`")]
    ApiKeyMissing,
    #[error("the API key is unknown, revoked or expired")]
    ApiKeyInvalid,
    #[error("a service key must name the acting member in `x-actor-id`")]
    ActorMissing,
    #[error("this member key acts as its own member; `x-actor-id` names another")]
    ActorMismatch,
    #[error("calls with this API key are not accepted from this address")]
    IpNotAllowed,
    #[error("note not found")]
    NoteNotFound,
    #[error("subject not registered")]
    SubjectNotFound,
    #[error("{0}")]
    NotOwner(&'static str),
    #[error("the etag does not match the note's current etag")]
    EtagMismatch,
    #[error("the note is deleted")]
    NoteDeleted,
    #[error("the note is not deleted")]
    NoteNotDeleted,
    #[error("request_id was already used for a different request")]
    RequestIdConflict,
    #[error("a note with this source system and id already exists")]
    SourceExists,
    /// The database cannot be reached, or dropped the connection: nothing
    /// was written that the caller was told of, and a retry may succeed.
    /// Logged with its cause.
    #[error("the database is unavailable; retry later")]
    DatabaseUnavailable(#[source] anyhow::Error),
    /// Anything the caller cannot fix: logged with its cause, answered with
    /// a generic message.
    #[error(
        "the search would read too many notes to answer in time; add words or filters (a subject, an owner, a time range)"
    )]
    SearchTooCostly,
    /// The connection's client certificate, verified at its handshake, is
    /// no longer accepted (its CA was removed, or it expired).
    #[error(
        "the connection's client certificate is no longer accepted: reconnect with one the server trusts"
    )]
    CertificateNotTrusted,
    /// More work of this kind is in progress than the server takes at
    /// once (keys being checked); retry with backoff.
    #[error("the server is busy: retry with backoff")]
    Overloaded,
    #[error("only an admin key may do this")]
    AdminKeyRequired,
    /// The call's deadline (`grpc-timeout`) passed: its database work was
    /// cancelled or never started.
    #[error("the call's deadline passed before it was done; its database work was stopped")]
    DeadlineExceeded,
    #[error("the notes together exceed {0} MiB; ask for fewer")]
    ResponseTooLarge(usize),
    /// One request of a batch call failed, and with it the call: `index`
    /// is the request's position (from 0) in the batch.
    #[error("request {index} of the batch: {error}")]
    InBatch {
        index: usize,
        error: Box<DomainError>,
    },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl DomainError {
    pub fn missing(field: &str) -> Self {
        Self::MissingField(FieldViolation::new(field, format!("{field} is required")))
    }

    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidField(FieldViolation::new(field, description))
    }

    pub fn too_large(field: &str, description: impl Into<String>) -> Self {
        Self::FieldTooLarge(FieldViolation::new(field, description))
    }

    pub fn bad_page_token(description: impl Into<String>) -> Self {
        Self::InvalidPageToken(FieldViolation::new("page_token", description))
    }

    pub fn bad_watch_token(description: impl Into<String>) -> Self {
        Self::InvalidWatchToken(FieldViolation::new("resume_token", description))
    }

    /// The stable machine-readable reason, as listed in `docs/errors.md`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingField(_) => "MISSING_FIELDS",
            Self::InvalidField(_) => "INVALID_FIELD",
            Self::FieldTooLarge(_) => "FIELD_TOO_LARGE",
            Self::InvalidPageToken(_) => "INVALID_PAGE_TOKEN",
            Self::InvalidWatchToken(_) => "INVALID_WATCH_TOKEN",
            Self::WatchTokenExpired => "WATCH_TOKEN_EXPIRED",
            Self::WatchTooSlow => "WATCH_TOO_SLOW",
            Self::TooManyWatchers => "TOO_MANY_WATCHERS",
            Self::QuotaExceeded(refusal) => refusal.limit.reason(),
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::ApiKeyMissing => "MISSING_API_KEY",
            Self::ApiKeyInvalid => "INVALID_API_KEY",
            Self::ActorMissing => "MISSING_ACTOR",
            Self::ActorMismatch => "ACTOR_MISMATCH",
            Self::IpNotAllowed => "IP_NOT_WHITELISTED",
            Self::NoteNotFound => "NOT_FOUND",
            Self::SubjectNotFound => "SUBJECT_NOT_FOUND",
            Self::NotOwner(_) => "NOT_OWNER",
            Self::EtagMismatch => "ETAG_MISMATCH",
            Self::NoteDeleted => "NOTE_DELETED",
            Self::NoteNotDeleted => "NOTE_NOT_DELETED",
            Self::RequestIdConflict => "REQUEST_ID_CONFLICT",
            Self::SourceExists => "SOURCE_ALREADY_EXISTS",
            Self::DatabaseUnavailable(_) => "DATABASE_UNAVAILABLE",
            Self::AdminKeyRequired => "ADMIN_KEY_REQUIRED",
            Self::SearchTooCostly => "SEARCH_TOO_COSTLY",
            Self::Overloaded => "OVERLOADED",
            Self::CertificateNotTrusted => "CERTIFICATE_NOT_TRUSTED",
            Self::ResponseTooLarge(_) => "RESPONSE_TOO_LARGE",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::InBatch { error, .. } => error.reason(),
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The classification every edge renders.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::MissingField(_)
            | Self::InvalidField(_)
            | Self::FieldTooLarge(_)
            | Self::InvalidPageToken(_)
            | Self::InvalidWatchToken(_) => ErrorKind::InvalidArgument,
            Self::WatchTokenExpired => ErrorKind::OutOfRange,
            Self::WatchTooSlow
            | Self::TooManyWatchers
            | Self::QuotaExceeded(_)
            | Self::ResponseTooLarge(_)
            | Self::SearchTooCostly
            | Self::Overloaded => ErrorKind::ResourceExhausted,
            Self::InBatch { error, .. } => error.kind(),
            Self::ApiKeyMissing
            | Self::ApiKeyInvalid
            | Self::ActorMissing
            | Self::CertificateNotTrusted => ErrorKind::Unauthenticated,
            Self::ActorMismatch
            | Self::NotOwner(_)
            | Self::IpNotAllowed
            | Self::AdminKeyRequired => ErrorKind::PermissionDenied,
            Self::NoteNotFound | Self::SubjectNotFound => ErrorKind::NotFound,
            Self::EtagMismatch => ErrorKind::Aborted,
            Self::NoteDeleted | Self::NoteNotDeleted => ErrorKind::FailedPrecondition,
            Self::RequestIdConflict | Self::SourceExists => ErrorKind::AlreadyExists,
            Self::DatabaseUnavailable(_) | Self::ShuttingDown => ErrorKind::Unavailable,
            Self::DeadlineExceeded => ErrorKind::DeadlineExceeded,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The same error for another caller of one shared operation (a batch
    /// that failed for all its callers): the same variant, with the cause
    /// as text, since a cause cannot be cloned.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::MissingField(v) => Self::MissingField(v.clone()),
            Self::InvalidField(v) => Self::InvalidField(v.clone()),
            Self::FieldTooLarge(v) => Self::FieldTooLarge(v.clone()),
            Self::InvalidPageToken(v) => Self::InvalidPageToken(v.clone()),
            Self::InvalidWatchToken(v) => Self::InvalidWatchToken(v.clone()),
            Self::WatchTokenExpired => Self::WatchTokenExpired,
            Self::WatchTooSlow => Self::WatchTooSlow,
            Self::TooManyWatchers => Self::TooManyWatchers,
            Self::QuotaExceeded(refusal) => Self::QuotaExceeded(refusal.clone()),
            Self::ShuttingDown => Self::ShuttingDown,
            Self::ApiKeyMissing => Self::ApiKeyMissing,
            Self::ApiKeyInvalid => Self::ApiKeyInvalid,
            Self::ActorMissing => Self::ActorMissing,
            Self::ActorMismatch => Self::ActorMismatch,
            Self::IpNotAllowed => Self::IpNotAllowed,
            Self::NoteNotFound => Self::NoteNotFound,
            Self::SubjectNotFound => Self::SubjectNotFound,
            Self::NotOwner(message) => Self::NotOwner(message),
            Self::EtagMismatch => Self::EtagMismatch,
            Self::NoteDeleted => Self::NoteDeleted,
            Self::NoteNotDeleted => Self::NoteNotDeleted,
            Self::RequestIdConflict => Self::RequestIdConflict,
            Self::SourceExists => Self::SourceExists,
            Self::AdminKeyRequired => Self::AdminKeyRequired,
            Self::SearchTooCostly => Self::SearchTooCostly,
            Self::Overloaded => Self::Overloaded,
            Self::CertificateNotTrusted => Self::CertificateNotTrusted,
            Self::ResponseTooLarge(mib) => Self::ResponseTooLarge(*mib),
            Self::DeadlineExceeded => Self::DeadlineExceeded,
            Self::InBatch { index, error } => Self::InBatch {
                index: *index,
                error: Box::new(error.duplicate()),
            },
            Self::DatabaseUnavailable(cause) => {
                Self::DatabaseUnavailable(anyhow::anyhow!("{cause:#}"))
            }
            Self::Internal(cause) => Self::Internal(anyhow::anyhow!("{cause:#}")),
        }
    }

    /// Logs the cause of an unavailable or internal error (the caller gets
    /// a generic message); `edge` names who answered.
    pub fn log_cause(&self, edge: &'static str) {
        match self {
            Self::DatabaseUnavailable(cause) => {
                tracing::warn!(edge, error = format!("{cause:#}"), "database unavailable");
            }
            Self::Internal(cause) => tracing::error!(edge, error = ?cause, "internal error"),
            Self::InBatch { error, .. } => error.log_cause(edge),
            _ => {}
        }
    }

    /// The offending field, for validation errors.
    pub fn violation(&self) -> Option<&FieldViolation> {
        match self {
            Self::MissingField(v)
            | Self::InvalidField(v)
            | Self::FieldTooLarge(v)
            | Self::InvalidPageToken(v)
            | Self::InvalidWatchToken(v) => Some(v),
            Self::InBatch { error, .. } => error.violation(),
            _ => None,
        }
    }

    /// This error, as the failure of request `index` of a batch call: a
    /// field it names gets the path `{list}[index].` before it.
    pub(crate) fn in_batch(self, list: &str, index: usize) -> Self {
        let prefixed = |v: FieldViolation| FieldViolation {
            field: format!("{list}[{index}].{}", v.field),
            description: v.description,
        };
        let error = match self {
            Self::MissingField(v) => Self::MissingField(prefixed(v)),
            Self::InvalidField(v) => Self::InvalidField(prefixed(v)),
            Self::FieldTooLarge(v) => Self::FieldTooLarge(prefixed(v)),
            other => other,
        };
        Self::InBatch {
            index,
            error: Box::new(error),
        }
    }

    /// The quota that refused the call, if one did.
    pub fn quota(&self) -> Option<&super::QuotaExceeded> {
        match self {
            Self::QuotaExceeded(refusal) => Some(refusal),
            _ => None,
        }
    }

    /// The position in its batch of the request that failed, if any.
    pub fn batch_index(&self) -> Option<usize> {
        match self {
            Self::InBatch { index, .. } => Some(*index),
            _ => None,
        }
    }
}

impl From<anyhow::Error> for DomainError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}
