//! Fair shares (docs/quotas.md): every authenticated call is checked
//! against its tenant's quota and its key's, after authentication and
//! before its body is read or any database work is done.
//!
//! Each scope (a tenant, a key) has up to five limits: a request rate in
//! units a second with a burst (GCRA: [`bucket`]), calls in flight,
//! watches open, and database connections held. A call refused by the
//! rate or a cap costs a few map lookups and atomic operations, no
//! allocation that grows with it and no round trip. The limits are the
//! server's defaults per scope, changed by the overrides stored in
//! PostgreSQL (`notesd quotas set`), which every notesd reads again within
//! a second of a change ([`overrides`]).
//!
//! Every call takes one unit at the edge, if its buckets hold it; a call
//! whose cost is more (a batch, a page, a search) is charged the rest with
//! [`charge`] once decoded, before any database work, whatever its buckets
//! hold: a bucket charged past empty refuses its scope's next calls until
//! the refill has paid for it. The edges answer a
//! refusal as RESOURCE_EXHAUSTED (gRPC) or 429 (HTTP) and report the
//! bucket on every answer ([`RateHeaders`]).

mod bucket;
mod overrides;

use bucket::{Bucket, Level};

pub(crate) use crate::domain::quota::Limits;
pub use crate::domain::quota::Override;
pub(crate) use crate::domain::quota::{cost, units_for};
pub(crate) use overrides::QuotaSource;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::domain::{DomainError, Principal, QuotaExceeded, QuotaLimit, QuotaScope, TenantId};
use crate::metrics::Metrics;

/// The scopes' maps hash with foldhash, seeded per process: their keys are
/// authenticated tenants and keys, and SipHash was a visible part of a
/// call's cost.
type FastHash = foldhash::fast::RandomState;

/// How long a caller refused by a cap on calls in flight is told to wait.
const CALLS_RETRY_AFTER: Duration = Duration::from_millis(100);
/// How long a caller refused by its cap on watches is told to wait.
const WATCHERS_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest a refusal is held before it is answered ([`Quotas::pace`]).
const MAX_PACE: Duration = Duration::from_secs(1);
/// What a held refusal leaves of its call's deadline, to be answered in.
const PACE_MARGIN: Duration = Duration::from_millis(20);
/// More scopes than this in memory: the ones no call holds are dropped
/// (they are made again, with full buckets, when next used). Scopes are
/// only ever made for authenticated callers, whose keys the operator
/// issues.
const MAX_SCOPES: usize = 100_000;

/// How the server sets its quotas: on or off, and the defaults of each
/// scope as changes to the built-in ones (`--tenant-quota`, `--key-quota`).
#[derive(Debug, Clone, Copy)]
pub struct QuotaSettings {
    /// Off: every call is admitted unchecked (only the server-wide bounds
    /// hold), and no answer carries rate headers.
    pub enabled: bool,
    pub tenant: Override,
    pub key: Override,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            tenant: Override::default(),
            key: Override::default(),
        }
    }
}

/// A tenant's built-in limits (docs/quotas.md, "Defaults"), on a pool of
/// `pool_connections`: 5,000 units a second with a burst of 10,000, 256
/// calls in flight (a quarter of the server's budget), 1,000 watches, and
/// half the pool, rounded up.
pub(crate) fn builtin_tenant_limits(pool_connections: u32) -> Limits {
    Limits {
        rate: NonZeroU32::new(5_000),
        burst: NonZeroU32::new(10_000),
        calls: NonZeroU32::new(256),
        watchers: NonZeroU32::new(1_000),
        connections: NonZeroU32::new(pool_connections.div_ceil(2)),
    }
}

/// The quotas of one server: the defaults per scope, the overrides, and the
/// state of every scope in use. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Quotas {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    metrics: Arc<Metrics>,
    tenant_defaults: Limits,
    key_defaults: Limits,
    overrides: QuotaSource,
    tenants: Mutex<HashMap<TenantId, Arc<Scope>, FastHash>>,
    keys: Mutex<HashMap<Uuid, Arc<Scope>, FastHash>>,
}

/// The limits and state of one tenant or key, as of one load of the
/// overrides.
#[derive(Debug)]
struct Scope {
    scope: QuotaScope,
    /// The load of the overrides its limits are of: a scope whose limits
    /// a new load leaves as they were keeps its state.
    generation: AtomicU64,
    limits: Limits,
    rate: Option<Bucket>,
    calls: Option<Arc<Semaphore>>,
    watchers: Option<Arc<Semaphore>>,
    connections: Option<Arc<Semaphore>>,
}

fn semaphore(limit: Option<NonZeroU32>) -> Option<Arc<Semaphore>> {
    limit.map(|n| Arc::new(Semaphore::new(n.get() as usize)))
}

impl Scope {
    fn new(scope: QuotaScope, generation: u64, limits: Limits) -> Self {
        let rate = limits
            .bucket()
            .map(|(rate, burst)| Bucket::new(rate.get(), burst.get()));
        Self {
            scope,
            generation: AtomicU64::new(generation),
            limits,
            rate,
            calls: semaphore(limits.calls),
            watchers: semaphore(limits.watchers),
            connections: semaphore(limits.connections),
        }
    }

    /// This scope, if it is of the load `generation`.
    fn current(self: &Arc<Self>, generation: u64) -> Option<Arc<Self>> {
        (self.generation.load(Ordering::Acquire) == generation).then(|| Arc::clone(self))
    }

    /// This scope, now of the load `generation`, if its limits are still
    /// `limits`: its buckets and counts go on.
    fn renewed(self: &Arc<Self>, generation: u64, limits: &Limits) -> Option<Arc<Self>> {
        (self.limits == *limits).then(|| {
            self.generation.store(generation, Ordering::Release);
            Arc::clone(self)
        })
    }

    /// Takes `units` from the bucket if it holds them, or the refusal.
    fn take(&self, units: u32) -> Result<Option<Level>, DomainError> {
        let Some(bucket) = &self.rate else {
            return Ok(None);
        };
        bucket.take(units).map(Some).map_err(|wait| {
            DomainError::QuotaExceeded(Box::new(QuotaExceeded {
                limit: QuotaLimit::Rate,
                scope: self.scope.clone(),
                allowed: self.limits.rate.map_or(0, NonZeroU32::get),
                retry_after: wait,
            }))
        })
    }

    /// A permit of `semaphore` (a cap of `limit`), or the refusal.
    fn hold(
        &self,
        semaphore: &Option<Arc<Semaphore>>,
        limit: QuotaLimit,
        allowed: Option<NonZeroU32>,
        retry_after: Duration,
    ) -> Result<Option<OwnedSemaphorePermit>, DomainError> {
        let Some(semaphore) = semaphore else {
            return Ok(None);
        };
        semaphore
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| {
                DomainError::QuotaExceeded(Box::new(QuotaExceeded {
                    limit,
                    scope: self.scope.clone(),
                    allowed: allowed.map_or(0, NonZeroU32::get),
                    retry_after,
                }))
            })
    }
}

/// What a call is, for its caps: a watch holds one of the watches open,
/// any other call one of the calls in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    Call,
    Watch,
}

/// The state of a caller's tightest bucket after a call took its units,
/// as the IETF RateLimit header fields report it: `ratelimit-limit` (the
/// units a full bucket holds), `ratelimit-remaining`, `ratelimit-reset`
/// (seconds until the bucket is full again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    pub(crate) reset_secs: u64,
}

impl RateHeaders {
    fn of(level: Level) -> Self {
        Self {
            limit: level.burst,
            remaining: level.remaining,
            reset_secs: level.full_in.as_secs_f64().ceil() as u64,
        }
    }

    /// The headers of a call refused by a rate: nothing left until
    /// `retry_after`.
    fn refused(limit: u32, retry_after: Duration) -> Self {
        Self {
            limit,
            remaining: 0,
            reset_secs: retry_after.as_secs_f64().ceil() as u64,
        }
    }

    /// The tighter of two buckets' states: the one with less left.
    fn tighter(self, other: Option<Self>) -> Self {
        match other {
            Some(other) if other.remaining < self.remaining => other,
            _ => self,
        }
    }

    /// Sets the three headers (replacing any there). `ratelimit-remaining`
    /// changes from call to call, so it is marked never to be indexed:
    /// HPACK would otherwise add each new value to the connection's table,
    /// pushing out the headers that repeat (the limit, mostly the reset).
    pub(crate) fn insert_into(&self, headers: &mut http::HeaderMap) {
        static LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit-limit");
        static REMAINING: http::HeaderName = http::HeaderName::from_static("ratelimit-remaining");
        static RESET: http::HeaderName = http::HeaderName::from_static("ratelimit-reset");
        let mut remaining = http::HeaderValue::from(self.remaining);
        remaining.set_sensitive(true);
        headers.insert(LIMIT.clone(), self.limit.into());
        headers.insert(REMAINING.clone(), remaining);
        headers.insert(RESET.clone(), self.reset_secs.into());
    }
}

/// `Retry-After` (whole seconds, at least 1) for a refusal that asked
/// for `retry_after`.
pub(crate) fn retry_after_secs(retry_after: Duration) -> u64 {
    retry_after.as_secs_f64().ceil().max(1.0) as u64
}

/// A call's quota as its work sees it: the scopes it was admitted under,
/// so that [`charge`] takes the rest of its cost from the same buckets, and
/// the headers its answer reports. Made empty by the edge before a call
/// is authenticated, filled when it is admitted.
#[derive(Debug, Default)]
pub(crate) struct CallQuota {
    admitted: OnceLock<Admitted>,
    headers: Mutex<Option<RateHeaders>>,
    /// When a quota refused the call: how long until a retry may succeed.
    refused: Mutex<Option<Duration>>,
}

impl CallQuota {
    /// What the call's answer reports, once it was checked against a rate.
    pub(crate) fn headers(&self) -> Option<RateHeaders> {
        *lock(&self.headers)
    }

    /// How long until a retry may succeed, when a quota refused the call.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        *lock(&self.refused)
    }

    fn report(&self, headers: Option<RateHeaders>) {
        if headers.is_some() {
            *lock(&self.headers) = headers;
        }
    }

    /// Reports what `spent` did to the buckets of `tenant` and `key`.
    fn report_spent(
        &self,
        spent: &Result<Option<RateHeaders>, DomainError>,
        tenant: &Scope,
        key: Option<&Scope>,
    ) {
        match spent {
            Ok(headers) => self.report(*headers),
            Err(err) => self.report_refusal(err, refused_headers(err, tenant, key)),
        }
    }

    fn report_refusal(&self, err: &DomainError, headers: Option<RateHeaders>) {
        self.report(headers);
        if let Some(refusal) = err.quota() {
            *lock(&self.refused) = Some(refusal.retry_after);
        }
    }
}

/// The scopes a call was admitted under.
#[derive(Debug)]
struct Admitted {
    tenant: Arc<Scope>,
    key: Option<Arc<Scope>>,
}

tokio::task_local! {
    static CURRENT: Arc<CallQuota>;
}

/// The quota of the call running now, if it runs under one.
pub(crate) fn current() -> Option<Arc<CallQuota>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `work` as a call with the quota `call` (see [`CallQuota`]).
pub(crate) async fn run<F: Future>(call: Arc<CallQuota>, work: F) -> F::Output {
    CURRENT.scope(call, work).await
}

/// Charges the rest of the current call's cost, `units` more than the one
/// taken at the edge, to the buckets it was admitted under, whatever they
/// hold: the call runs, and a bucket charged past empty refuses its
/// scope's next calls until the refill has paid for it (`bucket`).
/// Nothing outside an admitted call.
pub(crate) fn charge(units: u32) {
    if units == 0 {
        return;
    }
    let _ = CURRENT.try_with(|call| {
        let Some(admitted) = call.admitted.get() else {
            return;
        };
        let owe = |scope: &Scope| {
            scope
                .rate
                .as_ref()
                .map(|bucket| RateHeaders::of(bucket.owe(units)))
        };
        let by_key = admitted.key.as_deref().and_then(owe);
        let by_tenant = owe(&admitted.tenant);
        call.report(tighter(by_key, by_tenant));
    });
}

/// The tighter of two buckets' states, either of which may be absent.
fn tighter(a: Option<RateHeaders>, b: Option<RateHeaders>) -> Option<RateHeaders> {
    match (a, b) {
        (Some(a), b) => Some(a.tighter(b)),
        (None, b) => b,
    }
}

/// Takes the edge's unit from the key's bucket, then the tenant's; a unit
/// the key's gave is given back when the tenant's refuses.
fn take_both(tenant: &Scope, key: Option<&Scope>) -> Result<Option<RateHeaders>, DomainError> {
    let by_key = match key {
        Some(key) => key.take(1)?,
        None => None,
    };
    let by_tenant = tenant.take(1).inspect_err(|_| {
        if let Some(bucket) = key.and_then(|key| key.rate.as_ref()) {
            bucket.give_back(1);
        }
    })?;
    Ok(tighter(
        by_key.map(RateHeaders::of),
        by_tenant.map(RateHeaders::of),
    ))
}

/// The headers of a call refused by a rate.
fn refused_headers(err: &DomainError, tenant: &Scope, key: Option<&Scope>) -> Option<RateHeaders> {
    let refusal = err.quota().filter(|r| r.limit == QuotaLimit::Rate)?;
    let scope = if refusal.scope == tenant.scope {
        tenant
    } else {
        key?
    };
    let (_, burst) = scope.limits.bucket()?;
    Some(RateHeaders::refused(burst.get(), refusal.retry_after))
}

/// What an admitted call holds until it ends: its place among its scopes'
/// calls in flight (or watches open).
#[derive(Debug)]
pub(crate) struct Admission {
    _permits: [Option<OwnedSemaphorePermit>; 2],
}

impl Quotas {
    /// Quotas with these defaults per scope and the overrides of `source`;
    /// with `enabled` false, every call is admitted unchecked.
    pub(crate) fn new(
        enabled: bool,
        tenant_defaults: Limits,
        key_defaults: Limits,
        overrides: QuotaSource,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                enabled,
                metrics,
                tenant_defaults,
                key_defaults,
                overrides,
                tenants: Mutex::default(),
                keys: Mutex::default(),
            }),
        }
    }

    /// Checks a call of `principal` against its key's quota and its
    /// tenant's, the call's first unit taken from each bucket: on success
    /// it holds what the call holds, `call` (if any) is filled, and the connections the call's transactions may hold are
    /// bounded by its scopes' shares (`storage::calls`). A refusal has
    /// spent the units of the buckets checked before the one that refused.
    pub(crate) fn admit(
        &self,
        principal: &Principal,
        kind: CallKind,
        call: Option<&Arc<CallQuota>>,
    ) -> Result<Admission, DomainError> {
        let admitted = self.check(principal, kind, call);
        if let Err(err) = &admitted {
            count_refusal(&self.inner.metrics, err);
        }
        admitted
    }

    fn check(
        &self,
        principal: &Principal,
        kind: CallKind,
        call: Option<&Arc<CallQuota>>,
    ) -> Result<Admission, DomainError> {
        if !self.inner.enabled {
            return Ok(Admission {
                _permits: [None, None],
            });
        }
        let generation = self.inner.overrides.generation();
        let tenant = self.tenant_scope(&principal.tenant, generation);
        let key = principal
            .key
            .map(|key| self.key_scope(&principal.tenant, key, generation));
        let spent = take_both(&tenant, key.as_deref());
        if let Some(call) = call {
            call.report_spent(&spent, &tenant, key.as_deref());
        }
        spent?;
        let hold = |scope: &Scope| match kind {
            CallKind::Call => scope.hold(
                &scope.calls,
                QuotaLimit::Calls,
                scope.limits.calls,
                CALLS_RETRY_AFTER,
            ),
            CallKind::Watch => scope.hold(
                &scope.watchers,
                QuotaLimit::Watchers,
                scope.limits.watchers,
                WATCHERS_RETRY_AFTER,
            ),
        };
        let held = key
            .as_deref()
            .map(hold)
            .transpose()
            .and_then(|by_key| Ok((by_key.flatten(), hold(&tenant)?)));
        let (by_key, by_tenant) = match held {
            Ok(held) => held,
            Err(err) => {
                if let Some(call) = call {
                    call.report_refusal(&err, None);
                }
                return Err(err);
            }
        };
        crate::storage::share_connections([
            key.as_ref().and_then(|key| key.connections.clone()),
            tenant.connections.clone(),
        ]);
        if let Some(call) = call {
            let _ = call.admitted.set(Admitted { tenant, key });
        }
        Ok(Admission {
            _permits: [by_key, by_tenant],
        })
    }

    /// Holds the refusal `err` of a call of `principal` by a rate until a retry
    /// could succeed, at most [`MAX_PACE`] and never past the call's
    /// deadline, then returns it with what is left of its retry delay
    /// (reported to `call` too). A client that retries at once, ignoring
    /// the delay, is so slowed to about one call per delay for each of its
    /// calls in flight, instead of spending the server's time on refusals
    /// as fast as it can send.
    ///
    /// The held refusal takes a place among its scopes' calls in flight,
    /// where they have a cap, so a scope holds no more refusals than it
    /// may make calls; with no place free (or no cap on its tenant's
    /// calls), it is answered at once. The caller drops the call's body
    /// before it waits.
    pub(crate) async fn pace(
        &self,
        principal: &Principal,
        mut err: DomainError,
        call: Option<&CallQuota>,
    ) -> DomainError {
        let Some(wait) = err
            .quota()
            .filter(|refusal| refusal.limit == QuotaLimit::Rate)
            .map(|refusal| refusal.retry_after)
        else {
            return err;
        };
        let generation = self.inner.overrides.generation();
        let tenant = self.tenant_scope(&principal.tenant, generation);
        let key = principal
            .key
            .map(|key| self.key_scope(&principal.tenant, key, generation));
        // A place among the key's calls in flight where it has a cap, and
        // among its tenant's.
        let by_key = match key.as_deref().and_then(|key| key.calls.as_ref()) {
            None => None,
            Some(calls) => match Arc::clone(calls).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return err,
            },
        };
        let Some(Ok(by_tenant)) = tenant
            .calls
            .as_ref()
            .map(|calls| Arc::clone(calls).try_acquire_owned())
        else {
            return err;
        };
        let left = crate::storage::deadline_left().map(|left| left.saturating_sub(PACE_MARGIN));
        let held = wait.min(MAX_PACE).min(left.unwrap_or(MAX_PACE));
        tokio::time::sleep(held).await;
        drop((by_key, by_tenant));
        if let DomainError::QuotaExceeded(refusal) = &mut err {
            refusal.retry_after = refusal.retry_after.saturating_sub(held);
        }
        if let Some(call) = call {
            call.report_refusal(&err, refused_headers(&err, &tenant, key.as_deref()));
        }
        err
    }

    fn tenant_scope(&self, tenant: &TenantId, generation: u64) -> Arc<Scope> {
        let mut tenants = lock(&self.inner.tenants);
        let current = tenants.get(tenant);
        if let Some(scope) = current.and_then(|scope| scope.current(generation)) {
            return scope;
        }
        let limits = self
            .inner
            .tenant_defaults
            .with(&self.inner.overrides.tenant(tenant));
        if let Some(scope) = current.and_then(|scope| scope.renewed(generation, &limits)) {
            return scope;
        }
        let scope = Arc::new(Scope::new(
            QuotaScope::Tenant(tenant.clone()),
            generation,
            limits,
        ));
        make_room(&mut tenants);
        tenants.insert(tenant.clone(), Arc::clone(&scope));
        scope
    }

    fn key_scope(&self, tenant: &TenantId, key: Uuid, generation: u64) -> Arc<Scope> {
        let mut keys = lock(&self.inner.keys);
        let current = keys.get(&key);
        if let Some(scope) = current.and_then(|scope| scope.current(generation)) {
            return scope;
        }
        let limits = self
            .inner
            .key_defaults
            .with(&self.inner.overrides.key(tenant, key));
        if let Some(scope) = current.and_then(|scope| scope.renewed(generation, &limits)) {
            return scope;
        }
        let scope = Arc::new(Scope::new(QuotaScope::Key(key), generation, limits));
        make_room(&mut keys);
        keys.insert(key, Arc::clone(&scope));
        scope
    }
}

/// Counts a refusal by a quota in the metrics.
fn count_refusal(metrics: &Metrics, err: &DomainError) {
    if let Some(refusal) = err.quota() {
        let scope = match refusal.scope {
            QuotaScope::Tenant(_) => "tenant",
            QuotaScope::Key(_) => "key",
        };
        metrics.quota_refused(refusal.limit.reason(), scope);
    }
}

/// Drops the scopes no call holds once the map is full.
fn make_room<K>(map: &mut HashMap<K, Arc<Scope>, FastHash>) {
    if map.len() >= MAX_SCOPES {
        map.retain(|_, scope| Arc::strong_count(scope) > 1);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
