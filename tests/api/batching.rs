//! Group commit: concurrent adds share transactions, and each keeps its own
//! outcome. Most tests hold batches open (a long linger, one writer) so
//! that the calls they make at once are written in one batch, and read
//! `/metrics` to know how many batches there were.

use std::time::Duration;

use futures::future::join_all;
use notesd::BatchSettings;
use notesd::proto::notes::v1 as pb;
use tonic::Code;

use crate::helpers::*;

/// A server whose batches wait 300 ms for company, written one at a time:
/// calls made together land in one batch.
async fn spawn_batching_app() -> TestApp {
    spawn_app_with(|settings| {
        settings.batching = BatchSettings {
            max_rows: 1000,
            linger: Duration::from_millis(300),
            writers: 1,
        };
    })
    .await
}

/// The value of an unlabelled metric, from `/metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = reqwest::get(app.http_url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Runs the calls concurrently, in order of the results.
async fn all<F, T>(calls: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    join_all(calls.into_iter().map(tokio::spawn))
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect()
}

fn sourced_note(text: &str, system: &str, id: &str) -> pb::Note {
    pb::Note {
        source: Some(pb::Source {
            system: system.to_owned(),
            id: id.to_owned(),
        }),
        ..text_note("customer", "c-1", text)
    }
}

async fn stored_count(app: &TestApp, tenant: &str) -> i64 {
    sqlx::query_scalar("select count(*) from notes where tenant_id = $1")
        .bind(tenant)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_share_transactions_and_every_one_is_stored() {
    // The default settings: no linger, batches form while writers are busy.
    let app = spawn_app().await;
    let alice = app.member("acme", "alice").await;
    let added = add_many(&alice, 300, 100, |i| {
        text_note("customer", &format!("c-{}", i % 7), &format!("note {i}"))
    })
    .await;
    assert_eq!(added.len(), 300);

    let mut ids: Vec<String> = added.iter().map(|n| n.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300, "300 distinct notes");
    assert_eq!(stored_count(&app, "acme").await, 300);
    let revisions: i64 =
        sqlx::query_scalar("select count(*) from note_revisions where tenant_id = 'acme'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let events: i64 =
        sqlx::query_scalar("select count(*) from note_events where tenant_id = 'acme'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (revisions, events),
        (300, 300),
        "a revision and an event each"
    );

    let transactions = metric(&app, "notesd_add_batch_rows_count").await;
    assert_eq!(metric(&app, "notesd_add_batch_rows_sum").await, 300.0);
    assert!(
        transactions < 300.0,
        "100 calls in flight share transactions; got {transactions} for 300 adds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_add_is_written_at_once_by_default() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "alone")).await;
    assert_eq!(get(&mut alice, &note.id).await.unwrap().id, note.id);
    assert_eq!(metric(&app, "notesd_add_batch_rows_count").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_adds_do_not_fail_their_batch() {
    let app = spawn_batching_app().await;
    let alice = app.member("acme", "alice").await;
    let bob = app.member("acme", "bob").await;
    let mut alice_subjects = app.subjects(&app.member_key("acme", "alice").await).await;
    register_subject(
        &mut alice_subjects,
        registration("customer", "c-owned", "", true),
    )
    .await
    .unwrap();

    let mut calls = Vec::new();
    for i in 0..10 {
        let mut client = alice.clone();
        calls.push(tokio::spawn(async move {
            (
                "good",
                try_add(
                    &mut client,
                    text_note("customer", "c-1", &format!("good {i}")),
                )
                .await,
            )
        }));
    }
    for i in 0..4 {
        let mut client = alice.clone();
        calls.push(tokio::spawn(async move {
            (
                "same source",
                try_add(
                    &mut client,
                    sourced_note(&format!("dup {i}"), "close", "acti_1"),
                )
                .await,
            )
        }));
    }
    for i in 0..3 {
        let mut client = bob.clone();
        calls.push(tokio::spawn(async move {
            (
                "not owner",
                try_add(
                    &mut client,
                    text_note("customer", "c-owned", &format!("bob {i}")),
                )
                .await,
            )
        }));
    }
    let results: Vec<(&str, Result<pb::Note, tonic::Status>)> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();

    let outcomes = |kind: &str| {
        results
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, r)| r)
            .collect::<Vec<_>>()
    };
    assert!(outcomes("good").iter().all(|r| r.is_ok()), "{results:?}");
    let same_source = outcomes("same source");
    assert_eq!(same_source.iter().filter(|r| r.is_ok()).count(), 1);
    for refused in same_source.iter().filter(|r| r.is_err()) {
        assert_status(
            (*refused).clone(),
            Code::AlreadyExists,
            "SOURCE_ALREADY_EXISTS",
        );
    }
    for refused in outcomes("not owner") {
        assert_status(refused.clone(), Code::PermissionDenied, "NOT_OWNER");
    }
    assert_eq!(stored_count(&app, "acme").await, 11);
    assert_eq!(
        metric(&app, "notesd_add_batch_rows_count").await,
        1.0,
        "the 17 calls were written in one transaction"
    );
    assert_eq!(metric(&app, "notesd_add_batch_splits_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids_stay_exact_within_a_batch() {
    let app = spawn_batching_app().await;
    let alice = app.member("acme", "alice").await;
    let retried = uuid::Uuid::now_v7().to_string();
    let contested = uuid::Uuid::now_v7().to_string();

    // Five retries of one request, and five different requests sharing
    // another request id, all in one batch.
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let mut client = alice.clone();
            let (request_id, text) = if i < 5 {
                (retried.clone(), "retried".to_owned())
            } else {
                (contested.clone(), format!("v{i}"))
            };
            async move {
                add_with_request_id(
                    &mut client,
                    &request_id,
                    text_note("customer", "c-1", &text),
                )
                .await
            }
        })
        .collect();
    let results = all(calls).await;

    let retried_ids: Vec<&str> = results[..5]
        .iter()
        .map(|r| r.as_ref().expect("a retry succeeds").id.as_str())
        .collect();
    assert!(
        retried_ids.iter().all(|id| *id == retried_ids[0]),
        "{retried_ids:?}"
    );

    let contested = &results[5..];
    assert_eq!(
        contested.iter().filter(|r| r.is_ok()).count(),
        1,
        "{contested:?}"
    );
    for refused in contested.iter().filter(|r| r.is_err()) {
        assert_status(refused.clone(), Code::AlreadyExists, "REQUEST_ID_CONFLICT");
    }
    assert_eq!(stored_count(&app, "acme").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_add_gives_its_request_id_back() {
    let app = spawn_batching_app().await;
    let mut bob = app.member("acme", "bob").await;
    let mut alice_subjects = app.subjects(&app.member_key("acme", "alice").await).await;
    register_subject(
        &mut alice_subjects,
        registration("customer", "c-owned", "", true),
    )
    .await
    .unwrap();
    let request_id = uuid::Uuid::now_v7().to_string();
    let note = text_note("customer", "c-owned", "from bob");

    assert_status(
        add_with_request_id(&mut bob, &request_id, note.clone()).await,
        Code::PermissionDenied,
        "NOT_OWNER",
    );
    register_subject(
        &mut alice_subjects,
        registration("customer", "c-owned", "", false),
    )
    .await
    .unwrap();
    let created = add_with_request_id(&mut bob, &request_id, note)
        .await
        .expect("the same request, now allowed, creates the note");
    assert_eq!(body_text(&created), "from bob");
    assert_eq!(stored_count(&app, "acme").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adds_of_several_tenants_in_one_batch_stay_in_their_tenants() {
    let app = spawn_batching_app().await;
    let acme = app.member("acme", "alice").await;
    let globex = app.member("globex", "alice").await;

    let calls: Vec<_> = (0..20)
        .map(|i| {
            let (mut client, tenant) = if i % 2 == 0 {
                (acme.clone(), "acme")
            } else {
                (globex.clone(), "globex")
            };
            async move {
                let note = add(&mut client, text_note("customer", "c-1", tenant)).await;
                (tenant, note)
            }
        })
        .collect();
    let added = all(calls).await;

    for (tenant, mut client) in [("acme", acme), ("globex", globex)] {
        let mut expected: Vec<String> = added
            .iter()
            .filter(|(t, _)| *t == tenant)
            .map(|(_, n)| n.id.clone())
            .collect();
        expected.sort();
        let mut listed = listed_ids(&mut client, Default::default()).await;
        listed.sort();
        assert_eq!(listed, expected, "{tenant} sees its ten notes only");
        let texts: Vec<String> =
            sqlx::query_scalar("select body_text from notes where tenant_id = $1")
                .bind(tenant)
                .fetch_all(&app.pool)
                .await
                .unwrap();
        assert_eq!(texts.len(), 10);
        assert!(texts.iter().all(|t| t == tenant), "{tenant}: {texts:?}");
    }
    assert_eq!(
        metric(&app, "notesd_add_batch_rows_count").await,
        2.0,
        "one batch: a transaction per tenant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_fails_as_a_whole_is_written_one_add_at_a_time() {
    let app = spawn_batching_app().await;
    // A fault the service cannot foresee: the database itself refuses one
    // note. The trigger stands in for any error that fails a whole
    // statement.
    sqlx::raw_sql(
        "create function refuse_poison() returns trigger language plpgsql as $$
         begin
             if new.body_text = 'poison' then
                 raise exception 'poisoned note';
             end if;
             return new;
         end $$;
         create trigger refuse_poison before insert on notes
             for each row execute function refuse_poison();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let alice = app.member("acme", "alice").await;

    let calls: Vec<_> = ["one", "poison", "two", "three"]
        .into_iter()
        .map(|text| {
            let mut client = alice.clone();
            async move { try_add(&mut client, text_note("customer", "c-1", text)).await }
        })
        .collect();
    let results = all(calls).await;

    assert_eq!(results[1].as_ref().unwrap_err().code(), Code::Internal);
    for (i, result) in results.iter().enumerate().filter(|(i, _)| *i != 1) {
        assert!(result.is_ok(), "add {i} is written: {result:?}");
    }
    assert_eq!(stored_count(&app, "acme").await, 3);
    assert_eq!(metric(&app, "notesd_add_batch_splits_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_share_queries_and_each_gets_its_own_answer() {
    let app = spawn_app().await;
    let acme = app.member("acme", "alice").await;
    let globex = app.member("globex", "gina").await;
    let acme_notes = add_many(&acme, 30, 10, |i| {
        text_note("customer", "c-1", &format!("acme {i}"))
    })
    .await;
    let globex_notes = add_many(&globex, 30, 10, |i| {
        text_note("customer", "c-1", &format!("globex {i}"))
    })
    .await;
    let reads_before = metric(&app, "notesd_get_batch_notes_sum").await;

    // 400 reads at once, over both tenants: each reads one of its tenant's
    // notes (every note several times), one of the other tenant's, or one
    // that does not exist.
    let calls: Vec<_> = (0..400usize)
        .map(|i| {
            let (mut client, own, other) = if i % 2 == 0 {
                (acme.clone(), &acme_notes, &globex_notes)
            } else {
                (globex.clone(), &globex_notes, &acme_notes)
            };
            let (id, expected) = match i % 5 {
                3 => (other[i % 30].id.clone(), None),
                4 => (format!("01a1fd5f-5345-749c-adb9-{i:012}"), None),
                _ => {
                    let note = &own[i % 30];
                    (note.id.clone(), Some(note.body.clone()))
                }
            };
            async move { (id.clone(), expected, get(&mut client, &id).await) }
        })
        .collect();
    for (id, expected, got) in all(calls).await {
        match (expected, got) {
            (Some(body), Ok(note)) => {
                assert_eq!(note.id, id);
                assert_eq!(note.body, body, "note {id} read with its own body");
            }
            (None, Err(status)) => assert_eq!(status.code(), Code::NotFound, "{id}: {status:?}"),
            (expected, got) => panic!("{id}: expected {expected:?}, got {got:?}"),
        }
    }

    let reads = metric(&app, "notesd_get_batch_notes_sum").await - reads_before;
    assert_eq!(reads, 400.0, "every GetNote went through the read batcher");
    let queries = metric(&app, "notesd_get_batch_notes_count").await;
    assert!(
        queries < 400.0,
        "400 reads at once share queries; got {queries} queries"
    );
}
