//! PurgeNotes: erasure for good. After a purge no table holds a trace of
//! the notes (checked with SQL as the owner), every API answers as if they
//! never existed, an audit record without content remains, and only admin
//! keys may purge.

use notesd::proto::notes::v1 as pb;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

const TENANT: &str = "acme";
/// A word only the purged notes hold.
const SECRET: &str = "zebracorn";

/// How many rows of each table that holds notes or their traces name one
/// of `ids`, or hold `SECRET` anywhere in the row.
async fn traces(app: &TestApp, ids: &[Uuid]) -> Vec<(&'static str, i64)> {
    let mut found = Vec::new();
    for (table, id_column) in [
        ("notes", "id"),
        ("note_revisions", "note_id"),
        ("note_events", "note_id"),
        ("note_requests", "note_id"),
        ("note_numbers", "note_id"),
    ] {
        let count: i64 = sqlx::query_scalar(&format!(
            "select count(*) from {table} t where t.{id_column} = any($1) or t::text like $2"
        ))
        .bind(ids)
        .bind(format!("%{SECRET}%"))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        found.push((table, count));
    }
    found
}

fn about(kind: &str, id: &str, text: &str) -> pb::Note {
    text_note(kind, id, text)
}

async fn purge(
    client: &mut Client,
    request: pb::PurgeNotesRequest,
) -> Result<pb::PurgeNotesResponse, tonic::Status> {
    client
        .purge_notes(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_purged_subject_leaves_no_trace() {
    let app = spawn_app().await;
    let member_key = app.member_key(TENANT, "42").await;
    let mut member = app.client(&member_key).await;
    let admin_key = app.admin_key(TENANT, "ops").await;
    let mut admin = app.client(&admin_key).await;

    // A watch that started before any of it.
    let watch_token = list(&mut member, Default::default())
        .await
        .unwrap()
        .watch_token;

    // The subject's notes: one with a request id, one updated twice, one
    // soft-deleted, one private, one written through Fernand (which gives
    // it a number), one about it through Close.
    let with_request = add_with_request_id(
        &mut member,
        &Uuid::now_v7().to_string(),
        about("conversation", "55", &format!("{SECRET} one")),
    )
    .await
    .unwrap();
    let updated = add(&mut member, about("conversation", "55", "two")).await;
    let updated = update(
        &mut member,
        pb::Note {
            body: text_body(&format!("{SECRET} two, edited")),
            ..patch(&updated.id)
        },
        &["body"],
    )
    .await
    .unwrap();
    let deleted = add(
        &mut member,
        about("conversation", "55", &format!("{SECRET} three")),
    )
    .await;
    delete(&mut member, &deleted.id, "").await.unwrap();
    let private = add(
        &mut member,
        pb::Note {
            visibility: pb::Visibility::Private as i32,
            ..about("conversation", "55", &format!("{SECRET} four"))
        },
    )
    .await;
    let fernand = reqwest::Client::new()
        .post(app.http_url("/conversations/55/notes"))
        .header("x-api-key", &member_key)
        .json(&json!({ "content": format!("<p>{SECRET} five</p>") }))
        .send()
        .await
        .unwrap();
    assert_eq!(fernand.status(), 200);
    // Notes of other subjects, one naming the purged subject as related:
    // they stay.
    let other = add(&mut member, about("conversation", "56", "another")).await;
    let related = add(
        &mut member,
        pb::Note {
            related_subjects: vec![pb::Subject {
                r#type: "conversation".to_owned(),
                id: "55".to_owned(),
            }],
            ..about("conversation", "57", "mentions 55")
        },
    )
    .await;

    let purged_ids: Vec<String> = list_all(
        &mut admin,
        pb::ListNotesRequest {
            subject: subject("conversation", "55"),
            show_deleted: true,
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .map(|n| n.id)
    .collect();
    assert_eq!(purged_ids.len(), 5);
    let uuids: Vec<Uuid> = purged_ids.iter().map(|id| id.parse().unwrap()).collect();
    assert!(traces(&app, &uuids).await.iter().all(|(_, n)| *n > 0));

    // Only an admin key may purge; a refusal erases nothing.
    let status = purge(
        &mut member,
        pb::PurgeNotesRequest {
            subject: subject("conversation", "55"),
            note_ids: Vec::new(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "ADMIN_KEY_REQUIRED");
    assert_eq!(get(&mut member, &updated.id).await.unwrap(), updated);

    let purged = purge(
        &mut admin,
        pb::PurgeNotesRequest {
            subject: subject("conversation", "55"),
            note_ids: Vec::new(),
        },
    )
    .await
    .unwrap();
    assert_eq!(purged.purged_notes, 5);
    // 1 + 2 + 2 + 1 + 1 revisions.
    assert_eq!(purged.purged_revisions, 7);

    // No table holds a trace.
    for (table, count) in traces(&app, &uuids).await {
        assert_eq!(count, 0, "{table} still holds a trace");
    }

    // Every API answers as if the notes never existed.
    for id in [&with_request.id, &updated.id, &deleted.id, &private.id] {
        assert_eq!(
            get(&mut admin, id).await.unwrap_err().code(),
            Code::NotFound
        );
        assert_eq!(
            revisions(&mut admin, id, 0, "").await.unwrap_err().code(),
            Code::NotFound
        );
    }
    let listed = list_all(
        &mut admin,
        pb::ListNotesRequest {
            show_deleted: true,
            ..Default::default()
        },
    )
    .await;
    let mut left: Vec<String> = listed.into_iter().map(|n| n.id).collect();
    left.sort();
    let mut kept = vec![other.id.clone(), related.id.clone()];
    kept.sort();
    assert_eq!(left, kept);
    let searched = admin
        .search_notes(pb::SearchNotesRequest {
            query: SECRET.to_owned(),
            show_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(searched.hits.is_empty());
    let status = admin
        .batch_get_notes(pb::BatchGetNotesRequest {
            ids: vec![other.id.clone(), updated.id.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // A watch from before the purge sees none of the purged changes: its
    // first event is the note added after.
    let sentinel = add(&mut member, about("conversation", "58", "after")).await;
    let mut stream = member
        .watch_notes(pb::WatchNotesRequest {
            resume_token: watch_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        seen.push(event.note_id.clone());
        if event.note_id == sentinel.id {
            break;
        }
    }
    assert_eq!(seen, [other.id.clone(), related.id.clone(), sentinel.id]);

    // The audit record: who, when, how many, and the subject's digest only.
    let (actor, selector, digest, notes, revisions_, record): (
        String,
        String,
        Vec<u8>,
        i64,
        i64,
        String,
    ) = sqlx::query_as(
        "select actor_id, selector, subject_digest, notes, revisions, p::text
         from note_purges p where tenant_id = $1 and id = $2",
    )
    .bind(TENANT)
    .bind(purged.purge_id.parse::<Uuid>().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((actor.as_str(), selector.as_str()), ("ops", "subject"));
    assert_eq!(digest, Sha256::digest(b"conversation\x0055").to_vec());
    assert_eq!((notes, revisions_), (5, 7));
    assert!(
        !record.contains(SECRET) && !record.contains("conversation"),
        "{record}"
    );
}

#[tokio::test]
async fn notes_purged_by_id_go_and_the_rest_stay() {
    let app = spawn_app().await;
    let mut alice = app.member(TENANT, "alice").await;
    let admin_key = app.admin_key(TENANT, "ops").await;
    let mut admin = app.client(&admin_key).await;
    let mut elsewhere = app.member("globex", "alice").await;
    let gone = add(&mut alice, about("lead", "lead_1", &format!("{SECRET} a"))).await;
    let stays = add(&mut alice, about("lead", "lead_1", "b")).await;
    let foreign = add(&mut elsewhere, about("lead", "lead_1", "c")).await;
    let close_id = format!("acti_{}", gone.id.replace('-', ""));
    let close_get = |key: String, id: String| {
        let url = app.http_url(&format!("/api/v1/activity/note/{id}/"));
        async move {
            reqwest::Client::new()
                .get(url)
                .basic_auth(key, Some(""))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(close_get(admin_key.clone(), close_id.clone()).await, 200);

    // Ids that name no note of the tenant (another tenant's, none at all)
    // are skipped.
    let purged = purge(
        &mut admin,
        pb::PurgeNotesRequest {
            subject: None,
            note_ids: vec![
                gone.id.clone(),
                foreign.id.clone(),
                Uuid::now_v7().to_string(),
            ],
        },
    )
    .await
    .unwrap();
    assert_eq!((purged.purged_notes, purged.purged_revisions), (1, 1));
    assert_eq!(
        get(&mut alice, &gone.id).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(close_get(admin_key.clone(), close_id).await, 404);
    assert_eq!(get(&mut alice, &stays.id).await.unwrap(), stays);
    assert_eq!(get(&mut elsewhere, &foreign.id).await.unwrap(), foreign);
    let gone_id: Uuid = gone.id.parse().unwrap();
    for (table, count) in traces(&app, &[gone_id]).await {
        assert_eq!(count, 0, "{table} still holds a trace");
    }

    // Neither or both targets, too many ids, a malformed one.
    for (request, field) in [
        (pb::PurgeNotesRequest::default(), "subject"),
        (
            pb::PurgeNotesRequest {
                subject: subject("lead", "lead_1"),
                note_ids: vec![stays.id.clone()],
            },
            "note_ids",
        ),
        (
            pb::PurgeNotesRequest {
                subject: None,
                note_ids: vec![stays.id.clone(); 1001],
            },
            "note_ids",
        ),
        (
            pb::PurgeNotesRequest {
                subject: None,
                note_ids: vec!["nope".to_owned()],
            },
            "note_ids[0]",
        ),
    ] {
        let status = purge(&mut admin, request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), [field]);
    }
}
