//! Prometheus metrics, served as text at `GET /metrics` on the HTTP port.
//!
//! - `notesd_grpc_requests_total{method, code}`: finished gRPC calls;
//! - `notesd_grpc_request_duration_seconds{method}`: time to the response
//!   headers, which for a unary call is the whole handling time;
//! - `notesd_http_requests_total{route, status}`: finished HTTP requests
//!   (facades and operations), by route template (`other` when no route
//!   matched);
//! - `notesd_http_request_duration_seconds{route}`: time to the response
//!   headers;
//! - `notesd_db_pool_connections{state}`: open and idle pool connections;
//! - `notesd_add_batch_rows`: adds per group-commit transaction (its
//!   `_count` is the number of those transactions);
//! - `notesd_add_batch_splits_total`: batches that failed as a whole and
//!   were written again one add at a time;
//! - `notesd_get_batch_notes`: reads by id (GetNote) per shared query (its
//!   `_count` is the number of those queries);
//! - `notesd_watchers`: WatchNotes streams open; `notesd_watch_feeds`:
//!   tenants with a feed (one outbox reader each) in this process;
//! - `notesd_db_reads_total{target}`: reads that may go to a replica, by
//!   where they went (`primary`, `replica-0`, …);
//! - `notesd_replica_up{replica}` and `notesd_replica_lag_seconds{replica}`:
//!   whether each replica serves reads, and how far behind the primary its
//!   last check found it (absent while unknown).
//!
//! Labels hold no tenant, member or key: a bounded set of method names and
//! status codes only.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use prost::Message as _;
use sqlx::PgPool;

use crate::storage::{BatchObserver, ChangeFeeds, ReadRouter};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpCallLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    /// `RATE_LIMITED`, `TOO_MANY_CALLS` or `TOO_MANY_WATCHERS`.
    reason: &'static str,
    /// `tenant` or `key`: never which one, so the labels stay few.
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 16 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

/// The metrics of one server.
pub(crate) struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    http_calls: Family<HttpCallLabels, Counter>,
    http_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pool_connections: Family<PoolLabels, Gauge>,
    reads_by_target: Family<TargetLabels, Counter>,
    replica_up: Family<ReplicaLabels, Gauge>,
    replica_lag: Family<ReplicaLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    reads: ReadRouter,
    batch_rows: Histogram,
    batch_splits: Counter,
    quota_refusals: Family<QuotaLabels, Counter>,
    get_batch_notes: Histogram,
    watchers: Gauge,
    watch_feeds: Gauge,
    pool: PgPool,
    feeds: ChangeFeeds,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A call path's method (`package.Service/Method`) when this server serves
/// it: the one bounded set of names that metrics and traces may record.
pub(crate) fn served_method(path: &str) -> Option<&'static str> {
    static SERVED: LazyLock<HashSet<String>> = LazyLock::new(served_methods);
    let served: &'static HashSet<String> = &SERVED;
    path.strip_prefix('/')
        .and_then(|method| served.get(method))
        .map(String::as_str)
}

/// Every gRPC method this server serves, as `package.Service/Method`, read
/// from the descriptor sets of notes.v1, health and reflection.
fn served_methods() -> HashSet<String> {
    let sets = [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashSet::new();
    for encoded in sets {
        let set = prost_types::FileDescriptorSet::decode(encoded)
            .expect("the descriptor sets compiled into notesd decode");
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!(
                        "{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    methods
}

/// The method label of a call's path: the method's name when this server
/// serves it, else `other`, so no client can add a label value.
fn method_label(path: &str) -> &'static str {
    served_method(path).unwrap_or("other")
}

impl Metrics {
    pub(crate) fn new(pool: PgPool, feeds: ChangeFeeds, reads: ReadRouter) -> Arc<Self> {
        let mut registry = Registry::with_prefix("notesd");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("grpc_requests", "Finished gRPC calls", calls.clone());
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time from a gRPC call's arrival to its response headers",
            latency.clone(),
        );
        let http_calls = Family::<HttpCallLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Finished HTTP requests (facades and operations), by route template",
            http_calls.clone(),
        );
        let http_latency =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "http_request_duration_seconds",
            "Time from an HTTP request's arrival to its response headers",
            http_latency.clone(),
        );
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections, open and idle",
            pool_connections.clone(),
        );
        // 1 to 1024 adds.
        let batch_rows = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "add_batch_rows",
            "Adds written per group-commit transaction",
            batch_rows.clone(),
        );
        let batch_splits = Counter::default();
        registry.register(
            "add_batch_splits",
            "Batches of adds that failed as a whole and were written one add at a time",
            batch_splits.clone(),
        );
        let quota_refusals = Family::<QuotaLabels, Counter>::default();
        registry.register(
            "quota_refusals",
            "Calls refused by a tenant's or a key's quota, by reason and scope",
            quota_refusals.clone(),
        );
        // 1 to 1024 reads.
        let get_batch_notes = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "get_batch_notes",
            "Reads of a note by id (GetNote) served per shared query",
            get_batch_notes.clone(),
        );
        let reads_by_target = Family::<TargetLabels, Counter>::default();
        registry.register(
            "db_reads",
            "Reads that may go to a replica, by where they went",
            reads_by_target.clone(),
        );
        let replica_up = Family::<ReplicaLabels, Gauge>::default();
        registry.register(
            "replica_up",
            "Whether a replica serves reads (1) or is skipped (0)",
            replica_up.clone(),
        );
        let replica_lag =
            Family::<ReplicaLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "replica_lag_seconds",
            "How far behind the primary a replica's last check found it",
            replica_lag.clone(),
        );
        let watchers = Gauge::default();
        registry.register("watchers", "WatchNotes streams open", watchers.clone());
        let watch_feeds = Gauge::default();
        registry.register(
            "watch_feeds",
            "Tenants whose outbox this process reads for its watchers",
            watch_feeds.clone(),
        );
        Arc::new(Self {
            registry,
            calls,
            latency,
            http_calls,
            http_latency,
            pool_connections,
            reads_by_target,
            replica_up,
            replica_lag,
            reads,
            batch_rows,
            batch_splits,
            quota_refusals,
            get_batch_notes,
            watchers,
            watch_feeds,
            pool,
            feeds,
        })
    }

    /// Counts a call refused by a quota.
    pub(crate) fn quota_refused(&self, reason: &'static str, scope: &'static str) {
        self.quota_refusals
            .get_or_create(&QuotaLabels { reason, scope })
            .inc();
    }

    fn observe_call(&self, path: &str, code: tonic::Code, started: Instant) {
        let method = method_label(path).to_owned();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: format!("{code:?}"),
            })
            .inc();
    }

    /// Records a finished HTTP request. `route` is the template of the
    /// route that served it (`/api/v1/activity/note/{id}/`), or `other`:
    /// never the path itself, so no client can add a label value.
    pub(crate) fn observe_http(&self, route: &str, status: u16, started: Instant) {
        self.http_latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.http_calls
            .get_or_create(&HttpCallLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// Brings the read and replica metrics up to the router's counts.
    fn render_reads(&self) {
        let advance = |target: String, total: u64| {
            let counter = self.reads_by_target.get_or_create(&TargetLabels { target });
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        let (primary, replicas) = self.reads.status();
        advance("primary".to_owned(), primary);
        for (i, replica) in replicas.iter().enumerate() {
            advance(format!("replica-{i}"), replica.reads);
            let labels = ReplicaLabels {
                replica: i.to_string(),
            };
            self.replica_up
                .get_or_create(&labels)
                .set(i64::from(replica.up));
            match replica.lag_seconds {
                Some(lag) => {
                    self.replica_lag.get_or_create(&labels).set(lag);
                }
                None => {
                    self.replica_lag.remove(&labels);
                }
            }
        }
    }

    /// The metrics in the Prometheus text format.
    pub(crate) fn render(&self) -> String {
        let open = i64::from(self.pool.size());
        let idle = i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX);
        self.pool_connections
            .get_or_create(&PoolLabels { state: "open" })
            .set(open);
        self.pool_connections
            .get_or_create(&PoolLabels { state: "idle" })
            .set(idle);
        self.render_reads();
        let (watchers, feeds) = self.feeds.counts();
        self.watchers
            .set(i64::try_from(watchers).unwrap_or(i64::MAX));
        self.watch_feeds
            .set(i64::try_from(feeds).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// A tower layer that records every gRPC call in [`Metrics`].
#[derive(Debug, Clone)]
pub(crate) struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            // An error is answered "trailers-only", with grpc-status in the
            // headers; a success carries it in trailers, after the body.
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            metrics.observe_call(&path, code, started);
            response
        })
    }
}

impl BatchObserver for Metrics {
    fn batch_written(&self, rows: usize) {
        self.batch_rows.observe(rows as f64);
    }

    fn batch_split(&self) {
        self.batch_splits.inc();
    }

    fn reads_batched(&self, notes: usize) {
        self.get_batch_notes.observe(notes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_get_a_label_of_their_own() {
        assert_eq!(
            method_label("/notes.v1.NotesService/AddNote"),
            "notes.v1.NotesService/AddNote"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/evil.Service/X"), "other");
        assert_eq!(method_label("/notes.v1.Junk1/Method1"), "other");
        assert_eq!(method_label("/notes.v1.NotesService/Nope"), "other");
    }
}
