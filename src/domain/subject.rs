//! The subject registry: records with an owner, and whether only that owner
//! may add notes about them (Zyntro's "only the contact owner can add notes").

use chrono::{DateTime, Utc};

use super::{MemberId, Subject};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubjectRegistration {
    pub subject: Subject,
    pub owner: MemberId,
    pub owner_only_notes: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
