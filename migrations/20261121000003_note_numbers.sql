-- notesd schema, part 3: numeric note ids for the vendor facades whose ids
-- are integers (Capillary's note id, Fernand's note_id). A note gets its
-- number the first time such a facade shows or creates it, and keeps it.
-- The numbers come from one sequence; they are unique, not dense, and stay
-- below 2^53, so JavaScript clients read them exactly.

create sequence note_number_seq as bigint maxvalue 9007199254740991;

create table note_numbers (
    tenant_id text   not null,
    note_id   uuid   not null,
    number    bigint not null,
    primary key (tenant_id, note_id),
    unique (tenant_id, number)
);

grant select, insert on note_numbers to notesd_app;
grant usage on sequence note_number_seq to notesd_app;

alter table note_numbers enable row level security;
alter table note_numbers force row level security;
create policy tenant_isolation on note_numbers
    using (tenant_id = current_setting('notesd.tenant_id', true))
    with check (tenant_id = current_setting('notesd.tenant_id', true));

-- Zyntro answers WRONG_ORG when a contact exists in another organization.
-- Row-level security hides other tenants from notesd_app, so this one
-- question is answered by a function that runs as the schema owner and
-- returns only a yes or no. (The owner must not be subject to RLS on
-- `subjects`: a superuser or a BYPASSRLS role, as the migrating role is.)
create index subjects_by_subject on subjects (subject_type, subject_id);

create function notesd_subject_registered_elsewhere(p_tenant text, p_type text, p_id text)
returns boolean
language sql stable security definer
set search_path = public
as $$
    select exists (
        select 1 from subjects
        where subject_type = p_type and subject_id = p_id and tenant_id <> p_tenant
    )
$$;

revoke all on function notesd_subject_registered_elsewhere(text, text, text) from public;
grant execute on function notesd_subject_registered_elsewhere(text, text, text) to notesd_app;
