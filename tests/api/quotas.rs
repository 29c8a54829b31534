//! Quotas per tenant and per key (docs/quotas.md): the rate with its burst
//! and refill, the caps on calls, watches and connections, the overrides
//! from the CLI on every replica, and the answers on gRPC and on every
//! facade.

use std::process::Output;
use std::time::{Duration, Instant};

use notesd::proto::notes::v1 as pb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::cli::run_notesd as notesd;
use crate::deadlines::lock_note;
use crate::helpers::*;

/// The id of a key `nk_<id>_<secret>`.
fn key_id(key: &str) -> Uuid {
    Uuid::try_parse(&key[3..35]).expect("a key names its id")
}

/// A response header of a gRPC answer, as text.
fn header(metadata: &tonic::metadata::MetadataMap, name: &str) -> Option<String> {
    metadata
        .get(name)
        .map(|value| value.to_str().expect("text").to_owned())
}

/// `ratelimit-limit` and `ratelimit-remaining` of an answer.
fn bucket(metadata: &tonic::metadata::MetadataMap) -> (u32, u32) {
    let number = |name| {
        header(metadata, name)
            .unwrap_or_else(|| panic!("no {name} in {metadata:?}"))
            .parse()
            .unwrap()
    };
    (number("ratelimit-limit"), number("ratelimit-remaining"))
}

/// notesd with every tenant's quota `quota` (`--tenant-quota`).
async fn with_tenant_quota(quota: &str) -> TestApp {
    spawn_app_with(|settings| {
        settings.quotas.tenant = quota.parse().unwrap();
    })
    .await
}

async fn list(
    client: &mut Client,
) -> Result<tonic::Response<pb::ListNotesResponse>, tonic::Status> {
    client.list_notes(pb::ListNotesRequest::default()).await
}

/// Asserts `status` is a quota's refusal: RESOURCE_EXHAUSTED, the reason,
/// a QuotaFailure naming `subject`, a RetryInfo; returns the retry delay.
#[track_caller]
fn assert_refused(status: &tonic::Status, reason_: &str, subject: &str) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(status), reason_, "{status:?}");
    let failure = status.get_details_quota_failure().expect("a QuotaFailure");
    assert_eq!(failure.violations.len(), 1, "{failure:?}");
    assert_eq!(failure.violations[0].subject, subject, "{failure:?}");
    assert!(!failure.violations[0].description.is_empty());
    status
        .get_details_retry_info()
        .expect("a RetryInfo")
        .retry_delay
        .expect("a retry delay")
}

/// Per key: a burst, then the limit, then a refill at the rate; another
/// key of the same tenant keeps its own bucket.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_bursts_then_is_limited_then_refills() {
    let app = spawn_app_with(|settings| {
        settings.quotas.key = "rate=1,burst=3".parse().unwrap();
    })
    .await;
    let key = app.member_key("acme", "alice").await;
    let mut alice = app.client(&key).await;
    for left in [2, 1, 0] {
        let answer = list(&mut alice).await.expect("within the burst");
        assert_eq!(bucket(answer.metadata()), (3, left));
        let reset: u64 = header(answer.metadata(), "ratelimit-reset")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1..=3).contains(&reset),
            "{reset} s to refill {} units",
            3 - left
        );
    }
    let asked = Instant::now();
    let refused = list(&mut alice).await.unwrap_err();
    let held = asked.elapsed();
    let delay = assert_refused(
        &refused,
        "RATE_LIMITED",
        &format!("key:{}", key_id(&key).simple()),
    );
    assert!(
        held > Duration::from_millis(500) && held + delay <= Duration::from_millis(1100),
        "one unit comes back within a second, and the refusal was held until about then: \
         held {held:?}, then {delay:?} to wait"
    );
    assert_eq!(bucket(refused.metadata()), (3, 0));

    let mut bob = app.member("acme", "bob").await;
    let answer = list(&mut bob)
        .await
        .expect("another key has its own bucket");
    assert_eq!(bucket(answer.metadata()), (3, 2));

    let metrics = reqwest::get(app.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"quota_refusals_total{reason="RATE_LIMITED",scope="key"} 1"#),
        "{metrics}"
    );

    tokio::time::sleep(delay).await;
    list(&mut alice)
        .await
        .expect("a unit came back after the retry delay");
}

/// Per tenant: every key of the tenant spends from one bucket; another
/// tenant's is its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_bucket_is_shared_by_its_keys() {
    let app = with_tenant_quota("rate=1,burst=3").await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob = app.member("acme", "bob").await;
    list(&mut alice).await.unwrap();
    list(&mut alice).await.unwrap();
    let answer = list(&mut bob).await.unwrap();
    assert_eq!(bucket(answer.metadata()), (3, 0));
    let refused = list(&mut bob).await.unwrap_err();
    assert_refused(&refused, "RATE_LIMITED", "tenant:acme");
    let mut other = app.member("globex", "carol").await;
    let answer = list(&mut other)
        .await
        .expect("another tenant is not limited by acme's calls");
    assert_eq!(bucket(answer.metadata()), (3, 2));
}

/// Costly calls take more units (the cost table): a search 10, a batch of
/// 30 ids 3, a page of 1,000 notes 10. A call that finds its unit at the
/// edge runs, and the rest of its cost is a debt its tenant's next calls
/// wait for.
#[tokio::test(flavor = "multi_thread")]
async fn costly_calls_take_more_units() {
    let app = with_tenant_quota("rate=1,burst=25").await;
    let mut alice = app.member("acme", "alice").await;
    let search = || pb::SearchNotesRequest {
        query: "invoice".into(),
        ..Default::default()
    };
    let answer = alice
        .search_notes(search())
        .await
        .expect("a search within the burst");
    // Its headers report the bucket after its whole cost.
    assert_eq!(bucket(answer.metadata()), (25, 15));
    // Ids of no note: NOT_FOUND, but charged (its rows were looked for).
    let ids: Vec<String> = (0..30).map(|_| Uuid::now_v7().to_string()).collect();
    let not_found = alice
        .batch_get_notes(pb::BatchGetNotesRequest { ids })
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound, "{not_found:?}");
    assert_eq!(bucket(not_found.metadata()), (25, 12));
    let answer = alice
        .list_notes(pb::ListNotesRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("a page within the burst");
    assert_eq!(bucket(answer.metadata()), (25, 2));
    // Two units left: the search finds its first, runs, and owes 8.
    let answer = alice
        .search_notes(search())
        .await
        .expect("a search that finds its first unit runs");
    assert_eq!(bucket(answer.metadata()), (25, 0));
    let asked = Instant::now();
    let refused = list(&mut alice).await.unwrap_err();
    let held = asked.elapsed();
    let delay = assert_refused(&refused, "RATE_LIMITED", "tenant:acme");
    assert!(
        held >= Duration::from_secs(1) && held < Duration::from_secs(2),
        "a refusal is held for a second at most: {held:?}"
    );
    assert!(
        delay > Duration::from_secs(4) && delay <= Duration::from_secs(8),
        "the debt of 8 units, at one a second, then a unit, less the second held: {delay:?}"
    );
}

/// A client that retries at once, ignoring the retry delay, is answered
/// at the pace a retry could succeed: its refusals do not come as fast
/// as it asks, and the calls it makes in time still run.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_retrying_at_once_is_paced() {
    let app = with_tenant_quota("rate=4,burst=1").await;
    let mut alice = app.member("acme", "alice").await;
    let (mut admitted, mut refused) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        match list(&mut alice).await {
            Ok(_) => admitted += 1,
            Err(status) => {
                assert_refused(&status, "RATE_LIMITED", "tenant:acme");
                refused += 1;
            }
        }
    }
    // A unit every 250 ms: about 7 calls, and no more refusals than that.
    assert!((4..=9).contains(&admitted), "{admitted} admitted");
    assert!(refused <= 9, "{refused} refusals in 1.5 s");
}

/// A refusal is held only where its tenant has room among its calls in
/// flight: beyond that, and never past the call's deadline, it is
/// answered at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_is_held_within_its_deadline_and_its_calls() {
    let app = with_tenant_quota("rate=1,burst=1,calls=2").await;
    let alice = app.member("acme", "alice").await;
    list(&mut alice.clone()).await.expect("the one unit");
    // A deadline of 300 ms: held until just before it, then refused.
    let mut request = tonic::Request::new(pb::ListNotesRequest::default());
    request.set_timeout(Duration::from_millis(300));
    let asked = Instant::now();
    let refused = alice.clone().list_notes(request).await.unwrap_err();
    assert_refused(&refused, "RATE_LIMITED", "tenant:acme");
    assert!(
        asked.elapsed() < Duration::from_millis(300),
        "{:?}",
        asked.elapsed()
    );
    // Two refusals held take the tenant's two calls in flight: a third is
    // answered at once.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut alice = alice.clone();
            tokio::spawn(async move { list(&mut alice).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    let refused = list(&mut alice.clone()).await.unwrap_err();
    assert!(
        asked.elapsed() < Duration::from_millis(200),
        "answered at once: {:?}",
        asked.elapsed()
    );
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    for call in held {
        let answer = call.await.unwrap();
        assert_refused(&answer.unwrap_err(), "RATE_LIMITED", "tenant:acme");
    }
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "notesd failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The `ratelimit-limit` of a ListNotes, polled until it is `limit` (for
/// at most 10 s); how long that took.
async fn until_limit(client: &mut Client, limit: u32) -> Duration {
    let start = Instant::now();
    loop {
        let seen = match list(client).await {
            Ok(answer) => bucket(answer.metadata()).0,
            Err(status) => bucket(status.metadata()).0,
        };
        if seen == limit {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the limit is still {seen}, not {limit}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An override set with the CLI takes effect on every server of the
/// database, a second one included, and `reset` brings the defaults back.
#[tokio::test(flavor = "multi_thread")]
async fn overrides_from_the_cli_reach_every_replica() {
    let app = spawn_app().await;
    let second = spawn_app_at(app.database_name.clone(), app.database_url.clone(), |_| {}).await;
    let key = app.member_key("acme", "alice").await;
    let mut on_first = app.client(&key).await;
    let mut on_second = second.client(&key).await;
    until_limit(&mut on_second, 10_000).await;

    let printed = succeeded(
        &notesd(
            &app,
            &[
                "quotas", "set", "--tenant", "acme", "--rate", "5", "--burst", "7",
            ],
        )
        .await,
    );
    assert!(
        printed.contains("tenant acme: rate=5 burst=7 calls=default"),
        "{printed}"
    );
    let took = until_limit(&mut on_second, 7).await;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    until_limit(&mut on_first, 7).await;

    // A key's own override, beside its tenant's.
    let key_text = key_id(&key).to_string();
    succeeded(
        &notesd(
            &app,
            &[
                "quotas", "set", "--tenant", "acme", "--key", &key_text, "--rate", "2",
            ],
        )
        .await,
    );
    until_limit(&mut on_second, 2).await;
    let shown = succeeded(&notesd(&app, &["quotas", "show", "--tenant", "acme"]).await);
    assert!(shown.contains("acme\t-\trate=5 burst=7"), "{shown}");
    assert!(
        shown.contains(&format!("acme\t{key_text}\trate=2 burst=default")),
        "{shown}"
    );

    // A key of another tenant cannot be given acme's override.
    let globex = app.member_key("globex", "carol").await;
    let refused = notesd(
        &app,
        &[
            "quotas",
            "set",
            "--tenant",
            "acme",
            "--key",
            &key_id(&globex).to_string(),
            "--rate",
            "1",
        ],
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no key"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let refused = notesd(
        &app,
        &["quotas", "set", "--tenant", "acme", "--rate", "fast"],
    )
    .await;
    assert!(!refused.status.success());

    succeeded(
        &notesd(
            &app,
            &["quotas", "reset", "--tenant", "acme", "--key", &key_text],
        )
        .await,
    );
    succeeded(&notesd(&app, &["quotas", "reset", "--tenant", "acme"]).await);
    until_limit(&mut on_second, 10_000).await;
    let shown = succeeded(&notesd(&app, &["quotas", "show"]).await);
    assert!(!shown.contains("acme"), "{shown}");
    second.stop().await;
}

/// Waits until a statement of the test's database waits for a lock.
async fn until_waiting_for_the_lock(app: &TestApp) {
    let start = Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity \
             where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "nothing waits");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A note of `client`'s, and an UpdateNote of it held in flight on the
/// note's lock (until the lock is closed).
async fn hold_a_call(
    app: &TestApp,
    client: &Client,
) -> (
    pb::Note,
    sqlx::PgConnection,
    tokio::task::JoinHandle<Result<tonic::Response<pb::UpdateNoteResponse>, tonic::Status>>,
) {
    let mut client = client.clone();
    let note = add(&mut client, text_note("customer", "c-1", "held")).await;
    let lock = lock_note(app, &note.id).await;
    let update = retitle(&note);
    let in_flight = tokio::spawn(async move { client.update_note(update).await });
    until_waiting_for_the_lock(app).await;
    (note, lock, in_flight)
}

fn retitle(note: &pb::Note) -> pb::UpdateNoteRequest {
    pb::UpdateNoteRequest {
        note: Some(pb::Note {
            id: note.id.clone(),
            title: "held".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["title".to_owned()],
        }),
    }
}

/// A tenant's cap on calls in flight: one more is refused at once
/// (TOO_MANY_CALLS), another tenant's calls go on, and the place comes
/// back when the call ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_has_at_most_its_calls_in_flight() {
    let app = with_tenant_quota("calls=1").await;
    let mut alice = app.member("acme", "alice").await;
    let (note, lock, in_flight) = hold_a_call(&app, &alice).await;

    let refused = get(&mut alice, &note.id).await.unwrap_err();
    let delay = assert_refused(&refused, "TOO_MANY_CALLS", "tenant:acme");
    assert!(delay > Duration::ZERO);
    let mut other = app.member("globex", "carol").await;
    list(&mut other)
        .await
        .expect("another tenant's calls go on");

    lock.close().await.unwrap();
    in_flight.await.unwrap().expect("the held call ends well");
    get(&mut alice, &note.id)
        .await
        .expect("the place came back with the call's end");
}

/// A tenant holds at most its share of the pool: its call beyond the
/// share waits in its own queue (not refused, not failed) while another
/// tenant's calls get connections at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_beyond_its_share_of_the_pool_waits_in_its_own_queue() {
    let app = spawn_app_with(|settings| {
        settings.database.max_connections = 4;
        settings.quotas.tenant = "connections=1".parse().unwrap();
    })
    .await;
    let alice = app.member("acme", "alice").await;
    let (_note, lock, in_flight) = hold_a_call(&app, &alice).await;

    let mut queued = alice.clone();
    let mut waiting = tokio::spawn(async move { list(&mut queued).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "acme's second transaction waits for acme's one connection"
    );
    let mut other = app.member("globex", "carol").await;
    for _ in 0..5 {
        tokio::time::timeout(Duration::from_secs(5), list(&mut other))
            .await
            .expect("another tenant is not queued behind acme")
            .expect("another tenant's call");
    }
    lock.close().await.unwrap();
    in_flight.await.unwrap().expect("the held call ends well");
    waiting
        .await
        .unwrap()
        .expect("the queued call got acme's connection");
}

/// A key's cap on watches: one more is refused (TOO_MANY_WATCHERS, naming
/// the key); another key of the tenant opens its own; closing a watch
/// gives its place back.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_has_at_most_its_watches_open() {
    let app = spawn_app_with(|settings| {
        settings.quotas.key = "watchers=1".parse().unwrap();
    })
    .await;
    let key = app.member_key("acme", "alice").await;
    let mut alice = app.client(&key).await;
    let first = alice
        .watch_notes(pb::WatchNotesRequest::default())
        .await
        .expect("the key's one watch");
    let refused = alice
        .watch_notes(pb::WatchNotesRequest::default())
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        "TOO_MANY_WATCHERS",
        &format!("key:{}", key_id(&key).simple()),
    );
    let mut bob = app.member("acme", "bob").await;
    let _second = bob
        .watch_notes(pb::WatchNotesRequest::default())
        .await
        .expect("another key's watch");
    drop(first);
    let start = Instant::now();
    while let Err(status) = alice.watch_notes(pb::WatchNotesRequest::default()).await {
        assert_eq!(reason(&status), "TOO_MANY_WATCHERS");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a closed watch gives its place back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With quotas off, no call is limited and no answer carries the headers.
#[tokio::test(flavor = "multi_thread")]
async fn quotas_off_limit_nothing() {
    let app = spawn_app_with(|settings| {
        settings.quotas.enabled = false;
        settings.quotas.tenant = "rate=1,burst=1".parse().unwrap();
    })
    .await;
    let mut alice = app.member("acme", "alice").await;
    for _ in 0..3 {
        let answer = list(&mut alice).await.expect("not limited");
        assert_eq!(header(answer.metadata(), "ratelimit-limit"), None);
    }
}

/// A RATE_LIMITED refusal (for the reasons test).
pub async fn rate_limited() -> tonic::Status {
    let app = with_tenant_quota("rate=1,burst=1").await;
    let mut alice = app.member("acme", "alice").await;
    list(&mut alice).await.expect("the one unit");
    list(&mut alice).await.unwrap_err()
}

/// A TOO_MANY_CALLS refusal (for the reasons test): a tenant allowed one
/// call in flight, with one held on a lock.
pub async fn too_many_calls() -> tonic::Status {
    let app = with_tenant_quota("calls=1").await;
    let mut alice = app.member("acme", "alice").await;
    let (note, lock, in_flight) = hold_a_call(&app, &alice).await;
    let refused = get(&mut alice, &note.id).await.unwrap_err();
    lock.close().await.unwrap();
    in_flight.await.unwrap().expect("the held call ends well");
    refused
}

/// A facade request: its status, headers and JSON body.
async fn http(request: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.expect("a JSON body");
    (status, headers, body)
}

fn text(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The standard headers of a refused facade call with a burst of 1.
#[track_caller]
fn assert_refused_headers(headers: &reqwest::header::HeaderMap) {
    assert_eq!(text(headers, "ratelimit-limit"), "1");
    assert_eq!(text(headers, "ratelimit-remaining"), "0");
    let retry: u64 = text(headers, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

/// Every facade answers a quota's refusal 429 with Retry-After and the
/// RateLimit headers, in its vendor's own shape.
#[tokio::test(flavor = "multi_thread")]
async fn facades_answer_429_in_their_vendors_shape() {
    let app = with_tenant_quota("rate=1,burst=1").await;
    let client = reqwest::Client::new();

    // Close: its error object with rate_reset, and its one RateLimit field.
    let key = app.member_key("close-co", "alice").await;
    let close = || {
        client
            .get(app.http_url("/api/v1/activity/note/"))
            .basic_auth(&key, Some(""))
    };
    let (status, headers, _) = http(close()).await;
    assert_eq!(status, StatusCode::OK);
    // Its list of 101 notes costs 2 units: 1 owed past the burst of 1.
    assert_eq!(text(&headers, "ratelimit"), "limit=1, remaining=0, reset=2");
    let (status, headers, body) = http(close()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_refused_headers(&headers);
    let rate_reset = body["error"]["rate_reset"].as_f64().expect("rate_reset");
    // 2 s to wait, the first second of which the refusal was held.
    assert!(rate_reset > 0.5 && rate_reset <= 1.0, "{body}");
    assert_eq!(body["error"]["rate_limit"], 1, "{body}");
    assert_eq!(body["error"]["rate_limit_type"], "RATE_LIMITED", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");

    // Fernand: its error and code, and its X-RateLimit-* (a Unix reset).
    let key = app.member_key("fernand-co", "agent").await;
    let fernand = || {
        client
            .post(app.http_url("/conversations/1/notes"))
            .header("x-api-key", &key)
            .json(&json!({}))
    };
    let (status, _, _) = http(fernand()).await;
    assert_ne!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, headers, body) = http(fernand()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_refused_headers(&headers);
    assert_eq!(body["code"], "RATE_LIMITED", "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(text(&headers, "x-ratelimit-limit"), "1");
    assert_eq!(text(&headers, "x-ratelimit-remaining"), "0");
    let reset: i64 = text(&headers, "x-ratelimit-reset").parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!((now..=now + 61).contains(&reset), "{reset} vs {now}");

    // Capillary: its request-level status, code 429.
    let key = app.member_key("capillary-co", "till").await;
    let capillary = || {
        client
            .get(app.http_url("/v1.1/customer/notes?format=json&mobile=447700900000"))
            .header("x-api-key", &key)
    };
    http(capillary()).await;
    let (status, headers, body) = http(capillary()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_refused_headers(&headers);
    assert_eq!(body["response"]["status"]["success"], "false", "{body}");
    assert_eq!(body["response"]["status"]["code"], "429", "{body}");
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .ends_with("(RATE_LIMITED)"),
        "{body}"
    );

    // Zyntro: its envelope, 429 (its credentials are in the body).
    let key = app.service_key("zyntro-co").await;
    let (api_key, secret) = key.split_at("nk_".len() + 32);
    let zyntro = || {
        client
            .post(app.http_url("/apis/v2/public/crm/addNotestoContact"))
            .json(&json!({
                "api_key": api_key,
                "developer_secret": &secret[1..],
                "member_id": "m-1",
                "contact_id": "c-1",
                "note": "hello",
            }))
    };
    http(zyntro()).await;
    let (status, headers, body) = http(zyntro()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_refused_headers(&headers);
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["code"], "RATE_LIMITED", "{body}");
    assert!(body["data"][0].is_string(), "{body}");
}

/// A call refused by its rate is answered before its body is read: a
/// client that sends the headers of a BatchAddNotes and never its body
/// gets RESOURCE_EXHAUSTED at once (decoding first would wait for the
/// body for ever).
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_call_is_answered_before_its_body_is_read() {
    let app = with_tenant_quota("rate=1,burst=1").await;
    let key = app.member_key("acme", "alice").await;
    list(&mut app.client(&key).await)
        .await
        .expect("the one unit");

    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::post(format!(
        "http://{}/notes.v1.NotesService/BatchAddNotes",
        app.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("x-api-key", key.as_str())
    .body(())
    .unwrap();
    let (response, _body_never_sent) = send
        .ready()
        .await
        .unwrap()
        .send_request(request, false)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered without the body")
        .unwrap();
    let headers = response.headers();
    assert_eq!(headers["grpc-status"], "8", "{headers:?}");
    let status = tonic::Status::from_header_map(headers).expect("a status");
    assert_eq!(reason(&status), "RATE_LIMITED", "{status:?}");
    assert_eq!(headers["ratelimit-remaining"], "0");
}
