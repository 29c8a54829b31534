//! ListNoteRevisions: one revision per change, newest first, with its kind,
//! actor and snapshot, and its pagination.

use notesd::proto::notes::v1::{self as pb, ChangeKind, EditPolicy, Visibility};
use tonic::Code;

use crate::helpers::*;

/// A TEAM-editable note by alice, changed by alice and bob: revision 1
/// created (alice, "v1"), 2 updated (alice, "v2"), 3 updated (bob, "v3"),
/// 4 deleted (bob), 5 undeleted (alice). Returns the note as it is now.
async fn note_with_history(alice: &mut Client, bob: &mut Client) -> pb::Note {
    let note = add(alice, shared_note("v1", Visibility::Team, EditPolicy::Team)).await;
    update(
        alice,
        pb::Note {
            body: text_body("v2"),
            ..patch(&note.id)
        },
        &["body"],
    )
    .await
    .unwrap();
    update(
        bob,
        pb::Note {
            body: text_body("v3"),
            ..patch(&note.id)
        },
        &["body"],
    )
    .await
    .unwrap();
    delete(bob, &note.id, "").await.unwrap();
    undelete(alice, &note.id, "").await.unwrap()
}

#[tokio::test]
async fn revisions_are_listed_newest_first_with_kind_actor_and_snapshot() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob = app.member("acme", "bob").await;
    let note = note_with_history(&mut alice, &mut bob).await;
    assert_eq!(note.revision, 5);

    let listed = revisions(&mut alice, &note.id, 0, "").await.unwrap();
    assert!(listed.next_page_token.is_empty());
    let summary: Vec<(i64, i32, &str, &str, bool)> = listed
        .revisions
        .iter()
        .map(|r| {
            let snapshot = r.note.as_ref().expect("a snapshot");
            (
                r.revision,
                r.change_kind,
                r.actor_id.as_str(),
                body_text(snapshot),
                snapshot.delete_time.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (5, ChangeKind::Undeleted as i32, "alice", "v3", false),
            (4, ChangeKind::Deleted as i32, "bob", "v3", true),
            (3, ChangeKind::Updated as i32, "bob", "v3", false),
            (2, ChangeKind::Updated as i32, "alice", "v2", false),
            (1, ChangeKind::Created as i32, "alice", "v1", false),
        ]
    );
    for r in &listed.revisions {
        let snapshot = r.note.as_ref().unwrap();
        assert_eq!(snapshot.id, note.id);
        assert_eq!(
            snapshot.revision, r.revision,
            "the snapshot is the note right after the change"
        );
        assert_eq!(snapshot.updater_id, r.actor_id);
        assert!(r.change_time.is_some());
        assert_eq!(r.change_time, snapshot.update_time);
        assert_eq!(snapshot.owner_id, "alice");
    }
    let newest = listed.revisions[0].note.as_ref().unwrap();
    assert_eq!(*newest, note, "the newest revision is the note as it is");
}

#[tokio::test]
async fn revision_of_creation_matches_the_created_note() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(
        &mut alice,
        pb::Note {
            title: "title".into(),
            mentions: vec!["bob".into()],
            actions: vec![json_struct(serde_json::json!({"kind": "call", "n": 1.0}))],
            pinned: true,
            ..text_note("customer", "c-1", "body")
        },
    )
    .await;
    let listed = revisions(&mut alice, &note.id, 0, "").await.unwrap();
    assert_eq!(listed.revisions.len(), 1);
    let created = &listed.revisions[0];
    assert_eq!(created.revision, 1);
    assert_eq!(created.change_kind, ChangeKind::Created as i32);
    assert_eq!(created.actor_id, "alice");
    assert_eq!(created.change_time, note.create_time);
    assert_eq!(created.note.as_ref().unwrap(), &note);
}

#[tokio::test]
async fn revisions_are_paged() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob = app.member("acme", "bob").await;
    let note = note_with_history(&mut alice, &mut bob).await;

    let mut numbers = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = revisions(&mut alice, &note.id, 2, &token).await.unwrap();
        pages += 1;
        assert!(page.revisions.len() <= 2);
        numbers.extend(page.revisions.iter().map(|r| r.revision));
        if page.next_page_token.is_empty() {
            break;
        }
        assert_ne!(page.next_page_token, token, "the page token moves on");
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(numbers, vec![5, 4, 3, 2, 1]);
}

#[tokio::test]
async fn revision_paging_is_not_disturbed_by_new_changes() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob = app.member("acme", "bob").await;
    let note = note_with_history(&mut alice, &mut bob).await;

    let first = revisions(&mut alice, &note.id, 2, "").await.unwrap();
    update(
        &mut alice,
        pb::Note {
            title: "revision 6".into(),
            ..patch(&note.id)
        },
        &["title"],
    )
    .await
    .unwrap();
    let second = revisions(&mut alice, &note.id, 2, &first.next_page_token)
        .await
        .unwrap();
    let numbers: Vec<i64> = first
        .revisions
        .iter()
        .chain(&second.revisions)
        .map(|r| r.revision)
        .collect();
    assert_eq!(numbers, vec![5, 4, 3, 2]);
}

#[tokio::test]
async fn revision_page_size_defaults_to_50() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "v0")).await;
    for i in 1..=50 {
        update(
            &mut alice,
            pb::Note {
                title: format!("t{i}"),
                ..patch(&note.id)
            },
            &["title"],
        )
        .await
        .unwrap();
    }
    let page = revisions(&mut alice, &note.id, 0, "").await.unwrap();
    assert_eq!(page.revisions.len(), 50);
    assert_eq!(page.revisions[0].revision, 51);
    assert!(!page.next_page_token.is_empty());
    let rest = revisions(&mut alice, &note.id, 0, &page.next_page_token)
        .await
        .unwrap();
    assert_eq!(
        rest.revisions
            .iter()
            .map(|r| r.revision)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert!(rest.next_page_token.is_empty());
}

#[tokio::test]
async fn revisions_with_negative_page_size_are_invalid_argument() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "x")).await;
    assert_invalid(
        revisions(&mut alice, &note.id, -5, "").await,
        "INVALID_FIELD",
        "page_size",
    );
}

#[tokio::test]
async fn revisions_with_garbage_page_token_are_invalid_argument() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "x")).await;
    assert_invalid(
        revisions(&mut alice, &note.id, 0, "garbage!").await,
        "INVALID_PAGE_TOKEN",
        "page_token",
    );
}

#[tokio::test]
async fn revision_page_token_of_another_note_is_invalid_argument() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob = app.member("acme", "bob").await;
    let first = note_with_history(&mut alice, &mut bob).await;
    let second = note_with_history(&mut alice, &mut bob).await;
    let token = revisions(&mut alice, &first.id, 2, "")
        .await
        .unwrap()
        .next_page_token;
    assert_invalid(
        revisions(&mut alice, &second.id, 2, &token).await,
        "INVALID_PAGE_TOKEN",
        "page_token",
    );
}

#[tokio::test]
async fn revisions_follow_the_read_rules() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob = app.member("acme", "bob").await;
    let mut eve = app.member("globex", "alice").await;
    let private = add(
        &mut alice,
        shared_note("private", Visibility::Private, EditPolicy::OwnerOnly),
    )
    .await;
    let team = add(
        &mut alice,
        shared_note("team", Visibility::Team, EditPolicy::OwnerOnly),
    )
    .await;

    assert_fails(revisions(&mut bob, &private.id, 0, "").await, NOT_FOUND);
    assert_fails(revisions(&mut eve, &team.id, 0, "").await, NOT_FOUND);
    assert_eq!(
        revisions(&mut bob, &team.id, 0, "")
            .await
            .unwrap()
            .revisions
            .len(),
        1
    );

    // Readable now, not then: once made private, its history is hidden too.
    update(
        &mut alice,
        pb::Note {
            visibility: Visibility::Private as i32,
            ..patch(&team.id)
        },
        &["visibility"],
    )
    .await
    .unwrap();
    let status = revisions(&mut bob, &team.id, 0, "")
        .await
        .expect_err("no longer readable");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn revisions_of_a_deleted_note_stay_readable() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "x")).await;
    delete(&mut alice, &note.id, "").await.unwrap();
    let listed = revisions(&mut alice, &note.id, 0, "").await.unwrap();
    let kinds: Vec<i32> = listed.revisions.iter().map(|r| r.change_kind).collect();
    assert_eq!(
        kinds,
        vec![ChangeKind::Deleted as i32, ChangeKind::Created as i32]
    );
}

#[tokio::test]
async fn unchanged_update_writes_no_revision_but_each_change_writes_one() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "x")).await;
    update(
        &mut alice,
        pb::Note {
            title: "a".into(),
            ..patch(&note.id)
        },
        &["title"],
    )
    .await
    .unwrap();
    update(
        &mut alice,
        pb::Note {
            title: "a".into(),
            ..patch(&note.id)
        },
        &["title"],
    )
    .await
    .unwrap();
    update(
        &mut alice,
        pb::Note {
            pinned: true,
            ..patch(&note.id)
        },
        &["pinned"],
    )
    .await
    .unwrap();
    let numbers: Vec<i64> = revisions(&mut alice, &note.id, 0, "")
        .await
        .unwrap()
        .revisions
        .iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(numbers, vec![3, 2, 1]);
}

/// Four revisions of a 10 MiB note do not fit one gRPC message: the pages
/// hold fewer revisions than asked, and together all of them.
#[tokio::test(flavor = "multi_thread")]
async fn revisions_of_a_large_note_are_paged_by_size() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(
        &mut alice,
        text_note("customer", "c-1", &"0".repeat(10_485_760)),
    )
    .await;
    for i in 1..4 {
        let body = text_body(&i.to_string().repeat(10_485_760));
        update(
            &mut alice,
            pb::Note {
                body,
                ..patch(&note.id)
            },
            &["body"],
        )
        .await
        .unwrap();
    }

    let mut numbers = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = revisions(&mut alice, &note.id, 0, &token)
            .await
            .expect("ListNoteRevisions succeeds");
        pages += 1;
        for r in &page.revisions {
            let expected = ((r.revision - 1).to_string()).repeat(10_485_760);
            assert!(
                body_text(r.note.as_ref().unwrap()) == expected,
                "revision {} holds its body",
                r.revision
            );
        }
        numbers.extend(page.revisions.iter().map(|r| r.revision));
        if page.next_page_token.is_empty() {
            break;
        }
        assert_ne!(page.next_page_token, token, "the page token moves on");
        token = page.next_page_token;
    }
    assert!(pages > 1);
    assert_eq!(numbers, vec![4, 3, 2, 1]);
}
