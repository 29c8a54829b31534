//! Row-level security, seen through a direct connection as `notesd_app`:
//! a query that forgets its tenant filter still sees one tenant only, and
//! none without a tenant; the role can neither write another tenant's rows
//! nor manage keys, nor bypass any of it. And the server's own queries are
//! subject to it.

use notesd::proto::notes::v1 as pb;
use sqlx::{Connection as _, PgConnection};

use crate::helpers::*;

/// Every table row-level security scopes to a tenant.
const TENANT_TABLES: [&str; 6] = [
    "notes",
    "note_revisions",
    "note_events",
    "note_requests",
    "note_numbers",
    "subjects",
];

/// A connection to the test database as `notesd_app`, as the server's.
async fn app_role(app: &TestApp) -> PgConnection {
    let mut conn = PgConnection::connect(&app.database_url)
        .await
        .expect("connects to the test database");
    sqlx::query("set role notesd_app")
        .execute(&mut conn)
        .await
        .expect("switches to notesd_app");
    conn
}

/// Rows in every tenant table for acme (alice) and globex (gina), written
/// through gRPC (notes with request ids, an update, a subject) and through
/// Fernand (a note with its number): three notes a tenant.
async fn two_tenants(app: &TestApp) {
    for (tenant, member) in [("acme", "alice"), ("globex", "gina")] {
        let key = app.member_key(tenant, member).await;
        let numbered = reqwest::Client::new()
            .post(app.http_url("/conversations/7/notes"))
            .header("x-api-key", &key)
            .json(&serde_json::json!({"content": "<p>numbered</p>"}))
            .send()
            .await
            .unwrap();
        assert_eq!(numbered.status(), 200, "Fernand numbers its note");
        let mut client = app.client(&key).await;
        for i in 0..2 {
            let note = add_with_request_id(
                &mut client,
                &uuid::Uuid::now_v7().to_string(),
                text_note("customer", &format!("{tenant}-{i}"), "text"),
            )
            .await
            .expect("AddNote succeeds");
            update(
                &mut client,
                pb::Note {
                    title: "edited".to_owned(),
                    ..patch(&note.id)
                },
                &["title"],
            )
            .await
            .expect("UpdateNote succeeds");
        }
        register_subject(
            &mut app.subjects(&key).await,
            registration("contact", "k-1", "", true),
        )
        .await
        .expect("RegisterSubject succeeds");
    }
}

/// The tenants of a table's rows that `conn` sees, sorted, with no filter.
async fn visible_tenants(conn: &mut PgConnection, table: &str) -> Vec<String> {
    sqlx::query_scalar(&format!(
        "select distinct tenant_id from {table} order by tenant_id"
    ))
    .fetch_all(conn)
    .await
    .expect("the select runs")
}

async fn count(conn: &mut PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(&format!("select count(*) from {table}"))
        .fetch_one(conn)
        .await
        .expect("the count runs")
}

/// The SQLSTATE and message of a failed statement.
fn sql_error(result: Result<impl std::fmt::Debug, sqlx::Error>) -> (String, String) {
    let err = result.expect_err("the statement fails");
    let db = err
        .as_database_error()
        .unwrap_or_else(|| panic!("a database error, got {err:?}"));
    (
        db.code().map(|c| c.into_owned()).unwrap_or_default(),
        db.message().to_owned(),
    )
}

const INSERT_NOTE: &str = "insert into notes
     (tenant_id, id, subject_type, subject_id, owner_id, created_by, updated_by, visibility,
      edit_policy, body_text, occurred_at, created_at, updated_at, revision)
     values ($1, gen_random_uuid(), 'customer', 'c-9', 'mallory', 'mallory', 'mallory', 2, 1,
             'x', now(), now(), now(), 1)";

#[tokio::test(flavor = "multi_thread")]
async fn queries_without_a_tenant_filter_see_only_the_tenant_set() {
    let app = spawn_app().await;
    two_tenants(&app).await;
    let mut conn = app_role(&app).await;

    for tenant in ["acme", "globex"] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("select set_config('notesd.tenant_id', $1, true)")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .unwrap();
        // tenant_notes applies the policy's rule itself (for the GIN
        // indexes, see the search_purge migration): the same rows.
        assert_eq!(visible_tenants(&mut tx, "tenant_notes").await, [tenant]);
        assert_eq!(
            count(&mut tx, "tenant_notes").await,
            count(&mut tx, "notes").await
        );
        for table in TENANT_TABLES {
            assert_eq!(
                visible_tenants(&mut tx, table).await,
                [tenant],
                "{table} as {tenant}"
            );
            // Every row of the tenant, and only those.
            let owned: i64 = sqlx::query_scalar(&format!(
                "select count(*) from {table} where tenant_id = $1"
            ))
            .bind(tenant)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            assert!(owned > 0, "the test wrote {table} rows for {tenant}");
            assert_eq!(count(&mut tx, table).await, owned, "{table} as {tenant}");
        }
        tx.commit().await.unwrap();
    }

    // The owner, to whom RLS does not apply, sees both.
    let all: Vec<String> =
        sqlx::query_scalar("select distinct tenant_id from notes order by tenant_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(all, ["acme", "globex"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_without_a_tenant_set_see_nothing() {
    let app = spawn_app().await;
    two_tenants(&app).await;
    let mut conn = app_role(&app).await;

    for table in TENANT_TABLES.iter().copied().chain(["tenant_notes"]) {
        assert_eq!(count(&mut conn, table).await, 0, "{table}, never set");
    }

    // The setting is local to its transaction: after it, nothing again.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("select set_config('notesd.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(count(&mut tx, "notes").await > 0);
    tx.commit().await.unwrap();
    for table in TENANT_TABLES {
        assert_eq!(count(&mut conn, table).await, 0, "{table}, after a tenant");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_of_another_tenant_cannot_be_written() {
    let app = spawn_app().await;
    two_tenants(&app).await;
    let mut conn = app_role(&app).await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("select set_config('notesd.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await
        .unwrap();

    // The tenant's own rows may be written (the positive control)...
    sqlx::query(INSERT_NOTE)
        .bind("acme")
        .execute(&mut *tx)
        .await
        .expect("acme's row is accepted");
    // ...another tenant's not.
    sqlx::query("savepoint before_insert")
        .execute(&mut *tx)
        .await
        .unwrap();
    let (code, message) = sql_error(
        sqlx::query(INSERT_NOTE)
            .bind("globex")
            .execute(&mut *tx)
            .await,
    );
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("row-level security"), "{message}");
    sqlx::query("rollback to savepoint before_insert")
        .execute(&mut *tx)
        .await
        .unwrap();

    // Moving a row to another tenant is refused too.
    let (code, message) = sql_error(
        sqlx::query("update notes set tenant_id = 'globex'")
            .execute(&mut *tx)
            .await,
    );
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("row-level security"), "{message}");
    sqlx::query("rollback to savepoint before_insert")
        .execute(&mut *tx)
        .await
        .unwrap();

    // Another tenant's rows are out of reach of an unfiltered update.
    let touched = sqlx::query("update notes set title = 'overwritten' where tenant_id = 'globex'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(touched, 0);
    tx.commit().await.unwrap();

    let overwritten: i64 =
        sqlx::query_scalar("select count(*) from notes where title = 'overwritten'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(overwritten, 0);
    let globex_rows: i64 =
        sqlx::query_scalar("select count(*) from notes where tenant_id = 'globex'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(globex_rows, 3, "no globex row was added");
}

#[tokio::test(flavor = "multi_thread")]
async fn app_role_cannot_manage_keys_nor_delete_rows() {
    let app = spawn_app().await;
    let (id, _) = app
        .issue_key("acme", key_spec(member_kind("alice"), &[]))
        .await;
    let mut conn = app_role(&app).await;

    let (code, message) = sql_error(
        sqlx::query(
            "insert into api_keys (id, tenant_id, kind, member_id, secret_hash, created_at)
             values (gen_random_uuid(), 'acme', 'admin', 'mallory', '\\x00', now())",
        )
        .execute(&mut conn)
        .await,
    );
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("permission denied"), "{message}");

    for change in [
        "update api_keys set revoked_at = null",
        "update api_keys set kind = 'admin'",
        "delete from api_keys",
    ] {
        let (code, message) = sql_error(sqlx::query(change).execute(&mut conn).await);
        assert_eq!(code, "42501", "{change}: {message}");
    }
    // What it may do: read keys and record their use.
    let touched = sqlx::query("update api_keys set last_used_at = now() where id = $1")
        .bind(id)
        .execute(&mut conn)
        .await
        .expect("the app records a key's use")
        .rows_affected();
    assert_eq!(touched, 1);

    // Notes are soft-deleted: the role deletes no rows of any table but
    // note_requests, where group commit gives back the request ids of
    // refused adds.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("select set_config('notesd.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in TENANT_TABLES
        .into_iter()
        .filter(|table| *table != "note_requests")
    {
        sqlx::query("savepoint s").execute(&mut *tx).await.unwrap();
        let (code, message) = sql_error(
            sqlx::query(&format!("delete from {table}"))
                .execute(&mut *tx)
                .await,
        );
        assert_eq!(code, "42501", "delete from {table}: {message}");
        sqlx::query("rollback to savepoint s")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn app_role_deletes_request_ids_of_its_tenant_only() {
    let app = spawn_app().await;
    two_tenants(&app).await;
    let mut conn = app_role(&app).await;

    let mut tx = conn.begin().await.unwrap();
    sqlx::query("select set_config('notesd.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let deleted = sqlx::query("delete from note_requests")
        .execute(&mut *tx)
        .await
        .expect("the app role gives back request ids")
        .rows_affected();
    tx.commit().await.unwrap();

    assert_eq!(deleted, 2, "acme's two request ids only");
    let left: Vec<String> =
        sqlx::query_scalar("select tenant_id from note_requests order by tenant_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, ["globex", "globex"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn app_role_is_no_superuser_and_cannot_bypass_row_level_security() {
    let app = spawn_app().await;
    let (bypass, superuser): (bool, bool) =
        sqlx::query_as("select rolbypassrls, rolsuper from pg_roles where rolname = 'notesd_app'")
            .fetch_one(&app.pool)
            .await
            .expect("the role exists");
    assert!(!bypass, "notesd_app must not bypass RLS");
    assert!(!superuser, "notesd_app must not be a superuser");

    // Nor does it own the tables (an owner is exempt unless RLS is forced),
    // and RLS is forced on every tenant table all the same.
    for table in TENANT_TABLES {
        let (owner, enabled, forced): (String, bool, bool) = sqlx::query_as(
            "select pg_get_userbyid(relowner)::text, relrowsecurity, relforcerowsecurity
             from pg_class where relname = $1 and relkind = 'r'",
        )
        .bind(table)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_ne!(owner, "notesd_app", "{table}");
        assert!(enabled && forced, "{table}: RLS enabled and forced");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_queries_are_subject_to_row_level_security() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let shown = add(&mut alice, text_note("customer", "c-1", "shown")).await;
    let hidden = add(&mut alice, text_note("customer", "c-1", "hidden")).await;

    // A policy for notesd_app alone, hiding one row. The server filters by
    // tenant in every query, so only a policy can hide the row: if the
    // server ran as the owner (or bypassed RLS) it would still see it.
    sqlx::query(&format!(
        "create policy hide_one on notes as restrictive for select to notesd_app
         using (id <> '{}')",
        hidden.id
    ))
    .execute(&app.pool)
    .await
    .unwrap();

    assert_fails(get(&mut alice, &hidden.id).await, NOT_FOUND);
    assert_eq!(get(&mut alice, &shown.id).await.unwrap(), shown);
    assert_eq!(
        listed_ids(&mut alice, Default::default()).await,
        std::slice::from_ref(&shown.id)
    );

    sqlx::query("drop policy hide_one on notes")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(get(&mut alice, &hidden.id).await.unwrap(), hidden);
}
