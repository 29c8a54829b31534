//! Deadlines and cancellation (docs/api.md, "Deadlines and cancellation"):
//! a call's `grpc-timeout` bounds its database work, and a call that ends
//! early, by its deadline or because its client went away, leaves no
//! statement running.
//!
//! The slow database operation is an UpdateNote waiting for a row lock
//! that the test holds: without cancellation it would wait for as long as
//! the lock is held.

use std::time::Duration;

use notesd::proto::notes::v1 as pb;
use sqlx::{Connection as _, PgConnection};

use crate::helpers::*;

/// Holds the lock of note `id` (as the database owner) until dropped or
/// committed.
pub async fn lock_note(app: &TestApp, id: &str) -> PgConnection {
    let mut conn = PgConnection::connect(&app.database_url).await.unwrap();
    sqlx::query("begin").execute(&mut conn).await.unwrap();
    sqlx::query("select 1 from notes where id = $1::uuid for update")
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Statements of the test's database waiting for a lock: notesd's, since
/// the lock's holder waits for nothing.
async fn waiting_statements(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity \
         where datname = current_database() and state = 'active' \
         and wait_event_type = 'Lock'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Waits until `waiting_statements` is `count`, for at most `within`;
/// false if it never is.
async fn until_waiting(app: &TestApp, count: i64, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if waiting_statements(app).await == count {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status of an UpdateNote sent with `grpc-timeout: timeout` by a
/// client that does not enforce the deadline itself (tonic's would answer
/// CANCELLED on its own when the server's answer is a moment late), so
/// that the status is the server's.
async fn update_with_deadline(
    app: &TestApp,
    key: &str,
    request: pb::UpdateNoteRequest,
    timeout: &str,
) -> tonic::Status {
    use prost::Message as _;
    let (headers, _, trailers) = raw_grpc(
        app,
        "/notes.v1.NotesService/UpdateNote",
        &[("x-api-key", key), ("grpc-timeout", timeout)],
        grpc_frame(false, &request.encode_to_vec()),
    )
    .await;
    tonic::Status::from_header_map(&headers)
        .or_else(|| tonic::Status::from_header_map(&trailers))
        .expect("a grpc-status")
}

/// The status of an UpdateNote of `note` with a 50 ms deadline, while the
/// note's lock is held (for the reasons test).
pub async fn update_past_deadline(app: &TestApp, key: &str, note: &pb::Note) -> tonic::Status {
    let lock = lock_note(app, &note.id).await;
    let status = update_with_deadline(app, key, retitle(note, "late"), "50m").await;
    lock.close().await.unwrap();
    status
}

fn retitle(note: &pb::Note, title: &str) -> pb::UpdateNoteRequest {
    pb::UpdateNoteRequest {
        note: Some(pb::Note {
            title: title.to_owned(),
            ..patch(&note.id)
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["title".to_owned()],
        }),
    }
}

#[tokio::test]
async fn a_call_past_its_deadline_is_deadline_exceeded_and_its_statement_is_gone() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "42", "x")).await;
    let lock = lock_note(&app, &note.id).await;
    // The same update without a deadline would wait: it does.
    let mut waiting = alice.clone();
    let request = retitle(&note, "waits");
    let call = tokio::spawn(async move { waiting.update_note(request).await });
    assert!(
        until_waiting(&app, 1, Duration::from_secs(5)).await,
        "the update never waited for the lock"
    );
    call.abort();
    assert!(until_waiting(&app, 0, Duration::from_secs(10)).await);

    let key = app.member_key("acme", "alice").await;
    let started = std::time::Instant::now();
    let status = update_with_deadline(&app, &key, retitle(&note, "late"), "50m").await;
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason(&status), "DEADLINE_EXCEEDED");
    // The lock is held for good: without the deadline there is no answer
    // at all (the bound is generous, for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(
        until_waiting(&app, 0, Duration::from_secs(10)).await,
        "the update's statement is still in pg_stat_activity"
    );

    // Nothing of it was written.
    lock.close().await.unwrap();
    let stored = get(&mut alice, &note.id).await.unwrap();
    assert_eq!((stored.title.as_str(), stored.revision), ("", 1));
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_call_statement() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "42", "x")).await;
    let lock = lock_note(&app, &note.id).await;

    // No deadline: the call waits for the lock until its client leaves.
    let mut client = alice.clone();
    let request = retitle(&note, "abandoned");
    let call = tokio::spawn(async move { client.update_note(request).await });
    assert!(
        until_waiting(&app, 1, Duration::from_secs(5)).await,
        "the update never waited for the lock"
    );
    call.abort();
    assert!(
        until_waiting(&app, 0, Duration::from_secs(10)).await,
        "the abandoned update's statement is still in pg_stat_activity"
    );

    lock.close().await.unwrap();
    let stored = get(&mut alice, &note.id).await.unwrap();
    assert_eq!((stored.title.as_str(), stored.revision), ("", 1));
    // The server is fine, and the same update now goes through.
    let updated = alice
        .update_note(retitle(&note, "later"))
        .await
        .unwrap()
        .into_inner()
        .note
        .unwrap();
    assert_eq!((updated.title.as_str(), updated.revision), ("later", 2));
    app.stop().await;
}
