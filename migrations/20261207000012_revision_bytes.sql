-- What a revision weighs as read: its snapshot as JSON text, measured once
-- as it is written. A page of revisions is cut to its budget of bytes in
-- the statement that reads it (src/storage/rows.rs, page_cut_columns), and
-- a snapshot's own size is not known without reading and decompressing
-- it: a page of a thousand revisions of a 10 MiB note was read whole
-- before the response budget cut it.
--
-- A stored generated column rewrites the table once, reading every
-- snapshot, under an exclusive lock: writes wait while it runs. On a
-- large database, run `notesd migrate` in a quiet hour before the new
-- release starts.
alter table note_revisions
    add column snapshot_bytes bigint generated always as (octet_length(snapshot::text)) stored;
