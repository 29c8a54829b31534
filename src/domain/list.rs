//! Listing notes: filters, page sizes and the keyset cursor.

use chrono::{DateTime, Utc};

use super::{DomainError, MemberId, NoteId, Subject};

pub(crate) const DEFAULT_PAGE_SIZE: usize = 50;
pub(crate) const MAX_PAGE_SIZE: usize = 1000;

/// A page holds fewer items than asked (AIP-158 allows it) when they would
/// weigh more than this, but always its first: large notes page by size.
/// The store cuts pages to it as it reads them, the edges again as they
/// encode them.
pub(crate) const PAGE_BUDGET_BYTES: usize = 16 * 1024 * 1024;

/// Parses a page size: 0 means the default, larger than the cap is capped,
/// negative is an error (AIP-158).
pub(crate) fn page_size(field: &str, requested: i32) -> Result<usize, DomainError> {
    match requested {
        n if n < 0 => Err(DomainError::invalid(
            field,
            format!("{field} must not be negative"),
        )),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// A half-open interval [start, end); a missing bound is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct TimeRange {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl TimeRange {
    pub(crate) fn parse(
        field: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Self, DomainError> {
        if let (Some(start), Some(end)) = (start, end)
            && start >= end
        {
            return Err(DomainError::invalid(
                field,
                format!("{field}.start_time must be before {field}.end_time"),
            ));
        }
        Ok(Self { start, end })
    }
}

/// Which notes to list. Filters combine with AND; on top of them the caller
/// only ever sees notes it may read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct NoteFilter {
    pub subject: Option<Subject>,
    /// Notes about a subject of this type.
    pub subject_type: Option<String>,
    /// Notes that name this subject among their related subjects.
    pub related_subject: Option<Subject>,
    /// Notes about this subject or naming it among their related subjects
    /// (a Capillary customer found by any of its identifiers).
    pub about: Option<Subject>,
    pub owner: Option<MemberId>,
    pub pinned: Option<bool>,
    pub occurred: TimeRange,
    pub created: TimeRange,
    pub show_deleted: bool,
}

/// Where a page of notes starts: just after this note in newest-first
/// (occurred_at, id) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoteCursor {
    pub occurred_at: DateTime<Utc>,
    pub id: NoteId,
}

/// A page of results and the cursor of the next page, if there is one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}
