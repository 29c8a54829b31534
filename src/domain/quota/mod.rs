//! Quotas (docs/quotas.md): what a scope's limits are, what a call costs,
//! and a call refused by one (which limit, whose, when to try again). They
//! are enforced by `crate::quotas`.

mod limits;

pub(crate) use limits::Limits;
pub use limits::Override;
pub(crate) use limits::{cost, units_for};

use std::time::Duration;

use uuid::Uuid;

use super::TenantId;

/// Which of a caller's limits refused the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLimit {
    /// The request rate (units a second, with a burst).
    Rate,
    /// Calls in flight at once.
    Calls,
    /// Watches open at once.
    Watchers,
}

impl QuotaLimit {
    /// The ErrorInfo reason of a refusal by this limit.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Rate => "RATE_LIMITED",
            Self::Calls => "TOO_MANY_CALLS",
            Self::Watchers => "TOO_MANY_WATCHERS",
        }
    }
}

/// Whose limit it is: a tenant's (all its callers together) or one key's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaScope {
    Tenant(TenantId),
    Key(Uuid),
}

impl QuotaScope {
    /// The scope as a `google.rpc.QuotaFailure` subject: `tenant:<id>` or
    /// `key:<id>`.
    pub fn subject(&self) -> String {
        match self {
            Self::Tenant(tenant) => format!("tenant:{}", tenant.as_str()),
            Self::Key(id) => format!("key:{}", id.simple()),
        }
    }
}

/// A call refused by a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub limit: QuotaLimit,
    pub scope: QuotaScope,
    /// The limit's value: units a second for the rate, else how many at
    /// once.
    pub allowed: u32,
    /// When a retry may succeed: for the rate, when enough units are back;
    /// for the caps, a short pause (nobody knows when a call will end).
    pub retry_after: Duration,
}

impl QuotaExceeded {
    /// What went wrong, in a sentence.
    pub fn describe(&self) -> String {
        let whose = match &self.scope {
            QuotaScope::Tenant(tenant) => format!("tenant {}", tenant.as_str()),
            QuotaScope::Key(id) => format!("key {}", id.simple()),
        };
        let allowed = self.allowed;
        match self.limit {
            QuotaLimit::Rate => format!(
                "{whose} has used its rate limit of {allowed} units a second; retry after {} ms",
                self.retry_after.as_millis()
            ),
            QuotaLimit::Calls => {
                format!("{whose} has {allowed} calls in flight, as many as its quota allows")
            }
            QuotaLimit::Watchers => {
                format!("{whose} has {allowed} watches open, as many as its quota allows")
            }
        }
    }
}
