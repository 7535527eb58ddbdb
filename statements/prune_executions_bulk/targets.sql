-- Instances matching the filter (p_ids, p_completed_before on the current
-- execution: NULL matches any), oldest first, at most p_limit, as an array.
-- params: p_ids text[], p_completed_before bigint, p_limit bigint
SELECT coalesce(pg_catalog.array_agg(t.instance_id), '{}') AS targets
  FROM (SELECT i.instance_id
          FROM {{schema}}.instances i
          LEFT JOIN {{schema}}.executions e
            ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
         WHERE (p_ids IS NULL OR i.instance_id = ANY (p_ids))
           AND (p_completed_before IS NULL OR e.completed_at_ms < p_completed_before)
         ORDER BY i.created_at_ms, i.instance_id
         LIMIT p_limit) t;
