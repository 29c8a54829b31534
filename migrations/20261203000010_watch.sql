-- The change stream (WatchNotes, src/storage/watch.rs) and the retention of
-- the outbox and the request ids (src/storage/retention.rs).
--
-- Position. Every event records the id of the transaction that wrote it
-- (xid8, which never wraps). A reader takes, in one statement, the events
-- of its tenant after its position whose xid is below the statement's
-- snapshot xmin: every transaction with an xid below xmin has ended, so no
-- event can ever appear below that horizon later, whatever order
-- transactions commit in. docs/watch.md gives the whole argument.
--
-- Added without a default first, then given one: existing events keep a
-- null xid (no table rewrite) and are never streamed; a position is always
-- a real xid. The default is evaluated by each insert, so the writers
-- (notesd_add_notes, save_note.sql) name no new column.
alter table note_events add column xid xid8;
alter table note_events alter column xid set default pg_current_xact_id();

-- A tenant's events in stream order: each read is one range scan.
create index note_events_stream on note_events (tenant_id, xid, id);

-- Retention deletes by age across tenants. BRIN: the tables are written in
-- time order, so block ranges summarize creation times well, and a BRIN
-- index costs the write path next to nothing (a B-tree on created_at would
-- be one more index entry per write).
create index note_events_created_brin on note_events using brin (created_at);
create index note_requests_created_brin on note_requests using brin (created_at);

-- The highest xid whose events retention deleted, per tenant: a resume
-- position at or below it may have lost events and is refused
-- (OUT_OF_RANGE, WATCH_TOKEN_EXPIRED).
create table note_event_horizons (
    tenant_id      text primary key,
    pruned_through xid8 not null
);

alter table note_event_horizons enable row level security;
alter table note_event_horizons force row level security;
create policy tenant_isolation on note_event_horizons
    using (tenant_id = current_setting('notesd.tenant_id', true))
    with check (tenant_id = current_setting('notesd.tenant_id', true));
grant select on note_event_horizons to notesd_app;

-- Retention runs as notesd_retention: it sees every tenant, but may only
-- read and delete outbox events and request ids, and record horizons. It
-- reads no note content. The server's connecting role switches to it on a
-- connection of its own (SET ROLE), so the pooled notesd_app connections
-- stay unable to cross tenants.
do $$
begin
    create role notesd_retention nologin nosuperuser nocreatedb nocreaterole noinherit nobypassrls;
exception
    when duplicate_object or unique_violation then null;
end
$$;
-- The connecting role (which runs the migrations) may switch to both roles
-- even when it is not a superuser.
grant notesd_retention to current_user;
grant notesd_app to current_user;

grant usage on schema public to notesd_retention;
grant select, delete on note_events, note_requests to notesd_retention;
-- `for update skip locked`, so that processes pruning at once take
-- different rows, needs an update privilege; it updates nothing.
grant update (created_at) on note_events, note_requests to notesd_retention;
grant select, insert, update on note_event_horizons to notesd_retention;
create policy retention on note_events to notesd_retention using (true);
create policy retention on note_requests to notesd_retention using (true);
create policy retention on note_event_horizons to notesd_retention using (true) with check (true);
