//! Note bodies: limits, HTML sanitizing, and plain text derived from HTML.

use std::sync::LazyLock;

use super::DomainError;

/// The largest body accepted, in bytes of UTF-8, for the text and for the
/// HTML alike (Fernand's limit, the largest of the vendors').
pub(crate) const MAX_BODY_BYTES: usize = 10_485_760;

/// A note's content: plain text, and the sanitized HTML it was derived from
/// when the note was written as HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Body {
    text: String,
    html: Option<String>,
}

impl Body {
    /// Parses a body from its wire parts. `field` is the body's path in the
    /// request (`note.body`), used to name the offending part in errors.
    ///
    /// When `html` is non-empty it wins: it is sanitized and the plain text
    /// is derived from it. Otherwise `text` is the body, and must be
    /// non-empty.
    pub(crate) fn parse(field: &str, text: &str, html: &str) -> Result<Self, DomainError> {
        if !html.is_empty() {
            let html_field = format!("{field}.html");
            check_size(&html_field, html)?;
            check_parse_work(&html_field, html)?;
            let body = Self::from_html(html);
            // What is stored is measured: sanitizing adds attributes
            // (`rel` on links) and closes what was left open.
            if let Some(clean) = &body.html
                && clean.len() > MAX_BODY_BYTES
            {
                return Err(DomainError::too_large(
                    &html_field,
                    format!("{html_field} is larger than {MAX_BODY_BYTES} bytes once sanitized"),
                ));
            }
            return Ok(body);
        }
        let text_field = format!("{field}.text");
        if text.trim().is_empty() {
            return Err(DomainError::MissingField(super::FieldViolation::new(
                field,
                format!("{field} needs a non-empty text or html"),
            )));
        }
        check_size(&text_field, text)?;
        Ok(Self {
            text: text.to_owned(),
            html: None,
        })
    }

    /// Sanitizes `html` and derives the plain text from the result.
    pub(crate) fn from_html(html: &str) -> Self {
        let clean = SANITIZER.clean(html).to_string();
        let text = html_to_text(&clean);
        Self {
            text,
            html: Some(clean),
        }
    }

    /// Rebuilds a body that was parsed before it was stored.
    pub(crate) fn from_stored(text: String, html: Option<String>) -> Self {
        Self { text, html }
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn html(&self) -> Option<&str> {
        self.html.as_deref()
    }

    /// The text and the HTML, moved out.
    pub(crate) fn into_parts(self) -> (String, Option<String>) {
        (self.text, self.html)
    }
}

fn check_size(field: &str, value: &str) -> Result<(), DomainError> {
    if value.len() > MAX_BODY_BYTES {
        return Err(DomainError::too_large(
            field,
            format!("{field} is larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(DomainError::invalid(
            field,
            format!("{field} must not contain NUL characters"),
        ));
    }
    Ok(())
}

/// Elements open at once, as the HTML parser will nest them: beyond this,
/// each tag costs the parser a walk down the open elements (100,000 nested
/// `<div>`s, 500 KB, took 23 s of CPU), and the sanitized HTML is deeper
/// than other clients' decoders accept.
pub(crate) const MAX_HTML_DEPTH: usize = 128;

/// Bytes of formatting tags the parser may reopen: an HTML parser reopens
/// the formatting elements (`<b>`, `<font ...>`) that a block closed but
/// the author left open, at every text that follows, so a few KiB of
/// crafted tags can expand to tens of MiB.
const MAX_REOPENED_BYTES: usize = MAX_BODY_BYTES;

/// Refuses HTML that would make the sanitizer's parser do more work than
/// its size suggests: nesting deeper than [`MAX_HTML_DEPTH`], or more than
/// [`MAX_REOPENED_BYTES`] of reopened formatting tags. A linear pass over
/// the tokens that follows the parser's stack of open elements and its
/// list of active formatting elements closely enough to bound both (it
/// errs towards counting more), before the parser builds anything.
fn check_parse_work(field: &str, html: &str) -> Result<(), DomainError> {
    let work = tokenize(html, WorkSink::default()).state.into_inner();
    if work.too_deep {
        return Err(DomainError::invalid(
            field,
            format!("{field} nests elements more than {MAX_HTML_DEPTH} deep"),
        ));
    }
    if work.reopened > MAX_REOPENED_BYTES {
        return Err(DomainError::too_large(
            field,
            format!(
                "{field} leaves formatting tags open that would be repeated beyond \
                 {MAX_BODY_BYTES} bytes"
            ),
        ));
    }
    Ok(())
}

#[derive(Default)]
struct WorkSink {
    state: std::cell::RefCell<Work>,
}

#[derive(Default)]
struct Work {
    /// The names of the open elements, outermost first.
    open: Vec<String>,
    /// The active formatting elements: name, size of the tag, and where
    /// it is open (`None`: closed by a block, to be reopened).
    formatting: Vec<(String, usize, Option<usize>)>,
    reopened: usize,
    too_deep: bool,
}

const VOID_ELEMENTS: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];
const FORMATTING_ELEMENTS: &[&str] = &[
    "a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt", "u",
];
/// Elements that a start tag of the same name closes when one is open.
const SIBLING_CLOSED: &[&str] = &[
    "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "thead", "tbody", "tfoot", "rb",
    "rt", "rp",
];

impl Work {
    fn push(&mut self, name: String) {
        self.open.push(name);
        if self.open.len() > MAX_HTML_DEPTH {
            self.too_deep = true;
        }
    }

    /// Closes the innermost open `name` and everything inside it.
    fn close(&mut self, name: &str) {
        if let Some(at) = self.open.iter().rposition(|open| open == name) {
            self.open.truncate(at);
            for entry in &mut self.formatting {
                if entry.2.is_some_and(|depth| depth >= at) {
                    entry.2 = None;
                }
            }
        }
    }

    /// What the parser does before text or a start tag: reopens the
    /// formatting elements that a block closed.
    fn reopen(&mut self) {
        for index in 0..self.formatting.len() {
            if self.formatting[index].2.is_none() {
                self.reopened += self.formatting[index].1;
                let depth = self.open.len();
                let name = self.formatting[index].0.clone();
                self.push(name);
                self.formatting[index].2 = Some(depth);
            }
        }
    }
}

impl html5ever::tokenizer::TokenSink for WorkSink {
    type Handle = ();

    fn process_token(
        &self,
        token: html5ever::tokenizer::Token,
        _line: u64,
    ) -> html5ever::tokenizer::TokenSinkResult<()> {
        use html5ever::tokenizer::{TagKind, Token};

        let mut work = self.state.borrow_mut();
        match token {
            Token::CharacterTokens(text) if !text.trim().is_empty() => work.reopen(),
            Token::TagToken(tag) => {
                let name: &str = &tag.name;
                if tag.kind == TagKind::EndTag {
                    work.close(name);
                    if FORMATTING_ELEMENTS.contains(&name)
                        && let Some(at) = work.formatting.iter().rposition(|f| f.0 == name)
                    {
                        work.formatting.remove(at);
                    }
                    return html5ever::tokenizer::TokenSinkResult::Continue;
                }
                work.reopen();
                if VOID_ELEMENTS.contains(&name) || tag.self_closing {
                    return html5ever::tokenizer::TokenSinkResult::Continue;
                }
                if SIBLING_CLOSED.contains(&name) {
                    work.close(name);
                }
                if FORMATTING_ELEMENTS.contains(&name) {
                    if matches!(name, "a" | "nobr") {
                        work.close(name);
                        work.formatting.retain(|f| f.0 != name);
                    }
                    let size = tag.attrs.iter().fold(name.len() + 2, |size, attr| {
                        size + attr.name.local.len() + attr.value.len() + 4
                    });
                    let depth = work.open.len();
                    work.formatting.push((name.to_owned(), size, Some(depth)));
                }
                work.push(name.to_owned());
            }
            _ => {}
        }
        html5ever::tokenizer::TokenSinkResult::Continue
    }
}

/// ammonia's defaults already drop `<script>`, `<style>`, every `on*`
/// attribute and `javascript:` URLs (only http, https, mailto and a few more
/// schemes pass); links get `rel="noopener noreferrer"`.
static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(ammonia::Builder::default);

/// Plain text of sanitized HTML: the text with entities decoded and runs
/// of white space folded; block elements start new lines (paragraph-like
/// ones a blank line), `<br>` breaks a line, `<pre>` keeps its white space.
///
/// A streaming pass over html5ever's tokenizer: linear in the input, which
/// matters for 10 MiB bodies (a layout-based converter took seconds).
fn html_to_text(html: &str) -> String {
    tokenize(html, TextSink::default()).finish()
}

/// Runs html5ever's tokenizer over `html` into `sink`, and hands it back.
fn tokenize<S: html5ever::tokenizer::TokenSink>(html: &str, sink: S) -> S {
    use html5ever::tendril::StrTendril;
    use html5ever::tokenizer::{BufferQueue, Tokenizer, TokenizerOpts};

    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink
}

#[derive(Default)]
struct TextSink {
    state: std::cell::RefCell<TextState>,
}

#[derive(Default)]
struct TextState {
    out: String,
    /// Newlines owed before the next text: 1 for a line, 2 for a paragraph.
    pending_breaks: usize,
    pending_space: bool,
    pre_depth: usize,
}

impl TextState {
    fn request_break(&mut self, breaks: usize) {
        self.pending_breaks = self.pending_breaks.max(breaks);
        self.pending_space = false;
    }

    fn push_text(&mut self, text: &str) {
        for c in text.chars() {
            if self.pre_depth == 0 && c.is_whitespace() {
                self.pending_space = true;
                continue;
            }
            if !self.out.is_empty() {
                if self.pending_breaks > 0 {
                    let breaks = if c == '\n' {
                        self.pending_breaks - 1
                    } else {
                        self.pending_breaks
                    };
                    self.out.extend(std::iter::repeat_n('\n', breaks));
                } else if self.pending_space {
                    self.out.push(' ');
                }
            }
            self.pending_breaks = 0;
            self.pending_space = false;
            self.out.push(c);
        }
    }
}

impl TextSink {
    fn finish(self) -> String {
        let out = self.state.into_inner().out;
        out.trim_end().to_owned()
    }
}

impl html5ever::tokenizer::TokenSink for TextSink {
    type Handle = ();

    fn process_token(
        &self,
        token: html5ever::tokenizer::Token,
        _line: u64,
    ) -> html5ever::tokenizer::TokenSinkResult<()> {
        use html5ever::tokenizer::{TagKind, Token};

        let mut state = self.state.borrow_mut();
        match token {
            Token::CharacterTokens(text) => state.push_text(&text),
            Token::TagToken(tag) => {
                let name: &str = &tag.name;
                let is_start = tag.kind == TagKind::StartTag;
                match name {
                    "br" if is_start => {
                        if state.out.is_empty() {
                            return html5ever::tokenizer::TokenSinkResult::Continue;
                        }
                        state.pending_breaks += 1;
                        state.pending_space = false;
                    }
                    "pre" => {
                        if is_start {
                            state.pre_depth += 1;
                        } else {
                            state.pre_depth = state.pre_depth.saturating_sub(1);
                        }
                        state.request_break(2);
                    }
                    "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "blockquote" | "ul" | "ol"
                    | "dl" | "table" | "hr" | "figure" => state.request_break(2),
                    "div" | "li" | "tr" | "dt" | "dd" | "section" | "article" | "header"
                    | "footer" | "aside" | "nav" | "caption" | "details" | "summary" => {
                        state.request_break(1)
                    }
                    "td" | "th" if is_start => state.pending_space = true,
                    _ => {}
                }
            }
            _ => {}
        }
        html5ever::tokenizer::TokenSinkResult::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_wins_and_is_sanitized() {
        let body = Body::parse(
            "note.body",
            "ignored",
            r#"<p onclick="x()">hi <b>there</b><script>alert(1)</script></p><a href="javascript:alert(1)">link</a>"#,
        )
        .unwrap();
        let html = body.html().unwrap();
        assert!(!html.contains("script"), "{html}");
        assert!(!html.contains("onclick"), "{html}");
        assert!(!html.contains("javascript"), "{html}");
        assert_eq!(body.text(), "hi there\n\nlink");
    }

    #[test]
    fn entities_are_decoded_and_breaks_kept() {
        let body = Body::from_html("<div>a &amp; b</div><div>c<br>d</div><pre>x\n  y</pre>");
        assert_eq!(body.text(), "a & b\nc\nd\n\nx\n  y");
    }

    #[test]
    fn paragraphs_become_lines() {
        let body = Body::from_html("<body><p>this is a test note.</p><p>second</p></body>");
        assert_eq!(body.text(), "this is a test note.\n\nsecond");
    }

    #[test]
    fn empty_body_names_the_field() {
        let err = Body::parse("note.body", "  ", "").unwrap_err();
        assert_eq!(err.violation().unwrap().field, "note.body");
    }

    #[test]
    fn nul_is_refused() {
        let err = Body::parse("note.body", "a\0b", "").unwrap_err();
        assert_eq!(err.reason(), "INVALID_FIELD");
        assert_eq!(err.violation().unwrap().field, "note.body.text");
    }

    #[test]
    fn size_limit_is_exact() {
        let at_limit = "a".repeat(MAX_BODY_BYTES);
        assert!(Body::parse("note.body", &at_limit, "").is_ok());
        let over = "a".repeat(MAX_BODY_BYTES + 1);
        let err = Body::parse("note.body", &over, "").unwrap_err();
        assert_eq!(err.reason(), "FIELD_TOO_LARGE");
        assert_eq!(err.violation().unwrap().field, "note.body.text");
    }

    #[test]
    fn html_deeper_than_the_limit_is_refused() {
        let at_limit = "<div>".repeat(MAX_HTML_DEPTH);
        assert!(Body::parse("note.body", "", &at_limit).is_ok());
        let deeper = "<div>".repeat(100_000);
        let err = Body::parse("note.body", "", &deeper).unwrap_err();
        assert_eq!(err.reason(), "INVALID_FIELD");
        assert_eq!(err.violation().unwrap().field, "note.body.html");
        // Siblings that close each other are not nesting.
        let siblings = "<ul><li>item".to_owned() + &"<li>item".repeat(10_000);
        assert!(Body::parse("note.body", "", &siblings).is_ok());
        let paragraphs = "<p>para".repeat(10_000);
        assert!(Body::parse("note.body", "", &paragraphs).is_ok());
    }

    /// Formatting tags left open across blocks are reopened at each block:
    /// 40 KiB of them would be stored as tens of MiB.
    #[test]
    fn html_that_expands_when_parsed_is_refused() {
        let mut crafted = String::from("<p>");
        for n in 0..60 {
            crafted.push_str(&format!("<b title=\"{n:0>40}\">"));
        }
        crafted.push_str("</p>");
        crafted.push_str(&"<p>x</p>".repeat(5_000));
        let expanded = Body::from_html(&crafted);
        assert!(
            expanded.html().unwrap().len() > 20 * crafted.len(),
            "the parser expands it: {} bytes from {}",
            expanded.html().unwrap().len(),
            crafted.len()
        );
        let err = Body::parse("note.body", "", &crafted).unwrap_err();
        assert_eq!(err.reason(), "FIELD_TOO_LARGE", "{err:?}");
        assert_eq!(err.violation().unwrap().field, "note.body.html");
        // Ordinary formatting is not touched.
        let ordinary =
            "<p>some <b>bold</b> and <a href=\"https://example.com\">a link</a></p>".repeat(10_000);
        assert!(Body::parse("note.body", "", &ordinary).is_ok());
    }

    #[test]
    fn large_html_keeps_all_its_text() {
        let html = "<p>word <b>bold</b></p>".repeat(100_000);
        let body = Body::from_html(&html);
        assert_eq!(body.text().matches("word bold").count(), 100_000);
    }
}
