//! Logging with tracing. Nothing logged here carries a key or a note body:
//! spans record the method, the peer and a request id, never the payload
//! or the metadata.

use std::io::IsTerminal as _;
use std::time::Duration;

use tracing::Span;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. The filter comes from `RUST_LOG`
/// (default `info`). Logs go to standard error.
pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn,hyper=warn"));
    // Colours only for a person at a terminal, never in a file or a
    // collector's pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The caller's `x-request-id` when sent (at most 128 bytes), else a new
/// one.
fn request_id<B>(request: &http::Request<B>) -> String {
    request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// The span of one gRPC call: its method and a request id.
pub(crate) fn grpc_span<B>(request: &http::Request<B>) -> Span {
    let request_id = request_id(request);
    tracing::info_span!("grpc", method = %request.uri().path(), request_id = %request_id)
}

/// The span of one HTTP request: its method, the route template that
/// serves it (never the path: it may hold personal data), a request id.
pub(crate) fn http_span<B>(request: &http::Request<B>, route: &str) -> Span {
    let request_id = request_id(request);
    tracing::info_span!(
        "http",
        method = %request.method(),
        route = %route,
        request_id = %request_id
    )
}

/// Logs the end of a call with its latency (the gRPC status, carried in
/// trailers, is logged by the failure classifier).
pub(crate) fn on_grpc_response<B>(_response: &http::Response<B>, latency: Duration, _span: &Span) {
    tracing::debug!(latency_ms = latency.as_secs_f64() * 1000.0, "call finished");
}
