//! Note queries. Every query is scoped by tenant; access rules are applied
//! by the caller (`service`), except in `list`, which filters in SQL what
//! the viewer may read so that pages stay full.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::TryStreamExt as _;
use sqlx::types::Json;
use sqlx::{FromRow as _, PgConnection, PgPool, Postgres, QueryBuilder, Row as _};
use uuid::Uuid;

use super::batch::{self, AddBatcher, BatchSettings, InsertOutcome, NewNote};
use super::begin_for;
use super::gather::BatchObserver;
use super::purge::{self, PurgeTarget, Purged};
use super::reads::GetBatcher;
use super::replicas::{ReadRouter, ReadTarget};
use super::rows::{self, NoteRow, note_bytes, note_columns, page_cut_columns};
use super::search::{self, Search};
use super::watch::{ChangeFeeds, Watch};
use crate::domain::list::{NoteCursor, NoteFilter, PAGE_BUDGET_BYTES, Page};
use crate::domain::search::SearchPage;
use crate::domain::watch::{StreamPosition, WatchScope};
use crate::domain::{
    ChangeKind, DomainError, MemberId, Note, NoteId, Revision, Subject, TenantId, Visibility,
};

const SAVE_NOTE: &str = include_str!("sql/save_note.sql");

/// A null for each of the [`note_columns!`], with a trailing comma: the
/// note columns of ListNotes' horizon row.
macro_rules! horizon_row_nulls {
    () => {
        "null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null,"
    };
}

/// A `note_revisions` row: revision, change kind, actor, time, snapshot,
/// and how many rows the page fetched (see `rows::page_cut_columns`).
type RevisionRow = (
    i64,
    i16,
    String,
    chrono::DateTime<chrono::Utc>,
    Json<NoteRow>,
    i64,
);

#[derive(Debug, Clone)]
pub(crate) struct NoteStore {
    pool: PgPool,
    batcher: AddBatcher,
    /// A read batcher per read target: the primary's, then each replica's.
    readers: Vec<GetBatcher>,
    /// Where reads go (the primary, or a fresh enough replica).
    reads: ReadRouter,
    feeds: ChangeFeeds,
    /// How long a search statement may run.
    search_timeout: std::time::Duration,
}

impl NoteStore {
    /// Also starts the write batcher for adds and the read batcher for
    /// reads by id, on the current runtime.
    pub(crate) fn new(
        pool: PgPool,
        reads: ReadRouter,
        batching: BatchSettings,
        observer: Arc<dyn BatchObserver>,
        feeds: ChangeFeeds,
        search_timeout: std::time::Duration,
    ) -> Self {
        Self {
            batcher: AddBatcher::start(
                pool.clone(),
                batching,
                Arc::clone(&observer),
                feeds.clone(),
            ),
            readers: std::iter::once(ReadTarget::Primary)
                .chain((0..reads.replica_count()).map(ReadTarget::Replica))
                .map(|target| GetBatcher::start(reads.pool(target).clone(), Arc::clone(&observer)))
                .collect(),
            reads,
            pool,
            feeds,
            search_timeout,
        }
    }

    /// Runs `read` where the current call's reads go (`replicas`): on a
    /// replica when one is fresh enough, else on the primary; a replica
    /// that fails it is skipped, and the primary reads instead.
    async fn read<T, F>(&self, read: impl Fn(ReadTarget) -> F) -> Result<T, DomainError>
    where
        F: Future<Output = Result<T, DomainError>>,
    {
        let target = self.reads.target().await;
        match (target, read(target).await) {
            (
                ReadTarget::Replica(i),
                Err(err @ (DomainError::DatabaseUnavailable(_) | DomainError::Internal(_))),
            ) => {
                self.reads.skip(i, &err);
                read(ReadTarget::Primary).await
            }
            (_, outcome) => outcome,
        }
    }

    /// A watch of `tenant`'s changes that `scope` may see, right after
    /// `from` or from now (see `watch`).
    pub(crate) async fn watch(
        &self,
        tenant: TenantId,
        scope: WatchScope,
        from: Option<StreamPosition>,
    ) -> Result<Watch, DomainError> {
        self.feeds.watch(tenant, scope, from).await
    }

    /// Inserts a new note with its first revision and event, and records
    /// its request id, all in one transaction, in the next batch of adds
    /// (see `batch`). The subject's rule (`access::ensure_may_add_notes_to`)
    /// is applied in that transaction, with `any_subject` from
    /// `access::may_add_notes_to_any_subject` for the note's creator; a
    /// retry of an earlier request is answered without it.
    #[tracing::instrument(
        name = "db.add_note",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn insert(&self, add: NewNote) -> Result<InsertOutcome, DomainError> {
        self.batcher.insert(add).await
    }

    /// Inserts all of `adds` (one tenant's, with distinct request ids) or
    /// none, in one transaction and one statement, as the write batcher
    /// writes a batch; the first refused add, or a retried request whose
    /// note `may_replay` refuses, fails the whole and is named by its
    /// index (see `batch::write_all`). `refused_next`: the error of the add
    /// right after `adds`, refused before the store, which fails the whole
    /// unless one of `adds` is refused first.
    #[tracing::instrument(
        name = "db.add_notes",
        level = "debug",
        skip_all,
        fields(
            db.system = "postgresql",
            otel.kind = "client",
            db.operation.batch.size = adds.len()
        )
    )]
    pub(crate) async fn insert_all(
        &self,
        tenant: &TenantId,
        adds: Vec<NewNote>,
        refused_next: Option<DomainError>,
        may_replay: impl Fn(&Note) -> bool,
    ) -> Result<Vec<Note>, DomainError> {
        let notes = batch::write_all(&self.pool, tenant, adds, refused_next, may_replay).await?;
        self.feeds.touched(tenant);
        Ok(notes)
    }

    /// The notes with these ids that exist, by id, in one transaction:
    /// first their sizes, read without the bodies (a body's stored length
    /// is known without reading it), then, only when they fit in
    /// `budget_bytes`, the notes themselves.
    #[tracing::instrument(
        name = "db.get_notes",
        level = "debug",
        skip_all,
        fields(
            db.system = "postgresql",
            otel.kind = "client",
            db.operation.batch.size = ids.len()
        )
    )]
    pub(crate) async fn get_many(
        &self,
        tenant: &TenantId,
        ids: &[NoteId],
        budget_bytes: usize,
        readable: impl Fn(&MemberId, Visibility, bool) -> bool + Copy,
    ) -> Result<HashMap<NoteId, Note>, DomainError> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        self.read(|target| {
            get_many_on(
                self.reads.pool(target),
                tenant,
                &ids,
                budget_bytes,
                readable,
            )
        })
        .await
    }
}

/// `NoteStore::get_many` on `pool`: only the notes that `readable` lets
/// the caller read (by owner, visibility and draft) are sized and loaded,
/// so the budget's answer tells nothing of a note the caller may not read.
async fn get_many_on(
    pool: &PgPool,
    tenant: &TenantId,
    ids: &[Uuid],
    budget_bytes: usize,
    readable: impl Fn(&MemberId, Visibility, bool) -> bool,
) -> Result<HashMap<NoteId, Note>, DomainError> {
    let mut tx = begin_for(pool, tenant).await?;
    let found: Vec<(Uuid, i64, String, i16, bool)> = sqlx::query_as(concat!(
        "select id, ",
        note_bytes!(),
        ", owner_id, visibility, draft from notes where tenant_id = $1 and id = any($2)"
    ))
    .bind(tenant.as_str())
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut sizes: HashMap<Uuid, i64> = HashMap::with_capacity(found.len());
    for (id, size, owner, visibility, draft) in found {
        let visibility = rows::visibility_from_code(visibility).map_err(DomainError::Internal)?;
        if readable(&MemberId::from_stored(owner), visibility, draft) {
            sizes.insert(id, size);
        }
    }
    // Each id as often as it is asked for: each is answered.
    let total: i64 = ids.iter().filter_map(|id| sizes.get(id)).sum();
    if usize::try_from(total).unwrap_or(usize::MAX) > budget_bytes {
        tx.rollback().await?;
        return Err(DomainError::ResponseTooLarge(budget_bytes >> 20));
    }
    let ids: Vec<Uuid> = ids
        .iter()
        .copied()
        .filter(|id| sizes.contains_key(id))
        .collect();
    let rows = rows::select_notes(&mut *tx, tenant, &ids).await?;
    tx.commit().await?;
    rows.into_iter()
        .map(|row| {
            let note = Note::try_from(row)?;
            Ok((note.id, note))
        })
        .collect()
}

impl NoteStore {
    /// Changes several notes in one transaction, all or none: locks them
    /// (in id order, so that two such calls never wait on each other in a
    /// cycle), refuses when those `readable` lets the caller read weigh
    /// more than `budget_bytes` (they are the answer), lets `change` decide each one's new state in the order of
    /// `ids` (`None` for an id that names no note), and writes them with
    /// their revisions and events. The first error, named by its index,
    /// rolls the whole back.
    #[tracing::instrument(
        name = "db.update_notes",
        level = "debug",
        skip_all,
        fields(
            db.system = "postgresql",
            otel.kind = "client",
            db.operation.batch.size = ids.len()
        )
    )]
    pub(crate) async fn modify_all<F>(
        &self,
        tenant: &TenantId,
        ids: &[NoteId],
        budget_bytes: usize,
        readable: impl Fn(&MemberId, Visibility, bool) -> bool,
        mut change: F,
    ) -> Result<Vec<Note>, DomainError>
    where
        F: FnMut(usize, Option<Note>) -> Result<(Note, ChangeKind), DomainError>,
    {
        let mut sorted: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        sorted.sort_unstable();
        let mut tx = begin_for(&self.pool, tenant).await?;
        // The changed notes are the answer: first locked and sized without
        // their bodies, as BatchGetNotes sizes them.
        let found: Vec<(i64, String, i16, bool)> = sqlx::query_as(concat!(
            "select ",
            note_bytes!(),
            ", owner_id, visibility, draft from notes \
             where tenant_id = $1 and id = any($2) order by id for update"
        ))
        .bind(tenant.as_str())
        .bind(&sorted)
        .fetch_all(&mut *tx)
        .await?;
        let mut total: i64 = 0;
        for (size, owner, visibility, draft) in found {
            let visibility =
                rows::visibility_from_code(visibility).map_err(DomainError::Internal)?;
            if readable(&MemberId::from_stored(owner), visibility, draft) {
                total = total.saturating_add(size);
            }
        }
        if usize::try_from(total).unwrap_or(usize::MAX) > budget_bytes {
            tx.rollback().await?;
            return Err(DomainError::ResponseTooLarge(budget_bytes >> 20));
        }
        let rows: Vec<NoteRow> = sqlx::query_as(concat!(
            "select ",
            note_columns!(),
            " from notes where tenant_id = $1 and id = any($2) order by id for update"
        ))
        .bind(tenant.as_str())
        .bind(&sorted)
        .fetch_all(&mut *tx)
        .await?;
        let mut current = rows
            .into_iter()
            .map(|row| Ok((NoteId(row.id), Note::try_from(row)?)))
            .collect::<anyhow::Result<HashMap<NoteId, Note>>>()?;
        let mut changed = Vec::with_capacity(ids.len());
        for (index, id) in ids.iter().enumerate() {
            let (note, kind) =
                change(index, current.remove(id)).map_err(|err| err.in_batch("requests", index))?;
            save(&mut tx, &note, kind).await?;
            changed.push(note);
        }
        tx.commit().await?;
        self.feeds.touched(tenant);
        Ok(changed)
    }

    /// A page of the notes that match a full-text search (see `search`).
    #[tracing::instrument(
        name = "db.search_notes",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn search(&self, search: &Search<'_>) -> Result<SearchPage, DomainError> {
        self.read(|target| search::search(self.reads.pool(target), search, self.search_timeout))
            .await
    }

    /// Erases notes for good (see `purge`): every note of `tenant` about
    /// `target`'s subject, or with its ids.
    #[tracing::instrument(
        name = "db.purge_notes",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn purge(
        &self,
        tenant: &TenantId,
        actor: &MemberId,
        target: &PurgeTarget,
    ) -> Result<Purged, DomainError> {
        purge::purge(&self.pool, tenant, actor, target).await
    }

    /// The note, read in the next batch of reads by id (see `reads`): one
    /// round trip, shared with the reads queued beside it.
    #[tracing::instrument(
        name = "db.get_note",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn get(
        &self,
        tenant: &TenantId,
        id: NoteId,
    ) -> Result<Option<Note>, DomainError> {
        self.read(|target| {
            let reader = match target {
                ReadTarget::Primary => &self.readers[0],
                ReadTarget::Replica(i) => &self.readers[i + 1],
            };
            reader.get(tenant, id)
        })
        .await
    }

    /// Reads and locks a note, lets `change` decide its new state, and
    /// writes that state with a revision and an event, in one transaction.
    /// `change` returns `None` to leave the note as it is.
    #[tracing::instrument(
        name = "db.update_note",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn modify<F>(
        &self,
        tenant: &TenantId,
        id: NoteId,
        change: F,
    ) -> Result<Note, DomainError>
    where
        F: FnOnce(Note) -> Result<Option<(Note, ChangeKind)>, DomainError>,
    {
        let mut tx = begin_for(&self.pool, tenant).await?;
        let current = fetch_for_update(&mut tx, tenant, id)
            .await?
            .ok_or(DomainError::NoteNotFound)?;
        let unchanged = current.clone();
        let Some((changed, kind)) = change(current)? else {
            return Ok(unchanged);
        };
        save(&mut tx, &changed, kind).await?;
        tx.commit().await?;
        self.feeds.touched(tenant);
        Ok(changed)
    }

    /// The numbers of these notes (see the `note_numbers` migration),
    /// giving one to each note that has none yet.
    #[tracing::instrument(
        name = "db.note_numbers",
        level = "debug",
        skip_all,
        fields(
            db.system = "postgresql",
            otel.kind = "client",
            db.operation.batch.size = ids.len()
        )
    )]
    pub(crate) async fn numbers(
        &self,
        tenant: &TenantId,
        ids: &[NoteId],
    ) -> Result<HashMap<NoteId, i64>, DomainError> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let mut tx = begin_for(&self.pool, tenant).await?;
        sqlx::query(
            "insert into note_numbers (tenant_id, note_id, number)
             select $1, id, nextval('note_number_seq') from unnest($2::uuid[]) as t(id)
             on conflict (tenant_id, note_id) do nothing",
        )
        .bind(tenant.as_str())
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "select note_id, number from note_numbers where tenant_id = $1 and note_id = any($2)",
        )
        .bind(tenant.as_str())
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|(id, n)| (NoteId(id), n)).collect())
    }

    /// The note that has this number, if any.
    #[tracing::instrument(
        name = "db.find_note_by_number",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn id_for_number(
        &self,
        tenant: &TenantId,
        number: i64,
    ) -> Result<Option<NoteId>, DomainError> {
        let mut tx = begin_for(&self.pool, tenant).await?;
        let id: Option<Uuid> = sqlx::query_scalar(
            "select note_id from note_numbers where tenant_id = $1 and number = $2",
        )
        .bind(tenant.as_str())
        .bind(number)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id.map(NoteId))
    }

    /// The note imported from (or written through) `system` with this id.
    #[tracing::instrument(
        name = "db.find_note_by_source",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn id_for_source(
        &self,
        tenant: &TenantId,
        system: &str,
        source_id: &str,
    ) -> Result<Option<NoteId>, DomainError> {
        let mut tx = begin_for(&self.pool, tenant).await?;
        let id: Option<Uuid> = sqlx::query_scalar(
            "select id from notes where tenant_id = $1 and source_system = $2 and source_id = $3",
        )
        .bind(tenant.as_str())
        .bind(system)
        .bind(source_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id.map(NoteId))
    }

    /// A page of the notes that match `filter`, newest `occurred_at` first,
    /// at most `page_size` and, but for the first, within
    /// `PAGE_BUDGET_BYTES`:
    /// those `viewer` may read, or every one when `viewer` is `None` (an
    /// admin); and the position of the change stream that a watch started
    /// from misses nothing this page could not show (the xmin of the page's
    /// snapshot: every change the page does not see lies after it).
    #[tracing::instrument(
        name = "db.list_notes",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn list(
        &self,
        tenant: &TenantId,
        viewer: Option<&MemberId>,
        filter: &NoteFilter,
        page_size: usize,
        after: Option<NoteCursor>,
    ) -> Result<(Page<Note, NoteCursor>, StreamPosition), DomainError> {
        // The horizon comes from the page's own statement (its snapshot):
        // one row before the notes, all nulls but the horizon, so that an
        // empty page has it too. (A lateral join around the page did the
        // same, and cost a sixth of the database's ListNotes throughput.)
        //
        // A related-subject filter reads through `tenant_notes`, as
        // SearchNotes does: under row-level security no GIN index may
        // answer `@>` (not leakproof), and the tenant was walked note by
        // note (1.4 s for a contact with no note among a million; 4 ms
        // through the view). Every other listing reads under the policies.
        let source = if filter.related_subject.is_some() || filter.about.is_some() {
            "tenant_notes"
        } else {
            "notes"
        };
        //
        // The horizon's row comes first (PostgreSQL's append runs its parts
        // in order), then the notes, read one by one: once they pass
        // `PAGE_BUDGET_BYTES`, the rest of the statement is left unread
        // and its connection closed, so notes past the budget are never
        // loaded. (Cutting the page in SQL, with window functions over
        // each row's size, halved ListNotes' rate.)
        let query = || {
            let mut query = QueryBuilder::<Postgres>::new(concat!(
                "select ",
                horizon_row_nulls!(),
                " pg_snapshot_xmin(pg_current_snapshot())::text::int8 union all (select ",
                note_columns!(),
                ", null::int8"
            ));
            query.push(format_args!(" from {source} where "));
            push_filter(&mut query, tenant, viewer, filter);
            if let Some(cursor) = after {
                push_position(&mut query, "<", cursor);
            }
            query
                .push(" order by occurred_at desc, id desc limit ")
                .push_bind(page_size as i64 + 1)
                .push(")");
            query
        };
        const HORIZON_COLUMN: usize = rows::NOTE_COLUMN_COUNT;
        let (notes, horizon, more) = self
            .read(|target| async move {
                let mut tx = begin_for(self.reads.pool(target), tenant).await?;
                let mut horizon = 0;
                let mut notes = Vec::new();
                let mut bytes = 0;
                let mut cut = false;
                {
                    let mut query = query();
                    let mut rows = query.build().fetch(&mut *tx);
                    while let Some(row) = rows.try_next().await? {
                        // The horizon's row has no note.
                        if row.try_get::<Option<Uuid>, _>(1)?.is_none() {
                            horizon = row.try_get::<i64, _>(HORIZON_COLUMN)?;
                            continue;
                        }
                        let note = Note::try_from(NoteRow::from_row(&row)?)?;
                        bytes += note.approximate_bytes();
                        if !notes.is_empty() && bytes > PAGE_BUDGET_BYTES {
                            cut = true;
                            break;
                        }
                        notes.push(note);
                    }
                }
                if cut {
                    tx.abandon();
                } else {
                    tx.commit().await?;
                }
                let more = cut || notes.len() > page_size;
                notes.truncate(page_size);
                Ok((notes, horizon, more))
            })
            .await?;
        let watch_from = StreamPosition::before(u64::try_from(horizon).unwrap_or(0));
        let next = more.then(|| notes.last().map(Note::cursor)).flatten();
        Ok((Page { items: notes, next }, watch_from))
    }

    /// A page of a note's revisions, newest first, starting below
    /// `before_revision` when given.
    #[tracing::instrument(
        name = "db.list_revisions",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn revisions(
        &self,
        tenant: &TenantId,
        id: NoteId,
        page_size: usize,
        before_revision: Option<i64>,
    ) -> Result<Page<Revision, i64>, DomainError> {
        let rows: Vec<RevisionRow> = self
            .read(|target| async move {
                let mut tx = begin_for(self.reads.pool(target), tenant).await?;
                // Cut to the budget in the statement, as ListNotes is (its
                // numbers written in, see `rows::push_page_cut`).
                let sql = format!(
                    concat!(
                        "select revision, change_kind, actor_id, changed_at, snapshot, page_fetched
                         from (select *, ",
                        page_cut_columns!("revision desc"),
                        " from (select revision, change_kind, actor_id, changed_at, snapshot,
                                snapshot_bytes as row_bytes
                            from note_revisions
                            where tenant_id = $1 and note_id = $2 and revision < $3
                            order by revision desc
                            limit {fetch}) fetched) page
                         where page_place <= {page_size}
                             and (page_place = 1 or page_bytes <= {budget})
                         order by revision desc"
                    ),
                    fetch = page_size + 1,
                    page_size = page_size,
                    budget = PAGE_BUDGET_BYTES,
                );
                let rows = sqlx::query_as(&sql)
                    .bind(tenant.as_str())
                    .bind(id.0)
                    .bind(before_revision.unwrap_or(i64::MAX))
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(rows)
            })
            .await?;
        let fetched = rows.last().map_or(0, |row| row.5);
        let more = usize::try_from(fetched).unwrap_or(0) > rows.len();
        let revisions = rows
            .into_iter()
            .map(|(revision, kind, actor, changed_at, Json(snapshot), _)| {
                Ok(Revision {
                    revision,
                    change_kind: rows::change_kind_from_code(kind)?,
                    actor: MemberId::from_stored(actor),
                    changed_at,
                    note: Note::try_from(snapshot)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let next = more.then(|| revisions.last().map(|r| r.revision)).flatten();
        Ok(Page {
            items: revisions,
            next,
        })
    }
}

/// The conditions, after `where`, that select the notes of `tenant` that
/// match `filter` and that `viewer` may read (every one when `viewer` is
/// `None`, an admin): shared by ListNotes and SearchNotes, so that both
/// apply the same access rules in SQL and pages stay full.
pub(super) fn push_filter<'a>(
    query: &mut QueryBuilder<'a, Postgres>,
    tenant: &'a TenantId,
    viewer: Option<&'a MemberId>,
    filter: &'a NoteFilter,
) {
    query.push("tenant_id = ").push_bind(tenant.as_str());
    if let Some(subject) = &filter.subject {
        query.push(" and subject_type = ").push_bind(&subject.kind);
        query.push(" and subject_id = ").push_bind(&subject.id);
    }
    if let Some(kind) = &filter.subject_type {
        query.push(" and subject_type = ").push_bind(kind);
    }
    // `@>` on the array of {type, id} objects: the GIN index
    // notes_related_subjects answers it.
    if let Some(related) = &filter.related_subject {
        query
            .push(" and related_subjects @> ")
            .push_bind(related_array(related));
    }
    if let Some(about) = &filter.about {
        query
            .push(" and ((subject_type = ")
            .push_bind(&about.kind)
            .push(" and subject_id = ")
            .push_bind(&about.id)
            .push(") or related_subjects @> ")
            .push_bind(related_array(about))
            .push(")");
    }
    if let Some(owner) = &filter.owner {
        query.push(" and owner_id = ").push_bind(owner.as_str());
    }
    // Literals, not binds, so the planner can use the partial index.
    match filter.pinned {
        Some(true) => {
            query.push(" and pinned");
        }
        Some(false) => {
            query.push(" and not pinned");
        }
        None => {}
    }
    for (column, range) in [
        ("occurred_at", &filter.occurred),
        ("created_at", &filter.created),
    ] {
        if let Some(start) = range.start {
            query
                .push(format_args!(" and {column} >= "))
                .push_bind(start);
        }
        if let Some(end) = range.end {
            query.push(format_args!(" and {column} < ")).push_bind(end);
        }
    }
    if !filter.show_deleted {
        query.push(" and deleted_at is null");
    }
    if let Some(viewer) = viewer {
        query
            .push(" and ((visibility = 2 and not draft) or owner_id = ")
            .push_bind(viewer.as_str())
            .push(")");
    }
}

/// ` and (occurred_at, id) <op> (<cursor>)`: the notes after (`<`, in
/// newest-first order) or at and before (`>=`) a position.
pub(super) fn push_position(query: &mut QueryBuilder<'_, Postgres>, op: &str, cursor: NoteCursor) {
    query
        .push(format_args!(" and (occurred_at, id) {op} ("))
        .push_bind(cursor.occurred_at)
        .push(", ")
        .push_bind(cursor.id.0)
        .push(")");
}

/// The note, locked until the transaction ends.
async fn fetch_for_update(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: NoteId,
) -> Result<Option<Note>, DomainError> {
    let row: Option<NoteRow> = sqlx::query_as(concat!(
        "select ",
        note_columns!(),
        " from notes where tenant_id = $1 and id = $2 for update"
    ))
    .bind(tenant.as_str())
    .bind(id.0)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Note::try_from).transpose()?)
}

async fn save(conn: &mut PgConnection, note: &Note, kind: ChangeKind) -> Result<(), DomainError> {
    sqlx::query(SAVE_NOTE)
        .bind(note.tenant.as_str())
        .bind(note.id.0)
        .bind(&note.subject.kind)
        .bind(&note.subject.id)
        .bind(Json(&note.related_subjects))
        .bind(note.owner.as_str())
        .bind(note.created_by.as_str())
        .bind(note.updated_by.as_str())
        .bind(rows::visibility_code(note.visibility))
        .bind(rows::edit_policy_code(note.edit_policy))
        .bind(note.body.text())
        .bind(note.body.html())
        .bind(&note.title)
        .bind(&note.mentions)
        .bind(Json(&note.actions))
        .bind(Json(&note.attachments))
        .bind(note.pinned)
        .bind(note.pinned_at)
        .bind(note.occurred_at)
        .bind(note.created_at)
        .bind(note.updated_at)
        .bind(note.edited_at)
        .bind(note.deleted_at)
        .bind(note.draft)
        .bind(note.source.as_ref().map(|s| s.system.as_str()))
        .bind(note.source.as_ref().map(|s| s.id.as_str()))
        .bind(&note.client_reference)
        .bind(note.revision)
        .bind(rows::change_kind_code(kind))
        .bind(Uuid::now_v7())
        .execute(conn)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.constraint() == Some("notes_tenant_source") => {
                DomainError::SourceExists
            }
            _ => err.into(),
        })?;
    Ok(())
}

/// The one-element array `[{"type": …, "id": …}]` that `related_subjects @>`
/// looks for.
fn related_array(subject: &Subject) -> Json<[&Subject; 1]> {
    Json([subject])
}
