//! The HTTP side of notesd (axum): operational endpoints and the vendor
//! facades (`compat`).
//!
//! - `GET /metrics`: Prometheus text format;
//! - `GET /healthz`: 200 while the process runs (liveness);
//! - `GET /readyz`: 200 when the database answers and the server is not
//!   shutting down, else 503 (readiness).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sqlx::PgPool;
use tracing::Instrument as _;

use crate::compat::CompatState;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub(crate) struct OpsState {
    pub metrics: Arc<Metrics>,
    pub pool: PgPool,
    /// Cleared when shutdown begins, so load balancers stop sending work.
    pub ready: Arc<AtomicBool>,
}

/// The operational endpoints, and the vendor facades; every request is
/// counted, timed and traced by its route template.
pub(crate) fn router(state: OpsState, compat: CompatState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(crate::compat::router(compat))
        .layer(axum::middleware::from_fn_with_state(metrics, observe))
}

/// The route template that serves a request, or `other`.
fn route_of<B>(request: &axum::http::Request<B>) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |path| path.as_str().to_owned())
}

/// Records each request in the metrics, within a span that names its
/// method, route template, request id and trace id (never the path or
/// query, which may hold a customer's email or phone number).
async fn observe(
    State(metrics): State<Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = route_of(&request);
    let span = crate::telemetry::http_span(&request, &route);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    metrics.observe_http(&route, status, started);
    crate::telemetry::record_http_status(&span, status);
    span.in_scope(|| {
        tracing::debug!(
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    response
}

async fn metrics_text(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<OpsState>) -> (StatusCode, &'static str) {
    if !state.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    let ping = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("select 1").execute(&state.pool),
    )
    .await;
    match ping {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}
