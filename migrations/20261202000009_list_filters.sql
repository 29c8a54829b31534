-- ListNotes filters by subject type and by related subject, each served by
-- an index, so that no facade filters in memory or pages through a tenant:
-- Close lists a tenant's lead notes (subject_type) and a contact's notes
-- (related_subject); Capillary finds a customer by any of its identifiers
-- (subject, or related subject).

-- A tenant's notes about subjects of one type, in list order.
create index notes_tenant_subject_type_occurred
    on notes (tenant_id, subject_type, occurred_at desc, id desc);

-- Containment (`related_subjects @> '[{"type": …, "id": …}]'`). A GIN index
-- cannot lead with the tenant column; the tenant is checked on the rows it
-- finds (and by row-level security), and a related subject's notes are few.
-- jsonb_path_ops: smaller and faster than the default operator class for
-- `@>`, the only operator used.
create index notes_related_subjects on notes using gin (related_subjects jsonb_path_ops);
