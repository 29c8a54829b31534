//! Traces over OTLP: notesd started with `--otlp-endpoint` exports its
//! spans to a collector (here one of the test's own), in the caller's
//! trace, with child spans for database work and no tenant in sight.
//!
//! The process is the real binary: the tracing subscriber is global, so
//! the in-process apps of the other tests do not install one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use notesd::proto::notes::v1 as pb;
use notesd::proto::notes::v1::notes_service_client::NotesServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::io::AsyncReadExt as _;

use crate::helpers::*;

/// An OTLP/gRPC trace collector that keeps what it is sent.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves on a port of its own; its URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        format!("http://{addr}")
    }

    /// Serves over TLS as `leaf` (a certificate for localhost); its URL.
    async fn start_tls(&self, leaf: &crate::tls::Leaf) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&leaf.cert, &leaf.key));
        tokio::spawn(
            tonic::transport::Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        format!("https://localhost:{}", addr.port())
    }

    /// Every span received, with its resource's attributes.
    fn spans(&self) -> Vec<(Vec<KeyValue>, ExportedSpan)> {
        let received = self.received.lock().unwrap();
        let mut spans = Vec::new();
        for request in received.iter() {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        spans.push((resource.clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }
}

type ExportedSpan = opentelemetry_proto::tonic::trace::v1::Span;

/// The value of attribute `key`, as text (integers in decimal).
fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(text)
}

fn text(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// The names of a process's threads (at most 15 bytes each, as Linux
/// keeps them).
fn thread_names(child: &tokio::process::Child) -> Vec<String> {
    let pid = child.id().expect("running");
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

/// The exporter's thread (`OpenTelemetry.Traces.BatchProcessor`, cut).
const EXPORTER_THREAD: &str = "OpenTelemetry.T";

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread")]
async fn a_call_is_exported_in_the_callers_trace_with_its_database_work() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let app = spawn_app().await;
    let (process, channel) =
        NotesdProcess::start(&app, &["--otlp-endpoint", &endpoint], "info,notesd=debug").await;
    let mut server = process.child;
    assert!(
        thread_names(&server)
            .iter()
            .any(|name| name == EXPORTER_THREAD),
        "{:?}",
        thread_names(&server)
    );
    let key = app.member_key("acme", "alice").await;
    let body = "a-body-that-must-never-be-exported";

    // A call in the caller's trace.
    let mut client = NotesServiceClient::with_interceptor(
        channel.clone(),
        Metadata(vec![
            ("x-api-key", key.clone()),
            ("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")),
            ("tracestate", "vendor=abc".to_owned()),
        ]),
    );
    let note = add(&mut client, text_note("customer", "c-42", body)).await;
    // A refusal ("trailers-only": its status in the headers).
    let missing = get(&mut client, &uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);

    // A malformed traceparent is no error: the call starts a trace of its
    // own.
    let mut garbled = NotesServiceClient::with_interceptor(
        channel,
        Metadata(vec![
            ("x-api-key", key.clone()),
            ("traceparent", format!("00-{TRACE_ID}-nothex-01")),
        ]),
    );
    garbled
        .get_note(pb::GetNoteRequest {
            id: note.id.clone(),
        })
        .await
        .expect("GetNote with a malformed traceparent succeeds");

    // An HTTP request joins the caller's trace too.
    let status = reqwest::Client::new()
        .get(format!("http://{}/healthz", process.http_addr))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .send()
        .await
        .expect("/healthz answers")
        .status();
    assert_eq!(status, 200);

    // Shutdown flushes the queued spans before the process exits.
    let exit = sigterm(&mut server, Duration::from_secs(30)).await;
    assert!(exit.success(), "notesd exited with {exit}");
    let mut logs = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();

    let spans = collector.spans();
    assert!(!spans.is_empty(), "no span was exported; logs:\n{logs}");
    for (resource, _) in &spans {
        assert_eq!(
            attribute(resource, "service.name").as_deref(),
            Some("notesd")
        );
    }
    let trace_id = hex::decode(TRACE_ID).unwrap();
    let named = |name: &str| -> Vec<&ExportedSpan> {
        spans
            .iter()
            .map(|(_, span)| span)
            .filter(|span| span.name == name)
            .collect()
    };

    // The call's span: a server span, child of the caller's.
    let calls = named("notes.v1.NotesService/AddNote");
    assert_eq!(calls.len(), 1, "{spans:#?}");
    let call = calls[0];
    assert_eq!(call.trace_id, trace_id, "the call joins the caller's trace");
    assert_eq!(call.parent_span_id, hex::decode(CALLER_SPAN_ID).unwrap());
    assert_eq!(call.kind, SpanKind::Server as i32);
    assert_eq!(call.trace_state, "vendor=abc");
    let attrs = &call.attributes;
    assert_eq!(attribute(attrs, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attribute(attrs, "rpc.service").as_deref(),
        Some("notes.v1.NotesService")
    );
    assert_eq!(attribute(attrs, "rpc.method").as_deref(), Some("AddNote"));
    assert_eq!(
        attribute(attrs, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert_eq!(attribute(attrs, "trace_id").as_deref(), Some(TRACE_ID));

    // Its database work: a client span below it, in the same trace.
    let writes = named("db.add_note");
    assert_eq!(writes.len(), 1, "{spans:#?}");
    let write = writes[0];
    assert_eq!(write.trace_id, trace_id);
    assert_eq!(write.parent_span_id, call.span_id);
    assert_eq!(write.kind, SpanKind::Client as i32);
    assert_eq!(
        attribute(&write.attributes, "db.system").as_deref(),
        Some("postgresql")
    );
    // The key was looked up (the first call of this key) inside the call.
    assert!(
        named("db.find_api_key")
            .iter()
            .any(|lookup| lookup.parent_span_id == call.span_id),
        "{spans:#?}"
    );

    // The refusal, in the caller's trace: NOT_FOUND is the caller's
    // failure, not the server's, so the span is not marked failed.
    let reads = named("notes.v1.NotesService/GetNote");
    assert_eq!(reads.len(), 2, "{spans:#?}");
    let refused = reads
        .iter()
        .find(|span| span.trace_id == trace_id)
        .expect("the refused GetNote in the caller's trace");
    assert_eq!(
        attribute(&refused.attributes, "rpc.grpc.status_code").as_deref(),
        Some("5")
    );
    assert_eq!(
        refused.status.as_ref().map_or(0, |status| status.code),
        0,
        "unset"
    );

    // The garbled call: a trace of its own, and no parent.
    let garbled = reads
        .iter()
        .find(|span| span.trace_id != trace_id)
        .expect("the garbled GetNote in a trace of its own");
    assert_eq!(garbled.trace_id.len(), 16);
    assert!(garbled.parent_span_id.is_empty());
    assert_eq!(
        attribute(&garbled.attributes, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );

    // The HTTP request's span.
    let health = named("GET /healthz");
    assert_eq!(health.len(), 1, "{spans:#?}");
    assert_eq!(health[0].trace_id, trace_id);
    assert_eq!(health[0].kind, SpanKind::Server as i32);
    assert_eq!(
        attribute(&health[0].attributes, "http.route").as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        attribute(&health[0].attributes, "http.response.status_code").as_deref(),
        Some("200")
    );

    // No span names the tenant, the member, the key, the subject or the
    // body.
    let secret_part = &key["nk_".len() + 33..];
    for (_, span) in &spans {
        for kv in &span.attributes {
            let value = kv.value.as_ref().and_then(text).unwrap_or_default();
            for secret in ["acme", "alice", "c-42", body, &key, secret_part] {
                assert!(
                    !value.contains(secret) && !kv.key.contains(secret),
                    "{} carries {secret:?}: {kv:?}",
                    span.name
                );
            }
            assert!(
                !kv.key.contains("tenant") && !kv.key.contains("member"),
                "{}: {kv:?}",
                span.name
            );
        }
    }

    // The call's log lines name its trace.
    assert!(
        logs.lines()
            .any(|line| line.contains("call finished") && line.contains(TRACE_ID)),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_endpoint_no_exporter_runs_and_logs_still_carry_the_callers_trace() {
    let app = spawn_app().await;
    let (process, channel) =
        NotesdProcess::start(&app, &["--log-format", "json"], "info,notesd=debug").await;
    let mut server = process.child;
    assert!(
        !thread_names(&server)
            .iter()
            .any(|name| name == EXPORTER_THREAD),
        "{:?}",
        thread_names(&server)
    );
    let key = app.member_key("acme", "alice").await;
    let mut client = NotesServiceClient::with_interceptor(
        channel,
        Metadata(vec![
            ("x-api-key", key),
            ("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")),
        ]),
    );
    add(&mut client, text_note("customer", "1", "text")).await;
    let exit = sigterm(&mut server, Duration::from_secs(30)).await;
    assert!(exit.success(), "notesd exited with {exit}");
    let mut logs = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    // In JSON, the trace id is a field of the call's span.
    let finished: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "call finished")
        .collect();
    assert_eq!(finished.len(), 1, "{logs}");
    assert_eq!(finished[0]["span"]["name"], "grpc", "{logs}");
    assert_eq!(finished[0]["span"]["trace_id"], TRACE_ID, "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absent_collector_delays_neither_calls_nor_shutdown() {
    let app = spawn_app().await;
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (process, channel) =
        NotesdProcess::start(&app, &["--otlp-endpoint", &nobody], "info").await;
    let mut server = process.child;
    let key = app.member_key("acme", "alice").await;
    let mut client = NotesServiceClient::with_interceptor(
        channel,
        Metadata(vec![
            ("x-api-key", key),
            ("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")),
        ]),
    );
    for i in 0..20 {
        let started = std::time::Instant::now();
        add(
            &mut client,
            text_note("customer", "1", &format!("note {i}")),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // The last spans are given up within the flush timeout (5 s).
    let started = std::time::Instant::now();
    let exit = sigterm(&mut server, Duration::from_secs(30)).await;
    assert!(exit.success(), "notesd exited with {exit}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// Spans may cross the network to a collector over TLS: an https endpoint
/// is verified against --otlp-ca-file (the system's roots without it), and
/// the spans arrive. (Export was plaintext only.) A caller's request id
/// that is not an id is not exported; nor is an unknown method's path.
#[tokio::test(flavor = "multi_thread")]
async fn spans_go_to_a_collector_over_tls_without_what_a_caller_made_up() {
    let ca = crate::tls::Ca::new("collector CA");
    let dir = crate::tls::TlsDir::new();
    let ca_file = dir.write("collector-ca.crt", &ca.pem());
    let collector = Collector::default();
    let endpoint = collector.start_tls(&ca.server()).await;
    let app = spawn_app().await;
    let ca_arg = ca_file.display().to_string();
    let (process, channel) = NotesdProcess::start(
        &app,
        &["--otlp-endpoint", &endpoint, "--otlp-ca-file", &ca_arg],
        "info",
    )
    .await;
    let mut server = process.child;
    let key = app.member_key("acme", "alice").await;
    let made_up_id = "id with spaces and an email a@b.c";
    let mut client = NotesServiceClient::with_interceptor(
        channel.clone(),
        Metadata(vec![
            ("x-api-key", key),
            ("x-request-id", made_up_id.to_owned()),
        ]),
    );
    add(&mut client, text_note("customer", "c-1", "over TLS")).await;
    let unknown = tonic::client::Grpc::new(channel.clone());
    let _ = raw_unknown_call(unknown, "/secret.PathOf/TheCaller").await;
    let exit = sigterm(&mut server, Duration::from_secs(30)).await;
    assert!(exit.success(), "notesd exited with {exit}");

    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .any(|(_, span)| span.name == "notes.v1.NotesService/AddNote"),
        "the call's span came over TLS: {:?}",
        spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
    );
    for (_, span) in &spans {
        for value in span
            .attributes
            .iter()
            .filter_map(|kv| kv.value.as_ref().and_then(text))
        {
            assert!(!value.contains("a@b.c"), "{}: {value}", span.name);
            assert!(!value.contains("secret.PathOf"), "{}: {value}", span.name);
        }
    }
}

/// A call of a method notesd does not serve, by its raw path.
async fn raw_unknown_call(
    mut grpc: tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
) -> Result<(), tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(
        tonic::Request::new(()),
        http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(|_| ())
}
