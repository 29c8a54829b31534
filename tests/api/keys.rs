//! API key life cycle: revocation, expiry, rotation (with and without a
//! grace period), listing, last use, and admin keys from the CLI.

use std::process::Output;

use chrono::{DateTime, Utc};
use notesd::proto::notes::v1 as pb;
use notesd::{KeyKind, KeySpec};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// Runs `notesd` and asserts it succeeded.
async fn notesd_ok(app: &TestApp, args: &[&str]) -> Output {
    let output = app.run_notesd(args).await;
    assert!(
        output.status.success(),
        "notesd {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `notesd` and asserts it failed.
async fn notesd_fails(app: &TestApp, args: &[&str]) -> Output {
    let output = app.run_notesd(args).await;
    assert!(
        !output.status.success(),
        "notesd {args:?} should fail, but printed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

/// The key printed by `keys create` or `keys rotate`: the last line.
fn printed_key(output: &Output) -> String {
    stdout(output)
        .lines()
        .last()
        .expect("notesd printed the key")
        .trim()
        .to_owned()
}

/// The id a key carries: `nk_<32 hex digits>_<secret>`.
fn key_id(key: &str) -> Uuid {
    Uuid::try_parse(&key[3..35]).expect("the key's id")
}

/// A call that needs a valid key and nothing else.
async fn call(app: &TestApp, key: &str) -> Result<pb::ListNotesResponse, tonic::Status> {
    let mut client = app.client(key).await;
    list(&mut client, Default::default()).await
}

#[track_caller]
fn assert_key_works(result: Result<pb::ListNotesResponse, tonic::Status>, what: &str) {
    if let Err(status) = result {
        panic!("{what} should work, got {status:?}");
    }
}

#[track_caller]
fn assert_key_refused(result: Result<pb::ListNotesResponse, tonic::Status>) {
    assert_status(result, Code::Unauthenticated, "INVALID_API_KEY");
}

#[derive(Debug, sqlx::FromRow)]
struct KeyRow {
    tenant_id: String,
    kind: String,
    member_id: Option<String>,
    allowed_cidrs: Vec<ipnet::IpNet>,
    label: String,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

async fn key_row(app: &TestApp, id: Uuid) -> KeyRow {
    sqlx::query_as(
        "select tenant_id, kind, member_id, allowed_cidrs, label, expires_at, revoked_at,
                last_used_at
         from api_keys where id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("the key's row")
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_key_is_refused_at_once() {
    let app = spawn_app().await;
    let (id, key) = app
        .issue_key("acme", key_spec(member_kind("alice"), &[]))
        .await;
    // One connection throughout: revocation is not a matter of new
    // connections. The server caches the key after its first use; the
    // revocation must reach that cache.
    let mut alice = app.client(&key).await;
    list(&mut alice, Default::default())
        .await
        .expect("the key works before revocation");

    let output = notesd_ok(&app, &["keys", "revoke", &id.to_string()]).await;
    assert!(stdout(&output).contains(&id.to_string()));

    assert_key_refused(list(&mut alice, Default::default()).await);
    assert_status(
        try_add(&mut alice, text_note("customer", "c-1", "x")).await,
        Code::Unauthenticated,
        "INVALID_API_KEY",
    );
    assert!(key_row(&app, id).await.revoked_at.is_some());

    // Revoking a key that does not exist is an error.
    notesd_fails(&app, &["keys", "revoke", &Uuid::now_v7().to_string()]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_key_is_refused_and_unexpired_key_works() {
    let app = spawn_app().await;
    let (_, expired) = app
        .issue_key(
            "acme",
            KeySpec {
                expires_at: Some(Utc::now() - chrono::Duration::minutes(1)),
                ..key_spec(member_kind("alice"), &[])
            },
        )
        .await;
    let (_, unexpired) = app
        .issue_key(
            "acme",
            KeySpec {
                expires_at: Some(Utc::now() + chrono::Duration::days(1)),
                ..key_spec(member_kind("alice"), &[])
            },
        )
        .await;

    assert_key_refused(call(&app, &expired).await);
    assert_key_works(call(&app, &unexpired).await, "a key expiring tomorrow");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_create_with_expires_in_days_makes_a_working_key_that_expires() {
    let app = spawn_app().await;
    let key = printed_key(
        &notesd_ok(
            &app,
            &[
                "keys",
                "create",
                "--tenant",
                "acme",
                "--member",
                "alice",
                "--expires-in-days",
                "3",
            ],
        )
        .await,
    );
    assert_key_works(call(&app, &key).await, "a key expiring in 3 days");
    let expires_at = key_row(&app, key_id(&key))
        .await
        .expires_at
        .expect("the key has an expiry");
    assert!(expires_at > Utc::now() + chrono::Duration::days(2));
    assert!(expires_at <= Utc::now() + chrono::Duration::days(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_prints_a_new_key_and_the_old_one_stops_at_once() {
    let app = spawn_app().await;
    let (old_id, old_key) = app
        .issue_key("acme", key_spec(member_kind("alice"), &[]))
        .await;
    let mut old_client = app.client(&old_key).await;
    list(&mut old_client, Default::default())
        .await
        .expect("the old key works before rotation");

    let output = notesd_ok(&app, &["keys", "rotate", &old_id.to_string()]).await;
    let new_key = printed_key(&output);
    assert!(
        new_key.starts_with("nk_"),
        "the last line is the key: {new_key}"
    );
    assert_ne!(new_key, old_key);
    assert_ne!(key_id(&new_key), old_id);
    assert!(
        stdout(&output).contains(&key_id(&new_key).to_string()),
        "the new key's id is printed"
    );

    let mut new_client = app.client(&new_key).await;
    let note = add(
        &mut new_client,
        text_note("customer", "c-1", "after rotation"),
    )
    .await;
    assert_eq!(
        note.owner_id, "alice",
        "the new key acts as the same member"
    );
    assert_key_refused(list(&mut old_client, Default::default()).await);
    assert_key_refused(call(&app, &old_key).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_with_a_grace_period_keeps_both_keys_working() {
    let app = spawn_app().await;
    let (old_id, old_key) = app
        .issue_key("acme", key_spec(member_kind("alice"), &[]))
        .await;

    let new_key = printed_key(
        &notesd_ok(
            &app,
            &["keys", "rotate", &old_id.to_string(), "--grace-hours", "1"],
        )
        .await,
    );

    assert_key_works(call(&app, &old_key).await, "the old key during its grace");
    assert_key_works(call(&app, &new_key).await, "the new key");
    let old = key_row(&app, old_id).await;
    let expires_at = old.expires_at.expect("the old key now expires");
    assert!(expires_at > Utc::now(), "after the grace period");
    assert!(expires_at <= Utc::now() + chrono::Duration::hours(1));
    assert!(old.revoked_at.is_none());
    assert!(
        key_row(&app, key_id(&new_key)).await.expires_at.is_none(),
        "the new key keeps the old one's (absent) expiry"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_a_revoked_expired_or_unknown_key_fails() {
    let app = spawn_app().await;
    let (revoked, _) = app
        .issue_key("acme", key_spec(member_kind("alice"), &[]))
        .await;
    notesd_ok(&app, &["keys", "revoke", &revoked.to_string()]).await;
    let (expired, _) = app
        .issue_key(
            "acme",
            KeySpec {
                expires_at: Some(Utc::now() - chrono::Duration::minutes(1)),
                ..key_spec(member_kind("alice"), &[])
            },
        )
        .await;
    let unknown = Uuid::now_v7();

    let keys_before: i64 = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    for id in [revoked, expired, unknown] {
        let output = notesd_fails(&app, &["keys", "rotate", &id.to_string()]).await;
        assert!(
            !stdout(&output).contains("nk_"),
            "no key is printed for {id}"
        );
    }
    let keys_after: i64 = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys_after, keys_before, "no key was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_key_keeps_its_kind_member_and_networks() {
    let app = spawn_app().await;
    let mut bob = app.member("acme", "bob").await;
    let private = add(
        &mut bob,
        pb::Note {
            visibility: pb::Visibility::Private as i32,
            ..text_note("customer", "c-1", "bob's private note")
        },
    )
    .await;

    let (admin_id, _) = app
        .issue_key(
            "acme",
            KeySpec {
                label: "support tool".to_owned(),
                ..key_spec(admin_kind("root"), &["127.0.0.1/32", "10.0.0.0/8"])
            },
        )
        .await;
    let (service_id, _) = app.issue_key("acme", key_spec(KeyKind::Service, &[])).await;

    let admin_key = printed_key(&notesd_ok(&app, &["keys", "rotate", &admin_id.to_string()]).await);
    let service_key =
        printed_key(&notesd_ok(&app, &["keys", "rotate", &service_id.to_string()]).await);

    // As stored: the same tenant, kind, member, networks and label.
    let old = key_row(&app, admin_id).await;
    let new = key_row(&app, key_id(&admin_key)).await;
    assert_eq!(new.tenant_id, "acme");
    assert_eq!(new.kind, "admin");
    assert_eq!(new.member_id.as_deref(), Some("root"));
    assert_eq!(new.allowed_cidrs, old.allowed_cidrs);
    assert_eq!(new.allowed_cidrs.len(), 2);
    assert_eq!(new.label, "support tool");
    let new_service = key_row(&app, key_id(&service_key)).await;
    assert_eq!(new_service.kind, "service");
    assert_eq!(new_service.member_id, None);

    // In use: still an admin recorded as root, still only from its networks.
    let mut admin = app
        .client_from("127.0.0.1", vec![("x-api-key", admin_key.clone())])
        .await;
    assert_eq!(
        get(&mut admin, &private.id)
            .await
            .expect("an admin reads it")
            .id,
        private.id
    );
    let updated = update(
        &mut admin,
        pb::Note {
            title: "checked".to_owned(),
            ..patch(&private.id)
        },
        &["title"],
    )
    .await
    .expect("an admin changes it");
    assert_eq!(updated.updater_id, "root");
    let mut admin_elsewhere = app
        .client_from("127.0.0.2", vec![("x-api-key", admin_key)])
        .await;
    assert_status(
        get(&mut admin_elsewhere, &private.id).await,
        Code::PermissionDenied,
        "IP_NOT_WHITELISTED",
    );

    // Still a service key: it must name its member.
    let mut service = app.client(&service_key).await;
    assert_status(
        list(&mut service, Default::default()).await,
        Code::Unauthenticated,
        "MISSING_ACTOR",
    );
    let mut as_carol = app
        .client_with(vec![
            ("x-api-key", service_key),
            ("x-actor-id", "carol".to_owned()),
        ])
        .await;
    assert_eq!(
        add(&mut as_carol, text_note("customer", "c-1", "x"))
            .await
            .owner_id,
        "carol"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_list_shows_kind_member_and_networks_but_never_the_secret() {
    let app = spawn_app().await;
    let member_key = printed_key(
        &notesd_ok(
            &app,
            &[
                "keys",
                "create",
                "--tenant",
                "acme",
                "--member",
                "alice",
                "--allow-ip",
                "10.1.0.0/16",
                "--allow-ip",
                "192.0.2.7/32",
                "--label",
                "alices-laptop",
            ],
        )
        .await,
    );
    let admin_key = printed_key(
        &notesd_ok(
            &app,
            &[
                "keys", "create", "--tenant", "acme", "--member", "root", "--admin",
            ],
        )
        .await,
    );
    let service_key = printed_key(&notesd_ok(&app, &["keys", "create", "--tenant", "acme"]).await);
    let other_tenant_key = printed_key(
        &notesd_ok(
            &app,
            &["keys", "create", "--tenant", "globex", "--member", "gina"],
        )
        .await,
    );

    let listing = stdout(&notesd_ok(&app, &["keys", "list", "--tenant", "acme"]).await);
    let mut lines = listing.lines();
    let header: Vec<&str> = lines.next().expect("a header").split('\t').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("a {name} column in {header:?}"))
    };
    let (id_col, tenant_col, kind_col, member_col, ips_col, label_col) = (
        column("id"),
        column("tenant"),
        column("kind"),
        column("member"),
        column("allowed_ips"),
        column("label"),
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    let row = |key: &str| {
        let id = key_id(key).to_string();
        rows.iter()
            .find(|r| r[id_col] == id)
            .unwrap_or_else(|| panic!("a row for {id} in {listing}"))
    };

    let member = row(&member_key);
    assert_eq!(member[tenant_col], "acme");
    assert_eq!(member[kind_col], "member");
    assert_eq!(member[member_col], "alice");
    assert_eq!(member[ips_col], "10.1.0.0/16,192.0.2.7/32");
    assert_eq!(member[label_col], "alices-laptop");
    let admin = row(&admin_key);
    assert_eq!(admin[kind_col], "admin");
    assert_eq!(admin[member_col], "root");
    assert_eq!(admin[ips_col], "any");
    let service = row(&service_key);
    assert_eq!(service[kind_col], "service");
    assert_eq!(service[member_col], "-");
    assert_eq!(rows.len(), 3, "only acme's keys with --tenant acme");

    let everything = stdout(&notesd_ok(&app, &["keys", "list"]).await);
    assert!(everything.contains(&key_id(&other_tenant_key).to_string()));
    for key in [&member_key, &admin_key, &service_key, &other_tenant_key] {
        // `nk_`, 32 hex digits of id, `_`, then the secret, which is
        // base64url and may itself hold `_`.
        let secret = key.get("nk_".len() + 33..).expect("nk_<id>_<secret>");
        for shown in [&listing, &everything] {
            assert!(!shown.contains(secret), "a key's secret is listed");
            assert!(!shown.contains(key.as_str()), "a whole key is listed");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn last_use_is_recorded_after_a_call() {
    let app = spawn_app().await;
    let (used, key) = app
        .issue_key("acme", key_spec(member_kind("alice"), &[]))
        .await;
    let (unused, _) = app
        .issue_key("acme", key_spec(member_kind("bob"), &[]))
        .await;
    assert!(key_row(&app, used).await.last_used_at.is_none());

    let before = Utc::now() - chrono::Duration::seconds(5);
    assert_key_works(call(&app, &key).await, "the key");

    // The server records the use in a task of its own: poll, boundedly.
    let mut last_used = None;
    for _ in 0..400 {
        last_used = key_row(&app, used).await.last_used_at;
        if last_used.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let last_used = last_used.expect("the key's last use is recorded");
    assert!(last_used >= before, "{last_used} is the time of the call");
    assert!(key_row(&app, unused).await.last_used_at.is_none());

    let listing = stdout(&notesd_ok(&app, &["keys", "list", "--tenant", "acme"]).await);
    let line = listing
        .lines()
        .find(|l| l.starts_with(&used.to_string()))
        .expect("the key is listed");
    assert!(
        !line.ends_with("\t-"),
        "keys list shows the last use: {line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_create_admin_without_member_fails() {
    let app = spawn_app().await;
    let before: i64 = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let output = notesd_fails(&app, &["keys", "create", "--tenant", "acme", "--admin"]).await;
    assert!(!stdout(&output).contains("nk_"));
    let after: i64 = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(after, before, "no key was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_create_admin_makes_a_key_that_sees_every_note() {
    let app = spawn_app().await;
    let mut bob = app.member("acme", "bob").await;
    let private = add(
        &mut bob,
        pb::Note {
            visibility: pb::Visibility::Private as i32,
            ..text_note("customer", "c-1", "private")
        },
    )
    .await;
    let key = printed_key(
        &notesd_ok(
            &app,
            &[
                "keys", "create", "--tenant", "acme", "--member", "root", "--admin",
            ],
        )
        .await,
    );
    let mut admin = app.client(&key).await;
    assert_eq!(get(&mut admin, &private.id).await.unwrap(), private);
}

/// Calls with `key` until `refused` says the answer is a refusal, for up to
/// five seconds: a change made straight in the database reaches the
/// server's key cache by NOTIFY, a moment after it commits. Without that
/// announcement a cached key would keep working for a minute.
async fn refused_soon(
    app: &TestApp,
    key: &str,
    refused: impl Fn(&Result<pb::ListNotesResponse, tonic::Status>) -> bool,
) -> Result<pb::ListNotesResponse, tonic::Status> {
    let mut client = app.client(key).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let result = list(&mut client, Default::default()).await;
        if refused(&result) || std::time::Instant::now() > deadline {
            return result;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn is_code(code: Code) -> impl Fn(&Result<pb::ListNotesResponse, tonic::Status>) -> bool {
    move |result| matches!(result, Err(status) if status.code() == code)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_used_key_revoked_by_hand_in_the_database_is_refused() {
    let app = spawn_app().await;
    let (id, key) = app
        .issue_key("acme", key_spec(member_kind("alice"), &[]))
        .await;
    assert_key_works(call(&app, &key).await, "the key before revocation");
    assert_key_works(call(&app, &key).await, "the key, cached");

    sqlx::query("update api_keys set revoked_at = now() where id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_key_refused(refused_soon(&app, &key, is_code(Code::Unauthenticated)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_used_key_deleted_or_narrowed_in_the_database_is_refused() {
    let app = spawn_app().await;
    let (narrowed_id, narrowed) = app
        .issue_key("acme", key_spec(member_kind("alice"), &[]))
        .await;
    let (deleted_id, deleted) = app
        .issue_key("acme", key_spec(member_kind("bob"), &[]))
        .await;
    assert_key_works(call(&app, &narrowed).await, "alice's key");
    assert_key_works(call(&app, &deleted).await, "bob's key");

    sqlx::query("update api_keys set allowed_cidrs = '{10.0.0.0/8}' where id = $1")
        .bind(narrowed_id)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("delete from api_keys where id = $1")
        .bind(deleted_id)
        .execute(&app.pool)
        .await
        .unwrap();

    assert_status(
        refused_soon(&app, &narrowed, is_code(Code::PermissionDenied)).await,
        Code::PermissionDenied,
        "IP_NOT_WHITELISTED",
    );
    assert_key_refused(refused_soon(&app, &deleted, is_code(Code::Unauthenticated)).await);
}
