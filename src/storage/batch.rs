//! The write batcher: application group commit for new notes.
//!
//! Concurrent adds are gathered and written together: one transaction per
//! tenant per batch, one multi-row `INSERT … SELECT FROM unnest(…)` for the
//! notes with their revisions and outbox events, so that many calls share
//! one commit (and one WAL flush). A call is answered only after its batch
//! commits.
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
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::begin_for;
use super::gather::{Gatherer, per_tenant};
use super::notes::{InsertOutcome, fetch_many};
use super::rows;
use super::subjects::fetch_registrations;
use crate::domain::{DomainError, Note, RequestKey, Subject, SubjectRegistration, TenantId};

const INSERT_NOTES: &str = include_str!("sql/insert_notes.sql");
/// The statement for a batch in which no note has a source id: nothing can
/// conflict, and a plain insert skips the speculative-insertion work.
static INSERT_NOTES_WITHOUT_SOURCES: LazyLock<String> = LazyLock::new(|| {
    const ON_CONFLICT: &str = "    on conflict do nothing\n";
    assert!(INSERT_NOTES.contains(ON_CONFLICT));
    INSERT_NOTES.replace(ON_CONFLICT, "")
});

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

/// Told of every batch, written or read, for metrics.
pub trait BatchObserver: Send + Sync + 'static {
    /// A batch of `rows` adds was written (each add with its own outcome).
    fn batch_written(&self, rows: usize);
    /// A batch failed as a whole; its adds are written one at a time.
    fn batch_split(&self);
    /// `notes` reads of notes by id (GetNote) shared one query.
    fn reads_batched(&self, notes: usize);
}

/// Decides, from its subject's registration, whether an add may go ahead.
/// It may run more than once for one add (when a batch is retried).
pub type AdmissionCheck =
    Box<dyn Fn(Option<&SubjectRegistration>) -> Result<(), DomainError> + Send + Sync>;

/// One add waiting for its batch.
struct PendingAdd {
    note: Note,
    request: Option<RequestKey>,
    admit: AdmissionCheck,
    reply: oneshot::Sender<Result<InsertOutcome, DomainError>>,
}

/// Hands adds to the batching task. Cloning it is cheap; the task ends when
/// the last clone is dropped, after writing what it was given.
#[derive(Debug, Clone)]
pub struct AddBatcher {
    queue: mpsc::Sender<PendingAdd>,
}

/// Adds queued beyond this wait for room: back-pressure, not memory.
const QUEUE_CAPACITY: usize = 8192;

impl AddBatcher {
    /// Starts the batching task on the current Tokio runtime.
    pub fn start(pool: PgPool, settings: BatchSettings, observer: Arc<dyn BatchObserver>) -> Self {
        let (queue, adds) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer { pool, observer };
        tokio::spawn(collect(writer, settings, adds));
        Self { queue }
    }

    /// Writes `note` in the next batch; see `NoteStore::insert`.
    pub async fn insert(
        &self,
        note: Note,
        request: Option<RequestKey>,
        admit: AdmissionCheck,
    ) -> Result<InsertOutcome, DomainError> {
        let (reply, outcome) = oneshot::channel();
        let add = PendingAdd {
            note,
            request,
            admit,
            reply,
        };
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
            .field("note", &self.note.id)
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
}

impl Writer {
    /// Writes a batch: each tenant's adds in their own transaction (row-level
    /// security scopes a transaction to one tenant), the tenants concurrently.
    async fn write_batch(&self, batch: Vec<PendingAdd>) {
        per_tenant(
            batch,
            |add| &add.note.tenant,
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
            let (group, later): (Vec<_>, Vec<_>) = adds
                .into_iter()
                .partition(|add| add.request.as_ref().is_none_or(|r| seen.insert(r.id)));
            adds = later;
            self.write_group(&tenant, group).await;
        }
    }

    async fn write_group(&self, tenant: &TenantId, adds: Vec<PendingAdd>) {
        match try_write(&self.pool, tenant, &adds).await {
            Ok(outcomes) => {
                self.observer.batch_written(adds.len());
                for (add, outcome) in adds.into_iter().zip(outcomes) {
                    add.answer(outcome);
                }
            }
            Err(err) if adds.len() == 1 => {
                let add = adds.into_iter().next().expect("one add");
                add.answer(Err(err));
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
            Written::Created => InsertOutcome::Created(self.note),
            Written::Replayed(note) => InsertOutcome::Replayed(*note),
            Written::RequestConflict => InsertOutcome::RequestConflict,
        });
        // The caller may have gone (a cancelled call); the add stands.
        let _ = self.reply.send(outcome);
    }
}

/// Writes `adds` (one tenant, distinct request ids) in one transaction and
/// returns each add's outcome, in order. An `Err` means nothing was written.
async fn try_write(
    pool: &PgPool,
    tenant: &TenantId,
    adds: &[PendingAdd],
) -> Result<Vec<AddOutcome>, DomainError> {
    let mut outcomes: Vec<Option<AddOutcome>> = adds.iter().map(|_| None).collect();
    let mut tx = begin_for(pool, tenant).await?;

    // Request ids first: a retry of an earlier request is answered with its
    // note, whatever the subject's rules say now.
    let claims = claim_requests(&mut tx, tenant, adds).await?;
    let mut replays: Vec<(usize, Uuid)> = Vec::new();
    for (index, claim) in claims.iter().enumerate() {
        match claim {
            Claim::None | Claim::Claimed => {}
            Claim::TakenBySameRequest(note_id) => replays.push((index, *note_id)),
            Claim::TakenByOtherRequest => {
                outcomes[index] = Some(Ok(Written::RequestConflict));
            }
        }
    }
    let mut replay_notes = if replays.is_empty() {
        HashMap::new()
    } else {
        let ids: Vec<Uuid> = replays.iter().map(|(_, id)| *id).collect();
        fetch_many(&mut tx, tenant, &ids).await?
    };
    for (index, note_id) in replays {
        outcomes[index] = Some(match replay_notes.remove(&note_id) {
            Some(note) => Ok(Written::Replayed(Box::new(note))),
            None => Err(anyhow::anyhow!("request id names a missing note").into()),
        });
    }

    // The subjects' rules.
    let subjects: Vec<&Subject> = pending(adds, &outcomes)
        .map(|(_, add)| &add.note.subject)
        .collect();
    let registrations = fetch_registrations(&mut tx, tenant, &subjects).await?;
    for (index, add) in adds.iter().enumerate() {
        if outcomes[index].is_none() {
            let registration = registrations.get(&add.note.subject);
            if let Err(refused) = (add.admit)(registration) {
                outcomes[index] = Some(Err(refused));
            }
        }
    }

    // The notes, with their revisions and events.
    let to_insert: Vec<&Note> = pending(adds, &outcomes).map(|(_, add)| &add.note).collect();
    let inserted = insert_notes(&mut tx, tenant, &to_insert).await?;
    for (index, add) in adds.iter().enumerate() {
        if outcomes[index].is_none() {
            outcomes[index] = Some(if inserted.contains(&add.note.id.0) {
                Ok(Written::Created)
            } else {
                Err(DomainError::SourceExists)
            });
        }
    }

    // Claims of adds that were refused are given back, so that the request
    // can be made again.
    let released: Vec<Uuid> = adds
        .iter()
        .zip(&claims)
        .zip(&outcomes)
        .filter(|((_, claim), outcome)| {
            matches!(claim, Claim::Claimed) && matches!(outcome, Some(Err(_)))
        })
        .filter_map(|((add, _), _)| add.request.as_ref().map(|r| r.id))
        .collect();
    if !released.is_empty() {
        sqlx::query("delete from note_requests where tenant_id = $1 and request_id = any($2)")
            .bind(tenant.as_str())
            .bind(&released)
            .execute(&mut *tx)
            .await?;
    }

    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every add has an outcome"))
        .collect())
}

/// The adds that have no outcome yet, with their index.
fn pending<'a>(
    adds: &'a [PendingAdd],
    outcomes: &'a [Option<AddOutcome>],
) -> impl Iterator<Item = (usize, &'a PendingAdd)> {
    adds.iter()
        .enumerate()
        .filter(|(index, _)| outcomes[*index].is_none())
}

/// What became of an add's request id.
enum Claim {
    /// The add has no request id.
    None,
    /// This add is the first with its request id.
    Claimed,
    /// The same request came before and created this note.
    TakenBySameRequest(Uuid),
    /// A different request came before with this request id.
    TakenByOtherRequest,
}

/// Records the adds' request ids, in request id order (so that two batches
/// wait for each other's claims in the same order, never in a cycle). A
/// claim that another transaction holds waits for it to end.
async fn claim_requests(
    conn: &mut PgConnection,
    tenant: &TenantId,
    adds: &[PendingAdd],
) -> Result<Vec<Claim>, DomainError> {
    let mut requested: Vec<(&RequestKey, &Note)> = adds
        .iter()
        .filter_map(|add| add.request.as_ref().map(|request| (request, &add.note)))
        .collect();
    if requested.is_empty() {
        return Ok(adds.iter().map(|_| Claim::None).collect());
    }
    requested.sort_by_key(|(request, _)| request.id);
    let request_ids: Vec<Uuid> = requested.iter().map(|(r, _)| r.id).collect();
    let fingerprints: Vec<&[u8]> = requested.iter().map(|(r, _)| &r.fingerprint[..]).collect();
    let note_ids: Vec<Uuid> = requested.iter().map(|(_, n)| n.id.0).collect();
    let created: Vec<chrono::DateTime<chrono::Utc>> =
        requested.iter().map(|(_, n)| n.created_at).collect();
    let claimed: HashSet<Uuid> = sqlx::query_scalar(
        "insert into note_requests (tenant_id, request_id, fingerprint, note_id, created_at)
         select $1, request_id, fingerprint, note_id, created_at
         from unnest($2::uuid[], $3::bytea[], $4::uuid[], $5::timestamptz[])
             as t (request_id, fingerprint, note_id, created_at)
         on conflict (tenant_id, request_id) do nothing
         returning request_id",
    )
    .bind(tenant.as_str())
    .bind(&request_ids)
    .bind(&fingerprints)
    .bind(&note_ids)
    .bind(&created)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();

    let taken: Vec<Uuid> = request_ids
        .iter()
        .filter(|id| !claimed.contains(id))
        .copied()
        .collect();
    let earlier: HashMap<Uuid, (Vec<u8>, Uuid)> = if taken.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (Uuid, Vec<u8>, Uuid)>(
            "select request_id, fingerprint, note_id from note_requests
             where tenant_id = $1 and request_id = any($2)",
        )
        .bind(tenant.as_str())
        .bind(&taken)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(request_id, fingerprint, note_id)| (request_id, (fingerprint, note_id)))
        .collect()
    };

    adds.iter()
        .map(|add| {
            let Some(request) = &add.request else {
                return Ok(Claim::None);
            };
            if claimed.contains(&request.id) {
                return Ok(Claim::Claimed);
            }
            let (fingerprint, note_id) = earlier
                .get(&request.id)
                .ok_or_else(|| anyhow::anyhow!("a request id is neither new nor recorded"))?;
            Ok(if fingerprint[..] == request.fingerprint[..] {
                Claim::TakenBySameRequest(*note_id)
            } else {
                Claim::TakenByOtherRequest
            })
        })
        .collect()
}

/// Inserts the notes with their revisions and events; returns the ids of
/// those written (a note whose source id is taken is left out).
async fn insert_notes(
    conn: &mut PgConnection,
    tenant: &TenantId,
    notes: &[&Note],
) -> Result<HashSet<Uuid>, DomainError> {
    if notes.is_empty() {
        return Ok(HashSet::new());
    }
    fn column<'a, T>(notes: &[&'a Note], f: impl Fn(&'a Note) -> T) -> Vec<T> {
        notes.iter().map(|note| f(note)).collect()
    }
    let sql = if notes.iter().any(|note| note.source.is_some()) {
        INSERT_NOTES
    } else {
        INSERT_NOTES_WITHOUT_SOURCES.as_str()
    };
    let inserted: Vec<Uuid> = sqlx::query_scalar(sql)
        .bind(tenant.as_str())
        .bind(column(notes, |n| n.id.0))
        .bind(column(notes, |n| n.subject.kind.as_str()))
        .bind(column(notes, |n| n.subject.id.as_str()))
        .bind(column(notes, |n| Json(&n.related_subjects)))
        .bind(column(notes, |n| n.owner.as_str()))
        .bind(column(notes, |n| n.created_by.as_str()))
        .bind(column(notes, |n| rows::visibility_code(n.visibility)))
        .bind(column(notes, |n| rows::edit_policy_code(n.edit_policy)))
        .bind(column(notes, |n| n.body.text()))
        .bind(column(notes, |n| n.body.html()))
        .bind(column(notes, |n| n.title.as_str()))
        .bind(column(notes, |n| Json(&n.mentions)))
        .bind(column(notes, |n| Json(&n.actions)))
        .bind(column(notes, |n| Json(&n.attachments)))
        .bind(column(notes, |n| n.pinned))
        .bind(column(notes, |n| n.pinned_at))
        .bind(column(notes, |n| n.occurred_at))
        .bind(column(notes, |n| n.created_at))
        .bind(column(notes, |n| n.draft))
        .bind(column(notes, |n| {
            n.source.as_ref().map(|s| s.system.as_str())
        }))
        .bind(column(notes, |n| n.source.as_ref().map(|s| s.id.as_str())))
        .bind(column(notes, |n| n.client_reference.as_str()))
        .bind(column(notes, |_| Uuid::now_v7()))
        .fetch_all(conn)
        .await?;
    Ok(inserted.into_iter().collect())
}
