//! Who is calling: a member of a tenant, identified through an API key.

use std::fmt;

use super::DomainError;

/// The organization that owns notes. Every row and query is scoped by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

/// A member of a tenant: a person or an agent with notes of their own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberId(String);

/// Tenant and member ids: 1 to 128 printable characters, no whitespace.
fn parse_id(field: &str, value: &str) -> Result<String, DomainError> {
    if value.is_empty() {
        return Err(DomainError::missing(field));
    }
    if value.chars().count() > 128 {
        return Err(DomainError::too_large(
            field,
            format!("{field} is longer than 128 characters"),
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DomainError::invalid(
            field,
            format!("{field} must not contain whitespace or control characters"),
        ));
    }
    Ok(value.to_owned())
}

impl TenantId {
    pub fn parse(field: &str, value: &str) -> Result<Self, DomainError> {
        parse_id(field, value).map(Self)
    }

    /// A tenant id read back from the database, which only ever holds ids
    /// that passed [`TenantId::parse`] on their way in.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl MemberId {
    pub fn parse(field: &str, value: &str) -> Result<Self, DomainError> {
        parse_id(field, value).map(Self)
    }

    /// A member id read back from the database, which only ever holds ids
    /// that passed [`MemberId::parse`] on their way in.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a caller may do beyond what its member may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The member's own rights: its notes, and the tenant's TEAM notes.
    Member,
    /// Reads and changes every note of the tenant (export, migration,
    /// support), and creates notes for any owner; recorded as its member on
    /// every change.
    Admin,
}

/// An authenticated caller: the member it acts as, in its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub member: MemberId,
    pub role: Role,
    /// The key it called with; `None` for a client certificate. Quotas
    /// are kept per key as well as per tenant.
    pub key: Option<uuid::Uuid>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}
