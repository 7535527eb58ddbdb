-- Finished root instances (current execution Completed or Failed; a
-- ContinuedAsNew one is between two executions of a running instance, its
-- next turn queued) matching the filter (p_ids, p_completed_before: NULL
-- matches any), oldest first, at most p_limit. A root has no parent, or
-- a parent that no longer exists (deleted while the child's start was
-- queued: the child's first turn created it after the parent's tree was
-- deleted); the parent is looked up by its key, a scalar subquery only for
-- an instance that names one (an EXISTS here may be planned as a hash of
-- every instance id, read whole on every call).
-- params: p_ids text[], p_completed_before bigint, p_limit bigint
SELECT i.instance_id
  FROM {{schema}}.instances i
  JOIN {{schema}}.executions e
    ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
 WHERE (i.parent_instance_id IS NULL
        OR (SELECT p.instance_id FROM {{schema}}.instances p
             WHERE p.instance_id = i.parent_instance_id) IS NULL)
   AND e.status IN ('Completed', 'Failed')
   AND (p_ids IS NULL OR i.instance_id = ANY (p_ids))
   AND (p_completed_before IS NULL OR e.completed_at_ms < p_completed_before)
 ORDER BY i.created_at_ms, i.instance_id
 LIMIT p_limit;
