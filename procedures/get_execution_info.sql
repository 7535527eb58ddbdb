-- get_execution_info: one execution's status, output, times and event count.
-- No row: not found.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.get_execution_info{{suffix}}(p_instance_id text, p_execution_id bigint)
RETURNS TABLE (
    execution_id    bigint,
    status          text,
    output          text,
    started_at_ms   bigint,
    completed_at_ms bigint,
    event_count     bigint)
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
    SELECT e.execution_id, e.status, e.output, e.started_at_ms, e.completed_at_ms,
           (SELECT pg_catalog.count(*) FROM {{schema}}.history h
             WHERE h.instance_id = e.instance_id AND h.execution_id = e.execution_id) AS event_count
      FROM {{schema}}.executions e
     WHERE e.instance_id = p_instance_id AND e.execution_id = p_execution_id;
END
$$;
