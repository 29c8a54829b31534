use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use super::{ReadRouter, ReplicaSettings};

/// The migrations in `migrations/`, embedded in the binary.
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How to reach the database. Its `Debug` shows the URL without its
/// password.
#[derive(Clone)]
pub struct DatabaseOptions {
    pub url: String,
    pub max_connections: u32,
    /// Create the database when it does not exist.
    pub create_if_missing: bool,
    /// Apply pending migrations at start.
    pub migrate: bool,
    /// The role pooled connections switch to (`SET ROLE`) right after
    /// connecting: the server uses `notesd_app`, which owns nothing and is
    /// subject to row-level security. `None` keeps the connecting role
    /// (the CLI's key management, which works on `api_keys` as its owner).
    pub role: Option<String>,
}

impl std::fmt::Debug for DatabaseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            url,
            max_connections,
            create_if_missing,
            migrate,
            role,
        } = self;
        f.debug_struct("DatabaseOptions")
            .field("url", &redact_url(url))
            .field("max_connections", max_connections)
            .field("create_if_missing", create_if_missing)
            .field("migrate", migrate)
            .field("role", role)
            .finish()
    }
}

/// The role the server's queries run as.
pub const APP_ROLE: &str = "notesd_app";

/// The role retention runs as (see `retention`).
const RETENTION_ROLE: &str = "notesd_retention";

/// The connection pool of one notesd database.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    pool: PgPool,
    connect: PgConnectOptions,
    max_connections: u32,
    role: Option<String>,
}

/// A read waits at most this long for a replica's connection before it
/// fails (UNAVAILABLE): a replica that went away is skipped by its next
/// check.
const REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

impl Database {
    /// Connects (creating the database and migrating it when asked).
    pub(crate) async fn connect(options: &DatabaseOptions) -> anyhow::Result<Self> {
        let connect = PgConnectOptions::from_str(&options.url)
            .context("DATABASE_URL is not a valid postgres URL")?
            .log_statements(tracing::log::LevelFilter::Debug)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        if options.create_if_missing {
            create_database_if_missing(&connect).await?;
        }
        if options.migrate {
            // As the connecting role, which owns the schema.
            let mut owner = connect.connect().await.with_context(|| {
                format!(
                    "cannot connect to the database {}",
                    redact_url(&options.url)
                )
            })?;
            MIGRATOR
                .run(&mut owner)
                .await
                .context("cannot apply the migrations")?;
            owner.close().await?;
        }
        let pool = pool_options(options.max_connections, options.role.as_deref())
            .acquire_timeout(Duration::from_secs(10))
            // No ping before each use: it is a round trip on every call. A
            // connection that died (a database restart) fails the one call
            // that meets it, and the pool replaces it.
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot connect to the database {}",
                    redact_url(&options.url)
                )
            })?;
        Ok(Self {
            pool,
            connect,
            max_connections: options.max_connections,
            role: options.role.clone(),
        })
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One connection, made when first used, as the retention role.
    pub(crate) fn retention_pool(&self) -> PgPool {
        pool_options(1, Some(RETENTION_ROLE)).connect_lazy_with(self.connect.clone())
    }

    /// The read router over this database and the replicas of `settings`
    /// (pools like the primary's: as many connections, the same role),
    /// and the task that checks the replicas, if any.
    pub(crate) fn read_router(
        &self,
        settings: ReplicaSettings,
    ) -> anyhow::Result<(ReadRouter, Option<tokio::task::JoinHandle<()>>)> {
        ReadRouter::start(self.pool.clone(), settings, |replica| {
            pool_options(self.max_connections, self.role.as_deref())
                .acquire_timeout(REPLICA_ACQUIRE_TIMEOUT)
                .test_before_acquire(false)
                .connect_lazy_with(replica.log_slow_statements(
                    tracing::log::LevelFilter::Warn,
                    Duration::from_millis(500),
                ))
        })
    }

    /// One connection, made when first used, as the connecting role: for
    /// cancelling the statements of calls that ended (`calls::Canceller`).
    /// PostgreSQL lets a role cancel the backends of its own session user,
    /// which the app's role, switched to with `SET ROLE`, is not.
    pub(crate) fn canceller_pool(&self) -> PgPool {
        pool_options(1, None).connect_lazy_with(self.connect.clone())
    }

    /// One connection, made when first used, as the app's role: for a
    /// listener that holds its connection for good, outside the pool that
    /// serves calls.
    pub(crate) fn listener_pool(&self) -> PgPool {
        pool_options(1, Some(APP_ROLE)).connect_lazy_with(self.connect.clone())
    }
}

/// A pool whose connections switch to `role` (`SET ROLE`) right after
/// connecting.
fn pool_options(max_connections: u32, role: Option<&str>) -> PgPoolOptions {
    let set_role = role.map(|role| format!("set role \"{}\"", role.replace('"', "\"\"")));
    PgPoolOptions::new()
        .max_connections(max_connections)
        .after_connect(move |conn, _meta| {
            let set_role = set_role.clone();
            Box::pin(async move {
                if let Some(set_role) = set_role {
                    sqlx::Executor::execute(conn, set_role.as_str()).await?;
                }
                Ok(())
            })
        })
}

/// Fails unless a server answers at `url` and lets us in (as its
/// `postgres` database, which exists before ours is created), within
/// `timeout`.
pub(crate) async fn check_server(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)
        .context("not a valid postgres URL")?
        .database("postgres");
    let connection = tokio::time::timeout(timeout, options.connect())
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", timeout.as_secs()))??;
    connection.close().await?;
    Ok(())
}

/// Creates the target database through the server's `postgres` database
/// when it does not exist yet.
async fn create_database_if_missing(target: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = target.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = target
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("cannot connect to the postgres database to create the notesd database")?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("create database {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // Another process created it between our check and our create.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("cannot create the database"),
        }
    }
    admin.close().await?;
    Ok(())
}

/// The URL without its password, for messages: neither the one in the
/// user part nor a `password` (or `sslpassword`) query parameter.
pub(crate) fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "(unparseable url)".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    let secret = |name: &str| matches!(name, "password" | "sslpassword");
    if parsed.query_pairs().any(|(name, _)| secret(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret(&name) { "***".into() } else { value };
                (name.into_owned(), value.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_never_print_the_password() {
        let options = DatabaseOptions {
            url: "postgres://notesd:s3cret-pw@db.example:5432/notesd".to_owned(),
            max_connections: 8,
            create_if_missing: true,
            migrate: true,
            role: None,
        };
        let printed = format!("{options:?}");
        assert!(!printed.contains("s3cret-pw"), "{printed}");
        assert!(printed.contains("db.example"), "{printed}");
        let in_query =
            redact_url("postgres://notesd@db.example/notesd?sslmode=require&password=qu3ry-pw");
        assert!(!in_query.contains("qu3ry-pw"), "{in_query}");
        assert!(in_query.contains("sslmode=require"), "{in_query}");
    }
}
