//! The use cases of notesd, shared by every edge (gRPC and the vendor
//! facades): access rules applied, then storage called. No wire types here.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound as _, Utc};
use uuid::Uuid;

use crate::domain::list::{NoteCursor, NoteFilter, Page};
use crate::domain::search::{SearchCursor, SearchOrder, SearchPage, SearchQuery};
use crate::domain::watch::{StreamPosition, WatchFilter, WatchScope};
use crate::domain::{
    ChangeKind, DomainError, MemberId, Note, NoteDraft, NoteId, NotePatch, Principal, RequestKey,
    Revision, Subject, SubjectRegistration, access,
};
use crate::storage::{
    InsertOutcome, NewNote, NoteStore, PurgeTarget, Purged, Search, SubjectStore, Watch,
};

#[derive(Debug, Clone)]
pub(crate) struct Notes {
    store: NoteStore,
    subjects: SubjectStore,
}

/// Postgres keeps microseconds: a time made here is truncated to them, so a
/// note in memory equals the note as stored.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Notes {
    pub(crate) fn new(store: NoteStore, subjects: SubjectStore) -> Self {
        Self { store, subjects }
    }

    /// Creates a note owned by the caller. With a request key, a retry of
    /// the same request returns the first note.
    pub(crate) async fn add_note(
        &self,
        principal: &Principal,
        draft: NoteDraft,
        request: Option<RequestKey>,
    ) -> Result<Note, DomainError> {
        let add = new_note(principal, draft, request, now())?;
        added(principal, self.store.insert(add).await?)
    }

    /// Creates several notes, all or none, in one transaction (see
    /// `NoteStore::insert_all`); the error of the first refused one, here
    /// or in the store, names its index.
    pub(crate) async fn add_notes(
        &self,
        principal: &Principal,
        drafts: Vec<(NoteDraft, Option<RequestKey>)>,
    ) -> Result<Vec<Note>, DomainError> {
        let now = now();
        // The adds before the first one refused here go to the store all
        // the same: one of them that the store refuses comes first.
        let mut adds = Vec::with_capacity(drafts.len());
        let mut refused = None;
        for (index, (draft, request)) in drafts.into_iter().enumerate() {
            match new_note(principal, draft, request, now) {
                Ok(add) => adds.push(add),
                Err(err) => {
                    refused = Some(err.in_batch("requests", index));
                    break;
                }
            }
        }
        let refused = match refused {
            Some(err) if adds.is_empty() => return Err(err),
            refused => refused,
        };
        self.store
            .insert_all(&principal.tenant, adds, refused, |note| {
                access::can_read(principal, note)
            })
            .await
    }

    /// Creates each of several notes that can be created, through the
    /// write batcher (they share its batches); each gets its own outcome.
    pub(crate) async fn add_each_note(
        &self,
        principal: &Principal,
        drafts: Vec<(NoteDraft, Option<RequestKey>)>,
    ) -> Vec<Result<Note, DomainError>> {
        let now = now();
        futures_util::future::join_all(drafts.into_iter().map(|(draft, request)| async move {
            let add = new_note(principal, draft, request, now)?;
            added(principal, self.store.insert(add).await?)
        }))
        .await
    }

    pub(crate) async fn get_note(
        &self,
        principal: &Principal,
        id: NoteId,
    ) -> Result<Note, DomainError> {
        self.store
            .get(&principal.tenant, id)
            .await?
            .filter(|note| access::can_read(principal, note))
            .ok_or(DomainError::NoteNotFound)
    }

    /// Applies `patch` to a note the caller may edit. `etag`, when given,
    /// must be the note's current etag.
    pub(crate) async fn update_note(
        &self,
        principal: &Principal,
        id: NoteId,
        patch: NotePatch,
        etag: Option<&str>,
    ) -> Result<Note, DomainError> {
        // Read before the note's transaction; checked after the note's
        // own checks, so an invisible note is NOT_FOUND whatever the subject.
        let target_registration = match &patch.subject {
            Some(subject) => self.subjects.get(&principal.tenant, subject).await?,
            None => None,
        };
        self.store
            .modify(&principal.tenant, id, |mut note| {
                check_writable(principal, &note, etag)?;
                if patch.subject.as_ref().is_some_and(|s| *s != note.subject) {
                    access::ensure_may_add_notes_to(principal, target_registration.as_ref())?;
                }
                if patch.changes_owner_fields(&note) {
                    access::ensure_is_owner(principal, &note)?;
                }
                if note.deleted_at.is_some() {
                    return Err(DomainError::NoteDeleted);
                }
                let changed = patch.apply(&mut note, &principal.member, now());
                Ok(changed.then_some((note, ChangeKind::Updated)))
            })
            .await
    }

    /// Soft-deletes a note the caller may edit.
    pub(crate) async fn delete_note(
        &self,
        principal: &Principal,
        id: NoteId,
        etag: Option<&str>,
    ) -> Result<Note, DomainError> {
        self.set_deleted(principal, id, etag, true).await
    }

    /// Restores a soft-deleted note the caller may edit.
    pub(crate) async fn undelete_note(
        &self,
        principal: &Principal,
        id: NoteId,
        etag: Option<&str>,
    ) -> Result<Note, DomainError> {
        self.set_deleted(principal, id, etag, false).await
    }

    async fn set_deleted(
        &self,
        principal: &Principal,
        id: NoteId,
        etag: Option<&str>,
        delete: bool,
    ) -> Result<Note, DomainError> {
        self.store
            .modify(&principal.tenant, id, |note| {
                deletion(principal, note, etag, delete).map(Some)
            })
            .await
    }

    /// Soft-deletes several notes, all or none, each as `delete_note`
    /// would; the first failure names its index. The deleted notes are
    /// the answer: RESPONSE_TOO_LARGE when those the caller may read weigh
    /// more than `budget_bytes`.
    pub(crate) async fn delete_notes(
        &self,
        principal: &Principal,
        requests: &[(NoteId, Option<String>)],
        budget_bytes: usize,
    ) -> Result<Vec<Note>, DomainError> {
        let ids: Vec<NoteId> = requests.iter().map(|(id, _)| *id).collect();
        self.store
            .modify_all(
                &principal.tenant,
                &ids,
                budget_bytes,
                |owner, visibility, draft| access::can_see(principal, owner, visibility, draft),
                |index, note| {
                    let note = note.ok_or(DomainError::NoteNotFound)?;
                    deletion(principal, note, requests[index].1.as_deref(), true)
                },
            )
            .await
    }

    /// Notes by id, in the order of `ids`, all or none: an id the caller
    /// cannot read fails the call as NOT_FOUND, named by its index.
    pub(crate) async fn get_notes(
        &self,
        principal: &Principal,
        ids: &[NoteId],
        budget_bytes: usize,
    ) -> Result<Vec<Note>, DomainError> {
        let mut found = self
            .store
            .get_many(
                &principal.tenant,
                ids,
                budget_bytes,
                |owner, visibility, draft| access::can_see(principal, owner, visibility, draft),
            )
            .await?;
        let mut wanted: HashMap<NoteId, usize> = HashMap::new();
        for id in ids {
            *wanted.entry(*id).or_default() += 1;
        }
        ids.iter()
            .enumerate()
            .map(|(index, id)| {
                let readable = found
                    .get(id)
                    .is_some_and(|note| access::can_read(principal, note));
                if !readable {
                    return Err(DomainError::NoteNotFound.in_batch("ids", index));
                }
                let left = wanted.get_mut(id).expect("counted above");
                *left -= 1;
                Ok(if *left == 0 {
                    found.remove(id).expect("checked above")
                } else {
                    found[id].clone()
                })
            })
            .collect()
    }

    /// A page of the notes the caller may read that match `query`.
    pub(crate) async fn search_notes(
        &self,
        principal: &Principal,
        filter: &NoteFilter,
        query: &SearchQuery,
        order: SearchOrder,
        page_size: usize,
        after: Option<SearchCursor>,
    ) -> Result<SearchPage, DomainError> {
        self.store
            .search(&Search {
                tenant: &principal.tenant,
                viewer: (!principal.is_admin()).then_some(&principal.member),
                filter,
                query,
                order,
                page_size,
                after,
            })
            .await
    }

    /// Erases notes for good; admin keys only.
    pub(crate) async fn purge_notes(
        &self,
        principal: &Principal,
        target: &PurgeTarget,
    ) -> Result<Purged, DomainError> {
        if !principal.is_admin() {
            return Err(DomainError::AdminKeyRequired);
        }
        let purged = self
            .store
            .purge(&principal.tenant, &principal.member, target)
            .await?;
        tracing::info!(
            tenant = %principal.tenant,
            purge_id = %purged.id,
            notes = purged.notes,
            revisions = purged.revisions,
            "notes purged"
        );
        Ok(purged)
    }

    /// A page of the notes the caller may read, and the stream position a
    /// watch misses nothing from (see `NoteStore::list`).
    pub(crate) async fn list_notes(
        &self,
        principal: &Principal,
        filter: &NoteFilter,
        page_size: usize,
        after: Option<NoteCursor>,
    ) -> Result<(Page<Note, NoteCursor>, StreamPosition), DomainError> {
        self.store
            .list(
                &principal.tenant,
                (!principal.is_admin()).then_some(&principal.member),
                filter,
                page_size,
                after,
            )
            .await
    }

    /// The changes of the caller's tenant that it may see through
    /// `filter`, right after `from` or from now.
    pub(crate) async fn watch_notes(
        &self,
        principal: &Principal,
        filter: WatchFilter,
        from: Option<StreamPosition>,
    ) -> Result<Watch, DomainError> {
        let scope = WatchScope::new(principal.clone(), filter);
        self.store
            .watch(principal.tenant.clone(), scope, from)
            .await
    }

    /// The numeric ids of notes the caller has read (for the facades whose
    /// ids are integers), giving one to each note that has none yet.
    pub(crate) async fn numbers(
        &self,
        principal: &Principal,
        ids: &[NoteId],
    ) -> Result<HashMap<NoteId, i64>, DomainError> {
        self.store.numbers(&principal.tenant, ids).await
    }

    /// The note with this numeric id; NOT_FOUND when there is none.
    pub(crate) async fn resolve_number(
        &self,
        principal: &Principal,
        number: i64,
    ) -> Result<NoteId, DomainError> {
        self.store
            .id_for_number(&principal.tenant, number)
            .await?
            .ok_or(DomainError::NoteNotFound)
    }

    /// The note imported from `system` with this id; NOT_FOUND when none.
    pub(crate) async fn resolve_source(
        &self,
        principal: &Principal,
        system: &str,
        source_id: &str,
    ) -> Result<NoteId, DomainError> {
        self.store
            .id_for_source(&principal.tenant, system, source_id)
            .await?
            .ok_or(DomainError::NoteNotFound)
    }

    /// Revisions of a note the caller may read now, newest first.
    pub(crate) async fn list_revisions(
        &self,
        principal: &Principal,
        id: NoteId,
        page_size: usize,
        before_revision: Option<i64>,
    ) -> Result<Page<Revision, i64>, DomainError> {
        self.get_note(principal, id).await?;
        self.store
            .revisions(&principal.tenant, id, page_size, before_revision)
            .await
    }
}

/// The note a draft becomes when `principal` adds it at `now`.
fn new_note(
    principal: &Principal,
    draft: NoteDraft,
    request: Option<RequestKey>,
    now: DateTime<Utc>,
) -> Result<NewNote, DomainError> {
    let owner = draft.owner.unwrap_or_else(|| principal.member.clone());
    access::ensure_may_create_for(principal, &owner)?;
    let note = Note {
        tenant: principal.tenant.clone(),
        id: NoteId(Uuid::now_v7()),
        subject: draft.subject,
        related_subjects: draft.related_subjects,
        owner,
        created_by: principal.member.clone(),
        updated_by: principal.member.clone(),
        visibility: draft.visibility,
        edit_policy: draft.edit_policy,
        body: draft.body,
        title: draft.title,
        mentions: draft.mentions,
        actions: draft.actions,
        attachments: draft.attachments,
        pinned: draft.pinned,
        pinned_at: draft.pinned.then_some(now),
        occurred_at: draft.occurred_at.map_or(now, |t| t.trunc_subsecs(6)),
        created_at: now,
        updated_at: now,
        edited_at: None,
        deleted_at: None,
        draft: draft.draft,
        source: draft.source,
        client_reference: draft.client_reference,
        revision: 1,
    };
    Ok(NewNote {
        note,
        request,
        any_subject: access::may_add_notes_to_any_subject(principal),
    })
}

/// What an add answers.
fn added(principal: &Principal, outcome: InsertOutcome) -> Result<Note, DomainError> {
    match outcome {
        InsertOutcome::Created(note) => Ok(note),
        // The first call's note, as it is now: if it has since been
        // handed to someone else and hidden, the retry cannot see it.
        InsertOutcome::Replayed(note) if access::can_read(principal, &note) => Ok(note),
        InsertOutcome::Replayed(_) => Err(DomainError::NoteNotFound),
        InsertOutcome::RequestConflict => Err(DomainError::RequestIdConflict),
    }
}

/// The note deleted (or restored) by `principal`, after the checks of
/// DeleteNote (UndeleteNote).
fn deletion(
    principal: &Principal,
    mut note: Note,
    etag: Option<&str>,
    delete: bool,
) -> Result<(Note, ChangeKind), DomainError> {
    check_writable(principal, &note, etag)?;
    match (delete, note.deleted_at.is_some()) {
        (true, true) => return Err(DomainError::NoteDeleted),
        (false, false) => return Err(DomainError::NoteNotDeleted),
        _ => {}
    }
    let now = now();
    note.deleted_at = delete.then_some(now);
    note.updated_by = principal.member.clone();
    note.updated_at = now;
    note.revision += 1;
    let kind = if delete {
        ChangeKind::Deleted
    } else {
        ChangeKind::Undeleted
    };
    Ok((note, kind))
}

/// The checks every change makes, in the order a caller can act on them:
/// a note the caller cannot read does not exist; then the etag; then the
/// right to edit.
fn check_writable(
    principal: &Principal,
    note: &Note,
    etag: Option<&str>,
) -> Result<(), DomainError> {
    if !access::can_read(principal, note) {
        return Err(DomainError::NoteNotFound);
    }
    if etag.is_some_and(|etag| etag != note.etag()) {
        return Err(DomainError::EtagMismatch);
    }
    access::ensure_can_edit(principal, note)
}

/// The subject registry's use cases.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    store: SubjectStore,
}

impl Subjects {
    pub(crate) fn new(store: SubjectStore) -> Self {
        Self { store }
    }

    /// Registers `subject` (or changes its registration); the owner
    /// defaults to the caller.
    pub(crate) async fn register(
        &self,
        principal: &Principal,
        subject: Subject,
        owner: Option<MemberId>,
        owner_only_notes: bool,
    ) -> Result<SubjectRegistration, DomainError> {
        let owner = owner.unwrap_or_else(|| principal.member.clone());
        self.store
            .upsert(
                &principal.tenant,
                &subject,
                &owner,
                owner_only_notes,
                now(),
                |existing| access::ensure_may_register(principal, existing, &owner),
            )
            .await
    }

    /// Whether another tenant has registered `subject`. Only the Zyntro
    /// facade asks, for its WRONG_ORG answer.
    pub(crate) async fn registered_elsewhere(
        &self,
        principal: &Principal,
        subject: &Subject,
    ) -> Result<bool, DomainError> {
        self.store
            .registered_elsewhere(&principal.tenant, subject)
            .await
    }

    pub(crate) async fn get(
        &self,
        principal: &Principal,
        subject: &Subject,
    ) -> Result<SubjectRegistration, DomainError> {
        self.store
            .get(&principal.tenant, subject)
            .await?
            .ok_or(DomainError::SubjectNotFound)
    }
}
