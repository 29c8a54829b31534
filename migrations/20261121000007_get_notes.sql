-- GetNote reads are batched: concurrent reads of one tenant share one
-- statement. Like notesd_get_note, which it replaces, the function sets the
-- tenant that row-level security checks and then reads, in one round trip;
-- it runs as its caller, under row-level security like any query of the app.
create function notesd_get_notes(p_tenant text, p_ids uuid[]) returns setof notes
language plpgsql
as $$
begin
    perform set_config('notesd.tenant_id', p_tenant, true);
    return query select * from notes where tenant_id = p_tenant and id = any(p_ids);
end
$$;

grant execute on function notesd_get_notes(text, uuid[]) to notesd_app;

drop function notesd_get_note(text, uuid);
