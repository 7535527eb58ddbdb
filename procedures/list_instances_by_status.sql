-- list_instances_by_status: instances whose current execution has p_status, newest first.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.list_instances_by_status{{suffix}}(p_status text)
RETURNS TABLE (instance_id text)
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
    SELECT i.instance_id
      FROM {{schema}}.instances i
      JOIN {{schema}}.executions e
        ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
     WHERE e.status = p_status
     ORDER BY i.created_at_ms DESC, i.instance_id;
END
$$;
