//! The read batcher: concurrent GetNote reads share one query.
//!
//! A read of one note by its key costs PostgreSQL far more in per-statement
//! work (a round trip, a function call, an executor start) than in finding
//! the row. Reads queued while the readers are busy go out together, one
//! `notesd_get_notes(tenant, ids)` per tenant, which sets the tenant for
//! row-level security and reads every id in one statement. Batching is
//! natural, as for adds: a lone read goes at once.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::gather::{BatchObserver, Gatherer, per_tenant};
use super::rows::select_notes;
use crate::domain::{DomainError, Note, NoteId, TenantId};

/// Reads in flight at once (each holds one database connection).
const READERS: usize = 2;
/// The most notes one query asks for.
const MAX_IDS: usize = 256;
/// Reads queued beyond this wait for room.
const QUEUE_CAPACITY: usize = 8192;

type ReadOutcome = Result<Option<Note>, DomainError>;

/// One read waiting for its batch.
struct PendingGet {
    tenant: TenantId,
    id: NoteId,
    reply: oneshot::Sender<ReadOutcome>,
}

/// Hands reads to the batching task. Cloning it is cheap; the task ends
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub(super) struct GetBatcher {
    queue: mpsc::Sender<PendingGet>,
}

impl GetBatcher {
    /// Starts the batching task on the current Tokio runtime.
    pub(super) fn start(pool: PgPool, observer: Arc<dyn BatchObserver>) -> Self {
        let (queue, gets) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(collect(pool, observer, gets));
        Self { queue }
    }

    /// The note, if it exists in the tenant, read in the next batch.
    pub(super) async fn get(&self, tenant: &TenantId, id: NoteId) -> ReadOutcome {
        let (reply, outcome) = oneshot::channel();
        let get = PendingGet {
            tenant: tenant.clone(),
            id,
            reply,
        };
        self.queue
            .send(get)
            .await
            .map_err(|_| anyhow::anyhow!("the read batcher has stopped"))?;
        outcome
            .await
            .map_err(|_| anyhow::anyhow!("the read batcher dropped a read"))?
    }
}

async fn collect(pool: PgPool, observer: Arc<dyn BatchObserver>, gets: mpsc::Receiver<PendingGet>) {
    let mut gatherer = Gatherer::new(gets, READERS, MAX_IDS, std::time::Duration::ZERO);
    while let Some((batch, permit)) = gatherer.next().await {
        let pool = pool.clone();
        let observer = Arc::clone(&observer);
        tokio::spawn(async move {
            per_tenant(
                batch,
                |get| &get.tenant,
                |tenant, gets| read(pool.clone(), Arc::clone(&observer), tenant, gets),
            )
            .await;
            drop(permit);
        });
    }
}

/// Reads one tenant's notes in one statement and answers each read.
async fn read(
    pool: PgPool,
    observer: Arc<dyn BatchObserver>,
    tenant: TenantId,
    gets: Vec<PendingGet>,
) {
    let ids: Vec<Uuid> = gets.iter().map(|get| get.id.0).collect();
    let rows = select_notes(&pool, &tenant, &ids).await;
    observer.reads_batched(gets.len());
    let rows = match rows {
        Ok(rows) => rows,
        Err(err) => {
            let err = DomainError::from(err);
            for get in gets {
                let _ = get.reply.send(Err(err.duplicate()));
            }
            return;
        }
    };
    let mut notes: HashMap<Uuid, Result<Note, String>> = rows
        .into_iter()
        .map(|row| (row.id, Note::try_from(row).map_err(|e| format!("{e:#}"))))
        .collect();
    // How many reads still want each note: the last one takes it, the
    // others get a copy.
    let mut wanted: HashMap<Uuid, usize> = HashMap::new();
    for id in &ids {
        *wanted.entry(*id).or_default() += 1;
    }
    for get in gets {
        let id = get.id.0;
        let left = wanted.get_mut(&id).expect("counted above");
        *left -= 1;
        let note = if *left == 0 {
            notes.remove(&id)
        } else {
            notes.get(&id).cloned()
        };
        let outcome = note
            .transpose()
            .map_err(|e| anyhow::anyhow!("stored note {id}: {e}").into());
        // The caller may have gone (a cancelled call).
        let _ = get.reply.send(outcome);
    }
}
