//! The threat model, as tests (docs/threat-model.md): what one caller,
//! often one without a key, sends to take the service from the others or
//! to get past a rule, and the bound that stops it. Each test fails
//! without the bound it names.

use std::time::Duration;

use crate::helpers::*;

/// A deadline longer than PostgreSQL's `statement_timeout` can hold (a
/// 30-day `grpc-timeout`, above 2^31 ms) is clamped, not sent as is: sent
/// as is, the `BEGIN` fails after it began, and the connection went back
/// to the pool inside an aborted transaction, failing every later call
/// that drew it, of any tenant.
#[tokio::test]
async fn a_deadline_beyond_what_postgres_accepts_poisons_no_connection() {
    let app = spawn_app_with(|settings| settings.database.max_connections = 2).await;
    let mut attacker = app.member("mallory-co", "mallory").await;
    for _ in 0..12 {
        let mut request =
            tonic::Request::new(notesd::proto::notes::v1::ListNotesRequest::default());
        request.set_timeout(Duration::from_secs(30 * 86_400));
        attacker
            .list_notes(request)
            .await
            .expect("a 30-day deadline is clamped, and the call succeeds");
    }
    let mut other = app.member("acme", "alice").await;
    for n in 0..20 {
        let note = add(
            &mut other,
            text_note("customer", "42", &format!("note {n}")),
        )
        .await;
        get(&mut other, &note.id)
            .await
            .expect("another tenant's calls find every connection usable");
    }
}

/// Behind a trusted proxy, a key allowed only from 10.0.0.0/8: a caller
/// who forges `10.9.9.9` and hides behind a hop that does not parse as an
/// address (or one with a port) is judged by what the proxy saw, on gRPC
/// and on a facade alike, in one header line or in two.
#[tokio::test]
async fn a_forged_forwarded_hop_is_never_reached_past_an_unreadable_one() {
    let app = spawn_app_with(|settings| {
        settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let (_, key) = app
        .issue_key("acme", key_spec(member_kind("alice"), &["10.0.0.0/8"]))
        .await;
    let forged: [&[&str]; 5] = [
        &["10.9.9.9, 203.0.113.7:5678"],
        &["10.9.9.9, unknown"],
        &["10.9.9.9, [2001:db8::1]:443"],
        &["10.9.9.9", "203.0.113.7:5678"],
        &["10.9.9.9", "unknown"],
    ];
    for lines in forged {
        let mut request =
            tonic::Request::new(notesd::proto::notes::v1::ListNotesRequest::default());
        request
            .metadata_mut()
            .insert("x-api-key", key.parse().unwrap());
        for line in lines {
            request
                .metadata_mut()
                .append("x-forwarded-for", line.parse().unwrap());
        }
        let mut client = app.client_with(Vec::new()).await;
        assert_status(
            client.list_notes(request).await,
            tonic::Code::PermissionDenied,
            "IP_NOT_WHITELISTED",
        );

        let mut facade = reqwest::Client::new()
            .get(app.http_url("/api/v1/activity/note/"))
            .basic_auth(&key, Some(""));
        for line in lines {
            facade = facade.header("x-forwarded-for", *line);
        }
        let (status, body) = json_answer(facade).await;
        assert_eq!(status, 403, "{lines:?} on the Close facade: {body}");
    }
    // What the proxy saw, when it is in the allowed network, is accepted.
    let mut request = tonic::Request::new(notesd::proto::notes::v1::ListNotesRequest::default());
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    request.metadata_mut().insert(
        "x-forwarded-for",
        "203.0.113.7, 10.9.9.9:1234".parse().unwrap(),
    );
    app.client_with(Vec::new())
        .await
        .list_notes(request)
        .await
        .expect("the hop the proxy saw, in the allowed network");
}

/// A time outside years 1 to 9999 (the range of a protobuf Timestamp) is
/// refused at the edge, naming its field: on AddNote, ListNotes and
/// SearchNotes, and on the Close facade's filters (whose largest years
/// once panicked) and body. It used to reach PostgreSQL and fail INTERNAL
/// (or HTTP 500).
#[tokio::test]
async fn a_time_outside_the_timestamp_range_is_refused_naming_its_field() {
    use notesd::proto::notes::v1 as pb;
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let mut client = app.client(&key).await;
    let far_past = prost_types::Timestamp {
        seconds: -8_000_000_000_000,
        nanos: 0,
    };
    let year_10000 = prost_types::Timestamp {
        seconds: 253_402_300_800,
        nanos: 0,
    };
    for t in [far_past, year_10000] {
        let mut note = text_note("customer", "1", "x");
        note.occur_time = Some(t);
        assert_invalid(
            try_add(&mut client, note).await,
            "INVALID_FIELD",
            "note.occur_time",
        );
        let range = Some(pb::TimeRange {
            start_time: Some(t),
            end_time: None,
        });
        assert_invalid(
            list(
                &mut client,
                pb::ListNotesRequest {
                    occur_time_range: range,
                    ..Default::default()
                },
            )
            .await,
            "INVALID_FIELD",
            "occur_time_range.start_time",
        );
        assert_invalid(
            client
                .search_notes(pb::SearchNotesRequest {
                    query: "x".to_owned(),
                    occur_time_range: range,
                    ..Default::default()
                })
                .await,
            "INVALID_FIELD",
            "occur_time_range.start_time",
        );
    }
    let notes: i64 = sqlx::query_scalar("select count(*) from notes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(notes, 0, "nothing was written");

    for filter in [
        "date_created__gt=-262143-01-01T00:00:00",
        "date_created__lt=%2B262142-12-31T23:59:59",
        "activity_at__gte=10000-01-01",
        "date_created__gte=0000-12-31T00:00:00",
    ] {
        let request = reqwest::Client::new()
            .get(app.http_url(&format!("/api/v1/activity/note/?{filter}")))
            .basic_auth(&key, Some(""));
        let (status, body) = json_answer(request).await;
        assert_eq!(status, 400, "{filter}: {body}");
        let field = filter.split('=').next().unwrap();
        assert!(
            body["field-errors"][field].is_string(),
            "{filter}: the error names {field}: {body}"
        );
    }
    let request = reqwest::Client::new()
        .post(app.http_url("/api/v1/activity/note/"))
        .basic_auth(&key, Some(""))
        .json(&serde_json::json!({
            "lead_id": "lead_abc",
            "note": "x",
            "activity_at": "-200000-01-01T00:00:00+00:00",
        }));
    let (status, body) = json_answer(request).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["field-errors"]["activity_at"].is_string(), "{body}");
}

/// HTML that the parser would nest or expand far beyond its size is
/// refused before it is parsed, and what is stored is measured after
/// sanitizing: 10 MiB of `<a href=x>` once became 44 MB of stored HTML, and
/// 51 KiB of crafted formatting 42 MiB. Actions nested deeper than other
/// clients' decoders read are refused too.
#[tokio::test]
async fn html_and_actions_that_expand_or_nest_too_deep_are_refused() {
    use notesd::proto::notes::v1 as pb;
    let app = spawn_app().await;
    let mut client = app.member("acme", "alice").await;
    let links = "<a href=x>".repeat(10 * 1024 * 1024 / 10);
    assert!(links.len() <= 10 * 1024 * 1024);
    let mut crafted = String::from("<p>");
    for n in 0..60 {
        crafted.push_str(&format!("<b title=\"{n:0>40}\">"));
    }
    crafted.push_str("</p>");
    crafted.push_str(&"<p>x</p>".repeat(5_000));
    for (what, html, reason) in [
        ("links that sanitizing lengthens", links, "FIELD_TOO_LARGE"),
        (
            "formatting reopened at every block",
            crafted,
            "FIELD_TOO_LARGE",
        ),
        (
            "100,000 nested elements",
            "<div>".repeat(100_000),
            "INVALID_FIELD",
        ),
    ] {
        let note = pb::Note {
            body: html_body(&html),
            ..text_note("customer", "1", "")
        };
        let status = try_add(&mut client, note).await.expect_err(what);
        assert_eq!(
            crate::helpers::reason(&status),
            reason,
            "{what}: {status:?}"
        );
        assert_eq!(violated_fields(&status), ["note.body.html"], "{what}");
    }
    let mut nested = serde_json::json!({"leaf": true});
    // Deeper than notesd's 16, within what prost decodes.
    for _ in 0..20 {
        nested = serde_json::json!({ "inner": nested });
    }
    let note = pb::Note {
        actions: vec![json_struct(nested)],
        ..text_note("customer", "1", "deep")
    };
    assert_invalid(
        try_add(&mut client, note).await,
        "INVALID_FIELD",
        "note.actions[0]",
    );
    let notes: i64 = sqlx::query_scalar("select count(*) from notes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(notes, 0, "nothing was written");
}

/// 600 connections to the TLS port that never send a ClientHello, from
/// one address: they get that address's share of handshake slots, and a
/// client from another address still gets through at once (it used to be
/// refused while the silent ones held every slot).
#[tokio::test]
async fn silent_tls_connections_from_one_address_lock_out_no_one_else() {
    use crate::tls::{Ca, TlsDir};
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let ca = Ca::new("notesd test CA");
    let dir = TlsDir::new();
    let settings = dir.settings(&ca.server());
    let app = spawn_app_with(|s| s.tls = Some(settings)).await;
    let key = app.member_key("acme", "alice").await;
    let mut silent = Vec::new();
    for _ in 0..600 {
        silent.push(tokio::net::TcpStream::connect(app.addr).await.unwrap());
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let channel = Channel::from_shared(format!("https://{}", app.addr))
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca.pem()))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("a client from another address completes its handshake");
    let mut client =
        notesd::proto::notes::v1::notes_service_client::NotesServiceClient::with_interceptor(
            channel,
            Metadata(vec![("x-api-key", key)]),
        );
    add(&mut client, text_note("customer", "42", "through")).await;
    drop(silent);
}

/// Opens a Zyntro upload without credentials that announces `announced`
/// bytes and sends a few, from `source`; the connection is held open.
async fn trickling_zyntro_upload(
    app: &TestApp,
    source: &str,
    announced: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut tcp = socket.connect(app.http_addr).await.unwrap();
    let head = format!(
        "POST /apis/v2/public/crm/addNotestoContact HTTP/1.1\r\nhost: notesd\r\n\
         content-type: application/json\r\ncontent-length: {announced}\r\n\r\n{{\"note\": \""
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// Reads what the server answered on `tcp` within `within`, if anything.
async fn answer_of(tcp: &mut tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut answer = vec![0u8; 4096];
    match tokio::time::timeout(within, tcp.read(&mut answer)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&answer[..n]).into_owned(),
        _ => String::new(),
    }
}

/// Keyless Zyntro uploads that announce 20 MB and trickle (Zyntro's
/// credentials are in the body, so it must be read before the caller is
/// known) are read under a budget of their own: authenticated gRPC calls
/// and other facades, which share the budget of calls in flight, are not
/// refused while they trickle (they were: RESOURCE_EXHAUSTED and 503).
/// That budget holds 64 MiB of announced bodies, and one address gets
/// four of its slots at once; beyond either, an upload is refused at once,
/// in Zyntro's shape.
#[tokio::test]
async fn keyless_uploads_that_trickle_take_nothing_from_keyed_callers() {
    let app = spawn_app_with(|settings| settings.limits.max_in_flight = 16).await;
    let key = app.member_key("acme", "alice").await;
    let mut uploads = Vec::new();
    for n in 0..24 {
        // Four loopback addresses, six uploads each.
        let source = format!("127.0.0.{}", 1 + n % 4);
        uploads.push(trickling_zyntro_upload(&app, &source, 20_000_000).await);
    }
    async fn refused(uploads: &mut [tokio::net::TcpStream]) -> usize {
        let mut refused = 0;
        for upload in uploads {
            let answer = answer_of(upload, Duration::from_millis(200)).await;
            if answer.starts_with("HTTP/1.1 503") {
                assert!(
                    answer.contains("\"status\":\"error\""),
                    "Zyntro's shape: {answer}"
                );
                refused += 1;
            }
        }
        refused
    }
    assert_eq!(
        refused(&mut uploads).await,
        21,
        "three of 20 MB fit in 64 MiB"
    );
    let mut small = Vec::new();
    for _ in 0..6 {
        small.push(trickling_zyntro_upload(&app, "127.0.0.9", 100_000).await);
    }
    assert_eq!(
        refused(&mut small).await,
        2,
        "four at once from one address"
    );

    let mut client = app.client(&key).await;
    for n in 0..20 {
        add(
            &mut client,
            text_note("customer", "42", &format!("note {n}")),
        )
        .await;
    }
    let close = reqwest::Client::new()
        .get(app.http_url("/api/v1/activity/note/"))
        .basic_auth(&key, Some(""));
    let (status, body) = json_answer(close).await;
    assert_eq!(status, 200, "the Close facade answers: {body}");
    drop(uploads);
}

/// A request body that does not arrive within 30 s is cut off (408, in
/// the vendor's shape), and what it held is given back: no connection
/// with a stalled body stays open for ever.
#[tokio::test]
async fn a_body_that_trickles_is_cut_off() {
    let app = spawn_app().await;
    let mut upload = trickling_zyntro_upload(&app, "127.0.0.1", 1_000_000).await;
    let answer = answer_of(&mut upload, Duration::from_secs(40)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "Zyntro answers errors with 200: {answer}"
    );
    assert!(
        answer.contains("BODY_TIMEOUT") || answer.contains("did not arrive"),
        "{answer}"
    );
}

/// Headers that trickle are cut off too: the HTTP port closes a
/// connection whose request headers have not all arrived within 30 s
/// (axum's own server set no timer, and held it as long as a byte came
/// now and then), and the other connections are served meanwhile.
#[tokio::test]
async fn headers_that_trickle_are_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app().await;
    let mut slow = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: notesd\r\n")
        .await
        .unwrap();
    // Before its protocol is known: nothing at all, or the first bytes of
    // HTTP/2's preface.
    let mut silent = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    let mut preface = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2").await.unwrap();
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(50), async {
        let mut buf = [0u8; 256];
        loop {
            tokio::select! {
                read = slow.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if slow.write_all(b"X").await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a connection still sending its headers after 50 s is closed"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(25),
        "closed after {:?}, before its 30 s",
        started.elapsed()
    );
    for (name, conn) in [("silent", &mut silent), ("preface", &mut preface)] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("the {name} connection is still open"));
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the {name} connection is closed: {read:?}"
        );
    }
    let healthy = reqwest::get(app.http_url("/healthz")).await.unwrap();
    assert_eq!(healthy.status(), 200);
}

/// BatchGetNotes sizes only the notes the caller may read: another
/// member's large private notes are NOT_FOUND, as ids that do not exist
/// are (they were RESOURCE_EXHAUSTED, which told the two apart, and how
/// large the notes were).
#[tokio::test]
async fn batch_get_tells_nothing_of_notes_the_caller_cannot_read() {
    use notesd::proto::notes::v1 as pb;
    let app = spawn_app().await;
    let mut bob = app.member("acme", "bob").await;
    let mut alice = app.member("acme", "alice").await;
    let large = "x".repeat(9 * 1024 * 1024);
    let mut private = Vec::new();
    for _ in 0..2 {
        let note = pb::Note {
            visibility: pb::Visibility::Private as i32,
            ..text_note("customer", "42", &large)
        };
        private.push(add(&mut bob, note).await.id);
    }
    let missing = vec![
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
    ];
    for ids in [private.clone(), missing] {
        assert_status(
            alice
                .batch_get_notes(pb::BatchGetNotesRequest { ids })
                .await,
            tonic::Code::NotFound,
            "NOT_FOUND",
        );
    }
    // Their owner is still told the page would be too large.
    let status = bob
        .batch_get_notes(pb::BatchGetNotesRequest { ids: private })
        .await
        .expect_err("18 MiB is over the response budget");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
}

/// A page of large notes is cut to the response budget by the statement
/// that reads it: the notes past the budget are never sent to notesd, so
/// a page of 1,000 is no larger in memory than the 16 MiB it may answer.
/// (Loaded whole and then cut, four such pages of 10 MiB notes took the
/// process from 88 MiB to 2.8 GiB.) Every note is still listed, a few per
/// page, and so are revisions and search hits.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_of_large_notes_is_cut_before_it_is_loaded() {
    let app = spawn_app().await;
    let (process, channel) = NotesdProcess::start(&app, &[], "warn").await;
    let key = app.member_key("acme", "alice").await;
    let mut client =
        notesd::proto::notes::v1::notes_service_client::NotesServiceClient::with_interceptor(
            channel,
            Metadata(vec![("x-api-key", key)]),
        )
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    const NOTES: usize = 24;
    const BODY_BYTES: usize = 4 << 20;
    let mut note = text_note("customer", "big", &"lorem ".repeat(BODY_BYTES / 6));
    for _ in 0..NOTES {
        add(&mut client, note.clone()).await;
    }
    // One note with many revisions of the same size.
    note.body = text_body(&"ipsum ".repeat(BODY_BYTES / 6));
    let first = add(&mut client, note).await;
    for pinned in [true, false, true, false, true, false, true] {
        let mut change = patch(&first.id);
        change.pinned = pinned;
        update(&mut client, change, &["pinned"]).await.unwrap();
    }

    process.reset_peak_rss();
    let before = process.peak_rss_kib();
    let page = list(
        &mut client,
        notesd::proto::notes::v1::ListNotesRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let grown_mib = process.peak_rss_kib().saturating_sub(before) / 1024;
    assert!(
        (1..=4).contains(&page.notes.len()) && !page.next_page_token.is_empty(),
        "a page of {} notes of 4 MiB, next {:?}",
        page.notes.len(),
        page.next_page_token
    );
    // Loaded whole, the page's 100 MiB of rows are held at once, and again
    // as notes; cut by the database, at most the budget is.
    assert!(
        grown_mib < 80,
        "listing 16 MiB of {NOTES} notes of 4 MiB grew the process by {grown_mib} MiB"
    );
    let all = list_all(
        &mut client,
        notesd::proto::notes::v1::ListNotesRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all.len(), NOTES + 1, "every note is listed, page by page");

    process.reset_peak_rss();
    let before = process.peak_rss_kib();
    let mut revisions = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_note_revisions(notesd::proto::notes::v1::ListNoteRevisionsRequest {
                note_id: first.id.clone(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.revisions.len() <= 4,
            "{} revisions",
            page.revisions.len()
        );
        revisions.extend(page.revisions.into_iter().map(|r| r.revision));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(revisions, (1..=8).rev().collect::<Vec<i64>>());
    let grown_mib = process.peak_rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 80,
        "revisions grew the process by {grown_mib} MiB"
    );

    for order in [
        notesd::proto::notes::v1::SearchOrder::Newest,
        notesd::proto::notes::v1::SearchOrder::Relevance,
    ] {
        let hits = client
            .search_notes(notesd::proto::notes::v1::SearchNotesRequest {
                query: "lorem".to_owned(),
                page_size: 100,
                order: order.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            (1..=4).contains(&hits.hits.len()) && !hits.next_page_token.is_empty(),
            "{order:?}: {} hits",
            hits.hits.len()
        );
    }

    // A batch deletion answers with the deleted notes: sized first, it is
    // refused whole rather than loaded.
    let refused = client
        .batch_delete_notes(notesd::proto::notes::v1::BatchDeleteNotesRequest {
            requests: all
                .iter()
                .map(|note| notesd::proto::notes::v1::DeleteNoteRequest {
                    id: note.id.clone(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "RESPONSE_TOO_LARGE", "{refused:?}");
    let still = list_all(&mut client, Default::default()).await;
    assert_eq!(still.len(), NOTES + 1, "nothing was deleted");
}

/// A search is bounded by the search timeout from its first statement:
/// the probe that picks its plan reads up to a thousand notes, and ran
/// unbounded, so costly searches could hold every connection of the pool.
/// Here the probe is made to wait on a lock on the notes (the cost a
/// costly probe would have): it is cancelled at the bound.
#[tokio::test]
async fn a_search_is_bounded_from_its_first_statement() {
    let app = spawn_app_with(|settings| {
        settings.limits.search_timeout = Duration::from_millis(300);
    })
    .await;
    let mut alice = app.member("acme", "alice").await;
    add(&mut alice, text_note("customer", "1", "alpha")).await;
    let mut locker = app.pool.begin().await.unwrap();
    sqlx::query("lock table notes in access exclusive mode")
        .execute(&mut *locker)
        .await
        .unwrap();
    let searched = tokio::time::timeout(
        Duration::from_secs(10),
        alice.search_notes(notesd::proto::notes::v1::SearchNotesRequest {
            query: "alpha".to_owned(),
            ..Default::default()
        }),
    )
    .await
    .expect("the search's first statement is bounded by the search timeout");
    let status = searched.unwrap_err();
    assert_eq!(reason(&status), "SEARCH_TOO_COSTLY", "{status:?}");
    locker.rollback().await.unwrap();
    let found = alice
        .search_notes(notesd::proto::notes::v1::SearchNotesRequest {
            query: "alpha".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.hits.len(), 1);
}

/// Keys no one knows are read on a small budget of their own: a flood of
/// made-up keys, here each read held up by a lock on the key table (as
/// a slow database would hold it), takes two connections of the pool at
/// most, and a caller whose key is known keeps working. Without that
/// budget the flood took every connection, and the known caller's calls
/// waited for one until their deadline. Readiness probes, keyless too,
/// take one connection, whatever their number.
#[tokio::test(flavor = "multi_thread")]
async fn made_up_keys_take_no_connection_from_known_callers() {
    let app = spawn_app_with(|settings| settings.database.max_connections = 6).await;
    let mut alice = app.member("acme", "alice").await;
    // Alice's key is read once, and cached (the server starts serving once
    // its key listener is up), and her key's use recorded.
    for n in 0..3 {
        add(&mut alice, text_note("customer", "1", &format!("warm {n}"))).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut locker = app.pool.begin().await.unwrap();
    sqlx::query("lock table api_keys in access exclusive mode")
        .execute(&mut *locker)
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..40 {
        let app_channel = app.channel().await;
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            let mut reasons = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("nk_{}_{}", uuid::Uuid::now_v7().simple(), "s".repeat(43));
                let mut client =
                    notesd::proto::notes::v1::notes_service_client::NotesServiceClient::with_interceptor(
                        app_channel.clone(),
                        Metadata(vec![("x-api-key", key)]),
                    );
                let mut request =
                    tonic::Request::new(notesd::proto::notes::v1::ListNotesRequest::default());
                request.set_timeout(Duration::from_secs(20));
                if let Err(status) = client.list_notes(request).await {
                    reasons.push(reason(&status));
                }
            }
            reasons
        }));
    }
    // Readiness probes, which anyone may send, read notesd's key table
    // too: they ask the database one at a time, at most once a second.
    let probes = reqwest::Client::new();
    for _ in 0..50 {
        let probe = probes.get(app.http_url("/readyz"));
        flood.push(tokio::spawn(async move {
            let answer = probe.send().await.unwrap();
            vec![format!("readyz {}", answer.status().as_u16())]
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..10 {
        let mut request = tonic::Request::new(notesd::proto::notes::v1::AddNoteRequest {
            request_id: String::new(),
            note: Some(text_note("customer", "1", &format!("during {n}"))),
        });
        request.set_timeout(Duration::from_secs(3));
        alice
            .add_note(request)
            .await
            .expect("a known caller is served while made-up keys are checked");
    }
    // Past the wait for a turn.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    locker.rollback().await.unwrap();
    let mut reasons = Vec::new();
    for task in flood {
        reasons.extend(task.await.unwrap());
    }
    assert!(
        reasons.iter().any(|r| r == "OVERLOADED"),
        "key reads past the budget are refused at once: {reasons:?}"
    );
    assert!(
        reasons.iter().all(|r| r == "OVERLOADED"
            || r == "INVALID_API_KEY"
            || r == "readyz 200"
            || r == "readyz 503"),
        "{reasons:?}"
    );
}

/// Watches are capped per tenant as well as in all: one tenant that opens
/// all it may leaves the other tenants theirs (the cap was only global,
/// and one tenant could take every watch of the process).
#[tokio::test(flavor = "multi_thread")]
async fn one_tenant_cannot_take_every_watch() {
    use notesd::proto::notes::v1::WatchNotesRequest;
    let app = spawn_app_with(|settings| {
        settings.watch.max_watchers = 4;
        settings.quotas.tenant = "watchers=2".parse().unwrap();
    })
    .await;
    let mut mallory = app.member("mallory-co", "mallory").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            mallory
                .watch_notes(WatchNotesRequest::default())
                .await
                .expect("a tenant's own watches")
                .into_inner(),
        );
    }
    let refused = mallory
        .watch_notes(WatchNotesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "TOO_MANY_WATCHERS", "{refused:?}");
    let mut alice = app.member("acme", "alice").await;
    for _ in 0..2 {
        held.push(
            alice
                .watch_notes(WatchNotesRequest::default())
                .await
                .expect("another tenant still gets its watches")
                .into_inner(),
        );
    }
}

/// A watcher's backlog is measured with the notes' actions and
/// attachments, not only their texts: a reader that stops reading while
/// notes with large actions pile up is cut off with WATCH_TOO_SLOW (the
/// actions were not counted, and such a backlog grew without bound).
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_backlog_counts_actions() {
    use notesd::proto::notes::v1::WatchNotesRequest;
    let app = spawn_app_with(|settings| {
        settings.watch.backlog_bytes = 512 * 1024;
    })
    .await;
    let mut alice = app.member("acme", "alice").await;
    let mut stream = alice
        .watch_notes(WatchNotesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut note = text_note("customer", "1", "small");
    note.actions = vec![json_struct(serde_json::json!({
        "label": "x".repeat(100_000),
    }))];
    for _ in 0..60 {
        add(&mut alice, note.clone()).await;
    }
    let mut received = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
            Ok(Ok(Some(message))) => {
                if message.r#type != notesd::proto::notes::v1::WatchEventType::Heartbeat as i32 {
                    received += 1;
                }
                assert!(
                    received < 60,
                    "6 MB of actions waited for a reader, and the watch went on"
                );
            }
            Ok(Ok(None)) => panic!("the stream ended without a status after {received}"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream neither ended nor moved after {received}"),
        }
    };
    assert_eq!(reason(&ended), "WATCH_TOO_SLOW", "{ended:?}");
    assert!(received < 60, "{received} changes before the end");
}

/// The functions that run as the schema owner read the real tables, never
/// a temporary table of the same name that their caller made: pg_temp is
/// last in their search_path (left out, it came first).
#[tokio::test]
async fn a_temporary_table_cannot_stand_in_for_a_real_one() {
    let app = spawn_app().await;
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::query(&format!("set role {}", notesd::APP_ROLE))
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "create temporary table subjects (tenant_id text, subject_type text, subject_id text)",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("insert into pg_temp.subjects values ('other', 'contact', 'c-1')")
        .execute(&mut *conn)
        .await
        .unwrap();
    let elsewhere: bool =
        sqlx::query_scalar("select notesd_subject_registered_elsewhere('acme', 'contact', 'c-1')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert!(!elsewhere, "the function read the caller's temporary table");
    sqlx::query("reset role").execute(&mut *conn).await.unwrap();
    conn.close().await.unwrap();
}
