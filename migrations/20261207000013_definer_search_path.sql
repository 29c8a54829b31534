-- The functions that run as the schema owner (security definer) name the
-- schemas they read: `public`, and `pg_temp` last. Left out, pg_temp is
-- searched first for tables, so a caller of the function (notesd_app may
-- create temporary tables) could hand it a temporary `subjects` or
-- `notes` of its own making in place of the real one.
alter function notesd_subject_registered_elsewhere(text, text, text)
    set search_path = public, pg_temp;
alter function notesd_purge_notes(text, uuid, text, timestamptz, text, text, bytea, uuid[])
    set search_path = public, pg_temp;
