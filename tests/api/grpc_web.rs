//! Browsers: gRPC-Web over HTTP/1.1 on the gRPC port, and CORS that
//! answers only the configured origins.

use notesd::proto::notes::v1 as pb;
use prost::Message as _;

use crate::helpers::*;

const ORIGIN: &str = "https://notes.example.com";

/// A gRPC-Web call over HTTP/1.1 (reqwest speaks nothing else here): the
/// HTTP status, the message of the first data frame, and the trailer
/// frame's text.
async fn grpc_web_call(
    app: &TestApp,
    method: &str,
    key: &str,
    message: &impl prost::Message,
) -> (u16, Vec<u8>, String) {
    let encoded = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend((encoded.len() as u32).to_be_bytes());
    body.extend(encoded);
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/notes.v1.NotesService/{method}",
            app.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("x-api-key", key)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    // A trailers-only answer (an error before any message) carries them as
    // headers.
    let header_trailers: String = ["grpc-status", "grpc-status-details-bin"]
        .iter()
        .filter_map(|name| {
            let value = response.headers().get(*name)?.to_str().ok()?;
            Some(format!("{name}:{value}\r\n"))
        })
        .collect();
    let bytes = response.bytes().await.unwrap().to_vec();
    // Frames: a flag byte (0x80 for the trailers), a length, the bytes.
    let (mut data, mut trailers, mut rest) = (Vec::new(), String::new(), &bytes[..]);
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let payload = &rest[5..5 + len];
        if rest[0] & 0x80 != 0 {
            trailers = String::from_utf8(payload.to_vec()).unwrap();
        } else if data.is_empty() {
            data = payload.to_vec();
        }
        rest = &rest[5 + len..];
    }
    if trailers.is_empty() {
        trailers = header_trailers;
    }
    (status, data, trailers)
}

#[tokio::test]
async fn a_grpc_web_client_adds_and_reads_a_note_over_http1() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let (status, data, trailers) = grpc_web_call(
        &app,
        "AddNote",
        &key,
        &pb::AddNoteRequest {
            request_id: String::new(),
            note: Some(text_note("customer", "c-1", "from a browser")),
        },
    )
    .await;
    assert_eq!(status, 200);
    assert!(trailers.contains("grpc-status:0"), "{trailers:?} {data:?}");
    let added = pb::AddNoteResponse::decode(&data[..])
        .unwrap()
        .note
        .unwrap();
    assert_eq!(body_text(&added), "from a browser");

    let (_, data, trailers) = grpc_web_call(
        &app,
        "GetNote",
        &key,
        &pb::GetNoteRequest {
            id: added.id.clone(),
        },
    )
    .await;
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(
        pb::GetNoteResponse::decode(&data[..])
            .unwrap()
            .note
            .unwrap(),
        added
    );

    // Errors keep their code and details: an unknown key.
    let (_, _, trailers) = grpc_web_call(
        &app,
        "GetNote",
        "nk_nonsense",
        &pb::GetNoteRequest { id: added.id },
    )
    .await;
    assert!(trailers.contains("grpc-status:16"), "{trailers}");
    assert!(trailers.contains("grpc-status-details-bin"), "{trailers}");
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/notes.v1.NotesService/AddNote", app.addr),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-api-key",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_answers_only_the_allowed_origins() {
    let app = spawn_app_with(|settings| {
        settings.cors_allowed_origins = vec![http::HeaderValue::from_static(ORIGIN)];
    })
    .await;
    let allowed = preflight(&app, ORIGIN).await;
    assert!(allowed.status().is_success(), "{:?}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], ORIGIN);
    let allowed_headers = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed_headers.contains("x-api-key"), "{allowed_headers}");

    // The call itself, from that origin: the gRPC status headers are
    // readable by the page.
    let call = reqwest::Client::new()
        .post(format!("http://{}/notes.v1.NotesService/GetNote", app.addr))
        .header("origin", ORIGIN)
        .header("content-type", "application/grpc-web+proto")
        .body(vec![0, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(call.headers()["access-control-allow-origin"], ORIGIN);
    let exposed = call.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("grpc-status"), "{exposed}");

    // An authenticated call reports its quota in headers the page can read.
    let key = app.member_key("acme", "alice").await;
    let call = reqwest::Client::new()
        .post(format!(
            "http://{}/notes.v1.NotesService/ListNotes",
            app.addr
        ))
        .header("origin", ORIGIN)
        .header("content-type", "application/grpc-web+proto")
        .header("x-api-key", &key)
        .body(vec![0, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    let exposed = call.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(call.headers().contains_key(name), "{:?}", call.headers());
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }

    let other = preflight(&app, "https://evil.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // None by default.
    let default = spawn_app().await;
    let refused = preflight(&default, ORIGIN).await;
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
