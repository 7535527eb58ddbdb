-- The claim row of every listed id (the fetch's claim), created when
-- missing, in id order, blocking: a fetch that claimed one of them commits
-- its lease first, and a writer of their queues commits first or waits for
-- the purge. ON CONFLICT DO UPDATE ... WHERE false locks an existing row
-- without writing a new version of it.
-- params: p_ids text[]
INSERT INTO {{schema}}.instance_claims AS k (instance_id)
SELECT DISTINCT u.id FROM pg_catalog.unnest(p_ids) AS u(id) ORDER BY 1
ON CONFLICT (instance_id) DO UPDATE SET instance_id = EXCLUDED.instance_id WHERE false;
