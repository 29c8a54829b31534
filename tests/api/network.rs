//! IP allowlists: a key with networks is accepted only from them, judged by
//! the connection's peer, or behind a trusted proxy by `x-forwarded-for`.

use notesd::proto::notes::v1 as pb;
use tonic::Code;

use crate::helpers::*;

/// ListNotes with `key` over a connection from `source`, with `extra`
/// metadata.
async fn call_from(
    app: &TestApp,
    source: &str,
    key: &str,
    extra: &[(&'static str, &str)],
) -> Result<pb::ListNotesResponse, tonic::Status> {
    let mut metadata = vec![("x-api-key", key.to_owned())];
    metadata.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let mut client = app.client_from(source, metadata).await;
    list(&mut client, Default::default()).await
}

#[track_caller]
fn assert_accepted(result: Result<pb::ListNotesResponse, tonic::Status>, what: &str) {
    if let Err(status) = result {
        panic!("{what}: expected the call to be accepted, got {status:?}");
    }
}

#[track_caller]
fn assert_not_whitelisted(result: Result<pb::ListNotesResponse, tonic::Status>) {
    assert_status(result, Code::PermissionDenied, "IP_NOT_WHITELISTED");
}

async fn key_allowed_from(app: &TestApp, member: &str, cidrs: &[&str]) -> String {
    app.issue_key("acme", key_spec(member_kind(member), cidrs))
        .await
        .1
}

#[tokio::test(flavor = "multi_thread")]
async fn key_allowed_127_0_0_1_works_from_there_only() {
    let app = spawn_app().await;
    let key = key_allowed_from(&app, "alice", &["127.0.0.1/32"]).await;

    assert_accepted(
        call_from(&app, "127.0.0.1", &key, &[]).await,
        "from 127.0.0.1",
    );
    assert_not_whitelisted(call_from(&app, "127.0.0.2", &key, &[]).await);

    // A refused call writes nothing.
    let mut elsewhere = app
        .client_from("127.0.0.2", vec![("x-api-key", key.clone())])
        .await;
    assert_status(
        try_add(&mut elsewhere, text_note("customer", "c-1", "x")).await,
        Code::PermissionDenied,
        "IP_NOT_WHITELISTED",
    );
    let notes: i64 = sqlx::query_scalar("select count(*) from notes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(notes, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_allowed_127_0_0_2_works_from_there_only() {
    let app = spawn_app().await;
    let key = key_allowed_from(&app, "alice", &["127.0.0.2/32"]).await;

    assert_accepted(
        call_from(&app, "127.0.0.2", &key, &[]).await,
        "from 127.0.0.2",
    );
    assert_not_whitelisted(call_from(&app, "127.0.0.1", &key, &[]).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_with_several_networks_works_from_each() {
    let app = spawn_app().await;
    let key = key_allowed_from(&app, "alice", &["10.0.0.0/8", "127.0.0.2/32"]).await;

    assert_accepted(
        call_from(&app, "127.0.0.2", &key, &[]).await,
        "from 127.0.0.2",
    );
    assert_not_whitelisted(call_from(&app, "127.0.0.1", &key, &[]).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_without_an_allowlist_works_from_anywhere() {
    let app = spawn_app().await;
    let key = key_allowed_from(&app, "alice", &[]).await;

    assert_accepted(
        call_from(&app, "127.0.0.1", &key, &[]).await,
        "from 127.0.0.1",
    );
    assert_accepted(
        call_from(&app, "127.0.0.2", &key, &[]).await,
        "from 127.0.0.2",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn allowlist_is_checked_only_for_a_valid_key() {
    let app = spawn_app().await;
    let (id, key) = app
        .issue_key("acme", key_spec(member_kind("alice"), &["127.0.0.1/32"]))
        .await;
    sqlx::query("update api_keys set revoked_at = now() where id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    // A revoked key is invalid wherever it comes from: the allowlist does
    // not reveal that the key exists.
    assert_status(
        call_from(&app, "127.0.0.2", &key, &[]).await,
        Code::Unauthenticated,
        "INVALID_API_KEY",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_the_forwarded_address_is_judged() {
    let app = spawn_app_with(|settings| {
        settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let documentation_net = key_allowed_from(&app, "alice", &["203.0.113.0/24"]).await;
    let loopback = key_allowed_from(&app, "bob", &["127.0.0.1/32"]).await;
    let forwarded = [("x-forwarded-for", "203.0.113.9")];

    assert_accepted(
        call_from(&app, "127.0.0.1", &documentation_net, &forwarded).await,
        "a 203.0.113.0/24 key forwarded for 203.0.113.9",
    );
    assert_not_whitelisted(call_from(&app, "127.0.0.1", &loopback, &forwarded).await);

    // Without the header the proxy's own address is the caller's.
    assert_accepted(
        call_from(&app, "127.0.0.1", &loopback, &[]).await,
        "a 127.0.0.1/32 key from the proxy itself",
    );
    assert_not_whitelisted(call_from(&app, "127.0.0.1", &documentation_net, &[]).await);

    // The header is believed only from the trusted proxy: 127.0.0.2 is not.
    assert_not_whitelisted(call_from(&app, "127.0.0.2", &documentation_net, &forwarded).await);

    // The client is the last hop that is not a trusted proxy: earlier
    // entries are the client's to forge.
    assert_accepted(
        call_from(
            &app,
            "127.0.0.1",
            &documentation_net,
            &[("x-forwarded-for", "198.51.100.1, 203.0.113.9")],
        )
        .await,
        "the last hop is 203.0.113.9",
    );
    assert_not_whitelisted(
        call_from(
            &app,
            "127.0.0.1",
            &documentation_net,
            &[("x-forwarded-for", "203.0.113.9, 198.51.100.1")],
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let app = spawn_app().await;
    let documentation_net = key_allowed_from(&app, "alice", &["203.0.113.0/24"]).await;
    let loopback = key_allowed_from(&app, "bob", &["127.0.0.1/32"]).await;
    let forwarded = [("x-forwarded-for", "203.0.113.9")];

    assert_accepted(
        call_from(&app, "127.0.0.1", &loopback, &forwarded).await,
        "a 127.0.0.1/32 key from 127.0.0.1 despite the header",
    );
    assert_not_whitelisted(call_from(&app, "127.0.0.1", &documentation_net, &forwarded).await);
}
