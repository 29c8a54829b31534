//! The write batcher: application group commit for new notes.
//!
//! Concurrent adds are gathered and written together: one statement per
//! tenant per batch, `notesd_add_notes` (see its migration), which claims
//! the request ids, applies the subjects' rule and inserts the notes with
//! their revisions and outbox events, so that many calls share one commit
//! (and one WAL flush) and one round trip. A call is answered only after its
//! batch commits.
//!
//! Batching is natural: a batch takes what is queued when a writer is free,
//! so under light load a lone call is written at once, and under heavy load
//! calls queue while the writers are busy and go out together. `linger` can
//! add a wait for company; it is zero by default.
//!
//! Each add keeps its own outcome. A refused add (the subject's rules, a
//! source id already taken, a request id used by another request) is
//! answered alone and its neighbours are written; a batch that fails as a
//! whole (a database error) is retried one add at a time, so that only the
//! add that causes the error gets it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::types::Json;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::gather::{BatchObserver, Gatherer, per_tenant};
use super::rows::{self, select_notes};
use super::watch::ChangeFeeds;
use crate::domain::{DomainError, Note, RequestKey, TenantId, access};

/// How adds are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// The most adds written in one batch.
    pub max_rows: usize,
    /// How long a batch waits for more adds after its first one. Zero: it
    /// takes what is queued and goes.
    pub linger: Duration,
    /// How many batches may be written at once (each holds one database
    /// connection per tenant in it).
    pub writers: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_rows: 256,
            linger: Duration::ZERO,
            writers: 2,
        }
    }
}

/// What inserting a note with a request id came to.
#[derive(Debug)]
pub(crate) enum InsertOutcome {
    Created(Note),
    /// The request id was used before by the same request: its note.
    Replayed(Note),
    /// The request id was used before by a different request.
    RequestConflict,
}

/// A note to insert, with its request key.
#[derive(Debug)]
pub(crate) struct NewNote {
    pub note: Note,
    pub request: Option<RequestKey>,
    /// Whether the note's creator may add notes to any subject (see
    /// `access::may_add_notes_to_any_subject`).
    pub any_subject: bool,
}

/// One add waiting for its batch.
struct PendingAdd {
    add: NewNote,
    reply: oneshot::Sender<Result<InsertOutcome, DomainError>>,
}

/// Hands adds to the batching task. Cloning it is cheap; the task ends when
/// the last clone is dropped, after writing what it was given.
#[derive(Debug, Clone)]
pub(super) struct AddBatcher {
    queue: mpsc::Sender<PendingAdd>,
}

/// Adds queued beyond this wait for room: back-pressure, not memory.
const QUEUE_CAPACITY: usize = 8192;

impl AddBatcher {
    /// Starts the batching task on the current Tokio runtime.
    pub(super) fn start(
        pool: PgPool,
        settings: BatchSettings,
        observer: Arc<dyn BatchObserver>,
        feeds: ChangeFeeds,
    ) -> Self {
        let (queue, adds) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            pool,
            observer,
            feeds,
        };
        tokio::spawn(collect(writer, settings, adds));
        Self { queue }
    }

    /// Writes `note` in the next batch; see `NoteStore::insert`.
    pub(super) async fn insert(&self, add: NewNote) -> Result<InsertOutcome, DomainError> {
        let (reply, outcome) = oneshot::channel();
        let add = PendingAdd { add, reply };
        self.queue
            .send(add)
            .await
            .map_err(|_| anyhow::anyhow!("the write batcher has stopped"))?;
        outcome
            .await
            .map_err(|_| anyhow::anyhow!("the write batcher dropped an add"))?
    }
}

impl std::fmt::Debug for PendingAdd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAdd")
            .field("note", &self.add.note.id)
            .finish_non_exhaustive()
    }
}

/// The batching loop: hands each batch of adds to a writer task.
async fn collect(writer: Writer, settings: BatchSettings, adds: mpsc::Receiver<PendingAdd>) {
    let mut gatherer = Gatherer::new(adds, settings.writers, settings.max_rows, settings.linger);
    while let Some((batch, permit)) = gatherer.next().await {
        let writer = writer.clone();
        tokio::spawn(async move {
            writer.write_batch(batch).await;
            drop(permit);
        });
    }
}

/// Writes batches.
#[derive(Clone)]
struct Writer {
    pool: PgPool,
    observer: Arc<dyn BatchObserver>,
    /// Told of every commit, so that watchers hear of it at once.
    feeds: ChangeFeeds,
}

impl Writer {
    /// Writes a batch: each tenant's adds in their own transaction (row-level
    /// security scopes a transaction to one tenant), the tenants concurrently.
    async fn write_batch(&self, batch: Vec<PendingAdd>) {
        per_tenant(
            batch,
            |pending| &pending.add.note.tenant,
            |tenant, adds| {
                let writer = self.clone();
                async move { writer.write_tenant(tenant, adds).await }
            },
        )
        .await;
    }

    /// Writes one tenant's adds and answers each. Adds that repeat a request id
    /// already in the group wait for the group before them, so that one
    /// transaction never holds two claims of one request id.
    async fn write_tenant(&self, tenant: TenantId, mut adds: Vec<PendingAdd>) {
        while !adds.is_empty() {
            let mut seen = HashSet::new();
            let (group, later): (Vec<_>, Vec<_>) = adds.into_iter().partition(|pending| {
                pending
                    .add
                    .request
                    .as_ref()
                    .is_none_or(|r| seen.insert(r.id))
            });
            adds = later;
            self.write_group(&tenant, group).await;
        }
    }

    async fn write_group(&self, tenant: &TenantId, adds: Vec<PendingAdd>) {
        let new: Vec<&NewNote> = adds.iter().map(|pending| &pending.add).collect();
        match try_write(&self.pool, tenant, &new).await {
            Ok(outcomes) => {
                self.feeds.touched(tenant);
                self.observer.batch_written(adds.len());
                for (add, outcome) in adds.into_iter().zip(outcomes) {
                    add.answer(outcome);
                }
            }
            Err(err) if adds.len() == 1 => {
                let add = adds.into_iter().next().expect("one add");
                add.answer(Err(err));
            }
            // The database is out of reach: writing the adds one at a
            // time would only meet it again, each after its own wait. Each
            // add is answered UNAVAILABLE at once (its caller may retry,
            // with its request id to stay idempotent).
            Err(err @ DomainError::DatabaseUnavailable(_)) => {
                for add in adds {
                    add.answer(Err(err.duplicate()));
                }
            }
            Err(err) => {
                tracing::warn!(
                    adds = adds.len(),
                    error = %err,
                    "a batch of adds failed; writing them one at a time"
                );
                self.observer.batch_split();
                for add in adds {
                    Box::pin(self.write_group(tenant, vec![add])).await;
                }
            }
        }
    }
}

/// What a batch did with one add (the add's own note is not copied).
enum Written {
    Created,
    Replayed(Box<Note>),
    RequestConflict,
}

type AddOutcome = Result<Written, DomainError>;

impl PendingAdd {
    fn answer(self, outcome: AddOutcome) {
        let outcome = outcome.map(|written| match written {
            Written::Created => InsertOutcome::Created(self.add.note),
            Written::Replayed(note) => InsertOutcome::Replayed(*note),
            Written::RequestConflict => InsertOutcome::RequestConflict,
        });
        // The caller may have gone (a cancelled call); the add stands.
        let _ = self.reply.send(outcome);
    }
}

/// One batch in one round trip: `notesd_add_notes` (see its migration)
/// claims the request ids, applies the subjects' rule, inserts the notes
/// with their revisions and events, and gives back the claims of refused
/// adds, as one statement whose implicit transaction commits before it
/// answers.
const ADD_NOTES: &str = "select add_index, outcome, replayed_note from notesd_add_notes(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
    $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)";

/// `notesd_add_notes`'s outcome codes.
mod code {
    pub(super) const CREATED: i16 = 1;
    pub(super) const REPLAYED: i16 = 2;
    pub(super) const REQUEST_CONFLICT: i16 = 3;
    pub(super) const SUBJECT_OWNER_ONLY: i16 = 4;
    pub(super) const SOURCE_EXISTS: i16 = 5;
    pub(super) const REQUEST_UNRECORDED: i16 = 6;
}

/// Writes `adds` (one tenant, distinct request ids) in one transaction and
/// returns each add's outcome, in order. An `Err` means nothing was written.
async fn try_write(
    pool: &PgPool,
    tenant: &TenantId,
    adds: &[&NewNote],
) -> Result<Vec<AddOutcome>, DomainError> {
    let Some(rows) = add_notes(pool, tenant, adds).await? else {
        // Committed, but not answerable: each add gets the error.
        return Ok(adds.iter().map(|_| Err(out_of_order())).collect());
    };

    // A retry of an earlier request is answered with that request's note,
    // as it is now. The batch has committed: a failure here is the retry's
    // alone. An error, if any, is answered to each replay (a copy each).
    let mut replay_notes = replayed_notes(pool, tenant, &rows).await;
    Ok(rows
        .into_iter()
        .map(|(outcome, replayed_note)| match outcome {
            code::CREATED => Ok(Written::Created),
            code::REPLAYED => {
                let id = replayed_note.unwrap_or_default();
                match &mut replay_notes {
                    Ok(notes) => notes
                        .remove(&id)
                        .map(|note| Written::Replayed(Box::new(note)))
                        .ok_or_else(|| missing_replay(id)),
                    Err(err) => Err(err.duplicate()),
                }
            }
            code::REQUEST_CONFLICT => Ok(Written::RequestConflict),
            other => Err(refusal(other)),
        })
        .collect())
}

/// Writes `adds` (one tenant, distinct request ids) all or none, in one
/// transaction: when `notesd_add_notes` refuses any add, or `may_replay`
/// refuses the note a retried request created, the transaction rolls back
/// and the error names the first such add's index; else `refused_next`
/// (the error of an add after them, refused before the store), if any,
/// rolls it back. Returns each add's note (for a retried request, the note
/// it created), in order.
pub(super) async fn write_all(
    pool: &PgPool,
    tenant: &TenantId,
    adds: Vec<NewNote>,
    refused_next: Option<DomainError>,
    may_replay: impl Fn(&Note) -> bool,
) -> Result<Vec<Note>, DomainError> {
    let new: Vec<&NewNote> = adds.iter().collect();
    let mut tx = super::begin_for(pool, tenant).await?;
    let rows = add_notes(&mut *tx, tenant, &new)
        .await?
        .ok_or_else(out_of_order)?;
    let mut replays = replayed_notes(&mut *tx, tenant, &rows).await?;
    let mut notes = Vec::with_capacity(adds.len());
    // In request order, so that the error is the first refused add's.
    for (index, (add, (outcome, replayed_note))) in adds.into_iter().zip(rows).enumerate() {
        let error = match outcome {
            code::CREATED => {
                notes.push(add.note);
                continue;
            }
            code::REPLAYED => {
                let id = replayed_note.unwrap_or_default();
                let note = replays.remove(&id).ok_or_else(|| missing_replay(id))?;
                if may_replay(&note) {
                    notes.push(note);
                    continue;
                }
                DomainError::NoteNotFound
            }
            code::REQUEST_CONFLICT => DomainError::RequestIdConflict,
            other => refusal(other),
        };
        tx.rollback().await?;
        return Err(error.in_batch("requests", index));
    }
    if let Some(error) = refused_next {
        tx.rollback().await?;
        return Err(error);
    }
    tx.commit().await?;
    Ok(notes)
}

/// Calls `notesd_add_notes` for `adds`: each add's outcome code and the
/// note a replayed request created, in order; `None` when its answer does
/// not line up with the adds.
async fn add_notes<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    tenant: &TenantId,
    adds: &[&NewNote],
) -> Result<Option<Vec<(i16, Option<Uuid>)>>, DomainError> {
    fn column<'a, T>(adds: &[&'a NewNote], f: impl Fn(&'a NewNote) -> T) -> Vec<T> {
        adds.iter().map(|add| f(add)).collect()
    }
    let rows: Vec<(i64, i16, Option<Uuid>)> = sqlx::query_as(ADD_NOTES)
        .bind(tenant.as_str())
        .bind(column(adds, |a| a.note.id.0))
        .bind(column(adds, |a| a.note.subject.kind.as_str()))
        .bind(column(adds, |a| a.note.subject.id.as_str()))
        .bind(column(adds, |a| Json(&a.note.related_subjects)))
        .bind(column(adds, |a| a.note.owner.as_str()))
        .bind(column(adds, |a| a.note.created_by.as_str()))
        .bind(column(adds, |a| rows::visibility_code(a.note.visibility)))
        .bind(column(adds, |a| rows::edit_policy_code(a.note.edit_policy)))
        .bind(column(adds, |a| a.note.body.text()))
        .bind(column(adds, |a| a.note.body.html()))
        .bind(column(adds, |a| a.note.title.as_str()))
        .bind(column(adds, |a| Json(&a.note.mentions)))
        .bind(column(adds, |a| Json(&a.note.actions)))
        .bind(column(adds, |a| Json(&a.note.attachments)))
        .bind(column(adds, |a| a.note.pinned))
        .bind(column(adds, |a| a.note.pinned_at))
        .bind(column(adds, |a| a.note.occurred_at))
        .bind(column(adds, |a| a.note.created_at))
        .bind(column(adds, |a| a.note.draft))
        .bind(column(adds, |a| {
            a.note.source.as_ref().map(|s| s.system.as_str())
        }))
        .bind(column(adds, |a| {
            a.note.source.as_ref().map(|s| s.id.as_str())
        }))
        .bind(column(adds, |a| a.note.client_reference.as_str()))
        .bind(column(adds, |_| Uuid::now_v7()))
        .bind(column(adds, |a| a.request.as_ref().map(|r| r.id)))
        .bind(column(adds, |a| {
            a.request.as_ref().map(|r| &r.fingerprint[..])
        }))
        .bind(column(adds, |a| a.any_subject))
        .fetch_all(executor)
        .await?;
    let in_order = rows.len() == adds.len()
        && rows
            .iter()
            .enumerate()
            .all(|(i, (index, _, _))| usize::try_from(*index) == Ok(i + 1));
    Ok(in_order.then(|| {
        rows.into_iter()
            .map(|(_, outcome, note)| (outcome, note))
            .collect()
    }))
}

/// The notes that the replayed requests among `rows` created, by id.
async fn replayed_notes<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    tenant: &TenantId,
    rows: &[(i16, Option<Uuid>)],
) -> Result<HashMap<Uuid, Note>, DomainError> {
    let replayed: Vec<Uuid> = rows
        .iter()
        .filter(|(outcome, _)| *outcome == code::REPLAYED)
        .filter_map(|(_, note)| *note)
        .collect();
    if replayed.is_empty() {
        return Ok(HashMap::new());
    }
    select_notes(executor, tenant, &replayed)
        .await?
        .into_iter()
        .map(|row| Ok((row.id, Note::try_from(row)?)))
        .collect()
}

/// The error of an add that `notesd_add_notes` refused with `outcome`.
fn refusal(outcome: i16) -> DomainError {
    match outcome {
        code::SUBJECT_OWNER_ONLY => access::subject_takes_owner_notes_only(),
        code::SOURCE_EXISTS => DomainError::SourceExists,
        code::REQUEST_UNRECORDED => {
            anyhow::anyhow!("a request id is neither new nor recorded").into()
        }
        other => anyhow::anyhow!("notesd_add_notes answered outcome {other}").into(),
    }
}

fn out_of_order() -> DomainError {
    anyhow::anyhow!("notesd_add_notes answered out of order").into()
}

fn missing_replay(id: Uuid) -> DomainError {
    anyhow::anyhow!("request id names a missing note {id}").into()
}
