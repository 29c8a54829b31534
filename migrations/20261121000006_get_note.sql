-- GetNote in one round trip. A read needs the tenant setting that row-level
-- security checks; a function runs its statements in order, so the setting
-- is in place for the read, and it lasts only as long as the caller's
-- transaction (one statement, when the caller runs it alone). The function
-- runs as its caller, under row-level security like any query of the app.
create function notesd_get_note(p_tenant text, p_id uuid) returns setof notes
language plpgsql
as $$
begin
    perform set_config('notesd.tenant_id', p_tenant, true);
    return query select * from notes where tenant_id = p_tenant and id = p_id;
end
$$;

grant execute on function notesd_get_note(text, uuid) to notesd_app;
