-- A page of a tenant's changes after a position, in stream order (xid,
-- event id), below the horizon: the xmin of this statement's snapshot.
-- Every transaction with an xid below xmin has ended, so no event can
-- appear below the horizon after this read: reading up to it never skips
-- an event that commits later (docs/watch.md).
--
-- $1 tenant, $2 and $3 the position (xid, event id), $4 the most events,
-- $5 the most bytes: the page stops after the event that brings it past
-- them (each revision's snapshot_bytes), so the events after it are never
-- sent; page_events tells how many the page had before that cut.
--
-- One row per event with the note as the event's revision stored it and
-- the scope of the revision before (null for a creation); with no event,
-- one row of nulls. Every row carries the horizon, the tenant's pruned
-- horizon (retention) and whether committed events wait above the horizon
-- (a transaction that started earlier is still open).
with horizon as (
    select pg_snapshot_xmin(pg_current_snapshot()) as xmin
),
page as (
    select e.xid, e.id, e.note_id, e.revision, e.change_kind
    from note_events e, horizon h
    where e.tenant_id = $1
      and (e.xid, e.id) > (($2::int8)::text::xid8, $3)
      and e.xid < h.xmin
    order by e.xid, e.id
    limit $4
),
sized as (
    select p.*, r.changed_at, r.snapshot,
        sum(coalesce(r.snapshot_bytes, 0)) over (order by p.xid, p.id rows unbounded preceding)
            - coalesce(r.snapshot_bytes, 0) as bytes_before,
        count(*) over () as page_events
    from page p
    left join note_revisions r
        on r.tenant_id = $1 and r.note_id = p.note_id and r.revision = p.revision
)
select
    h.xmin::text::int8 as horizon,
    (select t.pruned_through::text::int8
     from note_event_horizons t
     where t.tenant_id = $1) as pruned_through,
    exists (
        select from note_events w where w.tenant_id = $1 and w.xid >= h.xmin
    ) as pending,
    p.xid::text::int8 as xid,
    p.id as event_id,
    p.revision,
    p.change_kind,
    p.changed_at,
    p.snapshot,
    p.page_events,
    b.snapshot ->> 'subject_type' as before_subject_type,
    b.snapshot ->> 'subject_id' as before_subject_id,
    b.snapshot -> 'related_subjects' as before_related_subjects,
    b.snapshot ->> 'owner_id' as before_owner_id,
    (b.snapshot ->> 'visibility')::int2 as before_visibility,
    (b.snapshot ->> 'draft')::bool as before_draft
from horizon h
left join (select * from sized where bytes_before < $5) p on true
left join note_revisions b
    on b.tenant_id = $1 and b.note_id = p.note_id and b.revision = p.revision - 1
order by p.xid, p.id
