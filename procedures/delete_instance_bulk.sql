-- delete_instance_bulk: delete terminal root instances (Completed, Failed or
-- ContinuedAsNew; never Running, never sub-orchestrations) with their whole
-- sub-orchestration trees, in one transaction. Filters are ANDed: p_ids
-- (NULL: any), p_completed_before (ms; NULL: any), then p_limit roots.
--
-- Plans per call (plan_cache_mode = auto, where every other procedure pins
-- generic plans): a generic plan of the optional id filter cannot use the
-- primary key, so deleting a few named instances would read them all.
--
-- Lock order (docs/architecture.md, "Lock order"): the trees are collected
-- first and deleted by one delete_instances call, which takes every lock in
-- the one order over all of them at once. (Deleted tree by tree, the claim
-- keys and rows of one tree were held while the next tree's were taken: a
-- delete of instances from two trees could hold one and wait for the other.)
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
SECURITY DEFINER
AS $$
DECLARE
    v_root  text;
    v_tree  text[];
    v_ids   text[] := '{}';
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
        SELECT pg_catalog.array_agg(tree.id) INTO v_tree FROM tree;
        v_ids := v_ids || v_tree;
    END LOOP;
    RETURN QUERY SELECT * FROM {{schema}}.delete_instances(v_ids, true);
END
$$;
