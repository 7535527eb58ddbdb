-- get_instance_info: an instance's metadata with its current execution's
-- status and output. No row: not found.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.get_instance_info{{suffix}}(p_instance_id text)
RETURNS TABLE (
    instance_id           text,
    orchestration_name    text,
    orchestration_version text,
    current_execution_id  bigint,
    status                text,
    output                text,
    created_at_ms         bigint,
    updated_at_ms         bigint,
    parent_instance_id    text)
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
    SELECT i.instance_id, i.orchestration_name, i.orchestration_version, i.current_execution_id,
           coalesce(e.status, 'Running') AS status, e.output, i.created_at_ms, i.updated_at_ms, i.parent_instance_id
      FROM {{schema}}.instances i
      LEFT JOIN {{schema}}.executions e
        ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
     WHERE i.instance_id = p_instance_id;
END
$$;
