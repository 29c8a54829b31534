//! The one place a `DomainError` becomes a gRPC status: the code, a
//! message, a google.rpc.ErrorInfo, and for validation errors a
//! google.rpc.BadRequest naming the field.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::domain::DomainError;

/// The ErrorInfo domain of every notesd error.
pub const ERROR_DOMAIN: &str = "notesd.dev";

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Self {
        let code = match &err {
            DomainError::MissingField(_)
            | DomainError::InvalidField(_)
            | DomainError::FieldTooLarge(_)
            | DomainError::InvalidPageToken(_) => Code::InvalidArgument,
            DomainError::ApiKeyMissing | DomainError::ApiKeyInvalid | DomainError::ActorMissing => {
                Code::Unauthenticated
            }
            DomainError::ActorMismatch | DomainError::NotOwner(_) | DomainError::IpNotAllowed => {
                Code::PermissionDenied
            }
            DomainError::NoteNotFound | DomainError::SubjectNotFound => Code::NotFound,
            DomainError::EtagMismatch => Code::Aborted,
            DomainError::NoteDeleted | DomainError::NoteNotDeleted => Code::FailedPrecondition,
            DomainError::RequestIdConflict | DomainError::SourceExists => Code::AlreadyExists,
            DomainError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Code::Internal
            }
        };
        let mut metadata = HashMap::new();
        let mut details = ErrorDetails::new();
        if let Some(violation) = err.violation() {
            metadata.insert("field".to_owned(), violation.field.clone());
            details.add_bad_request_violation(&violation.field, &violation.description);
        }
        details.set_error_info(err.reason(), ERROR_DOMAIN, metadata);
        Status::with_error_details(code, err.to_string(), details)
    }
}
