//! SearchNotes in notes.v1 types: the request parsed, and each hit's
//! snippet made safe to show.

use crate::domain::DomainError;
use crate::domain::search::{
    DEFAULT_PAGE_SIZE, MARK_END, MARK_START, MAX_PAGE_SIZE, SearchOrder, SearchQuery,
};
use crate::proto::notes::v1 as pb;

/// The longest snippet, in characters of its text (before escaping).
const SNIPPET_CHARS: usize = 400;

/// A parsed SearchNotes request.
pub(super) struct SearchRequest {
    pub filter: crate::domain::list::NoteFilter,
    pub query: SearchQuery,
    pub order: SearchOrder,
    pub page_size: usize,
}

pub(super) fn parse_request(
    request: &pb::SearchNotesRequest,
) -> Result<SearchRequest, DomainError> {
    let query = SearchQuery::parse("query", &request.query)?;
    let page_size = match request.page_size {
        n if n < 0 => {
            return Err(DomainError::invalid(
                "page_size",
                "page_size must not be negative",
            ));
        }
        0 => DEFAULT_PAGE_SIZE,
        n => (n as usize).min(MAX_PAGE_SIZE),
    };
    let order = match pb::SearchOrder::try_from(request.order) {
        Ok(pb::SearchOrder::Unspecified | pb::SearchOrder::Newest) => SearchOrder::Newest,
        Ok(pb::SearchOrder::Relevance) => SearchOrder::Relevance,
        Err(_) => {
            return Err(DomainError::invalid(
                "order",
                format!("order {} is not a SearchOrder", request.order),
            ));
        }
    };
    let filter = super::convert::parse_note_filter(super::convert::FilterFields {
        subject: request.subject.as_ref(),
        subject_type: &request.subject_type,
        related_subject: request.related_subject.as_ref(),
        owner_id: &request.owner_id,
        pinned: request.pinned,
        occur_time_range: request.occur_time_range.as_ref(),
        create_time_range: request.create_time_range.as_ref(),
        show_deleted: request.show_deleted,
    })?;
    Ok(SearchRequest {
        filter,
        query,
        order,
        page_size,
    })
}

/// The snippet as shown: the raw snippet's text HTML-escaped, its marks
/// as `<mark>` elements (balanced), runs of white space as one space, and
/// at most [`SNIPPET_CHARS`] characters of text (then `…`).
pub(super) fn render_snippet(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(4 * SNIPPET_CHARS));
    let mut shown = 0;
    let mut marked = false;
    // Leading white space is dropped.
    let mut after_space = true;
    let mut cut = false;
    for c in raw.chars() {
        if c == MARK_END {
            if marked {
                out.push_str("</mark>");
                marked = false;
            }
            continue;
        }
        if shown >= SNIPPET_CHARS {
            if c.is_whitespace() || c == MARK_START {
                continue;
            }
            cut = true;
            break;
        }
        match c {
            MARK_START => {
                if !marked {
                    out.push_str("<mark>");
                    marked = true;
                }
            }
            c if c.is_whitespace() => {
                if !after_space {
                    out.push(' ');
                    shown += 1;
                    after_space = true;
                }
            }
            c => {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    '\'' => out.push_str("&#39;"),
                    c if c.is_control() => out.push(' '),
                    c => out.push(c),
                }
                shown += 1;
                after_space = false;
            }
        }
    }
    if marked {
        out.push_str("</mark>");
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    if cut {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> String {
        text.replace('[', &MARK_START.to_string())
            .replace(']', &MARK_END.to_string())
    }

    #[test]
    fn a_snippet_is_escaped_and_marked() {
        assert_eq!(
            render_snippet(&raw("  a <b>&\"x'</b>  [word]\n\nend ")),
            "a &lt;b&gt;&amp;&quot;x&#39;&lt;/b&gt; <mark>word</mark> end"
        );
    }

    #[test]
    fn a_snippet_is_bounded_and_its_marks_balanced() {
        let long = format!("[{}", "x".repeat(10 * SNIPPET_CHARS));
        let snippet = render_snippet(&raw(&long));
        assert_eq!(
            snippet,
            format!("<mark>{}</mark>…", "x".repeat(SNIPPET_CHARS))
        );
        // A stray end mark, or one that a note's text held, is dropped.
        assert_eq!(render_snippet(&raw("a] [b")), "a <mark>b</mark>");
    }
}
