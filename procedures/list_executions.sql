-- list_executions: an instance's execution ids, ascending.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.list_executions{{suffix}}(p_instance_id text)
RETURNS TABLE (execution_id bigint)
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
    SELECT e.execution_id FROM {{schema}}.executions e
     WHERE e.instance_id = p_instance_id ORDER BY e.execution_id;
END
$$;
