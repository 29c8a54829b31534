//! The fernand facade over real HTTP: see docs/compat/fernand.md.
//!
//! Requests go to `POST /conversations/{id}/notes` and `PATCH
//! /conversations/{id}/notes/{note_id}` on the HTTP port; what they write is
//! then read back over gRPC, as the same note.

use serde_json::{Value, json};

use crate::helpers::*;
use notesd::proto::notes::v1 as pb;

const TENANT: &str = "fernand-tenant";

/// Fernand's limit on `content`, in characters.
const MAX_CONTENT: usize = 10_485_760;

/// An HTTP answer: the status and the JSON body.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    /// Asserts a Fernand error: this status and notesd reason code.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status of {}", self.body);
        assert_eq!(self.body["code"], code, "code of {}", self.body);
        assert!(
            self.body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "an error message in {}",
            self.body
        );
    }

    /// The number of the note id `n-<number>` this answer returned.
    #[track_caller]
    fn number(&self) -> i64 {
        assert_eq!(self.status, 200, "{}", self.body);
        let id = self.body["id"].as_str().expect("a string id");
        id.strip_prefix("n-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("id {id} is n-<number>"))
    }
}

/// Sends `body` (raw bytes, so malformed JSON can be sent too) with these
/// headers.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut request = reqwest::Client::new()
        .request(method, app.http_url(path))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (status, body) = json_answer(request).await;
    Answer { status, body }
}

async fn post_note(app: &TestApp, key: &str, conversation: &str, body: Value) -> Answer {
    send(
        app,
        reqwest::Method::POST,
        &format!("/conversations/{conversation}/notes"),
        &[("X-API-Key", key)],
        body.to_string().into_bytes(),
    )
    .await
}

async fn patch_note(
    app: &TestApp,
    key: &str,
    conversation: &str,
    note_id: &str,
    body: Value,
) -> Answer {
    send(
        app,
        reqwest::Method::PATCH,
        &format!("/conversations/{conversation}/notes/{note_id}"),
        &[("X-API-Key", key)],
        body.to_string().into_bytes(),
    )
    .await
}

/// The notes gRPC lists about `conversation/<id>` for this key.
async fn grpc_notes(app: &TestApp, key: &str, conversation: &str) -> Vec<pb::Note> {
    let mut client = app.client(key).await;
    list_all(
        &mut client,
        pb::ListNotesRequest {
            subject: subject("conversation", conversation),
            ..Default::default()
        },
    )
    .await
}

/// The one note about `conversation/<id>` this key sees over gRPC, read
/// with GetNote.
async fn grpc_note(app: &TestApp, key: &str, conversation: &str) -> pb::Note {
    let listed = grpc_notes(app, key, conversation).await;
    assert_eq!(listed.len(), 1, "one note on conversation/{conversation}");
    let mut client = app.client(key).await;
    let got = get(&mut client, &listed[0].id).await.expect("GetNote");
    assert_eq!(got, listed[0], "GetNote and ListNotes agree");
    got
}

fn parse_time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a time string"))
        .unwrap_or_else(|_| panic!("{value} is ISO 8601"))
        .with_timezone(&chrono::Utc)
}

#[tokio::test]
async fn the_seed_post_example_answers_a_fernand_note_that_grpc_sees() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;
    let message = "<p>Customer mentioned they prefer email communication.</p>";

    let answer = post_note(
        &app,
        &agent,
        "12345",
        json!({"content": message, "mentions": ["42", "everyone"]}),
    )
    .await;

    let number = answer.number();
    let body = &answer.body;
    assert_eq!(body["id"], format!("n-{number}"));
    assert_eq!(body["conversation_id"], 12345);
    assert_eq!(body["message"], message);
    assert_eq!(body["type"], "NOTE");
    assert_eq!(body["timestamp"], body["created"]);
    assert_eq!(body["agent_id"], 42);
    assert_eq!(body["actions"], json!([]));
    assert_eq!(body["edited_at"], Value::Null);
    assert!(body.get("generated_id").is_none(), "{body}");
    let created = parse_time(&body["created"]);
    assert!((chrono::Utc::now() - created).num_seconds().abs() < 60);

    let note = grpc_note(&app, &agent, "12345").await;
    assert_eq!(note.subject, subject("conversation", "12345"));
    assert_eq!(note.owner_id, "42");
    assert_eq!(note.creator_id, "42");
    assert_eq!(note.visibility, pb::Visibility::Team as i32);
    assert_eq!(note.edit_policy, pb::EditPolicy::OwnerOnly as i32);
    let note_body = note.body.as_ref().unwrap();
    assert_eq!(note_body.html, message);
    assert_eq!(
        note_body.text,
        "Customer mentioned they prefer email communication."
    );
    assert_eq!(note.mentions, ["42", "everyone"]);
    assert!(!note.draft);
    assert_eq!(note.edit_time, None);
    assert_eq!(to_chrono(note.create_time.as_ref().unwrap()), created);

    // Another agent of the tenant reads it: Fernand notes are team notes.
    let colleague = app.member_key(TENANT, "7").await;
    assert_eq!(grpc_note(&app, &colleague, "12345").await.id, note.id);
}

#[tokio::test]
async fn the_seed_request_placeholder_is_accepted_and_its_unknown_tag_stripped() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;

    // The seeds' literal request body: `<string>` is no HTML element.
    let answer = post_note(&app, &agent, "12345", json!({"content": "<string>"})).await;

    answer.number();
    assert_eq!(answer.body["message"], "");
}

#[tokio::test]
async fn the_seed_patch_example_edits_the_note_and_sets_edited_at() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;
    let created = post_note(&app, &agent, "12345", json!({"content": "<p>first</p>"})).await;
    let number = created.number();
    assert_eq!(created.body["edited_at"], Value::Null);

    let edited = patch_note(
        &app,
        &agent,
        "12345",
        &number.to_string(),
        json!({
            "content": "<p>Customer mentioned they prefer email communication.</p>",
            "mentions": ["42", "everyone"]
        }),
    )
    .await;

    assert_eq!(edited.number(), number, "the same id");
    let body = &edited.body;
    assert_eq!(body["conversation_id"], 12345);
    assert_eq!(
        body["message"],
        "<p>Customer mentioned they prefer email communication.</p>"
    );
    assert_eq!(body["created"], created.body["created"]);
    assert_eq!(body["timestamp"], created.body["created"]);
    assert_eq!(body["type"], "NOTE");
    assert_eq!(body["agent_id"], 42);
    let edited_at = parse_time(&body["edited_at"]);
    assert!(edited_at >= parse_time(&body["created"]));

    let note = grpc_note(&app, &agent, "12345").await;
    assert_eq!(
        note.body.as_ref().unwrap().html,
        "<p>Customer mentioned they prefer email communication.</p>"
    );
    assert_eq!(note.mentions, ["42", "everyone"]);
    assert_eq!(to_chrono(note.edit_time.as_ref().unwrap()), edited_at);
    assert_eq!(note.revision, 2);
    let mut client = app.client(&agent).await;
    let history = revisions(&mut client, &note.id, 0, "").await.unwrap();
    let kinds: Vec<i32> = history.revisions.iter().map(|r| r.change_kind).collect();
    assert_eq!(
        kinds,
        [
            pb::ChangeKind::Updated as i32,
            pb::ChangeKind::Created as i32
        ]
    );
    assert_eq!(
        history.revisions[1]
            .note
            .as_ref()
            .unwrap()
            .body
            .as_ref()
            .unwrap()
            .html,
        "<p>first</p>"
    );
}

#[tokio::test]
async fn patch_without_mentions_keeps_them_and_empty_mentions_clear_them() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;
    let number = post_note(
        &app,
        &agent,
        "5",
        json!({"content": "one", "mentions": ["everyone"]}),
    )
    .await
    .number()
    .to_string();

    patch_note(&app, &agent, "5", &number, json!({"content": "two"})).await;
    assert_eq!(grpc_note(&app, &agent, "5").await.mentions, ["everyone"]);

    patch_note(
        &app,
        &agent,
        "5",
        &number,
        json!({"content": "three", "mentions": []}),
    )
    .await;
    let note = grpc_note(&app, &agent, "5").await;
    assert!(note.mentions.is_empty());
    assert_eq!(note.body.unwrap().text, "three");
}

#[tokio::test]
async fn only_the_author_may_patch_a_note() {
    let app = spawn_app().await;
    let author = app.member_key(TENANT, "42").await;
    let colleague = app.member_key(TENANT, "7").await;
    let number = post_note(&app, &author, "12345", json!({"content": "<p>mine</p>"}))
        .await
        .number();

    let refused = patch_note(
        &app,
        &colleague,
        "12345",
        &number.to_string(),
        json!({"content": "<p>theirs</p>"}),
    )
    .await;

    refused.assert_error(403, "NOT_OWNER");
    let note = grpc_note(&app, &author, "12345").await;
    assert_eq!(note.body.unwrap().html, "<p>mine</p>");
    assert_eq!(note.edit_time, None);
    assert_eq!(note.revision, 1);
}

#[tokio::test]
async fn content_of_exactly_the_limit_is_accepted_and_one_character_more_is_refused() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;

    let at_limit = "a".repeat(MAX_CONTENT);
    let accepted = post_note(&app, &agent, "1", json!({ "content": at_limit })).await;
    let number = accepted.number();
    assert_eq!(
        accepted.body["message"].as_str().map(str::len),
        Some(MAX_CONTENT)
    );

    let over = "a".repeat(MAX_CONTENT + 1);
    let refused = post_note(&app, &agent, "1", json!({ "content": over })).await;
    refused.assert_error(422, "FIELD_TOO_LARGE");
    assert_eq!(refused.body["field"], "content");
    assert_eq!(
        refused.body["error"],
        "content is longer than 10485760 characters"
    );

    let refused_edit = patch_note(
        &app,
        &agent,
        "1",
        &number.to_string(),
        json!({ "content": over }),
    )
    .await;
    refused_edit.assert_error(422, "FIELD_TOO_LARGE");
    assert_eq!(refused_edit.body["field"], "content");

    // Only the first note exists, unchanged.
    let note = grpc_note(&app, &agent, "1").await;
    assert_eq!(note.body.unwrap().html.len(), MAX_CONTENT);
    assert_eq!(note.revision, 1);
}

#[tokio::test]
async fn html_content_is_sanitized_before_it_is_stored_and_answered() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;

    let answer = post_note(
        &app,
        &agent,
        "9",
        json!({
            "content": "<p onclick=\"steal()\">Hi <b>there</b><script>alert(1)</script>\
                        <a href=\"javascript:alert(2)\">x</a></p>"
        }),
    )
    .await;

    answer.number();
    let message = answer.body["message"].as_str().unwrap();
    assert_eq!(
        message,
        "<p>Hi <b>there</b><a rel=\"noopener noreferrer\">x</a></p>"
    );
    let note = grpc_note(&app, &agent, "9").await;
    assert_eq!(note.body.unwrap().html, message);
}

#[tokio::test]
async fn mentions_actions_and_generated_id_are_kept_and_echoed() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;
    let actions = json!([
        {"type": "assign", "agent_id": 42, "ratio": 0.5},
        {"type": "tag", "tags": [1, "vip", true, null], "meta": {"by": "bot"}}
    ]);

    let answer = post_note(
        &app,
        &agent,
        "77",
        json!({
            "content": "<p>see</p>",
            "mentions": ["42", 7, "everyone"],
            "actions": actions,
            "generated_id": "client-Ünïcode-#1"
        }),
    )
    .await;

    answer.number();
    assert_eq!(answer.body["actions"], actions);
    assert_eq!(answer.body["generated_id"], "client-Ünïcode-#1");
    let note = grpc_note(&app, &agent, "77").await;
    assert_eq!(note.mentions, ["42", "7", "everyone"]);
    assert_eq!(note.client_reference, "client-Ünïcode-#1");
    let expected: Vec<prost_types::Struct> = actions
        .as_array()
        .unwrap()
        .iter()
        .map(|a| json_struct(a.clone()))
        .collect();
    assert_eq!(note.actions, expected);

    // A later PATCH answers the stored actions and generated id again.
    let edited = patch_note(
        &app,
        &agent,
        "77",
        &answer.number().to_string(),
        json!({"content": "<p>seen</p>"}),
    )
    .await;
    assert_eq!(edited.body["actions"], actions);
    assert_eq!(edited.body["generated_id"], "client-Ünïcode-#1");
}

#[tokio::test]
async fn a_mention_that_is_no_member_id_is_refused_naming_mentions() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;

    let refused = post_note(
        &app,
        &agent,
        "3",
        json!({"content": "x", "mentions": ["42", "two words"]}),
    )
    .await;

    refused.assert_error(422, "INVALID_FIELD");
    assert_eq!(refused.body["field"], "mentions[1]");
    assert!(grpc_notes(&app, &agent, "3").await.is_empty());
}

#[tokio::test]
async fn post_with_note_id_publishes_a_draft_of_the_conversation() {
    let app = spawn_app().await;
    let author = app.member_key(TENANT, "42").await;
    let colleague = app.member_key(TENANT, "7").await;
    let draft = post_note(
        &app,
        &author,
        "12345",
        json!({"content": "<p>draft</p>", "draft": true, "generated_id": "g-1"}),
    )
    .await;
    let number = draft.number();
    let note = grpc_note(&app, &author, "12345").await;
    assert!(note.draft);
    assert!(grpc_notes(&app, &colleague, "12345").await.is_empty());

    let published = post_note(
        &app,
        &author,
        "12345",
        json!({
            "content": "<p>final</p>",
            "note_id": number,
            "mentions": ["everyone"],
            "actions": [{"type": "close"}]
        }),
    )
    .await;

    assert_eq!(published.number(), number, "the draft's id");
    assert_eq!(published.body["message"], "<p>final</p>");
    assert_eq!(published.body["actions"], json!([{"type": "close"}]));
    assert_eq!(published.body["generated_id"], "g-1", "kept from the draft");
    let note = grpc_note(&app, &colleague, "12345").await;
    assert!(!note.draft);
    assert_eq!(note.body.unwrap().html, "<p>final</p>");
    assert_eq!(note.mentions, ["everyone"]);
    assert_eq!(note.revision, 2);
    assert_eq!(
        grpc_notes(&app, &author, "12345").await.len(),
        1,
        "no new note"
    );
}

#[tokio::test]
async fn post_with_note_id_of_a_published_note_updates_it_as_its_author() {
    let app = spawn_app().await;
    let author = app.member_key(TENANT, "42").await;
    let colleague = app.member_key(TENANT, "7").await;
    let number = post_note(&app, &author, "8", json!({"content": "v1"}))
        .await
        .number();

    let again = post_note(
        &app,
        &author,
        "8",
        json!({"content": "v2", "note_id": number}),
    )
    .await;
    assert_eq!(again.number(), number);
    assert_eq!(again.body["message"], "v2");
    assert!(again.body["edited_at"].is_string());

    post_note(
        &app,
        &colleague,
        "8",
        json!({"content": "v3", "note_id": number}),
    )
    .await
    .assert_error(403, "NOT_OWNER");
    let back_to_draft = post_note(
        &app,
        &author,
        "8",
        json!({"content": "v4", "note_id": number, "draft": true}),
    )
    .await;
    back_to_draft.assert_error(422, "INVALID_FIELD");
    assert_eq!(back_to_draft.body["field"], "draft");
    assert_eq!(grpc_note(&app, &author, "8").await.body.unwrap().text, "v2");
}

#[tokio::test]
async fn a_note_id_of_another_conversation_is_not_found() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;
    let number = post_note(&app, &agent, "100", json!({"content": "here"}))
        .await
        .number();

    patch_note(
        &app,
        &agent,
        "200",
        &number.to_string(),
        json!({"content": "x"}),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    post_note(
        &app,
        &agent,
        "200",
        json!({"content": "x", "note_id": number}),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    assert!(grpc_notes(&app, &agent, "200").await.is_empty());
    assert_eq!(grpc_note(&app, &agent, "100").await.revision, 1);
}

#[tokio::test]
async fn an_unknown_note_id_is_not_found() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;

    patch_note(&app, &agent, "1", "999999", json!({"content": "x"}))
        .await
        .assert_error(404, "NOT_FOUND");
    post_note(
        &app,
        &agent,
        "1",
        json!({"content": "x", "note_id": 999999}),
    )
    .await
    .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn another_tenants_note_number_is_not_found() {
    let app = spawn_app().await;
    let ours = app.member_key(TENANT, "42").await;
    let theirs = app.member_key("other-tenant", "42").await;
    let number = post_note(&app, &ours, "1", json!({"content": "ours"}))
        .await
        .number();

    patch_note(
        &app,
        &theirs,
        "1",
        &number.to_string(),
        json!({"content": "x"}),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    assert_eq!(grpc_note(&app, &ours, "1").await.body.unwrap().text, "ours");
}

#[tokio::test]
async fn a_missing_or_invalid_api_key_is_unauthorized() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;
    let number = post_note(&app, &agent, "1", json!({"content": "x"}))
        .await
        .number()
        .to_string();
    let body = json!({"content": "y"}).to_string().into_bytes();
    let post = || reqwest::Method::POST;
    let patch = || reqwest::Method::PATCH;
    let note_path = format!("/conversations/1/notes/{number}");

    send(&app, post(), "/conversations/1/notes", &[], body.clone())
        .await
        .assert_error(401, "MISSING_API_KEY");
    send(&app, patch(), &note_path, &[], body.clone())
        .await
        .assert_error(401, "MISSING_API_KEY");
    let wrong = [("X-API-Key", "nk_00000000000000000000000000000000_nope")];
    send(&app, post(), "/conversations/1/notes", &wrong, body.clone())
        .await
        .assert_error(401, "INVALID_API_KEY");
    send(&app, patch(), &note_path, &wrong, body.clone())
        .await
        .assert_error(401, "INVALID_API_KEY");
    // A gRPC-style bearer token is not Fernand's scheme.
    let bearer = format!("Bearer {agent}");
    send(
        &app,
        post(),
        "/conversations/1/notes",
        &[("Authorization", bearer.as_str())],
        body,
    )
    .await
    .assert_error(401, "MISSING_API_KEY");
    assert_eq!(grpc_note(&app, &agent, "1").await.revision, 1);
}

#[tokio::test]
async fn a_service_key_acts_as_the_agent_named_in_x_actor_id() {
    let app = spawn_app().await;
    let service = app.service_key(TENANT).await;
    let body = json!({"content": "by a bot"}).to_string().into_bytes();

    let answer = send(
        &app,
        reqwest::Method::POST,
        "/conversations/4/notes",
        &[("X-API-Key", service.as_str()), ("X-Actor-Id", "314")],
        body.clone(),
    )
    .await;
    answer.number();
    assert_eq!(answer.body["agent_id"], 314);
    let agent = app.member_key(TENANT, "314").await;
    assert_eq!(grpc_note(&app, &agent, "4").await.owner_id, "314");

    send(
        &app,
        reqwest::Method::POST,
        "/conversations/4/notes",
        &[("X-API-Key", service.as_str())],
        body,
    )
    .await
    .assert_error(401, "MISSING_ACTOR");
}

#[tokio::test]
async fn an_agent_whose_member_id_is_not_an_integer_has_a_null_agent_id() {
    let app = spawn_app().await;
    let alice = app.member_key(TENANT, "alice").await;

    let answer = post_note(&app, &alice, "6", json!({"content": "hello"})).await;

    answer.number();
    assert_eq!(answer.body["agent_id"], Value::Null);
    assert_eq!(grpc_note(&app, &alice, "6").await.owner_id, "alice");
}

#[tokio::test]
async fn unknown_fields_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;

    let refused = post_note(&app, &agent, "2", json!({"content": "x", "colour": "red"})).await;
    refused.assert_error(422, "INVALID_FIELD");
    assert!(refused.body["error"].as_str().unwrap().contains("colour"));
    assert!(grpc_notes(&app, &agent, "2").await.is_empty());

    let number = post_note(&app, &agent, "2", json!({"content": "x"}))
        .await
        .number();
    // PATCH takes content and mentions only.
    let refused = patch_note(
        &app,
        &agent,
        "2",
        &number.to_string(),
        json!({"content": "y", "actions": []}),
    )
    .await;
    refused.assert_error(422, "INVALID_FIELD");
    assert!(refused.body["error"].as_str().unwrap().contains("actions"));
    assert_eq!(grpc_note(&app, &agent, "2").await.revision, 1);
}

#[tokio::test]
async fn missing_content_and_malformed_requests_are_refused() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;
    let key = [("X-API-Key", agent.as_str())];

    let missing = post_note(&app, &agent, "3", json!({"mentions": ["42"]})).await;
    missing.assert_error(422, "MISSING_FIELDS");
    assert_eq!(missing.body["field"], "content");
    post_note(&app, &agent, "3", json!({"content": "   "}))
        .await
        .assert_error(422, "MISSING_FIELDS");
    post_note(&app, &agent, "3", json!({"content": 5}))
        .await
        .assert_error(422, "INVALID_FIELD");
    send(
        &app,
        reqwest::Method::POST,
        "/conversations/3/notes",
        &key,
        b"{\"content\": ".to_vec(),
    )
    .await
    .assert_error(400, "INVALID_JSON");
    let bad_id = post_note(&app, &agent, "abc", json!({"content": "x"})).await;
    bad_id.assert_error(400, "INVALID_FIELD");
    assert_eq!(bad_id.body["field"], "id");
    let prefixed = patch_note(&app, &agent, "3", "n-1", json!({"content": "x"})).await;
    prefixed.assert_error(400, "INVALID_FIELD");
    assert_eq!(prefixed.body["field"], "note_id");
    assert!(grpc_notes(&app, &agent, "3").await.is_empty());
}

#[tokio::test]
async fn a_note_deleted_over_grpc_is_not_found_to_patch() {
    let app = spawn_app().await;
    let agent = app.member_key(TENANT, "42").await;
    let number = post_note(&app, &agent, "11", json!({"content": "x"}))
        .await
        .number();
    let note = grpc_note(&app, &agent, "11").await;
    let mut client = app.client(&agent).await;
    delete(&mut client, &note.id, "").await.unwrap();

    patch_note(
        &app,
        &agent,
        "11",
        &number.to_string(),
        json!({"content": "y"}),
    )
    .await
    .assert_error(404, "NOTE_DELETED");
}
