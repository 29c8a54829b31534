-- Writes the whole state of a note (a new one, or a changed one already
-- locked by this transaction), and in the same statement its revision (the
-- note as stored, as jsonb) and its outbox event.
with saved as (
    insert into notes (
        tenant_id, id, subject_type, subject_id, related_subjects, owner_id,
        created_by, updated_by, visibility, edit_policy, body_text, body_html,
        title, mentions, actions, attachments, pinned, pinned_at, occurred_at,
        created_at, updated_at, edited_at, deleted_at, draft, source_system,
        source_id, client_reference, revision
    )
    values (
        $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
        $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28
    )
    on conflict (tenant_id, id) do update set
        subject_type = excluded.subject_type,
        subject_id = excluded.subject_id,
        related_subjects = excluded.related_subjects,
        owner_id = excluded.owner_id,
        updated_by = excluded.updated_by,
        visibility = excluded.visibility,
        edit_policy = excluded.edit_policy,
        body_text = excluded.body_text,
        body_html = excluded.body_html,
        title = excluded.title,
        mentions = excluded.mentions,
        actions = excluded.actions,
        attachments = excluded.attachments,
        pinned = excluded.pinned,
        pinned_at = excluded.pinned_at,
        occurred_at = excluded.occurred_at,
        updated_at = excluded.updated_at,
        edited_at = excluded.edited_at,
        deleted_at = excluded.deleted_at,
        draft = excluded.draft,
        client_reference = excluded.client_reference,
        revision = excluded.revision
    returning tenant_id, id, revision, updated_by, updated_at, to_jsonb(notes.*) - 'search' as snapshot
),
revision as (
    insert into note_revisions (tenant_id, note_id, revision, change_kind, actor_id, changed_at, snapshot)
    select tenant_id, id, revision, $29, updated_by, updated_at, snapshot from saved
)
insert into note_events (tenant_id, id, note_id, revision, change_kind, created_at)
select tenant_id, $30, id, revision, $29, updated_at from saved
