//! Builds the application (database, services, listener) and runs it until
//! a shutdown signal. Tests reuse it with port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::api::{MAX_MESSAGE_BYTES, NotesApi};
use crate::auth::{Authenticator, Callers};
use crate::compat::CompatState;
use crate::grpc::{
    AuthenticateLayer, CallLimitsLayer, CallScopeLayer, NotesGrpc, QuotaLayer, SubjectsGrpc,
};
use crate::http::OpsState;
use crate::listener::{AbortOnDrop, Incoming};
use crate::metrics::{GrpcMetricsLayer, Metrics};
use crate::proto::notes::v1::notes_service_server::NotesServiceServer;
use crate::proto::notes::v1::subjects_service_server::SubjectsServiceServer;
use crate::quotas::{Limits, QuotaSettings, QuotaSource, Quotas, builtin_tenant_limits};
use crate::service::{Notes, Subjects};
use crate::storage::{
    ApiKeyStore, BatchSettings, Canceller, ChangeFeeds, Database, DatabaseOptions, NoteStore,
    QuotaStore, ReadRouter, ReplicaSettings, RetentionSettings, SubjectStore, WatchSettings,
    run_retention,
};
use crate::tls::{TlsConfigs, TlsSettings};

#[derive(Debug, Clone)]
pub struct Settings {
    pub grpc_addr: SocketAddr,
    /// The HTTP port: metrics, health and readiness (and the vendor
    /// facades).
    pub http_addr: SocketAddr,
    pub database: DatabaseOptions,
    /// Hot standbys that may serve reads, and how fresh they must be.
    pub replicas: ReplicaSettings,
    /// How long in-flight calls may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Proxies whose `x-forwarded-for` is believed for the caller's address.
    pub trusted_proxies: Vec<IpNet>,
    /// Web origins whose pages may call the gRPC port with gRPC-Web.
    pub cors_allowed_origins: Vec<http::HeaderValue>,
    /// TLS (and mTLS) on both ports; plaintext without it.
    pub tls: Option<TlsSettings>,
    /// How concurrent adds are grouped into batches (group commit).
    pub batching: BatchSettings,
    /// Bounds on the calls in flight.
    pub limits: CallLimits,
    /// The change stream's bounds and rhythms.
    pub watch: WatchSettings,
    /// How long outbox events and request ids are kept.
    pub retention: RetentionSettings,
    /// Quotas per tenant and per key.
    pub quotas: QuotaSettings,
}

/// Bounds on the memory that calls in flight may hold, and on the work one
/// call may make the database do (docs/access.md, "Resource bounds").
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Calls handled at once, gRPC and facade requests together; more are
    /// shed (gRPC RESOURCE_EXHAUSTED `OVERLOADED`, a facade's 503).
    pub max_in_flight: usize,
    /// HTTP/2 streams a client may open at once on one connection
    /// (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// How long one SearchNotes statement may run before it is cancelled
    /// (RESOURCE_EXHAUSTED, SEARCH_TOO_COSTLY).
    pub search_timeout: Duration,
    /// How long a gRPC connection may live before the server asks its
    /// client to reconnect (GOAWAY; calls in flight get a minute to end):
    /// spreads long-lived clients over replicas. `None`: for ever.
    pub max_connection_age: Option<Duration>,
}

/// The server pings an idle gRPC connection this often (HTTP/2 PING)...
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// ...and closes it when the ping is not answered within this.
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Calls in flight on a connection past its age get this long to end.
const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(60);

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            max_concurrent_streams: 128,
            search_timeout: Duration::from_secs(2),
            max_connection_age: None,
        }
    }
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    http_listener: TcpListener,
    http_addr: SocketAddr,
    database: Database,
    /// Where reads go, and the task that checks the replicas.
    reads: (ReadRouter, Option<tokio::task::JoinHandle<()>>),
    shutdown_grace: Duration,
    trusted_proxies: Vec<IpNet>,
    cors_allowed_origins: Vec<http::HeaderValue>,
    /// The TLS configuration in force, and the task that reloads it.
    tls: Option<(TlsConfigs, AbortOnDrop)>,
    batching: BatchSettings,
    limits: CallLimits,
    watch: WatchSettings,
    retention: RetentionSettings,
    quotas: QuotaSettings,
    /// The pool's size, of which a tenant's default share is a part.
    pool_connections: u32,
}

impl Application {
    /// Reads the TLS files, connects to (and creates, and migrates, as
    /// configured) the database and binds the gRPC and HTTP ports.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let tls = settings.tls.map(crate::tls::start).transpose()?;
        let database = Database::connect(&settings.database).await?;
        let reads = database.read_router(settings.replicas)?;
        let listener = TcpListener::bind(settings.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.grpc_addr))?;
        let addr = listener.local_addr()?;
        let http_listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.http_addr))?;
        let http_addr = http_listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            http_listener,
            http_addr,
            database,
            reads,
            shutdown_grace: settings.shutdown_grace,
            trusted_proxies: settings.trusted_proxies,
            cors_allowed_origins: settings.cors_allowed_origins,
            tls,
            batching: settings.batching,
            limits: settings.limits,
            watch: settings.watch,
            retention: settings.retention,
            quotas: settings.quotas,
            pool_connections: settings.database.max_connections,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `shutdown` completes; then health turns NOT_SERVING
    /// (and `/readyz` 503), new connections are refused, in-flight calls get
    /// the grace period to finish, and it returns.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let pool = self.database.pool().clone();
        let authenticator = Authenticator::new(ApiKeyStore::new(pool.clone()));
        let key_watch = authenticator.watch_key_changes(pool.clone());
        // The first calls find the cache listening (and their keys cached),
        // unless the listener takes longer than this to connect.
        authenticator.wait_until_caching(KEY_LISTENER_WAIT).await;
        let (tls, tls_reload) = self.tls.unzip();
        let identities = match &tls {
            Some(tls) => tls.identities.clone(),
            None => tokio::sync::watch::channel(Arc::default()).1,
        };
        let callers = Callers::new(
            authenticator.clone(),
            self.trusted_proxies.clone(),
            identities,
        );
        let feeds = ChangeFeeds::start(pool.clone(), self.database.listener_pool(), self.watch);
        let (reads, replica_checks) = self.reads;
        let metrics = Metrics::new(pool.clone(), feeds.clone(), reads.clone());
        // The quota listener holds a connection of its own, outside the
        // pool that serves calls.
        let (overrides, quota_watch) =
            QuotaSource::start(QuotaStore::new(pool.clone()), self.database.listener_pool()).await;
        let _quota_watch = AbortOnDrop(quota_watch);
        let quotas = Quotas::new(
            self.quotas.enabled,
            builtin_tenant_limits(self.pool_connections).with(&self.quotas.tenant),
            Limits::NONE.with(&self.quotas.key),
            overrides,
            metrics.clone(),
        );
        let retention = tokio::spawn(run_retention(
            self.database.retention_pool(),
            self.retention,
        ));
        let notes_api = NotesApi::new(Notes::new(
            NoteStore::new(
                pool.clone(),
                reads.clone(),
                self.batching,
                metrics.clone(),
                feeds.clone(),
                self.limits.search_timeout,
            ),
            SubjectStore::new(pool.clone()),
        ));
        let notes = NotesGrpc::new(notes_api.clone());
        let subjects_service = Subjects::new(SubjectStore::new(pool.clone()));
        let subjects = SubjectsGrpc::new(subjects_service.clone());
        // One budget of calls in flight for both ports.
        let in_flight = Arc::new(tokio::sync::Semaphore::new(self.limits.max_in_flight));
        let compat = CompatState {
            api: notes_api,
            subjects: subjects_service,
            callers: callers.clone(),
            in_flight: in_flight.clone(),
            reads: reads.clone(),
            pre_auth: Arc::default(),
            quotas: quotas.clone(),
        };
        let ready = Arc::new(AtomicBool::new(true));
        let canceller = Canceller::start(self.database.canceller_pool());

        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http_app = crate::http::router(
            OpsState {
                metrics: metrics.clone(),
                pool,
                ready: ready.clone(),
                probed: Arc::default(),
            },
            compat,
        );
        let http_server = crate::http::serve(
            Incoming::start(self.http_listener, tls.clone())?,
            http_app,
            async {
                let _ = http_stopped.await;
            },
        );
        let mut http_server = tokio::spawn(http_server);
        let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
        tracing::info!(addr = %self.http_addr, scheme, "serving HTTP");

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<NotesServiceServer<NotesGrpc>>().await;
        health
            .set_serving::<SubjectsServiceServer<SubjectsGrpc>>()
            .await;
        // v1 for current grpcurl and buf curl, v1alpha for older clients.
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        // Outermost first: every call is counted, then traced; the budget
        // of calls in flight is taken before anything else is done, and
        // the caller is known before a body is read.
        //
        // Compression (docs/api.md, "Compression"): requests in gzip or
        // zstd are accepted; a response is compressed only when the
        // client's grpc-accept-encoding names one of them (zstd first).
        // tonic bounds a decompressed message by the same 32 MiB as a
        // plain one, and only authenticated calls are ever decompressed.
        let mut builder = Server::builder()
            .max_concurrent_streams(self.limits.max_concurrent_streams)
            // A client that vanished without closing (a host gone, a
            // network cut) is found within 80 s (docs/api.md, "Deadlines
            // and cancellation").
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT));
        if let Some(age) = self.limits.max_connection_age {
            builder = builder
                .max_connection_age(age)
                .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE);
        }
        let server = builder
            // Browsers: gRPC-Web over HTTP/1.1 (or HTTP/2), translated to
            // gRPC before anything else sees the call, behind CORS for
            // the configured origins (docs/api.md, "Browsers").
            .accept_http1(true)
            .layer(grpc_web_cors(self.cors_allowed_origins.clone()))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(GrpcMetricsLayer::new(metrics))
            .layer(
                TraceLayer::new_for_grpc()
                    .make_span_with(crate::telemetry::grpc_span)
                    .on_response(crate::telemetry::on_grpc_response)
                    .on_eos(crate::telemetry::on_grpc_eos)
                    .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
            )
            .layer(CallLimitsLayer::new(in_flight, MAX_MESSAGE_BYTES))
            // The call's deadline bounds everything after, from reading
            // its key on (docs/api.md, "Deadlines and cancellation").
            .layer(CallScopeLayer::new(canceller, reads))
            .layer(AuthenticateLayer::new(callers))
            // Admitted under its quotas once its caller is known, before
            // its body is read.
            .layer(QuotaLayer::new(quotas.clone()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                NotesServiceServer::new(notes)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .send_compressed(CompressionEncoding::Zstd)
                    .send_compressed(CompressionEncoding::Gzip),
            )
            .add_service(
                SubjectsServiceServer::new(subjects)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .send_compressed(CompressionEncoding::Zstd)
                    .send_compressed(CompressionEncoding::Gzip),
            )
            .serve_with_incoming_shutdown(
                Incoming::start(self.listener, tls)?.into_stream(),
                async {
                    let _ = server_stopped.await;
                },
            );
        tracing::info!(addr = %self.addr, scheme, "serving gRPC");

        tokio::pin!(server);
        tokio::select! {
            result = &mut server => return result.context("the gRPC server failed"),
            result = &mut http_server => {
                return match result {
                    Ok(()) => Err(anyhow::anyhow!("the HTTP server stopped")),
                    Err(err) => Err(anyhow::Error::new(err).context("the HTTP server panicked")),
                };
            }
            () = shutdown => {}
        }
        tracing::info!("shutting down: health is NOT_SERVING, finishing in-flight calls");
        ready.store(false, Ordering::SeqCst);
        health
            .set_not_serving::<NotesServiceServer<NotesGrpc>>()
            .await;
        health
            .set_not_serving::<SubjectsServiceServer<SubjectsGrpc>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        // Watches would keep the server open for the whole grace period:
        // they end now, telling their clients to resume elsewhere.
        feeds.close();
        retention.abort();
        let _ = stop_server.send(());
        let _ = stop_http.send(());
        let drained = tokio::time::timeout(self.shutdown_grace, async {
            let grpc = server.await;
            let http = http_server.await;
            (grpc, http)
        })
        .await;
        match drained {
            Ok((grpc, http)) => {
                grpc.context("the gRPC server failed")?;
                http.context("the HTTP server panicked")?;
            }
            Err(_) => tracing::warn!(
                grace = ?self.shutdown_grace,
                "in-flight calls did not finish within the grace period"
            ),
        }
        key_watch.abort();
        if let Some(task) = replica_checks {
            task.abort();
        }
        drop(tls_reload);
        self.database.pool().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long the start waits for the key-change listener, without which
/// no key is cached (see `auth::cache`); past it, the server serves all
/// the same, reading every key until the listener is up.
const KEY_LISTENER_WAIT: Duration = Duration::from_secs(5);

/// Reflection describes notes.v1, grpc.health.v1, and google.rpc's error
/// details, so grpcurl shows an error's ErrorInfo and BadRequest decoded.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// CORS for gRPC-Web callers: a preflight from one of `origins` is answered
/// with what a gRPC-Web call needs (POST; its content type, the key and
/// actor headers, a deadline; the gRPC status headers readable); any other
/// origin gets no CORS header, so its browser refuses the call.
fn grpc_web_cors(origins: Vec<http::HeaderValue>) -> tower_http::cors::CorsLayer {
    use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([http::Method::POST])
        .allow_headers([
            CONTENT_TYPE,
            AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-actor-id"),
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static("grpc-accept-encoding"),
            HeaderName::from_static("connect-protocol-version"),
            HeaderName::from_static("connect-timeout-ms"),
            // Read replicas' consistency tokens, and a page's trace.
            HeaderName::from_static("notesd-consistency-token"),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            HeaderName::from_static("grpc-encoding"),
            HeaderName::from_static("notesd-consistency-token"),
            // The caller's quota (docs/quotas.md).
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(24 * 60 * 60))
}
