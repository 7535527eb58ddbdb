-- prune_executions: delete old executions of one instance and their history,
-- never the current execution and never a Running one. p_keep_last keeps the
-- N most recent executions (0, 1 and NULL all keep only the current one);
-- p_completed_before (ms) prunes only executions completed before it. Unknown
-- instance: DX003.
--
-- Lock order (docs/architecture.md, "Lock order"): the instance row, then
-- its executions, then their history. No claim or lease is taken: pruning
-- touches no message and never the current or a running execution, the
-- only one an ack writes.
CREATE OR REPLACE FUNCTION {{schema}}.prune_executions(
    p_instance_id      text,
    p_keep_last        bigint,
    p_completed_before bigint)
RETURNS TABLE (instances_processed bigint, executions_deleted bigint, events_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER
AS $$
DECLARE
    v_current bigint;
    v_executions bigint;
    v_events     bigint;
BEGIN
    SELECT i.current_execution_id INTO v_current
      FROM {{schema}}.instances i WHERE i.instance_id = p_instance_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DX003', MESSAGE = pg_catalog.format('Instance %s not found', p_instance_id);
    END IF;

    WITH gone AS (
        DELETE FROM {{schema}}.executions e
         WHERE e.instance_id = p_instance_id
           AND e.execution_id <> v_current
           AND e.status <> 'Running'
           AND (p_keep_last IS NULL OR e.execution_id NOT IN (
                SELECT k.execution_id FROM {{schema}}.executions k
                 WHERE k.instance_id = p_instance_id
                 ORDER BY k.execution_id DESC
                 LIMIT p_keep_last))
           AND (p_completed_before IS NULL OR e.completed_at_ms < p_completed_before)
        RETURNING e.execution_id),
    events AS (
        DELETE FROM {{schema}}.history h
         WHERE h.instance_id = p_instance_id AND h.execution_id IN (SELECT gone.execution_id FROM gone)
        RETURNING 1)
    SELECT (SELECT pg_catalog.count(*) FROM gone), (SELECT pg_catalog.count(*) FROM events)
      INTO v_executions, v_events;

    RETURN QUERY SELECT 1::bigint, v_executions, v_events;
END
$$;
