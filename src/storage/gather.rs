//! Natural batching, shared by the write and read batchers: wait for one
//! item and a free worker, then take whatever else is queued. Under light
//! load a lone item goes at once; under heavy load items queue while the
//! workers are busy and go out together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::domain::TenantId;

/// Takes batches off a queue, one per free worker.
pub(super) struct Gatherer<T> {
    items: mpsc::Receiver<T>,
    workers: Arc<Semaphore>,
    max: usize,
    linger: Duration,
}

impl<T> Gatherer<T> {
    /// Batches of at most `max` items for `workers` workers at a time. A
    /// non-zero `linger` makes a batch wait that long after its first item
    /// for more.
    pub(super) fn new(
        items: mpsc::Receiver<T>,
        workers: usize,
        max: usize,
        linger: Duration,
    ) -> Self {
        Self {
            items,
            workers: Arc::new(Semaphore::new(workers.max(1))),
            max: max.max(1),
            linger,
        }
    }

    /// The next batch, with the worker permit it holds until it is dropped;
    /// `None` once every sender is gone and the queue is empty.
    pub(super) async fn next(&mut self) -> Option<(Vec<T>, OwnedSemaphorePermit)> {
        let first = self.items.recv().await?;
        let permit = Arc::clone(&self.workers).acquire_owned().await.ok()?;
        let mut batch = vec![first];
        if !self.linger.is_zero() {
            let deadline = tokio::time::Instant::now() + self.linger;
            while batch.len() < self.max {
                match tokio::time::timeout_at(deadline, self.items.recv()).await {
                    Ok(Some(item)) => batch.push(item),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        while batch.len() < self.max {
            match self.items.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        Some((batch, permit))
    }
}

/// Splits a batch by tenant (row-level security scopes a transaction, and a
/// query, to one tenant) and runs `work` on each tenant's share: inline when
/// there is one tenant, concurrently when there are several.
pub(super) async fn per_tenant<T, F, Fut>(batch: Vec<T>, tenant_of: fn(&T) -> &TenantId, work: F)
where
    T: Send + 'static,
    F: Fn(TenantId, Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut by_tenant: HashMap<TenantId, Vec<T>> = HashMap::new();
    for item in batch {
        by_tenant
            .entry(tenant_of(&item).clone())
            .or_default()
            .push(item);
    }
    if by_tenant.len() == 1 {
        let (tenant, items) = by_tenant.into_iter().next().expect("one tenant");
        return work(tenant, items).await;
    }
    let mut groups = JoinSet::new();
    for (tenant, items) in by_tenant {
        groups.spawn(work(tenant, items));
    }
    while groups.join_next().await.is_some() {}
}

/// Told of every batch, written or read, for metrics.
pub(crate) trait BatchObserver: Send + Sync + 'static {
    /// A batch of `rows` adds was written (each add with its own outcome).
    fn batch_written(&self, rows: usize);
    /// A batch failed as a whole; its adds are written one at a time.
    fn batch_split(&self);
    /// `notes` reads of notes by id (GetNote) shared one query.
    fn reads_batched(&self, notes: usize);
}
