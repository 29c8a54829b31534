//! What the database work of one call knows of the call: its deadline, and
//! its name in `pg_stat_activity`, so that the work stops when the call
//! does (docs/api.md, "Deadlines and cancellation").
//!
//! The gRPC edge runs each call inside a [`CallScope`]. Every transaction
//! the call begins ([`super::begin_for`]) then, in the same round trip as
//! its `BEGIN`:
//!
//! - sets `statement_timeout` to what is left of the deadline, so no
//!   statement outlives the call by more than the time left when it
//!   began (and a call whose deadline has passed starts no transaction:
//!   `DEADLINE_EXCEEDED`);
//! - sets `application_name` to the call's name, for as long as the
//!   transaction lasts (`set_config(..., true)`).
//!
//! A call admitted under quotas (`crate::quotas`) also carries the shares
//! of the pool its tenant and key may hold ([`share_connections`]): each
//! of its transactions holds a place in both for as long as it lasts, and
//! one beyond a share waits for a place in that share's queue, not in the
//! pool's, up to the pool's own wait (then UNAVAILABLE, as a pool that has
//! no connection to give). A second transaction of a call that already
//! holds one takes no place: the call holds its share already, and waiting
//! on itself would never end.
//!
//! When a call ends before its work does (its deadline passed, or its
//! client went away, which drops the call), [`Canceller::cancel`] cancels
//! whatever statement is running under the call's name
//! (`pg_cancel_backend`). A statement cancelled under a deadline is
//! `DEADLINE_EXCEEDED`. Work shared by many calls (a group-commit batch, a
//! batched read) is not any one call's, and is not cancelled.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

use super::replicas::Lsn;
use crate::domain::DomainError;

tokio::task_local! {
    static CURRENT: CallScope;
}

/// One call, as its database work sees it.
#[derive(Debug, Clone)]
pub(crate) struct CallScope {
    deadline: Option<Instant>,
    /// The consistency token the call sent (`Some(None)`: one that is not
    /// a position), for its reads (`replicas`).
    token: Option<Option<Lsn>>,
    /// Whether its reads may go to a replica: a read-only call's may; a
    /// call that writes reads what it wrote, from the primary.
    reads_replicas: bool,
    /// Its number in this process, which makes its name (`name`).
    number: u64,
    began_work: Arc<AtomicBool>,
    /// Its shares of the pool.
    pool_shares: Arc<PoolShares>,
}

/// The shares of the pool a call's transactions hold a place in (its
/// key's, its tenant's), and how many of them hold one now.
#[derive(Debug, Default)]
struct PoolShares {
    shares: OnceLock<Shares>,
    holding: AtomicUsize,
}

/// A key's share and a tenant's, each if it has one.
pub(crate) type Shares = [Option<Arc<tokio::sync::Semaphore>>; 2];

/// Calls named so far by this process.
static CALLS: AtomicU64 = AtomicU64::new(0);

impl CallScope {
    /// A call that must be done by `deadline`, if it has one; its reads
    /// go to the primary.
    pub(crate) fn new(deadline: Option<Instant>) -> Self {
        let number = CALLS.fetch_add(1, Ordering::Relaxed);
        Self {
            deadline,
            token: None,
            reads_replicas: false,
            number,
            began_work: Arc::default(),
            pool_shares: Arc::default(),
        }
    }

    /// A read-only call, whose reads may go to a replica that has the
    /// writes of `token`, if it sent one (`replicas`).
    pub(crate) fn reading(mut self, token: Option<&str>) -> Self {
        self.reads_replicas = true;
        self.token = token.map(Lsn::parse);
        self
    }

    /// Its `application_name` while it has a transaction open; made only
    /// when one begins (or is cancelled), not for every call.
    fn name(&self) -> String {
        format!("notesd call {}-{}", process_tag(), self.number)
    }

    /// Runs `work` as this call's.
    pub(crate) async fn run<F: Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }

    /// Whether the call began a transaction of its own, so that ending it
    /// early may leave a statement to cancel.
    pub(crate) fn began_work(&self) -> bool {
        self.began_work.load(Ordering::Relaxed)
    }
}

/// Tells this process's calls from another's on the same database.
fn process_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| format!("{:08x}", rand::random::<u32>()))
}

/// Bounds the connections the current call's transactions hold by
/// `shares` (its key's and its tenant's, in that order: every call takes
/// them in the same order). Set once, when the call is admitted.
pub(crate) fn share_connections(shares: Shares) {
    if shares.iter().all(Option::is_none) {
        return;
    }
    let _ = CURRENT.try_with(|call| call.pool_shares.shares.set(shares));
}

/// A transaction's places in its call's shares of the pool.
#[derive(Debug)]
pub(super) struct SharePlaces {
    _permits: [Option<tokio::sync::OwnedSemaphorePermit>; 2],
    call: Arc<PoolShares>,
}

impl Drop for SharePlaces {
    fn drop(&mut self) {
        self.call.holding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Places for a new transaction of the current call in its shares of the
/// pool, waiting at most `wait` for each (`None`: no call, no shares, or
/// the call holds its places already).
pub(super) async fn take_share_places(wait: Duration) -> Result<Option<SharePlaces>, sqlx::Error> {
    let Ok(Some((shares, call))) = CURRENT.try_with(|call| {
        let pool_shares = &call.pool_shares;
        let shares = pool_shares.shares.get()?.clone();
        if pool_shares.holding.fetch_add(1, Ordering::AcqRel) > 0 {
            pool_shares.holding.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some((shares, Arc::clone(pool_shares)))
    }) else {
        return Ok(None);
    };
    // Counted from here: given back on every way out.
    let mut places = SharePlaces {
        _permits: [None, None],
        call,
    };
    for (place, share) in places._permits.iter_mut().zip(shares) {
        let Some(share) = share else { continue };
        let permit = tokio::time::timeout(wait, share.acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        *place = Some(permit);
    }
    Ok(Some(places))
}

/// Whether the current call's reads may go to a replica.
pub(super) fn reads_replicas() -> bool {
    CURRENT
        .try_with(|call| call.reads_replicas)
        .unwrap_or(false)
}

/// The consistency token the current call sent: `None` without one,
/// `Some(None)` for one that is not a position.
pub(super) fn consistency_token() -> Option<Option<Lsn>> {
    CURRENT.try_with(|call| call.token).ok().flatten()
}

/// Whether the current call (if any) has a deadline.
pub(super) fn has_deadline() -> bool {
    CURRENT
        .try_with(|call| call.deadline.is_some())
        .unwrap_or(false)
}

/// What is left of the current call's deadline: `None` without one.
pub(crate) fn remaining() -> Option<Duration> {
    CURRENT
        .try_with(|call| call.deadline)
        .ok()
        .flatten()
        .map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

/// Appends to a transaction's first statement what the current call asks
/// of it (see the module's comment); refuses to begin once the deadline
/// has passed.
///
/// `at_most`, when given, bounds each statement of the transaction too
/// (the statement timeout is then the sooner of the two).
pub(super) fn push_call_settings(
    sql: &mut String,
    at_most: Option<Duration>,
) -> Result<(), DomainError> {
    let call = CURRENT.try_with(|call| {
        call.began_work.store(true, Ordering::Relaxed);
        (
            call.name(),
            call.deadline
                .map(|deadline| deadline.saturating_duration_since(Instant::now())),
        )
    });
    let mut settings = Vec::new();
    let mut timeout = at_most;
    if let Ok((name, remaining)) = call {
        // The name is ours: letters, digits, spaces and a dash.
        settings.push(format!("set_config('application_name', '{name}', true)"));
        if let Some(remaining) = remaining {
            if remaining.is_zero() {
                return Err(DomainError::DeadlineExceeded);
            }
            timeout = Some(timeout.map_or(remaining, |limit| limit.min(remaining)));
        }
    }
    if let Some(timeout) = timeout {
        settings.push(format!(
            "set_config('statement_timeout', '{}', true)",
            statement_timeout_ms(timeout)
        ));
    }
    if !settings.is_empty() {
        let _ = write!(sql, "; select {}", settings.join(", "));
    }
    Ok(())
}

/// The largest `statement_timeout` PostgreSQL accepts (an `int` of
/// milliseconds, about 24.8 days): a longer deadline is no bound in
/// practice, and one above it would make the `BEGIN` fail.
const MAX_STATEMENT_TIMEOUT_MS: u128 = i32::MAX as u128;

/// `remaining` as a `statement_timeout`: at least 1 ms (0 would mean none),
/// at most [`MAX_STATEMENT_TIMEOUT_MS`].
fn statement_timeout_ms(remaining: Duration) -> u128 {
    remaining.as_millis().clamp(1, MAX_STATEMENT_TIMEOUT_MS)
}

/// Cancels the statements of calls that ended before their work did: one
/// task, fed by a bounded queue, cancels all that are queued at once.
#[derive(Debug, Clone)]
pub(crate) struct Canceller {
    queue: tokio::sync::mpsc::Sender<String>,
}

/// Calls whose statements wait to be cancelled; beyond that, a call's
/// statement is left to its statement timeout (if it has a deadline) or
/// its end.
const CANCEL_QUEUE: usize = 1024;

impl Canceller {
    /// Starts the cancelling task, on `pool` (a connection as the
    /// connecting role: see `Database::canceller_pool`); it ends when the
    /// last clone is dropped.
    pub(crate) fn start(pool: PgPool) -> Self {
        let (queue, mut names) = tokio::sync::mpsc::channel::<String>(CANCEL_QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while names.recv_many(&mut batch, CANCEL_QUEUE).await > 0 {
                // Only a statement running now: an idle backend has
                // nothing to cancel (and ignores a cancel anyway).
                let cancelled = sqlx::query_scalar::<_, i64>(
                    "select count(*) filter (where pg_cancel_backend(pid)) \
                     from pg_stat_activity \
                     where application_name = any($1) and state = 'active'",
                )
                .bind(&batch)
                .fetch_one(&pool)
                .await;
                match cancelled {
                    Ok(0) => {}
                    Ok(cancelled) => {
                        tracing::debug!(cancelled, "cancelled the statements of calls that ended");
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot cancel the statements of calls that ended");
                    }
                }
                batch.clear();
            }
        });
        Self { queue }
    }

    /// Cancels, in the background, any statement running for `call`.
    pub(crate) fn cancel(&self, call: &CallScope) {
        if self.queue.try_send(call.name()).is_err() {
            tracing::debug!("too many statements to cancel; one is left to end by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_names_its_transactions_and_bounds_their_statements() {
        let mut outside = String::from("begin");
        push_call_settings(&mut outside, None).unwrap();
        assert_eq!(outside, "begin", "no call, nothing added");

        let call = CallScope::new(Some(Instant::now() + Duration::from_secs(5)));
        let name = call.name();
        let sql = call
            .clone()
            .run(async {
                let mut sql = String::from("begin");
                push_call_settings(&mut sql, None).map(|()| sql)
            })
            .await
            .unwrap();
        assert!(call.began_work());
        assert!(
            sql.starts_with(&format!(
                "begin; select set_config('application_name', '{name}', true), \
                 set_config('statement_timeout', '"
            )),
            "{sql}"
        );
        let ms: u64 = sql
            .rsplit("'statement_timeout', '")
            .next()
            .and_then(|rest| rest.split('\'').next())
            .and_then(|ms| ms.parse().ok())
            .unwrap();
        assert!((4_000..=5_000).contains(&ms), "{ms} ms left of 5 s");
        let sooner = call
            .clone()
            .run(async {
                let mut sql = String::from("begin");
                push_call_settings(&mut sql, Some(Duration::from_millis(300))).map(|()| sql)
            })
            .await
            .unwrap();
        assert!(
            sooner.ends_with("'statement_timeout', '300', true)"),
            "a bound sooner than the deadline wins: {sooner}"
        );
        let mut bounded = String::from("begin");
        push_call_settings(&mut bounded, Some(Duration::from_secs(2))).unwrap();
        assert_eq!(
            bounded, "begin; select set_config('statement_timeout', '2000', true)",
            "a bound outside any call"
        );

        let without = CallScope::new(None);
        let sql = without
            .run(async {
                let mut sql = String::from("begin");
                push_call_settings(&mut sql, None).map(|()| sql)
            })
            .await
            .unwrap();
        assert!(!sql.contains("statement_timeout"), "{sql}");

        let far = CallScope::new(Some(Instant::now() + Duration::from_secs(30 * 86_400)));
        let sql = far
            .run(async {
                let mut sql = String::from("begin");
                push_call_settings(&mut sql, None).map(|()| sql)
            })
            .await
            .unwrap();
        assert!(
            sql.ends_with("'statement_timeout', '2147483647', true)"),
            "a 30-day deadline is clamped to what PostgreSQL accepts: {sql}"
        );

        let past = CallScope::new(Some(Instant::now()));
        let refused = past
            .run(async { push_call_settings(&mut String::from("begin"), None) })
            .await;
        assert!(matches!(refused, Err(DomainError::DeadlineExceeded)));
    }
}
