//! The batch calls: BatchGetNotes, BatchAddNotes (all or none, or per
//! item) and BatchDeleteNotes. Limits at and over the boundary, order,
//! idempotent retries, and all-or-none leaving nothing behind.

use notesd::proto::notes::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// The ErrorInfo metadata `index` of a failed batch call.
fn failed_index(status: &tonic::Status) -> Option<usize> {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get("index").map(|i| i.parse().unwrap()))
}

/// Asserts a refusal as INVALID_ARGUMENT whose BadRequest names `field`.
#[track_caller]
fn invalid(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violated_fields(status), [field], "{status:?}");
}

async fn batch_get(client: &mut Client, ids: &[String]) -> Result<Vec<pb::Note>, tonic::Status> {
    client
        .batch_get_notes(pb::BatchGetNotesRequest { ids: ids.to_vec() })
        .await
        .map(|r| r.into_inner().notes)
}

fn add_request(text: &str) -> pb::AddNoteRequest {
    pb::AddNoteRequest {
        request_id: Uuid::now_v7().to_string(),
        note: Some(text_note("customer", "c-1", text)),
    }
}

async fn batch_add(
    client: &mut Client,
    requests: Vec<pb::AddNoteRequest>,
) -> Result<Vec<pb::Note>, tonic::Status> {
    client
        .batch_add_notes(pb::BatchAddNotesRequest {
            requests,
            partial_success: false,
        })
        .await
        .map(|r| r.into_inner().notes)
}

async fn batch_delete(
    client: &mut Client,
    requests: Vec<pb::DeleteNoteRequest>,
) -> Result<Vec<pb::Note>, tonic::Status> {
    client
        .batch_delete_notes(pb::BatchDeleteNotesRequest { requests })
        .await
        .map(|r| r.into_inner().notes)
}

fn delete_request(id: &str) -> pb::DeleteNoteRequest {
    pb::DeleteNoteRequest {
        id: id.to_owned(),
        etag: String::new(),
    }
}

/// How many rows each table holding notes or their traces has.
async fn row_counts(app: &TestApp) -> [i64; 4] {
    let mut counts = [0; 4];
    for (count, table) in
        counts
            .iter_mut()
            .zip(["notes", "note_revisions", "note_events", "note_requests"])
    {
        *count = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    }
    counts
}

fn ids(notes: &[pb::Note]) -> Vec<String> {
    notes.iter().map(|n| n.id.clone()).collect()
}

#[tokio::test]
async fn batch_get_returns_the_notes_in_request_order() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let a = add(&mut alice, text_note("customer", "c-1", "a")).await;
    let b = add(&mut alice, text_note("customer", "c-1", "b")).await;
    let c = add(&mut alice, text_note("customer", "c-1", "c")).await;
    delete(&mut alice, &c.id, "").await.unwrap();

    let wanted = [c.id.clone(), a.id.clone(), b.id.clone(), a.id.clone()];
    let notes = batch_get(&mut alice, &wanted).await.unwrap();
    assert_eq!(ids(&notes), wanted);
    assert_eq!(notes[1], a);
    // A soft-deleted note comes with its delete time, as from GetNote.
    assert!(notes[0].delete_time.is_some());
}

#[tokio::test]
async fn batch_get_is_all_or_nothing_and_hides_what_the_caller_cannot_read() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob = app.member("acme", "bob").await;
    let mut other = app.member("globex", "carol").await;
    let mine = add(&mut alice, text_note("customer", "c-1", "a")).await.id;
    let bobs_private = add(
        &mut bob,
        pb::Note {
            visibility: pb::Visibility::Private as i32,
            ..text_note("customer", "c-1", "b")
        },
    )
    .await
    .id;
    let elsewhere = add(&mut other, text_note("customer", "c-1", "c")).await.id;
    let missing = Uuid::now_v7().to_string();

    for (position, hidden) in [(1, &bobs_private), (2, &elsewhere), (1, &missing)] {
        let mut wanted = vec![mine.clone(), mine.clone(), mine.clone()];
        wanted[position] = hidden.clone();
        let status = batch_get(&mut alice, &wanted).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(reason(&status), "NOT_FOUND");
        assert_eq!(failed_index(&status), Some(position));
    }
}

#[tokio::test]
async fn batch_get_limits() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "a")).await.id;

    assert_eq!(
        batch_get(&mut alice, &vec![note.clone(); 1000])
            .await
            .unwrap()
            .len(),
        1000
    );
    let status = batch_get(&mut alice, &vec![note.clone(); 1001])
        .await
        .unwrap_err();
    invalid(&status, "ids");
    let status = batch_get(&mut alice, &[]).await.unwrap_err();
    assert_eq!(reason(&status), "MISSING_FIELDS");
    let status = batch_get(&mut alice, &[note.clone(), "nope".to_owned()])
        .await
        .unwrap_err();
    invalid(&status, "ids[1]");

    // What would not fit a response is refused before the bodies are read.
    let large = add(
        &mut alice,
        text_note("customer", "c-1", &"x".repeat(9 * 1024 * 1024)),
    )
    .await
    .id;
    assert_eq!(
        batch_get(&mut alice, std::slice::from_ref(&large))
            .await
            .unwrap()
            .len(),
        1
    );
    let status = batch_get(&mut alice, &[large.clone(), large])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "RESPONSE_TOO_LARGE");
}

#[tokio::test]
async fn batch_add_creates_every_note_in_order_and_a_retry_creates_nothing() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let requests: Vec<pb::AddNoteRequest> =
        (0..5).map(|i| add_request(&format!("note {i}"))).collect();
    let notes = batch_add(&mut alice, requests.clone()).await.unwrap();
    let texts: Vec<&str> = notes.iter().map(body_text).collect();
    assert_eq!(texts, ["note 0", "note 1", "note 2", "note 3", "note 4"]);
    for note in &notes {
        assert_eq!(get(&mut alice, &note.id).await.unwrap(), *note);
    }
    let counts = row_counts(&app).await;
    assert_eq!(counts, [5, 5, 5, 5]);

    // The same batch again: the same notes, nothing new.
    let again = batch_add(&mut alice, requests).await.unwrap();
    assert_eq!(ids(&again), ids(&notes));
    assert_eq!(row_counts(&app).await, counts);
}

#[tokio::test]
async fn batch_add_limits() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let thousand: Vec<pb::AddNoteRequest> =
        (0..1000).map(|i| add_request(&format!("n{i}"))).collect();
    assert_eq!(batch_add(&mut alice, thousand).await.unwrap().len(), 1000);

    let over: Vec<pb::AddNoteRequest> = (0..1001).map(|i| add_request(&format!("n{i}"))).collect();
    invalid(&batch_add(&mut alice, over).await.unwrap_err(), "requests");
    let status = batch_add(&mut alice, Vec::new()).await.unwrap_err();
    assert_eq!(reason(&status), "MISSING_FIELDS");

    // More than 8 MiB in all: send such notes one by one.
    let big = vec![
        add_request(&"x".repeat(5 * 1024 * 1024)),
        add_request(&"y".repeat(5 * 1024 * 1024)),
    ];
    let status = batch_add(&mut alice, big).await.unwrap_err();
    assert_eq!(reason(&status), "FIELD_TOO_LARGE");
    assert_eq!(violated_fields(&status), ["requests"]);

    // Request ids repeated within a batch.
    let first = add_request("a");
    let status = batch_add(&mut alice, vec![first.clone(), add_request("b"), first])
        .await
        .unwrap_err();
    invalid(&status, "requests[2].request_id");
    assert_eq!(row_counts(&app).await[0], 1000);
}

#[tokio::test]
async fn one_bad_note_leaves_nothing_of_its_batch_behind() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let taken = add(
        &mut alice,
        pb::Note {
            source: Some(pb::Source {
                system: "close".to_owned(),
                id: "acti_1".to_owned(),
            }),
            ..text_note("customer", "c-1", "imported")
        },
    )
    .await;
    let before = row_counts(&app).await;

    // A malformed note: INVALID_ARGUMENT naming it.
    let mut requests: Vec<pb::AddNoteRequest> =
        (0..4).map(|i| add_request(&i.to_string())).collect();
    requests[2].note.as_mut().unwrap().body = None;
    let status = batch_add(&mut alice, requests.clone()).await.unwrap_err();
    invalid(&status, "requests[2].note.body");
    assert_eq!(failed_index(&status), Some(2));

    // A note the database refuses: its source id is taken.
    requests[2].note = Some(pb::Note {
        source: taken.source.clone(),
        ..text_note("customer", "c-1", "again")
    });
    let status = batch_add(&mut alice, requests.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "SOURCE_ALREADY_EXISTS");
    assert_eq!(failed_index(&status), Some(2));

    // A note for another owner, from a member.
    let mut for_bob = requests.clone();
    for_bob[3].note.as_mut().unwrap().owner_id = "bob".to_owned();
    for_bob[2].note = Some(text_note("customer", "c-1", "fine"));
    let status = batch_add(&mut alice, for_bob).await.unwrap_err();
    assert_eq!(reason(&status), "NOT_OWNER");
    assert_eq!(failed_index(&status), Some(3));

    assert_eq!(row_counts(&app).await, before, "nothing was left behind");

    // Every request id is still free: the batch, fixed, goes through.
    requests[2].note = Some(text_note("customer", "c-1", "fixed"));
    assert_eq!(batch_add(&mut alice, requests).await.unwrap().len(), 4);
}

#[tokio::test]
async fn partial_success_writes_what_it_can_and_reports_each() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut requests: Vec<pb::AddNoteRequest> =
        (0..4).map(|i| add_request(&i.to_string())).collect();
    requests[1].note.as_mut().unwrap().body = None;
    requests[3].note.as_mut().unwrap().owner_id = "bob".to_owned();
    let response = alice
        .batch_add_notes(pb::BatchAddNotesRequest {
            requests: requests.clone(),
            partial_success: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.notes.is_empty());
    let results = response.results;
    assert_eq!(results.len(), 4);
    assert_eq!(body_text(results[0].note.as_ref().unwrap()), "0");
    assert_eq!(body_text(results[2].note.as_ref().unwrap()), "2");
    let error = results[1].error.as_ref().unwrap();
    assert_eq!(
        (error.code, error.reason.as_str(), error.field.as_str()),
        (Code::InvalidArgument as i32, "MISSING_FIELDS", "note.body")
    );
    let error = results[3].error.as_ref().unwrap();
    assert_eq!(
        (error.code, error.reason.as_str()),
        (Code::PermissionDenied as i32, "NOT_OWNER")
    );
    assert_eq!(row_counts(&app).await[0], 2);

    // A retry answers the created notes again and writes nothing more.
    let again = alice
        .batch_add_notes(pb::BatchAddNotesRequest {
            requests,
            partial_success: true,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(again[0].note, results[0].note);
    assert_eq!(again[2].note, results[2].note);
    assert_eq!(row_counts(&app).await[0], 2);
}

#[tokio::test]
async fn batch_delete_is_all_or_none() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob = app.member("acme", "bob").await;
    let a = add(&mut alice, text_note("customer", "c-1", "a")).await;
    let b = add(&mut alice, text_note("customer", "c-1", "b")).await;
    let bobs = add(&mut bob, text_note("customer", "c-1", "bob's")).await;
    let before = row_counts(&app).await;

    for (requests, code, expected, index) in [
        (
            vec![delete_request(&a.id), delete_request(&bobs.id)],
            Code::PermissionDenied,
            "NOT_OWNER",
            1,
        ),
        (
            vec![
                delete_request(&b.id),
                pb::DeleteNoteRequest {
                    id: a.id.clone(),
                    etag: "stale".to_owned(),
                },
            ],
            Code::Aborted,
            "ETAG_MISMATCH",
            1,
        ),
        (
            vec![
                delete_request(&Uuid::now_v7().to_string()),
                delete_request(&a.id),
            ],
            Code::NotFound,
            "NOT_FOUND",
            0,
        ),
    ] {
        let status = batch_delete(&mut alice, requests).await.unwrap_err();
        assert_eq!((status.code(), reason(&status).as_str()), (code, expected));
        assert_eq!(failed_index(&status), Some(index));
    }
    assert_eq!(row_counts(&app).await, before, "nothing was deleted");
    assert!(get(&mut alice, &a.id).await.unwrap().delete_time.is_none());

    let deleted = batch_delete(
        &mut alice,
        vec![
            delete_request(&b.id),
            pb::DeleteNoteRequest {
                id: a.id.clone(),
                etag: a.etag.clone(),
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(ids(&deleted), [b.id.clone(), a.id.clone()]);
    for note in &deleted {
        assert!(note.delete_time.is_some());
        assert_eq!(note.revision, 2);
        assert_eq!(get(&mut alice, &note.id).await.unwrap(), *note);
    }
    // Deleting again is NOTE_DELETED, as with DeleteNote.
    let status = batch_delete(&mut alice, vec![delete_request(&a.id)])
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "NOTE_DELETED");

    let status = batch_delete(
        &mut alice,
        vec![delete_request(&a.id), delete_request(&a.id)],
    )
    .await
    .unwrap_err();
    invalid(&status, "requests[1].id");
    let status = batch_delete(&mut alice, vec![delete_request("x"); 1001])
        .await
        .unwrap_err();
    invalid(&status, "requests");
}
