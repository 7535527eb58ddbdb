-- get_queue_depths: unlocked messages in the orchestrator and worker queues.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.get_queue_depths{{suffix}}()
RETURNS TABLE (orchestrator_queue bigint, worker_queue bigint)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
    SELECT (SELECT pg_catalog.count(*) FROM {{schema}}.orchestrator_queue q WHERE q.lock_token IS NULL),
           (SELECT pg_catalog.count(*) FROM {{schema}}.worker_queue w WHERE w.lock_token IS NULL);
END
$$;
