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

use std::collections::{HashMap, HashSet};
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
/// More keys than this in use at once: the cache starts over (each map
/// on its own).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    maps: Mutex<Maps>,
    listening: AtomicBool,
    /// Bumped by every change announcement: a key read from the database
    /// before an announcement may be stale, so it is not cached.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct Maps {
    /// Keys read, and when.
    keys: HashMap<Uuid, (Arc<ApiKeyRecord>, Instant)>,
    /// Ids that named no key, and when: apart from the keys, so that a
    /// flood of made-up ids, which starts this map over when it is full,
    /// never pushes out the keys in use.
    absent: HashMap<Uuid, Instant>,
    /// Ids that have named a key in this process (trusted for nothing:
    /// only to spare their callers the budget of reads of unknown keys,
    /// also while the cache is not listening).
    known: HashSet<Uuid>,
}

/// Inserts into a map that starts over when it holds `MAX_ENTRIES`.
fn insert_bounded<V>(map: &mut HashMap<Uuid, V>, id: Uuid, value: V) {
    if map.len() >= MAX_ENTRIES && !map.contains_key(&id) {
        map.clear();
    }
    map.insert(id, value);
}

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached key (`Some(None)` when the id is known to name none),
    /// if it may be trusted.
    pub(crate) fn get(&self, id: Uuid) -> Option<Option<Arc<ApiKeyRecord>>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let maps = self.lock();
        if let Some((record, cached_at)) = maps.keys.get(&id)
            && cached_at.elapsed() < MAX_AGE
        {
            return Some(Some(record.clone()));
        }
        maps.absent
            .get(&id)
            .filter(|cached_at| cached_at.elapsed() < ABSENT_MAX_AGE)
            .map(|_| None)
    }

    /// Whether keys are cached now: the key-change listener is up.
    pub(crate) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Whether `id` has named a key in this process (see `Maps::known`).
    pub(crate) fn is_known(&self, id: Uuid) -> bool {
        self.lock().known.contains(&id)
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
        let mut maps = self.lock();
        if record.is_some() {
            if maps.known.len() >= MAX_ENTRIES && !maps.known.contains(&id) {
                maps.known.clear();
            }
            maps.known.insert(id);
        }
        if !self.listening.load(Ordering::Acquire) {
            return;
        }
        // Checked under the lock that `forget` bumps it under.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        match record {
            Some(record) => insert_bounded(&mut maps.keys, id, (record, Instant::now())),
            None => insert_bounded(&mut maps.absent, id, Instant::now()),
        }
    }

    /// Drops a key that changed (or, with `None`, every key).
    fn forget(&self, id: Option<Uuid>) {
        let mut maps = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        match id {
            Some(id) => {
                maps.keys.remove(&id);
                maps.absent.remove(&id);
            }
            None => {
                maps.keys.clear();
                maps.absent.clear();
            }
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
    fn made_up_ids_never_push_out_the_keys_in_use() {
        let cache = KeyCache::default();
        cache.set_listening(true);
        let id = Uuid::now_v7();
        cache.put(id, Some(record(id)), cache.generation());
        for _ in 0..(MAX_ENTRIES * 2) {
            cache.put(Uuid::now_v7(), None, cache.generation());
        }
        assert!(matches!(cache.get(id), Some(Some(_))));
        assert!(cache.is_known(id));
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
