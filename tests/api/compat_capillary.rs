//! The Capillary facade (customer API v1.1 notes) over real HTTP against a
//! running notesd and Postgres: see docs/compat/capillary.md.

use serde_json::{Value, json};

use crate::helpers::*;
use notesd::proto::notes::v1 as pb;

const TENANT: &str = "capillary-tenant";

/// POST /v1.1/customer/notes?format=json with `body`.
async fn post_notes(app: &TestApp, auth: Auth<'_>, body: &Value) -> (u16, Value) {
    post_raw(app, "?format=json", auth, body.to_string()).await
}

async fn post_raw(app: &TestApp, query: &str, auth: Auth<'_>, body: String) -> (u16, Value) {
    let request = reqwest::Client::new()
        .post(app.http_url(&format!("/v1.1/customer/notes{query}")))
        .header("content-type", "application/json")
        .body(body);
    json_answer(auth.apply(request)).await
}

/// GET /v1.1/customer/notes?{query}.
async fn get_notes(app: &TestApp, auth: Auth<'_>, query: &str) -> (u16, Value) {
    let request =
        reqwest::Client::new().get(app.http_url(&format!("/v1.1/customer/notes?{query}")));
    json_answer(auth.apply(request)).await
}

/// The items of a value that is one object or an array of them.
fn items(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        one => vec![one.clone()],
    }
}

/// The notes of a response's customer.
fn notes_of(customer: &Value) -> Vec<Value> {
    items(&customer["notes"]["note"])
}

#[track_caller]
fn assert_item_ok(item: &Value, message: &str) {
    assert_eq!(
        item["item_status"],
        json!({"success": "true", "code": "1000", "message": message, "warnings": {"warning": []}}),
        "{item}"
    );
}

#[track_caller]
fn assert_item_failed(item: &Value, code: &str) {
    assert_eq!(item["item_status"]["success"], "false", "{item}");
    assert_eq!(item["item_status"]["code"], code, "{item}");
}

/// The notes gRPC lists about `customer/<id>`.
async fn grpc_notes(client: &mut Client, subject_id: &str) -> Vec<pb::Note> {
    list_all(
        client,
        pb::ListNotesRequest {
            subject: subject("customer", subject_id),
            ..Default::default()
        },
    )
    .await
}

fn occur_time(note: &pb::Note) -> chrono::DateTime<chrono::Utc> {
    to_chrono(note.occur_time.as_ref().expect("an occur_time"))
}

fn utc(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn one_note(mobile: &str, note: Value) -> Value {
    json!({"root": {"customer": {"mobile": mobile, "notes": {"note": note}}}})
}

#[tokio::test]
async fn the_documented_add_sample_is_answered_in_capillary_shape_and_stored_as_a_customer_note() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;
    let sample = json!({
      "root": {
        "customer": [{
          "user_id": "15",
          "mobile": "44700900999",
          "email": "catherine@example.com",
          "external_id": "ct123",
          "notes": {"note": [{"date": "2016-05-05 15:15:00", "description": "Likes Maggi"}]}
        }]
      }
    });

    let (status, body) = post_notes(&app, Auth::Basic(&key), &sample).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["response"]["status"],
        json!({"success": "true", "code": "200", "message": "Success", "total": "1", "success_count": "1"})
    );
    let customer = &body["response"]["customer"];
    assert!(customer.is_object(), "one customer is an object: {body}");
    assert_eq!(customer["user_id"], "15");
    assert_eq!(customer["mobile"], "44700900999");
    assert_eq!(customer["email"], "catherine@example.com");
    assert_eq!(customer["external_id"], "ct123");
    assert_item_ok(customer, "Customer note added successfully");
    let note = &customer["notes"]["note"];
    assert!(note.is_object(), "one note is an object: {body}");
    assert_eq!(note["date"], "2016-05-05 15:15:00");
    assert_eq!(note["description"], "Likes Maggi");
    assert_item_ok(note, "Customer note added successfully");
    let id = note["id"].as_str().expect("the id is a string");
    assert!(id.parse::<i64>().is_ok_and(|n| n > 0), "numeric id {id}");

    let mut alice = app.client(&key).await;
    let stored = grpc_notes(&mut alice, "mobile:44700900999").await;
    assert_eq!(stored.len(), 1);
    let stored = &stored[0];
    assert_eq!(body_text(stored), "Likes Maggi");
    assert_eq!(occur_time(stored), utc("2016-05-05T15:15:00Z"));
    assert_eq!(stored.owner_id, "alice");
    assert_eq!(stored.visibility, pb::Visibility::Team as i32);
    assert_eq!(stored.edit_policy, pb::EditPolicy::Team as i32);
    let related: Vec<(&str, &str)> = stored
        .related_subjects
        .iter()
        .map(|s| (s.r#type.as_str(), s.id.as_str()))
        .collect();
    assert_eq!(
        related,
        [
            ("customer", "email:catherine@example.com"),
            ("customer", "external_id:ct123"),
            ("customer", "user_id:15"),
        ]
    );
}

#[tokio::test]
async fn a_customer_object_with_a_single_note_object_is_accepted() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;

    let (status, body) = post_notes(
        &app,
        Auth::Header(&key),
        &json!({"root": {"customer": {"email": "Cat@Example.com", "notes": {"note": {"description": "Prefers email"}}}}}),
    )
    .await;

    assert_eq!(status, 200, "{body}");
    let customer = &body["response"]["customer"];
    assert_eq!(customer["email"], "Cat@Example.com", "echoed as sent");
    assert_eq!(customer["mobile"], "", "identifiers not sent echo empty");
    assert_eq!(customer["notes"]["note"]["description"], "Prefers email");
    let mut alice = app.client(&key).await;
    let stored = grpc_notes(&mut alice, "email:cat@example.com").await;
    assert_eq!(stored.len(), 1, "emails are kept lowercased");
    assert!(stored[0].related_subjects.is_empty());
}

#[tokio::test]
async fn several_customers_with_several_notes_are_all_written_and_echoed_in_order() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;
    let request = json!({"root": {"customer": [
        {"mobile": "911", "notes": {"note": [
            {"description": "first of 911", "date": "2024-01-01 10:00:00"},
            {"description": "second of 911", "date": "2024-01-02 10:00:00"}
        ]}},
        {"external_id": "ext-2", "notes": {"note": {"description": "only of ext-2"}}}
    ]}});

    let (status, body) = post_notes(&app, Auth::Bearer(&key), &request).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["status"]["total"], "2");
    assert_eq!(body["response"]["status"]["success_count"], "2");
    let customers = body["response"]["customer"]
        .as_array()
        .expect("several customers are an array");
    assert_eq!(customers.len(), 2);
    assert_eq!(customers[0]["mobile"], "911");
    assert_eq!(customers[1]["external_id"], "ext-2");
    let first = customers[0]["notes"]["note"]
        .as_array()
        .expect("several notes are an array");
    let descriptions: Vec<&str> = first
        .iter()
        .map(|n| n["description"].as_str().unwrap())
        .collect();
    assert_eq!(descriptions, ["first of 911", "second of 911"]);
    assert_eq!(
        customers[1]["notes"]["note"]["description"],
        "only of ext-2"
    );
    let ids: std::collections::HashSet<&str> = first
        .iter()
        .chain(std::iter::once(&customers[1]["notes"]["note"]))
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "every note has its own id: {ids:?}");

    let mut alice = app.client(&key).await;
    let of_911: Vec<String> = grpc_notes(&mut alice, "mobile:911")
        .await
        .iter()
        .map(|n| body_text(n).to_owned())
        .collect();
    assert_eq!(of_911, ["second of 911", "first of 911"], "newest first");
    let of_ext = grpc_notes(&mut alice, "external_id:ext-2").await;
    assert_eq!(of_ext.len(), 1);
    assert_eq!(body_text(&of_ext[0]), "only of ext-2");
}

#[tokio::test]
async fn a_note_is_updated_by_its_returned_id_sent_as_a_string_or_a_number() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;
    let (_, added) = post_notes(
        &app,
        Auth::Basic(&key),
        &one_note(
            "44700900999",
            json!({"description": "Likes jeans", "date": "2017-11-05 15:15:00"}),
        ),
    )
    .await;
    let id = added["response"]["customer"]["notes"]["note"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut alice = app.client(&key).await;
    let uuid = grpc_notes(&mut alice, "mobile:44700900999").await[0]
        .id
        .clone();

    // As a string, as in Capillary's samples; the date is kept.
    let (status, body) = post_notes(
        &app,
        Auth::Basic(&key),
        &one_note(
            "44700900999",
            json!({"id": id, "description": "Likes new arrivals"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let note = &body["response"]["customer"]["notes"]["note"];
    assert_eq!(note["id"], id.as_str(), "the same id");
    assert_eq!(note["description"], "Likes new arrivals");
    assert_eq!(note["date"], "2017-11-05 15:15:00");
    assert_item_ok(note, "Customer note updated successfully");
    assert_item_ok(
        &body["response"]["customer"],
        "Customer note updated successfully",
    );

    // As a number, with a new date.
    let number: i64 = id.parse().unwrap();
    let (status, body) = post_notes(
        &app,
        Auth::Basic(&key),
        &one_note(
            "44700900999",
            json!({"id": number, "description": "Likes sneakers", "date": "2018-01-01 08:00:00"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["response"]["customer"]["notes"]["note"]["id"],
        id.as_str()
    );

    let stored = grpc_notes(&mut alice, "mobile:44700900999").await;
    assert_eq!(stored.len(), 1, "updated, not added");
    assert_eq!(stored[0].id, uuid);
    assert_eq!(body_text(&stored[0]), "Likes sneakers");
    assert_eq!(occur_time(&stored[0]), utc("2018-01-01T08:00:00Z"));
    assert_eq!(stored[0].revision, 3);
    assert!(stored[0].edit_time.is_some(), "an edit sets the edit time");
}

#[tokio::test]
async fn a_description_of_255_characters_is_accepted_and_256_fails_alone() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;
    let at_limit = "é".repeat(255);
    let over = "a".repeat(256);
    let request = one_note(
        "500",
        json!([
            {"description": at_limit},
            {"description": over},
            {"description": "neighbour"}
        ]),
    );

    let (status, body) = post_notes(&app, Auth::Basic(&key), &request).await;

    assert_eq!(status, 200, "some notes were written: {body}");
    assert_eq!(
        body["response"]["status"]["code"], "201",
        "partial success: {body}"
    );
    assert_eq!(body["response"]["status"]["success_count"], "0");
    let customer = &body["response"]["customer"];
    assert_item_failed(customer, "1202");
    let notes = notes_of(customer);
    assert_item_ok(&notes[0], "Customer note added successfully");
    assert_eq!(notes[0]["description"], at_limit.as_str());
    assert_item_failed(&notes[1], "1202");
    assert_eq!(notes[1]["id"], "", "no id for a note not written");
    assert_item_ok(&notes[2], "Customer note added successfully");

    let mut alice = app.client(&key).await;
    let mut stored: Vec<String> = grpc_notes(&mut alice, "mobile:500")
        .await
        .iter()
        .map(|n| body_text(n).to_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, ["neighbour".to_owned(), at_limit.clone()]);

    // An update over the limit changes nothing.
    let id = notes[2]["id"].as_str().unwrap();
    let (status, body) = post_notes(
        &app,
        Auth::Basic(&key),
        &one_note("500", json!({"id": id, "description": "b".repeat(256)})),
    )
    .await;
    assert_eq!(status, 400, "nothing written: {body}");
    assert_eq!(body["response"]["status"]["code"], "500");
    assert_item_failed(&body["response"]["customer"]["notes"]["note"], "1202");
    let texts: Vec<String> = grpc_notes(&mut alice, "mobile:500")
        .await
        .iter()
        .map(|n| body_text(n).to_owned())
        .collect();
    assert!(texts.contains(&"neighbour".to_owned()), "{texts:?}");
}

#[tokio::test]
async fn dates_are_read_as_utc_and_a_bad_date_fails_only_its_note() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let request = one_note(
        "600",
        json!([
            {"description": "full", "date": "2020-01-02 03:04:05"},
            {"description": "day only", "date": "2020-02-03"},
            {"description": "no date"},
            {"description": "bad date", "date": "03/02/2020 10:00"}
        ]),
    );

    let (_, body) = post_notes(&app, Auth::Basic(&key), &request).await;

    let notes = notes_of(&body["response"]["customer"]);
    assert_eq!(notes[0]["date"], "2020-01-02 03:04:05");
    assert_eq!(notes[1]["date"], "2020-02-03 00:00:00");
    assert_item_failed(&notes[3], "1203");
    let mut alice = app.client(&key).await;
    let stored = grpc_notes(&mut alice, "mobile:600").await;
    assert_eq!(stored.len(), 3, "the bad date is not written");
    let by_text = |text: &str| {
        stored
            .iter()
            .find(|n| body_text(n) == text)
            .map(occur_time)
            .unwrap()
    };
    assert_eq!(by_text("full"), utc("2020-01-02T03:04:05Z"));
    assert_eq!(by_text("day only"), utc("2020-02-03T00:00:00Z"));
    let now = by_text("no date");
    assert!(
        now >= before && now <= chrono::Utc::now(),
        "defaults to now"
    );
    let echoed = notes[2]["date"].as_str().unwrap();
    assert_eq!(echoed, now.format("%Y-%m-%d %H:%M:%S").to_string());
}

#[tokio::test]
async fn notes_are_listed_by_each_identifier_kind() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;
    let cases = [
        ("mobile", "mobile", "44700900999"),
        ("email", "email", "cat@example.com"),
        ("external_id", "external_id", "ct123"),
        ("user_id", "id", "15"),
        ("user_id", "user_id", "16"),
    ];
    for (field, query, value) in cases {
        let (status, body) = post_notes(
            &app,
            Auth::Basic(&key),
            &json!({"root": {"customer": {field: value, "notes": {"note": [
                {"description": format!("older of {value}"), "date": "2016-09-04 15:12:00"},
                {"description": format!("newer of {value}"), "date": "2016-09-05 15:12:00"}
            ]}}}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let added = notes_of(&body["response"]["customer"]);

        let (status, listed) = get_notes(
            &app,
            Auth::Basic(&key),
            &format!("format=json&{query}={value}"),
        )
        .await;

        assert_eq!(status, 200, "{listed}");
        assert_eq!(
            listed["response"]["status"],
            json!({"success": "true", "code": "200", "message": "Success"})
        );
        let customer = &listed["response"]["customer"];
        assert_eq!(customer[field], value, "{listed}");
        assert_item_ok(customer, "Customer note retrieved successfully");
        assert_eq!(
            notes_of(customer),
            vec![
                json!({"id": added[1]["id"], "description": format!("newer of {value}"), "added_on": "2016-09-05 15:12:00"}),
                json!({"id": added[0]["id"], "description": format!("older of {value}"), "added_on": "2016-09-04 15:12:00"}),
            ],
            "listed by {query}"
        );
    }
    // An unknown customer has no notes.
    let (status, listed) = get_notes(&app, Auth::Basic(&key), "mobile=000").await;
    assert_eq!(status, 200);
    assert_eq!(listed["response"]["customer"]["notes"]["note"], json!([]));
}

#[tokio::test]
async fn a_note_added_over_grpc_is_listed_with_a_number_and_updatable_by_it() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;
    let mut alice = app.client(&key).await;
    let grpc_note = add(
        &mut alice,
        pb::Note {
            occur_time: timestamp(utc("2021-06-01T12:00:00Z")),
            ..text_note("customer", "mobile:919900000001", "added over gRPC")
        },
    )
    .await;

    let (status, listed) = get_notes(&app, Auth::Basic(&key), "mobile=919900000001").await;

    assert_eq!(status, 200, "{listed}");
    let note = &listed["response"]["customer"]["notes"]["note"];
    assert_eq!(note["description"], "added over gRPC");
    assert_eq!(note["added_on"], "2021-06-01 12:00:00");
    let id = note["id"].as_str().unwrap().to_owned();
    assert!(id.parse::<i64>().is_ok(), "{id}");

    let (_, again) = get_notes(&app, Auth::Basic(&key), "mobile=919900000001").await;
    assert_eq!(
        again["response"]["customer"]["notes"]["note"]["id"],
        id.as_str(),
        "the number is stable"
    );
    let (status, body) = post_notes(
        &app,
        Auth::Basic(&key),
        &one_note(
            "919900000001",
            json!({"id": id, "description": "edited in Capillary"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stored = get(&mut alice, &grpc_note.id).await.unwrap();
    assert_eq!(body_text(&stored), "edited in Capillary");
}

#[tokio::test]
async fn an_id_of_another_customer_or_tenant_or_no_note_fails_that_note_only() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;
    let (_, body) = post_notes(
        &app,
        Auth::Basic(&key),
        &one_note("700", json!({"description": "of 700"})),
    )
    .await;
    let id = body["response"]["customer"]["notes"]["note"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, body) = post_notes(
        &app,
        Auth::Basic(&key),
        &one_note(
            "701",
            json!([
                {"id": id, "description": "hijack"},
                {"id": "999999999", "description": "nobody"},
                {"id": "abc", "description": "bad id"},
                {"description": "fine"}
            ]),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let notes = notes_of(&body["response"]["customer"]);
    assert_item_failed(&notes[0], "1205");
    assert_item_failed(&notes[1], "1205");
    assert_item_failed(&notes[2], "1204");
    assert_item_ok(&notes[3], "Customer note added successfully");

    let other_tenant = app.member_key("capillary-other", "alice").await;
    let (status, body) = post_notes(
        &app,
        Auth::Basic(&other_tenant),
        &one_note("700", json!({"id": id, "description": "cross tenant"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_item_failed(&body["response"]["customer"]["notes"]["note"], "1205");

    let mut alice = app.client(&key).await;
    let stored = grpc_notes(&mut alice, "mobile:700").await;
    assert_eq!(body_text(&stored[0]), "of 700", "unchanged");
}

#[tokio::test]
async fn calls_without_a_valid_key_are_refused_with_capillary_401() {
    let app = spawn_app().await;
    let request = one_note("800", json!({"description": "x"}));
    for auth in [
        Auth::None,
        Auth::Basic("nk_not_a_key"),
        Auth::Bearer("nk_not_a_key"),
    ] {
        let (status, body) = post_notes(&app, auth, &request).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["response"]["status"]["success"], "false");
        assert_eq!(body["response"]["status"]["code"], "401");
    }
    let (status, _) = get_notes(&app, Auth::None, "mobile=800").await;
    assert_eq!(status, 401);

    // A service key names its actor in X-Actor-Id.
    let service = app.service_key(TENANT).await;
    let (status, body) = post_notes(&app, Auth::Header(&service), &request).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("MISSING_ACTOR"),
        "{body}"
    );
    let (status, body) = post_notes(&app, Auth::HeaderActor(&service, "store-42"), &request).await;
    assert_eq!(status, 200, "{body}");
    let mut admin = app.client(&app.admin_key(TENANT, "root").await).await;
    let stored = grpc_notes(&mut admin, "mobile:800").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].owner_id, "store-42");
}

#[tokio::test]
async fn unknown_fields_are_refused_where_they_stand_and_known_extras_ignored() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;

    // At the top, the whole request is refused.
    let (status, body) = post_notes(
        &app,
        Auth::Basic(&key),
        &json!({"root": {"customer": {"mobile": "900", "notes": {"note": {"description": "x"}}}, "extra": 1}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["response"]["status"]["code"], "400");

    // In a customer or a note, only that item fails.
    let request = json!({"root": {"customer": [
        {"mobile": "901", "nickname": "cat", "notes": {"note": {"description": "x"}}},
        {"mobile": "902", "firstname": "Catherine", "lastname": "Thomas", "associate_id": "443",
         "loyalty_id": "434412",
         "notes": {"note": [
            {"description": "kept"},
            {"description": "titled", "title": "no titles here"}
         ]}}
    ]}});
    let (status, body) = post_notes(&app, Auth::Basic(&key), &request).await;
    assert_eq!(status, 200, "{body}");
    let customers = items(&body["response"]["customer"]);
    assert_item_failed(&customers[0], "1102");
    assert!(
        customers[0]["item_status"]["message"]
            .as_str()
            .unwrap()
            .contains("nickname"),
        "{body}"
    );
    assert_item_failed(&notes_of(&customers[0])[0], "1102");
    assert_eq!(customers[1]["associate_id"], "443");
    assert_eq!(customers[1]["loyalty_id"], "434412");
    let notes = notes_of(&customers[1]);
    assert_item_ok(&notes[0], "Customer note added successfully");
    assert_item_failed(&notes[1], "1208");

    let mut alice = app.client(&key).await;
    assert!(grpc_notes(&mut alice, "mobile:901").await.is_empty());
    let stored = grpc_notes(&mut alice, "mobile:902").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(body_text(&stored[0]), "kept");
    assert!(
        stored[0]
            .related_subjects
            .iter()
            .any(|s| s.id == "loyalty_id:434412"),
        "{stored:?}"
    );
}

#[tokio::test]
async fn a_customer_without_identifier_or_notes_fails_alone() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;
    let request = json!({"root": {"customer": [
        {"mobile": "", "notes": {"note": {"description": "whose?"}}},
        {"mobile": "903"},
        {"mobile": 904, "notes": {"note": {"description": "numeric mobile"}}}
    ]}});

    let (status, body) = post_notes(&app, Auth::Basic(&key), &request).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["status"]["success_count"], "1");
    let customers = items(&body["response"]["customer"]);
    assert_item_failed(&customers[0], "1101");
    assert_item_failed(&customers[1], "1103");
    assert_eq!(customers[2]["mobile"], "904");
    assert_item_ok(&customers[2], "Customer note added successfully");
    let mut alice = app.client(&key).await;
    assert_eq!(grpc_notes(&mut alice, "mobile:904").await.len(), 1);
}

#[tokio::test]
async fn malformed_requests_are_refused_with_capillary_400() {
    let app = spawn_app().await;
    let key = app.member_key(TENANT, "alice").await;
    let cases = [
        post_raw(&app, "?format=json", Auth::Basic(&key), "{not json".into()).await,
        post_raw(
            &app,
            "",
            Auth::Basic(&key),
            json!({"customer": []}).to_string(),
        )
        .await,
        post_raw(
            &app,
            "?format=xml",
            Auth::Basic(&key),
            one_note("1", json!({"description": "x"})).to_string(),
        )
        .await,
        get_notes(&app, Auth::Basic(&key), "format=json").await,
        get_notes(&app, Auth::Basic(&key), "mobile=1&email=a@b.c").await,
        get_notes(&app, Auth::Basic(&key), "phone=1").await,
    ];
    for (status, body) in cases {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["response"]["status"]["success"], "false", "{body}");
        assert_eq!(body["response"]["status"]["code"], "400", "{body}");
    }
}
