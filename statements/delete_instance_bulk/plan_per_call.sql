-- First in the transaction: plan its statements per call, for the tables as
-- they are (the procedure pins the same in its header), over the pool's
-- generic plans and their settings: a generic plan of the optional id
-- filter cannot use the primary key, so deleting a few named instances would
-- read them all; and a plan made for this call may read a table whole where
-- that is cheaper (sequential scans are off only for plans kept per
-- connection; src/config.rs, PLAN_SETTINGS).
SELECT pg_catalog.set_config('plan_cache_mode', 'auto', true) AS plan_cache_mode,
       pg_catalog.set_config('enable_seqscan', 'on', true) AS enable_seqscan;
