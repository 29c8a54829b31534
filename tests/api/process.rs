//! notesd as an operator runs it: a process started from the command line,
//! stopped with SIGTERM.

use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_cleanly_and_logs_hold_no_keys_or_bodies() {
    // The harness app only provides a fresh database; the process under
    // test serves it on a port of its own.
    let app = spawn_app().await;
    let (process, channel) = NotesdProcess::start(
        &app,
        &["--shutdown-grace-secs", "10"],
        "debug,h2=info,hyper=info,tower=info",
    )
    .await;
    let mut server = process.child;
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "notes.v1.NotesService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    let key = app.member_key("acme", "alice").await;
    let secret_body = "the-body-text-that-must-never-be-logged";
    let mut client =
        notesd::proto::notes::v1::notes_service_client::NotesServiceClient::with_interceptor(
            channel,
            Metadata(vec![("x-api-key", key.clone())]),
        );
    let note = add(&mut client, text_note("customer", "1", secret_body)).await;
    assert_eq!(body_text(&note), secret_body);

    let status = sigterm(&mut server, Duration::from_secs(30)).await;
    assert!(status.success(), "notesd exited with {status}");

    let mut logs = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(logs.contains("serving gRPC"), "{logs}");
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
    assert!(!logs.contains(secret_body), "a note body was logged");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escape codes in logs written to a pipe"
    );
    assert!(!logs.contains(&key), "an API key was logged");
    // A key reads `nk_<id>_<secret>`, the id in 32 hex digits; the secret
    // is base64url and may itself hold `_`, so it is cut by position.
    let secret_part = &key["nk_".len() + 33..];
    assert!(!logs.contains(secret_part), "a key secret was logged");
}
