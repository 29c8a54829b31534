//! The change stream (WatchNotes): positions in a tenant's stream of
//! changes, and what a watcher may see of each change.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ChangeKind, MemberId, Note, Principal, Subject, Visibility, access};

/// A point in a tenant's stream of changes: right after the event `event`
/// of the transaction `xid`. Streams are ordered by (xid, event), which is
/// the derived order (fields in that order, UUIDs compared bytewise as
/// Postgres compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StreamPosition {
    /// The writing transaction's id (Postgres xid8, which never wraps).
    pub xid: u64,
    /// The event's id within it; nil for "before every event of `xid`".
    pub event: Uuid,
}

impl StreamPosition {
    /// Right before every event of transaction `xid` and of later ones: a
    /// snapshot's xmin, below which every transaction has ended.
    pub(crate) fn before(xid: u64) -> Self {
        Self {
            xid,
            event: Uuid::nil(),
        }
    }
}

/// The fields of a note that decide who may see it and which filters it
/// matches: enough of a note's earlier state to tell that a change took it
/// out of a watcher's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoteScope {
    pub subject: Subject,
    pub related_subjects: Vec<Subject>,
    pub owner: MemberId,
    pub visibility: Visibility,
    pub draft: bool,
}

impl NoteScope {
    pub(crate) fn of(note: &Note) -> Self {
        Self {
            subject: note.subject.clone(),
            related_subjects: note.related_subjects.clone(),
            owner: note.owner.clone(),
            visibility: note.visibility,
            draft: note.draft,
        }
    }
}

/// One committed change of a note, as the stream carries it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub position: StreamPosition,
    pub kind: ChangeKind,
    pub revision: i64,
    pub changed_at: DateTime<Utc>,
    /// The note right after the change.
    pub note: Note,
    /// The note's scope right before the change; `None` for a creation.
    pub before: Option<NoteScope>,
    /// [`Change::approximate_bytes`], measured once.
    bytes: usize,
}

impl Change {
    pub(crate) fn new(
        position: StreamPosition,
        kind: ChangeKind,
        revision: i64,
        changed_at: DateTime<Utc>,
        note: Note,
        before: Option<NoteScope>,
    ) -> Self {
        let bytes = note.approximate_bytes()
            + before.as_ref().map_or(0, |scope| {
                scope
                    .related_subjects
                    .iter()
                    .map(|s| s.kind.len() + s.id.len() + 16)
                    .sum()
            });
        Self {
            position,
            kind,
            revision,
            changed_at,
            note,
            before,
            bytes,
        }
    }

    /// A rough size in memory, for the bounds on what a stream may hold:
    /// the note's texts, actions and attachments, and the scope before.
    pub(crate) fn approximate_bytes(&self) -> usize {
        self.bytes
    }
}

/// What WatchNotes filters on: ListNotes' filters that a change can be
/// matched against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WatchFilter {
    pub subject: Option<Subject>,
    pub subject_type: Option<String>,
    pub related_subject: Option<Subject>,
    pub owner: Option<MemberId>,
}

/// What a change is to one watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sight {
    /// The watcher sees the note after the change: it gets the change.
    Seen,
    /// The watcher saw the note before the change and does not after: it
    /// is told, without the content, that the note left its view.
    LeftView,
    /// The watcher sees the note neither before nor after: nothing.
    Unseen,
}

/// A watcher: who watches, and through which filter.
#[derive(Debug, Clone)]
pub(crate) struct WatchScope {
    principal: Principal,
    filter: WatchFilter,
}

impl WatchScope {
    pub(crate) fn new(principal: Principal, filter: WatchFilter) -> Self {
        Self { principal, filter }
    }

    /// The rule (docs/watch.md): a watcher's view is the notes it may read
    /// (`access::can_read`) that match its filter. A change of a note in
    /// the view after it is seen; a change that takes a note out of the
    /// view is a "left view"; anything else is never shown, not even the
    /// note's id.
    pub(crate) fn sight(&self, change: &Change) -> Sight {
        if change.note.tenant != self.principal.tenant {
            return Sight::Unseen;
        }
        if self.in_view(&NoteScope::of(&change.note)) {
            Sight::Seen
        } else if change.before.as_ref().is_some_and(|b| self.in_view(b)) {
            Sight::LeftView
        } else {
            Sight::Unseen
        }
    }

    fn in_view(&self, note: &NoteScope) -> bool {
        let filter = &self.filter;
        access::can_see(&self.principal, &note.owner, note.visibility, note.draft)
            && filter.subject.as_ref().is_none_or(|s| *s == note.subject)
            && filter
                .subject_type
                .as_ref()
                .is_none_or(|kind| *kind == note.subject.kind)
            && filter
                .related_subject
                .as_ref()
                .is_none_or(|s| note.related_subjects.contains(s))
            && filter.owner.as_ref().is_none_or(|o| *o == note.owner)
    }
}
