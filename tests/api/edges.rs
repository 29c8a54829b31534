//! The edges under attack and under failure: what notesd does before it
//! knows who calls, what grows with input, and what a caller sees when the
//! database goes away.

use std::collections::HashSet;
use std::time::Duration;

use notesd::proto::notes::v1 as pb;
use notesd::proto::notes::v1::notes_service_client::NotesServiceClient;
use tonic::Code;

use crate::helpers::*;

/// An AddNote request of about `bytes` bytes.
fn huge_add(bytes: usize) -> pb::AddNoteRequest {
    pb::AddNoteRequest {
        note: Some(text_note("customer", "1", &"x".repeat(bytes))),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_huge_calls_are_refused_without_reading_their_bodies() {
    let app = spawn_app().await;
    let (process, channel) = NotesdProcess::start(&app, &[], "warn").await;
    let before = process.peak_rss_kib();

    // 16 concurrent 30 MiB AddNotes without a key, each on its own
    // connection.
    let calls = (0..16).map(|_| {
        let addr = process.grpc_addr.clone();
        tokio::spawn(async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            NotesServiceClient::new(channel)
                .max_encoding_message_size(64 * 1024 * 1024)
                .add_note(huge_add(30 * 1024 * 1024))
                .await
        })
    });
    for call in futures::future::join_all(calls).await {
        let status = call.unwrap().expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(reason(&status), "MISSING_API_KEY");
    }
    let peak = process.peak_rss_kib();
    eprintln!("peak RSS: {before} KiB before the calls, {peak} KiB after");
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB (before the calls: {before} KiB): bodies were read"
    );

    // The server still serves a caller it knows.
    let key = app.member_key("acme", "alice").await;
    let mut alice =
        NotesServiceClient::with_interceptor(channel, Metadata(vec![("x-api-key", key)]));
    add(&mut alice, text_note("customer", "1", "still serving")).await;
}

#[tokio::test]
async fn calls_to_made_up_methods_add_no_metric_series() {
    let app = spawn_app().await;
    let channel = app.channel().await;
    let call = |service: String, method: String| {
        let channel = channel.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let path: http::uri::PathAndQuery =
                format!("/notes.v1.{service}/{method}").parse().unwrap();
            grpc.unary::<(), (), _>(
                tonic::Request::new(()),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err()
        }
    };
    let first = call("Junk0".to_owned(), "Method0".to_owned()).await;
    assert_eq!(first.code(), Code::Unauthenticated);
    let series = |metrics: &str| -> HashSet<String> {
        metrics
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                l.rsplit_once(' ')
                    .map_or(l, |(series, _)| series)
                    .to_owned()
            })
            .collect()
    };
    let metrics = |app: &TestApp| {
        let url = app.http_url("/metrics");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    // A scrape is itself counted once it is answered: the first one adds
    // the series of `/metrics`, which the second shows.
    metrics(&app).await;
    let before = series(&metrics(&app).await);

    for i in 1..=200 {
        let status = call(format!("Junk{i}"), format!("Method{i}")).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }

    let text = metrics(&app).await;
    let after = series(&text);
    assert_eq!(
        after.difference(&before).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "new series"
    );
    assert!(!text.contains("Junk"), "{text}");
    assert!(
        text.contains(r#"notesd_grpc_requests_total{method="other",code="Unauthenticated"} 201"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_message_over_the_limit_is_resource_exhausted_with_its_reason() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let status = alice
        .add_note(huge_add(33 * 1024 * 1024))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "MESSAGE_TOO_LARGE");
    assert_eq!(error_domain(&status), "notesd.dev");
}

#[tokio::test]
async fn calls_beyond_the_in_flight_budget_are_shed_at_once() {
    let app = spawn_app_with(|settings| settings.limits.max_in_flight = 0).await;
    let key = app.member_key("acme", "alice").await;
    let mut alice = app.client(&key).await;
    let status = try_add(&mut alice, text_note("customer", "1", "shed"))
        .await
        .expect_err("shed");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "OVERLOADED");
    let stored: i64 = sqlx::query_scalar("select count(*) from notes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "a shed call writes nothing");

    // Health answers whatever the load: probes are outside the budget.
    let health = tonic_health::pb::health_client::HealthClient::new(app.channel().await)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "notes.v1.NotesService".to_owned(),
        })
        .await
        .expect("health is not shed")
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_under_load_is_unavailable_and_loses_no_acknowledged_note() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    let key = app.member_key("acme", "alice").await;
    let client = app.client(&key).await;

    // 8 writers add notes in a loop while the database goes away for a
    // while and comes back.
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut client = client.clone();
            let running = running.clone();
            tokio::spawn(async move {
                let (mut acknowledged, mut codes) = (Vec::new(), Vec::new());
                let mut i = 0;
                while running.load(std::sync::atomic::Ordering::SeqCst) && i < 10_000 {
                    i += 1;
                    let note = text_note("customer", &format!("w{w}"), &format!("note {i}"));
                    match try_add(&mut client, note).await {
                        Ok(note) => acknowledged.push(note.id),
                        Err(status) => codes.push((status.code(), reason(&status))),
                    }
                }
                (acknowledged, codes)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);

    let mut acknowledged = Vec::new();
    let mut failures = Vec::new();
    for writer in writers {
        let (ids, codes) = writer.await.unwrap();
        acknowledged.extend(ids);
        failures.extend(codes);
    }
    assert!(!failures.is_empty(), "the outage failed some calls");
    for (code, reason) in &failures {
        assert_eq!(
            (*code, reason.as_str()),
            (Code::Unavailable, "DATABASE_UNAVAILABLE"),
            "every failure during the outage is UNAVAILABLE"
        );
    }

    // Once it is back, calls succeed, and every acknowledged note is there.
    let mut alice = client.clone();
    let after = add(&mut alice, text_note("customer", "after", "back")).await;
    acknowledged.push(after.id);
    let ids: Vec<uuid::Uuid> = acknowledged.iter().map(|id| id.parse().unwrap()).collect();
    let stored: i64 = sqlx::query_scalar("select count(*) from notes where id = any($1)")
        .bind(&ids)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored as usize, ids.len(), "an acknowledged note was lost");
}
