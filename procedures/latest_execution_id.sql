-- latest_execution_id: an instance's highest execution id, 1 when it has none.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.latest_execution_id{{suffix}}(p_instance_id text)
RETURNS SETOF bigint
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
    SELECT coalesce(pg_catalog.max(e.execution_id), 1) FROM {{schema}}.executions e WHERE e.instance_id = p_instance_id;
END
$$;
