//! The standard services next to NotesService: health and reflection; and
//! a graceful stop.

use futures::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::helpers::*;

#[tokio::test]
async fn health_check_reports_serving() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "notes.v1.NotesService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("health of {service:?}: {status:?}"))
            .into_inner();
        assert_eq!(
            response.status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await
        .expect_err("an unknown service has no health");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn health_needs_no_api_key() {
    let app = spawn_app().await;
    // The health client sends no metadata at all; the call above already
    // proves it, this proves the notes service itself still wants a key.
    let mut health = HealthClient::new(app.channel().await);
    assert!(
        health
            .check(HealthCheckRequest {
                service: String::new()
            })
            .await
            .is_ok()
    );
    let mut anonymous = app.client_with(vec![]).await;
    let status = list(&mut anonymous, Default::default())
        .await
        .expect_err("needs a key");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

async fn reflect(app: &TestApp, request: MessageRequest) -> MessageResponse {
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let outbound = futures::stream::iter(vec![ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }]);
    let mut inbound = reflection
        .server_reflection_info(outbound)
        .await
        .expect("reflection answers")
        .into_inner();
    inbound
        .next()
        .await
        .expect("one response")
        .expect("a successful response")
        .message_response
        .expect("a message response")
}

#[tokio::test]
async fn reflection_lists_the_notes_service() {
    let app = spawn_app().await;
    let MessageResponse::ListServicesResponse(services) =
        reflect(&app, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a list of services");
    };
    let names: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == "notes.v1.NotesService"),
        "{names:?}"
    );
}

#[tokio::test]
async fn reflection_describes_the_notes_service() {
    let app = spawn_app().await;
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        &app,
        MessageRequest::FileContainingSymbol("notes.v1.NotesService".to_owned()),
    )
    .await
    else {
        panic!("not a file descriptor response");
    };
    use prost::Message as _;
    let described = files.file_descriptor_proto.iter().any(|bytes| {
        let file =
            prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("a file descriptor");
        file.package() == "notes.v1"
            && file.service.iter().any(|s| {
                s.name() == "NotesService"
                    && s.method.iter().any(|m| m.name() == "ListNoteRevisions")
            })
    });
    assert!(
        described,
        "the descriptor of notes.v1.NotesService is served"
    );
}

#[tokio::test]
async fn server_stops_cleanly_when_asked() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    add(&mut alice, text_note("customer", "c-1", "before stop")).await;
    let addr = app.addr;
    app.stop().await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the server no longer listens on {addr}");
}
