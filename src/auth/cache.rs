//! Recently used API keys, kept so that a call costs no query for its key.
//!
//! A cached key is trusted only while this process listens for key changes:
//! the `api_keys_changed` trigger announces every change that can make a
//! key unusable or change what it may do (revoke, expire, rotate, delete),
//! and the announced key is dropped. While the listener is down (at start,
//! or after its connection is lost) every call reads its key from the
//! database, as if there were no cache. An entry also lapses after
//! `MAX_AGE`, in case an announcement is ever lost in between.
//!
//! An id that names no key is remembered too, for `ABSENT_MAX_AGE`: a
//! client that keeps presenting a deleted key (or an attacker replaying
//! one) costs one query, not one per call. A key's id is made by notesd
//! when the key is issued, so no caller presents an id before its key
//! exists.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::storage::ApiKeyRecord;

/// The channel the `api_keys_changed` trigger notifies, with the key's id.
pub(super) const KEY_CHANGES_CHANNEL: &str = "notesd_api_keys";

const MAX_AGE: Duration = Duration::from_secs(60);
const ABSENT_MAX_AGE: Duration = Duration::from_secs(10);
/// More keys than this in use at once: the cache starts over.
const MAX_ENTRIES: usize = 10_000;

/// A key as read (`None` for an id that names no key), and when.
type Entry = (Option<Arc<ApiKeyRecord>>, Instant);

#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    entries: Mutex<HashMap<Uuid, Entry>>,
    listening: AtomicBool,
    /// Bumped by every change announcement: a key read from the database
    /// before an announcement may be stale, so it is not cached.
    generation: AtomicU64,
}

impl KeyCache {
    /// The cached key (`Some(None)` when the id is known to name none),
    /// if it may be trusted.
    pub(crate) fn get(&self, id: Uuid) -> Option<Option<Arc<ApiKeyRecord>>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&id)
            .filter(|(record, cached_at)| {
                cached_at.elapsed()
                    < if record.is_some() {
                        MAX_AGE
                    } else {
                        ABSENT_MAX_AGE
                    }
            })
            .map(|(record, _)| record.clone())
    }

    /// Where announcements stand; take it before reading a key, and give
    /// it to `put`.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches what the id `id` named when read at `generation` (`None`: no
    /// key), unless a change was announced since (the read may predate
    /// it) or nobody is listening.
    pub(crate) fn put(&self, id: Uuid, record: Option<Arc<ApiKeyRecord>>, generation: u64) {
        if !self.listening.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock that `forget` bumps it under.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(id, (record, Instant::now()));
    }

    /// Drops a key that changed (or, with `None`, every key).
    fn forget(&self, id: Option<Uuid>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        match id {
            Some(id) => {
                entries.remove(&id);
            }
            None => entries.clear(),
        }
    }

    fn set_listening(&self, listening: bool) {
        if !listening {
            self.listening.store(false, Ordering::Release);
            self.forget(None);
        } else {
            self.forget(None);
            self.listening.store(true, Ordering::Release);
        }
    }

    /// Listens for key changes until the task is aborted, reconnecting
    /// after a second when the connection is lost.
    pub(crate) async fn watch(self: Arc<Self>, pool: PgPool) {
        loop {
            match self.listen(&pool).await {
                Ok(()) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "lost the key-change listener; keys are read from the database until it is back");
                }
            }
            self.set_listening(false);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// One listening connection: returns when it is lost.
    async fn listen(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(KEY_CHANGES_CHANNEL).await?;
        self.set_listening(true);
        // `try_recv` answers `None` when the connection was lost, rather
        // than reconnecting silently past missed announcements.
        while let Some(notification) = listener.try_recv().await? {
            match Uuid::try_parse(notification.payload()) {
                Ok(id) => self.forget(Some(id)),
                Err(_) => self.forget(None),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: Uuid) -> Arc<ApiKeyRecord> {
        Arc::new(ApiKeyRecord {
            id,
            tenant_id: "acme".into(),
            kind: "member".into(),
            member_id: Some("alice".into()),
            allowed_cidrs: Vec::new(),
            secret_hash: vec![0; 32],
            label: String::new(),
            created_at: chrono::Utc::now(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        })
    }

    #[test]
    fn nothing_is_cached_while_not_listening() {
        let cache = KeyCache::default();
        let id = Uuid::now_v7();
        cache.put(id, Some(record(id)), cache.generation());
        assert!(cache.get(id).is_none());
    }

    #[test]
    fn an_id_that_names_no_key_is_remembered_as_none() {
        let cache = KeyCache::default();
        cache.set_listening(true);
        let id = Uuid::now_v7();
        cache.put(id, None, cache.generation());
        assert!(matches!(cache.get(id), Some(None)));
        cache.forget(Some(id));
        assert!(cache.get(id).is_none());
    }

    #[test]
    fn a_key_read_before_a_change_announcement_is_not_cached() {
        let cache = KeyCache::default();
        cache.set_listening(true);
        let id = Uuid::now_v7();
        let generation = cache.generation();
        cache.forget(Some(id));
        cache.put(id, Some(record(id)), generation);
        assert!(cache.get(id).is_none());

        cache.put(id, Some(record(id)), cache.generation());
        assert!(matches!(cache.get(id), Some(Some(_))));
        cache.forget(Some(id));
        assert!(cache.get(id).is_none());
    }

    #[test]
    fn losing_the_listener_empties_the_cache() {
        let cache = KeyCache::default();
        cache.set_listening(true);
        let id = Uuid::now_v7();
        cache.put(id, Some(record(id)), cache.generation());
        cache.set_listening(false);
        cache.set_listening(true);
        assert!(cache.get(id).is_none());
    }
}
