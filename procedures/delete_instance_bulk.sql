-- delete_instance_bulk: delete terminal root instances (Completed, Failed or
-- ContinuedAsNew; never Running, never sub-orchestrations) with their whole
-- sub-orchestration trees, in one transaction. Filters are ANDed: p_ids
-- (NULL: any), p_completed_before (ms; NULL: any), then p_limit roots.
--
-- Plans per call (plan_cache_mode = auto, where every other procedure pins
-- generic plans): a generic plan of the optional id filter cannot use the
-- primary key, so deleting a few named instances would read them all.
CREATE OR REPLACE FUNCTION {{schema}}.delete_instance_bulk(
    p_ids              text[],
    p_completed_before bigint,
    p_limit            bigint)
RETURNS TABLE (
    instances_deleted      bigint,
    executions_deleted     bigint,
    events_deleted         bigint,
    queue_messages_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = auto
AS $$
DECLARE
    v_root  text;
    v_tree  text[];
    v_total record;
    v_inst  bigint := 0;
    v_exec  bigint := 0;
    v_evts  bigint := 0;
    v_msgs  bigint := 0;
BEGIN
    FOR v_root IN
        SELECT i.instance_id
          FROM {{schema}}.instances i
          JOIN {{schema}}.executions e
            ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
         WHERE i.parent_instance_id IS NULL
           AND e.status IN ('Completed', 'Failed', 'ContinuedAsNew')
           AND (p_ids IS NULL OR i.instance_id = ANY (p_ids))
           AND (p_completed_before IS NULL OR e.completed_at_ms < p_completed_before)
         ORDER BY i.created_at_ms, i.instance_id
         LIMIT p_limit
    LOOP
        WITH RECURSIVE tree(id) AS (
            SELECT v_root
            UNION
            SELECT c.instance_id FROM {{schema}}.instances c JOIN tree t ON c.parent_instance_id = t.id)
        SELECT array_agg(tree.id) INTO v_tree FROM tree;

        SELECT * INTO v_total FROM {{schema}}.delete_instances(v_tree, true);
        v_inst := v_inst + v_total.instances_deleted;
        v_exec := v_exec + v_total.executions_deleted;
        v_evts := v_evts + v_total.events_deleted;
        v_msgs := v_msgs + v_total.queue_messages_deleted;
    END LOOP;
    RETURN QUERY SELECT v_inst, v_exec, v_evts, v_msgs;
END
$$;
