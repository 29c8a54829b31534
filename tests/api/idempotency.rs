//! AddNote request ids: safe retries, conflicting reuse, and their scope.

use futures::future::join_all;
use tonic::Code;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn retry_with_same_request_id_returns_the_first_note_and_creates_nothing() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let request_id = uuid::Uuid::now_v7().to_string();
    let note = text_note("customer", "c-1", "call me back");

    let first = add_with_request_id(&mut alice, &request_id, note.clone())
        .await
        .unwrap();
    let retry = add_with_request_id(&mut alice, &request_id, note)
        .await
        .expect("the retry succeeds");

    assert_eq!(
        retry, first,
        "the retry returns the note the first call created"
    );
    assert_eq!(
        listed_ids(&mut alice, Default::default()).await,
        vec![first.id]
    );
}

#[tokio::test]
async fn retry_after_the_note_changed_still_returns_that_note() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let request_id = uuid::Uuid::now_v7().to_string();
    let note = text_note("customer", "c-1", "original");
    let first = add_with_request_id(&mut alice, &request_id, note.clone())
        .await
        .unwrap();
    update(
        &mut alice,
        notesd::proto::notes::v1::Note {
            title: "changed".into(),
            ..patch(&first.id)
        },
        &["title"],
    )
    .await
    .unwrap();

    let retry = add_with_request_id(&mut alice, &request_id, note)
        .await
        .unwrap();
    assert_eq!(retry.id, first.id);
    assert_eq!(
        listed_ids(&mut alice, Default::default()).await,
        vec![first.id]
    );
}

#[tokio::test]
async fn same_request_id_with_a_different_request_is_already_exists() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let request_id = uuid::Uuid::now_v7().to_string();
    let first = add_with_request_id(
        &mut alice,
        &request_id,
        text_note("customer", "c-1", "first body"),
    )
    .await
    .unwrap();

    assert_status(
        add_with_request_id(
            &mut alice,
            &request_id,
            text_note("customer", "c-1", "another body"),
        )
        .await,
        Code::AlreadyExists,
        "REQUEST_ID_CONFLICT",
    );
    assert_status(
        add_with_request_id(
            &mut alice,
            &request_id,
            text_note("customer", "c-2", "first body"),
        )
        .await,
        Code::AlreadyExists,
        "REQUEST_ID_CONFLICT",
    );
    assert_eq!(
        listed_ids(&mut alice, Default::default()).await,
        vec![first.id]
    );
}

#[tokio::test]
async fn request_id_must_be_a_uuid() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    for bad in [
        "not-a-uuid",
        "12345",
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    ] {
        assert_invalid(
            add_with_request_id(&mut alice, bad, text_note("customer", "c-1", "text")).await,
            "INVALID_FIELD",
            "request_id",
        );
    }
    assert!(listed_ids(&mut alice, Default::default()).await.is_empty());
}

#[tokio::test]
async fn without_request_id_every_call_creates_a_note() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = text_note("customer", "c-1", "same");
    let a = add(&mut alice, note.clone()).await;
    let b = add(&mut alice, note).await;
    assert_ne!(a.id, b.id);
    assert_eq!(listed_ids(&mut alice, Default::default()).await.len(), 2);
}

#[tokio::test]
async fn request_ids_are_scoped_to_the_tenant() {
    let app = spawn_app().await;
    let mut acme = app.member("acme", "alice").await;
    let mut globex = app.member("globex", "alice").await;
    let request_id = uuid::Uuid::now_v7().to_string();
    let note = text_note("customer", "c-1", "text");

    let in_acme = add_with_request_id(&mut acme, &request_id, note.clone())
        .await
        .unwrap();
    let in_globex = add_with_request_id(&mut globex, &request_id, note)
        .await
        .expect("another tenant may use the same request id");

    assert_ne!(in_acme.id, in_globex.id);
    assert_eq!(
        listed_ids(&mut globex, Default::default()).await,
        vec![in_globex.id]
    );
    assert_eq!(
        listed_ids(&mut acme, Default::default()).await,
        vec![in_acme.id]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_create_one_note() {
    let app = spawn_app().await;
    let alice = app.member("acme", "alice").await;
    let request_id = uuid::Uuid::now_v7().to_string();
    let note = text_note("customer", "c-1", "raced");

    let calls = (0..8).map(|_| {
        let mut client = alice.clone();
        let request_id = request_id.clone();
        let note = note.clone();
        tokio::spawn(async move { add_with_request_id(&mut client, &request_id, note).await })
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();

    let ids: Vec<String> = results
        .into_iter()
        .map(|r| r.expect("every concurrent retry succeeds").id)
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "all retries return one note: {ids:?}"
    );
    let mut alice = alice;
    assert_eq!(
        listed_ids(&mut alice, Default::default()).await,
        vec![ids[0].clone()]
    );
}
