-- Quota overrides (docs/quotas.md). A row with no key_id holds a tenant's
-- own limits (all its callers together); a row with a key_id, one key's.
-- Each limit is NULL to keep the server's default for that scope, 0 for no
-- limit, else the limit: rate in units a second and burst in units; calls,
-- watchers and connections as how many at once.
create table quota_overrides (
    tenant_id text not null check (length(tenant_id) between 1 and 128),
    key_id uuid references api_keys (id) on delete cascade,
    rate integer check (rate >= 0),
    burst integer check (burst >= 0),
    calls integer check (calls >= 0),
    watchers integer check (watchers >= 0),
    connections integer check (connections >= 0)
);

create unique index quota_overrides_scope
    on quota_overrides (tenant_id, coalesce(key_id, '00000000-0000-0000-0000-000000000000'::uuid));

-- Under Citus a reference table, like api_keys (docs/scale-out.md).
--
-- Every notesd caches the overrides (src/quotas/overrides.rs) and reads
-- them again when told on this channel, so that a change takes effect on
-- every replica within a second.
create function notesd_quota_overrides_changed() returns trigger
language plpgsql
as $$
begin
    perform pg_notify('notesd_quotas', '');
    return null;
end
$$;

create trigger quota_overrides_changed
    after insert or update or delete
    on quota_overrides
    for each statement
    execute function notesd_quota_overrides_changed();

-- The server reads them; only the CLI (the schema owner) writes them.
grant select on quota_overrides to notesd_app;
