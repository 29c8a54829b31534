//! SearchNotes in SQL: the stored `search` vector of each note (see the
//! `search_purge` migration), matched with websearch_to_tsquery, filtered
//! and access-checked as ListNotes is (`notes::push_filter`), a snippet
//! made for each hit of the page only.
//!
//! The statements are not prepared once for reuse (`persistent(false)`):
//! each is planned with its own query text, so the planner knows from the
//! column's statistics whether the words are rare (then the GIN index
//! finds the few matches) or common (then walking the tenant's newest
//! notes finds a page of matches at once). A plan made without the words
//! would pick one of the two for every query. docs/search.md has the plans.

use sqlx::postgres::PgRow;
use sqlx::{FromRow as _, PgPool, Postgres, QueryBuilder, Row as _};
use uuid::Uuid;

use super::begin_for;
use super::notes::push_filter;
use super::rows::{self, NoteRow, note_columns};
use crate::domain::list::{NoteCursor, NoteFilter};
use crate::domain::search::{
    MARK_END, MARK_START, RELEVANCE_WINDOW, SearchCursor, SearchHit, SearchOrder, SearchPage,
    SearchQuery,
};
use crate::domain::{DomainError, MemberId, Note, NoteId, TenantId};

/// Snippets are made from this many characters of the title and text: the
/// cost of a snippet is that of parsing its input.
const SNIPPET_SOURCE_CHARS: i32 = 32_768;

/// ts_rank_cd's normalization: divide by 1 + the log of the note's
/// length, so that a long note does not win by length alone.
const RANK_NORMALIZATION: i32 = 1;

/// A search, as the store runs it.
pub(crate) struct Search<'a> {
    pub tenant: &'a TenantId,
    /// Whose access rules apply; `None` for an admin.
    pub viewer: Option<&'a MemberId>,
    pub filter: &'a NoteFilter,
    pub query: &'a SearchQuery,
    pub order: SearchOrder,
    pub page_size: usize,
    pub after: Option<SearchCursor>,
}

/// The columns after the note's: its score and raw snippet, then (in
/// relevance order) the window's floor.
const SCORE_COLUMN: usize = rows::NOTE_COLUMN_COUNT;
const SNIPPET_COLUMN: usize = SCORE_COLUMN + 1;
const FLOOR_AT_COLUMN: usize = SNIPPET_COLUMN + 1;
const FLOOR_ID_COLUMN: usize = FLOOR_AT_COLUMN + 1;

/// A page of the notes that match `search`, in its order.
pub(super) async fn search(pool: &PgPool, search: &Search<'_>) -> Result<SearchPage, DomainError> {
    let mut query = QueryBuilder::<Postgres>::new("");
    match search.order {
        SearchOrder::Newest => push_newest(&mut query, search),
        SearchOrder::Relevance => push_relevance(&mut query, search),
    }
    let mut tx = begin_for(pool, search.tenant).await?;
    let rows: Vec<PgRow> = query.build().persistent(false).fetch_all(&mut *tx).await?;
    tx.commit().await?;

    let mut hits = Vec::with_capacity(rows.len());
    let mut floor = None;
    for row in &rows {
        if search.order == SearchOrder::Relevance && floor.is_none() {
            let at = row.try_get(FLOOR_AT_COLUMN)?;
            let id: Uuid = row.try_get(FLOOR_ID_COLUMN)?;
            floor = Some(NoteCursor {
                occurred_at: at,
                id: NoteId(id),
            });
        }
        hits.push(SearchHit {
            note: Note::try_from(NoteRow::from_row(row)?)?,
            score: row.try_get(SCORE_COLUMN)?,
            snippet: row.try_get(SNIPPET_COLUMN)?,
        });
    }
    let more = hits.len() > search.page_size;
    hits.truncate(search.page_size);
    Ok(SearchPage { hits, more, floor })
}

/// `search @@ <the query>`.
fn push_matches<'a>(query: &mut QueryBuilder<'a, Postgres>, text: &'a SearchQuery) {
    query
        .push(" and search @@ websearch_to_tsquery('simple', ")
        .push_bind(text.as_str())
        .push(")");
}

/// The score of a note (its `search`) for the query.
fn push_score<'a>(query: &mut QueryBuilder<'a, Postgres>, text: &'a SearchQuery) {
    query
        .push("ts_rank_cd(search, websearch_to_tsquery('simple', ")
        .push_bind(text.as_str())
        .push(format_args!("), {RANK_NORMALIZATION})"));
}

/// The raw snippet of a note (its `title` and `body_text`): the marker
/// characters are taken out of the text first, then put around each
/// matched word.
fn push_snippet<'a>(query: &mut QueryBuilder<'a, Postgres>, text: &'a SearchQuery) {
    query
        .push(format_args!(
            "ts_headline('simple', translate(left(title || E'\\n' || body_text, \
             {SNIPPET_SOURCE_CHARS}), "
        ))
        .push_bind(String::from_iter([MARK_START, MARK_END]))
        .push(", ''), websearch_to_tsquery('simple', ")
        .push_bind(text.as_str())
        .push("), ")
        .push_bind(format!(
            "MaxFragments=2, MaxWords=24, MinWords=8, ShortWord=0, \
             FragmentDelimiter=\" … \", StartSel=\"{MARK_START}\", StopSel=\"{MARK_END}\""
        ))
        .push(")");
}

/// Newest first: the page's matches, then their scores and snippets.
fn push_newest<'a>(query: &mut QueryBuilder<'a, Postgres>, search: &'a Search<'a>) {
    query.push(concat!("select ", note_columns!(), ", "));
    push_score(query, search.query);
    query.push(", ");
    push_snippet(query, search.query);
    query.push(concat!(
        " from (select ",
        note_columns!(),
        ", search from notes where "
    ));
    push_filter(query, search.tenant, search.viewer, search.filter);
    push_matches(query, search.query);
    if let Some(SearchCursor::Newest(cursor)) = search.after {
        query
            .push(" and (occurred_at, id) < (")
            .push_bind(cursor.occurred_at)
            .push(", ")
            .push_bind(cursor.id.0)
            .push(")");
    }
    query
        .push(" order by occurred_at desc, id desc limit ")
        .push_bind(search.page_size as i64 + 1)
        .push(") hit order by occurred_at desc, id desc");
}

/// Relevance order: the window of the newest matches (bounded on the
/// first page; from its floor on later ones), scored, the page of the best
/// taken from it, then the notes of the page with their snippets.
fn push_relevance<'a>(query: &mut QueryBuilder<'a, Postgres>, search: &'a Search<'a>) {
    query.push("with window_ as (select id as hit_id, occurred_at as hit_at, ");
    push_score(query, search.query);
    query.push(" as score from notes where ");
    push_filter(query, search.tenant, search.viewer, search.filter);
    push_matches(query, search.query);
    let after = match search.after {
        Some(SearchCursor::Relevance { floor, score, last }) => {
            query
                .push(" and (occurred_at, id) >= (")
                .push_bind(floor.occurred_at)
                .push(", ")
                .push_bind(floor.id.0)
                .push(") order by occurred_at desc, id desc");
            Some((score, last))
        }
        _ => {
            query.push(format_args!(
                " order by occurred_at desc, id desc limit {RELEVANCE_WINDOW}"
            ));
            None
        }
    };
    query.push("), page as (select * from window_");
    if let Some((score, last)) = after {
        query
            .push(" where (score, hit_at, hit_id) < (")
            .push_bind(score)
            .push("::real, ")
            .push_bind(last.occurred_at)
            .push(", ")
            .push_bind(last.id.0)
            .push(")");
    }
    query
        .push(" order by score desc, hit_at desc, hit_id desc limit ")
        .push_bind(search.page_size as i64 + 1)
        .push(concat!(
            "), floor as (select hit_at as floor_at, hit_id as floor_id from window_ \
             order by hit_at, hit_id limit 1) select ",
            note_columns!(),
            ", page.score, "
        ));
    push_snippet(query, search.query);
    query
        .push(
            ", floor.floor_at, floor.floor_id from page cross join floor \
             join notes on notes.tenant_id = ",
        )
        .push_bind(search.tenant.as_str())
        .push(
            " and notes.id = page.hit_id \
             order by page.score desc, page.hit_at desc, page.hit_id desc",
        );
}
