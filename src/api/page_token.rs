//! Opaque page tokens (AIP-158): base64url of a small binary record that
//! holds the keyset position and a digest of the request's filters, so a
//! token sent with other filters is refused instead of giving a wrong page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::domain::list::{NoteCursor, NoteFilter};
use crate::domain::search::{SearchCursor, SearchOrder, SearchQuery};
use crate::domain::{DomainError, NoteId};

const NOTES_V1: u8 = 1;
const REVISIONS_V1: u8 = 2;
const SEARCH_V1: u8 = 3;

/// A digest of whatever must stay the same from page to page.
fn scope_digest(scope: &str) -> [u8; 8] {
    let digest = Sha256::digest(scope.as_bytes());
    digest[..8]
        .try_into()
        .expect("sha-256 is longer than 8 bytes")
}

/// The digest of a ListNotes filter, over an explicit encoding of its
/// fields (each absent, or present and length-prefixed, in a fixed order),
/// so that a token stays valid across releases that keep the filter. The
/// filter is destructured: a new field does not compile until it is
/// encoded here.
fn filter_scope(filter: &NoteFilter) -> [u8; 8] {
    let NoteFilter {
        subject,
        subject_type,
        related_subject,
        about,
        owner,
        pinned,
        occurred,
        created,
        show_deleted,
    } = filter;
    let mut encoded = ScopeEncoder::default();
    encoded.text(subject.as_ref().map(|s| s.kind.as_str()));
    encoded.text(subject.as_ref().map(|s| s.id.as_str()));
    encoded.text(owner.as_ref().map(|o| o.as_str()));
    encoded.flag(*pinned);
    for range in [occurred, created] {
        encoded.time(range.start);
        encoded.time(range.end);
    }
    encoded.flag(Some(*show_deleted));
    // Added after the first release: absent ones add nothing, so tokens of
    // filters without them keep their digest.
    for (tag, kind, id) in [
        (1u8, subject_type.as_deref(), None),
        (
            2,
            related_subject.as_ref().map(|s| s.kind.as_str()),
            related_subject.as_ref().map(|s| s.id.as_str()),
        ),
        (
            3,
            about.as_ref().map(|s| s.kind.as_str()),
            about.as_ref().map(|s| s.id.as_str()),
        ),
    ] {
        if kind.is_some() {
            encoded.0.push(tag);
            encoded.text(kind);
            encoded.text(id);
        }
    }
    let digest = Sha256::digest(&encoded.0);
    digest[..8]
        .try_into()
        .expect("sha-256 is longer than 8 bytes")
}

/// Appends values as `0` (absent) or `1` and the value.
#[derive(Default)]
struct ScopeEncoder(Vec<u8>);

impl ScopeEncoder {
    fn text(&mut self, value: Option<&str>) {
        match value {
            None => self.0.push(0),
            Some(text) => {
                self.0.push(1);
                self.0.extend((text.len() as u64).to_be_bytes());
                self.0.extend(text.as_bytes());
            }
        }
    }

    fn flag(&mut self, value: Option<bool>) {
        self.0.push(match value {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
    }

    fn time(&mut self, value: Option<DateTime<Utc>>) {
        match value {
            None => self.0.push(0),
            Some(time) => {
                self.0.push(1);
                self.0.extend(time.timestamp_micros().to_be_bytes());
            }
        }
    }
}

fn decode(
    token: &str,
    kind: u8,
    scope: [u8; 8],
    payload_len: usize,
) -> Result<Vec<u8>, DomainError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| DomainError::bad_page_token("page_token is malformed"))?;
    if bytes.len() != 1 + 8 + payload_len || bytes[0] != kind {
        return Err(DomainError::bad_page_token("page_token is malformed"));
    }
    if bytes[1..9] != scope {
        return Err(DomainError::bad_page_token(
            "page_token was issued for a request with other filters",
        ));
    }
    Ok(bytes[9..].to_vec())
}

pub(super) fn encode_notes(filter: &NoteFilter, cursor: &NoteCursor) -> String {
    let mut bytes = vec![NOTES_V1];
    bytes.extend(filter_scope(filter));
    push_cursor(&mut bytes, cursor);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn decode_notes(
    filter: &NoteFilter,
    token: &str,
) -> Result<Option<NoteCursor>, DomainError> {
    if token.is_empty() {
        return Ok(None);
    }
    let payload = decode(token, NOTES_V1, filter_scope(filter), 8 + 16)?;
    read_cursor(&payload).map(Some)
}

pub(super) fn encode_revisions(note: NoteId, before_revision: i64) -> String {
    let mut bytes = vec![REVISIONS_V1];
    bytes.extend(scope_digest(&note.to_string()));
    bytes.extend(before_revision.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn decode_revisions(note: NoteId, token: &str) -> Result<Option<i64>, DomainError> {
    if token.is_empty() {
        return Ok(None);
    }
    let payload = decode(token, REVISIONS_V1, scope_digest(&note.to_string()), 8)?;
    Ok(Some(i64::from_be_bytes(
        payload[..].try_into().expect("8 bytes"),
    )))
}

/// A search's scope: its filter's digest, its query and its order.
fn search_scope(filter: &NoteFilter, query: &SearchQuery, order: SearchOrder) -> [u8; 8] {
    let mut encoded = ScopeEncoder::default();
    encoded.0.extend(filter_scope(filter));
    encoded.text(Some(query.as_str()));
    encoded.0.push(match order {
        SearchOrder::Newest => 1,
        SearchOrder::Relevance => 2,
    });
    let digest = Sha256::digest(&encoded.0);
    digest[..8]
        .try_into()
        .expect("sha-256 is longer than 8 bytes")
}

fn push_cursor(bytes: &mut Vec<u8>, cursor: &NoteCursor) {
    bytes.extend(cursor.occurred_at.timestamp_micros().to_be_bytes());
    bytes.extend(cursor.id.0.as_bytes());
}

fn read_cursor(bytes: &[u8]) -> Result<NoteCursor, DomainError> {
    let micros = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let occurred_at = DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| DomainError::bad_page_token("page_token is malformed"))?;
    let id = Uuid::from_slice(&bytes[8..24]).expect("16 bytes");
    Ok(NoteCursor {
        occurred_at,
        id: NoteId(id),
    })
}

pub(super) fn encode_search(
    filter: &NoteFilter,
    query: &SearchQuery,
    order: SearchOrder,
    cursor: &SearchCursor,
) -> String {
    let mut bytes = vec![SEARCH_V1];
    bytes.extend(search_scope(filter, query, order));
    match cursor {
        SearchCursor::Newest(last) => push_cursor(&mut bytes, last),
        SearchCursor::Relevance { floor, score, last } => {
            push_cursor(&mut bytes, last);
            push_cursor(&mut bytes, floor);
            bytes.extend(score.to_bits().to_be_bytes());
        }
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn decode_search(
    filter: &NoteFilter,
    query: &SearchQuery,
    order: SearchOrder,
    token: &str,
) -> Result<Option<SearchCursor>, DomainError> {
    if token.is_empty() {
        return Ok(None);
    }
    let scope = search_scope(filter, query, order);
    Ok(Some(match order {
        SearchOrder::Newest => {
            SearchCursor::Newest(read_cursor(&decode(token, SEARCH_V1, scope, 24)?)?)
        }
        SearchOrder::Relevance => {
            let payload = decode(token, SEARCH_V1, scope, 24 + 24 + 4)?;
            let score = f32::from_bits(u32::from_be_bytes(
                payload[48..].try_into().expect("4 bytes"),
            ));
            if !score.is_finite() {
                return Err(DomainError::bad_page_token("page_token is malformed"));
            }
            SearchCursor::Relevance {
                last: read_cursor(&payload[..24])?,
                floor: read_cursor(&payload[24..48])?,
                score,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::list::NoteFilter;

    #[test]
    fn notes_token_round_trips() {
        let filter = NoteFilter::default();
        let cursor = NoteCursor {
            occurred_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: NoteId(Uuid::now_v7()),
        };
        let token = encode_notes(&filter, &cursor);
        assert_eq!(decode_notes(&filter, &token).unwrap(), Some(cursor));
    }

    #[test]
    fn notes_token_is_bound_to_its_filter() {
        let cursor = NoteCursor {
            occurred_at: DateTime::from_timestamp_micros(0).unwrap(),
            id: NoteId(Uuid::now_v7()),
        };
        let token = encode_notes(&NoteFilter::default(), &cursor);
        let other = NoteFilter {
            pinned: Some(true),
            ..NoteFilter::default()
        };
        let err = decode_notes(&other, &token).unwrap_err();
        assert_eq!(err.reason(), "INVALID_PAGE_TOKEN");
        assert!(decode_notes(&other, "!!!").is_err());
    }

    #[test]
    fn search_tokens_round_trip_and_are_bound_to_their_query() {
        let filter = NoteFilter::default();
        let query = SearchQuery::parse("query", "alpha").unwrap();
        let at = |micros| NoteCursor {
            occurred_at: DateTime::from_timestamp_micros(micros).unwrap(),
            id: NoteId(Uuid::now_v7()),
        };
        let cursor = SearchCursor::Relevance {
            floor: at(1),
            score: 0.25,
            last: at(2),
        };
        let token = encode_search(&filter, &query, SearchOrder::Relevance, &cursor);
        assert_eq!(
            decode_search(&filter, &query, SearchOrder::Relevance, &token).unwrap(),
            Some(cursor)
        );
        let other = SearchQuery::parse("query", "beta").unwrap();
        assert!(decode_search(&filter, &other, SearchOrder::Relevance, &token).is_err());
        assert!(decode_search(&filter, &query, SearchOrder::Newest, &token).is_err());
    }

    #[test]
    fn the_filter_digest_is_an_explicit_encoding() {
        // Pinned: a change of the encoding breaks every token in flight.
        assert_eq!(
            hex::encode(filter_scope(&NoteFilter::default())),
            hex::encode(&Sha256::digest([0u8, 0, 0, 0, 0, 0, 0, 0, 1])[..8])
        );
        let subject = |kind: &str, id: &str| NoteFilter {
            subject: Some(crate::domain::Subject {
                kind: kind.to_owned(),
                id: id.to_owned(),
            }),
            ..NoteFilter::default()
        };
        // Length prefixes keep field boundaries apart.
        assert_ne!(
            filter_scope(&subject("ab", "c")),
            filter_scope(&subject("a", "bc"))
        );
    }
}
