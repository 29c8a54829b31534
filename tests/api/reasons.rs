//! The error reasons of `docs/errors.md`, each produced by the real server
//! with its documented code: the documentation and the server agree, both
//! ways.

use std::collections::{BTreeMap, BTreeSet};

use notesd::proto::notes::v1 as pb;
use tonic::Code;

use crate::helpers::*;

/// The `| `REASON` | CODE | meaning |` rows of docs/errors.md.
fn documented_reasons() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/errors.md");
    let doc = std::fs::read_to_string(path).expect("docs/errors.md is readable");
    let mut reasons = BTreeMap::new();
    for line in doc.lines().filter(|l| l.trim_start().starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let reason = cells[1].trim_matches('`').to_owned();
        let code = cells[2].to_owned();
        assert!(
            reasons.insert(reason.clone(), code).is_none(),
            "{reason} is documented twice"
        );
    }
    assert!(reasons.len() >= 10, "the table was parsed: {reasons:?}");
    reasons
}

/// The name the documentation gives a gRPC code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status of a call that must fail.
#[track_caller]
fn failure<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> tonic::Status {
    result.expect_err("the call fails")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_reason_is_produced() {
    let documented = documented_reasons();
    let app = spawn_app().await;
    let alice_key = app.member_key("acme", "alice").await;
    let mut alice = app.client(&alice_key).await;
    let note = add(&mut alice, text_note("customer", "c-1", "a note")).await;

    // Each reason, and a call that must produce it.
    let mut produced: Vec<(&str, tonic::Status)> = Vec::new();

    produced.push((
        "MISSING_FIELDS",
        failure(
            try_add(
                &mut alice,
                pb::Note {
                    subject: None,
                    ..text_note("customer", "c-1", "x")
                },
            )
            .await,
        ),
    ));
    produced.push((
        "INVALID_FIELD",
        failure(get(&mut alice, "not-a-uuid").await),
    ));
    produced.push((
        "FIELD_TOO_LARGE",
        failure(
            try_add(
                &mut alice,
                pb::Note {
                    title: "t".repeat(1025),
                    ..text_note("customer", "c-1", "x")
                },
            )
            .await,
        ),
    ));
    produced.push((
        "INVALID_PAGE_TOKEN",
        failure(
            list(
                &mut alice,
                pb::ListNotesRequest {
                    page_token: "garbage".to_owned(),
                    ..Default::default()
                },
            )
            .await,
        ),
    ));
    produced.push((
        "MISSING_API_KEY",
        failure(get(&mut app.client_with(vec![]).await, &note.id).await),
    ));
    produced.push((
        "INVALID_API_KEY",
        failure(get(&mut app.client("nk_garbage").await, &note.id).await),
    ));
    produced.push((
        "MISSING_ACTOR",
        failure(
            get(
                &mut app.client(&app.service_key("acme").await).await,
                &note.id,
            )
            .await,
        ),
    ));
    produced.push((
        "ACTOR_MISMATCH",
        failure(
            get(
                &mut app
                    .client_with(vec![
                        ("x-api-key", alice_key.clone()),
                        ("x-actor-id", "bob".to_owned()),
                    ])
                    .await,
                &note.id,
            )
            .await,
        ),
    ));
    let (_, far_away_key) = app
        .issue_key("acme", key_spec(member_kind("alice"), &["203.0.113.0/24"]))
        .await;
    produced.push((
        "IP_NOT_WHITELISTED",
        failure(get(&mut app.client(&far_away_key).await, &note.id).await),
    ));
    produced.push((
        "NOT_OWNER",
        failure(
            try_add(
                &mut alice,
                pb::Note {
                    owner_id: "bob".to_owned(),
                    ..text_note("customer", "c-1", "x")
                },
            )
            .await,
        ),
    ));
    produced.push((
        "NOT_FOUND",
        failure(get(&mut alice, &uuid::Uuid::now_v7().to_string()).await),
    ));
    produced.push((
        "SUBJECT_NOT_FOUND",
        failure(get_subject(&mut app.subjects(&alice_key).await, "contact", "nobody").await),
    ));

    let edited = update(
        &mut alice,
        pb::Note {
            title: "edited".to_owned(),
            ..patch(&note.id)
        },
        &["title"],
    )
    .await
    .unwrap();
    produced.push((
        "ETAG_MISMATCH",
        failure(
            update(
                &mut alice,
                pb::Note {
                    title: "stale".to_owned(),
                    etag: note.etag.clone(),
                    ..patch(&note.id)
                },
                &["title"],
            )
            .await,
        ),
    ));
    produced.push((
        "NOTE_NOT_DELETED",
        failure(undelete(&mut alice, &note.id, &edited.etag).await),
    ));
    delete(&mut alice, &note.id, "").await.unwrap();
    produced.push((
        "NOTE_DELETED",
        failure(delete(&mut alice, &note.id, "").await),
    ));

    let request_id = uuid::Uuid::now_v7().to_string();
    add_with_request_id(
        &mut alice,
        &request_id,
        text_note("customer", "c-1", "first"),
    )
    .await
    .unwrap();
    produced.push((
        "REQUEST_ID_CONFLICT",
        failure(
            add_with_request_id(
                &mut alice,
                &request_id,
                text_note("customer", "c-1", "second"),
            )
            .await,
        ),
    ));
    let imported = || pb::Note {
        source: Some(pb::Source {
            system: "close".to_owned(),
            id: "note_123".to_owned(),
        }),
        ..text_note("customer", "c-1", "imported")
    };
    add(&mut alice, imported()).await;
    produced.push((
        "SOURCE_ALREADY_EXISTS",
        failure(try_add(&mut alice, imported()).await),
    ));

    // A row the server cannot read back: related subjects that are not a
    // list.
    let corrupt = add(&mut alice, text_note("customer", "c-1", "to corrupt")).await;
    sqlx::query("update notes set related_subjects = '{\"not\": \"a list\"}' where id = $1::uuid")
        .bind(&corrupt.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let internal = failure(get(&mut alice, &corrupt.id).await);
    assert_eq!(
        internal.message(),
        "internal error",
        "no cause is leaked: {internal:?}"
    );
    produced.push(("INTERNAL", internal));

    // Transport limits, answered before any handler runs.
    produced.push((
        "MESSAGE_TOO_LARGE",
        failure(
            alice
                .add_note(pb::AddNoteRequest {
                    note: Some(text_note("customer", "c-1", &"x".repeat(33 << 20))),
                    ..Default::default()
                })
                .await,
        ),
    ));
    let shedding = spawn_app_with(|settings| settings.limits.max_in_flight = 0).await;
    let shed_key = shedding.member_key("acme", "alice").await;
    produced.push((
        "OVERLOADED",
        failure(get(&mut shedding.client(&shed_key).await, &note.id).await),
    ));

    // A database that went away.
    let (behind_proxy, proxy) = spawn_app_behind_proxy().await;
    let proxied_key = behind_proxy.member_key("acme", "alice").await;
    let mut proxied = behind_proxy.client(&proxied_key).await;
    let proxied_note = add(&mut proxied, text_note("customer", "c-1", "x")).await;
    proxy.cut();
    produced.push((
        "DATABASE_UNAVAILABLE",
        failure(get(&mut proxied, &proxied_note.id).await),
    ));

    // PurgeNotes with a member key.
    produced.push((
        "ADMIN_KEY_REQUIRED",
        failure(
            alice
                .purge_notes(pb::PurgeNotesRequest {
                    subject: subject("customer", "c-1"),
                    note_ids: Vec::new(),
                })
                .await,
        ),
    ));
    // BatchGetNotes of more than a response holds: one large note, twice.
    let large = add(
        &mut alice,
        text_note("customer", "c-1", &"x".repeat(9 * 1024 * 1024)),
    )
    .await;
    produced.push((
        "RESPONSE_TOO_LARGE",
        failure(
            alice
                .batch_get_notes(pb::BatchGetNotesRequest {
                    ids: vec![large.id.clone(), large.id],
                })
                .await,
        ),
    ));

    produced.push(("SEARCH_TOO_COSTLY", search_too_costly().await));
    produced.push(("RATE_LIMITED", crate::quotas::rate_limited().await));
    produced.push(("TOO_MANY_CALLS", crate::quotas::too_many_calls().await));
    produced.push((
        "CERTIFICATE_NOT_TRUSTED",
        crate::tls::certificate_no_longer_trusted().await,
    ));
    let waiting = add(&mut alice, text_note("customer", "c-1", "x")).await;
    produced.push((
        "DEADLINE_EXCEEDED",
        crate::deadlines::update_past_deadline(&app, &alice_key, &waiting).await,
    ));

    // The change stream's refusals and ends.
    produced.extend(watch_reasons().await);

    for (expected, status) in &produced {
        assert_eq!(reason(status), *expected, "ErrorInfo reason of {status:?}");
        assert_eq!(
            error_domain(status),
            "notesd.dev",
            "ErrorInfo domain of {status:?}"
        );
        let documented_code = documented
            .get(*expected)
            .unwrap_or_else(|| panic!("{expected} is produced but not in docs/errors.md"));
        assert_eq!(
            code_name(status.code()),
            documented_code,
            "the code of {expected}: {status:?}"
        );
    }
    let produced: BTreeSet<&str> = produced.iter().map(|(r, _)| *r).collect();
    let documented: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    assert_eq!(
        produced, documented,
        "every documented reason is produced here, and only those"
    );
    assert_eq!(
        defined_reasons(),
        documented,
        "the reasons DomainError::reason and the gRPC edge define are the documented ones"
    );
}

/// The reasons the gRPC edge gives its own refusals: the `REASON_* = "…"`
/// constants of src/grpc/limits.rs.
fn edge_reasons() -> BTreeSet<&'static str> {
    let source = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/grpc/limits.rs"));
    source
        .lines()
        .filter(|line| line.contains("const REASON_"))
        .filter_map(|line| line.split('"').nth(1))
        .collect()
}

/// The reasons `DomainError::reason` returns (its `=> "REASON"` arms) and
/// those of the gRPC edge, so a reason added to the server but neither
/// documented nor produced here fails too.
fn defined_reasons() -> BTreeSet<&'static str> {
    let error = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/domain/error.rs"));
    let reasons = reasons_in(error, "pub fn reason(&self)");
    assert!(reasons.len() >= 10, "reason() was parsed: {reasons:?}");
    // A quota's refusal takes its reason from the limit that refused.
    let quota = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/domain/quota/mod.rs"
    ));
    let quota = reasons_in(quota, "pub fn reason(self)");
    assert_eq!(quota.len(), 3, "QuotaLimit::reason was parsed: {quota:?}");
    let edge = edge_reasons();
    assert_eq!(edge.len(), 2, "limits.rs was parsed: {edge:?}");
    reasons.union(&edge).copied().chain(quota).collect()
}

/// The `=> "REASON"` strings of the function whose signature starts with
/// `signature` in `source`.
fn reasons_in(source: &'static str, signature: &str) -> BTreeSet<&'static str> {
    let body = source
        .split(signature)
        .nth(1)
        .unwrap_or_else(|| panic!("{signature} in the source"));
    let body = &body[..body.find("\n    }\n").expect("the end of the function")];
    body.split("=> \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

/// A search cut short by its bound, on a server whose bound is 1 ms and a
/// tenant of 100,000 notes that all hold the words of a phrase none holds.
async fn search_too_costly() -> tonic::Status {
    let app = spawn_app_with(|settings| {
        settings.limits.search_timeout = std::time::Duration::from_millis(1);
    })
    .await;
    let mut alice = app.member("acme", "alice").await;
    insert_notes(&app, "acme", 100_000, "alpha beta").await;
    failure(
        alice
            .search_notes(pb::SearchNotesRequest {
                query: "\"beta alpha\"".to_owned(),
                ..Default::default()
            })
            .await,
    )
}

/// The reasons only WatchNotes gives, each from a server set up to give it.
async fn watch_reasons() -> Vec<(&'static str, tonic::Status)> {
    use std::time::Duration;

    async fn watch(
        client: &mut Client,
        token: &str,
    ) -> Result<tonic::Streaming<pb::WatchNotesResponse>, tonic::Status> {
        client
            .watch_notes(pb::WatchNotesRequest {
                resume_token: token.to_owned(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }
    /// The status that ends `stream`, reading past its changes (within
    /// 30 s), and the last resume token it gave.
    async fn end(mut stream: tonic::Streaming<pb::WatchNotesResponse>) -> (tonic::Status, String) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut token = String::new();
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Ok(Ok(Some(message))) => token = message.resume_token,
                Ok(Ok(None)) => panic!("the stream ended without a status"),
                Ok(Err(status)) => return (status, token),
                Err(_) => panic!("the stream did not end"),
            }
        }
    }

    let mut produced = Vec::new();
    let app = spawn_app_with(|s| {
        s.watch.max_watchers = 1;
        s.watch.backlog_events = 2;
        s.retention.events = Duration::from_secs(1);
        s.retention.interval = Duration::from_millis(200);
    })
    .await;
    let mut alice = app.member("acme", "alice").await;
    produced.push((
        "INVALID_WATCH_TOKEN",
        watch(&mut alice, "not-a-token").await.unwrap_err(),
    ));

    // A reader that reads nothing while more changes come than its backlog
    // holds, once the HTTP/2 windows and buffers between them are full
    // (a few MiB, more when the machine is busy and the kernel grows its
    // socket buffers: 16 MiB of notes is more than they hold).
    let slow = watch(&mut alice, "").await.unwrap();
    produced.push((
        "TOO_MANY_WATCHERS",
        watch(&mut alice, "").await.unwrap_err(),
    ));
    let body = "x".repeat(256 * 1024);
    for _ in 0..64 {
        add(&mut alice, text_note("customer", "c-1", &body)).await;
    }
    let (too_slow, token) = end(slow).await;
    produced.push(("WATCH_TOO_SLOW", too_slow));

    // The token of a change that retention has deleted (the slow watch's
    // place may take a moment to come back).
    loop {
        let events: i64 = sqlx::query_scalar("select count(*) from note_events")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if events == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired = loop {
        match watch(&mut alice, &token).await {
            Err(status) if reason(&status) == "TOO_MANY_WATCHERS" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => break result.unwrap_err(),
        }
    };
    produced.push(("WATCH_TOKEN_EXPIRED", expired));

    // A server that stops ends its watches.
    let stopping = spawn_app().await;
    let open = watch(&mut stopping.member("acme", "alice").await, "")
        .await
        .unwrap();
    stopping.stop().await;
    produced.push(("SHUTTING_DOWN", end(open).await.0));
    produced
}
