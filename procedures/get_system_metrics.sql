-- get_system_metrics: instance counts by the status of their current
-- execution, total executions and total history events.
CREATE OR REPLACE FUNCTION {{schema}}.get_system_metrics{{suffix}}()
RETURNS TABLE (
    total_instances     bigint,
    total_executions    bigint,
    running_instances   bigint,
    completed_instances bigint,
    failed_instances    bigint,
    total_events        bigint)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
    SELECT pg_catalog.count(*) AS total_instances,
           (SELECT pg_catalog.count(*) FROM {{schema}}.executions) AS total_executions,
           pg_catalog.count(*) FILTER (WHERE e.status = 'Running') AS running_instances,
           pg_catalog.count(*) FILTER (WHERE e.status = 'Completed') AS completed_instances,
           pg_catalog.count(*) FILTER (WHERE e.status = 'Failed') AS failed_instances,
           (SELECT pg_catalog.count(*) FROM {{schema}}.history) AS total_events
      FROM {{schema}}.instances i
      LEFT JOIN {{schema}}.executions e
        ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id;
END
$$;
