//! The note model and its rules: no tonic, no sqlx, no proto.
//!
//! Values are parsed at the edge (`grpc`, `compat`) into these types; once a
//! value is here it is valid.

pub mod access;
pub mod body;
pub mod error;
pub mod list;
pub mod note;
pub mod principal;
pub mod subject;

pub use error::{DomainError, ErrorKind, FieldViolation};
pub use note::*;
pub use principal::{MemberId, Principal, Role, TenantId};
pub use subject::SubjectRegistration;
