-- Inserts a batch of new notes of one tenant ($1), each with its first
-- revision (the note as stored, as jsonb) and its outbox event, in one
-- statement. A note whose source id is already taken is skipped, not
-- failed: its id is missing from what the statement returns, and its
-- neighbours are written. (A batch in which no note has a source id runs
-- this statement without its `on conflict do nothing`: nothing can
-- conflict, since ids are new UUIDv7s, and a plain insert costs less.)
--
-- One array per column, all of the same length; mentions come as one jsonb
-- array per note because Postgres has no arrays of arrays of different
-- lengths.
with input as (
    select *
    from unnest(
        $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::text[],
        $8::int2[], $9::int2[], $10::text[], $11::text[], $12::text[], $13::jsonb[],
        $14::jsonb[], $15::jsonb[], $16::bool[], $17::timestamptz[], $18::timestamptz[],
        $19::timestamptz[], $20::bool[], $21::text[], $22::text[], $23::text[], $24::uuid[]
    ) as t (
        id, subject_type, subject_id, related_subjects, owner_id, created_by,
        visibility, edit_policy, body_text, body_html, title, mentions,
        actions, attachments, pinned, pinned_at, occurred_at,
        created_at, draft, source_system, source_id, client_reference, event_id
    )
),
saved as (
    insert into notes (
        tenant_id, id, subject_type, subject_id, related_subjects, owner_id,
        created_by, updated_by, visibility, edit_policy, body_text, body_html,
        title, mentions, actions, attachments, pinned, pinned_at, occurred_at,
        created_at, updated_at, draft, source_system, source_id,
        client_reference, revision
    )
    select
        $1, id, subject_type, subject_id, related_subjects, owner_id,
        created_by, created_by, visibility, edit_policy, body_text, body_html,
        title,
        case
            when mentions = '[]'::jsonb then '{}'::text[]
            else array(select jsonb_array_elements_text(mentions))
        end,
        actions,
        attachments, pinned, pinned_at, occurred_at,
        created_at, created_at, draft, source_system, source_id,
        client_reference, 1
    from input
    on conflict do nothing
    returning tenant_id, id, revision, created_by, created_at, to_jsonb(notes.*) as snapshot
),
revisions as (
    insert into note_revisions (tenant_id, note_id, revision, change_kind, actor_id, changed_at, snapshot)
    select tenant_id, id, revision, 1, created_by, created_at, snapshot
    from saved
),
events as (
    insert into note_events (tenant_id, id, note_id, revision, change_kind, created_at)
    select saved.tenant_id, input.event_id, saved.id, saved.revision, 1, saved.created_at
    from saved
    join input using (id)
)
select id from saved
