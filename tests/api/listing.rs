//! ListNotes: order, filters, page sizes, page tokens, and keyset paging
//! that stays exact while notes are being added.

use std::collections::{HashMap, HashSet};

use notesd::proto::notes::v1 as pb;
use tokio::sync::watch;
use tonic::Code;

use crate::helpers::*;

fn at(minute: i64, subject_id: &str) -> pb::Note {
    pb::Note {
        occur_time: timestamp(at_minute(minute)),
        ..text_note("customer", subject_id, &format!("minute {minute}"))
    }
}

fn ids(notes: &[pb::Note]) -> Vec<String> {
    notes.iter().map(|n| n.id.clone()).collect()
}

#[tokio::test]
async fn notes_are_listed_newest_occur_time_first() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let m3 = add(&mut alice, at(3, "c-1")).await;
    let m1 = add(&mut alice, at(1, "c-1")).await;
    let m5 = add(&mut alice, at(5, "c-1")).await;
    let m2 = add(&mut alice, at(2, "c-1")).await;

    let listed = listed_ids(&mut alice, Default::default()).await;
    assert_eq!(listed, ids(&[m5, m3, m2, m1]));
}

#[tokio::test]
async fn equal_occur_times_list_newest_id_first() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let first = add(&mut alice, at(1, "c-1")).await;
    let second = add(&mut alice, at(1, "c-1")).await;
    let third = add(&mut alice, at(1, "c-1")).await;
    let later = add(&mut alice, at(2, "c-1")).await;

    let mut tied = vec![first.id.clone(), second.id.clone(), third.id.clone()];
    tied.sort();
    tied.reverse();
    let expected: Vec<String> = std::iter::once(later.id).chain(tied).collect();
    assert_eq!(listed_ids(&mut alice, Default::default()).await, expected);
    // Paging one at a time walks the ties in the same order.
    let paged = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            page_size: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(paged, expected);
}

#[tokio::test]
async fn filter_by_subject_matches_type_and_id() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let wanted = add(&mut alice, text_note("customer", "c-1", "wanted")).await;
    add(&mut alice, text_note("customer", "c-2", "other id")).await;
    add(&mut alice, text_note("lead", "c-1", "other type")).await;
    let wanted_too = add(&mut alice, text_note("customer", "c-1", "wanted too")).await;

    let listed = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            subject: subject("customer", "c-1"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed, ids(&[wanted_too, wanted]));
}

#[tokio::test]
async fn filter_by_subject_needs_type_and_id() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let status = list(
        &mut alice,
        pb::ListNotesRequest {
            subject: subject("customer", ""),
            ..Default::default()
        },
    )
    .await
    .expect_err("a subject filter without id is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        violated_fields(&status).iter().any(|f| f == "subject.id"),
        "{status:?}"
    );
}

#[tokio::test]
async fn filter_by_owner() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob = app.member("acme", "bob").await;
    let by_alice = add(&mut alice, text_note("customer", "c-1", "a")).await;
    let by_bob = add(&mut bob, text_note("customer", "c-1", "b")).await;

    let owned_by_bob = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            owner_id: "bob".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(owned_by_bob, vec![by_bob.id.clone()]);
    let owned_by_alice = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            owner_id: "alice".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(owned_by_alice, vec![by_alice.id.clone()]);
    let owned_by_nobody = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            owner_id: "carol".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(owned_by_nobody.is_empty());
}

#[tokio::test]
async fn filter_by_pinned_true_and_false() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let pinned = add(
        &mut alice,
        pb::Note {
            pinned: true,
            ..at(1, "c-1")
        },
    )
    .await;
    let unpinned = add(&mut alice, at(2, "c-1")).await;
    let pinned_later = add(&mut alice, at(3, "c-1")).await;
    update(
        &mut alice,
        pb::Note {
            pinned: true,
            ..patch(&pinned_later.id)
        },
        &["pinned"],
    )
    .await
    .unwrap();

    let only_pinned = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            pinned: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        only_pinned,
        vec![pinned_later.id.clone(), pinned.id.clone()]
    );
    let only_unpinned = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            pinned: Some(false),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(only_unpinned, vec![unpinned.id.clone()]);
    let all = listed_ids(&mut alice, Default::default()).await;
    assert_eq!(all, vec![pinned_later.id, unpinned.id, pinned.id]);
}

#[tokio::test]
async fn filter_by_occur_time_range_is_half_open() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let notes: Vec<pb::Note> = {
        let mut v = Vec::new();
        for minute in 0..5 {
            v.push(add(&mut alice, at(minute, "c-1")).await);
        }
        v
    };
    let range = |start: Option<i64>, end: Option<i64>| pb::ListNotesRequest {
        occur_time_range: Some(pb::TimeRange {
            start_time: start.and_then(|m| timestamp(at_minute(m))),
            end_time: end.and_then(|m| timestamp(at_minute(m))),
        }),
        ..Default::default()
    };

    let bounded = listed_ids(&mut alice, range(Some(1), Some(3))).await;
    assert_eq!(
        bounded,
        vec![notes[2].id.clone(), notes[1].id.clone()],
        "start inclusive, end exclusive"
    );
    let from = listed_ids(&mut alice, range(Some(3), None)).await;
    assert_eq!(from, vec![notes[4].id.clone(), notes[3].id.clone()]);
    let until = listed_ids(&mut alice, range(None, Some(1))).await;
    assert_eq!(until, vec![notes[0].id.clone()]);
}

#[tokio::test]
async fn filter_by_create_time_range() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    // Occur times in the reverse order of creation, so that the filter
    // cannot be answered from occur_time.
    let a = add(&mut alice, at(30, "c-1")).await;
    let b = add(&mut alice, at(20, "c-1")).await;
    let c = add(&mut alice, at(10, "c-1")).await;
    let range = |start_time, end_time| pb::ListNotesRequest {
        create_time_range: Some(pb::TimeRange {
            start_time,
            end_time,
        }),
        ..Default::default()
    };

    assert_eq!(
        listed_ids(&mut alice, range(b.create_time, c.create_time)).await,
        vec![b.id.clone()]
    );
    assert_eq!(
        listed_ids(&mut alice, range(b.create_time, None)).await,
        vec![b.id.clone(), c.id.clone()]
    );
    assert_eq!(
        listed_ids(&mut alice, range(None, b.create_time)).await,
        vec![a.id.clone()]
    );
}

#[tokio::test]
async fn empty_time_range_is_invalid_argument() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    for (field, request) in [
        (
            "occur_time_range",
            pb::ListNotesRequest {
                occur_time_range: Some(pb::TimeRange {
                    start_time: timestamp(at_minute(5)),
                    end_time: timestamp(at_minute(5)),
                }),
                ..Default::default()
            },
        ),
        (
            "create_time_range",
            pb::ListNotesRequest {
                create_time_range: Some(pb::TimeRange {
                    start_time: timestamp(at_minute(6)),
                    end_time: timestamp(at_minute(5)),
                }),
                ..Default::default()
            },
        ),
    ] {
        let status = list(&mut alice, request)
            .await
            .expect_err("an empty range is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            violated_fields(&status)
                .iter()
                .any(|f| f.starts_with(field)),
            "{field}: {status:?}"
        );
    }
}

#[tokio::test]
async fn filters_combine_with_and() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob = app.member("acme", "bob").await;
    let hit = add(
        &mut alice,
        pb::Note {
            pinned: true,
            ..at(2, "c-1")
        },
    )
    .await;
    add(&mut alice, at(2, "c-1")).await; // not pinned
    add(
        &mut alice,
        pb::Note {
            pinned: true,
            ..at(2, "c-2")
        },
    )
    .await; // other subject
    add(
        &mut alice,
        pb::Note {
            pinned: true,
            ..at(9, "c-1")
        },
    )
    .await; // out of range
    add(
        &mut bob,
        pb::Note {
            pinned: true,
            ..at(2, "c-1")
        },
    )
    .await; // other owner
    let deleted = add(
        &mut alice,
        pb::Note {
            pinned: true,
            ..at(2, "c-1")
        },
    )
    .await;
    delete(&mut alice, &deleted.id, "").await.unwrap();

    let mut request = pb::ListNotesRequest {
        subject: subject("customer", "c-1"),
        owner_id: "alice".into(),
        pinned: Some(true),
        occur_time_range: Some(pb::TimeRange {
            start_time: timestamp(at_minute(0)),
            end_time: timestamp(at_minute(5)),
        }),
        ..Default::default()
    };
    assert_eq!(
        listed_ids(&mut alice, request.clone()).await,
        vec![hit.id.clone()]
    );
    request.show_deleted = true;
    assert_eq!(
        listed_ids(&mut alice, request).await,
        vec![deleted.id, hit.id]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn page_size_defaults_to_50() {
    let app = spawn_app().await;
    let alice = app.member("acme", "alice").await;
    let notes = add_many(&alice, 51, 8, |i| at(i as i64, "c-1")).await;
    let mut alice = alice;

    let first = list(&mut alice, Default::default()).await.unwrap();
    assert_eq!(first.notes.len(), 50);
    assert!(!first.next_page_token.is_empty());
    let second = list(
        &mut alice,
        pb::ListNotesRequest {
            page_token: first.next_page_token,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(second.notes.len(), 1);
    assert!(
        second.next_page_token.is_empty(),
        "the last page has no token"
    );
    let oldest = notes
        .iter()
        .find(|n| n.occur_time == timestamp(at_minute(0)))
        .unwrap();
    assert_eq!(second.notes[0].id, oldest.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn page_size_is_capped_at_1000() {
    let app = spawn_app().await;
    let alice = app.member("acme", "alice").await;
    add_many(&alice, 1001, 16, |i| at(i as i64, "c-1")).await;
    let mut alice = alice;

    for page_size in [1001, 5000, i32::MAX] {
        let page = list(
            &mut alice,
            pb::ListNotesRequest {
                page_size,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(page.notes.len(), 1000, "page_size {page_size} is capped");
        assert!(!page.next_page_token.is_empty());
        let rest = list(
            &mut alice,
            pb::ListNotesRequest {
                page_size,
                page_token: page.next_page_token,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(rest.notes.len(), 1);
        assert_eq!(rest.notes[0].occur_time, timestamp(at_minute(0)));
        assert!(rest.next_page_token.is_empty());
    }
    let exact = list(
        &mut alice,
        pb::ListNotesRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(exact.notes.len(), 1000);
}

#[tokio::test]
async fn page_size_smaller_than_the_notes_pages_them() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut created = Vec::new();
    for minute in 0..5 {
        created.push(add(&mut alice, at(minute, "c-1")).await.id);
    }
    created.reverse();

    let first = list(
        &mut alice,
        pb::ListNotesRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&first.notes), created[..2]);
    let all = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all, created);
    // A page size that divides the count exactly ends with an empty token.
    let exact = list(
        &mut alice,
        pb::ListNotesRequest {
            page_size: 5,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(exact.notes.len(), 5);
    assert!(
        exact.next_page_token.is_empty(),
        "no token when nothing follows"
    );
}

#[tokio::test]
async fn negative_page_size_is_invalid_argument() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    assert_invalid(
        list(
            &mut alice,
            pb::ListNotesRequest {
                page_size: -1,
                ..Default::default()
            },
        )
        .await,
        "INVALID_FIELD",
        "page_size",
    );
}

#[tokio::test]
async fn garbage_page_token_is_invalid_argument() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    add(&mut alice, text_note("customer", "c-1", "x")).await;
    for token in [
        "garbage",
        "!!!",
        "eyJmb28iOiAiYmFyIn0",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert_invalid(
            list(
                &mut alice,
                pb::ListNotesRequest {
                    page_token: token.into(),
                    ..Default::default()
                },
            )
            .await,
            "INVALID_PAGE_TOKEN",
            "page_token",
        );
    }
}

#[tokio::test]
async fn page_token_reused_with_other_filters_is_invalid_argument() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    for minute in 0..3 {
        add(&mut alice, at(minute, "c-1")).await;
    }
    let original = pb::ListNotesRequest {
        subject: subject("customer", "c-1"),
        page_size: 1,
        ..Default::default()
    };
    let token = list(&mut alice, original.clone())
        .await
        .unwrap()
        .next_page_token;
    assert!(!token.is_empty());

    let variants = [
        pb::ListNotesRequest {
            subject: subject("customer", "c-2"),
            ..original.clone()
        },
        pb::ListNotesRequest {
            subject: None,
            ..original.clone()
        },
        pb::ListNotesRequest {
            owner_id: "alice".into(),
            ..original.clone()
        },
        pb::ListNotesRequest {
            pinned: Some(false),
            ..original.clone()
        },
        pb::ListNotesRequest {
            show_deleted: true,
            ..original.clone()
        },
        pb::ListNotesRequest {
            occur_time_range: Some(pb::TimeRange {
                start_time: timestamp(at_minute(0)),
                end_time: None,
            }),
            ..original.clone()
        },
    ];
    for variant in variants {
        assert_invalid(
            list(
                &mut alice,
                pb::ListNotesRequest {
                    page_token: token.clone(),
                    ..variant.clone()
                },
            )
            .await,
            "INVALID_PAGE_TOKEN",
            "page_token",
        );
    }
    let next = list(
        &mut alice,
        pb::ListNotesRequest {
            page_token: token,
            ..original
        },
    )
    .await;
    assert_eq!(
        next.expect("the token works with its own filters")
            .notes
            .len(),
        1
    );
}

/// Pages through every note while another task keeps adding notes: notes
/// newer than every page (the default occur_time, now), notes backdated
/// into the middle of the pages already read or yet to read, and notes
/// tied with existing ones. Every note that existed before paging began
/// must be listed exactly once, and no note twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paging_while_notes_are_added_misses_and_repeats_nothing() {
    let app = spawn_app().await;
    let alice = app.member("acme", "alice").await;
    // 40 notes at minutes 0, 2, 4, ... 78; minute 40 holds three ties.
    let mut existing = add_many(&alice, 40, 8, |i| at(2 * i as i64, "c-1")).await;
    existing.extend(add_many(&alice, 2, 2, |_| at(40, "c-1")).await);
    let existing: HashSet<String> = existing.into_iter().map(|n| n.id).collect();

    let (added_tx, mut added_rx) = watch::channel(0usize);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut adder_client = alice.clone();
    let adder = tokio::spawn(async move {
        let mut added = Vec::new();
        for i in 0usize.. {
            if stop_rx.try_recv().is_ok() {
                break;
            }
            let note = match i % 3 {
                0 => text_note("customer", "c-1", "newest"),
                1 => at(2 * ((i * 7) % 40) as i64, "c-1"), // ties with an existing note
                _ => pb::Note {
                    occur_time: timestamp(
                        at_minute(((i * 11) % 80) as i64) + chrono::Duration::seconds(30),
                    ),
                    ..text_note("customer", "c-1", "backdated between")
                },
            };
            added.push(add(&mut adder_client, note).await.id);
            added_tx.send_replace(added.len());
        }
        added
    });

    let mut alice = alice;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut order: Vec<pb::Note> = Vec::new();
    let mut request = pb::ListNotesRequest {
        page_size: 7,
        ..Default::default()
    };
    let mut pages = 0;
    loop {
        let page = list(&mut alice, request.clone())
            .await
            .expect("ListNotes succeeds");
        pages += 1;
        for note in &page.notes {
            *seen.entry(note.id.clone()).or_default() += 1;
        }
        order.extend(page.notes);
        if page.next_page_token.is_empty() {
            break;
        }
        assert_ne!(
            page.next_page_token, request.page_token,
            "the page token moves on"
        );
        request.page_token = page.next_page_token;
        // Let the adder add at least three more notes before the next page.
        let target = *added_rx.borrow() + 3;
        added_rx
            .wait_for(|n| *n >= target)
            .await
            .expect("the adder runs");
    }
    stop_tx.send(()).unwrap();
    let added = adder.await.expect("the adder finishes");

    assert!(pages > 2, "paged over {pages} pages");
    assert!(
        added.len() >= 3 * (pages - 1),
        "notes were added between pages"
    );
    for id in &existing {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "note {id} that existed before paging is listed once"
        );
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "repeated: {repeated:?}");
    let keys: Vec<_> = order
        .iter()
        .map(|n| (to_chrono(n.occur_time.as_ref().unwrap()), n.id.clone()))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] > w[1]),
        "the pages together are in newest-first order"
    );
}

/// Four notes of 10 MiB do not fit one gRPC message: the pages hold fewer
/// notes than asked, and together every note, once.
#[tokio::test(flavor = "multi_thread")]
async fn large_notes_are_paged_by_size_without_losing_any() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut created = Vec::new();
    for minute in 0..4 {
        let text = format!("{minute}").repeat(10_485_760);
        created.push(
            add(
                &mut alice,
                pb::Note {
                    body: text_body(&text),
                    ..at(minute, "c-1")
                },
            )
            .await
            .id,
        );
    }
    created.reverse();

    let mut listed = Vec::new();
    let mut request = pb::ListNotesRequest::default();
    let mut pages = 0;
    loop {
        let page = list(&mut alice, request.clone())
            .await
            .expect("ListNotes succeeds");
        pages += 1;
        for note in &page.notes {
            assert_eq!(body_text(note).len(), 10_485_760, "bodies are whole");
        }
        listed.extend(ids(&page.notes));
        if page.next_page_token.is_empty() {
            break;
        }
        assert_ne!(
            page.next_page_token, request.page_token,
            "the page token moves on"
        );
        request.page_token = page.next_page_token;
    }
    assert!(pages > 1, "40 MiB of notes came in one page");
    assert_eq!(listed, created);
}

#[tokio::test]
async fn notes_are_listed_by_subject_type_and_by_related_subject() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let related = |note: pb::Note, kind: &str, id: &str| pb::Note {
        related_subjects: vec![subject(kind, id).unwrap()],
        ..note
    };
    let lead_1 = add(
        &mut alice,
        related(text_note("lead", "l-1", "a"), "contact", "c-1"),
    )
    .await;
    let lead_2 = add(
        &mut alice,
        related(text_note("lead", "l-2", "b"), "contact", "c-2"),
    )
    .await;
    let customer = add(
        &mut alice,
        related(text_note("customer", "k-1", "c"), "contact", "c-1"),
    )
    .await;
    // Another tenant's note with the same related subject stays out.
    let mut bob = app.member("other", "bob").await;
    add(
        &mut bob,
        related(text_note("lead", "l-1", "x"), "contact", "c-1"),
    )
    .await;

    let leads = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            subject_type: "lead".to_owned(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(leads, vec![lead_2.id.clone(), lead_1.id.clone()]);

    let of_contact = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            related_subject: subject("contact", "c-1"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(of_contact, vec![customer.id.clone(), lead_1.id.clone()]);

    let both = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            subject_type: "lead".to_owned(),
            related_subject: subject("contact", "c-1"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(both, vec![lead_1.id]);

    assert_invalid(
        list(
            &mut alice,
            pb::ListNotesRequest {
                subject_type: "Lead!".to_owned(),
                ..Default::default()
            },
        )
        .await,
        "INVALID_FIELD",
        "subject_type",
    );
    assert_invalid(
        list(
            &mut alice,
            pb::ListNotesRequest {
                related_subject: Some(pb::Subject {
                    r#type: "contact".to_owned(),
                    id: String::new(),
                }),
                ..Default::default()
            },
        )
        .await,
        "MISSING_FIELDS",
        "related_subject.id",
    );
}

/// How many times the server's queries have used the GIN index on
/// related subjects (statistics reach pg_stat within a second or so).
async fn related_index_scans(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "select idx_scan from pg_stat_user_indexes where indexrelname = 'notes_related_subjects'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_related_subject_listing_is_answered_by_its_index() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    // 20,000 notes that name no related subject, and one that does.
    insert_notes(&app, "acme", 20_000, "filler").await;
    let related = add(
        &mut alice,
        pb::Note {
            related_subjects: vec![pb::Subject {
                r#type: "contact".to_owned(),
                id: "cont_1".to_owned(),
            }],
            ..text_note("customer", "c-1", "about cont_1")
        },
    )
    .await;
    sqlx::query("analyze notes")
        .execute(&app.pool)
        .await
        .unwrap();
    let before = related_index_scans(&app).await;

    let listed = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            related_subject: subject("contact", "cont_1"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed, [related.id]);
    // Under row-level security alone, PostgreSQL may not ask a GIN index
    // (`@>` is not leakproof) and walks the tenant instead.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while related_index_scans(&app).await == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the listing did not use notes_related_subjects"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
