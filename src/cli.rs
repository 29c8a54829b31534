//! The command line: `notesd serve` (the default), `notesd migrate`,
//! `notesd keys create|rotate|list|revoke`, `notesd quotas set|show|reset`. Every flag also reads an environment
//! variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use uuid::Uuid;

use crate::auth::{Authenticator, KeyKind, KeySpec};
use crate::domain::{MemberId, TenantId};
use crate::local_postgres::{self, LocalPostgres, LocalPostgresOptions, PgBinaries};
use crate::quotas::{Override, QuotaSettings};
use crate::startup::{Application, CallLimits, Settings, shutdown_signal};
use crate::storage::{
    APP_ROLE, ApiKeyStore, BatchSettings, Database, DatabaseOptions, QuotaRow, QuotaStore,
    ReplicaSettings, RetentionSettings, WatchSettings, check_server, redact_url,
};
use crate::telemetry::{self, LogFormat};
use crate::tls::{ClientAuth, TlsSettings};

/// The local Postgres, database `notesd`, through the Unix socket the
/// distributions' PostgreSQL makes, not 127.0.0.1:5432: any local user may
/// listen on a TCP port above 1023 while no server does, and would then
/// receive notesd's connection, and its data; only the `postgres` user
/// (and its group) may make a socket in that directory.
pub const DEFAULT_DATABASE_URL: &str = "postgres:///notesd?host=/var/run/postgresql&user=postgres";

/// How long the server at the default address has to answer before notesd
/// runs its own.
const DEFAULT_SERVER_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection limit of notesd's own server: PostgreSQL's default.
const LOCAL_MAX_CONNECTIONS: u32 = 100;

/// notesd: a gRPC notes service over PostgreSQL.
///
/// Internal services add, update and read notes about their records over
/// gRPC (package notes.v1: NotesService and SubjectsService; reflection and
/// grpc.health.v1 are served too). Calls carry an API key from `notesd keys
/// create`. Notes persist in PostgreSQL; the database is created if missing
/// and migrated at start. Without a database URL, notesd uses the server at
/// the default address, or, when none answers there, runs a PostgreSQL of
/// its own (see --data-dir).
#[derive(Debug, Parser)]
#[command(name = "notesd", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    common: CommonArgs,

    /// Options of `serve`, which also runs when no command is given.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// PostgreSQL URL of the notesd database. When given, it is the only
    /// database notesd uses: it never starts one of its own.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,

    /// Without --database-url: the database tried first. When no server
    /// answers there, notesd runs a PostgreSQL of its own in --data-dir.
    #[arg(long, env = "NOTESD_DEFAULT_DATABASE_URL", default_value = DEFAULT_DATABASE_URL,
          global = true)]
    default_database_url: String,

    /// Data directory of notesd's own PostgreSQL, created on first use.
    /// Default: $XDG_DATA_HOME/notesd/postgres (~/.local/share/notesd/postgres),
    /// or /var/lib/notesd/postgres for root.
    #[arg(long, env = "NOTESD_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// Directory of the PostgreSQL server binaries (initdb, pg_ctl,
    /// postgres) for notesd's own server. Default: `pg_config --bindir`,
    /// else the newest /usr/lib/postgresql/<version>/bin.
    #[arg(long, env = "NOTESD_POSTGRES_BIN_DIR", global = true)]
    postgres_bin_dir: Option<PathBuf>,

    /// Log format on standard error. The level comes from RUST_LOG.
    #[arg(
        long,
        env = "NOTESD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC (the default command).
    Serve(Box<ServeArgs>),
    /// Create the database if missing and apply pending migrations, then exit.
    Migrate,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the quota overrides of tenants and keys (docs/quotas.md).
    /// Every running notesd applies a change within a second.
    #[command(subcommand)]
    Quotas(QuotasCommand),
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "NOTESD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,

    /// Address the HTTP server listens on: the vendor facades (Capillary,
    /// Fernand, Close, Zyntro), /metrics (Prometheus), /healthz, /readyz.
    #[arg(long, env = "NOTESD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,

    /// A hot standby of the database (repeat, or comma-separate in the
    /// variable) that may serve GetNote, BatchGetNotes, ListNotes,
    /// ListNoteRevisions and SearchNotes when it is fresh enough
    /// (docs/api.md, "Read replicas and consistency tokens").
    #[arg(
        long = "replica-database-url",
        env = "NOTESD_REPLICA_DATABASE_URLS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    replica_database_urls: Vec<String>,

    /// A read without a consistency token goes to a replica at most this
    /// many milliseconds behind the primary.
    #[arg(long, env = "NOTESD_REPLICA_MAX_LAG_MS",
          default_value_t = ReplicaSettings::default().max_lag.as_millis() as u64)]
    replica_max_lag_ms: u64,

    /// A read with a consistency token waits at most this many
    /// milliseconds for a replica to replay it, then goes to the primary.
    #[arg(long, env = "NOTESD_REPLICA_TOKEN_WAIT_MS",
          default_value_t = ReplicaSettings::default().token_wait.as_millis() as u64)]
    replica_token_wait_ms: u64,

    /// How often each replica's position is checked, in milliseconds.
    #[arg(long, env = "NOTESD_REPLICA_CHECK_INTERVAL_MS",
          default_value_t = ReplicaSettings::default().check_interval.as_millis() as u64)]
    replica_check_interval_ms: u64,

    /// Do not apply migrations at start (run `notesd migrate` separately).
    #[arg(long, env = "NOTESD_NO_MIGRATE")]
    no_migrate: bool,

    /// Largest number of database connections. Small on purpose: the pool
    /// reuses its connections in turn, so a large pool spreads queries over
    /// many PostgreSQL backends, each with cold caches (32 instead of 8 cost
    /// ListNotes a fifth of its throughput on 2 cores).
    #[arg(long, env = "NOTESD_DB_MAX_CONNECTIONS", default_value_t = 8)]
    db_max_connections: u32,

    /// Seconds in-flight calls may run on after SIGTERM or SIGINT.
    #[arg(long, env = "NOTESD_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    shutdown_grace_secs: u64,

    /// Proxies (CIDRs, comma-separated) whose `x-forwarded-for` header is
    /// believed for the caller's address; without it the address is the
    /// connection's peer.
    #[arg(long, env = "NOTESD_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<IpNet>,

    /// Web origins (comma-separated, such as `https://notes.example.com`)
    /// whose pages may call the gRPC port with gRPC-Web: CORS answers them,
    /// and only them. None by default: browsers then call from no origin.
    #[arg(long, env = "NOTESD_CORS_ALLOWED_ORIGINS", value_delimiter = ',',
          value_parser = parse_origin)]
    cors_allowed_origins: Vec<http::HeaderValue>,

    /// TLS on both ports: the server's certificate chain (PEM, leaf
    /// first). Without it both ports are plaintext. The files are read
    /// again when they change (checked every --tls-reload-secs) and on
    /// SIGHUP; connections already open keep the old ones.
    #[arg(long, env = "NOTESD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "NOTESD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// mTLS: CA certificates (PEM) that client certificates are verified
    /// against; with --tls-client-auth required (the default) a client
    /// without one is refused in the handshake.
    #[arg(long, env = "NOTESD_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

    /// With --tls-client-ca: `required` refuses a connection without a
    /// client certificate; `optional` lets it in, its calls then needing
    /// a key. A certificate not from the CA is refused either way.
    #[arg(
        long,
        env = "NOTESD_TLS_CLIENT_AUTH",
        value_enum,
        default_value = "required"
    )]
    tls_client_auth: ClientAuth,

    /// With --tls-client-ca: a JSON file mapping client certificate names
    /// (URI or DNS SAN, or subject common name) to a tenant and identity,
    /// so that a gRPC call from a mapped certificate needs no key
    /// (docs/access.md, "Client certificates").
    #[arg(long, env = "NOTESD_TLS_CLIENT_IDENTITIES", requires = "tls_client_ca")]
    tls_client_identities: Option<PathBuf>,

    /// How often the TLS files are checked for changes.
    #[arg(long, env = "NOTESD_TLS_RELOAD_SECS", default_value_t = 10)]
    tls_reload_secs: u64,

    /// Export traces (OpenTelemetry, OTLP over gRPC) to the collector at
    /// this URL, such as `http://127.0.0.1:4317`, or `https://...` for TLS
    /// (verified against the system's roots, or --otlp-ca-file): a span
    /// per gRPC call and HTTP request, joined to the caller's W3C
    /// `traceparent`, with child spans for database work. Off by default:
    /// nothing is exported.
    #[arg(long, env = "NOTESD_OTLP_ENDPOINT", value_name = "URL",
          value_parser = parse_otlp_endpoint)]
    otlp_endpoint: Option<String>,

    /// PEM certificates of the CA an https OTLP collector's certificate is
    /// verified against, instead of the system's roots.
    #[arg(long, env = "NOTESD_OTLP_CA_FILE", value_name = "FILE")]
    otlp_ca_file: Option<PathBuf>,

    /// Group commit: the most AddNote calls written in one batch (one
    /// transaction and one multi-row insert per tenant).
    #[arg(long, env = "NOTESD_BATCH_MAX_ROWS", default_value_t = BatchSettings::default().max_rows,
          value_parser = clap::value_parser!(usize))]
    batch_max_rows: usize,

    /// Group commit: microseconds a batch waits for more calls after its
    /// first. 0 (the default) takes what is queued and goes, so a lone call
    /// is never delayed; batches still form while writers are busy.
    #[arg(long, env = "NOTESD_BATCH_LINGER_US", default_value_t = 0)]
    batch_linger_us: u64,

    /// Group commit: how many batches may be written at once.
    #[arg(long, env = "NOTESD_BATCH_WRITERS", default_value_t = BatchSettings::default().writers)]
    batch_writers: usize,

    /// Calls handled at once, gRPC calls and facade requests together; one
    /// beyond that is refused at once (gRPC RESOURCE_EXHAUSTED, reason
    /// OVERLOADED; a facade's 503 in its vendor's shape).
    #[arg(long, env = "NOTESD_MAX_IN_FLIGHT_CALLS", default_value_t = CallLimits::default().max_in_flight)]
    max_in_flight_calls: usize,

    /// HTTP/2 streams one gRPC connection may have open at once.
    #[arg(long, env = "NOTESD_MAX_CONCURRENT_STREAMS",
          default_value_t = CallLimits::default().max_concurrent_streams)]
    max_concurrent_streams: u32,

    /// How long one SearchNotes statement may run; a search that would
    /// read more is cancelled and refused (RESOURCE_EXHAUSTED, reason
    /// SEARCH_TOO_COSTLY).
    #[arg(long, env = "NOTESD_SEARCH_TIMEOUT_MS",
          default_value_t = CallLimits::default().search_timeout.as_millis() as u64)]
    search_timeout_ms: u64,

    /// Seconds a gRPC connection may live before the server asks its
    /// client to reconnect (GOAWAY; calls in flight get 60 s more), so
    /// long-lived clients spread over new replicas. 0: for ever.
    #[arg(long, env = "NOTESD_MAX_CONNECTION_AGE_SECS", default_value_t = 0)]
    max_connection_age_secs: u64,

    /// WatchNotes streams open at once; one more is refused
    /// (RESOURCE_EXHAUSTED, reason TOO_MANY_WATCHERS). Watches do not count
    /// against --max-in-flight-calls.
    #[arg(long, env = "NOTESD_MAX_WATCHERS", default_value_t = WatchSettings::default().max_watchers)]
    max_watchers: usize,

    /// Quotas per tenant and per key (docs/quotas.md): `true` checks
    /// every call against its tenant's and its key's rate and caps;
    /// `false` admits every call unchecked (only the server-wide bounds
    /// hold) and sends no rate headers.
    #[arg(long, env = "NOTESD_QUOTAS", default_value_t = true, action = clap::ArgAction::Set)]
    quotas: bool,

    /// The limits of every tenant (all its callers together), as changes
    /// to the built-in ones: `rate=5000,burst=10000,calls=256,
    /// watchers=1000,connections=<half the pool>`; `none` lifts one.
    /// `notesd quotas set` overrides them per tenant.
    #[arg(
        long,
        env = "NOTESD_TENANT_QUOTA",
        default_value = "",
        value_name = "LIMITS"
    )]
    tenant_quota: Override,

    /// The limits of every key, beside its tenant's (built in: none), in
    /// the same form. `notesd quotas set --key` overrides them per key.
    #[arg(
        long,
        env = "NOTESD_KEY_QUOTA",
        default_value = "",
        value_name = "LIMITS"
    )]
    key_quota: Override,

    /// A watch that has had no event for this long gets a heartbeat
    /// carrying the latest resume token.
    #[arg(long, env = "NOTESD_WATCH_HEARTBEAT_MS",
          default_value_t = WatchSettings::default().heartbeat.as_millis() as u64)]
    watch_heartbeat_ms: u64,

    /// Outbox events (the change stream) older than this are deleted; a
    /// watch token older than this is refused (OUT_OF_RANGE,
    /// WATCH_TOKEN_EXPIRED). Default: 7 days.
    #[arg(long, env = "NOTESD_EVENT_RETENTION_SECS",
          default_value_t = RetentionSettings::default().events.as_secs())]
    event_retention_secs: u64,

    /// AddNote request ids older than this are forgotten: a retry after
    /// that adds a new note. Default: 7 days.
    #[arg(long, env = "NOTESD_REQUEST_ID_RETENTION_SECS",
          default_value_t = RetentionSettings::default().request_ids.as_secs())]
    request_id_retention_secs: u64,

    /// How often retention runs.
    #[arg(long, env = "NOTESD_RETENTION_INTERVAL_SECS",
          default_value_t = RetentionSettings::default().interval.as_secs())]
    retention_interval_secs: u64,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key. The key is printed once, as the last line of standard
    /// output; only its hash is stored.
    Create {
        /// The tenant (organization) the key belongs to.
        #[arg(long)]
        tenant: String,
        /// The member the key acts as. Without it the key is a service
        /// key, and each call names its acting member in `x-actor-id`.
        #[arg(long, required_if_eq("admin", "true"))]
        member: Option<String>,
        /// An admin key: reads and changes every note of its tenant, and is
        /// recorded as its --member (required) on every change.
        #[arg(long)]
        admin: bool,
        /// Accept calls only from this network (a CIDR such as 10.0.0.0/8 or
        /// 192.0.2.7/32); repeat for several. Without it: from anywhere.
        #[arg(long = "allow-ip", value_name = "CIDR")]
        allowed_cidrs: Vec<IpNet>,
        /// A label to recognise the key by.
        #[arg(long, default_value = "")]
        label: String,
        /// Days until the key expires; never when not given.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Replace a key by a new one with the same settings. The new key is
    /// printed once, as the last line; the old one stops working after the
    /// grace period.
    Rotate {
        /// The key's id, as printed by `create` and `list`.
        id: Uuid,
        /// Hours the old key keeps working, so clients can switch.
        #[arg(long, default_value_t = 0)]
        grace_hours: u32,
    },
    /// List keys with their kind, networks, expiry and last use (never
    /// their secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key at once.
    Revoke {
        /// The key's id, as printed by `create` and `list`.
        id: Uuid,
    },
}

#[derive(Debug, Subcommand)]
enum QuotasCommand {
    /// Override limits of a tenant (all its callers together) or, with
    /// --key, of one of its keys. Each limit is a number, `none` (no
    /// limit) or `default` (the server's default again); limits not given
    /// keep their override.
    Set {
        #[arg(long)]
        tenant: String,
        /// One key of the tenant, by its id (`notesd keys list`).
        #[arg(long)]
        key: Option<Uuid>,
        /// Units a second (docs/quotas.md, "What a call costs").
        #[arg(long)]
        rate: Option<LimitArg>,
        /// Units a full bucket holds (default: the rate).
        #[arg(long)]
        burst: Option<LimitArg>,
        /// Calls in flight at once (every call but WatchNotes).
        #[arg(long)]
        calls: Option<LimitArg>,
        /// WatchNotes streams open at once.
        #[arg(long)]
        watchers: Option<LimitArg>,
        /// Database connections held at once.
        #[arg(long)]
        connections: Option<LimitArg>,
    },
    /// Show the overrides, every tenant's or one tenant's.
    Show {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Drop the override of a tenant or, with --key, of one key: the
    /// server's defaults apply again.
    Reset {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        key: Option<Uuid>,
    },
}

/// A limit as `notesd quotas set` takes it.
#[derive(Debug, Clone, Copy)]
enum LimitArg {
    /// Back to the server's default.
    Default,
    /// A number; 0 (or `none`): no limit.
    Value(u32),
}

impl std::str::FromStr for LimitArg {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "default" => Ok(Self::Default),
            "none" => Ok(Self::Value(0)),
            number => number
                .parse()
                .map(Self::Value)
                .map_err(|_| format!("`{number}` is not a whole number, `none` or `default`")),
        }
    }
}

/// `stored` with the limit `given` (if given) in its place.
fn set_limit(stored: Option<u32>, given: Option<LimitArg>) -> Option<u32> {
    match given {
        None => stored,
        Some(LimitArg::Default) => None,
        Some(LimitArg::Value(value)) => Some(value),
    }
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        let otlp = match &self.command {
            None => Some(&self.serve),
            Some(Command::Serve(args)) => Some(args.as_ref()),
            Some(_) => None,
        }
        .and_then(|args| {
            Some(telemetry::OtlpSettings {
                endpoint: args.otlp_endpoint.clone()?,
                ca_file: args.otlp_ca_file.clone(),
            })
        });
        if let Some(otlp) = &otlp
            && otlp.ca_file.is_some()
            && !otlp.endpoint.starts_with("https://")
        {
            anyhow::bail!(
                "--otlp-ca-file is for an https:// collector, and {} is not one",
                otlp.endpoint
            );
        }
        let telemetry = telemetry::init(self.common.log_format, otlp.as_ref())?;
        let outcome = self.run_command().await;
        // The spans of the last calls are sent before the process exits.
        telemetry.shutdown().await;
        outcome
    }

    async fn run_command(self) -> anyhow::Result<()> {
        let (database_url, local_server) = choose_database(&self.common).await?;
        // Key management works on api_keys as the database owner.
        let database = |migrate: bool| DatabaseOptions {
            url: database_url.clone(),
            max_connections: 4,
            create_if_missing: true,
            migrate,
            role: None,
        };
        let outcome = match self.command {
            None => serve(&database_url, self.serve).await,
            Some(Command::Serve(args)) => serve(&database_url, *args).await,
            Some(Command::Migrate) => Database::connect(&database(true)).await.map(|_| {
                println!("migrations applied");
            }),
            Some(Command::Keys(command)) => match Database::connect(&database(true)).await {
                Ok(db) => keys(command, db).await,
                Err(err) => Err(err),
            },
            Some(Command::Quotas(command)) => match Database::connect(&database(true)).await {
                Ok(db) => quotas(command, db).await,
                Err(err) => Err(err),
            },
        };
        let Some(server) = local_server else {
            return outcome;
        };
        let started_here = server.started_here();
        let stopped = tokio::task::spawn_blocking(move || server.stop()).await?;
        if stopped.is_ok() && started_here {
            tracing::info!("stopped notesd's own PostgreSQL");
        }
        outcome.and(stopped)
    }
}

/// The URL of the database to use, and notesd's own server when that is
/// where it is: the URL given; else the default address when a server
/// answers there; else a server notesd runs itself.
async fn choose_database(common: &CommonArgs) -> anyhow::Result<(String, Option<LocalPostgres>)> {
    if let Some(url) = &common.database_url {
        return Ok((url.clone(), None));
    }
    let default_url = &common.default_database_url;
    let refused = match socket_dir_open_to_all(default_url) {
        Some(dir) => anyhow::anyhow!(
            "its socket directory {} is writable by every user, so any of them could have \
             made the socket",
            dir.display()
        ),
        None => match check_server(default_url, DEFAULT_SERVER_TIMEOUT).await {
            Ok(()) => return Ok((default_url.clone(), None)),
            Err(err) => err,
        },
    };
    let tried = format!(
        "no database URL is set and no PostgreSQL answers at {} ({refused})",
        redact_url(default_url)
    );
    // The default was 127.0.0.1:5432 before it was the socket: say so
    // when something listens there, rather than start an empty server of
    // our own without a word. (A TCP connect only: nothing is sent.)
    if default_url == DEFAULT_DATABASE_URL
        && matches!(
            tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect("127.0.0.1:5432")
            )
            .await,
            Ok(Ok(_))
        )
    {
        tracing::warn!(
            "something listens on 127.0.0.1:5432, which notesd no longer uses by default (any \
             local user may listen there): set DATABASE_URL to use a PostgreSQL there"
        );
    }
    let binaries = PgBinaries::find(common.postgres_bin_dir.as_deref()).map_err(|missing| {
        anyhow::anyhow!(
            "{tried}, and notesd cannot run one of its own: {missing:#}. Either install \
             PostgreSQL 14 or newer (its server package, which brings initdb), or set \
             DATABASE_URL (or --database-url) to a PostgreSQL server notesd can reach"
        )
    })?;
    let options = LocalPostgresOptions {
        data_dir: match &common.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir()?,
        },
        max_connections: LOCAL_MAX_CONNECTIONS,
        scratch: false,
        standby_of: None,
    };
    let server = tokio::task::spawn_blocking(move || LocalPostgres::start(&binaries, &options))
        .await?
        .with_context(|| format!("{tried}, and notesd's own PostgreSQL did not start"))?;
    let how = if server.started_here() {
        "started notesd's own PostgreSQL, stopped when notesd stops"
    } else {
        "using notesd's own PostgreSQL, already running"
    };
    tracing::info!(
        data_dir = %server.data_dir().display(),
        "{tried}: {how}, with its data and socket in {} (no TCP port)",
        server.data_dir().display()
    );
    let url = server.url("notesd");
    Ok((url, Some(server)))
}

/// The socket directory of `url` (its `host` parameter, when a path) when
/// every user may write to it: any of them could then have made the socket
/// a fake server listens on.
fn socket_dir_open_to_all(url: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let url = url::Url::parse(url).ok()?;
    let host = url
        .query_pairs()
        .find(|(name, _)| name == "host")
        .map(|(_, value)| value.into_owned())?;
    let dir = PathBuf::from(host);
    if !dir.is_absolute() {
        return None;
    }
    let mode = std::fs::metadata(&dir).ok()?.permissions().mode();
    (mode & 0o002 != 0).then_some(dir)
}

/// `$XDG_DATA_HOME/notesd/postgres`, else `~/.local/share/notesd/postgres`;
/// for root, `/var/lib/notesd/postgres`, since the server then runs as the
/// `postgres` user, which may not enter root's home.
fn default_data_dir() -> anyhow::Result<PathBuf> {
    if local_postgres::is_root() {
        return Ok(PathBuf::from("/var/lib/notesd/postgres"));
    }
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute())
    };
    let data_home = absolute("XDG_DATA_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local/share")))
        .context("neither XDG_DATA_HOME nor HOME is set: give --data-dir")?;
    Ok(data_home.join("notesd/postgres"))
}

async fn serve(database_url: &str, args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings {
        replicas: ReplicaSettings {
            urls: args.replica_database_urls,
            max_lag: Duration::from_millis(args.replica_max_lag_ms),
            token_wait: Duration::from_millis(args.replica_token_wait_ms),
            check_interval: Duration::from_millis(args.replica_check_interval_ms.max(1)),
        },
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        database: DatabaseOptions {
            url: database_url.to_owned(),
            max_connections: args.db_max_connections,
            create_if_missing: true,
            migrate: !args.no_migrate,
            role: Some(APP_ROLE.to_owned()),
        },
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        trusted_proxies: args.trusted_proxies,
        cors_allowed_origins: args.cors_allowed_origins,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| TlsSettings {
                client_ca: args.tls_client_ca,
                client_auth: args.tls_client_auth,
                client_identities: args.tls_client_identities,
                reload_interval: Duration::from_secs(args.tls_reload_secs.max(1)),
                ..TlsSettings::new(cert, key)
            }),
        batching: BatchSettings {
            max_rows: args.batch_max_rows,
            linger: Duration::from_micros(args.batch_linger_us),
            writers: args.batch_writers,
        },
        limits: CallLimits {
            max_in_flight: args.max_in_flight_calls,
            max_concurrent_streams: args.max_concurrent_streams,
            search_timeout: Duration::from_millis(args.search_timeout_ms.max(1)),
            max_connection_age: (args.max_connection_age_secs > 0)
                .then(|| Duration::from_secs(args.max_connection_age_secs)),
        },
        watch: WatchSettings {
            max_watchers: args.max_watchers,
            heartbeat: Duration::from_millis(args.watch_heartbeat_ms.max(1)),
            ..WatchSettings::default()
        },
        retention: RetentionSettings {
            events: Duration::from_secs(args.event_retention_secs),
            request_ids: Duration::from_secs(args.request_id_retention_secs),
            interval: Duration::from_secs(args.retention_interval_secs.max(1)),
        },
        quotas: QuotaSettings {
            enabled: args.quotas,
            tenant: args.tenant_quota,
            key: args.key_quota,
        },
    };
    Application::build(settings)
        .await?
        .run_until(shutdown_signal())
        .await
}

async fn keys(command: KeysCommand, db: Database) -> anyhow::Result<()> {
    let store = ApiKeyStore::new(db.pool().clone());
    match command {
        KeysCommand::Create {
            tenant,
            member,
            admin,
            allowed_cidrs,
            label,
            expires_in_days,
        } => {
            let tenant = TenantId::parse("--tenant", &tenant)?;
            let member = member
                .map(|m| MemberId::parse("--member", &m))
                .transpose()?;
            let kind = match (member, admin) {
                (Some(member), true) => KeyKind::Admin(member),
                (Some(member), false) => KeyKind::Member(member),
                (None, _) => KeyKind::Service,
            };
            let description = match &kind {
                KeyKind::Member(m) => format!("member key acting as {m}"),
                KeyKind::Admin(m) => format!("admin key recorded as {m}"),
                KeyKind::Service => "service key; calls name their member in x-actor-id".to_owned(),
            };
            let spec = KeySpec {
                kind,
                allowed_cidrs,
                label,
                expires_at: expires_in_days
                    .map(|days| Utc::now() + chrono::Duration::days(i64::from(days))),
            };
            let issued = Authenticator::new(store).issue(&tenant, spec).await?;
            println!(
                "created key {} for tenant {tenant}: {description}",
                issued.id
            );
            println!("store it now: it is not shown again");
            println!("{}", issued.key.expose());
        }
        KeysCommand::Rotate { id, grace_hours } => {
            let grace = chrono::Duration::hours(i64::from(grace_hours));
            let issued = Authenticator::new(store)
                .rotate(id, grace)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no live key has the id {id}"))?;
            println!(
                "created key {} to replace {id}, which stops working in {grace_hours} h",
                issued.id
            );
            println!("store it now: it is not shown again");
            println!("{}", issued.key.expose());
        }
        KeysCommand::List { tenant } => {
            println!(
                "id\ttenant\tkind\tmember\tallowed_ips\tlabel\tcreated\texpires\trevoked\tlast_used"
            );
            let show = |t: Option<chrono::DateTime<Utc>>| {
                t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
            };
            for key in store.list(tenant.as_deref()).await? {
                let networks: Vec<String> =
                    key.allowed_cidrs.iter().map(ToString::to_string).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    key.id,
                    key.tenant_id,
                    key.kind,
                    key.member_id.as_deref().unwrap_or("-"),
                    if networks.is_empty() {
                        "any".to_owned()
                    } else {
                        networks.join(",")
                    },
                    key.label,
                    key.created_at.to_rfc3339(),
                    show(key.expires_at),
                    show(key.revoked_at),
                    show(key.last_used_at),
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let revoked = store.revoke(id).await?;
            anyhow::ensure!(revoked, "no key has the id {id}");
            println!("revoked key {id}");
        }
    }
    Ok(())
}

async fn quotas(command: QuotasCommand, db: Database) -> anyhow::Result<()> {
    let store = QuotaStore::new(db.pool().clone());
    let scope = |tenant: &TenantId, key: Option<Uuid>| match key {
        Some(key) => format!("key {key} of tenant {tenant}"),
        None => format!("tenant {tenant}"),
    };
    match command {
        QuotasCommand::Set {
            tenant,
            key,
            rate,
            burst,
            calls,
            watchers,
            connections,
        } => {
            let tenant = TenantId::parse("--tenant", &tenant)?;
            let stored = store
                .list(Some(&tenant))
                .await?
                .into_iter()
                .find(|row| row.key == key)
                .map(|row| row.limits)
                .unwrap_or_default();
            let limits = Override {
                rate: set_limit(stored.rate, rate),
                burst: set_limit(stored.burst, burst),
                calls: set_limit(stored.calls, calls),
                watchers: set_limit(stored.watchers, watchers),
                connections: set_limit(stored.connections, connections),
            };
            let row = QuotaRow {
                tenant: tenant.clone(),
                key,
                limits,
            };
            store.put(&row).await?;
            println!("{}: {limits}", scope(&tenant, key));
        }
        QuotasCommand::Show { tenant } => {
            let tenant = tenant
                .map(|t| TenantId::parse("--tenant", &t))
                .transpose()?;
            println!("tenant\tkey\tlimits");
            for row in store.list(tenant.as_ref()).await? {
                let key = row
                    .key
                    .map_or_else(|| "-".to_owned(), |key| key.to_string());
                println!("{}\t{key}\t{}", row.tenant, row.limits);
            }
        }
        QuotasCommand::Reset { tenant, key } => {
            let tenant = TenantId::parse("--tenant", &tenant)?;
            let removed = store.remove(&tenant, key).await?;
            anyhow::ensure!(removed, "{} has no override", scope(&tenant, key));
            println!("{}: the server's defaults apply", scope(&tenant, key));
        }
    }
    Ok(())
}

/// An OTLP/gRPC collector's URL: `http://host[:port]` or
/// `https://host[:port]`.
fn parse_otlp_endpoint(endpoint: &str) -> Result<String, String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| format!("{endpoint:?} is not a URL (http://host:port)"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some_and(|host| !host.is_empty()) => {
            Ok(endpoint.to_owned())
        }
        _ => Err(format!(
            "{endpoint:?} is not an http://host:port or https://host:port URL"
        )),
    }
}

/// A web origin as browsers send it: `scheme://host[:port]`, no path.
fn parse_origin(origin: &str) -> Result<http::HeaderValue, String> {
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or_else(|| format!("{origin:?} is not an origin (scheme://host[:port])"))?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "{origin:?} is not an origin (http or https://host[:port], no path)"
        ));
    }
    http::HeaderValue::from_str(origin).map_err(|_| format!("{origin:?} is not an origin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_otlp_endpoint_is_an_http_or_https_url() {
        assert_eq!(
            parse_otlp_endpoint("http://127.0.0.1:4317").as_deref(),
            Ok("http://127.0.0.1:4317")
        );
        assert!(parse_otlp_endpoint("http://collector").is_ok());
        assert!(parse_otlp_endpoint("https://collector:4317").is_ok());
        for bad in [
            "",
            "collector:4317",
            "127.0.0.1:4317",
            "ftp://x",
            "http://",
            "not a url",
        ] {
            assert!(parse_otlp_endpoint(bad).is_err(), "{bad:?}");
        }
    }
}
