-- First in the transaction: plan the counts for the tables as they are,
-- reading each one whole (the procedure pins the same in its header), over
-- the pool's generic plans and their settings (sequential scans are off
-- only for plans kept per connection; src/config.rs, PLAN_SETTINGS). A
-- generic plan without sequential scans counts every row through an index:
-- three times as long on a tenant of 200,000 instances and 2,000,000
-- events (docs/benchmarks.md, "Admin queries on a large tenant").
SELECT pg_catalog.set_config('plan_cache_mode', 'auto', true) AS plan_cache_mode,
       pg_catalog.set_config('enable_seqscan', 'on', true) AS enable_seqscan;
