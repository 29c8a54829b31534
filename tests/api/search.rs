//! SearchNotes: the query syntax, what is matched (title and text, never
//! HTML tags), the access rules and filters of ListNotes, both orders,
//! keyset paging that stays exact while notes are added, and snippets that
//! are safe to show.

use std::collections::HashSet;

use notesd::proto::notes::v1 as pb;
use tonic::Code;

use crate::helpers::*;

fn search_request(query: &str) -> pb::SearchNotesRequest {
    pb::SearchNotesRequest {
        query: query.to_owned(),
        ..Default::default()
    }
}

async fn search(
    client: &mut Client,
    request: pb::SearchNotesRequest,
) -> Result<pb::SearchNotesResponse, tonic::Status> {
    client
        .search_notes(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Every hit of a search, page by page.
async fn search_all(
    client: &mut Client,
    mut request: pb::SearchNotesRequest,
) -> Vec<pb::SearchHit> {
    let mut hits = Vec::new();
    for _ in 0..100 {
        let page = search(client, request.clone())
            .await
            .expect("SearchNotes succeeds");
        hits.extend(page.hits);
        if page.next_page_token.is_empty() {
            return hits;
        }
        request.page_token = page.next_page_token;
    }
    panic!("more than 100 pages");
}

async fn found(client: &mut Client, query: &str) -> Vec<String> {
    search_all(client, search_request(query))
        .await
        .into_iter()
        .map(|hit| hit.note.expect("a hit has its note").id)
        .collect()
}

fn titled(title: &str, text: &str) -> pb::Note {
    pb::Note {
        title: title.to_owned(),
        ..text_note("customer", "c-1", text)
    }
}

#[tokio::test]
async fn the_query_syntax_people_type() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let fox = add(&mut alice, titled("", "the quick brown fox")).await.id;
    let red = add(&mut alice, titled("", "quick red fox jumps")).await.id;
    let dog = add(&mut alice, titled("", "brown quick dog")).await.id;
    let invoice = add(&mut alice, titled("Invoice INV-2041", "see attached"))
        .await
        .id;
    let cafe = add(&mut alice, titled("", "un café crème")).await.id;

    // Words: all must match; newest first.
    assert_eq!(
        found(&mut alice, "quick fox").await,
        [red.clone(), fox.clone()]
    );
    // Case does not matter.
    assert_eq!(
        found(&mut alice, "QUICK").await,
        [dog.clone(), red.clone(), fox.clone()]
    );
    // A quoted phrase: its words next to each other, in order.
    assert_eq!(
        found(&mut alice, "\"quick brown\"").await,
        vec![fox.clone()]
    );
    assert_eq!(
        found(&mut alice, "\"brown quick\"").await,
        vec![dog.clone()]
    );
    // `or` between alternatives.
    assert_eq!(
        found(&mut alice, "dog or jumps").await,
        [dog.clone(), red.clone()]
    );
    // `-word` leaves out the notes with that word.
    assert_eq!(found(&mut alice, "quick -fox").await, vec![dog.clone()]);
    // No stemming: a word matches as typed.
    assert!(found(&mut alice, "jump").await.is_empty());
    // Ids match as typed, in the title too.
    assert_eq!(found(&mut alice, "INV-2041").await, vec![invoice.clone()]);
    assert_eq!(found(&mut alice, "inv").await, vec![invoice.clone()]);
    assert_eq!(found(&mut alice, "invoice").await, [invoice]);
    // Accents are significant.
    assert_eq!(found(&mut alice, "café").await, [cafe]);
    assert!(found(&mut alice, "cafe").await.is_empty());
}

#[tokio::test]
async fn html_tags_and_attributes_never_match() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let html = add(
        &mut alice,
        pb::Note {
            body: html_body(
                "<p>a <strong>bold</strong> idea, <a href=\"https://example.com/hidden\">linked</a></p>",
            ),
            ..text_note("customer", "c-1", "")
        },
    )
    .await
    .id;
    assert_eq!(found(&mut alice, "bold idea").await, vec![html.clone()]);
    assert_eq!(found(&mut alice, "linked").await, [html]);
    for markup in ["strong", "href", "hidden", "example.com", "p"] {
        assert!(
            found(&mut alice, markup).await.is_empty(),
            "{markup} matched"
        );
    }
}

#[tokio::test]
async fn search_follows_the_access_rules_and_filters() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob = app.member("acme", "bob").await;
    let admin_key = app.admin_key("acme", "ops").await;
    let mut admin = app.client(&admin_key).await;
    let mut other = app.member("globex", "alice").await;

    let mine = add(
        &mut alice,
        pb::Note {
            visibility: pb::Visibility::Private as i32,
            ..text_note("customer", "c-1", "secret plan")
        },
    )
    .await
    .id;
    let bobs_team = add(&mut bob, text_note("customer", "c-2", "secret plan"))
        .await
        .id;
    let bobs_private = add(
        &mut bob,
        pb::Note {
            visibility: pb::Visibility::Private as i32,
            ..text_note("customer", "c-1", "secret plan")
        },
    )
    .await
    .id;
    let bobs_draft = add(
        &mut bob,
        pb::Note {
            draft: true,
            ..text_note("customer", "c-1", "secret plan")
        },
    )
    .await
    .id;
    add(&mut other, text_note("customer", "c-1", "secret plan")).await;
    let deleted = add(&mut alice, text_note("customer", "c-1", "secret plan")).await;
    delete(&mut alice, &deleted.id, "").await.unwrap();

    assert_eq!(
        found(&mut alice, "secret").await,
        [bobs_team.clone(), mine.clone()]
    );
    assert_eq!(
        found(&mut bob, "secret").await,
        [bobs_draft.clone(), bobs_private.clone(), bobs_team.clone()]
    );
    assert_eq!(
        found(&mut admin, "secret").await,
        [
            bobs_draft.clone(),
            bobs_private.clone(),
            bobs_team.clone(),
            mine.clone()
        ]
    );

    let ids = |hits: Vec<pb::SearchHit>| -> Vec<String> {
        hits.into_iter().map(|h| h.note.unwrap().id).collect()
    };
    let filtered = |f: fn(&mut pb::SearchNotesRequest)| {
        let mut request = search_request("secret");
        f(&mut request);
        request
    };
    assert_eq!(
        ids(search_all(
            &mut admin,
            filtered(|r| r.subject = subject("customer", "c-1"))
        )
        .await),
        [bobs_draft.clone(), bobs_private.clone(), mine.clone()]
    );
    assert_eq!(
        ids(search_all(&mut admin, filtered(|r| r.owner_id = "bob".to_owned())).await),
        [bobs_draft, bobs_private, bobs_team.clone()]
    );
    let bobs_team_id = bobs_team;
    assert_eq!(
        ids(search_all(&mut alice, filtered(|r| r.show_deleted = true)).await),
        [deleted.id, bobs_team_id, mine]
    );
}

#[tokio::test]
async fn pages_have_no_gaps_or_repeats_while_notes_are_added() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut before = HashSet::new();
    for i in 0..30 {
        // Some notes say "paging" more often, so that relevance differs.
        let text = format!("{} note {i}", "paging ".repeat(1 + i % 4));
        let note = add(
            &mut alice,
            pb::Note {
                occur_time: timestamp(at_minute(i as i64)),
                ..text_note("customer", "c-1", &text)
            },
        )
        .await;
        before.insert(note.id);
    }
    for order in [pb::SearchOrder::Newest, pb::SearchOrder::Relevance] {
        let mut request = pb::SearchNotesRequest {
            page_size: 7,
            order: order as i32,
            ..search_request("paging")
        };
        let mut seen: Vec<String> = Vec::new();
        let mut scores: Vec<f32> = Vec::new();
        let mut added = 0;
        loop {
            let page = search(&mut alice, request.clone()).await.unwrap();
            assert!(page.hits.len() <= 7);
            for hit in page.hits {
                scores.push(hit.score);
                seen.push(hit.note.unwrap().id);
            }
            // New notes between pages: newer, older, and more relevant.
            for minute in [1000 + added, -1000 - added] {
                add(
                    &mut alice,
                    pb::Note {
                        occur_time: timestamp(at_minute(minute)),
                        ..text_note("customer", "c-1", &"paging ".repeat(9))
                    },
                )
                .await;
            }
            added += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{order:?}: a note came twice");
        let missed: Vec<&String> = before.iter().filter(|id| !unique.contains(id)).collect();
        assert!(missed.is_empty(), "{order:?}: missed {missed:?}");
        if order == pb::SearchOrder::Relevance {
            assert!(
                scores.windows(2).all(|w| w[0] >= w[1]),
                "relevance order: {scores:?}"
            );
        }
    }
}

#[tokio::test]
async fn relevance_puts_the_best_match_first() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let in_title = add(&mut alice, titled("Quarterly budget", "numbers inside"))
        .await
        .id;
    let once = add(&mut alice, titled("", "we spoke about the budget once"))
        .await
        .id;
    let unrelated = add(&mut alice, titled("", "nothing here")).await.id;
    let newest_first = found(&mut alice, "budget").await;
    assert_eq!(newest_first, [once.clone(), in_title.clone()]);

    let hits = search_all(
        &mut alice,
        pb::SearchNotesRequest {
            order: pb::SearchOrder::Relevance as i32,
            ..search_request("budget")
        },
    )
    .await;
    let ranked: Vec<String> = hits.iter().map(|h| h.note.clone().unwrap().id).collect();
    assert_eq!(ranked, [in_title, once]);
    assert!(hits[0].score > hits[1].score, "{hits:?}");
    assert!(!ranked.contains(&unrelated));
}

#[tokio::test]
async fn snippets_are_escaped_bounded_and_marked() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let text = format!(
        "{} <script>alert('x')</script> & the needle \u{1}fake\u{2} is here. {}",
        "padding words ".repeat(60),
        "tail words ".repeat(200)
    );
    add(&mut alice, text_note("customer", "c-1", &text)).await;
    let hits = search_all(&mut alice, search_request("needle")).await;
    assert_eq!(hits.len(), 1);
    let snippet = &hits[0].snippet;
    assert!(snippet.contains("<mark>needle</mark>"), "{snippet}");
    // Text is escaped; what the parser takes for a tag is left out.
    assert!(
        snippet.contains("alert(&#39;x&#39;) &amp; the"),
        "{snippet}"
    );
    assert!(!snippet.contains("script"), "{snippet}");
    // The only markup is the marks: the note's own control characters
    // cannot open one.
    let without_marks = snippet.replace("<mark>", "").replace("</mark>", "");
    assert!(
        !without_marks.contains('<') && !without_marks.contains('>'),
        "{snippet}"
    );
    assert_eq!(snippet.matches("<mark>").count(), 1, "{snippet}");
    assert!(
        snippet.chars().count() < 600,
        "{} chars",
        snippet.chars().count()
    );

    // A match in the title is shown from the title.
    add(&mut alice, titled("Renewal for \"Acme\" & Co", "body text")).await;
    let hits = search_all(&mut alice, search_request("renewal")).await;
    assert!(
        hits[0]
            .snippet
            .starts_with("<mark>Renewal</mark> for &quot;Acme&quot; &amp; Co"),
        "{}",
        hits[0].snippet
    );
}

#[tokio::test]
async fn the_opening_of_a_large_note_is_searched() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    // 10 MiB of text: more than a tsvector holds, so only its opening is
    // indexed; the note is still stored whole.
    let text = format!(
        "openingword {} deepword",
        "filler ".repeat(10 * 1024 * 1024 / 7 - 4)
    );
    let note = add(&mut alice, text_note("customer", "c-1", &text)).await;
    assert_eq!(body_text(&note).len(), text.len());
    assert_eq!(found(&mut alice, "openingword").await, [note.id]);
    assert!(found(&mut alice, "deepword").await.is_empty());
}

#[tokio::test]
async fn bad_searches_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    add(&mut alice, text_note("customer", "c-1", "alpha beta")).await;
    for (query, expected) in [
        ("", "MISSING_FIELDS"),
        ("   ", "MISSING_FIELDS"),
        ("- \"\" !!", "INVALID_FIELD"),
        (&"a".repeat(1001) as &str, "FIELD_TOO_LARGE"),
    ] {
        let status = search(&mut alice, search_request(query)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{query:?}");
        assert_eq!(reason(&status), expected, "{query:?}");
        assert_eq!(violated_fields(&status), ["query"], "{query:?}");
    }
    let status = search(
        &mut alice,
        pb::SearchNotesRequest {
            page_size: -1,
            ..search_request("alpha")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_size"]);
    let status = search(
        &mut alice,
        pb::SearchNotesRequest {
            order: 7,
            ..search_request("alpha")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(violated_fields(&status), ["order"]);

    // A page token is bound to its query and order.
    for _ in 0..3 {
        add(&mut alice, text_note("customer", "c-1", "alpha")).await;
    }
    let first = search(
        &mut alice,
        pb::SearchNotesRequest {
            page_size: 1,
            ..search_request("alpha")
        },
    )
    .await
    .unwrap();
    assert!(!first.next_page_token.is_empty());
    for other in [
        pb::SearchNotesRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..search_request("beta")
        },
        pb::SearchNotesRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
            order: pb::SearchOrder::Relevance as i32,
            ..search_request("alpha")
        },
    ] {
        let status = search(&mut alice, other).await.unwrap_err();
        assert_eq!(reason(&status), "INVALID_PAGE_TOKEN");
    }
}

#[tokio::test]
async fn a_search_that_would_read_most_of_a_tenant_is_cut_short() {
    // How fast the cheap searches are is the benchmark's to say
    // (bench/search); here one server finds them with time to spare, and
    // a second, on the same database, bounds every search at 50 ms.
    let app = spawn_app_with(|settings| {
        settings.limits.search_timeout = std::time::Duration::from_secs(30);
    })
    .await;
    let mut roomy = app.member("acme", "alice").await;
    // 300,000 notes that all hold `alpha` and `beta`, never as the phrase
    // "beta alpha", each with a word of its own (`n1`, `n2`, ...).
    insert_notes(&app, "acme", 300_000, "alpha beta").await;
    sqlx::query("analyze notes")
        .execute(&app.pool)
        .await
        .unwrap();

    // A rare word is found through the index, a common one from the
    // newest notes.
    let rare = search(&mut roomy, search_request("n4242")).await.unwrap();
    assert_eq!(rare.hits.len(), 1);
    let common = search(&mut roomy, search_request("alpha beta"))
        .await
        .unwrap();
    assert_eq!(common.hits.len(), 20);

    let strict = spawn_app_at(
        app.database_name.clone(),
        app.database_url.clone(),
        |settings| {
            settings.limits.search_timeout = std::time::Duration::from_millis(50);
        },
    )
    .await;
    let mut alice = strict.member("acme", "alice").await;
    // A phrase of common words that no note holds can only be answered by
    // reading every note: it is stopped at the bound and refused.
    let status = search(&mut alice, search_request("\"beta alpha\""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "SEARCH_TOO_COSTLY");
    // The connections it may have run on are fine for the next calls.
    for _ in 0..3 {
        let page = alice
            .list_notes(pb::ListNotesRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.notes.len(), 1);
    }
}
