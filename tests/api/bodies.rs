//! Note bodies: HTML sanitizing, text derived from HTML, size limits in
//! bytes, and NUL characters.

use notesd::proto::notes::v1 as pb;

use crate::helpers::*;

const MAX_BODY_BYTES: usize = 10_485_760;

fn html_note(html: &str) -> pb::Note {
    pb::Note {
        body: html_body(html),
        ..text_note("customer", "c-1", "")
    }
}

fn html_of(note: &pb::Note) -> &str {
    note.body.as_ref().map_or("", |b| b.html.as_str())
}

#[tokio::test]
async fn script_and_event_handlers_are_removed_and_text_kept() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(
        &mut alice,
        html_note(r#"<p>Hello <img src="https://x.example.com/a.png" onerror="alert(1)">world<script>alert('pwned')</script></p>"#),
    )
    .await;

    let html = html_of(&note);
    assert!(!html.to_lowercase().contains("<script"), "{html}");
    assert!(!html.contains("alert"), "{html}");
    assert!(!html.to_lowercase().contains("onerror"), "{html}");
    assert!(html.contains("Hello"), "{html}");
    assert!(html.contains("world"), "{html}");
    assert!(html.contains("<p>"), "harmless markup stays: {html}");
    assert!(body_text(&note).contains("Hello"), "{:?}", body_text(&note));
    assert!(body_text(&note).contains("world"), "{:?}", body_text(&note));
    assert!(
        !body_text(&note).contains("pwned"),
        "script content is not text: {:?}",
        body_text(&note)
    );

    let stored = get(&mut alice, &note.id).await.unwrap();
    assert_eq!(
        stored.body, note.body,
        "the sanitized body is what is stored"
    );
}

#[tokio::test]
async fn javascript_href_is_dropped_and_link_text_kept() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(
        &mut alice,
        html_note(r#"<a href="javascript:alert(1)">click me</a> and <a href="https://example.com/ok">safe</a>"#),
    )
    .await;
    let html = html_of(&note);
    assert!(!html.to_lowercase().contains("javascript"), "{html}");
    assert!(html.contains("click me"), "{html}");
    assert!(
        html.contains(r#"href="https://example.com/ok""#),
        "safe links stay: {html}"
    );
    assert!(body_text(&note).contains("click me"));
    assert!(body_text(&note).contains("safe"));
}

#[tokio::test]
async fn html_wins_over_text_and_text_is_derived_from_it() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(
        &mut alice,
        pb::Note {
            body: Some(pb::NoteBody {
                text: "this text is ignored".into(),
                html: "<p>first &amp; foremost</p><p>second</p>".into(),
            }),
            ..text_note("customer", "c-1", "")
        },
    )
    .await;
    assert_eq!(body_text(&note), "first & foremost\n\nsecond");
    assert!(
        html_of(&note).contains("<p>first &amp; foremost</p>"),
        "{}",
        html_of(&note)
    );
    assert!(!body_text(&note).contains("ignored"));
}

#[tokio::test]
async fn html_only_body_gets_derived_text() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(
        &mut alice,
        html_note("<div>line one</div><div>line <b>two</b></div>"),
    )
    .await;
    assert_eq!(body_text(&note), "line one\nline two");
}

#[tokio::test]
async fn update_with_html_body_is_sanitized_too() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "plain")).await;
    let updated = update(
        &mut alice,
        pb::Note {
            body: html_body("<p onclick=\"steal()\">new</p><script>x()</script>"),
            ..patch(&note.id)
        },
        &["body"],
    )
    .await
    .unwrap();
    assert!(
        !html_of(&updated).contains("onclick"),
        "{}",
        html_of(&updated)
    );
    assert!(
        !html_of(&updated).contains("script"),
        "{}",
        html_of(&updated)
    );
    assert_eq!(body_text(&updated), "new");
}

#[tokio::test]
async fn plain_text_body_is_kept_verbatim() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let text = "  <b>not html</b> & <script>neither</script>\n\ttabs  ";
    let note = add(&mut alice, text_note("customer", "c-1", text)).await;
    assert_eq!(body_text(&note), text);
    assert_eq!(html_of(&note), "");
}

#[tokio::test]
async fn body_text_of_exactly_the_limit_is_accepted_and_read_back() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let text = "a".repeat(MAX_BODY_BYTES - 3) + "end";
    let id = add(&mut alice, text_note("customer", "c-1", &text))
        .await
        .id;
    let stored = get(&mut alice, &id).await.expect("GetNote succeeds");
    assert_eq!(body_text(&stored).len(), MAX_BODY_BYTES);
    assert!(
        body_text(&stored) == text,
        "the body is read back unchanged"
    );
}

#[tokio::test]
async fn body_text_one_byte_over_the_limit_is_too_large() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let text = "a".repeat(MAX_BODY_BYTES + 1);
    let result = try_add(&mut alice, text_note("customer", "c-1", &text))
        .await
        .map(|n| n.id);
    assert_invalid(result, "FIELD_TOO_LARGE", "note.body.text");
}

#[tokio::test]
async fn body_limit_counts_bytes_not_characters() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    // 5242880 two-byte characters and one more byte: far fewer characters
    // than the limit, one byte more than it.
    let text = "é".repeat(MAX_BODY_BYTES / 2) + "a";
    assert_eq!(text.len(), MAX_BODY_BYTES + 1);
    let result = try_add(&mut alice, text_note("customer", "c-1", &text))
        .await
        .map(|n| n.id);
    assert_invalid(result, "FIELD_TOO_LARGE", "note.body.text");
}

#[tokio::test]
async fn body_html_over_the_limit_is_too_large() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let html = format!("<p>{}</p>", "a".repeat(MAX_BODY_BYTES + 1 - 7));
    assert_eq!(html.len(), MAX_BODY_BYTES + 1);
    let result = try_add(&mut alice, html_note(&html)).await.map(|n| n.id);
    assert_invalid(result, "FIELD_TOO_LARGE", "note.body.html");
}

#[tokio::test]
async fn update_with_body_over_the_limit_is_too_large() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "small")).await;
    let text = "a".repeat(MAX_BODY_BYTES + 1);
    let result = update(
        &mut alice,
        pb::Note {
            body: text_body(&text),
            ..patch(&note.id)
        },
        &["body"],
    )
    .await
    .map(|n| n.id);
    assert_invalid(result, "FIELD_TOO_LARGE", "note.body.text");
    assert_eq!(get(&mut alice, &note.id).await.unwrap(), note);
}

#[tokio::test]
async fn nul_byte_in_body_is_refused() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    assert_invalid(
        try_add(&mut alice, text_note("customer", "c-1", "before\0after")).await,
        "INVALID_FIELD",
        "note.body.text",
    );
    assert_invalid(
        try_add(&mut alice, html_note("<p>before\0after</p>")).await,
        "INVALID_FIELD",
        "note.body.html",
    );
    assert!(listed_ids(&mut alice, Default::default()).await.is_empty());
}

#[tokio::test]
async fn empty_body_is_missing_fields() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    assert_invalid(
        try_add(&mut alice, text_note("customer", "c-1", "   ")).await,
        "MISSING_FIELDS",
        "note.body",
    );
    let no_body = pb::Note {
        body: None,
        ..text_note("customer", "c-1", "x")
    };
    assert_invalid(
        try_add(&mut alice, no_body).await,
        "MISSING_FIELDS",
        "note.body",
    );
}
