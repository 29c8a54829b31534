//! The batch calls and PurgeNotes in notes.v1 types: their requests
//! parsed and bounded, each item's error named by its index.

use std::collections::HashMap;

use prost::Message as _;

use crate::domain::{DomainError, NoteDraft, NoteId, Principal, RequestKey};
use crate::proto::notes::v1 as pb;
use crate::storage::PurgeTarget;

/// The most items of a batch call (AIP-231: a documented maximum).
const MAX_BATCH: usize = 1000;
/// The most bytes of a BatchAddNotes request: its response echoes each
/// note with its derived text, and must fit in a message.
const MAX_BATCH_ADD_BYTES: usize = 8 * 1024 * 1024;

/// Checks that a batch's `field` holds 1 to [`MAX_BATCH`] items.
fn check_count(field: &str, count: usize) -> Result<(), DomainError> {
    if count == 0 {
        return Err(DomainError::missing(field));
    }
    if count > MAX_BATCH {
        return Err(DomainError::invalid(
            field,
            format!("{field} holds {count} items; at most {MAX_BATCH} are allowed"),
        ));
    }
    Ok(())
}

/// The ids of a batch, each parsed, in order.
pub(super) fn parse_ids(field: &str, ids: &[String]) -> Result<Vec<NoteId>, DomainError> {
    check_count(field, ids.len())?;
    ids.iter()
        .enumerate()
        .map(|(index, id)| super::convert::parse_note_id(&format!("{field}[{index}]"), id))
        .collect()
}

/// A BatchAddNotes request's note, parsed as AddNote parses its request.
pub(super) type ParsedAdd = Result<(NoteDraft, Option<RequestKey>), DomainError>;

/// The notes of a BatchAddNotes request, each parsed on its own (its
/// error is its own), after the checks of the batch as a whole: its size,
/// and request ids distinct within it.
pub(super) fn parse_adds(
    principal: &Principal,
    request: &pb::BatchAddNotesRequest,
) -> Result<Vec<ParsedAdd>, DomainError> {
    check_count("requests", request.requests.len())?;
    let bytes = request.encoded_len();
    if bytes > MAX_BATCH_ADD_BYTES {
        return Err(DomainError::too_large(
            "requests",
            format!(
                "the requests hold {bytes} bytes; at most {MAX_BATCH_ADD_BYTES} are allowed \
                 (send larger notes with AddNote)"
            ),
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, add) in request.requests.iter().enumerate() {
        if add.request_id.is_empty() {
            continue;
        }
        if let Some(first) = seen.insert(add.request_id.as_str(), index) {
            return Err(DomainError::invalid(
                &format!("requests[{index}].request_id"),
                format!("requests[{index}].request_id repeats requests[{first}].request_id"),
            ));
        }
    }
    Ok(request
        .requests
        .iter()
        .map(|add| super::convert::parse_add_request(principal, add))
        .collect())
}

/// The notes of a BatchDeleteNotes request with their etags, each id once.
pub(super) fn parse_deletes(
    request: &pb::BatchDeleteNotesRequest,
) -> Result<Vec<(NoteId, Option<String>)>, DomainError> {
    check_count("requests", request.requests.len())?;
    let mut seen: HashMap<NoteId, usize> = HashMap::new();
    request
        .requests
        .iter()
        .enumerate()
        .map(|(index, delete)| {
            let field = format!("requests[{index}].id");
            let id = super::convert::parse_note_id(&field, &delete.id)?;
            if let Some(first) = seen.insert(id, index) {
                return Err(DomainError::invalid(
                    &field,
                    format!("{field} repeats requests[{first}].id"),
                ));
            }
            Ok((id, (!delete.etag.is_empty()).then(|| delete.etag.clone())))
        })
        .collect()
}

/// What a PurgeNotes request names: a subject or a list of notes.
pub(super) fn parse_purge(request: &pb::PurgeNotesRequest) -> Result<PurgeTarget, DomainError> {
    match (&request.subject, request.note_ids.is_empty()) {
        (Some(_), false) => Err(DomainError::invalid(
            "note_ids",
            "send either subject or note_ids, not both",
        )),
        (None, true) => Err(DomainError::missing("subject")),
        (Some(subject), true) => Ok(PurgeTarget::Subject(super::convert::parse_subject(
            "subject",
            Some(subject),
        )?)),
        (None, false) => Ok(PurgeTarget::Notes(parse_ids(
            "note_ids",
            &request.note_ids,
        )?)),
    }
}

/// A failed item of a batch, as its result reports it.
pub(super) fn item_error(error: DomainError) -> pb::BatchItemError {
    error.log_cause("batch");
    pb::BatchItemError {
        code: super::status_code(error.kind()) as i32,
        reason: error.reason().to_owned(),
        message: error.to_string(),
        field: error
            .violation()
            .map(|v| v.field.clone())
            .unwrap_or_default(),
    }
}
