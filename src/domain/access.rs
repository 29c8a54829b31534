//! Who may see and change a note (DESIGN.md section 3).

use super::{DomainError, EditPolicy, MemberId, Note, Principal, SubjectRegistration, Visibility};

/// A note is readable by its owner; by every member of its tenant when it
/// is TEAM-visible and not a draft; by the tenant's admins; by nobody of
/// another tenant.
pub(crate) fn can_read(principal: &Principal, note: &Note) -> bool {
    principal.tenant == note.tenant && can_see(principal, &note.owner, note.visibility, note.draft)
}

/// The rule of `can_read` within the caller's tenant, on the fields that
/// decide it (the change stream also applies it to a note's earlier state).
pub(crate) fn can_see(
    principal: &Principal,
    owner: &MemberId,
    visibility: Visibility,
    draft: bool,
) -> bool {
    principal.is_admin() || *owner == principal.member || (visibility == Visibility::Team && !draft)
}

/// Checks that `principal` may change `note`. A note the caller cannot read
/// is NOT_FOUND, so its existence does not leak; a readable note that the
/// caller may not change is NOT_OWNER.
pub(crate) fn ensure_can_edit(principal: &Principal, note: &Note) -> Result<(), DomainError> {
    if !can_read(principal, note) {
        return Err(DomainError::NoteNotFound);
    }
    if principal.is_admin()
        || note.owner == principal.member
        || note.edit_policy == EditPolicy::Team
    {
        return Ok(());
    }
    Err(DomainError::NotOwner("only the note's owner may change it"))
}

/// Owner, visibility, edit policy and draft state are the owner's alone.
pub(crate) fn ensure_is_owner(principal: &Principal, note: &Note) -> Result<(), DomainError> {
    if principal.is_admin() || note.owner == principal.member {
        return Ok(());
    }
    Err(DomainError::NotOwner(
        "only the note's owner may change its owner, visibility, edit policy or draft state",
    ))
}

/// A note is created for its creator, unless an admin creates it for
/// someone else (an import).
pub(crate) fn ensure_may_create_for(
    principal: &Principal,
    owner: &MemberId,
) -> Result<(), DomainError> {
    if principal.is_admin() || *owner == principal.member {
        return Ok(());
    }
    Err(DomainError::NotOwner(
        "owner_id may only name the caller on create",
    ))
}

/// A subject registered with owner-only notes takes notes from its owner
/// (and the tenant's admins) only.
///
/// New notes are checked by the write batcher, in SQL, in the statement
/// that writes them (the `add_notes` migration): a note is refused when its
/// subject is owner-only, its creator is not the subject's owner, and
/// `may_add_notes_to_any_subject` is false for its creator; the refusal is
/// `subject_takes_owner_notes_only`.
pub(crate) fn ensure_may_add_notes_to(
    principal: &Principal,
    registration: Option<&SubjectRegistration>,
) -> Result<(), DomainError> {
    match registration {
        Some(r)
            if r.owner_only_notes
                && r.owner != principal.member
                && !may_add_notes_to_any_subject(principal) =>
        {
            Err(subject_takes_owner_notes_only())
        }
        _ => Ok(()),
    }
}

/// Whether the owner-only rule of `ensure_may_add_notes_to` spares
/// `principal`: admins add notes to any subject.
pub(crate) fn may_add_notes_to_any_subject(principal: &Principal) -> bool {
    principal.is_admin()
}

/// The refusal of `ensure_may_add_notes_to`.
pub(crate) fn subject_takes_owner_notes_only() -> DomainError {
    DomainError::NotOwner("only the subject's owner may add notes to it")
}

/// A subject is registered by its owner, or by an admin for anyone; once
/// registered, only its owner (or an admin) changes the registration.
pub(crate) fn ensure_may_register(
    principal: &Principal,
    existing: Option<&SubjectRegistration>,
    new_owner: &MemberId,
) -> Result<(), DomainError> {
    if principal.is_admin() {
        return Ok(());
    }
    match existing {
        Some(existing) if existing.owner != principal.member => Err(DomainError::NotOwner(
            "only the subject's owner may change its registration",
        )),
        // The owner may change it, including handing it to someone else.
        Some(_) => Ok(()),
        None if *new_owner != principal.member => Err(DomainError::NotOwner(
            "only an admin may register a subject for another owner",
        )),
        None => Ok(()),
    }
}
