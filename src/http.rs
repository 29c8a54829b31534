//! The HTTP side of notesd (axum): operational endpoints and the vendor
//! facades (`compat`).
//!
//! - `GET /metrics`: Prometheus text format;
//! - `GET /healthz`: 200 while the process runs (liveness);
//! - `GET /readyz`: 200 when the database answers and the server is not
//!   shutting down, else 503 (readiness).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::Listener as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use sqlx::PgPool;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::compat::CompatState;
use crate::listener::Incoming;
use crate::metrics::Metrics;

/// How long a client may take to send a request's headers (each request's,
/// on a connection kept alive): a connection that sends them a byte at a
/// time is closed then, as the gRPC port's are. Bodies have their own
/// bound where they are read (`compat::common::read_body`).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A silent HTTP/2 client is pinged this often, and dropped when it does
/// not answer within [`HTTP2_KEEPALIVE_TIMEOUT`], as on the gRPC port.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `app` on `incoming` until `shutdown` completes, then finishes
/// the requests in progress and returns once every connection has closed.
///
/// axum's own `serve` gives hyper no timer, so hyper bounds nothing in
/// time: a client that sent its headers a byte a minute held its
/// connection (and, before it sent a key, nothing counted it) for ever.
/// This is the same loop with the timer, and the header read timeout on.
/// Each request carries its peer's address as axum's `ConnectInfo`.
pub(crate) async fn serve(mut incoming: Incoming, app: Router, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            conn = incoming.accept() => conn,
            () = &mut shutdown => break,
        };
        let requested = Arc::new(AtomicBool::new(false));
        let service = app.clone().map_request({
            let requested = requested.clone();
            move |request: axum::http::Request<hyper::body::Incoming>| {
                requested.store(true, Ordering::Relaxed);
                let mut request = request.map(axum::body::Body::new);
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::pin!(conn);
            // Before hyper knows the protocol (HTTP/1, or HTTP/2's
            // preface) it reads with no timer: a connection whose first
            // request has not come within the header timeout is closed.
            let ended = tokio::select! {
                ended = &mut conn => Some(ended),
                () = tokio::time::sleep(HEADER_READ_TIMEOUT) => None,
            };
            let ended = match ended {
                Some(ended) => ended,
                None if !requested.load(Ordering::Relaxed) => return,
                None => conn.await,
            };
            if let Err(err) = ended {
                tracing::trace!(error = %err, "an HTTP connection ended in error");
            }
        });
    }
    drop(incoming);
    graceful.shutdown().await;
}

#[derive(Debug, Clone)]
pub(crate) struct OpsState {
    pub metrics: Arc<Metrics>,
    pub pool: PgPool,
    /// Cleared when shutdown begins, so load balancers stop sending work.
    pub ready: Arc<AtomicBool>,
    /// The database's last answer to `/readyz` (see `readyz`).
    pub probed: Arc<tokio::sync::Mutex<Option<(Instant, bool)>>>,
}

/// How long the database's answer to `/readyz` stands.
const READY_PROBE_MAX_AGE: Duration = Duration::from_secs(1);

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
    // Anyone may ask, without a key: the database is asked at most once
    // a second, one probe at a time, whoever asks and how often (a flood
    // of probes took a connection of the pool each).
    let mut probed = state.probed.lock().await;
    let answers = match *probed {
        Some((at, answers)) if at.elapsed() < READY_PROBE_MAX_AGE => answers,
        _ => {
            // notesd's own table, not just `select 1`: the database answers
            // with notesd's schema.
            let ping = tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::query("select 1 from api_keys limit 0").execute(&state.pool),
            )
            .await;
            let answers = matches!(ping, Ok(Ok(_)));
            *probed = Some((Instant::now(), answers));
            answers
        }
    };
    drop(probed);
    if answers {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
    }
}
