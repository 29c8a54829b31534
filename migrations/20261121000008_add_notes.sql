-- A batch of adds in one round trip (src/storage/batch.rs).
--
-- Group commit wrote a batch in five round trips: begin and set the
-- tenant, claim the request ids, read the subjects' registrations, insert,
-- commit. On a loaded machine a round trip costs as much as the insert
-- itself, so a batch now is one call of this function, as one statement in
-- its own transaction: the call's commit is the batch's commit, and the
-- server answers only after it (synchronous_commit stays on).
--
-- For each add, in order, it returns one row: its index (1-based) and
--   1  created
--   2  replayed: its request id was used before by the same request, whose
--      note is `replayed_note` (answered whatever the subject's rules say now)
--   3  request conflict: its request id was used before by another request
--   4  refused: the subject takes notes from its owner only, and the add's
--      creator is neither that owner nor allowed any subject (an admin);
--      the rule of access::ensure_may_add_notes_to, applied here so that
--      it is read in the transaction that writes the note
--   5  its source id is taken by another note of the tenant
--   6  its request id is neither new nor recorded (an internal error)
-- Refused adds (4, 5) give their request id claim back, so the request can
-- be made again. Request ids must be distinct within a call.
--
-- The notes come as one array per column, all of the same length (mentions
-- as one jsonb array per note, since Postgres has no arrays of arrays of
-- different lengths). Like every function of the app, it runs as its caller,
-- under row-level security, after setting the tenant it checks.
create function notesd_add_notes(
    p_tenant text,
    p_ids uuid[], p_subject_types text[], p_subject_ids text[], p_related_subjects jsonb[],
    p_owners text[], p_created_by text[], p_visibility int2[], p_edit_policy int2[],
    p_body_text text[], p_body_html text[], p_titles text[], p_mentions jsonb[],
    p_actions jsonb[], p_attachments jsonb[], p_pinned bool[], p_pinned_at timestamptz[],
    p_occurred_at timestamptz[], p_created_at timestamptz[], p_draft bool[],
    p_source_systems text[], p_source_ids text[], p_client_references text[],
    p_event_ids uuid[],
    -- each add's request id and its fingerprint (null: none)
    p_request_ids uuid[], p_fingerprints bytea[],
    -- whether each add's creator may add notes to any subject
    p_any_subject bool[]
) returns table (add_index bigint, outcome smallint, replayed_note uuid)
language plpgsql
-- Plan each statement once per connection. With custom plans, which
-- Postgres keeps choosing for small batches, every call planned the insert
-- anew: 1.8 ms a call for one add where a generic plan takes 1.1 ms.
set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_column
declare
    v_claimed uuid[] := '{}';
    v_outcomes int2[];
    v_replayed uuid[];
begin
    perform set_config('notesd.tenant_id', p_tenant, true);

    -- 1. Claim the request ids, in id order, so that two batches wait for
    -- each other's claims in one order, never in a cycle. A claim another
    -- transaction holds is waited for.
    if array_remove(p_request_ids, null) <> '{}' then
        with claimed as (
            insert into note_requests (tenant_id, request_id, fingerprint, note_id, created_at)
            select p_tenant, r.request_id, r.fingerprint, r.note_id, r.created_at
            from unnest(p_request_ids, p_fingerprints, p_ids, p_created_at)
                as r (request_id, fingerprint, note_id, created_at)
            where r.request_id is not null
            order by r.request_id
            on conflict (tenant_id, request_id) do nothing
            returning request_id
        )
        select coalesce(array_agg(request_id), '{}') into v_claimed from claimed;
    end if;

    -- 2. Each add's fate before the insert: a request id taken earlier
    -- (this statement sees claims committed while step 1 waited), else the
    -- subject's rule. The tables are read by correlated subqueries, one
    -- primary-key lookup per add and only when the add needs it: a join
    -- would leave the planner free to scan a whole table, and a plan made
    -- while a table was empty is kept for the connection's life.
    select array_agg(
               case
                   when a.request_id is not null and c.request_id is null then
                       coalesce((
                           select case when r.fingerprint = a.fingerprint then 2 else 3 end
                           from note_requests r
                           where r.tenant_id = p_tenant and r.request_id = a.request_id
                       ), 6)
                   when not a.any_subject and exists (
                       select
                       from subjects r
                       where r.tenant_id = p_tenant and r.subject_type = a.subject_type
                         and r.subject_id = a.subject_id
                         and r.owner_only_notes and r.owner_id <> a.created_by
                   ) then 4
                   else 0
               end::int2 order by a.ord),
           array_agg(
               case
                   when a.request_id is not null and c.request_id is null then (
                       select r.note_id
                       from note_requests r
                       where r.tenant_id = p_tenant and r.request_id = a.request_id
                   )
               end order by a.ord)
      into v_outcomes, v_replayed
      from unnest(p_request_ids, p_fingerprints, p_subject_types, p_subject_ids,
                  p_created_by, p_any_subject)
               with ordinality
               as a (request_id, fingerprint, subject_type, subject_id, created_by,
                     any_subject, ord)
      left join unnest(v_claimed) as c (request_id) on c.request_id = a.request_id;

    -- 3. The notes still pending, each with its first revision (the note as
    -- stored) and its outbox event. A note whose source id is taken is
    -- skipped, not failed.
    with input as (
        select *
        from unnest(
            p_ids, p_subject_types, p_subject_ids, p_related_subjects, p_owners,
            p_created_by, p_visibility, p_edit_policy, p_body_text, p_body_html, p_titles,
            p_mentions, p_actions, p_attachments, p_pinned, p_pinned_at, p_occurred_at,
            p_created_at, p_draft, p_source_systems, p_source_ids, p_client_references,
            p_event_ids
        ) with ordinality as t (
            id, subject_type, subject_id, related_subjects, owner_id, created_by,
            visibility, edit_policy, body_text, body_html, title, mentions,
            actions, attachments, pinned, pinned_at, occurred_at,
            created_at, draft, source_system, source_id, client_reference, event_id, ord
        )
        where v_outcomes[ord] = 0
    ),
    -- The notes' rows. Only notes with a source id can conflict (ids are
    -- new UUIDv7s), and a plain insert skips the speculative insertion that
    -- `on conflict` costs every row, so those notes go in apart.
    fresh as (
        select
            id, subject_type, subject_id, related_subjects, owner_id,
            created_by, visibility, edit_policy, body_text, body_html, title,
            case
                when mentions = '[]'::jsonb then '{}'::text[]
                else array(select jsonb_array_elements_text(mentions))
            end as mentions,
            actions, attachments, pinned, pinned_at, occurred_at, created_at,
            draft, source_system, source_id, client_reference
        from input
    ),
    unsourced as (
        insert into notes (
            tenant_id, id, subject_type, subject_id, related_subjects, owner_id,
            created_by, updated_by, visibility, edit_policy, body_text, body_html,
            title, mentions, actions, attachments, pinned, pinned_at, occurred_at,
            created_at, updated_at, draft, source_system, source_id,
            client_reference, revision
        )
        select
            p_tenant, id, subject_type, subject_id, related_subjects, owner_id,
            created_by, created_by, visibility, edit_policy, body_text, body_html,
            title, mentions, actions, attachments, pinned, pinned_at, occurred_at,
            created_at, created_at, draft, source_system, source_id,
            client_reference, 1
        from fresh
        where source_id is null
        returning tenant_id, id, revision, created_by, created_at, to_jsonb(notes.*) as snapshot
    ),
    sourced as (
        insert into notes (
            tenant_id, id, subject_type, subject_id, related_subjects, owner_id,
            created_by, updated_by, visibility, edit_policy, body_text, body_html,
            title, mentions, actions, attachments, pinned, pinned_at, occurred_at,
            created_at, updated_at, draft, source_system, source_id,
            client_reference, revision
        )
        select
            p_tenant, id, subject_type, subject_id, related_subjects, owner_id,
            created_by, created_by, visibility, edit_policy, body_text, body_html,
            title, mentions, actions, attachments, pinned, pinned_at, occurred_at,
            created_at, created_at, draft, source_system, source_id,
            client_reference, 1
        from fresh
        where source_id is not null
        on conflict do nothing
        returning tenant_id, id, revision, created_by, created_at, to_jsonb(notes.*) as snapshot
    ),
    saved as (
        select * from unsourced
        union all
        select * from sourced
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
    select array_agg(
               case
                   when t.outcome <> 0 then t.outcome
                   when saved.id is not null then 1
                   else 5
               end::int2 order by t.ord)
      into v_outcomes
      from unnest(v_outcomes, p_ids) with ordinality as t (outcome, id, ord)
      left join saved on saved.id = t.id;

    -- 4. Refused adds give their claims back.
    if 4 = any(v_outcomes) or 5 = any(v_outcomes) then
        delete from note_requests
         where tenant_id = p_tenant
           and request_id = any(array(
               select t.request_id
               from unnest(p_request_ids, v_outcomes) as t (request_id, outcome)
               where t.outcome in (4, 5) and t.request_id is not null));
    end if;

    return query
        select t.ord, t.outcome, t.replayed_note
        from unnest(v_outcomes, v_replayed) with ordinality as t (outcome, replayed_note, ord)
        order by t.ord;
end
$$;

grant execute on function notesd_add_notes(
    text, uuid[], text[], text[], jsonb[], text[], text[], int2[], int2[], text[], text[],
    text[], jsonb[], jsonb[], jsonb[], bool[], timestamptz[], timestamptz[], timestamptz[],
    bool[], text[], text[], text[], uuid[], uuid[], bytea[], bool[]
) to notesd_app;
