-- The pgbench baseline of GetNote: one note of tenant `bench-get` by its
-- key. The seeded ids are deterministic (see bench/sql/seed.sql), so k picks
-- a note at random among the 100,000.
\set k random(1, 100000)
select * from notes
where tenant_id = 'bench-get'
  and id = ('00000000-0000-7000-8000-' || lpad(to_hex(:k::int), 12, '0'))::uuid;
