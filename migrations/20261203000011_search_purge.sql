-- SearchNotes (src/storage/search.rs) and PurgeNotes (src/storage/purge.rs).

-- Full-text search over the title and the plain text (the derived text of
-- an HTML note, so tags never match), with the `simple` configuration: no
-- stemming and no stop words, so names and ids match as typed. Stored, so
-- a search reads the vector instead of parsing each candidate's text, and
-- ranking the candidates costs no parse either. The title weighs more
-- (A) than the text (B) in the ranking.
--
-- Only the first 100,000 characters of the text are indexed: a tsvector
-- holds at most 1 MiB, which a 10 MiB body could pass, and a note is
-- found by its opening far more than by its hundredth page.
--
-- Adding the column rewrites the table once.
alter table notes add column search tsvector generated always as (
    setweight(to_tsvector('simple'::regconfig, title), 'A')
    || setweight(to_tsvector('simple'::regconfig, left(body_text, 100000)), 'B')
) stored;

-- A GIN index cannot lead with the tenant column (without the btree_gin
-- extension, which would make every tenant's whole posting list part of
-- every search); the tenant is checked on the rows it finds, and a search
-- for a word most notes hold walks notes_tenant_occurred instead (see
-- docs/search.md for the plans and their costs).
create index notes_search on notes using gin (search);

-- Searching under row-level security. A policy's condition is checked
-- before any condition of the query that is not leakproof, and the text
-- match (`@@`) and jsonb containment (`@>`) are not: under RLS, PostgreSQL
-- may not ask the GIN indexes first, and reads the tenant's notes one by
-- one instead (a search for a rare word scanned the whole tenant).
-- tenant_notes applies the policy's rule itself, as a plain view (not a
-- security barrier) read with its owner's rights. Its owner is the
-- migrating role, which row-level security does not restrict (a superuser
-- or a BYPASSRLS role, as notesd_subject_registered_elsewhere already
-- requires), so the tenant's condition and the query's are planned
-- together and the GIN indexes answer. Like the policy, it shows the rows
-- of the tenant set for the transaction, and none when none is set; the
-- app may only read it. (`select *` takes the columns of today: a column
-- added to notes later is added to the view by recreating it.)
create view tenant_notes as
    select * from notes where tenant_id = current_setting('notesd.tenant_id', true);
grant select on tenant_notes to notesd_app;

-- A search orders by occurred_at and takes a page: the planner either
-- walks the tenant's newest notes and checks each vector (right for a
-- common word) or asks the GIN index and sorts the matches (right for a
-- rare one). It tells them apart by the column's statistics, whose
-- default (100) tracks too few words: every word it does not track was
-- taken for one in 200, and a search for a word held by one note in a
-- million walked the whole tenant. 2000 tracks 20,000 words; an unknown
-- word is then taken for rare. (ANALYZE reads more rows for it: about two
-- seconds for 300,000 notes.)
alter table notes alter column search set statistics 2000;

-- A revision's snapshot is the note as stored, without the search vector
-- (derived from the note, and as large as its text): the batch insert of
-- 20261121000008 again, with `- 'search'` on both snapshots. The single
-- writes (src/storage/sql/save_note.sql) do the same.
create or replace function notesd_add_notes(
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
        returning tenant_id, id, revision, created_by, created_at, to_jsonb(notes.*) - 'search' as snapshot
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
        returning tenant_id, id, revision, created_by, created_at, to_jsonb(notes.*) - 'search' as snapshot
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

-- PurgeNotes: the erasure of notes, with everything that holds their
-- content or names them (revisions, outbox events, request ids, facade
-- numbers), in one transaction, and one audit record without content.
create table note_purges (
    tenant_id      text        not null,
    id             uuid        not null,
    -- the admin who purged (the member the admin key is recorded as)
    actor_id       text        not null,
    purged_at      timestamptz not null,
    -- 'subject' (every note about a subject) or 'ids' (a list of notes)
    selector       text        not null check (selector in ('subject', 'ids')),
    -- SHA-256 of the subject's type, a zero byte and its id: an auditor
    -- who knows a subject can tell that it was purged; the record itself
    -- does not name it
    subject_digest bytea,
    -- how many ids the request named (for 'ids')
    requested_ids  integer     not null,
    notes          bigint      not null,
    revisions      bigint      not null,
    events         bigint      not null,
    request_ids    bigint      not null,
    primary key (tenant_id, id)
);

alter table note_purges enable row level security;
alter table note_purges force row level security;
create policy tenant_isolation on note_purges
    using (tenant_id = current_setting('notesd.tenant_id', true))
    with check (tenant_id = current_setting('notesd.tenant_id', true));

-- The app may not delete notes, revisions or events; this function, run
-- as the schema owner, is the one way to. It erases within one tenant
-- (explicit tenant filters, and row-level security for that tenant when
-- the owner is subject to it), by subject or by ids, and records the
-- purge. The events and request ids have no index by note (each would
-- cost every write): a purge reads the tenant's share of both tables
-- once, which retention keeps to days.
create function notesd_purge_notes(
    p_tenant text, p_purge_id uuid, p_actor text, p_purged_at timestamptz,
    p_subject_type text, p_subject_id text, p_subject_digest bytea, p_ids uuid[]
) returns table (notes bigint, revisions bigint)
language plpgsql
security definer
set search_path = public
as $$
declare
    v_ids uuid[];
    v_revisions bigint;
    v_events bigint;
    v_requests bigint;
begin
    perform set_config('notesd.tenant_id', p_tenant, true);
    if p_ids is null then
        with gone as (
            delete from notes n
            where n.tenant_id = p_tenant and n.subject_type = p_subject_type
              and n.subject_id = p_subject_id
            returning n.id
        )
        select coalesce(array_agg(gone.id), '{}') into v_ids from gone;
    else
        with gone as (
            delete from notes n
            where n.tenant_id = p_tenant and n.id = any(p_ids)
            returning n.id
        )
        select coalesce(array_agg(gone.id), '{}') into v_ids from gone;
    end if;

    delete from note_revisions r where r.tenant_id = p_tenant and r.note_id = any(v_ids);
    get diagnostics v_revisions = row_count;
    delete from note_events e where e.tenant_id = p_tenant and e.note_id = any(v_ids);
    get diagnostics v_events = row_count;
    delete from note_requests q where q.tenant_id = p_tenant and q.note_id = any(v_ids);
    get diagnostics v_requests = row_count;
    delete from note_numbers m where m.tenant_id = p_tenant and m.note_id = any(v_ids);

    insert into note_purges (
        tenant_id, id, actor_id, purged_at, selector, subject_digest, requested_ids,
        notes, revisions, events, request_ids
    ) values (
        p_tenant, p_purge_id, p_actor, p_purged_at,
        case when p_ids is null then 'subject' else 'ids' end,
        p_subject_digest, coalesce(cardinality(p_ids), 0),
        cardinality(v_ids), v_revisions, v_events, v_requests
    );
    return query select cardinality(v_ids)::bigint, v_revisions;
end
$$;

revoke all on function notesd_purge_notes(text, uuid, text, timestamptz, text, text, bytea, uuid[])
    from public;
grant execute on function notesd_purge_notes(text, uuid, text, timestamptz, text, text, bytea, uuid[])
    to notesd_app;
