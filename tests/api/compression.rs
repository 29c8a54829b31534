//! Compression: gzip and zstd requests are accepted, responses are
//! compressed only for a client that accepts it, an unsupported encoding
//! is UNIMPLEMENTED as gRPC says, and a compressed message is bounded by
//! its decompressed size.

use notesd::proto::notes::v1 as pb;
use notesd::proto::notes::v1::notes_service_client::NotesServiceClient;
use tonic::Code;
use tonic::codec::CompressionEncoding;

use crate::helpers::*;

/// A raw gRPC GetNote call over HTTP/2: its grpc-status (from the
/// headers of a trailers-only answer, else the trailers), the answer's
/// grpc-encoding, and its body.
async fn raw_call(
    app: &TestApp,
    key: &str,
    encoding: &str,
    accept: &str,
    frame: Vec<u8>,
) -> (Option<String>, Option<String>, Vec<u8>) {
    let (headers, data, trailers) = raw_grpc(
        app,
        "/notes.v1.NotesService/GetNote",
        &[
            ("x-api-key", key),
            ("grpc-encoding", encoding),
            ("grpc-accept-encoding", accept),
        ],
        frame,
    )
    .await;
    let text = |value: Option<&http::HeaderValue>| value.map(|v| v.to_str().unwrap().to_owned());
    let status = text(headers.get("grpc-status")).or(text(trailers.get("grpc-status")));
    (status, text(headers.get("grpc-encoding")), data)
}

#[tokio::test]
async fn gzip_and_zstd_both_ways() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let text = "compressible ".repeat(100_000);
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = NotesServiceClient::with_interceptor(
            app.channel().await,
            Metadata(vec![("x-api-key", key.clone())]),
        )
        .send_compressed(encoding)
        .accept_compressed(encoding)
        .max_decoding_message_size(64 * 1024 * 1024);
        let added = add(&mut client, text_note("customer", "c-1", &text)).await;
        assert_eq!(body_text(&added), text);
        let got = client
            .get_note(pb::GetNoteRequest {
                id: added.id.clone(),
            })
            .await
            .unwrap();
        assert_eq!(got.get_ref().note.as_ref().unwrap(), &added);
    }
}

#[tokio::test]
async fn responses_are_compressed_only_for_clients_that_accept_it() {
    use prost::Message as _;
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let mut alice = app.client(&key).await;
    let note = add(
        &mut alice,
        text_note("customer", "c-1", &"x".repeat(64 * 1024)),
    )
    .await;
    let request = pb::GetNoteRequest { id: note.id }.encode_to_vec();

    for (accept, expected) in [
        ("identity", None),
        ("gzip", Some("gzip")),
        ("zstd", Some("zstd")),
        ("zstd,gzip", Some("zstd")),
    ] {
        let (status, encoding, body) =
            raw_call(&app, &key, "identity", accept, grpc_frame(false, &request)).await;
        assert_eq!(encoding.as_deref(), expected, "accepting {accept}");
        assert_ne!(status.as_deref(), Some("12"), "accepting {accept}");
        // The answer's frame is flagged compressed exactly when it is, and
        // a compressed one is much smaller than the 64 KiB note.
        assert_eq!(body[0], u8::from(expected.is_some()), "accepting {accept}");
        if expected.is_some() {
            assert!(body.len() < 4096, "{} bytes accepting {accept}", body.len());
        } else {
            assert!(body.len() > 64 * 1024);
        }
    }
}

#[tokio::test]
async fn an_unsupported_encoding_is_unimplemented() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let (status, _, _) = raw_call(&app, &key, "snappy", "identity", grpc_frame(true, b"xx")).await;
    assert_eq!(
        status.as_deref(),
        Some(&*(Code::Unimplemented as i32).to_string())
    );
}

#[tokio::test]
async fn a_compressed_message_is_bounded_by_its_decompressed_size() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    // 40 MiB of one letter compresses to a few dozen KiB: small on the
    // wire, over the 32 MiB limit once decompressed.
    let mut client = NotesServiceClient::with_interceptor(
        app.channel().await,
        Metadata(vec![("x-api-key", key)]),
    )
    .send_compressed(CompressionEncoding::Gzip)
    .max_encoding_message_size(64 * 1024 * 1024);
    let status = try_add(
        &mut client,
        text_note("customer", "c-1", &"a".repeat(40 * 1024 * 1024)),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "MESSAGE_TOO_LARGE");
    let count: i64 = sqlx::query_scalar("select count(*) from notes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}
