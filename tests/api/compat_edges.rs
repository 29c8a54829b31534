//! The facades' edges, on every vendor: the framework's refusals in the
//! vendor's own shape, credentials checked before a body is read, an
//! unreachable database as 503, and read-modify-writes that lose no
//! concurrent change.

use std::time::Duration;

use notesd::proto::notes::v1 as pb;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::*;

/// The four vendors, and what their error bodies look like.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Vendor {
    Capillary,
    Fernand,
    Close,
    Zyntro,
}

const VENDORS: [Vendor; 4] = [
    Vendor::Capillary,
    Vendor::Fernand,
    Vendor::Close,
    Vendor::Zyntro,
];

impl Vendor {
    /// A path the vendor serves, and a method it serves there.
    fn served(self) -> (reqwest::Method, &'static str) {
        match self {
            Self::Capillary => (reqwest::Method::POST, "/v1.1/customer/notes"),
            Self::Fernand => (reqwest::Method::POST, "/conversations/7/notes"),
            Self::Close => (reqwest::Method::POST, "/api/v1/activity/note/"),
            Self::Zyntro => (
                reqwest::Method::POST,
                "/apis/v2/public/crm/addNotestoContact",
            ),
        }
    }

    /// A path under the vendor's prefix that nothing serves.
    fn unknown_path(self) -> &'static str {
        match self {
            Self::Capillary => "/v1.1/customer/notes/extra",
            Self::Fernand => "/conversations/7/notes/1/extra",
            Self::Close => "/api/v1/activity/call/",
            Self::Zyntro => "/apis/v2/public/crm/addNotes",
        }
    }

    /// Adds the vendor's credentials for `key` to a request.
    fn authenticated(self, request: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
        match self {
            Self::Capillary | Self::Fernand => Auth::Header(key).apply(request),
            Self::Close => Auth::Basic(key).apply(request),
            // Zyntro's credentials travel in the body.
            Self::Zyntro => Auth::None.apply(request),
        }
    }

    /// Asserts that `body` is an error in this vendor's shape.
    #[track_caller]
    fn assert_error_shape(self, status: u16, body: &Value) {
        match self {
            Self::Capillary => {
                let answered = &body["response"]["status"];
                assert_eq!(answered["success"], "false", "{body}");
                assert_eq!(answered["code"], status.to_string(), "{body}");
                assert!(answered["message"].is_string(), "{body}");
            }
            Self::Fernand => {
                assert!(body["error"].is_string(), "{body}");
                assert!(body["code"].is_string(), "{body}");
            }
            Self::Close => assert!(body["error"].is_string(), "{body}"),
            Self::Zyntro => {
                assert_eq!(body["status"], "error", "{body}");
                assert!(body["data"][0].is_string(), "{body}");
            }
        }
    }
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_in_each_vendors_shape() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    for vendor in VENDORS {
        let (status, body) = json_answer(http.get(app.http_url(vendor.unknown_path()))).await;
        assert_eq!(status, 404, "{vendor:?}: {body}");
        vendor.assert_error_shape(status, &body);

        let (_, path) = vendor.served();
        let (status, body) = json_answer(http.delete(app.http_url(path))).await;
        assert_eq!(status, 405, "{vendor:?}: {body}");
        vendor.assert_error_shape(status, &body);
    }
    // Outside every vendor's paths: still JSON, never an empty body.
    let (status, body) = json_answer(http.get(app.http_url("/nothing/here"))).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_answers_in_the_vendors_shape() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let http = reqwest::Client::new();
    let cases = [
        (
            Vendor::Close,
            reqwest::Method::GET,
            "/api/v1/activity/note/acti_%FF/",
        ),
        (
            Vendor::Close,
            reqwest::Method::PUT,
            "/api/v1/activity/note/%FF/",
        ),
        (
            Vendor::Fernand,
            reqwest::Method::POST,
            "/conversations/%FF/notes",
        ),
        (
            Vendor::Fernand,
            reqwest::Method::PATCH,
            "/conversations/7/notes/%FF",
        ),
    ];
    for (vendor, method, path) in cases {
        let request = vendor.authenticated(http.request(method, app.http_url(path)), &key);
        let (status, body) = json_answer(request.json(&json!({}))).await;
        assert_eq!(status, 400, "{path}: {body}");
        vendor.assert_error_shape(status, &body);
    }
}

#[tokio::test]
async fn a_body_over_each_vendors_limit_answers_in_its_shape() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let http = reqwest::Client::new();
    let limits = [
        (Vendor::Capillary, 2 * 1024 * 1024, 413),
        (Vendor::Close, 48 * 1024 * 1024, 413),
        (Vendor::Fernand, 6 * 10_485_760 + 1024 * 1024, 413),
        // Zyntro answers every error about a request with HTTP 200.
        (Vendor::Zyntro, 21 * 1024 * 1024, 200),
    ];
    for (vendor, limit, expected) in limits {
        let (method, path) = vendor.served();
        // One byte over: the server reads all of it to know.
        let request = vendor
            .authenticated(http.request(method, app.http_url(path)), &key)
            .header("content-type", "application/json")
            .body(vec![b' '; limit + 1]);
        let (status, body) = json_answer(request).await;
        assert_eq!(status, expected, "{vendor:?}: {body}");
        vendor.assert_error_shape(status, &body);
        assert!(
            body.to_string().contains(&limit.to_string()),
            "{vendor:?} names its limit: {body}"
        );
    }
}

/// Sends only the head of a POST announcing a 40 MB body, and reads the
/// answer: it comes without the body being sent, or the test times out.
async fn answer_to_a_head_alone(app: &TestApp, path: &str, headers: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: notesd\r\ncontent-type: application/json\r\n\
         content-length: 40000000\r\n{headers}\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buffer[..n]);
            if response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "{path}: no answer without the body: {:?}",
        String::from_utf8_lossy(&response)
    );
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn a_caller_without_credentials_is_refused_before_the_body_is_read() {
    let app = spawn_app().await;
    for vendor in [Vendor::Capillary, Vendor::Fernand, Vendor::Close] {
        let (_, path) = vendor.served();
        let response = answer_to_a_head_alone(&app, path, "").await;
        assert!(
            response.starts_with("HTTP/1.1 401"),
            "{vendor:?}: {response}"
        );
        let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
        let body: Value = serde_json::from_str(body).unwrap();
        vendor.assert_error_shape(401, &body);
    }
    // A wrong key is refused as early.
    let response = answer_to_a_head_alone(
        &app,
        Vendor::Close.served().1,
        "authorization: Bearer nk_00000000000000000000000000000000_nope\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
}

#[tokio::test]
async fn an_unreachable_database_is_a_503_in_each_vendors_shape() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    let key = app.member_key("acme", "alice").await;
    let zyntro_key = key.clone();
    proxy.cut();
    let http = reqwest::Client::new();
    let bodies = [
        (
            Vendor::Capillary,
            json!({"root": {"customer": {"mobile": "1", "notes": {"note": {"description": "x"}}}}}),
        ),
        (Vendor::Fernand, json!({"content": "<p>x</p>"})),
        (Vendor::Close, json!({"lead_id": "lead_1", "note": "x"})),
        (Vendor::Zyntro, {
            // `nk_<32 hex>` is the api_key, the rest the secret.
            let (api_key, secret) = zyntro_key.split_at("nk_".len() + 32);
            json!({
                "api_key": api_key, "developer_secret": &secret[1..], "org_id": "acme",
                "member_id": "alice", "contact_id": uuid::Uuid::now_v7().to_string(),
                "note": "x",
            })
        }),
    ];
    for (vendor, body) in bodies {
        let (method, path) = vendor.served();
        let request = vendor.authenticated(http.request(method, app.http_url(path)), &key);
        let (status, answered) = json_answer(request.json(&body)).await;
        assert_eq!(status, 503, "{vendor:?}: {answered}");
        vendor.assert_error_shape(status, &answered);
        assert!(
            answered.to_string().contains("unavailable"),
            "{vendor:?}: {answered}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_update_racing_a_grpc_update_loses_neither_change() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(app.http_url("/api/v1/activity/note/"))
        .basic_auth(&key, Some(""))
        .json(&json!({"lead_id": "lead_1", "contact_id": "cont_0", "note": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let close_id = created["id"].as_str().unwrap().to_owned();
    let mut client = app.client(&key).await;
    let note_id = {
        let listed = list_all(
            &mut client,
            pb::ListNotesRequest {
                subject: subject("lead", "lead_1"),
                ..Default::default()
            },
        )
        .await;
        listed[0].id.clone()
    };

    const ROUNDS: usize = 25;
    // Close moves the note from contact to contact...
    let close = {
        let (http, url, key) = (
            http.clone(),
            app.http_url(&format!("/api/v1/activity/note/{close_id}/")),
            key.clone(),
        );
        tokio::spawn(async move {
            for round in 1..=ROUNDS {
                // A PUT that met a concurrent change at every attempt is
                // refused cleanly (409, nothing written): the client sends
                // it again.
                loop {
                    let response = http
                        .put(&url)
                        .basic_auth(&key, Some(""))
                        .json(&json!({"contact_id": format!("cont_{round}")}))
                        .send()
                        .await
                        .unwrap();
                    match response.status().as_u16() {
                        200 => break,
                        409 => continue,
                        other => panic!("{other}: {}", response.text().await.unwrap()),
                    }
                }
            }
        })
    };
    // ...while gRPC adds a deal a round to its related subjects, by
    // read-modify-write with the etag. A Close PUT that wrote the related
    // subjects it read before a deal was added would drop that deal.
    let grpc = {
        let mut client = client.clone();
        let note_id = note_id.clone();
        tokio::spawn(async move {
            for round in 1..=ROUNDS {
                loop {
                    let note = get(&mut client, &note_id).await.unwrap();
                    let mut related = note.related_subjects.clone();
                    related.push(subject("deal", &format!("deal_{round:02}")).unwrap());
                    let change = pb::Note {
                        related_subjects: related,
                        etag: note.etag.clone(),
                        ..patch(&note_id)
                    };
                    match update(&mut client, change, &["related_subjects"]).await {
                        Ok(_) => break,
                        Err(status) if status.code() == tonic::Code::Aborted => continue,
                        Err(status) => panic!("{status:?}"),
                    }
                }
            }
        })
    };
    close.await.unwrap();
    grpc.await.unwrap();

    let note = get(&mut client, &note_id).await.unwrap();
    let mut related: Vec<(String, String)> = note
        .related_subjects
        .iter()
        .map(|s| (s.r#type.clone(), s.id.clone()))
        .collect();
    related.sort();
    let mut expected = vec![("contact".to_owned(), format!("cont_{ROUNDS}"))];
    expected.extend((1..=ROUNDS).map(|round| ("deal".to_owned(), format!("deal_{round:02}"))));
    assert_eq!(related, expected, "every change of each side is kept");
}

/// A tenant with 600 notes of 2 KB about leads and customers that the
/// listings below must not read, over a server behind a proxy that counts
/// what notesd reads from the database.
async fn crowded_tenant() -> (TestApp, DbProxy, String) {
    let (app, proxy) = spawn_app_behind_proxy().await;
    let key = app.member_key("acme", "alice").await;
    let client = app.client(&key).await;
    let filler = "f".repeat(2048);
    add_many(&client, 600, 16, |i| pb::Note {
        related_subjects: vec![subject("contact", &format!("cont_other_{i}")).unwrap()],
        ..text_note(
            if i % 2 == 0 { "lead" } else { "customer" },
            &format!("crowd_{i}"),
            &filler,
        )
    })
    .await;
    (app, proxy, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_listing_by_contact_reads_only_that_contacts_notes() {
    let (app, proxy, key) = crowded_tenant().await;
    let http = reqwest::Client::new();
    for lead in ["lead_a", "lead_b", "lead_c"] {
        let response = http
            .post(app.http_url("/api/v1/activity/note/"))
            .basic_auth(&key, Some(""))
            .json(&json!({"lead_id": lead, "contact_id": "cont_wanted", "note": "wanted"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let before = proxy.bytes_from_database();
    let (status, listed) = json_answer(
        http.get(app.http_url("/api/v1/activity/note/?contact_id=cont_wanted"))
            .basic_auth(&key, Some("")),
    )
    .await;
    let read = proxy.bytes_from_database() - before;
    assert_eq!(status, 200, "{listed}");
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{listed}");
    assert!(data.iter().all(|n| n["contact_id"] == "cont_wanted"));
    // The 600 other notes hold 1.2 MB: reading them would show.
    assert!(
        read < 64 * 1024,
        "notesd read {read} bytes from the database"
    );

    // A listing of every lead note pages in SQL too: one page of 2 notes
    // reads 3 (the extra one tells has_more), not the tenant.
    let before = proxy.bytes_from_database();
    let (status, listed) = json_answer(
        http.get(app.http_url("/api/v1/activity/note/?_limit=2"))
            .basic_auth(&key, Some("")),
    )
    .await;
    let read = proxy.bytes_from_database() - before;
    assert_eq!((status, listed["has_more"].as_bool()), (200, Some(true)));
    assert!(
        read < 64 * 1024,
        "notesd read {read} bytes from the database"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capillary_customer_is_found_by_any_identifier_it_was_written_with() {
    let (app, proxy, key) = crowded_tenant().await;
    let http = reqwest::Client::new();
    let response = http
        .post(app.http_url("/v1.1/customer/notes?format=json"))
        .header("x-api-key", &key)
        .json(&json!({"root": {"customer": {
            "mobile": "919999999999",
            "email": "ada@example.com",
            "notes": {"note": {"description": "found by either"}},
        }}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    for query in ["mobile=919999999999", "email=ada@example.com"] {
        let before = proxy.bytes_from_database();
        let (status, listed) = json_answer(
            http.get(app.http_url(&format!("/v1.1/customer/notes?{query}")))
                .header("x-api-key", &key),
        )
        .await;
        let read = proxy.bytes_from_database() - before;
        assert_eq!(status, 200, "{listed}");
        let text = listed["response"]["customer"]["notes"].to_string();
        assert!(text.contains("found by either"), "{query}: {listed}");
        assert!(
            read < 64 * 1024,
            "{query}: notesd read {read} bytes from the database"
        );
    }
}

#[tokio::test]
async fn facade_calls_beyond_the_in_flight_budget_are_shed_in_each_vendors_shape() {
    let app = spawn_app_with(|settings| settings.limits.max_in_flight = 0).await;
    let key = app.member_key("acme", "alice").await;
    let http = reqwest::Client::new();
    for vendor in VENDORS {
        let (method, path) = vendor.served();
        let request = vendor.authenticated(http.request(method, app.http_url(path)), &key);
        // Zyntro's request is shed once its body names its caller: its
        // credentials travel there.
        let body = match vendor {
            Vendor::Zyntro => {
                let (api_key, secret) = key.split_at("nk_".len() + 32);
                json!({
                    "api_key": api_key,
                    "developer_secret": secret.strip_prefix('_').unwrap(),
                })
            }
            _ => json!({}),
        };
        let (status, body) = json_answer(request.json(&body)).await;
        assert_eq!(status, 503, "{vendor:?}: {body}");
        vendor.assert_error_shape(status, &body);
        assert!(body.to_string().contains("too many"), "{vendor:?}: {body}");
    }
    let stored: i64 = sqlx::query_scalar("select count(*) from notes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    // Health and metrics are never shed: they are how an operator sees it.
    let health = http.get(app.http_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
