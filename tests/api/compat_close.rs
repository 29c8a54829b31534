//! The close facade over real HTTP: see docs/compat/close.md.

use notesd::proto::notes::v1 as pb;
use serde_json::{Value, json};

use crate::helpers::*;

const ORG: &str = "orga_RbREgmiiwcr1w2b4cOnCMQaQPSIFxMqAD2Dh243uxcH";
const USER: &str = "user_N6KhMpzHRCYQHdn4gRNIFNN5JExnsrprKA6ekxM63XA";
const LEAD: &str = "lead_s6vHFTK1TSRoH6otXOexWDO9jM4xyb1kELHDoU7Fdsp";
const NOTES: &str = "/api/v1/activity/note/";

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = auth.apply(reqwest::Client::new().request(method, app.http_url(path)));
    if let Some(body) = body {
        request = request.json(&body);
    }
    json_answer(request).await
}

async fn post(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    call(
        app,
        reqwest::Method::POST,
        NOTES,
        Auth::Basic(key),
        Some(body),
    )
    .await
}

/// POSTs a note and returns the answer, asserting 200.
async fn create(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, note) = post(app, key, body).await;
    assert_eq!(status, 200, "{note}");
    note
}

async fn get_path(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    call(app, reqwest::Method::GET, path, Auth::Basic(key), None).await
}

fn note_path(id: &str) -> String {
    format!("{NOTES}{id}/")
}

/// The ids a list call answers, in order, and its `has_more`.
async fn listed(app: &TestApp, key: &str, query: &str) -> (Vec<String>, bool) {
    let (status, page) = get_path(app, key, &format!("{NOTES}?{query}")).await;
    assert_eq!(status, 200, "{query}: {page}");
    let ids = page["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, page["has_more"].as_bool().expect("has_more is a bool"))
}

/// The notes.v1 id inside an `acti_` id.
fn uuid_of(close_id: &str) -> String {
    let hex = close_id.strip_prefix("acti_").expect("an acti_ id");
    uuid::Uuid::try_parse(hex)
        .expect("32 hex digits")
        .to_string()
}

fn is_close_time(value: &Value) -> bool {
    let Some(s) = value.as_str() else {
        return false;
    };
    s.len() == "2013-02-20T06:39:57.266000+00:00".len()
        && s.ends_with("+00:00")
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

fn field_error<'a>(body: &'a Value, field: &str) -> &'a Value {
    &body["field-errors"][field]
}

#[tokio::test]
async fn the_documented_create_example_answers_a_close_note_and_is_the_same_note_over_grpc() {
    let app = spawn_app().await;
    let key = app.member_key(ORG, USER).await;
    let seed = json!({
        "lead_id": LEAD,
        "attachments": [{
            "filename": "picture.gif",
            "url": "https://app.close.com/go/file/temporary/user_MvDoAZA889UMrgsZbnXmHkJSomSi7qk2Iwc4JnGHTbo/3HV4BNwDyBLdfrPbFZF78s/picture.gif/",
            "content_type": "image/gif"
        }],
        "note_html": "<body><p>this is a test note.</p></body>"
    });
    let before = chrono::Utc::now();
    let note = create(&app, &key, seed).await;

    let mut keys: Vec<&str> = note
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "_type",
            "activity_at",
            "attachments",
            "contact_id",
            "created_by",
            "created_by_name",
            "date_created",
            "date_updated",
            "id",
            "lead_id",
            "note",
            "note_html",
            "organization_id",
            "pinned",
            "pinned_at",
            "title",
            "updated_by",
            "updated_by_name",
            "user_id",
            "user_name",
            "users",
        ]
    );
    assert_eq!(note["_type"], "Note");
    let id = note["id"].as_str().unwrap();
    assert!(
        id.len() == 37 && id[5..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(note["lead_id"], LEAD);
    assert_eq!(note["contact_id"], Value::Null);
    assert_eq!(note["organization_id"], ORG);
    assert_eq!(note["user_id"], USER);
    assert_eq!(note["created_by"], USER);
    assert_eq!(note["updated_by"], USER);
    assert_eq!(note["users"], json!([]));
    assert_eq!(note["created_by_name"], Value::Null);
    assert_eq!(note["updated_by_name"], Value::Null);
    assert_eq!(note["user_name"], Value::Null);
    assert_eq!(note["note"], "this is a test note.");
    assert_eq!(note["note_html"], "<p>this is a test note.</p>");
    assert_eq!(note["title"], Value::Null);
    assert_eq!(note["pinned"], false);
    assert_eq!(note["pinned_at"], Value::Null);
    assert_eq!(
        note["attachments"],
        json!([{
            "content_type": "image/gif",
            "filename": "picture.gif",
            "size": 0,
            "thumbnail_url": null,
            "url": "https://app.close.com/go/file/temporary/user_MvDoAZA889UMrgsZbnXmHkJSomSi7qk2Iwc4JnGHTbo/3HV4BNwDyBLdfrPbFZF78s/picture.gif/"
        }])
    );
    for field in ["date_created", "date_updated", "activity_at"] {
        assert!(is_close_time(&note[field]), "{field}: {}", note[field]);
    }
    assert_eq!(note["activity_at"], note["date_created"]);
    assert_eq!(note["date_updated"], note["date_created"]);
    let created = chrono::DateTime::parse_from_rfc3339(note["date_created"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert!(created >= before - chrono::Duration::seconds(1));

    // The same note over gRPC.
    let mut grpc = app.client(&key).await;
    let stored = get(&mut grpc, &uuid_of(id))
        .await
        .expect("GetNote finds it");
    assert_eq!(stored.subject, subject("lead", LEAD));
    assert!(stored.related_subjects.is_empty());
    assert_eq!(stored.owner_id, USER);
    assert_eq!(body_text(&stored), "this is a test note.");
    assert_eq!(
        stored.body.as_ref().unwrap().html,
        "<p>this is a test note.</p>"
    );
    assert_eq!(stored.attachments.len(), 1);
    assert_eq!(stored.attachments[0].filename, "picture.gif");
    assert_eq!(stored.attachments[0].content_type, "image/gif");
    assert_eq!(to_chrono(stored.create_time.as_ref().unwrap()), created);
    assert_eq!(to_chrono(stored.occur_time.as_ref().unwrap()), created);
    assert_eq!(stored.visibility, pb::Visibility::Team as i32);
    assert!(stored.source.is_none());
}

#[tokio::test]
async fn a_plain_note_has_no_html_and_html_wins_over_plain_text() {
    let app = spawn_app().await;
    let key = app.member_key(ORG, USER).await;

    let plain = create(&app, &key, json!({"lead_id": LEAD, "note": "just text"})).await;
    assert_eq!(plain["note"], "just text");
    assert_eq!(plain["note_html"], Value::Null);

    let both = create(
        &app,
        &key,
        json!({
            "lead_id": LEAD,
            "note": "this text loses",
            "note_html": "<p>Hello <b>world</b><script>alert(1)</script></p>",
        }),
    )
    .await;
    assert_eq!(both["note"], "Hello world");
    assert_eq!(both["note_html"], "<p>Hello <b>world</b></p>");
    let mut grpc = app.client(&key).await;
    let stored = get(&mut grpc, &uuid_of(both["id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(body_text(&stored), "Hello world");
}

#[tokio::test]
async fn create_maps_contact_title_pinned_activity_at_and_date_created() {
    let app = spawn_app().await;
    let key = app.member_key(ORG, USER).await;
    let note = create(
        &app,
        &key,
        json!({
            "lead_id": LEAD,
            "contact_id": "cont_1",
            "note": "call back",
            "title": "Follow-up",
            "pinned": true,
            "activity_at": "2013-02-20T06:39:57.266000+00:00",
            "organization_id": ORG,
            "user_id": USER,
            "created_by": "user_ignored",
        }),
    )
    .await;
    assert_eq!(note["contact_id"], "cont_1");
    assert_eq!(note["title"], "Follow-up");
    assert_eq!(note["pinned"], true);
    assert!(is_close_time(&note["pinned_at"]), "{}", note["pinned_at"]);
    assert_eq!(note["activity_at"], "2013-02-20T06:39:57.266000+00:00");
    assert_eq!(note["created_by"], USER, "created_by is the caller");

    let imported = create(
        &app,
        &key,
        json!({"lead_id": LEAD, "note": "old", "date_created": "2012-05-01T10:00:00Z"}),
    )
    .await;
    assert_eq!(imported["activity_at"], "2012-05-01T10:00:00.000000+00:00");
    assert_ne!(imported["date_created"], imported["activity_at"]);

    let mut grpc = app.client(&key).await;
    let stored = get(&mut grpc, &uuid_of(note["id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        stored.related_subjects,
        vec![subject("contact", "cont_1").unwrap()]
    );
    assert_eq!(stored.title, "Follow-up");
    assert!(stored.pinned);
    assert!(stored.pin_time.is_some());
}

#[tokio::test]
async fn list_filters_by_lead_contact_user_ids_and_times() {
    let app = spawn_app().await;
    let admin = app.admin_key(ORG, USER).await;
    let at = |minute: i64| at_minute(minute).to_rfc3339();
    let a = create(
        &app,
        &admin,
        json!({"lead_id": "lead_a", "contact_id": "cont_x", "note": "a", "activity_at": at(1)}),
    )
    .await;
    let b = create(
        &app,
        &admin,
        json!({"lead_id": "lead_a", "note": "b", "activity_at": at(2), "user_id": "user_other"}),
    )
    .await;
    let c = create(
        &app,
        &admin,
        json!({"lead_id": "lead_b", "contact_id": "cont_x", "note": "c", "activity_at": at(3)}),
    )
    .await;
    let id = |n: &Value| n["id"].as_str().unwrap().to_owned();
    let (a, b, c) = (id(&a), id(&b), id(&c));
    let (a, b, c) = (a.as_str(), b.as_str(), c.as_str());

    assert_eq!(listed(&app, &admin, "").await.0, [c, b, a], "newest first");
    assert_eq!(listed(&app, &admin, "lead_id=lead_a").await.0, [b, a]);
    assert_eq!(listed(&app, &admin, "contact_id=cont_x").await.0, [c, a]);
    assert_eq!(listed(&app, &admin, "user_id=user_other").await.0, [b]);
    assert_eq!(
        listed(&app, &admin, &format!("user_id={USER}")).await.0,
        [c, a]
    );
    assert_eq!(
        listed(
            &app,
            &admin,
            &format!("id__in={a},{c},acti_{}", "0".repeat(32))
        )
        .await
        .0,
        [c, a]
    );
    let q = |op: &str, minute: i64| format!("activity_at__{op}={}", at(minute).replace('+', "%2B"));
    assert_eq!(listed(&app, &admin, &q("gt", 2)).await.0, [c]);
    assert_eq!(listed(&app, &admin, &q("gte", 2)).await.0, [c, b]);
    assert_eq!(listed(&app, &admin, &q("lt", 2)).await.0, [a]);
    assert_eq!(listed(&app, &admin, &q("lte", 2)).await.0, [b, a]);
    assert_eq!(
        listed(&app, &admin, &format!("{}&{}", q("gt", 1), q("lt", 3)))
            .await
            .0,
        [b]
    );
    // An unencoded `+` arrives as a space and is still read as the offset.
    assert_eq!(
        listed(&app, &admin, &format!("activity_at__gte={}", at(3)))
            .await
            .0,
        [c]
    );
    // Every note was created just now.
    assert_eq!(
        listed(&app, &admin, "date_created__gte=2020-01-01").await.0,
        [c, b, a]
    );
    assert!(
        listed(&app, &admin, "date_created__lt=2020-01-01")
            .await
            .0
            .is_empty()
    );
    assert_eq!(
        listed(&app, &admin, "lead_id=lead_a&contact_id=cont_x")
            .await
            .0,
        [a]
    );
}

#[tokio::test]
async fn list_pages_with_skip_and_limit_and_says_whether_more_follow() {
    let app = spawn_app().await;
    let key = app.member_key(ORG, USER).await;
    let mut ids = Vec::new();
    for minute in 0..5 {
        let note = create(
            &app,
            &key,
            json!({"lead_id": LEAD, "note": format!("n{minute}"), "activity_at": at_minute(minute).to_rfc3339()}),
        )
        .await;
        ids.push(note["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    assert_eq!(
        listed(&app, &key, "_limit=2").await,
        (ids[..2].to_vec(), true)
    );
    assert_eq!(
        listed(&app, &key, "_skip=2&_limit=2").await,
        (ids[2..4].to_vec(), true)
    );
    assert_eq!(
        listed(&app, &key, "_skip=4&_limit=2").await,
        (ids[4..].to_vec(), false)
    );
    assert_eq!(listed(&app, &key, "_skip=5").await, (vec![], false));
    assert_eq!(listed(&app, &key, "").await, (ids.clone(), false));

    let (status, body) = get_path(&app, &key, &format!("{NOTES}?_limit=101")).await;
    assert_eq!(status, 400);
    assert!(field_error(&body, "_limit").is_string(), "{body}");
    // Close's note list documents no `query` parameter: like any other
    // unknown one, it is refused by name, not silently ignored.
    for param in ["colour", "query"] {
        let (status, body) = get_path(&app, &key, &format!("{NOTES}?{param}=red")).await;
        assert_eq!(status, 400);
        assert!(field_error(&body, param).is_string(), "{body}");
    }
}

#[tokio::test]
async fn get_put_and_delete_take_back_the_id_that_create_returned() {
    let app = spawn_app().await;
    let key = app.member_key(ORG, USER).await;
    let note = create(
        &app,
        &key,
        json!({"lead_id": LEAD, "contact_id": "cont_1", "note": "first", "title": "T"}),
    )
    .await;
    let id = note["id"].as_str().unwrap();
    let path = note_path(id);

    let (status, read) = get_path(&app, &key, &path).await;
    assert_eq!(status, 200);
    assert_eq!(read, note);
    let (status, some) = get_path(&app, &key, &format!("{path}?_fields=id,note")).await;
    assert_eq!(status, 200);
    assert_eq!(some, json!({"id": id, "note": "first"}));

    // PUT changes only what it sends; a note read back may be sent whole.
    let (status, updated) = call(
        &app,
        reqwest::Method::PUT,
        &path,
        Auth::Bearer(&key),
        Some(json!({"pinned": true, "title": null, "_type": "Note", "users": []})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["id"], id);
    assert_eq!(updated["pinned"], true);
    assert!(is_close_time(&updated["pinned_at"]));
    assert_eq!(updated["title"], Value::Null);
    assert_eq!(updated["note"], "first");
    assert_eq!(updated["contact_id"], "cont_1");
    let (status, updated) = call(
        &app,
        reqwest::Method::PUT,
        &path,
        Auth::Basic(&key),
        Some(json!({"note_html": "<p>second</p>", "contact_id": null})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["note"], "second");
    assert_eq!(updated["note_html"], "<p>second</p>");
    assert_eq!(updated["contact_id"], Value::Null);
    assert_ne!(updated["date_updated"], note["date_updated"]);

    let mut grpc = app.client(&key).await;
    let stored = get(&mut grpc, &uuid_of(id)).await.unwrap();
    assert_eq!(body_text(&stored), "second");
    assert!(stored.pinned);
    assert_eq!(stored.title, "");
    assert!(stored.related_subjects.is_empty());

    let (status, deleted) = call(
        &app,
        reqwest::Method::DELETE,
        &path,
        Auth::Basic(&key),
        None,
    )
    .await;
    assert_eq!((status, deleted), (200, json!({})));
    let (status, gone) = get_path(&app, &key, &path).await;
    assert_eq!(status, 404, "{gone}");
    assert!(listed(&app, &key, "").await.0.is_empty());
    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        &path,
        Auth::Basic(&key),
        None,
    )
    .await;
    assert_eq!(status, 404, "a second delete finds nothing");
    let stored = get(&mut grpc, &uuid_of(id)).await.unwrap();
    assert!(stored.delete_time.is_some(), "soft-deleted in notesd");
}

#[tokio::test]
async fn calls_without_a_valid_key_are_401_with_a_json_error() {
    let app = spawn_app().await;
    let key = app.member_key(ORG, USER).await;
    let last = if key.ends_with('x') { "y" } else { "x" };
    let bad = format!("{}{last}", &key[..key.len() - 1]);
    for auth in [Auth::None, Auth::Basic("nk_nonsense"), Auth::Bearer(&bad)] {
        for (method, body) in [
            (reqwest::Method::GET, None),
            (
                reqwest::Method::POST,
                Some(json!({"lead_id": LEAD, "note": "x"})),
            ),
        ] {
            let (status, body) = call(&app, method.clone(), NOTES, auth, body).await;
            assert_eq!(status, 401, "{method} {body}");
            assert!(body["error"].is_string(), "{body}");
        }
    }
    // Both schemes work with a good key.
    assert_eq!(
        call(&app, reqwest::Method::GET, NOTES, Auth::Bearer(&key), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&app, reqwest::Method::GET, NOTES, Auth::Basic(&key), None)
            .await
            .0,
        200
    );
    // Nothing was written by the refused calls.
    assert!(listed(&app, &key, "").await.0.is_empty());
}

#[tokio::test]
async fn a_service_key_acts_as_the_member_in_x_actor_id_and_is_401_without_it() {
    let app = spawn_app().await;
    let service = app.service_key(ORG).await;
    let body = json!({"lead_id": LEAD, "note": "from a bot"});
    let (status, refused) = call(
        &app,
        reqwest::Method::POST,
        NOTES,
        Auth::Bearer(&service),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 401, "{refused}");
    let (status, note) = call(
        &app,
        reqwest::Method::POST,
        NOTES,
        Auth::BearerActor(&service, "user_bot"),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{note}");
    assert_eq!(note["user_id"], "user_bot");
    assert_eq!(note["created_by"], "user_bot");
}

#[tokio::test]
async fn unknown_ids_are_404_with_a_json_error() {
    let app = spawn_app().await;
    let key = app.member_key(ORG, USER).await;
    let unknown = [
        format!("acti_{}", uuid::Uuid::now_v7().simple()),
        "acti_kwWA3rOfy4BnaZ8QQk3RIIAz51dU9ayiluy1s961Oiw".to_owned(),
        "not-an-id".to_owned(),
    ];
    for id in &unknown {
        for (method, body) in [
            (reqwest::Method::GET, None),
            (reqwest::Method::PUT, Some(json!({"note": "x"}))),
            (reqwest::Method::DELETE, None),
        ] {
            let (status, body) = call(
                &app,
                method.clone(),
                &note_path(id),
                Auth::Basic(&key),
                body,
            )
            .await;
            assert_eq!(status, 404, "{method} {id}: {body}");
            assert!(body["error"].is_string(), "{body}");
        }
    }
}

#[tokio::test]
async fn another_tenants_note_is_404() {
    let app = spawn_app().await;
    let ours = app.member_key(ORG, USER).await;
    let theirs = app.member_key("orga_other", USER).await;
    let note = create(&app, &ours, json!({"lead_id": LEAD, "note": "ours"})).await;
    let (status, _) = get_path(&app, &theirs, &note_path(note["id"].as_str().unwrap())).await;
    assert_eq!(status, 404);
    assert!(listed(&app, &theirs, "").await.0.is_empty());
}

#[tokio::test]
async fn invalid_requests_are_400_naming_the_close_field() {
    let app = spawn_app().await;
    let key = app.member_key(ORG, USER).await;
    let cases = [
        (json!({"note": "no lead"}), "lead_id"),
        (json!({"lead_id": LEAD}), "note"),
        (
            json!({"lead_id": LEAD, "note": "x", "colour": "red"}),
            "colour",
        ),
        (
            json!({"lead_id": LEAD, "note": "x", "pinned": "yes"}),
            "pinned",
        ),
        (
            json!({"lead_id": LEAD, "note": "x", "activity_at": "yesterday"}),
            "activity_at",
        ),
        (
            json!({"lead_id": LEAD, "note": "x", "attachments": [{"url": "http://example.com/a.gif", "filename": "a.gif", "content_type": "image/gif"}]}),
            "attachments[0].url",
        ),
        (
            json!({"lead_id": LEAD, "note": "x", "organization_id": "orga_someone_else"}),
            "organization_id",
        ),
        (
            json!({"lead_id": LEAD, "note": "x", "title": "t".repeat(1025)}),
            "title",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = post(&app, &key, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            field_error(&answer, field).is_string(),
            "{field} in {answer}"
        );
        assert!(answer["error"].is_string(), "{answer}");
    }
    let (status, answer) = call(&app, reqwest::Method::POST, NOTES, Auth::Basic(&key), None).await;
    assert_eq!(status, 400, "an empty body: {answer}");
    assert!(listed(&app, &key, "").await.0.is_empty(), "nothing written");
}

#[tokio::test]
async fn only_an_admin_key_may_name_another_user_as_owner() {
    let app = spawn_app().await;
    let member = app.member_key(ORG, USER).await;
    let (status, body) = post(
        &app,
        &member,
        json!({"lead_id": LEAD, "note": "x", "user_id": "user_other"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].is_string());

    let admin = app.admin_key(ORG, "user_admin").await;
    let note = create(
        &app,
        &admin,
        json!({"lead_id": LEAD, "note": "x", "user_id": "user_other"}),
    )
    .await;
    assert_eq!(note["user_id"], "user_other");
    assert_eq!(note["created_by"], "user_admin");
}

#[tokio::test]
async fn a_note_added_over_grpc_about_a_lead_is_listed_and_read_by_the_facade() {
    let app = spawn_app().await;
    let key = app.member_key(ORG, USER).await;
    let mut grpc = app.client(&key).await;
    let lead_note = add(
        &mut grpc,
        pb::Note {
            related_subjects: vec![subject("contact", "cont_9").unwrap()],
            ..text_note("lead", "lead_x", "from gRPC")
        },
    )
    .await;
    add(&mut grpc, text_note("customer", "lead_x", "not a lead")).await;

    let close_id = format!(
        "acti_{}",
        uuid::Uuid::try_parse(&lead_note.id).unwrap().simple()
    );
    assert_eq!(listed(&app, &key, "").await.0, [close_id.as_str()]);
    assert_eq!(
        listed(&app, &key, "lead_id=lead_x").await.0,
        [close_id.as_str()]
    );
    let (status, note) = get_path(&app, &key, &note_path(&close_id)).await;
    assert_eq!(status, 200);
    assert_eq!(note["lead_id"], "lead_x");
    assert_eq!(note["contact_id"], "cont_9");
    assert_eq!(note["note"], "from gRPC");
    assert_eq!(note["user_id"], USER);
}

#[tokio::test]
async fn a_note_imported_with_its_close_id_keeps_it() {
    let app = spawn_app().await;
    let key = app.member_key(ORG, USER).await;
    let close_id = "acti_kwWA3rOfy4BnaZ8QQk3RIIAz51dU9ayiluy1s961Oiw";
    let note = create(
        &app,
        &key,
        json!({"id": close_id, "lead_id": LEAD, "note": "imported"}),
    )
    .await;
    assert_eq!(note["id"], close_id);
    let (status, read) = get_path(&app, &key, &note_path(close_id)).await;
    assert_eq!((status, read["note"].clone()), (200, json!("imported")));
    assert_eq!(
        listed(&app, &key, &format!("id__in={close_id}")).await.0,
        [close_id]
    );

    let mut grpc = app.client(&key).await;
    let all = list_all(&mut grpc, pb::ListNotesRequest::default()).await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].source,
        Some(pb::Source {
            system: "close".to_owned(),
            id: close_id.to_owned()
        })
    );

    let (status, again) = post(
        &app,
        &key,
        json!({"id": close_id, "lead_id": LEAD, "note": "x"}),
    )
    .await;
    assert_eq!(status, 400, "{again}");
    assert!(field_error(&again, "id").is_string(), "{again}");
}
