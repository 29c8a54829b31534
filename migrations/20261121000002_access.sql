-- notesd schema, part 2: key kinds and IP allowlists, the subject registry,
-- and row-level security on every tenant table.

-- Key kinds: a member key acts as its member; a service key names the
-- acting member on each call; an admin key reads and changes every note of
-- its tenant and is recorded as its member (the person or tool it is for).
alter table api_keys add column kind text;
update api_keys set kind = case when member_id is null then 'service' else 'member' end;
alter table api_keys
    alter column kind set not null,
    add constraint api_keys_kind check (kind in ('member', 'service', 'admin')),
    add constraint api_keys_service_has_no_member check ((kind = 'service') = (member_id is null));

-- Calls with the key are accepted only from these networks; empty: anywhere.
alter table api_keys add column allowed_cidrs cidr[] not null default '{}';

-- The subject registry: a record (a contact, a customer...) with an owner,
-- and whether only that owner may add notes about it.
create table subjects (
    tenant_id        text        not null,
    subject_type     text        not null,
    subject_id       text        not null,
    owner_id         text        not null,
    owner_only_notes boolean     not null default false,
    created_at       timestamptz not null,
    updated_at       timestamptz not null,
    primary key (tenant_id, subject_type, subject_id)
);

-- Row-level security. The server's connections run as notesd_app, which
-- owns nothing and cannot bypass RLS; each transaction names its tenant with
-- set_config('notesd.tenant_id', ..., true). A query that forgets its tenant
-- filter still sees one tenant only, and with no tenant set it sees nothing.
do $$
begin
    create role notesd_app nologin nosuperuser nocreatedb nocreaterole noinherit nobypassrls;
exception
    -- The role is cluster-wide: another database of the cluster made it.
    when duplicate_object or unique_violation then null;
end
$$;

grant usage on schema public to notesd_app;
grant select, insert, update on notes, note_revisions, note_events, note_requests, subjects
    to notesd_app;
-- Keys are looked up before the tenant is known; the app may only read
-- them and record their use. Creating and revoking keys is the CLI's work,
-- done as the database owner.
grant select, update (last_used_at) on api_keys to notesd_app;

alter table notes enable row level security;
alter table notes force row level security;
create policy tenant_isolation on notes
    using (tenant_id = current_setting('notesd.tenant_id', true))
    with check (tenant_id = current_setting('notesd.tenant_id', true));

alter table note_revisions enable row level security;
alter table note_revisions force row level security;
create policy tenant_isolation on note_revisions
    using (tenant_id = current_setting('notesd.tenant_id', true))
    with check (tenant_id = current_setting('notesd.tenant_id', true));

alter table note_events enable row level security;
alter table note_events force row level security;
create policy tenant_isolation on note_events
    using (tenant_id = current_setting('notesd.tenant_id', true))
    with check (tenant_id = current_setting('notesd.tenant_id', true));

alter table note_requests enable row level security;
alter table note_requests force row level security;
create policy tenant_isolation on note_requests
    using (tenant_id = current_setting('notesd.tenant_id', true))
    with check (tenant_id = current_setting('notesd.tenant_id', true));

alter table subjects enable row level security;
alter table subjects force row level security;
create policy tenant_isolation on subjects
    using (tenant_id = current_setting('notesd.tenant_id', true))
    with check (tenant_id = current_setting('notesd.tenant_id', true));
