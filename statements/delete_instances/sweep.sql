-- Completions committed while the purge waited for their activities (its
-- snapshot could not see them), so no message outlives its instance.
-- params: p_ids text[]
WITH late AS (DELETE FROM {{schema}}.orchestrator_queue q WHERE q.instance_id = ANY (p_ids) RETURNING 1)
SELECT pg_catalog.count(*) AS late FROM late;
