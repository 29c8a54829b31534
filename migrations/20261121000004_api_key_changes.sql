-- notesd caches the API keys in use (see src/auth/cache.rs). Every change
-- that can make a key unusable or change what it may do is announced on
-- the channel notesd_api_keys, with the key's id, so that every running
-- notesd drops the key at once. Recording a key's last use is not such a
-- change and is not announced.
create function notesd_api_key_changed() returns trigger
language plpgsql
as $$
begin
    perform pg_notify('notesd_api_keys', old.id::text);
    return null;
end
$$;

create trigger api_keys_changed
    after update of id, tenant_id, kind, member_id, allowed_cidrs, secret_hash, expires_at, revoked_at
    or delete
    on api_keys
    for each row
    execute function notesd_api_key_changed();
