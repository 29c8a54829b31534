//! SearchNotes in SQL: the stored `search` vector of each note (see the
//! `search_purge` migration), matched with websearch_to_tsquery, filtered
//! and access-checked as ListNotes is (`notes::push_filter`), a snippet
//! made for each hit of the page only.
//!
//! The notes are read through `tenant_notes` (the tenant's notes without
//! the row-level security barrier, under which no GIN index may answer; see
//! the migration), and the plan, GIN index or a walk of the newest notes,
//! is chosen by a probe (see `search`). docs/search.md has the plans.

use sqlx::postgres::PgRow;
use sqlx::{FromRow as _, PgPool, Postgres, QueryBuilder, Row as _};
use std::time::Duration;
use uuid::Uuid;

use super::begin_bounded;
use super::notes::{push_filter, push_position};
use super::rows::{self, NoteRow, note_bytes, note_columns, page_cut_columns};
use crate::domain::list::{NoteCursor, NoteFilter, PAGE_BUDGET_BYTES};
use crate::domain::search::{
    MARK_END, MARK_START, RELEVANCE_WINDOW, SearchCursor, SearchHit, SearchOrder, SearchPage,
    SearchQuery,
};
use crate::domain::{DomainError, MemberId, Note, NoteId, TenantId};

/// Snippets are made from this many characters of the title and text: the
/// cost of a snippet is that of parsing its input.
const SNIPPET_SOURCE_CHARS: i32 = 32_768;

/// How many of the newest notes the probe reads.
const PROBE_NOTES: i64 = 1000;
/// Matches among them from which walking the newest notes is cheaper:
/// a page of 21 hits is then found within about 2,000 notes, where the GIN
/// index would hand over every match (1% of a million-note tenant: 10,000
/// notes) to be sorted.
const DENSE_FOR_NEWEST: i64 = 10;
/// The same for relevance order, which ranks 2,000 matches: walking reads
/// 2,000 / density notes, the index hands over tenant × density; for a
/// million notes they cost the same at about 4.5%.
const DENSE_FOR_RELEVANCE: i64 = 50;

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

/// The columns after the note's: its score and raw snippet, how many hits
/// the page fetched (see `rows::page_cut_columns`), then (in relevance
/// order) the window's floor.
const SCORE_COLUMN: usize = rows::NOTE_COLUMN_COUNT;
const SNIPPET_COLUMN: usize = SCORE_COLUMN + 1;
const FETCHED_COLUMN: usize = SNIPPET_COLUMN + 1;
const FLOOR_AT_COLUMN: usize = FETCHED_COLUMN + 1;
const FLOOR_ID_COLUMN: usize = FLOOR_AT_COLUMN + 1;

/// A page of the notes that match `search`, in its order.
///
/// Which way to find the matches is decided here, not left to the
/// planner: the column's statistics track only the commonest words, and
/// a word they do not track is taken for one in 200 notes, so a word that
/// one note in a million holds was searched for by walking the whole
/// tenant. A probe counts the matches among the tenant's newest
/// [`PROBE_NOTES`] notes (under the same filters): dense, the page is
/// found by walking the newest notes; sparse, by asking the GIN index and
/// sorting what it finds.
///
/// The statement is cancelled after `timeout`: a search whose words are
/// common but whose whole (a phrase, an exclusion) is rare finds its few
/// matches only by reading a large part of the tenant, and is refused
/// rather than let run (SEARCH_TOO_COSTLY).
pub(super) async fn search(
    pool: &PgPool,
    search: &Search<'_>,
    timeout: Duration,
) -> Result<SearchPage, DomainError> {
    let mut query = QueryBuilder::<Postgres>::new("");
    match search.order {
        SearchOrder::Newest => push_newest(&mut query, search),
        SearchOrder::Relevance => push_relevance(&mut query, search),
    }
    // The call's deadline, when it comes first, bounds the search instead
    // (and its passing is DEADLINE_EXCEEDED, not the search's cost). The
    // bound applies from the probe on: the probe reads up to a thousand
    // notes, and a costly query's probe is costly too.
    let left = super::calls::remaining();
    let by_deadline = left.is_some_and(|left| left < timeout);
    let mut tx = begin_bounded(pool, search.tenant, Some(timeout)).await?;
    let mut probe = QueryBuilder::<Postgres>::new(
        "select count(*) from (select search from tenant_notes where ",
    );
    push_filter(&mut probe, search.tenant, search.viewer, search.filter);
    probe.push(format_args!(
        " order by occurred_at desc, id desc limit {PROBE_NOTES}) recent where true"
    ));
    push_matches(&mut probe, search.query);
    let matches: i64 = probe
        .build_query_scalar()
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .map_err(|err| too_costly(err, by_deadline))?;
    let dense = matches
        >= match search.order {
            SearchOrder::Newest => DENSE_FOR_NEWEST,
            SearchOrder::Relevance => DENSE_FOR_RELEVANCE,
        };
    // Walking the newest notes is a plain index scan; asking the GIN
    // index is a bitmap scan: forbidding the other settles the plan.
    sqlx::query("select set_config($1, 'off', true)")
        .bind(if dense {
            "enable_bitmapscan"
        } else {
            "enable_indexscan"
        })
        .execute(&mut *tx)
        .await?;
    let rows: Vec<PgRow> = query
        .build()
        .persistent(false)
        .fetch_all(&mut *tx)
        .await
        .map_err(|err| too_costly(err, by_deadline))?;
    tx.commit().await?;

    let mut hits = Vec::with_capacity(rows.len());
    let mut floor = None;
    let mut fetched: i64 = 0;
    for row in &rows {
        fetched = row.try_get(FETCHED_COLUMN)?;
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
    // More follow when fewer were kept than fetched (by size, or the one
    // hit past the page).
    let more = usize::try_from(fetched).unwrap_or(0) > hits.len();
    Ok(SearchPage { hits, more, floor })
}

/// A search's statement failed: cancelled by its statement timeout, the
/// search cost too much, unless the call's deadline came first.
fn too_costly(err: sqlx::Error, by_deadline: bool) -> DomainError {
    if super::is_cancelled(&err) && !by_deadline {
        DomainError::SearchTooCostly
    } else {
        err.into()
    }
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
        ", page_fetched from (select *, ",
        page_cut_columns!("occurred_at desc, id desc"),
        " from (select ",
        note_columns!(),
        ", search, ",
        note_bytes!(),
        " as row_bytes from tenant_notes where "
    ));
    push_filter(query, search.tenant, search.viewer, search.filter);
    push_matches(query, search.query);
    if let Some(SearchCursor::Newest(cursor)) = search.after {
        push_position(query, "<", cursor);
    }
    query.push(" order by occurred_at desc, id desc");
    rows::push_page_limit(query, search.page_size);
    query.push(") fetched) hit where ");
    rows::push_page_cut(query, search.page_size, PAGE_BUDGET_BYTES);
    query.push(" order by occurred_at desc, id desc");
}

/// Relevance order: the window of the newest matches (bounded on the
/// first page; from its floor on later ones), scored, the page of the best
/// taken from it, then the notes of the page with their snippets.
fn push_relevance<'a>(query: &mut QueryBuilder<'a, Postgres>, search: &'a Search<'a>) {
    query.push("with window_ as (select id as hit_id, occurred_at as hit_at, ");
    push_score(query, search.query);
    query.push(concat!(
        " as score, ",
        note_bytes!(),
        " as row_bytes from tenant_notes where "
    ));
    push_filter(query, search.tenant, search.viewer, search.filter);
    push_matches(query, search.query);
    let after = match search.after {
        Some(SearchCursor::Relevance { floor, score, last }) => {
            push_position(query, ">=", floor);
            query.push(" order by occurred_at desc, id desc");
            Some((score, last))
        }
        _ => {
            query.push(format_args!(
                " order by occurred_at desc, id desc limit {RELEVANCE_WINDOW}"
            ));
            None
        }
    };
    query.push("), fetched as (select * from window_");
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
    query.push(" order by score desc, hit_at desc, hit_id desc");
    rows::push_page_limit(query, search.page_size);
    query.push(concat!(
        "), page as (select *, ",
        page_cut_columns!("score desc, hit_at desc, hit_id desc"),
        " from fetched), floor as (select hit_at as floor_at, hit_id as floor_id from window_ \
             order by hit_at, hit_id limit 1) select ",
        note_columns!(),
        ", page.score, "
    ));
    push_snippet(query, search.query);
    query
        .push(
            ", page.page_fetched, floor.floor_at, floor.floor_id from page cross join floor \
             join notes on notes.tenant_id = ",
        )
        .push_bind(search.tenant.as_str())
        .push(" and notes.id = page.hit_id where ");
    rows::push_page_cut(query, search.page_size, PAGE_BUDGET_BYTES);
    query.push(" order by page.score desc, page.hit_at desc, page.hit_id desc");
}
