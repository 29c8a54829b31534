-- Seeds the benchmark's read tenants, as the superuser (row-level security
-- does not apply). psql variables: list_notes, get_notes.
--
-- bench-list: :list_notes notes, one every 37 seconds back from 2026-01-01,
--   about 100 subjects, team visibility, a ~100-byte body. ListNotes reads
--   them newest occurred_at first.
-- bench-get: :get_notes notes whose ids are deterministic, k = 1..N:
--   00000000-0000-7000-8000-<k as 12 hex digits>; the load generator's `get`
--   and bench/pgbench/select_note.sql build the same ids.
\set ON_ERROR_STOP on

insert into notes (
    tenant_id, id, subject_type, subject_id, owner_id, created_by, updated_by,
    visibility, edit_policy, body_text, occurred_at, created_at, updated_at, revision
)
select
    'bench-list', gen_random_uuid(), 'contact', 'c-' || (g % 100), 'm-bench', 'm-bench', 'm-bench',
    2, 1, 'Seeded note ' || g || ' about a contact: ' || md5(g::text) || ' ' || md5((g + 1)::text),
    t, t, t, 1
from generate_series(1, :list_notes) as g,
     lateral (select timestamptz '2026-01-01 00:00:00+00' - g * interval '37 seconds' as t) as ts;

insert into notes (
    tenant_id, id, subject_type, subject_id, owner_id, created_by, updated_by,
    visibility, edit_policy, body_text, occurred_at, created_at, updated_at, revision
)
select
    'bench-get', ('00000000-0000-7000-8000-' || lpad(to_hex(k), 12, '0'))::uuid,
    'contact', 'c-' || (k % 1000), 'm-bench', 'm-bench', 'm-bench',
    2, 1, 'Seeded note ' || k || ' about a contact: ' || md5(k::text) || ' ' || md5((k + 1)::text),
    t, t, t, 1
from generate_series(1, :get_notes) as k,
     lateral (select timestamptz '2026-01-01 00:00:00+00' - k * interval '11 seconds' as t) as ts;

vacuum analyze notes;
checkpoint;
