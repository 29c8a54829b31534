//! The command line: `notesd serve` (the default), `notesd migrate`,
//! `notesd keys create|list|revoke`. Every flag also reads an environment
//! variable.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use uuid::Uuid;

use crate::auth::{Authenticator, KeyKind, KeySpec};
use crate::domain::{MemberId, TenantId};
use crate::startup::{Application, CallLimits, Settings, shutdown_signal};
use crate::storage::{
    APP_ROLE, ApiKeyStore, BatchSettings, Database, DatabaseOptions, RetentionSettings,
    WatchSettings,
};
use crate::telemetry::{self, LogFormat};

/// The local Postgres, database `notesd`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/notesd";

/// notesd: a gRPC notes service over PostgreSQL.
///
/// Internal services add, update and read notes about their records over
/// gRPC (package notes.v1: NotesService and SubjectsService; reflection and
/// grpc.health.v1 are served too). Calls carry an API key from `notesd keys
/// create`. Notes persist in PostgreSQL; the database is created if missing
/// and migrated at start.
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
    /// PostgreSQL URL of the notesd database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    database_url: String,

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
    Serve(ServeArgs),
    /// Create the database if missing and apply pending migrations, then exit.
    Migrate,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
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

    /// WatchNotes streams open at once; one more is refused
    /// (RESOURCE_EXHAUSTED, reason TOO_MANY_WATCHERS). Watches do not count
    /// against --max-in-flight-calls.
    #[arg(long, env = "NOTESD_MAX_WATCHERS", default_value_t = WatchSettings::default().max_watchers)]
    max_watchers: usize,

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

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        telemetry::init(self.common.log_format);
        // Key management works on api_keys as the database owner.
        let database = |migrate: bool| DatabaseOptions {
            url: self.common.database_url.clone(),
            max_connections: 4,
            create_if_missing: true,
            migrate,
            role: None,
        };
        match self.command {
            None => serve(&self.common, self.serve).await,
            Some(Command::Serve(args)) => serve(&self.common, args).await,
            Some(Command::Migrate) => {
                Database::connect(&database(true)).await?;
                println!("migrations applied");
                Ok(())
            }
            Some(Command::Keys(command)) => {
                let db = Database::connect(&database(true)).await?;
                keys(command, db).await
            }
        }
    }
}

async fn serve(common: &CommonArgs, args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings {
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        database: DatabaseOptions {
            url: common.database_url.clone(),
            max_connections: args.db_max_connections,
            create_if_missing: true,
            migrate: !args.no_migrate,
            role: Some(APP_ROLE.to_owned()),
        },
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        trusted_proxies: args.trusted_proxies,
        batching: BatchSettings {
            max_rows: args.batch_max_rows,
            linger: Duration::from_micros(args.batch_linger_us),
            writers: args.batch_writers,
        },
        limits: CallLimits {
            max_in_flight: args.max_in_flight_calls,
            max_concurrent_streams: args.max_concurrent_streams,
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
