-- The pgbench baseline of AddNote: one single-row INSERT of a note like the
-- one the load generator sends (team visibility, owner-only edits, a
-- 110-byte plain-text body about contact c-0..c-999), in tenant `pgbench`.
-- pgbench connects as the superuser, so row-level security does not apply.
\set s random(0, 999)
insert into notes (
    tenant_id, id, subject_type, subject_id, owner_id, created_by, updated_by,
    visibility, edit_policy, body_text, occurred_at, created_at, updated_at, revision
) values (
    'pgbench', gen_random_uuid(), 'contact', 'c-' || :s, 'm-bench', 'm-bench', 'm-bench',
    2, 1, 'Called back about the renewal: wants the annual plan, asks for an invoice in EUR and a call next Tuesday at 9.',
    now(), now(), now(), 1
);
