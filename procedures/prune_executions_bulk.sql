-- prune_executions_bulk: prune_executions over every instance matching the
-- filter (p_ids, p_completed_before on the current execution, p_limit),
-- whatever its status, in one transaction; counts are summed.
--
-- Plans per call (plan_cache_mode = auto, where every other procedure pins
-- generic plans): a generic plan of the optional id filter cannot use the
-- primary key, so pruning a few named instances would read them all.
--
-- Lock order (docs/architecture.md, "Lock order"): the instance rows of
-- every target are locked first, in instance id order as delete_instances
-- locks them, then each instance's executions and history are pruned. (Taken
-- one instance at a time, oldest first, they deadlocked with a delete of the
-- same instances.) An instance deleted since it was chosen is skipped.
CREATE OR REPLACE FUNCTION {{schema}}.prune_executions_bulk(
    p_ids                    text[],
    p_completed_before       bigint,
    p_limit                  bigint,
    p_keep_last              bigint,
    p_prune_completed_before bigint)
RETURNS TABLE (instances_processed bigint, executions_deleted bigint, events_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = auto
SECURITY DEFINER
AS $$
DECLARE
    v_ids  text[];
    v_id   text;
    v_one  record;
    v_inst bigint := 0;
    v_exec bigint := 0;
    v_evts bigint := 0;
BEGIN
    SELECT pg_catalog.array_agg(t.instance_id) INTO v_ids
      FROM (SELECT i.instance_id
              FROM {{schema}}.instances i
              LEFT JOIN {{schema}}.executions e
                ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
             WHERE (p_ids IS NULL OR i.instance_id = ANY (p_ids))
               AND (p_completed_before IS NULL OR e.completed_at_ms < p_completed_before)
             ORDER BY i.created_at_ms, i.instance_id
             LIMIT p_limit) t;

    SELECT coalesce(pg_catalog.array_agg(l.instance_id ORDER BY l.instance_id), '{}') INTO v_ids
      FROM (SELECT i.instance_id FROM {{schema}}.instances i
             WHERE i.instance_id = ANY (v_ids) ORDER BY i.instance_id FOR UPDATE) l;

    FOREACH v_id IN ARRAY v_ids LOOP
        SELECT * INTO v_one FROM {{schema}}.prune_executions(v_id, p_keep_last, p_prune_completed_before);
        v_inst := v_inst + v_one.instances_processed;
        v_exec := v_exec + v_one.executions_deleted;
        v_evts := v_evts + v_one.events_deleted;
    END LOOP;
    RETURN QUERY SELECT v_inst, v_exec, v_evts;
END
$$;
