//! Read replicas (docs/api.md, "Read replicas and consistency tokens";
//! docs/scale-out.md): the reads that may be served from a hot standby go
//! to one that is fresh enough, else to the primary.
//!
//! - A write call answers with a consistency token: the primary's WAL
//!   position once the write has committed (`pg_current_wal_lsn()`). A
//!   read that sends it back is served by a replica only once that replica
//!   has replayed that position (`pg_last_wal_replay_lsn()`), waited for
//!   at most `token_wait`; else by the primary. So a client reads its own
//!   writes.
//! - A read without a token goes to a replica whose staleness is within
//!   `max_lag`. Staleness is measured, not guessed from timestamps: every
//!   `check_interval` the primary's WAL position is sampled, and a replica
//!   that has replayed the sample taken at time T has every commit from
//!   before T, so it is at most (now − T) behind.
//! - A replica that fails its check, is not in recovery, or lags beyond
//!   `max_lag` gets no tokenless read until a later check says otherwise.
//!   Reads never fail because of a replica: the primary serves them.

use std::collections::VecDeque;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::time::Instant;

use super::calls;
use crate::domain::DomainError;

/// Where replicas are and how fresh they must be.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// The replicas' URLs (hot standbys of the primary).
    pub urls: Vec<String>,
    /// A read without a token is served by a replica at most this stale.
    pub max_lag: Duration,
    /// A read with a token waits at most this long for a replica to replay
    /// its position before the primary serves it.
    pub token_wait: Duration,
    /// How often each replica's position (and the primary's) is checked.
    pub check_interval: Duration,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            max_lag: Duration::from_secs(2),
            token_wait: Duration::from_millis(100),
            check_interval: Duration::from_millis(100),
        }
    }
}

/// How often a read waiting for its token asks the replica again.
const TOKEN_POLL: Duration = Duration::from_millis(1);
/// A check that takes longer than this fails.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// A WAL position, as PostgreSQL's `pg_lsn` (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Lsn(u64);

impl Lsn {
    /// A position as `pg_lsn`'s text; `None` when it is not one.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (high, low) = text.trim().split_once('/')?;
        let valid = |part: &str| {
            !part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !valid(high) || !valid(low) {
            return None;
        }
        let high = u64::from_str_radix(high, 16).ok()?;
        let low = u64::from_str_radix(low, 16).ok()?;
        Some(Self(high << 32 | low))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// One replica and what its last check found.
#[derive(Debug)]
struct Replica {
    pool: PgPool,
    /// Whether the last check succeeded on a server in recovery.
    up: AtomicBool,
    /// The position it had replayed at its last check.
    replayed: AtomicU64,
    /// How stale it was at its last check, in microseconds (u64::MAX:
    /// unknown).
    staleness_us: AtomicU64,
    /// When that check was made, as microseconds since the router started.
    checked_at_us: AtomicU64,
    /// Reads it served.
    reads: AtomicU64,
}

/// Chooses where each read goes, and keeps the replicas checked.
#[derive(Debug, Clone)]
pub(crate) struct ReadRouter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    primary: PgPool,
    replicas: Vec<Replica>,
    settings: ReplicaSettings,
    started: Instant,
    /// The primary's positions, newest last, as far back as `max_lag`.
    samples: Mutex<VecDeque<(Instant, Lsn)>>,
    /// Round robin over the replicas.
    next: AtomicUsize,
    /// Reads the primary served.
    primary_reads: AtomicU64,
}

/// Where one read goes: the primary, or replica `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadTarget {
    Primary,
    Replica(usize),
}

/// What the metrics show of the replicas.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplicaStatus {
    pub(crate) reads: u64,
    pub(crate) up: bool,
    /// Seconds behind the primary at the last check (`None`: unknown).
    pub(crate) lag_seconds: Option<f64>,
}

impl ReadRouter {
    /// A router over `primary` and replicas at `settings.urls`, whose
    /// connections are made with `connect` (the role switch of the
    /// primary's pool) when first used; the checks run until the returned
    /// task is aborted.
    pub(crate) fn start(
        primary: PgPool,
        settings: ReplicaSettings,
        pool_for: impl Fn(PgConnectOptions) -> PgPool,
    ) -> anyhow::Result<(Self, Option<tokio::task::JoinHandle<()>>)> {
        let pools = settings
            .urls
            .iter()
            .map(|url| {
                PgConnectOptions::from_str(url)
                    .map(&pool_for)
                    .map_err(|e| anyhow::anyhow!("a replica URL is not a postgres URL: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let router = Self::new(primary, pools, settings);
        let task =
            (!router.inner.replicas.is_empty()).then(|| tokio::spawn(router.clone().check()));
        Ok((router, task))
    }

    fn new(primary: PgPool, pools: Vec<PgPool>, settings: ReplicaSettings) -> Self {
        let replicas = pools
            .into_iter()
            .map(|pool| Replica {
                pool,
                up: AtomicBool::new(false),
                replayed: AtomicU64::new(0),
                staleness_us: AtomicU64::new(u64::MAX),
                checked_at_us: AtomicU64::new(0),
                reads: AtomicU64::new(0),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                primary,
                replicas,
                settings,
                started: Instant::now(),
                samples: Mutex::default(),
                next: AtomicUsize::new(0),
                primary_reads: AtomicU64::new(0),
            }),
        }
    }

    /// How many replicas are configured (none: tokens are not given).
    pub(crate) fn replica_count(&self) -> usize {
        self.inner.replicas.len()
    }

    /// The pool of `target`.
    pub(crate) fn pool(&self, target: ReadTarget) -> &PgPool {
        match target {
            ReadTarget::Primary => &self.inner.primary,
            ReadTarget::Replica(i) => &self.inner.replicas[i].pool,
        }
    }

    /// Where the current call's next read goes (see the module's comment),
    /// counted there.
    pub(crate) async fn target(&self) -> ReadTarget {
        let target = self.choose().await;
        match target {
            ReadTarget::Primary => &self.inner.primary_reads,
            ReadTarget::Replica(i) => &self.inner.replicas[i].reads,
        }
        .fetch_add(1, Ordering::Relaxed);
        target
    }

    async fn choose(&self) -> ReadTarget {
        let replicas = &self.inner.replicas;
        if replicas.is_empty() || !calls::reads_replicas() {
            return ReadTarget::Primary;
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let in_turn = (0..replicas.len()).map(|k| (start + k) % replicas.len());
        match calls::consistency_token() {
            None => {
                let now = self.micros_since_start();
                let max_lag = self.inner.settings.max_lag.as_micros() as u64;
                in_turn
                    .into_iter()
                    .find(|&i| {
                        let replica = &replicas[i];
                        let age = now.saturating_sub(replica.checked_at_us.load(Ordering::Relaxed));
                        replica.up.load(Ordering::Relaxed)
                            && replica
                                .staleness_us
                                .load(Ordering::Relaxed)
                                .saturating_add(age)
                                <= max_lag
                    })
                    .map_or(ReadTarget::Primary, ReadTarget::Replica)
            }
            // A token that does not parse asks for what only the primary
            // is sure to have.
            Some(None) => ReadTarget::Primary,
            Some(Some(token)) => {
                let up: Vec<usize> = in_turn
                    .filter(|&i| replicas[i].up.load(Ordering::Relaxed))
                    .collect();
                if let Some(&i) = up
                    .iter()
                    .find(|&&i| Lsn(replicas[i].replayed.load(Ordering::Relaxed)) >= token)
                {
                    return ReadTarget::Replica(i);
                }
                // The one furthest along may catch up within the wait.
                let Some(&best) = up
                    .iter()
                    .max_by_key(|&&i| replicas[i].replayed.load(Ordering::Relaxed))
                else {
                    return ReadTarget::Primary;
                };
                if self.wait_for(best, token).await {
                    ReadTarget::Replica(best)
                } else {
                    ReadTarget::Primary
                }
            }
        }
    }

    /// Whether replica `i` replays `token` within the token wait (or what
    /// is left of the call's deadline, when that is shorter).
    async fn wait_for(&self, i: usize, token: Lsn) -> bool {
        let mut wait = self.inner.settings.token_wait;
        if let Some(left) = calls::remaining() {
            wait = wait.min(left);
        }
        let until = Instant::now() + wait;
        let replica = &self.inner.replicas[i];
        loop {
            let replayed = tokio::time::timeout_at(until, replayed_position(&replica.pool)).await;
            match replayed {
                Ok(Ok(Some(replayed))) => {
                    replica.replayed.fetch_max(replayed.0, Ordering::Relaxed);
                    if replayed >= token {
                        return true;
                    }
                }
                // Down, not a standby, or out of time.
                _ => return false,
            }
            if Instant::now() + TOKEN_POLL >= until {
                return false;
            }
            tokio::time::sleep(TOKEN_POLL).await;
        }
    }

    /// Skips replica `i` for reads until its next check finds it well:
    /// a read just failed there (`err`), and the primary serves it.
    pub(crate) fn skip(&self, i: usize, err: &DomainError) {
        if self.inner.replicas[i].up.swap(false, Ordering::Relaxed) {
            tracing::warn!(replica = i, error = %err, "a read failed on a replica; the primary serves it");
        }
    }

    /// The consistency token of the writes committed so far: the
    /// primary's WAL position now.
    pub(crate) async fn consistency_token(&self) -> Result<Lsn, DomainError> {
        let text: String = sqlx::query_scalar("select pg_current_wal_lsn()::text")
            .fetch_one(&self.inner.primary)
            .await?;
        Lsn::parse(&text).ok_or_else(|| {
            DomainError::Internal(anyhow::anyhow!("pg_current_wal_lsn() gave {text:?}"))
        })
    }

    /// Reads served by the primary, and each replica's status.
    pub(crate) fn status(&self) -> (u64, Vec<ReplicaStatus>) {
        let replicas = self
            .inner
            .replicas
            .iter()
            .map(|replica| {
                let up = replica.up.load(Ordering::Relaxed);
                let staleness = replica.staleness_us.load(Ordering::Relaxed);
                ReplicaStatus {
                    reads: replica.reads.load(Ordering::Relaxed),
                    up,
                    lag_seconds: (up && staleness != u64::MAX).then(|| staleness as f64 / 1e6),
                }
            })
            .collect();
        (self.inner.primary_reads.load(Ordering::Relaxed), replicas)
    }

    fn micros_since_start(&self) -> u64 {
        self.inner.started.elapsed().as_micros() as u64
    }

    /// Checks the primary's position and every replica's, for ever.
    async fn check(self) {
        let mut interval = tokio::time::interval(self.inner.settings.check_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let sampled_at = Instant::now();
            // Without the primary's position no sample is taken, and
            // staleness grows until one is (the primary's own trouble
            // shows elsewhere).
            if let Ok(Ok(position)) =
                tokio::time::timeout(CHECK_TIMEOUT, self.consistency_token()).await
            {
                let mut samples = self.inner.samples.lock().unwrap_or_else(|e| e.into_inner());
                samples.push_back((sampled_at, position));
                // Keep one sample older than max_lag: the bound needs it.
                let horizon = self.inner.settings.max_lag + self.inner.settings.check_interval;
                while samples
                    .get(1)
                    .is_some_and(|(at, _)| sampled_at.duration_since(*at) > horizon)
                {
                    samples.pop_front();
                }
            }
            let checks = self.inner.replicas.iter().map(|replica| {
                tokio::time::timeout(CHECK_TIMEOUT, replayed_position(&replica.pool))
            });
            let results = futures_util::future::join_all(checks).await;
            let now = Instant::now();
            let checked_at = self.micros_since_start();
            for (i, result) in results.into_iter().enumerate() {
                let replica = &self.inner.replicas[i];
                let replayed = match result {
                    Ok(Ok(Some(replayed))) => replayed,
                    failed => {
                        if replica.up.swap(false, Ordering::Relaxed) {
                            let why = match failed {
                                Ok(Ok(_)) => "it is not a standby (in recovery)".to_owned(),
                                Ok(Err(err)) => format!("{err}"),
                                Err(_) => "no answer within a second".to_owned(),
                            };
                            tracing::warn!(
                                replica = i,
                                why,
                                "a replica is skipped until it answers again"
                            );
                        }
                        continue;
                    }
                };
                replica.replayed.fetch_max(replayed.0, Ordering::Relaxed);
                let staleness = self.staleness(replayed, now);
                replica.staleness_us.store(
                    staleness.map_or(u64::MAX, |s| s.as_micros() as u64),
                    Ordering::Relaxed,
                );
                replica.checked_at_us.store(checked_at, Ordering::Relaxed);
                if !replica.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(replica = i, "a replica serves reads");
                }
            }
        }
    }

    /// How stale a replica that has replayed `replayed` is at `now`: since
    /// the newest sample of the primary it has replayed; `None` when it has
    /// replayed none that is kept.
    fn staleness(&self, replayed: Lsn, now: Instant) -> Option<Duration> {
        let samples = self.inner.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .iter()
            .rev()
            .find(|(_, position)| *position <= replayed)
            .map(|(at, _)| now.duration_since(*at))
    }
}

/// A standby's replayed position; `None` when the server is not in
/// recovery (a primary, or a promoted standby).
async fn replayed_position(pool: &PgPool) -> Result<Option<Lsn>, sqlx::Error> {
    let text: Option<String> = sqlx::query_scalar("select pg_last_wal_replay_lsn()::text")
        .fetch_one(pool)
        .await?;
    Ok(text.as_deref().and_then(Lsn::parse))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_reads_and_prints_as_pg_lsn() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!(Lsn::parse("0/0").unwrap() < lsn);
        for bad in ["", "16", "/1", "1/", "x/1", "1/123456789", "1/2/3"] {
            assert_eq!(Lsn::parse(bad), None, "{bad}");
        }
    }
}
