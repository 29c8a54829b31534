//! The note model and its rules: no tonic, no sqlx, no proto.
//!
//! Values are parsed at the edge (`grpc`, `compat`) into these types; once a
//! value is here it is valid.

pub(crate) mod access;
pub(crate) mod body;
pub(crate) mod error;
pub(crate) mod list;
pub(crate) mod note;
pub(crate) mod principal;
pub(crate) mod quota;
pub(crate) mod search;
pub(crate) mod subject;
pub(crate) mod time;
pub(crate) mod watch;

pub(crate) use error::{DomainError, ErrorKind, FieldViolation};
pub(crate) use note::*;
pub use principal::{MemberId, TenantId};
pub(crate) use principal::{Principal, Role};
pub(crate) use quota::{QuotaExceeded, QuotaLimit, QuotaScope};
pub(crate) use subject::SubjectRegistration;
