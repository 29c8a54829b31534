//! The change stream (WatchNotes) over the outbox, `note_events`.
//!
//! Each process keeps one feed per tenant that has watchers: a task that
//! reads the tenant's events in stream order (see `sql/watch_changes.sql`
//! and docs/watch.md for why that order never skips a late commit) and
//! hands each watcher the changes it may see. A watcher that resumes from
//! an older position first reads the gap itself, then joins the feed.
//!
//! What wakes a feed: a commit of this process (`touched`, in-process), a
//! notification from another process (each process announces the tenants
//! it wrote with one coalesced NOTIFY), and, since notifications are lost
//! while a listener is disconnected, a poll every `idle_poll` regardless.
//! The outbox is the only source of truth; a wake-up only says "look".
//!
//! Memory is bounded: a feed reads at most `PAGE_EVENTS` events and about
//! `PAGE_BYTES` a read, and each watcher's backlog (changes handed to it
//! that its client has not taken yet) is bounded in events and bytes. A
//! watcher past its bound is cut off with WATCH_TOO_SLOW after the changes
//! it was already given, and resumes from its last token.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::TryStreamExt as _;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use sqlx::types::Json;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use uuid::Uuid;

use super::rows::{self, NoteRow};
use super::{begin_bounded, begin_for};
use crate::domain::watch::{Change, NoteScope, Sight, StreamPosition, WatchScope};
use crate::domain::{DomainError, MemberId, Subject, TenantId};

const WATCH_CHANGES: &str = include_str!("sql/watch_changes.sql");

/// The channel on which processes announce the tenants they wrote.
const CHANGES_CHANNEL: &str = "notesd_note_changes";

/// The most events one read of the outbox returns.
const PAGE_EVENTS: i64 = 256;
/// A read stops after the event that brings it past this many bytes.
const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// A read of the outbox is cancelled after this: a page is at most
/// `PAGE_EVENTS` events and about `PAGE_BYTES`, read in milliseconds; a
/// read that takes longer is stuck (a lock, a failing disk), and the
/// watch ends UNAVAILABLE for its client to resume elsewhere rather than
/// hold a connection.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// NOTIFY payloads are limited to 8000 bytes by Postgres.
const ANNOUNCE_PAYLOAD_BYTES: usize = 7000;
/// Writes are announced at most this often: one NOTIFY (a tiny commit of
/// its own) for all the tenants written meanwhile.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(5);
/// When committed events wait above the horizon (an older transaction is
/// still open), the feed looks again after this, doubling up to
/// `idle_poll`.
const PENDING_RETRY: Duration = Duration::from_millis(5);

/// The bounds and rhythms of the change stream.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// A watcher that got nothing for this long gets a heartbeat with the
    /// latest token.
    pub heartbeat: Duration,
    /// A feed reads the outbox at least this often, woken or not.
    pub idle_poll: Duration,
    /// Watches open at once in this process; more are refused
    /// (TOO_MANY_WATCHERS).
    pub max_watchers: usize,
    /// Changes a watcher may have been handed and not yet sent.
    pub backlog_events: usize,
    /// The same bound in bytes (note bodies, roughly).
    pub backlog_bytes: usize,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            idle_poll: Duration::from_secs(1),
            max_watchers: 10_000,
            backlog_events: 10_000,
            backlog_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The feeds of this process; cheap to clone.
#[derive(Clone)]
pub(crate) struct ChangeFeeds {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ChangeFeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeeds")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

struct Inner {
    pool: PgPool,
    settings: WatchSettings,
    feeds: Mutex<HashMap<TenantId, Arc<Feed>>>,
    watch_permits: Arc<Semaphore>,
    /// Tenants written by this process and not yet announced.
    unannounced: Mutex<HashSet<TenantId>>,
    announce: Notify,
    /// Set by `close`: new watches are refused, open ones end.
    closed: AtomicBool,
}

impl ChangeFeeds {
    /// Starts the announcer and the listener of other processes' writes
    /// on the current runtime; they run until `close`. The listener holds
    /// a connection of `listener_pool` for good.
    pub(crate) fn start(pool: PgPool, listener_pool: PgPool, settings: WatchSettings) -> Self {
        let inner = Arc::new(Inner {
            pool,
            settings,
            feeds: Mutex::new(HashMap::new()),
            watch_permits: Arc::new(Semaphore::new(settings.max_watchers)),
            unannounced: Mutex::new(HashSet::new()),
            announce: Notify::new(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(announce(Arc::clone(&inner)));
        tokio::spawn(listen(Arc::clone(&inner), listener_pool));
        Self { inner }
    }

    /// Watches open, and feeds running, in this process (for metrics).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let open = self.inner.settings.max_watchers - self.inner.watch_permits.available_permits();
        (open, lock(&self.inner.feeds).len())
    }

    /// Tells the feeds that `tenant`'s changes committed: this process's
    /// feed looks at once, the other processes' when the announcement
    /// reaches them. Cheap: called after every commit of a change.
    pub(crate) fn touched(&self, tenant: &TenantId) {
        if let Some(feed) = lock(&self.inner.feeds).get(tenant) {
            feed.wake.notify_one();
        }
        lock(&self.inner.unannounced).insert(tenant.clone());
        self.inner.announce.notify_one();
    }

    /// Ends every watch (UNAVAILABLE, SHUTTING_DOWN: resume elsewhere) and
    /// refuses new ones; for a graceful shutdown, which waits for open
    /// calls.
    pub(crate) fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let feeds: Vec<Arc<Feed>> = lock(&self.inner.feeds).drain().map(|(_, f)| f).collect();
        for feed in feeds {
            feed.end_all(&DomainError::ShuttingDown);
        }
        self.inner.announce.notify_one();
    }

    /// A watch of `scope` from `from` (right after it), or from now.
    #[tracing::instrument(
        name = "db.watch_start",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    pub(crate) async fn watch(
        &self,
        tenant: TenantId,
        scope: WatchScope,
        from: Option<StreamPosition>,
    ) -> Result<Watch, DomainError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(DomainError::ShuttingDown);
        }
        let permit = Arc::clone(&self.inner.watch_permits)
            .try_acquire_owned()
            .map_err(|_| DomainError::TooManyWatchers)?;
        let position = match from {
            Some(position) => position,
            None => StreamPosition::before(current_horizon(&self.inner.pool, &tenant).await?),
        };
        let mut watch = Watch {
            feeds: self.clone(),
            tenant,
            scope: Arc::new(scope),
            position,
            pending: VecDeque::new(),
            phase: Phase::CatchUp { until: None },
            subscription: None,
            heartbeat_at: Instant::now() + self.inner.settings.heartbeat,
            done: false,
            _permit: permit,
        };
        // The first read now, so that an expired or made-up position is
        // refused before the stream starts.
        watch.catch_up(None).await?;
        Ok(watch)
    }

    /// Joins `tenant`'s feed (starting it if needed) as a watcher at
    /// `position`: it will be handed every change it may see after the
    /// feed's position, which it returns.
    fn subscribe(
        &self,
        tenant: &TenantId,
        scope: Arc<WatchScope>,
        position: StreamPosition,
    ) -> Result<(Subscription, StreamPosition), DomainError> {
        let mut feeds = lock(&self.inner.feeds);
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(DomainError::ShuttingDown);
        }
        let feed = match feeds.get(tenant) {
            Some(feed) => Arc::clone(feed),
            None => {
                let feed = Arc::new(Feed {
                    tenant: tenant.clone(),
                    wake: Notify::new(),
                    state: Mutex::new(FeedState {
                        position,
                        watchers: HashMap::new(),
                        next_id: 0,
                    }),
                });
                feeds.insert(tenant.clone(), Arc::clone(&feed));
                tokio::spawn(run_feed(Arc::clone(&feed), self.clone()));
                feed
            }
        };
        let (sender, queue) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        let (id, feed_position) = {
            let mut state = lock(&feed.state);
            let id = state.next_id;
            state.next_id += 1;
            state.watchers.insert(
                id,
                Slot {
                    scope,
                    sender,
                    backlog: Arc::clone(&backlog),
                },
            );
            (id, state.position)
        };
        Ok((
            Subscription {
                feed,
                id,
                queue,
                backlog,
            },
            feed_position,
        ))
    }

    /// Drops `feed` from the map if it has no watchers left; true if it did
    /// (the feed's task then ends). Taken under the map's lock, so that a
    /// watcher joining at the same moment finds either this feed with its
    /// slot counted, or a new feed.
    fn retire_if_idle(&self, feed: &Arc<Feed>) -> bool {
        let mut feeds = lock(&self.inner.feeds);
        if !lock(&feed.state).watchers.is_empty() {
            return false;
        }
        if feeds
            .get(&feed.tenant)
            .is_some_and(|f| Arc::ptr_eq(f, feed))
        {
            feeds.remove(&feed.tenant);
        }
        true
    }

    /// Wakes every feed: after a listener (re)connects, since
    /// announcements may have been missed meanwhile.
    fn wake_all(&self) {
        for feed in lock(&self.inner.feeds).values() {
            feed.wake.notify_one();
        }
    }
}

/// One tenant's feed.
struct Feed {
    tenant: TenantId,
    wake: Notify,
    state: Mutex<FeedState>,
}

struct FeedState {
    /// Every event up to here has been handed to the watchers.
    position: StreamPosition,
    watchers: HashMap<u64, Slot>,
    next_id: u64,
}

/// A watcher, as its feed sees it.
struct Slot {
    scope: Arc<WatchScope>,
    sender: mpsc::UnboundedSender<Delivery>,
    backlog: Arc<Backlog>,
}

/// What a feed hands a watcher.
enum Delivery {
    Change {
        change: Arc<Change>,
        sight: Sight,
        bytes: usize,
    },
    /// The last delivery: the watch ends with this error.
    End(DomainError),
}

/// Changes handed to a watcher and not yet taken by its stream.
#[derive(Default)]
struct Backlog {
    events: AtomicUsize,
    bytes: AtomicUsize,
}

impl Feed {
    /// Hands `changes` (read up to `reached`) to every watcher that may
    /// see them; a watcher whose backlog would pass its bound gets
    /// WATCH_TOO_SLOW instead and leaves the feed.
    fn deliver(&self, changes: &[Arc<Change>], reached: StreamPosition, settings: &WatchSettings) {
        let mut state = lock(&self.state);
        state.watchers.retain(|_, slot| {
            for change in changes {
                let sight = slot.scope.sight(change);
                if sight == Sight::Unseen {
                    continue;
                }
                let bytes = match sight {
                    Sight::Seen => change.approximate_bytes(),
                    _ => 64,
                };
                let events = slot.backlog.events.load(Ordering::Acquire);
                let queued = slot.backlog.bytes.load(Ordering::Acquire);
                if events + 1 > settings.backlog_events || queued + bytes > settings.backlog_bytes {
                    let _ = slot.sender.send(Delivery::End(DomainError::WatchTooSlow));
                    return false;
                }
                slot.backlog.events.fetch_add(1, Ordering::AcqRel);
                slot.backlog.bytes.fetch_add(bytes, Ordering::AcqRel);
                let delivery = Delivery::Change {
                    change: Arc::clone(change),
                    sight,
                    bytes,
                };
                if slot.sender.send(delivery).is_err() {
                    // The watcher is gone.
                    return false;
                }
            }
            true
        });
        if reached > state.position {
            state.position = reached;
        }
    }

    /// Ends every watcher of the feed with `err`.
    fn end_all(&self, err: &DomainError) {
        let mut state = lock(&self.state);
        for (_, slot) in state.watchers.drain() {
            let _ = slot.sender.send(Delivery::End(err.duplicate()));
        }
    }
}

/// A feed's task: reads the outbox when woken (or every `idle_poll`) and
/// delivers, until its last watcher leaves or the database fails it.
async fn run_feed(feed: Arc<Feed>, feeds: ChangeFeeds) {
    let settings = feeds.inner.settings;
    let mut retry: Option<Duration> = None;
    let mut first = true;
    loop {
        if !first {
            let wait = retry.unwrap_or(settings.idle_poll);
            tokio::select! {
                () = feed.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        first = false;
        if feeds.retire_if_idle(&feed) {
            return;
        }
        loop {
            let from = lock(&feed.state).position;
            match read_changes(&feeds.inner.pool, &feed.tenant, from).await {
                Ok(page) => {
                    feed.deliver(&page.changes, page.reached, &settings);
                    if page.full {
                        continue;
                    }
                    retry = if page.pending {
                        Some(retry.map_or(PENDING_RETRY, |r| (r * 2).min(settings.idle_poll)))
                    } else {
                        None
                    };
                    break;
                }
                Err(err) => {
                    err.log_cause("watch");
                    // Leave the map first, so that no watcher joins a feed
                    // that is ending; then end the watchers it had.
                    {
                        let mut map = lock(&feeds.inner.feeds);
                        if map.get(&feed.tenant).is_some_and(|f| Arc::ptr_eq(f, &feed)) {
                            map.remove(&feed.tenant);
                        }
                    }
                    feed.end_all(&err);
                    return;
                }
            }
        }
    }
}

/// A feed's membership, held by its watcher; leaving on drop.
struct Subscription {
    feed: Arc<Feed>,
    id: u64,
    queue: mpsc::UnboundedReceiver<Delivery>,
    backlog: Arc<Backlog>,
}

impl Subscription {
    fn taken(&self, bytes: usize) {
        self.backlog.events.fetch_sub(1, Ordering::AcqRel);
        self.backlog.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let left = lock(&self.feed.state).watchers.remove(&self.id).is_some();
        if left {
            // So that a feed without watchers ends now, not at its next
            // poll.
            self.feed.wake.notify_one();
        }
    }
}

/// What one watcher is told.
#[derive(Debug)]
pub(crate) enum WatchEvent {
    /// A change of a note in the watcher's view.
    Changed(Arc<Change>),
    /// A change that took a note out of the watcher's view.
    LeftView(Arc<Change>),
    /// Nothing for a while; the stream has reached this position.
    Heartbeat(StreamPosition),
}

enum Phase {
    /// Reading the outbox itself, from its position up to `until` (the
    /// feed's position when it joined), or, before joining, as far as the
    /// outbox goes.
    CatchUp { until: Option<StreamPosition> },
    /// Taking changes from its feed.
    Live,
}

/// One open watch: its position, its backlog and, once caught up, its
/// membership of the tenant's feed. Holds a permit of `max_watchers` (its
/// place among its tenant's and key's watches is held by its call: see
/// `crate::quotas`).
pub(crate) struct Watch {
    feeds: ChangeFeeds,
    tenant: TenantId,
    scope: Arc<WatchScope>,
    /// Every change up to here has been returned (or was not for it).
    position: StreamPosition,
    /// Changes read while catching up, not yet returned.
    pending: VecDeque<WatchEvent>,
    phase: Phase,
    subscription: Option<Subscription>,
    heartbeat_at: Instant,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl Watch {
    /// The next event; after an error, `None`. Cancel-safe between events
    /// only in the sense that matters here: dropping the watch mid-call
    /// loses nothing that was returned.
    pub(crate) async fn next(&mut self) -> Option<Result<WatchEvent, DomainError>> {
        if self.done {
            return None;
        }
        match self.advance().await {
            Ok(event) => {
                self.heartbeat_at = Instant::now() + self.feeds.inner.settings.heartbeat;
                Some(Ok(event))
            }
            Err(err) => {
                self.done = true;
                self.subscription = None;
                Some(Err(err))
            }
        }
    }

    async fn advance(&mut self) -> Result<WatchEvent, DomainError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            match self.phase {
                Phase::CatchUp { until } => self.catch_up(until).await?,
                Phase::Live => {
                    if let Some(event) = self.live().await? {
                        return Ok(event);
                    }
                }
            }
        }
    }

    /// Reads one page of the outbox after the position; moves on to
    /// joining the feed, or to live, when it has read far enough.
    #[tracing::instrument(
        name = "db.watch_changes",
        level = "debug",
        skip_all,
        fields(db.system = "postgresql", otel.kind = "client")
    )]
    async fn catch_up(&mut self, until: Option<StreamPosition>) -> Result<(), DomainError> {
        let page = read_changes(&self.feeds.inner.pool, &self.tenant, self.position).await?;
        if self.position.xid > page.horizon {
            return Err(DomainError::bad_watch_token(
                "resume_token names a position the stream has not reached",
            ));
        }
        if page
            .pruned_through
            .is_some_and(|pruned| pruned >= self.position.xid)
        {
            return Err(DomainError::WatchTokenExpired);
        }
        let mut reached_until = false;
        for change in page.changes {
            if until.is_some_and(|until| change.position > until) {
                reached_until = true;
                break;
            }
            self.position = change.position;
            self.queue(change);
        }
        match until {
            Some(until) if reached_until || page.reached >= until || !page.full => {
                self.position = self.position.max(until.min(page.reached));
                self.phase = Phase::Live;
            }
            Some(_) => {}
            None if page.full => {}
            None => {
                self.position = self.position.max(page.reached);
                let (subscription, feed_position) =
                    self.feeds
                        .subscribe(&self.tenant, Arc::clone(&self.scope), self.position)?;
                self.subscription = Some(subscription);
                self.phase = if feed_position > self.position {
                    Phase::CatchUp {
                        until: Some(feed_position),
                    }
                } else {
                    Phase::Live
                };
            }
        }
        Ok(())
    }

    fn queue(&mut self, change: Arc<Change>) {
        match self.scope.sight(&change) {
            Sight::Seen => self.pending.push_back(WatchEvent::Changed(change)),
            Sight::LeftView => self.pending.push_back(WatchEvent::LeftView(change)),
            Sight::Unseen => {}
        }
    }

    /// Waits for the feed's next delivery or the heartbeat.
    async fn live(&mut self) -> Result<Option<WatchEvent>, DomainError> {
        let heartbeat_at = self.heartbeat_at;
        let subscription = self
            .subscription
            .as_mut()
            .expect("a live watch has joined its feed");
        // What is queued goes without a timer: under load, most calls.
        let queued = match subscription.queue.try_recv() {
            Ok(delivery) => Some(Some(delivery)),
            Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
            Err(mpsc::error::TryRecvError::Empty) => None,
        };
        let delivery = if let Some(delivery) = queued {
            delivery
        } else {
            tokio::select! {
            delivery = subscription.queue.recv() => delivery,
            () = tokio::time::sleep_until(heartbeat_at) => {
                // The feed's position is read before the queue is found
                // empty: the feed hands out changes before it moves its
                // position, so every change up to it was taken.
                let feed_position = lock(&subscription.feed.state).position;
                match subscription.queue.try_recv() {
                    Ok(delivery) => Some(delivery),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.position = self.position.max(feed_position);
                        return Ok(Some(WatchEvent::Heartbeat(self.position)));
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            }
            }
        };
        match delivery {
            Some(Delivery::Change {
                change,
                sight,
                bytes,
            }) => {
                subscription.taken(bytes);
                if change.position <= self.position {
                    return Ok(None);
                }
                self.position = change.position;
                Ok(Some(match sight {
                    Sight::LeftView => WatchEvent::LeftView(change),
                    _ => WatchEvent::Changed(change),
                }))
            }
            Some(Delivery::End(err)) => Err(err),
            // The feed dropped the watcher without a word: only when the
            // process closes the feeds.
            None => Err(DomainError::ShuttingDown),
        }
    }
}

/// A page of changes read from the outbox.
struct ChangesPage {
    /// The changes, in stream order (every one, whoever may see it).
    changes: Vec<Arc<Change>>,
    /// Everything up to here was read: the last change when the page is
    /// full, else the horizon.
    reached: StreamPosition,
    /// The page stopped at a bound; more may follow at once.
    full: bool,
    /// The horizon of the read (its snapshot's xmin).
    horizon: u64,
    /// Events of xids up to this were deleted by retention.
    pruned_through: Option<u64>,
    /// Committed events wait above the horizon.
    pending: bool,
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    horizon: i64,
    pruned_through: Option<i64>,
    pending: bool,
    xid: Option<i64>,
    event_id: Option<Uuid>,
    revision: Option<i64>,
    change_kind: Option<i16>,
    changed_at: Option<chrono::DateTime<chrono::Utc>>,
    snapshot: Option<Json<NoteRow>>,
    page_events: Option<i64>,
    before_subject_type: Option<String>,
    before_subject_id: Option<String>,
    before_related_subjects: Option<Json<Vec<Subject>>>,
    before_owner_id: Option<String>,
    before_visibility: Option<i16>,
    before_draft: Option<bool>,
}

/// Reads the changes of `tenant` after `from`, up to the horizon, at most
/// `PAGE_EVENTS` of them and about `PAGE_BYTES`.
async fn read_changes(
    pool: &PgPool,
    tenant: &TenantId,
    from: StreamPosition,
) -> Result<ChangesPage, DomainError> {
    let by_deadline = super::calls::remaining().is_some_and(|left| left < READ_TIMEOUT);
    let mut tx = begin_bounded(pool, tenant, Some(READ_TIMEOUT)).await?;
    let mut page = ChangesPage {
        changes: Vec::new(),
        reached: from,
        full: false,
        horizon: 0,
        pruned_through: None,
        pending: false,
    };
    let mut bytes = 0;
    let mut events = 0;
    // Rows returned, and the events the page had before the statement
    // cut it to PAGE_BYTES.
    let mut returned = 0;
    let mut before_cut = 0;
    {
        let mut rows = sqlx::query_as::<_, ChangeRow>(WATCH_CHANGES)
            .bind(tenant.as_str())
            .bind(xid_to_sql(from.xid))
            .bind(from.event)
            .bind(PAGE_EVENTS)
            .bind(PAGE_BYTES as i64)
            .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await.map_err(|err| {
            // Cancelled by READ_TIMEOUT, not the call's deadline: the
            // database is stuck, which is UNAVAILABLE.
            if super::is_cancelled(&err) && !by_deadline {
                DomainError::DatabaseUnavailable(err.into())
            } else {
                DomainError::from(err)
            }
        })? {
            returned += 1;
            before_cut = row.page_events.unwrap_or(0);
            page.horizon = xid_from_sql(row.horizon);
            page.pruned_through = row.pruned_through.map(xid_from_sql);
            page.pending = row.pending;
            let Some(change) = change_from_row(row)? else {
                continue;
            };
            events += 1;
            bytes += change.approximate_bytes();
            page.reached = change.position;
            page.changes.push(Arc::new(change));
            if bytes >= PAGE_BYTES {
                page.full = true;
                break;
            }
        }
    }
    tx.commit().await?;
    if events as i64 == PAGE_EVENTS || before_cut > returned {
        page.full = true;
    }
    if !page.full {
        page.reached = page.reached.max(StreamPosition::before(page.horizon));
    }
    Ok(page)
}

/// The change of one row; `None` for the row of an empty page.
fn change_from_row(row: ChangeRow) -> Result<Option<Change>, DomainError> {
    let (Some(xid), Some(event), Some(revision), Some(kind), Some(changed_at)) = (
        row.xid,
        row.event_id,
        row.revision,
        row.change_kind,
        row.changed_at,
    ) else {
        return Ok(None);
    };
    let Some(Json(snapshot)) = row.snapshot else {
        return Err(DomainError::Internal(anyhow::anyhow!(
            "event {event} has no revision {revision}"
        )));
    };
    let note = crate::domain::Note::try_from(snapshot)?;
    let before = match (
        row.before_subject_type,
        row.before_subject_id,
        row.before_owner_id,
        row.before_visibility,
    ) {
        (Some(kind), Some(id), Some(owner), Some(visibility)) => Some(NoteScope {
            subject: Subject { kind, id },
            related_subjects: row.before_related_subjects.map(|j| j.0).unwrap_or_default(),
            owner: MemberId::from_stored(owner),
            visibility: rows::visibility_from_code(visibility)?,
            draft: row.before_draft.unwrap_or(false),
        }),
        _ => None,
    };
    Ok(Some(Change::new(
        StreamPosition {
            xid: xid_from_sql(xid),
            event,
        },
        rows::change_kind_from_code(kind)?,
        revision,
        changed_at,
        note,
        before,
    )))
}

/// The horizon now: a watch without a token starts right before it.
async fn current_horizon(pool: &PgPool, tenant: &TenantId) -> Result<u64, DomainError> {
    let mut tx = begin_for(pool, tenant).await?;
    let horizon: i64 =
        sqlx::query_scalar("select pg_snapshot_xmin(pg_current_snapshot())::text::int8")
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(xid_from_sql(horizon))
}

/// xid8 travels as int8 (sqlx has no xid8): xids stay far below 2^63.
fn xid_to_sql(xid: u64) -> i64 {
    i64::try_from(xid).unwrap_or(i64::MAX)
}

fn xid_from_sql(xid: i64) -> u64 {
    u64::try_from(xid).unwrap_or(0)
}

/// Sends one NOTIFY for the tenants written since the last, at most every
/// `ANNOUNCE_EVERY`. A lost announcement costs latency, never a change:
/// the feeds poll anyway.
async fn announce(inner: Arc<Inner>) {
    loop {
        inner.announce.notified().await;
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(ANNOUNCE_EVERY).await;
        let tenants: Vec<TenantId> = lock(&inner.unannounced).drain().collect();
        for payload in announcements(&tenants) {
            // Not durable on purpose (an announcement is a hint): no WAL
            // flush for it.
            let sent = sqlx::query(
                "select set_config('synchronous_commit', 'off', true), pg_notify($1, $2)",
            )
            .bind(CHANGES_CHANNEL)
            .bind(payload)
            .execute(&inner.pool)
            .await;
            if let Err(err) = sent {
                tracing::debug!(error = %err, "cannot announce changes to other processes");
            }
        }
    }
}

/// The payloads announcing `tenants`: JSON arrays of tenant ids, each
/// within Postgres's payload limit.
fn announcements(tenants: &[TenantId]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut batch: Vec<&str> = Vec::new();
    let mut size = 2;
    for tenant in tenants {
        let len = tenant.as_str().len() * 2 + 3;
        if !batch.is_empty() && size + len > ANNOUNCE_PAYLOAD_BYTES {
            payloads.push(serde_json::to_string(&batch).unwrap_or_default());
            batch.clear();
            size = 2;
        }
        batch.push(tenant.as_str());
        size += len;
    }
    if !batch.is_empty() {
        payloads.push(serde_json::to_string(&batch).unwrap_or_default());
    }
    payloads
}

/// Listens for other processes' announcements and wakes the feeds they
/// name; after every (re)connection, wakes them all.
async fn listen(inner: Arc<Inner>, pool: PgPool) {
    let feeds = ChangeFeeds {
        inner: Arc::clone(&inner),
    };
    while !inner.closed.load(Ordering::SeqCst) {
        let result: Result<(), sqlx::Error> = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANGES_CHANNEL).await?;
            feeds.wake_all();
            while let Some(notification) = listener.try_recv().await? {
                let Ok(tenants) = serde_json::from_str::<Vec<String>>(notification.payload())
                else {
                    feeds.wake_all();
                    continue;
                };
                let map = lock(&inner.feeds);
                for tenant in tenants {
                    if let Some(feed) = map.get(&TenantId::from_stored(tenant)) {
                        feed.wake.notify_one();
                    }
                }
            }
            Ok(())
        }
        .await;
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(err) = result {
            tracing::warn!(error = %err, "lost the change listener; feeds poll until it is back");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_stay_within_the_payload_limit() {
        let tenants: Vec<TenantId> = (0..2000)
            .map(|i| TenantId::parse("tenant", &format!("tenant-{i:05}")).unwrap())
            .collect();
        let payloads = announcements(&tenants);
        assert!(payloads.len() > 1);
        let mut seen = 0;
        for payload in &payloads {
            assert!(payload.len() <= 8000, "{}", payload.len());
            seen += serde_json::from_str::<Vec<String>>(payload).unwrap().len();
        }
        assert_eq!(seen, tenants.len());
    }
}
