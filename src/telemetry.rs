//! Logging with tracing, and OpenTelemetry traces over OTLP when
//! `--otlp-endpoint` is set (docs/observability.md). Nothing logged or
//! exported here carries a key, a tenant, a member or a note body: spans
//! record the method, a request id and the trace id, never the payload or
//! the metadata.
//!
//! Every call's span (gRPC or HTTP) joins the caller's trace when the call
//! carries a valid W3C `traceparent` (and `tracestate`), and records the
//! trace id in its `trace_id` field, so every log line written during the
//! call names the trace. Without OTLP nothing of OpenTelemetry runs but
//! that parse: the logs then carry the caller's trace id, if any.

use std::borrow::Cow;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{Status, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use tracing::Span;
use tracing::subscriber::Interest;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// The OpenTelemetry service name of every span.
const SERVICE_NAME: &str = "notesd";

/// How long the exporter may take, at shutdown, to send the spans still
/// queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether spans are exported (set once, by `init`).
static EXPORTING: AtomicBool = AtomicBool::new(false);

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// What `init` started: the span exporter, when there is one.
#[must_use = "the exporter flushes only when shut down"]
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued (for at most 5 s) and stops the
    /// exporter. Nothing to do without `--otlp-endpoint`.
    pub(crate) async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // Shutting down blocks until the exporter's thread has sent its
        // last batch over a channel that this runtime drives.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "the last spans were not all exported"),
            Err(err) => tracing::warn!(error = %err, "the span exporter did not stop"),
        }
    }
}

/// Where spans are exported: an OTLP/gRPC collector's URL (`http` or
/// `https`), and for `https` the CA its certificate is verified against
/// (the system's roots without one).
#[derive(Debug, Clone)]
pub(crate) struct OtlpSettings {
    pub endpoint: String,
    pub ca_file: Option<std::path::PathBuf>,
}

/// Installs the global subscriber: logs on standard error, filtered by
/// `RUST_LOG` (default `info`); and, with `otlp`, a span exporter to that
/// OTLP/gRPC collector, batched on a thread of its own. Must run inside
/// the Tokio runtime that will serve (the exporter's connection runs on
/// it).
pub(crate) fn init(format: LogFormat, otlp: Option<&OtlpSettings>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn,hyper=warn"));
    let Some(otlp) = otlp else {
        // Without OTLP: RUST_LOG filters everything, as a global filter.
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(log_layer(format))
            .try_init();
        return Ok(Telemetry { provider: None });
    };
    let provider = tracer_provider(otlp)?;
    // RUST_LOG filters the logs only; the exporter takes notesd's own
    // spans (the calls and their database work), whatever it says, and
    // no events.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SERVICE_NAME))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(OwnSpans);
    let installed = tracing_subscriber::registry()
        .with(log_layer(format).with_filter(filter))
        .with(spans)
        .try_init()
        .is_ok();
    EXPORTING.store(installed, Ordering::Relaxed);
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The log lines on standard error, in `format`.
fn log_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    // Colours only for a person at a terminal, never in a file or a
    // collector's pipe.
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    }
}

/// The spans that are exported: notesd's own, at DEBUG and above (the
/// calls at INFO, their database work at DEBUG).
///
/// Its interest in them is `sometimes`, never `always`: tracing-subscriber
/// keeps each per-layer filter's decision in a thread-local from a
/// callsite's `enabled` check to its span's creation, and a callsite whose
/// every filter answered `always` is created without that check, reading
/// whatever decision the last check on that thread left (sqlx asks whether
/// a query would be logged, then logs nothing): the span was then seen by
/// no layer at all. A callsite some filter is `sometimes` interested in is
/// checked each time.
struct OwnSpans;

fn own_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("notesd") && *meta.level() <= tracing::Level::DEBUG
}

impl<S> tracing_subscriber::layer::Filter<S> for OwnSpans {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        own_span(meta)
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        if own_span(meta) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }
}

/// The tracer provider exporting to `endpoint` (OTLP over gRPC) in
/// batches: a queue of 2048 spans (`OTEL_BSP_MAX_QUEUE_SIZE`), and a span
/// ended while it is full is dropped; sent every 5 s
/// (`OTEL_BSP_SCHEDULE_DELAY`) or as soon as 512 are queued. Sampling
/// follows the caller's choice (parent-based, else every call), or
/// `OTEL_TRACES_SAMPLER`.
///
/// An `https` endpoint is reached over TLS, its certificate verified
/// against `ca_file` when given, else the system's roots: spans name
/// tenants' calls and carry their timings, and cross the network.
fn tracer_provider(otlp: &OtlpSettings) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithTonicConfig as _;
    let endpoint = otlp.endpoint.as_str();
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    if endpoint.starts_with("https://") {
        let tls = match &otlp.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read the OTLP CA {}", path.display()))?;
                anyhow::ensure!(
                    <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem)
                        .next()
                        .is_some_and(|cert| cert.is_ok()),
                    "{}: holds no PEM certificate",
                    path.display()
                );
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem))
            }
            None => tonic::transport::ClientTlsConfig::new().with_native_roots(),
        };
        builder = builder.with_tls_config(tls);
    }
    let exporter = builder
        .build()
        .with_context(|| format!("cannot export spans to {endpoint}"))?;
    let resource = Resource::builder()
        .with_service_name(SERVICE_NAME)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_resource(resource)
        .build())
}

/// The W3C trace context headers of a request, bounded: a `traceparent`
/// longer than 128 bytes or a `tracestate` longer than 512 is ignored, as
/// is any that does not parse.
struct TraceHeaders<'a>(&'a http::HeaderMap);

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

impl Extractor for TraceHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let limit = match key {
            TRACEPARENT => 128,
            TRACESTATE => 512,
            _ => return None,
        };
        self.0
            .get(key)
            .and_then(|value| value.to_str().ok())
            .filter(|value| value.len() <= limit)
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter(|key| self.0.contains_key(*key))
            .collect()
    }
}

/// The caller's span as the request's `traceparent` names it, or an empty
/// context when there is none or it is malformed.
fn caller_context(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), &TraceHeaders(headers))
}

/// Makes `span` a server span in the caller's trace (a trace of its own
/// when the request names none), and records the trace id in its
/// `trace_id` field. Returns the span's OpenTelemetry context when spans
/// are exported.
fn join_trace(span: &Span, headers: &http::HeaderMap) -> Option<Context> {
    let caller = caller_context(headers);
    let (trace_id, context) = if exporting() {
        // An empty context (no valid traceparent) makes it a root span.
        let _ = span.set_parent(caller);
        // Starts the OpenTelemetry span now, to learn its trace id.
        let context = span.context();
        (context.span().span_context().trace_id(), Some(context))
    } else {
        (caller.span().span_context().trace_id(), None)
    };
    if trace_id != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    context
}

/// The caller's `x-request-id` when it is an id (1 to 128 letters, digits
/// and `-_.:`), else a new one: it is logged and exported with every span,
/// and what else a caller might put there (spaces, quotes, personal data
/// in a long string) is not recorded.
fn request_id<B>(request: &http::Request<B>) -> String {
    request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// The span of one gRPC call: its method (`_OTHER` for one this server
/// does not serve: the path is then the caller's to choose, and is not
/// recorded), a request id and the trace id. Exported, it is named and
/// described by OpenTelemetry's RPC conventions:
/// `notes.v1.NotesService/GetNote`, `rpc.system`, `rpc.service`,
/// `rpc.method` (`_OTHER`, and the span `grpc`, for a method this server
/// does not serve), and `rpc.grpc.status_code` when it ends.
pub(crate) fn grpc_span<B>(request: &http::Request<B>) -> Span {
    let request_id = request_id(request);
    let method = crate::metrics::served_method(request.uri().path()).unwrap_or("_OTHER");
    // `otel.kind` is read when the span starts, so it is a field; the
    // rest is set on the OpenTelemetry span alone, out of the logs.
    let span = if exporting() {
        tracing::info_span!(
            "grpc",
            method = %method,
            request_id = %request_id,
            trace_id = tracing::field::Empty,
            otel.kind = "server",
        )
    } else {
        tracing::info_span!(
            "grpc",
            method = %method,
            request_id = %request_id,
            trace_id = tracing::field::Empty,
        )
    };
    if let Some(context) = join_trace(&span, request.headers()) {
        let otel = context.span();
        otel.set_attribute(KeyValue::new("rpc.system", "grpc"));
        let served = crate::metrics::served_method(request.uri().path());
        match served.and_then(|served| Some((served, served.split_once('/')?))) {
            Some((served, (service, name))) => {
                otel.update_name(Cow::Borrowed(served));
                otel.set_attribute(KeyValue::new("rpc.service", service));
                otel.set_attribute(KeyValue::new("rpc.method", name));
            }
            None => {
                otel.update_name(Cow::Borrowed("grpc"));
                otel.set_attribute(KeyValue::new("rpc.method", "_OTHER"));
            }
        }
    }
    span
}

/// The span of one HTTP request: its method, the route template that
/// serves it (never the path: it may hold personal data), a request id and
/// the trace id. Exported, it follows OpenTelemetry's HTTP conventions:
/// named `GET /api/v1/activity/note/`, with `http.request.method`,
/// `http.route` and, when it ends, `http.response.status_code`.
pub(crate) fn http_span<B>(request: &http::Request<B>, route: &str) -> Span {
    let request_id = request_id(request);
    let method = http_method(request.method());
    let span = if exporting() {
        tracing::info_span!(
            "http",
            method = %method,
            route = %route,
            request_id = %request_id,
            trace_id = tracing::field::Empty,
            otel.kind = "server",
        )
    } else {
        tracing::info_span!(
            "http",
            method = %method,
            route = %route,
            request_id = %request_id,
            trace_id = tracing::field::Empty,
        )
    };
    if let Some(context) = join_trace(&span, request.headers()) {
        let otel = context.span();
        otel.set_attribute(KeyValue::new("http.request.method", method));
        // `other`: no route matched, and the path is not recorded.
        if route == "other" {
            otel.update_name(Cow::Borrowed(method));
        } else {
            otel.update_name(Cow::Owned(format!("{method} {route}")));
            otel.set_attribute(KeyValue::new("http.route", route.to_owned()));
        }
    }
    span
}

/// A request's method, or `_OTHER` for one HTTP does not define (which a
/// client may make up at any length).
fn http_method(method: &http::Method) -> &'static str {
    use http::Method;
    [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::CONNECT, "CONNECT"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::PATCH, "PATCH"),
    ]
    .into_iter()
    .find(|(known, _)| known == method)
    .map_or("_OTHER", |(_, name)| name)
}

/// Records an HTTP request's status on its span (exported spans only): a
/// 5xx marks it failed.
pub(crate) fn record_http_status(span: &Span, status: u16) {
    if !exporting() {
        return;
    }
    span.set_attribute("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.set_status(Status::error(status.to_string()));
    }
}

/// Records a gRPC call's status code on its span (exported spans only):
/// the codes that are the server's failures by OpenTelemetry's
/// conventions (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS) mark it failed.
fn record_grpc_status(span: &Span, headers: &http::HeaderMap) {
    if !exporting() {
        return;
    }
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    span.set_attribute("rpc.grpc.status_code", i64::from(code));
    let code = tonic::Code::from_i32(code);
    use tonic::Code;
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.set_status(Status::error(format!("{code:?}")));
    }
}

/// Logs the end of a call with its latency, and records its status when
/// the response is "trailers-only" (an error; a success's status comes in
/// the trailers, see `on_grpc_eos`).
pub(crate) fn on_grpc_response<B>(response: &http::Response<B>, latency: Duration, span: &Span) {
    record_grpc_status(span, response.headers());
    tracing::debug!(latency_ms = latency.as_secs_f64() * 1000.0, "call finished");
}

/// Records the status a call's trailers carry.
pub(crate) fn on_grpc_eos(trailers: Option<&http::HeaderMap>, _duration: Duration, span: &Span) {
    if let Some(trailers) = trailers {
        record_grpc_status(span, trailers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn trace_id_of(map: &http::HeaderMap) -> TraceId {
        caller_context(map).span().span_context().trace_id()
    }

    #[test]
    fn a_valid_traceparent_names_the_callers_span() {
        let map = headers(&[(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let context = caller_context(&map);
        let span = context.span();
        let caller = span.span_context();
        assert!(caller.is_remote());
        assert_eq!(
            caller.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(caller.span_id().to_string(), "00f067aa0ba902b7");
        assert!(caller.is_sampled());
    }

    #[test]
    fn a_malformed_or_oversized_traceparent_is_ignored() {
        for value in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(
                trace_id_of(&headers(&[(TRACEPARENT, value)])),
                TraceId::INVALID,
                "{value:?}"
            );
        }
        let long = format!(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}",
            "a".repeat(200)
        );
        assert_eq!(
            trace_id_of(&headers(&[(TRACEPARENT, &long)])),
            TraceId::INVALID
        );
        assert_eq!(trace_id_of(&http::HeaderMap::new()), TraceId::INVALID);
    }

    #[test]
    fn an_oversized_tracestate_is_dropped_and_the_parent_kept() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        // 60 valid members, 660 bytes: past the bound, though the parser
        // alone would keep the first 32.
        let state = (0..60)
            .map(|i| format!("k{i:02}=vvvvvv"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(state.len() > 512);
        let map = headers(&[(TRACEPARENT, parent), (TRACESTATE, &state)]);
        let context = caller_context(&map);
        let span = context.span();
        assert!(span.span_context().is_valid());
        assert_eq!(span.span_context().trace_state().header(), "");
        let map = headers(&[(TRACEPARENT, parent), (TRACESTATE, "vendor=abc")]);
        let context = caller_context(&map);
        assert_eq!(
            context.span().span_context().trace_state().header(),
            "vendor=abc"
        );
    }

    #[test]
    fn only_served_methods_are_named() {
        use crate::metrics::served_method;
        assert_eq!(
            served_method("/notes.v1.NotesService/GetNote"),
            Some("notes.v1.NotesService/GetNote")
        );
        assert_eq!(served_method("/evil.Service/X"), None);
        assert_eq!(served_method("notes.v1.NotesService/GetNote"), None);
    }

    #[test]
    fn request_ids_are_ids_and_methods_are_bounded() {
        let with_id = |id: &str| {
            http::Request::builder()
                .header("x-request-id", id)
                .body(())
                .unwrap()
        };
        assert_eq!(request_id(&with_id("req-42_a.b:c")), "req-42_a.b:c");
        for made_up in ["a b", "\"quoted\"", &"x".repeat(129), "email=a@b.c"] {
            let id = request_id(&with_id(made_up));
            assert_ne!(id, made_up);
            assert!(uuid::Uuid::try_parse(&id).is_ok(), "{id}");
        }
        assert_eq!(http_method(&http::Method::PATCH), "PATCH");
        assert_eq!(http_method(&http::Method::GET), "GET");
        let made_up = http::Method::from_bytes(&[b'X'; 100]).unwrap();
        assert_eq!(http_method(&made_up), "_OTHER");
    }
}
