//! Full-text search: the query, the order of hits and where a page starts.

use super::list::NoteCursor;
use super::{DomainError, Note};

/// The longest query accepted, in characters.
pub(crate) const MAX_QUERY_CHARS: usize = 1000;
pub(crate) const DEFAULT_PAGE_SIZE: usize = 20;
/// Each hit gets a snippet, which PostgreSQL makes by parsing the note's
/// opening: a page is kept small enough for that to stay cheap.
pub(crate) const MAX_PAGE_SIZE: usize = 100;
/// Relevance order ranks this many of the newest matches (docs/search.md).
pub(crate) const RELEVANCE_WINDOW: usize = 2_000;

/// Marks the start and the end of a matched word in a raw snippet: control
/// characters that are taken out of the text before the snippet is made,
/// so that a note's own text can never fake a mark.
pub(crate) const MARK_START: char = '\u{1}';
pub(crate) const MARK_END: char = '\u{2}';

/// A search query as typed into a search box (websearch_to_tsquery's
/// syntax), checked to hold something to search for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchQuery(String);

impl SearchQuery {
    pub(crate) fn parse(field: &str, text: &str) -> Result<Self, DomainError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DomainError::missing(field));
        }
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(DomainError::too_large(
                field,
                format!("{field} must be at most {MAX_QUERY_CHARS} characters"),
            ));
        }
        if text.contains('\0') {
            return Err(DomainError::invalid(
                field,
                format!("{field} must not contain NUL characters"),
            ));
        }
        // A query of operators and punctuation alone (`-`, `or`, `""`)
        // finds nothing; say so rather than answer an empty page.
        if !text.chars().any(char::is_alphanumeric) {
            return Err(DomainError::invalid(
                field,
                format!("{field} must contain at least one letter or digit"),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchOrder {
    /// Newest `occurred_at` first, as ListNotes.
    Newest,
    /// Best score first among the newest [`RELEVANCE_WINDOW`] matches, then
    /// newest first.
    Relevance,
}

/// Where the next page of a search starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SearchCursor {
    /// Just after this note, newest first.
    Newest(NoteCursor),
    /// Just after the hit (`score`, `last`) in relevance order, among the
    /// matches at or after `floor`: the oldest note of the window that the
    /// first page ranked, so that later pages rank the same notes.
    Relevance {
        floor: NoteCursor,
        score: f32,
        last: NoteCursor,
    },
}

/// A note that matched, with its raw snippet (marked with [`MARK_START`]
/// and [`MARK_END`], not yet escaped) and score.
#[derive(Debug, Clone)]
pub(crate) struct SearchHit {
    pub note: Note,
    pub snippet: String,
    pub score: f32,
}

/// A page of hits, as the store found them.
#[derive(Debug, Clone)]
pub(crate) struct SearchPage {
    pub hits: Vec<SearchHit>,
    /// Whether more hits follow the page.
    pub more: bool,
    /// In relevance order, the oldest note of the window ranked.
    pub floor: Option<NoteCursor>,
}

impl SearchPage {
    /// Where a page that ends with hit `last` leaves off.
    pub(crate) fn cursor_after(&self, last: usize) -> SearchCursor {
        let hit = &self.hits[last];
        match self.floor {
            Some(floor) => SearchCursor::Relevance {
                floor,
                score: hit.score,
                last: hit.note.cursor(),
            },
            None => SearchCursor::Newest(hit.note.cursor()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_needs_a_word() {
        assert_eq!(
            SearchQuery::parse("query", "  ").unwrap_err().reason(),
            "MISSING_FIELDS"
        );
        assert_eq!(
            SearchQuery::parse("query", "- \"\" !!")
                .unwrap_err()
                .reason(),
            "INVALID_FIELD"
        );
        assert_eq!(
            SearchQuery::parse("query", &"a".repeat(MAX_QUERY_CHARS + 1))
                .unwrap_err()
                .reason(),
            "FIELD_TOO_LARGE"
        );
        assert_eq!(
            SearchQuery::parse("query", " -spam \"a b\" ")
                .unwrap()
                .as_str(),
            "-spam \"a b\""
        );
    }
}
