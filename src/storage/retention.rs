//! Retention: outbox events and request ids older than their retention are
//! deleted in the background, in small batches, so that neither table grows
//! forever and no delete holds many locks or much WAL at once.
//!
//! It runs as `notesd_retention` (see the `watch` migration), on a
//! connection of its own: a role that sees every tenant's events and
//! request ids but can only read and delete them. Several processes on one
//! database may prune at once: `skip locked` makes each take other rows.

use std::time::Duration;

use sqlx::PgPool;

/// How long outbox events and request ids are kept, and how often they are
/// pruned.
#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    /// Outbox events (the change stream's history) older than this are
    /// deleted; a watch token older than this is refused.
    pub events: Duration,
    /// Request ids (AIP-155) older than this are forgotten: a retry after
    /// that creates a new note.
    pub request_ids: Duration,
    /// How often pruning runs.
    pub interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            events: Duration::from_secs(7 * 24 * 3600),
            request_ids: Duration::from_secs(7 * 24 * 3600),
            interval: Duration::from_secs(60),
        }
    }
}

/// Rows deleted per statement.
const BATCH: i64 = 1000;
/// A pause between batches, so that pruning a backlog leaves room for the
/// writers.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// Deletes one batch of events older than `$1` seconds and records, per
/// tenant, the highest xid deleted: a resume position at or below it may
/// have lost events.
const PRUNE_EVENTS: &str = "
with doomed as (
    select tenant_id, id from note_events
    where created_at < now() - make_interval(secs => $1)
    limit $2
    for update skip locked
),
gone as (
    delete from note_events e using doomed d
    where e.tenant_id = d.tenant_id and e.id = d.id
    returning e.tenant_id, e.xid
),
horizons as (
    insert into note_event_horizons (tenant_id, pruned_through)
    select tenant_id, max(xid) from gone where xid is not null group by tenant_id
    on conflict (tenant_id) do update
        set pruned_through = greatest(note_event_horizons.pruned_through, excluded.pruned_through)
)
select count(*) from gone";

const PRUNE_REQUEST_IDS: &str = "
with doomed as (
    select tenant_id, request_id from note_requests
    where created_at < now() - make_interval(secs => $1)
    limit $2
    for update skip locked
),
gone as (
    delete from note_requests r using doomed d
    where r.tenant_id = d.tenant_id and r.request_id = d.request_id
    returning 1
)
select count(*) from gone";

/// Runs pruning every `interval` until the task is aborted. `pool`
/// connects as `notesd_retention`.
pub(crate) async fn run(pool: PgPool, settings: RetentionSettings) {
    loop {
        for (what, statement, age) in [
            ("events", PRUNE_EVENTS, settings.events),
            ("request ids", PRUNE_REQUEST_IDS, settings.request_ids),
        ] {
            match prune(&pool, statement, age).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, what, "retention pruned"),
                Err(err) => tracing::warn!(error = %err, what, "retention could not prune"),
            }
        }
        tokio::time::sleep(settings.interval).await;
    }
}

/// Deletes in batches until a batch comes back short: the rows deleted.
async fn prune(pool: &PgPool, statement: &str, age: Duration) -> Result<i64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted: i64 = sqlx::query_scalar(statement)
            .bind(age.as_secs_f64())
            .bind(BATCH)
            .fetch_one(pool)
            .await?;
        total += deleted;
        if deleted < BATCH {
            return Ok(total);
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
}
