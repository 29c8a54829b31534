//! The HTTP operations endpoints: Prometheus metrics, liveness, readiness.

use tonic::Code;

use crate::helpers::*;

async fn http_get(app: &TestApp, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", app.http_addr))
        .await
        .expect("the HTTP port answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a text body"))
}

/// The value of the sample whose line starts with `series` (name and
/// labels exactly as exposed).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_grpc_calls_by_method_and_code() {
    let app = spawn_app().await;
    let mut alice = app.member("acme-metrics-tenant", "alice").await;
    add(&mut alice, text_note("customer", "1", "one")).await;
    add(&mut alice, text_note("customer", "1", "two")).await;
    let missing = get(&mut alice, &uuid::Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let (status, metrics) = http_get(&app, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &metrics,
            r#"notesd_grpc_requests_total{method="notes.v1.NotesService/AddNote",code="Ok"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"notesd_grpc_requests_total{method="notes.v1.NotesService/GetNote",code="NotFound"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"notesd_grpc_request_duration_seconds_count{method="notes.v1.NotesService/AddNote"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, r#"notesd_db_pool_connections{state="open"}"#).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    // Labels name methods and codes only: no tenant, member or key.
    assert!(!metrics.contains("acme-metrics-tenant"));
    assert!(!metrics.contains("alice"));
}

#[tokio::test]
async fn unknown_grpc_paths_do_not_grow_the_label_set() {
    let app = spawn_app().await;
    let channel = app.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/made.up.Service/Anything");
    let unknown = grpc
        .unary::<(), (), _>(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unimplemented);

    let (_, metrics) = http_get(&app, "/metrics").await;
    assert!(!metrics.contains("made.up.Service"), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            r#"notesd_grpc_requests_total{method="other",code="Unimplemented"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn healthz_and_readyz_answer_while_serving() {
    let app = spawn_app().await;
    assert_eq!(http_get(&app, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(http_get(&app, "/readyz").await, (200, "ready\n".to_owned()));
}

#[tokio::test]
async fn readyz_reports_a_database_that_does_not_answer() {
    let app = spawn_app().await;
    // Keep new sessions out of the test database and end the server's.
    let admin = sqlx::PgPool::connect(&server_url()).await.unwrap();
    sqlx::query(&format!(
        "alter database \"{}\" with allow_connections false",
        app.database_name
    ))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(&app.database_name)
        .execute(&admin)
        .await
        .unwrap();

    let (status, body) = http_get(&app, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "database unavailable\n"));
    assert_eq!(http_get(&app, "/healthz").await.0, 200);
}

#[tokio::test]
async fn http_requests_are_counted_by_route_template_never_by_path() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    // A facade call without a key, one naming a note, and 50 made-up paths.
    let refused = http
        .post(app.http_url("/api/v1/activity/note/"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let named = http
        .get(app.http_url("/api/v1/activity/note/acti_secretish/"))
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 401);
    for i in 0..50 {
        let unknown = http
            .get(app.http_url(&format!("/made/up/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
    }

    let (_, metrics) = http_get(&app, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            r#"notesd_http_requests_total{route="/api/v1/activity/note/",status="401"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"notesd_http_requests_total{route="/api/v1/activity/note/{id}/",status="401"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"notesd_http_requests_total{route="other",status="404"}"#
        ),
        Some(50.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            r#"notesd_http_request_duration_seconds_count{route="other"}"#
        )
        .is_some_and(|n| n >= 50.0),
        "{metrics}"
    );
    assert!(!metrics.contains("made/up"), "{metrics}");
    assert!(!metrics.contains("secretish"), "{metrics}");
}
