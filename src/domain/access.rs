//! Who may see and change a note (DESIGN.md section 3).

use super::{DomainError, EditPolicy, Note, Principal, Visibility};

/// A note is readable by its owner; by every member of its tenant when it
/// is TEAM-visible and not a draft; by nobody of another tenant.
pub fn can_read(principal: &Principal, note: &Note) -> bool {
    if principal.tenant != note.tenant {
        return false;
    }
    note.owner == principal.member || (note.visibility == Visibility::Team && !note.draft)
}

/// Checks that `principal` may change `note`. A note the caller cannot read
/// is NOT_FOUND, so its existence does not leak; a readable note that the
/// caller may not change is NOT_OWNER.
pub fn ensure_can_edit(principal: &Principal, note: &Note) -> Result<(), DomainError> {
    if !can_read(principal, note) {
        return Err(DomainError::NoteNotFound);
    }
    if note.owner == principal.member || note.edit_policy == EditPolicy::Team {
        return Ok(());
    }
    Err(DomainError::NotOwner("only the note's owner may change it"))
}

/// Owner, visibility, edit policy and draft state are the owner's alone.
pub fn ensure_is_owner(principal: &Principal, note: &Note) -> Result<(), DomainError> {
    if note.owner == principal.member {
        return Ok(());
    }
    Err(DomainError::NotOwner(
        "only the note's owner may change its owner, visibility, edit policy or draft state",
    ))
}
