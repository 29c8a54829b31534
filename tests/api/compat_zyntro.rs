//! The zyntro facade over real HTTP: see docs/compat/zyntro.md.

use notesd::KeyKind;
use notesd::proto::notes::v1 as pb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    TestApp, body_text, get, json_answer, key_spec, member_kind, register_subject, registration,
    spawn_app, text_note, try_add,
};

const PATH: &str = "/apis/v2/public/crm/addNotestoContact";
/// The contact of the seed's examples.
const CONTACT: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";

/// A tenant whose contact CONTACT is owned by `owner` (owner-only notes),
/// and a service key split into Zyntro's `api_key` and `developer_secret`.
struct Zyntro {
    app: TestApp,
    org: String,
    owner: String,
    api_key: String,
    developer_secret: String,
}

/// Splits a notesd key `nk_<id>_<secret>` into `("nk_<id>", "<secret>")`.
fn split_key(key: &str) -> (String, String) {
    let (api_key, secret) = key.split_at("nk_".len() + 32);
    (
        api_key.to_owned(),
        secret
            .strip_prefix('_')
            .expect("nk_<id>_<secret>")
            .to_owned(),
    )
}

/// Registers `contact` in `org` as owned by `owner`, with owner-only notes.
async fn register_contact(app: &TestApp, org: &str, owner: &str, contact: &str) {
    let key = app.member_key(org, owner).await;
    let mut subjects = app.subjects(&key).await;
    register_subject(&mut subjects, registration("contact", contact, owner, true))
        .await
        .expect("the contact registers");
}

impl Zyntro {
    async fn new() -> Self {
        let app = spawn_app().await;
        let org = Uuid::now_v7().to_string();
        let owner = Uuid::now_v7().to_string();
        register_contact(&app, &org, &owner, CONTACT).await;
        let (api_key, developer_secret) = split_key(&app.service_key(&org).await);
        Self {
            app,
            org,
            owner,
            api_key,
            developer_secret,
        }
    }

    /// The seed's request example, with this tenant's credentials and ids.
    fn seed_example(&self) -> Value {
        json!({
            "note": "Had a great demo call. Interested in the enterprise plan. Follow up next week.",
            "org_id": self.org,
            "api_key": self.api_key,
            "member_id": self.owner,
            "contact_id": CONTACT,
            "note_editable": 0,
            "note_visibility": 1,
            "developer_secret": self.developer_secret,
        })
    }

    /// A request with only the required fields.
    fn minimal(&self, note: &str) -> Value {
        json!({
            "api_key": self.api_key,
            "developer_secret": self.developer_secret,
            "org_id": self.org,
            "member_id": self.owner,
            "contact_id": CONTACT,
            "note": note,
        })
    }

    async fn post(&self, body: &Value) -> (StatusCode, Value) {
        post_with(&reqwest::Client::new(), &self.app, body).await
    }

    /// A gRPC client acting as the contact's owner.
    async fn owner_client(&self) -> crate::helpers::Client {
        self.app.member(&self.org, &self.owner).await
    }

    async fn note_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from notes")
            .fetch_one(&self.app.pool)
            .await
            .expect("counts notes")
    }

    /// Sends `body`, expects Zyntro's error envelope with `code` and the
    /// single message `message`, and checks nothing was written.
    async fn assert_refused(&self, body: &Value, code: &str, message: &str) {
        let before = self.note_count().await;
        let (status, response) = self.post(body).await;
        assert_error(status, &response, code, &[message]);
        assert_eq!(self.note_count().await, before, "nothing is written");
    }
}

async fn post_with(client: &reqwest::Client, app: &TestApp, body: &Value) -> (StatusCode, Value) {
    let (status, body) = json_answer(client.post(app.http_url(PATH)).json(body)).await;
    (StatusCode::from_u16(status).unwrap(), body)
}

/// Zyntro's error shape: HTTP 200, `status: error`, the messages in
/// `data`, and notesd's `code` beside them.
#[track_caller]
fn assert_error(status: StatusCode, response: &Value, code: &str, messages: &[&str]) {
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["status"], "error", "{response}");
    assert_eq!(response["code"], code, "{response}");
    assert_eq!(response["data"], json!(messages), "{response}");
    assert_eq!(
        response.as_object().unwrap().len(),
        3,
        "only data, status and code: {response}"
    );
}

/// The `data` of a success, checking the envelope and its five fields.
#[track_caller]
fn success_data(status: StatusCode, response: &Value) -> &serde_json::Map<String, Value> {
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["status"], "success", "{response}");
    let data = response["data"].as_object().expect("data is an object");
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "contact_id",
            "note_content",
            "note_editable",
            "note_id",
            "note_visibility"
        ]
    );
    data
}

fn note_id(data: &serde_json::Map<String, Value>) -> String {
    let id = data["note_id"].as_str().expect("note_id is a string");
    Uuid::try_parse(id).expect("note_id is a UUID");
    id.to_owned()
}

// ---------------------------------------------------------------------------
// Golden: the seed's examples.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_seeds_request_example_adds_a_team_visible_read_only_note_to_the_contact() {
    let z = Zyntro::new().await;

    let (status, response) = z.post(&z.seed_example()).await;

    let data = success_data(status, &response);
    let id = note_id(data);
    assert_eq!(data["contact_id"], CONTACT);
    assert_eq!(
        data["note_content"],
        "Had a great demo call. Interested in the enterprise plan. Follow up next week."
    );
    assert_eq!(data["note_editable"], 0);
    assert_eq!(data["note_visibility"], 1);

    let note = get(&mut z.owner_client().await, &id)
        .await
        .expect("the same note over gRPC");
    assert_eq!(note.id, id);
    assert_eq!(
        note.subject,
        Some(pb::Subject {
            r#type: "contact".to_owned(),
            id: CONTACT.to_owned()
        })
    );
    assert_eq!(note.owner_id, z.owner);
    assert_eq!(note.creator_id, z.owner);
    assert_eq!(note.visibility, pb::Visibility::Team as i32);
    assert_eq!(note.edit_policy, pb::EditPolicy::OwnerOnly as i32);
    assert_eq!(
        body_text(&note),
        "Had a great demo call. Interested in the enterprise plan. Follow up next week."
    );
}

#[tokio::test]
async fn the_seeds_curl_sample_answers_like_the_seeds_success_response() {
    let z = Zyntro::new().await;
    let body = json!({
        "api_key": z.api_key,
        "developer_secret": z.developer_secret,
        "org_id": z.org,
        "member_id": z.owner,
        "contact_id": CONTACT,
        "note": "Had a great demo call. Interested in the enterprise plan.",
        "note_visibility": 1
    });

    let (status, response) = z.post(&body).await;

    let data = success_data(status, &response);
    let id = note_id(data);
    // The seed's response, with the server's id.
    assert_eq!(
        response,
        json!({
            "data": {
                "note_id": id,
                "contact_id": CONTACT,
                "note_content": "Had a great demo call. Interested in the enterprise plan.",
                "note_editable": 0,
                "note_visibility": 1
            },
            "status": "success"
        })
    );
    let note = get(&mut z.owner_client().await, &id).await.unwrap();
    assert_eq!(note.visibility, pb::Visibility::Team as i32);
    assert_eq!(note.edit_policy, pb::EditPolicy::OwnerOnly as i32);
}

#[tokio::test]
async fn omitted_flags_make_a_private_read_only_note_others_cannot_see() {
    let z = Zyntro::new().await;

    let (status, response) = z.post(&z.minimal("just for me")).await;

    let data = success_data(status, &response);
    assert_eq!(data["note_visibility"], 0);
    assert_eq!(data["note_editable"], 0);
    let id = note_id(data);
    let note = get(&mut z.owner_client().await, &id).await.unwrap();
    assert_eq!(note.visibility, pb::Visibility::Private as i32);
    assert_eq!(note.edit_policy, pb::EditPolicy::OwnerOnly as i32);
    let mut colleague = z.app.member(&z.org, "colleague").await;
    assert_eq!(
        get(&mut colleague, &id).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
}

#[tokio::test]
async fn flags_of_one_make_a_note_the_team_can_read_and_edit() {
    let z = Zyntro::new().await;
    let mut body = z.minimal("shared");
    body["note_visibility"] = json!(1);
    body["note_editable"] = json!(1);

    let (status, response) = z.post(&body).await;

    let data = success_data(status, &response);
    assert_eq!(data["note_visibility"], 1);
    assert_eq!(data["note_editable"], 1);
    let id = note_id(data);
    let mut colleague = z.app.member(&z.org, "colleague").await;
    let note = get(&mut colleague, &id).await.expect("the team reads it");
    assert_eq!(note.visibility, pb::Visibility::Team as i32);
    assert_eq!(note.edit_policy, pb::EditPolicy::Team as i32);
    let mut change = crate::helpers::patch(&id);
    change.body = crate::helpers::text_body("edited by a colleague");
    crate::helpers::update(&mut colleague, change, &["body"])
        .await
        .expect("the team edits it");
}

// ---------------------------------------------------------------------------
// Updates: note_id round-trips.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_returned_note_id_updates_the_same_note() {
    let z = Zyntro::new().await;
    let (status, response) = z.post(&z.seed_example()).await;
    let id = note_id(success_data(status, &response));

    let mut body = z.minimal("Follow-up booked for Tuesday.");
    body["note_id"] = json!(id);
    body["note_editable"] = json!(1);
    let (status, response) = z.post(&body).await;

    let data = success_data(status, &response);
    assert_eq!(data["note_id"], id.as_str(), "the same note");
    assert_eq!(data["note_content"], "Follow-up booked for Tuesday.");
    assert_eq!(data["note_editable"], 1);
    assert_eq!(data["note_visibility"], 1, "a flag not sent is kept");
    let note = get(&mut z.owner_client().await, &id).await.unwrap();
    assert_eq!(body_text(&note), "Follow-up booked for Tuesday.");
    assert_eq!(note.edit_policy, pb::EditPolicy::Team as i32);
    assert_eq!(note.visibility, pb::Visibility::Team as i32);
    assert_eq!(note.revision, 2);
    assert_eq!(z.note_count().await, 1, "no second note");
}

#[tokio::test]
async fn an_empty_note_id_adds_a_new_note() {
    let z = Zyntro::new().await;
    let (status, response) = z.post(&z.minimal("first")).await;
    let first = note_id(success_data(status, &response));

    let mut body = z.minimal("second");
    body["note_id"] = json!("");
    let (status, response) = z.post(&body).await;

    let second = note_id(success_data(status, &response));
    assert_ne!(first, second);
    assert_eq!(z.note_count().await, 2);
}

#[tokio::test]
async fn a_note_added_over_grpc_is_updated_through_the_facade() {
    let z = Zyntro::new().await;
    let mut owner = z.owner_client().await;
    let note = try_add(&mut owner, text_note("contact", CONTACT, "from gRPC"))
        .await
        .unwrap();

    let mut body = z.minimal("from Zyntro");
    body["note_id"] = json!(note.id);
    body["note_visibility"] = json!(0);
    let (status, response) = z.post(&body).await;

    let data = success_data(status, &response);
    assert_eq!(data["note_id"], note.id.as_str());
    assert_eq!(data["note_visibility"], 0);
    let after = get(&mut owner, &note.id).await.unwrap();
    assert_eq!(body_text(&after), "from Zyntro");
    assert_eq!(after.visibility, pb::Visibility::Private as i32);
}

#[tokio::test]
async fn a_note_id_of_another_contact_is_not_found_and_left_unchanged() {
    let z = Zyntro::new().await;
    let other_contact = Uuid::now_v7().to_string();
    register_contact(&z.app, &z.org, &z.owner, &other_contact).await;
    let mut owner = z.owner_client().await;
    let note = try_add(
        &mut owner,
        text_note("contact", &other_contact, "elsewhere"),
    )
    .await
    .unwrap();

    let mut body = z.minimal("hijack");
    body["note_id"] = json!(note.id);
    z.assert_refused(&body, "NOT_FOUND", "Note does not exist")
        .await;

    assert_eq!(
        body_text(&get(&mut owner, &note.id).await.unwrap()),
        "elsewhere"
    );
}

#[tokio::test]
async fn an_unknown_note_id_is_not_found() {
    let z = Zyntro::new().await;
    for unknown in [Uuid::now_v7().to_string(), "not-a-uuid".to_owned()] {
        let mut body = z.minimal("x");
        body["note_id"] = json!(unknown);
        z.assert_refused(&body, "NOT_FOUND", "Note does not exist")
            .await;
    }
}

// ---------------------------------------------------------------------------
// Zyntro's nine error codes.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_or_empty_api_key_is_missing_api_key() {
    let z = Zyntro::new().await;
    let mut body = z.seed_example();
    body.as_object_mut().unwrap().remove("api_key");
    z.assert_refused(&body, "MISSING_API_KEY", "Missing service instance")
        .await;
    body["api_key"] = json!("");
    z.assert_refused(&body, "MISSING_API_KEY", "Missing service instance")
        .await;
}

#[tokio::test]
async fn an_api_key_naming_no_live_key_is_invalid_api_key() {
    let z = Zyntro::new().await;
    let mut body = z.seed_example();
    body["api_key"] = json!(format!("nk_{}", Uuid::now_v7().simple()));
    z.assert_refused(&body, "INVALID_API_KEY", "Invalid API Key")
        .await;
    body["api_key"] = json!("YOUR_API_KEY");
    z.assert_refused(&body, "INVALID_API_KEY", "Invalid API Key")
        .await;
}

#[tokio::test]
async fn a_revoked_key_is_invalid_api_key() {
    let z = Zyntro::new().await;
    let id = Uuid::try_parse(&z.api_key["nk_".len()..]).unwrap();
    sqlx::query("update api_keys set revoked_at = now() where id = $1")
        .bind(id)
        .execute(&z.app.pool)
        .await
        .unwrap();
    z.assert_refused(&z.seed_example(), "INVALID_API_KEY", "Invalid API Key")
        .await;
}

#[tokio::test]
async fn a_call_from_outside_the_keys_allowlist_is_ip_not_whitelisted() {
    let z = Zyntro::new().await;
    let (_, key) = z
        .app
        .issue_key(&z.org, key_spec(KeyKind::Service, &["127.0.0.2/32"]))
        .await;
    let (api_key, developer_secret) = split_key(&key);
    let mut body = z.seed_example();
    body["api_key"] = json!(api_key);
    body["developer_secret"] = json!(developer_secret);

    // reqwest connects from 127.0.0.1.
    z.assert_refused(&body, "IP_NOT_WHITELISTED", "IP address not whitelisted")
        .await;

    let from_allowed = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let (status, response) = post_with(&from_allowed, &z.app, &body).await;
    success_data(status, &response);
}

#[tokio::test]
async fn a_wrong_developer_secret_is_invalid_developer_secret() {
    let z = Zyntro::new().await;
    let mut body = z.seed_example();
    body["developer_secret"] = json!("zdk_not_the_secret");
    z.assert_refused(
        &body,
        "INVALID_DEVELOPER_SECRET",
        "Invalid developer_secret",
    )
    .await;
}

#[tokio::test]
async fn a_missing_or_empty_developer_secret_is_missing_developer_secret() {
    let z = Zyntro::new().await;
    let mut body = z.seed_example();
    body.as_object_mut().unwrap().remove("developer_secret");
    z.assert_refused(
        &body,
        "MISSING_DEVELOPER_SECRET",
        "Missing developer_secret",
    )
    .await;
    body["developer_secret"] = json!("  ");
    z.assert_refused(
        &body,
        "MISSING_DEVELOPER_SECRET",
        "Missing developer_secret",
    )
    .await;
}

#[tokio::test]
async fn each_missing_field_is_named_in_missing_fields() {
    let z = Zyntro::new().await;
    for (field, message) in [
        ("org_id", "Missing org ID"),
        ("member_id", "Missing member ID"),
        ("contact_id", "Missing contact ID"),
        ("note", "Missing note"),
    ] {
        let mut body = z.seed_example();
        body.as_object_mut().unwrap().remove(field);
        z.assert_refused(&body, "MISSING_FIELDS", message).await;
        body[field] = json!("");
        z.assert_refused(&body, "MISSING_FIELDS", message).await;
    }
}

#[tokio::test]
async fn all_missing_fields_are_listed_together() {
    let z = Zyntro::new().await;
    let body = json!({
        "api_key": z.api_key,
        "developer_secret": z.developer_secret,
    });
    let (status, response) = z.post(&body).await;
    assert_error(
        status,
        &response,
        "MISSING_FIELDS",
        &[
            "Missing org ID",
            "Missing member ID",
            "Missing contact ID",
            "Missing note",
        ],
    );
    assert_eq!(z.note_count().await, 0);
}

#[tokio::test]
async fn an_unregistered_contact_is_not_found() {
    let z = Zyntro::new().await;
    let mut body = z.seed_example();
    body["contact_id"] = json!(Uuid::now_v7().to_string());
    z.assert_refused(&body, "NOT_FOUND", "Contact does not exist")
        .await;
    body["contact_id"] = json!("not-a-uuid");
    z.assert_refused(&body, "NOT_FOUND", "Contact does not exist")
        .await;
}

#[tokio::test]
async fn a_contact_of_another_organization_is_wrong_org() {
    let z = Zyntro::new().await;
    let elsewhere = Uuid::now_v7().to_string();
    register_contact(&z.app, "another-org", &z.owner, &elsewhere).await;
    let mut body = z.seed_example();
    body["contact_id"] = json!(elsewhere);
    z.assert_refused(
        &body,
        "WRONG_ORG",
        "You are trying to add a note to a contact that does not belong to your organization",
    )
    .await;
}

#[tokio::test]
async fn a_member_who_does_not_own_the_contact_is_not_owner() {
    let z = Zyntro::new().await;
    let mut body = z.seed_example();
    body["member_id"] = json!(Uuid::now_v7().to_string());
    z.assert_refused(
        &body,
        "NOT_OWNER",
        "The API only supports notes being added by the member that owns the contact.",
    )
    .await;
}

#[tokio::test]
async fn the_contact_owner_rule_holds_without_owner_only_notes_too() {
    let z = Zyntro::new().await;
    let open_contact = Uuid::now_v7().to_string();
    let key = z.app.member_key(&z.org, &z.owner).await;
    register_subject(
        &mut z.app.subjects(&key).await,
        registration("contact", &open_contact, &z.owner, false),
    )
    .await
    .unwrap();
    let mut body = z.seed_example();
    body["contact_id"] = json!(open_contact);
    body["member_id"] = json!("someone-else");
    z.assert_refused(
        &body,
        "NOT_OWNER",
        "The API only supports notes being added by the member that owns the contact.",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Credentials against org_id and member_id; the request's shape.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_org_id_other_than_the_keys_tenant_is_invalid_api_key() {
    let z = Zyntro::new().await;
    let mut body = z.seed_example();
    body["org_id"] = json!(Uuid::now_v7().to_string());
    z.assert_refused(&body, "INVALID_API_KEY", "Invalid API Key")
        .await;
}

#[tokio::test]
async fn a_member_key_works_for_its_own_member_only() {
    let z = Zyntro::new().await;
    let (_, key) = z
        .app
        .issue_key(&z.org, key_spec(member_kind(&z.owner), &[]))
        .await;
    let (api_key, developer_secret) = split_key(&key);
    let mut body = z.seed_example();
    body["api_key"] = json!(api_key);
    body["developer_secret"] = json!(developer_secret);
    let (status, response) = z.post(&body).await;
    success_data(status, &response);

    body["member_id"] = json!("someone-else");
    z.assert_refused(&body, "INVALID_API_KEY", "Invalid API Key")
        .await;
}

#[tokio::test]
async fn unknown_fields_are_refused_and_nothing_is_written() {
    let z = Zyntro::new().await;
    let mut body = z.seed_example();
    body["note_visiblity"] = json!(1);
    let before = z.note_count().await;
    let (status, response) = z.post(&body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response["status"], "error");
    assert_eq!(response["code"], "INVALID_FIELD");
    assert!(
        response["data"][0]
            .as_str()
            .unwrap()
            .contains("unknown field `note_visiblity`"),
        "{response}"
    );
    assert_eq!(z.note_count().await, before);
}

#[tokio::test]
async fn a_flag_other_than_0_or_1_is_refused() {
    let z = Zyntro::new().await;
    let mut body = z.seed_example();
    body["note_visibility"] = json!(2);
    z.assert_refused(
        &body,
        "INVALID_FIELD",
        "note_visibility must be 0 or 1, not 2",
    )
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_zyntros_error_shape() {
    let z = Zyntro::new().await;
    let response = reqwest::Client::new()
        .post(z.app.http_url(PATH))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response: Value = response.json().await.unwrap();
    assert_eq!(response["status"], "error");
    assert_eq!(response["code"], "INVALID_FIELD");
    assert_eq!(z.note_count().await, 0);
}
