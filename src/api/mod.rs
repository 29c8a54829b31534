//! The application layer, in notes.v1 types: every edge (the tonic
//! services, the vendor facades) goes through [`NotesApi`] and nothing
//! else. It owns request conversion, page tokens, limits and the response
//! budget; errors leave it as [`DomainError`]s, which each edge renders by
//! their [`ErrorKind`](crate::domain::ErrorKind).

mod batch;
pub(crate) mod convert;
mod page_token;
mod search;
mod watch;

pub(crate) use convert::{NoteField, update_of};

use std::collections::HashMap;
use std::pin::Pin;

use futures_util::Stream;

use crate::domain::list::{self, NoteCursor, NoteFilter};
use crate::domain::{DomainError, ErrorKind, Note, NoteId, Principal};
use crate::proto::notes::v1 as pb;
use crate::quotas::{cost, units_for};
use crate::service::Notes;

/// The notes.v1 requests, handled for a caller already authenticated: what
/// NotesService does after authentication, and what the vendor facades call
/// with the RPC request types they build.
#[derive(Debug, Clone)]
pub(crate) struct NotesApi {
    notes: Notes,
}

impl NotesApi {
    pub(crate) fn new(notes: Notes) -> Self {
        Self { notes }
    }

    pub(crate) async fn add_note(
        &self,
        principal: &Principal,
        request: &pb::AddNoteRequest,
    ) -> Result<pb::Note, DomainError> {
        let (draft, request_key) = if html_len(request.note.as_ref()) >= BLOCKING_HTML_BYTES {
            let (principal, request) = (principal.clone(), request.clone());
            blocking(move || convert::parse_add_request(&principal, &request)).await?
        } else {
            convert::parse_add_request(principal, request)?
        };
        let note = self.notes.add_note(principal, draft, request_key).await?;
        tracing::info!(note_id = %note.id, tenant = %principal.tenant, "note added");
        Ok(convert::note_to_proto(note))
    }

    pub(crate) async fn update_note(
        &self,
        principal: &Principal,
        request: &pb::UpdateNoteRequest,
    ) -> Result<pb::Note, DomainError> {
        let (id, patch, etag) = if html_len(request.note.as_ref()) >= BLOCKING_HTML_BYTES {
            let request = request.clone();
            blocking(move || convert::parse_update_request(&request)).await?
        } else {
            convert::parse_update_request(request)?
        };
        let note = self
            .notes
            .update_note(principal, id, patch, etag.as_deref())
            .await?;
        Ok(convert::note_to_proto(note))
    }

    pub(crate) async fn get_note(
        &self,
        principal: &Principal,
        request: &pb::GetNoteRequest,
    ) -> Result<pb::Note, DomainError> {
        let id = convert::parse_note_id("id", &request.id)?;
        let note = self.notes.get_note(principal, id).await?;
        Ok(convert::note_to_proto(note))
    }

    pub(crate) async fn list_notes(
        &self,
        principal: &Principal,
        request: &pb::ListNotesRequest,
    ) -> Result<pb::ListNotesResponse, DomainError> {
        let page_size = list::page_size("page_size", request.page_size)?;
        charge(units_for(page_size, cost::PAGE_NOTES_PER_UNIT));
        let filter = convert::parse_list_filter(request)?;
        let after = page_token::decode_notes(&filter, &request.page_token)?;
        let (page, watch_from) = self
            .notes
            .list_notes(principal, &filter, page_size, after)
            .await?;
        let cursors: Vec<NoteCursor> = page.items.iter().map(Note::cursor).collect();
        let mut notes: Vec<pb::Note> = page.items.into_iter().map(convert::note_to_proto).collect();
        let fitting = count_within_budget(&notes);
        let next = if fitting < notes.len() {
            notes.truncate(fitting);
            Some(cursors[fitting - 1])
        } else {
            page.next
        };
        Ok(pb::ListNotesResponse {
            notes,
            next_page_token: next
                .map(|cursor| page_token::encode_notes(&filter, &cursor))
                .unwrap_or_default(),
            watch_token: watch::encode_token(watch_from),
        })
    }

    /// The caller's WatchNotes stream. The first read of the outbox happens
    /// here, so that a malformed or expired token is the call's answer
    /// rather than the stream's end.
    pub(crate) async fn watch_notes(
        &self,
        principal: &Principal,
        request: &pb::WatchNotesRequest,
    ) -> Result<WatchStream, DomainError> {
        let filter = watch::parse_filter(request)?;
        let from = watch::decode_token(&request.resume_token)?;
        let watch = self.notes.watch_notes(principal, filter, from).await?;
        Ok(Box::pin(futures_util::stream::unfold(
            watch,
            |mut watch| async move {
                let event = watch.next().await?;
                Some((event.map(watch::event_to_proto), watch))
            },
        )))
    }

    pub(crate) async fn delete_note(
        &self,
        principal: &Principal,
        request: &pb::DeleteNoteRequest,
    ) -> Result<pb::Note, DomainError> {
        let id = convert::parse_note_id("id", &request.id)?;
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        let note = self.notes.delete_note(principal, id, etag).await?;
        Ok(convert::note_to_proto(note))
    }

    pub(crate) async fn undelete_note(
        &self,
        principal: &Principal,
        request: &pb::UndeleteNoteRequest,
    ) -> Result<pb::Note, DomainError> {
        let id = convert::parse_note_id("id", &request.id)?;
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        let note = self.notes.undelete_note(principal, id, etag).await?;
        Ok(convert::note_to_proto(note))
    }

    /// The notes a caller may read about `subject` or naming it among
    /// their related subjects, newest first: at most `page_size` and within
    /// the response budget (a Capillary customer found by any identifier).
    pub(crate) async fn list_notes_about(
        &self,
        principal: &Principal,
        subject: &pb::Subject,
        page_size: usize,
    ) -> Result<Vec<pb::Note>, DomainError> {
        charge(units_for(page_size, cost::PAGE_NOTES_PER_UNIT));
        let filter = NoteFilter {
            about: Some(convert::parse_subject("subject", Some(subject))?),
            ..Default::default()
        };
        let (page, _) = self
            .notes
            .list_notes(principal, &filter, page_size, None)
            .await?;
        let mut notes: Vec<pb::Note> = page.items.into_iter().map(convert::note_to_proto).collect();
        notes.truncate(count_within_budget(&notes));
        Ok(notes)
    }

    /// The numbers (the integer ids of Capillary and Fernand) of these
    /// notes, in their order; a note gets one the first time it is asked.
    pub(crate) async fn note_numbers(
        &self,
        principal: &Principal,
        ids: &[&str],
    ) -> Result<Vec<i64>, DomainError> {
        let ids = ids
            .iter()
            .map(|id| convert::parse_note_id("id", id))
            .collect::<Result<Vec<NoteId>, _>>()?;
        let numbers: HashMap<NoteId, i64> = self.notes.numbers(principal, &ids).await?;
        ids.iter()
            .map(|id| {
                numbers.get(id).copied().ok_or_else(|| {
                    DomainError::Internal(anyhow::anyhow!("note {id} got no number"))
                })
            })
            .collect()
    }

    /// The id of the note with this number; NOT_FOUND when there is none.
    pub(crate) async fn note_id_for_number(
        &self,
        principal: &Principal,
        number: i64,
    ) -> Result<String, DomainError> {
        let id = self.notes.resolve_number(principal, number).await?;
        Ok(id.to_string())
    }

    /// The id of the note imported from `system` with this id; NOT_FOUND
    /// when there is none.
    pub(crate) async fn note_id_for_source(
        &self,
        principal: &Principal,
        system: &str,
        source_id: &str,
    ) -> Result<String, DomainError> {
        let id = self
            .notes
            .resolve_source(principal, system, source_id)
            .await?;
        Ok(id.to_string())
    }

    pub(crate) async fn list_note_revisions(
        &self,
        principal: &Principal,
        request: &pb::ListNoteRevisionsRequest,
    ) -> Result<pb::ListNoteRevisionsResponse, DomainError> {
        let id = convert::parse_note_id("note_id", &request.note_id)?;
        let page_size = list::page_size("page_size", request.page_size)?;
        charge(units_for(page_size, cost::PAGE_NOTES_PER_UNIT));
        let before = page_token::decode_revisions(id, &request.page_token)?;
        let page = self
            .notes
            .list_revisions(principal, id, page_size, before)
            .await?;
        let mut revisions: Vec<pb::NoteRevision> = page
            .items
            .into_iter()
            .map(convert::revision_to_proto)
            .collect();
        let fitting = count_within_budget(&revisions);
        let next = if fitting < revisions.len() {
            revisions.truncate(fitting);
            Some(revisions[fitting - 1].revision)
        } else {
            page.next
        };
        Ok(pb::ListNoteRevisionsResponse {
            revisions,
            next_page_token: next
                .map(|revision| page_token::encode_revisions(id, revision))
                .unwrap_or_default(),
        })
    }
}

impl NotesApi {
    pub(crate) async fn search_notes(
        &self,
        principal: &Principal,
        request: &pb::SearchNotesRequest,
    ) -> Result<pb::SearchNotesResponse, DomainError> {
        let search::SearchRequest {
            filter,
            query,
            order,
            page_size,
        } = search::parse_request(request)?;
        charge(cost::SEARCH);
        let after = page_token::decode_search(&filter, &query, order, &request.page_token)?;
        let page = self
            .notes
            .search_notes(principal, &filter, &query, order, page_size, after)
            .await?;
        let cursors: Vec<_> = (0..page.hits.len()).map(|i| page.cursor_after(i)).collect();
        let mut hits: Vec<pb::SearchHit> = page
            .hits
            .into_iter()
            .map(|hit| pb::SearchHit {
                snippet: search::render_snippet(&hit.snippet),
                score: hit.score,
                note: Some(convert::note_to_proto(hit.note)),
            })
            .collect();
        // The response budget cuts a page of large notes short, as in
        // ListNotes.
        let fitting = count_within_budget(&hits);
        let next = if fitting < hits.len() {
            hits.truncate(fitting);
            cursors.get(fitting - 1).copied()
        } else if page.more {
            cursors.last().copied()
        } else {
            None
        };
        let next = next
            .map(|cursor| page_token::encode_search(&filter, &query, order, &cursor))
            .unwrap_or_default();
        Ok(pb::SearchNotesResponse {
            hits,
            next_page_token: next,
        })
    }

    pub(crate) async fn batch_get_notes(
        &self,
        principal: &Principal,
        request: &pb::BatchGetNotesRequest,
    ) -> Result<pb::BatchGetNotesResponse, DomainError> {
        charge(units_for(request.ids.len(), cost::BATCH_NOTES_PER_UNIT));
        let ids = batch::parse_ids("ids", &request.ids)?;
        let notes = self
            .notes
            .get_notes(principal, &ids, RESPONSE_BUDGET_BYTES)
            .await?;
        Ok(pb::BatchGetNotesResponse {
            notes: notes.into_iter().map(convert::note_to_proto).collect(),
        })
    }

    pub(crate) async fn batch_add_notes(
        &self,
        principal: &Principal,
        request: &pb::BatchAddNotesRequest,
    ) -> Result<pb::BatchAddNotesResponse, DomainError> {
        charge(units_for(
            request.requests.len(),
            cost::BATCH_NOTES_PER_UNIT,
        ));
        let html: usize = request
            .requests
            .iter()
            .map(|add| html_len(add.note.as_ref()))
            .sum();
        let parsed = if html >= BLOCKING_HTML_BYTES {
            let (principal, request) = (principal.clone(), request.clone());
            blocking(move || batch::parse_adds(&principal, &request)).await?
        } else {
            batch::parse_adds(principal, request)?
        };
        if !request.partial_success {
            let drafts = parsed
                .into_iter()
                .enumerate()
                .map(|(index, add)| add.map_err(|err| err.in_batch("requests", index)))
                .collect::<Result<Vec<_>, _>>()?;
            let notes = self.notes.add_notes(principal, drafts).await?;
            return Ok(pb::BatchAddNotesResponse {
                notes: notes.into_iter().map(convert::note_to_proto).collect(),
                results: Vec::new(),
            });
        }
        // Each parsed note is written; each that failed to parse keeps its
        // error, in its place.
        let mut outcomes: Vec<Option<Result<Note, DomainError>>> = Vec::new();
        let mut drafts = Vec::new();
        for add in parsed {
            match add {
                Ok(draft) => {
                    drafts.push(draft);
                    outcomes.push(None);
                }
                Err(err) => outcomes.push(Some(Err(err))),
            }
        }
        let mut written = self
            .notes
            .add_each_note(principal, drafts)
            .await
            .into_iter();
        let results = outcomes
            .into_iter()
            .map(|outcome| {
                let outcome = outcome.or_else(|| written.next()).unwrap_or_else(|| {
                    Err(DomainError::Internal(anyhow::anyhow!(
                        "a batch add was not answered"
                    )))
                });
                match outcome {
                    Ok(note) => pb::BatchAddNoteResult {
                        note: Some(convert::note_to_proto(note)),
                        error: None,
                    },
                    Err(err) => pb::BatchAddNoteResult {
                        note: None,
                        error: Some(batch::item_error(err)),
                    },
                }
            })
            .collect();
        Ok(pb::BatchAddNotesResponse {
            notes: Vec::new(),
            results,
        })
    }

    pub(crate) async fn batch_delete_notes(
        &self,
        principal: &Principal,
        request: &pb::BatchDeleteNotesRequest,
    ) -> Result<pb::BatchDeleteNotesResponse, DomainError> {
        charge(units_for(
            request.requests.len(),
            cost::BATCH_NOTES_PER_UNIT,
        ));
        let deletes = batch::parse_deletes(request)?;
        let notes = self
            .notes
            .delete_notes(principal, &deletes, RESPONSE_BUDGET_BYTES)
            .await?;
        Ok(pb::BatchDeleteNotesResponse {
            notes: notes.into_iter().map(convert::note_to_proto).collect(),
        })
    }

    pub(crate) async fn purge_notes(
        &self,
        principal: &Principal,
        request: &pb::PurgeNotesRequest,
    ) -> Result<pb::PurgeNotesResponse, DomainError> {
        // Who may purge is checked before what to purge is read.
        if !principal.is_admin() {
            return Err(DomainError::AdminKeyRequired);
        }
        charge(cost::PURGE);
        let target = batch::parse_purge(request)?;
        let purged = self.notes.purge_notes(principal, &target).await?;
        Ok(pb::PurgeNotesResponse {
            purged_notes: purged.notes,
            purged_revisions: purged.revisions,
            purge_id: purged.id.to_string(),
        })
    }
}

/// Charges the rest of a call's cost (`units` in all; the edge took one)
/// to its quotas, before any of its database work (docs/quotas.md).
fn charge(units: u32) {
    crate::quotas::charge(units.saturating_sub(1));
}

/// The gRPC status code of each kind of error: what the gRPC edge answers
/// and what a batch item's error reports.
pub(crate) fn status_code(kind: ErrorKind) -> tonic::Code {
    use tonic::Code;
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Internal => Code::Internal,
    }
}

/// A WatchNotes stream: its events, then, if it ends for a reason, that
/// error.
pub(crate) type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchNotesResponse, DomainError>> + Send>>;

/// HTML bodies of at least this many bytes are parsed (sanitized, their
/// text derived) on tokio's blocking pool rather than on an async worker:
/// sanitizing takes tens of milliseconds a MiB (440 ms for 6.6 MB), and a
/// worker busy that long stalls every call it serves. Smaller bodies are
/// parsed in place, where a hop to another thread would cost more than it
/// saves; what HTML may make the parser do is bounded by its size
/// (`domain::body`: nesting and reopened formatting), so a small body is
/// cheap whatever it holds.
const BLOCKING_HTML_BYTES: usize = 16 * 1024;

/// Large bodies parsed at once: each holds its parsed document (several
/// times its size) until it is done, so more would only share the same
/// cores and multiply the memory; others wait their turn, within their
/// deadline.
const BLOCKING_PARSES: usize = 2;

fn html_len(note: Option<&pb::Note>) -> usize {
    note.and_then(|note| note.body.as_ref())
        .map_or(0, |body| body.html.len())
}

/// Runs `parse` on the blocking pool, at most [`BLOCKING_PARSES`] at once.
async fn blocking<T: Send + 'static>(
    parse: impl FnOnce() -> Result<T, DomainError> + Send + 'static,
) -> Result<T, DomainError> {
    static PARSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BLOCKING_PARSES);
    let turn = PARSES
        .acquire()
        .await
        .map_err(|err| DomainError::Internal(anyhow::anyhow!("parsing a request: {err}")))?;
    // The turn ends with the parse, not with the call: a caller who
    // leaves does not free it early.
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        parse()
    })
    .await
    .map_err(|err| DomainError::Internal(anyhow::anyhow!("parsing a request: {err}")))?
}

/// The largest gRPC message accepted or sent. A note body is at most
/// 10 MiB of HTML plus its derived text, with room for the rest.
pub(crate) const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// The metadata (and facade header) that carries a consistency token:
/// answered by a write, sent back by a read that must see it (docs/api.md,
/// "Read replicas and consistency tokens").
pub(crate) const CONSISTENCY_TOKEN_HEADER: &str = "notesd-consistency-token";

/// The scope of a call (`storage::calls`) that must be done by
/// `deadline`: one that only reads may read from a replica that has the
/// writes of the consistency token in its `headers`.
pub(crate) fn call_scope(
    deadline: Option<tokio::time::Instant>,
    reads_only: bool,
    headers: &http::HeaderMap,
) -> crate::storage::CallScope {
    let call = crate::storage::CallScope::new(deadline);
    if !reads_only {
        return call;
    }
    let token = headers
        .get(CONSISTENCY_TOKEN_HEADER)
        .map(|value| value.to_str().unwrap_or_default());
    call.reading(token)
}

/// Puts the consistency token of the writes committed so far in a
/// successful write's response `headers`, when replicas are configured.
pub(crate) async fn add_consistency_token(
    reads: &crate::storage::ReadRouter,
    headers: &mut http::HeaderMap,
    edge: &'static str,
) {
    if reads.replica_count() == 0 {
        return;
    }
    match reads.consistency_token().await {
        Ok(token) => {
            if let Ok(value) = http::HeaderValue::try_from(token.to_string()) {
                headers.insert(CONSISTENCY_TOKEN_HEADER, value);
            }
        }
        Err(err) => err.log_cause(edge),
    }
}

/// The bytes of a page (see `list::PAGE_BUDGET_BYTES`), as encoded: half
/// the largest message, so that a page's first note always fits.
const RESPONSE_BUDGET_BYTES: usize = list::PAGE_BUDGET_BYTES;
const _: () = assert!(2 * RESPONSE_BUDGET_BYTES <= MAX_MESSAGE_BYTES);

/// How many of `items`, from the first, fit in the response budget: always
/// at least one, since a single note always fits a message.
fn count_within_budget<M: prost::Message>(items: &[M]) -> usize {
    let mut total = 0;
    items
        .iter()
        .take_while(|item| {
            total += item.encoded_len() + 8;
            total <= RESPONSE_BUDGET_BYTES
        })
        .count()
        .max(1)
        .min(items.len())
}
