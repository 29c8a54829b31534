//! The quota overrides in force: all of `quota_overrides`, held in memory
//! and read again whenever the table changes. A trigger announces every
//! change on `notesd_quotas`; while the listener is down (at start, or
//! after its connection is lost) the table is read every second instead,
//! so a change takes effect within a second either way. A read that fails
//! keeps the overrides read last.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use super::Override;
use crate::domain::TenantId;
use crate::storage::QuotaStore;

/// The channel the `quota_overrides_changed` trigger notifies.
const CHANNEL: &str = "notesd_quotas";
/// How often the table is read while nobody listens.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// The overrides, by tenant (`None`: the tenant's own) and key.
type Table = HashMap<(TenantId, Option<Uuid>), Override>;

/// Where the quotas read their overrides. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuotaSource {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    table: RwLock<Arc<Table>>,
    /// Bumped by every read of the table: the scopes of an older read
    /// look their limits up again.
    generation: AtomicU64,
}

impl QuotaSource {
    /// Reads the overrides now (so that the first calls are under them),
    /// then keeps them current in the background for as long as the
    /// returned task runs, listening on a connection of `listener_pool`,
    /// which it holds for good.
    pub(crate) async fn start(
        store: QuotaStore,
        listener_pool: PgPool,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let source = Self::default();
        if let Err(err) = source.reload(&store).await {
            tracing::warn!(error = %err, "cannot read the quota overrides; the defaults apply until they are read");
        }
        let task = tokio::spawn(source.clone().keep_current(store, listener_pool));
        (source, task)
    }

    /// The count of reads of the table so far.
    pub(super) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    fn table(&self) -> Arc<Table> {
        Arc::clone(&self.inner.table.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The tenant's own override (all its callers together).
    pub(super) fn tenant(&self, tenant: &TenantId) -> Override {
        self.table()
            .get(&(tenant.clone(), None))
            .copied()
            .unwrap_or_default()
    }

    /// The override of the key `key` of `tenant`.
    pub(super) fn key(&self, tenant: &TenantId, key: Uuid) -> Override {
        self.table()
            .get(&(tenant.clone(), Some(key)))
            .copied()
            .unwrap_or_default()
    }

    async fn reload(&self, store: &QuotaStore) -> Result<(), crate::domain::DomainError> {
        let rows = store.all().await?;
        let table: Table = rows
            .into_iter()
            .map(|row| ((row.tenant, row.key), row.limits))
            .collect();
        *self.inner.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    async fn keep_current(self, store: QuotaStore, pool: PgPool) {
        loop {
            if let Err(err) = self.listen(&store, &pool).await {
                tracing::warn!(error = %err, "lost the quota-change listener; reading the overrides every second until it is back");
            }
            // Until a listener is up again: poll.
            tokio::time::sleep(POLL_EVERY).await;
            if let Err(err) = self.reload(&store).await {
                tracing::warn!(error = %err, "cannot read the quota overrides; the ones read last stay in force");
            }
        }
    }

    /// One listening connection: returns when it is lost.
    async fn listen(&self, store: &QuotaStore, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        // Changes made before the listener was up, then each announced
        // one. A read that fails goes back to reading every second.
        let reload = async || {
            self.reload(store).await.map_err(|err| {
                sqlx::Error::Protocol(format!("cannot read the quota overrides: {err}"))
            })
        };
        reload().await?;
        while listener.try_recv().await?.is_some() {
            reload().await?;
        }
        Ok(())
    }
}
