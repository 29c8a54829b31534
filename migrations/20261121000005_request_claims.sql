-- Group commit (src/storage/batch.rs) claims the request ids of a whole
-- batch of adds first, then gives back, in the same transaction, the claims
-- of adds that were refused (the subject's rules, a source id already
-- taken), so that the request can be made again. Giving back is a delete.
grant delete on note_requests to notesd_app;
