//! The `notesd` command line, run as a process against the test database.

use std::process::{Command, Output};

use tonic::Code;

use crate::helpers::*;

/// Runs the built `notesd` with `args` and `DATABASE_URL` set to the test
/// database.
pub async fn run_notesd(app: &TestApp, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let url = app.database_url.clone();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_notesd"))
            .args(&args)
            .env("DATABASE_URL", url)
            .output()
            .expect("notesd runs")
    })
    .await
    .expect("the blocking task")
}

/// [`run_notesd`], asserting it succeeded.
async fn notesd(app: &TestApp, args: &[&str]) -> Output {
    let output = run_notesd(app, args).await;
    assert!(
        output.status.success(),
        "notesd failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The key `notesd keys create` printed: the last line of its stdout.
fn printed_key(output: &Output) -> String {
    let stdout = String::from_utf8(output.stdout.clone()).expect("utf-8 stdout");
    stdout
        .lines()
        .last()
        .expect("notesd printed the key")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_create_prints_a_member_key_that_authenticates() {
    let app = spawn_app().await;
    let output = notesd(
        &app,
        &["keys", "create", "--tenant", "acme", "--member", "dora"],
    )
    .await;
    let key = printed_key(&output);

    let mut dora = app.client(&key).await;
    let note = add(&mut dora, text_note("customer", "c-1", "via a CLI key")).await;
    assert_eq!(note.owner_id, "dora");
    assert_eq!(note.creator_id, "dora");

    // The key belongs to its tenant: acme sees the note, globex does not.
    let mut acme = app.member("acme", "erin").await;
    assert_eq!(get(&mut acme, &note.id).await.unwrap(), note);
    let mut globex = app.member("globex", "dora").await;
    assert_fails(get(&mut globex, &note.id).await, NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_create_without_member_prints_a_service_key() {
    let app = spawn_app().await;
    let key = printed_key(&notesd(&app, &["keys", "create", "--tenant", "acme"]).await);

    let mut without_actor = app.client(&key).await;
    assert_status(
        try_add(&mut without_actor, text_note("customer", "c-1", "x")).await,
        Code::Unauthenticated,
        "MISSING_ACTOR",
    );
    let mut as_frank = app
        .client_with(vec![("x-api-key", key), ("x-actor-id", "frank".to_owned())])
        .await;
    let note = add(&mut as_frank, text_note("customer", "c-1", "x")).await;
    assert_eq!(note.owner_id, "frank");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_revoke_makes_the_key_invalid() {
    let app = spawn_app().await;
    let key = printed_key(
        &notesd(
            &app,
            &["keys", "create", "--tenant", "acme", "--member", "gus"],
        )
        .await,
    );
    let mut gus = app.client(&key).await;
    add(&mut gus, text_note("customer", "c-1", "x")).await;

    // A key reads `nk_<id>_<secret>`, the id in 32 hex digits.
    let id = uuid::Uuid::try_parse(&key[3..35])
        .expect("the key's id")
        .to_string();
    notesd(&app, &["keys", "revoke", &id]).await;

    // The server hears of the revocation by NOTIFY, which arrives a moment
    // after the CLI's commit; under a loaded test run that moment can
    // outlast the next call, so the first refusal is awaited.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        let result = try_add(&mut gus, text_note("customer", "c-1", "x")).await;
        if result.is_err() || tokio::time::Instant::now() >= deadline {
            break result;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_status(refused, Code::Unauthenticated, "INVALID_API_KEY");
}
