//! The one place a `DomainError` becomes a gRPC status: the code, a
//! message, a google.rpc.ErrorInfo, and for validation errors a
//! google.rpc.BadRequest naming the field; for a quota's refusal a
//! google.rpc.QuotaFailure and a google.rpc.RetryInfo.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::domain::DomainError;

/// The ErrorInfo domain of every notesd error.
pub(super) const ERROR_DOMAIN: &str = "notesd.dev";

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Self {
        err.log_cause("grpc");
        let code = crate::api::status_code(err.kind());
        let mut metadata = HashMap::new();
        let mut details = ErrorDetails::new();
        if let Some(violation) = err.violation() {
            metadata.insert("field".to_owned(), violation.field.clone());
            details.add_bad_request_violation(&violation.field, &violation.description);
        }
        if let Some(index) = err.batch_index() {
            metadata.insert("index".to_owned(), index.to_string());
        }
        if let Some(refusal) = err.quota() {
            let subject = refusal.scope.subject();
            metadata.insert("quota_subject".to_owned(), subject.clone());
            metadata.insert("quota_limit".to_owned(), refusal.allowed.to_string());
            details.add_quota_failure_violation(subject, refusal.describe());
            details.set_retry_info(Some(refusal.retry_after));
        }
        details.set_error_info(err.reason(), ERROR_DOMAIN, metadata);
        Status::with_error_details(code, err.to_string(), details)
    }
}

/// A status for a failure of the transport rather than the domain (a call
/// shed under load, a message over the size limit), with its ErrorInfo.
pub(crate) fn edge_status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(code, message, details)
}
